"""DPoP (RFC 9449): the key thumbprint a token is bound to, and clients that
must bind every token.

Existing tokens are bearer tokens (jkt NULL); existing clients may send a
DPoP proof or not (dpop_bound_access_tokens false), as before.

Neither table is copied: SQLite (3.35 or later, which this server needs for
RETURNING) adds and drops these columns in place, as PostgreSQL does, so the
rows of every table stay where they are, both ways.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    # A default, so that the previous release can still register clients during a rolling deploy.
    op.add_column('clients', sa.Column('dpop_bound_access_tokens', sa.Boolean(), server_default='0', nullable=False))
    op.add_column('tokens', sa.Column('jkt', sa.String(length=43), nullable=True))


def downgrade():
    op.drop_column('tokens', 'jkt')
    op.drop_column('clients', 'dpop_bound_access_tokens')
