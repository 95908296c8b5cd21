"""DPoP (RFC 9449): tokens bound to a key the client holds.

The token endpoint binds a token to the key of a valid proof (§5, §6); each
check of §4.3 refuses a proof that fails it, with 400 invalid_dpop_proof,
never a 500; this server's routes take a bound token only with the DPoP
scheme and a proof of its key for that request (§7.1), never as Bearer
(§7.2); a proof is accepted once, even after a purge; nonces (§8, §9).
"""
import base64
import hashlib
import json
import re
import secrets
import time
from datetime import timedelta

import pytest
from conftest import TOKEN_URL, basic_header, bearer, count, token_form
from joserfc import jws, jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from models import Client, Token, db, utcnow
from production import admin_api, dpop
from production.housekeeping import purge_dead_rows
from production.replay import UsedJti

ISSUER = 'http://localhost'  # the test client's requests go to http://localhost/
TOKEN_ENDPOINT = f'{ISSUER}/oauth/token'
ALGS = 'RS256 ES256 EdDSA Ed25519'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def ath(access_token: str) -> str:
    return b64(hashlib.sha256(access_token.encode()).digest())


def default_alg(key) -> str:
    return {'EC': 'ES256', 'RSA': 'RS256', 'OKP': 'Ed25519', 'oct': 'HS256'}[key.key_type]


def proof(key, method='POST', url=TOKEN_ENDPOINT, access_token=None, header=None, claims=None, alg=None,
          jwk=None):
    """A DPoP proof signed with `key`; `header` and `claims` change or (with
    None) remove what a well-made proof carries."""
    alg = alg or default_alg(key)
    made_header = {'typ': 'dpop+jwt', 'alg': alg, 'jwk': jwk or key.as_dict(private=False)}
    made_claims = {'jti': secrets.token_urlsafe(16), 'htm': method, 'htu': url, 'iat': int(time.time())}
    if access_token is not None:
        made_claims['ath'] = ath(access_token)
    made_header.update(header or {})
    made_claims.update(claims or {})
    registry = JWSRegistry(algorithms=[alg], strict_check_header=False)
    return jwt.encode({k: v for k, v in made_header.items() if v is not None},
                      {k: v for k, v in made_claims.items() if v is not None}, key, registry=registry)


def unsigned(header: dict, claims: dict, signature: bytes = b'') -> str:
    """A JWS put together by hand, for what no library signs (alg none)."""
    return '.'.join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)])


@pytest.fixture
def key():
    return ECKey.generate_key('P-256')


def ask_token(http, credentials, *proofs, **form):
    return http.post(TOKEN_URL, data=token_form(*credentials, **form),
                     headers=[('DPoP', value) for value in proofs])


def bound_token(http, credentials, key, **form):
    answer = ask_token(http, credentials, proof(key), **form)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()['token_type'] == 'DPoP'
    return answer.get_json()['access_token']


def dpop_headers(key, access_token, method='GET', path='/api/me', **changes):
    return {'Authorization': f'DPoP {access_token}',
            'DPoP': proof(key, method, f'{ISSUER}{path}', access_token, **changes)}


def assert_refused_proof(response, status=400):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json().get('error') == 'invalid_dpop_proof'
    assert response.headers['Cache-Control'] == 'no-store'


# --- The token endpoint (§5) ----------------------------------------------


@pytest.mark.parametrize('token_format', ['opaque', 'jwt'])
def test_a_valid_proof_gets_a_token_bound_to_its_key(http, credentials, key, token_format, no_credentials_in_logs):
    Client.find(credentials[0]).token_format = token_format
    db.session.commit()
    sent = proof(key)
    answer = ask_token(http, credentials, sent)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body['token_type'] == 'DPoP'
    assert answer.headers['Cache-Control'] == 'no-store'
    jkt = key.thumbprint()  # RFC 7638, SHA-256
    assert db.session.scalar(db.select(Token.jkt)) == jkt
    if token_format == 'jwt':  # §6.1
        claims = json.loads(base64.urlsafe_b64decode(body['access_token'].split('.')[1] + '=='))
        assert claims['cnf'] == {'jkt': jkt}
    issued = [json.loads(line.split(' ', 2)[2]) for line in no_credentials_in_logs if '"event": "token_issued"' in line]
    assert [line['jkt'] for line in issued] == [jkt]
    assert not any(sent.split('.')[2] in line for line in no_credentials_in_logs)  # never the proof


def test_without_a_proof_a_client_gets_a_bearer_token_as_before(http, credentials):
    answer = ask_token(http, credentials)
    assert answer.get_json()['token_type'] == 'Bearer'
    assert db.session.scalar(db.select(Token.jkt)) is None


