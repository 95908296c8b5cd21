"""Every error as JSON with its RFC error code, never an HTML page or a 500
with a traceback: OAuth errors (RFC 6749 §5.2), Werkzeug's HTTP errors, and a
database that fails (503 and Retry-After, so that clients back off)."""
from __future__ import annotations

from flask import current_app, jsonify
from flask.json.provider import DefaultJSONProvider
from oauthlib.oauth2.rfc6749 import errors
from sqlalchemy.exc import DataError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from production import metrics
from production.database import database_error_line, db

DATABASE_RETRY_AFTER = 5  # seconds


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, keeping the order the RFCs list fields in, and reading a
    body nested too deeply for Python's parser as what it is: bad JSON (a
    400), not a RecursionError (a 500)."""

    sort_keys = False

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError('JSON nested too deeply') from None


class RetryLater(errors.TemporarilyUnavailableError):
    """temporarily_unavailable with Retry-After (RFC 9110 §10.2.3): 429 for
    a caller that is throttled, 503 while the database is down."""

    def __init__(self, description: str, retry_after: int, status_code: int = 429):
        super().__init__(description=description, status_code=status_code)
        self.retry_after = retry_after

    @property
    def headers(self):
        return {'Retry-After': str(self.retry_after)}


def init_app(app) -> None:
    app.json = JSONProvider(app)
    app.register_error_handler(errors.OAuth2Error, oauth_error_response)
    app.register_error_handler(SQLAlchemyError, database_error_response)
    app.register_error_handler(HTTPException, http_error_response)


def oauth_error_response(error: errors.OAuth2Error):
    # RFC 6749 §5.2 body; oauthlib's `headers` carry the RFC 6750 challenge.
    response = current_app.response_class(error.json, error.status_code, mimetype='application/json')
    response.headers.update(error.headers)
    response.headers['Cache-Control'] = 'no-store'
    response.headers['Pragma'] = 'no-cache'
    return response


def database_error_response(error: SQLAlchemyError):
    db.session.rollback()
    # One line per failure, without a traceback: an outage must not flood the log.
    current_app.logger.error('database error: %s: %s', type(error).__name__, database_error_line(error))
    if isinstance(error, DataError):  # a value the database refuses: the request's fault
        return oauth_error_response(errors.InvalidRequestError(description='A value in the request cannot be stored.'))
    metrics.database_failed()
    return oauth_error_response(RetryLater('The database is unavailable; try again later.',
                                           DATABASE_RETRY_AFTER, status_code=503))


def http_error_response(error: HTTPException):
    # Werkzeug answers 404, 405, 413 ... with HTML pages; an API answers JSON.
    # Unhandled exceptions arrive here as a 500.
    code = 'server_error' if error.code >= 500 else 'invalid_request'
    response = jsonify(error=code, error_description=error.description)
    response.status_code = error.code
    for key, value in error.get_headers():
        if key.lower() != 'content-type':
            response.headers[key] = value
    if 'Allow' in response.headers:  # 405: Werkzeug lists the methods in set order, which varies by process
        response.headers['Allow'] = ', '.join(sorted(error.valid_methods))
    return response
