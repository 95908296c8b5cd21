"""Flask-OAuthlib's OAuth2Provider, corrected and extended.

- It runs on the corrected validator (production/validator.py).
- It hands oauthlib only what oauthlib reads of a request (the path, the
  method, the form and the Authorization header). Flask-OAuthlib copies every
  header, re-encodes the Authorization header and rebuilds the URL as an IRI
  first: a sixth of a protected request's time.
- It adds `@oauth.introspect_handler` (RFC 7662), which Flask-OAuthlib lacks.
- The token endpoint takes `resource` (RFC 8707, production/audiences.py)
  and binds a token to the key of a DPoP proof (RFC 9449, production/dpop.py).
- Refused API requests get RFC 6750's challenge and RFC 9449's, and the
  answers of the token, revocation and introspection endpoints the headers
  RFC 6749 asks for.
"""
from __future__ import annotations

from functools import wraps

from flask import current_app, jsonify, request
from flask_oauthlib.provider import OAuth2Provider
from oauthlib.common import urldecode
from oauthlib.oauth2.rfc6749 import errors
from werkzeug.utils import cached_property

from production import dpop
from production.audiences import validate_resources
from production.errors import oauth_error_response
from production.validator import ClientCredentialsValidator


class ClientCredentialsProvider(OAuth2Provider):

    def __init__(self, app):
        super().__init__(app, validator_class=ClientCredentialsValidator)
        self.client_endpoints: set[str] = set()  # the views that authenticate clients
        self.invalid_response(bearer_challenge)
        app.after_request(self.finish_client_endpoint_response)

    @cached_property
    def server(self):
        server = super().server  # built on first use, once the callbacks are set
        # oauthlib's documented hook for checks of its own: after the client is
        # authenticated and its scope checked.
        server.credentials_grant.custom_validators.post_token.extend([validate_resources, dpop.bind_token])
        return server

    @staticmethod
    def oauthlib_request() -> tuple[str, str, dict, dict]:
        req = request._get_current_object()  # one context lookup for the reads below (Flask: "Notes On Proxies")
        if req.query_string:
            try:  # oauthlib raises a bare ValueError on a query that is not urlencoded UTF-8
                urldecode(req.query_string.decode('utf-8'))
            except ValueError:
                raise errors.InvalidRequestError(description='Malformed query string.') from None
        authorization = req.headers.get('Authorization')
        headers = {} if authorization is None else {'Authorization': authorization}
        return req.full_path, req.method, req.form.to_dict(), headers

    def verify_request(self, scopes):
        return self.server.verify_request(*self.oauthlib_request(), scopes)

    def endpoint_handler(self, view, create_response):
        """The view runs first (it may refuse the request); then oauthlib's
        endpoint answers, given the request and whatever the view returned."""
        self.client_endpoints.add(view.__name__)  # the endpoint name Flask gives the route

        @wraps(view)
        def decorated(*args, **kwargs):
            extra = view(*args, **kwargs)
            headers, body, status = create_response(self.oauthlib_request(), extra)
            return current_app.response_class(body, status, headers)
        return decorated

    def token_handler(self, view):
        return self.endpoint_handler(view, lambda oauthlib_request, extra_credentials:
                                     self.server.create_token_response(*oauthlib_request, extra_credentials or {}))

    def revoke_handler(self, view):
        return self.endpoint_handler(view, lambda oauthlib_request, _:
                                     self.server.create_revocation_response(*oauthlib_request))

    def introspect_handler(self, view):
        # The oauthlib server Flask-OAuthlib builds has the endpoint, driven by
        # the validator's introspect_token().
        return self.endpoint_handler(view, lambda oauthlib_request, _:
                                     self.server.create_introspect_response(*oauthlib_request))

    def finish_client_endpoint_response(self, response):
        if request.endpoint not in self.client_endpoints:
            return response
        # RFC 6749 §5.1: answers that carry or concern credentials are not cached.
        response.headers.setdefault('Pragma', 'no-cache')
        # RFC 6749 §5.2: a 401 from an endpoint that authenticates clients
        # challenges with the HTTP scheme clients use, Basic (oauthlib says Bearer).
        if response.status_code == 401:
            response.headers['WWW-Authenticate'] = f'Basic realm="{current_app.config["OAUTH2_REALM"]}"'
        # RFC 7009 §2.2 leaves the body of a successful revocation empty; an API
        # that always answers JSON sends an empty object.
        if response.status_code == 200 and not response.get_data():
            response.set_data('{}')
            response.mimetype = 'application/json'
        return response


def bearer_challenge(req):
    """The WWW-Authenticate challenges of a refused API request: RFC 6750 §3's
    (Bearer) and RFC 9449 §7.1's (DPoP), side by side as §7.2 shows them;
    the scheme the request used carries the error."""
    error = getattr(req, 'bearer_error', None)
    bearer = f'Bearer realm="{current_app.config["OAUTH2_REALM"]}"'
    if error is None:  # RFC 6750 §3.1: no credentials, so no error code
        response = jsonify(error_description='This resource needs a Bearer access token.')
        response.status_code = 401
        response.headers['WWW-Authenticate'] = f'{bearer}, {dpop.challenge()}'
        return response
    details = f'error="{error.error}", error_description="{error.description}"'
    if isinstance(error, errors.InsufficientScopeError):
        details += f', scope="{" ".join(req.scopes or [])}"'
    response = oauth_error_response(error)
    response.headers['WWW-Authenticate'] = (f'{dpop.challenge(details)}, {bearer}' if getattr(req, 'dpop', False)
                                            else f'{bearer}, {details}, {dpop.challenge()}')
    return response


def form_post(view):
    """The request rules of RFC 6749 §3.2 that Flask-OAuthlib does not check:
    it folds repeated parameters into one before oauthlib can see them. Only
    `resource` may repeat (RFC 8707 §2)."""
    @wraps(view)
    def checked(*args, **kwargs):
        if request.mimetype != 'application/x-www-form-urlencoded':
            raise errors.InvalidRequestError(
                description='Send parameters as application/x-www-form-urlencoded.')
        repeated = sorted(key for key, values in request.form.lists() if len(values) > 1 and key != 'resource')
        if repeated:
            raise errors.InvalidRequestError(description=f'Repeated parameter: {repeated[0]}.')
        return view(*args, **kwargs)
    return checked
