"""Database models for the client-credentials authorization server.

Three tables: the machine clients, the access tokens issued to them, and the
items each client owns (the "resources" the tutorial's clients access).

What a database dump reveals is deliberately useless: a client secret is kept
only as a salted hash, an access token only as its SHA-256 digest.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar
from urllib.parse import quote

from flask import g
from flask_sqlalchemy import SQLAlchemy
from limits.storage import Storage
from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, TypeDecorator, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

try:
    import fcntl  # POSIX file locks: SQLite writers queue across processes (SQLiteWriters)
except ImportError:  # Windows: SQLite's own waiting stands
    fcntl = None


class Base(DeclarativeBase):
    pass


# The session lives for one request: re-reading every object after each commit
# (SQLAlchemy's default) only costs queries, two per token issued.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})

# Generated secrets carry 256 bits of entropy, so stretching them with a slow
# password hash (scrypt, bcrypt) buys nothing against guessing and would cap
# token throughput at a few dozen requests a second. One round of salted
# PBKDF2-HMAC-SHA256 is a salted keyed SHA-256; Werkzeug's check compares in
# constant time.
SECRET_HASH_METHOD = "pbkdf2:sha256:1"  # noqa: S105 - a hash method name, not a secret
# Hashed when the client id is unknown, so that unknown client and wrong
# secret take the same time and cannot be told apart (RFC 6749 §5.2).
_DUMMY_SECRET_HASH = generate_password_hash(secrets.token_urlsafe(32), SECRET_HASH_METHOD)

NAME_MAX_LENGTH = 200
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def check_name(name: object) -> str:
    """A client's or an item's name, trimmed; ValueError says what is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError('"name" must be a non-empty string.')
    name = name.strip()
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(f'"name" must be at most {NAME_MAX_LENGTH} characters.')
    if CONTROL_CHARACTERS.search(name):  # PostgreSQL cannot store NUL; none belongs in a name
        raise ValueError('"name" must not contain control characters.')
    return name


def storable(text: str | None) -> bool:
    """False for what no row can hold: PostgreSQL text cannot contain NUL, so
    a lookup by such a value finds nothing (and must not reach the database)."""
    return bool(text) and "\x00" not in text


def random_credential(nbytes: int) -> str:
    """URL-safe random text that never starts with "-", so that it can follow
    a command-line option (`--client-secret VALUE`) without being taken for one."""
    while True:
        value = secrets.token_urlsafe(nbytes)
        if not value.startswith("-"):
            return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def hash_token(access_token: str) -> str:
    """The only form in which an access token is stored or looked up."""
    return hashlib.sha256(access_token.encode("utf-8")).hexdigest()


def scope_to_list(scope: str | None) -> list[str]:
    # RFC 6749 §3.3: a space-delimited, order-free list.
    return sorted(set((scope or "").split()))


class UTCDateTime(TypeDecorator):
    """A timestamp that always comes back timezone-aware, in UTC.

    SQLite has no time zones and returns naive datetimes even for
    DateTime(timezone=True); Flask-OAuthlib compares token expiry with an
    aware now(), which would raise. Stored as naive UTC on every database.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


@event.listens_for(Engine, "connect")
def _configure_sqlite(dbapi_connection, connection_record) -> None:
    """WAL lets readers and one writer work at once across processes; the busy
    timeout makes a second writer wait instead of failing with "database is
    locked"; SQLite leaves foreign keys (and so ON DELETE CASCADE) off unless asked."""
    if type(dbapi_connection).__module__.split(".")[0] not in ("sqlite3", "pysqlite2"):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_schema(attempts: int = 5) -> None:
    """Create the tables that do not exist yet.

    Several workers may start on an empty database at the same moment: on
    PostgreSQL an advisory lock lets one create the tables while the others
    wait; SQLite has no such lock, so a loser of the race tries again and then
    finds the tables there.
    """
    engine = db.engine
    for attempt in range(attempts):
        try:
            with engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(70060749)")
                db.metadata.create_all(connection)
            return
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


