"""What several test files share: a script from outside the package loaded as a module, a free local port."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(path, name: str | None = None):
    """Execute the file ``path`` as a module named ``name`` (default ``<stem>_under_test``).

    The module is registered in ``sys.modules`` before it runs: dataclasses look their module up there.
    """
    path = Path(path)
    name = name or f"{path.stem}_under_test"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_benchmark(name: str, module_name: str | None = None):
    """``benchmarks/<name>.py`` as a module, with ``benchmarks/`` importable while it loads (its sibling imports)."""
    bench = REPO / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        return load_script(bench / f"{name}.py", module_name or name)
    finally:
        sys.path.remove(str(bench))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
