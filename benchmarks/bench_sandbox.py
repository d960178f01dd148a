#!/usr/bin/env python3
"""The code sandbox's measured limits: start-up cost, and how fast hostile programs are ended.

``python benchmarks/bench_sandbox.py [--repeats 5] [--wall-s 2] [--throughput-runs 200]`` runs each program
``--repeats`` times through ``reward_fns/sandbox.py`` with its default limits (except ``wall_s``) and prints, per
program, the median and maximum seconds from start to return, the kill latency past the wall-time limit where the
limit ended the run, how the run ended, and the processes of sandbox uids left when it returned (must be 0). The
memory programs also report the most memory they got (the largest ``MB n`` they printed) against the limit.
Last, the throughput: ``--throughput-runs`` honest runs from as many threads as the machine has cores (and twice
that), as runs per second.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
    "memfd bomb": ("import os\ntotal = 0\nwhile True:\n    fd = os.memfd_create('x')\n    for _ in range(15):\n"
                   "        os.write(fd, b'x' * 2**20)\n        total += 1\n    print('MB', total, flush=True)\n"),
    "8 processes x 150 MB": ("import os, time\nkids = []\nfor i in range(8):\n    pid = os.fork()\n    if pid == 0:\n"
                             "        b = bytearray(150 * 2**20)\n        for j in range(0, len(b), 4096):\n"
                             "            b[j] = 1\n        time.sleep(60)\n    kids.append(pid)\ntime.sleep(1.5)\n"
                             "print('MB', 150 * sum(os.waitpid(p, os.WNOHANG) == (0, 0) for p in kids), flush=True)\n"),
    "tmpfs bomb": ("n = 0\ntry:\n    while True:\n        open(f'/tmp/f{n}', 'wb').write(b'x' * 2**20)\n        n += 1\n"
                   "        print('MB', n, flush=True)\nexcept OSError:\n    pass\n"),
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
    if result.oom_killed:
        return "cgroup OOM kill"
    if result.returncode == 0:
        return "exit 0"
    if result.returncode is not None and result.returncode < 0:
        return f"signal {-result.returncode}"
    return f"exit {result.returncode}"


def most_mb(result) -> int:
    return max((int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("MB ")), default=0)


def throughput(sb, limits, runs: int, threads: int) -> float:
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(lambda i: sb.run_python(f"print({i})", "", limits), range(runs)))
    assert all(r.ok for r in results)
    return runs / (time.monotonic() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wall-s", type=float, default=2.0)
    parser.add_argument("--throughput-runs", type=int, default=200)
    args = parser.parse_args(argv)
    sb = load_sandbox()
    limits = sb.Limits(wall_s=args.wall_s)
    probe = sb.run_python("print(1)", "", limits)
    print(f"isolation: {probe.isolation}  memory scope: {probe.memory_scope}  interpreter: "
          f"{sb.default_interpreter()}  bwrap: {sb.bwrap_executable()}  cpus: {os.cpu_count()}")
    print(f"limits: {limits}")
    print(f"{'program':<24} {'median s':>9} {'max s':>7} {'past wall s':>12}  {'ended by':<32} left  memory")
    for name, source in PROGRAMS.items():
        seconds, outcomes, left, mb = [], set(), 0, 0
        for _ in range(args.repeats):
            start = time.monotonic()
            result = sb.run_python(source, "", limits)
            seconds.append(time.monotonic() - start)
            outcomes.add(outcome(result))
            left = max(left, sandbox_processes(sb))
            mb = max(mb, most_mb(result))
        past = (f"{max(s - args.wall_s for s in seconds):12.2f}" if outcomes & {"wall-time kill"} else f"{'-':>12}")
        line = (f"{name:<24} {statistics.median(seconds):9.3f} {max(seconds):7.3f} {past}  "
                f"{','.join(sorted(outcomes)):<32} {left:>4}")
        if "MB" in source:
            line += f"  got at most {mb} MB of {limits.memory_mb} MB (tmpfs {limits.tmpfs_mb} MB)"
        print(line, flush=True)
    cores = os.cpu_count() or 1
    for threads in (cores, 2 * cores):
        rate = throughput(sb, limits, args.throughput_runs, threads)
        print(f"throughput: {rate:.1f} honest runs/s with {threads} threads on {cores} cores", flush=True)


if __name__ == "__main__":
    main()
