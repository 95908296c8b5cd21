"""Settings: the defaults below, then the environment, then their checks.

Every key can be overridden as FLASK_<KEY> (the value is parsed as JSON, so
FLASK_RATELIMIT_ENABLED=false is False), and DATABASE_URL names the database.
Each setting is checked when the app is made (CHECKS): a bad one stops the
program there with one line, before it serves a request or runs a command.
"""
import ipaddress
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from flask import current_app, request, url_for
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Where a relative SQLite path lives: the project's instance/ folder, whatever
# the working directory (Flask's own instance folder moves with it when
# server.py runs as a script).
INSTANCE_FOLDER = Path(__file__).resolve().parent.parent / 'instance'

DEFAULTS = {
    'SQLALCHEMY_DATABASE_URI': 'sqlite:///oauth.sqlite',  # in INSTANCE_FOLDER
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
    # its jti is kept in the database that long, plus the leeway on exp.
    'CLIENT_ASSERTION_MAX_LIFETIME': 300,
    # DPoP (RFC 9449, production/dpop.py): how old a proof may be, seconds
    # (a few seconds ahead are allowed too, for clocks that differ); its jti
    # is kept in the database that long, plus that clock leeway.
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
    # from one address (never per client id alone: docs/security.md).
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
    what hosting platforms hand out, mean PostgreSQL through psycopg 3; a
    relative SQLite path is in INSTANCE_FOLDER. Any other database, no URL at
    all, or a SQLite file that cannot be made, stops the program with one
    line (refuse), not a traceback."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        refuse(f'DATABASE_URL is not a database URL: {url[:80]!r} '
               '(e.g. sqlite:///oauth.sqlite or postgresql://user:password@host/dbname)')
    if parsed.drivername in ('postgres', 'postgresql'):
        parsed = parsed.set(drivername='postgresql+psycopg')
    if parsed.drivername not in ('sqlite', 'postgresql+psycopg'):
        refuse(f'DATABASE_URL is a {parsed.drivername} URL; this server runs on '
               'SQLite (sqlite:///path) or PostgreSQL (postgresql://user:password@host/dbname)')
    if parsed.drivername == 'sqlite' and parsed.database and not parsed.database.startswith((':', 'file:')):
        parsed = parsed.set(database=sqlite_file(parsed.database))
    return parsed.render_as_string(hide_password=False)


def sqlite_file(path: str) -> str:
    """The absolute path of a SQLite database file, its folder checked: SQLite
    itself says only "unable to open database file"."""
    if not os.path.isabs(path):
        INSTANCE_FOLDER.mkdir(mode=0o700, exist_ok=True)
        path = str(INSTANCE_FOLDER / path)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        refuse(f'DATABASE_URL names the SQLite file {path}, but the folder {folder} does not exist')
    # WAL mode: SQLite makes the -wal and -shm files beside the database.
    if not os.access(folder, os.W_OK | os.X_OK):
        refuse(f'DATABASE_URL names the SQLite file {path}, but this user cannot write in {folder} '
               '(SQLite makes its -wal and -shm files there)')
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        refuse(f'DATABASE_URL names the SQLite file {path}, but this user cannot read and write it')
    return path


