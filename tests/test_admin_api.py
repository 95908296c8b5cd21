"""The admin API (/admin/clients): every operation end to end with an
`admin` token, the refusals without one, bad input, and the audit trail
shared with the command line."""
import base64
import json
import secrets

import pytest
from conftest import TOKEN_URL, bearer, short_rsa_public_jwk, statements_run, token_form
from joserfc.jwk import ECKey, OKPKey, RSAKey

from models import Client, Token, db

ADMIN = '/admin/clients'


@pytest.fixture
def admin(make_client, get_token):
    """(admin client id, headers with an admin token)."""
    client_id, secret = make_client('provisioner', 'admin')
    return client_id, bearer(get_token(client_id, secret))


def audit_lines(lines, event):
    return [json.loads(line.split(' INFO ', 1)[1]) for line in lines
            if line.startswith('oauth.audit') and f'"event": "{event}"' in line]


def test_register_a_client_and_use_it(http, admin, no_credentials_in_logs):
    admin_id, headers = admin
    response = http.post(ADMIN, json={'client_name': 'billing', 'scope': 'read'}, headers=headers)
    assert response.status_code == 201
    created = response.get_json()
    assert created['client_name'] == 'billing' and created['scope'] == 'read'
    assert created['grant_types'] == ['client_credentials'] and created['client_secret_expires_at'] == 0
    assert created['token_endpoint_auth_method'] == 'client_secret_basic'
    token = http.post(TOKEN_URL, data=token_form(created['client_id'], created['client_secret']))
    assert token.status_code == 200 and token.get_json()['scope'] == 'read'
    # The secret appears once: never again in an answer.
    shown = http.get(f'{ADMIN}/{created["client_id"]}', headers=headers).get_json()
    assert 'client_secret' not in shown and shown['live_tokens'] == 1
    assert audit_lines(no_credentials_in_logs, 'client_created')[-1]['actor'] == admin_id


def test_every_change_is_audited_with_the_admin_client_as_actor(http, admin, make_client, no_credentials_in_logs):
    admin_id, headers = admin
    client_id, _ = make_client('target')
    key_client = http.post(ADMIN, headers=headers, json={
        'client_name': 'signer', 'token_endpoint_auth_method': 'private_key_jwt',
        'jwks': {'keys': [ECKey.generate_key('P-256').as_dict(private=False)]}}).get_json()['client_id']
    changes = [('patch', f'{ADMIN}/{client_id}', {'client_name': 'renamed'}, 'client_updated'),
               ('patch', f'{ADMIN}/{key_client}', {'jwks': {'keys': [ECKey.generate_key('P-256').as_dict(
                   private=False)]}}, 'client_updated'),
               ('post', f'{ADMIN}/{client_id}/disable', None, 'client_disabled'),
               ('post', f'{ADMIN}/{client_id}/enable', None, 'client_enabled'),
               ('post', f'{ADMIN}/{client_id}/rotate-secret', {'grace': 60}, 'secret_rotated'),
               ('post', f'{ADMIN}/{client_id}/revoke-tokens', None, 'tokens_revoked'),
               ('delete', f'{ADMIN}/{client_id}', None, 'client_deleted')]
    for method, path, body, _ in changes:
        assert getattr(http, method)(path, json=body, headers=headers).status_code in (200, 204)
    audited = [(line['event'], line['client_id'], line['actor']) for line in map(json.loads, (
        line.split(' INFO ', 1)[1] for line in no_credentials_in_logs if line.startswith('oauth.audit')))
        if line['event'] not in ('token_issued', 'authentication_failed')]
    assert audited == [('client_created', key_client, admin_id)] + [
        (event, path.split('/')[3], admin_id) for _, path, _, event in changes]


def test_answers_carrying_a_secret_are_never_cached(http, admin):
    created = http.post(ADMIN, json={'client_name': 'billing'}, headers=admin[1])
    rotated = http.post(f'{ADMIN}/{created.get_json()["client_id"]}/rotate-secret', headers=admin[1])
    for answer in (created, rotated):
        assert answer.status_code in (200, 201) and answer.get_json()['client_secret']
        # RFC 6749 §5.1, as for a token: HTTP/1.1 caches and HTTP/1.0 ones alike.
        assert answer.headers.get('Cache-Control') == 'no-store'
        assert answer.headers.get('Pragma') == 'no-cache'


