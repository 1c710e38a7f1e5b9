"""End to end: train a place model on your own route, then map, evaluate and run the node.

Label-free: a tiny randomly initialised open_clip ViT (``test/data/tiny_vit.json``, saved as a
local checkpoint file and loaded through the teacher's checkpoint path) distils into a
Spikformer on a bag written by ``vl2spike bag write``; the weights build a map, evaluate and
load in the real node. With labels: two traversals as index-aligned folders, and as bags with
poses (radius positives).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from _route_data import (TINY_VIT_JSON, line_poses, tiny_vit_checkpoint, traversal, write_bag,
                         write_folder)
from vl2spike_ros.cli import main
from vl2spike_ros.vpr.place import load_place_descriptor

pytestmark = pytest.mark.slow
SMOKE = "config/vpr/smoke_label_free.yaml"
N = 16
FAST = ["--set", "optim.epochs=1", "--set", "optim.batch_size=8", "--set", "threads=1",
        "--set", "tensorboard=true", "--set", "progress=false"]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> list[str]:
    ckpt = tiny_vit_checkpoint(tmp_path_factory.mktemp("teacher"))
    return ["--set", f"teacher.pretrained={ckpt}",
            "--set", f"teacher.model_config={TINY_VIT_JSON}"]


def train(*args: str) -> None:
    assert main(["vpr", "train", *args]) == 0


@pytest.fixture(scope="module")
def label_free(tmp_path_factory, tiny_vit) -> dict:
    tmp = tmp_path_factory.mktemp("label_free")
    images = write_folder(tmp / "images", traversal(N))
    bag = tmp / "route_bag"
    assert main(["bag", "write", "--images", str(images), "--out", str(bag)]) == 0
    out = tmp / "run"
    train("--config", SMOKE, "--data", str(bag), "--out", str(out), *FAST, *tiny_vit)
    return {"tmp": tmp, "bag": bag, "images": images, "out": out,
            "weights": out / "model.safetensors"}


def test_label_free_run_writes_weights_log_events_and_checkpoint(label_free):
    out = label_free["out"]
    meta = json.loads((out / "model.json").read_text())["metadata"]
    assert meta["data"]["kind"] == "unlabeled" and meta["data"]["labels"] == "no place labels"
    assert meta["teacher"]["teacher_id"].startswith("openclip:tiny_vit:tiny_vit.pt")
    assert meta["teacher"]["grid"] and "InfoNCE" not in meta["loss"]
    assert "per-token" in meta["loss"]
    assert meta["vpr"]["whitening"]["method"].startswith("PCA-whitening")
    with safe_open(str(label_free["weights"]), "pt") as fh:
        assert "extra.vpr_whitening.proj" in set(fh.keys())
    rows = (out / "train_log.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and "svs_tok" in rows[0] and len(rows) == 2
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "ckpt" / "train_state.json").is_file()
    place = load_place_descriptor(label_free["weights"])
    assert place.settings.mode == "stem2" and place.whitening is not None


def test_label_free_weights_build_a_map_and_evaluate(label_free):
    tmp, w = label_free["tmp"], str(label_free["weights"])
    assert main(["map", "build", str(label_free["bag"]), "--weights", w,
                 "--out", str(tmp / "map")]) == 0
    assert (tmp / "map").is_dir()
    other = write_folder(tmp / "queries", traversal(N, variant=1))
    assert main(["eval", "--weights", w, "--db", str(label_free["images"]),
                 "--queries", str(other), "--tolerance", "1", "--json",
                 str(tmp / "eval.json")]) == 0
    res = json.loads((tmp / "eval.json").read_text())
    assert res["n_queries"] == N and 0 <= res["recall"]["r1"] <= 100


def test_resume_continues_and_refuses_another_recipe(label_free, tiny_vit, capsys):
    out, bag = label_free["out"], label_free["bag"]
    train("--config", SMOKE, "--data", str(bag), "--out", str(out), "--resume", *FAST,
          *tiny_vit)
    meta = json.loads((out / "model.json").read_text())["metadata"]
    assert len(meta["history"]) == 1        # resumed after its last epoch: nothing to redo
    rc = main(["vpr", "train", "--config", SMOKE, "--data", str(bag), "--out", str(out),
               "--resume", *FAST, *tiny_vit, "--set", "optim.lr=0.01"])
    assert rc == 2 and "another recipe" in capsys.readouterr().err


def test_no_labels_and_no_teacher_is_one_line(label_free, capsys):
    rc = main(["vpr", "train", "--config", SMOKE, "--data", str(label_free["bag"]),
               "--out", str(label_free["tmp"] / "x"), "--set", "teacher.kind=none", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing to learn from" in err and len(err.strip().splitlines()) == 1


def test_two_index_aligned_folders_train_with_labels(tmp_path, tiny_vit):
    a = write_folder(tmp_path / "a", traversal(N))
    b = write_folder(tmp_path / "b", traversal(N, variant=1))
    out = tmp_path / "run"
    train("--config", SMOKE, "--data", str(a), "--data", str(b), "--out", str(out), *FAST,
          *tiny_vit, "--set", "data.kind=auto", "--set", "loss.nce=1.0",
          "--set", "data.val_frac=0.25", "--set", "whitening.kind=auto")
    meta = json.loads((out / "model.json").read_text())["metadata"]
    assert meta["data"]["kind"] == "folders" and meta["data"]["val_places"] == 4
    assert meta["loss"].startswith("InfoNCE")
    assert meta["vpr"]["whitening"]["method"].startswith("learned whitening")
    assert "val_r1_s2w" in meta["history"][-1]
    place = load_place_descriptor(out / "model.safetensors")
    assert place.describe_images(np.stack(traversal(2))).shape[0] == 2


def test_two_bags_with_poses_train_with_radius_positives(tmp_path, tiny_vit):
    b1 = write_bag(tmp_path / "b1", traversal(N), line_poses(N, 2.0))
    b2 = write_bag(tmp_path / "b2", traversal(N, variant=1), line_poses(N, 2.0, offset=0.4),
                   pose_type="pose_stamped", compressed=True)
    out = tmp_path / "run"
    train("--config", SMOKE, "--data", str(b1), "--data", str(b2), "--out", str(out), *FAST,
          *tiny_vit, "--set", "data.kind=bags", "--set", "data.radius_m=1.0",
          "--set", "data.margin_m=6.0", "--set", "loss.nce=1.0", "--set", "whitening.kind=auto")
    meta = json.loads((out / "model.json").read_text())["metadata"]
    assert meta["data"]["kind"] == "bags" and meta["data"]["radius_m"] == 1.0
    assert meta["data"]["frames"] == 2 * N and meta["loss"].startswith("InfoNCE")
    assert main(["map", "build", str(b1), "--weights", str(out / "model.safetensors"),
                 "--out", str(tmp_path / "map")]) == 0
    assert main(["eval", "--weights", str(out / "model.safetensors"), "--db", str(b1),
                 "--queries", str(b2), "--tolerance", "0", "--radius", "1.0"]) == 0


def test_own_cnn_teacher_then_label_free_student_from_it(tmp_path, label_free):
    a = write_folder(tmp_path / "a", traversal(N))
    b = write_folder(tmp_path / "b", traversal(N, variant=1))
    cnn = tmp_path / "cnn"
    train("--config", "config/vpr/teacher.yaml", "--data", str(a), "--data", str(b),
          "--out", str(cnn), *FAST, "--set", "data.kind=folders", "--set", "data.val_frac=0.25")
    place = load_place_descriptor(cnn / "model.safetensors")
    assert place.settings.kind == "cnn" and place.settings.mode == "map"
    student = tmp_path / "student"
    train("--config", "config/vpr/label_free_place_cnn.yaml", "--data", str(label_free["bag"]),
          "--teacher", str(cnn / "model.safetensors"), "--out", str(student), *FAST)
    meta = json.loads((student / "model.json").read_text())["metadata"]
    assert meta["teacher"]["teacher_id"].startswith("place:model.safetensors:")
    assert meta["loss"] == "SVS per-token x1, SVS whole map x1"
    assert meta["init_from"]["path"].endswith("vpr_default.safetensors")


# ----------------------------------------------------------------------------- the real node
@pytest.mark.ros
def test_label_free_weights_load_in_the_node(label_free, ros_env, rclpy_context):
    from sensor_msgs.msg import Image

    from vl2spike_ros.bench.ros import fixtures

    exe = Path(sys.executable).parent / "vpr_node"
    if not exe.is_file():
        pytest.skip("vpr_node console script not installed (make setup)")
    tmp = label_free["tmp"]
    map_dir = tmp / "node_map"
    assert main(["map", "build", str(label_free["images"]), "--weights",
                 str(label_free["weights"]), "--out", str(map_dir)]) == 0
    params = fixtures.write_params_file(tmp / "node.yaml", {
        "weights": str(label_free["weights"]), "map_dir": str(map_dir),
        "image_topic": "own_route/image"})
    log = open(tmp / "node.log", "w")
    proc = subprocess.Popen([str(exe), "--ros-args", "--params-file", str(params)],
                            env={**os.environ, **ros_env}, stdout=log, stderr=subprocess.STDOUT)
    node = __import__("rclpy").create_node("own_route_probe", context=rclpy_context)
    pub = node.create_publisher(Image, "own_route/image", 10)
    try:
        deadline = time.monotonic() + 90
        while pub.get_subscription_count() == 0:   # configured and active: it subscribed
            assert proc.poll() is None, (tmp / "node.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "node did not subscribe within 90 s"
            time.sleep(0.1)
    finally:
        node.destroy_node()
        proc.terminate()
        proc.wait(30)
        log.close()
    assert "Traceback" not in (tmp / "node.log").read_text()


# ----------------------------------------------------------------------------- DDP (2 gloo ranks)
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, recipe_path: str, over: dict,
                out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    import torch.distributed as dist
    from safetensors.torch import save_file

    from vl2spike_ros.models import default_vpr_weights
    from vl2spike_ros.train.route_run import run_recipe
    from vl2spike_ros.train.vpr_config import fill_paths, load_recipe

    recipe = fill_paths(load_recipe(recipe_path, over), {"default": str(default_vpr_weights())})
    res = run_recipe(recipe, out)
    state = {k: v.detach().contiguous() for k, v in res.model.state_dict().items()}
    save_file(state, os.path.join(out, f"rank{rank}.safetensors"))
    dist.destroy_process_group()


def test_ddp_two_gloo_ranks_train_one_model(tmp_path):
    import torch
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    from vl2spike_ros.models import default_vpr_weights, load_weights

    ckpt = tiny_vit_checkpoint(tmp_path)
    folder = write_folder(tmp_path / "frames", traversal(N))
    over = {"optim.epochs": 1, "optim.batch_size": 4, "threads": 1, "progress": False,
            "tensorboard": False, "teacher.pretrained": str(ckpt),
            "teacher.model_config": str(TINY_VIT_JSON)}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(Path(SMOKE).read_text().replace(
        "data:\n", f"data:\n  paths: [{json.dumps(str(folder))}]\n", 1))
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(recipe), over, str(tmp_path / "run")),
             nprocs=2, join=True)
    a = load_file(str(tmp_path / "run" / "rank0.safetensors"))
    b = load_file(str(tmp_path / "run" / "rank1.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = load_weights(tmp_path / "run" / "model.safetensors").state_dict()
    assert all(torch.equal(saved[k], a[k]) for k in saved)
    start = load_weights(default_vpr_weights()).state_dict()   # the warm start
    assert any(not torch.equal(a[k], start[k]) for k in a
               if k in start and a[k].shape == start[k].shape and a[k].is_floating_point())
