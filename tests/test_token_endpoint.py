"""POST /oauth/token: the client credentials grant, RFC 6749 §4.4, §5.1, §5.2."""
import base64

import pytest
from conftest import TOKEN_URL, basic_header, bearer, count, token_form

from models import Client, Token, db


def assert_error(response, status, error):
    assert response.status_code == status
    assert response.mimetype == 'application/json'
    assert response.get_json()['error'] == error
    assert response.headers['Cache-Control'] == 'no-store'


def test_post_credentials_issue_a_bearer_token(http, credentials):
    response = http.post(TOKEN_URL, data=token_form(*credentials))
    assert response.status_code == 200
    assert response.mimetype == 'application/json'
    assert response.headers['Cache-Control'] == 'no-store'
    assert response.headers['Pragma'] == 'no-cache'
    body = response.get_json()
    assert set(body) == {'access_token', 'token_type', 'expires_in', 'scope'}  # no refresh_token
    assert body['token_type'] == 'Bearer'
    assert body['expires_in'] == 3600
    assert body['scope'] == 'read write'
    assert len(body['access_token']) >= 30
    assert count(Token) == 1


def test_basic_credentials_issue_a_token(http, credentials):
    response = http.post(TOKEN_URL, data={'grant_type': 'client_credentials'},
                         headers=basic_header(*credentials))
    assert response.status_code == 200
    assert response.get_json()['token_type'] == 'Bearer'


def test_basic_credentials_are_form_decoded(http, make_client):
    # RFC 6749 Appendix B: "a+b" inside Basic means "a b"; "%3A" means ":".
    client_id, secret = make_client(client_id='svc:one two', client_secret='p@ss word:ü+%')
    response = http.post(TOKEN_URL, data={'grant_type': 'client_credentials'},
                         headers=basic_header(client_id, secret))
    assert response.status_code == 200
    raw = base64.b64encode(f'{client_id}:{secret}'.encode()).decode()  # not encoded: different id
    response = http.post(TOKEN_URL, data={'grant_type': 'client_credentials'},
                         headers={'Authorization': f'Basic {raw}'})
    assert_error(response, 401, 'invalid_client')


def test_basic_with_the_same_client_id_in_the_form_is_accepted(http, credentials):
    client_id, secret = credentials
    response = http.post(TOKEN_URL, data={'grant_type': 'client_credentials', 'client_id': client_id},
                         headers=basic_header(client_id, secret))
    assert response.status_code == 200


@pytest.mark.parametrize('form', [{'client_secret': 'x'}, {'client_id': 'someone-else'}])
def test_two_authentication_methods_at_once_are_refused(http, credentials, form):
    response = http.post(TOKEN_URL, data={'grant_type': 'client_credentials', **form},
                         headers=basic_header(*credentials))
    assert_error(response, 400, 'invalid_request')
    assert count(Token) == 0


def test_wrong_secret_and_unknown_client_are_indistinguishable(http, credentials):
    client_id, _ = credentials
    wrong = http.post(TOKEN_URL, data=token_form(client_id, 'wrong-secret'))
    unknown = http.post(TOKEN_URL, data=token_form('no-such-client', 'wrong-secret'))
    assert_error(wrong, 401, 'invalid_client')

    def answer(response):  # all but the request id, which differs by design
        headers = sorted((k, v) for k, v in response.headers.items() if k != 'X-Request-ID')
        return response.status_code, response.get_data(), headers
    assert answer(wrong) == answer(unknown)
    assert count(Token) == 0


def test_failed_basic_authentication_challenges_with_basic(http, credentials):
    client_id, _ = credentials
    response = http.post(TOKEN_URL, data={'grant_type': 'client_credentials'},
                         headers=basic_header(client_id, 'wrong'))
    assert_error(response, 401, 'invalid_client')
    assert response.headers['WWW-Authenticate'] == 'Basic realm="client-credentials"'


@pytest.mark.parametrize('form', [
    {'grant_type': 'client_credentials'},
    {'grant_type': 'client_credentials', 'client_id': 'x'},
    {'grant_type': 'client_credentials', 'client_secret': 'x'},
])
def test_missing_credentials_are_invalid_client(http, credentials, form):
    if 'client_id' in form:
        form['client_id'] = credentials[0]
    assert_error(http.post(TOKEN_URL, data=form), 401, 'invalid_client')


