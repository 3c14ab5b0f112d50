"""How the gateway is served: gunicorn's threaded worker, changed so that slow,
silent and abusive clients cannot hold its threads, and so that the HTTP
server's own refusals are JSON like every other error.

Used only by ``gateway/__main__.py``; may use ``ingest`` (the body's deadlines)
and ``config``, and nothing above them.
"""