@pytest.mark.filterwarnings('ignore:Key size should be')  # joserfc's, as the key is read
def test_an_rsa_key_under_2048_bits_is_refused(http, admin):
    response = http.post(ADMIN, headers=admin[1], json={
        'client_name': 'signer', 'token_endpoint_auth_method': 'private_key_jwt',
        'jwks': {'keys': [short_rsa_public_jwk()]}})
    assert response.status_code == 400 and response.get_json()['error'] == 'invalid_client_metadata'
    assert 'must have 2048 to 4096 bits' in response.get_json()['error_description']
    assert db.session.scalar(db.select(db.func.count(Client.id))) == 1  # the admin only


def test_the_command_line_writes_the_same_audit_event_as_cli(app, no_credentials_in_logs):
    result = app.test_cli_runner().invoke(args=['create-client', 'svc'])
    assert result.exit_code == 0
    assert audit_lines(no_credentials_in_logs, 'client_created')[-1]['actor'] == 'cli'


def test_list_and_show(http, admin, make_client):
    other, _ = make_client('other')
    listed = http.get(ADMIN, headers=admin[1]).get_json()
    assert sorted(client['client_id'] for client in listed['clients']) == sorted([admin[0], other])
    assert 'next' not in listed  # the only page
    shown = http.get(f'{ADMIN}/{other}', headers=admin[1])
    assert shown.status_code == 200 and shown.get_json()['client_name'] == 'other'
    missing = http.get(f'{ADMIN}/no-such-client', headers=admin[1])
    assert missing.status_code == 404 and missing.mimetype == 'application/json'
    assert missing.get_json()['error'] == 'invalid_request'


def test_the_list_counts_each_clients_live_tokens_in_a_fixed_number_of_queries(http, admin, make_client,
                                                                             get_token):
    busy, secret = make_client('busy')
    for _ in range(3):
        get_token(busy, secret)
    revoked = get_token(busy, secret)
    assert http.post('/oauth/revoke', data={'token': revoked, 'client_id': busy,
                                            'client_secret': secret}).status_code == 200
    idle, _ = make_client('idle')
    with statements_run() as statements:
        listed = http.get(ADMIN, headers=admin[1]).get_json()['clients']
    assert {client['client_id']: client['live_tokens'] for client in listed} == {admin[0]: 1, busy: 3, idle: 0}
    for name in ('more-1', 'more-2', 'more-3'):
        make_client(name)
    with statements_run() as more_statements:
        assert len(http.get(ADMIN, headers=admin[1]).get_json()['clients']) == 6
    assert len(more_statements) == len(statements)


def test_update(http, admin, make_client, get_token):
    client_id, secret = make_client('svc', 'read write')
    token = get_token(client_id, secret)
    response = http.patch(f'{ADMIN}/{client_id}', headers=admin[1], json={
        'client_name': 'renamed', 'scope': 'read', 'token_lifetime': 300, 'token_format': 'jwt',
        'resources': ['https://billing.example/api'], 'unknown_field': 'ignored (RFC 7591 §2)'})
    assert response.status_code == 200
    updated = response.get_json()
    assert (updated['client_name'], updated['scope'], updated['token_lifetime'], updated['token_format'],
            updated['resources']) == ('renamed', 'read', 300, 'jwt', ['https://billing.example/api'])
    # Narrowing the scope narrows the live token, as update-client does.
    introspected = http.post('/oauth/introspect', data={'token': token, 'client_id': client_id,
                                                        'client_secret': secret}).get_json()
    assert introspected['scope'] == 'read'


@pytest.mark.parametrize(('body', 'field'), [
    ({'scope': 'read superuser'}, 'scope'),
    ({'client_name': ''}, 'client_name'),
    ({'token_lifetime': -1}, 'token_lifetime'),
    ({'token_lifetime': '300'}, 'token_lifetime'),
    ({'token_format': 'saml'}, 'token_format'),
    ({'resources': ['not a uri']}, 'resources'),
    ({'resources': 'https://one.example'}, 'resources'),
    ({'client_name': 'fine', 'scope': 'nope'}, 'scope'),
], ids=['scope', 'name', 'negative-lifetime', 'string-lifetime', 'format', 'resource', 'resources-not-list',
        'second-field'])
