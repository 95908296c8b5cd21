"""Brute-force limits, the audit log and security headers."""
import base64
import itertools
import json
import logging
import os
import subprocess
import sys

import pytest
import requests
from conftest import (
    DATABASE_URL,
    ROOT,
    TOKEN_URL,
    basic_header,
    bearer,
    count,
    free_port,
    stop_process,
    token_form,
    wait_for_port,
)

from models import Client, Item, Token, db


def from_address(address):
    """Flask test-client keyword arguments for a request from `address` (no traffic is sent)."""
    return {'environ_base': {'REMOTE_ADDR': address}}


def fail(http, client_id='no-such-client', address='127.0.0.1', url=TOKEN_URL):
    return http.post(url, data=token_form(client_id, 'wrong'), **from_address(address))


def assert_throttled(response):
    assert response.status_code == 429
    assert response.get_json()['error'] == 'temporarily_unavailable'
    assert 1 <= int(response.headers['Retry-After']) <= 60
    assert response.headers['Cache-Control'] == 'no-store'


def test_an_address_is_throttled_after_ten_failures_even_with_the_right_secret(http, credentials):
    for number in range(10):  # ten client ids, each under its own limit: the address is over its own
        assert fail(http, client_id=f'no-such-client-{number}').status_code == 401
    assert_throttled(http.post(TOKEN_URL, data=token_form(*credentials)))
    assert_throttled(fail(http))


def test_other_addresses_are_not_throttled_by_someone_elses_failures(http, credentials):
    for _ in range(12):
        fail(http, address='127.0.0.9')
    assert_throttled(fail(http, address='127.0.0.9'))
    response = http.post(TOKEN_URL, data=token_form(*credentials), **from_address('127.0.0.10'))
    assert response.status_code == 200


def test_failures_from_other_addresses_never_refuse_a_clients_correct_secret(http, make_client):
    # RFC 6749 §2.3.1 asks to resist brute force, not to let a stranger who
    # knows a client id lock that client out.
    victim = make_client('victim')
    for address in range(40):  # 40 addresses, 3 failures each: none is over its limits
        for _ in range(3):
            assert fail(http, victim[0], address=f'127.0.1.{address}').status_code == 401
    for url in ('/oauth/revoke', '/oauth/introspect'):  # the endpoints a resource server's client uses
        for _ in range(2):
            response = http.post(url, data={'token': 'x', 'client_id': victim[0], 'client_secret': 'x'},
                                 **from_address('127.0.1.99'))
            assert response.status_code == 401
    ok = http.post(TOKEN_URL, data=token_form(*victim), **from_address('127.0.2.1'))
    assert ok.status_code == 200


def test_the_address_guessing_a_clients_secret_is_stopped_and_no_other(http, make_client):
    victim = make_client('victim')
    for _ in range(5):
        assert fail(http, victim[0], address='127.0.1.1').status_code == 401
    # The guesser is refused, with the right secret too; the client elsewhere is not.
    assert_throttled(http.post(TOKEN_URL, data=token_form(*victim), **from_address('127.0.1.1')))
    assert http.post(TOKEN_URL, data=token_form(*victim), **from_address('127.0.1.2')).status_code == 200
    # The guesser's other clients' ids are not refused until the address's own limit.
    other = make_client('other')
    assert http.post(TOKEN_URL, data=token_form(*other), **from_address('127.0.1.1')).status_code == 200


def test_re_encoding_the_client_id_does_not_reset_its_count(http, make_client):
    client_id, secret = make_client(client_id='svc-a', client_secret='right')
    for number in range(5):
        # Appendix B: "svc%2Da" is "svc-a".
        raw = base64.b64encode(f'svc%2D{"a" if number % 2 else "%61"}:wrong'.encode()).decode()
        response = http.post(TOKEN_URL, data={'grant_type': 'client_credentials'},
                             headers={'Authorization': f'Basic {raw}'}, **from_address('127.0.3.1'))
        assert response.status_code == 401
    assert_throttled(http.post(TOKEN_URL, data=token_form(client_id, secret), **from_address('127.0.3.1')))


def test_a_throttled_caller_is_audited_once_per_window(http, make_client, no_credentials_in_logs):
    for _ in range(10):
        fail(http, address='127.0.5.1')
    for _ in range(50):
        assert_throttled(fail(http, address='127.0.5.1'))
    throttled = [line for line in no_credentials_in_logs if '"authentication_throttled"' in line]
    assert len(throttled) == 1


