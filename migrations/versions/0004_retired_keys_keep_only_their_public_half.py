"""A retired signing key keeps only its public half: `signing_keys.private_pem`
may be NULL.

`rotate-signing-key` deletes the private key of the key it retires; the
public half stays published until the tokens it signed have expired. Keys
retired before this revision lose their private key here.

Downgrading writes '' where a retired key has no private key, so that
every row survives the NOT NULL of the older schema: the older code never
reads the private key of a retired key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.alter_column('private_pem', existing_type=sa.Text(), nullable=True)
    op.execute('UPDATE signing_keys SET private_pem = NULL WHERE retired_at IS NOT NULL')


def downgrade():
    op.execute("UPDATE signing_keys SET private_pem = '' WHERE private_pem IS NULL")
    with op.batch_alter_table('signing_keys', schema=None) as batch_op:
        batch_op.alter_column('private_pem', existing_type=sa.Text(), nullable=False)
