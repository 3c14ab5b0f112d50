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
from PIL import Image
from werkzeug.utils import secure_filename

from bench.plain_flask import GthreadServer

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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    upload_dir = Path(os.environ["UPLOAD_DIR"]).resolve()
    upload_dir.mkdir(parents=True, exist_ok=True)
    GthreadServer(create_app(upload_dir), args.port, args.threads, workers=args.workers).run()


if __name__ == "__main__":
    main()