def test_a_client_registered_dpop_bound_must_send_a_proof(app, http, make_client, key):
    credentials = make_client()
    result = app.test_cli_runner().invoke(args=['update-client', credentials[0], '--dpop-bound'])
    assert result.exit_code == 0, result.output
    refused = ask_token(http, credentials)
    assert_refused_proof(refused)
    assert 'dpop_bound_access_tokens' in refused.get_json()['error_description']
    assert count(Token) == 0
    assert bound_token(http, credentials, key)
    assert app.test_cli_runner().invoke(args=['update-client', credentials[0], '--no-dpop-bound']).exit_code == 0
    assert ask_token(http, credentials).get_json()['token_type'] == 'Bearer'


def test_register_a_bound_client_on_the_command_line(app, http, key, no_credentials_in_logs):
    cli = app.test_cli_runner()
    created = cli.invoke(args=['create-client', 'bound', '--dpop-bound', '--json'])
    assert created.exit_code == 0, created.output
    created = json.loads(created.output)
    assert created['dpop_bound_access_tokens'] is True
    shown = cli.invoke(args=['show-client', created['client_id']])
    assert 'dpop_bound_access_tokens:    True' in shown.output
    audited = [json.loads(line.split(' ', 2)[2]) for line in no_credentials_in_logs if '"client_created"' in line]
    assert audited[-1]['dpop_bound_access_tokens'] is True
    credentials = created['client_id'], created['client_secret']
    assert_refused_proof(ask_token(http, credentials))
    assert bound_token(http, credentials, key)
    plain = json.loads(cli.invoke(args=['create-client', 'plain', '--json']).output)
    assert plain['dpop_bound_access_tokens'] is False


def test_register_and_change_a_bound_client_through_the_admin_api(http, make_client, get_token):
    headers = bearer(get_token(*make_client('provisioner', 'admin')))
    created = http.post('/admin/clients', json={'client_name': 'bound', 'dpop_bound_access_tokens': True},
                        headers=headers)
    assert created.status_code == 201 and created.get_json()['dpop_bound_access_tokens'] is True  # RFC 9449 §5.2
    client_id = created.get_json()['client_id']
    assert Client.find(client_id).dpop_bound_access_tokens is True
    changed = http.patch(f'/admin/clients/{client_id}', json={'dpop_bound_access_tokens': False}, headers=headers)
    assert changed.get_json()['dpop_bound_access_tokens'] is False
    for value in ('yes', 1, None):
        refused = http.patch(f'/admin/clients/{client_id}', json={'dpop_bound_access_tokens': value}, headers=headers)
        assert (refused.status_code, refused.get_json().get('error')) == (400, 'invalid_client_metadata'), value
    listed = http.get('/admin/clients', headers=headers).get_json()['clients']
    assert [client['dpop_bound_access_tokens'] for client in listed] == [False, False]


def test_a_proof_is_accepted_once_at_the_token_endpoint(http, credentials, key):
    sent = proof(key)
    assert ask_token(http, credentials, sent).status_code == 200
    assert_refused_proof(ask_token(http, credentials, sent))
    same_jti = proof(key, claims={'jti': json.loads(base64.urlsafe_b64decode(sent.split('.')[1] + '=='))['jti']})
    assert_refused_proof(ask_token(http, credentials, same_jti))
    assert count(Token) == 1


def test_a_proof_with_a_wrong_secret_is_still_invalid_client(http, credentials, key):
    # The proof does not authenticate the client (RFC 9449 §4): a good proof
    # with a wrong secret is refused, and spends no jti.
    assert http.post(TOKEN_URL, data=token_form(credentials[0], 'wrong'),
                     headers={'DPoP': proof(key)}).status_code == 401
    assert count(UsedJti) == 0


def test_the_metadata_names_the_proof_algorithms(http):
    metadata = http.get('/.well-known/oauth-authorization-server').get_json()
    assert metadata['dpop_signing_alg_values_supported'] == ALGS.split()  # RFC 9449 §5.1


# --- Every check of §4.3, at the token endpoint -----------------------------

# Made once: generating RSA keys is slow. Public halves, as a hostile proof carries them.
RSA_1024 = RSAKey.generate_key(1024)
RSA_2048 = RSAKey.generate_key(2048).as_dict(private=False)
RSA_EXPONENT_3 = {**RSA_2048, 'e': b64(b'\3')}
RSA_8192_BITS = {**RSA_2048, 'n': b64(b'\xff' * 1024)}


