"""rosbag2 image/pose bags with rosbags (vl2spike_ros.io.bags) and the `vl2spike bag` CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vl2spike_ros.io import bags
from vl2spike_ros.io.bags import (
    BagWriteOptions,
    bag_info,
    interpolate_poses,
    latlon_to_local,
    list_topics,
    read_image_bag,
    read_poses,
    write_image_bag,
)
from vl2spike_ros.io.images import array_to_image_msg, default_typestore

START = 1_700_000_000_000_000_000


def _frames(n=6, h=12, w=16, channels=3, seed=0):
    """Smooth, distinct frames (JPEG-friendly): a gradient shifted per frame."""
    y, x = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = (x * 160 // w + y * 40 // h + i * 9) % 256  # no wrap-around edge for i < 6
        img = base if channels == 1 else np.stack([base, 255 - base, base // 2 + 40], -1)
        out.append(img.astype(np.uint8))
    return out


def _yaw_quat(yaw):
    return (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def _poses(n):
    return [(float(i), 2.0 * i, 0.5, *_yaw_quat(0.1 * i)) for i in range(n)]


@pytest.mark.parametrize("storage", bags.STORAGES)
@pytest.mark.parametrize("pose_type", ["odometry", "pose_stamped", "pose_with_covariance"])
def test_raw_roundtrip_with_poses(tmp_path, storage, pose_type):
    frames = _frames()
    out = tmp_path / "bag"
    opts = BagWriteOptions(storage=storage, rate_hz=20.0, start_ns=START, pose_type=pose_type)
    summary = write_image_bag(out, iter(frames), opts, poses=_poses(len(frames)))
    assert summary.frames == 6 and summary.poses == 6 and summary.end_ns == START + 5 * 50_000_000
    topics = list_topics(out)
    assert topics["/camera/image_raw"] == ("sensor_msgs/msg/Image", 6)
    assert topics["/odom"] == (bags.POSE_TYPES[pose_type], 6)
    got = list(read_image_bag(out))
    assert [g.stamp_ns for g in got] == [START + i * 50_000_000 for i in range(6)]
    assert [g.header_stamp_ns for g in got] == [g.stamp_ns for g in got]
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g.image, f)
    stamps, xyz, quat = read_poses(out)
    np.testing.assert_array_equal(stamps, [g.stamp_ns for g in got])
    np.testing.assert_allclose(xyz, np.array(_poses(6))[:, :3])
    np.testing.assert_allclose(quat, np.array(_poses(6))[:, 3:], atol=1e-12)
    info = bag_info(out)
    assert info["storage"] == storage and info["messages"] == 12
    assert info["start_ns"] == START and info["end_ns"] == START + 250_000_000
    assert list((tmp_path).iterdir()) == [out]  # no temporary folders left behind


@pytest.mark.parametrize("storage", bags.STORAGES)
@pytest.mark.parametrize("fmt,exact", [("png", True), ("jpeg", False)])
def test_compressed_roundtrip(tmp_path, storage, fmt, exact):
    frames = _frames(4, channels=3) + _frames(2, channels=1)  # encoding may vary per frame
    out = tmp_path / "c"
    write_image_bag(out, frames, BagWriteOptions(storage=storage, compressed=True,
                                                 compressed_format=fmt, quality=95,
                                                 start_ns=START))
    assert list_topics(out) == {
        "/camera/image_raw/compressed": ("sensor_msgs/msg/CompressedImage", 6)}
    got = list(read_image_bag(out, topic="/camera/image_raw/compressed"))
    assert len(got) == 6
    for g, f in zip(got, frames):
        assert g.image.shape == f.shape and g.image.dtype == np.uint8
        if exact:
            np.testing.assert_array_equal(g.image, f)
        else:
            assert np.abs(g.image.astype(int) - f.astype(int)).mean() < 6


def test_navsatfix_to_local_metres(tmp_path):
    # WGS84 at 60 deg N: meridional radius 6 383 453.9 m, prime vertical 6 394 209.2 m, so
    # 0.001 deg north = 111.412 m and 0.001 deg east at 60.0005 deg = 55.799 m
    fixes = [(60.0, 10.0, 5.0), (60.001, 10.0, 5.0), (60.001, 10.001, 7.0)]
    write_image_bag(tmp_path / "g", _frames(3), BagWriteOptions(
        pose_type="navsatfix", pose_topic="/fix", start_ns=START, storage="sqlite3"), fixes)
    stamps, xyz, quat = read_poses(tmp_path / "g", "/fix")
    north = 6_383_453.857 * math.radians(0.001)
    east = 6_394_209.174 * math.cos(math.radians(60.0005)) * math.radians(0.001)
    np.testing.assert_allclose(xyz, [[0, 0, 0], [0, north, 0], [east, north, 2.0]],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(quat, [[0, 0, 0, 1]] * 3)
    assert bags.read_fix_origin(tmp_path / "g") == (60.0, 10.0, 5.0)
    _, moved, _ = read_poses(tmp_path / "g", "/fix", origin=(60.001, 10.0, 5.0))
    np.testing.assert_allclose(moved[:, 1], [-north, 0, 0], atol=1e-3)
    # across the antimeridian: 179.9995 E is 0.001 deg west of 179.9995 W, not 359.999 deg east
    east = latlon_to_local([0.0], [179.9995], [0.0], origin=(0.0, -179.9995, 0.0))[0, 0]
    assert east == pytest.approx(-6_378_137.0 * math.radians(0.001))


def test_refuses_to_overwrite_and_overwrites_when_asked(tmp_path):
    out = tmp_path / "bag"
    write_image_bag(out, _frames(2), BagWriteOptions(start_ns=START))
    with pytest.raises(FileExistsError, match="exists already"):
        write_image_bag(out, _frames(5), BagWriteOptions(start_ns=START))
    assert list_topics(out)["/camera/image_raw"].count == 2
    write_image_bag(out, _frames(5),
                    BagWriteOptions(start_ns=START, overwrite=True, storage="sqlite3"))
    assert list_topics(out)["/camera/image_raw"].count == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "bag"
    write_image_bag(out, _frames(2), BagWriteOptions(start_ns=START))

    def bad_frames():
        yield from _frames(2)
        yield np.zeros((4, 4), np.float64)  # no image encoding for float64 mono...
        yield np.zeros((4, 4, 2, 2), np.uint8)  # ...and this one is not an image at all

    with pytest.raises(ValueError):
        write_image_bag(out, bad_frames(), BagWriteOptions(overwrite=True, encoding="mono8"))
    assert list_topics(out)["/camera/image_raw"].count == 2  # old bag untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]
    with pytest.raises(ValueError, match="no frames"):
        write_image_bag(tmp_path / "empty", [])
    with pytest.raises(ValueError, match="fewer poses"):
        write_image_bag(tmp_path / "p1", _frames(3), poses=_poses(2))
    with pytest.raises(ValueError, match="more poses"):
        write_image_bag(tmp_path / "p2", _frames(3), poses=_poses(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]


@pytest.mark.parametrize(
    "kw,match",
    [({"storage": "rosbag1"}, "unknown bag storage"), ({"pose_type": "gps"}, "unknown pose_type"),
     ({"rate_hz": 0.0}, "rate_hz"), ({"rate_hz": float("nan")}, "rate_hz")],
)
def test_write_argument_errors(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        write_image_bag(tmp_path / "x", _frames(1), BagWriteOptions(**kw))
    assert not (tmp_path / "x").exists()


def _raw_bag(path, topics: dict[str, str], payloads=None):
    """Write a bag with rosbags directly: topics {name: msgtype}, payloads {name: [bytes]}."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = default_typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {t: w.add_connection(t, mt, typestore=ts) for t, mt in topics.items()}
        for t, datas in (payloads or {}).items():
            for i, d in enumerate(datas):
                w.write(conns[t], START + i, d)


