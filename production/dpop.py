"""DPoP (RFC 9449): access tokens bound to a key the client holds.

A bearer token works for whoever holds it. A client that sends a DPoP proof
with its token request - a short JWT signed with a private key of its own,
whose header carries the public key and whose claims name the request
(`htm`, `htu`), the moment (`iat`) and a unique id (`jti`) - gets a token
bound to that key: the token's row, and a JWT's `cnf` claim (RFC 9449
§6.1), keep the key's RFC 7638 thumbprint, `jkt`. This server's API then
takes the token only as `Authorization: DPoP <token>`, with a new proof
from the same key naming the token (`ath`): a copy of the token, from a log
or a proxy, is useless without the private key.

    DPoP: <proof>                  on the token request and on every API call
    Authorization: DPoP <token>    on API calls, for a bound token

check_proof() makes RFC 9449 §4.3's checks. A proof's jti is accepted once,
through the replay store every worker and app server shares
(production/replay.py), and kept as long as the proof could be accepted.
With DPOP_NONCE on, a proof must also carry a nonce this server gave
(§8, §9): an HMAC of the current time period under SECRET_KEY, which every
worker and app server computes alike without sharing anything.
joserfc, and cryptography with it, is imported when the first proof is
checked (as in production/client_assertions.py).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from flask import current_app, g, request
from oauthlib.oauth2.rfc6749 import errors

from production import replay
from production.client_assertions import CLOCK_SKEW, KEY_TYPES, SIGNING_ALGS, public_key, unverified
from production.settings import issuer

if TYPE_CHECKING:
    from joserfc.jwk import Key
    from joserfc.jws import JWSRegistry

# Asymmetric only (§4.2), and the same algorithms, keys and limits as a
# client's assertions: one set of checks serves both (client_assertions.public_key).
ALGS = SIGNING_ALGS
# A proof is a header line: bounded before anything is decoded. An RS256
# proof's header carries a 2048-bit public key, about 600 bytes (800 at
# 4096 bits), over joserfc's default limit of 512.
MAX_PROOF_LENGTH = 8192
MAX_JTI_LENGTH = 256  # §11.1: a server refuses needlessly large jti values
COMPACT_JWS = re.compile(r'[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+')  # RFC 7515 §7.1, base64url parts
NONCE = re.compile(r'[\x21\x23-\x5b\x5d-\x7e]{1,200}')  # §8.1: 1*NQCHAR
NOT_DESCRIPTION = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')  # RFC 6749 §5.2: what an error_description may not hold
DEFAULT_PORTS = {'http': 80, 'https': 443}  # RFC 3986 §6.2.3
MAX_HEADER_LENGTH = 2048  # bytes of a proof's header (base64url)


@functools.cache
def proof_registry() -> JWSRegistry:
    from joserfc.jws import JWSRegistry

    class ProofRegistry(JWSRegistry):
        max_header_length = MAX_HEADER_LENGTH  # joserfc's documented bound on a JWS header

    # strict_check_header off: a proof may carry header parameters of other
    # specifications (§4.2); those of JWS extensions are refused in proof_key().
    return ProofRegistry(algorithms=ALGS, strict_check_header=False)


class InvalidDPoPProofError(errors.OAuth2Error):
    error = 'invalid_dpop_proof'  # RFC 9449 §5 (400 at the token endpoint), §7.1 (401 at an API)
    status_code = 400


class UseDPoPNonceError(errors.OAuth2Error):
    error = 'use_dpop_nonce'  # RFC 9449 §8 (400 at the token endpoint), §9 (401 at an API)
    status_code = 400


@dataclass(frozen=True, slots=True)
class Proof:
    jkt: str  # RFC 7638 thumbprint of the proof's key
    jti: str
    iat: float


def init_app(app) -> None:
    """Every answer to a request with a proof carries the nonce to use next
    (the DPOP_* settings are checked with the others: production/settings.py)."""
    app.after_request(send_nonce)


def send_nonce(response):
    # RFC 9449 §8.2: the answer to a request with a proof names the nonce
    # for the next one, so that a client rarely needs a round trip for it.
    if current_app.config['DPOP_NONCE'] and 'DPoP' in request.headers:
        response.headers['DPoP-Nonce'] = nonce(current_period())
    return response


# --- Nonces (§8, §9): the same on every worker and app server ---------------

def current_period() -> int:
    return int(time.time()) // current_app.config['DPOP_NONCE_SECONDS']


def nonce(period: int) -> str:
    """Unpredictable without SECRET_KEY; it changes every DPOP_NONCE_SECONDS.
    Changing SECRET_KEY on every server makes every earlier nonce invalid:
    clients then get a new one with their next answer (use_dpop_nonce)."""
    secret = current_app.config['SECRET_KEY']
    secret = secret if isinstance(secret, bytes) else str(secret).encode()
    digest = hmac.new(secret, f'dpop-nonce {period}'.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b'=').decode()


def nonce_is_fresh(value: object) -> bool:
    """The nonce of this period or of the last (one given just before the
    period changed is still good)."""
    if not isinstance(value, str) or not NONCE.fullmatch(value):
        return False
    period = current_period()
    return any(hmac.compare_digest(value, nonce(p)) for p in (period, period - 1))


# --- The proof (§4.3) -------------------------------------------------------

def presented_proof() -> str | None:
    """This request's DPoP header, or None."""
    proofs = request.headers.getlist('DPoP')
    # §4.3 step 1: not more than one (a server may join repeated headers with commas).
    if len(proofs) > 1 or (proofs and ',' in proofs[0]):
        raise InvalidDPoPProofError(description='Send one DPoP header, not several.')
    return proofs[0] if proofs else None


