"""Slack: DMs, @mentions in channels and then the whole thread, streamed in place.

``app.py`` is the bolt App (listeners), served by ``http.py`` (Events API on the web server)
or ``__main__.py`` (Socket Mode); ``convert.py`` translates; ``sender.py`` posts and edits.
"""
