"""Memories the assistant noticed by itself (automatic extraction, docs/memory.md) are marked,
so the person sees which ones they did not ask for.

Revision ID: 0006_memory_origin
Revises: 0005_knowledge
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_memory_origin"
down_revision = "0005_knowledge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("memories", sa.Column("automatic", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("memories") as batch:
        batch.drop_column("automatic")