def signed_payload(key, payload: bytes) -> str:
    """A proof whose payload is `payload` as it stands, signed with `key`."""
    header = {'typ': 'dpop+jwt', 'alg': 'ES256', 'jwk': key.as_dict(private=False)}
    return jws.serialize_compact(header, payload, key, algorithms=['ES256'])


def hostile_proofs(key):
    """{what is wrong: (the proof, what the refusal says)}: each breaks one
    rule of RFC 9449 §4.2 and §4.3, and is refused for that rule."""
    other = ECKey.generate_key('P-256')
    now = int(time.time())
    public = key.as_dict(private=False)
    not_a_jwt, signature, stale = 'is not a JWT', 'signature does not verify', 'within 60 seconds'
    return {
        # step 2: one well-formed JWT
        'not a JWT': ('not-a-jwt', not_a_jwt),
        'two parts': (proof(key).rsplit('.', 1)[0], not_a_jwt),
        'a character outside base64url': (proof(key)[:-2] + 'é', not_a_jwt),
        'over 8 KiB': (proof(key, claims={'pad': 'x' * 9000}), not_a_jwt),
        'a header over 2 KiB': (proof(key, header={'x5t': 'a' * 2000}), 'header is over 2048 bytes'),
        'a header that is not JSON': ('bm90IGpzb24.' + proof(key).split('.', 1)[1], 'header is not a JSON object'),
        'claims that are not an object': (signed_payload(key, b'[1]'), 'claims are not a JSON object'),
        'claims nested too deeply': (signed_payload(key, b'[' * 2500 + b']' * 2500), 'claims are not a JSON object'),
        # step 3: the required claims
        **{f'no {claim}': (proof(key, claims={claim: None}), reason) for claim, reason in (
            ('jti', 'jti of 1 to'), ('htm', 'another HTTP method'), ('htu', 'another URI'), ('iat', stale))},
        # step 4: typ
        'no typ': (proof(key, header={'typ': None}), 'typ is dpop+jwt'),
        'typ JWT': (proof(key, header={'typ': 'JWT'}), 'typ is dpop+jwt'),
        'typ at+jwt': (proof(key, header={'typ': 'at+jwt'}), 'typ is dpop+jwt'),
        # step 5: an asymmetric algorithm of the list
        'alg none': (unsigned({'typ': 'dpop+jwt', 'alg': 'none', 'jwk': public},
                              {'jti': 'j', 'htm': 'POST', 'htu': TOKEN_ENDPOINT, 'iat': now}), not_a_jwt),
        'alg none with a signature': (unsigned({'typ': 'dpop+jwt', 'alg': 'none', 'jwk': public},
                                               {'jti': 'j', 'htm': 'POST', 'htu': TOKEN_ENDPOINT, 'iat': now},
                                               b'\0'), 'signed (alg)'),
        'alg HS256 with a symmetric jwk': (proof(OctKey.generate_key(256), alg='HS256',
                                                 jwk={'kty': 'oct', 'k': b64(b'k' * 32)}), 'signed (alg)'),
        'alg ES384': (proof(ECKey.generate_key('P-384'), alg='ES384'), 'signed (alg)'),
        'alg RS256 with an EC jwk': (unsigned({'typ': 'dpop+jwt', 'alg': 'RS256', 'jwk': public},
                                              {'jti': 'j', 'htm': 'POST', 'htu': TOKEN_ENDPOINT, 'iat': now},
                                              b'\1' * 256), 'carries a RSA key'),
        # step 6: the signature, with the key in the header
        'signed by another key': (proof(other, jwk=public), signature),
        'a payload changed after signing': (
            proof(key).split('.')[0] + '.' + proof(key, claims={'htm': 'GET'}).split('.')[1] + '.'
            + proof(key).split('.')[2], signature),
        # step 7: a public key, within the limits of a client's registered keys
        'a private key': (proof(key, jwk=key.as_dict(private=True)), 'private key'),
        'a symmetric key': (proof(key, jwk={'kty': 'oct', 'k': b64(b'k' * 32)}), 'only RSA, EC and OKP'),
        'no jwk': (proof(key, header={'jwk': None}), 'carries its public key'),
        'an RSA key of 1024 bits': (proof(RSA_1024), '2048 to 4096 bits'),
        'an RSA exponent of 3': (proof(key, jwk=RSA_EXPONENT_3), 'exponent'),
        'an RSA key of 8192 bits': (proof(key, jwk=RSA_8192_BITS), '2048 to 4096 bits'),
        'a P-384 key': (proof(key, jwk=ECKey.generate_key('P-384').as_dict(private=False)), 'P-256'),
        'a certificate chain': (proof(key, jwk={**public, 'x5c': ['MIIB']}), 'x5c'),
        'a key for encryption': (proof(key, jwk={**public, 'use': 'enc'}), "'use'"),
        'JWS extensions': (proof(key, header={'crit': ['kid'], 'kid': 'k1'}), 'JWS extension'),
        # step 8: htm
        'htm GET': (proof(key, 'GET'), 'another HTTP method'),
        'htm post': (proof(key, 'post'), 'another HTTP method'),
        # step 9: htu
        **{f'htu {case}': (proof(key, url=url), 'another URI') for case, url in (
            ('of another host', 'http://evil.example/oauth/token'),
            ('https', 'https://localhost/oauth/token'),
            ('of another port', 'http://localhost:8080/oauth/token'),
            ('of another path', f'{ISSUER}/oauth/revoke'),
            ('with a look-alike host', 'http://loca\u0131host/oauth/token'),  # dotless i
            ('with a fullwidth host', 'http://\uff4cocalhost/oauth/token'),
            ('with userinfo', 'http://user@localhost/oauth/token'),
            ('relative', '/oauth/token'),
            ('with an encoded NUL', f'{ISSUER}/oauth/token%00'),
            ('with a bad port', 'http://localhost:99999/oauth/token'),
            ('with bad UTF-8', f'{ISSUER}/oauth/%ff'))},
        'htu a number': (proof(key, claims={'htu': 1}), 'another URI'),
        # step 11: iat
        'iat too old': (proof(key, claims={'iat': now - 62}), stale),
        'iat in the future': (proof(key, claims={'iat': now + 60}), stale),
        'iat a string': (proof(key, claims={'iat': str(now)}), stale),
        'iat true': (proof(key, claims={'iat': True}), stale),
        'iat NaN': (signed_payload(key, b'{"jti":"j","htm":"POST","htu":"http://localhost/oauth/token","iat":NaN}'),
                    stale),
        # §11.1: a bounded jti
        'a jti of 257 characters': (proof(key, claims={'jti': 'j' * 257}), 'jti of 1 to'),
        'a jti that is a number': (proof(key, claims={'jti': 7}), 'jti of 1 to'),
    }


