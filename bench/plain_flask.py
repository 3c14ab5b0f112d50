"""The tutorial upload: a plain Flask app whose view is
``request.files['file'].save(path)``, served like the gateway (gunicorn,
one gthread worker). Werkzeug parses the whole multipart body into a spooled
temp file first (in TMPDIR), then ``save`` copies it to its place.

    UPLOAD_DIR=... TMPDIR=... python -m bench.plain_flask --port PORT
"""
from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from flask import Flask, jsonify, request
from gunicorn.app.base import BaseApplication
from werkzeug.utils import secure_filename


def create_app(upload_dir: Path) -> Flask:
    app = Flask(__name__)

    @app.get("/readyz")
    def readyz():
        return jsonify(ready=True)

    @app.post("/upload")
    def upload():
        file = request.files["file"]
        name = f"{secrets.token_hex(16)}-{secure_filename(file.filename or 'upload')}"
        file.save(upload_dir / name)
        return jsonify(stored=name), 201

    return app


class GthreadServer(BaseApplication):
    """A WSGI app under gunicorn on loopback, gthread workers: one, as the gateway runs, unless
    ``workers`` says otherwise (the seed app runs one per core)."""

    def __init__(self, app, port: int, threads: int, workers: int = 1):
        self.app, self.port, self.threads, self.workers = app, port, threads, workers
        super().__init__()

    def load_config(self):
        self.cfg.set("bind", f"127.0.0.1:{self.port}")
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("workers", self.workers)
        self.cfg.set("threads", self.threads)

    def load(self):
        return self.app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.plain_flask")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16)  # the gateway's GATEWAY_THREADS default
    args = parser.parse_args()
    upload_dir = Path(os.environ["UPLOAD_DIR"]).resolve()
    upload_dir.mkdir(parents=True, exist_ok=True)
    GthreadServer(create_app(upload_dir), args.port, args.threads).run()


if __name__ == "__main__":
    main()