def test_failures_on_revocation_and_introspection_count_too(http, credentials, token):
    for url in ['/oauth/revoke'] * 3 + ['/oauth/introspect'] * 2:  # five, the limit for one client id from one address
        response = http.post(url, data={'token': token, 'client_id': credentials[0], 'client_secret': 'x'})
        assert response.status_code == 401
    assert_throttled(http.post(TOKEN_URL, data=token_form(*credentials)))


def test_successes_are_not_counted(http, credentials):
    for _ in range(25):
        assert http.post(TOKEN_URL, data=token_form(*credentials)).status_code == 200


def test_limits_come_from_config(app, http, monkeypatch):
    monkeypatch.setitem(app.config, 'AUTH_FAILURES_PER_ADDRESS', '2 per minute')
    assert [fail(http).status_code for _ in range(3)] == [401, 401, 429]


def test_the_api_is_not_rate_limited_by_token_failures(http, token):
    for _ in range(12):
        fail(http)
    assert http.get('/api/me', headers=bearer(token)).status_code == 200


@pytest.fixture
def server_process(tmp_path):
    """server.py in its own process with extra environment; returns its URL."""
    processes = []

    def start(**env):
        port = free_port()
        process = subprocess.Popen([sys.executable, 'server.py', '--port', str(port)], cwd=ROOT,
                                   env={**os.environ, 'DATABASE_URL': DATABASE_URL, **env},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(process)
        wait_for_port(port, process)
        return f'http://127.0.0.1:{port}'
    yield start
    for process in processes:
        stop_process(process)


def test_the_per_client_limit_comes_from_the_environment(server_process):
    url = server_process(FLASK_AUTH_FAILURES_PER_CLIENT_ADDRESS='2 per minute')
    session = requests.Session()
    statuses = [session.post(f'{url}/oauth/token', data=token_form('one-client', 'wrong'), timeout=10).status_code
                for _ in range(3)]
    assert statuses == [401, 401, 429]


def test_forwarded_for_is_ignored_without_trusted_proxies(server_process):
    url = server_process()
    session = requests.Session()
    statuses = [session.post(f'{url}/oauth/token', data=token_form(f'x{n}', 'y'), timeout=10,
                             headers={'X-Forwarded-For': f'127.0.5.{n}'}).status_code for n in range(11)]
    assert statuses == [401] * 10 + [429]  # a forged header does not buy new attempts


def test_forwarded_for_is_the_address_behind_a_trusted_proxy(server_process):
    url = server_process(FLASK_TRUSTED_PROXIES='1')
    session, attempts = requests.Session(), itertools.count()

    def attempt(address):  # each with another client id: the address's own limit is what counts
        return session.post(f'{url}/oauth/token', data=token_form(f'x{next(attempts)}', 'y'), timeout=10,
                            headers={'X-Forwarded-For': address}).status_code
    assert [attempt('127.0.6.1') for _ in range(11)] == [401] * 10 + [429]
    assert attempt('127.0.6.2') == 401  # another address behind the proxy is not throttled


def test_limits_can_be_turned_off(server_process):
    url = server_process(FLASK_RATELIMIT_ENABLED='false')
    session = requests.Session()
    assert {session.post(f'{url}/oauth/token', data=token_form('x', 'y'), timeout=10).status_code
            for _ in range(15)} == {401}


# --- The audit log --------------------------------------------------------


@pytest.fixture
def audit_events():
    """The audit log's events, parsed, as they are written."""
    events = []

    class Collect(logging.Handler):
        def emit(self, record):
            events.append(json.loads(record.getMessage()))
    handler = Collect()
    logging.getLogger('oauth.audit').addHandler(handler)
    yield events
    logging.getLogger('oauth.audit').removeHandler(handler)


def test_token_issued_and_revoked_are_audited(http, credentials, audit_events):
    response = http.post(TOKEN_URL, data=token_form(*credentials), headers={'X-Request-ID': 'req-123'})
    assert response.headers['X-Request-ID'] == 'req-123'
    issued = audit_events[-1]
    assert issued['event'] == 'token_issued'
    assert issued['client_id'] == credentials[0]
    assert issued['remote_addr'] == '127.0.0.1'
    assert issued['request_id'] == 'req-123'
    assert issued['scope'] == 'read write' and isinstance(issued['token_id'], int)
    assert issued['time'].endswith('+00:00')
    http.post('/oauth/revoke', data={'token': response.get_json()['access_token']}, headers=basic_header(*credentials))
    assert audit_events[-1]['event'] == 'token_revoked'
    assert audit_events[-1]['token_id'] == issued['token_id']


@pytest.mark.parametrize('client_id, secret, reason', [
    ('known', 'wrong', 'wrong_secret'),
    ('unknown', 'wrong', 'unknown_client'),
    ('', 'wrong', 'no_credentials'),
])
def test_failures_are_audited_with_a_reason_the_caller_never_sees(http, make_client, audit_events,
                                                                 client_id, secret, reason):
    real_id, _ = make_client()
    client_id = real_id if client_id == 'known' else client_id
    response = http.post(TOKEN_URL, data=token_form(client_id, secret))
    assert response.get_json() == {'error': 'invalid_client'}  # no reason for the caller
    failed = audit_events[-1]
    assert failed['event'] == 'authentication_failed' and failed['reason'] == reason
    assert failed['client_id'] == (client_id or None)
    assert failed['request_id'] == response.headers['X-Request-ID']


def test_throttling_is_audited(http, audit_events):
    for _ in range(11):
        fail(http)
    assert audit_events[-1]['event'] == 'authentication_throttled'


@pytest.mark.parametrize('incoming', [None, '', 'has space', 'x' * 65, 'quote"', 'semi;colon', '{"json": 1}'])
def test_missing_or_unusable_request_ids_are_replaced(http, incoming):
    response = http.get('/healthz', headers={} if incoming is None else {'X-Request-ID': incoming})
    assert response.headers['X-Request-ID'] != incoming
    assert len(response.headers['X-Request-ID']) == 32


def test_client_management_is_audited(app, audit_events):
    runner = app.test_cli_runner()
    created = json.loads(runner.invoke(args=['create-client', 'svc', '--json']).output)
    client_id = created['client_id']
    for args in (['update-client', client_id, '--name', 'renamed'], ['disable-client', client_id],
                 ['enable-client', client_id], ['rotate-secret', client_id, '--grace', '10'],
                 ['delete-client', client_id, '--yes']):
        assert runner.invoke(args=args).exit_code == 0
    assert [event['event'] for event in audit_events] == [
        'client_created', 'client_updated', 'client_disabled', 'client_enabled', 'secret_rotated',
        'client_deleted']
    assert all(event['client_id'] == client_id and event['actor'] == 'cli' for event in audit_events)
    assert audit_events[4]['grace'] == 10


# --- Security headers -----------------------------------------------------


def test_every_answer_has_the_security_headers(http, credentials, token):
    answers = [
        http.post(TOKEN_URL, data=token_form(*credentials)),
        http.post(TOKEN_URL, data=token_form(credentials[0], 'wrong')),
        http.get('/api/me', headers=bearer(token)),
        http.get('/api/me'),
        http.get('/nowhere'),
        http.put('/api/items'),
        http.post('/api/items', data=b'x' * 70_000, headers=bearer(token)),
        http.get('/.well-known/oauth-authorization-server'),
        http.get('/healthz'),
    ]
    for answer in answers:
        assert answer.headers['X-Content-Type-Options'] == 'nosniff', answer.status
        assert answer.headers['Cache-Control'] == 'no-store', answer.status
        assert "frame-ancestors 'none'" in answer.headers['Content-Security-Policy']
        assert answer.mimetype == 'application/json', answer.status


def test_throttling_changes_nothing_in_the_database(http, credentials):
    # Throttling is a refusal, not a change: the client row stays as it was.
    for _ in range(11):
        fail(http, credentials[0])
    db.session.expire_all()
    client = Client.find(credentials[0])
    assert client.disabled is False and client.check_secret(credentials[1])


def test_a_client_minting_too_many_tokens_gets_429_and_others_do_not(app, http, make_client, monkeypatch,
                                                                    no_credentials_in_logs):
    monkeypatch.setitem(app.config, 'TOKENS_PER_CLIENT', '3 per minute')
    busy, other = make_client('busy'), make_client('other')
    assert [http.post(TOKEN_URL, data=token_form(*busy)).status_code for _ in range(3)] == [200] * 3
    for _ in range(3):
        refused = http.post(TOKEN_URL, data=token_form(*busy))
        assert_throttled(refused)
    assert count(Token) == 3  # nothing stored for the refused ones
    assert http.post(TOKEN_URL, data=token_form(*other)).status_code == 200
    assert sum('"token_issuance_throttled"' in line for line in no_credentials_in_logs) == 1


# --- The issuer: configured, never the request's Host ----------------------

BILLING = 'http://billing.example.com/api'  # another API, on a host an attacker names


def claims_of(jwt):
    payload = jwt.split('.')[1]
    return json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))


