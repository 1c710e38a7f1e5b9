"""``vl2spike teacher train|eval``: build and check the proxy teacher (LiT-style image tower)."""
from __future__ import annotations

import json
import shlex
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("teacher", help="train / evaluate the proxy VLM teacher")
    sub = parser.add_subparsers(dest="teacher_cmd", metavar="ACTION")
    sub.required = True
    tr = sub.add_parser("train", help="train the proxy teacher's image tower on CIFAR-10")
    tr.add_argument("--data", default=None, help="cifar10.tar (default: <data root>/cifar10.tar)")
    tr.add_argument("--out", default=None,
                    help="output .safetensors (default: packaged assets/proxy_teacher_cifar10)")
    tr.add_argument("--epochs", type=int, default=4, help="training epochs")
    tr.add_argument("--batch-size", type=int, default=128, help="images per step")
    tr.add_argument("--lr", type=float, default=3e-3,
                    help="peak learning rate (AdamW, warm-up then cosine)")
    tr.add_argument("--seed", type=int, default=0, help="random seed")
    tr.add_argument("--train-limit", type=int, default=0, help="use N training images (0 = all)")
    tr.add_argument("--max-minutes", type=float, default=0.0, help="wall-clock cap (0 = none)")
    tr.add_argument("--widths", default="16,32,64,128",
                    help="ResNet stage widths of the image tower (comma-separated)")
    tr.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    tr.add_argument("--disjoint-from", default="", metavar="CONFIG",
                    help="distill/bench YAML: leave out the images its runs train or validate on")
    tr.set_defaults(func=_train)
    ev = sub.add_parser("eval", help="zero-shot top-1 of a proxy teacher on CIFAR-10 test")
    ev.add_argument("--weights", default=None, help="default: packaged asset")
    ev.add_argument("--data", default=None,
                    help="cifar10.tar (default: <data root>/cifar10.tar)")
    ev.set_defaults(func=_eval)


def _train(ns) -> int:
    import torch

    from vl2spike_ros.train.teacher_train import TeacherTrainConfig, train_proxy_teacher
    from vl2spike_ros.train.teachers import PROXY_ASSET
    from vl2spike_ros.paths import cifar10_tar

    torch.set_num_threads(ns.threads)
    cfg = TeacherTrainConfig(epochs=ns.epochs, batch_size=ns.batch_size, lr=ns.lr, seed=ns.seed,
                             train_limit=ns.train_limit, max_minutes=ns.max_minutes,
                             disjoint_from=ns.disjoint_from,
                             widths=tuple(int(w) for w in ns.widths.split(",")))
    command = "vl2spike " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    meta = train_proxy_teacher(cifar10_tar(ns.data), ns.out or PROXY_ASSET, cfg, command=command)
    print(json.dumps({k: meta[k] for k in ("zero_shot_top1_test", "train_minutes", "steps")}))
    return 0


def _eval(ns) -> int:
    from vl2spike_ros.data.cifar import load_cifar10_tar
    from vl2spike_ros.train.teacher_train import zero_shot_accuracy
    from vl2spike_ros.train.teachers import ProxyTeacher
    from vl2spike_ros.paths import cifar10_tar

    teacher = ProxyTeacher.load(ns.weights)
    test = load_cifar10_tar(cifar10_tar(ns.data), "test")
    acc = zero_shot_accuracy(teacher, test, teacher.class_embeddings(test.classes))
    print(json.dumps({"teacher_id": teacher.teacher_id, "zero_shot_top1_test": acc}))
    return 0
