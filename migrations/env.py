"""Alembic's entry point, run by Flask-Migrate (`flask --app server db ...`)
and by production.database.upgrade_schema() inside the app.

Unlike Flask-Migrate's template it leaves logging alone: fileConfig() would
switch off the app's loggers (the audit log among them).
"""
from alembic import context
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
        context.configure(connection=connection, target_metadata=metadata, **arguments)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
