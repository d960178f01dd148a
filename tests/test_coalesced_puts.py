"""verl_resrl.cpu.coalesced_puts: concurrent TransferQueue writes of the V1 agent loop become batch puts, with the
same stored result as separate writes."""

from __future__ import annotations

import asyncio

import pytest
import torch

from verl_resrl.cpu.coalesced_puts import CoalescingTransferQueue, row_signature


class FakeTransferQueue:
    """Records puts; each takes ``delay`` seconds, so writes issued meanwhile queue up behind it."""

    def __init__(self, delay: float = 0.01):
        self.delay = delay
        self.batch_calls: list[dict] = []
        self.single_calls: list[dict] = []
        self.fail = False
        self.ready = True

    async def async_kv_batch_put(self, keys, partition_id, fields=None, tags=None, data_parser=None):
        self.batch_calls.append(dict(keys=list(keys), partition_id=partition_id, fields=fields, tags=tags))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("storage unit unreachable")
        return ("meta", tuple(keys))

    async def async_kv_put(self, key, partition_id, fields=None, tag=None, data_parser=None):
        self.single_calls.append(dict(key=key, partition_id=partition_id, fields=fields, tag=tag))
        return ("meta", (key,))


def rows_builder(rows):
    return ("td", [r["responses"].tolist() for r in rows])


def sample(i: int, dtype=torch.int64) -> dict:
    return {"responses": torch.arange(i + 1, dtype=dtype), "score": float(i), "extra": {"i": i}}


def data_write(proxy, key, row, partition="train"):
    return proxy.async_kv_batch_put(keys=[key], partition_id=partition, fields=proxy.deferred_rows([row]),
                                    tags=[{"status": "success"}])


def status_write(proxy, uid, status="running", partition="train"):
    return proxy.async_kv_put(key=uid, partition_id=partition, tag={"status": status})


def run(coro):
    return asyncio.run(coro)


async def behind_one_in_flight(first, *rest):
    """Issue ``first``; once it is being sent, issue ``rest`` (they queue up behind it)."""
    head = asyncio.ensure_future(first)
    await asyncio.sleep(0)
    return await asyncio.gather(head, *rest)


def test_writes_issued_while_one_is_in_flight_go_out_as_one_batch_put():
    fake = FakeTransferQueue()
    proxy = CoalescingTransferQueue(fake, rows_builder)

    results = run(behind_one_in_flight(data_write(proxy, "u_0_0", sample(0)),
                                       *[data_write(proxy, f"u_{i}_0", sample(i)) for i in range(1, 5)]))
    assert [c["keys"] for c in fake.batch_calls] == [["u_0_0"], ["u_1_0", "u_2_0", "u_3_0", "u_4_0"]]
    assert fake.batch_calls[1]["fields"] == ("td", [[0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]])
    assert fake.batch_calls[1]["tags"] == [{"status": "success"}] * 4
    assert results[0] == ("meta", ("u_0_0",)) and results[4] == ("meta", ("u_1_0", "u_2_0", "u_3_0", "u_4_0"))
    assert proxy.batch_puts == 2


def test_writes_issued_together_go_out_together():
    fake = FakeTransferQueue()
    proxy = CoalescingTransferQueue(fake, rows_builder)

    async def main():
        await asyncio.gather(*[status_write(proxy, f"u{i}") for i in range(16)])

    run(main())
    assert [c["keys"] for c in fake.batch_calls] == [[f"u{i}" for i in range(16)]]


def test_a_write_issued_after_another_returned_is_sent_after_it():
    fake = FakeTransferQueue()
    proxy = CoalescingTransferQueue(fake, rows_builder)

    async def main():
        await data_write(proxy, "u_0_0", sample(0))
        await status_write(proxy, "u", "finished")

    run(main())
    assert [(c["keys"], c["fields"]) for c in fake.batch_calls] == [
        (["u_0_0"], ("td", [[0]])),
        (["u"], None),
    ]
    assert fake.batch_calls[1]["tags"] == [{"status": "finished"}]


def test_status_writes_partitions_and_row_kinds_are_never_mixed():
    fake = FakeTransferQueue()
    proxy = CoalescingTransferQueue(fake, rows_builder)

    run(behind_one_in_flight(
        data_write(proxy, "a_0_0", sample(0)),
        status_write(proxy, "a"),
        data_write(proxy, "b_0_0", sample(1)),
        status_write(proxy, "c"),
        data_write(proxy, "v_0_0", sample(2), partition="val"),
        data_write(proxy, "d_0_0", sample(3, dtype=torch.int32)),
        data_write(proxy, "e_0_0", sample(4)),
    ))
    sent = [(c["partition_id"], c["keys"], c["fields"] is None) for c in fake.batch_calls]
    assert sent == [
        ("train", ["a_0_0"], False),
        ("train", ["a", "c"], True),
        ("train", ["b_0_0", "e_0_0"], False),
        ("val", ["v_0_0"], False),
        ("train", ["d_0_0"], False),
    ]