def check_proof(proof: str, access_token: str | None = None) -> Proof:
    """The proof's key and claims, if it is a valid proof of this request
    (and of `access_token`, at an API); else InvalidDPoPProofError, or
    UseDPoPNonceError, saying what is wrong. Its jti is not remembered yet:
    that is remember()'s, once the rest of the request has been checked."""
    # §4.3 step 2: a single well-formed JWT, of a bounded size.
    if len(proof) > MAX_PROOF_LENGTH or not COMPACT_JWS.fullmatch(proof):
        raise invalid('The DPoP proof is not a JWT (a compact JWS of three base64url parts) '
                      f'of at most {MAX_PROOF_LENGTH} characters.')
    key, jkt = proof_key(proof.partition('.')[0])
    from joserfc import jws
    from joserfc.errors import JoseError
    registry = proof_registry()
    try:
        signed = jws.extract_compact(proof.encode(), registry=registry)
        verified = jws.validate_compact(signed, key, registry=registry)
    except (JoseError, ValueError):
        verified = False
    if not verified:  # §4.3 step 6
        raise invalid("The DPoP proof's signature does not verify with the key in its header (jwk).")
    try:
        claims = json.loads(signed.payload)
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        claims = None
    if not isinstance(claims, dict):
        raise invalid("The DPoP proof's claims are not a JSON object.")
    check_claims(claims, access_token)
    return Proof(jkt, claims['jti'], claims['iat'])