def test_bad_updates_are_invalid_client_metadata_and_change_nothing(http, admin, make_client, body, field):
    client_id, _ = make_client('svc', 'read')
    response = http.patch(f'{ADMIN}/{client_id}', json=body, headers=admin[1])
    assert response.status_code == 400
    answer = response.get_json()
    assert answer['error'] == 'invalid_client_metadata' and answer['error_description']
    db.session.expire_all()
    client = Client.find(client_id)
    assert (client.name, client.scope, client.token_lifetime, client.resources) == ('svc', 'read', None, '')


@pytest.mark.parametrize('body', [
    {},
    {'client_name': 'x', 'grant_types': ['password']},
    {'client_name': 'x', 'token_endpoint_auth_method': 'private_key_jwt'},
    {'client_name': 'x', 'token_endpoint_auth_method': 'client_secret_jwt'},
    {'client_name': 'x', 'token_endpoint_auth_method': 'private_key_jwt', 'jwks': {'keys': []}},
], ids=['no-name', 'grant-type', 'key-method-without-keys', 'unsupported-method', 'empty-jwks'])
def test_bad_registrations_are_refused(http, admin, body):
    response = http.post(ADMIN, json=body, headers=admin[1])
    assert response.status_code == 400 and response.get_json()['error'] == 'invalid_client_metadata'
    assert db.session.scalar(db.select(db.func.count(Client.id))) == 1  # the admin only


@pytest.mark.parametrize('send', [
    {'data': 'client_name=x'}, {'data': 'not json', 'content_type': 'application/json'}, {'json': ['a list']},
], ids=['form', 'broken-json', 'not-an-object'])
def test_a_body_that_is_not_a_json_object_is_invalid_request(http, admin, send):
    response = http.post(ADMIN, headers=admin[1], **send)
    assert response.status_code == 400 and response.get_json()['error'] == 'invalid_request'


def test_register_a_private_key_jwt_client(http, admin):
    key = ECKey.generate_key('P-256')
    public = key.as_dict(private=False, kid='k1')
    response = http.post(ADMIN, headers=admin[1], json={
        'client_name': 'signer', 'token_endpoint_auth_method': 'private_key_jwt', 'jwks': {'keys': [public]}})
    assert response.status_code == 201
    created = response.get_json()
    assert 'client_secret' not in created and created['jwks']['keys'][0]['kid'] == 'k1'
    assert not {'d'} & set(created['jwks']['keys'][0])
    private = http.post(ADMIN, headers=admin[1], json={
        'client_name': 'oops', 'token_endpoint_auth_method': 'private_key_jwt',
        'jwks': {'keys': [key.as_dict(private=True)]}})
    assert private.status_code == 400 and 'private key' in private.get_json()['error_description']


def public(key, **members):
    return {**key.as_dict(private=False), **members}


def crafted_rsa(bits=2048, e=65537):
    """An RSA public JWK with this modulus size and exponent (made up: only registered, never used)."""
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    return {'kty': 'RSA', 'n': b64_int(n), 'e': b64_int(e)}


