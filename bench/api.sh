#!/usr/bin/env bash
# HTTP API benchmark (docs/benchmarks.md): with the gateway's API on a free
# port (no MQTT), curl pushes N readings over HTTP (`POST /api/v1/readings`,
# each answered only after its commit and its audit record) from C parallel
# connections, then reads N pages of 100 readings (`GET /api/v1/readings`)
# and N FHIR searches the same way. Reports requests/s of each phase.
#   bench/api.sh [N] [C]
# Needs: curl (7.66+, --parallel), python3. RPM_BIN overrides the binary.
set -euo pipefail
N=${1:-2000}; C=${2:-16}
cd "$(dirname "$0")/.."
if [ -z "${RPM_BIN:-}" ]; then cargo build --release -q -p rpm-gateway; fi
BIN=${RPM_BIN:-$PWD/target/release/rpm-gateway}
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
API=http://127.0.0.1:$PORT
printf '[store]\npath = "%s/rpm.db"\n[log]\nlevel = "warn"\n[api]\nenabled = true\nlisten = "127.0.0.1:%s"\n# capacity, not the limits: one token, one client address\ntoken_requests_per_second = 0\nmax_connections_per_client = 256\n' "$W" "$PORT" > "$W/g.toml"
"$BIN" run -c "$W/g.toml" & 
until curl -sf "$API/healthz" >/dev/null; do sleep 0.1; done
TOKEN=$("$BIN" -c "$W/g.toml" tokens create bench --role admin)
curl -sf -X PUT "$API/api/v1/devices/bench-1/patient" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d '{"patient_id": "p-1"}' >/dev/null

# One curl config per phase: N requests, run C at a time.
python3 - "$N" "$API" "$TOKEN" "$W" <<'PY'
import json, sys, time
n, api, token, w = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
now = int(time.time()) - n
def write(name, reqs):
    with open(f"{w}/{name}.cfg", "w") as f:
        # `next` ends each request's options (they accumulate otherwise).
        f.write("next\n".join(reqs))
auth = f'header = "Authorization: Bearer {token}"\n'
ingest = []
for i in range(n):
    body = json.dumps([{"bt": now + i, "n": "spo2", "u": "%", "v": 90 + i % 10}])
    body = body.replace('"', '\\"')
    ingest.append(f'url = "{api}/api/v1/readings?device_id=bench-1"\nrequest = "POST"\n{auth}'
                  f'header = "Content-Type: application/senml+json"\ndata = "{body}"\noutput = "/dev/null"\n'
                  f'write-out = "%{{http_code}}\\n"\n')
write("ingest", ingest)
write("read", [f'url = "{api}/api/v1/readings?patient=p-1&limit=100"\n{auth}output = "/dev/null"\nwrite-out = "%{{http_code}}\\n"\n'] * n)
write("fhir", [f'url = "{api}/fhir/Observation?patient=p-1&_count=100"\n{auth}output = "/dev/null"\nwrite-out = "%{{http_code}}\\n"\n'] * n)
PY
for phase in ingest read fhir; do
  start=$(date +%s.%N)
  codes=$(curl -s --no-progress-meter --parallel --parallel-max "$C" -K "$W/$phase.cfg" | sort | uniq -c | tr '\n' ' ')
  end=$(date +%s.%N)
  python3 -c "import sys; n,s,e=int(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]); print(f'{sys.argv[4]:7s} {n} requests, {sys.argv[5]} parallel: {n/(e-s):7.0f} req/s  (statuses: {sys.argv[6]})')" \
    "$N" "$start" "$end" "$phase" "$C" "$codes"
done
sqlite3 "$W/rpm.db" 'SELECT COUNT(*) || " readings stored, " FROM readings' 2>/dev/null || true