def test_missing_and_empty_bags(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image_bag(tmp_path / "nope")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(FileNotFoundError, match="not a rosbag2 bag"):
        list_topics(tmp_path / "emptydir")
    _raw_bag(tmp_path / "noimg", {"/odom": "nav_msgs/msg/Odometry"})
    with pytest.raises(ValueError, match="no image .* topics"):
        read_image_bag(tmp_path / "noimg")
    with pytest.raises(ValueError, match="no usable messages"):
        read_poses(tmp_path / "noimg")  # the topic exists but has no messages
    _raw_bag(tmp_path / "zero", {"/cam": "sensor_msgs/msg/Image"})
    with pytest.raises(ValueError, match="has no messages"):
        read_image_bag(tmp_path / "zero")


def test_topic_selection(tmp_path):
    ts = default_typestore()
    data = ts.serialize_cdr(array_to_image_msg(np.zeros((2, 2), np.uint8)),
                            "sensor_msgs/msg/Image")
    _raw_bag(tmp_path / "two", {"/a": "sensor_msgs/msg/Image", "/b": "sensor_msgs/msg/Image",
                                "/o": "nav_msgs/msg/Odometry"}, {"/a": [data], "/b": [data, data]})
    with pytest.raises(ValueError, match="2 image .* topics"):
        read_image_bag(tmp_path / "two")
    assert len(list(read_image_bag(tmp_path / "two", "/b"))) == 2
    with pytest.raises(ValueError, match="topic '/c' not in bag"):
        read_image_bag(tmp_path / "two", "/c")
    with pytest.raises(ValueError, match="has type nav_msgs/msg/Odometry"):
        read_image_bag(tmp_path / "two", "/o")


def test_corrupt_message_payload(tmp_path):
    _raw_bag(tmp_path / "bad", {"/cam": "sensor_msgs/msg/Image"},
             {"/cam": [b"\x00\x01\x00\x00garbage"]})
    frames = read_image_bag(tmp_path / "bad")
    match = "corrupt sensor_msgs/msg/Image message on /cam|truncated|empty image"
    with pytest.raises(ValueError, match=match):
        list(frames)


@pytest.mark.parametrize("storage,filename", [("mcap", "bag.mcap"), ("sqlite3", "bag.db3")])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "delete"])
def test_corrupt_storage_files(tmp_path, storage, filename, damage):
    out = tmp_path / "bag"
    write_image_bag(out, _frames(20, 32, 32), BagWriteOptions(storage=storage, start_ns=START))
    f = out / filename
    assert f.is_file()
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        f.write_bytes(b"garbage!" * 100)
    elif damage == "empty":
        f.write_bytes(b"")
    else:
        f.unlink()
    with pytest.raises(ValueError, match="cannot read bag|corrupt"):
        list(read_image_bag(out))


