"""The protected API: RFC 6750 bearer tokens, scopes and per-client resources."""
from datetime import timedelta

import pytest
from conftest import bearer, count

from models import Item, Token, db, utcnow

REALM = 'Bearer realm="client-credentials"'
DPOP = 'DPoP algs="RS256 ES256 EdDSA Ed25519"'  # RFC 9449 §7.2: beside Bearer's, without the error


def assert_invalid_token(response):
    assert response.status_code == 401
    assert response.get_json()['error'] == 'invalid_token'
    challenge = response.headers['WWW-Authenticate']
    assert challenge.startswith(REALM + ', error="invalid_token"')


def test_me_describes_the_calling_client(http, make_client, get_token):
    credentials = make_client('billing', 'read write')
    response = http.get('/api/me', headers=bearer(get_token(*credentials, scope='read')))
    assert response.status_code == 200
    assert response.get_json() == {'client_id': credentials[0], 'name': 'billing', 'scope': 'read'}


@pytest.mark.parametrize('headers', [{}, {'Authorization': 'Basic dXNlcjpwYXNz'}, {'Authorization': ''}])
def test_no_bearer_token_is_a_challenge_without_error_code(http, headers):
    response = http.get('/api/me', headers=headers)
    assert response.status_code == 401
    assert response.headers['WWW-Authenticate'] == f'{REALM}, {DPOP}'  # RFC 6750 §3.1: no error code
    assert response.mimetype == 'application/json'
    assert 'error' not in response.get_json()


def test_unknown_token_is_invalid_token(http, token):
    assert_invalid_token(http.get('/api/me', headers=bearer(token + 'x')))


@pytest.mark.parametrize('header', ['Bearer', 'Bearer ', 'Bearer a b', 'Bearer tok€n', 'Bearer "quoted"'])
def test_malformed_token_is_invalid_token(http, header):
    assert_invalid_token(http.get('/api/me', headers={'Authorization': header}))


def test_expired_token_is_invalid_token(http, token):
    stored = db.session.scalar(db.select(Token))
    stored.expires = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert_invalid_token(http.get('/api/me', headers=bearer(token)))


def test_scheme_is_case_insensitive(http, token):
    assert http.get('/api/me', headers={'Authorization': f'bearer {token}'}).status_code == 200


@pytest.mark.parametrize('where', ['query', 'form'])
def test_token_outside_the_header_is_refused(http, token, where):
    if where == 'query':
        response = http.get(f'/api/me?access_token={token}')
    else:
        response = http.post('/api/items', data={'access_token': token, 'name': 'x'})
    assert response.status_code == 400
    assert response.get_json()['error'] == 'invalid_request'
    assert count(Item) == 0


def test_read_token_cannot_write(http, credentials, get_token):
    response = http.post('/api/items', json={'name': 'x'},
                         headers=bearer(get_token(*credentials, scope='read')))
    assert response.status_code == 403
    assert response.get_json()['error'] == 'insufficient_scope'
    assert response.headers['WWW-Authenticate'].startswith(REALM + ', error="insufficient_scope"')
    assert response.headers['WWW-Authenticate'].endswith(f'scope="write", {DPOP}')
    assert count(Item) == 0


def test_write_token_cannot_read(http, credentials, get_token):
    response = http.get('/api/items', headers=bearer(get_token(*credentials, scope='write')))
    assert response.status_code == 403
    assert response.headers['WWW-Authenticate'].endswith(f'scope="read", {DPOP}')


def test_items_belong_to_their_client(http, make_client, get_token):
    alice = bearer(get_token(*make_client('alice')))
    bob = bearer(get_token(*make_client('bob')))
    created = http.post('/api/items', json={'name': 'alice: crème'}, headers=alice)
    assert created.status_code == 201
    item = created.get_json()
    assert item['name'] == 'alice: crème' and isinstance(item['id'], int)
    http.post('/api/items', json={'name': 'bob: brûlée'}, headers=bob)
    assert [i['name'] for i in http.get('/api/items', headers=alice).get_json()['items']] == ['alice: crème']
    assert [i['name'] for i in http.get('/api/items', headers=bob).get_json()['items']] == ['bob: brûlée']
    assert count(Item) == 2


def test_item_name_is_trimmed_and_may_be_200_characters(http, token):
    response = http.post('/api/items', json={'name': '  ' + 'n' * 200 + ' '}, headers=bearer(token))
    assert response.status_code == 201
    assert response.get_json()['name'] == 'n' * 200


@pytest.mark.parametrize('kwargs', [
    {'json': {}},
    {'json': {'name': ''}},
    {'json': {'name': '   '}},
    {'json': {'name': 'n' * 201}},
    {'json': {'name': 42}},
    {'json': {'name': None}},
    {'json': ['name']},
    {'json': 'name'},
    {'data': '{"name": ', 'content_type': 'application/json'},
    {'data': 'name=x', 'content_type': 'application/x-www-form-urlencoded'},
    {'data': b'\xff\xfe', 'content_type': 'application/json'},
])
def test_bad_item_bodies_are_400_and_store_nothing(http, token, kwargs):
    response = http.post('/api/items', headers=bearer(token), **kwargs)
    assert response.status_code == 400
    assert response.get_json()['error'] == 'invalid_request'
    assert count(Item) == 0


def test_json_nested_too_deeply_is_400_not_500(http, token):
    response = http.post('/api/items', data='[' * 20_000 + ']' * 20_000, content_type='application/json',
                         headers=bearer(token))
    assert response.status_code == 400
    assert response.get_json()['error'] == 'invalid_request'
    assert count(Item) == 0


def test_oversized_body_is_413_json(http, token):
    response = http.post('/api/items', json={'name': 'x' * 100_000}, headers=bearer(token))
    assert response.status_code == 413
    assert response.get_json()['error'] == 'invalid_request'
    assert count(Item) == 0


def test_wrong_method_is_json_405(http, token):
    response = http.delete('/api/items', headers=bearer(token))
    assert response.status_code == 405
    assert response.get_json()['error'] == 'invalid_request'
    assert set(response.headers['Allow'].split(', ')) >= {'GET', 'POST'}


@pytest.mark.parametrize('query', ['?a=%zz', '?a={}', '?a=<b>', '?a=\u00e9'])
def test_malformed_query_strings_are_400(http, token, query):
    response = http.get('/api/me' + query, headers=bearer(token))
    assert response.status_code == 400
    assert response.get_json()['error'] == 'invalid_request'


@pytest.mark.parametrize('name', ['nul\x00inside', 'line\nbreak', 'bell\x07', 'c1\x9bcsi', 'rtl\u202eoverride',
                                  'zero\u200bwidth', 'lone\ud800surrogate', 'line\u2028separator'])
def test_control_and_invisible_characters_in_a_name_are_refused(http, token, name):
    # The same rule as a client's name (models.check_name), on every database:
    # PostgreSQL cannot store NUL or a surrogate, and would answer a 5xx there.
    response = http.post('/api/items', json={'name': name}, headers=bearer(token))
    assert response.status_code == 400
    assert 'control characters' in response.get_json()['error_description']
    assert count(Item) == 0
