"""The real deployment: gunicorn with several workers on SQLite and PostgreSQL.

Every server here is started by the test on 127.0.0.1; every load loop is
bounded in count and in time.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests
import sqlalchemy as sa
from conftest import (
    ROOT,
    SERVER_KINDS,
    bearer,
    create_client,
    empty_database,
    free_port,
    run_python,
    stop_process,
    token_form,
    wait_for_port,
)

DATABASE_DOWN = {'status': 'unavailable', 'failed': {'database': 'unavailable'}}  # /healthz


@pytest.fixture(params=SERVER_KINDS)
def database_url(request, tmp_path):
    """An empty database of each kind, for one test."""
    return empty_database(request, tmp_path, request.param)


@pytest.fixture
def gunicorn(database_url, start_gunicorn):
    def start(workers=2, url=None, wait_for_health=True, **env):
        # The load here mints tokens for one client far faster than any real
        # one should; TOKENS_PER_CLIENT itself is tested in test_hardening.py.
        env.setdefault('FLASK_TOKENS_PER_CLIENT', '"1000000 per minute"')
        return start_gunicorn(url or database_url, workers, wait_for_health, **env)
    return start


def table_count(database_url, table):
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(f'SELECT count(*) FROM {table}')).scalar_one()
    finally:
        engine.dispose()


class Load:
    """Threads that get tokens (Basic and form), call /api/me and create items,
    recording what the server acknowledged."""

    def __init__(self, url, credentials, threads=8, seconds=3.0, rounds=300):
        self.url, self.credentials = url, credentials
        self.threads, self.seconds, self.rounds = threads, seconds, rounds
        self.tokens, self.items, self.errors = [], [], []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def work(self, number):
        session, deadline = requests.Session(), time.monotonic() + self.seconds
        client_id, secret = self.credentials
        for round_ in range(self.rounds):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                if number % 2:
                    answer = session.post(f'{self.url}/oauth/token', data={'grant_type': 'client_credentials'},
                                          auth=(client_id, secret), timeout=10)
                else:
                    answer = session.post(f'{self.url}/oauth/token', data=token_form(client_id, secret), timeout=10)
                if answer.status_code != 200:
                    raise AssertionError(f'token: {answer.status_code} {answer.text[:200]}')
                access_token = answer.json()['access_token']
                with self.lock:
                    self.tokens.append(access_token)
                answer = session.get(f'{self.url}/api/me', headers=bearer(access_token), timeout=10)
                if answer.status_code != 200:
                    raise AssertionError(f'me: {answer.status_code} {answer.text[:200]}')
                name = f'thread-{number}-round-{round_}'
                answer = session.post(f'{self.url}/api/items', json={'name': name},
                                      headers=bearer(access_token), timeout=10)
                if answer.status_code != 201:
                    raise AssertionError(f'items: {answer.status_code} {answer.text[:200]}')
                with self.lock:
                    self.items.append(name)
            except (requests.RequestException, AssertionError, ValueError) as error:
                with self.lock:
                    self.errors.append(repr(error))
                if self.stop.is_set():
                    return

    def run(self):
        workers = [threading.Thread(target=self.work, args=(n,)) for n in range(self.threads)]
        for worker in workers:
            worker.start()
        self.workers = workers
        return self

    def join(self):
        for worker in self.workers:
            worker.join(timeout=self.seconds + 30)
        return self


def assert_all_valid(url, tokens, items):
    session = requests.Session()
    for access_token in tokens:
        answer = session.get(f'{url}/api/me', headers=bearer(access_token), timeout=10)
        assert answer.status_code == 200, answer.text
    listed = set()
    for access_token in tokens[:1]:
        answer = session.get(f'{url}/api/items', headers=bearer(access_token), timeout=10)
        listed = {item['name'] for item in answer.json()['items']}
    assert set(items) <= listed


def test_workers_starting_together_on_an_empty_database(gunicorn, database_url, request, tmp_path):
    # The race is short, so it is run on three empty databases.
    kind = 'sqlite' if database_url.startswith('sqlite') else 'postgresql'
    for url in (database_url, empty_database(request, tmp_path, kind), empty_database(request, tmp_path, kind)):
        # 24 failed logins from one address: the rate limiter (tested elsewhere) stays out of it.
        server = gunicorn(workers=4, url=url, wait_for_health=False, FLASK_RATELIMIT_ENABLED='false')
        answers = []

        def hit(server=server, answers=answers):
            try:
                answers.append(requests.post(f'{server.url}/oauth/token', timeout=20,
                                             data=token_form('nobody', 'nothing')).status_code)
            except requests.RequestException as error:
                answers.append(repr(error))
        threads = [threading.Thread(target=hit) for _ in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert answers == [401] * 24  # the schema was created once, without errors
        assert table_count(url, 'clients') == 0
        server.kill()


def test_concurrent_load_has_no_errors_and_every_success_is_stored(gunicorn, database_url):
    server = gunicorn(workers=2)
    credentials = create_client(database_url)
    load = Load(server.url, credentials).run().join()
    assert load.errors == []
    assert len(load.tokens) >= 50
    assert len(set(load.tokens)) == len(load.tokens)
    assert table_count(database_url, 'tokens') == len(load.tokens)
    assert table_count(database_url, 'items') == len(load.items)
    assert_all_valid(server.url, load.tokens, load.items)
    # The servers' own output: one audit line per token, and no token or secret.
    log = server.log_path.read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith('{"time"')]
    assert sum(event['event'] == 'token_issued' for event in events) == len(load.tokens)
    assert not [t for t in [*load.tokens, credentials[1]] if t in log]


def test_database_storage_shares_failure_counts_between_workers(gunicorn, database_url):
    server = gunicorn(workers=2, FLASK_RATELIMIT_STORAGE_URI='database://')
    session = requests.Session()
    statuses = [session.post(f'{server.url}/oauth/token', data=token_form(f'x{n}', 'y'), timeout=10).status_code
                for n in range(11)]
    assert statuses == [401] * 10 + [429]  # counted across both workers
    # The address, each client id from it, and the note that the refusal was audited.
    assert table_count(database_url, 'rate_limits') == 1 + 10 + 1


def test_revocation_takes_effect_in_every_worker(gunicorn, database_url):
    server = gunicorn(workers=2)
    client_id, secret = create_client(database_url)
    access_token = requests.post(f'{server.url}/oauth/token', data=token_form(client_id, secret),
                                 timeout=10).json()['access_token']
    session = requests.Session()
    assert all(session.get(f'{server.url}/api/me', headers=bearer(access_token), timeout=10).status_code == 200
               for _ in range(10))
    revoked = session.post(f'{server.url}/oauth/revoke', timeout=10,
                           data={'token': access_token, 'client_id': client_id, 'client_secret': secret})
    assert revoked.status_code == 200
    assert [session.get(f'{server.url}/api/me', headers=bearer(access_token), timeout=10).status_code
            for _ in range(20)] == [401] * 20


def test_tokens_and_items_survive_a_restart(gunicorn, database_url):
    server = gunicorn()
    credentials = create_client(database_url)
    load = Load(server.url, credentials, threads=2, seconds=1, rounds=5).run().join()
    assert load.errors == [] and load.tokens
    server.stop()
    restarted = gunicorn()
    assert_all_valid(restarted.url, load.tokens, load.items)


def test_kill_9_during_writes_loses_nothing_acknowledged(gunicorn, database_url):
    server = gunicorn(workers=2)
    credentials = create_client(database_url)
    load = Load(server.url, credentials, threads=8, seconds=15).run()
    time.sleep(1.5)
    server.kill()  # SIGKILL to the master and every worker, mid-write
    load.stop.set()
    load.join()
    assert len(load.tokens) >= 10
    if database_url.startswith('sqlite'):
        with sqlite3.connect(database_url.removeprefix('sqlite:///')) as connection:
            assert connection.execute('PRAGMA integrity_check').fetchall() == [('ok',)]
    restarted = gunicorn(workers=2)
    assert_all_valid(restarted.url, load.tokens, load.items)
    # Every acknowledged token is stored exactly as issued.
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        stored = set(connection.execute(sa.text('SELECT access_token_hash FROM tokens')).scalars())
    engine.dispose()
    assert {hashlib.sha256(t.encode()).hexdigest() for t in load.tokens} <= stored


def test_health_reports_the_database(gunicorn, database_url, tmp_path):
    server = gunicorn()
    answer = requests.get(f'{server.url}/healthz', timeout=10)
    assert (answer.status_code, answer.json()) == (200, {'status': 'ok'})
    if database_url.startswith('sqlite'):
        # (A folder that does not exist is refused at start: production/settings.py.)
        (tmp_path / 'broken.sqlite').write_bytes(b'not a database, but a file of text' * 100)
        broken = f'sqlite:///{tmp_path}/broken.sqlite'
    else:
        broken = f'postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing'
    down = gunicorn(url=broken, wait_for_health=False)
    answer = requests.get(f'{down.url}/healthz', timeout=20)
    assert (answer.status_code, answer.json()) == (503, DATABASE_DOWN)
    answer = requests.post(f'{down.url}/oauth/token', data=token_form('a', 'b'), timeout=20)
    assert answer.status_code == 503
    assert answer.json()['error'] == 'temporarily_unavailable'
    assert answer.headers['Retry-After']


def test_no_token_issued_before_a_disable_completes_is_usable_after_it(gunicorn, database_url):
    # Token requests race disable-client on both workers; whatever the timing,
    # every token the server acknowledged is dead once the command returns,
    # and stays dead after enable-client.
    server = gunicorn(workers=2)
    client_id, secret = create_client(database_url)
    acknowledged, stop = [], threading.Event()

    def issue():
        session = requests.Session()
        for _ in range(2000):  # bounded in count, and by `stop` in time
            if stop.is_set():
                return
            answer = session.post(f'{server.url}/oauth/token', data=token_form(client_id, secret), timeout=20)
            if answer.status_code == 200:
                acknowledged.append(answer.json()['access_token'])
    threads = [threading.Thread(target=issue) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        disabled = run_python('-m', 'flask', '--app', 'server', 'disable-client', client_id,
                              env={'DATABASE_URL': database_url})
        assert disabled.returncode == 0, disabled.stderr
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert len(acknowledged) >= 20
    session = requests.Session()

    def usable():
        return [t for t in acknowledged
                if session.get(f'{server.url}/api/me', headers=bearer(t), timeout=10).status_code != 401]
    assert usable() == []
    enabled = run_python('-m', 'flask', '--app', 'server', 'enable-client', client_id,
                         env={'DATABASE_URL': database_url})
    assert enabled.returncode == 0, enabled.stderr
    assert usable() == []


def test_a_disabled_client_is_refused_by_every_worker(gunicorn, database_url):
    server = gunicorn(workers=2)
    client_id, secret = create_client(database_url)
    token = requests.post(f'{server.url}/oauth/token', data=token_form(client_id, secret), timeout=10).json()
    disabled = run_python('-m', 'flask', '--app', 'server', 'disable-client', client_id,
                          env={'DATABASE_URL': database_url})
    assert disabled.returncode == 0, disabled.stderr
    # A new connection each time, so that both workers answer; fewer than the
    # five failures one worker allows an address before it throttles.
    refused = [requests.post(f'{server.url}/oauth/token', data=token_form(client_id, secret), timeout=10).status_code
               for _ in range(4)]
    refused += [requests.get(f'{server.url}/api/me', headers=bearer(token['access_token']), timeout=10).status_code
                for _ in range(6)]
    assert refused == [401] * 10


def test_gunicorn_believes_no_forwarded_header_and_logs_no_query(gunicorn):
    server = gunicorn(workers=1, GUNICORN_CMD_ARGS='--access-logfile -')
    metadata = requests.get(f'{server.url}/.well-known/oauth-authorization-server', timeout=10,
                            headers={'X-Forwarded-Proto': 'https', 'X-Forwarded-Ssl': 'on'}).json()
    assert metadata['issuer'] == server.url  # FLASK_OAUTH2_ISSUER, whatever a forwarded header says
    answer = requests.get(f'{server.url}/api/me?access_token=leaked-in-a-url-123', timeout=10)
    assert answer.status_code == 400
    server.stop()  # flushes the access log
    log = server.log_path.read_text()
    assert '"GET /api/me HTTP/1.1" 400' in log
    assert 'leaked-in-a-url-123' not in log


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
@pytest.mark.parametrize('change', ['deleted', 'replaced'])
def test_a_sqlite_file_deleted_or_replaced_under_the_server_is_noticed(start_gunicorn, tmp_path, change):
    database = tmp_path / 'moving.sqlite'
    database_url = f'sqlite:///{database}'
    server = start_gunicorn(database_url, workers=2)
    credentials = create_client(database_url)
    session = requests.Session()
    for _ in range(4):  # both workers have opened the file
        assert session.post(f'{server.url}/oauth/token', data=token_form(*credentials), timeout=10).status_code == 200
        assert session.get(f'{server.url}/healthz', timeout=10).status_code == 200
    database.rename(tmp_path / 'moved.sqlite')
    if change == 'replaced':  # a copy, as a restore from backup would put there
        shutil.copyfile(tmp_path / 'moved.sqlite', database)
    for _ in range(4):
        health = session.get(f'{server.url}/healthz', timeout=10)
        assert (health.status_code, health.json()) == (503, DATABASE_DOWN)
        answer = session.post(f'{server.url}/oauth/token', data=token_form(*credentials), timeout=10)
        assert answer.status_code == 503  # no token acknowledged into a file that is gone
        assert answer.json()['error'] == 'temporarily_unavailable'


def post_chunked(url, body: bytes, chunk_size=8192) -> tuple[int, dict]:
    """POST a form with Transfer-Encoding: chunked, as requests cannot be
    made to; returns the status code and the JSON body."""
    host, port = url.removeprefix('http://').split(':')
    request = (b'POST /oauth/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
               b'Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n')
    for start in range(0, len(body), chunk_size):
        chunk = body[start:start + chunk_size]
        request += f'{len(chunk):x}\r\n'.encode() + chunk + b'\r\n'
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(request + b'0\r\n\r\n')
        answer = b''
        while data := connection.recv(65536):
            answer += data
    head, _, payload = answer.partition(b'\r\n\r\n')
    return int(head.split()[1]), json.loads(payload)


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
def test_a_chunked_body_over_the_limit_is_413_not_silently_cut(start_gunicorn, tmp_path):
    database_url = f'sqlite:///{tmp_path}/chunked.sqlite'
    server = start_gunicorn(database_url, workers=1)
    client_id, secret = create_client(database_url)
    fields = f'grant_type=client_credentials&client_id={client_id}&client_secret={secret}'.encode()
    status, body = post_chunked(server.url, b'padding=' + b'a' * 1000 + b'&' + fields)
    assert (status, body['token_type']) == (200, 'Bearer')  # a chunked body under the limit works
    status, body = post_chunked(server.url, b'padding=' + b'a' * 70_000 + b'&' + fields)
    assert (status, body['error']) == (413, 'invalid_request')


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
def test_two_app_servers_share_failure_counts_through_redis(start_gunicorn, tmp_path, redis_url):
    database_url = f'sqlite:///{tmp_path}/shared.sqlite'
    servers = [start_gunicorn(database_url, workers=1, FLASK_RATELIMIT_STORAGE_URI=redis_url) for _ in range(2)]
    victim = create_client(database_url)
    session = requests.Session()

    def attempt(server, client_id, guess='wrong'):
        return session.post(f'{server.url}/oauth/token', data=token_form(client_id, guess), timeout=10).status_code
    # One client id guessed from one address, the attempts spread over both servers.
    assert [attempt(servers[n % 2], victim[0]) for n in range(5)] == [401] * 5
    assert [attempt(server, *victim) for server in servers] == [429, 429]
    # Ten ids from one address: the address's limit, also counted across both.
    assert [attempt(servers[n % 2], f'nobody-{n}') for n in range(5)] == [401] * 5
    assert [attempt(server, 'nobody-else') for server in servers] == [429, 429]


@pytest.fixture
def nginx_in_front(tmp_path):
    """nginx with deploy/nginx.conf, on a free loopback port, in front of the
    given gunicorn; stopped by its process id when the test ends."""
    binary = shutil.which('nginx') or ('/usr/sbin/nginx' if os.path.exists('/usr/sbin/nginx') else None)
    if binary is None:
        if os.environ.get('CI') == 'true':
            pytest.fail('nginx is not installed')
        pytest.skip('nginx is not installed (apt-get install nginx)')
    started = []

    def start(upstream_url):
        port = free_port()
        server_block = (ROOT / 'deploy' / 'nginx.conf').read_text()
        server_block = server_block.replace('127.0.0.1:8080', f'127.0.0.1:{port}').replace(
            'http://127.0.0.1:8000', upstream_url)
        # user root: the test's temporary folders are root's alone.
        (tmp_path / 'nginx.conf').write_text(
            f'user root;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx.log;\n'
            f'events {{ worker_connections 256; }}\n'
            f'http {{ access_log off; client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;\n'
            f'{server_block}\n}}\n')
        process = subprocess.Popen([binary, '-p', str(tmp_path), '-c', str(tmp_path / 'nginx.conf'),
                                    '-g', 'daemon off;'], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        started.append(process)
        wait_for_port(port, process)
        return f'http://127.0.0.1:{port}'
    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
def test_slow_clients_do_not_freeze_the_documented_deployment(start_gunicorn, nginx_in_front, tmp_path):
    server = start_gunicorn(f'sqlite:///{tmp_path}/slow.sqlite', workers=2, FLASK_TRUSTED_PROXIES='1')
    url = nginx_in_front(server.url)
    host, port = url.removeprefix('http://').split(':')
    stop, slow = threading.Event(), []

    def trickle():  # a request's headers, a byte every half second, for at most 8 s
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            slow.append(connection)
            for byte in b'POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n':
                if stop.wait(0.5):
                    return
                connection.send(bytes([byte]))
    trickling = [threading.Thread(target=trickle) for _ in range(10)]
    for thread in trickling:
        thread.start()
    try:
        time.sleep(1.5)  # every slow client is connected and sending
        assert len(slow) == 10
        session, answered_in = requests.Session(), []
        for _ in range(10):
            started = time.monotonic()
            assert session.get(f'{url}/healthz', timeout=10).status_code == 200
            answered_in.append(time.monotonic() - started)
            time.sleep(0.3)
        assert max(answered_in) < 1.0, answered_in
    finally:
        stop.set()
        for thread in trickling:
            thread.join(timeout=30)


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
def test_postgresql_from_zero_as_the_deploying_page_says(postgres, start_gunicorn):
    import psycopg
    # docs/deploying.md's first two commands, as PostgreSQL's superuser.
    with psycopg.connect(f'host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres',
                         autocommit=True) as superuser:
        superuser.execute("CREATE ROLE oauth_zero LOGIN PASSWORD 'change-me'")
        superuser.execute('CREATE DATABASE oauth_zero OWNER oauth_zero')
    url = f'postgresql://oauth_zero:change-me@127.0.0.1:{postgres.port}/oauth_zero'  # as a platform gives it
    upgraded = run_python('-m', 'flask', '--app', 'server', 'db', 'upgrade', env={'DATABASE_URL': url})
    assert upgraded.returncode == 0, upgraded.stderr
    created = run_python('-m', 'flask', '--app', 'server', 'create-client', 'my-service', '--scope', 'read write',
                         '--json', env={'DATABASE_URL': url})
    assert created.returncode == 0, created.stderr
    client = json.loads(created.stdout)
    server = start_gunicorn(url, workers=2, FLASK_TRUSTED_PROXIES='1')
    answer = run_python('client.py', '--server', server.url, '--client-id', client['client_id'],
                        '--client-secret', client['client_secret'])
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {'client_id': client['client_id'], 'name': 'my-service',
                                         'scope': 'read write'}
    # No demo client in a fresh database: the demo credentials are refused.
    demo = run_python('client.py', '--server', server.url)
    assert demo.returncode == 1
    assert demo.stderr.startswith('client.py: invalid_client')


# --- The issuer: configured, never a request's Host -------------------------

BILLING = 'http://billing.example.com/api'


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
def test_gunicorn_refuses_to_start_without_an_issuer(tmp_path):
    environment = {name: value for name, value in os.environ.items() if name != 'FLASK_OAUTH2_ISSUER'}
    port = free_port()
    result = subprocess.run(
        [sys.executable, '-m', 'gunicorn', '-w', '1', '-b', f'127.0.0.1:{port}', 'server:app'], cwd=ROOT,
        env={**environment, 'DATABASE_URL': f'sqlite:///{tmp_path}/x.sqlite',
             'PROMETHEUS_MULTIPROC_DIR': str(tmp_path / 'metrics')},
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if 'FLASK_OAUTH2_ISSUER' in line]
    assert said == ['gunicorn.conf.py: FLASK_OAUTH2_ISSUER is not set: set it to the URL clients reach this server '
                    'at (e.g. https://auth.example.com)']
    assert 'Traceback' not in result.stderr and 'Booting worker' not in result.stderr


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
def test_a_wsgi_server_started_without_an_issuer_answers_503(tmp_path):
    # Any WSGI server without gunicorn.conf.py: here Flask's own (`flask run`).
    database_url, port = f'sqlite:///{tmp_path}/wsgi.sqlite', free_port()
    client_id, client_secret = create_client(database_url)
    environment = {name: value for name, value in os.environ.items() if name != 'FLASK_OAUTH2_ISSUER'}
    log_path = tmp_path / 'flask-run.log'
    with open(log_path, 'w') as log:
        process = subprocess.Popen([sys.executable, '-m', 'flask', '--app', 'server', 'run', '--port', str(port)],
                                   cwd=ROOT, env={**environment, 'DATABASE_URL': database_url}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process)
        url, session = f'http://127.0.0.1:{port}', requests.Session()
        answers = [session.get(f'{url}/.well-known/oauth-authorization-server', timeout=10),
                   session.post(f'{url}/oauth/token', data=token_form(client_id, client_secret), timeout=10)]
        for answer in answers:
            assert (answer.status_code, answer.json().get('error')) == (503, 'temporarily_unavailable')
            assert int(answer.headers['Retry-After']) > 0
        health = session.get(f'{url}/healthz', timeout=10)
        assert (health.status_code, health.json()['failed']) == (503, {'issuer': 'FLASK_OAUTH2_ISSUER is not set'})
    finally:
        stop_process(process)
    log = log_path.read_text()
    assert 'Traceback' not in log
    assert sum('FLASK_OAUTH2_ISSUER is not set' in line for line in log.splitlines()) == len(answers)


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
def test_a_token_for_another_api_is_refused_through_the_documented_proxy(start_gunicorn, nginx_in_front, tmp_path):
    # The attack of issue 22: a token for billing, presented as if this server were billing.
    database_url = f'sqlite:///{tmp_path}/proxied.sqlite'
    server = start_gunicorn(database_url, workers=1, FLASK_TRUSTED_PROXIES='1')
    client_id, client_secret = create_client(database_url)
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(sa.text('UPDATE clients SET resources = :resources'),
                           {'resources': f'{server.url}/api {BILLING}'})
    engine.dispose()
    proxy = nginx_in_front(server.url)
    session = requests.Session()
    answer = session.post(f'{proxy}/oauth/token', data={**token_form(client_id, client_secret), 'resource': BILLING},
                          headers={'Host': 'billing.example.com'}, timeout=10)
    for_billing = bearer(answer.json()['access_token'])
    as_billing = [{'Host': 'billing.example.com'}, {'Host': 'billing.example.com:80'}]
    for base, host in [(proxy, headers) for headers in as_billing] + [
            (server.url, {'X-Forwarded-Host': 'billing.example.com'})]:  # one proxy is trusted: as if it said so
        for method, path in (('get', '/api/me'), ('get', '/api/items'), ('post', '/api/items')):
            refused = session.request(method, base + path, headers={**for_billing, **host}, json={'name': 'x'},
                                      timeout=10)
            assert (refused.status_code, refused.json().get('error')) == (401, 'invalid_token'), (base, host, path)
        metadata = session.get(f'{base}/.well-known/oauth-authorization-server', headers=host, timeout=10).json()
        assert metadata['issuer'] == server.url
    assert table_count(database_url, 'items') == 0


@pytest.fixture
def header_echo():
    """An HTTP server on loopback that answers every GET with the request's
    headers as JSON: what a proxy in front of it forwarded."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):  # the standard library calls it by this name
            body = json.dumps({name.lower(): value for name, value in self.headers.items()}).encode()
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    echo = ThreadingHTTPServer(('127.0.0.1', 0), Echo)
    thread = threading.Thread(target=echo.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{echo.server_port}'
    echo.shutdown()
    thread.join(timeout=5)
    echo.server_close()


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')
def test_nginx_forwards_the_host_with_its_port(nginx_in_front, header_echo):
    proxy = nginx_in_front(header_echo)
    forwarded = requests.get(f'{proxy}/healthz', timeout=10).json()  # Host: 127.0.0.1:PORT
    public_host = proxy.removeprefix('http://')
    assert (forwarded['host'], forwarded['x-forwarded-host']) == (public_host, public_host)
    assert forwarded['x-forwarded-proto'] == 'http'
