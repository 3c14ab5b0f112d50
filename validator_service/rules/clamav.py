"""The ClamAV rule: every byte of every file goes to a clamd (Debian's
``clamav-daemon``) with INSTREAM while it arrives, and clamd's answer after the
last byte is the verdict. Turned on by CLAMD_ADDRESS (``tcp://host:port`` or a
unix socket path); ``validator_service.server.create_plugins`` registers it.

INSTREAM, as clamd speaks it: ``zINSTREAM\\0``, then chunks, each a 4-byte
big-endian length and that many bytes, then a zero length; clamd answers
``stream: OK\\0``, ``stream: <signature> FOUND\\0`` or ``<why> ERROR\\0``.

- A hit is a refusal, code ``malware``, with the signature's name in the sentence.
- clamd unreachable, gone mid-file, or silent for CLAMD_TIMEOUT seconds: the call
  fails UNAVAILABLE (the gateway answers 503, nothing is stored).
- CLAMAV_FAIL_OPEN lets a file through unscanned (logged and counted,
  ``upload_validator_clamav_scans_total{outcome="fail_open"}``) only when no
  connection to clamd can be made: clamd is down, not judging. Once clamd has
  taken the file, a timeout or a dropped connection stays UNAVAILABLE, since a
  file made slow to scan (an archive bomb) could otherwise choose to pass.
- clamd refusing to scan a file ("INSTREAM size limit exceeded": clamd's
  StreamMaxLength, 25 MiB by default, is below MAX_FILE_SIZE) is never a pass,
  fail-open or not: a refusal, ``file_too_large`` (413 at the gateway), and an
  error in the log saying what to change.
  Anything else clamd calls an ERROR counts as unreachable.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Mapping
from functools import partial
from urllib.parse import urlsplit

from protos.errors import Unavailable
from protos.plugins import hookimpl
from protos.serving import env_int
from validator_service.hookspecs import Rejection, WholeFileRule
from validator_service.metrics import CLAMAV_SCANS

log = logging.getLogger("upload.validator.clamav")

# A reply longer than this is not clamd's.
MAX_REPLY = 4096
SIZE_LIMIT = "size limit exceeded"
UNREACHABLE = ("The virus scanner cannot be reached or did not answer in time, so the file could not be "
               "checked; nothing was stored. Please try again shortly.")


def parse_address(address: str) -> tuple[int, object]:
    """``tcp://host:port`` -> (AF_INET or AF_INET6, (host, port)); anything else is a
    unix socket path (``unix://`` in front is allowed). A malformed one stops the service."""
    address = address.strip()
    if address.startswith("tcp://"):
        parts = urlsplit(address)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise SystemExit(f"CLAMD_ADDRESS must be tcp://host:port or a unix socket path, got {address!r}.")
        family = socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET
        return family, (parts.hostname, port)
    path = address.removeprefix("unix://")
    if not path.startswith("/"):
        raise SystemExit(f"CLAMD_ADDRESS must be tcp://host:port or an absolute unix socket path, got {address!r}.")
    return socket.AF_UNIX, path


class ClamAV:
    """The rule as a plugin object: ``upload_whole_file_rules`` yields one rule,
    ``clamav``, whose scanner is one INSTREAM session per file."""

    def __init__(self, address: str, timeout: float = 5.0, fail_open: bool = False):
        self.address = address
        self.family, self.target = parse_address(address)
        self.timeout = timeout
        self.fail_open = fail_open

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClamAV | None:
        """The rule CLAMD_ADDRESS asks for, or None when it is unset."""
        env = os.environ if env is None else env
        address = env.get("CLAMD_ADDRESS", "").strip()
        if not address:
            return None
        raw = env.get("CLAMAV_FAIL_OPEN", "").strip().lower()
        if raw not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise SystemExit(f"CLAMAV_FAIL_OPEN must be on or off (1/0, true/false), got {raw!r}.")
        return cls(address, timeout=env_int(env, "CLAMD_TIMEOUT", 5, minimum=1),
                   fail_open=raw in ("1", "true", "yes", "on"))

    def connect(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.target)
        except BaseException:
            sock.close()
            raise
        return sock

    def ping(self) -> bool:
        """Whether clamd answers PING now."""
        try:
            with self.connect() as sock:
                sock.sendall(b"zPING\0")
                return read_reply(sock) == "PONG"
        except OSError:
            return False

    def open(self, file) -> ClamdScan:
        return ClamdScan(self, file.original_name)

    @hookimpl
    def upload_whole_file_rules(self):
        yield WholeFileRule("clamav", self.open)


def read_reply(sock: socket.socket) -> str:
    """clamd's answer, up to its NUL (or the end of the connection)."""
    reply = bytearray()
    while b"\0" not in reply and len(reply) < MAX_REPLY:
        data = sock.recv(MAX_REPLY)
        if not data:
            break
        reply += data
    return reply.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


class ClamdScan:
    """One file's INSTREAM session, opened when the file's first byte is due."""

    def __init__(self, clamav: ClamAV, name: str):
        self.clamav = clamav
        self.name = name
        self.sent = 0
        self.sock: socket.socket | None = None
        # Decided before the end (clamd gone and failing open, or an answer that came early).
        self.decided = False
        self.result: Rejection | None = None
        try:
            self.sock = clamav.connect()
            self.sock.sendall(b"zINSTREAM\0")
        except OSError as exc:
            self._decide(partial(self._unreachable, exc, may_fail_open=True))

    def feed(self, data: bytes) -> None:
        if self.decided:
            return
        try:
            self.sock.sendall(struct.pack(">I", len(data)))
            self.sock.sendall(data)
        except OSError as exc:
            # clamd may have said why it stopped reading (a file past its StreamMaxLength) before it closed.
            reply = self._reply_if_any()
            self._decide(partial(self._judge, reply, exc))
            return
        self.sent += len(data)

    def finish(self) -> Rejection | None:
        if self.decided:
            return self.result
        try:
            self.sock.sendall(struct.pack(">I", 0))
            reply = read_reply(self.sock)
        except OSError as exc:
            reply = self._reply_if_any()
            return self._judge(reply, exc)
        return self._judge(reply)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _decide(self, judge) -> None:
        """Settle the verdict now (what ``judge()`` returns; what it raises goes up),
        and talk to clamd no more."""
        self.decided = True
        self.close()
        self.result = judge()

    def _reply_if_any(self) -> str:
        if self.sock is None:
            return ""
        try:
            self.sock.settimeout(0.5)
            return read_reply(self.sock)
        except OSError:
            return ""

    def _judge(self, reply: str, failure: OSError | None = None) -> Rejection | None:
        if reply.startswith("stream: ") and reply.endswith(" FOUND"):
            signature = reply[len("stream: "):-len(" FOUND")].strip()
            CLAMAV_SCANS.labels(outcome="found").inc()
            log.info("clamd found %s in %r", signature, self.name)
            return Rejection("malware", f"The virus scanner found {signature} in this file, so it was not stored.")
        if reply == "stream: OK" and failure is None:
            CLAMAV_SCANS.labels(outcome="clean").inc()
            return None
        if SIZE_LIMIT in reply:
            # Deterministic for this file: letting it through would let anyone pass the scan by padding.
            CLAMAV_SCANS.labels(outcome="error").inc()
            log.error("clamd would not scan %r (%d bytes sent): %r. Raise clamd's StreamMaxLength to at least "
                      "MAX_FILE_SIZE.", self.name, self.sent, reply)
            # A refusal, not a failure: the person uploading can do something (send a smaller file),
            # and the operator has the log line above.
            return Rejection("file_too_large", "This file is larger than the virus scanner is set to take, so it "
                                               "was not stored.")
        return self._unreachable(failure or reply or "no answer")

    def _unreachable(self, why, may_fail_open: bool = False) -> None:
        """clamd cannot judge this file now: UNAVAILABLE, or, failing open when clamd
        could not even be reached (``may_fail_open``), let it through."""
        self.close()
        if self.clamav.fail_open and may_fail_open:
            CLAMAV_SCANS.labels(outcome="fail_open").inc()
            log.warning("clamd at %s could not scan %r (%s): let through unscanned (CLAMAV_FAIL_OPEN)",
                        self.clamav.address, self.name, why)
            return
        CLAMAV_SCANS.labels(outcome="unavailable").inc()
        log.warning("clamd at %s could not scan %r (%s): the file is not accepted", self.clamav.address,
                    self.name, why)
        raise Unavailable(UNREACHABLE)
