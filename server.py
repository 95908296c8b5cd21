"""An OAuth 2.0 authorization server for the client credentials grant.

Read top to bottom it follows the tutorial: configuration, the OAuth provider,
the callbacks that connect it to the database, the token endpoint and the
protected API, the command line, and the development server.

    python server.py                       # development server with a demo client
    flask --app server create-client NAME  # register a machine client
    gunicorn -w 4 server:app               # production
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from functools import wraps
from urllib.parse import unquote_plus

import click
from flask import Flask, jsonify, request
from flask_oauthlib.provider import OAuth2Provider, OAuth2RequestValidator
from oauthlib.common import urldecode
from oauthlib.oauth2.rfc6749 import errors
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import Authorization
from werkzeug.exceptions import HTTPException

from models import Client, Item, Token, create_schema, db, scope_to_list

# --- Configuration --------------------------------------------------------
# Defaults below; every key can be overridden from the environment as
# FLASK_<KEY> (values are parsed as JSON), and DATABASE_URL names the database.

app = Flask(__name__)
app.config['OAUTH2_PROVIDER_TOKEN_EXPIRES_IN'] = 3600  # token lifetime, seconds
app.config.update(
    SQLALCHEMY_DATABASE_URI='sqlite:///oauth.sqlite',  # relative: in the instance folder
    OAUTH2_SCOPES_SUPPORTED=['read', 'write'],
    OAUTH2_REALM='client-credentials',
    MAX_CONTENT_LENGTH=64 * 1024,
)
app.config.from_prefixed_env()
if os.environ.get('DATABASE_URL'):
    app.config['SQLALCHEMY_DATABASE_URI'] = os.environ['DATABASE_URL']
app.json.sort_keys = False
db.init_app(app)

# oauthlib and Flask-OAuthlib log whole token responses at DEBUG level;
# tokens must never reach a log.
for _name in ('oauthlib', 'flask_oauthlib'):
    logging.getLogger(_name).setLevel(logging.INFO)

# --- The OAuth provider ---------------------------------------------------

# RFC 6750 §2.1: b64token, the syntax of a Bearer credential.
BEARER_TOKEN = re.compile(r'[A-Za-z0-9\-._~+/]+=*')


class ClientCredentialsValidator(OAuth2RequestValidator):
    """Flask-OAuthlib's validator, corrected where it falls short of the RFCs
    on today's Flask (README: "Why the Flask-OAuthlib-Invenio fork")."""

    def _get_client_creds_from_request(self, request):
        # RFC 6749 §2.3.1: the server MUST support HTTP Basic, where id and
        # secret are form-urlencoded (Appendix B) before base64. The fork only
        # understands a pre-parsed header, which it no longer receives.
        basic = Authorization.from_header(request.headers.get('Authorization'))
        if basic is None or basic.type != 'basic':
            return request.client_id, request.client_secret
        client_id = unquote_plus(basic.username or '')
        # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
        if request.client_secret or (request.client_id and request.client_id != client_id):
            raise errors.InvalidRequestError(
                description='Use one client authentication method, not both.', request=request)
        return client_id, unquote_plus(basic.password or '')

    def authenticate_client(self, request, *args, **kwargs):
        # The fork compares plaintext secrets with `!=`; ours are hashed and
        # compared in constant time.
        client_id, client_secret = self._get_client_creds_from_request(request)
        client = Client.authenticate(client_id, client_secret)
        if client is None:
            return False
        request.client = client
        return True

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        # RFC 6749 §3.3: scope is a set ("read read" is "read"); §3.1: an empty
        # parameter counts as omitted, so it means all of the client's scopes.
        # oauthlib reads scope="" as one scope named "".
        request.scopes = scope_to_list(' '.join(scopes)) or client.default_scopes
        return client.validate_scopes(request.scopes)

    def validate_bearer_token(self, token, scopes, request):
        # RFC 6750 §3.1: tell a missing token, a bad one and a missing scope apart,
        # require all of the route's scopes (the fork accepts any one of them),
        # and accept the token only from the Authorization header (§2.1).
        if request.access_token:  # a query or form parameter (RFC 6750 §2.2, §2.3)
            request.bearer_error = errors.InvalidRequestError(
                description='Send the access token in the Authorization header.')
            return False
        scheme = (request.headers.get('Authorization') or '').partition(' ')[0]
        if scheme.lower() != 'bearer':
            request.bearer_error = None  # no credentials: challenge without an error code
            return False
        if not token or not BEARER_TOKEN.fullmatch(token):
            request.bearer_error = errors.InvalidTokenError(description='The access token is malformed.')
            return False
        tok = self._tokengetter(access_token=token)
        if tok is None or tok.is_expired():
            request.bearer_error = errors.InvalidTokenError(
                description='The access token is unknown, expired or revoked.')
            return False
        if not tok.has_scopes(scopes):
            request.bearer_error = errors.InsufficientScopeError(
                description='The access token lacks the scope this resource requires.')
            return False
        request.access_token = tok
        request.client = tok.client
        request.user = None
        request.scopes = tok.scopes
        return True


