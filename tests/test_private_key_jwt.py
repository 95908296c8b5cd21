"""Client authentication with private_key_jwt (RFC 7523 §2.2): a good
assertion at each endpoint, each refusal one by one, replays across
workers, and key rotation without a failed request."""
import base64
import hashlib
import hmac
import json
import time

import pytest
import requests
from conftest import (
    SERVER_KINDS,
    TOKEN_URL,
    basic_header,
    bearer,
    empty_database,
    run_python,
    short_rsa_public_jwk,
)
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from client import ApiClient, PrivateKey
from models import Client, db
from production.client_assertions import ASSERTION_TYPE
from production.housekeeping import purge_dead_rows
from production.replay import UsedJti

TOKEN_ENDPOINT = 'http://localhost/oauth/token'  # as the test client's requests reach it
ISSUER = 'http://localhost'


def public_jwks(*keys):
    return json.dumps({'keys': [key.as_dict(private=False, kid=key.kid or key.thumbprint()) for key in keys]})


def new_key(kind='EC', kid=None):
    key = {'EC': lambda: ECKey.generate_key('P-256'), 'RSA': lambda: RSAKey.generate_key(2048),
           'OKP': lambda: OKPKey.generate_key('Ed25519')}[kind]()
    if kid:
        key = type(key).import_key(key.as_dict(private=True), {'kid': kid})
    return key


@pytest.fixture
def register(app):
    """register(*keys, name=...) -> client_id of a private_key_jwt client, through the CLI."""
    def make(*keys, name='signer', tmp=None):
        path = app.instance_path + f'/jwks-{time.monotonic_ns()}.json'
        import os
        os.makedirs(app.instance_path, exist_ok=True)
        with open(path, 'w') as file:
            file.write(public_jwks(*keys))
        try:
            result = app.test_cli_runner().invoke(args=['create-client', name, '--auth-method', 'private_key_jwt',
                                                        '--jwks', path, '--json'])
        finally:
            os.remove(path)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)['client_id']
    return make


ALGS = {'EC': 'ES256', 'RSA': 'RS256', 'OKP': 'Ed25519'}


def assertion(client_id, key, alg=None, header=None, drop=(), **claims):
    now = int(time.time())
    body = {'iss': client_id, 'sub': client_id, 'aud': TOKEN_ENDPOINT, 'iat': now, 'exp': now + 60,
            'jti': f'jti-{time.monotonic_ns()}', **claims}
    for name in drop:
        body.pop(name)
    alg = alg or ALGS[key.key_type]
    head = {'alg': alg, 'kid': key.kid or key.thumbprint(), **(header or {})}
    head = {name: value for name, value in head.items() if value is not None}
    return jwt.encode(head, body, key, algorithms=[alg])


def with_assertion(signed, **extra):
    return {'client_assertion_type': ASSERTION_TYPE, 'client_assertion': signed, **extra}


def ask_token(http, signed, **extra):
    return http.post(TOKEN_URL, data={'grant_type': 'client_credentials', **with_assertion(signed, **extra)})


def refused(response):
    return (response.status_code, response.get_json(), response.headers.get('WWW-Authenticate'))


REFUSED = (401, {'error': 'invalid_client'}, 'Basic realm="client-credentials"')


@pytest.mark.parametrize('kind', ['EC', 'RSA', 'OKP'])
def test_a_good_assertion_gets_a_token(http, register, kind):
    key = new_key(kind)
    client_id = register(key)
    response = ask_token(http, assertion(client_id, key))
    assert response.status_code == 200, response.get_json()
    token = response.get_json()['access_token']
    me = http.get('/api/me', headers=bearer(token)).get_json()
    assert me['client_id'] == client_id


def test_the_issuer_is_an_audience_too(http, register):
    key = new_key()
    client_id = register(key)
    assert ask_token(http, assertion(client_id, key, aud=ISSUER)).status_code == 200
    assert ask_token(http, assertion(client_id, key, aud=[ISSUER, 'https://other.example'])).status_code == 200


