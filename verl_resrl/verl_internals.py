"""Every veRL 0.9.1 internal this package depends on, in one place.

veRL is pinned to ``>=0.9.1,<0.10`` but the names below are not veRL's public API. Each entry says what the
package wraps or reads and why. ``tests/test_verl_internals.py`` resolves every entry and checks its shape
(the parameters the package relies on), so a veRL release that moves or changes one of them fails a test
instead of failing a training run.

Code elsewhere in the package gets these objects through :func:`resolve`, never by importing them directly.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class VerlInternal:
    module: str
    attr: str  # dotted path inside the module, e.g. "FSDPEngine.forward_step"
    why: str
    params: tuple[str, ...] = field(default=())  # parameter names that must exist (in order) when callable

    def resolve(self):
        obj = importlib.import_module(self.module)
        for part in self.attr.split("."):
            obj = getattr(obj, part)
        return obj

    def check(self) -> None:
        """Raise ``AssertionError`` describing the mismatch if the internal changed shape."""
        obj = self.resolve()
        if self.params:
            names = list(inspect.signature(obj).parameters)
            missing = [p for p in self.params if p not in names]
            assert not missing, f"{self.module}.{self.attr}: parameters {missing} not in {names}"
            order = [names.index(p) for p in self.params]
            assert order == sorted(order), f"{self.module}.{self.attr}: parameter order changed: {names}"


INTERNALS: dict[str, VerlInternal] = {}


def declare(name: str, module: str, attr: str, why: str, params: tuple[str, ...] = ()) -> VerlInternal:
    internal = VerlInternal(module, attr, why, params)
    INTERNALS[name] = internal
    return internal


def resolve(name: str):
    return INTERNALS[name].resolve()


# --- declarations: one per internal the package touches -----------------------------------------------------
