"""Client authentication with private_key_jwt (RFC 7523 §2.2): no shared secret.

A client registered with a JWK Set of public keys proves who it is by
sending, instead of a secret, a short JWT it signed with its private key:

    client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
    client_assertion=<JWT: iss and sub its client_id, aud this server, exp, jti>

The server stores only public keys, so nothing in its database lets anyone
act as the client; the client rotates its key by registering the new public
key next to the old one, switching, then removing the old one.

The checks are RFC 7523 §3's, each failure a plain `invalid_client` with
the reason in the audit log only. A `jti` is accepted once: it is kept in the
replay store (production/replay.py) as long as the assertion is accepted
(its exp, plus the clock skew allowed on it), so a replay fails on every
worker and every app server.
Whoever an assertion names, checking it costs one signature check, so that
its time does not tell whether that client exists.

joserfc, and cryptography with it (11 MiB in each process), is imported by
the functions that read a key or check a signature, on first use: a server
whose clients all use secrets never loads it.
"""
from __future__ import annotations

import base64
import functools
import json
import secrets
import time
import warnings
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flask import current_app, request
from oauthlib.oauth2.rfc6749 import errors

from models import ClientView
from production import replay
from production.settings import issuer, public_url

if TYPE_CHECKING:
    from joserfc.jwk import Key, KeySet
    from joserfc.jwt import Token

ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'  # RFC 7523 §2.2
# Asymmetric only: never `none`, never an HMAC (whose key would be the secret
# this method exists to avoid, or a public key an attacker knows).
SIGNING_ALGS = ['RS256', 'ES256', 'EdDSA', 'Ed25519']
# EdDSA is Ed25519's older name (RFC 9864); many client libraries still send it
# (joserfc's SecurityWarning is a UserWarning).
warnings.filterwarnings('ignore', message='EdDSA is deprecated', category=UserWarning)
CLOCK_SKEW = 5  # seconds a client's clock and ours may differ: the leeway on an assertion's exp and iat
PRIVATE_MEMBERS = {'d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'}  # RFC 7518 §6: never in a public key
# What a registered key, or the key in a DPoP proof, may be. An assertion is
# checked against its client's key before anything proves the caller is that
# client (and a proof against the key it carries), so each limit below bounds
# what one unauthenticated request can cost; a key that could never sign an
# accepted assertion is refused at once rather than stored.
MAX_KEYS = 10  # a rotation needs two at a time
KEY_TYPES = {'RS256': 'RSA', 'ES256': 'EC', 'EdDSA': 'OKP', 'Ed25519': 'OKP'}  # of each of SIGNING_ALGS
CURVES = {'EC': 'P-256', 'OKP': 'Ed25519'}  # those of ES256 and EdDSA (RFC 7518 §3.4, RFC 8037)
# Every RSA key generator uses 65537; with a 3071-bit exponent one check
# took 19 ms here, as long as signing, against 0.1 ms.
RSA_EXPONENT = 65537
# 2048 bits is RFC 7518 §3.3's minimum; 4096, the largest size in common use,
# caps what one check costs, which grows with the square of the modulus
# size: a 4096-bit key costs about four times a 2048-bit one, 8192 sixteen.
RSA_BITS = (2048, 4096)
# A certificate chain or a URL to fetch one from: this server would neither
# fetch nor validate them, and a key must not seem vouched for by them.
REMOTE_MEMBERS = {'x5u', 'x5c', 'jku'}


@functools.cache
def stand_in_keys() -> dict[str, Key]:
    # Public keys only: nothing is ever accepted because of them. The RSA
    # modulus is a random odd 2048-bit number rather than a generated key
    # (0.1 s at every start): a signature check costs the same with it.
    from joserfc.jwk import ECKey, OKPKey, RSAKey
    rsa = RSAKey.import_key({'kty': 'RSA', 'e': 'AQAB', 'n': base64.urlsafe_b64encode(
        (secrets.randbits(2048) | (1 << 2047) | 1).to_bytes(256, 'big')).rstrip(b'=').decode()})
    ec = ECKey.import_key(ECKey.generate_key('P-256').as_dict(private=False))
    okp = OKPKey.import_key(OKPKey.generate_key('Ed25519').as_dict(private=False))
    return {'RS256': rsa, 'ES256': ec, 'EdDSA': okp, 'Ed25519': okp}


