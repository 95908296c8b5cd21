"""The database: Flask-SQLAlchemy's `db`, one connection per request for the
statements every request runs, and the schema's migrations.

The shape follows Flask's tutorial (flaskr/db.py): `get_connection()` opens
this request's connection on first use and keeps it on `g`;
`close_connection()` gives it back when the request ends; `init_app(app)`
wires both. The models run their hot statements through `execute_one()`.

Flask-Migrate, and Alembic with it (11 MiB in each process), is imported
only when the schema must change or a `flask db` command runs: a server
whose database is at the newest migration never loads it.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import click
from flask import current_app, g, request
from flask.cli import with_appcontext
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase

from production.sqlite import create_database_file, database_file, remember_file, sqlite_writers


class Base(DeclarativeBase):
    pass


# The session lives for one request: re-reading every object after each commit
# (SQLAlchemy's default) only costs queries.
db = SQLAlchemy(model_class=Base, session_options={'expire_on_commit': False})

MIGRATIONS = Path(__file__).resolve().parent.parent / 'migrations'
# The revision of the newest migration in MIGRATIONS (tests/test_migrations.py
# checks it): a database at it needs no Alembic.
NEWEST_MIGRATION = '0005'


def init_app(app) -> None:
    db.init_app(app)
    app.cli.add_command(migration_commands)
    with app.app_context():
        create_database_file(db.engine)  # SQLite: a new file is its owner's only (production/sqlite.py)
        remember_file(database_file(db.engine))  # SQLite: the file as it is now
    app.teardown_request(close_connection)
    app.teardown_appcontext(close_connection)  # a command, or a context without a request
    app.before_request(upgrade_schema_on_first_request)


@lru_cache(maxsize=8)
def request_engine(engine: Engine) -> Engine:
    """The engine the hot statements use. On a database server each runs in
    autocommit, a transaction of its own, which spares the round trips of
    BEGIN and COMMIT; SQLite has no round trips to spare."""
    if engine.dialect.name == 'sqlite':
        return engine
    return engine.execution_options(isolation_level='AUTOCOMMIT')


def get_connection() -> Connection:
    """This request's connection: one pool checkout (and, on a database
    server, one pre-ping) however many hot statements the request runs."""
    connection = g.get('db_connection')
    if connection is None:
        connection = g.db_connection = request_engine(db.engine).connect()
    return connection


def close_connection(error: BaseException | None = None) -> None:
    connection = g.pop('db_connection', None)
    if connection is not None:
        connection.close()  # back to the pool


def execute_one(statement, params: dict, *, write: bool = False) -> Row | None:
    """Run one statement; its first row, or None. A write is committed before
    this returns, after taking its turn among SQLite's writers
    (production/sqlite.py). A read needs no commit: SQLite's driver opens no
    transaction for a SELECT, and a database server runs it in autocommit."""
    connection = get_connection()
    try:
        if not write:
            return connection.execute(statement, params).first()
        with sqlite_writers.turn(connection):
            row = connection.execute(statement, params).first()
            connection.commit()
        return row
    except SQLAlchemyError:
        connection.rollback()
        raise


def location() -> str:
    """Where the data is, fit to print: a SQLite file's path, or the URL without its password."""
    return database_file(db.engine) or db.engine.url.render_as_string(hide_password=True)


def database_error_line(error: SQLAlchemyError) -> str:
    """The database's own words, one line: for logs and the command line."""
    return str(getattr(error, 'orig', None) or error).strip().splitlines()[0]


# --- Migrations (Flask-Migrate, which runs Alembic) -----------------------

def set_up_flask_migrate():
    """The flask_migrate module, once Migrate is set up on this app (on first use)."""
    import flask_migrate
    app = current_app._get_current_object()
    if 'migrate' not in app.extensions:
        # render_as_batch: SQLite cannot ALTER most things; Alembic's batch mode copies the table instead.
        flask_migrate.Migrate(app, db, directory=str(MIGRATIONS), render_as_batch=True, compare_type=True)
    return flask_migrate


@click.command('db', add_help_option=False, context_settings={'ignore_unknown_options': True,
                                                              'allow_extra_args': True})
@click.pass_context
@with_appcontext
def migration_commands(ctx) -> None:
    """Schema migrations: Flask-Migrate's commands (flask db upgrade, ...)."""
    set_up_flask_migrate()
    from flask_migrate.cli import db as commands
    commands.main(ctx.args, prog_name=ctx.command_path)  # its options, its help, its exit code


SCHEMA_LOCK = 70060749  # PostgreSQL advisory lock id: any number, the same in every process


@contextmanager
def schema_lock(engine: Engine):
    """One process at a time changes the schema: several gunicorn workers
    (or app servers) may start on an empty database at the same moment."""
    if engine.dialect.name != 'postgresql':
        with sqlite_writers.exclusive(engine):
            yield
        return
    with engine.connect() as connection:
        connection.execute(text('SELECT pg_advisory_lock(:id)'), {'id': SCHEMA_LOCK})
        try:
            yield
        finally:
            connection.execute(text('SELECT pg_advisory_unlock(:id)'), {'id': SCHEMA_LOCK})
            connection.commit()


def at_newest_migration(engine: Engine) -> bool:
    """The schema is at NEWEST_MIGRATION: read from Alembic's table without Alembic."""
    with engine.connect() as connection:
        if not inspect(connection).has_table('alembic_version'):
            return False
        return connection.execute(text('SELECT version_num FROM alembic_version')).scalars().all() == [
            NEWEST_MIGRATION]


def unknown_revisions(engine: Engine) -> list[str]:
    """The revisions the database's schema is at that this code's migrations
    do not know: a newer release has already upgraded it."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    with engine.connect() as connection:
        return [revision for revision in MigrationContext.configure(connection).get_current_heads()
                if revision not in known]


def upgrade_schema() -> None:
    """Bring the schema to the newest migration; on an empty database, create
    it. Then, once a passphrase is set, encrypt any signing key stored in
    clear (production/signing_keys.py). Every entry point runs it before it
    uses the database. Needs an app context. `flask --app server db upgrade`
    runs the migrations alone."""
    from production.signing_keys import protect_stored_keys  # it imports the models, which import this module
    with schema_lock(db.engine):
        if not at_newest_migration(db.engine):
            migrate_to_newest()
        protect_stored_keys()


def migrate_to_newest() -> None:
    newer = unknown_revisions(db.engine)
    if newer:
        # A rolling deploy: a newer release, on another server, has migrated
        # first. This one runs on that schema instead of refusing every
        # request (Flask-Migrate would exit the process); docs/migrations.md asks
        # migrations to keep the previous release working.
        current_app.logger.warning(
            'the database schema is at revision %s, newer than this code knows; '
            'not upgrading it', ', '.join(newer))
    else:
        set_up_flask_migrate().upgrade()


_schema_ready = False


def upgrade_schema_on_first_request() -> None:
    """gunicorn never runs `python server.py`: its workers upgrade the schema
    before their first request (a no-op once it is up to date)."""
    global _schema_ready
    # A health probe only asks whether the database answers.
    if not _schema_ready and request.endpoint != 'healthz':
        upgrade_schema()
        _schema_ready = True
