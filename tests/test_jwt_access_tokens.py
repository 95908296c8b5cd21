"""JWT access tokens (RFC 9068): what they hold, that this server's API
takes only the ones it issued (the stored row, as for an opaque token), what
it refuses, revocation, and key rotation."""
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
    bearer,
    create_client,
    empty_database,
    run_python,
    statements_run,
    token_form,
)
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from models import Client, db
from production.signing_keys import SigningKey, key_ring

ISSUER = 'http://localhost'  # the test client's requests go to http://localhost/
OWN_API = 'http://localhost/api'


def token_response(http, client_id, client_secret, **extra):
    response = http.post(TOKEN_URL, data=token_form(client_id, client_secret, **extra))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def jwt_token(http, jwt_client):
    return token_response(http, *jwt_client)['access_token']


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def segments(token):
    return [json.loads(base64.urlsafe_b64decode(part + '=' * (-len(part) % 4))) for part in token.split('.')[:2]]


def jwks(http) -> KeySet:
    response = http.get('/.well-known/jwks.json')
    assert response.status_code == 200
    return KeySet.import_key_set(response.get_json())


def refused(http, access_token):
    response = http.get('/api/me', headers=bearer(access_token))
    return (response.status_code, response.get_json().get('error'),
            'error="invalid_token"' in response.headers.get('WWW-Authenticate', ''))


REFUSED = (401, 'invalid_token', True)


def test_a_jwt_holds_the_claims_of_rfc_9068(http, jwt_client):
    answer = token_response(http, *jwt_client, scope='read')
    header, claims = segments(answer['access_token'])
    assert header.get('typ') == 'at+jwt' and header.get('alg') == 'ES256'  # RFC 9068 §2.1
    assert header['kid'] in [key.kid for key in jwks(http).keys]
    assert claims['iss'] == ISSUER
    assert claims['sub'] == claims['client_id'] == jwt_client[0]
    assert claims['aud'] == OWN_API and claims['scope'] == 'read'
    assert claims['exp'] - claims['iat'] == answer['expires_in'] == 3600
    assert abs(claims['iat'] - time.time()) < 5 and len(claims['jti']) >= 16
    # Anyone with the published keys verifies it, with a JOSE library of their own.
    verified = jwt.decode(answer['access_token'], jwks(http), algorithms=['ES256'])
    assert verified.claims == claims


def test_every_jwt_has_its_own_jti(http, jwt_client):
    jtis = {segments(token_response(http, *jwt_client)['access_token'])[1]['jti'] for _ in range(5)}
    assert len(jtis) == 5


def test_the_token_format_is_per_client_with_a_server_default(app, http, make_client, monkeypatch):
    default, opaque = make_client('default'), make_client('opaque')
    Client.find(opaque[0]).token_format = 'opaque'
    db.session.commit()
    assert token_response(http, *default)['access_token'].count('.') == 0
    monkeypatch.setitem(app.config, 'ACCESS_TOKEN_FORMAT', 'jwt')
    assert token_response(http, *default)['access_token'].count('.') == 2
    assert token_response(http, *opaque)['access_token'].count('.') == 0


def test_a_clients_own_lifetime_is_the_jwts(http, jwt_client):
    Client.find(jwt_client[0]).token_lifetime = 120
    db.session.commit()
    answer = token_response(http, *jwt_client)
    _, claims = segments(answer['access_token'])
    assert answer['expires_in'] == claims['exp'] - claims['iat'] == 120


def test_the_api_reads_a_jwt_from_the_database_as_an_opaque_token(app, http, jwt_client, jwt_token,
                                                                  credentials, get_token):
    # This server's own routes take the stored row, which revocation, a
    # disabled client and a narrowed scope change at once (docs/security.md).
    for token in (jwt_token, get_token(*credentials)):
        http.get('/api/me', headers=bearer(token))  # this process has read whatever it caches
        with statements_run() as statements:
            response = http.get('/api/me', headers=bearer(token))
        assert response.status_code == 200
        assert sum('from tokens' in statement for statement in statements) == 1  # one lookup
    assert http.get('/api/me', headers=bearer(jwt_token)).get_json() == {
        'client_id': jwt_client[0], 'name': 'service', 'scope': 'read write'}


def test_scopes_of_a_jwt_guard_the_routes(http, jwt_client):
    read_only = token_response(http, *jwt_client, scope='read')['access_token']
    assert http.get('/api/items', headers=bearer(read_only)).status_code == 200
    response = http.post('/api/items', json={'name': 'x'}, headers=bearer(read_only))
    assert response.status_code == 403 and response.get_json()['error'] == 'insufficient_scope'
    both = token_response(http, *jwt_client)['access_token']
    created = http.post('/api/items', json={'name': 'pens'}, headers=bearer(both))
    assert created.status_code == 201
    assert http.get('/api/items', headers=bearer(read_only)).get_json()['items'] == [created.get_json()]


