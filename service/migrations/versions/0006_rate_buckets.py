"""Rate limits as token buckets shared by every worker and instance on the database (replacing
the fixed-window counters of 0003, which let twice the limit through across a window's edge).
Buckets are scratch state, not records: a bucket that would be full again is deleted.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("full_at", sa.Float(), nullable=False),
    )
    # Counters of the old windows are not carried over: every bucket starts full.
    op.drop_table("rate_limits")


def downgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("window_start", sa.BigInteger(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.drop_table("rate_buckets")
