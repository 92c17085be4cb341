#!/usr/bin/env bash
# Load benchmark with the simulator (docs/benchmarks.md): `rpm-sim load`
# publishes from DEVICES virtual devices (kits cycling scale, cuff,
# glucometer, oximeter, thermometer; SenML, QoS 1, over CONNECTIONS shared
# connections) at RATE readings/s for SECONDS into a gateway on a local
# Mosquitto. rpm-sim reports the rate it achieved; the store gives
# publish→commit latency per reading (`committed_at - measured_at`: each
# payload carries its publish time with millisecond precision, one clock).
#   bench/sim-load.sh [RATE] [SECONDS] [DEVICES] [CONNECTIONS]
# Needs: mosquitto, python3 (both in scripts/test's list).
set -euo pipefail
RATE=${1:-500}; SECS=${2:-60}; D=${3:-2000}; C=${4:-16}
cd "$(dirname "$0")/.."
cargo build --release -q -p rpm-gateway -p rpm-simulator
GW_BIN=$PWD/target/release/rpm-gateway
SIM=$PWD/target/release/rpm-sim
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser %s\nmax_queued_messages 0\nmax_inflight_messages 0\n' "$PORT" "$(id -un)" > "$W/m.conf"
/usr/sbin/mosquitto -c "$W/m.conf" >/dev/null 2>&1 & sleep 0.5
{ printf '[store]\npath = "%s/rpm.db"\n[log]\nlevel = "warn"\n[sources.mqtt]\nport = %s\nclient_id = "bench-gw"\n' "$W" "$PORT"
  "$SIM" load --devices "$D" --print-config; } > "$W/g.toml"
RPM_LOG=info "$GW_BIN" run -c "$W/g.toml" 2> "$W/gw.log" & GW=$!
# Publish only once the gateway's subscription exists: the broker drops
# messages nobody has subscribed to yet.
for _ in $(seq 1 300); do grep -q "mqtt subscribed" "$W/gw.log" && break; sleep 0.1; done
"$SIM" load --mqtt "127.0.0.1:$PORT" --devices "$D" --rate "$RATE" --duration "${SECS}s" --connections "$C" --json > "$W/load.json"
TOTAL=$(python3 -c "import json;print(json.load(open('$W/load.json'))['readings'])")
for _ in $(seq 1 600); do
  [ "$(sqlite3 "$W/rpm.db" 'SELECT COUNT(*) FROM readings')" -ge "$TOTAL" ] && break; sleep 0.1
done
rss=$(awk '/VmHWM/{print $2}' /proc/$GW/status)
kill -TERM $GW; wait $GW || true
printf 'machine: %s cores, %s; load average %s\n' "$(nproc)" "$(uname -m)" "$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$W/rpm.db" "$W/load.json" <<'PY'
import json, sqlite3, sys
db, load = sys.argv[1], json.load(open(sys.argv[2]))
print(f"rpm-sim load: {load['devices']} devices over {load['connections']} connections, target {load['target_rate']:.0f} readings/s")
print(f"  sent {load['messages']} messages / {load['readings']} readings in {load['publish_seconds']:.1f} s: "
      f"{load['achieved_rate']:.1f} readings/s achieved; {load['acked']} PUBACKs")
lat = sorted(r[0] for r in sqlite3.connect(db).execute("SELECT committed_at - measured_at FROM readings"))
if not lat:
    sys.exit("no readings committed")
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"  committed {len(lat)}/{load['readings']}; publish -> commit latency ms: p50 {q(0.5)}, p90 {q(0.9)}, p99 {q(0.99)}, max {lat[-1]}")
PY
echo "gateway peak RSS: ${rss} kB"