def test_a_jwt_whose_client_was_deleted_is_refused(http, jwt_client, jwt_token):
    db.session.delete(Client.find(jwt_client[0]))
    db.session.commit()
    assert refused(http, jwt_token) == REFUSED
    for method, path in (('get', '/api/items'), ('post', '/api/items')):
        response = getattr(http, method)(path, json={'name': 'x'}, headers=bearer(jwt_token))
        assert response.status_code == 401 and response.get_json()['error'] == 'invalid_token'


# --- Refusals, one by one -------------------------------------------------
# Forgeries and tampered tokens: none of them was issued, so none is stored.


def forge(jwt_client, key=None, drop=(), **changes):
    """A token shaped as the server makes them, signed with its own key
    unless `key` is given; `changes` replace claims (header ones prefixed h_)."""
    alg, server_key = key_ring().signing_key()
    now = int(time.time())
    header = {'typ': 'at+jwt', 'alg': alg, 'kid': server_key.kid}
    claims = {'iss': ISSUER, 'exp': now + 600, 'iat': now, 'jti': 'forged-jti-0000', 'sub': jwt_client[0],
              'client_id': jwt_client[0], 'aud': OWN_API, 'scope': 'read write'}
    for name, value in changes.items():
        (header if name.startswith('h_') else claims)[name.removeprefix('h_')] = value
    for name in drop:
        header.pop(name, None)
        claims.pop(name, None)
    return jwt.encode(header, claims, key or server_key, algorithms=[header['alg']])


def test_a_token_signed_with_the_servers_key_but_never_issued_is_refused(http, jwt_client, jwt_token):
    # forge() makes a token a local verifier accepts (an API elsewhere, with
    # the published keys); this server's API takes only the tokens it stored.
    forged = forge(jwt_client)
    assert jwt.decode(forged, jwks(http), algorithms=['ES256']).claims['client_id'] == jwt_client[0]
    assert refused(http, forged) == REFUSED
    assert refused(http, forge(('no-such-client',))) == REFUSED


def test_alg_none_is_refused(http, jwt_client, jwt_token):
    header, claims = segments(forge(jwt_client))
    unsigned = f'{b64(json.dumps({**header, "alg": "none"}).encode())}.{b64(json.dumps(claims).encode())}.'
    assert refused(http, unsigned) == REFUSED


def test_hmac_keyed_with_the_public_key_is_refused(http, jwt_client, jwt_token):
    # The classic confusion attack: HS256 with the public key as the secret.
    public = next(iter(jwks(http).keys))
    header, claims = segments(forge(jwt_client))
    for secret in (public.as_pem(private=False), json.dumps(public.as_dict()).encode()):
        signing_input = f'{b64(json.dumps({**header, "alg": "HS256"}).encode())}.{b64(json.dumps(claims).encode())}'
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert refused(http, f'{signing_input}.{b64(signature)}') == REFUSED


def test_an_unknown_kid_is_refused(http, jwt_client, jwt_token):
    stranger = ECKey.generate_key('P-256', private=True)
    assert refused(http, forge(jwt_client, key=stranger, h_kid='no-such-key')) == REFUSED
    assert refused(http, forge(jwt_client, drop=('kid',))) == REFUSED


def test_another_key_under_the_servers_kid_is_refused(http, jwt_client, jwt_token):
    stranger = ECKey.generate_key('P-256', private=True)
    assert refused(http, forge(jwt_client, key=stranger)) == REFUSED


def test_a_tampered_payload_is_refused(http, jwt_client):
    token = token_response(http, *jwt_client, scope='read')['access_token']
    header, _, signature = token.split('.')
    claims = segments(token)[1]
    wider = b64(json.dumps({**claims, 'scope': 'read write'}).encode())
    assert refused(http, f'{header}.{wider}.{signature}') == REFUSED
    assert http.get('/api/me', headers=bearer(token)).status_code == 200


@pytest.mark.parametrize('changes', [
    {'iss': 'https://evil.example'},
    {'aud': 'https://another-api.example'},
    {'exp': int(time.time()) - 60},
    {'h_typ': 'JWT'},
], ids=['wrong-iss', 'wrong-aud', 'expired', 'not-at+jwt'])
def test_wrong_claims_are_refused(http, jwt_client, jwt_token, changes):
    assert refused(http, forge(jwt_client, **changes)) == REFUSED


