"""POST /oauth/revoke (RFC 7009): authenticated, own tokens only, effective at once."""
import pytest
from conftest import basic_header, bearer

from models import Token, db

REVOKE_URL = '/oauth/revoke'


def revoke(http, credentials, token, basic=False, **extra):
    form = {'token': token, **extra}
    if basic:
        return http.post(REVOKE_URL, data=form, headers=basic_header(*credentials))
    return http.post(REVOKE_URL, data={**form, 'client_id': credentials[0], 'client_secret': credentials[1]})


@pytest.mark.parametrize('basic', [False, True])
def test_revoked_token_stops_working_at_once(http, credentials, token, basic):
    assert http.get('/api/me', headers=bearer(token)).status_code == 200
    response = revoke(http, credentials, token, basic=basic)
    assert response.status_code == 200
    assert response.get_json() == {}
    assert response.headers['Cache-Control'] == 'no-store'
    refused = http.get('/api/me', headers=bearer(token))
    assert refused.status_code == 401 and refused.get_json()['error'] == 'invalid_token'
    db.session.expire_all()
    assert db.session.scalar(db.select(Token)).revoked_at is not None


def test_revoking_one_token_leaves_the_others(http, credentials, get_token):
    first, second = get_token(*credentials), get_token(*credentials)
    assert revoke(http, credentials, first).status_code == 200
    assert http.get('/api/me', headers=bearer(second)).status_code == 200


@pytest.mark.parametrize('hint', ['access_token', 'refresh_token', 'something_else'])
def test_token_type_hint_does_not_matter(http, credentials, token, hint):
    assert revoke(http, credentials, token, token_type_hint=hint).status_code == 200
    assert http.get('/api/me', headers=bearer(token)).status_code == 401


def test_unknown_and_already_revoked_tokens_answer_200(http, credentials, token):
    assert revoke(http, credentials, 'no-such-token').status_code == 200
    assert revoke(http, credentials, token).status_code == 200
    assert revoke(http, credentials, token).status_code == 200


def test_the_secret_is_checked(http, credentials, token):
    response = revoke(http, (credentials[0], 'wrong'), token)
    assert response.status_code == 401
    assert response.get_json()['error'] == 'invalid_client'
    assert response.headers['WWW-Authenticate'] == 'Basic realm="client-credentials"'
    response = http.post(REVOKE_URL, data={'token': token, 'client_id': credentials[0]})
    assert response.status_code == 401
    assert http.get('/api/me', headers=bearer(token)).status_code == 200


def test_a_client_cannot_revoke_another_clients_token(http, make_client, get_token):
    alice, bob = make_client('alice'), make_client('bob')
    alices_token = get_token(*alice)
    response = revoke(http, bob, alices_token)
    assert response.status_code == 400
    assert response.get_json()['error'] == 'invalid_grant'
    assert http.get('/api/me', headers=bearer(alices_token)).status_code == 200


def test_missing_token_parameter_is_invalid_request(http, credentials):
    response = http.post(REVOKE_URL, data={'client_id': credentials[0], 'client_secret': credentials[1]})
    assert response.status_code == 400
    assert response.get_json()['error'] == 'invalid_request'


@pytest.mark.parametrize('kwargs', [
    {'json': {'token': 'x'}},
    {'data': 'token=a&token=b', 'content_type': 'application/x-www-form-urlencoded'},
])
def test_malformed_revocation_requests_are_invalid_request(http, credentials, kwargs):
    response = http.post(REVOKE_URL, headers=basic_header(*credentials), **kwargs)
    assert response.status_code == 400
    assert response.get_json()['error'] == 'invalid_request'


def test_get_is_a_json_405(http):
    response = http.get(REVOKE_URL)
    assert response.status_code == 405 and response.get_json()['error'] == 'invalid_request'
