"""The Accelerate config files in recipes/accelerate/ load, and say what their comments say."""

from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).parents[2] / "recipes" / "accelerate").glob("*.yaml"))


def test_there_are_configs_for_ddp_fsdp_and_several_nodes():
    assert {p.stem for p in CONFIGS} == {"multi_gpu", "multi_node", "fsdp"}  # no DeepSpeed: docs/scale.md


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_accelerate_reads_the_config(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    expected = {"multi_gpu": "MULTI_GPU", "multi_node": "MULTI_GPU", "fsdp": "FSDP"}
    assert cfg.distributed_type.value == expected[path.stem]
    assert f"--config_file recipes/accelerate/{path.name}" in path.read_text()
    if path.stem == "fsdp":  # routed to train.sharding: fsdp (tests/train/test_fsdp.py)
        assert "train.sharding: fsdp" in path.read_text()
    if path.stem == "multi_node":
        assert cfg.num_machines == 2 and cfg.num_processes == 16