@pytest.mark.parametrize('claim', ['exp', 'iss', 'aud', 'client_id'])
def test_a_missing_claim_is_refused(http, jwt_client, jwt_token, claim):
    assert refused(http, forge(jwt_client, drop=(claim,))) == REFUSED


def test_garbage_that_looks_like_a_jwt_is_refused(http, jwt_client, jwt_token):
    for garbage in ('a.b.c', 'eyJ.eyJ.x', '...', f'{jwt_token[:-4]}.x.y'):
        assert refused(http, garbage)[:2] == (401, 'invalid_token')


def test_an_expired_jwt_from_the_server_is_refused(http, jwt_client):
    Client.find(jwt_client[0]).token_lifetime = 1
    db.session.commit()
    token = token_response(http, *jwt_client)['access_token']
    assert http.get('/api/me', headers=bearer(token)).status_code == 200
    time.sleep(2)  # its lifetime: the stored expiry, which no leeway extends
    assert refused(http, token) == REFUSED


# --- Revocation and introspection ----------------------------------------


def introspect(http, credentials, access_token):
    return http.post('/oauth/introspect', data={'token': access_token, 'client_id': credentials[0],
                                                'client_secret': credentials[1]}).get_json()


def test_introspecting_a_jwt(http, jwt_client, jwt_token):
    answer = introspect(http, jwt_client, jwt_token)
    claims = segments(jwt_token)[1]
    assert answer == {'active': True, 'client_id': jwt_client[0], 'scope': 'read write', 'token_type': 'Bearer',
                      'exp': claims['exp'], 'iat': claims['iat'], 'aud': OWN_API}


def test_a_revoked_jwt_is_refused_here_at_once_but_verifies_elsewhere_until_exp(http, jwt_client, jwt_token):
    revoked = http.post('/oauth/revoke', data={'token': jwt_token, 'client_id': jwt_client[0],
                                               'client_secret': jwt_client[1]})
    assert revoked.status_code == 200
    assert introspect(http, jwt_client, jwt_token) == {'active': False}
    assert refused(http, jwt_token) == REFUSED
    # The trade-off docs/jwt.md states: an API that verifies locally cannot know.
    assert jwt.decode(jwt_token, jwks(http), algorithms=['ES256']).claims['client_id'] == jwt_client[0]


def test_a_forged_jwt_is_unknown_to_introspection(http, jwt_client, jwt_token):
    assert introspect(http, jwt_client, forge(jwt_client)) == {'active': False}


# --- Keys: publication, rotation, storage ---------------------------------


def test_the_metadata_names_the_jwks(http):
    metadata = http.get('/.well-known/oauth-authorization-server').get_json()
    assert metadata['jwks_uri'] == 'http://localhost/.well-known/jwks.json'


def test_the_jwks_holds_public_keys_only(http, jwt_token):
    response = http.get('/.well-known/jwks.json')
    assert response.status_code == 200 and response.mimetype == 'application/json'
    keys = response.get_json()['keys']
    assert len(keys) == 1
    assert keys[0]['kty'] == 'EC' and keys[0]['alg'] == 'ES256' and keys[0]['use'] == 'sig'
    assert not {'d', 'p', 'q', 'dp', 'dq', 'qi'} & set(keys[0])
    assert db.session.scalar(db.select(db.func.count(SigningKey.id))) == 1  # made for the first JWT