@pytest.mark.parametrize('token_format', ['opaque', 'jwt'])
def test_a_token_for_another_api_is_refused_whatever_host_the_request_names(http, make_client, token_format):
    # A client that may get tokens for this server's API and for billing's.
    client_id, secret = make_client('svc', 'read write')
    client = Client.find(client_id)
    client.resources, client.token_format = f'http://localhost/api {BILLING}', token_format
    db.session.commit()
    response = http.post(TOKEN_URL, data={**token_form(client_id, secret), 'resource': BILLING})
    for_billing = bearer(response.get_json()['access_token'])
    as_billing = {'base_url': 'http://billing.example.com'}
    for answer in (http.get('/api/me', headers=for_billing, **as_billing),
                   http.get('/api/items', headers=for_billing, **as_billing),
                   http.post('/api/items', headers=for_billing, json={'name': 'x'}, **as_billing),
                   http.get('/api/me', headers={**for_billing, 'Host': 'billing.example.com'})):
        assert (answer.status_code, answer.get_json().get('error')) == (401, 'invalid_token')
    assert count(Item) == 0


def test_the_metadata_and_the_jwt_iss_name_the_configured_issuer_whatever_host_is_sent(http, make_client):
    client_id, secret = make_client()
    Client.find(client_id).token_format = 'jwt'
    db.session.commit()
    for host in ('billing.example.com', 'localhost:8080', '127.0.0.1'):
        metadata = http.get('/.well-known/oauth-authorization-server', headers={'Host': host}).get_json()
        assert metadata['issuer'] == 'http://localhost'
        assert metadata['token_endpoint'] == 'http://localhost/oauth/token'
        response = http.post(TOKEN_URL, data=token_form(client_id, secret), headers={'Host': host})
        claims = claims_of(response.get_json()['access_token'])
        assert (claims['iss'], claims['aud']) == ('http://localhost', 'http://localhost/api')


