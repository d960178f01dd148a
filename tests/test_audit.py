"""verl_resrl.audit: recomputing a dump from a model's states finds right residuals right and wrong ones wrong."""

import dataclasses

import torch

from tiny_models import tiny_qwen2
from verl_resrl import ResRLConfig, audit, compute_residuals
from verl_resrl.integration.dump import write_step_dump


def _dump(tmp_path, model, shift=0):
    """A dump of 3 groups x 4 responses whose residuals come from the states ``shift`` positions late."""
    gen = torch.Generator().manual_seed(0)
    config = ResRLConfig(rank=4, oversample=4, subspace="exact")
    ids, lengths, uids = [], [], []
    for g in range(3):
        prompt = torch.randint(1, 64, (5,), generator=gen)
        for _ in range(4):
            n = int(torch.randint(3, 12, (1,), generator=gen))
            ids.append(torch.cat([prompt, torch.randint(1, 64, (n,), generator=gen)]))
            lengths.append(n)
            uids.append(f"g{g}")
    positive = torch.tensor([i % 4 < 2 for i in range(len(uids))])
    hidden = torch.zeros(len(ids), max(lengths), model.config.hidden_size)
    mask = torch.zeros(len(ids), max(lengths), dtype=torch.bool)
    with torch.no_grad():
        for i, (seq, n) in enumerate(zip(ids, lengths)):
            states = model(input_ids=seq[None], output_hidden_states=True).hidden_states[-2][0]
            end = len(seq) - 1 + shift
            hidden[i, :n], mask[i, :n] = states[end - n : end], True
    res = compute_residuals(hidden, mask, uids, positive, config)
    path = write_step_dump(str(tmp_path), 1, ids, torch.tensor(lengths), uids, positive, res.residual,
                           res.has_residual, config)
    return audit.load_dump(path)


def test_audit_accepts_the_states_predicting_each_response_token(tmp_path):
    model = tiny_qwen2(hidden=32, layers=3)
    result = audit.compare(dump := _dump(tmp_path, model), audit.recompute(model, dump)[0])
    assert result.ok() and result.weighted_tokens > 0 and result.max_rel_diff < 1e-5, result


def test_audit_rejects_residuals_from_a_window_one_token_off(tmp_path):
    model = tiny_qwen2(hidden=32, layers=3)
    dump = _dump(tmp_path, model, shift=1)
    result = audit.compare(dump, audit.recompute(model, dump)[0])
    assert not result.ok() and result.max_rel_diff > 1e-2, result


def test_audit_subspace_override(tmp_path):
    model = tiny_qwen2(hidden=32, layers=3)
    dump = _dump(tmp_path, model)
    randomized = dataclasses.replace(ResRLConfig.from_dict(dump["config"]), subspace="randomized", power_iters=0,
                                     oversample=0)
    result = audit.compare(dump, audit.recompute(model, dump, randomized)[0])
    assert result.has_mismatch == 0 and result.max_rel_diff > 1e-4, result  # a cruder subspace shows
