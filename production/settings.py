"""Settings: the defaults below, then the environment.

Every key can be overridden as FLASK_<KEY> (the value is parsed as JSON, so
FLASK_RATELIMIT_ENABLED=false is False), and DATABASE_URL names the database.
"""
import ipaddress
import os
import sys

from flask import current_app, request, url_for
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from production.errors import RetryLater

DEFAULTS = {
    # Relative SQLite paths live in Flask's instance folder.
    'SQLALCHEMY_DATABASE_URI': 'sqlite:///oauth.sqlite',
    # `introspect` lets a resource server introspect any client's tokens;
    # `admin` opens the admin API (production/admin_api.py). No client has
    # either unless given it.
    'OAUTH2_SCOPES_SUPPORTED': ['read', 'write', 'introspect', 'admin'],
    'OAUTH2_REALM': 'client-credentials',
    'OAUTH2_ISSUER': None,  # public base URL, e.g. https://auth.example.com; required (see issuer())
    # Access tokens: 'opaque' (random, looked up on every use) or 'jwt' (RFC
    # 9068, verified with the public keys); a client's own format wins.
    'ACCESS_TOKEN_FORMAT': 'opaque',
    'JWT_SIGNING_ALG': 'ES256',  # of a new signing key; RS256 too (production/signing_keys.py)
    'SIGNING_KEY_PASSPHRASE': None,  # encrypts the private signing keys in the database
    'SIGNING_KEY_CACHE_SECONDS': 60,  # a process signs with the key it read for this long
    # This server's own API as a resource (RFC 8707); default: the issuer + /api.
    'API_RESOURCE': None,
    # private_key_jwt (RFC 7523): the longest an assertion may be valid for;
    # its jti is kept in the database that long.
    'CLIENT_ASSERTION_MAX_LIFETIME': 300,
    # DPoP (RFC 9449, production/dpop.py): how old a proof may be, seconds
    # (a few seconds ahead are allowed too, for clocks that differ); its jti
    # is kept in the database that long.
    'DPOP_PROOF_MAX_AGE': 60,
    # Server nonces in DPoP proofs (RFC 9449 §8, §9), keyed with SECRET_KEY
    # (FLASK_SECRET_KEY, required then); a nonce is good for one to two
    # periods of DPOP_NONCE_SECONDS.
    'DPOP_NONCE': False,
    'DPOP_NONCE_SECONDS': 300,
    # GET /metrics (Prometheus): served to these addresses (CIDR blocks too),
    # and to a caller sending METRICS_BEARER_TOKEN; to no one else.
    'METRICS_ENABLED': True,
    'METRICS_ALLOWED_ADDRESSES': ['127.0.0.1', '::1'],
    'METRICS_BEARER_TOKEN': None,
    'MAX_CONTENT_LENGTH': 64 * 1024,
    # RFC 6749 §2.3.1: the token endpoint MUST resist brute force. Failed
    # client authentications are counted per address, and per client id
    # from one address (never per client id alone: README, Security).
    'AUTH_FAILURES_PER_ADDRESS': '10 per minute',
    'AUTH_FAILURES_PER_CLIENT_ADDRESS': '5 per minute',
    # Tokens one client may get; generous: a client reuses each token for its lifetime.
    'TOKENS_PER_CLIENT': '600 per minute',
    'RATELIMIT_ENABLED': True,
    'RATELIMIT_STORAGE_URI': 'memory://',  # one process; "database://" or "redis://host" for several
    'TRUSTED_PROXIES': 0,  # reverse proxies in front whose X-Forwarded-* headers are believed
    'AUDIT_LOG_FILE': None,  # JSON lines; None means standard error
    # Dead tokens and expired rate-limit counters are deleted PURGE_BATCH at a
    # time after every PURGE_EVERY requests of a process (0: never; cron's
    # `flask --app server purge-tokens` still works).
    'PURGE_EVERY': 1000,
    'PURGE_BATCH': 1000,
}