def check_jwks(document: str) -> tuple[str, list[str]]:
    """A client's JWK Set as it is stored, and its keys' kids; ValueError says
    what is wrong. Public keys that can sign an assertion this server
    accepts, within the limits above; a key without a kid gets its RFC 7638
    thumbprint as one."""
    try:
        parsed = json.loads(document)
    except ValueError:
        raise ValueError('the JWK Set is not JSON') from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get('keys'), list) or not parsed['keys']:
        raise ValueError('a JWK Set is a JSON object with a non-empty "keys" list (RFC 7517 §5)')
    if len(parsed['keys']) > MAX_KEYS:
        raise ValueError(f'a JWK Set may hold at most {MAX_KEYS} keys')
    keys = []
    for number, member in enumerate(parsed['keys'], 1):
        try:
            key = public_key(member)
        except ValueError as error:
            raise ValueError(f'key {number}: {error}') from None
        keys.append({**key.as_dict(private=False), 'kid': member.get('kid') or key.thumbprint()})
    kids = [key['kid'] for key in keys]
    if len(set(kids)) != len(kids):
        raise ValueError('two keys share a kid')
    return json.dumps({'keys': keys}), kids


def public_key(member: object) -> Key:
    """The public key a JWK is, if it can verify a signature this server
    accepts within the limits above: a client's registered key, or the key
    in a DPoP proof's header (production/dpop.py). ValueError says why not."""
    if not isinstance(member, dict) or member.get('kty') not in ('RSA', 'EC', 'OKP'):
        raise ValueError('only RSA, EC and OKP public keys are accepted')
    if PRIVATE_MEMBERS & set(member):
        raise ValueError('this is a private key: use the public key only')
    problem = unusable(member)
    if problem:
        raise ValueError(problem)
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet
    try:
        key = KeySet.import_key_set({'keys': [member]}).keys[0]
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f'the key cannot be read: {error}') from None
    problem = too_costly(key)
    if problem:
        raise ValueError(problem)
    return key


def unusable(member: dict) -> str:
    """Why this JWK could never sign an accepted assertion; "" if it could (RFC 7517 §4)."""
    kty, alg, ops = member['kty'], member.get('alg'), member.get('key_ops')
    if kty in CURVES and member.get('crv') != CURVES[kty]:
        return f'an {kty} key must be on the curve {CURVES[kty]} ("crv")'
    if member.get('use', 'sig') != 'sig':
        return 'a signing key\'s "use" is "sig"'
    if ops is not None and (not isinstance(ops, list) or 'verify' not in ops):
        return '"key_ops" must include "verify"'
    if alg is not None and (not isinstance(alg, str) or KEY_TYPES.get(alg) != kty):
        return f'"alg" must be one of {", ".join(a for a in SIGNING_ALGS if KEY_TYPES[a] == kty)} for an {kty} key'
    remote = sorted(REMOTE_MEMBERS & set(member))
    if remote:
        return f'"{remote[0]}" is not accepted: register the public key itself'
    return ''


def too_costly(key) -> str:
    """Why checking a signature with this key would cost too much; "" if it would not."""
    if key.key_type != 'RSA':
        return ''
    if key.raw_value.public_numbers().e != RSA_EXPONENT:
        return f'an RSA key\'s exponent ("e") must be {RSA_EXPONENT} ("AQAB")'
    if not RSA_BITS[0] <= key.raw_value.key_size <= RSA_BITS[1]:
        return f'an RSA key must have {RSA_BITS[0]} to {RSA_BITS[1]} bits'
    return ''


def presented_assertion() -> str | None:
    """This request's client_assertion, or None when it brings none.
    RFC 6749 §2.3: one authentication method per request."""
    form = request.form
    # Asked with `in` first: a secret's requests lack both fields, and Werkzeug's
    # get() of a missing field builds an exception to catch (1.5 us each).
    if 'client_assertion_type' not in form and 'client_assertion' not in form:
        return None
    assertion_type, assertion = form.get('client_assertion_type'), form.get('client_assertion')
    if not assertion_type or not assertion:
        raise errors.InvalidRequestError(description='Send client_assertion with client_assertion_type.')
    if form.get('client_secret') or (request.authorization and request.authorization.type == 'basic'):
        raise errors.InvalidRequestError(description='Use one client authentication method, not both.')
    return assertion


