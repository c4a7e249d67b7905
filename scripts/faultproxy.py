#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for the test lab: put it in front of a plain-HTTP registry
and it answers, by rule, with errors, broken connections, corrupt or cut-short bodies,
stalls and slow transfers. Python 3 standard library only.

    scripts/faultproxy.py --upstream 127.0.0.1:5100 [--listen 127.0.0.1:0]
                          [--rules RULES.json] [--log LOG.jsonl]

Once it listens it prints `listening on HOST:PORT` on standard output. Requests are
forwarded to the upstream registry unchanged (the Host header included, so the registry's
upload `Location`s point back at the proxy) unless a rule matches.

Rules: a JSON list, tried in order; the first rule that matches a request and has
matches left applies to it. Fields:

    method    "GET", or a list of methods; any when absent
    path      a regular expression searched in the request target (path and query);
              any when absent
    count     how many matching requests the rule applies to (the first N); every one
              when absent
    action    what to do:
      "status"    answer `status` (default 500) with a registry-style error body and the
                  extra `headers` ({"WWW-Authenticate": "..."}); `retry_after` (a number
                  or an HTTP date) sets Retry-After. The request never reaches upstream.
      "reset"     forward, send the head and `after` bytes of the body (default half),
                  then reset the connection (RST)
      "truncate"  forward, send the head (with the full Content-Length) and `after` bytes
                  of the body (default half), then close the connection
      "corrupt"   forward, flip one bit of the body's middle byte
      "stall"     without `after`: read the request and never answer; with `after`:
                  forward, send the head and `after` bytes, then send nothing more. Either
                  way the connection stays open until the client closes it.
      "throttle"  forward, send the body at `rate` bytes per second (default 65536)

Runtime control (never forwarded, never logged): `GET /_faultproxy/rules` lists the rules
with the matches they have left, `PUT /_faultproxy/rules` replaces them (a JSON list as
above), `GET /_faultproxy/log` returns the log.

