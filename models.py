"""Database models for the client-credentials authorization server.

Three tables: the machine clients, the access tokens issued to them, and the
items each client owns (the "resources" the tutorial's clients access).

What a database dump reveals is deliberately useless: a client secret is kept
only as a salted hash, an access token only as its SHA-256 digest.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import unicodedata
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from production.database import db, execute_one

# Generated secrets carry 256 bits of entropy, so stretching them with a slow
# password hash (scrypt, bcrypt) buys nothing against guessing and would cap
# token throughput at a few dozen requests a second. One round of salted
# PBKDF2-HMAC-SHA256 is a salted keyed SHA-256; Werkzeug's check compares in
# constant time.
SECRET_HASH_METHOD = "pbkdf2:sha256:1"  # noqa: S105 - a hash method name, not a secret
PRIVATE_KEY_JWT = "private_key_jwt"
# Hashed when the client id is unknown, so that unknown client and wrong
# secret take the same time and cannot be told apart (RFC 6749 §5.2).
_DUMMY_SECRET_HASH = generate_password_hash(secrets.token_urlsafe(32), SECRET_HASH_METHOD)

NAME_MAX_LENGTH = 200
# What no name may hold, by Unicode category, the same on every database:
# controls (Cc: C0 such as NUL, which PostgreSQL cannot store; DEL; C1 such
# as U+009B, a terminal's escape); format characters (Cf: bidi overrides and
# isolates U+202A-202E and U+2066-2069, the marks U+200E, U+200F and U+061C,
# zero-width spaces and joiners, the soft hyphen, tags), which make a
# terminal or a page show other text than the one stored; line and paragraph
# separators (Zl, Zp); surrogates (Cs, not text), private-use (Co) and
# unassigned (Cn) code points. The zero-width joiner goes too: it builds
# emoji sequences, but it hides between letters as well, and a client's name
# needs no emoji family.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def hidden_character(text: str) -> str | None:
    """The first character of `text` that a reader would not see as it is, or None."""
    if text.isprintable():  # at C speed: none of those categories (Python's definition of printable)
        return None
    return next((c for c in text if unicodedata.category(c) in HIDDEN_CATEGORIES), None)


def visible(text: str) -> str:
    """`text` to print on a terminal: each character hidden_character would
    find written as its escape (U+202E as \\u202e). For rows stored before
    names were checked, and for anything else the database may hold."""
    if text.isprintable():
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in HIDDEN_CATEGORIES
                   else c for c in text)


def check_name(name: object) -> str:
    """A client's or an item's name, trimmed; ValueError says what is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError('"name" must be a non-empty string.')
    name = name.strip()
    if len(name) > NAME_MAX_LENGTH:
        raise ValueError(f'"name" must be at most {NAME_MAX_LENGTH} characters.')
    hidden = hidden_character(name)
    if hidden is not None:
        raise ValueError(f'"name" must not contain control characters or invisible ones (U+{ord(hidden):04X}).')
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


def aud_claim(audience: list[str]) -> str | list[str]:
    """`aud` as JWTs (RFC 7519 §4.1.3) and introspection (RFC 7662 §2.2) write
    it: a string for one audience, an array for several."""
    return audience[0] if len(audience) == 1 else audience


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


