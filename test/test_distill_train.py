"""Trainer: tiny end-to-end run -> loadable checkpoint, frozen teacher, exact resume, DDP."""
from __future__ import annotations

import os
import socket

import pytest
import torch

from _distill_tiny import tiny_clip_checkpoint, tiny_distill_dict, tiny_image_folder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    return tiny_image_folder(root / "imgs"), tiny_clip_checkpoint(root)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_end_to_end_checkpoint_and_frozen_teacher(tiny, tmp_path):
    from vl2spike_ros.train import trainer
    from vl2spike_ros.train.config import config_from_dict
    from vl2spike_ros.train.teachers import OpenCLIPTeacher
    from vl2spike_ros.models import load_model

    folder, ckpt = tiny
    cfg = config_from_dict(tiny_distill_dict(folder, ckpt), {"teacher.online": True})
    ref = OpenCLIPTeacher(cfg.teacher.name, pretrained=str(ckpt))
    res = trainer.run_distill(cfg, tmp_path)
    assert res.metrics["steps"] == 6  # 12 train images / batch 4 x 2 epochs
    model = load_model(tmp_path / "model.safetensors")
    assert model.config.num_classes == 2
    assert 0.0 <= res.metrics["test_top1"] <= 1.0
    assert (tmp_path / "train_log.csv").read_text().startswith("step,ce,kd,svs_cos")
    # the teacher used in training stayed frozen: eval mode, no grads, weights unchanged
    (teacher,) = trainer._TEACHERS.values()
    assert not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    for k, v in ref.state_dict().items():
        assert torch.equal(v, teacher.state_dict()[k]), k


def test_resume_continues_from_saved_step(tiny, tmp_path):
    from vl2spike_ros.train.checkpoint import read_state_json
    from vl2spike_ros.train.config import config_from_dict
    from vl2spike_ros.train.trainer import run_distill

    folder, ckpt = tiny
    d = tiny_distill_dict(folder, ckpt)
    full = run_distill(config_from_dict(d), tmp_path / "full").student
    part = tmp_path / "part"
    run_distill(config_from_dict(d, {"optim.max_steps": 4}), part)
    assert read_state_json(part)["step"] == 4
    resumed = run_distill(config_from_dict(d), part, resume=True)
    assert read_state_json(part)["step"] == 6 and resumed.metrics["steps"] == 6
    a, b = _state(full), _state(resumed.student)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_resume_without_checkpoint_errors_cleanly(tiny, tmp_path):
    from vl2spike_ros.train.checkpoint import load_checkpoint

    with pytest.raises(FileNotFoundError, match="no train_state.json"):
        load_checkpoint(tmp_path, None, None, None, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg_dict: dict, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    import torch.distributed as dist
    from safetensors.torch import save_file

    from vl2spike_ros.train.config import config_from_dict
    from vl2spike_ros.train.trainer import run_distill

    res = run_distill(config_from_dict(cfg_dict), out)
    state = {k: v.detach().contiguous() for k, v in res.student.state_dict().items()}
    save_file(state, os.path.join(out, f"rank{rank}.safetensors"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_ranks_stay_identical(tiny, tmp_path):
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    folder, ckpt = tiny
    d = tiny_distill_dict(folder, ckpt)
    d["optim"]["epochs"] = 2  # 12 images / 2 ranks / batch 4 -> 1 step per epoch
    d["optim"]["batch_size"] = 3
    mp.spawn(_ddp_worker, args=(2, _free_port(), d, str(tmp_path)), nprocs=2, join=True)
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    init = None
    for k in a:
        assert torch.equal(a[k], b[k]), k
    from vl2spike_ros.models import create_model
    init = create_model("spikformer_cifar", **d["model_overrides"], num_classes=2).state_dict()
    assert any(not torch.equal(a[k], init[k]) for k in a if a[k].is_floating_point())  # it trained
    assert (tmp_path / "model.safetensors").is_file()


def test_cli_clear_errors(tmp_path, capsys):
    from vl2spike_ros.cli import main

    assert main(["distill", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    assert "distill config not found" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim: {epochs: 1}\n")
    assert main(["distill", "--config", str(cfg), "--set", "optim.bogus=1",
                 "--out", str(tmp_path)]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["teacher", "eval", "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "proxy teacher weights not found" in capsys.readouterr().err


def test_round_robin_takes_classes_in_turn():
    import numpy as np

    from vl2spike_ros.data.cifar import ImageArray, round_robin

    labels = np.array([2, 2, 2, 0, 0, 1], np.int64)  # class order of first appearance: 2, 0, 1
    data = ImageArray(np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1), labels, ("a", "b", "c"))
    assert round_robin(data, 5)[:, 0, 0, 0].tolist() == [0, 3, 5, 1, 4]
    assert round_robin(data, 10)[:, 0, 0, 0].tolist() == [0, 3, 5, 1, 4, 2]
