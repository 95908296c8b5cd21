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
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import time
from functools import lru_cache, wraps
from urllib.parse import unquote_plus

import click
from flask import Flask, has_request_context, jsonify, request, url_for
from flask_oauthlib.provider import OAuth2Provider, OAuth2RequestValidator
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from oauthlib.common import urldecode
from oauthlib.oauth2.rfc6749 import errors
from sqlalchemy.exc import DataError, SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from models import (
    Client,
    ClientView,
    Item,
    RateLimitCounter,
    Token,
    check_name,
    create_schema,
    db,
    init_app,
    random_credential,
    scope_to_list,
    utcnow,
)

# --- Configuration --------------------------------------------------------
# Defaults below; every key can be overridden from the environment as
# FLASK_<KEY> (values are parsed as JSON), and DATABASE_URL names the database.

app = Flask(__name__)
app.config['OAUTH2_PROVIDER_TOKEN_EXPIRES_IN'] = 3600  # token lifetime, seconds
# 256 random bits; oauthlib's default draws 30 characters, a system call each.
app.config['OAUTH2_PROVIDER_TOKEN_GENERATOR'] = lambda request: random_credential(32)
app.config.update(
    SQLALCHEMY_DATABASE_URI='sqlite:///oauth.sqlite',  # relative: in the instance folder
    # `introspect` lets a resource server introspect any client's tokens.
    OAUTH2_SCOPES_SUPPORTED=['read', 'write', 'introspect'],
    OAUTH2_REALM='client-credentials',
    OAUTH2_ISSUER=None,  # public base URL, e.g. https://auth.example.com; default: from the request
    MAX_CONTENT_LENGTH=64 * 1024,
    # RFC 6749 §2.3.1: the token endpoint MUST resist brute force. Failed
    # client authentications are counted per address and per client id.
    AUTH_FAILURES_PER_ADDRESS='10 per minute',
    AUTH_FAILURES_PER_CLIENT='30 per minute',
    RATELIMIT_ENABLED=True,
    RATELIMIT_STORAGE_URI='memory://',  # one process; "database://" or "redis://host" for several
    TRUSTED_PROXIES=0,  # reverse proxies in front whose X-Forwarded-For is believed
    AUDIT_LOG_FILE=None,  # JSON lines; None means standard error
)
app.config.from_prefixed_env()
if os.environ.get('DATABASE_URL'):
    app.config['SQLALCHEMY_DATABASE_URI'] = os.environ['DATABASE_URL']
if not app.config['SQLALCHEMY_DATABASE_URI'].startswith('sqlite'):
    # Test each pooled connection before use, so the app survives a database
    # server restart. SQLite has no server to lose: the test would be wasted.
    app.config.setdefault('SQLALCHEMY_ENGINE_OPTIONS', {}).setdefault('pool_pre_ping', True)
app.json.sort_keys = False
init_app(app)

if app.config['TRUSTED_PROXIES']:
    hops = int(app.config['TRUSTED_PROXIES'])
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

# oauthlib and Flask-OAuthlib log whole token responses at DEBUG level;
# tokens must never reach a log.
for _name in ('oauthlib', 'flask_oauthlib'):
    logging.getLogger(_name).setLevel(logging.INFO)

# One JSON line per security event, for a SIEM or `jq`; never a secret or token.
audit_log = logging.getLogger('oauth.audit')
audit_log.setLevel(logging.INFO)
audit_log.propagate = False
if not audit_log.handlers:
    _audit_handler = (logging.FileHandler(app.config['AUDIT_LOG_FILE']) if app.config['AUDIT_LOG_FILE']
                      else logging.StreamHandler(sys.stderr))
    _audit_handler.setFormatter(logging.Formatter('%(message)s'))
    audit_log.addHandler(_audit_handler)


def audit(event: str, client_id: str | None = None, **details) -> None:
    environ = request.environ if has_request_context() else {}
    line = json.dumps({
        'time': utcnow().isoformat(), 'event': event,
        'client_id': client_id[:200] if client_id else None,  # as presented: may be anything
        'remote_addr': environ.get('REMOTE_ADDR'),  # request.remote_addr, after ProxyFix
        'request_id': environ.get('oauth.request_id'),
        'actor': 'client' if environ else 'cli', **details})
    # What audit_log.info(line) does, less its search of the call stack for
    # the file and line of the call (always this one, and never shown): a
    # sixth of an audit line's cost in a token request.
    if audit_log.isEnabledFor(logging.INFO):
        audit_log.handle(audit_log.makeRecord(audit_log.name, logging.INFO, '', 0, line, None, None))