def test_revocation_and_introspection_take_assertions(http, register):
    key = new_key()
    client_id = register(key)
    token = ask_token(http, assertion(client_id, key)).get_json()['access_token']
    introspected = http.post('/oauth/introspect', data={'token': token, **with_assertion(assertion(client_id, key))})
    assert introspected.status_code == 200 and introspected.get_json()['active'] is True
    assert introspected.get_json()['client_id'] == client_id
    revoked = http.post('/oauth/revoke', data={'token': token, **with_assertion(assertion(client_id, key))})
    assert revoked.status_code == 200
    again = http.post('/oauth/introspect', data={'token': token, **with_assertion(assertion(client_id, key))})
    assert again.get_json() == {'active': False}
    # And a bad assertion is refused there as at the token endpoint.
    stranger = new_key()
    for path in ('/oauth/revoke', '/oauth/introspect'):
        answer = http.post(path, data={'token': token, **with_assertion(assertion(client_id, stranger))})
        assert answer.status_code == 401 and answer.get_json()['error'] == 'invalid_client'


def test_an_assertion_without_a_kid_needs_a_client_with_one_key(http, register, no_credentials_in_logs):
    # One signature check per assertion, whatever it says: without a kid,
    # there must be a single key to check it with (RFC 7515 §4.1.4).
    single = new_key()
    assert ask_token(http, assertion(register(single), single, header={'kid': None})).status_code == 200
    first, second = new_key(), new_key()
    client_id = register(first, second, name='two-keys')
    assert refused(ask_token(http, assertion(client_id, first, header={'kid': None}))) == REFUSED
    assert refused(ask_token(http, assertion(client_id, second, header={'kid': None}))) == REFUSED
    assert ask_token(http, assertion(client_id, second)).status_code == 200  # with its kid


# --- Refusals, one by one -------------------------------------------------


def test_a_replayed_jti_is_refused(http, register, no_credentials_in_logs):
    key = new_key()
    client_id = register(key)
    signed = assertion(client_id, key, jti='once-only')
    assert ask_token(http, signed).status_code == 200
    assert refused(ask_token(http, signed)) == REFUSED
    assert refused(ask_token(http, assertion(client_id, key, jti='once-only'))) == REFUSED  # a new one, same jti
    assert any('"reason": "replayed_jti"' in line for line in no_credentials_in_logs)
    assert db.session.scalar(db.select(db.func.count(UsedJti.key))) == 1


def test_a_replay_right_after_a_purge_is_refused(http, register):
    # An assertion is accepted up to CLOCK_SKEW seconds past its exp, so its
    # jti is kept that much longer than exp: a purge cannot open the door.
    key = new_key()
    client_id = register(key)
    signed = assertion(client_id, key, exp=int(time.time()) - 1)
    assert ask_token(http, signed).status_code == 200
    assert purge_dead_rows(batch=1000)['jtis'] == 0  # as the server purges, every PURGE_EVERY requests
    assert refused(ask_token(http, signed)) == REFUSED


def test_an_unexpired_jti_survives_every_purge_and_its_replay_is_refused(app, http, register):
    # A jti is kept until its assertion's exp (plus CLOCK_SKEW), not until
    # it was used: neither the server's batch purge nor purge-tokens frees it.
    key = new_key()
    client_id = register(key)
    signed = assertion(client_id, key, exp=int(time.time()) + 60)
    assert ask_token(http, signed).status_code == 200
    assert purge_dead_rows(batch=1000)['jtis'] == 0  # as the server purges, every PURGE_EVERY requests
    assert refused(ask_token(http, signed)) == REFUSED
    assert app.test_cli_runner().invoke(args=['purge-tokens']).exit_code == 0
    assert db.session.scalar(db.select(db.func.count(UsedJti.key))) == 1
    assert refused(ask_token(http, signed)) == REFUSED


def test_the_same_jti_of_another_client_is_its_own(http, register):
    one, other = new_key(), new_key()
    first, second = register(one, name='one'), register(other, name='other')
    assert ask_token(http, assertion(first, one, jti='shared')).status_code == 200
    assert ask_token(http, assertion(second, other, jti='shared')).status_code == 200


@pytest.mark.parametrize(('change', 'reason'), [
    ({'exp': int(time.time()) - 60}, 'expired'),
    ({'exp': int(time.time()) + 3600}, 'too_long_lived'),
    ({'aud': 'https://other.example/oauth/token'}, 'invalid_claim:aud'),
    ({'aud': 'http://localhost/oauth/revoke'}, 'invalid_claim:aud'),
], ids=['expired', 'too-long-lived', 'wrong-aud', 'another-endpoint-aud'])
def test_wrong_claims_are_refused(http, register, no_credentials_in_logs, change, reason):
    key = new_key()
    client_id = register(key)
    assert refused(ask_token(http, assertion(client_id, key, **change))) == REFUSED
    assert any(f'"reason": "{reason}"' in line for line in no_credentials_in_logs)


