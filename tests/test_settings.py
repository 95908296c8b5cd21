"""No silent mistakes, no tracebacks: every setting of the configuration
table with a wrong value stops each entry point in one line, and the
development server's start (its options, its database, Ctrl-C) says what is
wrong instead of doing something else."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import ROOT, SERVER_KINDS, free_port, run_python, stop_process, wait_for_port

from production import settings

# Settings are checked before any database is opened: the suite's second
# pass, on PostgreSQL, has nothing to add.
pytestmark = pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass ran it')

# A wrong value for each variable of docs/configuration.md's table; some have several.
WRONG = {
    'DATABASE_URL': ['sqlite:////no/such/folder/oauth.sqlite', 'mysql://user@127.0.0.1/db'],
    'FLASK_OAUTH2_PROVIDER_TOKEN_EXPIRES_IN': ['abc', '-5', '0', '1.5'],
    'FLASK_OAUTH2_SCOPES_SUPPORTED': ['[]', '["read", 7]'],
    'FLASK_OAUTH2_ISSUER': ['auth.example.com', 'https://auth.example.com/?x=1'],
    'FLASK_OAUTH2_REALM': ['say "hi"'],
    'FLASK_MAX_CONTENT_LENGTH': ['abc', '10'],
    'FLASK_AUTH_FAILURES_PER_ADDRESS': ['garbage'],
    'FLASK_AUTH_FAILURES_PER_CLIENT_ADDRESS': ['0 per minute'],
    'FLASK_RATELIMIT_ENABLED': ['maybe'],
    'FLASK_RATELIMIT_STORAGE_URI': ['bogus://', 'redis://host:port'],
    'FLASK_TRUSTED_PROXIES': ['abc', '-1'],
    'FLASK_AUDIT_LOG_FILE': ['/no/such/folder/audit.log'],
    'FLASK_TOKENS_PER_CLIENT': ['abc'],
    'FLASK_PURGE_EVERY': ['abc'],
    'FLASK_PURGE_BATCH': ['0'],
    'FLASK_ACCESS_TOKEN_FORMAT': ['paseto'],
    'FLASK_JWT_SIGNING_ALG': ['HS256'],
    'FLASK_SIGNING_KEY_PASSPHRASE': ['two\nlines'],
    'FLASK_SIGNING_KEY_CACHE_SECONDS': ['-1'],
    'FLASK_API_RESOURCE': ['not a uri'],
    'FLASK_CLIENT_ASSERTION_MAX_LIFETIME': ['0'],
    'FLASK_METRICS_ENABLED': ['yes'],
    'FLASK_METRICS_ALLOWED_ADDRESSES': ['["10.0.0.0/33"]', 'localhost'],
    'FLASK_METRICS_BEARER_TOKEN': ['tab\there'],
    'FLASK_DPOP_PROOF_MAX_AGE': ['0', '"60"'],
    'FLASK_DPOP_NONCE': ['yes'],
    'FLASK_DPOP_NONCE_SECONDS': ['"300"', '-1'],
    'FLASK_SECRET_KEY': ['two\nlines'],
}


def configuration_table() -> list[str]:
    """The variables of the table in docs/configuration.md, in its order."""
    text = (ROOT / 'docs' / 'configuration.md').read_text()
    return re.findall(r'^\| `((?:FLASK_|DATABASE_URL)\w*)` \|', text, flags=re.M)


def test_the_table_the_checks_and_this_test_name_the_same_settings():
    table = configuration_table()
    assert table == list(dict.fromkeys(table)), 'a variable appears twice'
    assert set(table) == set(WRONG), 'every variable of the table has a wrong value here, and no other'
    checked = {f'FLASK_{key}' for key in settings.CHECKS} | {'DATABASE_URL'}
    assert set(table) == checked, 'the table lists every checked setting, and only those'
    assert set(settings.DEFAULTS) - {'SQLALCHEMY_DATABASE_URI'} <= set(settings.CHECKS), 'every default is checked'


def one_line_refusal(result, variable):
    assert 'Traceback' not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(variable), result.stderr
    assert result.returncode == 1 and result.stdout == ''


ENTRY_POINTS = {'python server.py': ('server.py', '--port', 'PORT'),
                'flask --app server': ('-m', 'flask', '--app', 'server', 'list-clients')}


@pytest.mark.parametrize('entry_point', ENTRY_POINTS)
@pytest.mark.parametrize(('variable', 'value'), [(name, value) for name, values in WRONG.items() for value in values],
                         ids=lambda value: repr(value)[:40])
def test_a_wrong_setting_stops_each_entry_point_in_one_line(variable, value, entry_point, tmp_path):
    env = {'DATABASE_URL': f'sqlite:///{tmp_path}/x.sqlite', variable: value}
    args = [str(free_port()) if arg == 'PORT' else arg for arg in ENTRY_POINTS[entry_point]]
    try:
        result = run_python(*args, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f'{entry_point} started with {variable}={value!r}')
    one_line_refusal(result, variable)


def test_a_token_lifetime_of_0_is_refused_not_taken_for_3600(tmp_path):
    # Flask-OAuthlib would read 0 as "not set": 3600 s, silently.
    result = run_python('-m', 'flask', '--app', 'server', 'list-clients',
                        env={'DATABASE_URL': f'sqlite:///{tmp_path}/x.sqlite',
                             'FLASK_OAUTH2_PROVIDER_TOKEN_EXPIRES_IN': '0'})
    assert result.stderr.strip() == ("FLASK_OAUTH2_PROVIDER_TOKEN_EXPIRES_IN is '0'; "
                                     'it must be a whole number from 1 to 31622400')


def test_dpop_nonces_need_a_secret_key(tmp_path):
    """FLASK_DPOP_NONCE=true keys the nonces with FLASK_SECRET_KEY: without
    one, every entry point stops in one line, gunicorn's master included."""
    env = {'DATABASE_URL': f'sqlite:///{tmp_path}/x.sqlite', 'FLASK_DPOP_NONCE': 'true'}
    says = 'FLASK_DPOP_NONCE is true, so FLASK_SECRET_KEY must be set'
    for entry_point, args in ENTRY_POINTS.items():
        try:
            result = run_python(*[str(free_port()) if arg == 'PORT' else arg for arg in args], env=env, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f'{entry_point} started with FLASK_DPOP_NONCE=true and no FLASK_SECRET_KEY')
        one_line_refusal(result, 'FLASK_DPOP_NONCE')
        assert result.stderr.startswith(says)
    assert says in stopped_gunicorn(tmp_path, env)
    listed = run_python(*ENTRY_POINTS['flask --app server'], env={**env, 'FLASK_SECRET_KEY': 'a secret'}, timeout=60)
    assert listed.returncode == 0, listed.stderr


