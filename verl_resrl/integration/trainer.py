"""Driver-side ResRL wiring in the V1 (``PPOTrainer``) and legacy (``RayPPOTrainer``) trainers.

* ``_balance_batch``: whole prompt groups per data-parallel rank, shards balanced by workload;
* ``_compute_old_log_prob``: tag samples with their group index and positivity, ask the actor for residuals
  (with ``resrl.mask_think_tokens``, the settings sent carry the think tag ids of the trainer's tokenizer),
  and (legacy) keep the returned residual fields in the batch;
* V1 ``_compute_advantage``: fetch the residual fields from TransferQueue for ``compute_advantage``;
* with ``resrl.dump_dir`` set, write each step's residuals to disk (:mod:`verl_resrl.integration.dump`).

Each wrapper passes straight through to veRL unless ``algorithm.adv_estimator == "resrl"``.
"""

from __future__ import annotations

import logging

import torch

from verl_resrl import verl_internals
from verl_resrl.core.advantage import positive_responses
from verl_resrl.core.groups import group_index
from verl_resrl.integration.advantage import FIELDS, TOKEN_FIELDS, pending_inputs
from verl_resrl.integration.dump import write_step_dump
from verl_resrl.integration.patching import when_imported, wrap
from verl_resrl.integration.settings import resrl_config, uses_resrl, with_think_token_ids
from verl_resrl.core.partition import group_balanced_partition

logger = logging.getLogger(__name__)

REQUEST_KEY = "resrl"  # non-tensor key carrying the settings to the actor; its presence arms the capture
TAG_FIELDS = ("resrl_group", "resrl_positive")


def _settings(trainer):
    """The run's ResRL settings with the think tag ids resolved from the trainer's tokenizer (once per trainer)."""
    settings = resrl_config(trainer.config.algorithm)
    if not settings.mask_think_tokens:
        return settings
    resolved = getattr(trainer, "_resrl_settings", None)
    if resolved is None:
        resolved = trainer._resrl_settings = with_think_token_ids(settings, trainer.tokenizer)
    return resolved


def _sample_tags(uids, scores, response_mask, algorithm) -> dict[str, torch.Tensor]:
    settings = resrl_config(algorithm)
    norm = bool(algorithm.get("norm_adv_by_std_in_grpo", True))
    positive = positive_responses(scores.float(), response_mask.float(), uids, settings, norm)
    index, _ = group_index(uids)
    return {"resrl_group": index, "resrl_positive": positive.long()}


def _balance(uids, seqlens: torch.Tensor, dp_size: int, metrics: dict, prefix: str) -> list[int]:
    calculate_workload = verl_internals.resolve("calculate_workload")
    log_seqlen_unbalance = verl_internals.resolve("log_seqlen_unbalance")
    workloads = calculate_workload(seqlens)
    shards, split = group_balanced_partition(uids, [float(w) for w in workloads], dp_size)
    metrics.update(log_seqlen_unbalance(seqlen_list=seqlens.tolist(), partitions=shards, prefix=prefix))
    metrics["resrl/split_groups"] = float(split)
    if split:
        logger.warning("ResRL: %d prompt group(s) could not be kept on one rank this step (unequal group sizes); "
                       "their residuals use the part of the group on each rank", split)
    return [i for shard in shards for i in shard]


# ------------------------------------------------------------------------------------------------ V1 trainer
def _v1_balance_batch(original):
    def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        if not uses_resrl(self.config):
            return original(self, batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)
        worker_group = self.actor_rollout_wg
        if "actor" not in worker_group._dispatch_info:
            worker_group._dispatch_info["actor"] = worker_group._query_dispatch_info("actor")
        dp_size = max(worker_group._dispatch_info["actor"]) + 1
        upsample = verl_internals.resolve("upsample_batch_to_divisible_size")
        batch = upsample(batch, self._get_required_batch_multiple(dp_size), self.tokenizer.eos_token_id)
        seqlens = torch.tensor([tag["seq_len"] for tag in batch.tags], dtype=torch.int64)
        uids = [key.rsplit("_", 2)[0] for key in batch.keys]
        batch.reorder(_balance(uids, seqlens, dp_size, metrics, logging_prefix))
        return batch

    return _balance_batch


def _v1_compute_old_log_prob(original):
    def _compute_old_log_prob(self, batch, metrics):
        if not uses_resrl(self.config):
            return original(self, batch, metrics)
        import transfer_queue as tq

        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["uid", "rm_scores", "response_mask"])
        uids = list(data["uid"].tolist()) if hasattr(data["uid"], "tolist") else list(data["uid"])
        padded = data.select("rm_scores", "response_mask").to_padded_tensor()
        tags = _sample_tags(uids, padded["rm_scores"], padded["response_mask"], self.config.algorithm)
        from tensordict import TensorDict

        batch = tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                                fields=TensorDict(tags, batch_size=len(uids)))
        batch.extra_info[REQUEST_KEY] = _settings(self).to_dict()
        try:
            output = original(self, batch, metrics)
        finally:
            batch.extra_info.pop(REQUEST_KEY, None)
        getattr(output, "extra_info", {}).pop(REQUEST_KEY, None)
        return output

    return _compute_old_log_prob


