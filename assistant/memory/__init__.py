"""Conversation memory: the full record in Redis, and the window that fits the model."""

from assistant.memory.history import RedisConversationHistory, Summary, forget_user
from assistant.memory.window import PromptWindow, build_window, needs_summary

__all__ = [
    "PromptWindow",
    "RedisConversationHistory",
    "Summary",
    "build_window",
    "forget_user",
    "needs_summary",
]
