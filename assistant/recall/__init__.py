"""Long-term memory: facts a person asked the assistant to keep, across conversations and,
for a linked person, across platforms (docs/memory.md).

- ``commands``: "remember …", ``/memory``, ``/forget N|all`` (parsing only);
- ``text``: a memory is one clean line, never a role or a control token;
- ``search``: hybrid search (embeddings + BM25, reciprocal rank fusion);
- ``service``: ``LongTermMemory``, the one implementation every edge and the worker call.

The rows live in the SQL store (``assistant/store/memories.py``, migration 0004_memories).
"""

from assistant.recall.commands import Command, parse
from assistant.recall.service import LongTermMemory, RecallSettings, is_private

__all__ = ["Command", "LongTermMemory", "RecallSettings", "is_private", "parse"]
