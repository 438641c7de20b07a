"""Append-only against REPLACE too: on SQLite, `INSERT OR REPLACE` (and `REPLACE INTO`) deletes
the row it conflicts with *without* firing DELETE triggers (unless recursive_triggers is on, which
a connection of someone else's never sets), so with write access to the file a decision could be
rewritten. A BEFORE INSERT trigger refuses any insert whose key already exists, before the
conflict is resolved. On PostgreSQL `INSERT ... ON CONFLICT DO UPDATE` already fires the UPDATE
trigger; what was missing there is the TRUNCATE trigger on cds_feedback.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# table -> the columns whose clash REPLACE would resolve by deleting the existing row
_KEYS = {
    "decisions": ("seq", "decision_id"),
    "reviews": ("seq", "review_id"),
    "cds_feedback": ("seq",),
}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TRIGGER cds_feedback_no_truncate BEFORE TRUNCATE ON cds_feedback "
                   "FOR EACH STATEMENT EXECUTE FUNCTION screening_append_only()")
        return
    for table, keys in _KEYS.items():
        clash = " OR ".join(f"{key} = NEW.{key}" for key in keys)
        # Table and column names are the constants above, never input.
        op.execute(f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "  # nosec B608 - constant names
                   f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {clash}) "
                   f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS cds_feedback_no_truncate ON cds_feedback")
        return
    for table in _KEYS:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_replace")
