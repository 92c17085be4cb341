#!/usr/bin/env bash
# End-to-end drain benchmark (docs/benchmarks.md, "End to end after an
# outage"): with the gateway stopped, a backlog of N SenML systolic readings
# for PATIENTS patients (one device each, hypertension plan; every tenth
# patient's last reading is 185 mm[Hg], a critical alert) is queued for its
# persistent session on a local Mosquitto (unlimited queue). Then the gateway
# is started and timed until every reading is acknowledged, indexed,
# evaluated (the rules cursor), forwarded to InfluxDB (a local
# VictoriaMetrics, InfluxDB line protocol on /api/v2/write) and every alert
# webhook received by a local receiver that verifies its signature with the
# `standardwebhooks` package. In the same run, on their own persistent
# sessions of the same broker:
#   - raw: `mosquitto_sub` takes the backlog (the broker's delivery rate);
#   - peer: what a team would write instead (bench/e2e_peer.py: paho-mqtt 2.x
#     with manual acks, SQLite, ack after commit);
#   - server: a fresh VictoriaMetrics takes the gateway's own line protocol
#     (rebuilt from its store) in requests of the forwarder's batch size, one
#     at a time: the server's own ingest rate.
#   bench/e2e.sh [N] [PATIENTS]             defaults: 100000 1000
# RPM_BIN: an existing gateway binary (else a release build). EXTRA: more
# config lines. KEEP=DIR keeps the work directory. TIMELINE=FILE writes the
# stages' progress as sampled every 20 ms (seconds since the start, inbox
# rows, readings, newest reading, rules cursor, InfluxDB cursor; one line
# a sample).
# Needs mosquitto, mosquitto-clients, victoria-metrics, python3 (installs
# paho-mqtt 2.x into target/pydeps/paho-mqtt for the peer; standardwebhooks
# as scripts/test does).
set -euo pipefail
for tool in mosquitto_sub victoria-metrics python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench/e2e.sh needs $tool (apt-get install -y mosquitto mosquitto-clients victoria-metrics python3 curl)" >&2; exit 2; }
done
N=${1:-100000}; M=${2:-1000}
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -z "${RPM_BIN:-}" ]; then cargo build --release -q -p rpm-gateway; fi
BIN=${RPM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/rpm-gateway}
PAHO=$ROOT/target/pydeps/paho-mqtt
if ! PYTHONPATH=$PAHO python3 -c 'import paho.mqtt' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --target "$PAHO" 'paho-mqtt>=2,<3' 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages --target "$PAHO" 'paho-mqtt>=2,<3'
fi
python3 -c 'import standardwebhooks' 2>/dev/null || python3 -m pip install --quiet standardwebhooks \
  || python3 -m pip install --quiet --break-system-packages standardwebhooks
W=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; if [ -n "${KEEP:-}" ]; then cp -r "$W" "$KEEP"; fi; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PORT=$(free_port); VM=$(free_port); HOOK=$(free_port)
SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

cat > "$W/m.conf" <<C
listener $PORT 127.0.0.1
allow_anonymous true
user $(id -un)
max_queued_messages 0
max_inflight_messages 20
C
/usr/sbin/mosquitto -c "$W/m.conf" >/dev/null 2>&1 &
until mosquitto_sub -p "$PORT" -t probe -W 1 -E 2>/dev/null; do sleep 0.1; done
victoria-metrics -httpListenAddr=127.0.0.1:$VM -storageDataPath="$W/vm" -retentionPeriod=100y \
  -search.latencyOffset=0 -search.disableCache -loggerLevel=ERROR >/dev/null 2>&1 &
until curl -sf "http://127.0.0.1:$VM/health" >/dev/null; do sleep 0.1; done

{ printf '[store]\npath = "%s/rpm.db"\n[log]\nlevel = "warn"\n[sources.mqtt]\nport = %s\nclient_id = "bench-gw"\n' "$W" "$PORT"
  printf '[forward.influxdb]\nurl = "http://127.0.0.1:%s"\norg = "bench"\nbucket = "bench"\nflush_interval = "100ms"\n' "$VM"
  printf '[delivery]\nallow_private_network = true\nallow_http = true\n'
  printf '[[webhooks]]\nid = "care"\nurl = "http://127.0.0.1:%s/hook"\nsecret = "%s"\n' "$HOOK" "$SECRET"
  printf "%b" "${EXTRA:-}"
  for p in $(seq 1 "$M"); do
    printf '[[patients]]\nid = "p-%d"\ncare_plans = ["hypertension"]\n[[devices]]\nid = "dev-%d"\npatient = "p-%d"\n' "$p" "$p" "$p"
  done; } > "$W/g.toml"

# The three persistent sessions with their subscriptions, then stopped.
sed 's/^level = .*/level = "info"/' "$W/g.toml" > "$W/g0.toml"
"$BIN" run -c "$W/g0.toml" 2> "$W/g0.log" & GW=$!
until grep -qs "mqtt subscribed" "$W/g0.log"; do sleep 0.1; done
kill -TERM $GW; wait $GW || true
rm -f "$W/rpm.db" "$W/rpm.db-wal" "$W/rpm.db-shm"
for id in bench-raw bench-peer; do timeout 1 mosquitto_sub -p "$PORT" -c -i $id -q 1 -t 'rpm/senml/#' >/dev/null || true; done

