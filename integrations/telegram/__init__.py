"""Telegram: python-telegram-bot Application (long polling or webhook), converter, sender.

PTB 22 warns (PTBDeprecationWarning) whenever it builds a ``RetryAfter`` with integer seconds
unless the process opted in to ``datetime.timedelta`` periods through ``PTB_TIMEDELTA``; that
opt-in is PTB's documented migration path and the type of its next major version, so we take it
here, before any PTB object exists. An operator's explicit setting wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("PTB_TIMEDELTA", "true")