def test_an_empty_optional_setting_is_unset(app, monkeypatch):
    # FLASK_SIGNING_KEY_PASSPHRASE= (an env file's way to leave it out) means no passphrase.
    config = {**app.config, 'SIGNING_KEY_PASSPHRASE': ''}
    monkeypatch.setenv('FLASK_SIGNING_KEY_PASSPHRASE', '')
    settings.check_settings(config)
    assert config['SIGNING_KEY_PASSPHRASE'] is None


def test_text_settings_keep_the_text_as_typed(app, monkeypatch):
    # JSON would make 0123 the number 123: a passphrase keeps its digits.
    config = {**app.config, 'SIGNING_KEY_PASSPHRASE': 123}
    monkeypatch.setenv('FLASK_SIGNING_KEY_PASSPHRASE', '0123')
    settings.check_settings(config)
    assert config['SIGNING_KEY_PASSPHRASE'] == '0123'


def stopped_gunicorn(tmp_path, env) -> str:
    """The log of gunicorn (4 workers) started with `env`, which must stop it
    by itself, without a traceback, before it starts a worker."""
    log = tmp_path / 'gunicorn.log'
    with open(log, 'w') as output:
        process = subprocess.Popen(
            [sys.executable, '-m', 'gunicorn', '-w', '4', '-b', f'127.0.0.1:{free_port()}', 'server:app'],
            cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, 'FLASK_OAUTH2_ISSUER': 'https://auth.example.com',
                 'PROMETHEUS_MULTIPROC_DIR': str(tmp_path / 'metrics'), **env})
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        pytest.fail(f'gunicorn kept running: {log.read_text()[-2000:]}')
    text = log.read_text()
    assert process.returncode != 0
    assert 'Traceback' not in text
    assert 'Booting worker' not in text, 'the master refuses before it starts a worker'
    return text


def test_a_wrong_setting_stops_gunicorn_instead_of_restarting_workers(tmp_path):
    text = stopped_gunicorn(tmp_path, {'DATABASE_URL': f'sqlite:///{tmp_path}/x.sqlite',
                                       'FLASK_TOKENS_PER_CLIENT': 'abc'})
    assert "FLASK_TOKENS_PER_CLIENT is 'abc'; it must be a rate" in text