def test_corrupt_metadata(tmp_path):
    out = tmp_path / "bag"
    write_image_bag(out, _frames(2), BagWriteOptions(start_ns=START))
    (out / "metadata.yaml").write_text("{{{ not yaml")
    with pytest.raises(ValueError, match="cannot read bag"):
        bag_info(out)


def test_single_storage_file_is_readable(tmp_path):
    write_image_bag(tmp_path / "bag", _frames(3), BagWriteOptions(start_ns=START))
    got = list(read_image_bag(tmp_path / "bag" / "bag.mcap"))
    assert len(got) == 3


# ----------------------------------------------------------------------------- interpolation


def test_interpolate_linear_and_slerp():
    s = np.array([0, 100, 300], np.int64)
    xyz = np.array([[0, 0, 0], [10, 0, 0], [10, 20, 2]], float)
    quat = np.array([_yaw_quat(0.0), _yaw_quat(1.0), _yaw_quat(-1.0)])
    q = np.array([0, 25, 100, 200, 300])
    pos, rot = interpolate_poses(s, xyz, quat, q)
    np.testing.assert_allclose(pos, [[0, 0, 0], [2.5, 0, 0], [10, 0, 0], [10, 10, 1], [10, 20, 2]])
    yaw = 2 * np.arctan2(rot[:, 2], rot[:, 3])
    # slerp: constant angular rate
    np.testing.assert_allclose(yaw, [0.0, 0.25, 1.0, 0.0, -1.0], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(rot, axis=1), 1.0)


def test_interpolate_takes_short_way_and_handles_sign_flip():
    s = np.array([0, 10])
    q0 = np.array(_yaw_quat(0.2))
    q1 = -np.array(_yaw_quat(0.4))  # same rotation as yaw 0.4, opposite sign
    _, rot = interpolate_poses(s, np.zeros((2, 3)), np.stack([q0, q1]), [5])
    yaw = 2 * math.atan2(rot[0, 2], rot[0, 3]) * np.sign(rot[0, 3])
    assert yaw == pytest.approx(0.3, abs=1e-9)
    # 179 deg -> -179 deg goes through 180, not through 0
    quats = np.stack([_yaw_quat(math.radians(179)), _yaw_quat(math.radians(-179))])
    _, rot = interpolate_poses(s, np.zeros((2, 3)), quats, [5])
    assert abs(rot[0, 3]) < 1e-6  # w ~ 0 means yaw ~ 180 deg


def test_interpolate_outside_and_errors():
    s, xyz = np.array([10, 20]), np.array([[0, 0, 0], [1, 1, 1.0]])
    quat = np.array([[0, 0, 0, 1.0]] * 2)
    pos, _ = interpolate_poses(s, xyz, quat, [0, 30])
    np.testing.assert_allclose(pos, [[0, 0, 0], [1, 1, 1]])
    pos, rot = interpolate_poses(s, xyz, quat, [0, 15, 30], outside="nan")
    assert np.isnan(pos[0]).all() and np.isnan(rot[2]).all() and np.allclose(pos[1], 0.5)
    with pytest.raises(ValueError, match="outside the pose range"):
        interpolate_poses(s, xyz, quat, [0], outside="error")
    with pytest.raises(ValueError, match="strictly increasing"):
        interpolate_poses(np.array([10, 10]), xyz, quat, [10])
    with pytest.raises(ValueError, match="no poses"):
        interpolate_poses(np.array([]), np.zeros((0, 3)), np.zeros((0, 4)), [1])
    with pytest.raises(ValueError, match="must be"):
        interpolate_poses(s, xyz[:1], quat, [1])
    pos, rot = interpolate_poses(s[:1], xyz[:1], quat[:1], [5, 50])
    np.testing.assert_allclose(pos, 0.0)


