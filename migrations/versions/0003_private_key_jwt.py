"""private_key_jwt client authentication (RFC 7523): each client's method and
public keys, and the assertion ids already used.

Existing clients authenticate with their secret, as before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_endpoint_auth_method', sa.String(length=40),
                                      server_default='client_secret_basic', nullable=False))
        batch_op.add_column(sa.Column('jwks', sa.Text(), nullable=True))

    op.create_table('used_assertions',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('expires', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('used_assertions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_used_assertions_expires'), ['expires'], unique=False)


def downgrade():
    with op.batch_alter_table('used_assertions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_used_assertions_expires'))
    op.drop_table('used_assertions')
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('jwks')
        batch_op.drop_column('token_endpoint_auth_method')
