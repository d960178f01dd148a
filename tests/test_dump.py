"""``resrl.dump_dir``: the per-step dump file's layout (integration/dump.py)."""

import pytest
import torch

from verl_resrl import ResRLConfig
from verl_resrl.integration.dump import step_dump_path, write_step_dump


def test_dump_holds_each_response_cut_to_its_length(tmp_path):
    config = ResRLConfig(rank=4, dump_dir=str(tmp_path))
    ids = [torch.tensor([5, 6, 7, 8]), torch.tensor([5, 6, 9])]
    residual = torch.tensor([[0.5, 0.25, 9.0], [0.0, 9.0, 9.0]])
    has = torch.tensor([[True, True, False], [False, True, True]])
    path = write_step_dump(str(tmp_path), 3, ids, torch.tensor([2, 1]), ["a", "b"], torch.tensor([0, 1]),
                           residual, has, config)
    assert path == step_dump_path(str(tmp_path), 3) == tmp_path / "step_3.pt"
    dump = torch.load(path)
    assert [t.tolist() for t in dump["input_ids"]] == [[5, 6, 7, 8], [5, 6, 9]]
    assert dump["response_length"].tolist() == [2, 1] and dump["uid"] == ["a", "b"] and dump["step"] == 3
    assert dump["positive"].tolist() == [False, True] and dump["positive"].dtype == torch.bool
    assert [r.tolist() for r in dump["residual"]] == [[0.5, 0.25], [0.0]]
    assert [h.tolist() for h in dump["has_residual"]] == [[True, True], [False]]
    assert dump["residual"][0].dtype == torch.float32 and dump["has_residual"][0].dtype == torch.bool
    assert ResRLConfig.from_dict(dump["config"]) == config
    assert not list(tmp_path.glob("*.tmp"))


def test_dump_rejects_inconsistent_fields(tmp_path):
    with pytest.raises(ValueError, match="inconsistent batch sizes"):
        write_step_dump(str(tmp_path), 1, [torch.tensor([1, 2])], torch.tensor([1, 1]), ["a"], torch.tensor([1]),
                        torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool), ResRLConfig())
    with pytest.raises(ValueError, match="residuals cover 2 tokens"):
        write_step_dump(str(tmp_path), 1, [torch.tensor([1, 2, 3])], torch.tensor([3]), ["a"], torch.tensor([1]),
                        torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool), ResRLConfig())
