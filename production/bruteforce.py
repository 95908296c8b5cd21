"""Limits on failed client authentication (RFC 6749 §2.3.1: the token
endpoint MUST protect against brute force), and the rate-limit counters'
storage in this app's own database.

Counting and storage are the `limits` library's (memory, this database,
Redis). Flask-Limiter, built on it, hooks every request of the app and cost
the unlimited API routes about 12% of their throughput; the decorator here
runs only on the three endpoints that authenticate clients.
"""
from __future__ import annotations

import hashlib
import time
from functools import lru_cache, wraps
from typing import ClassVar

from flask import current_app, request
from limits import parse
from limits.errors import StorageError
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from oauthlib.oauth2.rfc6749 import errors
from sqlalchemy import Float, Integer, String, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from production import audit, metrics
from production.database import db
from production.errors import RetryLater, database_error_response, oauth_error_response
from production.validator import presented_credentials


def presented_client_id() -> str | None:
    """The client id as the validator will read it, so that re-encoding an
    id (Appendix B) does not give an attacker a fresh counter; for an
    assertion (private_key_jwt), the client it names."""
    try:
        client_id, _, _ = presented_credentials()
    except (errors.OAuth2Error, ValueError):
        return None
    return client_id


def client_address_key(address: str | None) -> str:
    # Hashed: the id is the caller's text (any length, any character) and
    # becomes a key in the limit storage, a database row with database://.
    client_id = (presented_client_id() or '').encode('utf-8', 'replace')
    return f'client:{hashlib.sha256(client_id).hexdigest()}:address:{address}'


parse_limit = lru_cache(maxsize=16)(parse)  # "10 per minute" -> a limit, once


class FailedAuthenticationLimiter:
    """Failed client authentications (401 answers) are counted per remote
    address, and per client id from that address; past either limit, that
    address (or that client id from that address) is refused, the right
    secret included, until the window ends.

    Nothing is counted per client id alone: failures from one address never
    refuse another address's correct credentials, so a stranger who knows a
    client id cannot lock that client out (docs/security.md: "Brute force").
    """

    def init_app(self, app) -> None:
        self.config = app.config
        self.enabled = bool(app.config['RATELIMIT_ENABLED'])
        uri = app.config['RATELIMIT_STORAGE_URI']
        # wrap_exceptions: whatever the storage, its failures arrive as one
        # exception, answered by storage_unavailable.
        self.storage = storage_from_string(uri, wrap_exceptions=True, **storage_options(uri))
        self.windows = FixedWindowRateLimiter(self.storage)
        app.register_error_handler(StorageError, storage_unavailable)

    def counters(self) -> list[tuple]:
        address = request.remote_addr
        return [(parse_limit(self.config['AUTH_FAILURES_PER_ADDRESS']), f'address:{address}'),
                (parse_limit(self.config['AUTH_FAILURES_PER_CLIENT_ADDRESS']), client_address_key(address))]

    def __call__(self, view):
        @wraps(view)
        def limited(*args, **kwargs):
            if not self.enabled:
                return view(*args, **kwargs)
            counters = self.counters()
            for limit, key in counters:
                if not self.windows.test(limit, 'auth-failures', key):
                    reset_at = self.windows.get_window_stats(limit, 'auth-failures', key).reset_time
                    return self.refuse(limit, key, max(1, int(reset_at - time.time())))
            response = current_app.make_response(view(*args, **kwargs))
            if response.status_code == 401:
                for limit, key in counters:
                    self.windows.hit(limit, 'auth-failures', key)
            return response
        return limited

    def first_in_window(self, limit, key: str) -> bool:
        """True once per key and window of `limit`: one audit line for a
        caller that keeps trying, not one a request (which would fill the disk)."""
        return self.windows.hit(type(limit)(1, limit.multiples), 'said', key)

    def refuse(self, limit, key: str, retry_after: int):
        metrics.throttled('auth_failures')
        if self.first_in_window(limit, key):
            audit.event('authentication_throttled', presented_client_id(), limit=str(limit),
                        retry_after=retry_after)
        return oauth_error_response(RetryLater('Too many failed authentications; try again later.', retry_after))

    def reset(self) -> None:
        self.storage.reset()
        issuance.windows.clear()

    def healthy(self) -> bool:
        """The counters' storage answers (/healthz); True while limits are off."""
        try:
            return not self.enabled or self.storage.check()
        except StorageError:
            return False


limit_failed_authentication = FailedAuthenticationLimiter()

# A Redis that is stopped or hung answers within about a second, not after
# the client's default 5 s read timeout (the `limits` library hands these
# options to redis.from_url).
REDIS_SCHEMES = ('redis', 'rediss', 'redis+unix')
REDIS_OPTIONS = {'socket_connect_timeout': 1, 'socket_timeout': 1}
STORAGE_RETRY_AFTER = 5  # seconds


def storage_options(uri: str) -> dict:
    return REDIS_OPTIONS if uri.split('://', 1)[0] in REDIS_SCHEMES else {}