def test_gunicorn_started_elsewhere_needs_its_settings_file(tmp_path):
    """gunicorn --chdir from another folder does not read gunicorn.conf.py:
    the app refuses in one line; given with -c, it serves."""
    env = {**os.environ, 'DATABASE_URL': f'sqlite:///{tmp_path}/x.sqlite', 'FLASK_OAUTH2_ISSUER': 'http://127.0.0.1'}
    for name in ('OAUTH_SERVER_GUNICORN_CONF', 'PROMETHEUS_MULTIPROC_DIR'):  # gunicorn.conf.py's to set
        env.pop(name, None)
    base = [sys.executable, '-m', 'gunicorn', '-w', '1', '--chdir', str(ROOT)]
    refused = subprocess.run([*base, '-b', f'127.0.0.1:{free_port()}', 'server:app'], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and 'Traceback' not in refused.stderr
    assert "gunicorn did not read this project's gunicorn.conf.py" in refused.stderr
    port = free_port()
    with open(tmp_path / 'served.log', 'w') as output:
        process = subprocess.Popen([*base, '-c', str(ROOT / 'gunicorn.conf.py'), '-b', f'127.0.0.1:{port}',
                                    'server:app'], cwd=tmp_path, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / 'served.log').read_text()
            try:
                if requests.get(f'http://127.0.0.1:{port}/healthz', timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


# --- The development server's start ----------------------------------------


@pytest.mark.parametrize('port', ['99999', '0', 'abc'])
def test_a_port_out_of_range_is_refused(port):
    result = run_python('server.py', '--port', port)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'argument --port' in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize('delay', [0.1, 0.3, 0.6, 1.2])
def test_ctrl_c_while_starting_prints_no_traceback(tmp_path, delay):
    log = tmp_path / 'server.log'
    with open(log, 'w') as output:
        process = subprocess.Popen([sys.executable, 'server.py', '--port', str(free_port())], cwd=ROOT,
                                   env={**os.environ, 'DATABASE_URL': f'sqlite:///{tmp_path}/x.sqlite'},
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        stop_process(process)
    text = log.read_text()
    assert 'Traceback' not in text and 'KeyboardInterrupt' not in text, text
    assert process.returncode in (0, 130, -signal.SIGINT)


def test_the_database_does_not_depend_on_the_working_directory(tmp_path):
    """Started from another folder, server.py uses the project's instance/
    folder, as `flask --app server` in the project does, and says where."""
    name = f'test-{uuid.uuid4().hex[:8]}.sqlite'
    port = free_port()
    log = tmp_path / 'server.log'
    with open(log, 'w') as output:
        process = subprocess.Popen([sys.executable, str(ROOT / 'server.py'), '--port', str(port)], cwd=tmp_path,
                                   env={**os.environ, 'DATABASE_URL': f'sqlite:///{name}'}, stdout=output,
                                   stderr=subprocess.STDOUT)
    database = ROOT / 'instance' / name
    try:
        wait_for_port(port, process)
        assert database.exists() and not (tmp_path / 'instance').exists()
        listed = run_python('-m', 'flask', '--app', 'server', 'list-clients', env={'DATABASE_URL': f'sqlite:///{name}'})
        assert listed.returncode == 0 and listed.stdout.startswith('demo-client\t'), listed.stderr
    finally:
        stop_process(process)
        for leftover in ROOT.joinpath('instance').glob(f'{name}*'):
            leftover.unlink()
    assert f'Database: {database}' in log.read_text().splitlines()


def test_a_sqlite_folder_that_does_not_exist_is_named(tmp_path):
    for args in (['server.py', '--port', str(free_port())], ['-m', 'flask', '--app', 'server', 'list-clients']):
        result = run_python(*args, env={'DATABASE_URL': f'sqlite:///{tmp_path}/missing/dir/x.db'})
        one_line_refusal(result, 'DATABASE_URL')
        assert f'{tmp_path}/missing/dir does not exist' in result.stderr


def test_a_read_only_sqlite_folder_is_named():
    """As a user who may not write there. Root may write anywhere, so as
    root the check runs as nobody, after the imports root's Python needs
    (a folder of /tmp that nobody can reach)."""
    base = Path(tempfile.mkdtemp(prefix='read-only-'))
    try:
        os.chmod(base, 0o755)  # noqa: S103 - nobody must reach the folder inside
        folder = base / 'folder'
        folder.mkdir(mode=0o555)
        drop = 'os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534); ' if os.geteuid() == 0 else ''
        code = (f'import os, sys; sys.path.insert(0, {str(ROOT)!r}); from production import settings; {drop}'
                f'settings.database_url("sqlite:///{folder}/x.db")')
        result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(base)
    one_line_refusal(result, 'DATABASE_URL')
    assert f'cannot write in {folder}' in result.stderr
