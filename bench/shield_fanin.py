#!/usr/bin/env python3
"""Cold-object fan-in for bench/shield_vs_peers.sh (Python 3 standard library only).

Two roles:

  shield_fanin.py upstream --listen 127.0.0.1:19081 --blob FILE --delay-ms 200 --log FILE
      A deliberately slow HTTP/1.1 origin (threads, keep-alive). GET /fanin/<name>-<N>.m4s sleeps
      --delay-ms, then answers with the first N bytes of --blob (Cache-Control: immutable).
      For every request it appends one JSON line to --log: path, arrival time, the time its last
      body byte was handed to the kernel ("last_byte_ns"); times are CLOCK_MONOTONIC
      nanoseconds, which every process on the machine shares.

  shield_fanin.py client --url http://127.0.0.1:19082/fanin/x-1048576.m4s -n 1000 \
        --upstream-log FILE [--expect-bytes N] [--label L] [--json OUT]
      Opens N keep-alive connections, then writes the same GET on all of them in one tight loop
      ("the same instant"), reads every response (status, headers, body length; the first body
      is checked byte for byte against --expect-file when given), and records when its first
      and last bytes arrived. Reports the requests the upstream saw for that path, and for the
      N waiters: last byte (and first byte) minus the upstream's last byte sent (or the first
      complete response, if that came earlier), p50/p99/max, plus the X-Cache breakdown,
      statuses and errors.
"""

import argparse
import asyncio
import hashlib
import http.server
import json
import os
import re
import socketserver
import sys
import threading
import time
from urllib.parse import urlsplit

now_ns = time.monotonic_ns  # CLOCK_MONOTONIC: comparable across processes on one machine

# --------------------------------------------------------------------------------------------
# Slow upstream
# --------------------------------------------------------------------------------------------

SIZE_RE = re.compile(r"-(\d+)\.m4s$")