class ClientRules:
    """How a client authenticates and what it may ask for; shared by the
    Client model and ClientView."""

    scope: str
    grant_types: str
    secret_hash: str
    previous_secret_hash: str | None
    previous_secret_expires: datetime | None

    # What Flask-OAuthlib's validator reads from a client. Machine clients act
    # for themselves: there is no user and no redirect URI.
    user = None
    default_redirect_uri = None
    is_confidential = True

    def check_secret(self, client_secret: str | None) -> bool:
        # RFC 6749 §2.3.1: an empty parameter counts as omitted, so it never matches.
        if not client_secret:
            check_password_hash(self.secret_hash, "")
            return False
        if check_password_hash(self.secret_hash, client_secret):
            return True
        return bool(self.previous_secret_hash and self.previous_secret_expires
                    and utcnow() < self.previous_secret_expires
                    and check_password_hash(self.previous_secret_hash, client_secret))

    @property
    def allowed_grant_types(self) -> list[str]:
        return self.grant_types.split()

    @property
    def default_scopes(self) -> list[str]:
        # RFC 6749 §3.3: a request without `scope` gets all the client may have.
        return scope_to_list(self.scope)

    def validate_scopes(self, scopes: list[str]) -> bool:
        # RFC 6749 §3.3: only scopes this client was registered with.
        return set(scopes) <= set(self.default_scopes)


class TokenRules:
    """When a token is good and for what; shared by the Token model and TokenView."""

    expires: datetime
    issued_at: datetime
    revoked_at: datetime | None
    scope: str
    client: ClientRules

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def scopes(self) -> list[str]:
        """The scopes this token grants now: those it was issued with that
        its client still has (narrowing a client narrows its live tokens)."""
        allowed = set(self.client.default_scopes)
        return [s for s in scope_to_list(self.scope) if s in allowed]

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires

    def is_active(self, now: datetime | None = None) -> bool:
        """Usable right now: not expired, not revoked, its client not disabled."""
        return not self.is_expired(now) and self.revoked_at is None and not self.client.disabled

    def has_scopes(self, required: list[str] | tuple[str, ...]) -> bool:
        """All of the required scopes (Flask-OAuthlib's own check is any-of)."""
        return set(required) <= set(self.scopes)

    def to_introspection(self) -> dict:
        """RFC 7662 §2.2 claims of an active token."""
        return {"client_id": self.client_id, "scope": " ".join(self.scopes), "token_type": "Bearer",
                "exp": int(self.expires.timestamp()), "iat": int(self.issued_at.timestamp())}


