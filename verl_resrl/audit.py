"""Audit a run's residuals: recompute a ``resrl.dump_dir`` step dump offline and compare.

    python -m verl_resrl.audit --model MODEL_DIR DUMP_DIR/step_1.pt [--subspace exact]

``MODEL_DIR`` must hold the weights the step ran with: the starting model for step 1 (a checkpoint saved at
step N-1, converted to a Hugging Face directory, for step N). For every dumped sequence the audit runs a plain
Hugging Face forward with ``output_hidden_states=True`` (no packing, no padding, no sharding), takes
``hidden_states[hidden_layer]`` at the positions predicting the response tokens (``[-n-1:-1]`` for a response
of n tokens), computes the residuals with :func:`verl_resrl.compute_residuals` and the run's settings (with
``mask_think_tokens``, the reasoning spans found in the dumped ids are left out of its mask), and
reports which tokens got a residual in one but not the other and the largest difference, relative to
``|residual| + `` the step's largest residual. With ``subspace=randomized`` both sides draw the same seeded
random directions, so they agree to float rounding where the spectrum has a gap at the rank; ``--subspace
exact`` recomputes with the full SVD instead (compare with a run that used ``exact`` for a strict check).
Uses only torch and transformers (no veRL).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass

import torch

from verl_resrl.core.config import ResRLConfig
from verl_resrl.core.residual import Residuals, compute_residuals
from verl_resrl.core.think import response_think_masks


@dataclass(frozen=True)
class AuditResult:
    responses: int
    weighted_tokens: int  # tokens with a residual in the dump
    has_mismatch: int  # tokens with a residual on one side only
    max_rel_diff: float  # max |dump - recomputed| / (|recomputed| + max |recomputed|) over weighted tokens

    def ok(self, rtol: float = 1e-4) -> bool:
        return self.has_mismatch == 0 and self.max_rel_diff <= rtol


def load_dump(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def response_states(model, dump: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, H)`` states of the dump's ``hidden_layer`` at each response's positions, and the ``(B, T)`` mask."""
    layer = int(dump["config"]["hidden_layer"])
    lengths = [int(n) for n in dump["response_length"]]
    width = max(lengths, default=0)
    hidden = torch.zeros(len(lengths), width, model.config.hidden_size)
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    with torch.no_grad():
        for i, (ids, n) in enumerate(zip(dump["input_ids"], lengths)):
            if n == 0:
                continue
            states = model(input_ids=ids.reshape(1, -1), output_hidden_states=True).hidden_states[layer][0]
            hidden[i, :n] = states[-n - 1 : -1].float()
            mask[i, :n] = True
    return hidden, mask


def think_masks(dump: dict, config: ResRLConfig, width: int) -> torch.Tensor:
    """``(B, width)`` bool: the response tokens in reasoning spans (``mask_think_tokens``), from the dumped ids."""
    if config.think_token_ids is None:
        raise ValueError("the dump's settings have mask_think_tokens on but no think_token_ids")
    lengths = [int(n) for n in dump["response_length"]]
    out = torch.zeros(len(lengths), width, dtype=torch.bool)
    for i, think in enumerate(response_think_masks(dump["input_ids"], lengths, *config.think_token_ids)):
        out[i, : think.numel()] = think
    return out


def dumped_residuals(dump: dict, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The dump's per-response residual lists as padded ``(B, width)`` float32 / bool tensors."""
    residual = torch.zeros(len(dump["residual"]), width)
    has = torch.zeros(len(dump["residual"]), width, dtype=torch.bool)
    for i, (r, h) in enumerate(zip(dump["residual"], dump["has_residual"])):
        residual[i, : len(r)], has[i, : len(h)] = r, h
    return residual, has


def recompute(model, dump: dict, config: ResRLConfig | None = None) -> tuple[Residuals, torch.Tensor, torch.Tensor]:
    """Residuals of the dump's responses from ``model``'s states; ``config`` defaults to the run's settings."""
    config = config or ResRLConfig.from_dict(dump["config"])
    hidden, mask = response_states(model, dump)
    if config.mask_think_tokens:
        mask &= ~think_masks(dump, config, mask.shape[1])
    return compute_residuals(hidden, mask, dump["uid"], dump["positive"], config), hidden, mask


def compare(dump: dict, recomputed: Residuals) -> AuditResult:
    got, got_has = dumped_residuals(dump, recomputed.residual.shape[1])
    want, want_has = recomputed.residual.double(), recomputed.has_residual
    both = got_has & want_has
    scale = float(want[both].abs().max()) if bool(both.any()) else 0.0
    diff = (got.double() - want).abs()[both] / (want[both].abs() + scale) if scale > 0 else torch.zeros(0)
    return AuditResult(
        responses=len(dump["uid"]),
        weighted_tokens=int(got_has.sum()),
        has_mismatch=int((got_has != want_has).sum()),
        max_rel_diff=float(diff.max()) if diff.numel() else 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Recompute a resrl.dump_dir step dump and compare.")
    parser.add_argument("dump", help="a step_<N>.pt file written by +algorithm.resrl.dump_dir")
    parser.add_argument("--model", required=True, help="Hugging Face model directory with the step's weights")
    parser.add_argument("--subspace", choices=["exact", "randomized"], help="override the run's subspace method")
    parser.add_argument("--rtol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM

    dump = load_dump(args.dump)
    config = ResRLConfig.from_dict(dump["config"])
    if args.subspace:
        config = dataclasses.replace(config, subspace=args.subspace)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    result = compare(dump, recompute(model, dump, config)[0])
    print(json.dumps({**dataclasses.asdict(result), "ok": result.ok(args.rtol), "step": dump.get("step")}))
    return 0 if result.ok(args.rtol) else 1


if __name__ == "__main__":
    sys.exit(main())
