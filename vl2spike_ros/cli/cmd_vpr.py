"""``vl2spike vpr train``: train the Nordland VPR models (ANN teacher, Spikformer direct,
Spikformer distilled = the packaged default weights). Resumes from checkpoints."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("vpr", help="train VPR models on Nordland (first 60 %% of places)")
    sub = p.add_subparsers(dest="vpr_cmd", metavar="ACTION")
    sub.required = True
    t = sub.add_parser("train", help="train teacher / direct / distilled (default: all three)")
    t.add_argument("what", nargs="?", default="all",
                   choices=["all", "teacher", "direct", "distilled"])
    t.add_argument("--data-root", default=None, help="folder holding nordland/")
    t.add_argument("--weights-dir", default="bench/weights", help="teacher + direct weights")
    t.add_argument("--out", default=None, help="distilled weights (default: packaged default)")
    t.add_argument("--teacher", default=None, help="teacher weights (default: weights-dir)")
    t.add_argument("--epochs-teacher", type=int, default=15)
    t.add_argument("--epochs-student", type=int, default=8)
    t.add_argument("--lr-student", type=float, default=1.5e-3)
    t.add_argument("--ckpt-dir", default="bench/weights/ckpt")
    t.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    t.add_argument("--json", default=None, metavar="PATH", help="training summary JSON")
    t.set_defaults(func=_train)


def _train(ns) -> int:
    import torch

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.models import default_vpr_weights
    from vl2spike_ros.paths import nordland_root
    from vl2spike_ros.vpr.recipes import train_student, train_teacher_cnn
    from vl2spike_ros.vpr.train import TrainConfig

    torch.set_num_threads(ns.threads)
    root = nordland_root(Path(ns.data_root) / "nordland" if ns.data_root else None)
    wdir = Path(ns.weights_dir)
    teacher = Path(ns.teacher) if ns.teacher else wdir / "vpr_teacher_cnn.safetensors"
    scfg = TrainConfig(epochs=ns.epochs_student, lr=ns.lr_student)
    out = {}
    if ns.what in ("all", "teacher"):
        out["teacher"] = train_teacher_cnn(root, teacher, TrainConfig(epochs=ns.epochs_teacher),
                                           ns.ckpt_dir)
    if ns.what in ("all", "direct"):
        out["spikformer"] = train_student(root, wdir / "vpr_spikformer_direct.safetensors", scfg,
                                          ns.ckpt_dir)
    if ns.what in ("all", "distilled"):
        if not teacher.is_file():
            raise FileNotFoundError(f"teacher weights {teacher} missing: train them first "
                                    "(vl2spike vpr train teacher)")
        out["vl2spike"] = train_student(root, Path(ns.out) if ns.out else default_vpr_weights(),
                                        scfg, ns.ckpt_dir, teacher_path=teacher)
    for k, v in out.items():
        last = v["history"][-1] if v["history"] else {}
        print(f"{k}: {v['train_seconds']:.0f} s, last epoch {last}")
    if ns.json:
        write_json_atomic(ns.json, out)
    return 0
