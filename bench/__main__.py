"""``python -m bench``: direct vs. pipeline (``bench.cli``), then long conversations
(``bench.conversation``, issue 8; skip it with ``--no-conversation``), then states found by
their token prefix (``bench.prefix``, issue 19; skip it with ``--no-prefix``)."""

import sys

from bench import conversation, prefix
from bench.cli import main

argv = sys.argv[1:]
skip_conversation = "--no-conversation" in argv
skip_prefix = "--no-prefix" in argv
code = main([a for a in argv if a not in ("--no-conversation", "--no-prefix")])
if not skip_conversation:
    conversation_code = conversation.main([])
    code = code or conversation_code
if not skip_prefix:
    prefix_code = prefix.main([])
    code = code or prefix_code
raise SystemExit(code)
