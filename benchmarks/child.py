"""Run one measured command and report its own time and peak memory (DESIGN §7).

    python benchmarks/child.py [--cpu 0] [--nofile 256] [--stdout FILE] -- CMD ARGS...

prints one JSON line: {"seconds": ..., "maxrss_kib": ..., "exit": ...}.

Why a process of its own between the benchmark and the command: on Linux a process's
`ru_maxrss` starts from the resident size of the address space it was forked (or
vforked) from, so a command started straight from the benchmark — which holds the
generated accounts, hundreds of MiB at 100,000 users — "peaks" at the benchmark's size
whatever it does itself. This wrapper is a fresh, small interpreter: the command forked
from it inherits only its ~10 MiB, and `wait4` gives the command's own peak (the largest
of it and the children it waited for, e.g. the loader's forked half; not their sum).
It also sets what the measured command alone should run under: `--cpu` (the CPU
affinity, as `taskset -c`) and `--nofile` (the open-file limit, as `ulimit -n`), and
times the command from spawn to exit, its own start-up included, the wrapper's not.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    cpu: int | None = None
    nofile: int | None = None
    stdout_path: str | None = None
    while argv and argv[0] != "--":
        flag, value, argv = argv[0], argv[1], argv[2:]
        if flag == "--cpu":
            cpu = int(value)
        elif flag == "--nofile":
            nofile = int(value)
        elif flag == "--stdout":
            stdout_path = value
        else:
            print(f"child.py: unknown option {flag}", file=sys.stderr)
            return 64
    cmd = argv[1:]
    if not cmd:
        print("child.py: no command after --", file=sys.stderr)
        return 64
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # inherited by the command, as `taskset -c CPU`
    if nofile is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (nofile, nofile if hard == resource.RLIM_INFINITY
                            else min(nofile, hard)))
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if stdout_path and not isinstance(out, int):
        out.close()
    print(json.dumps({"seconds": seconds, "maxrss_kib": usage.ru_maxrss,
                      "exit": os.waitstatus_to_exitcode(status)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
