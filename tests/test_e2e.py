"""The learner's two commands, as real processes: python server.py, python client.py."""
import json
import os
import subprocess
import sys

import pytest
from conftest import DATABASE_URL, ROOT, free_port, run_python, stop_process, wait_for_port


@pytest.fixture
def start_server(tmp_path):
    """start_server(*args) -> (base URL, process, log): server.py on a free loopback
    port, on the suite's database (emptied before each test); its output goes
    to the log file (a pipe nobody reads would fill and freeze it)."""
    processes = []

    def start(*args):
        port, log = free_port(), tmp_path / f'server-{len(processes)}.log'
        with open(log, 'w') as output:
            process = subprocess.Popen(
                [sys.executable, 'server.py', '--port', str(port), *args], cwd=ROOT,
                env={**os.environ, 'DATABASE_URL': DATABASE_URL}, stdout=output, stderr=subprocess.STDOUT)
        processes.append(process)
        wait_for_port(port, process)
        return f'http://127.0.0.1:{port}', process, log
    yield start
    for process in processes:
        stop_process(process)


def client(server, *args):
    return run_python('client.py', '--server', server, *args, timeout=30)


def test_server_then_client(start_server):
    server, process, log = start_server()
    result = client(server)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {'client_id': 'demo-client', 'name': 'Demo client',
                                         'scope': 'read write'}
    added = client(server, '--auth-method', 'basic', 'add-item', 'pens')
    assert added.returncode == 0 and json.loads(added.stdout)['name'] == 'pens'
    listed = client(server, '--scope', 'read', 'items')
    assert [item['name'] for item in json.loads(listed.stdout)['items']] == ['pens']
    stop_process(process)
    banner = log.read_text()
    assert 'client_id=demo-client client_secret=demo-secret' in banner
    assert 'local use only' in banner


def test_data_survives_a_restart(start_server):
    server, process, _ = start_server()
    assert client(server, 'add-item', 'kept').returncode == 0
    stop_process(process)
    server, _, _ = start_server()
    listed = client(server, 'items')
    assert [item['name'] for item in json.loads(listed.stdout)['items']] == ['kept']


def test_client_errors_are_one_line_and_exit_1(start_server):
    server, _, _ = start_server()
    for args, message in [
        (['--client-secret', 'wrong'], 'client.py: invalid_client'),
        (['--scope', 'read', 'add-item', 'x'], 'client.py: insufficient_scope'),
        (['--scope', 'admin'], 'client.py: invalid_scope'),
    ]:
        result = client(server, *args)
        assert result.returncode == 1, args
        assert result.stdout == ''
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith(message), result.stderr


def test_no_demo_means_no_demo_client(start_server):
    server, _, _ = start_server('--no-demo')
    result = client(server)
    assert result.returncode == 1
    assert 'invalid_client' in result.stderr


def test_client_with_no_server(tmp_path):
    result = client(f'http://127.0.0.1:{free_port()}')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.startswith('client.py: cannot connect to')


def test_server_with_an_unusable_database(tmp_path):
    (tmp_path / 'x.sqlite').write_bytes(b'not a database, but a file of text' * 100)
    (tmp_path / 'x.sqlite').chmod(0o600)  # one readable by others would get a warning line too
    result = run_python('server.py', '--port', str(free_port()),
                        env={'DATABASE_URL': f'sqlite:///{tmp_path}/x.sqlite'}, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == 'server.py: cannot use the database: file is not a database'
