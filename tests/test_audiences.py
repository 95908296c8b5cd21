"""Audiences (RFC 8707): `resource` at the token endpoint, the resources a
client may ask for, and this server's API refusing tokens meant for another."""
import json

import pytest
from conftest import TOKEN_URL, bearer, token_form

from models import Client, db

OWN_API = 'http://localhost/api'
BILLING, REPORTS = 'https://billing.example/api', 'urn:example:reports'


@pytest.fixture
def client_with_resources(make_client):
    def make(*resources, kind='jwt'):
        client_id, client_secret = make_client()
        client = Client.find(client_id)
        client.resources, client.token_format = ' '.join(resources), kind
        db.session.commit()
        return client_id, client_secret
    return make


def ask(http, credentials, *resources, **extra):
    return http.post(TOKEN_URL, data={**token_form(*credentials, **extra), 'resource': list(resources)})


def audience(http, credentials, access_token):
    return http.post('/oauth/introspect', data={'token': access_token, 'client_id': credentials[0],
                                                'client_secret': credentials[1]}).get_json()['aud']


def jwt_claims(access_token):
    import base64
    payload = access_token.split('.')[1]
    return json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))


@pytest.mark.parametrize('token_format', ['jwt', 'opaque'])
def test_one_resource_is_the_audience(http, client_with_resources, token_format):
    credentials = client_with_resources(BILLING, REPORTS, OWN_API, kind=token_format)
    response = ask(http, credentials, BILLING)
    assert response.status_code == 200
    token = response.get_json()['access_token']
    assert audience(http, credentials, token) == BILLING
    if token_format == 'jwt':
        assert jwt_claims(token)['aud'] == BILLING


def test_several_resources_make_an_audience_list(http, client_with_resources):
    credentials = client_with_resources(BILLING, REPORTS, OWN_API)
    token = ask(http, credentials, BILLING, REPORTS).get_json()['access_token']
    assert jwt_claims(token)['aud'] == [BILLING, REPORTS]
    assert audience(http, credentials, token) == [BILLING, REPORTS]


def test_no_resource_means_every_resource_the_client_may_ask_for(http, client_with_resources):
    credentials = client_with_resources(BILLING, OWN_API)
    token = ask(http, credentials).get_json()['access_token']
    assert jwt_claims(token)['aud'] == [BILLING, OWN_API]
    assert http.get('/api/me', headers=bearer(token)).status_code == 200


@pytest.mark.parametrize('token_format', ['jwt', 'opaque'])
def test_the_api_refuses_a_token_meant_for_another(http, client_with_resources, token_format):
    credentials = client_with_resources(BILLING, OWN_API, kind=token_format)
    for_billing = ask(http, credentials, BILLING).get_json()['access_token']
    response = http.get('/api/me', headers=bearer(for_billing))
    assert response.status_code == 401 and response.get_json()['error'] == 'invalid_token'
    assert 'error="invalid_token"' in response.headers['WWW-Authenticate']
    for_us = ask(http, credentials, OWN_API).get_json()['access_token']
    assert http.get('/api/me', headers=bearer(for_us)).status_code == 200


def test_a_client_without_resources_gets_this_servers_api(http, make_client, get_token):
    credentials = make_client()
    token = get_token(*credentials)
    assert audience(http, credentials, token) == OWN_API
    assert ask(http, credentials, OWN_API).status_code == 200
    refused = ask(http, credentials, BILLING)
    assert refused.status_code == 400 and refused.get_json()['error'] == 'invalid_target'


@pytest.mark.parametrize('token_format', ['jwt', 'opaque'])
def test_a_token_is_for_the_clients_registered_resources_and_no_other(http, client_with_resources, token_format):
    # Registered with resources: a token for them, and not for this server's API besides.
    elsewhere = client_with_resources(BILLING, REPORTS, kind=token_format)
    token = ask(http, elsewhere).get_json()['access_token']
    assert audience(http, elsewhere, token) == [BILLING, REPORTS]
    if token_format == 'jwt':
        assert jwt_claims(token)['aud'] == [BILLING, REPORTS]
    assert http.get('/api/me', headers=bearer(token)).status_code == 401
    # Registered with none: a token for this server's API, and for nothing else.
    own = client_with_resources(kind=token_format)
    token = ask(http, own).get_json()['access_token']
    assert audience(http, own, token) == OWN_API
    if token_format == 'jwt':
        assert jwt_claims(token)['aud'] == OWN_API


