"""DPoP end to end: client.py (script and module) against `python server.py`
and gunicorn, on SQLite and PostgreSQL; a proof replayed to another worker
or another app server is refused; nonces every app server accepts."""
import json
import os
import subprocess
import sys
import threading

import pytest
import requests
from conftest import (
    ROOT,
    SERVER_KINDS,
    create_client,
    empty_database,
    free_port,
    stop_process,
    token_form,
    wait_for_port,
)

from client import ApiClient, PrivateKey

ISSUER = 'https://auth.test'  # what every app server of one deployment names itself, behind its proxy


@pytest.fixture(params=SERVER_KINDS)
def database_url(request, tmp_path):
    return empty_database(request, tmp_path, request.param)


@pytest.fixture
def server_py(tmp_path):
    """`python server.py` with its demo client, on a database of its own: its URL."""
    port, log = free_port(), tmp_path / 'server.log'
    with open(log, 'w') as output:
        process = subprocess.Popen([sys.executable, 'server.py', '--port', str(port)], cwd=ROOT,
                                   env={**os.environ, 'DATABASE_URL': f'sqlite:///{tmp_path}/server.sqlite'},
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process)
        yield f'http://127.0.0.1:{port}'
    finally:
        stop_process(process)


def client(server, *args, cwd=ROOT):
    """client.py run as a user runs it, in `cwd` (where its files land)."""
    return subprocess.run([sys.executable, str(ROOT / 'client.py'), '--server', server, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=30)


def test_the_client_script_gets_and_uses_a_bound_token(server_py, tmp_path):
    token = client(server_py, '--dpop', 'token')
    assert token.returncode == 0, token.stderr
    assert json.loads(token.stdout)['token_type'] == 'DPoP'
    me = client(server_py, '--dpop', 'me')
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)['client_id'] == 'demo-client'
    # A key kept in a file (make-key writes it, readable by its owner only).
    assert client(server_py, 'make-key', 'dpop.pem', cwd=tmp_path).returncode == 0
    assert (tmp_path / 'dpop.pem').stat().st_mode & 0o777 == 0o600
    added = client(server_py, '--dpop-key', 'dpop.pem', 'add-item', 'bound pens', cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    listed = client(server_py, '--dpop-key', 'dpop.pem', 'items', cwd=tmp_path)
    assert [item['name'] for item in json.loads(listed.stdout)['items']] == ['bound pens']
    missing = client(server_py, '--dpop-key', 'no-such.pem', cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr == 'client.py: cannot read no-such.pem: No such file or directory\n'
    both = client(server_py, '--dpop', '--dpop-key', 'dpop.pem')
    assert both.returncode == 2 and 'not allowed with argument' in both.stderr


def test_the_client_module_with_nonces_on_two_workers(database_url, start_gunicorn):
    server = start_gunicorn(database_url, workers=2, FLASK_DPOP_NONCE='true', FLASK_SECRET_KEY='a secret')
    api = ApiClient(server.url, *create_client(database_url), dpop_key='new')
    # The first token request is refused for want of a nonce, and retried with it.
    assert api.me()['name'] == 'load'
    assert api.create_item('pens')['name'] == 'pens'
    for _ in range(6):  # a new connection each time: both workers answer, with the same nonce
        api.session.close()
        assert [item['name'] for item in api.list_items()['items']] == ['pens']
    assert len(api.auth.nonces) == 1
    introspected = api.introspect(api.auth.access_token)
    assert introspected['token_type'] == 'DPoP' and introspected['cnf']['jkt'] == api.auth.dpop.key.thumbprint()


def send_together(requests_to_send):
    """Send each (method, url, kwargs) at the same moment, each on a new connection; the status codes."""
    answers, barrier = [None] * len(requests_to_send), threading.Barrier(len(requests_to_send))

    def send(number, method, url, kwargs):
        barrier.wait(timeout=30)
        answers[number] = requests.request(method, url, timeout=30, **kwargs).status_code
    threads = [threading.Thread(target=send, args=(number, *sent)) for number, sent in enumerate(requests_to_send)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_a_replayed_proof_is_refused_by_every_worker_of_every_app_server(database_url, start_gunicorn):
    # Two app servers of two workers on one database, one issuer: each proof
    # is sent eight times at once, to both servers; one is accepted.
    first, second = (start_gunicorn(database_url, workers=2, FLASK_OAUTH2_ISSUER=ISSUER) for _ in range(2))
    client_id, secret = create_client(database_url)
    key = PrivateKey(PrivateKey.generate('ES256')[0])
    proof = key.dpop_proof('POST', f'{ISSUER}/oauth/token')
    sent = [('POST', f'{server.url}/oauth/token', {'data': token_form(client_id, secret), 'headers': {'DPoP': proof}})
            for server in (first, second) * 4]
    answers = send_together(sent)
    assert sorted(answers) == [200] + [400] * 7, answers
    access_token = None
    for server in (first, second):
        answer = requests.post(f'{server.url}/oauth/token', data=token_form(client_id, secret), timeout=10,
                               headers={'DPoP': key.dpop_proof('POST', f'{ISSUER}/oauth/token')})
        assert answer.json()['token_type'] == 'DPoP'
        access_token = answer.json()['access_token']
    proof = key.dpop_proof('GET', f'{ISSUER}/api/me', access_token)
    headers = {'Authorization': f'DPoP {access_token}', 'DPoP': proof}
    answers = send_together([('GET', f'{server.url}/api/me', {'headers': headers}) for server in (first, second) * 4])
    assert sorted(answers) == [200] + [401] * 7, answers
    # As a bearer token, on any worker: refused (RFC 9449 §7.2).
    assert {requests.get(f'{server.url}/api/me', headers={'Authorization': f'Bearer {access_token}'},
                         timeout=10).status_code for server in (first, second, first, second)} == {401}


def test_every_app_server_accepts_the_nonces_of_the_others(database_url, start_gunicorn):
    env = {'FLASK_OAUTH2_ISSUER': ISSUER, 'FLASK_DPOP_NONCE': 'true', 'FLASK_SECRET_KEY': 'shared secret'}
    first, second = (start_gunicorn(database_url, workers=2, **env) for _ in range(2))
    client_id, secret = create_client(database_url)
    key = PrivateKey(PrivateKey.generate('ES256')[0])
    asked = requests.post(f'{first.url}/oauth/token', data=token_form(client_id, secret), timeout=10,
                          headers={'DPoP': key.dpop_proof('POST', f'{ISSUER}/oauth/token')})
    assert asked.status_code == 400 and asked.json()['error'] == 'use_dpop_nonce'
    nonce = asked.headers['DPoP-Nonce']
    answer = requests.post(f'{second.url}/oauth/token', data=token_form(client_id, secret), timeout=10,
                           headers={'DPoP': key.dpop_proof('POST', f'{ISSUER}/oauth/token', nonce=nonce)})
    assert answer.status_code == 200, answer.text
    assert answer.headers['DPoP-Nonce'] == nonce
    # An app server with another secret gives, and accepts, other nonces.
    third = start_gunicorn(database_url, workers=1, **{**env, 'FLASK_SECRET_KEY': 'another secret'})
    refused = requests.post(f'{third.url}/oauth/token', data=token_form(client_id, secret), timeout=10,
                            headers={'DPoP': key.dpop_proof('POST', f'{ISSUER}/oauth/token', nonce=nonce)})
    assert refused.status_code == 400 and refused.headers['DPoP-Nonce'] != nonce
