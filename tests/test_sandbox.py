"""reward_fns/sandbox.py: hostile programs end within their limits and change nothing outside the sandbox."""

import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from harness import load_script

SANDBOX_PATH = Path(__file__).resolve().parents[1] / "reward_fns" / "sandbox.py"


sb = load_script(SANDBOX_PATH, "resrl_sandbox_under_test")
LIMITS = sb.Limits(wall_s=4.0, cpu_s=2, memory_mb=256, max_processes=16)
SLACK_S = 4.0  # kill, reap and scheduling on a loaded 2-core machine
needs_namespaces = pytest.mark.skipif(sb.isolation() != "namespaces",
                                      reason="namespace isolation unavailable here (needs root + unshare)")


def sandbox_pids() -> set[int]:
    """Processes running under any sandbox uid."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            if sb.is_sandbox_uid(int(uid_line.split()[1])):
                pids.add(int(entry))
    return pids


def run(source, stdin="", limits=LIMITS):
    before = sandbox_pids()
    start = time.monotonic()
    result = sb.run_python(source, stdin, limits)
    seconds = time.monotonic() - start
    assert seconds < limits.wall_s + SLACK_S, f"took {seconds:.1f}s"
    assert not sandbox_pids() - before, "sandboxed processes outlived the run"  # gone when run_python returns
    return result


# --- normal programs -------------------------------------------------------------------------------------------

def test_runs_program_with_stdin_as_an_unprivileged_uid_in_its_own_namespaces():
    result = run("import os, sys\nprint(sys.stdin.read().upper(), end='')\nprint(os.getuid(), os.getcwd())", "ab\n")
    assert result.ok and not result.timed_out
    lines = result.stdout.splitlines()
    assert lines[0] == "AB"
    if sb.isolation() == "namespaces":
        uid, cwd = lines[1].split()
        assert sb.is_sandbox_uid(int(uid)) and cwd == "/tmp"
        assert result.isolation == "namespaces"


def test_exit_status_and_stderr_are_reported():
    result = run("import sys\nprint('partial')\nsys.exit(3)")
    assert result.returncode == 3 and not result.ok and result.stdout == "partial\n"
    result = run("raise ValueError('boom')")
    assert result.returncode == 1 and "ValueError: boom" in result.stderr


def test_invalid_limits_raise():
    with pytest.raises(ValueError, match="wall_s"):
        sb.Limits(wall_s=0)


# --- hostile programs ------------------------------------------------------------------------------------------

def test_infinite_loop_is_killed_at_the_limit():
    result = run("while True:\n    pass\n")
    assert not result.ok and result.returncode != 0


def test_sleeping_program_is_killed_at_wall_time():
    result = run("import time\ntime.sleep(60)\n", limits=sb.Limits(wall_s=1.5))
    assert result.timed_out and result.returncode is None
    assert result.wall_s < 1.5 + SLACK_S


def test_fork_bomb_is_contained_and_killed_whole():
    bomb = ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    result = run(bomb)
    assert not result.ok


def test_detached_children_die_with_the_run():
    source = ("import os, subprocess, sys\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
              "print('spawned')\n")
    result = run(source)  # run() checks that no process of the sandbox user is left
    assert result.stdout == "spawned\n"


def test_memory_bomb_fails_fast():
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))\n")
    assert not result.ok and "MemoryError" in result.stderr
    assert result.wall_s < LIMITS.wall_s


def test_huge_output_is_cut_at_the_cap():
    result = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    assert result.output_exceeded and not result.ok
    assert LIMITS.max_output_bytes < len(result.stdout) <= LIMITS.max_output_bytes + 65536


def test_large_file_write_hits_the_file_size_limit():
    result = run("f = open('big', 'wb')\nf.write(b'x' * (64 * 2**20))\nf.close()\nprint('wrote')\n")
    assert not result.ok and "wrote" not in result.stdout


@needs_namespaces
def test_writes_outside_the_sandbox_change_nothing(tmp_path):
    tmp_path.chmod(0o777)  # writable by anyone: only the sandbox's isolation keeps the program out
    outside = tmp_path / "escaped.txt"
    tag = uuid.uuid4().hex
    shared = [Path(d) / f"resrl-escape-{tag}" for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")]
    repo_file = SANDBOX_PATH.parent / f"escape-{tag}.py"
    targets = [outside, *shared, repo_file, Path("/root") / f"escape-{tag}"]
    source = "written = []\n" + "".join(
        f"try:\n    open({str(p)!r}, 'w').write('pwned')\n    written.append({str(p)!r})\nexcept OSError:\n    pass\n"
        for p in targets) + "print(written)\n"
    result = run(source)
    assert result.ok
    for path in targets:
        assert not path.exists(), path
    # The world-writable directories were private tmpfs: writes there succeeded inside and vanished.
    assert all(str(p) in result.stdout for p in shared)


@needs_namespaces
def test_network_is_unreachable_even_on_loopback():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    source = ("import socket\nfor host in ('127.0.0.1', '8.8.8.8', '1.1.1.1'):\n"
              "    try:\n        socket.create_connection((host, %d if host == '127.0.0.1' else 53), timeout=2)\n"
              "        print('connected', host)\n    except OSError as e:\n        print('refused', host)\n" % port)
    try:
        result = run(source)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert "connected" not in result.stdout and result.stdout.count("refused") == 3


def test_parent_environment_is_not_visible(monkeypatch):
    secret = "resrl-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("RESRL_TEST_SECRET", secret)
    source = ("import os, glob\nprint(dict(os.environ))\n"
              "for path in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n"
              "    try:\n        print(open(path, 'rb').read())\n    except OSError:\n        pass\n")
    result = run(source)
    assert result.ok
    assert secret not in result.stdout and "RESRL_TEST_SECRET" not in result.stdout


@needs_namespaces
def test_killing_the_parent_or_everyone_reaches_nothing_outside():
    # A process of the run's own uid outside the sandbox: a kill(-1) from inside would reach it without the
    # PID namespace.
    uid = sb.sandbox_uid()
    sentinel = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "60"])
    try:
        time.sleep(0.2)
        before = sandbox_pids() - {sentinel.pid}
        source = "import os, signal\nprint(os.getppid())\nos.kill(os.getppid(), 9)\nos.kill(-1, 9)\n"
        result = sb._run(source, "", LIMITS, sb.isolation(), uid=uid)
        assert sentinel.poll() is None, "a process outside the sandbox was killed"
        assert not sandbox_pids() - before - {sentinel.pid}
        assert not result.ok or result.stdout.strip() == "0"
    finally:
        sentinel.kill()
        sentinel.wait()
    assert os.getppid() > 1  # and this process is evidently alive


def test_many_hostile_runs_in_threads_leave_the_caller_working():
    programs = ["while True: pass", "import os\nos.kill(os.getppid(), 9)", "print('x' * 10**8)",
                "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: sb.run_python(s, "", LIMITS), programs))
    assert not any(r.ok for i, r in enumerate(results) if i != 1)  # kill(getppid()) harms only itself
    assert threading.current_thread() is threading.main_thread()
    assert sb.run_python("print(6 * 7)", "", LIMITS).stdout == "42\n"


def test_interpreter_is_one_any_user_can_execute():
    interpreter = sb.default_interpreter()
    if os.geteuid() == 0:
        assert sb._others_can_execute(interpreter)
        assert not sb._others_can_execute("/root/.no-such-python")


def test_rlimits_fallback_still_bounds_time_and_output(monkeypatch):
    result = sb._run("while True: pass", "", sb.Limits(wall_s=2.0, cpu_s=1), "rlimits")
    assert not result.ok and result.isolation == "rlimits" and result.wall_s < 2.0 + SLACK_S
    result = sb._run("print(sum(range(10)))", "", LIMITS, "rlimits")
    assert result.ok and result.stdout == "45\n"


def test_fallback_is_chosen_and_logged_once_when_forced(monkeypatch, caplog):
    monkeypatch.setenv("RESRL_SANDBOX_ISOLATION", "rlimits")
    monkeypatch.setattr(sb, "_ISOLATION", None)
    with caplog.at_level("WARNING"):
        assert sb.isolation() == "rlimits"
        assert sb.isolation() == "rlimits"
    warnings = [r for r in caplog.records if "namespaces unavailable" in r.getMessage()]
    assert len(warnings) == 1
    monkeypatch.setattr(sb, "_ISOLATION", None)


def test_closing_the_outputs_does_not_end_the_wait_early():
    result = run("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(0.5)\n")
    assert result.returncode == 0 and not result.timed_out
    result = run("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)\n", limits=sb.Limits(wall_s=1.5))
    assert result.timed_out and result.returncode is None


def test_concurrent_runs_do_not_share_the_process_limit():
    """A fork bomb at its process limit does not stop other runs from starting (each run has its own uid)."""
    from concurrent.futures import ThreadPoolExecutor

    bomb = ("import os, time\nfor _ in range(1000):\n    try:\n        os.fork()\n    except OSError:\n"
            "        break\ntime.sleep(60)\n")
    limits = sb.Limits(wall_s=6.0, max_processes=8)
    with ThreadPoolExecutor(max_workers=6) as pool:
        bomb_run = pool.submit(sb.run_python, bomb, "", limits)
        time.sleep(1.5)
        others = list(pool.map(lambda i: sb.run_python(f"print({i})", "", limits), range(5)))
        assert bomb_run.result().timed_out
    assert [r.stdout for r in others] == [f"{i}\n" for i in range(5)]
