"""This server's own routes (/api/*, /admin/*) take a token, opaque or JWT,
only as its stored row says: revoked, its client disabled, deleted or
narrowed, never issued (even if signed with the server's own key), it is
refused at once, on every route; and a route accepts a token exactly when
introspection calls it active (docs/security.md)."""
import base64
from datetime import timedelta

import pytest
from conftest import basic_header, bearer
from joserfc import jwt
from joserfc.jwk import KeySet

from models import Client, Token, db, utcnow
from production import access_tokens, admin_api
from production.audiences import api_resource

FORMATS = ['jwt', 'opaque']
BODY = {'client_name': 'made-by-a-dead-token', 'name': 'made-by-a-dead-token'}  # for /admin/clients and /api/items
# RFC 6750 §3.1: what a refused token gets.
INVALID_TOKEN = (401, 'invalid_token')
INSUFFICIENT_SCOPE = (403, 'insufficient_scope')


def admin_routes(target: str) -> list[tuple[str, str]]:
    """(method, path) of every route of the admin API, aimed at client `target`."""
    return [(method.lower(), '/admin/clients' + rule.replace('<client_id>', target))
            for rule, _, methods in admin_api.ROUTES for method in methods]


def answer(http, method, path, access_token):
    response = getattr(http, method)(path, json=BODY,
                                     headers=bearer(access_token))
    body = response.get_json(silent=True) or {}
    return response.status_code, body.get('error')


@pytest.fixture
def admin_of_format(make_client, get_token):
    """admin_of_format(format) -> (client_id, secret, access token) of an admin client."""
    def make(token_format):
        client_id, secret = make_client('provisioner', 'admin read write')
        Client.find(client_id).token_format = token_format
        db.session.commit()
        token = get_token(client_id, secret)
        assert (token.count('.') == 2) == (token_format == 'jwt')
        return client_id, secret, token
    return make


@pytest.fixture(params=FORMATS)
def admin(request, admin_of_format):
    """(client_id, secret, access token) of an admin client, its token in the format of the test."""
    return admin_of_format(request.param)


@pytest.fixture
def target(make_client):
    return make_client('target')[0]


def assert_every_route_refuses(http, access_token, target, expected):
    clients_before = db.session.scalar(db.select(db.func.count(Client.id)))
    routes = [*admin_routes(target), ('get', '/api/me')]
    assert len(routes) == 10
    for method, path in routes:
        response = getattr(http, method)(path, json=BODY,
                                         headers=bearer(access_token))
        assert (response.status_code, response.get_json().get('error')) == expected, (method, path)
        # RFC 6750 §3: the challenge names the error.
        assert f'error="{expected[1]}"' in response.headers['WWW-Authenticate'], (method, path)
    # Nothing was done with it: the target is as it was, no client was made.
    db.session.expire_all()
    still = Client.find(target)
    assert still is not None and not still.disabled and still.name == 'target'
    assert db.session.scalar(db.select(db.func.count(Client.id))) == clients_before


def test_a_live_admin_token_works_the_control(http, admin, target):
    # The control for the tests below: the same requests succeed with a live token.
    assert answer(http, 'get', '/admin/clients', admin[2]) == (200, None)
    assert answer(http, 'get', f'/admin/clients/{target}', admin[2]) == (200, None)
    assert answer(http, 'get', '/api/me', admin[2]) == (200, None)


def test_a_token_revoked_at_the_revocation_endpoint_is_refused_everywhere(http, admin, target):
    client_id, secret, token = admin
    revoked = http.post('/oauth/revoke', data={'token': token}, headers=basic_header(client_id, secret))
    assert revoked.status_code == 200
    assert_every_route_refuses(http, token, target, INVALID_TOKEN)


def test_a_token_of_a_disabled_client_is_refused_everywhere(app, http, admin, target):
    assert app.test_cli_runner().invoke(args=['disable-client', admin[0]]).exit_code == 0
    assert_every_route_refuses(http, admin[2], target, INVALID_TOKEN)
    # Enabling the client again does not bring its tokens back.
    assert app.test_cli_runner().invoke(args=['enable-client', admin[0]]).exit_code == 0
    assert_every_route_refuses(http, admin[2], target, INVALID_TOKEN)


def test_a_token_whose_tokens_were_revoked_by_an_admin_is_refused_everywhere(app, http, admin, target):
    assert app.test_cli_runner().invoke(args=['revoke-tokens', admin[0]]).exit_code == 0
    assert_every_route_refuses(http, admin[2], target, INVALID_TOKEN)


def test_a_narrowed_client_loses_the_admin_api_at_once(app, http, admin, target):
    result = app.test_cli_runner().invoke(args=['update-client', admin[0], '--scope', 'read'])
    assert result.exit_code == 0, result.output
    for method, path in admin_routes(target):
        assert answer(http, method, path, admin[2]) == INSUFFICIENT_SCOPE, (method, path)
    assert answer(http, 'post', '/api/items', admin[2]) == INSUFFICIENT_SCOPE
    assert answer(http, 'get', '/api/items', admin[2]) == (200, None)  # what it still has
    assert http.get('/api/me', headers=bearer(admin[2])).get_json()['scope'] == 'read'
    # Widening the client again does not widen its live tokens.
    assert app.test_cli_runner().invoke(args=['update-client', admin[0], '--scope', 'admin read']).exit_code == 0
    assert answer(http, 'get', '/admin/clients', admin[2]) == INSUFFICIENT_SCOPE