@pytest.mark.parametrize('claim', ['exp', 'jti', 'aud', 'iss'])
def test_a_missing_claim_is_refused(http, register, claim):
    key = new_key()
    client_id = register(key)
    assert refused(ask_token(http, assertion(client_id, key, drop=(claim,)))) == REFUSED


def test_wrong_iss_or_sub_is_refused(http, register):
    key, other_key = new_key(), new_key()
    client_id, other = register(key), register(other_key, name='other')
    assert refused(ask_token(http, assertion(client_id, key, iss=other))) == REFUSED
    assert refused(ask_token(http, assertion(client_id, key, sub=other))) == REFUSED
    assert refused(ask_token(http, assertion(client_id, key), client_id=other)) == REFUSED


def test_an_unknown_kid_is_refused(http, register):
    key = new_key()
    client_id = register(key)
    assert refused(ask_token(http, assertion(client_id, key, header={'kid': 'not-registered'}))) == REFUSED


def test_the_key_of_another_client_is_refused(http, register):
    mine, theirs = new_key(), new_key()
    client_id = register(mine)
    register(theirs, name='other')
    assert refused(ask_token(http, assertion(client_id, theirs))) == REFUSED
    # Even under my key's kid.
    assert refused(ask_token(http, assertion(client_id, theirs, header={'kid': mine.thumbprint()}))) == REFUSED


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def test_alg_none_is_refused(http, register):
    key = new_key()
    client_id = register(key)
    header, claims, _ = assertion(client_id, key).split('.')
    header = b64(json.dumps({'alg': 'none', 'kid': key.thumbprint()}).encode())
    assert refused(ask_token(http, f'{header}.{claims}.')) == REFUSED


def test_hs256_keyed_with_the_public_key_is_refused(http, register):
    key = new_key('RSA')
    client_id = register(key)
    _, claims, _ = assertion(client_id, key).split('.')
    for secret in (key.as_pem(private=False), json.dumps(key.as_dict(private=False)).encode()):
        header = b64(json.dumps({'alg': 'HS256', 'kid': key.thumbprint()}).encode())
        signature = hmac.new(secret, f'{header}.{claims}'.encode(), hashlib.sha256).digest()
        assert refused(ask_token(http, f'{header}.{claims}.{b64(signature)}')) == REFUSED


def test_a_secret_from_a_key_client_is_refused(http, register, app):
    key = new_key()
    client_id = register(key)
    client = Client.find(client_id)
    client.set_secret('known-secret')  # even if it somehow had one
    client.token_endpoint_auth_method = 'private_key_jwt'
    db.session.commit()
    form = {'grant_type': 'client_credentials', 'client_id': client_id, 'client_secret': 'known-secret'}
    assert refused(http.post(TOKEN_URL, data=form)) == REFUSED


def test_an_assertion_from_a_secret_client_is_refused(http, make_client):
    client_id, _ = make_client()
    key = new_key()
    Client.find(client_id).jwks = public_jwks(key)  # keys it may hold, but it was registered for a secret
    db.session.commit()
    assert refused(ask_token(http, assertion(client_id, key))) == REFUSED


def test_a_disabled_key_client_is_refused(http, register):
    key = new_key()
    client_id = register(key)
    Client.find(client_id).disable()
    db.session.commit()
    assert refused(ask_token(http, assertion(client_id, key))) == REFUSED


@pytest.fixture
def work_done(monkeypatch):
    """The costly steps of checking assertions, in order (each real step runs):
    ('signature', key type) for a signature check, ('key set',) for reading a JWK Set."""
    done = []
    decode, import_key_set = jwt.decode, KeySet.import_key_set

    def check_signature(value, key, *args, **kwargs):
        done.append(('signature', key.key_type))
        return decode(value, key, *args, **kwargs)

    def read_key_set(cls, value, *args, **kwargs):
        done.append(('key set',))
        return import_key_set(value, *args, **kwargs)
    monkeypatch.setattr(jwt, 'decode', check_signature)
    monkeypatch.setattr(KeySet, 'import_key_set', classmethod(read_key_set))
    return done


