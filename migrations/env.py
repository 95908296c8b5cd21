"""Alembic's entry point, run by Flask-Migrate (`flask --app server db ...`)
and by production.database.upgrade_schema() inside the app.

Unlike Flask-Migrate's template it leaves logging alone: fileConfig() would
switch off the app's loggers (the audit log among them).
"""
from contextlib import contextmanager, nullcontext

from alembic import context
from alembic.util import CommandError
from flask import current_app

migrate = current_app.extensions['migrate']
metadata = migrate.db.metadata


def run_migrations_offline():
    """`flask db upgrade --sql`: print the SQL instead of running it."""
    context.configure(url=migrate.db.engine.url, target_metadata=metadata, literal_binds=True,
                      **migrate.configure_args)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    def skip_empty_revisions(context, revision, directives):
        # `flask db migrate` with no change to the models writes no file.
        if getattr(context.config.cmd_opts, 'autogenerate', False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []

    arguments = {'process_revision_directives': skip_empty_revisions, **migrate.configure_args}
    with migrate.db.engine.connect() as connection:
        sqlite = connection.dialect.name == 'sqlite'
        with sqlite_foreign_keys_off(connection) if sqlite else nullcontext():
            context.configure(connection=connection, target_metadata=metadata, **arguments)
            with context.begin_transaction():
                context.run_migrations()


@contextmanager
def sqlite_foreign_keys_off(connection):
    """The migrations, on SQLite, in one transaction with foreign keys off.

    SQLite cannot alter most of a table: Alembic's batch mode copies it, drops
    the old one and renames the copy. Every connection turns foreign keys on
    (production/sqlite.py), and with them on, dropping `clients` deletes
    every token and item through ON DELETE CASCADE. So, as Alembic's batch
    documentation says, they are off while migrations run: set outside a
    transaction (inside one SQLite ignores the pragma), checked once at the
    end, and on again before the connection goes back to the pool.

    AUTOCOMMIT keeps Python's sqlite3 from opening and committing
    transactions of its own (it would commit each CREATE and DROP as it
    goes), so the BEGIN below holds the whole run, DDL included: a failed
    migration, or a failed check, leaves the database as it was."""
    connection.execution_options(isolation_level='AUTOCOMMIT')  # back to the default in the pool
    connection.exec_driver_sql('PRAGMA foreign_keys=OFF')
    connection.exec_driver_sql('BEGIN')
    try:
        yield  # Alembic finds the connection in a transaction, and leaves it to us
        broken = connection.exec_driver_sql('PRAGMA foreign_key_check').fetchall()
        if broken:  # (table, rowid, parent table, constraint): rows pointing at nothing
            tables = ', '.join(sorted({f'{row[0]} -> {row[2]}' for row in broken}))
            raise CommandError(f'the migration would leave {len(broken)} row(s) pointing at nothing '
                               f'({tables}); nothing was changed')
        connection.exec_driver_sql('COMMIT')
    finally:
        if connection.connection.driver_connection.in_transaction:  # a failure: SQLite may have ended it already
            connection.exec_driver_sql('ROLLBACK')
        connection.exec_driver_sql('PRAGMA foreign_keys=ON')
        connection.commit()  # SQLAlchemy's own record of a transaction; SQLite's has ended


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
