#!/usr/bin/env python3
"""Mock OAuth 2.0 token endpoint for scripts/bench.sh (Python stdlib only).

Serves RFC 8693 token exchange at POST /token on 127.0.0.1 and answers every
well-formed request with a fresh random access token:

    {"access_token": "...", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
     "token_type": "Bearer", "expires_in": 3600}

with `Cache-Control: no-store`.

- The first line on stdout is the port it listens on (flushed at once), so a
  script can start it with port 0 and read the port back.
- Every token request is logged on stderr as `bench_as: token request #N ...`,
  and GET /stats returns {"token_requests": N, "ok": N, "errors": N} so the
  benchmark can prove that tokex served the rest from its cache.

Client authentication is checked only when --client-id/--client-secret are
given (client_secret_post or client_secret_basic both accepted).
"""

import argparse
import base64
import json
import secrets
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
MAX_BODY = 64 * 1024


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.token_requests = 0
        self.ok = 0
        self.errors = 0

    def count(self, ok):
        with self.lock:
            self.token_requests += 1
            if ok:
                self.ok += 1
            else:
                self.errors += 1
            return self.token_requests

    def snapshot(self):
        with self.lock:
            return {"token_requests": self.token_requests, "ok": self.ok, "errors": self.errors}


def make_handler(stats, client_id, client_secret, expires_in, token_bytes=0, quiet=False):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real AS
        server_version = "bench-as/1"

        def log_message(self, fmt, *args):  # silence the default per-request access log
            pass

        def _send_json(self, status, obj, extra_headers=()):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Pragma", "no-cache")
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra_headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status, code, desc, extra_headers=()):
            n = stats.count(ok=False)
            print(f"bench_as: token request #{n} -> {status} {code}: {desc}",
                  file=sys.stderr, flush=True)
            self._send_json(status, {"error": code, "error_description": desc}, extra_headers)

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/stats":
                self._send_json(200, stats.snapshot())
            elif path == "/healthz":
                self._send_json(200, {"ok": True})
            else:
                self._send_json(404, {"error": "not_found"})

        def do_POST(self):
            path = self.path.split("?", 1)[0]
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                return self._error(400, "invalid_request", "bad or missing Content-Length")
            raw = self.rfile.read(length) if length else b""
            if path != "/token":
                return self._send_json(404, {"error": "not_found"})
            ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                return self._error(400, "invalid_request", "expected a form body")
            form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
            get = lambda k: (form.get(k) or [""])[0]

            # Client authentication (only enforced when configured).
            cid, csec = get("client_id"), get("client_secret")
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    user, _, pw = base64.b64decode(auth[6:].strip()).decode().partition(":")
                    cid, csec = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(pw)
                except Exception:
                    return self._error(401, "invalid_client", "bad Basic credentials",
                                       [("WWW-Authenticate", 'Basic realm="bench"')])
            if client_id is not None and (cid != client_id or
                                          (client_secret is not None and csec != client_secret)):
                return self._error(401, "invalid_client", "unknown client or wrong secret",
                                   [("WWW-Authenticate", 'Basic realm="bench"')])

            if get("grant_type") != TOKEN_EXCHANGE:
                return self._error(400, "unsupported_grant_type", "only token exchange")
            if not get("subject_token") or not get("subject_token_type"):
                return self._error(400, "invalid_request", "subject_token and type required")
            requested = get("requested_token_type") or ACCESS_TOKEN_TYPE
            if requested != ACCESS_TOKEN_TYPE:
                return self._error(400, "invalid_request", "only access tokens are issued")

            n = stats.count(ok=True)
            if not quiet:
                print(f"bench_as: token request #{n} -> 200 (audience={get('audience')!r})",
                      file=sys.stderr, flush=True)
            token = "bench-" + secrets.token_urlsafe(32)
            if token_bytes > len(token):
                token += "x" * (token_bytes - len(token))
            self._send_json(200, {
                "access_token": token,
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": expires_in,
            })

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    ap.add_argument("--client-id", default=None)
    ap.add_argument("--client-secret", default=None)
    ap.add_argument("--expires-in", type=int, default=3600)
    ap.add_argument("--token-bytes", type=int, default=0,
                    help="pad issued tokens to this many bytes (scripts/memory.sh: 1 KB tokens)")
    ap.add_argument("--quiet", action="store_true", help="no line per token request")
    args = ap.parse_args()

    # SIGTERM (sent by bench.sh's cleanup) ends serve_forever like Ctrl-C does,
    # so the final stats line is still written.
    def _term(_sig, _frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)

    stats = Stats()
    handler = make_handler(stats, args.client_id, args.client_secret, args.expires_in,
                           args.token_bytes, args.quiet)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    print(f"bench_as: listening on 127.0.0.1:{server.server_address[1]}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print(f"bench_as: exiting, stats {json.dumps(stats.snapshot())}",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
