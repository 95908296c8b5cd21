"""The benchmark's equal-duty baseline: the project's two hot endpoints doing
the project's duties, written plainly with Flask and SQLAlchemy Core and no
OAuth library.

What the project does on each request, this does too:
- the same SQL statements (the client read by its id, with the same columns;
  the token stored by its SHA-256 only if its client is still enabled, in one
  INSERT ... SELECT; the token read with its client in one join);
- the same checks: the secret against its one-round PBKDF2 hash in constant
  time, the client enabled and allowed the grant; for the API, the token
  unexpired, unrevoked, its client enabled, meant for this API (its
  audience, RFC 8707) and its scope narrowed to the client's current one;
- the brute-force check (RFC 6749 §2.3.1), as production/bruteforce.py:
  failed authentications counted with the `limits` library's memory storage
  per address and per client id from that address, tested before the
  request and hit on a 401; and the tokens-per-client limit of a process;
- the audit line: one JSON line per token issued (and per failed
  authentication) to FLASK_AUDIT_LOG_FILE or standard error, with the
  fields production/audit.py writes;
- a request id (the caller's X-Request-ID when it is a short token) and the
  security headers on every answer;
- every 1,000 requests, a batch of expired tokens deleted.
It leaves out the Prometheus metrics (measured at 0-3% of the project's
throughput: bench/run.py --side-tables).

On SQLite it sets the same pragmas as production/sqlite.py. There the
project also queues its token inserts on a lock file and checkpoints in a
thread: that is the project's own work, not a duty, so here SQLite does
both its own way, as it does for any plain Flask app.

    DATABASE_URL=... gunicorn -w 2 --chdir bench baseline:app
"""
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import Flask, jsonify, request
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.security import check_password_hash

app = Flask(__name__)
app.config['MAX_CONTENT_LENGTH'] = 64 * 1024  # as production/settings.py
engine = sa.create_engine(os.environ['DATABASE_URL'], pool_pre_ping=not os.environ['DATABASE_URL'].startswith('sqlite'))

if engine.dialect.name == 'sqlite':
    @sa.event.listens_for(engine, 'connect')
    def sqlite_settings(connection, _):  # as production/sqlite.py
        for pragma in ('journal_mode=WAL', 'synchronous=NORMAL', 'busy_timeout=10000', 'foreign_keys=ON',
                       'journal_size_limit=67108864'):
            connection.execute(f'PRAGMA {pragma}')

# The project's settings, from the same environment variables (production/settings.py).
ISSUER = os.environ.get('FLASK_OAUTH2_ISSUER', 'http://127.0.0.1').rstrip('/')
API_RESOURCE = ISSUER + '/api'
FAILURES_PER_ADDRESS, FAILURES_PER_CLIENT_ADDRESS = parse('10 per minute'), parse('5 per minute')
TOKENS_PER_CLIENT = parse(json.loads(os.environ.get('FLASK_TOKENS_PER_CLIENT', '"600 per minute"')))
TOKEN_LIFETIME = 3600

FIND_CLIENT = sa.text(
    'SELECT id, client_id, name, scope, grant_types, token_lifetime, token_format, resources, '
    'token_endpoint_auth_method, jwks, disabled, secret_hash, previous_secret_hash, previous_secret_expires '
    'FROM clients WHERE client_id = :client_id')
# On PostgreSQL FOR SHARE waits for a disable-client in progress, as the project's insert does.
INSERT_TOKEN = sa.text(
    'INSERT INTO tokens (access_token_hash, client_pk, scope, issued_at, expires, audience) '
    'SELECT :hash, clients.id, :scope, :issued_at, :expires, :audience FROM clients '
    'WHERE clients.id = :client_pk AND clients.disabled = false FOR SHARE RETURNING id'
    if engine.dialect.name == 'postgresql' else
    'INSERT INTO tokens (access_token_hash, client_pk, scope, issued_at, expires, audience) '
    'SELECT :hash, clients.id, :scope, :issued_at, :expires, :audience FROM clients '
    'WHERE clients.id = :client_pk AND clients.disabled = false RETURNING id')
FIND_TOKEN = sa.text(
    'SELECT tokens.id, tokens.scope, tokens.issued_at, tokens.expires, tokens.revoked_at, tokens.audience, '
    'clients.id AS client_pk, clients.client_id, clients.name, clients.scope AS client_scope, clients.grant_types, '
    'clients.token_lifetime, clients.token_format, clients.resources, clients.token_endpoint_auth_method, '
    'clients.jwks, clients.disabled, clients.secret_hash, clients.previous_secret_hash, '
    'clients.previous_secret_expires '
    'FROM tokens JOIN clients ON clients.id = tokens.client_pk WHERE tokens.access_token_hash = :hash'
).columns(expires=sa.DateTime, revoked_at=sa.DateTime, disabled=sa.Boolean)
PURGE_EXPIRED = sa.text('DELETE FROM tokens WHERE id IN '
                        '(SELECT id FROM tokens WHERE expires <= :now LIMIT 1000)')

audit_log = logging.getLogger('baseline.audit')
audit_log.setLevel(logging.INFO)
audit_log.propagate = False
audit_handler = (logging.FileHandler(os.environ['FLASK_AUDIT_LOG_FILE']) if os.environ.get('FLASK_AUDIT_LOG_FILE')
                 else logging.StreamHandler(sys.stderr))
audit_handler.setFormatter(logging.Formatter('%(message)s'))
audit_log.addHandler(audit_handler)

failures = FixedWindowRateLimiter(MemoryStorage())
tokens_issued = {}  # client's primary key -> (window number, tokens issued in it)
served = itertools.count(1)
REQUEST_ID = re.compile(r'[A-Za-z0-9._-]{1,64}')
BEARER_TOKEN = re.compile(r'[A-Za-z0-9\-._~+/]+=*')