def rotate(app, *args):
    result = app.test_cli_runner().invoke(args=['rotate-signing-key', *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_rotation_keeps_live_tokens_working(app, http, jwt_client, jwt_token):
    old_kid = segments(jwt_token)[0]['kid']
    output = rotate(app)
    new_token = token_response(http, *jwt_client)['access_token']
    new_kid = segments(new_token)[0]['kid']
    assert new_kid != old_kid and new_kid in output
    assert {key.kid for key in jwks(http).keys} == {old_kid, new_kid}
    for token in (jwt_token, new_token):
        assert http.get('/api/me', headers=bearer(token)).status_code == 200
        assert jwt.decode(token, jwks(http), algorithms=['ES256']).claims['client_id'] == jwt_client[0]
    # The old key stays published as long as a token it signed can live, and
    # one a process signs from its cache (SIGNING_KEY_CACHE_SECONDS).
    old = db.session.scalar(db.select(SigningKey).filter_by(kid=old_kid))
    assert (old.publish_until - old.retired_at).total_seconds() == 3600 + 60


def test_a_retired_key_goes_once_its_tokens_have_expired(app, http, jwt_client, jwt_token):
    old_kid = segments(jwt_token)[0]['kid']
    rotate(app)
    assert old_kid in {key.kid for key in jwks(http).keys}
    old = db.session.scalar(db.select(SigningKey).filter_by(kid=old_kid))
    old.publish_until = old.retired_at  # as if its last token expired
    db.session.commit()
    assert old_kid not in {key.kid for key in jwks(http).keys}  # at once: the JWKS keeps no copy
    with pytest.raises(JoseError):  # an API that verifies with the published keys refuses its tokens
        jwt.decode(jwt_token, jwks(http), algorithms=['ES256'])


def test_purge_tokens_deletes_the_keys_no_longer_published(app, http, jwt_client, jwt_token):
    old_kid = segments(jwt_token)[0]['kid']
    rotate(app)
    rotate(app)
    middle = db.session.scalars(db.select(SigningKey).order_by(SigningKey.id)).all()[1]
    old = db.session.scalar(db.select(SigningKey).filter_by(kid=old_kid))
    old.publish_until = old.retired_at
    db.session.commit()
    result = app.test_cli_runner().invoke(args=['purge-tokens'])
    assert result.exit_code == 0 and 'and 1 retired signing key(s)' in result.output
    db.session.expire_all()
    left = db.session.scalars(db.select(SigningKey.kid).order_by(SigningKey.id)).all()
    assert len(left) == 2 and old_kid not in left and middle.kid in left  # still published, still there


def test_rotation_to_rs256(app, http, jwt_client):
    rotate(app, '--alg', 'RS256')
    token = token_response(http, *jwt_client)['access_token']
    assert segments(token)[0]['alg'] == 'RS256'
    assert http.get('/api/me', headers=bearer(token)).status_code == 200
    assert jwt.decode(token, jwks(http), algorithms=['RS256']).claims['client_id'] == jwt_client[0]


def test_list_signing_keys_never_shows_a_private_key(app, http, jwt_client, jwt_token):
    rotate(app)
    runner = app.test_cli_runner()
    shown = runner.invoke(args=['list-signing-keys', '--json'])
    keys = json.loads(shown.output)
    assert [key['retired_at'] is None for key in keys] == [False, True]
    stored = db.session.scalars(db.select(SigningKey.private_pem).where(SigningKey.private_pem.is_not(None))).all()
    outputs = shown.output + runner.invoke(args=['list-signing-keys']).output + rotate(app)
    assert 'PRIVATE' not in outputs and not any(pem in outputs for pem in stored)


def test_private_keys_are_encrypted_with_the_passphrase(app, http, jwt_client, monkeypatch):
    monkeypatch.setitem(app.config, 'SIGNING_KEY_PASSPHRASE', 'correct horse battery staple')
    rotate(app)
    newest = db.session.scalars(db.select(SigningKey).order_by(SigningKey.id.desc())).first()
    assert newest.private_pem.startswith('-----BEGIN ENCRYPTED PRIVATE KEY-----')
    token = token_response(http, *jwt_client)['access_token']
    assert segments(token)[0]['kid'] == newest.kid
    assert http.get('/api/me', headers=bearer(token)).status_code == 200


def test_a_wrong_passphrase_is_a_503_and_one_log_line_not_a_500(app, http, jwt_client, make_client, monkeypatch,
                                                                 caplog):
    monkeypatch.setitem(app.config, 'SIGNING_KEY_PASSPHRASE', 'the right one')
    rotate(app)
    key_ring().forget()
    monkeypatch.setitem(app.config, 'SIGNING_KEY_PASSPHRASE', 'a wrong one')
    response = http.post(TOKEN_URL, data=token_form(*jwt_client))
    assert response.status_code == 503 and response.get_json()['error'] == 'temporarily_unavailable'
    assert response.headers['Retry-After'] == '60'
    assert [r.getMessage() for r in caplog.records if r.levelname == 'ERROR'] == [
        f'cannot decrypt JWT signing key {next(iter(jwks(http).keys)).kid}: '
        'FLASK_SIGNING_KEY_PASSPHRASE is missing or wrong']
    assert http.get('/.well-known/jwks.json').status_code == 200  # the public keys need no passphrase
    assert token_response(http, *make_client())['access_token'].count('.') == 0  # opaque tokens still work


def test_without_a_passphrase_the_development_server_stores_the_key_plain_and_warns(app, http, jwt_client,
                                                                                    monkeypatch, caplog):
    monkeypatch.setitem(app.config, 'SIGNING_KEY_PASSPHRASE', '')
    monkeypatch.setitem(app.config, 'DEVELOPMENT_SERVER', True)  # as python server.py sets it
    token_response(http, *jwt_client)
    assert db.session.scalar(db.select(SigningKey.private_pem)).startswith('-----BEGIN PRIVATE KEY-----')
    assert [r.getMessage() for r in caplog.records if r.levelname == 'WARNING'] == [
        'JWT signing keys are stored unencrypted: set FLASK_SIGNING_KEY_PASSPHRASE']


# --- Several workers and app servers on one database -----------------------


@pytest.fixture(params=SERVER_KINDS)
def database_url(request, tmp_path):
    return empty_database(request, tmp_path, request.param)


def test_workers_and_app_servers_agree_on_the_keys(database_url, start_gunicorn):
    # Two app servers of two workers each, one database; production names the
    # issuer, so that a token is the same wherever it is verified.
    env = {'FLASK_ACCESS_TOKEN_FORMAT': 'jwt', 'FLASK_OAUTH2_ISSUER': 'https://auth.test',
           'FLASK_SIGNING_KEY_CACHE_SECONDS': '1', 'FLASK_TOKENS_PER_CLIENT': '"1000000 per minute"'}
    first = start_gunicorn(database_url, workers=2, **env)
    second = start_gunicorn(database_url, workers=2, **env)
    credentials = create_client(database_url)

    def new_token(server):  # a new connection each time, so every worker takes turns
        answer = requests.post(f'{server.url}/oauth/token', data=token_form(*credentials), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()['access_token']

    def accepted(server, access_token):
        return requests.get(f'{server.url}/api/me', headers=bearer(access_token), timeout=10).status_code == 200

    tokens = [new_token(server) for server in (first, second) for _ in range(10)]
    kids = {segments(token)[0]['kid'] for token in tokens}
    assert len(kids) == 1  # one signing key, though four processes started at once
    assert all(accepted(server, token) for server in (first, second) for token in tokens)
    published = [requests.get(f'{server.url}/.well-known/jwks.json', timeout=10).json()
                 for server in (first, second) for _ in range(4)]
    assert all(keys == published[0] for keys in published) and len(published[0]['keys']) == 1

    rotated = run_python('-m', 'flask', '--app', 'server', 'rotate-signing-key',
                         env={'DATABASE_URL': database_url, **env})
    assert rotated.returncode == 0, rotated.stderr
    # Every process signs with the new key within SIGNING_KEY_CACHE_SECONDS.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = [new_token(server) for server in (first, second) for _ in range(6)]
        if not kids & {segments(token)[0]['kid'] for token in new}:
            break
        time.sleep(0.3)
    new_kids = {segments(token)[0]['kid'] for token in new}
    assert len(new_kids) == 1 and not new_kids & kids
    # Tokens of both keys work everywhere, and verify with every server's
    # published keys: the old key is still published.
    assert all(accepted(server, token) for server in (first, second) for token in tokens[::5] + new)
    for server in (first, second):
        keys = KeySet.import_key_set(requests.get(f'{server.url}/.well-known/jwks.json', timeout=10).json())
        assert all(jwt.decode(token, keys, algorithms=['ES256']) for token in tokens[::5] + new)


# joserfc and cryptography (11 MiB a process) load on first use: the script
# prints whether they are loaded after a secret client's opaque token and
# its API call, then after a JWT.
FIRST_USE = """
import sys
import server
from models import Client, db
loaded = lambda: str('joserfc' in sys.modules and 'cryptography' in sys.modules)
http = server.app.test_client()
http.get('/api/me')  # the first request brings the schema up to date
with server.app.app_context():
    opaque, opaque_secret = Client.create('opaque', 'read')
    jwt_client, jwt_secret = Client.create('jwt', 'read')
    jwt_client.token_format = 'jwt'
    db.session.commit()
    ids = opaque.client_id, jwt_client.client_id
form = {'grant_type': 'client_credentials', 'client_id': ids[0], 'client_secret': opaque_secret}
token = http.post('/oauth/token', data=form).get_json()['access_token']
me = http.get('/api/me', headers={'Authorization': 'Bearer ' + token})
print(me.status_code, loaded())
form = {'grant_type': 'client_credentials', 'client_id': ids[1], 'client_secret': jwt_secret}
answer = http.post('/oauth/token', data=form)
print(answer.status_code, loaded())
"""


def test_a_server_loads_joserfc_only_when_a_client_first_needs_a_jwt(tmp_path):
    result = run_python('-c', FIRST_USE, env={'DATABASE_URL': f'sqlite:///{tmp_path}/first-use.sqlite',
                                              'FLASK_SIGNING_KEY_PASSPHRASE': 'a passphrase for this test'})
    assert result.stdout.split() == ['200', 'False', '200', 'True'], result.stderr[-2000:]
