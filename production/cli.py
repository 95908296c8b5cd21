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

from models import Client, Token, check_name, db, scope_to_list, utcnow
from production import audit
from production.audiences import check_resource
from production.bruteforce import RateLimitCounter
from production.client_assertions import UsedAssertion, check_jwks
from production.database import database_error_line, upgrade_schema
from production.signing_keys import ALGORITHMS, SigningKey, key_ring, passphrase

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


def validate_scope(ctx, param, scope):
    if scope is None:
        return None
    unknown = set(scope_to_list(scope)) - set(current_app.config['OAUTH2_SCOPES_SUPPORTED'])
    if unknown:
        raise click.BadParameter(f'unknown scope {sorted(unknown)[0]!r}; supported: '
                                 + ' '.join(current_app.config['OAUTH2_SCOPES_SUPPORTED']))
    return ' '.join(scope_to_list(scope))


def validate_name(ctx, param, name):
    try:
        return None if name is None else check_name(name)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def validate_resources(ctx, param, resources):
    try:
        return [check_resource(uri) for uri in dict.fromkeys(resources)]
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def read_jwks(ctx, param, path):
    """--jwks FILE: the JWK Set as stored; a one-line error otherwise."""
    if path is None:
        return None
    try:
        with open(path, encoding='utf-8') as file:
            return check_jwks(file.read(1_000_000))
    except (OSError, UnicodeDecodeError) as error:
        raise click.BadParameter(f'cannot read {path}: {getattr(error, "strerror", None) or error}') from None
    except ValueError as error:
        raise click.BadParameter(f'{path}: {error}') from None


def existing_client(client_id: str) -> Client:
    client = Client.find(client_id)
    if client is None:
        raise click.ClickException(f'no client with id {client_id!r} (see: flask --app server list-clients)')
    return client


def echo_client(client: Client, as_json: bool, **extra) -> None:
    shown = {**client.to_dict(), **extra}
    if as_json:
        click.echo(current_app.json.dumps(shown))
        return
    for key, value in shown.items():
        if isinstance(value, list):
            value = ' '.join(value) or '(none)'
        click.echo(f'{key + ":":29}{"-" if value is None else value}')


client_id_argument = click.argument('client_id', metavar='CLIENT_ID')
json_option = click.option('--json', 'as_json', is_flag=True, help='Print JSON.')
lifetime_option = click.option(
    '--token-lifetime', type=click.IntRange(0, 366 * 24 * 3600), metavar='SECONDS',
    help="Lifetime of this client's tokens; 0 means the server default.")
# --token-format as stored: 'default' is None, the server's ACCESS_TOKEN_FORMAT.
STORED_FORMAT = {'opaque': 'opaque', 'jwt': 'jwt', 'default': None}
format_option = click.option(
    '--token-format', type=click.Choice(list(STORED_FORMAT)),
    help="Its access tokens: opaque, jwt (RFC 9068), or the server's ACCESS_TOKEN_FORMAT.")
jwks_option = click.option(
    '--jwks', metavar='FILE', callback=read_jwks,
    help="A JWK Set of the client's public keys, for private_key_jwt (RFC 7523).")
resource_option = click.option(
    '--resource', 'resources', multiple=True, metavar='URI', callback=validate_resources,
    help="An API (RFC 8707 resource) it may get tokens for; repeat for several. "
         "None: only this server's own API.")


@commands.cli.command('create-client')
@click.argument('name', callback=validate_name)
@click.option('--scope', default='read write', show_default=True, callback=validate_scope,
              help='Space-separated scopes the client may request.')
@lifetime_option
@format_option
@resource_option
@click.option('--auth-method', type=click.Choice(['client_secret_basic', 'private_key_jwt']),
              default='client_secret_basic', show_default=True,
              help='How it authenticates (RFC 7591): a secret, or an assertion signed with a key of --jwks.')
@jwks_option
@click.option('--no-tokens', is_flag=True,
              help='The client may not get tokens (it only revokes or introspects).')
@json_option
@database_command
def create_client_command(name, scope, token_lifetime, token_format, resources, auth_method, jwks, no_tokens,
                          as_json):
    """Register a machine client and print its secret, once (or, with
    private_key_jwt, its key ids: it has no secret)."""
    if (auth_method == 'private_key_jwt') != (jwks is not None):
        raise click.UsageError('--auth-method private_key_jwt and --jwks FILE go together')
    client, client_secret = Client.create(name, scope, grant_types='' if no_tokens else 'client_credentials')
    client.token_lifetime = token_lifetime or None
    client.token_format = STORED_FORMAT.get(token_format)
    client.resources = ' '.join(resources)
    if jwks is not None:
        client.use_keys(jwks[0])
        client_secret = None
    db.session.commit()
    audit.event('client_created', client.client_id, scope=client.scope,
                token_endpoint_auth_method=client.token_endpoint_auth_method, key_ids=client.key_ids)
    if not as_json:
        click.echo(f'Created client {client.name!r}.')
    if client_secret is None:
        echo_client(client, as_json)
        return
    echo_client(client, as_json, client_secret=client_secret)
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
        click.echo(f'{client.client_id}\t{client.name}\t{client.scope}\t{state}')
    if not clients:
        click.echo('No clients yet: flask --app server create-client NAME', err=True)


@commands.cli.command('show-client')
@client_id_argument
@json_option
@database_command
def show_client_command(client_id, as_json):
    """Show one client (never its secret)."""
    client = existing_client(client_id)
    live = db.session.scalar(db.select(db.func.count(Token.id)).where(
        Token.client_pk == client.id, Token.revoked_at.is_(None), Token.expires > utcnow()))
    echo_client(client, as_json, live_tokens=live,
                previous_secret_valid_until=client.previous_secret_expires and
                client.previous_secret_expires.isoformat())


