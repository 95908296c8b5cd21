"""The learner's two commands, as real processes: python server.py, python client.py."""
import json
import os
import subprocess
import sys

import pytest
from conftest import DATABASE_URL, ROOT, free_port, run_python, wait_for_port


@pytest.fixture
def start_server():
    """start_server(*args) -> (base URL, process): server.py on a free loopback port,
    on the suite's database (emptied before each test)."""
    processes = []

    def start(*args):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, 'server.py', '--port', str(port), *args], cwd=ROOT,
            env={**os.environ, 'DATABASE_URL': DATABASE_URL},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        wait_for_port(port, process)
        return f'http://127.0.0.1:{port}', process
    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def client(server, *args):
    return run_python('client.py', '--server', server, *args, timeout=30)


def test_server_then_client(start_server):
    server, process = start_server()
    result = client(server)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {'client_id': 'demo-client', 'name': 'Demo client',
                                         'scope': 'read write'}
    added = client(server, '--auth-method', 'basic', 'add-item', 'pens')
    assert added.returncode == 0 and json.loads(added.stdout)['name'] == 'pens'
    listed = client(server, '--scope', 'read', 'items')
    assert [item['name'] for item in json.loads(listed.stdout)['items']] == ['pens']
    process.terminate()
    banner = process.communicate(timeout=10)[0]
    assert 'client_id=demo-client client_secret=demo-secret' in banner
    assert 'local use only' in banner


def test_data_survives_a_restart(start_server):
    server, process = start_server()
    assert client(server, 'add-item', 'kept').returncode == 0
    process.terminate()
    process.wait(timeout=10)
    server, _ = start_server()
    listed = client(server, 'items')
    assert [item['name'] for item in json.loads(listed.stdout)['items']] == ['kept']


def test_client_errors_are_one_line_and_exit_1(start_server):
    server, _ = start_server()
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
    server, _ = start_server('--no-demo')
    result = client(server)
    assert result.returncode == 1
    assert 'invalid_client' in result.stderr


def test_client_with_no_server(tmp_path):
    result = client(f'http://127.0.0.1:{free_port()}')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.startswith('client.py: cannot connect to')


def test_server_with_an_unusable_database(tmp_path):
    result = run_python('server.py', '--port', str(free_port()),
                        env={'DATABASE_URL': f'sqlite:///{tmp_path}/no/such/dir.sqlite'}, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().startswith('server.py: cannot use the database:')
    assert len(result.stderr.strip().splitlines()) == 1
