"""add action calls (audit of order changes, failures) and the conversation's pending action (issue 18)

Revision ID: a18e2b4c6d02
Revises: a18e1d0c7f01
Create Date: 2026-11-30 12:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "a18e2b4c6d02"
down_revision: str | Sequence[str] | None = "a18e1d0c7f01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "actioncall",
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("changes", sa.Boolean(), nullable=False),
        sa.Column("identity", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("ms", sa.Float(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"]),
        sa.ForeignKeyConstraint(["message_id"], ["message.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("actioncall", schema=None) as batch_op:
        for column in ("conversation_id", "action", "changes", "outcome", "failed", "at"):
            batch_op.create_index(batch_op.f(f"ix_actioncall_{column}"), [column], unique=False)
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_action", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_column("pending_action")
    with op.batch_alter_table("actioncall", schema=None) as batch_op:
        for column in ("at", "failed", "outcome", "changes", "action", "conversation_id"):
            batch_op.drop_index(batch_op.f(f"ix_actioncall_{column}"))
    op.drop_table("actioncall")
