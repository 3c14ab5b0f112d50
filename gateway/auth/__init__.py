"""Who is asking and what they may do: every request authenticated in one place
(API tokens, session cookies, CSRF) in ``identity.py``, and per-user quotas.

May use metadata (users, tokens, sessions, usage); sign-in pages are in ``http``.
"""
