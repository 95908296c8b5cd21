"""The keys that sign JWT access tokens (RFC 9068), shared by every process
through the database, and their rotation.

One key signs at a time: the newest one not retired. `rotate-signing-key`
retires it and adds a new one; a retired key's public half stays published
(at /.well-known/jwks.json, RFC 7517), so that an API verifying tokens with
the published keys accepts those it signed, until every token it could have
signed has expired, then it is dropped. This server verifies no signature:
it looks every token up in the database (production/access_tokens.py).

A private key is never printed, logged or served. In the database it is a
PKCS#8 PEM encrypted with SIGNING_KEY_PASSPHRASE, so that a copy of the
database alone cannot mint tokens. Only the development server (`python
server.py`) stores a key without one, in clear, with a warning: anywhere
else, without a passphrase, no key is made and a JWT request gets a 503.
A key stored in clear earlier is encrypted once a passphrase is set, when a
process first uses the database (protect_stored_keys). A retired key keeps
only its public half. No key is made until a client needs a JWT.

Each process keeps the key it signs with (KeyRing), so that signing reads
no row: it reads it again every SIGNING_KEY_CACHE_SECONDS, so it follows a
rotation within that time. The JWKS is read from the database each time it
is asked for. joserfc and cryptography are imported when a key is first
made, read or encrypted: a server that issues opaque tokens only never
loads them (production/client_assertions.py says the same).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from flask import current_app
from sqlalchemy import String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from models import Client, Token, UTCDateTime, db, utcnow
from production.database import schema_lock
from production.errors import RetryLater
from production.sqlite import empty_the_log

if TYPE_CHECKING:
    from joserfc.jwk import Key

log = logging.getLogger(__name__)

# RS256 is the one RFC 9068 §2.1 requires; ES256 signs six times faster and
# makes tokens a third shorter (bench/jose_algorithms.py; docs/jwt.md: "Keys
# and their rotation").
ALGORITHMS = {'ES256': ('EC', 'P-256'), 'RS256': ('RSA', 2048)}  # alg: its key type (kty), curve or size
CANNOT_SIGN_RETRY_AFTER = 60  # seconds; it takes an operator: a passphrase, or a new key


class SigningKey(db.Model):
    __tablename__ = 'signing_keys'

    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)  # the RFC 7638 thumbprint
    alg: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[str] = mapped_column(Text)  # JSON
    # PKCS#8, encrypted with the passphrase (in clear only from python server.py
    # without one); None once retired: a retired key is only published.
    private_pem: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set by a rotation: it stopped signing then, and is published until publish_until.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    publish_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    @classmethod
    def generate(cls, alg: str, passphrase: str | None) -> SigningKey:
        """A new key, added to the session; it signs from the next commit on."""
        private = key_class(alg).generate_key(ALGORITHMS[alg][1], private=True)
        kid = private.thumbprint()
        public = private.as_dict(private=False, kid=kid, alg=alg, use='sig')
        key = cls(kid=kid, alg=alg, public_jwk=json.dumps(public),
                  private_pem=private.as_pem(private=True, password=passphrase).decode('ascii'))
        db.session.add(key)
        return key

    @classmethod
    def is_published(cls):
        """The condition: its public half is served in the JWKS."""
        return db.or_(cls.publish_until.is_(None), cls.publish_until > utcnow())

    @classmethod
    def published(cls) -> list[SigningKey]:
        """The published keys, newest first."""
        return list(db.session.scalars(db.select(cls).where(cls.is_published()).order_by(cls.id.desc())))

    @classmethod
    def rotate(cls, alg: str, configured_lifetime: int) -> SigningKey:
        """Retire the signing key(s) and sign with a new one, committed. A
        retired key keeps only its public half, published until
        retired_publish_until(): a process that read its private half may
        still sign with it for SIGNING_KEY_CACHE_SECONDS. UnusableKey if no
        key may be made (no passphrase)."""
        new_key_passphrase = passphrase_for_a_new_key()
        # One rotation at a time; and on SQLite no writer while the log,
        # which may hold the retired private keys' text, is emptied.
        with schema_lock(db.engine):
            now = utcnow()
            db.session.execute(db.update(cls).where(cls.retired_at.is_(None)).values(
                retired_at=now, publish_until=cls.retired_publish_until(now, configured_lifetime),
                private_pem=None))
            key = cls.generate(alg, new_key_passphrase)
            db.session.commit()
            empty_the_log(db.engine)
        return key

    @staticmethod
    def retired_publish_until(now: datetime, configured_lifetime: int) -> datetime:
        """Until when a key retired `now` stays published: as long as the longest-lived
        token it signed, or may still sign from a process's cache, can live.
        The lifetime configured where this runs (the CLI may not have the
        server's environment), the clients' own, and those of the live tokens
        in the database (issued by the servers, whatever their settings) all
        count; never earlier than the last live token's expiry."""
        live = Token.live()
        lifetimes = [configured_lifetime,
                     *db.session.scalars(db.select(Client.token_lifetime).where(Client.token_lifetime.is_not(None))),
                     db.session.scalar(db.select(func.max(seconds_between(Token.issued_at, Token.expires)))
                                       .where(live)) or 0]
        keep = timedelta(seconds=int(max(lifetimes)) + current_app.config['SIGNING_KEY_CACHE_SECONDS'])
        last_expiry = db.session.scalar(db.select(func.max(Token.expires)).where(live))
        return max(now + keep, last_expiry or now)

    @classmethod
    def purge(cls) -> int:
        """Delete the keys no longer published: no token they signed is alive,
        and a private key kept for nothing is a private key that can leak."""
        deleted = db.session.execute(db.delete(cls).where(cls.publish_until <= utcnow())).rowcount
        db.session.commit()
        return deleted

    @property
    def encrypted(self) -> bool:
        return bool(self.private_pem) and 'ENCRYPTED' in self.private_pem.splitlines()[0]

    def private_key(self, passphrase: str | None) -> Key:
        """The key to sign with, checked against its row: UnusableKey (with a
        one-line reason) for a row this server cannot sign with."""
        key_type = self.key_type()
        if not self.private_pem:
            raise self.unusable('it has no private key')
        from joserfc.errors import JoseError
        try:
            # A key stored in clear is read without the passphrase.
            key = key_type.import_key(self.private_pem, {'kid': self.kid, 'alg': self.alg},
                                      password=passphrase if self.encrypted else None)
        except JoseError:  # read, but a key of another type
            raise self.unusable(f'its private key is not for {self.alg}') from None
        except (TypeError, ValueError):  # cryptography's words for a wrong passphrase, or bad data
            if self.encrypted:
                raise UnusableKey(f'cannot decrypt JWT signing key {self.kid}: '
                                  'FLASK_SIGNING_KEY_PASSPHRASE is missing or wrong') from None
            raise self.unusable('its private key is unreadable') from None
        # Tokens signed with another key than the one published under this
        # kid would verify nowhere: the kid is the thumbprint of both halves.
        if not key.is_private:
            raise self.unusable('it has no private key')
        if key.thumbprint() != self.kid:
            raise self.unusable('its private key is not the key its kid names')
        self.served_jwk()  # the public half must be readable too
        return key

    def served_jwk(self) -> dict:
        """Its public half as the JWKS serves it; UnusableKey for a row that
        holds no readable one."""
        key_type = self.key_type()
        from joserfc.errors import JoseError
        try:
            key = key_type.import_key(json.loads(self.public_jwk))
        except (TypeError, ValueError, JoseError):
            raise self.unusable('its public JWK is unreadable') from None
        if key.thumbprint() != self.kid:
            raise self.unusable('its public JWK is not the key its kid names')
        # Served as made from the key, never as stored: public members only.
        return key.as_dict(private=False, kid=self.kid, alg=self.alg, use='sig')

    def unusable(self, reason: str) -> UnusableKey:
        return UnusableKey(f'JWT signing key {self.kid} is unusable: {reason}')

    def key_type(self) -> type[Key]:
        if self.alg not in ALGORITHMS:
            raise self.unusable(f'its alg {self.alg!r} is not one of {", ".join(ALGORITHMS)}')
        return key_class(self.alg)

    def to_dict(self) -> dict:
        """What `list-signing-keys` shows: never the private key."""
        return {'kid': self.kid, 'alg': self.alg, 'created_at': self.created_at.isoformat(),
                'retired_at': self.retired_at and self.retired_at.isoformat(),
                'publish_until': self.publish_until and self.publish_until.isoformat()}


def key_class(alg: str) -> type[Key]:
    """joserfc's class for the keys of `alg`, one of ALGORITHMS."""
    from joserfc.jwk import ECKey, RSAKey
    return {'EC': ECKey, 'RSA': RSAKey}[ALGORITHMS[alg][0]]


class UnusableKey(Exception):
    """A key this server cannot sign with, or publish; its message is one log line."""


def seconds_between(start, end):
    """`end - start` in whole seconds, as SQL: SQLite has no interval type."""
    if db.engine.dialect.name == 'sqlite':
        return func.strftime('%s', end) - func.strftime('%s', start)
    return func.extract('epoch', end - start)


class KeyRing:
    """This process's copy of the key it signs with, read from the database when needed."""

    def __init__(self):
        self._lock = threading.Lock()
        self.forget()

    def forget(self) -> None:
        """Read the signing key again on next use (after a rotation in this process)."""
        self._signing: tuple[float, str, Key] | None = None  # (read at, alg, private key)
        self._said_unusable: set[str] = set()  # kids of unreadable published keys, logged once

    def signing_key(self) -> tuple[str, Key]:
        """(alg, private key) to sign with now; the first call ever makes one.
        A key it cannot make or use is a 503 (RetryLater) and one log line:
        it takes an operator to fix (a passphrase, or rotate-signing-key)."""
        signing, now = self._signing, time.monotonic()
        if signing and now - signing[0] < current_app.config['SIGNING_KEY_CACHE_SECONDS']:
            return signing[1], signing[2]
        with self._lock:
            try:
                stored = self._current() or self._create_first()
                self._signing = (now, stored.alg, stored.private_key(passphrase()))
            except UnusableKey as error:
                log.error('%s', error)
                raise RetryLater('This server cannot sign tokens now.', CANNOT_SIGN_RETRY_AFTER,
                                 status_code=503) from None
            return self._signing[1], self._signing[2]

    def jwks(self) -> dict:
        """The JWK Set to publish (RFC 7517 §5): every published public key
        this server can read; none (`{"keys": []}`) before the first JWT.
        Asking makes no key."""
        return {'keys': [jwk for key in SigningKey.published() if (jwk := self._readable(key))]}

    def _readable(self, stored: SigningKey) -> dict | None:
        """Its public half, or None for a corrupt row: the JWKS serves the
        other keys, and this one's fault is logged once per process."""
        try:
            return stored.served_jwk()
        except UnusableKey as error:
            if stored.kid not in self._said_unusable:
                self._said_unusable.add(stored.kid)
                log.error('%s; the JWKS leaves it out', error)
            return None

    @staticmethod
    def _current() -> SigningKey | None:
        return db.session.scalars(db.select(SigningKey).where(SigningKey.retired_at.is_(None))
                                  .order_by(SigningKey.id.desc()).limit(1)).first()

    @staticmethod
    def _create_first() -> SigningKey:
        # Several processes may start at once: one at a time looks and creates.
        with schema_lock(db.engine):
            stored = KeyRing._current()
            if stored is None:
                stored = SigningKey.generate(current_app.config['JWT_SIGNING_ALG'], passphrase_for_a_new_key())
                db.session.commit()
                log.info('created the first JWT signing key, kid %s (%s)', stored.kid, stored.alg)
                if not stored.encrypted:
                    log.warning('JWT signing keys are stored unencrypted: set FLASK_SIGNING_KEY_PASSPHRASE')
            return stored


def passphrase() -> str | None:
    return current_app.config['SIGNING_KEY_PASSPHRASE'] or None


NO_KEY_IN_CLEAR = ('no JWT signing key is made without FLASK_SIGNING_KEY_PASSPHRASE: '
                   'only python server.py, for development, keeps a key in clear')


def passphrase_for_a_new_key() -> str | None:
    """The passphrase to store a new private key with. Without one, only
    the development server stores a key (in clear, with a warning); anywhere
    else UnusableKey: a copy of the database must not hold a usable key."""
    if passphrase() is None and not current_app.config.get('DEVELOPMENT_SERVER'):
        raise UnusableKey(NO_KEY_IN_CLEAR)
    return passphrase()


def protect_stored_keys() -> None:
    """When a process first uses the database (production/database.upgrade_schema,
    under its lock, so one process at a time; idempotent): with a passphrase,
    encrypt every private key stored in clear (made by python server.py, or
    before the passphrase was set), in one log line; SQLite overwrites the
    clear text (production/sqlite.py). Without one, say that keys are in clear."""
    clear = [key for key in db.session.scalars(db.select(SigningKey).where(SigningKey.private_pem.is_not(None)))
             if key.private_pem and not key.encrypted]
    if not clear or passphrase() is None:
        db.session.rollback()  # the read's transaction must not stay open on a database server
        if clear and not current_app.config.get('DEVELOPMENT_SERVER'):
            log.warning('JWT signing key(s) %s are stored in clear: set FLASK_SIGNING_KEY_PASSPHRASE and they '
                        'are encrypted when the server next starts', ', '.join(key.kid for key in clear))
        return
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    encrypted = []
    for key in clear:
        try:
            # Whatever the rest of its row says, a readable private key is a secret.
            private = serialization.load_pem_private_key(key.private_pem.encode('ascii'), password=None)
        except (TypeError, ValueError, UnicodeError, UnsupportedAlgorithm):
            continue  # nothing anybody can sign with; signing says what is wrong with it
        key.private_pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase().encode('utf-8'))).decode('ascii')
        encrypted.append(key.kid)
    db.session.commit()
    empty_the_log(db.engine)  # the clear text's old pages, in SQLite's write-ahead log
    if encrypted:
        log.warning('encrypted JWT signing key(s) %s, stored in clear until now, with FLASK_SIGNING_KEY_PASSPHRASE',
                    ', '.join(encrypted))


def key_ring() -> KeyRing:
    """The current app's key ring (an app per database, so one ring per app)."""
    return current_app.extensions.setdefault('signing_keys', KeyRing())
