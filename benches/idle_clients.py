#!/usr/bin/env python3
"""Open N idle PostgreSQL client connections and hold them open.

    benches/idle_clients.py HOST PORT USER DB N

Each connection sends a protocol 3.0 StartupMessage (no SSL, no password: the server
must use trust authentication for USER) and reads until the first ReadyForQuery. When
all N are ready it prints "connected N" on stdout and then holds every connection,
sending nothing, until its standard input reaches end-of-file or it is killed; then it
exits and the connections close. Errors (a refused connection, an ErrorResponse, a
password request, a server closing a held connection) go to stderr with exit status 1.

Used by benches/pooler.sh to measure a proxy's memory per idle client. Standard
library only.
"""
import errno
import resource
import selectors
import socket
import struct
import sys
import time

# Connections being set up at once: enough to be quick, few enough not to overflow a
# listen backlog.
IN_FLIGHT = 64
# Seconds allowed to get every connection ready, and without any new one ready.
SETUP_TIMEOUT = 300
STALL_TIMEOUT = 20


def fail(msg):
    print(f"idle_clients: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def startup_message(user, db):
    body = struct.pack("!i", 196608)  # protocol 3.0
    for key, value in (("user", user), ("database", db), ("application_name", "idle_clients")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def error_fields(payload):
    """The fields of an ErrorResponse/NoticeResponse as 'SEVERITY CODE: message'."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', '?')} {fields.get('C', '?')}: {fields.get('M', '?')}"


class Conn:
    """One client connection going through startup."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.connected = False  # TCP connect finished and StartupMessage sent

    def feed(self, data):
        """Consume server bytes; True once ReadyForQuery has arrived."""
        self.buf += data
        while len(self.buf) >= 5:
            tag = self.buf[0:1]
            (length,) = struct.unpack("!i", self.buf[1:5])
            if len(self.buf) < 1 + length:
                return False
            payload, self.buf = self.buf[5 : 1 + length], self.buf[1 + length :]
            if tag == b"E":
                fail(f"server error during startup: {error_fields(payload)}")
            if tag == b"R":
                (code,) = struct.unpack("!i", payload[:4])
                if code != 0:
                    fail(f"server asked for authentication (request {code}); trust auth is required")
            if tag == b"Z":
                return True
            # ParameterStatus 'S', BackendKeyData 'K', NoticeResponse 'N': ignored.
        return False


def raise_fd_limit(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            fail(f"need {want} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def open_all(host, port, user, db, n):
    """Open n connections and take each through startup; returns the sockets."""
    startup = startup_message(user, db)
    sel = selectors.DefaultSelector()
    ready = []
    started = 0
    in_flight = 0
    deadline = time.monotonic() + SETUP_TIMEOUT
    last_progress = time.monotonic()
    while len(ready) < n:
        while started < n and in_flight < IN_FLIGHT:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                fail(f"connect to {host}:{port} failed: {errno.errorcode.get(err, err)}")
            sel.register(sock, selectors.EVENT_WRITE, Conn(sock))
            started += 1
            in_flight += 1
        now = time.monotonic()
        if now >= deadline:
            fail(f"timed out: {len(ready)} of {n} connections ready after {SETUP_TIMEOUT}s")
        if now - last_progress >= STALL_TIMEOUT:
            fail(f"stalled: {len(ready)} of {n} connections ready, none more in {STALL_TIMEOUT}s")
        timeout = min(deadline, last_progress + STALL_TIMEOUT) - now
        for key, _ in sel.select(timeout):
            conn = key.data
            if not conn.connected:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(f"connection to {host}:{port} failed: {errno.errorcode.get(err, err)} "
                         f"({len(ready)} were ready)")
                conn.sock.sendall(startup)  # 60 bytes: fits in an empty send buffer
                conn.connected = True
                sel.modify(conn.sock, selectors.EVENT_READ, conn)
                continue
            try:
                data = conn.sock.recv(65536)
            except ConnectionError as e:
                fail(f"connection reset during startup: {e} ({len(ready)} were ready)")
            if not data:
                fail(f"server closed a connection during startup ({len(ready)} were ready)")
            if conn.feed(data):
                sel.unregister(conn.sock)
                ready.append(conn.sock)
                in_flight -= 1
                last_progress = time.monotonic()
    sel.close()
    return ready


def hold(socks):
    """Wait for end of stdin; fail if the server closes a held connection meanwhile."""
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ, sock)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                if not sys.stdin.buffer.read1(4096):
                    return
            else:
                try:
                    data = key.data.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    fail("the server closed an idle connection")
                # Anything else (e.g. a ParameterStatus) is ignored.


def main():
    if len(sys.argv) != 6:
        print("usage: idle_clients.py HOST PORT USER DB N", file=sys.stderr)
        sys.exit(2)
    host, port, user, db, n = sys.argv[1:]
    port, n = int(port), int(n)
    raise_fd_limit(n)
    socks = open_all(host, port, user, db, n)
    print(f"connected {len(socks)}", flush=True)
    hold(socks)


if __name__ == "__main__":
    main()