def test_an_opaque_token_of_such_a_client_works_wherever_the_server_is_reached(http, make_client, get_token):
    token = get_token(*make_client())
    for base_url in ('http://localhost', 'http://127.0.0.1:8080', 'https://auth.example'):
        assert http.get('/api/me', headers=bearer(token), base_url=base_url).status_code == 200


@pytest.mark.parametrize('resource', [
    'https://unknown.example/api',  # registered by no client
    'https://billing.example/api/',  # not exactly as registered
], ids=['unknown', 'near-miss'])
def test_a_resource_not_allowed_is_invalid_target(http, client_with_resources, resource):
    credentials = client_with_resources(BILLING)
    response = ask(http, credentials, BILLING, resource)
    assert response.status_code == 400
    body = response.get_json()
    assert body['error'] == 'invalid_target' and BILLING in body['error_description']
    assert response.headers['Cache-Control'] == 'no-store'


@pytest.mark.parametrize('resource', ['api/items', 'https://billing.example/api#x', 'https://a b.example', ''],
                         ids=['relative', 'fragment', 'space', 'empty'])
def test_a_malformed_resource_is_invalid_target(http, client_with_resources, resource):
    response = ask(http, client_with_resources(BILLING), resource)
    assert response.status_code == 400 and response.get_json()['error'] == 'invalid_target'


def test_the_client_is_authenticated_before_its_resources_are_checked(http, client_with_resources):
    client_id, _ = client_with_resources(BILLING)
    response = ask(http, (client_id, 'wrong'), 'https://unknown.example')
    assert response.status_code == 401 and response.get_json()['error'] == 'invalid_client'


def test_the_api_resource_setting(app, http, client_with_resources, monkeypatch):
    monkeypatch.setitem(app.config, 'API_RESOURCE', 'https://api.example.com')
    token = ask(http, client_with_resources()).get_json()['access_token']
    assert jwt_claims(token)['aud'] == 'https://api.example.com'
    assert http.get('/api/me', headers=bearer(token)).status_code == 200
    # The API takes the tokens meant for the resource it is now, in any format.
    for kind in ('jwt', 'opaque'):
        token = ask(http, client_with_resources('https://api.example.com', kind=kind)).get_json()['access_token']
        monkeypatch.setitem(app.config, 'API_RESOURCE', 'https://api.example.com')
        assert http.get('/api/me', headers=bearer(token)).status_code == 200
        monkeypatch.setitem(app.config, 'API_RESOURCE', 'https://elsewhere.example.com')
        assert http.get('/api/me', headers=bearer(token)).status_code == 401


def test_resources_are_registered_with_the_cli(app):
    runner = app.test_cli_runner()
    created = runner.invoke(args=['create-client', 'svc', '--resource', BILLING, '--resource', REPORTS,
                                  '--token-format', 'jwt', '--json'])
    assert created.exit_code == 0, created.output
    shown = json.loads(created.output)
    assert shown['resources'] == [BILLING, REPORTS] and shown['token_format'] == 'jwt'
    client_id = shown['client_id']
    updated = runner.invoke(args=['update-client', client_id, '--resource', OWN_API, '--token-format', 'default',
                                  '--json'])
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.output)['resources'] == [OWN_API]
    assert json.loads(updated.output)['token_format'] is None
    cleared = runner.invoke(args=['update-client', client_id, '--no-resources', '--json'])
    assert json.loads(cleared.output)['resources'] == []
    assert Client.find(client_id).resources == ''


@pytest.mark.parametrize('resource', ['billing', 'https://billing.example/#top'])
def test_the_cli_refuses_a_malformed_resource(app, resource):
    result = app.test_cli_runner().invoke(args=['create-client', 'svc', '--resource', resource])
    assert result.exit_code == 2
    assert 'resource' in result.output and 'Traceback' not in result.output
    assert db.session.scalar(db.select(db.func.count(Client.id))) == 0
