#!/usr/bin/env bash
# Live-latency benchmark (README "Benchmarks"): D devices publish SenML
# readings over one QoS 1 connection at a fixed RATE (readings/s, well below
# saturation) for SECONDS; each reading carries its publish time as its
# measured time (`bt`, millisecond precision). Latency = the store's
# `committed_at` − `measured_at`: publish → durably committed, on one clock.
# Reports p50/p90/p99/max and the gateway's peak RSS (VmHWM).
#   bench/latency.sh [RATE] [SECONDS] [DEVICES]
# Needs: mosquitto, mosquitto-clients, python3 (all in scripts/test's list).
set -euo pipefail
RATE=${1:-200}; SECS=${2:-60}; D=${3:-20}
cd "$(dirname "$0")/.."
cargo build --release -q -p rpm-gateway
BIN=$PWD/target/release/rpm-gateway
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser %s\nmax_queued_messages 0\n' "$PORT" "$(id -un)" > "$W/m.conf"
/usr/sbin/mosquitto -c "$W/m.conf" >/dev/null 2>&1 & sleep 0.5
{ printf '[store]\npath = "%s/rpm.db"\n[log]\nlevel = "warn"\n[sources.mqtt]\nport = %s\nclient_id = "bench-gw"\n' "$W" "$PORT"
  for d in $(seq 1 "$D"); do printf '[[devices]]\nid = "dev-%d"\npatient = "p-%d"\n' "$d" "$d"; done; } > "$W/g.toml"
"$BIN" run -c "$W/g.toml" & GW=$!
sleep 1.5
# D publishers (one mosquitto_pub connection per device, QoS 1), paced
# round-robin from one clock.
python3 - "$RATE" "$SECS" "$D" "$PORT" <<'PY'
import subprocess, sys, time
rate, secs, devices, port = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pubs = [subprocess.Popen(["mosquitto_pub", "-p", port, "-q", "1", "-t", f"rpm/senml/dev-{d}", "-l"],
                         stdin=subprocess.PIPE, text=True) for d in range(1, devices + 1)]
time.sleep(0.5)
n = int(rate * secs); start = time.time()
for i in range(n):
    due = start + i / rate
    now = time.time()
    if due > now:
        time.sleep(due - now)
    p = pubs[i % devices]
    p.stdin.write('[{"bt":%.3f,"n":"spo2","u":"%%","v":%d}]\n' % (time.time(), 90 + i % 10))
    p.stdin.flush()
for p in pubs:
    p.stdin.close(); p.wait()
PY
TOTAL=$(python3 -c "print(int($RATE * $SECS))")
for _ in $(seq 1 200); do
  [ "$(sqlite3 "$W/rpm.db" 'SELECT COUNT(*) FROM readings')" -ge "$TOTAL" ] && break; sleep 0.1
done
rss=$(awk '/VmHWM/{print $2}' /proc/$GW/status)
kill -TERM $GW; wait $GW || true
printf 'machine: %s cores, %s; load average %s\n' "$(nproc)" "$(uname -m)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s readings/s for %s s from %s devices (QoS 1, one connection)\n' "$RATE" "$SECS" "$D"
python3 - "$W/rpm.db" "$TOTAL" <<'PY'
import sqlite3, sys
db, total = sys.argv[1], int(sys.argv[2])
lat = sorted(r[0] for r in sqlite3.connect(db).execute("SELECT committed_at - measured_at FROM readings"))
if not lat:
    sys.exit("no readings committed")
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"committed {len(lat)}/{total}; publish -> commit latency ms: p50 {q(0.5)}, p90 {q(0.9)}, p99 {q(0.99)}, max {lat[-1]}")
PY
echo "gateway peak RSS: ${rss} kB"
