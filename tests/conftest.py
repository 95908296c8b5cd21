"""Shared fixtures: the app on a throwaway database, clients, tokens, servers.

The suite runs on a fresh SQLite file unless TEST_DATABASE_URL names another
database (the CI run points it at a throwaway PostgreSQL). DATABASE_URL is
deliberately ignored: the suite empties every table between tests.
"""
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import requests
import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
_TMP = tempfile.mkdtemp(prefix='oauth-tests-')
DATABASE_URL = os.environ.get('TEST_DATABASE_URL') or f'sqlite:///{_TMP}/test.sqlite'
os.environ['DATABASE_URL'] = DATABASE_URL  # read by server.py at import
# Outside `python server.py` no signing key is made without a passphrase: the
# suite's app, and the servers and commands its tests start, have this one.
# A test of what happens without one sets FLASK_SIGNING_KEY_PASSPHRASE=''.
PASSPHRASE = 'the test suite passphrase'
os.environ['FLASK_SIGNING_KEY_PASSPHRASE'] = PASSPHRASE
# The issuer (read at import too) is the test client's default address, so
# that the tests' requests name the server the way it names itself. Taken
# out again after: the servers the tests start choose their own.
TEST_ISSUER = 'http://localhost'
os.environ['FLASK_OAUTH2_ISSUER'] = TEST_ISSUER
sys.path.insert(0, str(ROOT))

import server  # noqa: E402

del os.environ['FLASK_OAUTH2_ISSUER']
from models import Client, Token, db  # noqa: E402
from production.database import upgrade_schema  # noqa: E402
from production.signing_keys import SigningKey, UnusableKey, key_ring, passphrase  # noqa: E402

TOKEN_URL = '/oauth/token'

# Tests that start servers of their own (deployment, migrations) run on each
# kind of database. The suite's second pass, on PostgreSQL, runs only their
# PostgreSQL cases: its first pass, on SQLite, ran them all.
SERVER_KINDS = ['postgresql'] if DATABASE_URL.startswith('postgresql') else ['sqlite', 'postgresql']


def pytest_report_header(config):
    return f'database: {DATABASE_URL}'


def pytest_unconfigure(config):
    shutil.rmtree(_TMP, ignore_errors=True)  # the suite's SQLite database and anything beside it


@pytest.fixture(scope='session')
def app():
    with server.app.app_context():
        upgrade_schema()
    return server.app


@pytest.fixture(autouse=True)
def clean_database(app):
    """Every test starts on empty tables, with no failures counted by the
    rate limiter, and inside an app context."""
    with app.app_context():
        server.limit_failed_authentication.reset()
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()
        key_ring().forget()  # the signing keys this process had read are gone too
        yield
        db.session.remove()


class RecordAll(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter('%(name)s %(levelname)s %(message)s'))
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))  # the message, its arguments and any traceback


@pytest.fixture(autouse=True)
def no_credentials_in_logs(monkeypatch):
    """Every log record of every test, at DEBUG level, is searched for every
    client secret and access token that test created: none may appear."""
    created = set()
    set_secret, issue = Client.set_secret, Token.issue

    def recording_set_secret(self, client_secret):
        created.add(client_secret)
        return set_secret(self, client_secret)

    def recording_issue(client, access_token, *args, **kwargs):
        created.add(access_token)
        return issue(client, access_token, *args, **kwargs)
    monkeypatch.setattr(Client, 'set_secret', recording_set_secret)
    monkeypatch.setattr(Token, 'issue', recording_issue)
    handler, root, audit_log = RecordAll(), logging.getLogger(), logging.getLogger('oauth.audit')
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    audit_log.addHandler(handler)
    yield handler.lines
    root.removeHandler(handler)
    audit_log.removeHandler(handler)
    root.setLevel(old_level)
    created |= private_key_material()
    leaked = [(value, line) for value in created for line in handler.lines if value in line]
    assert not leaked, f'a secret, token or private key reached a log line: {leaked[0][1][:300]}'


def private_key_material() -> set:
    """What would give away a signing key: its private number and the lines of its stored PEM."""
    db.session.rollback()
    material = set()
    for key in db.session.scalars(db.select(SigningKey).where(SigningKey.private_pem.is_not(None))):
        material |= {line for line in key.private_pem.splitlines() if len(line) >= 40}
        with contextlib.suppress(UnusableKey):  # a wrong passphrase, a corrupt row: the stored lines still count
            material.add(key.private_key(passphrase()).as_dict(private=True)['d'])
    return material


