# A task as an AI agent might write it: analyse some data, handle edge
# cases, print a report.  ForgeBox runs it in a fresh microVM that has no
# network, no host filesystem and no privileges.
import csv
import io
import os
import platform
import statistics

DATA = """region,month,revenue
north,2026-01,1200
north,2026-02,1350
south,2026-01,980
south,2026-02,1105
east,2026-01,1500
east,2026-02,1420
"""

rows = list(csv.DictReader(io.StringIO(DATA)))
by_region = {}
for r in rows:
    by_region.setdefault(r["region"], []).append(int(r["revenue"]))

print("revenue report")
for region, values in sorted(by_region.items()):
    growth = (values[-1] - values[0]) / values[0] * 100
    print(f"  {region:6} mean {statistics.mean(values):8.1f}  growth {growth:+5.1f}%")

# Where are we?  A throwaway machine, as an unprivileged user.
print(f"ran as uid {os.getuid()} on kernel {platform.release()} in {os.getcwd()}")
try:
    import socket
    socket.create_connection(("1.1.1.1", 443), timeout=2)
    print("network: reachable (unexpected!)")
except OSError as e:
    print(f"network: unreachable ({e.strerror})")
