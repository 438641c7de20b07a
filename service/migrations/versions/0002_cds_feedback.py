"""CDS Hooks: feedback (what clinicians did with a card, kept against its decision,
append-only) and the JWT ids already used (replay refused across every worker and instance).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cds_feedback",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("decision_id", sa.String(64), sa.ForeignKey("decisions.decision_id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("client", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
    )
    op.create_index("ix_cds_feedback_decision", "cds_feedback", ["decision_id", "seq"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TRIGGER cds_feedback_append_only BEFORE UPDATE OR DELETE ON cds_feedback "
                   "FOR EACH ROW EXECUTE FUNCTION screening_append_only()")
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER cds_feedback_no_{event.lower()} BEFORE {event} ON cds_feedback "
                       "BEGIN SELECT RAISE(ABORT, 'cds_feedback is append-only'); END")


    op.create_table(
        "cds_jti",
        sa.Column("jti", sa.String(600), primary_key=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_cds_jti_expires_at", "cds_jti", ["expires_at"])


def downgrade() -> None:
    op.drop_table("cds_jti")
    op.drop_table("cds_feedback")