# The backlog: PER readings a device, a minute apart, ending an hour ago;
# every tenth patient's last one is in the crisis range.
PER=$((N / M)); TOTAL=$((PER * M)); T0=$(( $(date +%s) - 3600 - PER * 60 ))
s=$(date +%s.%N)
queue_device() {
  for i in $(seq 1 "$PER"); do
    v=$((110 + ($1 + i) % 30)); if [ "$i" -eq "$PER" ] && [ $(($1 % 10)) -eq 0 ]; then v=185; fi
    printf '[{"bt":%d,"n":"systolic","u":"mm[Hg]","v":%d}]\n' $((T0 + i * 60)) "$v"
  done | mosquitto_pub -p "$PORT" -q 1 -t "rpm/senml/dev-$1" -l
}
PIDS=()
for d in $(seq 1 "$M"); do
  queue_device "$d" & PIDS+=($!)
  if (( ${#PIDS[@]} == 8 )); then wait "${PIDS[@]}"; PIDS=(); fi
done
if (( ${#PIDS[@]} )); then wait "${PIDS[@]}"; fi
ALERTS=$((M / 10))
printf 'queued %s readings for %s patients (%s crisis alerts expected) in %.1f s\n' "$TOTAL" "$M" "$ALERTS" "$(echo "$(date +%s.%N) - $s" | bc)"

# Raw broker delivery, then the peer, each on its own session.
s=$(date +%s.%N)
mosquitto_sub -p "$PORT" -c -i bench-raw -q 1 -t 'rpm/senml/#' -C "$TOTAL" >/dev/null
RAW=$(echo "$(date +%s.%N) - $s" | bc)
s=$(date +%s.%N)
PYTHONPATH=$PAHO python3 bench/e2e_peer.py "$PORT" "$TOTAL" "$W/peer.db" >/dev/null
PEER=$(echo "$(date +%s.%N) - $s" | bc)
PEER_ROWS=$(sqlite3 "$W/peer.db" 'SELECT COUNT(*) FROM readings')

# The gateway, timed by stage; the webhook receiver runs in the same process.
python3 - "$BIN" "$W" "$TOTAL" "$ALERTS" "$HOOK" "$SECRET" "$VM" "$RAW" "$PEER" "$PEER_ROWS" <<'PY'
import os, sqlite3, subprocess, sys, threading, time, json, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from standardwebhooks.webhooks import Webhook

binary, w, total, alerts, hook, secret, vm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
raw, peer, peer_rows = float(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10])
wh = Webhook(secret)
fired, bad, last_at = set(), [], [0.0]
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            wh.verify(body, dict(self.headers.items()))
            ev = json.loads(body)
            with lock:
                if ev["type"] == "alert.fired" and ev["data"]["alert_id"] not in fired:
                    fired.add(ev["data"]["alert_id"]); last_at[0] = time.time()
        except Exception as e:
            bad.append(str(e))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass

srv = ThreadingHTTPServer(("127.0.0.1", hook), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()

start = time.time()
gw = subprocess.Popen([binary, "run", "-c", f"{w}/g.toml"])
db = None
while db is None:
    try:
        db = sqlite3.connect(f"file:{w}/rpm.db?mode=ro", uri=True, timeout=30)
        db.execute("SELECT 1 FROM cursors LIMIT 1")
    except sqlite3.Error:
        db = None; time.sleep(0.01)
def cursor(name):
    r = db.execute("SELECT position FROM cursors WHERE name = ?", (name,)).fetchone()
    return r[0] if r else 0
t = {}
timeline = []
while len(t) < 5:
    now = time.time() - start
    try:
        inbox, readings, newest = db.execute(
            "SELECT (SELECT COUNT(*) FROM inbox), (SELECT COUNT(*) FROM readings), (SELECT COALESCE(MAX(seq), 0) FROM readings)").fetchone()
        if "acked" not in t and inbox + readings >= total: t["acked"] = now
        if "indexed" not in t and readings >= total: t["indexed"] = now
        if "indexed" in t and "evaluated" not in t and cursor("rules") >= newest: t["evaluated"] = now
        if "indexed" in t and "forwarded" not in t and cursor("forward.influxdb") >= newest: t["forwarded"] = now
        if os.environ.get("TIMELINE"):
            timeline.append(f"{now:.3f} {inbox} {readings} {newest} {cursor('rules')} {cursor('forward.influxdb')}")
    except sqlite3.OperationalError:
        pass
    with lock:
        if "alerts" not in t and len(fired) >= alerts: t["alerts"] = last_at[0] - start
    if gw.poll() is not None: sys.exit("the gateway stopped")
    if now > 600: sys.exit(f"timed out: {t}")
    time.sleep(0.02)
if os.environ.get("TIMELINE"):
    with open(os.environ["TIMELINE"], "w") as f:
        f.write("\n".join(timeline) + "\n")
rss = next(int(l.split()[1]) for l in open(f"/proc/{gw.pid}/status") if l.startswith("VmHWM"))
# The gateway's CPU time through the drain (user, system): steadier than
# wall times on a shared machine when two builds are compared.
import os
stat = open(f"/proc/{gw.pid}/stat").read().rsplit(")", 1)[1].split()
cpu_user, cpu_sys = (int(x) / os.sysconf("SC_CLK_TCK") for x in stat[11:13])
# The same by thread name, for the threads still running (the store writer
# is the serial stage; threads that ended, e.g. those decoding ahead, are
# what the listed ones leave of the total).
threads = {}
for tid in os.listdir(f"/proc/{gw.pid}/task"):
    try:
        ts = open(f"/proc/{gw.pid}/task/{tid}/stat").read()
    except OSError:
        continue
    name = ts[ts.index("(") + 1:ts.rindex(")")]
    fields = ts.rsplit(")", 1)[1].split()
    threads[name] = threads.get(name, 0) + sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")
# Its system calls that read and write (sockets and files alike): counts,
# not times, so they compare across runs of a noisy machine.
io = dict(l.split(": ") for l in open(f"/proc/{gw.pid}/io").read().splitlines())
gw.terminate(); gw.wait()
time.sleep(0.5)
with lock: late = len(fired)

# What arrived at VictoriaMetrics.
urllib.request.urlopen(f"http://127.0.0.1:{vm}/internal/force_flush").read()
time.sleep(2)
req = urllib.request.Request(f"http://127.0.0.1:{vm}/api/v1/export", data=b'match[]={__name__=~"rpm_.*_value"}')
got = sum(len(json.loads(l)["values"]) for l in urllib.request.urlopen(req).read().decode().splitlines() if l.strip())

# The server's own ingest: the same points as line protocol, written to a
# fresh VictoriaMetrics in requests of 5000 lines, one at a time.
rows = db.execute("SELECT device_id, metric, patient_id, source, unit, value, measured_at, annotations FROM readings ORDER BY seq").fetchall()
lines = []
for d, m, p, s, u, v, at, ann in rows:
    fields = "".join(f',{k}="{val}"' for k, val in json.loads(ann).items())
    lines.append(f"rpm_blood_pressure,device_id={d},metric={m},patient_id={p},source={s},unit={u} value={float(v)!r}{fields} {at * 1000000}\n")
with open(f"{w}/lines.txt", "w") as f:
    f.writelines(lines)
import socket
so = socket.socket(); so.bind(("127.0.0.1", 0)); port2 = so.getsockname()[1]; so.close()
vm2 = subprocess.Popen(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{port2}", f"-storageDataPath={w}/vm2", "-retentionPeriod=100y", "-loggerLevel=ERROR"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port2}/health"); break
    except OSError:
        time.sleep(0.1)
server = float(subprocess.check_output([sys.executable, "bench/lp_write.py", f"{w}/lines.txt", str(port2), "5000"]))
vm2.terminate(); vm2.wait()

print(f"machine: {os.cpu_count()} cores, {os.uname().machine}, load average at the end {open('/proc/loadavg').read().split()[:3]}")
print(f"{total} readings, {alerts} crisis alerts expected")
print(f"raw mosquitto_sub:          {raw:6.2f} s = {total / raw:8.0f} msg/s")
print(f"peer (paho-mqtt + SQLite):  {peer:6.2f} s = {total / peer:8.0f} msg/s ({100 * raw / peer:.0f}% of raw), {peer_rows} rows")
print(f"server alone (VM, 5000/request): {server:6.2f} s = {total / server:8.0f} points/s")
for k, label in [("acked", "all acknowledged"), ("indexed", "all indexed into readings"), ("evaluated", "all evaluated (rules cursor)"),
                 ("forwarded", "all forwarded (influxdb cursor)"), ("alerts", "last alert webhook received")]:
    print(f"gateway, {label:32} {t[k]:6.2f} s = {t[k] / raw:5.2f} x raw drain")
print(f"forwarding: {total / t['forwarded']:.0f} points/s end to end; arrived at VictoriaMetrics {got}/{total}")
print(f"alert webhooks: {late} distinct alert.fired received, signature failures {len(bad)}")
print(f"peer / gateway (all indexed): {t['indexed'] / peer:.2f}; gateway peak RSS {rss} kB")
print(f"gateway CPU through the drain: {cpu_user + cpu_sys:.2f} s (user {cpu_user:.2f} s, system {cpu_sys:.2f} s)")
listed = sum(threads.values())
print("  by thread: " + ", ".join(f"{n} {c:.2f} s" for n, c in sorted(threads.items(), key=lambda x: -x[1]) if c >= 0.01)
      + f", threads that ended {max(cpu_user + cpu_sys - listed, 0):.2f} s")
print(f"gateway system calls through the drain: {int(io['syscr'])} reads, {int(io['syscw'])} writes"
      f" ({int(io['wchar']) / 1e6:.1f} MB written)")
PY