@contextlib.contextmanager
def statements_run():
    """The SQL statements the engine runs inside the block, each on one line,
    in lower case, as SQLAlchemy's engine events see them."""
    statements = []

    def record(connection, cursor, statement, *args):
        statements.append(' '.join(statement.split()).lower())
    sqlalchemy.event.listen(db.engine, 'before_cursor_execute', record)
    try:
        yield statements
    finally:
        sqlalchemy.event.remove(db.engine, 'before_cursor_execute', record)


@pytest.fixture
def http(app):
    return app.test_client()


@pytest.fixture
def make_client():
    """make_client(name, scope) -> (client_id, client_secret), committed."""
    def make(name='service', scope='read write', **kwargs):
        client, secret = Client.create(name, scope, **kwargs)
        db.session.commit()
        return client.client_id, secret
    return make


@pytest.fixture
def credentials(make_client):
    return make_client()


@pytest.fixture
def jwt_client(make_client):
    """(client_id, client_secret) of a client that gets JWT access tokens."""
    client_id, client_secret = make_client()
    Client.find(client_id).token_format = 'jwt'
    db.session.commit()
    return client_id, client_secret


def token_form(client_id, client_secret, **extra):
    return {'grant_type': 'client_credentials', 'client_id': client_id,
            'client_secret': client_secret, **extra}


def basic_header(client_id, client_secret):
    """RFC 6749 §2.3.1: form-urlencode each part, then base64."""
    raw = f'{quote_plus(client_id)}:{quote_plus(client_secret)}'.encode()
    return {'Authorization': 'Basic ' + base64.b64encode(raw).decode()}


@pytest.fixture
def get_token(http):
    """get_token(client_id, secret, scope=None) -> access token string."""
    def get(client_id, client_secret, **extra):
        response = http.post(TOKEN_URL, data=token_form(client_id, client_secret, **extra))
        assert response.status_code == 200, response.get_json()
        return response.get_json()['access_token']
    return get


@pytest.fixture
def token(credentials, get_token):
    return get_token(*credentials)


def bearer(access_token):
    return {'Authorization': f'Bearer {access_token}'}


def short_rsa_public_jwk() -> dict:
    """A public RSA key of 1024 bits as a JWK: too short to register (2048 at least)."""
    from joserfc.jwk import RSAKey
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # joserfc warns about the size: the point here
        return RSAKey.generate_key(1024).as_dict(private=False)


def count(model):
    db.session.expire_all()
    return db.session.scalar(db.select(db.func.count()).select_from(model))


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server(app, monkeypatch):
    """The app served over real HTTP on loopback, in this process (same
    database), with that address as its issuer while the test runs."""
    from werkzeug.serving import make_server
    httpd = make_server('127.0.0.1', 0, app, threaded=True)
    url = f'http://127.0.0.1:{httpd.server_port}'
    monkeypatch.setitem(app.config, 'OAUTH2_ISSUER', url)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    yield url
    httpd.shutdown()
    thread.join(timeout=5)


def wait_for_port(port, process=None, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f'server exited early: {process.stdout.read() if process.stdout else ""}')
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f'nothing listening on port {port} after {timeout} s')