def test_the_same_key_twice_goes_to_a_later_batch_put():
    fake = FakeTransferQueue()
    proxy = CoalescingTransferQueue(fake, rows_builder)

    run(behind_one_in_flight(status_write(proxy, "x"), status_write(proxy, "a"),
                             status_write(proxy, "a", "finished"), status_write(proxy, "b")))
    assert [(c["keys"], c["tags"]) for c in fake.batch_calls] == [
        (["x"], [{"status": "running"}]),
        (["a", "b"], [{"status": "running"}, {"status": "running"}]),
        (["a"], [{"status": "finished"}]),
    ]


def test_a_write_whose_own_rows_differ_in_kind_is_sent_alone():
    fake = FakeTransferQueue()
    proxy = CoalescingTransferQueue(fake, rows_builder)
    mixed = [sample(0), {**sample(1), "score": torch.tensor(1.0)}]
    assert row_signature(mixed[0]) != row_signature(mixed[1])

    run(behind_one_in_flight(
        data_write(proxy, "a_0_0", sample(0)),
        proxy.async_kv_batch_put(keys=["m_0_0", "m_0_1"], partition_id="train", fields=proxy.deferred_rows(mixed),
                                 tags=[{}, {}]),
        data_write(proxy, "b_0_0", sample(2)),
    ))
    assert [c["keys"] for c in fake.batch_calls] == [["a_0_0"], ["m_0_0", "m_0_1"], ["b_0_0"]]


def test_a_failed_batch_put_fails_every_write_in_it_and_later_writes_still_go_out():
    fake = FakeTransferQueue()
    proxy = CoalescingTransferQueue(fake, rows_builder)

    async def main():
        fake.fail = True
        outcomes = await asyncio.gather(*[data_write(proxy, f"u_{i}_0", sample(i)) for i in range(3)],
                                        return_exceptions=True)
        fake.fail = False
        return outcomes, await data_write(proxy, "w_0_0", sample(0))

    outcomes, later = run(main())
    assert all(isinstance(o, RuntimeError) and "unreachable" in str(o) for o in outcomes)
    assert later == ("meta", ("w_0_0",))


def test_cancelled_flushing_leaves_no_write_waiting():
    fake = FakeTransferQueue(delay=10)
    proxy = CoalescingTransferQueue(fake, rows_builder)

    async def main():
        first = asyncio.ensure_future(data_write(proxy, "a_0_0", sample(0)))
        await asyncio.sleep(0)
        queued = asyncio.ensure_future(status_write(proxy, "a"))
        await asyncio.sleep(0.01)
        proxy._flusher.cancel()
        return await asyncio.wait_for(asyncio.gather(first, queued, return_exceptions=True), timeout=1)

    outcomes = run(main())
    assert all(isinstance(o, (asyncio.CancelledError, RuntimeError)) for o in outcomes), outcomes
    assert "abandoned" in str(outcomes[1])


def test_other_writes_pass_through_unchanged():
    fake = FakeTransferQueue()
    proxy = CoalescingTransferQueue(fake, rows_builder)
    tensordict = object()

    async def main():
        await proxy.async_kv_put(key="k", partition_id="train", fields={"x": torch.zeros(2)}, tag={"s": 1})
        await proxy.async_kv_batch_put(keys=["t"], partition_id="train", fields=tensordict, tags=[{}])
        await proxy.async_kv_batch_put(keys=["p"], partition_id="train", fields=proxy.deferred_rows([sample(0)]),
                                       tags=[{}], data_parser=lambda d: d)
        await proxy.async_kv_batch_put(keys=["n"], partition_id="train", fields=proxy.deferred_rows([sample(0)]))

    run(main())
    assert [c["key"] for c in fake.single_calls] == ["k"]
    assert [(c["keys"], c["fields"]) for c in fake.batch_calls] == [
        (["t"], tensordict), (["p"], ("td", [[0]])), (["n"], ("td", [[0]]))
    ]
    assert proxy.batch_puts == 0
    assert proxy.ready is True  # everything else is the module's own


