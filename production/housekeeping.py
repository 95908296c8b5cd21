"""Housekeeping without a cron: expired tokens and expired rate-limit
counters are deleted a small batch at a time, after every PURGE_EVERY
requests a process serves, so the tables stay the size of what is alive;
so are signing keys no longer published and expired assertion ids.
A revoked token goes when it expires; `flask --app server purge-tokens`
deletes revoked and expired ones at once.
"""
from __future__ import annotations

import itertools
import logging

from sqlalchemy.exc import SQLAlchemyError

from models import Token, db
from production.bruteforce import RateLimitCounter
from production.client_assertions import UsedAssertion
from production.database import database_error_line
from production.signing_keys import SigningKey

log = logging.getLogger(__name__)


def init_app(app) -> None:
    served = itertools.count(1)

    @app.teardown_request
    def purge_now_and_then(error: BaseException | None = None) -> None:
        every = app.config['PURGE_EVERY']
        if not every or next(served) % every:
            return
        try:
            Token.purge(app.config['PURGE_BATCH'], batches=1, revoked=False)  # an index range, never a scan
            RateLimitCounter.purge(app.config['PURGE_BATCH'])
            SigningKey.purge()  # a few rows at most
            UsedAssertion.purge()  # minutes old at most: an index range
        except SQLAlchemyError as failure:  # the next round tries again; the request is answered already
            db.session.rollback()
            log.warning('purging dead rows failed: %s', database_error_line(failure))
