"""add shared rate-limit counts

Revision ID: 8c1f5e2a9b3d
Revises: 9c1e5a7b3d20
Create Date: 2026-11-30 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (columns render as sqlmodel.sql.sqltypes.AutoString)
from alembic import op

revision: str = "8c1f5e2a9b3d"
down_revision: str | Sequence[str] | None = "9c1e5a7b3d20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ratecount",
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start"),
    )


def downgrade() -> None:
    op.drop_table("ratecount")
