"""llama.cpp grammars (GBNF) for replies that must be JSON: OpenAI's tools and response_format.

llama-cpp-python turns a JSON schema into GBNF (``json_schema_to_gbnf``, llama.cpp's own
converter ported: https://github.com/ggml-org/llama.cpp/blob/master/grammars/README.md).
For ``tool_choice="auto"`` the reply is either that JSON or plain text that does not start
with "{"; the text branch costs decode speed, since the grammar then checks every candidate
token of a free text (measured: 60 tokens in 1.18 s instead of 0.68 s, docs/openai-api.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from assistant.errors import SchemaUnsupported

# Plain text: anything whose first character is not "{" (nor blank, so a reply cannot start
# a call after leading spaces). Rule names the schema converter never makes (it names rules
# after properties, which cannot start with "zz-json" and be this long by chance).
_TEXT_RULES = 'root ::= zz-json-reply | zz-plain-text\nzz-plain-text ::= [^{ \\t\\n] [^\\x00]*\n'


class SchemaError(SchemaUnsupported):
    """The schema cannot be turned into a grammar (an unsupported keyword, a bad $ref)."""


def gbnf(schema: Mapping[str, Any], or_text: bool = False) -> str:
    """The GBNF of JSON matching ``schema`` (or, with ``or_text``, of plain text instead)."""
    return _gbnf(json.dumps(schema, sort_keys=False), or_text)


@lru_cache(maxsize=64)
def _gbnf(schema_json: str, or_text: bool) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        rules: str = json_schema_to_gbnf(schema_json)
    except Exception as exc:  # the converter raises whatever it meets (KeyError, ValueError...)
        raise SchemaError(f"unsupported JSON schema: {exc}") from exc
    if not or_text:
        return rules
    return _TEXT_RULES + re.sub(r"^root ::=", "zz-json-reply ::=", rules, count=1, flags=re.M)


def grammar(schema: Mapping[str, Any], or_text: bool = False) -> Any:
    """A ``llama_cpp.LlamaGrammar`` for ``schema`` (a fresh one: it keeps parse state)."""
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(gbnf(schema, or_text), verbose=False)
