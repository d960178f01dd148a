"""Verifiable math reward for veRL 0.9.1 (``reward.custom_reward_function.path/name=compute_score``).

A response is correct when its final answer -- the content of the **last** complete ``\\boxed{...}`` (or
``\\fbox{...}``), else the text after the last ``Answer:`` line -- is equivalent to the ground truth under
math-verify. (math-verify on a whole response would take the first boxed answer, not the last.)

Hostile outputs cannot hang a reward worker:

* extraction is a single linear pass in this process (a brace-matching stack), never a regex with
  backtracking and never a parser;
* answers longer than ``MAX_ANSWER_CHARS`` are scored wrong without parsing;
* math-verify itself runs in a pool of helper subprocesses (this file run as ``--serve``). In the helper's
  main thread math-verify's own signal-based timeouts work; on top of that the caller waits at most
  ``timeout_s`` and kills a helper that has not answered (a C-level big-integer power is not interruptible by
  signals). veRL calls ``compute_score`` from executor threads, where math-verify's timeouts do nothing --
  that is why the checking is moved out of the calling process.

Config (``reward.custom_reward_function.reward_kwargs`` in 0.9.1, merged into every call):
``reward_style``: ``"binary"`` (1 / 0, default) or ``"signed"`` (+1 / -1); ``timeout_s`` (default 10).

Returns ``{"score": float, "acc": float}``; ``acc`` is 1.0 / 0.0 whatever the style.

Environment: ``RESRL_MATH_VERIFY_WORKERS`` bounds the helper processes per calling process (default 4).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import selectors
import subprocess
import sys
import threading
import time

MAX_ANSWER_CHARS = 1000  # longer "answers" are scored wrong without parsing
MAX_GROUND_TRUTH_CHARS = 1000
DEFAULT_TIMEOUT_S = 10.0  # per sample: waiting for a free helper, then again for its answer
HELPER_STARTUP_TIMEOUT_S = 60.0  # first start imports sympy
_INNER_TIMEOUT_S = 3  # math-verify's own (signal) timeouts inside the helper, each for parse and verify

REWARD_STYLES = {"binary": (1.0, 0.0), "signed": (1.0, -1.0)}
_BOX_COMMANDS = ("\\boxed", "\\fbox")


# --- answer extraction (pure Python, linear time) -------------------------------------------------------------


def _matching_braces(text: str) -> dict[int, int]:
    """Map the index of every ``{`` that is closed to the index of its ``}`` (escaped ``\\{`` ignored)."""
    matches, stack = {}, []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in "{}":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            matches[stack.pop()] = i
        i += 1
    return matches


def _box_positions(text: str) -> list[tuple[int, int]]:
    """``(start, end_of_command)`` of every ``\\boxed`` / ``\\fbox`` occurrence, in text order."""
    positions = []
    for command in _BOX_COMMANDS:
        start = text.find(command)
        while start != -1:
            positions.append((start, start + len(command)))
            start = text.find(command, start + 1)
    return sorted(positions)


def extract_last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (balanced braces), or of a trailing ``\\boxed 5``."""
    positions = _box_positions(text)
    if not positions:
        return None
    matches = _matching_braces(text)
    for _start, end in reversed(positions):
        j = end
        while j < len(text) and text[j] == " ":
            j += 1
        if j < len(text) and text[j] == "{":
            if j in matches:
                return text[j + 1 : matches[j]].strip()
            continue  # unbalanced: try the previous box
        if j > end:  # "\boxed 5": one token, up to whitespace or "$"
            token = []
            while j < len(text) and not text[j].isspace() and text[j] != "$":
                token.append(text[j])
                j += 1
            if token:
                return "".join(token)
    return None


def extract_answer_line(text: str) -> str | None:
    """Text after the last ``Answer:`` (case-insensitive) on its line, without ``$`` and a final period."""
    lowered = text.lower()
    pos = lowered.rfind("answer:")
    if pos == -1:
        return None
    line = text[pos + len("answer:") :].split("\n", 1)[0].strip()
    line = line.strip("$ ").rstrip(".").strip("$ ")
    return line or None


def extract_answer(text: str) -> str | None:
    """The final answer of a response: last complete boxed content, else the last ``Answer:`` line."""
    boxed = extract_last_boxed(text)
    return boxed if boxed is not None else extract_answer_line(text)


def _normalise(answer: str) -> str:
    return "".join(answer.split()).strip("$").rstrip(".")


# --- verification in helper subprocesses ----------------------------------------------------------------------


def _serve() -> None:
    """Helper loop: one JSON request per stdin line -> one JSON ``{"ok": bool}`` line on the protocol fd."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    from math_verify import parse, verify

    protocol.write('{"ready": true}\n')
    for line in sys.stdin:
        ok = False
        try:
            request = json.loads(line)
            gold = parse("\\boxed{" + request["gold"] + "}", parsing_timeout=_INNER_TIMEOUT_S)
            pred = parse("\\boxed{" + request["pred"] + "}", parsing_timeout=_INNER_TIMEOUT_S)
            ok = bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=_INNER_TIMEOUT_S))
        except BaseException:  # noqa: BLE001 - RecursionError, sympy errors, timeouts: all mean "not verified"
            ok = False
        protocol.write(json.dumps({"ok": ok}) + "\n")


class _Helper:
    """One ``--serve`` subprocess; used by one thread at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.ready = False

    def _read_line(self, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        buffer = b""
        # epoll/poll, not select(): a reward worker may hold more than 1024 descriptors
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while not buffer.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None  # helper died
                buffer += chunk
        return buffer

    def check(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """True/False from math-verify, or None when the helper did not answer within ``timeout_s``.

        A fresh helper first gets ``HELPER_STARTUP_TIMEOUT_S`` to import math-verify; ``timeout_s`` counts
        from the request.
        """
        if not self.ready:
            if self._read_line(time.monotonic() + HELPER_STARTUP_TIMEOUT_S) is None:
                return None
            self.ready = True
        deadline = time.monotonic() + timeout_s
        try:
            self.proc.stdin.write((json.dumps({"gold": gold, "pred": pred}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            return None
        line = self._read_line(deadline)
        return None if line is None else bool(json.loads(line)["ok"])

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass


class _HelperPool:
    """At most ``size`` helpers, started lazily, shared by all threads of this process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.idle: queue.LifoQueue[_Helper] = queue.LifoQueue()
        self.started = 0
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def acquire(self, timeout: float) -> _Helper | None:
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            if self.started < self.size:
                self.started += 1
                return _Helper()
        try:
            return self.idle.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def release(self, helper: _Helper, healthy: bool) -> None:
        if healthy:
            self.idle.put(helper)
            return
        helper.kill()
        self.idle.put(_Helper())  # replacement starts now, while its future caller is still elsewhere

    def close(self) -> None:
        while True:
            try:
                self.idle.get_nowait().kill()
            except queue.Empty:
                return


_POOL: _HelperPool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _HelperPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():  # fresh pool after a fork
            _POOL = _HelperPool(int(os.environ.get("RESRL_MATH_VERIFY_WORKERS", "4")))
            atexit.register(_POOL.close)
        return _POOL


def answers_match(pred: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether ``pred`` and ``gold`` (answer strings, no ``\\boxed``) are equivalent; False on timeout."""
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_GROUND_TRUTH_CHARS:
        return False
    if _normalise(pred) == _normalise(gold):
        return True
    pool = _pool()
    helper = pool.acquire(timeout=timeout_s)  # all helpers busy: wait at most one timeout for one
    if helper is None:
        return False
    result = None
    try:
        result = helper.check(gold, pred, timeout_s)
    finally:
        pool.release(helper, healthy=result is not None)
    return bool(result)


# --- veRL entry point ----------------------------------------------------------------------------------------


def compute_score(data_source, solution_str, ground_truth, extra_info=None, reward_style="binary",
                  timeout_s=DEFAULT_TIMEOUT_S, **kwargs) -> dict:
    """Score one response: ``{"score": 1/0 (binary) or +1/-1 (signed), "acc": 1.0/0.0}``.

    Never raises on model output or ground truth; an unknown ``reward_style`` (a config error) raises."""
    if reward_style not in REWARD_STYLES:
        raise ValueError(f"reward_style must be one of {sorted(REWARD_STYLES)}, got {reward_style!r}")
    correct_score, wrong_score = REWARD_STYLES[reward_style]
    try:
        gold = str(ground_truth).strip()
        gold = extract_last_boxed(gold) or gold  # tolerate "\boxed{...}" ground truths
        pred = extract_answer(str(solution_str))
        correct = pred is not None and answers_match(pred, gold, float(timeout_s))
    except Exception:  # noqa: BLE001 - a reward worker must never die on one sample
        correct = False
    return {"score": correct_score if correct else wrong_score, "acc": 1.0 if correct else 0.0}


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
