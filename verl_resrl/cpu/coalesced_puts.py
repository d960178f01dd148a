"""Group commit for the V1 agent loop's TransferQueue writes.

veRL's V1 agent-loop worker (``AgentLoopWorkerTQ``) writes every finished sample with its own
``tq.async_kv_batch_put`` and every prompt's status (``running`` / ``finished`` / ``failure``) with its own
``tq.async_kv_put``: 144 writes per step for 16 prompts x 8 samples, each a few round trips through the
TransferQueue controller and storage actors. On a GPU node that is noise; on two CPU cores the writes queue up
behind one another (measured: each takes 0.3-0.6 s end to end, the last one lands ~1 s after the last token) and
they dominate the step's generation time.

:class:`CoalescingTransferQueue` stands in for the ``tq`` module inside that worker: writes that are issued while
an earlier write is in flight are merged into one ``async_kv_batch_put`` when it returns (group commit). Each
caller still awaits its own data being stored, so everything ordered by ``await`` in the agent loop (a prompt's
``finished`` status after its samples' data) keeps its order; writes that were concurrent anyway may land in one
batch. Rows are merged only when they have the same columns with the same kinds (tensor dtype and rank, or
non-tensor), so each stored value is what the unmerged write would have stored. Anything else passes through to
TransferQueue unchanged.

Enabled by :func:`verl_resrl.cpu.patches.register` on the CPU backend; ``VERL_RESRL_COALESCE_PUTS=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

COALESCE_ENV = "VERL_RESRL_COALESCE_PUTS"


def coalescing_enabled() -> bool:
    """``$VERL_RESRL_COALESCE_PUTS``: ``1`` (default) or ``0``."""
    raw = os.environ.get(COALESCE_ENV, "1").strip()
    if raw not in ("0", "1"):
        raise ValueError(f"{COALESCE_ENV}={raw!r} must be 0 or 1")
    return raw == "1"


class DeferredRows:
    """The per-sample dicts of one write, kept as rows until they are merged with other writes' rows."""

    def __init__(self, rows: list[dict[str, Any]], to_tensordict: Callable):
        self.rows = rows
        self._to_tensordict = to_tensordict

    def build(self):
        return self._to_tensordict(self.rows)


def row_signature(row: dict[str, Any]) -> tuple:
    """Columns and their kinds; rows with equal signatures build the same column types together and alone."""
    return tuple(
        (key, (value.dtype, value.dim(), value.is_nested) if isinstance(value, torch.Tensor) else None)
        for key, value in row.items()
    )


@dataclass
class _Write:
    keys: list[str]
    partition_id: str
    tags: list[dict[str, Any]]
    rows: DeferredRows | None  # None: a tags-only write
    future: asyncio.Future

    def group(self) -> tuple:
        """Writes of one group can be sent as one."""
        if self.rows is None:
            return (self.partition_id, "tags")
        signatures = {row_signature(row) for row in self.rows.rows}
        if len(signatures) != 1:  # mixed rows: built alone, as the unmerged write would be
            return (self.partition_id, "alone", id(self))
        return (self.partition_id, "rows", signatures.pop())


@dataclass
class _Batch:
    writes: list[_Write] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)


class CoalescingTransferQueue:
    """Proxy of the ``transfer_queue`` module that group-commits concurrent key-value writes (one event loop)."""

    def __init__(self, tq_module, to_tensordict: Callable):
        self._tq = tq_module
        self._to_tensordict = to_tensordict
        self._pending: list[_Write] = []
        self._flusher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batch_puts = 0  # TransferQueue writes made (for tests and diagnostics)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_tq", "_to_tensordict"):  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self._tq, name)

    def __reduce__(self):
        # Ray may pickle the agent-loop module's globals with the worker class; a copy starts with no writes
        return (CoalescingTransferQueue, (self._tq, self._to_tensordict))

    def deferred_rows(self, rows: list[dict[str, Any]]) -> DeferredRows:
        """Stands in for ``list_of_dict_to_tensordict`` in the agent loop: the rows are built into a TensorDict
        only when the (possibly merged) write is sent."""
        return DeferredRows(list(rows), self._to_tensordict)

    async def async_kv_put(self, key, partition_id, fields=None, tag=None, data_parser=None):
        if fields is not None or tag is None or data_parser is not None:
            return await self._tq.async_kv_put(
                key=key, partition_id=partition_id, fields=fields, tag=tag, data_parser=data_parser
            )
        return await self._enqueue([key], partition_id, [tag], None)

    async def async_kv_batch_put(self, keys, partition_id, fields=None, tags=None, data_parser=None):
        if not isinstance(fields, DeferredRows) or not fields.rows or tags is None or data_parser is not None:
            if isinstance(fields, DeferredRows):
                fields = fields.build()
            return await self._tq.async_kv_batch_put(
                keys=keys, partition_id=partition_id, fields=fields, tags=tags, data_parser=data_parser
            )
        if not len(keys) == len(tags) == len(fields.rows):
            raise ValueError(f"{len(keys)} keys, {len(tags)} tags and {len(fields.rows)} rows must be as many")
        return await self._enqueue(list(keys), partition_id, list(tags), fields)

    async def _enqueue(self, keys, partition_id, tags, rows):
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:  # the agent loop has one event loop; another one is not merged with it
            fields = None if rows is None else rows.build()
            return await self._tq.async_kv_batch_put(keys=keys, partition_id=partition_id, fields=fields, tags=tags)
        write = _Write(keys, partition_id, tags, rows, loop.create_future())
        self._pending.append(write)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_pending())
        return await write.future

    async def _flush_pending(self) -> None:
        batches: list[_Batch] = []
        try:
            while self._pending:
                writes, self._pending = self._pending, []
                batches = _batches(writes)
                while batches:
                    await self._send(batches[0].writes)
                    batches.pop(0)
        except BaseException as exc:  # cancelled: nobody may be left waiting for a write that will not be sent
            for write in [w for b in batches for w in b.writes] + self._pending:
                if not write.future.done():
                    write.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(
                        f"TransferQueue write abandoned: {exc!r}"))
            self._pending = []
            raise

    async def _send(self, writes: list[_Write]) -> None:
        first = writes[0]
        keys = [k for w in writes for k in w.keys]
        tags = [t for w in writes for t in w.tags]
        try:
            fields = None
            if first.rows is not None:
                fields = self._to_tensordict([r for w in writes for r in w.rows.rows])
            self.batch_puts += 1
            meta = await self._tq.async_kv_batch_put(
                keys=keys, partition_id=first.partition_id, fields=fields, tags=tags
            )
        except Exception as exc:  # noqa: BLE001  (each caller gets what its own write would have raised)
            for w in writes:
                if not w.future.done():
                    w.future.set_exception(exc)
            return
        for w in writes:
            if not w.future.done():
                w.future.set_result(meta)


def _batches(writes: list[_Write]) -> list[_Batch]:
    """Writes grouped by partition and row kind, in first-seen order; a key written twice goes to a later batch."""
    batches: list[tuple[tuple, _Batch]] = []
    for write in writes:
        group = write.group()
        target = None
        for g, batch in batches:
            if g == group and not batch.keys.intersection(write.keys):
                target = batch
                break
        if target is None:
            target = _Batch()
            batches.append((group, target))
        target.writes.append(write)
        target.keys.update(write.keys)
    return [batch for _, batch in batches]
