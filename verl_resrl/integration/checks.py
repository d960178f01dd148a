"""Refuse unsupported ResRL set-ups in the driver, before Ray starts any worker."""

from __future__ import annotations

import functools

from verl_resrl.integration.patching import when_imported, wrap
from verl_resrl.integration.settings import check_config, uses_resrl


def _wrap_validate_config(original):
    @functools.wraps(original)
    def validate_config(config, *args, **kwargs):
        if uses_resrl(config):
            check_config(config)
        return original(config, *args, **kwargs)

    return validate_config


def register() -> None:
    when_imported("verl.utils.config", lambda m: wrap(m, "validate_config", _wrap_validate_config, "validate_config"))