def test_a_token_of_a_deleted_client_is_refused_everywhere(app, http, admin, target):
    assert app.test_cli_runner().invoke(args=['delete-client', admin[0], '--yes']).exit_code == 0
    assert_every_route_refuses(http, admin[2], target, INVALID_TOKEN)


@pytest.mark.parametrize('named', ['unknown', 'existing'])
def test_a_jwt_signed_with_the_servers_key_but_never_issued_is_refused(app, http, make_client, target, named):
    client_id = 'no-such-client' if named == 'unknown' else make_client('ops', 'admin read write')[0]
    with app.test_request_context('http://localhost/'):  # signed with the real key, as the server signs
        forged = access_tokens.sign(client_id, ['admin', 'read', 'write'], [api_resource()], 600)
    # A verifier with the published keys (an API elsewhere) would take it ...
    keys = KeySet.import_key_set(http.get('/.well-known/jwks.json').get_json())
    assert jwt.decode(forged, keys, algorithms=['ES256']).claims['client_id'] == client_id
    # ... this server does not: it never issued it.
    assert_every_route_refuses(http, forged, target, INVALID_TOKEN)


# --- ECDSA malleability: (r, s) and (r, n - s) are both valid signatures ----

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + '=' * (-len(part) % 4))


def with_signature_negated(token: str) -> str:
    """The same ES256 token with its signature (r, s) rewritten as (r, n - s),
    which verifies just as well (RFC 7518 §3.4 does not require a low s)."""
    header, payload, signature = token.split('.')
    raw = b64decode(signature)
    r, s = raw[:32], int.from_bytes(raw[32:], 'big')
    rewritten = r + (P256_ORDER - s).to_bytes(32, 'big')
    return f'{header}.{payload}.{base64.urlsafe_b64encode(rewritten).rstrip(b"=").decode()}'


def test_a_rewritten_ecdsa_signature_is_another_token_refused_everywhere(http, admin_of_format, target):
    client_id, secret, token = admin_of_format('jwt')
    rewritten = with_signature_negated(token)
    assert rewritten != token
    keys = KeySet.import_key_set(http.get('/.well-known/jwks.json').get_json())
    assert jwt.decode(rewritten, keys, algorithms=['ES256']).claims == jwt.decode(token, keys).claims
    # One answer for one token: unknown to this server's routes and to introspection.
    assert_every_route_refuses(http, rewritten, target, INVALID_TOKEN)
    introspected = http.post('/oauth/introspect', data={'token': rewritten}, headers=basic_header(client_id, secret))
    assert introspected.get_json() == {'active': False}
    assert answer(http, 'get', '/api/me', token) == (200, None)


# --- The property: a route takes a token exactly when introspection calls it active


STATES = ['live', 'revoked', 'expired', 'client disabled', 'scope narrowed', 'client deleted']
ROUTES = [('get', '/api/me', set()), ('get', '/api/items', {'read'}), ('post', '/api/items', {'write'}),
          ('get', '/admin/clients', {'admin'})]


def put_in_state(app, http, state, client_id, secret, token):
    if state == 'revoked':
        assert http.post('/oauth/revoke', data={'token': token},
                         headers=basic_header(client_id, secret)).status_code == 200
    elif state == 'expired':
        db.session.execute(db.update(Token).values(expires=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    elif state == 'client disabled':
        assert app.test_cli_runner().invoke(args=['disable-client', client_id]).exit_code == 0
    elif state == 'scope narrowed':
        assert app.test_cli_runner().invoke(args=['update-client', client_id, '--scope', 'read']).exit_code == 0
    elif state == 'client deleted':
        assert app.test_cli_runner().invoke(args=['delete-client', client_id, '--yes']).exit_code == 0


@pytest.mark.parametrize('token_format', FORMATS)
@pytest.mark.parametrize('state', STATES)
def test_a_route_accepts_a_token_exactly_when_introspection_calls_it_active(app, http, make_client, get_token,
                                                                         token_format, state):
    resource_server = make_client('resource-server', 'introspect')
    client_id, secret = make_client('owner', 'admin read write')
    Client.find(client_id).token_format = token_format
    db.session.commit()
    token = get_token(client_id, secret)
    put_in_state(app, http, state, client_id, secret, token)

    introspected = http.post('/oauth/introspect', data={'token': token},
                             headers=basic_header(*resource_server)).get_json()
    if state not in ('client disabled', 'client deleted'):  # the owner itself can no longer authenticate
        by_owner = http.post('/oauth/introspect', data={'token': token},
                             headers=basic_header(client_id, secret)).get_json()
        assert by_owner == introspected
    assert introspected['active'] is (state in ('live', 'scope narrowed'))
    granted = set(introspected.get('scope', '').split())
    for method, path, needed in ROUTES:
        status, error = answer(http, method, path, token)
        if not introspected['active']:
            assert (status, error) == INVALID_TOKEN, (method, path)
        elif not needed <= granted:
            assert (status, error) == INSUFFICIENT_SCOPE, (method, path)
        else:
            assert status in (200, 201) and error is None, (method, path)
