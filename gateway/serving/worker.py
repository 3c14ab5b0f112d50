"""gunicorn's ``gthread`` worker with four changes for slow and abusive clients:

- every receive has a deadline (``gateway.ingest.body.ClientGuard``): the request line
  and headers within CLIENT_HEADER_TIMEOUT, each piece of a body within
  CLIENT_IDLE_TIMEOUT, and at least CLIENT_MIN_RATE bytes per second;
- a new connection that sends nothing is closed after CLIENT_HEADER_TIMEOUT
  (gthread would keep it for ever, taking one of ``worker_connections``);
- an application's ``Connection: close`` is honoured (gunicorn drops it and
  would otherwise read a refused, endless chunked body to its end);
- gunicorn's own error answers (a malformed request, a request line or
  headers over the limits, a timeout) are JSON like every other error.
"""
from __future__ import annotations

import errno
import json
import selectors
import socket
import time
from functools import partial

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import TConn, ThreadWorker

from gateway import config
from gateway.ingest.body import ClientGuard, HeaderTimeout


class GatewayConnection(TConn):
    def __init__(self, cfg, sock, client, server, limits: dict):
        super().__init__(cfg, sock, client, server)
        self.limits = limits
        self.guard: ClientGuard | None = None

    def init(self):
        first = self.parser is None
        super().init()  # makes the socket blocking again, every time a thread takes it
        if first:
            self.guard = ClientGuard(self.sock, self.limits["CLIENT_HEADER_TIMEOUT"],
                                     self.limits["CLIENT_IDLE_TIMEOUT"], self.limits["CLIENT_MIN_RATE"])
            self.parser.unreader.sock = self.guard
        # Sending: a client that does not take its response is given up too.
        idle = self.limits["CLIENT_IDLE_TIMEOUT"]
        self.sock.settimeout(idle if idle > 0 else None)


def honour_connection_close(app):
    """WSGI middleware: a response carrying ``Connection: close`` closes the
    connection after it (gunicorn ignores the header and would keep the
    connection, reading whatever is left of the request body first)."""

    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            if any(name.lower() == "connection" and value.strip().lower() == "close" for name, value in headers):
                response = getattr(start_response, "__self__", None)
                if hasattr(response, "force_close"):
                    response.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


# gunicorn's own refusals, before the application sees the request: status, reason.
_REFUSALS = [
    (HeaderTimeout, 408, "Request Timeout"),
    (http_errors.LimitRequestLine, 414, "URI Too Long"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large"),
    (http_errors.UnsupportedTransferCoding, 501, "Not Implemented"),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden"),
    (http_errors.ConfigurationProblem, 500, "Internal Server Error"),
    (http_errors.ParseException, 400, "Bad Request"),
]


class GatewayWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = getattr(self.app, "settings", None) or config.from_env()
        self.limits = {name: settings[name] for name in
                       ("CLIENT_HEADER_TIMEOUT", "CLIENT_IDLE_TIMEOUT", "CLIENT_MIN_RATE",
                        "MAX_REQUEST_LINE", "MAX_HEADER_COUNT", "MAX_HEADER_SIZE")}

    def load_wsgi(self):
        super().load_wsgi()
        self.wsgi = honour_connection_close(self.wsgi)

    # --- connections that never send a byte ---

    def accept(self, server, listener):
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = GatewayConnection(self.cfg, sock, client, server, self.limits)
        self.nr_conns += 1
        with self._lock:
            if self.limits["CLIENT_HEADER_TIMEOUT"] > 0:
                # Waits with the idle keep-alive connections, and is closed like them.
                conn.timeout = time.time() + self.limits["CLIENT_HEADER_TIMEOUT"]
                self._keep.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))

    def on_client_socket_readable(self, conn, client):
        with self._lock:
            self.poller.unregister(client)
            try:
                self._keep.remove(conn)
            except ValueError:
                if conn.initialized:
                    return  # closed as idle meanwhile (gthread's own race)
        self.enqueue_req(conn)

    def murder_keepalived(self):
        # gthread stops at the first connection whose time has not come, as its
        # queue used to be in order; new connections wait longer than kept-alive ones.
        now = time.time()
        with self._lock:
            expired = [conn for conn in self._keep if conn.timeout <= now]
            for conn in expired:
                self._keep.remove(conn)
                try:
                    self.poller.unregister(conn.sock)
                except (OSError, KeyError, ValueError):
                    pass
        for conn in expired:
            self.nr_conns -= 1
            conn.close()

    # --- deadlines ---

    def handle(self, conn):
        conn.guard.expect_headers()
        return super().handle(conn)

    def handle_request(self, req, conn):
        conn.guard.expect_body()
        return super().handle_request(req, conn)

    # --- gunicorn's own answers, as JSON ---

    def handle_error(self, req, client, addr, exc):
        status, reason = 500, "Internal Server Error"
        for kind, code, text in _REFUSALS:
            if isinstance(exc, kind):
                status, reason = code, text
                break
        addr = addr or ("", -1)
        if status == 500:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        else:
            self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        body = json.dumps({"error": self._sentence(exc, status)}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n")
        try:
            util.write_nonblock(client, head.encode("latin-1") + body)
        except Exception:
            self.log.debug("Failed to send error message.")
            return
        _linger(client)

    def _sentence(self, exc, status: int) -> str:
        limits = self.limits
        if isinstance(exc, HeaderTimeout):
            return str(exc)
        if status == 414:
            return f"The request line (method, URL and version) is longer than {limits['MAX_REQUEST_LINE']} bytes."
        if status == 431:
            return (f"The request headers are too large: at most {limits['MAX_HEADER_COUNT']} headers "
                    f"of at most {limits['MAX_HEADER_SIZE']} bytes each are accepted.")
        if status == 501:
            return f"This server does not support that Transfer-Encoding ({exc})."
        if status == 500:
            return "Something went wrong on our side; please try again."
        detail = str(exc)
        return f"The request is not valid HTTP: {detail[:200]}{'...' if len(detail) > 200 else ''}."


# After an error answer, what the client is still sending is read (and dropped)
# for this long, or this much, before the connection is closed: closing with
# unread bytes would make the kernel reset the connection, and the client could
# lose the answer it has not read yet.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


def _linger(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline, read = time.monotonic() + LINGER_SECONDS, 0
        while read < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data = sock.recv(64 * 1024)
            if not data:
                break
            read += len(data)
    except OSError:
        pass
