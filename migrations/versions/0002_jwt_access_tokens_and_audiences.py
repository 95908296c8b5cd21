"""JWT access tokens and audiences: a token format and resources per client,
an audience per token, and the signing keys.

Existing clients keep the server's default format and may ask only for this
server's own API; existing tokens have no audience (NULL), which this
server's API accepts as before.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_format', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('resources', sa.String(length=4000), server_default='', nullable=False))

    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('audience', sa.String(length=4000), nullable=True))

    op.create_table('signing_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kid', sa.String(length=64), nullable=False),
        sa.Column('alg', sa.String(length=16), nullable=False),
        sa.Column('public_jwk', sa.Text(), nullable=False),
        sa.Column('private_pem', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('retired_at', sa.DateTime(), nullable=True),
        sa.Column('publish_until', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('kid')
    )


def downgrade():
    op.drop_table('signing_keys')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('audience')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('resources')
        batch_op.drop_column('token_format')