def test_an_empty_secret_counts_as_omitted(http, credentials):
    assert_error(http.post(TOKEN_URL, data=token_form(credentials[0], '')), 401, 'invalid_client')


@pytest.mark.parametrize('suffix', ['\x00', '\x00\x00\x00'])
def test_a_secret_with_trailing_nul_bytes_is_not_the_secret(http, credentials, suffix):
    # HMAC pads its key with zero bytes: without a check, these would match.
    assert_error(http.post(TOKEN_URL, data=token_form(credentials[0], credentials[1] + suffix)), 401, 'invalid_client')
    assert http.post(TOKEN_URL, data=token_form(*credentials)).status_code == 200


@pytest.mark.parametrize('header', [
    'Basic !!!not-base64!!!',
    'Basic ' + base64.b64encode(b'\xff\xfe:\xff').decode(),  # not UTF-8
    'Basic ',
])
def test_undecodable_basic_credentials_are_invalid_client(http, header):
    response = http.post(TOKEN_URL, data={'grant_type': 'client_credentials'},
                         headers={'Authorization': header})
    assert_error(response, 401, 'invalid_client')


def test_non_ascii_basic_header_is_a_bad_request(http):
    response = http.post(TOKEN_URL, data={'grant_type': 'client_credentials'},
                         headers={'Authorization': 'Basic é'})
    assert_error(response, 400, 'invalid_request')


def test_missing_grant_type_is_invalid_request(http, credentials):
    form = token_form(*credentials)
    del form['grant_type']
    assert_error(http.post(TOKEN_URL, data=form), 400, 'invalid_request')


@pytest.mark.parametrize('grant_type', ['password', 'authorization_code', 'refresh_token', 'nonsense'])
def test_other_grant_types_are_unsupported(http, credentials, grant_type):
    form = token_form(*credentials, grant_type=grant_type)
    assert_error(http.post(TOKEN_URL, data=form), 400, 'unsupported_grant_type')


def test_client_without_the_grant_is_unauthorized(http, make_client):
    credentials = make_client('introspector', grant_types='')
    assert_error(http.post(TOKEN_URL, data=token_form(*credentials)), 400, 'unauthorized_client')
    assert count(Token) == 0


@pytest.mark.parametrize('repeated', ['grant_type', 'scope', 'client_id', 'client_secret'])
def test_repeated_parameters_are_invalid_request(http, credentials, repeated):
    form = list(token_form(*credentials, scope='read').items())
    form.append((repeated, dict(form)[repeated]))
    body = '&'.join(f'{key}={value}' for key, value in form)
    response = http.post(TOKEN_URL, data=body, content_type='application/x-www-form-urlencoded')
    assert_error(response, 400, 'invalid_request')
    assert repeated in response.get_json()['error_description']
    assert count(Token) == 0


def test_query_parameters_are_invalid_request(http, credentials):
    response = http.post(TOKEN_URL + '?scope=read', data=token_form(*credentials))
    assert_error(response, 400, 'invalid_request')


@pytest.mark.parametrize('kwargs', [
    {'json': {'grant_type': 'client_credentials'}},
    {'data': 'grant_type=client_credentials', 'content_type': 'text/plain'},
    {},
])
def test_wrong_content_type_is_invalid_request(http, credentials, kwargs):
    assert_error(http.post(TOKEN_URL, **kwargs), 400, 'invalid_request')


@pytest.mark.parametrize('method', ['GET', 'PUT', 'DELETE', 'PATCH'])
def test_other_methods_get_a_json_405(http, method):
    response = http.open(TOKEN_URL, method=method)
    assert response.status_code == 405
    assert response.get_json()['error'] == 'invalid_request'
    assert 'POST' in response.headers['Allow']


