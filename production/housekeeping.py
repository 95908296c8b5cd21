"""Housekeeping without a cron: expired tokens and expired rate-limit
counters are deleted a small batch at a time, after every PURGE_EVERY
requests a process serves, so the tables stay the size of what is alive;
so are signing keys no longer published and the replay store's expired
jtis (of client assertions and DPoP proofs).
A revoked token goes when it expires; `flask --app server purge-tokens`
deletes revoked and expired ones at once.
"""
from __future__ import annotations

import itertools
import logging

from sqlalchemy.exc import SQLAlchemyError

from models import Token, db
from production.bruteforce import RateLimitCounter
from production.database import database_error_line
from production.replay import UsedJti
from production.signing_keys import SigningKey

log = logging.getLogger(__name__)


def purge_dead_rows(batch: int | None = None) -> dict[str, int]:
    """Delete what can no longer be used, table by table; how many of each.
    With `batch` (as the server runs): one batch of expired tokens and
    counters, found through their indexes. Without (`purge-tokens`): all of
    them, revoked tokens too."""
    return {'tokens': Token.purge(batch, batches=1, revoked=False) if batch else Token.purge(),
            'counters': RateLimitCounter.purge(batch),
            'signing_keys': SigningKey.purge(),  # a few rows at most
            'jtis': UsedJti.purge()}  # minutes old at most: an index range


def init_app(app) -> None:
    served = itertools.count(1)

    @app.teardown_request
    def purge_now_and_then(error: BaseException | None = None) -> None:
        every = app.config['PURGE_EVERY']
        if not every or next(served) % every:
            return
        try:
            purge_dead_rows(app.config['PURGE_BATCH'])
        except SQLAlchemyError as failure:  # the next round tries again; the request is answered already
            db.session.rollback()
            log.warning('purging dead rows failed: %s', database_error_line(failure))