Log: one JSON object per request, written (and flushed) to --log when the request is
decided, before it is acted on: {"seq", "time" (Unix seconds), "method", "path", "rule"
(index or null), "action" ("pass" or the rule's action), "status" (the status sent, or
null when none was)}. Tests count attempts with it.
"""

import argparse
import http.client
import json
import re
import select
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTROL = "/_faultproxy/"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
STALL_LIMIT = 600.0


class Rules:
    """The rules, the matches each has left, and the log; shared by all threads."""

    def __init__(self, rules, log_path):
        self.lock = threading.Lock()
        self.rules = []
        self.replace(rules)
        self.log = []
        self.log_file = open(log_path, "a", encoding="utf-8") if log_path else None

    def replace(self, rules):
        if not isinstance(rules, list):
            raise ValueError("rules must be a JSON list")
        checked = []
        for rule in rules:
            rule = dict(rule)
            if rule.get("action") not in (
                "status",
                "reset",
                "truncate",
                "corrupt",
                "stall",
                "throttle",
            ):
                raise ValueError(f"unknown action in rule {rule}")
            if isinstance(rule.get("method"), str):
                rule["method"] = [rule["method"]]
            rule["_path"] = re.compile(rule.get("path", ""))
            rule["_left"] = rule.get("count")
            checked.append(rule)
        with self.lock:
            self.rules = checked

    def listing(self):
        with self.lock:
            return [
                {k: v for k, v in r.items() if not k.startswith("_")} | {"left": r["_left"]}
                for r in self.rules
            ]

    def decide(self, method, target):
        """The rule (index, rule) for a request, its matches left counted down, and the
        log entry for it."""
        with self.lock:
            chosen = (None, None)
            for i, rule in enumerate(self.rules):
                if rule.get("method") and method not in rule["method"]:
                    continue
                if not rule["_path"].search(target):
                    continue
                if rule["_left"] is not None:
                    if rule["_left"] <= 0:
                        continue
                    rule["_left"] -= 1
                chosen = (i, rule)
                break
            entry = {
                "seq": len(self.log),
                "time": time.time(),
                "method": method,
                "path": target,
                "rule": chosen[0],
                "action": chosen[1]["action"] if chosen[1] else "pass",
                "status": None,
            }
            self.log.append(entry)
            return chosen[1], entry

    def record(self, entry):
        """Writes `entry` to the log file."""
        if self.log_file:
            with self.lock:
                self.log_file.write(json.dumps(entry) + "\n")
                self.log_file.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.handle_any()

    do_HEAD = do_PUT = do_PATCH = do_POST = do_DELETE = do_GET

    # --- reading and writing ---------------------------------------------------------

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def write_head(self, status, reason, headers):
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def answer(self, status, headers, body):
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        self.write_head(status, http.client.responses.get(status, "Fault"), headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def wait_for_client_close(self):
        """Sends nothing more and waits until the client closes the connection."""
        self.close_connection = True
        deadline = time.time() + STALL_LIMIT
        sock = self.connection
        while time.time() < deadline:
            ready, _, _ = select.select([sock], [], [], 1.0)
            if ready:
                try:
                    if not sock.recv(65536):
                        return
                except OSError:
                    return

    def reset(self):
        self.close_connection = True
        self.wfile.flush()
        self.connection.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.connection.close()

    # --- the proxy -------------------------------------------------------------------

    def handle_any(self):
        rules = self.server.rules
        body = self.read_body()
        if self.path.startswith(CONTROL):
            return self.control(body)
        rule, entry = rules.decide(self.command, self.path)
        action = rule["action"] if rule else "pass"
        if action == "status":
            entry["status"] = int(rule.get("status", 500))
            rules.record(entry)
            return self.injected_status(rule)
        if action == "stall" and rule.get("after") is None:
            rules.record(entry)
            return self.wait_for_client_close()
        try:
            status, reason, headers, upstream_body = self.forward(body)
        except OSError as e:
            entry["status"] = 502
            rules.record(entry)
            return self.answer(502, [], f"faultproxy: upstream: {e}\n".encode())
        entry["status"] = status
        rules.record(entry)
        self.respond(rule, status, reason, headers, upstream_body)

    def injected_status(self, rule):
        status = int(rule.get("status", 500))
        headers = list((rule.get("headers") or {}).items())
        if rule.get("retry_after") is not None:
            headers.append(("Retry-After", str(rule["retry_after"])))
        headers.append(("Content-Type", "application/json"))
        message = {"errors": [{"code": "FAULT", "message": f"injected {status} by faultproxy"}]}
        self.answer(status, headers, json.dumps(message).encode())

    def forward(self, body):
        conn = http.client.HTTPConnection(self.server.upstream, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    conn.putheader(k, v)
            if body or self.command in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            if self.command == "HEAD":
                # Keep the upstream Content-Length: the size of the blob, not of no body.
                data = b""
            return resp.status, resp.reason, headers, data
        finally:
            conn.close()

    def respond(self, rule, status, reason, headers, body):
        action = rule["action"] if rule else "pass"
        if self.command == "HEAD" or action == "pass":
            if self.command == "HEAD":
                self.write_head(status, reason, headers)
            else:
                self.answer(status, headers, body)
            return
        if action == "corrupt":
            data = bytearray(body)
            if data:
                data[len(data) // 2] ^= 0x01
            return self.answer(status, headers, bytes(data))
        if action == "throttle":
            return self.throttled(status, headers, body, int(rule.get("rate", 65536)))
        after = rule.get("after")
        after = len(body) // 2 if after is None else min(int(after), len(body))
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        self.write_head(status, reason, headers)
        self.wfile.write(body[:after])
        if action == "reset":
            return self.reset()
        if action == "truncate":
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            return
        return self.wait_for_client_close()  # stall after `after` bytes

    def throttled(self, status, headers, body, rate):
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        self.write_head(status, http.client.responses.get(status, ""), headers)
        step = max(1, rate // 10)
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            self.wfile.flush()
            time.sleep(step / rate)

    def control(self, body):
        rules = self.server.rules
        what = self.path[len(CONTROL) :]
        try:
            if what == "rules" and self.command == "PUT":
                rules.replace(json.loads(body or b"[]"))
                out = rules.listing()
            elif what == "rules":
                out = rules.listing()
            elif what == "log":
                with rules.lock:
                    out = list(rules.log)
            else:
                return self.answer(404, [], b"unknown control endpoint\n")
        except (ValueError, re.error) as e:
            return self.answer(400, [], f"{e}\n".encode())
        self.answer(200, [("Content-Type", "application/json")], json.dumps(out).encode())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="HOST:PORT of the plain-HTTP registry")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: a free one)")
    p.add_argument("--rules", help="JSON file with the rules")
    p.add_argument("--log", help="file the log is appended to, one JSON object a line")
    args = p.parse_args()
    rules = []
    if args.rules:
        with open(args.rules, encoding="utf-8") as f:
            rules = json.load(f)
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.upstream = args.upstream
    server.rules = Rules(rules, args.log)
    print(f"listening on {host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
