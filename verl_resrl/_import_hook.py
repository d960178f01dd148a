"""Run a function on a module right after it is first imported.

The CPU backend patches a few veRL modules that are too heavy to import while ``import verl`` loads plugins
(the FSDP engine pulls in transformers; the V1 replay buffer pulls in TransferQueue). Instead of importing them
early, :func:`when_imported` defers the patch until the module is imported by veRL itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from typing import Callable

_pending: dict[str, list[Callable]] = {}
_lock = threading.Lock()


def when_imported(module_name: str, fn: Callable) -> None:
    """Call ``fn(module)`` once ``module_name`` is imported (now, if it already is)."""
    module = sys.modules.get(module_name)
    if module is not None:
        fn(module)
        return
    with _lock:
        _pending.setdefault(module_name, []).append(fn)
        if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _PostImportFinder())


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of modules that have pending callbacks so the callbacks run after ``exec_module``."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _pending:
            return None
        # Ask the remaining finders for the real spec.
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _CallbackLoader(spec.loader, fullname)
        return spec


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader, fullname: str):
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        with _lock:
            callbacks = _pending.pop(self._fullname, [])
        for fn in callbacks:
            fn(module)

    def __getattr__(self, name):  # get_source, is_package, ... for tracebacks and pkgutil
        return getattr(self._loader, name)
