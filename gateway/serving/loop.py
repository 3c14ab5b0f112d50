"""The worker's event loop, where a connection waits until its request line and
headers are whole (then a thread takes it), or until the gateway gives up on it.

A connection in the loop is in gthread's ``_keep`` list and poller, with a
``timeout`` (monotonic seconds) by which something must happen:

- no byte yet: closed at the timeout (CLIENT_HEADER_TIMEOUT after connecting,
  gunicorn's ``keepalive`` after a previous answer);
- part of a head: more is read at each readable event, without blocking; the
  timeout is CLIENT_HEADER_TIMEOUT after its first byte or CLIENT_IDLE_TIMEOUT
  after its last, whichever comes first, then 408;
- lingering after a refusal: what the client still sends is read and dropped
  (so that closing does not reset the connection before the client read the
  answer), for at most LINGER_SECONDS or LINGER_BYTES.

At GATEWAY_CONNECTIONS, or out of file descriptors, the connection that has
waited longest here is closed to make room for a new one (``accept``).

Everything here runs on the loop's own thread, except ``finish_request`` (a
request thread hands its connection back), ``refused`` and ``take_refused``;
what they share with the loop is under gthread's lock.
"""
from __future__ import annotations

import errno
import selectors
import socket
import time
from functools import partial

from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine

from gateway.serving import refusals

NEVER = float("inf")
RECV_SIZE = 64 * 1024
# Out of file descriptors with none to free: how long the loop waits before accepting again.
FULL_PAUSE = 0.05
# After an error answer, what the client is still sending is read (and dropped)
# for this long, or this much, before the connection is closed: closing with
# unread bytes would make the kernel reset the connection, and the client could
# lose the answer it has not read yet.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


