"""The command line: `flask --app server COMMAND`, to manage clients.

Every command changes the database the server uses (DATABASE_URL), brings its
schema up to date first, writes an audit line, and says what went wrong in
one line (exit 1), never with a traceback.
"""
from __future__ import annotations

from functools import wraps

import click
from flask import Blueprint, current_app
from sqlalchemy.exc import SQLAlchemyError

from models import Client, check_name, db, visible
from production import audit, client_admin
from production.database import database_error_line, upgrade_schema
from production.housekeeping import purge_dead_rows
from production.signing_keys import ALGORITHMS, SigningKey, UnusableKey, key_ring

# A blueprint without a group: its commands are the app's own (`flask --app server create-client`).
commands = Blueprint('commands', __name__, cli_group=None)


def init_app(app) -> None:
    app.register_blueprint(commands)


def database_command(command):
    """Bring the schema up to date first; a database error is one line, not a traceback."""
    @wraps(command)
    def run(*args, **kwargs):
        try:
            upgrade_schema()
            return command(*args, **kwargs)
        except SQLAlchemyError as error:
            db.session.rollback()
            raise click.ClickException(f'cannot use the database: {database_error_line(error)}') from None
    return run


def click_check(check):
    """A click callback from one of client_admin's checks: its ValueError,
    a usage error (exit 2) naming the option."""
    def callback(ctx, param, value):
        if value is None or value == ():
            return value
        try:
            return check(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
    return callback


def read_jwks(ctx, param, path):
    """--jwks FILE: the JWK Set as stored; a one-line error otherwise."""
    if path is None:
        return None
    try:
        with open(path, encoding='utf-8') as file:
            return client_admin.check_jwks_value(file.read(1_000_000))
    except (OSError, UnicodeDecodeError) as error:
        raise click.BadParameter(f'cannot read {path}: {getattr(error, "strerror", None) or error}') from None
    except ValueError as error:
        raise click.BadParameter(f'{path}: {error}') from None


def existing_client(client_id: str) -> Client:
    client = client_admin.find(client_id)
    if client is None:
        raise click.ClickException(f'no client with id {client_id!r} (see: flask --app server list-clients)')
    return client


def run(operation, *args, **kwargs):
    """A client_admin operation; what it refuses is a one-line error (exit 1)."""
    try:
        return operation(*args, actor='cli', **kwargs)
    except client_admin.InvalidMetadata as error:
        raise click.ClickException(str(error)) from None


def echo_client(shown: dict, as_json: bool) -> None:
    if as_json:
        click.echo(current_app.json.dumps(shown))
        return
    for key, value in shown.items():
        if isinstance(value, list):
            value = ' '.join(value) or '(none)'
        click.echo(f'{key + ":":29}{"-" if value is None else visible(str(value))}')


client_id_argument = click.argument('client_id', metavar='CLIENT_ID')
json_option = click.option('--json', 'as_json', is_flag=True, help='Print JSON.')
lifetime_option = click.option(
    '--token-lifetime', type=click.IntRange(0, client_admin.MAX_TOKEN_LIFETIME), metavar='SECONDS',
    help="Lifetime of this client's tokens; 0 means the server default.")
format_option = click.option(
    '--token-format', type=click.Choice([*client_admin.TOKEN_FORMATS, 'default']),
    help="Its access tokens: opaque, jwt (RFC 9068), or the server's ACCESS_TOKEN_FORMAT.")
jwks_option = click.option(
    '--jwks', metavar='FILE', callback=read_jwks,
    help="A JWK Set of the client's public keys, for private_key_jwt (RFC 7523).")
resource_option = click.option(
    '--resource', 'resources', multiple=True, metavar='URI', callback=click_check(client_admin.check_resources),
    help="An API (RFC 8707 resource) it may get tokens for; repeat for several. "
         "None: only this server's own API.")
name_check, scope_check = click_check(check_name), click_check(client_admin.check_scope)


@commands.cli.command('create-client')
@click.argument('name', callback=name_check)
@click.option('--scope', default='read write', show_default=True, callback=scope_check,
              help='Space-separated scopes the client may request.')
@lifetime_option
@format_option
@resource_option
@click.option('--auth-method', type=click.Choice(client_admin.AUTH_METHODS),
              default='client_secret_basic', show_default=True,
              help='How it authenticates (RFC 7591): a secret, or an assertion signed with a key of --jwks.')
@jwks_option
@click.option('--no-tokens', is_flag=True,
              help='The client may not get tokens (it only revokes or introspects).')
@click.option('--dpop-bound', is_flag=True,
              help='Every token request must carry a DPoP proof: each token is bound to a key the client holds '
                   '(RFC 9449).')
@json_option
@database_command
def create_client_command(name, scope, token_lifetime, token_format, resources, auth_method, jwks, no_tokens,
                          dpop_bound, as_json):
    """Register a machine client and print its secret, once (or, with
    private_key_jwt, its key ids: it has no secret)."""
    if (auth_method == 'private_key_jwt') != (jwks is not None):
        raise click.UsageError('--auth-method private_key_jwt and --jwks FILE go together')
    client, client_secret = run(client_admin.create, name, scope=scope, token_lifetime=token_lifetime,
                                token_format=token_format, resources=resources or (), auth_method=auth_method,
                                jwks=jwks, may_get_tokens=not no_tokens, dpop_bound_access_tokens=dpop_bound)
    if not as_json:
        click.echo(f'Created client {client.name!r}.')
    if client_secret is None:
        echo_client(client.to_dict(), as_json)
        return
    echo_client({**client.to_dict(), 'client_secret': client_secret}, as_json)
    if not as_json:
        click.echo('Store the secret now: only its hash is kept and it cannot be shown again.')


@commands.cli.command('list-clients')
@json_option
@database_command
def list_clients_command(as_json):
    """List registered clients (secrets are never shown)."""
    clients = db.session.scalars(db.select(Client).order_by(Client.id)).all()
    if as_json:
        click.echo(current_app.json.dumps([client.to_dict() for client in clients]))
        return
    for client in clients:
        state = 'disabled' if client.disabled else 'enabled'
        click.echo('\t'.join(visible(field) for field in (client.client_id, client.name, client.scope, state)))
    if not clients:
        click.echo('No clients yet: flask --app server create-client NAME', err=True)


@commands.cli.command('show-client')
@client_id_argument
@json_option
@database_command
def show_client_command(client_id, as_json):
    """Show one client (never its secret)."""
    echo_client(client_admin.describe(existing_client(client_id)), as_json)


@commands.cli.command('update-client')
@client_id_argument
@click.option('--name', callback=name_check, help='New name.')
@click.option('--scope', callback=scope_check,
              help='New scopes; live tokens lose any scope not in it.')
@lifetime_option
@format_option
@resource_option
@click.option('--no-resources', is_flag=True, help="Only this server's own API from now on.")
@click.option('--jwks', metavar='FILE', callback=read_jwks,
              help="Replace a private_key_jwt client's public keys with this JWK Set.")
@click.option('--dpop-bound/--no-dpop-bound', default=None,
              help='Whether every token request must carry a DPoP proof (RFC 9449).')
@json_option
@database_command
def update_client_command(client_id, name, scope, token_lifetime, token_format, resources, no_resources, jwks,
                          dpop_bound, as_json):
    """Change a client's name, scopes, token lifetime, token format,
    resources, keys, or whether it must use DPoP. Its live tokens keep the
    format, audience and DPoP binding they were issued with."""
    if resources and no_resources:
        raise click.UsageError('give --resource or --no-resources, not both')
    given = {'name': name, 'scope': scope, 'token_lifetime': token_lifetime, 'token_format': token_format,
             'resources': [] if no_resources else resources or None, 'jwks': jwks,
             'dpop_bound_access_tokens': dpop_bound}
    changes = {field: value for field, value in given.items() if value is not None}
    if not changes:
        raise click.UsageError('nothing to change: give --name, --scope, --token-lifetime, '
                               '--token-format, --resource, --no-resources, --jwks or --dpop-bound/--no-dpop-bound')
    client = existing_client(client_id)
    if jwks is not None and not client.uses_private_key_jwt:
        raise click.UsageError(f'{client.client_id} authenticates with a secret; --jwks is for a client '
                               'created with --auth-method private_key_jwt')
    echo_client(run(client_admin.update, client, **changes).to_dict(), as_json)


@commands.cli.command('disable-client')
@client_id_argument
@database_command
def disable_client_command(client_id):
    """Refuse a client's credentials and revoke its live tokens, at once."""
    client = existing_client(client_id)
    revoked = run(client_admin.disable, client)
    click.echo(f'Disabled {client.client_id}; revoked {revoked} token(s).')


@commands.cli.command('enable-client')
@client_id_argument
@database_command
def enable_client_command(client_id):
    """Accept a disabled client again (its revoked tokens stay revoked)."""
    client = existing_client(client_id)
    run(client_admin.enable, client)
    click.echo(f'Enabled {client.client_id}.')


@commands.cli.command('revoke-tokens')
@client_id_argument
@database_command
def revoke_tokens_command(client_id):
    """Revoke every live token of a client (it stays enabled: it may get new ones)."""
    client = existing_client(client_id)
    revoked = run(client_admin.revoke_tokens, client)
    click.echo(f'Revoked {revoked} token(s) of {client.client_id}.')


@commands.cli.command('rotate-secret')
@client_id_argument
@click.option('--grace', type=click.IntRange(0, client_admin.MAX_GRACE), default=0, show_default=True,
              metavar='SECONDS', help='How long the old secret keeps working.')
@json_option
@database_command
def rotate_secret_command(client_id, grace, as_json):
    """Give a client a new secret and print it, once."""
    client = existing_client(client_id)
    client_secret = run(client_admin.rotate_secret, client, grace)
    if as_json:
        click.echo(current_app.json.dumps({'client_id': client.client_id, 'client_secret': client_secret,
                                           'previous_secret_valid_for': grace}))
        return
    click.echo(f'client_id:     {client.client_id}')
    click.echo(f'client_secret: {client_secret}')
    click.echo(f'The old secret works for {grace} more second(s). Store the new one now: '
               'it cannot be shown again.')


@commands.cli.command('delete-client')
@client_id_argument
@click.option('--yes', is_flag=True, help='Do not ask for confirmation.')
@database_command
def delete_client_command(client_id, yes):
    """Delete a client with its tokens and items."""
    client = existing_client(client_id)
    if not yes:
        click.confirm(f'Delete {client.client_id} ({visible(client.name)}), its tokens and its items?', abort=True)
    run(client_admin.delete, client)
    click.echo(f'Deleted {client_id}.')


@commands.cli.command('purge-tokens')
@database_command
def purge_tokens_command():
    """Delete expired and revoked tokens, expired rate-limit counters and
    signing keys no longer published, and expired assertion ids (safe while
    the server runs)."""
    purged = purge_dead_rows()
    click.echo(f'Purged {purged["tokens"]} token(s), {purged["counters"]} expired rate-limit counter(s) '
               f'and {purged["signing_keys"]} retired signing key(s).')


@commands.cli.command('rotate-signing-key')
@click.option('--alg', type=click.Choice(sorted(ALGORITHMS)),
              help='Algorithm of the new key; default: JWT_SIGNING_ALG.')
@database_command
def rotate_signing_key_command(alg):
    """Sign JWT access tokens with a new key from now on. The old public key
    stays published until every token it signed has expired; its private
    key is deleted now."""
    try:
        key = SigningKey.rotate(alg or current_app.config['JWT_SIGNING_ALG'],
                                current_app.config['OAUTH2_PROVIDER_TOKEN_EXPIRES_IN'])
    except UnusableKey as error:
        raise click.ClickException(str(error)) from None
    key_ring().forget()
    audit.event('signing_key_rotated', None, kid=key.kid, alg=key.alg)
    retired = db.session.scalar(db.select(db.func.max(SigningKey.publish_until)).where(SigningKey.id != key.id))
    click.echo(f'Signing with key {key.kid} ({key.alg}) from now on; every process follows within '
               f'{current_app.config["SIGNING_KEY_CACHE_SECONDS"]} s.' + (
                   f' The old keys stay published until {retired.isoformat()}.' if retired else ''))


@commands.cli.command('list-signing-keys')
@json_option
@database_command
def list_signing_keys_command(as_json):
    """List the JWT signing keys (their public identity only, never the private key)."""
    keys = [key.to_dict() for key in db.session.scalars(db.select(SigningKey).order_by(SigningKey.id))]
    if as_json:
        click.echo(current_app.json.dumps(keys))
        return
    for key in keys:
        state = 'signing' if key['retired_at'] is None else f'published until {key["publish_until"]}'
        click.echo(f'{key["kid"]}\t{key["alg"]}\t{key["created_at"]}\t{state}')
    if not keys:
        click.echo('No signing key yet: the server makes one for its first JWT.', err=True)
