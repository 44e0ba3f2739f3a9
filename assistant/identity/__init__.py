"""Who may talk to the assistant (docs/security.md): API keys, passwords, sign-in modes.

The core's part: key and password formats, the sign-in mode the settings ask for, and the
``Principal`` an edge resolves a request to. The web edge (``integrations/web/auth``) checks
credentials and sessions; the store (``assistant/store/people.py``, ``keys.py``) keeps them.
"""