def run_upstream(args):
    with open(args.blob, "rb") as f:
        blob = f.read()
    delay = args.delay_ms / 1000.0
    log_lock = threading.Lock()
    log = open(args.log, "a", buffering=1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fanin-upstream"

        def log_message(self, *_):  # quiet: our own JSON log instead
            pass

        def do_GET(self):
            arrived = now_ns()
            path = self.path.split("?", 1)[0]
            match = SIZE_RE.search(path)
            if not path.startswith("/fanin/") or not match:
                body = b"not found\n"
                self.send_response(404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            size = min(int(match.group(1)), len(blob))
            time.sleep(delay)
            body = blob[:size]
            self.send_response(200)
            self.send_header("Content-Type", "video/iso.segment")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
            self.send_header("ETag", '"fanin-%s"' % hashlib.sha1(path.encode()).hexdigest()[:16])
            self.end_headers()
            headers_sent = now_ns()
            self.wfile.write(body)
            self.wfile.flush()
            last_byte = now_ns()
            with log_lock:
                log.write(json.dumps({
                    "path": path,
                    "arrived_ns": arrived,
                    "headers_sent_ns": headers_sent,
                    "last_byte_ns": last_byte,
                    "bytes": size,
                    "client": self.client_address[1],
                }) + "\n")

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 1024

    host, port = args.listen.rsplit(":", 1)
    server = Server((host, int(port)), Handler)
    print("fanin upstream on %s, delay %d ms, blob %d bytes" % (args.listen, args.delay_ms, len(blob)),
          file=sys.stderr, flush=True)
    server.serve_forever()


# --------------------------------------------------------------------------------------------
# Fan-in client
# --------------------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One connection, one request; parses just enough HTTP/1.1 to find the end of the body."""

    def __init__(self, index, keep_body):
        self.index = index
        self.keep_body = keep_body
        self.transport = None
        self.connected = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()
        self.head = b""
        self.headers = None
        self.status = None
        self.length = None
        self.received = 0
        self.body = bytearray() if keep_body else None
        self.sent_ns = None
        self.first_ns = None
        self.last_ns = None
        self.error = None

    def connection_made(self, transport):
        self.transport = transport
        self.connected.set_result(True)

    def data_received(self, data):
        t = now_ns()
        if self.first_ns is None:
            self.first_ns = t
        if self.headers is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            raw, data = self.head[:end], self.head[end + 4:]
            lines = raw.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split(" ", 2)[1])
            self.headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            if "content-length" not in self.headers:
                self._finish(t, "no Content-Length (chunked?): %r" % lines[:1])
                return
            self.length = int(self.headers["content-length"])
        self.received += len(data)
        if self.keep_body:
            self.body += data
        if self.received >= self.length:
            self._finish(t, None if self.received == self.length else "too many bytes")

    def _finish(self, t, error):
        self.last_ns = t
        self.error = error
        if not self.done.done():
            self.done.set_result(True)
        self.transport.close()

    def connection_lost(self, exc):
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed before connect"))
        if not self.done.done():
            self.error = "connection lost after %d body bytes: %s" % (self.received, exc)
            self.last_ns = now_ns()
            self.done.set_result(False)


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    # nearest rank
    rank = max(1, min(len(values), int(-(-p * len(values) // 100))))
    return values[rank - 1]


async def client(args):
    url = urlsplit(args.url)
    host, port = url.hostname, url.port or 80
    target = url.path + ("?" + url.query if url.query else "")
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: shield-fanin\r\nAccept: */*\r\n\r\n"
               % (target, host, port)).encode()
    loop = asyncio.get_running_loop()
    conns = [Conn(i, keep_body=(i < args.check_bodies)) for i in range(args.n)]

    # Connect in batches so no listen backlog overflows; every connection is idle until the burst.
    t0 = time.monotonic()
    for start in range(0, args.n, args.connect_batch):
        batch = conns[start:start + args.connect_batch]
        await asyncio.gather(*(loop.create_connection(lambda c=c: c, host, port) for c in batch))
    await asyncio.sleep(args.settle_ms / 1000.0)  # let the server accept and park every connection
    connect_s = time.monotonic() - t0

    # The burst: one write per connection, in a tight loop.
    for c in conns:
        c.sent_ns = now_ns()
        c.transport.write(request)
    burst_ns = conns[-1].sent_ns - conns[0].sent_ns

    done, pending = await asyncio.wait([c.done for c in conns], timeout=args.timeout)
    for c in conns:
        if not c.done.done():
            c.error = "no complete response within %ss (%d body bytes)" % (args.timeout, c.received)
            c.transport.abort()

    # The upstream logs after its last write; give it a moment to flush.
    await asyncio.sleep(0.3)
    upstream = []
    if args.upstream_log and os.path.exists(args.upstream_log):
        with open(args.upstream_log) as f:
            for line in f:
                entry = json.loads(line)
                if entry["path"] == url.path:
                    upstream.append(entry)

    expect = None
    if args.expect_file:
        with open(args.expect_file, "rb") as f:
            expect = f.read()
        if args.expect_bytes:
            expect = expect[:args.expect_bytes]

    ok = [c for c in conns if c.error is None and c.status == 200]
    errors = {}
    for c in conns:
        if c.error is not None or c.status != 200:
            key = c.error or "status %s" % c.status
            errors[key] = errors.get(key, 0) + 1
    xcache = {}
    for c in conns:
        if c.headers is not None:
            v = c.headers.get("x-cache", "-")
            xcache[v] = xcache.get(v, 0) + 1
    wrong_len = sum(1 for c in ok if args.expect_bytes and c.length != args.expect_bytes)
    body_mismatch = sum(1 for c in conns if c.keep_body and c.error is None and expect is not None
                        and bytes(c.body) != expect)

    # The reference "upstream last byte": the upstream's own timestamp, taken after its write
    # returned. On a loaded machine that thread can be descheduled before it reads the clock, so
    # a fast cache may deliver before it; then the first complete response is the reference
    # instead (the earlier of the two, which can only make the reported delays longer).
    upstream_ns = upstream[0]["last_byte_ns"] if upstream else None
    first_done_ns = min((c.last_ns for c in ok), default=None)
    ref_ns, reference = upstream_ns, "upstream log"
    if upstream_ns is not None and first_done_ns is not None and first_done_ns < upstream_ns:
        ref_ns, reference = first_done_ns, "first response (%.2f ms before the upstream log)" % (
            (upstream_ns - first_done_ns) / 1e6)
    first_sent = conns[0].sent_ns
    last = [(c.last_ns - ref_ns) / 1e6 for c in ok] if ref_ns else []
    first = [(c.first_ns - ref_ns) / 1e6 for c in ok] if ref_ns else []
    since_send = [(c.last_ns - c.sent_ns) / 1e6 for c in ok]
    finished_before_upstream = sum(1 for c in ok if upstream_ns and c.last_ns < upstream_ns)

    result = {
        "label": args.label,
        "url": args.url,
        "clients": args.n,
        "ok": len(ok),
        "errors": errors,
        "x_cache": xcache,
        "wrong_length": wrong_len,
        "bodies_checked": min(args.check_bodies, args.n),
        "body_mismatch": body_mismatch,
        "connect_s": round(connect_s, 3),
        "burst_ms": round(burst_ns / 1e6, 2),
        "upstream_requests": len(upstream),
        "upstream_arrival_after_burst_ms":
            round((upstream[0]["arrived_ns"] - first_sent) / 1e6, 2) if upstream else None,
        "upstream_last_byte_after_burst_ms":
            round((upstream_ns - first_sent) / 1e6, 2) if upstream_ns else None,
        "reference": reference,
        "last_byte_after_upstream_ms": {
            "p50": round(pct(last, 50), 2), "p99": round(pct(last, 99), 2),
            "max": round(max(last), 2) if last else None,
        },
        "first_byte_after_upstream_ms": {
            "p50": round(pct(first, 50), 2), "p99": round(pct(first, 99), 2),
            "max": round(max(first), 2) if first else None,
        },
        "total_from_send_ms": {
            "p50": round(pct(since_send, 50), 2), "max": round(max(since_send), 2) if since_send else None,
        },
        "finished_before_upstream_last_byte": finished_before_upstream,
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }
    print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    # Non-zero only when the measurement itself is unusable.
    return 0 if upstream and ok else 2


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    up = sub.add_parser("upstream")
    up.add_argument("--listen", default="127.0.0.1:19081")
    up.add_argument("--blob", required=True)
    up.add_argument("--delay-ms", type=int, default=200)
    up.add_argument("--log", required=True)
    cl = sub.add_parser("client")
    cl.add_argument("--url", required=True)
    cl.add_argument("-n", type=int, default=1000)
    cl.add_argument("--upstream-log")
    cl.add_argument("--expect-file", help="the upstream blob; bodies are compared with its prefix")
    cl.add_argument("--expect-bytes", type=int, default=0)
    cl.add_argument("--check-bodies", type=int, default=3, help="bodies compared byte for byte")
    cl.add_argument("--connect-batch", type=int, default=100)
    cl.add_argument("--settle-ms", type=int, default=300)
    cl.add_argument("--timeout", type=float, default=30.0)
    cl.add_argument("--label", default="")
    cl.add_argument("--json", help="append the result line to this file")
    args = parser.parse_args()
    if args.role == "upstream":
        run_upstream(args)
        return 0
    return asyncio.run(client(args))


if __name__ == "__main__":
    sys.exit(main())