HOSTILE = list(hostile_proofs(ECKey.generate_key('P-256')))


@pytest.mark.parametrize('case', HOSTILE)
def test_a_proof_failing_a_check_is_refused_at_the_token_endpoint(http, credentials, key, case):
    sent, reason = hostile_proofs(key)[case]
    answer = ask_token(http, credentials, sent)
    assert_refused_proof(answer)
    assert reason in answer.get_json()['error_description']
    assert count(Token) == 0 and count(UsedJti) == 0


def test_an_htu_with_a_letter_that_lowercases_to_ascii_is_refused(app, http, credentials, key, monkeypatch):
    # U+212A KELVIN SIGN lowercases to "k". A URI is ASCII: no look-alike of
    # this server's name, made for another host, names it.
    monkeypatch.setitem(app.config, 'OAUTH2_ISSUER', 'http://kelvin.localhost')
    assert ask_token(http, credentials, proof(key, url='http://kelvin.localhost/oauth/token')).status_code == 200
    assert_refused_proof(ask_token(http, credentials, proof(key, url='http://\u212aelvin.localhost/oauth/token')))
    assert_refused_proof(ask_token(http, credentials, proof(key, url='http://KELVIN.localhost/oauth/t\u043eken')))


def test_two_dpop_headers_are_refused(http, credentials, key):  # §4.3 step 1
    for answer in (ask_token(http, credentials, proof(key), proof(key)),
                   ask_token(http, credentials, f'{proof(key)},{proof(key)}')):  # as a proxy may join them
        assert_refused_proof(answer)
        assert answer.get_json()['error_description'] == 'Send one DPoP header, not several.'
    assert count(Token) == 0


@pytest.mark.parametrize('case', [
    'RS256, 2048 bits', 'RS256, 4096 bits', 'Ed25519', 'EdDSA', 'key_ops, use and alg in the jwk',
    'typ application/dpop+jwt', 'htu with query and fragment', 'htu in upper case, default port, encoded path',
    'iat a little ahead', 'an extra header parameter and claim'])