@commands.cli.command('update-client')
@client_id_argument
@click.option('--name', callback=validate_name, help='New name.')
@click.option('--scope', callback=validate_scope,
              help='New scopes; live tokens lose any scope not in it.')
@lifetime_option
@format_option
@resource_option
@click.option('--no-resources', is_flag=True, help="Only this server's own API from now on.")
@click.option('--jwks', metavar='FILE', callback=read_jwks,
              help="Replace a private_key_jwt client's public keys with this JWK Set.")
@json_option
@database_command
def update_client_command(client_id, name, scope, token_lifetime, token_format, resources, no_resources, jwks,
                          as_json):
    """Change a client's name, scopes, token lifetime, token format,
    resources or keys. Its live tokens keep the format and audience they
    were issued with."""
    if resources and no_resources:
        raise click.UsageError('give --resource or --no-resources, not both')
    if (name, scope, token_lifetime, token_format, jwks) == (None,) * 5 and not resources and not no_resources:
        raise click.UsageError('nothing to change: give --name, --scope, --token-lifetime, '
                               '--token-format, --resource, --no-resources or --jwks')
    client = existing_client(client_id)
    if jwks is not None:
        if not client.uses_private_key_jwt:
            raise click.UsageError(f'{client.client_id} authenticates with a secret; --jwks is for a client '
                                   'created with --auth-method private_key_jwt')
        client.jwks = jwks[0]
    if name is not None:
        client.name = name
    if scope is not None:
        client.set_scope(scope)
    if token_lifetime is not None:
        client.token_lifetime = token_lifetime or None
    if token_format is not None:
        client.token_format = STORED_FORMAT[token_format]
    if resources or no_resources:
        client.resources = ' '.join(resources)
    db.session.commit()
    audit.event('client_updated', client.client_id, scope=client.scope, token_lifetime=client.token_lifetime,
                token_format=client.token_format, resources=client.resources.split(), key_ids=client.key_ids)
    echo_client(client, as_json)


@commands.cli.command('disable-client')
@client_id_argument
@database_command
def disable_client_command(client_id):
    """Refuse a client's credentials and revoke its live tokens, at once."""
    client = existing_client(client_id)
    revoked = client.disable()
    db.session.commit()
    audit.event('client_disabled', client.client_id, tokens_revoked=revoked)
    click.echo(f'Disabled {client.client_id}; revoked {revoked} token(s).')


@commands.cli.command('enable-client')
@client_id_argument
@database_command
def enable_client_command(client_id):
    """Accept a disabled client again (its revoked tokens stay revoked)."""
    client = existing_client(client_id)
    client.disabled = False
    db.session.commit()
    audit.event('client_enabled', client.client_id)
    click.echo(f'Enabled {client.client_id}.')


@commands.cli.command('rotate-secret')
@client_id_argument
@click.option('--grace', type=click.IntRange(0, 30 * 24 * 3600), default=0, show_default=True,
              metavar='SECONDS', help='How long the old secret keeps working.')
@json_option
@database_command
def rotate_secret_command(client_id, grace, as_json):
    """Give a client a new secret and print it, once."""
    client = existing_client(client_id)
    if client.uses_private_key_jwt:
        raise click.ClickException(f'{client.client_id} has keys, not a secret: '
                                   'change them with update-client --jwks FILE')
    client_secret = client.rotate_secret(grace)
    db.session.commit()
    audit.event('secret_rotated', client.client_id, grace=grace)
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
        click.confirm(f'Delete {client.client_id} ({client.name}), its tokens and its items?', abort=True)
    db.session.delete(client)
    db.session.commit()
    audit.event('client_deleted', client_id)
    click.echo(f'Deleted {client_id}.')


@commands.cli.command('purge-tokens')
@database_command
def purge_tokens_command():
    """Delete expired and revoked tokens, expired rate-limit counters and
    signing keys no longer published, and expired assertion ids (safe while
    the server runs)."""
    tokens, counters, keys = Token.purge(), RateLimitCounter.purge(), SigningKey.purge()
    UsedAssertion.purge()
    click.echo(f'Purged {tokens} token(s), {counters} expired rate-limit counter(s) '
               f'and {keys} retired signing key(s).')


@commands.cli.command('rotate-signing-key')
@click.option('--alg', type=click.Choice(sorted(ALGORITHMS)),
              help='Algorithm of the new key; default: JWT_SIGNING_ALG.')
@database_command
def rotate_signing_key_command(alg):
    """Sign JWT access tokens with a new key from now on. The old public key
    stays published until every token it signed has expired."""
    # The longest a token signed with the old key can live.
    longest = max([current_app.config['OAUTH2_PROVIDER_TOKEN_EXPIRES_IN'],
                   *db.session.scalars(db.select(Client.token_lifetime).where(Client.token_lifetime.is_not(None)))])
    key = SigningKey.rotate(alg or current_app.config['JWT_SIGNING_ALG'], passphrase(), longest)
    db.session.commit()
    key_ring().forget()
    audit.event('signing_key_rotated', None, kid=key.kid, alg=key.alg)
    click.echo(f'Signing with key {key.kid} ({key.alg}) from now on; every process follows within '
               f'{current_app.config["SIGNING_KEY_CACHE_SECONDS"]} s. The old keys stay published '
               f'for {longest} s more.')


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
