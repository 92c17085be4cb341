#!/usr/bin/env bash
# Forwarding benchmark (docs/influxdb.md): a store holding a
# backlog of N readings (the same synthetic readings as
# tests/src/bin/store-fill.rs, inserted directly with sqlite3), drained by the
# gateway's forwarder into a local VictoriaMetrics (InfluxDB line protocol on
# /api/v2/write), once per batch size; prints points/s from the gateway's
# start, and after its first batch was accepted (the gateway's start left
# out, as the server's is from its own ingest), and checks the count that
# arrived.
#   bench/forward.sh [N] [BATCH ...]        defaults: 1000000, 1000 5000 10000
# Before and after the gateway's runs, the server's own ingest rate: the same
# points written straight to a fresh VictoriaMetrics (bench/lp_write.py).
# RPM_BIN: an existing gateway binary. NO_GZIP=1: skip the gzip run.
# EXTRA: more config lines (e.g. EXTRA='[rules]\nenabled = false\n').
# Needs victoria-metrics and sqlite3 (Debian packages), python3.
set -euo pipefail
for tool in victoria-metrics sqlite3; do
  command -v "$tool" >/dev/null || { echo "bench/forward.sh needs $tool (apt-get install -y victoria-metrics sqlite3)" >&2; exit 2; }
done
N=${1:-1000000}; shift || true
BATCHES=${*:-"1000 5000 10000"}
cd "$(dirname "$0")/.."
# RPM_BIN: an existing gateway binary (else a lean release build).
if [ -z "${RPM_BIN:-}" ]; then cargo build --release -q -p rpm-gateway --no-default-features; fi
BIN=${RPM_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/rpm-gateway}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
HZ=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# The backlog: create and migrate the store with the gateway, then insert.
printf '[store]\npath = "%s/base.db"\n' "$W" > "$W/fill.toml"
"$BIN" quarantine list --config "$W/fill.toml" >/dev/null
NOW=$(($(date +%s) * 1000)); BASE=$((NOW - (N / 1000 + 1) * 60000))
s=$(date +%s.%N)
sqlite3 "$W/base.db" <<SQL
WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < $N - 1),
m(k, metric, unit, loinc, base) AS (VALUES (0, 'systolic', 'mm[Hg]', '8480-6', 110.0), (1, 'diastolic', 'mm[Hg]', '8462-4', 70.0),
  (2, 'body_weight', 'kg', '29463-7', 80.0), (3, 'spo2', '%', '59408-5', 92.0), (4, 'blood_glucose', 'mg/dL', '41653-7', 90.0))
INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                      measured_at, received_at, committed_at, source, sequence, annotations)
SELECT 'fill-' || n, 'fill-' || n, 'p-' || (n % 200), 'd-' || (n % 1000), m.metric, m.base + (n % 97) * 0.1, m.unit, m.loinc,
       $BASE + (n / 1000) * 60000 + n % 1000, $NOW, $NOW, 'mqtt', n,
       CASE WHEN n % 10 = 0 THEN '{"note":"synthetic"}' ELSE '{}' END
FROM i JOIN m ON m.k = n % 5 ORDER BY n;
-- Keyed, as readings the gateway's writer stores are (see store/keys.rs).
INSERT OR IGNORE INTO reading_keys (key, seq)
SELECT key, seq FROM (SELECT reading_key AS key, seq FROM readings UNION ALL SELECT group_key, seq FROM readings) ORDER BY key, seq;
INSERT OR REPLACE INTO cursors (name, position, updated_at) VALUES ('store.keys', (SELECT MAX(seq) FROM readings), $NOW);
SQL
printf 'filled %s readings in %.1f s\n' "$N" "$(echo "$(date +%s.%N) - $s" | bc)"
printf 'machine: %s cores, %s; load average at start: %s\n' "$(nproc)" "$(uname -m)" "$(cut -d' ' -f1-3 /proc/loadavg)"

