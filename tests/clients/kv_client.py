#!/usr/bin/env python3
"""Concurrent key-value clients that record a history for the
linearizability checker (tests/src/linearizable.rs), against the kv-lin
test guest or anything that answers like it (fake_kv_server.py):

    POST /incr/KEY                  200, body the new value (decimal)
    POST /cas/KEY?old=HEX&new=HEX   200, body true or false (old empty: absent)
    PUT /k/KEY (body = value)       200
    GET /k/KEY                      200 with the value; 404 "absent..."
    DELETE /k/KEY                   200
    409: definitely not applied; 503: may or may not have been

Example, against a runtime serving kv-lin under /lin:

    python3 kv_client.py https://127.0.0.1:8443/lin --host localhost \\
        --clients 8 --duration 10 --keys 3 --seed 1 --out history.jsonl

Each base URL may carry the guest's route as its path. Each client has one
connection at a time (reconnecting after an error) and one operation in
flight; it records an `invoke` line just before sending and a completion
just after the answer: `ok` with the answer for a 200 (or a read's 404
"absent"), `fail` for a 409, `info` (outcome unknown) for anything else:
a 503, another status, a timeout, a connection error. Values are small
decimal numbers, so increments, swaps and writes interfere. The checker
takes every key to start absent, so each run uses keys of its own
(--key-prefix).

Times are nanoseconds of time.monotonic_ns (one clock for every thread),
or of time.time_ns with --clock realtime, the clock `date +%s%N` reads
(curl_incr.sh), so the two can go into one history. Standard library only.
"""

import argparse
import heapq
import http.client
import json
import random
import secrets
import ssl
import sys
import threading
import time
import urllib.parse

# The checker's operations, and how each is weighted unless --mix says.
DEFAULT_MIX = "incr=4,cas=2,read=3,write=1,delete=0"


