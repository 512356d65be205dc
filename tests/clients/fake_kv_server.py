#!/usr/bin/env python3
"""A stand-in for the kv-lin test guest: the same routes over an in-memory
dict, to try kv_client.py and the linearizability checker without a
runtime, and to show that the checker catches a store that lies.

    python3 fake_kv_server.py [--prefix /lin] [--broken MODE] [--chaos P]

prints the port it listens on (127.0.0.1) on a line of its own, then
serves until killed (HTTP/1.1 with keep-alive; HTTPS with --tls-cert and
--tls-key). Routes, as kv-lin has them under its route prefix:

    POST /incr/KEY                  200, body the new value (decimal)
    POST /cas/KEY?old=HEX&new=HEX   200, body true or false (old empty: absent)
    PUT /k/KEY (body = value)       200
    GET /k/KEY                      200 with the value; 404 "absent"
    DELETE /k/KEY                   200

--chaos P makes a fraction P of the changes go wrong the ways a
replicated store may, and says so honestly: applied and answered 503
(outcome unknown), not applied and answered 503, not applied and
answered 409 (failed).

--broken MODE makes it lie, which the checker must catch:

    lose-incr    every 4th increment of a key answers the new value but
                 does not store it (an acknowledged write lost)
    stale-read   every 3rd read answers the value as it was 5 changes ago
    ack-failed   every 8th change is applied but answered 409 (failed)
"""

import argparse
import http.server
import os
import random
import ssl
import sys
import threading
import time
import urllib.parse


class Store:
    """The dict, its lock, and what --broken needs to remember."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.values = {}
        # Per key: every value it had, for stale reads.
        self.past = {}
        self.counts = {}
        self.rng = random.Random(args.seed)

    def nth(self, what, key, n):
        """Whether this is the n-th `what` on `key` (counting from 1)."""
        k = (what, key)
        self.counts[k] = self.counts.get(k, 0) + 1
        return self.counts[k] % n == 0

    def set(self, key, value):
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value
        self.past.setdefault(key, [None]).append(value)

    def change(self, key, apply):
        """Runs `apply()` (which returns (status, body) and changes the
        value) under the lock, unless chaos or a broken mode says otherwise."""
        args = self.args
        with self.lock:
            if args.chaos and self.rng.random() < args.chaos:
                fate = self.rng.randrange(3)
                if fate == 0:
                    apply()
                    return 503, "unknown: applied, as it happens"
                if fate == 1:
                    return 503, "unknown: not applied, as it happens"
                return 409, "fail: not applied"
            status, body = apply()
            if args.broken == "ack-failed" and status == 200 and self.nth("change", key, 8):
                return 409, "fail: (a lie: it was applied)"
            return status, body

    def incr(self, key):
        def apply():
            now = self.values.get(key, b"0")
            if not now.isdigit():
                return 409, "fail: not a number"
            n = int(now) + 1
            lose = self.args.broken == "lose-incr" and self.nth("incr", key, 4)
            if not lose:
                self.set(key, str(n).encode())
            return 200, str(n)
        return self.change(key, apply)

    def cas(self, key, old, new):
        def apply():
            if self.values.get(key) != old:
                return 200, "false"
            self.set(key, new)
            return 200, "true"
        return self.change(key, apply)

    def write(self, key, value):
        def apply():
            self.set(key, value)
            return 200, "stored"
        return self.change(key, apply)

    def delete(self, key):
        def apply():
            self.set(key, None)
            return 200, "deleted"
        return self.change(key, apply)

    def read(self, key):
        with self.lock:
            value = self.values.get(key)
            past = self.past.get(key, [None])
            if self.args.broken == "stale-read" and len(past) > 5 and self.nth("read", key, 3):
                value = past[-6]
        return (200, value) if value is not None else (404, "absent")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the
    # second waits for the client's delayed ACK, 40 ms a request.
    disable_nagle_algorithm = True
    store = None

    def route(self, method):
        url = urllib.parse.urlsplit(self.path)
        prefix = self.server.prefix
        if not url.path.startswith(prefix + "/"):
            return 404, "no route"
        parts = url.path[len(prefix):].split("/")
        if len(parts) != 3 or parts[0] != "":
            return 404, "no route"
        _, what, key = parts
        key = urllib.parse.unquote(key)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        store = self.store
        if (method, what) == ("POST", "incr"):
            return store.incr(key)
        if (method, what) == ("POST", "cas"):
            try:
                old = query.get("old", [""])[0]
                old = bytes.fromhex(old) if old else None
                new = bytes.fromhex(query["new"][0])
            except (KeyError, ValueError):
                return 400, "old and new are hex"
            return store.cas(key, old, new)
        if what != "k":
            return 404, "no route"
        if method == "PUT":
            return store.write(key, body)
        if method == "GET":
            return store.read(key)
        if method == "DELETE":
            return store.delete(key)
        return 405, "method not allowed"

    def answer(self, method):
        # Some time either side of the change, so that requests overlap.
        delay = self.server.delay
        if delay:
            time.sleep(random.random() * delay)
        status, body = self.route(method)
        if delay:
            time.sleep(random.random() * delay)
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer("GET")

    def do_PUT(self):
        self.answer("PUT")

    def do_POST(self):
        self.answer("POST")

    def do_DELETE(self):
        self.answer("DELETE")

    def log_message(self, *args):
        pass


def exit_at_eof():
    """Exits once standard input ends: a test that started this server with
    a pipe there can die any way it likes without leaving it running."""
    sys.stdin.buffer.read()
    os._exit(0)


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    p.add_argument("--prefix", default="", help="route prefix, as a guest's route (e.g. /lin)")
    p.add_argument("--broken", choices=("lose-incr", "stale-read", "ack-failed"))
    p.add_argument("--chaos", type=float, default=0.0, help="fraction of changes gone wrong")
    p.add_argument("--delay-ms", type=float, default=1.0,
                   help="up to this much sleep before and after each change (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="and this key (PEM)")
    p.add_argument("--exit-with-stdin", action="store_true",
                   help="exit when standard input closes (the parent is gone)")
    args = p.parse_args()
    if args.exit_with_stdin:
        threading.Thread(target=exit_at_eof, daemon=True).start()
    Handler.store = Store(args)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.prefix = args.prefix.rstrip("/")
    server.delay = args.delay_ms / 1000
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