@pytest.mark.parametrize('asked, granted', [
    ('read', 'read'), ('write', 'write'), ('write read', 'read write'), ('read read', 'read'),
    ('', 'read write'),  # RFC 6749 §3.1: an empty parameter counts as omitted
])
def test_scope_is_any_subset_of_the_clients_scopes(http, credentials, asked, granted):
    response = http.post(TOKEN_URL, data=token_form(*credentials, scope=asked))
    assert response.status_code == 200
    assert response.get_json()['scope'] == granted
    stored = db.session.scalar(db.select(Token))
    assert stored.scope == granted


@pytest.mark.parametrize('asked', ['admin', 'read admin', 'introspect'])
def test_scope_beyond_the_clients_is_invalid_scope(http, credentials, asked):
    assert_error(http.post(TOKEN_URL, data=token_form(*credentials, scope=asked)), 400, 'invalid_scope')
    assert count(Token) == 0


def test_read_only_client_cannot_get_write(http, make_client):
    credentials = make_client('reader', 'read')
    assert_error(http.post(TOKEN_URL, data=token_form(*credentials, scope='write')), 400, 'invalid_scope')
    assert http.post(TOKEN_URL, data=token_form(*credentials)).get_json()['scope'] == 'read'


def test_a_new_token_leaves_earlier_tokens_valid(http, credentials, get_token):
    first, second = get_token(*credentials), get_token(*credentials)
    assert first != second
    assert http.get('/api/me', headers=bearer(first)).status_code == 200
    assert http.get('/api/me', headers=bearer(second)).status_code == 200


def test_token_lifetime_is_stored_as_an_aware_expiry(http, credentials):
    body = http.post(TOKEN_URL, data=token_form(*credentials)).get_json()
    db.session.expire_all()
    stored = db.session.scalar(db.select(Token))
    assert stored.expires.utcoffset().total_seconds() == 0
    lifetime = (stored.expires - stored.issued_at).total_seconds()
    assert lifetime == body['expires_in']


def test_garbage_never_gets_a_500_or_html(http, credentials):
    attempts = [
        dict(data=b'\xff\xfe\x00garbage', content_type='application/x-www-form-urlencoded'),
        dict(data='grant_type=%zz&client_id=%', content_type='application/x-www-form-urlencoded'),
        dict(data={'grant_type': 'client_credentials'}, headers={'Authorization': 'Bearer abc'}),
        dict(data={'grant_type': 'client_credentials'}, headers={'Authorization': 'Digest x=y'}),
        dict(data={'grant_type': 'client_credentials', 'client_id': 'x' * 5000, 'client_secret': 'y'}),
        dict(data={'grant_type': 'client_credentials', 'scope': '\x00\x01'}, headers=basic_header(*credentials)),
        dict(data=b'a' * (65 * 1024), content_type='application/x-www-form-urlencoded'),
        dict(data={'file': (__import__('io').BytesIO(b'x'), 'x.txt')}, content_type='multipart/form-data'),
    ]
    for kwargs in attempts:
        response = http.post(TOKEN_URL, **kwargs)
        assert 400 <= response.status_code < 500, (kwargs, response.status_code)
        assert response.mimetype == 'application/json', kwargs
        assert 'error' in response.get_json()
    assert http.post(TOKEN_URL + '?%ff=1').status_code == 400
    assert count(Token) == 0


def test_unknown_paths_answer_json(http):
    response = http.get('/nowhere')
    assert response.status_code == 404
    assert response.get_json()['error'] == 'invalid_request'


def test_secret_check_survives_client_reload(http, credentials):
    # The secret hash is what authenticates: a fresh session still accepts it.
    db.session.expire_all()
    client = Client.find(credentials[0])
    assert client.check_secret(credentials[1])
    assert not client.check_secret(credentials[1] + 'x')


@pytest.mark.parametrize('client_id', ['nul\x00id', 'x' * 5000 + '\x00'])
def test_unstorable_client_ids_are_just_unknown(http, client_id):
    # No row can hold NUL, so on PostgreSQL the lookup must not even be tried.
    for headers, form in [({}, token_form(client_id, 's')),
                          (basic_header(client_id, 's'), {'grant_type': 'client_credentials'})]:
        assert_error(http.post(TOKEN_URL, data=form, headers=headers), 401, 'invalid_client')