@pytest.mark.parametrize('kind', ['EC', 'RSA', 'OKP'])
def test_an_assertion_costs_one_signature_check_whoever_it_names(http, register, make_client, work_done, kind):
    # As an unknown client costs one hash like a wrong secret (test_rules.py),
    # an assertion's time must not tell whether its client exists, nor how
    # it authenticates: each costs one check with a key of its algorithm.
    key, first, second, stranger = (new_key(kind) for _ in range(4))
    key_client, two_keys, secret_client = register(key), register(first, second, name='two'), make_client()[0]
    work_done.clear()  # registering read the keys too
    for client_id, signer in ((key_client, key), (two_keys, first)):
        assert ask_token(http, assertion(client_id, signer)).status_code == 200
    # A client's key set is read once per process (here, just now).
    assert work_done == [('key set',), ('signature', kind), ('key set',), ('signature', kind)]
    for client_id, kid in (('no-such-client', key.thumbprint()), (secret_client, key.thumbprint()),
                           (key_client, key.thumbprint()), (key_client, 'no-such-kid'), (two_keys, None),
                           (key_client, None)):
        work_done.clear()
        assert refused(ask_token(http, assertion(client_id, stranger, header={'kid': kid}))) == REFUSED
        assert work_done == [('signature', kind)], (client_id, kid)


def test_a_disabled_key_client_can_neither_introspect_nor_revoke(http, register):
    # The token endpoint refuses it twice over (no token is stored for a
    # disabled client); these two endpoints have only the authentication.
    key = new_key()
    client_id = register(key)
    token = ask_token(http, assertion(client_id, key)).get_json()['access_token']
    Client.find(client_id).disable()
    db.session.commit()
    for path in ('/oauth/introspect', '/oauth/revoke'):
        assert refused(http.post(path, data={'token': token, **with_assertion(assertion(client_id, key))})) == REFUSED


def test_malformed_assertions_are_refused_not_500(http, register):
    key = new_key()
    client_id = register(key)
    for garbage in ('', 'x', 'a.b', 'a.b.c', '...', 'eyJhbGciOiJFUzI1NiJ9.e30.', assertion(client_id, key)[:-10]):
        answer = ask_token(http, garbage)
        assert answer.status_code in (400, 401), (garbage, answer.status_code)
        assert answer.get_json()['error'] in ('invalid_request', 'invalid_client')


def test_claims_nested_too_deeply_are_invalid_client_not_500(http):
    # Python's JSON parser gives up on deep nesting with a RecursionError,
    # which reached the client as a 500 before any signature was checked.
    nested = base64.urlsafe_b64encode(b'{"sub": ' + b'[' * 20000 + b']' * 20000 + b'}').rstrip(b'=').decode()
    answer = ask_token(http, f'eyJhbGciOiJFUzI1NiJ9.{nested}.AAAA')
    assert (answer.status_code, answer.get_json().get('error')) == (401, 'invalid_client')


def test_one_authentication_method_at_a_time(http, register):
    key = new_key()
    client_id = register(key)
    signed = assertion(client_id, key)
    both = ask_token(http, signed, client_secret='anything')
    assert both.status_code == 400 and both.get_json()['error'] == 'invalid_request'
    basic = http.post(TOKEN_URL, data={'grant_type': 'client_credentials', **with_assertion(signed)},
                      headers=basic_header(client_id, 'anything'))
    assert basic.status_code == 400 and basic.get_json()['error'] == 'invalid_request'
    half = http.post(TOKEN_URL, data={'grant_type': 'client_credentials', 'client_assertion': signed})
    assert half.status_code == 400 and half.get_json()['error'] == 'invalid_request'
    wrong_type = ask_token(http, signed, client_assertion_type='urn:example:saml')
    assert refused(wrong_type) == REFUSED


def test_failed_assertions_count_toward_the_brute_force_limit(http, register):
    key, stranger = new_key(), new_key()
    client_id = register(key)
    for _ in range(5):  # AUTH_FAILURES_PER_CLIENT_ADDRESS: 5 per minute
        assert ask_token(http, assertion(client_id, stranger)).status_code == 401
    throttled = ask_token(http, assertion(client_id, key))
    assert throttled.status_code == 429 and 'Retry-After' in throttled.headers


# --- Registration ----------------------------------------------------------


def test_show_client_names_the_method_and_the_kids(app, register):
    key = new_key(kid='2026-11')
    client_id = register(key)
    shown = json.loads(app.test_cli_runner().invoke(args=['show-client', client_id, '--json']).output)
    assert shown['token_endpoint_auth_method'] == 'private_key_jwt' and shown['key_ids'] == ['2026-11']
    assert 'client_secret' not in shown


