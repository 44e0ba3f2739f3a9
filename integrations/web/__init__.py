"""The web edge: chat page, JSON API, OpenAI-compatible API, health."""
