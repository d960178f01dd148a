#!/usr/bin/env python3
"""The code sandbox's measured limits: start-up cost, and how fast hostile programs are ended.

``python benchmarks/bench_sandbox.py [--repeats 5] [--wall-s 2]`` runs each program ``--repeats`` times through
``reward_fns/sandbox.py`` with its default limits (except ``wall_s``) and prints, per program, the median and
maximum seconds from start to return, the kill latency past the wall-time limit where the limit ended the run,
how the run ended, and the processes of sandbox uids left when it returned (must be 0). The memory bomb also
reports the largest resident set of any sandboxed process (``ru_maxrss`` of reaped descendants).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import sys
import time
from pathlib import Path

SANDBOX = Path(__file__).resolve().parents[1] / "reward_fns" / "sandbox.py"

PROGRAMS = {
    "hello (start-up cost)": "print('hello')\n",
    "infinite loop": "while True:\n    pass\n",
    "sleep (wall time)": "import time\ntime.sleep(3600)\n",
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "fork bomb + sleep": ("import os, time\nfor _ in range(10000):\n    try:\n        os.fork()\n"
                          "    except OSError:\n        break\ntime.sleep(3600)\n"),
    "memory bomb": "chunks = []\nwhile True:\n    chunks.append(bytearray(2**24))\n",
    "huge output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
}


def load_sandbox():
    spec = importlib.util.spec_from_file_location("resrl_bench_sandbox", SANDBOX)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def sandbox_processes(sb) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                    if line.startswith("Uid:") and sb.is_sandbox_uid(int(line.split()[1])):
                        count += 1
            except OSError:
                pass
    return count


def outcome(result) -> str:
    if result.timed_out:
        return "wall-time kill"
    if result.output_exceeded:
        return "output cap kill"
    if result.returncode == 0:
        return "exit 0"
    if result.returncode is not None and result.returncode < 0:
        return f"signal {-result.returncode}"
    return f"exit {result.returncode}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wall-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    sb = load_sandbox()
    limits = sb.Limits(wall_s=args.wall_s)
    print(f"isolation: {sb.isolation()}  interpreter: {sb.default_interpreter()}  cpus: {os.cpu_count()}")
    print(f"limits: {limits}")
    print(f"{'program':<24} {'median s':>9} {'max s':>7} {'past wall s':>12}  {'ended by':<16} left")
    for name, source in PROGRAMS.items():
        seconds, outcomes, left = [], set(), 0
        rss_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        for _ in range(args.repeats):
            start = time.monotonic()
            result = sb.run_python(source, "", limits)
            seconds.append(time.monotonic() - start)
            outcomes.add(outcome(result))
            left = max(left, sandbox_processes(sb))
        past = (f"{max(s - args.wall_s for s in seconds):12.2f}" if outcomes & {"wall-time kill"} else f"{'-':>12}")
        line = (f"{name:<24} {statistics.median(seconds):9.2f} {max(seconds):7.2f} {past}  "
                f"{','.join(sorted(outcomes)):<16} {left}")
        if name == "memory bomb":
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            line += f"  (max RSS {max(rss, rss_before) / 1024:.0f} MiB, limit {limits.memory_mb} MiB address space)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
