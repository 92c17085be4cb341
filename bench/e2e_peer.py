"""The peer of bench/e2e.sh: what a team would write instead of the gateway.

A paho-mqtt 2.x consumer on its own persistent session (manual acks) that
parses each SenML pack, inserts its records into an indexed SQLite table
(WAL, synchronous=FULL: the gateway's durability) and acknowledges the
messages only after their transaction is committed. Messages are committed
in groups: everything the socket had ready (up to 1000 messages) goes into
one transaction. Bad input is counted and acknowledged (a team would log it).

    python3 bench/e2e_peer.py PORT TOTAL DB
Exits once TOTAL messages are committed and acknowledged; prints the count.
"""

import json
import sqlite3
import sys

import paho.mqtt.client as mqtt

port, total, db = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=FULL")
conn.execute(
    """CREATE TABLE IF NOT EXISTS readings (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
        unit TEXT, measured_at INTEGER NOT NULL,
        UNIQUE (device_id, metric, measured_at))"""
)

pending = []  # (mid, rows) received, not yet committed
bad = 0


def on_message(client, userdata, msg):
    global bad
    device = msg.topic.rsplit("/", 1)[-1]
    try:
        pack = json.loads(msg.payload)
        rows = []
        base = 0.0
        for r in pack:
            base = r.get("bt", base)
            rows.append((device, r["n"], float(r["v"]), r.get("u"), int((base + r.get("t", 0)) * 1000)))
    except (ValueError, KeyError, TypeError):
        bad += 1
        rows = []
    pending.append((msg.mid, rows))


def on_connect(client, userdata, flags, reason, properties):
    client.subscribe("rpm/senml/#", qos=1)


client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2, client_id="bench-peer", clean_session=False, manual_ack=True
)
client.on_message = on_message
client.on_connect = on_connect
client.connect("127.0.0.1", port)

done = 0
while done < total:
    before = len(pending)
    client.loop(timeout=0.0 if pending else 1.0)
    # Commit when the socket had nothing more ready, or the group is full.
    if pending and (len(pending) == before or len(pending) >= 1000):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT OR IGNORE INTO readings (device_id, metric, value, unit, measured_at) VALUES (?,?,?,?,?)",
            [row for _, rows in pending for row in rows],
        )
        conn.execute("COMMIT")
        for mid, _ in pending:
            client.ack(mid, 1)
        done += len(pending)
        pending.clear()
# Let the last PUBACKs go out.
for _ in range(10):
    client.loop(timeout=0.01)
client.disconnect()
print(f"peer committed {done} messages ({bad} bad)")