@functools.lru_cache(maxsize=1024)
def proof_key(header_segment: str) -> tuple[Key, str]:
    """The public key in a proof's header, checked, and its thumbprint
    (§4.3 steps 4, 5 and 7). Read once per header: a client sends the same
    header, with the same key, in each of its proofs."""
    if len(header_segment) > MAX_HEADER_LENGTH:
        raise invalid(f"The DPoP proof's header is over {MAX_HEADER_LENGTH} bytes.")
    header = unverified(header_segment, 0)
    if not header:
        raise invalid("The DPoP proof's header is not a JSON object.")
    typ = header.get('typ')
    # RFC 7515 §4.1.9: a media type, compared without case, "application/" optional.
    if not isinstance(typ, str) or typ.lower().removeprefix('application/') != 'dpop+jwt':
        raise invalid("A DPoP proof's typ is dpop+jwt.")
    alg = header.get('alg')
    if alg not in ALGS:
        raise invalid(f'A DPoP proof is signed (alg) with one of: {" ".join(ALGS)}.')
    if 'crit' in header or 'b64' in header:  # JWS extensions (RFC 7515 §4.1.11, RFC 7797): none is understood here
        raise invalid('A DPoP proof uses no JWS extension (crit, b64).')
    if 'jwk' not in header:
        raise invalid("A DPoP proof's header carries its public key (jwk).")
    try:
        key = public_key(header['jwk'])
    except ValueError as error:
        raise invalid(f"The DPoP proof's key (jwk): {error}.") from None
    if KEY_TYPES[alg] != key.key_type:
        raise invalid(f'A DPoP proof signed with {alg} carries a {KEY_TYPES[alg]} key.')
    return key, key.thumbprint()


def check_claims(claims: dict, access_token: str | None) -> None:
    """§4.3 steps 3 and 8 to 12, but for the key binding: the claims name
    this request, now, and the access token it comes with."""
    jti, htm, htu, iat = (claims.get(name) for name in ('jti', 'htm', 'htu', 'iat'))
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise invalid(f'A DPoP proof has a jti of 1 to {MAX_JTI_LENGTH} characters.')
    if htm != request.method:  # step 8
        raise invalid("The DPoP proof is for another HTTP method (htm: this request's method).")
    if not isinstance(htu, str) or normalized_uri(htu) is None or normalized_uri(htu) != request_uri():  # step 9
        raise invalid("The DPoP proof is for another URI (htu: this request's URL at this server's issuer, "
                      'without query and fragment).')
    now, max_age = time.time(), current_app.config['DPOP_PROOF_MAX_AGE']
    if isinstance(iat, bool) or not isinstance(iat, (int, float)) or not now - max_age <= iat <= now + CLOCK_SKEW:
        raise invalid(f'A DPoP proof is used within {max_age} seconds of its iat (its creation time, '
                      'in seconds since 1970), and not made in the future.')  # step 11, §11.1
    if access_token is not None:  # step 12: the token it comes with (§7.1)
        ath = claims.get('ath')
        expected = base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()).rstrip(b'=')
        if not isinstance(ath, str) or not hmac.compare_digest(ath.encode('utf-8', 'surrogatepass'), expected):
            raise invalid('The DPoP proof is for another access token (ath: the base64url SHA-256 of the token).')
    if current_app.config['DPOP_NONCE'] and not nonce_is_fresh(claims.get('nonce')):  # step 10
        raise UseDPoPNonceError(description='Send the DPoP proof again with the nonce this answer gives '
                                            '(DPoP-Nonce).')


def request_uri() -> tuple | None:
    """This request's URI as a proof must name it (§4.3 step 9): the
    configured issuer's origin and path, then the request's path. Never the
    Host header, which the caller chooses."""
    configured = normalized_uri(issuer())
    if configured is None:  # not an http(s) URL: no proof can name it
        return None
    scheme, host, port, prefix = configured
    return scheme, host, port, prefix.rstrip('/') + request.path


@functools.lru_cache(maxsize=1024)
def normalized_uri(uri: str) -> tuple | None:
    """(scheme, host, port, path) of an absolute http(s) URI, as RFC 3986
    compares URIs (§6.2.2: case of scheme and host, percent-encoding;
    §6.2.3: the default port, an empty path as "/"), without query and
    fragment; None for anything else. A URI is ASCII: other characters, and
    the look-alikes they allow, never match. The path is percent-decoded,
    as the server decodes the paths it routes."""
    if not uri.isascii():
        return None
    try:
        parts = urlsplit(uri)
        port = parts.port
        path = unquote(parts.path, errors='strict') or '/'
    except ValueError:  # a port out of range, or a path that is not UTF-8
        return None
    scheme = parts.scheme  # urlsplit gives the scheme and the hostname in lower case
    if scheme not in DEFAULT_PORTS or not parts.hostname or '@' in parts.netloc:
        return None
    return scheme, parts.hostname, DEFAULT_PORTS[scheme] if port is None else port, path