def test_poses_from_bag_interpolated_at_image_times(tmp_path):
    frames = _frames(5)
    write_image_bag(tmp_path / "b", frames, BagWriteOptions(
        rate_hz=10.0, start_ns=START, pose_type="pose_stamped", pose_topic="/pose"), _poses(5))
    stamps, xyz, quat = read_poses(tmp_path / "b")
    mid = [START + 50_000_000 + i * 100_000_000 for i in range(4)]
    pos, rot = interpolate_poses(stamps, xyz, quat, mid)
    np.testing.assert_allclose(pos[:, 0], [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(2 * np.arctan2(rot[:, 2], rot[:, 3]), [0.05, 0.15, 0.25, 0.35],
                               atol=1e-9)


# ----------------------------------------------------------------------------- CLI


def _write_pngs(folder, frames):
    import cv2

    folder.mkdir()
    for i, f in enumerate(frames):  # names sort as 10 < 2 only lexically: use zero padding
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), f if f.ndim == 2 else f[..., ::-1])


def test_cli_bag_write_and_info(tmp_path, capsys):
    from vl2spike_ros.cli import main

    frames = _frames(4)
    _write_pngs(tmp_path / "imgs", frames)
    rows = "\n".join(",".join(map(str, p)) for p in _poses(4))
    (tmp_path / "poses.csv").write_text("x,y,z,qx,qy,qz,qw\n" + rows)
    out = tmp_path / "bag"
    rc = main(["bag", "write", "--images", str(tmp_path / "imgs"), "--out", str(out),
               "--storage", "sqlite3", "--rate", "5", "--poses", str(tmp_path / "poses.csv"),
               "--start-ns", str(START)])
    assert rc == 0
    got = list(read_image_bag(out))
    assert [g.stamp_ns for g in got] == [START + i * 200_000_000 for i in range(4)]
    for g, f in zip(got, frames):
        np.testing.assert_array_equal(g.image, f)
    np.testing.assert_allclose(read_poses(out)[1], np.array(_poses(4))[:, :3])
    capsys.readouterr()
    assert main(["bag", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "/camera/image_raw" in text and "sensor_msgs/msg/Image" in text and "4" in text
    # existing output: one clear error line, exit 2, bag untouched
    rc = main(["bag", "write", "--images", str(tmp_path / "imgs" / "*.png"), "--out", str(out)])
    assert rc == 2 and "exists" in capsys.readouterr().err
    rc = main(["bag", "write", "--images", str(tmp_path / "imgs" / "*.png"), "--out", str(out),
               "--overwrite", "--compressed", "--grayscale"])
    assert rc == 0
    got = list(read_image_bag(out))
    assert len(got) == 4 and got[0].image.ndim == 2


def test_cli_errors(tmp_path, capsys):
    from vl2spike_ros.cli import main

    assert main(["bag", "write", "--images", str(tmp_path / "none*.png"),
                 "--out", str(tmp_path / "b")]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["bag", "info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    _write_pngs(tmp_path / "imgs", _frames(3))
    (tmp_path / "p.csv").write_text("1,2,3\n")
    assert main(["bag", "write", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "b"),
                 "--poses", str(tmp_path / "p.csv")]) == 2
    assert "poses" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.data
def test_cli_bag_from_nordland_frames(data_root, tmp_path):
    """Real data: 20 Nordland frames -> png-compressed mono8 bag -> the same pixels back."""
    import cv2

    from vl2spike_ros.cli import main

    folder = data_root / "nordland" / "summer"
    files = sorted(folder.glob("images-*.png"))[:20]
    assert len(files) == 20
    out = tmp_path / "nordland"
    assert main(["bag", "write", "--images", str(folder / "images-*.png"), "--out", str(out),
                 "--limit", "20", "--grayscale", "--compressed", "--format", "png",
                 "--start-ns", str(START)]) == 0
    got = list(read_image_bag(out))
    assert len(got) == 20
    for g, f in zip(got, files):
        np.testing.assert_array_equal(g.image, cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
