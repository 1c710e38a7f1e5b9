"""``vl2spike bag write|info``: make rosbag2 test bags from image sequences, and inspect bags."""
from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path
from typing import Iterator


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bag", help="write a rosbag2 bag from images, or show a bag's topics")
    sub = parser.add_subparsers(dest="bag_command", metavar="ACTION")
    sub.required = True

    w = sub.add_parser("write", help="images (folder or glob, sorted by file name) -> rosbag2 bag")
    w.add_argument("--images", required=True, help="folder of images or a glob pattern (quote it)")
    w.add_argument("--out", required=True,
                   help="output bag folder (must not exist unless --overwrite)")
    w.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                   help="rosbag2 storage plugin")
    w.add_argument("--compressed", action="store_true",
                   help="sensor_msgs/CompressedImage instead of Image")
    w.add_argument("--format", dest="compressed_format", choices=("jpeg", "png"), default="jpeg",
                   help="compression with --compressed (default jpeg)")
    w.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100")
    w.add_argument("--rate", type=float, default=10.0,
                   help="frame rate in Hz (stamps are start + i/rate)")
    w.add_argument("--start-ns", type=int, default=None,
                   help="stamp of the first frame (default: now)")
    w.add_argument("--topic", default=None,
                   help="image topic (default /camera/image_raw[/compressed])")
    w.add_argument("--frame-id", default="camera", help="header.frame_id of the images")
    w.add_argument("--grayscale", action="store_true",
                   help="store mono8 (convert colour images to grey)")
    w.add_argument("--poses", default=None,
                   help="CSV, one row per image: x,y,z[,qx,qy,qz,qw] (navsatfix: lat,lon,alt);"
                        " header optional")
    w.add_argument("--pose-type", default="odometry",
                   choices=("odometry", "pose_stamped", "pose_with_covariance", "navsatfix"),
                   help="message type written for --poses (nav_msgs/Odometry, "
                        "geometry_msgs/PoseStamped, PoseWithCovarianceStamped, NavSatFix)")
    w.add_argument("--pose-topic", default="/odom", help="topic of the --poses messages")
    w.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    w.add_argument("--limit", type=int, default=None, help="use only the first N images")
    w.set_defaults(func=_cmd_write)

    i = sub.add_parser("info", help="topics, message counts and time range of a bag")
    i.add_argument("bag", help="rosbag2 bag folder")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=_cmd_info)


def find_images(spec: str, limit: int | None = None) -> list[Path]:
    """Image files of a folder (by suffix) or a glob pattern, sorted by file name."""
    p = Path(spec).expanduser()
    if p.is_dir():
        from vl2spike_ros.data.datasets import IMAGE_EXTS

        files = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
    else:
        files = [Path(f) for f in glob.glob(os.path.expanduser(spec)) if Path(f).is_file()]
    files.sort(key=lambda f: (f.name, str(f)))
    if not files:
        raise FileNotFoundError(
            f"no images found for {spec!r} (a folder of images or a glob pattern)")
    return files[:limit] if limit else files


def _load_images(files: list[Path], grayscale: bool) -> Iterator:
    import cv2
    from tqdm import tqdm

    for f in tqdm(files, desc="bag write", unit="img",
                  disable=True if len(files) < 50 else None):  # None: on a terminal only
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"cannot read image {f}")
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 3:
            code = cv2.COLOR_BGR2GRAY if grayscale else cv2.COLOR_BGR2RGB
            if img.shape[2] == 4:
                code = cv2.COLOR_BGRA2GRAY if grayscale else cv2.COLOR_BGRA2RGBA
            img = cv2.cvtColor(img, code)
        yield img


def read_pose_csv(path: str | os.PathLike) -> list[tuple[float, ...]]:
    """Rows of 3 or 7 numbers from a CSV (a non-numeric first line is a header)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"poses CSV {p} does not exist")
    rows: list[tuple[float, ...]] = []
    for lineno, line in enumerate(p.read_text().splitlines(), start=1):
        cells = [c.strip() for c in line.split(",")]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            vals = tuple(float(c) for c in cells)
        except ValueError:
            if not rows and lineno == 1:
                continue  # header
            raise ValueError(f"{p}:{lineno}: not numbers: {line!r}") from None
        if len(vals) not in (3, 7):
            raise ValueError(f"{p}:{lineno}: a pose row needs 3 or 7 numbers, got {len(vals)}")
        rows.append(vals)
    return rows


def _cmd_write(ns: argparse.Namespace) -> int:
    from vl2spike_ros.io.bags import BagWriteOptions, write_image_bag

    files = find_images(ns.images, ns.limit)
    poses = None
    if ns.poses:
        poses = read_pose_csv(ns.poses)
        if len(poses) != len(files):
            raise ValueError(f"{ns.poses} has {len(poses)} poses for {len(files)} images"
                             " (need one per image)")
    try:
        options = BagWriteOptions(
            topic=ns.topic, storage=ns.storage, compressed=ns.compressed,
            encoding="mono8" if ns.grayscale else None, rate_hz=ns.rate, start_ns=ns.start_ns,
            frame_id=ns.frame_id, compressed_format=ns.compressed_format, quality=ns.quality,
            pose_topic=ns.pose_topic, pose_type=ns.pose_type, overwrite=ns.overwrite)
        summary = write_image_bag(ns.out, _load_images(files, ns.grayscale), options, poses)
    except FileExistsError as exc:  # the library's message names its Python keyword
        raise FileExistsError(f"{ns.out} exists already (pass --overwrite to replace it)") from exc
    print(f"wrote {summary.frames} images ({summary.poses} poses) to {summary.path}"
          f" [{ns.storage}], {(summary.end_ns - summary.start_ns) / 1e9:.3f} s")
    return 0


def _cmd_info(ns: argparse.Namespace) -> int:
    from vl2spike_ros.io.bags import bag_info

    info = bag_info(ns.bag)
    if ns.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"bag:       {info['path']} ({info['storage']}, written by {info['ros_distro']})")
    print(f"messages:  {info['messages']}")
    print(f"duration:  {info['duration_s']:.3f} s"
          f" (start {info['start_ns']} ns, end {info['end_ns']} ns)")
    width = max((len(t) for t in info["topics"]), default=5)
    for name, t in sorted(info["topics"].items()):
        print(f"  {name:<{width}}  {t['type']:<40}  {t['count']}")
    return 0