def storage_unavailable(error: StorageError):
    """The counters' storage failed: 503 and Retry-After, one log line.

    Fail closed: while the failures cannot be counted, no client is
    authenticated (token, revocation, introspection), or an attacker who can
    make Redis fail (or waits for it to) would guess secrets without limit.
    Tokens already issued keep working: the API routes count nothing."""
    cause = error.storage_error
    if isinstance(cause, SQLAlchemyError):  # database://: the database is down, and said so
        return database_error_response(cause)
    current_app.logger.error('rate-limit storage error: %s: %s', type(cause).__name__,
                             ' '.join(str(cause).split()))
    return oauth_error_response(RetryLater('The rate-limit storage is unavailable; try again later.',
                                           STORAGE_RETRY_AFTER, status_code=503))


class IssuanceCounter:
    """Tokens issued per client in fixed windows, in this process.

    Written here rather than kept in the limiter's storage: the `limits`
    library's memory storage starts a timer thread on most increments (a
    third of the token endpoint's throughput, measured), and the shared
    storages would add a database or Redis write to every token. So each
    server process counts on its own: the limit is per process, an upper
    bound that no client using its tokens for their lifetime comes near.
    """

    def __init__(self):
        self.windows: dict = {}  # client's primary key -> (window number, tokens in it)

    def retry_after(self, key, limit) -> int:
        """0 and count one more token, or the seconds until the window ends."""
        period, now = limit.get_expiry(), time.time()
        window = int(now // period)
        start, issued = self.windows.get(key, (window, 0))
        issued = issued if start == window else 0
        if issued >= limit.amount:
            return max(1, int((window + 1) * period - now))
        self.windows[key] = (window, issued + 1)
        return 0


issuance = IssuanceCounter()


def limit_token_issuance(client) -> None:
    """At most TOKENS_PER_CLIENT tokens a client, per server process. No RFC
    asks it; without it one client could mint tokens (rows) as fast as the
    server can write. Raises RetryLater (429)."""
    limiter = limit_failed_authentication
    if not limiter.enabled:
        return
    limit = parse_limit(limiter.config['TOKENS_PER_CLIENT'])
    retry_after = issuance.retry_after(client.id, limit)
    if retry_after:
        metrics.throttled('tokens_per_client')
        if limiter.first_in_window(limit, f'tokens:{client.id}'):
            audit.event('token_issuance_throttled', client.client_id, limit=str(limit), retry_after=retry_after)
        raise RetryLater('This client asks for too many tokens; reuse each until it nearly expires.', retry_after)


class RateLimitCounter(db.Model):
    """One fixed-window counter of the rate limiter (see DatabaseStorage)."""

    __tablename__ = 'rate_limits'

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)  # Unix time

    @classmethod
    def purge(cls, batch: int | None = None) -> int:
        """Delete expired counters (at most `batch` of them); how many."""
        expired = db.select(cls.name).where(cls.expires_at <= time.time()).limit(batch)
        result = db.session.execute(db.delete(cls).where(cls.name.in_(expired)))
        db.session.commit()
        return result.rowcount


# One statement, so that concurrent workers never lose a count. SQLite (3.35+)
# and PostgreSQL share this upsert syntax.
_INCREMENT = text(
    'INSERT INTO rate_limits (name, count, expires_at) VALUES (:name, :amount, :expires_at) '
    'ON CONFLICT (name) DO UPDATE SET '
    'count = CASE WHEN rate_limits.expires_at <= :now THEN :amount ELSE rate_limits.count + :amount END, '
    'expires_at = CASE WHEN rate_limits.expires_at <= :now THEN :expires_at ELSE rate_limits.expires_at END '
    'RETURNING count')


class DatabaseStorage(Storage):
    """Rate-limit counters in this app's own database: RATELIMIT_STORAGE_URI='database://'.

    The `limits` library behind Flask-Limiter ships Redis, Memcached and
    MongoDB storages but none for SQL. With this one, every gunicorn worker
    and every app server sharing the database shares the counters, with no
    extra service to run. It supports the fixed-window strategy (the default).
    Each call runs in its own short transaction, apart from the request's.
    """

    STORAGE_SCHEME: ClassVar[list[str]] = ['database']

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with db.engine.begin() as connection:
            return connection.execute(_INCREMENT, {'name': key, 'amount': amount, 'now': now,
                                                   'expires_at': now + expiry}).scalar_one()

    def _row(self, key: str) -> RateLimitCounter | None:
        with db.engine.connect() as connection:
            return connection.execute(db.select(RateLimitCounter.count, RateLimitCounter.expires_at).where(
                RateLimitCounter.name == key, RateLimitCounter.expires_at > time.time())).first()

    def get(self, key: str) -> int:
        row = self._row(key)
        return row.count if row else 0

    def get_expiry(self, key: str) -> float:
        row = self._row(key)
        return row.expires_at if row else time.time()

    def check(self) -> bool:
        with db.engine.connect() as connection:
            connection.execute(text('SELECT 1'))
        return True

    def reset(self) -> int:
        with db.engine.begin() as connection:
            return connection.execute(db.delete(RateLimitCounter)).rowcount

    def clear(self, key: str) -> None:
        with db.engine.begin() as connection:
            connection.execute(db.delete(RateLimitCounter).where(RateLimitCounter.name == key))
