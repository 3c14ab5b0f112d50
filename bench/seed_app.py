"""The seed tutorial's upload app, the anchor for small files (issue 19): what a person
following Flask's "Uploading Files" pattern and the tutorial's checks writes. Werkzeug parses
the form, the file is saved, python-magic reads the saved file's type, and an image gets a
200x200 Pillow thumbnail inline, all before the answer. Served as the tutorial deploys it:
gunicorn, one gthread worker per core, 4 threads each.

    UPLOAD_DIR=... TMPDIR=... python -m bench.seed_app --port PORT
"""
from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

import magic
from flask import Flask, abort, jsonify, request
from gunicorn.app.base import BaseApplication
from PIL import Image
from werkzeug.utils import secure_filename

ALLOWED = {"txt", "pdf", "png", "jpg", "jpeg", "gif"}


def create_app(upload_dir: Path) -> Flask:
    app = Flask(__name__)

    @app.get("/readyz")
    def readyz():
        return jsonify(ready=True)

    @app.post("/upload")
    def upload():
        file = request.files.get("file")
        if file is None or not file.filename:
            abort(400)
        filename = secure_filename(file.filename)
        if filename.rsplit(".", 1)[-1].lower() not in ALLOWED:
            abort(415)
        path = upload_dir / f"{secrets.token_hex(16)}-{filename}"
        file.save(path)
        mime = magic.from_file(str(path), mime=True)
        thumbnail = None
        if mime.startswith("image/"):
            with Image.open(path) as im:
                im.thumbnail((200, 200))
                thumbnail = path.with_suffix(".thumb.jpg")
                im.convert("RGB").save(thumbnail, "JPEG")
        return jsonify(stored=path.name, type=mime, thumbnail=thumbnail and thumbnail.name), 201

    return app


class SeedServer(BaseApplication):
    """gunicorn as the tutorial deploys it: a worker per core, each with a few threads."""

    def __init__(self, app, port: int, workers: int, threads: int):
        self.app, self.port, self.workers, self.threads = app, port, workers, threads
        super().__init__()

    def load_config(self):
        self.cfg.set("bind", f"127.0.0.1:{self.port}")
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("workers", self.workers)
        self.cfg.set("threads", self.threads)

    def load(self):
        return self.app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    upload_dir = Path(os.environ["UPLOAD_DIR"]).resolve()
    upload_dir.mkdir(parents=True, exist_ok=True)
    SeedServer(create_app(upload_dir), args.port, args.workers, args.threads).run()


if __name__ == "__main__":
    main()