def test_what_the_rfc_allows_is_accepted(http, credentials, key, case):
    rsa = RSAKey.generate_key(4096) if '4096' in case else RSAKey.generate_key(2048) if 'RS256' in case else None
    okp = OKPKey.generate_key('Ed25519')
    sent = {
        'RS256, 2048 bits': lambda: proof(rsa),
        'RS256, 4096 bits': lambda: proof(rsa),
        'Ed25519': lambda: proof(okp),
        'EdDSA': lambda: proof(okp, alg='EdDSA'),
        'key_ops, use and alg in the jwk': lambda: proof(key, jwk={**key.as_dict(private=False), 'key_ops': ['verify'],
                                                                   'use': 'sig', 'alg': 'ES256', 'kid': 'k1'}),
        'typ application/dpop+jwt': lambda: proof(key, header={'typ': 'application/DPoP+JWT'}),
        'htu with query and fragment': lambda: proof(key, url=f'{TOKEN_ENDPOINT}?x=1#top'),
        'htu in upper case, default port, encoded path': lambda: proof(key, url='HTTP://LocalHost:80/oauth/%74oken'),
        'iat a little ahead': lambda: proof(key, claims={'iat': int(time.time()) + 3}),
        'an extra header parameter and claim': lambda: proof(key, header={'kid': 'mine'}, claims={'extra': 1}),
    }[case]()
    if case.startswith('RS256'):
        assert len(sent.split('.')[0]) > 512  # over joserfc's default limit on a JWS header
    answer = ask_token(http, credentials, sent)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()['token_type'] == 'DPoP'


@pytest.mark.parametrize('seed', range(40))
def test_random_proof_damage_is_a_400_never_a_500(http, credentials, key, seed):
    import random
    rng = random.Random(seed)
    good = proof(key)
    damaged = list(good)
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(damaged))
        damaged[position] = rng.choice('AZaz09-_.=+/ \t"\\é\x00{}[],')
    answer = ask_token(http, credentials, ''.join(damaged))
    assert answer.status_code in (200, 400), answer.get_data(as_text=True)


# --- This server's API (§7) -------------------------------------------------

BODY = {'client_name': 'made-by-a-bound-token', 'name': 'made-by-a-bound-token'}


def routes(target):
    """(method, path) of every route of this server that takes a token: /api/* and /admin/*."""
    admin = [(method, '/admin/clients' + rule.replace('<client_id>', target))
             for rule, _, methods in admin_api.ROUTES for method in methods]
    return [('GET', '/api/me'), ('GET', '/api/items'), ('POST', '/api/items'), *admin]


def call(http, method, path, headers):
    return http.open(path, method=method, json=BODY, headers=headers)


@pytest.fixture
def admin(make_client):
    return make_client('provisioner', 'admin read write')


@pytest.fixture
def target(make_client):
    return make_client('target')[0]


@pytest.mark.parametrize('token_format', ['opaque', 'jwt'])
def test_a_bound_token_works_with_a_proof_of_its_key_on_every_route(http, admin, key, target, token_format):
    Client.find(admin[0]).token_format = token_format
    db.session.commit()
    access_token = bound_token(http, admin, key)
    for method, path in routes(target):
        if method == 'DELETE':
            continue  # it would delete the target the routes after it need
        answer = call(http, method, path, dpop_headers(key, access_token, method, path))
        assert answer.status_code in (200, 201), (method, path, answer.get_json())
    answer = call(http, 'DELETE', f'/admin/clients/{target}', dpop_headers(key, access_token, 'DELETE',
                                                                           f'/admin/clients/{target}'))
    assert answer.status_code == 204


def refusals(key, other, access_token, method, path):
    """(what is wrong, headers, status, error): each a way a bound token must not work."""
    good = dpop_headers(key, access_token, method, path)
    return [
        ('no proof', {'Authorization': f'DPoP {access_token}'}, 401, 'invalid_dpop_proof'),
        ('sent as Bearer', bearer(access_token), 401, 'invalid_token'),  # §7.2
        ('sent as Bearer with its proof', {**good, 'Authorization': f'Bearer {access_token}'}, 401, 'invalid_token'),
        ('a proof of another key', dpop_headers(other, access_token, method, path), 401, 'invalid_token'),
        ('a proof for another token', {**good, 'DPoP': proof(key, method, f'{ISSUER}{path}', 'another-token')},
         401, 'invalid_dpop_proof'),
        ('a proof without ath', {**good, 'DPoP': proof(key, method, f'{ISSUER}{path}')}, 401, 'invalid_dpop_proof'),
        ('a proof for another method', {**good, 'DPoP': proof(key, 'PUT', f'{ISSUER}{path}', access_token)},
         401, 'invalid_dpop_proof'),
        ('a proof for another path', {**good, 'DPoP': proof(key, method, f'{ISSUER}/api/elsewhere', access_token)},
         401, 'invalid_dpop_proof'),
        ('a proof for another host', {**good, 'DPoP': proof(key, method, f'http://api.example{path}', access_token)},
         401, 'invalid_dpop_proof'),
        ('a stale proof', {**good, 'DPoP': proof(key, method, f'{ISSUER}{path}', access_token,
                                                 claims={'iat': int(time.time()) - 120})}, 401, 'invalid_dpop_proof'),
    ]