oauth = OAuth2Provider(app, validator_class=ClientCredentialsValidator)

# --- Callbacks: how the provider reads and writes clients and tokens ------


@oauth.clientgetter
def load_client(client_id):
    return Client.find(client_id)


@oauth.tokengetter
def load_token(access_token=None, refresh_token=None):
    # Client credentials never issue refresh tokens (RFC 6749 §4.4.3).
    return Token.find(access_token)


@oauth.tokensetter
def save_token(token, request, *args, **kwargs):
    # `token` is the response the client will get: read it, never change it.
    # Earlier tokens stay valid: several instances of one service share a client.
    Token.issue(request.client, token['access_token'], token.get('scope', ''), token['expires_in'])
    db.session.commit()


# The provider insists on grant callbacks; this server has no authorization codes.
@oauth.grantgetter
def load_grant(client_id, code):
    return None


@oauth.grantsetter
def save_grant(client_id, code, request, *args, **kwargs):
    raise errors.UnsupportedGrantTypeError()


# --- Error responses: always JSON, with the RFC's error codes -------------


def oauth_error_response(error: errors.OAuth2Error):
    # RFC 6749 §5.2 body; oauthlib's `headers` carry the RFC 6750 challenge.
    response = app.response_class(error.json, error.status_code, mimetype='application/json')
    response.headers.update(error.headers)
    response.headers['Cache-Control'] = 'no-store'
    response.headers['Pragma'] = 'no-cache'
    return response


@app.errorhandler(errors.OAuth2Error)
def handle_oauth_error(error):
    return oauth_error_response(error)


@app.errorhandler(SQLAlchemyError)
def handle_database_error(error):
    db.session.rollback()
    app.logger.error('database error: %s', type(error).__name__)
    response = oauth_error_response(errors.TemporarilyUnavailableError(
        description='The database is unavailable; try again later.', status_code=503))
    response.headers['Retry-After'] = '5'
    return response


@app.errorhandler(HTTPException)
def handle_http_error(error):
    # Werkzeug answers 404, 405, 413 ... with HTML pages; an API answers JSON.
    # Unhandled exceptions arrive here as a 500.
    code = 'server_error' if error.code >= 500 else 'invalid_request'
    response = jsonify(error=code, error_description=error.description)
    response.status_code = error.code
    for key, value in error.get_headers():
        if key.lower() != 'content-type':
            response.headers[key] = value
    return response