def invalid(description: str) -> InvalidDPoPProofError:
    # RFC 6749 §5.2, RFC 6750 §3: an error_description is printable ASCII
    # without " and \ (it is quoted in a challenge); a key's problem may quote.
    return InvalidDPoPProofError(description=NOT_DESCRIPTION.sub('', description.replace('"', "'")))


def remember(proof: Proof) -> bool:
    """True the first time this key's jti is seen (§11.1); kept until no
    proof with its iat is accepted any more, every worker and app server alike."""
    expires = datetime.fromtimestamp(proof.iat + current_app.config['DPOP_PROOF_MAX_AGE'] + CLOCK_SKEW, UTC)
    return replay.remember(('dpop', proof.jkt, proof.jti), expires)


# --- At the token endpoint (§5) ---------------------------------------------

def check_token_request() -> None:
    """Before oauthlib runs: a proof the request carries must be valid
    (400 invalid_dpop_proof); its key is kept for bind_token()."""
    proof = presented_proof()
    g.dpop_proof = None if proof is None else check_proof(proof)


def bind_token(oauthlib_request) -> None:
    """oauthlib's post_token validator, once the client is authenticated:
    sets `jkt`, the key the new token is bound to (None: a bearer token)."""
    proof = g.get('dpop_proof')
    if proof is None and oauthlib_request.client.dpop_bound_access_tokens:
        # RFC 9449 §5.2: such a client's every token request carries a proof.
        raise InvalidDPoPProofError(description='This client is registered with dpop_bound_access_tokens: '
                                                'send a DPoP proof with every token request.',
                                    request=oauthlib_request)
    if proof is not None and not remember(proof):
        raise InvalidDPoPProofError(description='This DPoP proof was used before: make a new one for each '
                                                'request.', request=oauthlib_request)
    oauthlib_request.jkt = None if proof is None else proof.jkt


# --- At this server's API (§7) ----------------------------------------------

def refusal(tok, access_token: str, scheme: str) -> errors.OAuth2Error | None:
    """Why this server's API refuses a live token sent with this scheme
    ('bearer' or 'dpop'), or None, having remembered the proof's jti."""
    if scheme == 'bearer' and not tok.jkt:
        return None
    if scheme == 'bearer':  # §7.2: refused, or DPoP would protect nothing
        return errors.InvalidTokenError(description='This access token is DPoP-bound: send it with the DPoP '
                                                    'scheme (Authorization: DPoP) and a DPoP proof.')
    if not tok.jkt:
        # §7.1: the proof's key must match the one the token is bound to; an unbound token has none.
        return errors.InvalidTokenError(description='This access token is not DPoP-bound: send it with the '
                                                    'Bearer scheme (Authorization: Bearer).')
    try:
        proof = presented_proof()
        if proof is None:
            raise InvalidDPoPProofError(description='A DPoP-bound token comes with a DPoP proof (the DPoP header).')
        proof = check_proof(proof, access_token)
    except (InvalidDPoPProofError, UseDPoPNonceError) as error:
        error.status_code = 401  # §7.1, §9: an API's challenge
        return error
    if not hmac.compare_digest(proof.jkt, tok.jkt):  # §4.3 step 12
        return errors.InvalidTokenError(description='Invalid DPoP key binding: the proof is signed with another '
                                                    'key than the one the token is bound to.')
    if not remember(proof):
        return InvalidDPoPProofError(description='This DPoP proof was used before: make a new one for each '
                                                 'request.', status_code=401)
    return None


def challenge(details: str = '') -> str:
    """The DPoP challenge of a refused API request (§7.1), with the error
    `details` when the request used DPoP."""
    return f'DPoP {details + ", " if details else ""}algs="{" ".join(ALGS)}"'