@pytest.fixture
def no_issuer(app, monkeypatch):
    """The app as a WSGI server runs it when nobody set FLASK_OAUTH2_ISSUER."""
    monkeypatch.setitem(app.config, 'OAUTH2_ISSUER', None)


def test_without_an_issuer_requests_that_need_it_are_503_with_one_log_line(app, http, make_client, get_token,
                                                                          no_issuer, no_credentials_in_logs,
                                                                          monkeypatch):
    client_id, secret = make_client()
    with monkeypatch.context() as configured:  # a token issued while the issuer was set
        configured.setitem(app.config, 'OAUTH2_ISSUER', 'http://localhost')
        access_token = get_token(client_id, secret)
    answers = [
        http.get('/.well-known/oauth-authorization-server'),
        http.post(TOKEN_URL, data=token_form(client_id, secret)),
        http.get('/api/me', headers=bearer(access_token)),
        http.post('/oauth/introspect', data={'token': access_token, 'client_id': client_id, 'client_secret': secret}),
    ]
    for answer in answers:
        assert (answer.status_code, answer.get_json().get('error')) == (503, 'temporarily_unavailable')
        assert int(answer.headers.get('Retry-After', 0)) > 0
    said = [line for line in no_credentials_in_logs if 'FLASK_OAUTH2_ISSUER is not set' in line]
    assert len(said) == len(answers)
    assert not [line for line in no_credentials_in_logs if 'Traceback' in line]
    health = http.get('/healthz')
    assert (health.status_code, health.get_json()) == (
        503, {'status': 'unavailable', 'failed': {'issuer': 'FLASK_OAUTH2_ISSUER is not set'}})


@pytest.mark.parametrize(('host', 'issuer', 'said'), [
    ('127.0.0.1', 'http://127.0.0.1:5000', ''),
    ('localhost', 'http://localhost:5000', ''),
    ('::1', 'http://[::1]:5000', ''),
    ('0.0.0.0', 'http://127.0.0.1:5000', 'server.py: listening on every address: set FLASK_OAUTH2_ISSUER'),  # noqa: S104
    ('::', 'http://127.0.0.1:5000', 'server.py: listening on every address: set FLASK_OAUTH2_ISSUER'),
])
def test_python_server_py_takes_the_issuer_from_the_address_it_listens_on(app, no_issuer, capsys, host, issuer,
                                                                          said):
    from production.settings import set_development_issuer
    set_development_issuer(app, host, 5000)
    assert app.config['OAUTH2_ISSUER'] == issuer
    err = capsys.readouterr().err
    assert err.startswith(said) and len(err.splitlines()) == (1 if said else 0)


def test_python_server_py_keeps_a_configured_issuer(app, monkeypatch):
    from production.settings import set_development_issuer
    monkeypatch.setitem(app.config, 'OAUTH2_ISSUER', 'https://auth.example.com')
    set_development_issuer(app, '0.0.0.0', 5000)  # noqa: S104
    assert app.config['OAUTH2_ISSUER'] == 'https://auth.example.com'