def stop_process(process, timeout=10):
    """Stop a server the test started, by its process id: politely, then for sure."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def run_python(*args, env=None, timeout=60, **kwargs):
    """Run one of the project's scripts as a user would, with a bounded time
    (and the suite's issuer, for a script that uses the app's test client)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT,
                          env={**os.environ, 'FLASK_OAUTH2_ISSUER': TEST_ISSUER, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def start_postgres():
    """A throwaway PostgreSQL server; without PostgreSQL the test skips,
    except under CI=true, where it fails."""
    from pgserver import PostgresUnavailable, ThrowawayPostgres
    throwaway = ThrowawayPostgres()
    try:
        return throwaway.start()
    except PostgresUnavailable as error:
        throwaway.stop()
        if os.environ.get('CI') == 'true':
            pytest.fail(f'PostgreSQL did not start: {error}')
        pytest.skip(f'PostgreSQL not available: {error}')


@pytest.fixture(scope='session')
def postgres():
    """A throwaway PostgreSQL server for tests that need their own databases."""
    throwaway = start_postgres()
    yield throwaway
    throwaway.stop()


@pytest.fixture
def start_gunicorn(tmp_path):
    """start_gunicorn(database_url, workers=2, wait_for_health=True, **env) -> a
    running Gunicorn; every server started is killed when the test ends."""
    started = []

    def start(database_url, workers=2, wait_for_health=True, **env):
        gunicorn = Gunicorn(database_url, tmp_path / 'gunicorn.log', workers, env)
        started.append(gunicorn)
        return gunicorn.start(wait_for_health)
    yield start
    for gunicorn in started:
        gunicorn.kill()


@pytest.fixture
def start_dev_server(tmp_path):
    """start_dev_server(database_url, **env) -> (URL, log path): `python
    server.py` on a free loopback port, its output in a file; every server
    started is stopped by its process id when the test ends."""
    processes = []

    def start(database_url, **env):
        port, log_path = free_port(), tmp_path / f'server-{len(processes)}.log'
        with open(log_path, 'w') as log:
            process = subprocess.Popen([sys.executable, 'server.py', '--port', str(port)], cwd=ROOT,
                                       env={**os.environ, 'DATABASE_URL': database_url, **env},
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        wait_for_port(port, process)
        return f'http://127.0.0.1:{port}', log_path
    yield start
    for process in processes:
        stop_process(process)


def empty_database(request, tmp_path, kind):
    """The URL of a new, empty database of this kind ('sqlite' or 'postgresql')."""
    if kind == 'sqlite':
        return f'sqlite:///{tmp_path}/deploy-{uuid.uuid4().hex[:8]}.sqlite'
    return request.getfixturevalue('postgres').create_database(f'deploy_{uuid.uuid4().hex[:12]}')


def create_client(database_url, scope='read write'):
    """`flask --app server create-client` on that database: (client_id, client_secret)."""
    result = run_python('-m', 'flask', '--app', 'server', 'create-client', 'load', '--scope', scope,
                        '--json', env={'DATABASE_URL': database_url})
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    return created['client_id'], created['client_secret']


class Gunicorn:
    """`gunicorn -w N server:app` in its own process group, on a free loopback port."""

    def __init__(self, database_url, log_path, workers=2, env=None):
        self.database_url, self.log_path, self.workers = database_url, log_path, workers
        # Prometheus' folder (gunicorn.conf.py) in the test's own: a killed
        # server cannot remove the one it would make in /tmp.
        metrics_dir = log_path.parent / f'metrics-{uuid.uuid4().hex[:8]}'
        self.env = {'PROMETHEUS_MULTIPROC_DIR': str(metrics_dir), **(env or {})}
        self.process = None

    def start(self, wait_for_health=True):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        # The issuer is the server's own URL, unless the test says otherwise
        # (None: not set at all).
        env = {**os.environ, 'DATABASE_URL': self.database_url, 'FLASK_OAUTH2_ISSUER': self.url, **self.env}
        with open(self.log_path, 'a') as log:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'gunicorn', '-w', str(self.workers), '-b', f'127.0.0.1:{self.port}',
                 '--graceful-timeout', '5', 'server:app'],
                cwd=ROOT, env={name: value for name, value in env.items() if value is not None},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # A busy machine may take seconds to answer the first request: any
        # request error is tried again until the deadline.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                answer = requests.get(f'{self.url}/healthz', timeout=max(1, deadline - time.monotonic()))
                if answer.status_code == 200 or not wait_for_health:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f'gunicorn did not become healthy: {self.log_path.read_text()}')

    def signal(self, number):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, number)
            self.process.wait(timeout=30)

    def stop(self):
        self.signal(signal.SIGTERM)

    def kill(self):
        self.signal(signal.SIGKILL)


class RedisServer:
    """A redis-server of a test's own on a free loopback port, that the test
    may stop (kill), start again on the same port, or hang (SIGSTOP)."""

    def __init__(self, binary, folder):
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.url = f'redis://127.0.0.1:{self.port}'
        self.process = None

    def start(self):
        with open(self.folder / 'redis.log', 'a') as log:
            self.process = subprocess.Popen(
                [self.binary, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
                 '--dir', str(self.folder)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.process)
        return self

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a hung server too
            self.process.kill()
            self.process.wait(timeout=30)

    @contextlib.contextmanager
    def hung(self):
        """Inside the block the server accepts connections (the kernel does)
        but answers nothing, as a Redis stuck on a slow disk or swapped out."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_server(tmp_path):
    """A running RedisServer, killed by its process id when the test ends.
    Without redis-server the test skips, except under CI=true, where it
    fails (.ci/run installs it)."""
    binary = shutil.which('redis-server')
    if binary is None:
        if os.environ.get('CI') == 'true':
            pytest.fail('redis-server is not installed')
        pytest.skip('redis-server is not installed (apt-get install redis-server)')
    server = RedisServer(binary, tmp_path)
    try:
        yield server.start()
    finally:
        server.kill()


@pytest.fixture
def redis_url(redis_server):
    return redis_server.url
