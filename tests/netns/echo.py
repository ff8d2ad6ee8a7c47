#!/usr/bin/env python3
"""Echo upstream for the network-namespace tests: answers every request on every
--http ADDR:PORT (and, with TLS, every --https ADDR:PORT) with JSON naming the port it
arrived on and the Authorization and Host it carried. Prints "ready" once listening."""

import argparse
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({
            "port": self.server.server_address[1],
            "authorization": self.headers.get("Authorization"),
            "host": self.headers.get("Host"),
            "path": self.path,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


def serve(addr, context=None):
    host, port = addr.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Echo)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--http", action="append", default=[])
    p.add_argument("--https", action="append", default=[])
    p.add_argument("--cert")
    p.add_argument("--key")
    args = p.parse_args()
    for addr in args.http:
        serve(addr)
    if args.https:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        for addr in args.https:
            serve(addr, context)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    threading.Event().wait()


if __name__ == "__main__":
    main()