def test_mismatched_keys_tags_and_rows_are_an_error():
    proxy = CoalescingTransferQueue(FakeTransferQueue(), rows_builder)
    with pytest.raises(ValueError, match="2 keys, 1 tags and 1 rows"):
        run(proxy.async_kv_batch_put(keys=["a", "b"], partition_id="train", fields=proxy.deferred_rows([sample(0)]),
                                     tags=[{}]))


def test_survives_pickling_by_ray_as_a_fresh_proxy_of_the_same_module():
    import ray.cloudpickle as cloudpickle
    import transfer_queue

    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    proxy = CoalescingTransferQueue(transfer_queue, list_of_dict_to_tensordict)
    proxy.batch_puts = 3
    copy = cloudpickle.loads(cloudpickle.dumps(proxy))
    assert isinstance(copy, CoalescingTransferQueue) and copy.batch_puts == 0
    assert copy.async_kv_batch_get is transfer_queue.async_kv_batch_get
    assert copy.deferred_rows([sample(0)]).build()["responses"].tolist() == [[0]]


# --- against a real TransferQueue ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transfer_queue_on_ray():
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
        yield tq
    finally:
        ray.shutdown()


def _agent_loop_row(i: int) -> dict:
    # the columns AgentLoopWorkerTQ writes for one sample, with per-sample lengths
    prompt, response = torch.arange(3 + i % 2), torch.arange(10, 12 + i)
    return {
        "prompt_ids": prompt.tolist(), "response_ids": response.tolist(), "prompts": prompt, "responses": response,
        "response_mask": torch.ones_like(response), "input_ids": torch.cat([prompt, response]),
        "position_ids": torch.arange(len(prompt) + len(response)), "reward_score": float(i),
        "extra_fields": {"reward_extra_info": {"acc": i % 2}}, "multi_modal_inputs": {}, "num_turns": 2,
        "rollout_log_probs": torch.full((len(response),), -0.5 * i), "uid": f"u{i}",
    }


def _stored(tq, keys, partition):
    data = tq.kv_batch_get(keys=keys, partition_id=partition)
    per_key = []
    for index in range(len(keys)):
        row = {}
        for column in data.keys():
            value = data[column]
            value = value.unbind(0)[index] if isinstance(value, torch.Tensor) else list(value)[index]
            row[column] = value.tolist() if isinstance(value, torch.Tensor) else value
        per_key.append(row)
    tags = tq.kv_list(partition_id=partition)[partition]
    return per_key, [tags[k] for k in keys]


def test_merged_writes_store_exactly_what_separate_writes_store(transfer_queue_on_ray):
    tq = transfer_queue_on_ray
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    rows = [_agent_loop_row(i) for i in range(6)]
    tags = [{"status": "success", "prompt_len": len(r["prompt_ids"]), "global_steps": 1} for r in rows]

    async def separately():
        for i, row in enumerate(rows):
            await tq.async_kv_put(key=f"s{i}", partition_id="p", tag={"status": "running"})
            await tq.async_kv_batch_put(keys=[f"s{i}_0_0"], partition_id="p",
                                        fields=list_of_dict_to_tensordict([row]), tags=[tags[i]])
            await tq.async_kv_put(key=f"s{i}", partition_id="p", tag={"status": "finished"})

    proxy = CoalescingTransferQueue(tq, list_of_dict_to_tensordict)

    async def merged():
        await asyncio.gather(*[status_write(proxy, f"m{i}", partition="p") for i in range(6)])
        await asyncio.gather(*[
            proxy.async_kv_batch_put(keys=[f"m{i}_0_0"], partition_id="p", fields=proxy.deferred_rows([row]),
                                     tags=[tags[i]])
            for i, row in enumerate(rows)
        ])
        await asyncio.gather(*[status_write(proxy, f"m{i}", "finished", partition="p") for i in range(6)])

    asyncio.run(separately())
    asyncio.run(merged())
    assert proxy.batch_puts < 6 * 3  # some writes were merged

    separate_rows, separate_tags = _stored(tq, [f"s{i}_0_0" for i in range(6)], "p")
    merged_rows, merged_tags = _stored(tq, [f"m{i}_0_0" for i in range(6)], "p")
    assert merged_rows == separate_rows
    assert merged_tags == separate_tags == tags
    statuses = tq.kv_list(partition_id="p")["p"]
    assert [statuses[f"m{i}"] for i in range(6)] == [statuses[f"s{i}"] for i in range(6)] == [
        {"status": "finished"}
    ] * 6
