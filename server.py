"""An OAuth 2.0 authorization server for the client credentials grant.

Read top to bottom it follows the tutorial: the app and its configuration,
the OAuth provider, the callbacks that connect it to the database, the token
endpoint, the protected API, then revocation, introspection and discovery,
and the development server. What a real deployment adds lives in
production/, one module a concern, each joined here by one line.

    python server.py                       # development server with a demo client
    flask --app server create-client NAME  # register a machine client
    FLASK_OAUTH2_ISSUER=https://auth.example.com gunicorn -c gunicorn.conf.py -w 4 server:app  # production
"""
from __future__ import annotations

import signal
import sys

if __name__ == '__main__':  # Ctrl-C while it starts up: stop quietly, as the shell expects (no traceback)
    signal.signal(signal.SIGINT, signal.SIG_DFL)

import argparse

from flask import Flask, jsonify, request
from oauthlib.oauth2.rfc6749 import errors
from sqlalchemy.exc import SQLAlchemyError

from models import Client, ClientView, Item, Token, TokenView, db
from production import (
    access_tokens,
    admin_api,
    audit,
    cli,
    client_assertions,
    database,
    dpop,
    headers,
    housekeeping,
    metrics,
    settings,
)
from production import errors as error_responses
from production.bruteforce import limit_failed_authentication, limit_token_issuance
from production.provider import ClientCredentialsProvider, form_post
from production.settings import public_url
from production.signing_keys import key_ring
from production.sqlite import check_file

# --- The app and its configuration ----------------------------------------

app = Flask(__name__)
app.config['OAUTH2_PROVIDER_TOKEN_EXPIRES_IN'] = 3600  # token lifetime, seconds
app.config['OAUTH2_PROVIDER_TOKEN_GENERATOR'] = access_tokens.generate_token  # opaque, or a JWT (RFC 9068)
settings.configure(app)                     # the other defaults; FLASK_* and DATABASE_URL override
database.init_app(app)                      # Flask-SQLAlchemy, a connection per request, migrations
audit.init_app(app)                         # one JSON line per security event
headers.init_app(app)                       # request ids, security headers, trusted proxies
error_responses.init_app(app)               # every error as JSON with its RFC error code
limit_failed_authentication.init_app(app)   # brute-force limits (RFC 6749 §2.3.1)
cli.init_app(app)                           # flask --app server create-client NAME, ...
housekeeping.init_app(app)                  # expired tokens and counters deleted as it runs
metrics.init_app(app)                       # GET /metrics for Prometheus
dpop.init_app(app)                          # DPoP (RFC 9449): tokens bound to a key the client holds

# --- The OAuth provider ---------------------------------------------------

# Flask-OAuthlib's OAuth2Provider with its validator corrected to the RFCs
# (production/provider.py, production/validator.py).
oauth = ClientCredentialsProvider(app)

# --- Callbacks: how the provider reads and writes clients and tokens ------


@oauth.clientgetter
def load_client(client_id):
    return ClientView.find(client_id)


@oauth.tokengetter
def load_token(access_token=None, refresh_token=None):
    # Client credentials never issue refresh tokens (RFC 6749 §4.4.3). Every
    # token, opaque or JWT, is the stored row that revocation and
    # introspection read: here a revoked token, a disabled or deleted client
    # and a narrowed scope take effect at once, whatever the format.
    return TokenView.find(access_token)


@oauth.tokensetter
def save_token(token, request, *args, **kwargs):
    # `token` is the very response the client gets. The fields set here are
    # expires_in (RFC 6749 §5.1), for a client with a lifetime of its own,
    # and token_type. Earlier tokens stay valid: several instances of one
    # service share a client.
    limit_token_issuance(request.client)  # 429 past TOKENS_PER_CLIENT
    token['expires_in'] = request.client.token_expires_in(token['expires_in'])
    token_id = Token.issue(request.client, token['access_token'], token.get('scope', ''), token['expires_in'],
                           audience=request.audience,  # RFC 8707, from the `resource` parameters
                           jkt=request.jkt)  # RFC 9449: the key of the request's DPoP proof, if it had one
    if token_id is None:  # disabled while this request ran: nothing was stored
        raise errors.InvalidClientError()
    if request.jkt:
        token['token_type'] = 'DPoP'  # noqa: S105 - RFC 9449 §5: a token type, not a secret
    audit.event('token_issued', request.client.client_id, token_id=token_id, scope=token.get('scope', ''),
                expires_in=token['expires_in'], audience=request.resources, jkt=request.jkt,
                token_format='jwt' if access_tokens.is_jwt(token['access_token']) else 'opaque')


# The provider insists on grant callbacks; this server has no authorization codes.
@oauth.grantgetter
def load_grant(client_id, code):
    return None


@oauth.grantsetter
def save_grant(client_id, code, request, *args, **kwargs):
    raise errors.UnsupportedGrantTypeError()


# --- The token endpoint ---------------------------------------------------


@app.route('/oauth/token', methods=['POST'])
@limit_failed_authentication
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
    dpop.check_token_request()  # RFC 9449 §5: a DPoP proof, if sent, must be valid (its key binds the token)
    return None  # no extra fields in the token response


# --- The protected API: each client sees its own resources -----------------


