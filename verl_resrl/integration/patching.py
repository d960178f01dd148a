"""Wrapping veRL functions in place, idempotently, and only once their module is imported by veRL itself."""

from __future__ import annotations

import functools
from typing import Callable

from verl_resrl import verl_internals
from verl_resrl._import_hook import when_imported

__all__ = ["when_imported", "wrap", "is_wrapped", "add_to_registry"]

MARK = "__verl_resrl_wrapped__"


def wrap(owner, attr: str, make_wrapper: Callable, internal: str) -> None:
    """Replace ``owner.attr`` by ``make_wrapper(original)`` unless already wrapped.

    ``internal`` names the declaration in :mod:`verl_resrl.verl_internals` that says what is wrapped and why.
    """
    if internal not in verl_internals.INTERNALS:
        raise KeyError(f"undeclared veRL internal {internal!r}")
    original = getattr(owner, attr)
    if is_wrapped(original):
        return
    wrapper = make_wrapper(original)
    if not getattr(wrapper, "__wrapped__", None):
        functools.update_wrapper(wrapper, original)
    setattr(wrapper, MARK, True)
    setattr(owner, attr, wrapper)


def is_wrapped(fn) -> bool:
    return bool(getattr(fn, MARK, False))


def add_to_registry(internal: str, key: str, value) -> None:
    """``registry[key] = value`` for the veRL registry dict ``internal``, once its module is imported.

    Setting the entry directly (instead of veRL's ``register_*`` decorators, which raise when a name is
    registered twice) keeps repeated plugin imports harmless.
    """

    def add(_module):
        registry = verl_internals.resolve(internal)
        if registry.get(key) is not value:
            registry[key] = value

    when_imported(verl_internals.INTERNALS[internal].module, add)
