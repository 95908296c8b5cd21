"""The replay store: each `jti` a server must accept only once, shared by
every worker and every app server through the database.

Two kinds of signed, short-lived JWTs come with a `jti` here: a client's
assertion (private_key_jwt, RFC 7523 §3 item 7) and a DPoP proof (RFC 9449
§11.1). A jti is kept, as a hash, for as long as the JWT that carried it
could still be accepted; then the housekeeping deletes it (purge_dead_rows).
So the table holds what a few minutes of requests bring, and a replay is
refused on every worker, before and after a purge.
"""
from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import String, text
from sqlalchemy.orm import Mapped, mapped_column

from models import UTCDateTime, db, utcnow
from production.database import execute_one


class UsedJti(db.Model):
    """A jti already accepted, kept until the JWT that carried it expires."""

    # The table keeps the name it had when only client assertions used it:
    # a rename would break the previous release during a rolling deploy
    # (docs/migrations.md: "Rolling deploys").
    __tablename__ = 'used_assertions'

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of what the jti is scoped to, and it
    expires: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    @classmethod
    def purge(cls) -> int:
        deleted = db.session.execute(db.delete(cls).where(cls.expires <= utcnow())).rowcount
        db.session.commit()
        return deleted


# One statement, so that two workers given the same jti at the same moment
# cannot both accept it: the second insert finds the row and returns nothing.
# SQLite (3.35+) and PostgreSQL share this syntax.
_REMEMBER = text('INSERT INTO used_assertions (key, expires) VALUES (:key, :expires) '
                 'ON CONFLICT (key) DO NOTHING RETURNING key').bindparams(
    db.bindparam('expires', type_=UTCDateTime))


def remember(scope: tuple[str, ...], expires: datetime) -> bool:
    """True the first time this jti is seen in its scope (the jti last,
    after whose it is: a client's id, or a DPoP key's thumbprint); False
    for a replay. Kept until `expires`, when the JWT can no longer be accepted."""
    # surrogatepass: a jti is JSON text, which may hold a lone surrogate.
    key = hashlib.sha256('\0'.join(scope).encode('utf-8', 'surrogatepass')).hexdigest()
    return execute_one(_REMEMBER, {'key': key, 'expires': expires}, write=True) is not None
