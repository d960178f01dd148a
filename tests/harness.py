"""What several test files share: a script from outside the package loaded as a module, a free local port, a
demo policy small enough to build in a second."""

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


def tiny_policy_config():
    """A demo :class:`~verl_resrl.demo.policy.PolicyConfig` that builds in about a second (a 1-layer model, 2
    warm-up steps)."""
    from verl_resrl.demo.policy import PolicyConfig

    return PolicyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=1, batch_size=8, max_steps=2, eval_every=2, eval_samples=2,
                        n_train=64, n_dev=4, target_pass1=1.0)
