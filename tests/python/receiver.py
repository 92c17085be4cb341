#!/usr/bin/env python3
"""An independent webhook receiver for the end-to-end tests.

Verifies every delivery with the `standardwebhooks` package (PyPI), the
reference implementation of the Standard Webhooks spec, and validates the
body against gateway/schema/webhook-event.v1.json with `jsonschema`. Writes
one JSON line per request to --out. `--port 0` takes a free port; the first
line on stdout, `listening on 127.0.0.1:PORT`, names the port.

usage: receiver.py --port N --schema FILE --out FILE --secret /path=whsec_... [--cert PEM --key PEM]
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--schema", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--secret", action="append", default=[], help="PATH=whsec_...")
ap.add_argument("--cert", help="PEM certificate: serve HTTPS")
ap.add_argument("--key", help="PEM private key")
args = ap.parse_args()

secrets = dict(s.split("=", 1) for s in args.secret)
with open(args.schema) as f:
    schema = json.load(f)
jsonschema.Draft202012Validator.check_schema(schema)  # the schema itself is valid
validator = jsonschema.Draft202012Validator(
    schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        rec = {"path": self.path, "webhook_id": self.headers.get("webhook-id"),
               "signatures": len((self.headers.get("webhook-signature") or "").split())}
        secret = secrets.get(self.path)
        try:
            event = Webhook(secret).verify(body, dict(self.headers.items()))
            rec["verified"] = True
        except (WebhookVerificationError, TypeError, ValueError) as e:
            rec["verified"] = False
            rec["error"] = str(e)
            event = None
        if event is not None:
            errors = [e.message for e in validator.iter_errors(event)]
            rec["schema_errors"] = errors
            rec["event"] = event
        with lock, open(args.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.send_response(200 if rec["verified"] else 401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
if args.cert:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
sys.stdout.flush()
server.serve_forever()
