"""Waits until a durable cursor of the gateway's store reaches N and prints
when it first moved (seconds since START, and to which position) and when
it reached N (bench/forward.sh). Polls every 5 ms on a read-only
connection, so the time a drain ends is known to within a few
milliseconds, and the rate after the first batch leaves the gateway's
start out, as the server's own ingest (bench/lp_write.py) leaves the
server's out.

    python3 bench/cursor_wait.py DB CURSOR N START
    -> FIRST_SECONDS FIRST_POSITION DONE_SECONDS
"""

import sqlite3
import sys
import time

db, name, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
conn = None
first = None
while True:
    position = 0
    try:
        if conn is None:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        row = conn.execute("SELECT position FROM cursors WHERE name = ?", (name,)).fetchone()
        position = row[0] if row else 0
    except sqlite3.Error:
        conn = None
    now = time.time() - start
    if position > 0 and first is None:
        first = (now, position)
    if position >= n:
        print(f"{first[0]:.3f} {first[1]} {now:.3f}")
        break
    time.sleep(0.005)
