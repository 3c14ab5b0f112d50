"""Where the bytes live: local disk (the default) or an S3-compatible bucket
(STORAGE=s3), behind one ``Storage`` protocol (base.py); plus the jobs that
keep stored bytes and their records in step: expiry and reconcile.

Uses ``metadata`` (expiry and reconcile read the files' records) and ``protos``.
"""
from __future__ import annotations

import os

from gateway.storage.local import LocalStorage
from gateway.storage.s3 import S3Storage


def init_app(app) -> None:
    if app.config["STORAGE"] == "s3":
        # Checks the bucket: a missing or unreachable one stops the start with a sentence.
        app.extensions["storage"] = S3Storage.from_config(app.config)
        # DATA_DIR still holds the SQLite database (the default metadata backend).
        os.makedirs(app.config["DATA_DIR"], exist_ok=True)
    else:
        app.extensions["storage"] = LocalStorage(app.config["DATA_DIR"], fsync=app.config["UPLOAD_FSYNC"])
