"""one apology per message and periodic job claims (issue 34: several app replicas)

A recovery apology names the customer message it answers, unique, so app replicas sweeping at once post
one; `periodicjob` records when retention last started, claimed by one replica at a time.

Revision ID: e48220ddde16
Revises: 21c3cc4d62a1
Create Date: 2026-12-07 14:34:21.319167
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (columns render as sqlmodel.sql.sqltypes.AutoString)
from alembic import op

revision: str = "e48220ddde16"
down_revision: str | Sequence[str] | None = "21c3cc4d62a1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "periodicjob",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("holder", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recovers_message_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_message_recovers_message_id"), ["recovers_message_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_recovers_message_id"))
        batch_op.drop_column("recovers_message_id")

    op.drop_table("periodicjob")