class Client(ClientRules, db.Model):
    """A machine client: a service that authenticates with its own credentials
    (RFC 6749 §4.4) and owns its own resources."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    secret_hash: Mapped[str] = mapped_column(String(256))
    # The scopes this client may ask for, space-delimited (RFC 6749 §3.3).
    scope: Mapped[str] = mapped_column(String(1000), default="")
    # RFC 7591 §2 `grant_types`: empty for a client that may not get tokens
    # (a resource server that only introspects, say).
    grant_types: Mapped[str] = mapped_column(String(200), default="client_credentials")
    # Seconds; None means the server's OAUTH2_PROVIDER_TOKEN_EXPIRES_IN.
    token_lifetime: Mapped[int | None] = mapped_column(Integer, default=None)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # After a rotation with a grace period the old secret keeps working until
    # previous_secret_expires, so a fleet of instances can roll over.
    previous_secret_hash: Mapped[str | None] = mapped_column(String(256), default=None)
    previous_secret_expires: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    tokens: Mapped[list[Token]] = relationship(
        back_populates="client", cascade="all, delete-orphan", passive_deletes=True
    )
    items: Mapped[list[Item]] = relationship(
        back_populates="client", cascade="all, delete-orphan", passive_deletes=True
    )

    @classmethod
    def create(cls, name: str, scope: str = "", client_id: str | None = None,
               client_secret: str | None = None,
               grant_types: str = "client_credentials") -> tuple[Client, str]:
        """Add a new client to the session; return it with its clear secret,
        which exists only in the return value and is never stored."""
        client_secret = client_secret or random_credential(32)
        client = cls(client_id=client_id or random_credential(16), name=name,
                     scope=" ".join(scope_to_list(scope)), grant_types=grant_types)
        client.set_secret(client_secret)
        db.session.add(client)
        return client, client_secret

    @classmethod
    def find(cls, client_id: str | None) -> Client | None:
        """The client as an ORM object, to change it (see ClientView to read it)."""
        if not storable(client_id):
            return None
        return db.session.execute(db.select(cls).filter_by(client_id=client_id)).scalar_one_or_none()

    def set_secret(self, client_secret: str) -> None:
        self.secret_hash = generate_password_hash(client_secret, SECRET_HASH_METHOD)
        self.previous_secret_hash = self.previous_secret_expires = None

    def rotate_secret(self, grace: int = 0) -> str:
        """Replace the secret; the old one keeps working for `grace` seconds.
        Returns the new secret in clear, the only time it exists."""
        old_hash, client_secret = self.secret_hash, random_credential(32)
        self.set_secret(client_secret)
        if grace > 0:
            self.previous_secret_hash = old_hash
            self.previous_secret_expires = utcnow() + timedelta(seconds=grace)
        return client_secret

    def disable(self) -> int:
        """Refuse this client from now on and revoke its live tokens, so that
        enabling it again later does not bring them back. Returns how many."""
        self.disabled = True
        return Token.revoke_where(Token.client_pk == self.id)

    def to_dict(self) -> dict:
        return {"client_id": self.client_id, "name": self.name, "scope": self.scope,
                "grant_types": self.allowed_grant_types, "token_lifetime": self.token_lifetime,
                "disabled": self.disabled, "created_at": self.created_at.isoformat()}


class Token(TokenRules, db.Model):
    """A bearer access token (RFC 6750). The token itself is never stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # SHA-256 of the token: unique index, so a lookup is one index probe.
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(1000), default="")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    client: Mapped[Client] = relationship(back_populates="tokens", lazy="joined")

    @classmethod
    def issue(cls, client: ClientRules, access_token: str, scope: str, expires_in: int) -> int:
        """Store a new token (by its hash), commit, and return its id."""
        now = utcnow()
        return _INSERT_TOKEN.first({
            "access_token_hash": hash_token(access_token), "client_pk": client.id, "scope": scope,
            "issued_at": now, "expires": now + timedelta(seconds=expires_in)})[0]

    @classmethod
    def find(cls, access_token: str | None) -> TokenView | None:
        """The token and its client, as read on every API request."""
        if not access_token:
            return None
        row = _TOKEN_VIEW.first({"hash": hash_token(access_token)})
        if row is None:
            return None
        return TokenView(*row[:5], ClientView(*row[5:]))

    @classmethod
    def revoke_where(cls, condition) -> int:
        """Revoke the live tokens matching `condition` (in the session's
        transaction); an already revoked one keeps its time. Returns how many."""
        return db.session.execute(db.update(cls).where(condition, cls.revoked_at.is_(None))
                                  .values(revoked_at=utcnow())).rowcount

    @classmethod
    def purge(cls, batch: int = 5000) -> int:
        """Delete expired and revoked tokens in small transactions, so a
        running server is never locked out for long. Returns how many."""
        dead = db.or_(cls.expires <= utcnow(), cls.revoked_at.is_not(None))
        deleted = 0
        while True:
            ids = db.session.scalars(db.select(cls.id).where(dead).limit(batch)).all()
            if not ids:
                return deleted
            deleted += db.session.execute(db.delete(cls).where(cls.id.in_(ids))).rowcount
            db.session.commit()


