"""The schema before migrations: clients, tokens, items and rate-limit counters.

A database that db.create_all() made before migrations existed already has
these tables, exactly so: this revision creates only the tables that are
missing, and then the database is simply at this revision, its rows kept.
Timestamps are naive UTC (models.UTCDateTime).

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if 'clients' not in existing:
        op.create_table('clients',
            sa.Column('id', sa.Integer(), nullable=False),
            sa.Column('client_id', sa.String(length=64), nullable=False),
            sa.Column('name', sa.String(length=200), nullable=False),
            sa.Column('secret_hash', sa.String(length=256), nullable=False),
            sa.Column('scope', sa.String(length=1000), nullable=False),
            sa.Column('grant_types', sa.String(length=200), nullable=False),
            sa.Column('token_lifetime', sa.Integer(), nullable=True),
            sa.Column('disabled', sa.Boolean(), nullable=False),
            sa.Column('previous_secret_hash', sa.String(length=256), nullable=True),
            sa.Column('previous_secret_expires', sa.DateTime(), nullable=True),
            sa.Column('created_at', sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint('id'),
            sa.UniqueConstraint('client_id')
        )

    if 'rate_limits' not in existing:
        op.create_table('rate_limits',
            sa.Column('name', sa.String(length=255), nullable=False),
            sa.Column('count', sa.Integer(), nullable=False),
            sa.Column('expires_at', sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint('name')
        )

    if 'items' not in existing:
        op.create_table('items',
            sa.Column('id', sa.Integer(), nullable=False),
            sa.Column('client_pk', sa.Integer(), nullable=False),
            sa.Column('name', sa.String(length=200), nullable=False),
            sa.Column('created_at', sa.DateTime(), nullable=False),
            sa.ForeignKeyConstraint(['client_pk'], ['clients.id'], ondelete='CASCADE'),
            sa.PrimaryKeyConstraint('id')
        )
        with op.batch_alter_table('items', schema=None) as batch_op:
            batch_op.create_index(batch_op.f('ix_items_client_pk'), ['client_pk'], unique=False)

    if 'tokens' not in existing:
        op.create_table('tokens',
            sa.Column('id', sa.Integer(), nullable=False),
            sa.Column('access_token_hash', sa.String(length=64), nullable=False),
            sa.Column('client_pk', sa.Integer(), nullable=False),
            sa.Column('scope', sa.String(length=1000), nullable=False),
            sa.Column('issued_at', sa.DateTime(), nullable=False),
            sa.Column('expires', sa.DateTime(), nullable=False),
            sa.Column('revoked_at', sa.DateTime(), nullable=True),
            sa.ForeignKeyConstraint(['client_pk'], ['clients.id'], ondelete='CASCADE'),
            sa.PrimaryKeyConstraint('id'),
            sa.UniqueConstraint('access_token_hash')
        )
        with op.batch_alter_table('tokens', schema=None) as batch_op:
            batch_op.create_index(batch_op.f('ix_tokens_client_pk'), ['client_pk'], unique=False)
            batch_op.create_index(batch_op.f('ix_tokens_expires'), ['expires'], unique=False)


def downgrade():
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tokens_expires'))
        batch_op.drop_index(batch_op.f('ix_tokens_client_pk'))

    op.drop_table('tokens')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_items_client_pk'))

    op.drop_table('items')
    op.drop_table('rate_limits')
    op.drop_table('clients')