def test_create_client_prints_no_secret_for_a_key_client(app, tmp_path):
    path = tmp_path / 'jwks.json'
    path.write_text(public_jwks(new_key()))
    result = app.test_cli_runner().invoke(args=['create-client', 'k', '--auth-method', 'private_key_jwt',
                                                '--jwks', str(path)])
    assert result.exit_code == 0 and 'client_secret' not in result.output and 'key_ids:' in result.output


SHORT_KEY_WARNING = pytest.mark.filterwarnings('ignore:Key size should be')  # joserfc's, as the key is read


@pytest.mark.parametrize(('document', 'says'), [
    ('not json', 'not JSON'),
    ('{"keys": []}', 'non-empty'),
    (json.dumps({'keys': [{'kty': 'oct', 'k': 'c2VjcmV0'}]}), 'only RSA, EC and OKP'),
    ('PRIVATE', 'private key'),
    (json.dumps({'keys': [{'kty': 'EC', 'crv': 'P-256', 'x': 'AA', 'y': 'AA'}]}), 'cannot be read'),
    (json.dumps({'keys': [{**new_key('RSA').as_dict(private=False), 'e': 'Aw'}]}), 'must be 65537'),
    pytest.param('SHORT-RSA', 'must have 2048 to 4096 bits', marks=SHORT_KEY_WARNING),
], ids=['not-json', 'empty', 'symmetric', 'private', 'broken', 'rsa-exponent', 'rsa-1024'])
def test_a_bad_jwks_is_refused_in_one_line(app, tmp_path, document, says):
    if document == 'PRIVATE':
        document = json.dumps({'keys': [new_key().as_dict(private=True)]})
    if document == 'SHORT-RSA':
        document = json.dumps({'keys': [short_rsa_public_jwk()]})
    path = tmp_path / 'jwks.json'
    path.write_text(document)
    result = app.test_cli_runner().invoke(args=['create-client', 'k', '--auth-method', 'private_key_jwt',
                                                '--jwks', str(path)])
    assert result.exit_code == 2 and says in result.output and 'Traceback' not in result.output
    assert len(result.output.strip().splitlines()[-1]) < 200 and 'Error:' in result.output.strip().splitlines()[-1]
    assert db.session.scalar(db.select(db.func.count(Client.id))) == 0


def test_method_and_keys_go_together(app, tmp_path, credentials):
    path = tmp_path / 'jwks.json'
    path.write_text(public_jwks(new_key()))
    runner = app.test_cli_runner()
    assert runner.invoke(args=['create-client', 'k', '--auth-method', 'private_key_jwt']).exit_code == 2
    assert runner.invoke(args=['create-client', 'k', '--jwks', str(path)]).exit_code == 2
    secret_client = runner.invoke(args=['update-client', credentials[0], '--jwks', str(path)])
    assert secret_client.exit_code == 2 and 'authenticates with a secret' in secret_client.output


def test_a_key_client_has_no_secret_to_rotate(app, register):
    client_id = register(new_key())
    result = app.test_cli_runner().invoke(args=['rotate-secret', client_id])
    assert result.exit_code == 1 and 'update-client --jwks' in result.output


def test_rotating_keys_by_adding_then_removing_fails_no_request(app, http, register, tmp_path):
    old, new = new_key(), new_key()
    client_id = register(old)
    runner = app.test_cli_runner()

    def set_keys(*keys):
        path = tmp_path / f'jwks-{time.monotonic_ns()}.json'
        path.write_text(public_jwks(*keys))
        assert runner.invoke(args=['update-client', client_id, '--jwks', str(path)]).exit_code == 0

    assert ask_token(http, assertion(client_id, old)).status_code == 200
    set_keys(old, new)  # 1. register the new key beside the old
    assert ask_token(http, assertion(client_id, old)).status_code == 200  # instances not yet switched
    assert ask_token(http, assertion(client_id, new)).status_code == 200  # instances switched
    set_keys(new)  # 2. once every instance signs with the new key, drop the old
    assert ask_token(http, assertion(client_id, new)).status_code == 200
    assert refused(ask_token(http, assertion(client_id, old))) == REFUSED


