"""add stored embeddings (issue 34: knowledge embedded once for every app replica)

`storedembedding` keeps each text's embedding by encoder id and the text's sha256, so a starting app process
reads the vectors another one computed instead of running the encoder over every passage again.

Revision ID: 3f9b2c7d1e45
Revises: e48220ddde16
Create Date: 2026-12-07 15:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (columns render as sqlmodel.sql.sqltypes.AutoString)
from alembic import op

revision: str = "3f9b2c7d1e45"
down_revision: str | Sequence[str] | None = "e48220ddde16"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "storedembedding",
        sa.Column("encoder", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("text_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("encoder", "text_hash"),
    )


def downgrade() -> None:
    op.drop_table("storedembedding")
