#!/usr/bin/python3
"""A fault-injecting HTTP proxy for object-store tests (python3 stdlib only).

Usage: faultproxy.py --upstream HOST:PORT [--rate R] [--faults LIST]
                     [--match REGEX] [--stall SECONDS] [--seed N] [--log FILE]
                     [--skip N] [--log-all]

Listens on a free loopback port (printed as "faultproxy listening on
127.0.0.1:PORT") and forwards each HTTP/1.1 request to the upstream server.
A fraction R of requests (0..1) instead suffers one fault from LIST
(comma-separated, default all):
  reset    the connection is reset (RST), before or after the upstream
           handled the request
  reset-after   always after the upstream handled it (the answer is lost)
  429 500 503   an S3-style error document with that status
  stall    the response stops halfway through its body (or never starts)
           and the connection hangs for --stall seconds before closing
With --match, only requests whose "METHOD PATH" matches the regular
expression can suffer a fault; with --skip N, the first N of those pass
untouched. Each injected fault is appended to --log as one line, so a test can prove
faults really happened; with --log-all, every request passed on is logged
too ("forward STATUS METHOD PATH BODY-BYTES"), so a test can show what
crossed the wire. Bounded: every wait has a timeout, and the process ends
when its parent stops it.
"""
import argparse
import http.client
import random
import re
import socket
import socketserver
import struct
import sys
import threading
import time

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
       "trailer", "upgrade", "expect"}
CODES = {429: ("SlowDown", "Too Many Requests"), 500: ("InternalError", "Internal Server Error"),
         503: ("ServiceUnavailable", "Service Unavailable")}


class State:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.lock = threading.Lock()
        self.faults = [f for f in a.faults.split(",") if f]

    def pick(self, method, path):
        if self.a.match and not re.search(self.a.match, f"{method} {path}"):
            return None, 0
        with self.lock:
            if self.a.skip > 0:
                self.a.skip -= 1
                return None, 0
            if self.rng.random() >= self.a.rate:
                return None, 0
            return self.rng.choice(self.faults), self.rng.random()

    def log(self, line):
        if self.a.log:
            with self.lock, open(self.a.log, "a") as f:
                f.write(line + "\n")


def read_head(rf):
    lines = []
    total = 0
    while True:
        line = rf.readline(65537)
        if not line:
            return None
        total += len(line)
        if total > 65536:
            return None
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line.decode("latin-1").rstrip("\r\n"))


def reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Handler(socketserver.StreamRequestHandler):
    timeout = 120

    def handle(self):
        st = self.server.state
        while True:
            head = read_head(self.rfile)
            if not head:
                return
            try:
                method, path, _ = head[0].split(" ", 2)
            except ValueError:
                return
            headers = []
            for h in head[1:]:
                k, _, v = h.partition(":")
                headers.append((k.strip(), v.strip()))
            hmap = {k.lower(): v for k, v in headers}
            length = int(hmap.get("content-length", "0") or 0)
            fault, coin = st.pick(method, path)
            if fault == "reset" and coin < 0.5:
                st.log(f"reset-before {method} {path}")
                reset(self.connection)
                return
            if hmap.get("expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.wfile.flush()
            body = self.rfile.read(length) if length else b""
            if len(body) != length:
                return
            if fault in ("429", "500", "503"):
                code = int(fault)
                st.log(f"http-{code} {method} {path}")
                doc = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code>'
                       '<Message>injected by faultproxy</Message></Error>' % CODES[code][0])
                data = doc.encode()
                self.wfile.write(("HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\n"
                                  "Content-Length: %d\r\n\r\n" % (code, CODES[code][1], len(data))
                                  ).encode() + (b"" if method == "HEAD" else data))
                self.wfile.flush()
                continue
            if fault == "stall" and coin < 0.3:
                st.log(f"stall-silent {method} {path}")
                time.sleep(st.a.stall)
                reset(self.connection)
                return
            try:
                status, reason, rheaders, rbody = self.forward(method, path, headers, body)
            except OSError:
                reset(self.connection)
                return
            if fault in ("reset", "reset-after"):
                st.log(f"reset-after {method} {path}")
                reset(self.connection)
                return
            if st.a.log_all:
                st.log(f"forward {status} {method} {path} {len(rbody)}")
            out = ["HTTP/1.1 %d %s" % (status, reason)]
            clen = None
            for k, v in rheaders:
                if k.lower() in HOP:
                    continue
                if k.lower() == "content-length":
                    clen = v
                    continue
                out.append(f"{k}: {v}")
            if method == "HEAD":
                if clen is not None:
                    out.append(f"Content-Length: {clen}")
            else:
                out.append(f"Content-Length: {len(rbody)}")
            raw = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
            if fault == "stall" and len(rbody) > 1:
                st.log(f"stall-body {method} {path}")
                self.wfile.write(raw + rbody[: len(rbody) // 2])
                self.wfile.flush()
                time.sleep(st.a.stall)
                reset(self.connection)
                return
            self.wfile.write(raw + rbody)
            self.wfile.flush()

    def forward(self, method, path, headers, body):
        host, port = self.server.state.a.upstream.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() not in HOP:
                    conn.putheader(k, v)
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            rbody = resp.read()
            return resp.status, resp.reason, resp.getheaders(), rbody
        finally:
            conn.close()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True)
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--faults", default="reset,429,500,503,stall")
    p.add_argument("--match")
    p.add_argument("--stall", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--log")
    p.add_argument("--log-all", action="store_true")
    a = p.parse_args()
    srv = Server(("127.0.0.1", 0), Handler)
    srv.state = State(a)
    print("faultproxy listening on 127.0.0.1:%d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