@app.get('/api/me')
@oauth.require_oauth()
def me():
    oauth = request.oauth  # what the provider found: the token's client and scopes
    return jsonify(client_id=oauth.client.client_id, name=oauth.client.name, scope=' '.join(oauth.scopes))


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
        raise errors.InvalidRequestError(description=str(error)) from None
    db.session.commit()
    response = jsonify(item.to_dict())
    response.status_code = 201
    return response


admin_api.init_app(app, oauth)  # /admin/clients: manage clients, with a token of the `admin` scope


# --- Revocation (RFC 7009), introspection (RFC 7662), discovery (RFC 8414) --


@app.route('/oauth/revoke', methods=['POST'])
@limit_failed_authentication
@form_post
@oauth.revoke_handler
def revoke_token():
    pass  # RFC 7009: the answer is the status code alone


@app.route('/oauth/introspect', methods=['POST'])
@limit_failed_authentication
@form_post
@oauth.introspect_handler
def introspect_token():
    pass  # RFC 7662: the answer is the token's state


@app.get('/.well-known/oauth-authorization-server')
def authorization_server_metadata():
    # RFC 8414 §2, written out: oauthlib's MetadataEndpoint would advertise
    # every grant of Flask-OAuthlib's combined server and refuses an http issuer.
    auth_methods = ['client_secret_basic', 'client_secret_post', 'private_key_jwt']
    return jsonify(
        issuer=public_url(),
        token_endpoint=public_url('access_token'),
        jwks_uri=public_url('jwks'),
        token_endpoint_auth_methods_supported=auth_methods,
        token_endpoint_auth_signing_alg_values_supported=client_assertions.SIGNING_ALGS,
        grant_types_supported=['client_credentials'],
        response_types_supported=[],  # no authorization endpoint: nothing is sent to a browser
        scopes_supported=app.config['OAUTH2_SCOPES_SUPPORTED'],
        revocation_endpoint=public_url('revoke_token'),
        revocation_endpoint_auth_methods_supported=auth_methods,
        revocation_endpoint_auth_signing_alg_values_supported=client_assertions.SIGNING_ALGS,
        introspection_endpoint=public_url('introspect_token'),
        introspection_endpoint_auth_methods_supported=auth_methods,
        introspection_endpoint_auth_signing_alg_values_supported=client_assertions.SIGNING_ALGS,
        dpop_signing_alg_values_supported=dpop.ALGS,  # RFC 9449 §5.1
    )


@app.get('/.well-known/jwks.json')
def jwks():
    # RFC 7517 §5: the public keys that verify this server's JWT access tokens.
    response = jsonify(key_ring().jwks())
    response.headers['Cache-Control'] = 'public, max-age=60'  # an API refetches on an unknown kid anyway
    return response


@app.get('/healthz')
def healthz():
    """For load balancers and orchestrators: 200 while the database and the
    rate-limit storage answer and the issuer is set; 503 naming what failed."""
    failed = {}
    try:
        db.session.execute(db.text('SELECT 1'))
        check_file(db.engine)  # SQLite: still the file this process opened
    except SQLAlchemyError as error:
        db.session.rollback()
        app.logger.warning('health check failed: %s', database.database_error_line(error))
        failed['database'] = 'unavailable'
    if not limit_failed_authentication.healthy():  # Redis, or database://
        app.logger.warning('health check failed: the rate-limit storage does not answer')
        failed['rate_limit_storage'] = 'unavailable'
    if not app.config['OAUTH2_ISSUER']:  # never the request's Host (production/settings.py)
        failed['issuer'] = 'FLASK_OAUTH2_ISSUER is not set'
    if failed:
        return jsonify(status='unavailable', failed=failed), 503
    return jsonify(status='ok')


# --- Development server: python server.py ---------------------------------

DEMO_CLIENT_ID, DEMO_CLIENT_SECRET = 'demo-client', 'demo-secret'


def ensure_demo_client() -> None:
    """The demo client exists with the documented credentials."""
    client = Client.find(DEMO_CLIENT_ID)
    if client is None:
        Client.create('Demo client', 'read write', DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    elif not client.check_secret(DEMO_CLIENT_SECRET) or client.scope != 'read write':
        client.set_secret(DEMO_CLIENT_SECRET)
        client.set_scope('read write')
    db.session.commit()


def port_number(text: str) -> int:
    port = int(text)  # argparse turns a ValueError into one line: "invalid port_number value"
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f'{port} is not a TCP port (1 to 65535)')
    return port


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Run the development authorization server.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=port_number, default=5000)
    parser.add_argument('--no-demo', action='store_true', help='do not create the demo client')
    args = parser.parse_args(argv)
    app.config['DEVELOPMENT_SERVER'] = True  # it alone may keep a JWT signing key without a passphrase
    settings.set_development_issuer(app, args.host, args.port)  # FLASK_OAUTH2_ISSUER, or this address
    with app.app_context():
        try:
            database.upgrade_schema()  # create or migrate the tables (flask --app server db upgrade)
            if not args.no_demo:
                ensure_demo_client()
        except SQLAlchemyError as error:
            print(f'server.py: cannot use the database: {database.database_error_line(error)}', file=sys.stderr)
            return 1
        print(f'Database: {database.location()}', flush=True)
    if not args.no_demo:
        print(f'Demo client (local use only, never in production): '
              f'client_id={DEMO_CLIENT_ID} client_secret={DEMO_CLIENT_SECRET}', flush=True)
    app.run(host=args.host, port=args.port)
    return 0


if __name__ == '__main__':
    sys.exit(main())
