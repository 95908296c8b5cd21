"""The access tokens this server issues: opaque, or JWTs (RFC 9068).

An opaque token is 256 random bits. A JWT access token carries what it
means (client, scope, audience, expiry) signed with this server's key, so
that another API can verify it with the published public keys without
asking this server: the price is that such an API learns of a revocation
only when the token expires (docs/jwt.md).

Either way the token is stored in the database by its hash, and this
server's own routes read that row as revocation and introspection do
(server.py's load_token): here a token stops working at once, whatever its
format.
"""
from __future__ import annotations

import time

from flask import current_app

from models import aud_claim, random_credential
from production.settings import issuer
from production.signing_keys import key_ring


def generate_token(request) -> str:
    """OAUTH2_PROVIDER_TOKEN_GENERATOR: oauthlib calls it for every new access
    token, with the authenticated client, its scopes, its audience and the
    DPoP key it is bound to (production/dpop.py)."""
    client = request.client
    if (client.token_format or current_app.config['ACCESS_TOKEN_FORMAT']) != 'jwt':
        return random_credential(32)  # oauthlib's default draws 30 characters, a system call each
    return sign(client.client_id, request.scopes, request.resources, client.token_expires_in(request.expires_in),
                jkt=request.jkt)


def sign(client_id: str, scopes: list[str], audience: list[str], expires_in: int, jkt: str | None = None) -> str:
    """A JWT access token as RFC 9068 §2 lays it out; bound to a DPoP key,
    with its thumbprint in `cnf` (RFC 9449 §6.1)."""
    alg, key = key_ring().signing_key()
    now = int(time.time())
    claims = {
        'iss': issuer(), 'exp': now + expires_in, 'iat': now, 'jti': random_credential(16),
        # §2.2: with no resource owner, the subject is the client itself.
        'sub': client_id, 'client_id': client_id,
        'aud': aud_claim(audience),
        'scope': ' '.join(scopes),
    }
    if jkt:
        claims['cnf'] = {'jkt': jkt}
    from joserfc import jwt  # on first use: production/signing_keys.py says why
    return jwt.encode({'typ': 'at+jwt', 'alg': alg, 'kid': key.kid}, claims, key, algorithms=[alg])


def is_jwt(access_token: str | None) -> bool:
    # Opaque tokens are base64url text, which has no dots; a JWS has two.
    return bool(access_token) and access_token.count('.') == 2
