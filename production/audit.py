"""The audit log: one JSON line per security event, for a SIEM or `jq`.

A line says what happened, to which client, from which address, in which
request; never a secret or a token.
"""
from __future__ import annotations

import json
import logging
import sys

from flask import has_request_context, request

from models import utcnow
from production import metrics

audit_log = logging.getLogger('oauth.audit')


def init_app(app) -> None:
    """Send audit lines to AUDIT_LOG_FILE, or to standard error."""
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False
    if not audit_log.handlers:
        handler = (logging.FileHandler(app.config['AUDIT_LOG_FILE']) if app.config['AUDIT_LOG_FILE']
                   else logging.StreamHandler(sys.stderr))
        handler.setFormatter(logging.Formatter('%(message)s'))
        audit_log.addHandler(handler)
    # oauthlib and Flask-OAuthlib log whole token responses at DEBUG level;
    # tokens must never reach a log.
    for name in ('oauthlib', 'flask_oauthlib'):
        logging.getLogger(name).setLevel(logging.INFO)


def event(name: str, client_id: str | None = None, *, actor: str | None = None, **details) -> None:
    """One audit line. `actor` is who acted: by default the calling client
    in a request, `cli` from a command; the admin API names its client."""
    if metrics.enabled:
        metrics.audit_event(name, details)
    environ = request.environ if has_request_context() else {}
    line = json.dumps({
        'time': utcnow().isoformat(), 'event': name,
        'client_id': client_id[:200] if client_id else None,  # as presented: may be anything
        'remote_addr': environ.get('REMOTE_ADDR'),  # request.remote_addr, after ProxyFix
        'request_id': environ.get('oauth.request_id'),
        'actor': actor or ('client' if environ else 'cli'), **details})
    # What audit_log.info(line) does, less its search of the call stack for
    # the file and line of the call (always this one, and never shown): a
    # sixth of an audit line's cost in a token request.
    if audit_log.isEnabledFor(logging.INFO):
        audit_log.handle(audit_log.makeRecord(audit_log.name, logging.INFO, '', 0, line, None, None))
