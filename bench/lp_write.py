"""The server's own ingest rate (bench/e2e.sh, bench/forward.sh): writes a
file of InfluxDB line protocol to /api/v2/write in requests of BATCH lines,
one request at a time on one kept-alive connection (as the forwarder does),
and prints the seconds the requests took (reading the file is not timed).

    python3 bench/lp_write.py FILE PORT BATCH
"""

import http.client
import sys
import time

path, port, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "rb") as f:
    lines = f.readlines()
bodies = [b"".join(lines[i:i + batch]) for i in range(0, len(lines), batch)]
conn = http.client.HTTPConnection("127.0.0.1", port)
start = time.time()
for body in bodies:
    conn.request("POST", "/api/v2/write?org=bench&bucket=bench&precision=ns", body=body)
    r = conn.getresponse()
    r.read()
    if r.status not in (200, 204):
        sys.exit(f"HTTP {r.status}")
print(f"{time.time() - start:.3f}")
