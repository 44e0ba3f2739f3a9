"""The knowledge base: collections, where each may be used (scopes), documents, and their
chunks with text, position and embedding (docs/knowledge.md).

Keyword search is the database's own, as for the archive (0002): an FTS5 external-content
table ``knowledge_chunks_fts`` kept in step by triggers on SQLite (Porter stemming: documents
are searched by topic words, not quoted); a generated ``tsvector`` column with a GIN index on
PostgreSQL. Vectors are float32 bytes in ``embedding``; on a PostgreSQL server that has the
``vector`` extension (pgvector), a ``vector`` column ``embedding_pg`` with an HNSW index is
added too (assistant/knowledge/vectors.py detects it; servers without it search by brute
force over the stored bytes).

Revision ID: 0005_knowledge
Revises: 0004_memories
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_knowledge"
down_revision = "0004_memories"
branch_labels = None
depends_on = None

DIMENSIONS = 384  # assistant/embedding.py: all-MiniLM-L6-v2

SQLITE_FTS = [
    "CREATE VIRTUAL TABLE knowledge_chunks_fts USING fts5(title, section, text, "
    "content='knowledge_chunks', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER knowledge_chunks_fts_insert AFTER INSERT ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_chunks_fts(rowid, title, section, text) "
    "VALUES (new.id, new.title, new.section, new.text); END",
    "CREATE TRIGGER knowledge_chunks_fts_delete AFTER DELETE ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_chunks_fts(knowledge_chunks_fts, rowid, title, section, text) "
    "VALUES ('delete', old.id, old.title, old.section, old.text); END",
]

POSTGRES_FTS = [
    "ALTER TABLE knowledge_chunks ADD COLUMN search tsvector GENERATED ALWAYS AS "
    "(to_tsvector('english', title || ' ' || section || ' ' || text)) STORED",
    "CREATE INDEX ix_knowledge_chunks_search ON knowledge_chunks USING gin (search)",
]

PGVECTOR = [
    "CREATE EXTENSION IF NOT EXISTS vector",
    f"ALTER TABLE knowledge_chunks ADD COLUMN embedding_pg vector({DIMENSIONS})",
    "CREATE INDEX ix_knowledge_chunks_vector ON knowledge_chunks "
    "USING hnsw (embedding_pg vector_cosine_ops)",
]


def upgrade() -> None:
    op.create_table(
        "knowledge_collections",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("embedding_model", sa.String(128), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_knowledge_collections_name"),
    )
    op.create_table(
        "knowledge_scopes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("collection_id", sa.Integer(),
                  sa.ForeignKey("knowledge_collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("place", sa.String(300), nullable=False),
        sa.UniqueConstraint("collection_id", "place", name="uq_knowledge_scope"),
    )
    op.create_index("ix_knowledge_scopes_place", "knowledge_scopes", ["place"])
    op.create_table(
        "knowledge_documents",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("collection_id", sa.Integer(),
                  sa.ForeignKey("knowledge_collections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("pages", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("chunk_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.String(500), nullable=False, server_default=""),
        # The file itself, so any worker can index it and an admin can re-index it later.
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("collection_id", "source", name="uq_knowledge_document_source"),
    )
    op.create_table(
        "knowledge_chunks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.Integer(),
                  sa.ForeignKey("knowledge_documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        # The document's title, copied: the full-text index matches a product's name in a
        # question even where the chunk's text does not repeat it.
        sa.Column("title", sa.String(300), nullable=False, server_default=""),
        sa.Column("section", sa.String(500), nullable=False, server_default=""),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_knowledge_chunks_document", "knowledge_chunks",
                    ["document_id", "position"])
    op.create_index("ix_knowledge_chunks_collection", "knowledge_chunks", ["collection_id"])

    bind = op.get_bind()
    dialect = bind.dialect.name
    for statement in {"sqlite": SQLITE_FTS, "postgresql": POSTGRES_FTS}.get(dialect, []):
        op.execute(statement)
    if dialect == "postgresql" and bind.execute(sa.text(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first():
        for statement in PGVECTOR:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS knowledge_chunks_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS knowledge_chunks_fts")
    op.drop_table("knowledge_chunks")
    op.drop_table("knowledge_documents")
    op.drop_table("knowledge_scopes")
    op.drop_table("knowledge_collections")
