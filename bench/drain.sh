#!/usr/bin/env bash
# Drain-rate benchmark (docs/benchmarks.md): with the gateway stopped, queue
# N QoS 1 SenML readings from D devices for its persistent session on a local
# Mosquitto (unlimited queue), start it and time until all N are committed.
# The same backlog is drained by mosquitto_sub on its own persistent session:
# the broker's raw delivery rate, the physical limit here.
#   bench/drain.sh [N] [DEVICES] [INFLIGHT]
# Prints the gateway's read and write system calls through the drain
# (/proc), counts that do not drift with the machine. EXTRA: lines for
# [sources.mqtt] (e.g. EXTRA='protocol = "5"\n').
# ENCRYPT=1: the store encrypted at rest (`[store] encryption = true`, a
# random RPM_STORE_KEY); the store is then counted with `rpm-gateway store
# query` (COUNT_WITH_GATEWAY=1 does that for a plain store too, for a
# like-for-like comparison; the default is the sqlite3 shell).
set -euo pipefail
N=${1:-100000}; D=${2:-1000}; INFLIGHT=${3:-20}
cd "$(dirname "$0")/.."
if [ -n "${ENCRYPT:-}" ]; then
  STORE_EXTRA="${STORE_EXTRA:-}encryption = true\n"
  RPM_STORE_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n'); export RPM_STORE_KEY
  COUNT_WITH_GATEWAY=1
fi
# RPM_BIN: an already built gateway binary (skips the release build).
if [ -z "${RPM_BIN:-}" ]; then cargo build --release -q -p rpm-gateway; fi
BIN=${RPM_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/rpm-gateway}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > "$W/m.conf" <<C
listener $PORT 127.0.0.1
allow_anonymous true
user $(id -un)
max_queued_messages 0
max_inflight_messages $INFLIGHT
C
/usr/sbin/mosquitto -c "$W/m.conf" >/dev/null 2>&1 & sleep 0.5
{ printf '[store]\npath = "%s/rpm.db"\n%b[log]\nlevel = "%s"\n[sources.mqtt]\nport = %s\nclient_id = "bench-gw"\n' "$W" "${STORE_EXTRA:-}" "${LOGLEVEL:-warn}" "$PORT"
  printf "%b" "${EXTRA:-}"
  for d in $(seq 1 "$D"); do printf '[[devices]]\nid = "dev-%d"\npatient = "p-%d"\n' "$d" "$d"; done; } > "$W/g.toml"
# Create both persistent sessions (with their subscriptions), then stop both.
sed 's/^level = .*/level = "info"/' "$W/g.toml" > "$W/g0.toml"
"$BIN" run -c "$W/g0.toml" 2> "$W/g0.log" & GW=$!
until grep -q "mqtt subscribed" "$W/g0.log"; do sleep 0.1; done
kill -TERM $GW; wait $GW || true
timeout 2 mosquitto_sub -p "$PORT" -c -i bench-raw -q 1 -t 'rpm/senml/#' >/dev/null || true
# Queue the backlog.
PER=$((N / D)); T0=1767225600
start=$(date +%s.%N)
queue_device() {
  for i in $(seq 1 "$PER"); do printf '[{"bt":%d,"n":"body_weight","u":"kg","v":%d.%d}]\n' $((T0 + i * 60)) $((60 + $1 % 40)) $((i % 10)); done \
    | mosquitto_pub -p "$PORT" -q 1 -t "rpm/senml/dev-$1" -l
}
# Eight publishers at a time (queueing is set-up, not measured).
PIDS=()
for d in $(seq 1 "$D"); do
  queue_device "$d" & PIDS+=($!)
  if (( ${#PIDS[@]} == 8 )); then wait "${PIDS[@]}"; PIDS=(); fi
done
if (( ${#PIDS[@]} )); then wait "${PIDS[@]}"; fi
echo "queued $((PER * D)) messages in $(echo "$(date +%s.%N) - $start" | bc) s"
TOTAL=$((PER * D))
# Raw broker delivery rate.
s=$(date +%s.%N)
mosquitto_sub -p "$PORT" -c -i bench-raw -q 1 -t 'rpm/senml/#' -C "$TOTAL" >/dev/null
raw=$(echo "$(date +%s.%N) - $s" | bc)
# Gateway drain with durable commits: first until every message is
# committed (in the inbox or already normalized: one snapshot, so an entry
# is counted once as it moves), then until every reading is normalized.
if [ -n "${COUNT_WITH_GATEWAY:-}" ]; then
  count() { "$BIN" -c "$W/g.toml" store query "$1" 2>/dev/null || echo 0; }
else
  count() { sqlite3 "$W/rpm.db" "$1" 2>/dev/null || echo 0; }
fi
s=$(date +%s.%N)
${PERF:-} "$BIN" run -c "$W/g.toml" & GW=$!
until [ "$(count 'SELECT (SELECT COUNT(*) FROM inbox) + (SELECT COUNT(*) FROM readings)')" -ge "$TOTAL" ]; do sleep 0.05; done
gw=$(echo "$(date +%s.%N) - $s" | bc)
until [ "$(count 'SELECT COUNT(*) FROM readings')" -ge "$TOTAL" ]; do sleep 0.05; done
norm=$(echo "$(date +%s.%N) - $s" | bc)
rss=$(awk '/VmHWM/{print $2}' /proc/$GW/status)
sysr=$(awk '/^syscr/{print $2}' /proc/$GW/io); sysw=$(awk '/^syscw/{print $2}' /proc/$GW/io)
kill -TERM $GW; wait $GW || true
[ -n "${KEEP_DB:-}" ] && cp "$W/rpm.db" "$KEEP_DB" && cp "$W/rpm.db-wal" "$KEEP_DB-wal" 2>/dev/null; true
printf 'machine: %s cores, %s\n' "$(nproc)" "$(uname -m)"
printf 'mosquitto max_inflight_messages=%s, %s messages from %s devices, store %s\n' "$INFLIGHT" "$TOTAL" "$D" "$([ -n "${ENCRYPT:-}" ] && echo encrypted || echo plain)"
printf 'raw mosquitto_sub: %.2f s = %.0f msg/s\n' "$raw" "$(echo "$TOTAL / $raw" | bc -l)"
printf 'gateway, all committed and acknowledged: %.2f s = %.0f msg/s (%.0f%% of raw)\n' "$gw" "$(echo "$TOTAL / $gw" | bc -l)" "$(echo "100 * $raw / $gw" | bc -l)"
printf 'gateway, all normalized into readings:    %.2f s = %.0f msg/s (%.0f%% of raw)\n' "$norm" "$(echo "$TOTAL / $norm" | bc -l)" "$(echo "100 * $raw / $norm" | bc -l)"
printf 'peak RSS %s kB\n' "$rss"
printf 'gateway system calls through the drain: %s reads, %s writes\n' "$sysr" "$sysw"
