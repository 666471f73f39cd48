"""timed.py OUT CMD...: runs CMD (its stdout passes through) and writes "WALL USER SYS"
(seconds; user and system CPU of CMD and everything it waited for, from wait4) to OUT.
Exits with CMD's status. Shared by the benchmark scripts, so every tool is timed the
same way."""
import os
import sys
import time

out = sys.argv[1]
start = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - start
with open(out, "w") as f:
    f.write(f"{wall:.6f} {ru.ru_utime:.6f} {ru.ru_stime:.6f}\n")
sys.exit(os.waitstatus_to_exitcode(status))