class ClientRules:
    """How a client authenticates and what it may ask for; shared by the
    Client model and ClientView."""

    scope: str
    grant_types: str
    token_lifetime: int | None
    token_endpoint_auth_method: str
    jwks: str | None
    dpop_bound_access_tokens: bool
    secret_hash: str
    previous_secret_hash: str | None
    previous_secret_expires: datetime | None

    # What Flask-OAuthlib's validator reads from a client. Machine clients act
    # for themselves: there is no user and no redirect URI.
    user = None
    default_redirect_uri = None
    is_confidential = True

    def check_secret(self, client_secret: str | None) -> bool:
        # RFC 6749 §2.3.1: an empty parameter counts as omitted, so it never
        # matches. No secret holds NUL: HMAC pads its key with zero bytes, so
        # "secret\0" would hash as "secret" does.
        if not storable(client_secret):
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
    def uses_private_key_jwt(self) -> bool:
        return self.token_endpoint_auth_method == PRIVATE_KEY_JWT

    @property
    def key_ids(self) -> list[str]:
        """The kids of a private_key_jwt client's registered public keys."""
        return [key["kid"] for key in json.loads(self.jwks)["keys"]] if self.jwks else []

    def token_expires_in(self, default: int) -> int:
        """Seconds this client's new tokens live: its own lifetime, or the server's."""
        return self.token_lifetime or default

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
    # The resources (RFC 8707) it is for, space-delimited; None for this
    # server's own API only (and for tokens issued before audiences existed).
    audience: str | None
    # DPoP (RFC 9449): the RFC 7638 thumbprint of the key it is bound to, or
    # None for a bearer token.
    jkt: str | None
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

    def has_audience(self, resource: str) -> bool:
        """Meant for `resource` (RFC 8707; RFC 9068 §4: an API refuses a token not meant for it)."""
        return self.audience is None or resource in self.audience.split()

    @property
    def token_type(self) -> str:
        """How it is sent: "DPoP" with a proof of its key (RFC 9449 §7.1), or "Bearer"."""
        return "DPoP" if self.jkt else "Bearer"

    def to_introspection(self, own_api: str) -> dict:
        """RFC 7662 §2.2 claims of an active token; `own_api` is this server's API."""
        audience = [own_api] if self.audience is None else self.audience.split()
        claims = {"client_id": self.client_id, "scope": " ".join(self.scopes), "token_type": self.token_type,
                  "exp": int(self.expires.timestamp()), "iat": int(self.issued_at.timestamp()),
                  "aud": aud_claim(audience)}
        if self.jkt:  # RFC 9449 §6.2: the key it is bound to, for the API to check the proof against
            claims["cnf"] = {"jkt": self.jkt}
        return claims


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
    # RFC 7591 §2: how it authenticates. "client_secret_basic" (RFC 7591's
    # default) sends its secret, in Basic or in the form (client_secret_post);
    # "private_key_jwt" (RFC 7523) signs an assertion with a key of `jwks`,
    # its registered JWK Set of public keys, and has no usable secret.
    token_endpoint_auth_method: Mapped[str] = mapped_column(
        String(40), default="client_secret_basic", server_default="client_secret_basic")
    jwks: Mapped[str | None] = mapped_column(Text, default=None)
    # "opaque" or "jwt"; None means the server's ACCESS_TOKEN_FORMAT.
    token_format: Mapped[str | None] = mapped_column(String(10), default=None)
    # The resources (RFC 8707) it may ask tokens for, space-delimited absolute
    # URIs; empty means only this server's own API (production/audiences.py).
    resources: Mapped[str] = mapped_column(String(4000), default="", server_default="")
    # RFC 9449 §5.2: every token request of this client must carry a DPoP
    # proof, so that each of its tokens is bound to a key it holds.
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
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

    def use_keys(self, jwks: str) -> None:
        """Authenticate with private_key_jwt from now on, with the keys of
        `jwks` (checked: production/client_assertions.check_jwks). The secret
        is replaced by one nobody knows."""
        self.token_endpoint_auth_method, self.jwks = PRIVATE_KEY_JWT, jwks
        self.set_secret(random_credential(32))

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

    def set_scope(self, scope: str) -> None:
        """Change the scopes this client may ask for. Live tokens lose the
        scopes taken away, for good: widening again later does not give them back."""
        self.scope = " ".join(scope_to_list(scope))
        live = db.and_(Token.client_pk == self.id, Token.live())
        for old_scope in db.session.scalars(db.select(Token.scope).where(live).distinct()).all():
            narrowed = " ".join(s for s in scope_to_list(old_scope) if s in self.default_scopes)
            if narrowed != old_scope:
                db.session.execute(db.update(Token).where(live, Token.scope == old_scope).values(scope=narrowed))

    def disable(self) -> int:
        """Refuse this client from now on and revoke its live tokens, so that
        enabling it again later does not bring them back. Returns how many."""
        self.disabled = True
        return Token.revoke_where(Token.client_pk == self.id)

    def to_dict(self) -> dict:
        return {"client_id": self.client_id, "name": self.name, "scope": self.scope,
                "grant_types": self.allowed_grant_types, "token_lifetime": self.token_lifetime,
                "token_endpoint_auth_method": self.token_endpoint_auth_method, "key_ids": self.key_ids,
                "token_format": self.token_format, "resources": self.resources.split(),
                "dpop_bound_access_tokens": self.dpop_bound_access_tokens,
                "disabled": self.disabled, "created_at": self.created_at.isoformat()}


