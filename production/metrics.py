"""Prometheus metrics at GET /metrics, with the official client library.

Under gunicorn every worker is a process of its own: prometheus_client's
multiprocess mode has each write its figures to files in
PROMETHEUS_MULTIPROC_DIR, and /metrics, whichever worker answers, adds them
up. gunicorn.conf.py makes and empties that folder (the library's
documentation: wipe it before the server starts, mark dead workers). Under
`python server.py` (one process) the library's default registry serves.

A worker that exits (gunicorn's --max-requests, a crash, a reload) leaves its
counter and histogram files behind, on purpose: the totals would drop
without them. The folder so gains two small files a worker started, until
the server restarts; only the live gauge's file goes with its worker
(prometheus_client's mark_process_dead, from gunicorn.conf.py's child_exit).

Labels stay bounded: an endpoint name, a token format, a fixed set of
refusal reasons; never a client id, a token or an address.

/metrics is not public: it answers the addresses of METRICS_ALLOWED_ADDRESSES
(loopback by default) and callers with METRICS_BEARER_TOKEN, no one else.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import time

from flask import Response, current_app, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from production.settings import allowed_networks

TOKENS_ISSUED = Counter('oauth_tokens_issued', 'Access tokens issued.', ['token_format', 'grant_type'])
AUTHENTICATIONS_REFUSED = Counter('oauth_client_authentications_refused',
                                  'Client authentications refused, by reason.', ['reason'])
REQUESTS_THROTTLED = Counter('oauth_requests_throttled', 'Requests refused by a rate limit (429).', ['limit'])
TOKENS_REVOKED = Counter('oauth_tokens_revoked', 'Access tokens revoked (RFC 7009).')
INTROSPECTIONS = Counter('oauth_introspections', 'Introspection answers (RFC 7662), by result.', ['active'])
DATABASE_ERRORS = Counter('oauth_database_errors', 'Requests answered 503 because the database failed.')
# Set to 1 by each gunicorn worker once it has loaded the app (gunicorn.conf.py);
# livesum: the live ones add up, a dead one's file goes with mark_process_dead.
GUNICORN_WORKERS = Gauge('oauth_gunicorn_workers', 'gunicorn workers running (0 without gunicorn).',
                         multiprocess_mode='livesum')
REQUEST_DURATION = Histogram('oauth_request_duration_seconds', 'Time to answer a request, by endpoint.',
                             ['endpoint'], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))

# The audit log's reasons, in the few classes a dashboard tells apart.
REFUSAL_REASONS = {'no_credentials': 'no_credentials', 'unknown_client': 'unknown_client',
                   'wrong_secret': 'wrong_secret', 'client_disabled': 'client_disabled',
                   'secret_from_key_client': 'wrong_method', 'assertion_from_secret_client': 'wrong_method'}
enabled = False  # METRICS_ENABLED, set by init_app: off, nothing is counted


def init_app(app) -> None:
    global enabled
    enabled = bool(app.config['METRICS_ENABLED'])
    if enabled:
        app.wsgi_app = RequestDuration(app.wsgi_app, app)
        app.add_url_rule('/metrics', 'metrics', metrics)


def audit_event(name: str, details: dict) -> None:
    """Count what the audit log records (production/audit.py calls this)."""
    if name == 'token_issued':
        TOKENS_ISSUED.labels(details.get('token_format', 'opaque'), 'client_credentials').inc()
    elif name == 'authentication_failed':
        AUTHENTICATIONS_REFUSED.labels(REFUSAL_REASONS.get(details.get('reason'), 'bad_assertion')).inc()
    elif name == 'token_revoked':
        TOKENS_REVOKED.inc()


def throttled(limit: str) -> None:
    if enabled:
        REQUESTS_THROTTLED.labels(limit).inc()


def introspected(active: bool) -> None:
    if enabled:
        INTROSPECTIONS.labels('true' if active else 'false').inc()


def database_failed() -> None:
    if enabled:
        DATABASE_ERRORS.inc()


class RequestDuration:
    """WSGI middleware: each request's time, labelled by endpoint. The
    endpoint comes from the path (a dict lookup), as Flask's hooks cost a
    tenth of a fast request (production/headers.py)."""

    def __init__(self, wsgi_app, app):
        self.wsgi_app, self.app = wsgi_app, app
        self.endpoints = None  # path -> endpoint, once the routes exist

    def endpoint(self, path: str) -> str:
        if self.endpoints is None:
            self.endpoints = {rule.rule: 'admin' if rule.endpoint.startswith('admin.') else rule.endpoint
                              for rule in self.app.url_map.iter_rules() if not rule.arguments}
        found = self.endpoints.get(path)
        if found is None:
            return 'admin' if path.startswith('/admin/') else 'other'  # bounded: no path becomes a label
        return found

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            REQUEST_DURATION.labels(self.endpoint(environ.get('PATH_INFO', ''))).observe(
                time.perf_counter() - started)


def allowed() -> bool:
    token = current_app.config['METRICS_BEARER_TOKEN']
    authorization = request.headers.get('Authorization', '')
    if token and authorization.startswith('Bearer '):
        return hmac.compare_digest(authorization.removeprefix('Bearer ').encode(), token.encode())
    try:
        address = ipaddress.ip_address(request.remote_addr or '')
    except ValueError:
        return False
    return any(address in network for network in allowed_networks(current_app.config['METRICS_ALLOWED_ADDRESSES']))


def metrics():
    """The figures in Prometheus' text format."""
    if not allowed():
        response = jsonify(error='access_denied', error_description='The metrics are not served to this caller.')
        response.status_code = 403
        return response
    if os.environ.get('PROMETHEUS_MULTIPROC_DIR'):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # every worker's files, added up
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
