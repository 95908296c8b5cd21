"""The keys that sign JWT access tokens (RFC 9068), shared by every process
through the database, and their rotation.

One key signs at a time: the newest one not retired. `rotate-signing-key`
retires it and adds a new one; a retired key's public half stays published
(at /.well-known/jwks.json, RFC 7517) and keeps verifying until every token
it could have signed has expired, then it is dropped.

A private key is never printed, logged or served. In the database it is a
PKCS#8 PEM, encrypted with SIGNING_KEY_PASSPHRASE when that is set (it
should be, in production: then a database dump alone cannot mint tokens).

Each process keeps the keys it read (KeyRing), so that signing and
verifying read no row: it reads them again every SIGNING_KEY_CACHE_SECONDS,
so it follows a rotation within that time, and a token naming a kid it has
not seen makes it look that one key up (a kid found nowhere is not looked
up again for UNKNOWN_KID_SECONDS).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from joserfc.jwk import ECKey, Key, RSAKey
from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models import UTCDateTime, db, utcnow
from production.database import schema_lock
from production.errors import RetryLater

log = logging.getLogger(__name__)

# RS256 is the one RFC 9068 §2.1 requires; ES256 signs six times faster and
# makes tokens a third shorter (bench/jose_algorithms.py; README: "Keys and
# their rotation").
ALGORITHMS = {'ES256': (ECKey, 'P-256'), 'RS256': (RSAKey, 2048)}  # alg: its key type, curve or size
UNKNOWN_KID_SECONDS = 5.0
CANNOT_SIGN_RETRY_AFTER = 60  # seconds; it takes an operator to fix the passphrase
UNKNOWN_KIDS_REMEMBERED = 1000


class SigningKey(db.Model):
    __tablename__ = 'signing_keys'

    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)  # the RFC 7638 thumbprint
    alg: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[str] = mapped_column(Text)  # JSON
    private_pem: Mapped[str] = mapped_column(Text)  # PKCS#8, encrypted when a passphrase is set
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set by a rotation: it stopped signing then, and verifies until publish_until.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    publish_until: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    @classmethod
    def generate(cls, alg: str, passphrase: str | None) -> SigningKey:
        """A new key, added to the session; it signs from the next commit on."""
        key_type, curve_or_size = ALGORITHMS[alg]
        private = key_type.generate_key(curve_or_size, private=True)
        kid = private.thumbprint()
        public = private.as_dict(private=False, kid=kid, alg=alg, use='sig')
        key = cls(kid=kid, alg=alg, public_jwk=json.dumps(public),
                  private_pem=private.as_pem(private=True, password=passphrase).decode('ascii'))
        db.session.add(key)
        return key

    @classmethod
    def is_published(cls):
        """The condition: its public half is served, and verifies tokens."""
        return db.or_(cls.publish_until.is_(None), cls.publish_until > utcnow())

    @classmethod
    def published(cls) -> list[SigningKey]:
        """The published keys, newest first."""
        return list(db.session.scalars(db.select(cls).where(cls.is_published()).order_by(cls.id.desc())))

    @classmethod
    def find_published(cls, kid: str) -> SigningKey | None:
        return db.session.scalars(db.select(cls).where(cls.kid == kid, cls.is_published())).first()

    @classmethod
    def rotate(cls, alg: str, passphrase: str | None, longest_lifetime: int) -> SigningKey:
        """Retire the signing key(s) and add a new one (not committed).
        A retired key stays published for as long as a token it signed can
        live, plus the time a process may still sign with it from its cache."""
        now = utcnow()
        keep = timedelta(seconds=longest_lifetime + current_app.config['SIGNING_KEY_CACHE_SECONDS'])
        db.session.execute(db.update(cls).where(cls.retired_at.is_(None))
                           .values(retired_at=now, publish_until=now + keep))
        return cls.generate(alg, passphrase)

    @classmethod
    def purge(cls) -> int:
        """Delete the keys no longer published: no token they signed is alive,
        and a private key kept for nothing is a private key that can leak."""
        deleted = db.session.execute(db.delete(cls).where(cls.publish_until <= utcnow())).rowcount
        db.session.commit()
        return deleted

    def private_key(self, passphrase: str | None) -> Key:
        # A key stored before a passphrase was set is read without one.
        encrypted = 'ENCRYPTED' in self.private_pem.splitlines()[0]
        return ALGORITHMS[self.alg][0].import_key(self.private_pem, {'kid': self.kid, 'alg': self.alg},
                                              password=passphrase if encrypted else None)

    def public(self) -> PublicKey:
        jwk = json.loads(self.public_jwk)
        return PublicKey(self.alg, ALGORITHMS[self.alg][0].import_key(jwk), jwk, self.publish_until)

    def to_dict(self) -> dict:
        """What `list-signing-keys` shows: never the private key."""
        return {'kid': self.kid, 'alg': self.alg, 'created_at': self.created_at.isoformat(),
                'retired_at': self.retired_at and self.retired_at.isoformat(),
                'publish_until': self.publish_until and self.publish_until.isoformat()}


@dataclass(frozen=True, slots=True)
class PublicKey:
    alg: str
    key: Key
    jwk: dict
    publish_until: datetime | None


class KeyRing:
    """This process's copy of the keys, read from the database when needed."""

    def __init__(self):
        self._lock = threading.Lock()
        self.forget()

    def forget(self) -> None:
        """Read everything again on next use (after a rotation in this process)."""
        self._signing: tuple[float, str, Key] | None = None  # (read at, alg, private key)
        self._public: dict[str, PublicKey] = {}
        self._public_read_at = float('-inf')
        self._unknown: dict[str, float] = {}  # kid -> when it may be looked up again

    def signing_key(self) -> tuple[str, Key]:
        """(alg, private key) to sign with now; the first call ever makes one."""
        signing, now = self._signing, time.monotonic()
        if signing and now - signing[0] < current_app.config['SIGNING_KEY_CACHE_SECONDS']:
            return signing[1], signing[2]
        with self._lock:
            stored = self._current() or self._create_first()
            try:
                self._signing = (now, stored.alg, stored.private_key(passphrase()))
            except (TypeError, ValueError):  # cryptography's words for a missing or wrong passphrase
                log.error('cannot decrypt JWT signing key %s: FLASK_SIGNING_KEY_PASSPHRASE is missing or wrong',
                          stored.kid)
                raise RetryLater('This server cannot sign tokens now.', CANNOT_SIGN_RETRY_AFTER,
                                 status_code=503) from None
            return self._signing[1], self._signing[2]

    def public_key(self, kid: str) -> PublicKey | None:
        """The published key with this kid, or None (unknown, or no longer published)."""
        now = time.monotonic()
        if now - self._public_read_at >= current_app.config['SIGNING_KEY_CACHE_SECONDS']:
            self._read_published()  # retirements made elsewhere reach this process
        found = self._public.get(kid)
        if found is None and self._unknown.get(kid, 0.0) <= now:
            # A key made since (a rotation): as cheap as an opaque token's lookup.
            # A made-up kid costs the same, then is remembered for a while.
            stored = SigningKey.find_published(kid)
            with self._lock:
                if stored is None:
                    if len(self._unknown) >= UNKNOWN_KIDS_REMEMBERED:
                        self._unknown.clear()
                    self._unknown[kid] = now + UNKNOWN_KID_SECONDS
                else:
                    found = self._public[kid] = stored.public()
        if found is not None and found.publish_until is not None and utcnow() >= found.publish_until:
            return None
        return found

    def jwks(self) -> dict:
        """The JWK Set to publish (RFC 7517 §5): every published public key."""
        self._current() or self._create_first()  # asked before its first JWT: there is a key to publish
        self._read_published()
        return {'keys': [public.jwk for public in self._public.values()]}

    def _read_published(self) -> None:
        published = {key.kid: key.public() for key in SigningKey.published()}
        with self._lock:
            self._public, self._public_read_at = published, time.monotonic()

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
                stored = SigningKey.generate(current_app.config['JWT_SIGNING_ALG'], passphrase())
                db.session.commit()
                log.info('created the first JWT signing key, kid %s (%s)', stored.kid, stored.alg)
                if passphrase() is None:
                    log.warning('JWT signing keys are stored unencrypted: set FLASK_SIGNING_KEY_PASSPHRASE')
            return stored


def passphrase() -> str | None:
    return current_app.config['SIGNING_KEY_PASSPHRASE'] or None


def key_ring() -> KeyRing:
    """The current app's key ring (an app per database, so one ring per app)."""
    return current_app.extensions.setdefault('signing_keys', KeyRing())
