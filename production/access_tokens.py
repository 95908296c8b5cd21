"""The access tokens this server issues: opaque, or JWTs (RFC 9068).

An opaque token is 256 random bits; an API learns what it means by looking
it up (this server's own API reads the database; another asks the
introspection endpoint). A JWT access token carries what it means (client,
scope, audience, expiry) signed with this server's key, so an API verifies
it with the published public keys and reads nothing: the price is that
revoking it reaches only the introspection endpoint, not an API that
verifies locally, until it expires (README: "JWT access tokens").

Either way the token is recorded in the database by its hash, so that
revocation and introspection answer for both kinds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import Key
from joserfc.jwt import JWTClaimsRegistry

from models import ClientView, TokenRules, aud_claim, random_credential, scope_to_list
from production.settings import issuer
from production.signing_keys import ALGORITHMS, key_ring

JWT_TYPES = ('at+jwt', 'application/at+jwt')  # RFC 9068 §4: the typ header a resource server checks
CLOCK_SKEW = 5  # seconds of leeway for iat and exp between app servers' clocks
VERIFIED_TOKENS_KEPT = 10_000  # per process; about 1 KB each


def generate_token(request) -> str:
    """OAUTH2_PROVIDER_TOKEN_GENERATOR: oauthlib calls it for every new access
    token, with the authenticated client, its scopes and its audience."""
    client = request.client
    if (client.token_format or current_app.config['ACCESS_TOKEN_FORMAT']) != 'jwt':
        return random_credential(32)  # oauthlib's default draws 30 characters, a system call each
    return sign(client.client_id, request.scopes, request.resources, client.token_expires_in(request.expires_in))


def sign(client_id: str, scopes: list[str], audience: list[str], expires_in: int) -> str:
    """A JWT access token as RFC 9068 §2 lays it out."""
    alg, key = key_ring().signing_key()
    now = int(time.time())
    claims = {
        'iss': issuer(), 'exp': now + expires_in, 'iat': now, 'jti': random_credential(16),
        # §2.2: with no resource owner, the subject is the client itself.
        'sub': client_id, 'client_id': client_id,
        'aud': aud_claim(audience),
        'scope': ' '.join(scopes),
    }
    return jwt.encode({'typ': 'at+jwt', 'alg': alg, 'kid': key.kid}, claims, key, algorithms=[alg])


def is_jwt(access_token: str | None) -> bool:
    # Opaque tokens are base64url text, which has no dots; a JWS has two.
    return bool(access_token) and access_token.count('.') == 2


def published_key(jws) -> Key:
    """The key a token names by kid, if this server publishes it for that algorithm."""
    header = jws.headers()
    kid = header.get('kid')
    public = key_ring().public_key(kid) if isinstance(kid, str) else None
    if public is None or public.alg != header.get('alg'):
        raise InvalidKeyIdError()
    return public.key


def verify(access_token: str) -> JwtAccessToken | None:
    """The token its claims describe if this server signed it, for itself,
    and it has not expired (RFC 9068 §4); None otherwise. No database read.

    A client reuses its token for each of its requests until the token
    expires, so the signature of the very same token (the same bytes, its
    signature included) is checked once per process, not once per request:
    the check is most of a JWT request's cost. Each request still checks
    that the token's key is published, its issuer, and its expiry."""
    verified = current_app.extensions.setdefault('verified_jwts', {})
    token = verified.get(access_token)
    if token is not None:
        if token.iss == issuer() and key_ring().public_key(token.kid) is not None:
            return token
        verified.pop(access_token, None)
        return None
    token = verify_signature_and_claims(access_token)
    if token is not None:
        if len(verified) >= VERIFIED_TOKENS_KEPT:
            verified.pop(next(iter(verified), None), None)  # the oldest
        verified[access_token] = token
    return token


def verify_signature_and_claims(access_token: str) -> JwtAccessToken | None:
    """RFC 9068 §4, every step. Only this server's asymmetric algorithms
    are accepted: never `none`, and never an HMAC keyed with a public key."""
    registry = JWTClaimsRegistry(
        leeway=CLOCK_SKEW, iss={'essential': True, 'value': issuer()},
        **{claim: {'essential': True} for claim in ('exp', 'iat', 'jti', 'sub', 'client_id', 'aud')})
    try:
        token = jwt.decode(access_token, published_key, algorithms=list(ALGORITHMS))
        if str(token.header.get('typ', '')).lower() not in JWT_TYPES:
            return None
        registry.validate(token.claims)
    except (JoseError, ValueError):  # joserfc raises ValueError for some malformed input
        return None
    claims = token.claims
    if not isinstance(claims['client_id'], str) or not isinstance(claims.get('scope', ''), str):
        return None
    audience = claims['aud'] if isinstance(claims['aud'], list) else [claims['aud']]
    if any(not resource or any(c.isspace() for c in resource) for resource in audience):
        return None  # kept space-delimited below; no resource indicator has a space (RFC 8707 §2)
    try:
        issued_at, expires = (datetime.fromtimestamp(claims[name], UTC) for name in ('iat', 'exp'))
    except (OverflowError, OSError, ValueError):  # a time past the year 9999
        return None
    return JwtAccessToken(scope=claims.get('scope', ''), audience=' '.join(audience), jti=claims['jti'],
                          issued_at=issued_at, expires=expires, iss=claims['iss'], kid=token.header['kid'],
                          client=TokenClient(claims['client_id'], claims.get('scope', '')))


@dataclass(frozen=True, slots=True)
class TokenClient:
    """The client as a JWT describes it: who it is and what this token may do."""

    client_id: str
    scope: str
    name = None  # not in the token
    disabled = False  # a disabled client's JWTs work until they expire (README)

    @property
    def default_scopes(self) -> list[str]:
        return scope_to_list(self.scope)

    @property
    def id(self) -> int | None:
        """The client's row, for a route that reads the client's own data
        (its items); verifying the token never needs it."""
        client = ClientView.find(self.client_id)
        return None if client is None else client.id


@dataclass(frozen=True, slots=True)
class JwtAccessToken(TokenRules):
    """A verified JWT access token, as TokenView is a stored one."""

    scope: str
    audience: str
    jti: str
    issued_at: datetime
    expires: datetime
    iss: str
    kid: str
    client: TokenClient
    revoked_at = None  # only the database knows (introspection)
    user = None  # Flask-OAuthlib reads it
