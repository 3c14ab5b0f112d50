"""gunicorn's ``gthread`` worker, changed for slow, silent and abusive clients.

gthread gives a connection to one of its threads as soon as a byte arrives, and
the thread then waits for the rest of the request: a few hundred connections
that sent one byte and stopped held all of them (issue 15). Here a connection
holds no thread until its request line and headers are whole:

- the event loop reads what each waiting connection sends, without blocking,
  into its ``Head`` (``heads.py``), and hands it to a thread only when the head
  is complete; gunicorn parses it from memory (``loop.py``);
- a head must be complete within CLIENT_HEADER_TIMEOUT of its first byte, may
  not pause for CLIENT_IDLE_TIMEOUT, and may not pass MAX_HEADER_BLOCK bytes or
  have a request line over MAX_REQUEST_LINE: else 408, 431 or 414, from the loop;
  a new connection that sends nothing is closed after CLIENT_HEADER_TIMEOUT;
- at GATEWAY_CONNECTIONS (gunicorn's ``worker_connections``), the connection
  that has waited longest in the loop is closed to make room, where gthread
  would stop serving anything new until one finished;
- a body has deadlines (``gateway.ingest.body.ClientGuard``): each piece within
  CLIENT_IDLE_TIMEOUT, and at least CLIENT_MIN_RATE bytes per second;
- an application's ``Connection: close`` is honoured (gunicorn drops it and
  would otherwise read a refused, endless chunked body to its end);
- gunicorn's own error answers are JSON like every other error
  (``refusals.py``), and what the client still sends after one is read and
  dropped by the loop, not by a thread.
"""
from __future__ import annotations

import io

from gunicorn import util
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine, ParseException
from gunicorn.workers.gthread import TConn, ThreadWorker

from gateway import config
from gateway.ingest.body import ClientGuard
from gateway.serving import refusals
from gateway.serving.heads import Head
from gateway.serving.loop import HeadLoop


class GatewayConnection(TConn):
    def __init__(self, cfg, sock, client, server, limits: dict):
        super().__init__(cfg, sock, client, server)
        self.limits = limits
        self.guard: ClientGuard | None = None
        self.head = new_head(limits)
        # Set by the event loop (loop.py): whether it holds the connection, when the
        # connection's head is due, and whether it is only draining a refused client.
        self.in_loop = False
        self.head_deadline = float("inf")
        self.lingering = False
        self.left_to_drop = 0

    def init(self):
        first = self.parser is None
        super().init()  # makes the socket blocking again, every time a thread takes it
        if first:
            self.guard = ClientGuard(self.sock, self.limits["CLIENT_IDLE_TIMEOUT"], self.limits["CLIENT_MIN_RATE"])
            self.parser.unreader.sock = self.guard
        # Sending: a client that does not take its response is given up too.
        idle = self.limits["CLIENT_IDLE_TIMEOUT"]
        self.sock.settimeout(idle if idle > 0 else None)


def new_head(limits: dict) -> Head:
    return Head(limits["MAX_REQUEST_LINE"], limits["MAX_HEADER_BLOCK"])


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


class GatewayWorker(HeadLoop, ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = getattr(self.app, "settings", None) or config.from_env()
        self.limits = {name: settings[name] for name in
                       ("CLIENT_HEADER_TIMEOUT", "CLIENT_IDLE_TIMEOUT", "CLIENT_MIN_RATE",
                        "MAX_REQUEST_LINE", "MAX_HEADER_COUNT", "MAX_HEADER_SIZE", "MAX_HEADER_BLOCK")}
        self.init_head_loop()

    def load_wsgi(self):
        super().load_wsgi()
        self.wsgi = honour_connection_close(self.wsgi)

    def new_connection(self, sock, client, server) -> GatewayConnection:
        return GatewayConnection(self.cfg, sock, client, server, self.limits)

    # --- in a request thread, from a whole head to the answer ---

    def handle(self, conn):
        while True:
            keepalive, conn = super().handle(conn)
            if keepalive and self._discard_rest_of_body(conn):
                conn.head = new_head(self.limits)
                try:
                    # Bytes that came after this request's (a pipelined one) are the next head's start.
                    conn.head.feed(_take_buffered(conn.parser.unreader))
                except (LimitRequestLine, LimitRequestHeaders) as exc:
                    self.handle_error(None, conn.sock, conn.client, exc)
                    keepalive = False
                else:
                    if conn.head.complete:
                        # The socket may never turn readable for it (its bytes are here already): serve it now.
                        conn.parser.unreader.unread(conn.head.take())
                        continue
            else:
                keepalive = False
            conn.lingering = self.take_refused(conn.sock)
            return keepalive, conn

    def handle_request(self, req, conn):
        conn.guard.expect_body()
        return super().handle_request(req, conn)

    def _discard_rest_of_body(self, conn) -> bool:
        """Read what the application left of the request's body (as gunicorn's parser
        would before the next request), so the loop sees only the next head."""
        try:
            while conn.parser.mesg.body.read(64 * 1024):
                pass
        except (OSError, ParseException):  # a client that hangs up, or breaks its chunked framing, mid-body
            return False
        return not conn.guard.stalled

    # --- gunicorn's own answers, as JSON ---

    def handle_error(self, req, client, addr, exc):
        status, _ = refusals.status_of(exc)
        addr = addr or ("", -1)
        if status == 500:
            self.log.exception("Error handling request %s", getattr(req, "uri", "(no URI read)"))
        else:
            self.log.warning("Invalid request from ip=%s: %s", addr[0], exc)
        try:
            util.write_nonblock(client, refusals.answer(exc, self.limits))
        except Exception:
            self.log.debug("Failed to send error message.")
            return
        self.refused(client)


def _take_buffered(unreader) -> bytes:
    data = unreader.buf.getvalue()
    unreader.buf = io.BytesIO()
    return data
