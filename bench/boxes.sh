#!/usr/bin/env bash
# One program hub, many home boxes (docs/benchmarks.md, docs/home-boxes.md).
#   bench/boxes.sh [PATIENTS] [RECONNECT] [PER_DAY] [CRISIS_EVERY]
# A hub with PATIENTS patients (hypertension plan, rules, care loop and
# webhooks on), each with a home box whose token names its BP cuff and scale.
#   1. A day: every box sends the day of readings it collected (PER_DAY
#      measurements per device, a BP measurement is 3 readings) at once, in
#      accelerated time (`rpm-sim boxes --offline 24h`); every CRISIS_EVERY-th
#      box's last BP is a crisis (an alert to deliver).
#   2. A reconnect: RECONNECT boxes come back at once after a day offline
#      and send their day.
# Measured per phase: readings/s at the hub (as the boxes see it), time until
# the rules have evaluated every reading and every alert's webhook is
# delivered (a local receiver), worklist p99 (admin, 100 calls, after the
# phase), hub peak RSS, store size. RPM_BIN / SIM_BIN use existing binaries;
# CONCURRENCY (default 32) bounds the requests in flight; RECONNECT_OFFLINE
# (default 24h) is how long the reconnecting boxes were away.
set -euo pipefail
PATIENTS=${1:-10000}; RECONNECT=${2:-1000}; PER_DAY=${3:-4}; CRISIS=${4:-20}
CONCURRENCY=${CONCURRENCY:-32}; RECONNECT_OFFLINE=${RECONNECT_OFFLINE:-24h}
cd "$(dirname "$0")/.."
if [ -z "${RPM_BIN:-}" ] || [ -z "${SIM_BIN:-}" ]; then
  cargo build --release -q -p rpm-gateway -p rpm-simulator
fi
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${RPM_BIN:-$TARGET/release/rpm-gateway}
SIM=${SIM_BIN:-$TARGET/release/rpm-sim}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
API=$(free_port); HOOK=$(free_port)
cat > "$W/g.toml" <<EOF
[store]
path = "$W/hub.db"
[log]
level = "warn"
[api]
enabled = true
listen = "127.0.0.1:$API"
max_body_bytes = 1048576
max_connections = 1024
max_connections_per_client = 1024
token_requests_per_second = 1000
[delivery]
poll_interval = "200ms"
allow_private_network = true
allow_http = true
[[webhooks]]
id = "care"
url = "http://127.0.0.1:$HOOK/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EOF
"$BIN" -c "$W/g.toml" tokens create ops --role admin > "$W/admin.token"
# Patients, devices and the boxes' tokens straight into the store, in one
# transaction (ten thousand CLI calls would take longer than the benchmark).
python3 - "$W" "$PATIENTS" <<'PY'
import hashlib, json, os, sqlite3, sys, time
w, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(f"{w}/hub.db")
now = int(time.time() * 1000)
with open(f"{w}/boxes.txt", "w") as f, c:
    for i in range(n):
        p, cuff, scale = f"p-{i:05}", f"cuff-{i:05}", f"scale-{i:05}"
        c.execute("INSERT INTO patients (patient_id, care_plans, care_team, enrolled_at, updated_at, origin) VALUES (?,?,?,?,?,'cli')",
                  (p, '["hypertension"]', f"team-{i % 20}", now, now))
        for d in (cuff, scale):
            c.execute("INSERT INTO devices (device_id, patient_id, origin, registered_at, assigned_at) VALUES (?,?,'cli',?,?)", (d, p, now, now))
        secret = "rpmgw_" + os.urandom(32).hex()
        c.execute("INSERT INTO api_tokens (token_id, name, token_hash, role, care_teams, created_at, devices, profiles) VALUES (?,?,?,'ingest','[]',?,?,'[]')",
                  (f"tok_box{i:05}", f"box-{i:05}", hashlib.sha256(secret.encode()).hexdigest(), now, json.dumps([cuff, scale])))
        f.write(f"box-{i:05} {secret} {cuff},{scale}\n")
PY
python3 - "$HOOK" > "$W/hook.log" 2>&1 <<'PY' &
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
"$BIN" run -c "$W/g.toml" > "$W/hub.log" 2>&1 &
HUB=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$API/healthz" >/dev/null && break; sleep 0.2; done
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "hub: $PATIENTS patients, boxes with a cuff and a scale, $PER_DAY measurements/device/day, crisis every $CRISIS boxes, $CONCURRENCY requests in flight"

# Peak RSS of the hub, sampled every 100 ms.
( peak=0; while kill -0 $HUB 2>/dev/null; do r=$(awk '/VmRSS/{print $2}' /proc/$HUB/status 2>/dev/null || echo 0); [ "${r:-0}" -gt $peak ] && peak=$r && echo $peak > "$W/rss"; sleep 0.1; done ) &

settled() {  # the rules have every reading, the dispatcher every delivery
  python3 - "$W/hub.db" <<'PY'
import sqlite3, sys, time
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
while True:
    r = c.execute("""SELECT (SELECT COALESCE(MAX(seq),0) FROM readings) = (SELECT COALESCE(MAX(position),-1) FROM cursors WHERE name='rules'),
                            (SELECT COUNT(*) FROM outbox WHERE seq > COALESCE((SELECT position FROM cursors WHERE name='delivery.fanout'),0)),
                            (SELECT COUNT(*) FROM deliveries WHERE status != 'delivered'),
                            (SELECT COUNT(*) FROM alerts), (SELECT COUNT(*) FROM readings)""").fetchone()
    if r[0] == 1 and r[2] == 0:
        print(f"alerts {r[3]}, readings {r[4]}"); break
    time.sleep(0.2)
PY
}
worklist_p99() {
  python3 - "$API" "$(cat "$W/admin.token")" <<'PY'
import sys, time, urllib.request
port, tok = sys.argv[1], sys.argv[2]
lat = []
for i in range(100):
    q = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/worklist?care_team=team-{i % 20}&limit=50", headers={"Authorization": f"Bearer {tok}"})
    t = time.time(); urllib.request.urlopen(q).read(); lat.append((time.time() - t) * 1000)
lat.sort()
print(f"worklist p50 {lat[49]:.1f} ms, p99 {lat[98]:.1f} ms")
PY
}
phase() {  # name, boxes, offline
  local t0 t1
  t0=$(date +%s.%N)
  "$SIM" boxes --hub "http://127.0.0.1:$API" --tokens "$W/boxes.txt" --boxes "$2" --offline "$3" \
    --per-day "$PER_DAY" --concurrency "$CONCURRENCY" --crisis-every "$CRISIS"
  t1=$(date +%s.%N)
  echo "$1: boxes done in $(echo "$t1 - $t0" | bc) s"
  settled
  echo "$1: readings evaluated and every alert delivered $(echo "$(date +%s.%N) - $t0" | bc) s after the start"
  worklist_p99
  echo "$1: hub peak RSS $(( $(cat "$W/rss") / 1024 )) MB, store $(du -sm "$W"/hub.db* | awk '{s+=$1} END {print s}') MB"
}
phase "a day, all boxes" "$PATIENTS" 24h
phase "reconnect after $RECONNECT_OFFLINE offline" "$RECONNECT" "$RECONNECT_OFFLINE"
kill $HUB; wait $HUB 2>/dev/null || true