run() { # batch gzip
  local B=$1 GZ=$2 P D
  P=$(free_port); D="$W/vm-$B-$GZ"
  victoria-metrics -httpListenAddr=127.0.0.1:$P -storageDataPath="$D" -retentionPeriod=100y \
    -search.latencyOffset=0 -search.disableCache -loggerLevel=ERROR >/dev/null 2>&1 & local VM=$!
  until curl -sf "http://127.0.0.1:$P/health" >/dev/null; do sleep 0.1; done
  cp "$W/base.db" "$W/run.db"
  printf '[store]\npath = "%s/run.db"\n[log]\nlevel = "warn"\n[forward.influxdb]\nurl = "http://127.0.0.1:%s"\norg = "bench"\nbucket = "bench"\nbatch_size = %s\ngzip = %s\nflush_interval = "100ms"\n%b' \
    "$W" "$P" "$B" "$GZ" "${EXTRA:-}" > "$W/g.toml"
  local s; s=$(date +%s.%N)
  "$BIN" run -c "$W/g.toml" 2>>"$W/gw.log" & local GW=$!
  # First batch committed (seconds, position) and all N, since the start.
  local f0 p0 t; read -r f0 p0 t < <(python3 bench/cursor_wait.py "$W/run.db" forward.influxdb "$N" "$s")
  local rss; rss=$(awk '/VmHWM/{print $2}' /proc/$GW/status)
  # User and system CPU (fields 14 and 15, in clock ticks).
  local cpu; cpu=$(awk -v hz="$HZ" '{printf "%.2f", ($14 + $15) / hz}' /proc/$GW/stat)
  local vmcpu; vmcpu=$(awk -v hz="$HZ" '{printf "%.2f", ($14 + $15) / hz}' /proc/$VM/stat)
  kill -TERM $GW; wait $GW || true
  curl -s "http://127.0.0.1:$P/internal/force_flush" >/dev/null; sleep 2
  local got; got=$(curl -s "http://127.0.0.1:$P/api/v1/export" -d 'match[]={__name__=~"rpm_.*_value"}' \
    | python3 -c 'import sys,json; print(sum(len(json.loads(l)["values"]) for l in sys.stdin if l.strip()))')
  kill -TERM $VM; wait $VM || true
  printf 'batch_size=%-6s gzip=%-5s %8.2f s  %8.0f points/s (after the first batch: %8.0f)  gateway CPU %s s (server %s s), peak RSS %s kB  arrived %s/%s\n' \
    "$B" "$GZ" "$t" "$(echo "$N / $t" | bc -l)" "$(echo "($N - $p0) / ($t - $f0)" | bc -l)" "$cpu" "$vmcpu" "$rss" "$got" "$N"
}
# The server's own ingest: the same points as line protocol (built by
# sqlite3), written to a fresh VictoriaMetrics in requests of 5000 lines.
sqlite3 "$W/base.db" > "$W/lines.txt" <<'SQL'
SELECT CASE metric WHEN 'systolic' THEN 'rpm_blood_pressure' WHEN 'diastolic' THEN 'rpm_blood_pressure'
         WHEN 'spo2' THEN 'rpm_oximetry' WHEN 'body_weight' THEN 'rpm_body_composition' ELSE 'rpm_glucose' END
  || ',device_id=' || device_id || ',metric=' || metric || ',patient_id=' || patient_id || ',source=' || source
  || ',unit=' || unit || ' value=' || value
  || CASE WHEN annotations = '{}' THEN '' ELSE ',note="synthetic"' END
  || ' ' || measured_at || '000000' FROM readings ORDER BY seq;
SQL
server() {
  local P D; P=$(free_port); D="$W/vm-server"
  victoria-metrics -httpListenAddr=127.0.0.1:$P -storageDataPath="$D" -retentionPeriod=100y -loggerLevel=ERROR >/dev/null 2>&1 & local VM=$!
  until curl -sf "http://127.0.0.1:$P/health" >/dev/null; do sleep 0.1; done
  local cpu0; cpu0=$(awk '{print $14 + $15}' /proc/$VM/stat)
  local t; t=$(python3 bench/lp_write.py "$W/lines.txt" "$P" 5000)
  local cpu; cpu=$(awk -v c0="$cpu0" -v hz="$HZ" '{printf "%.2f", ($14 + $15 - c0) / hz}' /proc/$VM/stat)
  kill -TERM $VM; wait $VM || true; rm -rf "$D"
  printf 'server alone (VictoriaMetrics, 5000 lines a request) %8.2f s  %8.0f points/s  server CPU %s s\n' "$t" "$(echo "$N / $t" | bc -l)" "$cpu"
}
server
for B in $BATCHES; do run "$B" false; done
[ -n "${NO_GZIP:-}" ] || run 5000 true
server
