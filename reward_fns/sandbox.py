"""Run an untrusted Python program with kernel isolation and hard limits; used by ``code_reward.py``.

``run_python(source, stdin, limits)`` runs ``source`` once and returns its stdout, exit status and whether a
limit ended it. The program never sees the caller's environment, files, network or processes:

* **namespaces** (``isolation == "namespaces"``; needs root and util-linux ``unshare``):
  ``unshare --mount --net --pid --fork --kill-child --mount-proc`` starts this file as ``--stage2`` in new
  mount, network and PID namespaces. Stage 2 (still root, inside the namespaces) mounts private tmpfs over
  ``/tmp``, ``/var/tmp``, ``/run/lock`` and ``/dev/shm`` (the world-writable places of the root filesystem;
  each ``tmpfs_mb`` large), bind-mounts the fresh work directory read-only at ``/tmp/work``, sets the
  rlimits, drops to a fresh unprivileged uid (random per run, see ``SANDBOX_UID_BASE``; groups cleared,
  ``no_new_privs``, so set-uid binaries cannot regain root) and execs an interpreter any user can read.
  The network namespace has only a downed loopback; the PID namespace and its own ``/proc`` hide every other process; when the namespace's first process ends,
  the kernel kills all the rest, and ``--kill-child`` ends it when ``unshare`` is killed.
* **rlimits** (fallback when namespaces are unavailable, logged once): ``prlimit`` + ``setpriv`` (drop to
  the run's uid when root) in a new session, cwd in the fresh work directory, scrubbed environment. No network or
  filesystem isolation, and a child that starts its own session escapes the group kill: on shared machines use
  veRL's remote ``sandbox_fusion`` service instead.

Both layers: own process group (SIGKILLed at the wall-time limit or when output passes ``max_output_bytes``;
with namespaces the whole PID namespace is gone when ``run_python`` returns), CPU-time, address-space,
process-count, file-size and open-file rlimits, no core dumps, environment reduced to ``PATH``/``HOME``/
``LANG``, stdin read from a file (no pipe to deadlock on), the work directory removed afterwards.

``RLIMIT_NPROC`` counts the processes of a user; each run has its own uid, hence its own ``max_processes``.
The memory limit is per process (address space), so one run's worst case is ``max_processes * memory_mb``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

logger = logging.getLogger(__name__)

# Each run gets its own unprivileged uid (= gid), random in this range, with no passwd entry: runs do not
# share RLIMIT_NPROC (counted per user) and cannot signal or ptrace one another.
SANDBOX_UID_BASE = 1_900_000_000
SANDBOX_UID_COUNT = 1 << 24
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm")
INSIDE_WORK_DIR = "/tmp/work"
PROGRAM_NAME = "program.py"
STDIN_NAME = "stdin.txt"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
KILL_GRACE_S = 5.0  # after SIGKILL, how long to wait for the process to be reaped


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Memory is address space per process; ``max_processes`` is per user (see module doc)."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    max_processes: int = 16
    file_size_mb: int = 16
    open_files: int = 64
    tmpfs_mb: int = 64
    max_output_bytes: int = 1 << 20

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"sandbox limit {name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class RunResult:
    stdout: str
    stderr: str
    returncode: int | None  # None: killed by the sandbox (wall time or output limit)
    timed_out: bool
    output_exceeded: bool
    wall_s: float
    isolation: str  # "namespaces" or "rlimits"

    @property
    def ok(self) -> bool:
        """Exited by itself with status 0 within every limit."""
        return self.returncode == 0 and not self.timed_out and not self.output_exceeded


# --- stage 2: runs as root inside the new namespaces, then becomes the program ---------------------------------

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
_PR_SET_NO_NEW_PRIVS = 38


def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    encode = (lambda s: None if s is None else s.encode())
    if libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} -> {target}: {os.strerror(errno)}")


def _set_rlimits(spec: dict) -> None:
    import resource

    mb = 1 << 20
    for limit, value in ((resource.RLIMIT_CPU, spec["cpu_s"]), (resource.RLIMIT_AS, spec["memory_mb"] * mb),
                         (resource.RLIMIT_NPROC, spec["max_processes"]),
                         (resource.RLIMIT_FSIZE, spec["file_size_mb"] * mb),
                         (resource.RLIMIT_NOFILE, spec["open_files"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))


def _stage2(spec: dict) -> None:
    """Mounts, rlimits, privilege drop, exec. Any failure exits 125 with the reason on stderr."""
    libc = ctypes.CDLL(None, use_errno=True)
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE, None)
    work_fd = os.open(spec["work_dir"], os.O_PATH | os.O_DIRECTORY)  # still reachable once /tmp is covered
    tmpfs_options = f"size={spec['tmpfs_mb']}m,mode=1777"
    for path in WORLD_WRITABLE_DIRS:
        if os.path.isdir(path) and not os.path.islink(path):
            _mount(libc, "tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV, tmpfs_options)
    os.mkdir(INSIDE_WORK_DIR, 0o755)
    _mount(libc, f"/proc/self/fd/{work_fd}", INSIDE_WORK_DIR, None, _MS_BIND, None)
    _mount(libc, None, INSIDE_WORK_DIR, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)
    os.close(work_fd)
    stdin_fd = os.open(os.path.join(INSIDE_WORK_DIR, STDIN_NAME), os.O_RDONLY)
    os.dup2(stdin_fd, 0)
    os.close(stdin_fd)
    os.chdir("/tmp")
    _set_rlimits(spec)
    os.setgroups([])
    os.setgid(spec["uid"])
    os.setuid(spec["uid"])
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    env = {"PATH": SAFE_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    interpreter = spec["interpreter"]
    os.execve(interpreter, [interpreter, "-I", os.path.join(INSIDE_WORK_DIR, PROGRAM_NAME)], env)


# --- choosing the interpreter and the isolation layer ----------------------------------------------------------

def _others_can_execute(path: str) -> bool:
    """Whether a user that is neither owner nor group can reach and execute ``path``: o+x on every directory."""
    real = os.path.realpath(path)
    try:
        if not os.stat(real).st_mode & stat.S_IXOTH or not os.stat(real).st_mode & stat.S_IROTH:
            return False
        directory = os.path.dirname(real)
        while True:
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return False
            if directory == "/":
                return True
            directory = os.path.dirname(directory)
    except OSError:
        return False


def default_interpreter() -> str:
    """A Python interpreter any user can run: ``RESRL_SANDBOX_PYTHON``, ``/usr/bin/python3``, this one."""
    candidates = [os.environ.get("RESRL_SANDBOX_PYTHON"), "/usr/bin/python3", "/usr/local/bin/python3",
                  sys.executable]
    if os.geteuid() != 0:  # no privilege drop: any interpreter this user runs will do
        return next(c for c in candidates if c and os.access(c, os.X_OK))
    for candidate in candidates:
        if candidate and _others_can_execute(candidate):
            return candidate
    raise RuntimeError("no Python interpreter is executable by other users; set RESRL_SANDBOX_PYTHON")


_ISOLATION: str | None = None
_ISOLATION_LOCK = threading.Lock()


def isolation() -> str:
    """``"namespaces"`` when a probe run works here, else ``"rlimits"`` (the fallback is logged once)."""
    global _ISOLATION
    with _ISOLATION_LOCK:
        if _ISOLATION is None:
            _ISOLATION, reason = _probe_namespaces()
            if _ISOLATION != "namespaces":
                logger.warning("sandbox: Linux namespaces unavailable (%s); running untrusted code with "
                               "rlimits and a separate process group only, without network or filesystem "
                               "isolation", reason)
        return _ISOLATION


def _probe_namespaces() -> tuple[str, str]:
    if os.environ.get("RESRL_SANDBOX_ISOLATION") == "rlimits":
        return "rlimits", "RESRL_SANDBOX_ISOLATION=rlimits"
    if os.geteuid() != 0:
        return "rlimits", "not running as root"
    if shutil.which("unshare") is None:
        return "rlimits", "util-linux unshare not found"
    try:
        result = _run(PROBE_SOURCE, "", Limits(wall_s=30), "namespaces")
    except Exception as error:  # noqa: BLE001
        return "rlimits", f"probe failed to start: {error}"
    if result.ok and result.stdout.strip() == "sandbox-ok":
        return "namespaces", ""
    return "rlimits", f"probe run failed: rc={result.returncode} stderr={result.stderr[-300:]!r}"


PROBE_SOURCE = "import os\nassert os.getuid() != 0 and os.getpid() == 1\nprint('sandbox-ok')\n"


# --- the caller's side -----------------------------------------------------------------------------------------

def _command(mode: str, spec: dict, limits: Limits, work_dir: str) -> tuple[list[str], str | None]:
    """(argv, cwd) of one run."""
    if mode == "namespaces":
        return ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--",
                sys.executable, "-I", "-S", os.path.abspath(__file__), "--stage2", json.dumps(spec)], None
    mb = 1 << 20
    argv = []
    if shutil.which("prlimit"):
        argv += ["prlimit", f"--cpu={limits.cpu_s}", f"--as={limits.memory_mb * mb}",
                 f"--nproc={limits.max_processes}", f"--fsize={limits.file_size_mb * mb}",
                 f"--nofile={limits.open_files}", "--core=0", "--"]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        argv += ["setpriv", f"--reuid={spec['uid']}", f"--regid={spec['uid']}", "--clear-groups",
                 "--no-new-privs", "--"]
    return argv + [spec["interpreter"], "-I", os.path.join(work_dir, PROGRAM_NAME)], work_dir


def sandbox_uid() -> int:
    return SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_COUNT)


def is_sandbox_uid(uid: int) -> bool:
    return SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + SANDBOX_UID_COUNT


def _prepare_work_dir(source: str, stdin: str, mode: str, uid: int) -> str:
    work_dir = tempfile.mkdtemp(prefix="resrl-sandbox-")
    with open(os.path.join(work_dir, PROGRAM_NAME), "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(source)
    with open(os.path.join(work_dir, STDIN_NAME), "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(stdin)
    for name in (PROGRAM_NAME, STDIN_NAME):
        os.chmod(os.path.join(work_dir, name), 0o644)
    os.chmod(work_dir, 0o755)
    if mode == "rlimits" and os.geteuid() == 0:
        os.chown(work_dir, uid, uid)  # the program's cwd; writable by it, nothing else is ours
    return work_dir


def _collect(proc: subprocess.Popen, limits: Limits, start: float) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout/stderr until both close, the wall time passes or stdout passes the cap; kill the group then."""
    deadline = start + limits.wall_s
    buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    stdout_fd = proc.stdout.fileno()
    open_fds = set(buffers)
    timed_out = exceeded = False
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(list(open_fds), [], [], remaining)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                continue
            buffer = buffers[fd]
            if fd == stdout_fd:
                buffer += chunk
                if len(buffer) > limits.max_output_bytes:
                    exceeded = True
            elif len(buffer) < 65536:
                buffer += chunk[: 65536 - len(buffer)]
        if exceeded:
            break
    return bytes(buffers[stdout_fd]), bytes(buffers[proc.stderr.fileno()]), timed_out, exceeded


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _end(proc: subprocess.Popen, mode: str) -> None:
    """Leave nothing of a run behind, then reap it.

    Namespaces: SIGKILL the PID namespace's first process; the kernel kills every other process of the
    namespace before that one can be reaped, and ``unshare`` exits only after reaping it, so once ``unshare``
    is reaped the whole namespace is gone. Both layers: SIGKILL the process group (what stayed in it)."""
    if proc.poll() is None and mode == "namespaces":
        for child in _child_pids(proc.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    _kill_group(proc)
    proc.stdout.close()
    proc.stderr.close()
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        logger.error("sandbox: process %d not reaped %.0fs after SIGKILL", proc.pid, KILL_GRACE_S)


def _run(source: str, stdin: str, limits: Limits, mode: str, uid: int | None = None) -> RunResult:
    uid = sandbox_uid() if uid is None else uid
    interpreter = default_interpreter()
    work_dir = _prepare_work_dir(source, stdin, mode, uid)
    spec = {**asdict(limits), "work_dir": work_dir, "interpreter": interpreter, "uid": uid}
    argv, cwd = _command(mode, spec, limits, work_dir)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=True, start_new_session=True,
                                env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"})
        try:
            stdout, stderr, timed_out, exceeded = _collect(proc, limits, start)
            if not (timed_out or exceeded):  # outputs closed: the program may still be running
                try:
                    proc.wait(timeout=max(0.0, start + limits.wall_s - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            _end(proc, mode)
        killed = timed_out or exceeded
        return RunResult(stdout=stdout.decode("utf-8", "replace"), stderr=stderr.decode("utf-8", "replace"),
                         returncode=None if killed else proc.returncode, timed_out=timed_out,
                         output_exceeded=exceeded, wall_s=time.monotonic() - start, isolation=mode)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def run_python(source: str, stdin: str = "", limits: Limits | None = None) -> RunResult:
    """Run ``source`` as a Python program with ``stdin``; never raises on what the program does."""
    return _run(source, stdin, limits or Limits(), isolation())


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--stage2":
    try:
        _stage2(json.loads(sys.argv[2]))
    except BaseException as error:  # noqa: BLE001
        sys.stderr.write(f"sandbox stage2: {error!r}\n")
        os._exit(125)