def b64_int(number):
    return base64.urlsafe_b64encode(number.to_bytes((number.bit_length() + 7) // 8, 'big')).rstrip(b'=').decode()


KEY_CASES = {
    'rsa-exponent-3': (lambda: crafted_rsa(e=3), 'must be 65537'),
    'rsa-exponent-3071-bits': (lambda: crafted_rsa(bits=3072, e=(1 << 3070) | 1), 'must be 65537'),
    'rsa-1024-bits': (lambda: crafted_rsa(bits=1024), '2048 to 4096 bits'),
    'rsa-8192-bits': (lambda: crafted_rsa(bits=8192), '2048 to 4096 bits'),
    'ec-p384': (lambda: public(ECKey.generate_key('P-384')), 'P-256'),
    'ec-secp256k1': (lambda: public(ECKey.generate_key('secp256k1')), 'P-256'),
    'okp-x25519': (lambda: public(OKPKey.generate_key('X25519')), 'Ed25519'),
    'okp-ed448': (lambda: public(OKPKey.generate_key('Ed448')), 'Ed25519'),
    'use-enc': (lambda: public(ECKey.generate_key('P-256'), use='enc'), '"use"'),
    'key-ops-encrypt': (lambda: public(ECKey.generate_key('P-256'), key_ops=['encrypt']), 'key_ops'),
    'alg-hs256': (lambda: public(ECKey.generate_key('P-256'), alg='HS256'), '"alg"'),
    'alg-of-another-key-type': (lambda: public(ECKey.generate_key('P-256'), alg='RS256'), '"alg"'),
    'x5u': (lambda: public(ECKey.generate_key('P-256'), x5u='https://keys.example/cert.pem'), 'x5u'),
    'x5c': (lambda: public(ECKey.generate_key('P-256'), x5c=['MIIB']), 'x5c'),
    'jku': (lambda: public(ECKey.generate_key('P-256'), jku='https://keys.example/jwks.json'), 'jku'),
}


@pytest.mark.parametrize('case', KEY_CASES)
def test_a_key_that_cannot_sign_or_costs_too_much_to_check_is_refused(http, admin, case):
    make, says = KEY_CASES[case]
    response = http.post(ADMIN, headers=admin[1], json={
        'client_name': 'signer', 'token_endpoint_auth_method': 'private_key_jwt', 'jwks': {'keys': [make()]}})
    assert response.status_code == 400 and response.get_json()['error'] == 'invalid_client_metadata'
    assert says in response.get_json()['error_description']
    assert db.session.scalar(db.select(db.func.count(Client.id))) == 1  # the admin only


def test_keys_that_fit_are_registered(http, admin):
    # The control for the refusals above: each kind of key that can sign, at the edges of the limits.
    fitting = [public(RSAKey.generate_key(2048), alg='RS256', use='sig', key_ops=['verify']),
               crafted_rsa(bits=4096), public(ECKey.generate_key('P-256'), alg='ES256'),
               public(OKPKey.generate_key('Ed25519'), alg='EdDSA'), public(OKPKey.generate_key('Ed25519'))]
    fitting += [public(ECKey.generate_key('P-256')) for _ in range(10 - len(fitting))]
    response = http.post(ADMIN, headers=admin[1], json={
        'client_name': 'signer', 'token_endpoint_auth_method': 'private_key_jwt', 'jwks': {'keys': fitting}})
    assert response.status_code == 201, response.get_json()
    assert len(response.get_json()['jwks']['keys']) == 10
    eleven = {'keys': [*fitting, public(ECKey.generate_key('P-256'))]}
    client_id = response.get_json()['client_id']
    too_many = http.patch(f'{ADMIN}/{client_id}', headers=admin[1], json={'jwks': eleven})
    assert too_many.status_code == 400 and too_many.get_json()['error'] == 'invalid_client_metadata'
    assert 'at most 10 keys' in too_many.get_json()['error_description']
    db.session.expire_all()
    assert len(Client.find(client_id).key_ids) == 10


def test_a_client_that_only_introspects(http, admin):
    created = http.post(ADMIN, headers=admin[1], json={'client_name': 'rs', 'scope': 'introspect',
                                                       'grant_types': []}).get_json()
    refused = http.post(TOKEN_URL, data=token_form(created['client_id'], created['client_secret']))
    assert refused.status_code == 400 and refused.get_json()['error'] == 'unauthorized_client'


def test_disable_enable(http, admin, make_client, get_token):
    client_id, secret = make_client()
    token = get_token(client_id, secret)
    disabled = http.post(f'{ADMIN}/{client_id}/disable', headers=admin[1])
    assert disabled.status_code == 200 and disabled.get_json()['tokens_revoked'] == 1
    assert disabled.get_json()['disabled'] is True
    assert http.get('/api/me', headers=bearer(token)).status_code == 401
    assert http.post(TOKEN_URL, data=token_form(client_id, secret)).status_code == 401
    enabled = http.post(f'{ADMIN}/{client_id}/enable', headers=admin[1])
    assert enabled.status_code == 200 and enabled.get_json()['disabled'] is False
    assert http.post(TOKEN_URL, data=token_form(client_id, secret)).status_code == 200
    assert http.get('/api/me', headers=bearer(token)).status_code == 401  # revoked stays revoked


def test_rotate_secret_with_grace(http, admin, make_client):
    client_id, old = make_client()
    response = http.post(f'{ADMIN}/{client_id}/rotate-secret', json={'grace': 60}, headers=admin[1])
    assert response.status_code == 200
    new = response.get_json()['client_secret']
    assert response.get_json()['previous_secret_valid_for'] == 60 and new != old
    for secret in (old, new):
        assert http.post(TOKEN_URL, data=token_form(client_id, secret)).status_code == 200
    without_grace = http.post(f'{ADMIN}/{client_id}/rotate-secret', headers=admin[1]).get_json()['client_secret']
    assert http.post(TOKEN_URL, data=token_form(client_id, new)).status_code == 401
    assert http.post(TOKEN_URL, data=token_form(client_id, without_grace)).status_code == 200
    bad = http.post(f'{ADMIN}/{client_id}/rotate-secret', json={'grace': 'soon'}, headers=admin[1])
    assert bad.status_code == 400 and bad.get_json()['error'] == 'invalid_client_metadata'


def test_revoke_tokens_keeps_the_client(http, admin, make_client, get_token):
    client_id, secret = make_client()
    tokens = [get_token(client_id, secret) for _ in range(3)]
    response = http.post(f'{ADMIN}/{client_id}/revoke-tokens', headers=admin[1])
    assert response.status_code == 200 and response.get_json() == {'client_id': client_id, 'tokens_revoked': 3}
    assert all(http.get('/api/me', headers=bearer(token)).status_code == 401 for token in tokens)
    assert http.post(TOKEN_URL, data=token_form(client_id, secret)).status_code == 200


def test_delete(http, admin, make_client, get_token):
    client_id, secret = make_client()
    get_token(client_id, secret)
    response = http.delete(f'{ADMIN}/{client_id}', headers=admin[1])
    assert response.status_code == 204 and response.data == b''
    assert Client.find(client_id) is None
    assert db.session.scalar(db.select(db.func.count(Token.id))) == 1  # the admin's own
    assert http.delete(f'{ADMIN}/{client_id}', headers=admin[1]).status_code == 404


ROUTES = [('post', ADMIN), ('get', ADMIN), ('get', f'{ADMIN}/ID'), ('patch', f'{ADMIN}/ID'),
          ('delete', f'{ADMIN}/ID'), ('post', f'{ADMIN}/ID/disable'), ('post', f'{ADMIN}/ID/enable'),
          ('post', f'{ADMIN}/ID/rotate-secret'), ('post', f'{ADMIN}/ID/revoke-tokens')]


@pytest.mark.parametrize(('method', 'path'), ROUTES)
def test_every_route_needs_the_admin_scope(http, make_client, get_token, method, path):
    client_id, secret = make_client('ordinary', 'read write introspect')
    path = path.replace('ID', client_id)
    without = getattr(http, method)(path, json={})
    assert without.status_code == 401 and without.headers['WWW-Authenticate'].startswith('Bearer')
    ordinary = getattr(http, method)(path, json={}, headers=bearer(get_token(client_id, secret)))
    assert ordinary.status_code == 403 and ordinary.get_json()['error'] == 'insufficient_scope'
    db.session.expire_all()
    client = Client.find(client_id)
    assert client is not None and not client.disabled and client.check_secret(secret)


def test_nobody_has_admin_unless_given(app):
    result = app.test_cli_runner().invoke(args=['create-client', 'svc', '--json'])
    assert 'admin' not in json.loads(result.output)['scope'].split()
    granted = app.test_cli_runner().invoke(args=['create-client', 'ops', '--scope', 'admin', '--json'])
    assert json.loads(granted.output)['scope'] == 'admin'


def test_client_py_registers_a_client_in_one_command(live_server, make_client, capsys):
    import client as client_module
    admin_id, admin_secret = make_client('ci', 'admin')
    args = ['--server', live_server, '--client-id', admin_id, '--client-secret', admin_secret]
    assert client_module.main([*args, 'register', 'deploy-bot', '--client-scope', 'read']) == 0
    created = json.loads(capsys.readouterr().out)
    assert created['client_name'] == 'deploy-bot' and created['scope'] == 'read' and created['client_secret']
    assert Client.find(created['client_id']) is not None
    assert client_module.main([*args, 'register', 'x', '--client-scope', 'superuser']) == 1
    assert capsys.readouterr().err.startswith('client.py: invalid_client_metadata: unknown scope')


# --- Hostile values: checked in the code, the same answer on every database ---

# Names a terminal or a page would show as other text than is stored, and what cannot be stored at all.
HOSTILE_NAMES = {'nul': 'a\x00b', 'escape': 'a\x1b[2Jb', 'c1-csi': 'a\x9b31mb', 'rtl-override': 'a\u202eb',
                 'isolate': 'a\u2066b', 'rtl-mark': 'a\u200fb', 'arabic-mark': 'a\u061cb', 'zero-width': 'a\u200bb',
                 'joiner': 'a\u200db', 'soft-hyphen': 'a\u00adb', 'bom': 'a\ufeffb', 'tag': 'a\U000e0041b',
                 'line-separator': 'a\u2028b', 'surrogate': 'a\ud800b', 'private-use': 'a\ue000b',
                 'unassigned': 'a\u0378b'}
URI = 'https://api.example/'
HOSTILE_RESOURCES = {
    'nul': ([URI + '\x00'], 'a resource must be an absolute URI of ASCII'),
    'control': ([URI + '\x01'], 'a resource must be an absolute URI of ASCII'),
    'space': ([URI + 'a b'], 'a resource must be an absolute URI of ASCII'),
    'tab': ([URI + 'a\tb'], 'a resource must be an absolute URI of ASCII'),
    'rtl-override': ([URI + '\u202e'], 'a resource must be an absolute URI of ASCII'),
    'non-ascii': (['https://bücher.example/api'], 'a resource must be an absolute URI of ASCII'),
    'one-too-long': ([URI + 'a' * 490], 'a resource must be at most 500 characters'),
    'too-many': ([f'{URI}{n}' for n in range(21)], '"resources" must list at most 20 URIs'),
    'too-long-in-all': ([f'{URI}{n}/' + 'a' * 450 for n in range(9)], '"resources" must be at most 4000 characters'),
    '59-kb': ([f'{URI}{n}/' + 'a' * 470 for n in range(120)], '"resources" must list at most 20 URIs'),
}


def client_row(client_id):
    db.session.expire_all()
    client = Client.find(client_id)
    return client.name, client.resources


@pytest.mark.parametrize('name', HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_a_name_with_control_or_invisible_characters_is_refused_by_the_api_and_the_cli(app, http, admin,
                                                                                       make_client, name):
    hidden = f'U+{ord(name[1]):04X}'
    said = f'"name" must not contain control characters or invisible ones ({hidden}).'
    created = http.post(ADMIN, json={'client_name': name}, headers=admin[1])
    assert (created.status_code, created.get_json()) == (400, {'error': 'invalid_client_metadata',
                                                               'error_description': said})
    client_id, _ = make_client('svc')
    renamed = http.patch(f'{ADMIN}/{client_id}', json={'client_name': name}, headers=admin[1])
    assert (renamed.status_code, renamed.get_json()['error_description']) == (400, said)
    runner = app.test_cli_runner()
    for args in (['create-client', name], ['update-client', client_id, '--name', name]):
        result = runner.invoke(args=args)
        assert result.exit_code == 2 and said in result.stderr, result.output
    assert db.session.scalar(db.select(db.func.count(Client.id))) == 2  # the admin and svc
    assert client_row(client_id) == ('svc', '')


@pytest.mark.parametrize(('resources', 'said'), HOSTILE_RESOURCES.values(), ids=HOSTILE_RESOURCES.keys())
def test_hostile_resources_are_refused_by_the_api_and_the_cli(app, http, admin, make_client, resources, said):
    created = http.post(ADMIN, json={'client_name': 'svc', 'resources': resources}, headers=admin[1])
    assert created.status_code == 400
    assert created.get_json()['error'] == 'invalid_client_metadata'
    assert created.get_json()['error_description'].startswith(said)
    client_id, _ = make_client('svc')
    updated = http.patch(f'{ADMIN}/{client_id}', json={'resources': resources}, headers=admin[1])
    assert (updated.status_code, updated.get_json().get('error')) == (400, 'invalid_client_metadata')
    assert updated.get_json()['error_description'] == created.get_json()['error_description']
    options = [part for uri in resources for part in ('--resource', uri)]
    runner = app.test_cli_runner()
    for args in (['create-client', 'cli-svc', *options], ['update-client', client_id, *options]):
        result = runner.invoke(args=args)
        assert result.exit_code == 2 and said in result.stderr, result.output
    assert db.session.scalar(db.select(db.func.count(Client.id))) == 2
    assert client_row(client_id) == ('svc', '')


def test_the_most_resources_a_client_may_have_are_stored_and_used(http, admin):
    resources = [f'{URI}{n}/' + 'a' * 170 for n in range(20)]  # 20 URIs, 3,919 characters with the spaces
    created = http.post(ADMIN, json={'client_name': 'svc', 'resources': resources}, headers=admin[1]).get_json()
    assert created['resources'] == resources
    token = http.post(TOKEN_URL, data={**token_form(created['client_id'], created['client_secret']),
                                       'resource': resources[-1]})
    assert token.status_code == 200


def test_the_cli_prints_names_stored_before_the_check_escaped(app, make_client):
    # A row as an older release, or a hand-written SQL statement, may have left it.
    client, _ = Client.create('\x1b[2J\u202eevil\x9b', 'read')
    db.session.commit()
    runner = app.test_cli_runner()
    for args in (['list-clients'], ['show-client', client.client_id]):
        output = runner.invoke(args=args).output
        assert '\\x1b[2J\\u202eevil\\x9b' in output
        assert not {'\x1b', '\u202e', '\x9b'} & set(output)
    assert '\t\\x1b[2J\\u202eevil\\x9b\tread\tenabled' in runner.invoke(args=['list-clients']).output


# --- The list, a page at a time --------------------------------------------


def add_clients(number):
    """`number` clients, in one statement: what a large deployment has."""
    db.session.execute(db.insert(Client), [
        {'client_id': f'bulk-{n:05d}', 'name': f'bulk {n}', 'secret_hash': 'x', 'scope': 'read'}
        for n in range(number)])
    db.session.commit()


def walk(http, headers, path=ADMIN, between_pages=None):
    """Every page from `path` on, following `next`: the pages' client ids."""
    pages = []
    while path:
        response = http.get(path, headers=headers)
        assert response.status_code == 200, response.get_json()
        pages.append([client['client_id'] for client in response.get_json()['clients']])
        path = response.get_json().get('next')
        if path and between_pages:
            between_pages(pages[-1])
    return pages


def flat(pages):
    return [client_id for page in pages for client_id in page]


def in_database_order():
    db.session.expire_all()
    return list(db.session.scalars(db.select(Client.client_id).order_by(Client.client_id)))


def test_the_pages_walk_every_client_once_in_bounded_pages(http, admin):
    add_clients(2050)
    everyone = in_database_order()
    assert len(everyone) == 2051  # and the admin
    pages = walk(http, admin[1])
    assert [len(page) for page in pages] == [100] * 20 + [51]  # 100 by default
    assert flat(pages) == everyone  # no duplicate, no gap, in client_id order
    pages = walk(http, admin[1], f'{ADMIN}?limit=1000')
    assert [len(page) for page in pages] == [1000, 1000, 51]
    assert flat(pages) == everyone


def test_a_client_deleted_or_added_between_pages_makes_no_page_repeat_or_skip(http, admin):
    add_clients(250)
    before = in_database_order()

    def change(page):  # the client the next page starts after is deleted; another one is added before it
        db.session.execute(db.delete(Client).where(Client.client_id == page[-1]))
        db.session.execute(db.insert(Client), [{'client_id': f'0-new-{page[-1]}', 'name': 'new', 'secret_hash': 'x'}])
        db.session.commit()
    pages = walk(http, admin[1], f'{ADMIN}?limit=100', between_pages=change)
    seen = flat(pages)
    assert len(seen) == len(set(seen)) == len(before)
    assert seen == before  # the deleted ones were seen before they went; the new one sorts before every page


@pytest.mark.parametrize('query', ['limit=0', 'limit=1001', 'limit=-1', 'limit=ten', 'limit=1.5', 'limit=',
                                   'limit=99999999999999', 'limit=%C2%B2', 'after=' + 'x' * 65, 'after=a%00b'])
def test_bad_page_parameters_are_invalid_request(http, admin, query):
    response = http.get(f'{ADMIN}?{query}', headers=admin[1])
    assert response.status_code == 400 and response.mimetype == 'application/json'
    assert response.get_json()['error'] == 'invalid_request'
