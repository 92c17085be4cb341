#!/usr/bin/env bash
# Webhook latency benchmark (docs/webhooks.md): alert fired → webhook
# received, on loopback. N alert events are committed into the store's outbox
# by another connection (as the rule evaluator does) at RATE events/s (well
# below saturation, so this measures latency, not throughput); a local
# receiver timestamps each delivery on arrival. Latency = arrival − commit,
# one clock. The receiver verifies every signature with the `standardwebhooks`
# package (outside the timed path: after the arrival time is taken).
#   bench/webhook_latency.sh [N] [RATE] [POLL]
# POLL is delivery.poll_interval (default 100ms): events committed by another
# process are picked up within it; an in-process producer wakes the
# dispatcher at once.
set -euo pipefail
N=${1:-1000}; RATE=${2:-50}; POLL=${3:-100ms}
cd "$(dirname "$0")/.."
cargo build --release -q -p rpm-gateway
BIN=$PWD/target/release/rpm-gateway
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
printf '[store]\npath = "%s/rpm.db"\n[log]\nlevel = "warn"\n[delivery]\npoll_interval = "%s"\nallow_private_network = true\n[[webhooks]]\nid = "bench"\nurl = "http://127.0.0.1:%s/hook"\nsecret = "%s"\n' \
  "$W" "$POLL" "$PORT" "$SECRET" > "$W/g.toml"
python3 - "$N" "$RATE" "$PORT" "$SECRET" "$W" "$BIN" <<'PY'
import json, sqlite3, subprocess, sys, threading, time, hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from standardwebhooks.webhooks import Webhook

n, rate, port, secret, w, binary = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
arrived, bad = {}, []
wh = Webhook(secret)
done = threading.Event()

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        t = time.time()
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            wh.verify(body, dict(self.headers.items()))
        except Exception as e:
            bad.append(str(e))
        arrived.setdefault(self.headers["webhook-id"], t)
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
        if len(arrived) >= n:
            done.set()
    def log_message(self, *a): pass

srv = ThreadingHTTPServer(("127.0.0.1", port), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
gw = subprocess.Popen([binary, "run", "-c", f"{w}/g.toml"])
db = f"{w}/rpm.db"
for _ in range(100):
    try:
        c = sqlite3.connect(db, timeout=10); c.execute("SELECT 1 FROM outbox LIMIT 1"); break
    except Exception:
        time.sleep(0.1)
time.sleep(1.0)
committed = {}
start = time.time()
for i in range(n):
    target = start + i / rate
    time.sleep(max(0, target - time.time()))
    eid = "evt_" + hashlib.sha256(f"bench-{i}".encode()).hexdigest()[:32]
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
    p = f"p-{i % 50}"
    body = {"schema": "rpm-gateway.event.v1", "id": eid, "type": "alert.fired", "timestamp": now,
            "data": {"alert_id": f"al-{i}", "patient_id": p, "care_team": None, "care_plans": ["hypertension"],
                     "rule": {"id": "htn.crisis", "version": 1, "pack": "hypertension"}, "severity": "critical",
                     "status": "firing", "message": "Systolic 185 mm[Hg] at or above 180", "limits": {"systolic_max": 180},
                     "evidence": [{"reading_id": f"r-{i}", "metric": "systolic", "value": 185.0, "unit": "mm[Hg]",
                                   "loinc": "8480-6", "measured_at": now}],
                     "late": False, "flapping": False, "fired_at": now, "measured_at": now, "acknowledged_by": None,
                     "ack_note": None, "resolved_at": None, "link": f"/api/v1/alerts/al-{i}"}}
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO outbox (event_id, event_type, alert_id, patient_id, severity, created_at, payload) VALUES (?,?,?,?,?,?,?)",
              (eid, "alert.fired", f"al-{i}", p, "critical", int(time.time() * 1000), json.dumps(body)))
    committed[eid] = time.time()  # just before COMMIT: latency is not under-counted
    c.execute("COMMIT")
done.wait(120)
gw.terminate(); gw.wait()
lat = sorted((arrived[k] - committed[k]) * 1000 for k in committed if k in arrived)
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
print(f"events {n} at {rate:g}/s, delivered {len(lat)}, signature failures {len(bad)}")
print(f"latency ms: p50 {q(0.50):.1f}  p90 {q(0.90):.1f}  p99 {q(0.99):.1f}  max {lat[-1]:.1f}")
PY
