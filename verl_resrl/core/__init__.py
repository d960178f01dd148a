"""The verl-free core of ResRL: pure functions over tensors, importing nothing from veRL.

* :mod:`config`    -- :class:`ResRLConfig`, the settings with their defaults and validation;
* :mod:`groups`    -- prompt groups (``uid``) as indices, per-group seeds and quantiles;
* :mod:`subspace`  -- the positive subspace of a group (exact or seeded randomized truncated SVD);
* :mod:`residual`  -- residual energy of each negative token outside its group's positive subspace;
* :mod:`weights`   -- residuals -> negative-token weights (group-relative robust normalisation);
* :mod:`advantage` -- GRPO advantages with ResRL's weights folded in;
* :mod:`streaming` -- residuals computed group by group as hidden states arrive, micro-batch by micro-batch;
* :mod:`partition` -- data-parallel partition that keeps each prompt group on one rank;
* :mod:`capture`   -- the forward hook that keeps one layer's response-token hidden states;
* :mod:`think`     -- reasoning spans (``<think>`` ... ``</think>``) of token sequences (``mask_think_tokens``).

veRL coupling lives in :mod:`verl_resrl.integration`.
"""
