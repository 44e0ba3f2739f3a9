"""A tool call streamed as OpenAI streams one: its id and name as soon as the model has
written them, then its arguments piece by piece as the model writes them.

The model writes a call as one JSON object, ``{"name": "<tool>", "arguments": {...}}`` (or
``"parameters"`` in Llama 3.1's format), "name" first: the grammar writes properties in the
schema's order (assistant/tools.py). The arguments are the text of the object under the second
key, exactly as written, which is also what the finished reply carries (``parse_call``): the
fragments a client joins are the arguments of the non-streamed call.
"""

from __future__ import annotations

from typing import Any

from assistant.tools import CALL_HEAD


class CallStream:
    """Reads a call's text as it comes and says which ``tool_calls`` deltas to send."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.text = ""
        self.name: str | None = None
        self.sent = ""  # the arguments' text sent so far
        self._start = 0  # where the arguments begin in ``text``
        self._scanned = 0  # how far the arguments were scanned
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self.complete = False  # the arguments' object has closed

    @property
    def started(self) -> bool:
        return self.name is not None

    def feed(self, piece: str) -> list[dict[str, Any]]:
        """The deltas (OpenAI's ``tool_calls`` entries, index 0) that ``piece`` makes ready."""
        self.text += piece
        deltas: list[dict[str, Any]] = []
        if self.name is None:
            head = CALL_HEAD.match(self.text)
            # Complete once a character follows it (the spaces before the value are over).
            if head is None or len(self.text) <= head.end():
                return deltas
            self.name, self._start = head.group(1), head.end()
            self._scanned = self._start
            deltas.append({"index": 0, "id": self.call_id, "type": "function",
                           "function": {"name": self.name, "arguments": ""}})
        end = self._scan()
        fragment = self.text[self._start + len(self.sent):end]
        if fragment:
            self.sent += fragment
            deltas.append({"index": 0, "function": {"arguments": fragment}})
        return deltas

    def rest(self, arguments: str) -> str | None:
        """What is still to send of the finished call's ``arguments`` (None: what was sent
        is not their beginning, which a grammar-bound call cannot do)."""
        if not arguments.startswith(self.sent):
            return None
        return arguments[len(self.sent):]

    def _scan(self) -> int:
        """Where the arguments' text ends so far: the end of the text, or just after the
        object's closing brace (what follows, the call's own "}", is not arguments)."""
        text = self.text
        position = self._scanned
        while position < len(text) and not self.complete:
            char = text[position]
            position += 1
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                self.complete = self._depth == 0
        self._scanned = position
        return position
