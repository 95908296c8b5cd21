"""flask --app server <command>: client management from the command line."""
import json

import pytest
from conftest import TOKEN_URL, run_python, token_form

from models import Client, db


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args):
        return runner.invoke(args=list(args))
    return invoke


def test_create_client_prints_working_credentials_once(cli, http):
    result = cli('create-client', 'billing')
    assert result.exit_code == 0, result.output
    lines = dict(line.split(':', 1) for line in result.output.splitlines() if line.startswith('client_'))
    client_id, secret = lines['client_id'].strip(), lines['client_secret'].strip()
    assert len(secret) >= 43  # 32 random bytes
    response = http.post(TOKEN_URL, data=token_form(client_id, secret))
    assert response.status_code == 200
    assert response.get_json()['scope'] == 'read write'
    db.session.expire_all()
    assert Client.find(client_id).name == 'billing'
    assert secret not in Client.find(client_id).secret_hash


def test_create_client_json_and_scope(cli, http):
    result = cli('create-client', 'reports', '--scope', 'read', '--json')
    assert result.exit_code == 0
    created = json.loads(result.output)
    assert created['name'] == 'reports' and created['scope'] == 'read'
    assert created['grant_types'] == ['client_credentials']
    response = http.post(TOKEN_URL, data=token_form(created['client_id'], created['client_secret']))
    assert response.get_json()['scope'] == 'read'


def test_create_client_without_tokens(cli, http):
    created = json.loads(cli('create-client', 'gateway', '--no-tokens', '--json').output)
    assert created['grant_types'] == []
    response = http.post(TOKEN_URL, data=token_form(created['client_id'], created['client_secret']))
    assert response.get_json()['error'] == 'unauthorized_client'


@pytest.mark.parametrize('args, message', [
    (['create-client', 'x', '--scope', 'read superuser'], "unknown scope 'superuser'"),
    (['create-client', '   '], '"name" must be a non-empty string'),
    (['create-client', 'tab\there'], '"name" must not contain control characters'),
    (['create-client'], "Missing argument 'NAME'"),
])
def test_create_client_rejects_bad_arguments(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert db.session.scalar(db.select(db.func.count()).select_from(Client)) == 0


def test_list_clients_never_shows_secrets(cli):
    created = [json.loads(cli('create-client', name, '--json').output) for name in ('a', 'b')]
    listing = cli('list-clients')
    assert listing.exit_code == 0
    for client in created:
        assert client['client_id'] in listing.output
        assert client['client_secret'] not in listing.output
    as_json = json.loads(cli('list-clients', '--json').output)
    assert [c['name'] for c in as_json] == ['a', 'b']
    assert all('secret' not in key for c in as_json for key in c)


def test_list_clients_when_there_are_none(cli):
    result = cli('list-clients')
    assert result.exit_code == 0


def test_the_real_flask_command(tmp_path):
    # The documented entry point, in its own process, on an empty database.
    env = {'DATABASE_URL': f'sqlite:///{tmp_path}/cli.sqlite'}
    created = run_python('-m', 'flask', '--app', 'server', 'create-client', 'svc', '--json', env=env)
    assert created.returncode == 0, created.stderr
    client_id = json.loads(created.stdout)['client_id']
    listed = run_python('-m', 'flask', '--app', 'server', 'list-clients', env=env)
    assert listed.returncode == 0 and client_id in listed.stdout


def test_an_unusable_database_is_one_line_and_exit_1(tmp_path):
    (tmp_path / 'x.sqlite').write_bytes(b'not a database, but a file of text' * 100)
    (tmp_path / 'x.sqlite').chmod(0o600)  # one readable by others would get a warning line too
    env = {'DATABASE_URL': f'sqlite:///{tmp_path}/x.sqlite'}
    result = run_python('-m', 'flask', '--app', 'server', 'list-clients', env=env)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip() == 'Error: cannot use the database: file is not a database'



@pytest.mark.parametrize(('url', 'said'), [
    ('garbage', "DATABASE_URL is not a database URL: 'garbage'"),
    ('mysql://user@127.0.0.1/db', 'DATABASE_URL is a mysql URL; this server runs on SQLite'),
    ('postgresql+asyncpg://user@127.0.0.1/db', 'DATABASE_URL is a postgresql+asyncpg URL;'),
])
@pytest.mark.parametrize('command', [('-m', 'flask', '--app', 'server', 'list-clients'), ('server.py', '--port', '1')])
def test_an_unsupported_database_url_is_one_line_and_exit_1(url, said, command):
    result = run_python(*command, env={'DATABASE_URL': url})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith(said)


def test_postgres_urls_as_hosting_platforms_give_them_work(postgres):
    # postgres:// and postgresql:// (no driver named) mean psycopg 3.
    for scheme in ('postgres', 'postgresql'):
        url = postgres.create_database(f'scheme_{scheme}').replace('postgresql+psycopg://', f'{scheme}://')
        created = run_python('-m', 'flask', '--app', 'server', 'create-client', 'svc', '--json',
                             env={'DATABASE_URL': url})
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)['name'] == 'svc'
