#!/usr/bin/env python3
"""A tiny upstream application that echoes what reached it.

Every request, whatever its method and path, gets 200 and a JSON body
{"method": ..., "path": ..., "headers": {name: value}} (names lower case): behind Envoy
and portcullis it shows the identity headers portcullis added (x-portcullis-user, ...).

    python3 scripts/echo-upstream.py [--host 127.0.0.1] [--port 8000]

Used by scripts/try-envoy.sh and by the application of docs/walkthrough.md. Standard
library only. For trying things out: it answers anyone who can reach it.
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    server_version = "echo-upstream"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = value if name not in headers else headers[name] + ", " + value
        body = json.dumps(
            {"method": self.command, "path": self.path, "headers": headers}, indent=2
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = answer

    def log_message(self, format, *args):
        # One line per request on stderr, as http.server does, without the client address.
        sys.stderr.write("echo-upstream: %s\n" % (format % args))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Echo)
    server.daemon_threads = True
    print("echo-upstream: listening on http://%s:%d" % (args.host, args.port), file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