def database_url(url: str) -> str:
    """DATABASE_URL as SQLAlchemy takes it. postgres:// and postgresql://,
    what hosting platforms hand out, mean PostgreSQL through psycopg 3; any
    other database, or no URL at all, stops the program with one line
    (SystemExit), not a traceback."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SystemExit(f'DATABASE_URL is not a database URL: {url[:80]!r} '
                         '(e.g. sqlite:///oauth.sqlite or postgresql://user:password@host/dbname)') from None
    if parsed.drivername in ('postgres', 'postgresql'):
        parsed = parsed.set(drivername='postgresql+psycopg')
    if parsed.drivername not in ('sqlite', 'postgresql+psycopg'):
        raise SystemExit(f'DATABASE_URL is a {parsed.drivername} URL; this server runs on '
                         'SQLite (sqlite:///path) or PostgreSQL (postgresql://user:password@host/dbname)')
    return parsed.render_as_string(hide_password=False)


CHOICES = {'ACCESS_TOKEN_FORMAT': ('opaque', 'jwt'), 'JWT_SIGNING_ALG': ('ES256', 'RS256')}


def configure(app) -> None:
    """The defaults, then whatever the environment overrides."""
    app.config.update(DEFAULTS)
    app.config.from_prefixed_env()
    # Set by server.main() alone, never by the environment: it lets the
    # development server keep a JWT signing key without a passphrase.
    app.config['DEVELOPMENT_SERVER'] = False
    for key, choices in CHOICES.items():
        if app.config[key] not in choices:
            raise SystemExit(f'FLASK_{key} is {app.config[key]!r}; it must be one of: {", ".join(choices)}')
    if os.environ.get('DATABASE_URL'):
        app.config['SQLALCHEMY_DATABASE_URI'] = database_url(os.environ['DATABASE_URL'])
    if not app.config['SQLALCHEMY_DATABASE_URI'].startswith('sqlite'):
        # Test each pooled connection before use, so the app survives a database
        # server restart. SQLite has no server to lose: the test would be wasted.
        app.config.setdefault('SQLALCHEMY_ENGINE_OPTIONS', {}).setdefault('pool_pre_ping', True)


# --- The issuer ---------------------------------------------------------------

ISSUER_RETRY_AFTER = 60  # seconds: a setting is missing, not a dependency that comes back by itself


def issuer() -> str:
    """This server's identifier (RFC 8414 §2): OAUTH2_ISSUER, the public base
    URL. Never taken from the request: its Host header is the caller's to
    choose, and the issuer names the JWT `iss`, the metadata, the assertion
    audience and this server's own API (README: Security). Unset (a server
    started without `python server.py` or gunicorn.conf.py, which see to it),
    a request that needs it is answered 503."""
    configured = current_app.config['OAUTH2_ISSUER']
    if configured:
        return configured.rstrip('/')
    if not request.environ.get('oauth.issuer_missing'):  # one log line a request
        request.environ['oauth.issuer_missing'] = True
        current_app.logger.error('FLASK_OAUTH2_ISSUER is not set: set it to the URL clients reach this server at '
                                 '(e.g. https://auth.example.com); requests that need it are refused')
    raise RetryLater('This server is not configured (FLASK_OAUTH2_ISSUER).', ISSUER_RETRY_AFTER, status_code=503)


def set_development_issuer(app, host: str, port: int) -> None:
    """python server.py: unless FLASK_OAUTH2_ISSUER says otherwise, the
    issuer is the address the development server listens on."""
    if app.config['OAUTH2_ISSUER']:
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None  # a host name, such as localhost
    if not host or (address is not None and address.is_unspecified):  # every address: which do clients use?
        print(f'server.py: listening on every address: set FLASK_OAUTH2_ISSUER to the URL clients use; '
              f'until then the issuer is http://127.0.0.1:{port}', file=sys.stderr, flush=True)
        host = '127.0.0.1'
    elif address is not None and address.version == 6:
        host = f'[{host}]'
    app.config['OAUTH2_ISSUER'] = f'http://{host}:{port}'


def public_url(endpoint: str = '') -> str:
    """An absolute URL under the issuer: the issuer itself, or an endpoint's."""
    return issuer() + (url_for(endpoint)[len(request.script_root):] if endpoint else '')
