"""Schema migrations (Flask-Migrate): `flask --app server db upgrade` creates a
database or brings it up to date, and a database made before migrations
existed keeps every client, token and item."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

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


# A process loads Alembic only to change the schema: the script says which
# of the two modules are loaded once the app has answered its first request.
FIRST_REQUEST = """
import sys
import server
answer = server.app.test_client().get('/api/me')
print(answer.status_code, 'alembic' in sys.modules, 'flask_migrate' in sys.modules)
"""


def test_a_server_on_an_up_to_date_database_never_loads_alembic(empty_database):
    from production.database import NEWEST_MIGRATION
    assert NEWEST_MIGRATION == HEAD  # what the server compares the database with, without Alembic
    assert flask_command(empty_database, 'db', 'upgrade').returncode == 0
    result = run_python('-c', FIRST_REQUEST, env={'DATABASE_URL': empty_database})
    assert result.stdout.split() == ['401', 'False', 'False'], result.stderr[-2000:]


def test_a_server_on_an_older_schema_upgrades_it_at_its_first_request(empty_database):
    assert flask_command(empty_database, 'db', 'upgrade', '0004').returncode == 0
    result = run_python('-c', FIRST_REQUEST, env={'DATABASE_URL': empty_database})
    assert result.stdout.split() == ['401', 'True', 'True'], result.stderr[-2000:]
    assert query(empty_database, 'SELECT version_num FROM alembic_version') == [(HEAD,)]


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


# --- Down and up again, with rows in every table ------------------------------

REVISIONS = [script.revision for script in reversed(list(ScriptDirectory(str(ROOT / 'migrations')).walk_revisions()))]


def fill_every_table(database_url):
    """A database at the newest revision with rows in every table, as a
    server in use has them: clients, live tokens, items, counters, a signing
    key and a retired one, used assertion ids."""
    from models import db
    assert flask_command(database_url, 'db', 'upgrade').returncode == 0
    now = datetime.now(UTC).replace(microsecond=0)
    later = now + timedelta(hours=1)
    tables = db.metadata.tables
    rows = {
        'clients': [{'id': pk, 'client_id': f'kept-{pk}', 'name': f'Kept service {pk}', 'secret_hash': 'hash',
                     'scope': 'read write', 'created_at': now, 'dpop_bound_access_tokens': pk == 2} for pk in (1, 2)],
        'tokens': [{'access_token_hash': f'{number:064d}', 'client_pk': 1 + number % 2, 'scope': 'read',
                    'issued_at': now, 'expires': later, 'jkt': f'thumbprint-{number}' if number % 2 else None}
                   for number in range(5)],
        'items': [{'client_pk': 1 + number % 2, 'name': f'item {number}', 'created_at': now} for number in range(3)],
        'rate_limits': [{'name': f'counter-{number}', 'count': number, 'expires_at': 2e9} for number in range(2)],
        'signing_keys': [{'kid': 'retired', 'alg': 'ES256', 'public_jwk': '{}', 'private_pem': None, 'created_at': now,
                          'retired_at': now, 'publish_until': later},
                         {'kid': 'signing', 'alg': 'ES256', 'public_jwk': '{}', 'private_pem': 'PEM', 'created_at': now,
                          'retired_at': None, 'publish_until': None}],
        'used_assertions': [{'key': f'{number:064d}', 'expires': later} for number in range(2)],
    }
    assert set(rows) == set(tables), 'a new table: give it rows here'
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        for table in db.metadata.sorted_tables:
            connection.execute(tables[table.name].insert(), rows[table.name])
    engine.dispose()
    return every_row(database_url)


def every_row(database_url):
    """{table: its rows as dicts, in primary key order}, but Alembic's own table."""
    engine = sa.create_engine(database_url)
    try:
        inspector = sa.inspect(engine)
        rows = {}
        with engine.connect() as connection:
            for name in set(inspector.get_table_names()) - {'alembic_version'}:
                order = ', '.join(inspector.get_pk_constraint(name)['constrained_columns'])
                rows[name] = [dict(row) for row in connection.execute(sa.text(f'SELECT * FROM {name} ORDER BY {order}'))
                              .mappings()]
        return rows
    finally:
        engine.dispose()


def kept(before, after, revision=HEAD):
    """The rows of `before`, cut to the columns each table has in `after`, as
    `revision` holds them: before 0004 a retired key's missing private key is ''."""
    cut = {name: [{column: row[column] for column in (after[name][0] if after[name] else row)} for row in before[name]]
           for name in after}
    if revision < '0004' and 'signing_keys' in cut:
        cut['signing_keys'] = [{**row, 'private_pem': row['private_pem'] or ''} for row in cut['signing_keys']]
    return cut


