"""The floor for small uploads: a bare WSGI app under gunicorn (one gthread
worker, like the gateway) that reads the request body to its end, throws it
away and answers 201. No Flask, no multipart parsing, no disk: what is left
is HTTP parsing, gunicorn's threads and its body reader.

    python -m bench.drain_app --port PORT [--threads N]
"""
from __future__ import annotations

import argparse

from bench.plain_flask import GthreadServer

# 64 KiB reads: a 10 KiB upload is one read, large ones do not hold it all at once.
PIECE = 64 * 1024


def app(environ, start_response):
    if environ["PATH_INFO"] == "/readyz":
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "15")])
        return [b'{"ready": true}']
    body = environ["wsgi.input"]
    drained = 0
    while piece := body.read(PIECE):
        drained += len(piece)
    answer = b'{"drained": %d}' % drained
    start_response("201 CREATED", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.drain_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16)  # the gateway's GATEWAY_THREADS default
    args = parser.parse_args()
    GthreadServer(app, args.port, args.threads).run()


if __name__ == "__main__":
    main()
