"""A real HTTP process for deploy verification tests: every GET answers STATUS and a JSON body.

Run as ``python tests/smoke_target.py PORT STATUS [MODE]``; prints ``ready`` once it listens.
MODE ``trickle`` sends a body without end, a byte every 50 ms; ``huge`` sends 300 MB of it.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(port: int, status: int, mode: str = "") -> None:
    body = json.dumps({"status": "ok" if status < 400 else "broken", "code": status}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if mode:
                self._endless()
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _endless(self) -> None:
            """A body that never ends (trickle) or that no check should read whole (huge)."""
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                if mode == "huge":
                    for _ in range(300):
                        self.wfile.write(b"x" * (1 << 20))
                    return
                while True:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)  # what is tested: an answer that never finishes
            except OSError:  # the checker hung up
                return

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4])