def _v1_compute_advantage(original):
    def _compute_advantage(self, batch, metrics):
        if not uses_resrl(self.config):
            return original(self, batch, metrics)
        import transfer_queue as tq

        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=list(FIELDS))
        padded = data.to_padded_tensor()
        settings = _settings(self)
        if settings.dump_dir is not None:
            _v1_dump(tq, batch, padded, self.global_steps, settings)
        token = pending_inputs.set({k: padded[k] for k in FIELDS})
        try:
            return original(self, batch, metrics)
        finally:
            pending_inputs.reset(token)

    return _compute_advantage


def _v1_dump(tq, batch, padded, step: int, settings) -> None:
    """The step's dump from TransferQueue: V1 stores each sample's prompt + response ids unpadded."""
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                           select_fields=["uid", "input_ids", "response_mask"])
    uids = list(data["uid"].tolist()) if hasattr(data["uid"], "tolist") else list(data["uid"])
    mask = data["response_mask"]
    lengths = mask.offsets().diff() if mask.is_nested else torch.full((mask.shape[0],), mask.shape[1])
    ids = data["input_ids"]
    write_step_dump(settings.dump_dir, step, list(ids.unbind()), lengths, uids, padded["resrl_positive"],
                    padded["resrl_residual"], padded["resrl_has_residual"], settings)


# -------------------------------------------------------------------------------------------- legacy trainer
def _legacy_balance_batch(original):
    def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        if not uses_resrl(self.config):
            return original(self, batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)
        mask = batch.batch["attention_mask"]
        seqlens = mask.view(mask.shape[0], -1).sum(-1)
        dp_size = self._get_dp_size(self.actor_rollout_wg, "actor")
        order = _balance(list(batch.non_tensor_batch["uid"]), seqlens, dp_size, metrics, logging_prefix)
        batch.reorder(torch.tensor(order))

    return _balance_batch


def _legacy_compute_old_log_prob(original):
    def _compute_old_log_prob(self, batch):
        if not uses_resrl(self.config):
            return original(self, batch)
        scores = batch.batch["rm_scores"] if "rm_scores" in batch.batch.keys() else batch.batch["token_level_scores"]
        uids = list(batch.non_tensor_batch["uid"])
        tags = _sample_tags(uids, scores, batch.batch["response_mask"], self.config.algorithm)
        for key, value in tags.items():
            batch.batch[key] = value
        batch.meta_info[REQUEST_KEY] = _settings(self).to_dict()

        worker_group = self.actor_rollout_wg
        call = worker_group.compute_log_prob
        outputs = []

        def compute_log_prob(*args, **kwargs):
            out = call(*args, **kwargs)
            outputs.append(out)
            return out

        worker_group.compute_log_prob = compute_log_prob
        try:
            old_log_prob, mfu = original(self, batch)
        finally:
            worker_group.compute_log_prob = call
            batch.meta_info.pop(REQUEST_KEY, None)
            for key in TAG_FIELDS:
                batch.batch.pop(key, None)
        width = batch.batch["response_mask"].shape[1]
        fields = actor_fields(outputs[-1], width)
        for key, value in fields.items():
            old_log_prob.batch[key] = value
        settings = _settings(self)
        if settings.dump_dir is not None:
            _legacy_dump(batch, fields, self.global_steps, settings)
        return old_log_prob, mfu

    return _compute_old_log_prob


def _legacy_dump(batch, fields: dict, step: int, settings) -> None:
    """The step's dump from the legacy batch: left-padded prompts + right-padded responses, cut by attention."""
    attention = batch.batch["attention_mask"].bool()
    width = batch.batch["responses"].shape[1]
    ids = [row[keep] for row, keep in zip(batch.batch["input_ids"], attention)]
    write_step_dump(settings.dump_dir, step, ids, attention[:, -width:].sum(dim=1), list(batch.non_tensor_batch["uid"]),
                    fields["resrl_positive"], fields["resrl_residual"], fields["resrl_has_residual"], settings)


def actor_fields(output, width: int) -> dict[str, torch.Tensor]:
    """The ResRL fields of the actor's output as padded ``(B, width)`` / ``(B,)`` tensors."""
    fields = {}
    for key in FIELDS:
        value = output[key]
        if key in TOKEN_FIELDS:
            value = torch.nested.to_padded_tensor(value, 0.0, output_size=(value.size(0), width)) if value.is_nested \
                else value
        fields[key] = value
    return fields


def register() -> None:
    def patch_v1(module):
        cls = module.PPOTrainer
        wrap(cls, "_balance_batch", _v1_balance_batch, "PPOTrainer._balance_batch")
        wrap(cls, "_compute_old_log_prob", _v1_compute_old_log_prob, "PPOTrainer._compute_old_log_prob")
        wrap(cls, "_compute_advantage", _v1_compute_advantage, "PPOTrainer._compute_advantage")

    def patch_legacy(module):
        cls = module.RayPPOTrainer
        wrap(cls, "_balance_batch", _legacy_balance_batch, "RayPPOTrainer._balance_batch")
        wrap(cls, "_compute_old_log_prob", _legacy_compute_old_log_prob, "RayPPOTrainer._compute_old_log_prob")

    when_imported("verl.trainer.ppo.v1.trainer_base", patch_v1)
    when_imported("verl.trainer.ppo.ray_trainer", patch_legacy)
