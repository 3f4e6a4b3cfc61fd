"""A webhook receiver for the tests: a real HTTP server process on loopback.

    python tests/webhook_receiver.py PORT LOG [--hang SECONDS] [--status CODE]
        [--drip SECONDS] [--huge MIB] [--location URL]

Every POST it takes is appended to LOG as one JSON line: its headers, its
body as text, and the time it came. ``--hang`` accepts the request and
answers nothing for that long (a receiver that hangs); ``--status`` answers
with that status (a receiver that refuses); ``--location`` adds that header
(a redirect, with a 3xx status). ``--drip`` answers its status line one byte
every SECONDS, for ever (a receiver that never hangs long enough for a read
timeout, yet never finishes); ``--huge`` follows the headers with a body of
that many MiB, written as fast as it is read. It prints "ready" once listening.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log", type=Path)
    parser.add_argument("--hang", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--drip", type=float, default=0.0)
    parser.add_argument("--huge", type=int, default=0)
    parser.add_argument("--location", default=None)
    options = parser.parse_args()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            # the sender may hang up (cut off, or not reading the huge answer): that is fine
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._take()

        def _take(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if options.hang:
                time.sleep(options.hang)
            with lock, options.log.open("a", encoding="utf-8") as out:
                entry = {
                    "at": time.time(),
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "body": body.decode("utf-8"),
                }
                out.write(json.dumps(entry) + "\n")
            if options.drip:
                while True:  # until the sender hangs up
                    self.wfile.write(b"H")
                    self.wfile.flush()
                    time.sleep(options.drip)
            self.send_response(options.status)
            if options.location:
                self.send_header("Location", options.location)
            self.send_header("Content-Length", str(options.huge << 20))
            self.end_headers()
            chunk = b"x" * (1 << 20)
            for _ in range(options.huge):
                self.wfile.write(chunk)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", options.port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
