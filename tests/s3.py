"""A real S3 API for the tests: moto's standalone server (PyPI `moto[server]`)
started as a subprocess on a free port of 127.0.0.1, for the whole session.
The gateway talks to it over HTTP through boto3 exactly as it would to AWS,
MinIO or Ceph; nothing is patched into boto3. Each test gets a fresh bucket
(emptied and removed afterwards)."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.processes import terminate

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


class S3Server:
    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, **CREDENTIALS})
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start (is `moto[server]` installed?)")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=10)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=CREDENTIALS["AWS_REGION"],
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def settings(self, bucket: str, **more) -> dict:
        """Gateway settings (create_app's test_config) for STORAGE=s3 on ``bucket``."""
        return {"STORAGE": "s3", "S3_ENDPOINT_URL": self.url, "S3_BUCKET": bucket, **CREDENTIALS, **more}

    def env(self, bucket: str, **more) -> dict:
        """The same as environment variables, for gateway processes."""
        return {k: str(v) for k, v in self.settings(bucket, **more).items()}


class Bucket:
    def __init__(self, server: S3Server, name: str):
        self.server = server
        self.name = name
        self.client = server.client()

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def uploads(self, prefix: str = "") -> list[dict]:
        """The incomplete multipart uploads."""
        return self.client.list_multipart_uploads(Bucket=self.name, Prefix=prefix).get("Uploads", [])

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def settings(self, **more) -> dict:
        return self.server.settings(self.name, **more)

    def env(self, **more) -> dict:
        return self.server.env(self.name, **more)

    def remove(self) -> None:
        for upload in self.uploads():
            self.client.abort_multipart_upload(Bucket=self.name, Key=upload["Key"], UploadId=upload["UploadId"])
        for key in self.keys():
            self.client.delete_object(Bucket=self.name, Key=key)
        self.client.delete_bucket(Bucket=self.name)


@pytest.fixture(scope="session")
def s3_server():
    from tests.conftest import free_port

    server = S3Server(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A new, empty bucket on the session's S3 server; removed after the test."""
    bucket = Bucket(s3_server, f"uploads-{secrets.token_hex(6)}")
    bucket.client.create_bucket(Bucket=bucket.name)
    yield bucket
    bucket.remove()