# --- The OAuth provider ---------------------------------------------------

# RFC 6750 §2.1: b64token, the syntax of a Bearer credential.
BEARER_TOKEN = re.compile(r'[A-Za-z0-9\-._~+/]+=*')


def client_credentials() -> tuple[str | None, str | None]:
    """(client_id, client_secret) of this request, from HTTP Basic or from the form.

    RFC 6749 §2.3.1: the server MUST support HTTP Basic, where id and secret
    are form-urlencoded (Appendix B) before base64. The fork only understands
    a pre-parsed header, which it no longer receives.
    """
    try:
        basic = request.authorization  # parsed once per request by Werkzeug
    except ValueError:  # Werkzeug's base64 decoder refuses a non-ASCII value with a bare ValueError
        raise errors.InvalidRequestError(description='Malformed Authorization header.') from None
    form_client_id, form_client_secret = request.form.get('client_id'), request.form.get('client_secret')
    if basic is None or basic.type != 'basic':
        return form_client_id, form_client_secret
    client_id = unquote_plus(basic.username or '')
    # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
    if form_client_secret or (form_client_id and form_client_id != client_id):
        raise errors.InvalidRequestError(description='Use one client authentication method, not both.')
    return client_id, unquote_plus(basic.password or '')


class ClientCredentialsValidator(OAuth2RequestValidator):
    """Flask-OAuthlib's validator, corrected where it falls short of the RFCs
    on today's Flask (README: "Why the Flask-OAuthlib-Invenio fork")."""

    def _get_client_creds_from_request(self, request):
        return client_credentials()  # from the Flask request this oauthlib `request` was built from

    def client_authentication_required(self, request, *args, **kwargs):
        # Every client here is confidential, so revocation (RFC 7009 §2.1) and
        # introspection check the secret too; the fork checks only the id.
        return True

    def authenticate_client(self, request, *args, **kwargs):
        # The fork compares plaintext secrets with `!=`; ours are hashed and
        # compared in constant time.
        client_id, client_secret = self._get_client_creds_from_request(request)
        client, failure = ClientView.authenticate(client_id, client_secret)
        if client is None:
            audit('authentication_failed', client_id, reason=failure)
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
        if tok is None or not tok.is_active():
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

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        # RFC 7009 §2.1: only the client a token was issued to may revoke it
        # (the fork revokes anyone's). §2.2: an unknown or already revoked
        # token still gets 200. No refresh tokens exist, so the hint is moot.
        tok = self._tokengetter(access_token=token)
        if tok is None:
            return
        if tok.client_pk != request.client.id:
            raise errors.InvalidGrantError(description='The token was issued to another client.')
        Token.revoke_where(Token.id == tok.id)
        db.session.commit()
        audit('token_revoked', request.client.client_id, token_id=tok.id)

    def introspect_token(self, token, token_type_hint, request, *args, **kwargs):
        # RFC 7662 §2.2: a token the caller may not see is just {"active": false}.
        # A client sees its own tokens; one with the `introspect` scope sees all.
        tok = self._tokengetter(access_token=token)
        if tok is None or not tok.is_active():
            return None
        if tok.client_pk != request.client.id and 'introspect' not in request.client.default_scopes:
            return None
        return tok.to_introspection()