@oauth.invalid_response
def bearer_challenge(req):
    """RFC 6750 §3: the WWW-Authenticate challenge for a refused API request."""
    error = getattr(req, 'bearer_error', None)
    realm = app.config['OAUTH2_REALM']
    if error is None:  # §3.1: no credentials, so no error code
        response = jsonify(error_description='This resource needs a Bearer access token.')
        response.status_code = 401
        response.headers['WWW-Authenticate'] = f'Bearer realm="{realm}"'
        return response
    challenge = f'Bearer realm="{realm}", error="{error.error}", error_description="{error.description}"'
    if isinstance(error, errors.InsufficientScopeError):
        challenge += f', scope="{" ".join(req.scopes or [])}"'
    response = oauth_error_response(error)
    response.headers['WWW-Authenticate'] = challenge
    return response


_schema_ready = False


@app.before_request
def create_schema_on_first_request():
    global _schema_ready
    if not _schema_ready:
        create_schema()
        _schema_ready = True


@app.before_request
def reject_malformed_request():
    # oauthlib raises a bare ValueError on a query string that is not
    # urlencoded UTF-8, and Werkzeug on a Basic header that is not ASCII:
    # both would be a 500 instead of the 400 they deserve.
    try:
        urldecode(request.query_string.decode('utf-8'))
        request.authorization
    except ValueError:
        raise errors.InvalidRequestError(description='Malformed query string or Authorization header.')


@app.after_request
def challenge_client_authentication(response):
    # RFC 6749 §5.2: a 401 from an endpoint that authenticates clients
    # challenges with the HTTP scheme clients use, Basic (oauthlib says Bearer).
    if response.status_code == 401 and request.endpoint in CLIENT_AUTH_ENDPOINTS:
        response.headers['WWW-Authenticate'] = f'Basic realm="{app.config["OAUTH2_REALM"]}"'
    return response


# --- Routes ---------------------------------------------------------------


def form_post(view):
    """The request rules of RFC 6749 §3.2 that Flask-OAuthlib does not check:
    it folds repeated parameters into one before oauthlib can see them."""
    @wraps(view)
    def checked(*args, **kwargs):
        if request.mimetype != 'application/x-www-form-urlencoded':
            raise errors.InvalidRequestError(
                description='Send parameters as application/x-www-form-urlencoded.')
        repeated = sorted(key for key, values in request.form.lists() if len(values) > 1)
        if repeated:
            raise errors.InvalidRequestError(description=f'Repeated parameter: {repeated[0]}.')
        return view(*args, **kwargs)
    return checked


CLIENT_AUTH_ENDPOINTS = {'access_token'}


@app.route('/oauth/token', methods=['POST'])
@form_post
@oauth.token_handler
def access_token():
    # Flask-OAuthlib's server also knows the user-facing grants; this one
    # implements only client credentials (RFC 6749 §4.4.2).
    grant_type = request.form.get('grant_type')
    if not grant_type:
        raise errors.InvalidRequestError(description='Missing grant_type parameter.')
    if grant_type != 'client_credentials':
        raise errors.UnsupportedGrantTypeError()
    return None  # no extra fields in the token response


@app.get('/api/me')
@oauth.require_oauth()
def me():
    client, token = request.oauth.client, request.oauth.access_token
    return jsonify(client_id=client.client_id, name=client.name, scope=token.scope)


@app.get('/api/items')
@oauth.require_oauth('read')
def list_items():
    items = db.session.scalars(
        db.select(Item).filter_by(client_pk=request.oauth.client.id).order_by(Item.id))
    return jsonify(items=[item.to_dict() for item in items])


@app.post('/api/items')
@oauth.require_oauth('write')
def create_item():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise errors.InvalidRequestError(description='Send a JSON object: {"name": "..."}.')
    try:
        item = Item.create(request.oauth.client, body.get('name'))
    except ValueError as error:
        raise errors.InvalidRequestError(description=str(error))
    db.session.commit()
    response = jsonify(item.to_dict())
    response.status_code = 201
    return response


# --- Command line: flask --app server <command> ---------------------------


