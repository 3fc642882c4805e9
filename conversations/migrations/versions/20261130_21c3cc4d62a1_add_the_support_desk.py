"""add the support desk: tickets, notes, canned replies, webhooks, alert deliveries, staff teams

Revision ID: 21c3cc4d62a1
Revises: a18e2b4c6d02
Create Date: 2026-11-30 11:07:02.315630
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (columns render as sqlmodel.sql.sqltypes.AutoString)
from alembic import op

revision: str = "21c3cc4d62a1"
down_revision: str | Sequence[str] | None = "a18e2b4c6d02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "alertdelivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("target", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.Enum("pending", "sent", "failed", name="deliverystatus"), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alertdelivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alertdelivery_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_alertdelivery_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alertdelivery_event"), ["event"], unique=False)
        batch_op.create_index(batch_op.f("ix_alertdelivery_next_attempt_at"), ["next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_alertdelivery_status"), ["status"], unique=False)

    op.create_table(
        "cannedreply",
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["staffaccount.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("cannedreply", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cannedreply_title"), ["title"], unique=True)

    op.create_table(
        "deskticket",
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("team", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_response_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("outside_hours", sa.Boolean(), nullable=False),
        sa.Column("customer_email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["staffaccount.id"],
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
        ),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    with op.batch_alter_table("deskticket", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deskticket_assignee_id"), ["assignee_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deskticket_team"), ["team"], unique=False)
        batch_op.create_index(batch_op.f("ix_deskticket_waiting_since"), ["waiting_since"], unique=False)

    op.create_table(
        "note",
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=True),
        sa.Column("author", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["staffaccount.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("note", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_note_conversation_id"), ["conversation_id"], unique=False)

    with op.batch_alter_table("staffaccount", schema=None) as batch_op:
        batch_op.add_column(sa.Column("team", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("on_duty", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("staffaccount", schema=None) as batch_op:
        batch_op.drop_column("on_duty")
        batch_op.drop_column("team")

    with op.batch_alter_table("note", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_note_conversation_id"))

    op.drop_table("note")
    with op.batch_alter_table("deskticket", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deskticket_waiting_since"))
        batch_op.drop_index(batch_op.f("ix_deskticket_team"))
        batch_op.drop_index(batch_op.f("ix_deskticket_assignee_id"))

    op.drop_table("deskticket")
    with op.batch_alter_table("cannedreply", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cannedreply_title"))

    op.drop_table("cannedreply")
    with op.batch_alter_table("alertdelivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alertdelivery_status"))
        batch_op.drop_index(batch_op.f("ix_alertdelivery_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_alertdelivery_event"))
        batch_op.drop_index(batch_op.f("ix_alertdelivery_created_at"))
        batch_op.drop_index(batch_op.f("ix_alertdelivery_conversation_id"))

    op.drop_table("alertdelivery")
    sa.Enum(name="deliverystatus").drop(op.get_bind(), checkfirst=True)
    op.drop_table("webhook")