def utcnow():
    return datetime.now(UTC).replace(tzinfo=None)


def audit(event, client_id, **details):
    audit_log.info(json.dumps({
        'time': datetime.now(UTC).isoformat(), 'event': event, 'client_id': client_id[:200] if client_id else None,
        'remote_addr': request.remote_addr, 'request_id': request.environ['request_id'], 'actor': 'client',
        **details}))


def error(status, code, **headers):
    return jsonify(error=code), status, {'Cache-Control': 'no-store', 'Pragma': 'no-cache', **headers}


@app.post('/oauth/token')
def token():
    if request.authorization and request.authorization.type == 'basic':
        client_id, secret = request.authorization.username, request.authorization.password
    else:
        client_id, secret = request.form.get('client_id'), request.form.get('client_secret')
    counters = [(FAILURES_PER_ADDRESS, f'address:{request.remote_addr}'),
                (FAILURES_PER_CLIENT_ADDRESS, f'client:{hashlib.sha256((client_id or "").encode()).hexdigest()}'
                                              f':address:{request.remote_addr}')]
    for limit, key in counters:  # RFC 6749 §2.3.1
        if not failures.test(limit, 'auth-failures', key):
            reset_at = failures.get_window_stats(limit, 'auth-failures', key).reset_time
            return error(429, 'temporarily_unavailable', **{'Retry-After': str(max(1, int(reset_at - time.time())))})
    if request.form.get('grant_type') != 'client_credentials':
        return error(400, 'unsupported_grant_type')
    with engine.begin() as connection:
        client = connection.execute(FIND_CLIENT, {'client_id': client_id}).first() if client_id else None
        refused = ('unknown_client' if client is None else
                   'wrong_secret' if not check_password_hash(client.secret_hash, secret or '') else
                   'client_disabled' if client.disabled else None)
        if refused:
            for limit, key in counters:
                failures.hit(limit, 'auth-failures', key)
            audit('authentication_failed', client_id, reason=refused)
            return error(401, 'invalid_client', **{'WWW-Authenticate': 'Basic realm="client-credentials"'})
        if 'client_credentials' not in client.grant_types.split():
            return error(400, 'unauthorized_client')
        window = int(time.time() // TOKENS_PER_CLIENT.get_expiry())
        start, issued = tokens_issued.get(client.id, (window, 0))
        issued = issued if start == window else 0
        if issued >= TOKENS_PER_CLIENT.amount:
            retry_after = int((window + 1) * TOKENS_PER_CLIENT.get_expiry() - time.time())
            return error(429, 'temporarily_unavailable', **{'Retry-After': str(max(1, retry_after))})
        tokens_issued[client.id] = (window, issued + 1)
        access_token, lifetime = secrets.token_urlsafe(32), client.token_lifetime or TOKEN_LIFETIME
        now = utcnow()
        token_id = connection.execute(INSERT_TOKEN, {
            'hash': hashlib.sha256(access_token.encode()).hexdigest(), 'client_pk': client.id,
            'scope': client.scope, 'issued_at': now, 'expires': now + timedelta(seconds=lifetime),
            'audience': API_RESOURCE}).scalar()
    if token_id is None:  # disabled meanwhile
        return error(401, 'invalid_client')
    audit('token_issued', client.client_id, token_id=token_id, scope=client.scope, expires_in=lifetime,
          audience=[API_RESOURCE], token_format='opaque')  # noqa: S106 - not a secret
    body = {'access_token': access_token, 'token_type': 'Bearer', 'expires_in': lifetime, 'scope': client.scope}
    return jsonify(body), 200, {'Cache-Control': 'no-store', 'Pragma': 'no-cache'}


@app.get('/api/me')
def me():
    scheme, _, access_token = (request.headers.get('Authorization') or '').partition(' ')
    if scheme.lower() != 'bearer' or not BEARER_TOKEN.fullmatch(access_token):
        return error(401, 'invalid_token', **{'WWW-Authenticate': 'Bearer realm="client-credentials"'})
    with engine.connect() as connection:
        row = connection.execute(FIND_TOKEN, {'hash': hashlib.sha256(access_token.encode()).hexdigest()}).first()
    if row is None or row.revoked_at is not None or row.expires <= utcnow() or row.disabled \
            or (row.audience is not None and API_RESOURCE not in row.audience.split()):
        return error(401, 'invalid_token', **{'WWW-Authenticate': 'Bearer realm="client-credentials"'})
    allowed = row.client_scope.split()  # a client's scope narrowed since counts at once
    return jsonify(client_id=row.client_id, name=row.name, scope=' '.join(s for s in row.scope.split() if s in allowed))


@app.teardown_request
def purge_now_and_then(_error=None):
    if next(served) % 1000 == 0:
        with engine.begin() as connection:
            connection.execute(PURGE_EXPIRED, {'now': utcnow()})


SECURITY_HEADERS = [('X-Content-Type-Options', 'nosniff'), ('Referrer-Policy', 'no-referrer'),
                    ('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'")]


def with_request_id(wsgi_app):
    """A request id for the audit line and the answer, and the security headers."""
    def serve(environ, start_response):
        incoming = environ.get('HTTP_X_REQUEST_ID', '')
        request_id = environ['request_id'] = incoming if REQUEST_ID.fullmatch(incoming) else secrets.token_hex(16)

        def start(status, headers, exc_info=None):
            if not any(name.lower() == 'cache-control' for name, _ in headers):
                headers.append(('Cache-Control', 'no-store'))
            return start_response(status, [*headers, *SECURITY_HEADERS, ('X-Request-ID', request_id)], exc_info)
        return wsgi_app(environ, start)
    return serve


app.wsgi_app = with_request_id(app.wsgi_app)
