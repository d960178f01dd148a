"""Diagnostics that check ResRL's premise on a user's own model (torch + transformers only, no veRL).

* :func:`head_interference` -- per token, the LM-head gradient's inner product with the mean gradient of the
  group's correct-response tokens (closed form, chunked over the vocabulary);
* :func:`full_model_interference` -- the same over every parameter, for all tokens at once (one backward and
  one forward-mode JVP per direction);
* ``python -m verl_resrl.diagnostics probe`` -- samples a model on a task, measures both per wrong-response token
  and compares them with ResRL's residual weights (:mod:`verl_resrl.diagnostics.probe`).
"""

from verl_resrl.diagnostics.interference import full_model_interference, head_interference

__all__ = ["head_interference", "full_model_interference"]
