"""Sign-offs that say what they mean and who made them, sessions that end, and sign-in failures.

- reviews: the action's recorded meaning, the rules an override names, the credential the
  reviewer was bound to (``session`` or ``api_key``) and, for a re-screen, the new decision.
  Old rows keep NULL there and still read correctly (service.signoff.LEGACY).
- api_keys.physician: the person a key signs off as (sign-offs through the API need one).
- web_sessions: sign-ins of the clinician pages, so that signing out ends a session in every
  worker and instance (the cookie only names the session).
- signin_failures: failed sign-ins per user name, one row per failure, deleted once out of the
  window (a sliding-window log; see service.web.signin).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("reviews", sa.Column("meaning", sa.Text(), nullable=True))
    op.add_column("reviews", sa.Column("overridden_rules", sa.JSON(), nullable=True))
    op.add_column("reviews", sa.Column("credential", sa.String(32), nullable=True))
    op.add_column("reviews", sa.Column("rescreen_decision_id", sa.String(64), nullable=True))
    op.add_column("api_keys", sa.Column("physician", sa.String(64), nullable=True))
    op.create_table(
        "web_sessions",
        sa.Column("sid_sha256", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),  # Unix seconds
    )
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    op.create_table(
        "signin_failures",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("name_key", sa.String(64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),  # Unix seconds
    )
    op.create_index("ix_signin_failures_name_at", "signin_failures", ["name_key", "at"])
    op.create_index("ix_signin_failures_at", "signin_failures", ["at"])


def downgrade() -> None:
    op.drop_table("signin_failures")
    op.drop_table("web_sessions")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("physician")
    with op.batch_alter_table("reviews") as batch:
        for column in ("rescreen_decision_id", "credential", "overridden_rules", "meaning"):
            batch.drop_column(column)
