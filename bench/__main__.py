"""``python -m bench``: direct vs. pipeline (``bench.cli``), then long conversations
(``bench.conversation``, issue 8; skip it with ``--no-conversation``)."""

import sys

from bench import conversation
from bench.cli import main

argv = sys.argv[1:]
skip_conversation = "--no-conversation" in argv
code = main([a for a in argv if a != "--no-conversation"])
if not skip_conversation:
    conversation_code = conversation.main([])
    code = code or conversation_code
raise SystemExit(code)
