"""add conversation verified identity (issue 18: signed widget identity)

Revision ID: a18e1d0c7f01
Revises: 8c1f5e2a9b3d
Create Date: 2026-11-30 11:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a18e1d0c7f01"
down_revision: str | Sequence[str] | None = "8c1f5e2a9b3d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verified_user_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("verified_email", sa.String(length=254), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_column("verified_email")
        batch_op.drop_column("verified_user_id")
