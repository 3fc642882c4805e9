"""add decisions on answered content gaps

What an admin made of a question the bot could not answer and a teammate then did: a help snippet (its
article's slug) or nothing. One row per customer question.

Revision ID: d343f751d01c
Revises: 3f9b2c7d1e45
Create Date: 2026-12-07 17:22:48.646590
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (columns render as sqlmodel.sql.sqltypes.AutoString)
from alembic import op

revision: str = "d343f751d01c"
down_revision: str | Sequence[str] | None = "3f9b2c7d1e45"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gapdecision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("article_slug", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["message.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gapdecision", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gapdecision_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_gapdecision_message_id"), ["message_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("gapdecision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gapdecision_message_id"))
        batch_op.drop_index(batch_op.f("ix_gapdecision_conversation_id"))

    op.drop_table("gapdecision")