def assert_challenge(answer, error, dpop_used):
    challenge = answer.headers['WWW-Authenticate']
    if dpop_used:  # §7.1: the DPoP challenge carries the error; Bearer's stands beside it
        assert challenge.startswith(f'DPoP error="{error}", error_description="')
        assert challenge.endswith(f'algs="{ALGS}", Bearer realm="client-credentials"')
    else:
        assert challenge.startswith(f'Bearer realm="client-credentials", error="{error}"')
        assert challenge.endswith(f', DPoP algs="{ALGS}"')
    assert re.fullmatch(CHALLENGES, challenge), challenge


# RFC 9110 §11.6.1: challenges, each a scheme and auth-params; RFC 6750 §3: a
# value is a quoted string of printable ASCII without " and \.
AUTH_PARAM = r'[a-z_]+="[\x20\x21\x23-\x5b\x5d-\x7e]*"'
CHALLENGE = rf'(Bearer|DPoP)(?: {AUTH_PARAM}(?:, {AUTH_PARAM})*)?'
CHALLENGES = rf'{CHALLENGE}(?:, {CHALLENGE})*'


@pytest.mark.parametrize('token_format', ['opaque', 'jwt'])
def test_a_bound_token_is_refused_without_a_proof_of_its_key_on_every_route(http, admin, key, target, token_format):
    Client.find(admin[0]).token_format = token_format
    db.session.commit()
    access_token = bound_token(http, admin, key)
    other = ECKey.generate_key('P-256')
    clients, items = count(Client), count(db.metadata.tables['items'])
    for method, path in routes(target):
        for case, headers, status, error in refusals(key, other, access_token, method, path):
            answer = call(http, method, path, headers)
            assert (answer.status_code, answer.get_json().get('error')) == (status, error), (case, method, path)
            assert_challenge(answer, error, dpop_used=headers['Authorization'].startswith('DPoP'))
    db.session.expire_all()
    assert (count(Client), count(db.metadata.tables['items'])) == (clients, items)  # nothing was done
    assert Client.find(target).name == 'target'


@pytest.mark.parametrize('case', HOSTILE)
def test_a_hostile_proof_at_the_api_is_a_401_never_a_500(http, credentials, key, case):
    access_token = bound_token(http, credentials, key)
    sent, _ = hostile_proofs(key)[case]
    answer = http.get('/api/me', headers={'Authorization': f'DPoP {access_token}', 'DPoP': sent})
    assert (answer.status_code, answer.get_json().get('error')) == (401, 'invalid_dpop_proof')
    assert_challenge(answer, 'invalid_dpop_proof', dpop_used=True)


def test_the_htu_is_the_issuers_whatever_the_host_header_says(app, http, credentials, key, monkeypatch):
    monkeypatch.setitem(app.config, 'OAUTH2_ISSUER', 'http://localhost')
    spoofed = {'Host': 'evil.example', 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'https'}
    for url in ('http://evil.example/oauth/token', 'https://evil.example/oauth/token'):
        answer = http.post(TOKEN_URL, data=token_form(*credentials), headers={**spoofed, 'DPoP': proof(key, url=url)})
        assert_refused_proof(answer)
    answer = http.post(TOKEN_URL, data=token_form(*credentials), headers={**spoofed, 'DPoP': proof(key)})
    assert answer.status_code == 200, answer.get_json()


def test_a_proof_is_accepted_once_at_the_api(http, credentials, key):
    access_token = bound_token(http, credentials, key)
    headers = dpop_headers(key, access_token)
    assert http.get('/api/me', headers=headers).status_code == 200
    replayed = http.get('/api/me', headers=headers)
    assert (replayed.status_code, replayed.get_json().get('error')) == (401, 'invalid_dpop_proof')
    assert http.get('/api/me', headers=dpop_headers(key, access_token)).status_code == 200  # a new proof


def test_an_unbound_token_is_refused_with_the_dpop_scheme(http, credentials, key):
    # §7.1: the proof's key must match the one the token is bound to: a
    # bearer token is bound to none, so a client that believes its token
    # is sender-constrained learns at once that it is not.
    access_token = ask_token(http, credentials).get_json()['access_token']
    answer = http.get('/api/me', headers=dpop_headers(key, access_token))
    assert (answer.status_code, answer.get_json().get('error')) == (401, 'invalid_token')
    assert_challenge(answer, 'invalid_token', dpop_used=True)
    assert http.get('/api/me', headers=bearer(access_token)).status_code == 200