def database_command(command):
    """Create the schema if needed; a database error is one line, not a traceback."""
    @wraps(command)
    def run(*args, **kwargs):
        try:
            create_schema()
            return command(*args, **kwargs)
        except SQLAlchemyError as error:
            db.session.rollback()
            raise click.ClickException(f'cannot use the database: {database_error_line(error)}')
    return run


def database_error_line(error: SQLAlchemyError) -> str:
    return str(getattr(error, 'orig', None) or error).strip().splitlines()[0]


def validate_scope(scope: str) -> str:
    unknown = set(scope_to_list(scope)) - set(app.config['OAUTH2_SCOPES_SUPPORTED'])
    if unknown:
        raise click.BadParameter(
            f'unknown scope {sorted(unknown)[0]!r}; supported: '
            + ' '.join(app.config['OAUTH2_SCOPES_SUPPORTED']), param_hint="'--scope'")
    return ' '.join(scope_to_list(scope))


@app.cli.command('create-client')
@click.argument('name')
@click.option('--scope', default='read write', show_default=True,
              help='Space-separated scopes the client may request.')
@click.option('--no-tokens', is_flag=True,
              help='The client may not get tokens (it only revokes or introspects).')
@click.option('--json', 'as_json', is_flag=True, help='Print the credentials as JSON.')
@database_command
def create_client_command(name, scope, no_tokens, as_json):
    """Register a machine client and print its credentials once."""
    if not name.strip():
        raise click.BadParameter('must not be empty', param_hint="'NAME'")
    client, client_secret = Client.create(name.strip(), validate_scope(scope),
                                          grant_types='' if no_tokens else 'client_credentials')
    db.session.commit()
    if as_json:
        click.echo(app.json.dumps({**client.to_dict(), 'client_secret': client_secret}))
        return
    click.echo(f'Created client {client.name!r} with scope {client.scope!r}.')
    click.echo(f'client_id:     {client.client_id}')
    click.echo(f'client_secret: {client_secret}')
    click.echo('Store the secret now: only its hash is kept and it cannot be shown again.')


@app.cli.command('list-clients')
@click.option('--json', 'as_json', is_flag=True, help='Print the clients as JSON.')
@database_command
def list_clients_command(as_json):
    """List registered clients (secrets are never shown)."""
    clients = db.session.scalars(db.select(Client).order_by(Client.id)).all()
    if as_json:
        click.echo(app.json.dumps([client.to_dict() for client in clients]))
        return
    for client in clients:
        click.echo(f'{client.client_id}\t{client.name}\t{client.scope}')
    if not clients:
        click.echo('No clients yet: flask --app server create-client NAME', err=True)


# --- Development server: python server.py ---------------------------------

DEMO_CLIENT_ID, DEMO_CLIENT_SECRET = 'demo-client', 'demo-secret'


def ensure_demo_client() -> None:
    """The demo client exists with the documented credentials."""
    client = Client.find(DEMO_CLIENT_ID)
    if client is None:
        Client.create('Demo client', 'read write', DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    elif not client.check_secret(DEMO_CLIENT_SECRET) or client.scope != 'read write':
        client.set_secret(DEMO_CLIENT_SECRET)
        client.scope = 'read write'
    db.session.commit()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Run the development authorization server.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=5000)
    parser.add_argument('--no-demo', action='store_true', help='do not create the demo client')
    args = parser.parse_args(argv)
    with app.app_context():
        try:
            create_schema()
            if not args.no_demo:
                ensure_demo_client()
        except SQLAlchemyError as error:
            print(f'server.py: cannot use the database: {database_error_line(error)}', file=sys.stderr)
            return 1
    if not args.no_demo:
        print(f'Demo client (local use only, never in production): '
              f'client_id={DEMO_CLIENT_ID} client_secret={DEMO_CLIENT_SECRET}', flush=True)
    app.run(host=args.host, port=args.port)
    return 0


if __name__ == '__main__':
    sys.exit(main())
