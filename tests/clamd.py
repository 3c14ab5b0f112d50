"""A clamd of the tests' own: Debian's `clamav-daemon` binary, started on a free TCP
port of 127.0.0.1 and a unix socket in a temp folder, with a signature database
written here (no download): the EICAR test file by its MD5, and a custom body
signature that matches its marker anywhere in a file. Ready within a second or
so (it answers PING), stopped and removed at the end.

A missing clamd is a failure, not a skip: `make test` and `.ci/run` install
`clamav-daemon`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.processes import terminate

MISSING = ("clamd (Debian's clamav-daemon) was not found on PATH nor at /usr/sbin/clamd: install it with "
           "`apt-get install clamav-daemon` (`make test` does when run as root, `.ci/run` always), then run "
           "the tests again.")

# The 68-byte EICAR test file: every virus scanner knows it by heart.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# Matched anywhere in a file (EICAR is matched only as the whole file, by its MD5).
MARKER = b"UPLOAD-SERVICE-TEST-MALWARE-MARKER-5d1f0a"
EICAR_NAME = "Test.EICAR.UNOFFICIAL"
MARKER_NAME = "Test.Custom.UNOFFICIAL"


def find_clamd() -> str | None:
    found = shutil.which("clamd")
    if found:
        return found
    return "/usr/sbin/clamd" if os.access("/usr/sbin/clamd", os.X_OK) else None


class Clamd:
    """One clamd; ``tcp`` and ``unix`` are its CLAMD_ADDRESS values."""

    def __init__(self, binary: str, port: int, stream_max: str = "200M", scan_max: str | None = None):
        self.binary = binary
        self.port = port
        self.stream_max = stream_max
        # MaxFileSize and MaxScanSize: past them clamd stops scanning and, without AlertExceedsMax,
        # answers OK (Debian's clamd.conf has 25M); with it, Heuristics.Limits.Exceeded FOUND.
        self.scan_max = scan_max or stream_max
        # A short path: a unix socket's path may not pass 107 bytes (pytest's tmp_path can).
        self.root = Path(tempfile.mkdtemp(prefix="clamd-"))
        self.socket = self.root / "clamd.sock"
        self.log = self.root / "clamd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def tcp(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def unix(self) -> str:
        return str(self.socket)

    def start(self) -> None:
        database = self.root / "db"
        database.mkdir(exist_ok=True)
        (database / "test.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Test.EICAR\n")
        (database / "test.ndb").write_text(f"Test.Custom:0:*:{MARKER.hex()}\n")
        conf = self.root / "clamd.conf"
        lines = [f"DatabaseDirectory {database}", f"LocalSocket {self.socket}", f"TCPSocket {self.port}",
                 "TCPAddr 127.0.0.1", "Foreground yes", f"StreamMaxLength {self.stream_max}",
                 f"MaxFileSize {self.scan_max}", f"MaxScanSize {self.scan_max}", "AlertExceedsMax yes",
                 f"LogFile {self.log}",
                 f"PidFile {self.root / 'clamd.pid'}"]
        if os.geteuid() == 0:
            lines.append("User root")  # else clamd drops to the `clamav` user, who cannot read this folder
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                self.stop()
                raise RuntimeError(f"clamd did not start:\n{log}")
            time.sleep(0.05)

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.socket))
                sock.sendall(b"zPING\0")
                return sock.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: gone at once, connections reset, as a crash would leave them."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        try:
            if self.proc is not None:
                terminate(self.proc, timeout=10)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
