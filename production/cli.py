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
from production.bruteforce import RateLimitCounter
from production.database import database_error_line, upgrade_schema

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


@commands.cli.command('create-client')
@click.argument('name', callback=validate_name)
@click.option('--scope', default='read write', show_default=True, callback=validate_scope,
              help='Space-separated scopes the client may request.')
@lifetime_option
@click.option('--no-tokens', is_flag=True,
              help='The client may not get tokens (it only revokes or introspects).')
@json_option
@database_command
def create_client_command(name, scope, token_lifetime, no_tokens, as_json):
    """Register a machine client and print its secret, once."""
    client, client_secret = Client.create(name, scope, grant_types='' if no_tokens else 'client_credentials')
    client.token_lifetime = token_lifetime or None
    db.session.commit()
    audit.event('client_created', client.client_id, scope=client.scope)
    if not as_json:
        click.echo(f'Created client {client.name!r}.')
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
@json_option
@database_command
def update_client_command(client_id, name, scope, token_lifetime, as_json):
    """Change a client's name, scopes or token lifetime."""
    if name is None and scope is None and token_lifetime is None:
        raise click.UsageError('nothing to change: give --name, --scope or --token-lifetime')
    client = existing_client(client_id)
    if name is not None:
        client.name = name
    if scope is not None:
        client.set_scope(scope)
    if token_lifetime is not None:
        client.token_lifetime = token_lifetime or None
    db.session.commit()
    audit.event('client_updated', client.client_id, scope=client.scope, token_lifetime=client.token_lifetime)
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
    """Delete expired and revoked tokens, and expired rate-limit counters
    (safe while the server runs)."""
    tokens, counters = Token.purge(), RateLimitCounter.purge()
    click.echo(f'Purged {tokens} token(s) and {counters} expired rate-limit counter(s).')