@dataclass(frozen=True, slots=True)
class ClientView(ClientRules):
    """A client as a request sees it, read with one query on a pooled
    connection: the ORM object and session cost more than the query."""

    id: int
    client_id: str
    name: str
    scope: str
    grant_types: str
    token_lifetime: int | None
    disabled: bool
    secret_hash: str
    previous_secret_hash: str | None
    previous_secret_expires: datetime | None

    @classmethod
    def find(cls, client_id: str | None) -> ClientView | None:
        if not storable(client_id):
            return None
        row = _CLIENT_VIEW.first({"client_id": client_id})
        return None if row is None else cls(*row)

    @classmethod
    def authenticate(cls, client_id: str | None, client_secret: str | None) -> tuple[ClientView | None, str]:
        """(the enabled client with these credentials, "") or (None, why not).
        The reason is for the audit log only: callers answer every failure
        alike, and an unknown client takes as long as a wrong secret."""
        client = cls.find(client_id)
        if client is None:
            check_password_hash(_DUMMY_SECRET_HASH, client_secret or "")
            return None, "no_credentials" if not client_id else "unknown_client"
        if not client.check_secret(client_secret):
            return None, "wrong_secret"
        if client.disabled:
            return None, "client_disabled"
        return client, ""


@dataclass(frozen=True, slots=True)
class TokenView(TokenRules):
    """A token as an API request sees it, read with one query. Loading ORM
    objects for it took two thirds of the time of a protected request."""

    id: int
    scope: str
    issued_at: datetime
    expires: datetime
    revoked_at: datetime | None
    client: ClientView

    user = None  # Flask-OAuthlib reads it

    @property
    def client_pk(self) -> int:
        return self.client.id


class DriverStatement:
    """A statement of the request hot path, run on the database driver's cursor.

    SQLAlchemy still does everything but the execution: it writes the SQL
    (compiled once per database), converts values both ways with the
    columns' types, lends the pooled connection and names the errors. Its
    Connection layer (execution context, result object, events) is skipped:
    profiled, that layer was 27 µs of a 42 µs token lookup, a seventh of a
    protected request, and twice that on the token endpoint.
    """

    def __init__(self, statement):
        self.statement = statement
        self._prepared: dict = {}  # per dialect: sql, parameter order, converters

    def _prepare(self, dialect) -> tuple:
        compiled = self.statement.compile(dialect=dialect)
        convert_in = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                      for name, bind in compiled.binds.items()}
        convert_out = [(index, column.type.dialect_impl(dialect).result_processor(dialect, None))
                       for index, column in enumerate(self.statement.exported_columns)]
        order = compiled.positiontup if compiled.positional else None  # "?" placeholders or named ones
        prepared = (compiled.string, order, {name: f for name, f in convert_in.items() if f},
                    [(index, f) for index, f in convert_out if f])
        self._prepared[dialect] = prepared
        return prepared

    def first(self, params: dict) -> list | None:
        """Run the statement, committed when it returns; its first row, converted, or None."""
        engine = db.engine
        dialect = engine.dialect
        sql, order, convert_in, convert_out = self._prepared.get(dialect) or self._prepare(dialect)
        values = {name: convert_in[name](value) if name in convert_in else value for name, value in params.items()}
        arguments = values if order is None else tuple(values[name] for name in order)
        connection = driver_connection(engine)
        cursor = None
        try:
            cursor = connection.cursor()
            try:
                with sqlite_writers.turn(engine, connection) if self.statement.is_dml else nullcontext():
                    cursor.execute(sql, arguments)
                    rows = cursor.fetchall()  # all: SQLite will not commit while a statement has rows left
                    connection.commit()  # nothing to do after a read, or in autocommit
            finally:
                cursor.close()  # before the connection can go back to the pool
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, connection.dbapi_connection, cursor):
                connection.invalidate(error)  # the pool replaces it, as SQLAlchemy's Connection would
            release_driver_connection()
            # The same exception classes as everywhere else (DataError, OperationalError, ...).
            raise DBAPIError.instance(sql, arguments, error, dialect.loaded_dbapi.Error,
                                      hide_parameters=True, dialect=dialect) from error
        if not rows:
            return None
        row = list(rows[0])
        for index, convert in convert_out:
            row[index] = convert(row[index])
        return row