class Token(TokenRules, db.Model):
    """An access token: a bearer token (RFC 6750), or one bound to a key of
    its client's with DPoP (RFC 9449). The token itself is never stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # SHA-256 of the token: unique index, so a lookup is one index probe.
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_pk: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(1000), default="")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    audience: Mapped[str | None] = mapped_column(String(4000), default=None)
    jkt: Mapped[str | None] = mapped_column(String(43), default=None)  # base64url of a SHA-256: 43 characters

    client: Mapped[Client] = relationship(back_populates="tokens", lazy="joined")

    @classmethod
    def issue(cls, client: ClientRules, access_token: str, scope: str, expires_in: int,
              audience: list[str] | None = None, jkt: str | None = None) -> int | None:
        """Store a new token (by its hash), commit, and return its id; None
        if the client was disabled meanwhile (then nothing is stored). `jkt`
        binds it to a DPoP key."""
        now = utcnow()
        row = execute_one(_INSERT_TOKEN, {
            "access_token_hash": hash_token(access_token), "client_pk": client.id, "scope": scope,
            "issued_at": now, "expires": now + timedelta(seconds=expires_in),
            "audience": None if audience is None else " ".join(audience), "jkt": jkt}, write=True)
        return None if row is None else row.id

    @classmethod
    def live(cls):
        """The condition a token that still works meets: neither revoked nor expired."""
        return db.and_(cls.revoked_at.is_(None), cls.expires > utcnow())

    @classmethod
    def live_counts(cls, *conditions) -> dict[int, int]:
        """How many live tokens each client has (by its primary key), in one query."""
        return dict(db.session.execute(db.select(cls.client_pk, db.func.count(cls.id))
                                       .where(cls.live(), *conditions).group_by(cls.client_pk)).all())

    @classmethod
    def revoke_where(cls, condition) -> int:
        """Revoke the live tokens matching `condition` (in the session's
        transaction); an already revoked one keeps its time. Returns how many."""
        return db.session.execute(db.update(cls).where(condition, cls.revoked_at.is_(None))
                                  .values(revoked_at=utcnow())).rowcount

    @classmethod
    def purge(cls, batch: int = 5000, batches: int | None = None, revoked: bool = True) -> int:
        """Delete expired tokens, and revoked ones unless `revoked` is False,
        in small transactions (all of them, or `batches` of them), so a
        running server is never locked out for long. Returns how many.

        Expired ones are found through the index on `expires`; revoked ones
        have no index (every insert would pay for it), so finding them reads
        the whole table: fine for a command, not after every 1,000 requests."""
        dead = db.or_(cls.expires <= utcnow(), cls.revoked_at.is_not(None)) if revoked else cls.expires <= utcnow()
        deleted = 0
        for _ in range(batches) if batches else itertools.count():  # until none is left
            ids = db.session.scalars(db.select(cls.id).where(dead).limit(batch)).all()
            if not ids:
                break
            deleted += db.session.execute(db.delete(cls).where(cls.id.in_(ids))).rowcount
            db.session.commit()
        return deleted


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
    token_format: str | None
    resources: str
    token_endpoint_auth_method: str
    jwks: str | None
    dpop_bound_access_tokens: bool
    disabled: bool
    secret_hash: str
    previous_secret_hash: str | None
    previous_secret_expires: datetime | None

    @classmethod
    def find(cls, client_id: str | None) -> ClientView | None:
        if not storable(client_id):
            return None
        row = execute_one(_FIND_CLIENT, {"client_id": client_id})
        return None if row is None else cls.from_row(row)

    @classmethod
    def from_row(cls, row, prefix: str = "") -> ClientView:
        """Read by column name: `prefix` + each field's name."""
        mapping = row._mapping
        return cls(**{name: mapping[prefix + name] for name in CLIENT_FIELDS})

    @classmethod
    def authenticate(cls, client_id: str | None, client_secret: str | None) -> tuple[ClientView | None, str]:
        """(the enabled client with these credentials, "") or (None, why not).
        The reason is for the audit log only: callers answer every failure
        alike, and an unknown client takes as long as a wrong secret."""
        client = cls.find(client_id)
        if client is None:
            check_password_hash(_DUMMY_SECRET_HASH, client_secret or "")
            return None, "no_credentials" if not client_id else "unknown_client"
        if client.uses_private_key_jwt:  # it has keys, not a secret
            check_password_hash(_DUMMY_SECRET_HASH, client_secret or "")
            return None, "secret_from_key_client"
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
    audience: str | None
    jkt: str | None
    client: ClientView

    user = None  # Flask-OAuthlib reads it

    @classmethod
    def find(cls, access_token: str | None) -> TokenView | None:
        """The token and its client, as read on every API request: one query."""
        if not access_token:
            return None
        row = execute_one(_FIND_TOKEN, {"access_token_hash": hash_token(access_token)})
        if row is None:
            return None
        mapping = row._mapping
        return cls(**{name: mapping[name] for name in TOKEN_FIELDS},
                   client=ClientView.from_row(row, prefix="client."))

    @property
    def client_pk(self) -> int:
        return self.client.id