class ClientCredentialsProvider(OAuth2Provider):
    """OAuth2Provider, handing oauthlib only what it reads of a request, and
    with a handler for RFC 7662 introspection, which Flask-OAuthlib lacks."""

    @staticmethod
    def oauthlib_request() -> tuple[str, str, dict, dict]:
        # oauthlib reads the path with its query, the method, the form and the
        # Authorization header. Flask-OAuthlib copies every header, re-encodes
        # the Authorization header and rebuilds the URL as an IRI first: a
        # sixth of a protected request's time.
        if request.query_string:
            try:  # oauthlib raises a bare ValueError on a query that is not urlencoded UTF-8
                urldecode(request.query_string.decode('utf-8'))
            except ValueError:
                raise errors.InvalidRequestError(description='Malformed query string.') from None
        authorization = request.headers.get('Authorization')
        headers = {} if authorization is None else {'Authorization': authorization}
        return request.full_path, request.method, request.form.to_dict(), headers

    def verify_request(self, scopes):
        return self.server.verify_request(*self.oauthlib_request(), scopes)

    def endpoint_handler(self, view, create_response):
        """The view runs first (it may refuse the request); then oauthlib's
        endpoint answers, given the request and whatever the view returned."""
        @wraps(view)
        def decorated(*args, **kwargs):
            extra = view(*args, **kwargs)
            headers, body, status = create_response(self.oauthlib_request(), extra)
            return app.response_class(body, status, headers)
        return decorated

    def token_handler(self, view):
        return self.endpoint_handler(view, lambda oauthlib_request, extra_credentials:
                                     self.server.create_token_response(*oauthlib_request, extra_credentials or {}))

    def revoke_handler(self, view):
        return self.endpoint_handler(view, lambda oauthlib_request, _:
                                     self.server.create_revocation_response(*oauthlib_request))

    def introspect_handler(self, view):
        # The oauthlib server Flask-OAuthlib builds has the endpoint, driven by
        # the validator's introspect_token().
        return self.endpoint_handler(view, lambda oauthlib_request, _:
                                     self.server.create_introspect_response(*oauthlib_request))


oauth = ClientCredentialsProvider(app, validator_class=ClientCredentialsValidator)

# --- Callbacks: how the provider reads and writes clients and tokens ------


@oauth.clientgetter
def load_client(client_id):
    return ClientView.find(client_id)


@oauth.tokengetter
def load_token(access_token=None, refresh_token=None):
    # Client credentials never issue refresh tokens (RFC 6749 §4.4.3).
    return Token.find(access_token)


@oauth.tokensetter
def save_token(token, request, *args, **kwargs):
    # `token` is the very response the client gets. The one field set here is
    # expires_in (RFC 6749 §5.1), for a client with a lifetime of its own.
    # Earlier tokens stay valid: several instances of one service share a client.
    if request.client.token_lifetime:
        token['expires_in'] = request.client.token_lifetime
    token_id = Token.issue(request.client, token['access_token'], token.get('scope', ''), token['expires_in'])
    audit('token_issued', request.client.client_id, token_id=token_id, scope=token.get('scope', ''),
          expires_in=token['expires_in'])


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
    if isinstance(error, DataError):  # a value the database refuses: the request's fault
        return oauth_error_response(errors.InvalidRequestError(description='A value in the request cannot be stored.'))
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


