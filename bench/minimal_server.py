"""The floor for an HTTP upload: a threaded http.server that copies the raw
request body to a file in 256 KiB reads (no multipart parsing, no hashing,
no validation) and answers 201. With --sha256 and --fsync it also does the
two things the gateway must do to every byte (hash it, make it durable),
still with nothing else in the way.

    python -m bench.minimal_server --port PORT --dir DIR [--sha256] [--fsync]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

READ_SIZE = 256 * 1024


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so that `Expect: 100-continue` (curl sends it for big bodies)
    # gets its 100 at once, as gunicorn does, rather than after curl's 1 s wait.
    protocol_version = "HTTP/1.1"
    directory: Path
    sha256 = False
    fsync = False

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/readyz":
            self._answer(200, b'{"ready": true}')
        else:
            self._answer(404, b'{"error": "not found"}')

    def do_POST(self):
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            self._answer(411, b'{"error": "Content-Length required"}')
            return
        left = int(length)
        path = self.directory / f"{secrets.token_hex(16)}.bin"
        digest = hashlib.sha256() if self.sha256 else None
        with open(path, "wb", buffering=0) as out:
            while left > 0:
                chunk = self.rfile.read(min(READ_SIZE, left))
                if not chunk:
                    break
                out.write(chunk)
                if digest is not None:
                    digest.update(chunk)
                left -= len(chunk)
            if self.fsync and not left:
                os.fsync(out.fileno())
        if left:
            path.unlink(missing_ok=True)
            self.close_connection = True
            self._answer(400, b'{"error": "body ended early"}')
            return
        self._answer(201, b'{"stored": "%s"}' % path.name.encode())

    def log_message(self, format, *args):  # quiet: the bench times it, nobody reads it
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.minimal_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--sha256", action="store_true", help="hash the body as it is written")
    parser.add_argument("--fsync", action="store_true", help="fsync the file before answering")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    Handler.directory, Handler.sha256, Handler.fsync = args.dir, args.sha256, args.fsync
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"minimal server on 127.0.0.1:{args.port}, pid {os.getpid()}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