def test_metadata_lists_private_key_jwt(http):
    metadata = http.get('/.well-known/oauth-authorization-server').get_json()
    for endpoint in ('token_endpoint', 'revocation_endpoint', 'introspection_endpoint'):
        assert 'private_key_jwt' in metadata[f'{endpoint}_auth_methods_supported']
        algs = metadata[f'{endpoint}_auth_signing_alg_values_supported']
        assert {'RS256', 'ES256', 'EdDSA'} <= set(algs) and not any(a.startswith('HS') or a == 'none' for a in algs)


def test_expired_assertion_ids_are_purged(app, http, register):
    key = new_key()
    client_id = register(key)
    # Accepted 3 s past its exp (CLOCK_SKEW is 5 s), so kept 2 s more.
    assert ask_token(http, assertion(client_id, key, exp=int(time.time()) - 3)).status_code == 200
    time.sleep(3)
    assert app.test_cli_runner().invoke(args=['purge-tokens']).exit_code == 0
    assert db.session.scalar(db.select(db.func.count(UsedJti.key))) == 0


# --- client.py -------------------------------------------------------------


def test_client_module_signs_a_fresh_assertion_per_request(live_server, register):
    private_pem, _ = PrivateKey.generate('ES256')
    key = ECKey.import_key(private_pem)
    client_id = register(key)
    api = ApiClient(live_server, client_id, private_key=private_pem)
    assert api.me()['client_id'] == client_id
    token = api.auth.access_token
    assert api.introspect(token)['active'] is True  # a second assertion, with its own jti
    api.revoke()
    assert db.session.scalar(db.select(db.func.count(UsedJti.key))) == 3


def test_client_script_make_key_then_authenticate(app, live_server, tmp_path, capsys):
    import client as client_module
    key_path = tmp_path / 'client-key.pem'
    assert client_module.main(['make-key', str(key_path), '--alg', 'RS256']) == 0
    jwks = capsys.readouterr().out
    assert 'PRIVATE' not in jwks and '"d"' not in jwks
    assert oct(key_path.stat().st_mode & 0o777) == '0o600'
    assert client_module.main(['make-key', str(key_path)]) == 1  # never overwrites a key
    assert 'cannot create' in capsys.readouterr().err
    (tmp_path / 'jwks.json').write_text(jwks)
    created = app.test_cli_runner().invoke(args=['create-client', 'svc', '--auth-method', 'private_key_jwt',
                                                 '--jwks', str(tmp_path / 'jwks.json'), '--json'])
    client_id = json.loads(created.output)['client_id']
    args = ['--server', live_server, '--client-id', client_id, '--private-key', str(key_path)]
    assert client_module.main(args) == 0
    assert json.loads(capsys.readouterr().out)['client_id'] == client_id
    assert client_module.main([*args[:4], '--private-key', str(tmp_path / 'missing.pem')]) == 1
    assert capsys.readouterr().err.startswith('client.py: cannot read ')


# --- Several workers --------------------------------------------------------


@pytest.fixture(params=SERVER_KINDS)
def database_url(request, tmp_path):
    return empty_database(request, tmp_path, request.param)


def test_a_replay_is_refused_by_another_worker_too(database_url, start_gunicorn, tmp_path):
    key = new_key()
    jwks_path = tmp_path / 'jwks.json'
    jwks_path.write_text(public_jwks(key))
    env = {'FLASK_OAUTH2_ISSUER': 'https://auth.test'}
    # Two app servers of two workers on one database: a replay sent to the
    # other server is sure to reach another process.
    first, second = (start_gunicorn(database_url, workers=2, **env) for _ in range(2))
    created = run_python('-m', 'flask', '--app', 'server', 'create-client', 'signer', '--auth-method',
                         'private_key_jwt', '--jwks', str(jwks_path), '--json',
                         env={'DATABASE_URL': database_url, **env})
    assert created.returncode == 0, created.stderr
    client_id = json.loads(created.stdout)['client_id']
    signed = jwt.encode({'alg': 'ES256', 'kid': key.thumbprint()},
                        {'iss': client_id, 'sub': client_id, 'aud': 'https://auth.test/oauth/token',
                         'exp': int(time.time()) + 60, 'jti': 'replayed-across-workers'}, key, algorithms=['ES256'])
    form = {'grant_type': 'client_credentials', **with_assertion(signed)}
    # A new connection each time, so that each server's workers take turns.
    answers = [requests.post(f'{server.url}/oauth/token', data=form, timeout=10).status_code
               for server in (first, second, first, second, first, second)]
    assert answers == [200, 401, 401, 401, 401, 401]
