"""Flask-OAuthlib's request validator, corrected where it falls short of the
RFCs on today's Flask (docs/flask-oauthlib.md).

oauthlib asks the validator every question about clients and tokens; each
override below names the rule it enforces. The provider reads clients and
API tokens through server.py's callbacks (`self._clientgetter`,
`self._tokengetter`); API requests, revocation and introspection all read
the stored token, JWT or opaque, so that they give one answer for one token.
"""
from __future__ import annotations

import re
from urllib.parse import unquote_plus

from flask import request
from flask_oauthlib.provider import OAuth2RequestValidator
from oauthlib.oauth2.rfc6749 import errors

from models import ClientView, Token, TokenView, db, scope_to_list
from production import audit, client_assertions, dpop, metrics
from production.audiences import api_resource

# RFC 6750 §2.1: b64token, the syntax of a Bearer credential.
BEARER_TOKEN = re.compile(r'[A-Za-z0-9\-._~+/]+=*')


def client_credentials() -> tuple[str | None, str | None]:
    """(client_id, client_secret) of this request, from HTTP Basic or from the form.

    RFC 6749 §2.3.1: the server MUST support HTTP Basic, where id and secret
    are form-urlencoded (Appendix B) before base64. The fork only understands
    a pre-parsed header, which it no longer receives.
    """
    try:
        basic = request.authorization  # parsed once per request by Werkzeug
    except ValueError:  # Werkzeug's base64 decoder refuses a non-ASCII value with a bare ValueError
        raise errors.InvalidRequestError(description='Malformed Authorization header.') from None
    form = request.form.to_dict()  # a plain dict: HTTP Basic's requests lack these fields (see presented_assertion)
    form_client_id, form_client_secret = form.get('client_id'), form.get('client_secret')
    if basic is None or basic.type != 'basic':
        return form_client_id, form_client_secret
    client_id = unquote_plus(basic.username or '')
    # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
    if form_client_secret or (form_client_id and form_client_id != client_id):
        raise errors.InvalidRequestError(description='Use one client authentication method, not both.')
    return client_id, unquote_plus(basic.password or '')


def presented_credentials() -> tuple[str | None, str | None, str | None]:
    """(client_id, client_secret, client_assertion) as this request presents
    them, by whichever method it uses: a secret (HTTP Basic or the form) or,
    for private_key_jwt, an assertion (RFC 7523 §2.2), whose client_id is the
    one it names, unverified. RFC 6749 §2.3: one method per request."""
    assertion = client_assertions.presented_assertion()
    if assertion is not None:
        return client_assertions.presented_client_id(assertion), None, assertion
    return *client_credentials(), None


class ClientCredentialsValidator(OAuth2RequestValidator):
    """Flask-OAuthlib's validator, corrected where it falls short of the RFCs
    on today's Flask (docs/flask-oauthlib.md)."""

    def _get_client_creds_from_request(self, request):
        return client_credentials()  # from the Flask request this oauthlib `request` was built from

    def client_authentication_required(self, request, *args, **kwargs):
        # Every client here is confidential, so revocation (RFC 7009 §2.1) and
        # introspection check the secret too; the fork checks only the id.
        return True

    def authenticate_client(self, request, *args, **kwargs):
        client_id, client_secret, assertion = presented_credentials()
        if assertion is not None:
            client, failure = client_assertions.authenticate(assertion)
        else:
            # The fork compares plaintext secrets with `!=`; ours are hashed
            # and compared in constant time.
            client, failure = ClientView.authenticate(client_id, client_secret)
        if client is None:
            audit.event('authentication_failed', client_id, reason=failure)
            return False
        request.client = client
        return True

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        # RFC 6749 §3.3: scope is a set ("read read" is "read"); §3.1: an empty
        # parameter counts as omitted, so it means all of the client's scopes.
        # oauthlib reads scope="" as one scope named "".
        request.scopes = scope_to_list(' '.join(scopes)) or client.default_scopes
        if not client.validate_scopes(request.scopes):
            # RFC 6749 §5.2 invalid_scope, saying what the client may ask for.
            raise errors.InvalidScopeError(
                description=f'This client may ask for: {client.scope or "no scope at all"}.', request=request)
        return True

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        if grant_type not in client.allowed_grant_types:
            # RFC 6749 §5.2 unauthorized_client, saying why.
            raise errors.UnauthorizedClientError(
                description='This client may not get tokens: it is registered to revoke or introspect only.',
                request=request)
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)

    def validate_bearer_token(self, token, scopes, request):
        # RFC 6750 §3.1: tell a missing token, a bad one and a missing scope apart,
        # require all of the route's scopes (the fork accepts any one of them),
        # and accept the token only from the Authorization header (§2.1), as
        # Bearer or, bound to a key, as DPoP (RFC 9449 §7.1). oauthlib reads
        # only a Bearer token: the header is read here.
        if request.access_token:  # a query or form parameter (RFC 6750 §2.2, §2.3)
            request.bearer_error = errors.InvalidRequestError(
                description='Send the access token in the Authorization header.')
            return False
        scheme, *credentials = (request.headers.get('Authorization') or '').split() or ['']
        scheme = scheme.lower()
        request.dpop = scheme == 'dpop'  # which challenge carries the error (provider.bearer_challenge)
        if scheme not in ('bearer', 'dpop'):
            request.bearer_error = None  # no credentials: challenge without an error code
            return False
        token = credentials[0] if len(credentials) == 1 else None
        if not token or not BEARER_TOKEN.fullmatch(token):
            request.bearer_error = errors.InvalidTokenError(description='The access token is malformed.')
            return False
        tok = self._tokengetter(access_token=token)
        if tok is None or not tok.is_active():
            request.bearer_error = errors.InvalidTokenError(
                description='The access token is unknown, expired or revoked.')
            return False
        if not tok.has_audience(api_resource()):  # RFC 8707; RFC 9068 §4
            request.bearer_error = errors.InvalidTokenError(
                description='The access token is meant for another API (its audience).')
            return False
        request.bearer_error = dpop.refusal(tok, token, scheme)  # RFC 9449 §7: a bound token with its key's proof
        if request.bearer_error is not None:
            return False
        if not tok.has_scopes(scopes):
            request.bearer_error = errors.InsufficientScopeError(
                description='The access token lacks the scope this resource requires.')
            return False
        request.access_token = tok
        request.client = tok.client
        request.user = None
        request.scopes = tok.scopes
        return True

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        # RFC 7009 §2.1: only the client a token was issued to may revoke it
        # (the fork revokes anyone's). §2.2: an unknown or already revoked
        # token still gets 200. No refresh tokens exist, so the hint is moot.
        # Every token is stored, JWTs too: revocation reads the database.
        tok = TokenView.find(token)
        if tok is None:
            return
        if tok.client_pk != request.client.id:
            raise errors.InvalidGrantError(description='The token was issued to another client.')
        Token.revoke_where(Token.id == tok.id)
        db.session.commit()
        audit.event('token_revoked', request.client.client_id, token_id=tok.id)

    def introspect_token(self, token, token_type_hint, request, *args, **kwargs):
        # RFC 7662 §2.2: a token the caller may not see is just {"active": false}.
        # A client sees its own tokens; one with the `introspect` scope sees all.
        # The stored token, JWT or opaque: only the database knows it was revoked.
        tok = TokenView.find(token)
        visible = tok is not None and tok.is_active() and (
            tok.client_pk == request.client.id or 'introspect' in request.client.default_scopes)
        metrics.introspected(active=visible)
        return tok.to_introspection(own_api=api_resource()) if visible else None