def test_a_request_without_credentials_is_challenged_with_both_schemes(http):
    answer = http.get('/api/me')
    assert answer.headers['WWW-Authenticate'] == f'Bearer realm="client-credentials", DPoP algs="{ALGS}"'


def test_a_missing_scope_with_a_bound_token_is_403_in_the_dpop_challenge(http, make_client, key):
    credentials = make_client('reader', 'read')
    access_token = bound_token(http, credentials, key)
    answer = http.post('/api/items', json={'name': 'x'}, headers=dpop_headers(key, access_token, 'POST', '/api/items'))
    assert (answer.status_code, answer.get_json().get('error')) == (403, 'insufficient_scope')
    assert answer.headers['WWW-Authenticate'].startswith('DPoP error="insufficient_scope"')


STATES = ['revoked', 'expired', 'client disabled', 'scope narrowed', 'client deleted']


@pytest.mark.parametrize('token_format', ['opaque', 'jwt'])
@pytest.mark.parametrize('state', STATES)
def test_a_dead_bound_token_is_refused_on_every_route_even_with_its_proof(app, http, admin, key, target, state,
                                                                           token_format):
    Client.find(admin[0]).token_format = token_format
    db.session.commit()
    access_token = bound_token(http, admin, key)
    cli = app.test_cli_runner()
    if state == 'revoked':
        assert http.post('/oauth/revoke', data={'token': access_token}, headers=basic_header(*admin)).status_code == 200
    elif state == 'expired':
        db.session.execute(db.update(Token).values(expires=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    elif state == 'client disabled':
        assert cli.invoke(args=['disable-client', admin[0]]).exit_code == 0
    elif state == 'scope narrowed':
        assert cli.invoke(args=['update-client', admin[0], '--scope', 'read']).exit_code == 0
    else:
        assert cli.invoke(args=['delete-client', admin[0], '--yes']).exit_code == 0
    for method, path in routes(target):
        answer = call(http, method, path, dpop_headers(key, access_token, method, path))
        if state == 'scope narrowed' and (method, path) == ('GET', '/api/items'):
            assert answer.status_code == 200  # what it still has
        elif state == 'scope narrowed' and path != '/api/me':
            assert (answer.status_code, answer.get_json().get('error')) == (403, 'insufficient_scope'), (method, path)
        elif state != 'scope narrowed':
            assert (answer.status_code, answer.get_json().get('error')) == (401, 'invalid_token'), (method, path)
            assert_challenge(answer, 'invalid_token', dpop_used=True)


# --- Introspection and revocation (§6.2) ----------------------------------

def test_introspection_says_a_token_is_bound_and_to_which_key(http, credentials, key):
    access_token = bound_token(http, credentials, key)
    answer = http.post('/oauth/introspect', data={'token': access_token}, headers=basic_header(*credentials))
    assert answer.get_json()['token_type'] == 'DPoP'
    assert answer.get_json()['cnf'] == {'jkt': key.thumbprint()}
    unbound = ask_token(http, credentials).get_json()['access_token']
    answer = http.post('/oauth/introspect', data={'token': unbound}, headers=basic_header(*credentials)).get_json()
    assert answer['token_type'] == 'Bearer' and 'cnf' not in answer


def test_a_bound_token_is_revoked_as_any_other(http, credentials, key):
    access_token = bound_token(http, credentials, key)
    revoked = http.post('/oauth/revoke', data={'token': access_token}, headers=basic_header(*credentials))
    assert revoked.status_code == 200
    answer = http.post('/oauth/introspect', data={'token': access_token}, headers=basic_header(*credentials))
    assert answer.get_json() == {'active': False}


# --- The replay store (§11.1) -----------------------------------------------

def test_a_replay_right_after_a_purge_is_refused(app, http, credentials, key):
    # A proof is accepted DPOP_PROOF_MAX_AGE seconds after its iat, and up to
    # CLOCK_SKEW seconds early: its jti is kept until iat + both, so a purge
    # in between cannot open the door.
    access_token = bound_token(http, credentials, key)
    old = int(time.time()) - app.config['DPOP_PROOF_MAX_AGE'] + 1
    headers = dpop_headers(key, access_token, claims={'iat': old})
    assert http.get('/api/me', headers=headers).status_code == 200
    assert purge_dead_rows(batch=1000)['jtis'] == 0  # as the server purges, every PURGE_EVERY requests
    assert http.get('/api/me', headers=headers).status_code == 401


def test_used_jtis_are_kept_no_longer_than_a_proof_is_accepted(app, http, credentials, key, monkeypatch):
    monkeypatch.setitem(app.config, 'DPOP_PROOF_MAX_AGE', 1)
    access_token = bound_token(http, credentials, key)
    expires = db.session.scalar(db.select(UsedJti.expires))
    assert expires <= utcnow() + timedelta(seconds=1 + 5 + 1)  # iat + DPOP_PROOF_MAX_AGE + CLOCK_SKEW
    for _ in range(3):
        assert http.get('/api/me', headers=dpop_headers(key, access_token)).status_code == 200
    assert count(UsedJti) == 4
    db.session.execute(db.update(UsedJti).values(expires=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert app.test_cli_runner().invoke(args=['purge-tokens']).exit_code == 0
    assert count(UsedJti) == 0


def test_the_servers_own_housekeeping_deletes_expired_jtis(app, http, credentials, key, monkeypatch):
    access_token = bound_token(http, credentials, key)
    assert http.get('/api/me', headers=dpop_headers(key, access_token)).status_code == 200
    assert count(UsedJti) == 2
    db.session.execute(db.update(UsedJti).values(expires=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    monkeypatch.setitem(app.config, 'PURGE_EVERY', 1)  # after every request, as after every 1,000
    assert http.get('/healthz').status_code == 200
    assert count(UsedJti) == 0


def test_the_same_jti_from_another_key_is_its_own(http, credentials, key):
    other = ECKey.generate_key('P-256')
    assert ask_token(http, credentials, proof(key, claims={'jti': 'shared'})).status_code == 200
    assert ask_token(http, credentials, proof(other, claims={'jti': 'shared'})).status_code == 200


# --- Server nonces (§8, §9) -------------------------------------------------

@pytest.fixture
def nonces(app, monkeypatch):
    monkeypatch.setitem(app.config, 'DPOP_NONCE', True)
    monkeypatch.setitem(app.config, 'SECRET_KEY', 'test-secret-key')
    return app


def nonce_of(app, period_offset=0, secret=None):
    with app.test_request_context():
        if secret:
            app.config['SECRET_KEY'] = secret
        return dpop.nonce(dpop.current_period() + period_offset)


def test_with_nonces_on_the_token_endpoint_asks_for_one_then_accepts_it(nonces, http, credentials, key):
    refused = ask_token(http, credentials, proof(key))
    assert refused.status_code == 400 and refused.get_json().get('error') == 'use_dpop_nonce'  # §8
    given = refused.headers['DPoP-Nonce']
    assert count(UsedJti) == 0
    answer = ask_token(http, credentials, proof(key, claims={'nonce': given}))
    assert answer.status_code == 200, answer.get_json()
    assert answer.headers['DPoP-Nonce'] == given  # §8.2: the nonce for the next request


def test_with_nonces_on_the_api_asks_for_one_with_401(nonces, http, credentials, key):
    given = ask_token(http, credentials, proof(key)).headers['DPoP-Nonce']
    access_token = ask_token(http, credentials, proof(key, claims={'nonce': given})).get_json()['access_token']
    refused = http.get('/api/me', headers=dpop_headers(key, access_token))
    assert refused.status_code == 401  # §9
    assert refused.headers['WWW-Authenticate'].startswith('DPoP error="use_dpop_nonce"')
    assert refused.headers['DPoP-Nonce'] == given
    answer = http.get('/api/me', headers=dpop_headers(key, access_token, claims={'nonce': given}))
    assert answer.status_code == 200


@pytest.mark.parametrize('nonce', ['previous period', 'two periods ago', 'next period', 'another secret',
                                   'not NQCHAR', 'a number'])
def test_which_nonces_are_good(nonces, http, credentials, key, nonce):
    value = {'previous period': lambda: nonce_of(nonces, -1), 'two periods ago': lambda: nonce_of(nonces, -2),
             'next period': lambda: nonce_of(nonces, 1), 'another secret': lambda: nonce_of(nonces, 0, 'other'),
             'not NQCHAR': lambda: 'bad"nonce', 'a number': lambda: 5}[nonce]()
    nonces.config['SECRET_KEY'] = 'test-secret-key'
    answer = ask_token(http, credentials, proof(key, claims={'nonce': value}))
    if nonce == 'previous period':  # one given just before the period changed
        assert answer.status_code == 200, answer.get_json()
    else:
        assert (answer.status_code, answer.get_json().get('error')) == (400, 'use_dpop_nonce')


def test_without_nonces_no_nonce_is_sent_or_asked_for(http, credentials, key):
    answer = ask_token(http, credentials, proof(key))
    assert answer.status_code == 200 and 'DPoP-Nonce' not in answer.headers