class Target:
    """One base URL: scheme, address, and the path prefix routes go under."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url}: expected http(s)://HOST:PORT[/PREFIX]")
        self.url = url
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")


class TlsConnection(http.client.HTTPSConnection):
    """HTTPS to an address, presenting `sni` as the server name, the way
    `curl --resolve NAME:PORT:ADDRESS https://NAME:PORT/` does."""

    def __init__(self, host, port, sni, context, timeout):
        super().__init__(host, port, timeout=timeout, context=context)
        self.sni = sni

    def connect(self):
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.sni)


class Client(threading.Thread):
    """One client: random operations until the deadline, each recorded."""

    def __init__(self, n, args, targets, clock, deadline):
        super().__init__(daemon=True)
        self.n = n
        self.args = args
        self.targets = targets
        self.clock = clock
        self.deadline = deadline
        self.rng = random.Random(f"{args.seed}:{n}")
        self.events = []
        self.connections = {}
        # The last value this client saw per key: its swaps mostly expect
        # it, so that some of them win.
        self.seen = {}
        ops, weights = zip(*args.mix.items())
        self.ops, self.weights = list(ops), list(weights)
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.context.set_alpn_protocols(["http/1.1"])

    def connection(self, target):
        conn = self.connections.get(target.url)
        if conn is None:
            if target.tls:
                sni = self.args.sni or self.args.host or target.host
                conn = TlsConnection(
                    target.host, target.port, sni, self.context, self.args.timeout
                )
            else:
                conn = http.client.HTTPConnection(
                    target.host, target.port, timeout=self.args.timeout
                )
            self.connections[target.url] = conn
        return conn

    def drop(self, target):
        conn = self.connections.pop(target.url, None)
        if conn is not None:
            conn.close()

    def value(self):
        return str(self.rng.randrange(self.args.values))

    def request(self, op, key):
        """The operation's args, HTTP method, path and body."""
        path = "/" + urllib.parse.quote(key, safe="")
        if op == "incr":
            return 1, "POST", "/incr" + path, None
        if op == "cas":
            roll = self.rng.random()
            if roll < 0.6 and key in self.seen:
                old = self.seen[key]
            elif roll < 0.8:
                old = None
            else:
                old = self.value()
            new = self.value()
            query = urllib.parse.urlencode(
                {"old": "" if old is None else old.encode().hex(), "new": new.encode().hex()}
            )
            return {"old": old, "new": new}, "POST", f"/cas{path}?{query}", None
        if op == "write":
            v = self.value()
            return v, "PUT", "/k" + path, v.encode()
        if op == "read":
            return None, "GET", "/k" + path, None
        return None, "DELETE", "/k" + path, None

    def answer(self, op, status, body):
        """(type, value) of a completion from the HTTP answer."""
        text = body.decode("utf-8", "replace")
        if status == 409:
            return "fail", None
        if op == "read" and status == 404 and text.startswith("absent"):
            return "ok", None
        if status != 200:
            return "info", None
        if op == "read":
            return "ok", text
        if op == "incr":
            try:
                return "ok", int(text.strip())
            except ValueError:
                return "info", None
        if op == "cas":
            if text.strip() in ("true", "false"):
                return "ok", text.strip() == "true"
            return "info", None
        return "ok", None

    def one(self, i):
        turn = self.n + i if self.args.round_robin else self.n
        target = self.targets[turn % len(self.targets)]
        op = self.rng.choices(self.ops, self.weights)[0]
        key = self.rng.choice(self.args.keys)
        args, method, path, body = self.request(op, key)
        base = {"client": self.n, "key": key, "op": op}
        headers = {"Host": self.args.host} if self.args.host else {}
        self.events.append({**base, "args": args, "type": "invoke", "t_ns": self.clock()})
        error = None
        try:
            conn = self.connection(target)
            conn.request(method, target.prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            done = self.clock()
            typ, value = self.answer(op, response.status, data)
            if typ != "ok":
                error = f"{response.status} {data[:200].decode('utf-8', 'replace').strip()}"
        except (OSError, http.client.HTTPException) as e:
            done = self.clock()
            self.drop(target)
            # A refused connection sent nothing: definitely not applied.
            # Anything else may have reached the store. Either way, wait a
            # little before the next try rather than spin on a dead link.
            refused = isinstance(e, ConnectionRefusedError)
            typ, value, error = ("fail" if refused else "info"), None, f"{type(e).__name__}: {e}"
            time.sleep(0.2)
        completion = {**base, "type": typ, "value": value, "t_ns": done}
        if error is not None:
            completion["error"] = error
            completion["url"] = target.url
        self.events.append(completion)
        if typ == "ok" and op in ("read", "incr", "cas", "write"):
            self.remember(op, key, args, value)

    def remember(self, op, key, args, value):
        if op == "read" and value is not None:
            self.seen[key] = value
        elif op == "incr":
            self.seen[key] = str(value)
        elif op == "write":
            self.seen[key] = args
        elif op == "cas" and value:
            self.seen[key] = args["new"]

    def run(self):
        i = 0
        while time.monotonic() < self.deadline and (not self.args.ops or i < self.args.ops):
            self.one(i)
            i += 1
        for url in list(self.connections):
            self.connections.pop(url).close()


def parse_mix(text):
    mix = {}
    for part in text.split(","):
        op, _, weight = part.partition("=")
        if op not in ("incr", "cas", "read", "write", "delete"):
            raise argparse.ArgumentTypeError(f"unknown operation {op!r}")
        mix[op] = float(weight or 1)
    if not any(mix.values()):
        raise argparse.ArgumentTypeError("every weight is 0")
    return {op: w for op, w in mix.items() if w > 0}


def parse_keys(text):
    if text.isdigit():
        return [f"k{i}" for i in range(int(text))]
    return [k for k in text.split(",") if k]


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("urls", nargs="+", metavar="URL",
                   help="base URL, https://127.0.0.1:PORT[/ROUTE] (or http://)")
    p.add_argument("--host", help="Host header to send (default: the URL's)")
    p.add_argument("--sni", help="TLS server name (default: --host, else the URL's host)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds to run (default 5)")
    p.add_argument("--ops", type=int, default=0, help="at most this many operations per client")
    p.add_argument("--keys", type=parse_keys, default=parse_keys("1"),
                   help="a number N (keys k0..kN-1) or a comma list (default 1)")
    p.add_argument("--key-prefix", default=None,
                   help="put before every key (default: a fresh random tag, as the checker "
                        "takes every key to start absent); '' for none")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX),
                   help=f"operation weights (default {DEFAULT_MIX})")
    p.add_argument("--values", type=int, default=10,
                   help="values written and swapped are 0..N-1 (default 10)")
    p.add_argument("--round-robin", action="store_true",
                   help="each operation goes to the next URL (default: a fixed URL per client)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    p.add_argument("--clock", choices=("monotonic", "realtime"), default="monotonic",
                   help="time.monotonic_ns (default) or time.time_ns, as date +%%s%%N")
    p.add_argument("--out", required=True, help="history file (JSON lines), - for stdout")
    args = p.parse_args()
    if args.key_prefix is None:
        args.key_prefix = secrets.token_hex(3) + "-"
    args.keys = [args.key_prefix + k for k in args.keys]
    try:
        targets = [Target(u) for u in args.urls]
    except ValueError as e:
        p.error(str(e))
    clock = time.monotonic_ns if args.clock == "monotonic" else time.time_ns
    deadline = time.monotonic() + args.duration
    clients = [Client(n, args, targets, clock, deadline) for n in range(args.clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    # One client's events are in order already; merged by time for people.
    events = list(heapq.merge(*(c.events for c in clients), key=lambda e: e["t_ns"]))
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    with out:
        for e in events:
            out.write(json.dumps(e) + "\n")
    counts = {}
    for e in events:
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    print(f"kv_client: {len(events)} events {json.dumps(counts, sort_keys=True)}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