class HeadLoop:
    """Mixed into gunicorn's ThreadWorker (``worker.GatewayWorker``)."""

    def init_head_loop(self) -> None:
        # gthread stops polling every socket, waiting ones included, once it holds
        # worker_connections: the gateway makes room at its cap instead (accept), so
        # gthread's own stop is set one above it and never reached.
        self.max_connections = self.worker_connections
        self.worker_connections = self.max_connections + 1
        self.max_keepalived = self.max_connections - self.cfg.threads
        self._refused: set = set()

    def _after(self, now: float, setting: str) -> float:
        seconds = self.limits[setting]
        return now + seconds if seconds > 0 else NEVER

    # --- connections coming in, and the room for them ---

    def accept(self, server, listener):
        if self.nr_conns >= self.max_connections:
            self._make_room()
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                if self._make_room():
                    self.log.warning("Out of file descriptors with %d connections open: closed the one "
                                     "that had waited longest for its request", self.nr_conns)
                else:
                    # Every descriptor is held by a request in a thread: nothing to close. The
                    # listener stays readable, so without a pause this loop would spin.
                    self.log.warning("Out of file descriptors with %d connections open, all in use: "
                                     "new connections wait", self.nr_conns)
                    time.sleep(FULL_PAUSE)
                return
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = self.new_connection(sock, client, server)
        with self._lock:
            self.nr_conns += 1
        self._enter_loop(conn, self._after(time.monotonic(), "CLIENT_HEADER_TIMEOUT"))

    def _make_room(self) -> bool:
        """Close the connection that has waited longest in the loop (silent, trickling,
        idle after an answer or lingering: none of them holds a thread); False when
        there is none."""
        with self._lock:
            oldest = self._keep[0] if self._keep else None
        if oldest is None:
            return False
        self._let_go(oldest)
        return True

    # --- waiting for a whole head ---

    def on_client_socket_readable(self, conn, client):
        if not conn.in_loop:
            return  # let go earlier in this round of events
        if conn.lingering:
            self._drop_input(conn)
            return
        try:
            data = client.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away, or stopped sending mid-head
            self._let_go(conn)
            return
        now = time.monotonic()
        if not conn.head.data:
            conn.head_deadline = self._after(now, "CLIENT_HEADER_TIMEOUT")
        try:
            conn.head.feed(data)
        except (LimitRequestLine, LimitRequestHeaders) as exc:
            self._refuse(conn, exc)
            return
        if conn.head.complete:
            self._leave_loop(conn)
            self.enqueue_req(conn)
        else:
            conn.timeout = min(conn.head_deadline, self._after(now, "CLIENT_IDLE_TIMEOUT"))

    def enqueue_req(self, conn):
        conn.init()
        conn.parser.unreader.unread(conn.head.take())
        self._wrap_future(self.tpool.submit(self.handle, conn), conn)

    def murder_keepalived(self):
        now = time.monotonic()
        with self._lock:
            due = [conn for conn in self._keep if conn.timeout <= now]
        for conn in due:
            if conn.head.data and not conn.lingering:
                self._refuse(conn, refusals.header_timeout(self.limits))
            else:
                self._let_go(conn)

    # --- refusing, then lingering ---

    def _refuse(self, conn, exc: Exception) -> None:
        """Answer ``exc`` from the loop and linger, as a thread's handle_error would."""
        self.log.warning("Invalid request from ip=%s: %s",
                         conn.client[0] if isinstance(conn.client, tuple) else conn.client, exc)
        conn.head.take()
        answer = refusals.answer(exc, self.limits)
        try:
            # A few hundred bytes: the socket's send buffer takes them whole, unless the
            # client has left earlier answers unread, and then it is simply closed.
            if conn.sock.send(answer) < len(answer):
                raise BlockingIOError
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._let_go(conn)
            return
        conn.lingering, conn.left_to_drop = True, LINGER_BYTES
        conn.timeout = time.monotonic() + LINGER_SECONDS

    def refused(self, sock) -> None:
        """A request thread answered an error on ``sock``: the connection lingers in the
        loop once the thread is done with it, rather than holding the thread."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return  # gone already: nothing to linger for
        with self._lock:
            self._refused.add(sock)

    def take_refused(self, sock) -> bool:
        with self._lock:
            if sock in self._refused:
                self._refused.discard(sock)
                return True
        return False

    def _drop_input(self, conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.left_to_drop -= len(data)
        if not data or conn.left_to_drop <= 0:
            self._let_go(conn)

    # --- a request thread hands its connection back ---

    def finish_request(self, fs):
        conn = fs.conn
        try:
            keepalive = not fs.cancelled() and fs.result()[0]
        except Exception:
            keepalive = False
        try:
            if self.alive and conn.lingering:
                conn.sock.setblocking(False)
                conn.head.take()
                conn.left_to_drop = LINGER_BYTES
                self._enter_loop(conn, time.monotonic() + LINGER_SECONDS)
                return
            if self.alive and keepalive:
                conn.sock.setblocking(False)
                now = time.monotonic()
                if conn.head.data:  # the start of a pipelined request came with the last one
                    conn.head_deadline = self._after(now, "CLIENT_HEADER_TIMEOUT")
                    self._enter_loop(conn, min(conn.head_deadline, self._after(now, "CLIENT_IDLE_TIMEOUT")))
                else:
                    self._enter_loop(conn, now + self.cfg.keepalive)
                return
        except (OSError, ValueError):
            pass  # the socket is gone already
        self._close(conn)

    # --- the loop's bookkeeping ---

    def _enter_loop(self, conn, timeout: float) -> None:
        conn.timeout = timeout
        with self._lock:
            # Registered first: a socket the poller refuses never joins the list of waiting ones.
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))
            conn.in_loop = True
            self._keep.append(conn)

    def _leave_loop(self, conn) -> None:
        with self._lock:
            conn.in_loop = False
            self._keep.remove(conn)
            self.poller.unregister(conn.sock)

    def _let_go(self, conn) -> None:
        if conn.in_loop:
            self._leave_loop(conn)
        self._close(conn)

    def _close(self, conn) -> None:
        with self._lock:
            self.nr_conns -= 1
        conn.close()