def unverified(assertion: str, part: int) -> dict:
    """The header (part 0) or the claims (1) of a compact JWS, before any
    check: only to know whose keys, and which of them, to check it with."""
    try:
        segment = assertion.split('.')[part]
        value = json.loads(base64.urlsafe_b64decode(segment + '=' * (-len(segment) % 4)))
    except (IndexError, ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        return {}
    return value if isinstance(value, dict) else {}


def presented_client_id(assertion: str) -> str | None:
    """Who the assertion says it is from, unverified: for the audit log and
    the brute-force counters, as a presented client id is."""
    subject = unverified(assertion, 1).get('sub')
    return subject if isinstance(subject, str) else None


def audiences() -> list[str]:
    # RFC 7523 §3 item 3: the token endpoint's URL; the issuer is accepted
    # too (RFC 8414 §2), as several client libraries send it.
    return [issuer(), public_url('access_token')]


def authenticate(assertion: str) -> tuple[ClientView | None, str]:
    """(the client that signed this assertion, "") or (None, why not): the
    reason is for the audit log only."""
    if request.form.get('client_assertion_type') != ASSERTION_TYPE:
        return None, 'unsupported_assertion_type'
    subject = presented_client_id(assertion)
    form_client_id = request.form.get('client_id')
    if subject is None or (form_client_id and form_client_id != subject):
        return None, 'wrong_subject'
    client = ClientView.find(subject)
    keys = client_keys(client.jwks) if client is not None and client.uses_private_key_jwt else None
    token, failure = verified(assertion, keys)  # whoever it names, one signature check
    if client is None:
        return None, 'unknown_client'
    if keys is None:
        return None, 'assertion_from_secret_client'
    if token is None:
        return None, failure
    failure = check_claims(token.claims, subject)
    if failure:
        return None, failure
    if client.disabled:
        return None, 'client_disabled'
    if not remember_jti(subject, token.claims['jti'], token.claims['exp']):
        return None, 'replayed_jti'
    return client, ''


@functools.lru_cache(maxsize=1024)
def client_keys(jwks: str) -> KeySet:
    """A client's registered JWK Set, read once per process (and again when
    it changes: the text is the key), so that an assertion naming the
    client costs no more work than one naming nobody."""
    from joserfc.jwk import KeySet
    return KeySet.import_key_set(json.loads(jwks))


def verified(assertion: str, keys: KeySet | None) -> tuple[Token | None, str]:
    """(the assertion, "") if the client's key that its kid names signed it,
    else (None, why not). Without a kid, only a client with one key.

    Exactly one signature check, whoever the assertion names: with no key to
    check it with (an unknown client, a secret client, an unknown kid), a
    stand-in of the algorithm the header names takes the key's place, so
    that the time taken does not tell which (RFC 6749 §5.2's reasoning, as
    ClientView.authenticate hashes a dummy secret for an unknown client)."""
    header = unverified(assertion, 0)
    kid, key, failure = header.get('kid'), None, 'not_a_key_client'
    if keys is not None and kid is None:
        key, failure = (keys.keys[0], '') if len(keys.keys) == 1 else (None, 'kid_missing_among_several_keys')
    elif keys is not None:
        key = next((candidate for candidate in keys.keys if candidate.kid == kid), None)
        failure = '' if key is not None else 'unknown_kid'
    from joserfc import jwt
    from joserfc.errors import JoseError
    try:
        token = jwt.decode(assertion, key or stand_in_key(header.get('alg')), algorithms=SIGNING_ALGS)
    except (JoseError, ValueError):
        return None, failure or 'bad_signature'
    return (token, '') if key is not None else (None, failure)


def stand_in_key(alg: object) -> Key:
    """The stand-in that verified() checks a signature with when the client
    has no key to: one of the algorithm's own key type, of the usual size."""
    keys = stand_in_keys()
    return keys.get(alg if isinstance(alg, str) else '', keys['ES256'])


def check_claims(claims: dict, client_id: str) -> str:
    """RFC 7523 §3: "" when the claims are right, else what is wrong."""
    from joserfc.errors import ClaimError, ExpiredTokenError
    from joserfc.jwt import JWTClaimsRegistry
    registry = JWTClaimsRegistry(
        leeway=CLOCK_SKEW, iss={'essential': True, 'value': client_id}, sub={'essential': True, 'value': client_id},
        aud={'essential': True, 'values': audiences()}, exp={'essential': True}, jti={'essential': True})
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        return 'expired'
    except ClaimError as error:  # missing, or not the value it must be
        return f'{error.error}:{error.claim}'
    if claims['exp'] > time.time() + current_app.config['CLIENT_ASSERTION_MAX_LIFETIME']:
        return 'too_long_lived'
    return ''


def remember_jti(client_id: str, jti: str, exp: float) -> bool:
    """False if this client's jti was seen before; else keep it as long as
    check_claims accepts the assertion: CLOCK_SKEW past its exp, so that a
    replay after a purge is refused too."""
    expires = datetime.fromtimestamp(exp + CLOCK_SKEW, UTC)
    return replay.remember((client_id, jti), expires)
