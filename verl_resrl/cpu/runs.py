"""Run ``main_ppo`` on CPU in a subprocess and read back what it printed (used by the e2e tests and benchmark).

veRL's console logger prints one line per step, ``step:N - key:value - key:value ...``;
:func:`parse_step_metrics` turns those lines into ``{step: {key: float}}``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass

from verl_resrl.cpu.launch import cpu_env, cpu_main_ppo_command

_STEP_LINE = re.compile(r"step:(\d+) - (.*)$")
_NUMBER = re.compile(r"^(?:np\.\w+\()?([-+0-9.eEinfa]+)\)?$")


def parse_step_metrics(output: str) -> dict[int, dict[str, float]]:
    """``{step: {metric: value}}`` from veRL's console lines (numeric values only; last line per step wins)."""
    steps: dict[int, dict[str, float]] = {}
    for line in output.splitlines():
        match = _STEP_LINE.search(line)
        if match is None:
            continue
        metrics = {}
        for item in match.group(2).split(" - "):
            key, sep, value = item.strip().rpartition(":")
            number = _NUMBER.match(value.strip())
            if sep and number:
                try:
                    metrics[key] = float(number.group(1))
                except ValueError:
                    pass
        steps[int(match.group(1))] = metrics
    return steps


@dataclass
class RunResult:
    returncode: int
    output: str
    seconds: float

    @property
    def steps(self) -> dict[int, dict[str, float]]:
        return parse_step_metrics(self.output)


def run_cpu_main_ppo(overrides: list[str], n_gpus: int = 1, cwd: str | None = None, timeout: float = 600) -> RunResult:
    """Run ``main_ppo`` on CPU; the whole process group (driver, Ray, workers) is killed if it overruns."""
    return run_command(cpu_main_ppo_command(overrides, n_gpus=n_gpus), env=cpu_env(), cwd=cwd, timeout=timeout)


def run_command(command: list[str], env: dict[str, str], cwd: str | None = None, timeout: float = 600) -> RunResult:
    """Run a training command in its own process group, which is killed when it ends or overruns."""
    start = time.time()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\n[verl_resrl] main_ppo killed after {timeout} s"
    finally:
        try:  # Ray's processes belong to this session: make sure none outlives the run
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return RunResult(proc.returncode, output, time.time() - start)