# The hot statements, derived from the read models' fields so that the
# columns a statement selects and the fields they fill cannot drift apart.
# SQLAlchemy compiles each once and caches it.
CLIENT_FIELDS = tuple(field.name for field in fields(ClientView))
TOKEN_FIELDS = tuple(field.name for field in fields(TokenView) if field.name != "client")
_FIND_CLIENT = db.select(*(getattr(Client, name) for name in CLIENT_FIELDS)).where(
    Client.client_id == db.bindparam("client_id"))
_FIND_TOKEN = (
    db.select(*(getattr(Token, name) for name in TOKEN_FIELDS),
              *(getattr(Client, name).label(f"client.{name}") for name in CLIENT_FIELDS))
    .join(Client, Client.id == Token.client_pk)
    .where(Token.access_token_hash == db.bindparam("access_token_hash")))
# The token is stored only if its client is still enabled, in the same
# statement. On PostgreSQL FOR SHARE makes it wait for a disable-client in
# progress (whose UPDATE locks the row), then see it; and a disable that
# comes second waits for the insert, then revokes the new token. SQLite runs
# one writer at a time, so the two cannot interleave there.
_INSERT_TOKEN = db.insert(Token).from_select(
    ["access_token_hash", "client_pk", "scope", "issued_at", "expires", "audience", "jkt"],
    db.select(db.bindparam("access_token_hash", type_=String), Client.id, db.bindparam("scope", type_=String),
              db.bindparam("issued_at", type_=UTCDateTime), db.bindparam("expires", type_=UTCDateTime),
              db.bindparam("audience", type_=String), db.bindparam("jkt", type_=String))
    .where(Client.id == db.bindparam("client_pk"), Client.disabled.is_(False))
    .with_for_update(read=True),
).returning(Token.id)


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
        """Add an item owned by `client`; ValueError says what is wrong."""
        item = cls(client_pk=client.id, name=check_name(name))
        db.session.add(item)
        return item

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "created_at": self.created_at.isoformat()}
