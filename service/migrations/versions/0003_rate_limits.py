"""Rate limiting per API key: one counter per key and fixed window, shared by every worker and
instance that uses the same database. Counters are scratch state, not records: rows of windows
that have passed are deleted.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key_id", sa.String(32), primary_key=True),
        # Unix seconds at the window's start: an integer compares and rounds the same everywhere.
        sa.Column("window_start", sa.BigInteger(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