def configure(app) -> None:
    """The defaults, then whatever the environment overrides, each checked."""
    app.config.update(DEFAULTS)
    app.config.from_prefixed_env()
    # Set by server.main() alone, never by the environment: it lets the
    # development server keep a JWT signing key without a passphrase.
    app.config['DEVELOPMENT_SERVER'] = False
    check_settings(app.config)
    check_gunicorn_config()
    app.config['SQLALCHEMY_DATABASE_URI'] = database_url(
        os.environ.get('DATABASE_URL') or app.config['SQLALCHEMY_DATABASE_URI'])
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
    audience and this server's own API (docs/security.md). Unset (a server
    started without `python server.py` or gunicorn.conf.py, which see to it),
    a request that needs it is answered 503."""
    configured = current_app.config['OAUTH2_ISSUER']
    if configured:
        return configured.rstrip('/')
    if not request.environ.get('oauth.issuer_missing'):  # one log line a request
        request.environ['oauth.issuer_missing'] = True
        current_app.logger.error('FLASK_OAUTH2_ISSUER is not set: set it to the URL clients reach this server at '
                                 '(e.g. https://auth.example.com); requests that need it are refused')
    # Imported here: production.errors loads the metrics, which gunicorn's
    # master, checking these settings (gunicorn.conf.py), must not.
    from production.errors import RetryLater
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


# --- The checks: what each setting may be ---------------------------------
# One line a setting in CHECKS; configure() runs them all. A check returns the
# value as the app uses it, or raises ValueError saying what it must be.


def whole_number(low: int, high: int | None = None):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            raise ValueError(f'a whole number from {low} to {high}' if high else f'a whole number, {low} or more')
        return value
    return check


def true_or_false(value):
    if not isinstance(value, bool):
        raise ValueError('true or false')
    return value


def one_of(*choices):
    def check(value):
        if value not in choices:
            raise ValueError('one of: ' + ', '.join(choices))
        return value
    return check


def reads_text(check):
    """Mark a check of a text setting: it gets the environment's text as
    typed, before JSON turns 0123 into 123 or true into True."""
    check.reads_text = True
    return check


@reads_text
def text(value):
    if not isinstance(value, str) or not value or not value.isprintable():
        raise ValueError('a non-empty line of text')
    return value


def optional(check):
    """None (unset, or set empty: the default), or what `check` accepts."""
    def check_unless_none(value):
        return None if value is None or value == '' else check(value)
    check_unless_none.reads_text = getattr(check, 'reads_text', False)
    return check_unless_none


@reads_text
def realm(value):
    if not set(text(value)).isdisjoint('"\\'):  # it goes inside a quoted-string (RFC 9110 §5.6.4)
        raise ValueError('a line of text without " or \\')
    return value


@reads_text
def url(value):
    parts = urlsplit(text(value))
    if parts.scheme not in ('http', 'https') or not parts.hostname or parts.query or parts.fragment:
        raise ValueError('an absolute http(s) URL without a query or fragment, e.g. https://auth.example.com')
    return value


@reads_text
def resource(value):
    from production.audiences import check_resource  # RFC 8707 §2
    try:
        return check_resource(text(value))
    except ValueError:
        raise ValueError('an absolute URI without a fragment, e.g. https://auth.example.com/api') from None


@reads_text
def appendable_file(value):
    try:
        os.close(os.open(text(value), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
    except OSError as error:
        raise ValueError(f'a file this user can append to ({error.strerror})') from None
    return value


def scopes(value):
    # A JSON list, or the scopes space-separated as in a token request (RFC 6749 §3.3).
    value = value.split() if isinstance(value, str) else value
    if not isinstance(value, list) or not value or not all(
            isinstance(scope, str) and scope.isascii() and scope.isprintable() and set(scope).isdisjoint(' "\\')
            for scope in value):
        raise ValueError('a list of scopes, e.g. ["read", "write", "introspect", "admin"]')
    return value


def rate(value):
    from limits import parse  # the limits library's syntax
    try:
        if parse(value).amount < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError('a rate such as "10 per minute"') from None
    return value


def rate_limit_storage(value):
    from limits.errors import ConfigurationError
    from limits.storage import storage_from_string
    if urlsplit(str(value)).scheme == 'database':  # this app's own database (production/bruteforce.py)
        return value
    try:
        storage_from_string(value)
    except (TypeError, ValueError, ConfigurationError):
        raise ValueError('memory://, database:// or redis://host:6379') from None
    return value


def allowed_networks(addresses) -> tuple:
    """METRICS_ALLOWED_ADDRESSES as networks (production/metrics.py)."""
    return tuple(ipaddress.ip_network(address) for address in addresses)


def networks(value):
    value = [value] if isinstance(value, str) else value
    try:
        allowed_networks(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f'a list of addresses or CIDR blocks, e.g. ["127.0.0.1", "10.0.0.0/8"] ({error})') from None
    return value


CHECKS = {
    'OAUTH2_PROVIDER_TOKEN_EXPIRES_IN': whole_number(1, 366 * 24 * 3600),  # 0 would mean 3600 to the provider
    'OAUTH2_SCOPES_SUPPORTED': scopes,
    'OAUTH2_REALM': realm,
    'OAUTH2_ISSUER': optional(url),
    'ACCESS_TOKEN_FORMAT': one_of('opaque', 'jwt'),
    'JWT_SIGNING_ALG': one_of('ES256', 'RS256'),
    'SIGNING_KEY_PASSPHRASE': optional(text),
    'SIGNING_KEY_CACHE_SECONDS': whole_number(0, 3600),
    'API_RESOURCE': optional(resource),
    'CLIENT_ASSERTION_MAX_LIFETIME': whole_number(1, 3600),
    'METRICS_ENABLED': true_or_false,
    'METRICS_ALLOWED_ADDRESSES': networks,
    'METRICS_BEARER_TOKEN': optional(text),
    'MAX_CONTENT_LENGTH': whole_number(512),  # less would refuse a private_key_jwt token request
    'AUTH_FAILURES_PER_ADDRESS': rate,
    'AUTH_FAILURES_PER_CLIENT_ADDRESS': rate,
    'TOKENS_PER_CLIENT': rate,
    'RATELIMIT_ENABLED': true_or_false,
    'RATELIMIT_STORAGE_URI': rate_limit_storage,
    'TRUSTED_PROXIES': whole_number(0, 10),
    'AUDIT_LOG_FILE': optional(appendable_file),
    'PURGE_EVERY': whole_number(0),
    'PURGE_BATCH': whole_number(1),
    'DPOP_PROOF_MAX_AGE': whole_number(1, 3600),
    'DPOP_NONCE': true_or_false,
    'DPOP_NONCE_SECONDS': whole_number(1, 86400),
    'SECRET_KEY': optional(text),  # Flask's; here it keys the DPoP nonces
}


def check_settings(config) -> None:
    """Run every check on its setting; a bad value stops the program in one line."""
    for key, check in CHECKS.items():
        if key not in config:  # check_environment: the tutorial's line in server.py sets this one
            continue
        typed = os.environ.get(f'FLASK_{key}')
        value = typed if typed is not None and getattr(check, 'reads_text', False) else config[key]
        try:
            config[key] = check(value)
        except (TypeError, ValueError) as error:
            refuse(f'FLASK_{key} is {typed if typed is not None else value!r}; it must be {error}')
    if config['DPOP_NONCE'] and not config['SECRET_KEY']:  # the same nonces on every app server (RFC 9449 §9)
        refuse('FLASK_DPOP_NONCE is true, so FLASK_SECRET_KEY must be set: it keys the DPoP nonces '
               '(the same on every app server)')


def check_environment() -> None:
    """configure()'s checks, on the environment alone: gunicorn's master runs
    them (gunicorn.conf.py) so that a bad setting stops it before it starts
    any worker."""
    from flask import Flask
    configure(Flask(__name__))


def check_gunicorn_config() -> None:
    """gunicorn reads ./gunicorn.conf.py from the folder it starts in, not
    from --chdir's; without it gunicorn believes X-Forwarded-Proto from
    127.0.0.1, and /metrics counts one worker. The file marks the environment."""
    if 'gunicorn.arbiter' in sys.modules and not os.environ.get('OAUTH_SERVER_GUNICORN_CONF'):
        refuse("gunicorn did not read this project's gunicorn.conf.py: "
               'give it as -c /path/to/gunicorn.conf.py (needed with --chdir from another folder)')


def refuse(message: str):
    """Stop the program with one line on standard error. Under gunicorn a
    worker exits with gunicorn's "app failed to load" status, so that the
    master stops instead of starting workers that fail again, for ever."""
    if 'gunicorn.arbiter' in sys.modules:
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(4)  # gunicorn's Arbiter.APP_LOAD_ERROR
    raise SystemExit(message)
