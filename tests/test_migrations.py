"""Schema migrations (Flask-Migrate): `flask --app server db upgrade` creates a
database or brings it up to date, and a database made before migrations
existed keeps every client, token and item."""
import hashlib
import json
import uuid
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from conftest import ROOT, SERVER_KINDS, run_python
from werkzeug.security import generate_password_hash

HEAD = ScriptDirectory(str(ROOT / 'migrations')).get_current_head()
TABLES = {'clients', 'tokens', 'items', 'rate_limits', 'alembic_version'}


@pytest.fixture(params=SERVER_KINDS)
def empty_database(request, tmp_path):
    if request.param == 'sqlite':
        return f'sqlite:///{tmp_path}/migrate-{uuid.uuid4().hex[:8]}.sqlite'
    return request.getfixturevalue('postgres').create_database(f'migrate_{uuid.uuid4().hex[:12]}')


def query(database_url, sql, **params):
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            result = connection.execute(sa.text(sql), params)
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()


def table_names(database_url):
    engine = sa.create_engine(database_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def flask_command(database_url, *args):
    result = run_python('-m', 'flask', '--app', 'server', *args, env={'DATABASE_URL': database_url})
    assert 'Traceback' not in result.stderr
    return result


def test_upgrade_creates_the_schema_and_a_second_run_changes_nothing(empty_database):
    assert flask_command(empty_database, 'db', 'upgrade').returncode == 0
    assert table_names(empty_database) >= TABLES
    assert query(empty_database, 'SELECT version_num FROM alembic_version') == [(HEAD,)]
    assert flask_command(empty_database, 'db', 'upgrade').returncode == 0
    assert query(empty_database, 'SELECT version_num FROM alembic_version') == [(HEAD,)]


def make_legacy_database(database_url):
    """A database as the server made it before migrations, with one client,
    one live token and one item in it."""
    kind = database_url.split(':')[0].split('+')[0]
    ddl = (ROOT / 'tests' / 'data' / f'schema-before-migrations.{kind}.sql').read_text()
    engine = sa.create_engine(database_url)
    now = datetime.utcnow().replace(microsecond=0)
    with engine.begin() as connection:
        for statement in ddl.split(';'):
            if statement.strip().strip('-').strip() and 'CREATE' in statement:
                connection.exec_driver_sql(statement)
        connection.execute(sa.text(
            "INSERT INTO clients (client_id, name, secret_hash, scope, grant_types, disabled, created_at) "
            "VALUES ('legacy', 'Legacy service', :hash, 'read write', 'client_credentials', false, :now)"),
            {'hash': generate_password_hash('legacy-secret', 'pbkdf2:sha256:1'), 'now': now})
        connection.execute(sa.text(
            "INSERT INTO tokens (access_token_hash, client_pk, scope, issued_at, expires) "
            "SELECT :hash, id, 'read write', :now, :expires FROM clients"),
            {'hash': hashlib.sha256(b'legacy-token').hexdigest(), 'now': now, 'expires': now + timedelta(hours=1)})
        connection.execute(sa.text(
            "INSERT INTO items (client_pk, name, created_at) SELECT id, 'kept item', :now FROM clients"), {'now': now})
    engine.dispose()
    assert 'alembic_version' not in table_names(database_url)


ROWS = {'clients': 'SELECT client_id, name, secret_hash, scope FROM clients',
        'tokens': 'SELECT access_token_hash, scope, issued_at, expires FROM tokens',
        'items': 'SELECT name, created_at FROM items'}


def test_a_database_from_before_migrations_keeps_its_data(empty_database):
    make_legacy_database(empty_database)
    before = {table: query(empty_database, sql) for table, sql in ROWS.items()}
    result = flask_command(empty_database, 'db', 'upgrade')
    assert result.returncode == 0, result.stderr
    assert query(empty_database, 'SELECT version_num FROM alembic_version') == [(HEAD,)]
    assert {table: query(empty_database, sql) for table, sql in ROWS.items()} == before
    assert all(before.values())
    # The server still honours what was stored: the old token and secret work.
    check = run_python('-c', (
        'import server\n'
        'http = server.app.test_client()\n'
        'print(http.get("/api/items", headers={"Authorization": "Bearer legacy-token"}).get_json())\n'
        'print(http.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "legacy",'
        ' "client_secret": "legacy-secret"}).status_code)\n'), env={'DATABASE_URL': empty_database})
    assert check.returncode == 0, check.stderr
    items, token_status = check.stdout.splitlines()
    assert 'kept item' in items
    assert token_status == '200'


def test_a_command_on_a_database_from_before_migrations_upgrades_it_first(empty_database):
    make_legacy_database(empty_database)
    result = flask_command(empty_database, 'list-clients')
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('legacy\tLegacy service')
    assert query(empty_database, 'SELECT version_num FROM alembic_version') == [(HEAD,)]


def test_a_server_older_than_the_schema_serves_on_it_and_leaves_it_alone(empty_database):
    """A rolling deploy: a newer release on another app server has migrated
    first. The older code answers requests and runs commands (one warning),
    and does not touch the schema; only `db upgrade` refuses, in one line."""
    assert flask_command(empty_database, 'db', 'upgrade').returncode == 0
    query(empty_database, "UPDATE alembic_version SET version_num = 'f00dfeedf00d'")
    created = flask_command(empty_database, 'create-client', 'rolling', '--json')
    assert created.returncode == 0, created.stderr
    assert created.stderr.count('newer than this code knows') == 1
    client_id = json.loads(created.stdout)['client_id']
    serving = run_python('-c', (
        'import server\n'
        'http = server.app.test_client()\n'
        'for _ in range(3):\n'
        '    print(http.get("/api/me").status_code)\n'), env={'DATABASE_URL': empty_database})
    assert serving.returncode == 0, serving.stderr
    assert serving.stdout.split() == ['401'] * 3
    assert serving.stderr.count('revision f00dfeedf00d, newer than this code knows') == 1
    assert 'Traceback' not in serving.stderr
    refused = flask_command(empty_database, 'db', 'upgrade')
    assert refused.returncode == 1
    assert "Can't locate revision identified by 'f00dfeedf00d'" in refused.stderr
    assert query(empty_database, 'SELECT version_num FROM alembic_version') == [('f00dfeedf00d',)]
    assert query(empty_database, 'SELECT client_id FROM clients') == [(client_id,)]
