#!/usr/bin/env bash
# Webhook latency benchmark (docs/webhooks.md): alert fired → webhook
# received, on loopback, with a local receiver timestamping each delivery on
# arrival (one clock). The receiver verifies every signature with the
# `standardwebhooks` package (outside the timed path: after the arrival time
# is taken). N events at RATE events/s (well below saturation, so this
# measures latency, not throughput).
#   bench/webhook_latency.sh [N] [RATE] [POLL] [MODE]
# MODE `outbox` (default): the alert events are committed into the store's
# outbox by another connection; latency = arrival − commit. POLL is
# delivery.poll_interval (default 100ms): events committed by another
# process are picked up within it.
# MODE `inproc`: the producer is the gateway itself: each event is a blood
# pressure reading of 185 mm[Hg] pushed to `POST /api/v1/readings` for a
# new patient, which the rule evaluator turns into an `htn.crisis` alert;
# latency = arrival − the moment the request was sent (so it includes the
# ingest commit, the evaluation and its commit, fan-out and delivery).
# The binary is $CARGO_TARGET_DIR/$PROFILE/rpm-gateway (PROFILE=release).
set -euo pipefail
N=${1:-1000}; RATE=${2:-50}; POLL=${3:-100ms}; MODE=${4:-outbox}; PROFILE=${PROFILE:-release}
cd "$(dirname "$0")/.."
if [ "$PROFILE" = release ]; then cargo build --release -q -p rpm-gateway; else cargo build -q -p rpm-gateway; fi
T=${CARGO_TARGET_DIR:-$PWD/target}
[ "$PROFILE" = release ] && BIN=$T/release/rpm-gateway || BIN=$T/debug/rpm-gateway
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PORT=$(free_port); API_PORT=$(free_port)
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
printf '[store]\npath = "%s/rpm.db"\n[log]\nlevel = "warn"\n[delivery]\npoll_interval = "%s"\nallow_private_network = true\n[[webhooks]]\nid = "bench"\nurl = "http://127.0.0.1:%s/hook"\nsecret = "%s"\n' \
  "$W" "$POLL" "$PORT" "$SECRET" > "$W/g.toml"
TOKEN=
if [ "$MODE" = inproc ]; then
  printf '[api]\nenabled = true\nlisten = "127.0.0.1:%s"\n' "$API_PORT" >> "$W/g.toml"
  for i in $(seq 0 $((N - 1))); do
    printf '[[patients]]\nid = "p-%s"\ncare_plans = ["hypertension"]\n[[devices]]\nid = "cuff-%s"\npatient = "p-%s"\n' "$i" "$i" "$i"
  done >> "$W/g.toml"
  TOKEN=$("$BIN" --config "$W/g.toml" tokens create bench --role admin)
fi
python3 - "$N" "$RATE" "$PORT" "$SECRET" "$W" "$BIN" "$MODE" "$API_PORT" "$TOKEN" <<'PY'
import json, sqlite3, subprocess, sys, threading, time, hashlib, http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from standardwebhooks.webhooks import Webhook

n, rate, port, secret, w, binary = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
mode, api_port, token = sys.argv[7], int(sys.argv[8]), sys.argv[9]
arrived, fired, bad = {}, {}, []

def stamp(rfc3339):
    """Seconds since the epoch of an RFC 3339 UTC time (any fraction digits)."""
    import calendar
    main, _, frac = rfc3339.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))
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
        if mode == "inproc":
            ev = json.loads(body)
            if ev.get("type") == "alert.fired" and ev["data"]["patient_id"] not in arrived:
                arrived[ev["data"]["patient_id"]] = t
                fired[ev["data"]["patient_id"]] = stamp(ev["data"]["fired_at"])
        else:
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
api = http.client.HTTPConnection("127.0.0.1", api_port) if mode == "inproc" else None
for i in range(n):
    target = start + i / rate
    time.sleep(max(0, target - time.time()))
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
    if mode == "inproc":
        body = json.dumps({"device_id": f"cuff-{i}", "profile": "acme-bp-cuff",
                           "payload": {"measured_at": now, "sys": 185, "dia": 92, "pulse": 71, "unit": "mmHg"}})
        committed[f"p-{i}"] = time.time()  # before sending: latency is not under-counted
        api.request("POST", "/api/v1/readings", body,
                    {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        r = api.getresponse(); r.read()
        if r.status != 200:
            print("ingest refused:", r.status); sys.exit(1)
        continue
    eid = "evt_" + hashlib.sha256(f"bench-{i}".encode()).hexdigest()[:32]
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
print(f"{mode}: events {n} at {rate:g}/s, delivered {len(lat)}, signature failures {len(bad)}")
print(f"latency ms: p50 {q(0.50):.1f}  p90 {q(0.90):.1f}  p99 {q(0.99):.1f}  max {lat[-1]:.1f}")
if mode == "inproc":
    print("  (reading sent -> webhook received; ingest commit, evaluation, fan-out and delivery)")
    lat = sorted((arrived[k] - fired[k]) * 1000 for k in committed if k in arrived)
    print(f"alert -> webhook ms: p50 {q(0.50):.1f}  p90 {q(0.90):.1f}  p99 {q(0.99):.1f}  max {lat[-1]:.1f}")
    print("  (from the alert's fired_at, read inside the evaluator's transaction before its commit)")
PY