@pytest.mark.parametrize('revision', REVISIONS[:-1])
def test_down_to_an_older_revision_and_up_again_keeps_every_row(empty_database, revision):
    """Alembic's batch mode on SQLite copies a table and drops the old one: with
    foreign keys on, dropping `clients` would delete every token and item."""
    before = fill_every_table(empty_database)
    assert all(before.values())
    down = flask_command(empty_database, 'db', 'downgrade', revision)
    assert down.returncode == 0, down.stderr
    assert query(empty_database, 'SELECT version_num FROM alembic_version') == [(revision,)]
    older = every_row(empty_database)
    assert {name: len(rows) for name, rows in older.items()} == {name: len(before[name]) for name in older}
    assert older == kept(before, older, revision)
    up = flask_command(empty_database, 'db', 'upgrade')
    assert up.returncode == 0, up.stderr
    again = every_row(empty_database)
    assert set(again) == set(before)
    # The tables the older revision had keep every row; the others start empty again.
    assert {name: len(rows) for name, rows in again.items()} == {
        name: len(before[name]) if name in older else 0 for name in before}
    assert kept(again, older, revision) == older
    assert all(row['private_pem'] is None for row in again['signing_keys'] if row['retired_at'])


def test_keys_retired_before_0004_lose_their_private_key_there(empty_database):
    fill_every_table(empty_database)
    assert flask_command(empty_database, 'db', 'downgrade', '0003').returncode == 0
    query(empty_database, "UPDATE signing_keys SET private_pem = 'what 0003 kept' WHERE kid = 'retired'")
    assert flask_command(empty_database, 'db', 'upgrade').returncode == 0
    assert query(empty_database, 'SELECT kid, private_pem FROM signing_keys ORDER BY id') == [
        ('retired', None), ('signing', 'PEM')]


@pytest.mark.skipif('sqlite' not in SERVER_KINDS, reason='the first pass, on SQLite, runs it')
def test_a_migration_that_would_break_a_foreign_key_is_refused_and_changes_nothing(tmp_path):
    """SQLite: the migrations run with foreign keys off, so what they leave is
    checked at the end (PRAGMA foreign_key_check) and rolled back, DDL too."""
    database_url = f'sqlite:///{tmp_path}/orphan.sqlite'
    fill_every_table(database_url)
    assert flask_command(database_url, 'db', 'downgrade', REVISIONS[-2]).returncode == 0
    schema = query(database_url, 'SELECT name, sql FROM sqlite_master ORDER BY name')
    engine = sa.create_engine(database_url)  # a connection of our own: production/sqlite.py turns foreign keys on
    with engine.begin() as connection:
        connection.exec_driver_sql('PRAGMA foreign_keys=OFF')
        connection.exec_driver_sql(
            "INSERT INTO items (client_pk, name, created_at) VALUES (99, 'orphan', '2026-01-01')")
    engine.dispose()
    refused = flask_command(database_url, 'db', 'upgrade')
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        'Error: the migration would leave 1 row(s) pointing at nothing (items -> clients); nothing was changed')
    assert query(database_url, 'SELECT version_num FROM alembic_version') == [(REVISIONS[-2],)]
    assert query(database_url, 'SELECT name, sql FROM sqlite_master ORDER BY name') == schema


def test_a_migration_written_the_documented_way_keeps_every_row(empty_database, tmp_path):
    """`flask --app server db migrate` after a change to the models (here:
    longer names), then up and down: on SQLite both copy `clients`."""
    copy = tmp_path / 'project'
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns('.venv', '.git', 'instance', '__pycache__', '.*'))
    models = copy / 'models.py'
    models.write_text(models.read_text().replace('NAME_MAX_LENGTH = 200', 'NAME_MAX_LENGTH = 300'))
    before = fill_every_table(empty_database)

    def in_copy(*args):
        result = subprocess.run([sys.executable, '-m', 'flask', '--app', 'server', *args], cwd=copy,
                                env={**os.environ, 'DATABASE_URL': empty_database},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stderr
        return result
    in_copy('db', 'migrate', '-m', 'longer names')
    written = [path for path in (copy / 'migrations' / 'versions').glob('*.py')
               if path.name not in {f.name for f in (ROOT / 'migrations' / 'versions').glob('*.py')}]
    assert len(written) == 1 and "batch_alter_table('clients'" in written[0].read_text()
    in_copy('db', 'upgrade')
    assert every_row(empty_database) == before
    assert query(empty_database, "SELECT count(*) FROM clients WHERE length(name) < 300") == [(2,)]
    in_copy('db', 'downgrade', HEAD)
    assert query(empty_database, 'SELECT version_num FROM alembic_version') == [(HEAD,)]
    assert every_row(empty_database) == before