class SQLiteWriters:
    """Writers to one SQLite file take turns, across threads and processes,
    and a thread copies the write-ahead log back into the file.

    SQLite lets one connection write at a time. A writer that finds the lock
    taken polls it, sleeping 1, 2, 5, 10 ms... in between (its busy handler),
    while a token insert holds the lock for some 40 µs: with two gunicorn
    workers issuing tokens, an eighth of the CPU sat idle in those sleeps.
    Queued on an advisory lock on a file beside the database instead (and on a
    thread lock, since one process's threads share that file), the next writer
    starts the moment the lock is free. Only the token insert, the one write
    on the request hot path, queues here; other writes wait SQLite's way.

    SQLite also copies the log back into the database (a checkpoint) in
    whichever commit takes the log past 1,000 pages: a few milliseconds and
    two fsyncs inside a token request, during its turn, so the other writers
    waited too. Connections that take turns here leave that to a thread of
    their process: once a second it copies what it can while writers go on
    (PASSIVE), then takes a turn to copy the little written meanwhile and
    have the log start over (RESTART). Without that turn the log never
    starts over under steady writes: it grew by 38 MB a second.
    """

    CHECKPOINT_INTERVAL = 1.0  # seconds: the log holds about a second of writes

    def __init__(self):
        self._thread_lock = threading.Lock()
        self._files: dict = {}  # (database file, process id) -> open lock file

    @contextmanager
    def turn(self, engine, connection):
        database = engine.url.database
        if fcntl is None or engine.dialect.name != "sqlite" or not database or database.startswith((":", "file:")):
            yield  # not a plain SQLite file (or no POSIX locks): nothing to queue on
            return
        if not connection.info.get("checkpoints_in_thread"):  # once per database connection
            connection.cursor().execute("PRAGMA wal_autocheckpoint=0").close()
            connection.info["checkpoints_in_thread"] = True
        with self._queued(database):
            yield

    @contextmanager
    def _queued(self, database: str):
        with self._thread_lock:
            # A file opened before a fork would be shared with the parent,
            # and its lock with it; threads do not survive a fork at all:
            # each process opens its own file and starts its own thread.
            key = (database, os.getpid())
            if key not in self._files:
                self._files[key] = open(database + "-writers", "a")  # noqa: SIM115 - kept open for the process
                threading.Thread(target=self._checkpoint_forever, args=(database,),
                                 name="sqlite-checkpoints", daemon=True).start()
            lock_file = self._files[key]
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _checkpoint_forever(self, database: str) -> None:
        log = logging.getLogger(__name__)
        try:
            # mode=rw: a database deleted meanwhile is not created again. A
            # short busy timeout: RESTART waits for readers during a turn.
            connection = sqlite3.connect(f"file:{quote(database)}?mode=rw", uri=True, timeout=0.05)
        except sqlite3.Error as error:
            log.warning("SQLite checkpoints of %s cannot start: %s", database, error)
            return
        failing = False
        while True:
            time.sleep(self.CHECKPOINT_INTERVAL)
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                with self._queued(database):
                    connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                failing = False
            except sqlite3.Error as error:
                if not failing:  # once per run of failures, not once a second
                    log.warning("SQLite checkpoint of %s failed: %s", database, error)
                failing = True


sqlite_writers = SQLiteWriters()


def driver_connection(engine):
    """The pooled connection that runs this request's DriverStatements: one
    checkout (and, on a database server, one pre-ping) per request, however
    many statements it runs. init_app() has it returned to the pool when the request ends."""
    connection = g.get("driver_connection")
    if connection is None:
        connection = g.driver_connection = engine.raw_connection()
        if _autocommit(engine.dialect):
            engine.dialect.set_isolation_level(connection.dbapi_connection, "AUTOCOMMIT")
    return connection


def _autocommit(dialect) -> bool:
    # Each statement is a transaction of its own. On a database server,
    # autocommit spares the round trips of BEGIN and COMMIT (or ROLLBACK);
    # SQLite has no round trips, and changing its isolation level makes it
    # prepare every statement again.
    return dialect.name != "sqlite"


