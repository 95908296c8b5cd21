"""POST /oauth/introspect (RFC 7662) and the metadata document (RFC 8414)."""
import time
from datetime import timedelta

import pytest
from conftest import basic_header

from models import Token, db, utcnow

INTROSPECT_URL = '/oauth/introspect'
INACTIVE = {'active': False}


def introspect(http, credentials, token, **extra):
    return http.post(INTROSPECT_URL, data={'token': token, **extra}, headers=basic_header(*credentials))


def test_a_client_introspects_its_own_token(http, credentials, get_token):
    before = int(time.time())
    token = get_token(*credentials, scope='read')
    response = introspect(http, credentials, token)
    assert response.status_code == 200
    assert response.headers['Cache-Control'] == 'no-store'
    claims = response.get_json()
    assert set(claims) == {'active', 'client_id', 'scope', 'token_type', 'exp', 'iat', 'aud'}
    assert claims['active'] is True
    assert claims['aud'] == 'http://localhost/api'  # RFC 8707: this server's own API
    assert claims['client_id'] == credentials[0]
    assert claims['scope'] == 'read'
    assert claims['token_type'] == 'Bearer'
    assert before - 1 <= claims['iat'] <= time.time() + 1
    assert claims['exp'] - claims['iat'] == 3600


def test_post_authentication_works_too(http, credentials, token):
    response = http.post(INTROSPECT_URL, data={'token': token, 'client_id': credentials[0],
                                               'client_secret': credentials[1]})
    assert response.get_json()['active'] is True


def test_another_clients_token_is_inactive_without_the_introspect_scope(http, make_client, get_token):
    alice, bob = make_client('alice'), make_client('bob')
    assert introspect(http, bob, get_token(*alice)).get_json() == INACTIVE


def test_a_resource_server_with_introspect_scope_sees_every_token(http, make_client, get_token):
    alice = make_client('alice')
    resource_server = make_client('resource-server', 'introspect', grant_types='')
    claims = introspect(http, resource_server, get_token(*alice)).get_json()
    assert claims['active'] is True and claims['client_id'] == alice[0]


@pytest.mark.parametrize('state', ['unknown', 'expired', 'revoked', 'disabled'])
def test_dead_tokens_are_exactly_inactive(http, make_client, get_token, state):
    owner = make_client('owner')
    resource_server = make_client('rs', 'introspect')
    token = get_token(*owner)
    stored = db.session.scalar(db.select(Token))
    if state == 'unknown':
        token += 'x'
    elif state == 'expired':
        stored.expires = utcnow() - timedelta(seconds=1)
    elif state == 'revoked':
        Token.revoke_where(Token.id == stored.id)
    else:
        stored.client.disable()
    db.session.commit()
    for caller in (owner, resource_server):
        if state == 'disabled' and caller is owner:
            continue  # a disabled client cannot authenticate at all
        response = introspect(http, caller, token)
        assert response.status_code == 200
        assert response.get_json() == INACTIVE


def test_introspection_needs_client_authentication(http, credentials, token):
    for headers in ({}, basic_header(credentials[0], 'wrong')):
        response = http.post(INTROSPECT_URL, data={'token': token}, headers=headers)
        assert response.status_code == 401
        assert response.get_json()['error'] == 'invalid_client'
        assert response.headers['WWW-Authenticate'] == 'Basic realm="client-credentials"'


def test_missing_token_is_invalid_request(http, credentials):
    response = http.post(INTROSPECT_URL, data={}, headers=basic_header(*credentials))
    assert response.status_code == 400 and response.get_json()['error'] == 'invalid_request'


def test_narrowing_a_client_narrows_its_live_tokens(http, credentials, token):
    stored = db.session.scalar(db.select(Token))
    stored.client.scope = 'read'
    db.session.commit()
    assert introspect(http, credentials, token).get_json()['scope'] == 'read'
    headers = {'Authorization': f'Bearer {token}'}
    assert http.post('/api/items', json={'name': 'x'}, headers=headers).status_code == 403
    assert http.get('/api/me', headers=headers).get_json()['scope'] == 'read'


# RFC 8414 §2: required fields, and the ones for what this server does.
REQUIRED = {'issuer', 'token_endpoint', 'response_types_supported'}


def test_metadata_document(http):
    response = http.get('/.well-known/oauth-authorization-server')
    assert response.status_code == 200 and response.mimetype == 'application/json'
    metadata = response.get_json()
    assert set(metadata) >= REQUIRED
    assert metadata['issuer'] == 'http://localhost'
    assert metadata['token_endpoint'] == 'http://localhost/oauth/token'
    assert metadata['revocation_endpoint'] == 'http://localhost/oauth/revoke'
    assert metadata['introspection_endpoint'] == 'http://localhost/oauth/introspect'
    assert metadata['grant_types_supported'] == ['client_credentials']
    assert metadata['response_types_supported'] == []
    assert metadata['scopes_supported'] == ['read', 'write', 'introspect', 'admin']
    for key in ('token_endpoint', 'revocation_endpoint', 'introspection_endpoint'):
        assert metadata[f'{key}_auth_methods_supported'] == ['client_secret_basic', 'client_secret_post',
                                                             'private_key_jwt']
    # §2: the issuer has no query or fragment; every endpoint lives under it.
    assert '?' not in metadata['issuer'] and '#' not in metadata['issuer']


def test_metadata_endpoints_answer_where_they_say(http):
    metadata = http.get('/.well-known/oauth-authorization-server').get_json()
    for key in ('token_endpoint', 'revocation_endpoint', 'introspection_endpoint'):
        path = metadata[key].removeprefix(metadata['issuer'])
        assert http.post(path, data={}).status_code in (400, 401)


def test_configured_issuer(app, http, monkeypatch):
    monkeypatch.setitem(app.config, 'OAUTH2_ISSUER', 'https://auth.example.com/')
    metadata = http.get('/.well-known/oauth-authorization-server').get_json()
    assert metadata['issuer'] == 'https://auth.example.com'
    assert metadata['token_endpoint'] == 'https://auth.example.com/oauth/token'
