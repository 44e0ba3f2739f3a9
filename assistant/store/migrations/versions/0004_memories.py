"""Long-term memories a person can see and edit (assistant/store/memories.py, docs/memory.md).

Revision ID: 0004_memories
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_memories"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("workspace", sa.String(128), nullable=False, server_default="default"),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source_channel", sa.String(256), nullable=False, server_default=""),
        sa.Column("source_conversation", sa.String(64), nullable=False, server_default=""),
        sa.Column("source_message", sa.String(256), nullable=False, server_default=""),
        sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("embedding_model", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    # Covers the per-turn stamp query (count, newest edit, last id): no row is read.
    op.create_index("ix_memories_owner", "memories",
                    ["platform", "workspace", "user_id", "updated_at"])
    op.create_index("ix_memories_updated", "memories", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_memories_updated", table_name="memories")
    op.drop_index("ix_memories_owner", table_name="memories")
    op.drop_table("memories")