def release_driver_connection(error: BaseException | None = None) -> None:
    connection = g.pop("driver_connection", None)
    if connection is None:
        return
    dialect = db.engine.dialect
    if connection.dbapi_connection is not None and _autocommit(dialect):  # not invalidated
        dialect.reset_isolation_level(connection.dbapi_connection)
    connection.close()  # back to the pool


def init_app(app) -> None:
    """Bind the database to the app: Flask-SQLAlchemy's session, and the
    driver connection, given back when a request or command ends."""
    db.init_app(app)
    app.teardown_request(release_driver_connection)
    app.teardown_appcontext(release_driver_connection)  # a command, or a context without a request


# The statements of every request, built once.
_CLIENT_COLUMNS = (Client.id, Client.client_id, Client.name, Client.scope, Client.grant_types,
                   Client.token_lifetime, Client.disabled, Client.secret_hash, Client.previous_secret_hash,
                   Client.previous_secret_expires)  # in ClientView's field order
_CLIENT_VIEW = DriverStatement(db.select(*_CLIENT_COLUMNS).where(Client.client_id == db.bindparam("client_id")))
_TOKEN_VIEW = DriverStatement(
    db.select(Token.id, Token.scope, Token.issued_at, Token.expires, Token.revoked_at, *_CLIENT_COLUMNS)
    .join(Client, Client.id == Token.client_pk)
    .where(Token.access_token_hash == db.bindparam("hash")))
_INSERT_TOKEN = DriverStatement(
    db.insert(Token).values({name: db.bindparam(name) for name in
                             ("access_token_hash", "client_pk", "scope", "issued_at", "expires")})
    .returning(Token.id))


class Item(db.Model):
    """A resource owned by one client; no other client can see it."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    client: Mapped[Client] = relationship(back_populates="items")

    @classmethod
    def create(cls, client: ClientRules, name: object) -> Item:
        """Add an item owned by `client`; ValueError says what is wrong with `name`."""
        item = cls(client_pk=client.id, name=check_name(name))
        db.session.add(item)
        return item

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "created_at": self.created_at.isoformat()}


class RateLimitCounter(db.Model):
    """One fixed-window counter of the rate limiter (see DatabaseStorage)."""

    __tablename__ = "rate_limits"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)  # Unix time

    @classmethod
    def purge(cls) -> int:
        result = db.session.execute(db.delete(cls).where(cls.expires_at <= time.time()))
        db.session.commit()
        return result.rowcount


# One statement, so that concurrent workers never lose a count. SQLite (3.35+)
# and PostgreSQL share this upsert syntax.
_INCREMENT = text(
    "INSERT INTO rate_limits (name, count, expires_at) VALUES (:name, :amount, :expires_at) "
    "ON CONFLICT (name) DO UPDATE SET "
    "count = CASE WHEN rate_limits.expires_at <= :now THEN :amount ELSE rate_limits.count + :amount END, "
    "expires_at = CASE WHEN rate_limits.expires_at <= :now THEN :expires_at ELSE rate_limits.expires_at END "
    "RETURNING count")


class DatabaseStorage(Storage):
    """Rate-limit counters in this app's own database: RATELIMIT_STORAGE_URI="database://".

    The `limits` library behind Flask-Limiter ships Redis, Memcached and
    MongoDB storages but none for SQL. With this one, every gunicorn worker
    and every app server sharing the database shares the counters, with no
    extra service to run. It supports the fixed-window strategy (the default).
    Each call runs in its own short transaction, apart from the request's.
    """

    STORAGE_SCHEME: ClassVar[list[str]] = ["database"]

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with db.engine.begin() as connection:
            return connection.execute(_INCREMENT, {"name": key, "amount": amount, "now": now,
                                                   "expires_at": now + expiry}).scalar_one()

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
            connection.execute(text("SELECT 1"))
        return True

    def reset(self) -> int:
        with db.engine.begin() as connection:
            return connection.execute(db.delete(RateLimitCounter)).rowcount

    def clear(self, key: str) -> None:
        with db.engine.begin() as connection:
            connection.execute(db.delete(RateLimitCounter).where(RateLimitCounter.name == key))
