"""Audiences: which APIs a token is for (RFC 8707, resource indicators).

A client asks for a token for one or more APIs with `resource=URI`
(repeatable) and gets a token whose audience (`aud`) is those APIs, so that
a token minted for one API is refused by another. Each client is registered
with the resources it may ask for (`--resource URI`); one registered with
none may ask only for this server's own API (API_RESOURCE). A request
without `resource` gets every resource the client may ask for, as a request
without `scope` gets every scope (RFC 6749 §3.3).
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import current_app, request
from oauthlib.oauth2.rfc6749 import errors

from production.settings import issuer

RESOURCE_MAX_LENGTH = 500
# RFC 3986 §2: a URI is ASCII letters, digits and these marks; anything else
# (a space, a control character, NUL, a bidi override, any non-ASCII letter)
# is percent-encoded first. The same on every database.
URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")


class InvalidTargetError(errors.OAuth2Error):
    # RFC 8707 §2: the resource is invalid, missing, unknown, or malformed.
    error = 'invalid_target'
    status_code = 400


def check_resource(uri: str) -> str:
    """A resource indicator as RFC 8707 §2 wants it; ValueError says what is wrong."""
    if len(uri) > RESOURCE_MAX_LENGTH:
        raise ValueError(f'a resource must be at most {RESOURCE_MAX_LENGTH} characters')
    if not URI_CHARACTERS.fullmatch(uri):
        raise ValueError(f"a resource must be an absolute URI of ASCII letters, digits and -._~:/?#[]@!$&'()*+,;=% "
                         f'(RFC 3986 §2: percent-encode the rest), not {uri[:100]!r}')
    parts = urlsplit(uri)
    if not parts.scheme or not (parts.netloc or parts.path):
        raise ValueError(f'a resource must be an absolute URI, not {uri[:100]!r}')
    if parts.fragment or uri.endswith('#'):
        raise ValueError(f'a resource must not have a fragment: {uri[:100]!r}')
    return uri


def api_resource() -> str:
    """This server's own API's resource identifier: API_RESOURCE, or the issuer's /api."""
    return current_app.config['API_RESOURCE'] or issuer() + '/api'


def allowed_resources(client) -> list[str]:
    return client.resources.split() or [api_resource()]


def validate_resources(oauthlib_request) -> None:
    """oauthlib's post_token validator: runs once the client is authenticated
    and its scope checked; sets `resources`, the token's audience."""
    # oauthlib keeps one value of a repeated parameter; `resource` may repeat.
    requested = request.form.getlist('resource')
    for uri in requested:
        try:
            check_resource(uri)
        except ValueError as error:
            raise InvalidTargetError(description=str(error).capitalize() + '.', request=oauthlib_request) from None
    allowed = allowed_resources(oauthlib_request.client)
    refused = [uri for uri in requested if uri not in allowed]
    if refused:
        raise InvalidTargetError(description=f'This client may not ask for {refused[0]}; it may ask for: '
                                 + ' '.join(allowed) + '.', request=oauthlib_request)
    oauthlib_request.resources = list(dict.fromkeys(requested)) or allowed
    # What the token is stored with. A client registered without resources
    # gets tokens for this server's API only, wherever the server is reached
    # (its address may change; API_RESOURCE may not be set): stored as None.
    oauthlib_request.audience = oauthlib_request.resources if oauthlib_request.client.resources else None