class ResponseHeaders:
    """WSGI middleware: every answer gets a request id and the headers of a
    JSON API (no sniffing, no framing, no referrer; per-client data is never
    cached unless the view says otherwise).

    The request id is the caller's X-Request-ID when it is a short token
    (so that it cannot forge log lines), else a new one; the audit log
    records it. Done here, on the bare header list, rather than in Flask's
    before/after_request hooks: measured, that took 15 µs, a tenth, off
    every request to /api/me.
    """

    REQUEST_ID = re.compile(r'[A-Za-z0-9._-]{1,64}')  # RFC 7230 token characters
    HEADERS = (('X-Content-Type-Options', 'nosniff'), ('Referrer-Policy', 'no-referrer'),
               ('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'"))

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        incoming = environ.get('HTTP_X_REQUEST_ID', '')
        request_id = environ['oauth.request_id'] = (
            incoming if self.REQUEST_ID.fullmatch(incoming) else secrets.token_hex(16))

        def start_with_headers(status, headers, exc_info=None):
            if not any(name.lower() == 'cache-control' for name, _ in headers):
                headers.append(('Cache-Control', 'no-store'))
            headers.extend(self.HEADERS)
            headers.append(('X-Request-ID', request_id))
            return start_response(status, headers, exc_info)
        return self.wsgi_app(environ, start_with_headers)


app.wsgi_app = ResponseHeaders(app.wsgi_app)


_schema_ready = False


@app.before_request
def create_schema_on_first_request():
    global _schema_ready
    # A health probe only asks whether the database answers.
    if not _schema_ready and request.endpoint != 'healthz':
        create_schema()
        _schema_ready = True


@app.after_request
def finish_client_authenticated_response(response):
    if request.endpoint not in CLIENT_AUTH_ENDPOINTS:
        return response
    # RFC 6749 §5.1: answers that carry or concern credentials are not cached.
    response.headers.setdefault('Pragma', 'no-cache')
    # RFC 6749 §5.2: a 401 from an endpoint that authenticates clients
    # challenges with the HTTP scheme clients use, Basic (oauthlib says Bearer).
    if response.status_code == 401:
        response.headers['WWW-Authenticate'] = f'Basic realm="{app.config["OAUTH2_REALM"]}"'
    # RFC 7009 §2.2 leaves the body of a successful revocation empty; an API
    # that always answers JSON sends an empty object.
    if response.status_code == 200 and not response.get_data():
        response.set_data('{}')
        response.mimetype = 'application/json'
    return response


def presented_client_id() -> str | None:
    """The client id as the validator will read it, so that re-encoding an
    id (Appendix B) does not give an attacker a fresh counter."""
    try:
        client_id, _ = client_credentials()
    except (errors.OAuth2Error, ValueError):
        return None
    return client_id


def client_id_key() -> str:
    # Hashed: the id is the caller's text (any length, any character) and
    # becomes a key in the limit storage, a database row with database://.
    return 'client:' + hashlib.sha256((presented_client_id() or '').encode('utf-8', 'replace')).hexdigest()


parse_limit = lru_cache(maxsize=16)(parse)  # "10 per minute" -> a limit, once


class FailedAuthenticationLimiter:
    """RFC 6749 §2.3.1: the token endpoint MUST resist brute force.

    Failed client authentications (401 answers) are counted per remote address
    and per client id; past either limit every request with that address or id
    is refused, the right secret included, until the window ends. Counting and
    storage are the `limits` library's (memory, this database, Redis).
    Flask-Limiter, built on it, hooks every request of the app and cost the
    unlimited API routes about 12% of their throughput; this decorator runs
    only on the three endpoints that authenticate clients.
    """

    def __init__(self, config):
        self.config = config
        self.enabled = bool(config['RATELIMIT_ENABLED'])
        self.storage = storage_from_string(config['RATELIMIT_STORAGE_URI'])
        self.windows = FixedWindowRateLimiter(self.storage)

    def counters(self) -> list[tuple]:
        return [(parse_limit(self.config['AUTH_FAILURES_PER_ADDRESS']), f'address:{request.remote_addr}'),
                (parse_limit(self.config['AUTH_FAILURES_PER_CLIENT']), client_id_key())]

    def __call__(self, view):
        @wraps(view)
        def limited(*args, **kwargs):
            if not self.enabled:
                return view(*args, **kwargs)
            counters = self.counters()
            for limit, key in counters:
                if not self.windows.test(limit, 'auth-failures', key):
                    reset_at = self.windows.get_window_stats(limit, 'auth-failures', key).reset_time
                    return self.refuse(limit, max(1, int(reset_at - time.time())))
            response = app.make_response(view(*args, **kwargs))
            if response.status_code == 401:
                for limit, key in counters:
                    self.windows.hit(limit, 'auth-failures', key)
            return response
        return limited

    @staticmethod
    def refuse(limit, retry_after: int):
        audit('authentication_throttled', presented_client_id(), limit=str(limit))
        response = oauth_error_response(errors.TemporarilyUnavailableError(
            description='Too many failed authentications; try again later.', status_code=429))
        response.headers['Retry-After'] = str(retry_after)
        return response

    def reset(self) -> None:
        self.storage.reset()


limit_failed_authentication = FailedAuthenticationLimiter(app.config)


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


CLIENT_AUTH_ENDPOINTS = {'access_token', 'revoke_token', 'introspect_token'}


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
    return None  # no extra fields in the token response


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


def public_url(endpoint: str = '') -> str:
    """An absolute URL under the issuer: behind a proxy the public address
    differs from the one the server binds, so the issuer is configurable."""
    issuer = (app.config['OAUTH2_ISSUER'] or request.url_root).rstrip('/')
    return issuer + (url_for(endpoint)[len(request.script_root):] if endpoint else '')


@app.get('/.well-known/oauth-authorization-server')
def authorization_server_metadata():
    # RFC 8414 §2, written out: oauthlib's MetadataEndpoint would advertise
    # every grant of Flask-OAuthlib's combined server and refuses an http issuer.
    auth_methods = ['client_secret_basic', 'client_secret_post']
    return jsonify(
        issuer=public_url(),
        token_endpoint=public_url('access_token'),
        token_endpoint_auth_methods_supported=auth_methods,
        grant_types_supported=['client_credentials'],
        response_types_supported=[],  # no authorization endpoint: nothing is sent to a browser
        scopes_supported=app.config['OAUTH2_SCOPES_SUPPORTED'],
        revocation_endpoint=public_url('revoke_token'),
        revocation_endpoint_auth_methods_supported=auth_methods,
        introspection_endpoint=public_url('introspect_token'),
        introspection_endpoint_auth_methods_supported=auth_methods,
    )


@app.get('/api/me')
@oauth.require_oauth()
def me():
    client = request.oauth.client
    return jsonify(client_id=client.client_id, name=client.name, scope=' '.join(request.oauth.scopes))


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


@app.get('/healthz')
def healthz():
    """For load balancers and orchestrators: 200 while the database answers."""
    try:
        db.session.execute(db.text('SELECT 1'))
    except SQLAlchemyError as error:
        db.session.rollback()
        app.logger.warning('health check failed: %s', database_error_line(error))
        return jsonify(status='unavailable'), 503
    return jsonify(status='ok')


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
            raise click.ClickException(f'cannot use the database: {database_error_line(error)}') from None
    return run


def database_error_line(error: SQLAlchemyError) -> str:
    return str(getattr(error, 'orig', None) or error).strip().splitlines()[0]


def validate_scope(ctx, param, scope):
    if scope is None:
        return None
    unknown = set(scope_to_list(scope)) - set(app.config['OAUTH2_SCOPES_SUPPORTED'])
    if unknown:
        raise click.BadParameter(f'unknown scope {sorted(unknown)[0]!r}; supported: '
                                 + ' '.join(app.config['OAUTH2_SCOPES_SUPPORTED']))
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
        click.echo(app.json.dumps(shown))
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


@app.cli.command('create-client')
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
    audit('client_created', client.client_id, scope=client.scope)
    if not as_json:
        click.echo(f'Created client {client.name!r}.')
    echo_client(client, as_json, client_secret=client_secret)
    if not as_json:
        click.echo('Store the secret now: only its hash is kept and it cannot be shown again.')


@app.cli.command('list-clients')
@json_option
@database_command
def list_clients_command(as_json):
    """List registered clients (secrets are never shown)."""
    clients = db.session.scalars(db.select(Client).order_by(Client.id)).all()
    if as_json:
        click.echo(app.json.dumps([client.to_dict() for client in clients]))
        return
    for client in clients:
        state = 'disabled' if client.disabled else 'enabled'
        click.echo(f'{client.client_id}\t{client.name}\t{client.scope}\t{state}')
    if not clients:
        click.echo('No clients yet: flask --app server create-client NAME', err=True)


@app.cli.command('show-client')
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


@app.cli.command('update-client')
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
        client.scope = scope
    if token_lifetime is not None:
        client.token_lifetime = token_lifetime or None
    db.session.commit()
    audit('client_updated', client.client_id, scope=client.scope, token_lifetime=client.token_lifetime)
    echo_client(client, as_json)


@app.cli.command('disable-client')
@client_id_argument
@database_command
def disable_client_command(client_id):
    """Refuse a client's credentials and revoke its live tokens, at once."""
    client = existing_client(client_id)
    revoked = client.disable()
    db.session.commit()
    audit('client_disabled', client.client_id, tokens_revoked=revoked)
    click.echo(f'Disabled {client.client_id}; revoked {revoked} token(s).')


@app.cli.command('enable-client')
@client_id_argument
@database_command
def enable_client_command(client_id):
    """Accept a disabled client again (its revoked tokens stay revoked)."""
    client = existing_client(client_id)
    client.disabled = False
    db.session.commit()
    audit('client_enabled', client.client_id)
    click.echo(f'Enabled {client.client_id}.')


@app.cli.command('rotate-secret')
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
    audit('secret_rotated', client.client_id, grace=grace)
    if as_json:
        click.echo(app.json.dumps({'client_id': client.client_id, 'client_secret': client_secret,
                                   'previous_secret_valid_for': grace}))
        return
    click.echo(f'client_id:     {client.client_id}')
    click.echo(f'client_secret: {client_secret}')
    click.echo(f'The old secret works for {grace} more second(s). Store the new one now: '
               'it cannot be shown again.')


@app.cli.command('delete-client')
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
    audit('client_deleted', client_id)
    click.echo(f'Deleted {client_id}.')


@app.cli.command('purge-tokens')
@database_command
def purge_tokens_command():
    """Delete expired and revoked tokens, and expired rate-limit counters
    (safe while the server runs)."""
    tokens, counters = Token.purge(), RateLimitCounter.purge()
    click.echo(f'Purged {tokens} token(s) and {counters} expired rate-limit counter(s).')


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
