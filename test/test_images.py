"""ROS image messages <-> numpy (vl2spike_ros.io.images), with rclpy and rosbags messages."""
from __future__ import annotations

import struct
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from vl2spike_ros.io import images as im
from vl2spike_ros.io.images import (
    ImageDecodeError,
    array_to_compressed_msg,
    array_to_image_msg,
    compressed_msg_to_array,
    image_msg_to_array,
    msg_to_array,
)

RNG = np.random.default_rng(0)

# encoding -> (dtype, channels)
ENCODINGS = {
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1), "32FC1": (np.float32, 1), "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "8UC3": (np.uint8, 3), "rgb16": (np.uint16, 3), "bgr16": (np.uint16, 3),
    "16SC1": (np.int16, 1), "64FC1": (np.float64, 1), "32FC3": (np.float32, 3),
}


def _random(dtype, channels, h=5, w=7) -> np.ndarray:
    shape = (h, w) if channels == 1 else (h, w, channels)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return RNG.normal(size=shape).astype(dt)
    info = np.iinfo(dt)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)


def _rclpy_roundtrip(msg):
    """Serialise and deserialise an rclpy message through the real CDR type support."""
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


def _rosbags_roundtrip(msg):
    ts = im.default_typestore()
    return ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def _make(kind: str, arr, encoding, **kw):
    if kind == "rosbags":
        return _rosbags_roundtrip(array_to_image_msg(arr, encoding, **kw))
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    return _rclpy_roundtrip(array_to_image_msg(arr, encoding, sensor_msgs.Image, **kw))


def test_module_does_not_import_rclpy():
    import subprocess

    code = ("import sys, vl2spike_ros.io.images, vl2spike_ros.io.bags; "
            "print('rclpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("kind", ["rosbags", "rclpy"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("pad", [0, 5])
def test_raw_roundtrip(kind, encoding, big, pad):
    dtype, ch = ENCODINGS[encoding]
    arr = _random(dtype, ch)
    row = arr.shape[1] * ch * np.dtype(dtype).itemsize
    msg = _make(kind, arr, encoding, is_bigendian=big, step=row + pad, stamp_ns=12_000_000_345,
                frame_id="cam")
    assert msg.step == row + pad and len(bytes(msg.data)) == (row + pad) * arr.shape[0]
    assert msg.encoding == encoding and bool(msg.is_bigendian) == big
    assert im.stamp_ns(msg) == 12_000_000_345 and msg.header.frame_id == "cam"
    out = image_msg_to_array(msg)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("encoding,order",
                         [("bgr8", [2, 1, 0]), ("bgra8", [2, 1, 0, 3]), ("rgb8", [0, 1, 2])])
def test_wire_channel_order(encoding, order):
    """The wire bytes follow the encoding while arrays are always RGB(A)."""
    arr = _random(np.uint8, len(order), 2, 3)
    msg = array_to_image_msg(arr, encoding)
    np.testing.assert_array_equal(np.asarray(msg.data[: len(order)]), arr[0, 0, order])


def test_decode_hand_packed_big_endian_padded():
    """A message packed by hand (independent of the encoder): mono16, big-endian, 2 pad bytes."""
    values = [[1, 258, 65535], [4096, 7, 0]]
    data = b"".join(struct.pack(">3H", *row) + b"\xaa\xbb" for row in values)
    msg = SimpleNamespace(height=2, width=3, encoding="mono16", is_bigendian=1, step=8, data=data)
    np.testing.assert_array_equal(image_msg_to_array(msg), np.array(values, np.uint16))
    msg.is_bigendian = 0  # same bytes read little-endian differ
    assert image_msg_to_array(msg)[0, 1] == struct.unpack("<H", struct.pack(">H", 258))[0]


def test_decode_hand_packed_bgr8_list_data():
    msg = SimpleNamespace(height=1, width=2, encoding="bgr8", is_bigendian=0, step=6,
                          data=[1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(image_msg_to_array(msg), [[[3, 2, 1], [6, 5, 4]]])


def test_decoded_array_does_not_alias_message():
    arr = _random(np.uint8, 1)
    msg = array_to_image_msg(arr, "mono8")
    out = image_msg_to_array(msg)
    out[:] = 0
    np.testing.assert_array_equal(image_msg_to_array(msg), arr)


def test_infer_encoding_and_fill_instance():
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    assert array_to_image_msg(_random(np.uint8, 3)).encoding == "rgb8"
    assert array_to_image_msg(_random(np.uint16, 1)).encoding == "mono16"
    assert array_to_image_msg(_random(np.float32, 1)).encoding == "32FC1"
    existing = sensor_msgs.Image()
    out = array_to_image_msg(_random(np.uint8, 1), msg_cls=existing, stamp_ns=5)
    assert out is existing and existing.encoding == "mono8" and existing.header.stamp.nanosec == 5


def _raw(**over):
    base = dict(height=2, width=3, encoding="rgb8", is_bigendian=0, step=9, data=bytes(18))
    base.update(over)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(
    "over,match",
    [
        ({"encoding": "yuv999"}, "unsupported image encoding"),
        ({"encoding": "bayer_rggb16"}, "unsupported image encoding"),
        ({"data": bytes(17)}, "truncated"),
        ({"data": bytes(19)}, "more than step\\*height"),
        ({"step": 8, "data": bytes(16)}, "step 8 is smaller"),
        ({"height": 0, "data": b""}, "empty image"),
        ({"width": 0, "step": 0, "data": b""}, "empty image"),
        ({"encoding": "mono16", "step": 5, "data": bytes(10)}, "step 5 is smaller"),
    ],
)
def test_raw_errors(over, match):
    with pytest.raises(ImageDecodeError, match=match):
        image_msg_to_array(_raw(**over))
    assert issubclass(ImageDecodeError, ValueError)


def test_not_an_image():
    with pytest.raises(ImageDecodeError, match="not a sensor_msgs/Image"):
        image_msg_to_array(SimpleNamespace(format="jpeg", data=b""))


@pytest.mark.parametrize(
    "arr,encoding,match",
    [
        (np.zeros((2, 3), np.float32), "mono8", "dtype float32 does not match"),
        (np.zeros((2, 3), np.uint8), "rgb8", "does not fit encoding"),
        (np.zeros((0, 3), np.uint8), "mono8", "empty"),
        (np.zeros((2, 3, 3), np.uint8), "nope", "unsupported image encoding"),
        (np.zeros((2,), np.uint8), "mono8", r"\[H, W\]"),
    ],
)
def test_encode_errors(arr, encoding, match):
    with pytest.raises(ValueError, match=match):
        array_to_image_msg(arr, encoding)


def test_encode_step_too_small():
    with pytest.raises(ValueError, match="step 2 < row size"):
        array_to_image_msg(np.zeros((2, 3), np.uint8), "mono8", step=2)


# ----------------------------------------------------------------------------- compressed


def _smooth_rgb(h=24, w=32) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    r = 200 + 0 * x
    g = (x * 255 // (w - 1))
    b = 30 + (y * 40 // (h - 1))
    return np.stack([r, g, b], -1).astype(np.uint8)


def _compressed(kind, arr, fmt, **kw):
    if kind == "rosbags":
        return _rosbags_roundtrip(array_to_compressed_msg(arr, fmt, **kw))
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    return _rclpy_roundtrip(
        array_to_compressed_msg(arr, fmt, msg_cls=sensor_msgs.CompressedImage, **kw))


@pytest.mark.parametrize("kind", ["rosbags", "rclpy"])
@pytest.mark.parametrize(
    "arr",
    [_random(np.uint8, 3), _random(np.uint8, 1), _random(np.uint16, 1), _random(np.uint8, 4)],
    ids=["rgb8", "mono8", "mono16", "rgba8"],
)
def test_png_roundtrip_lossless(kind, arr):
    msg = _compressed(kind, arr, "png", stamp_ns=7, frame_id="f")
    assert "png" in msg.format and im.stamp_ns(msg) == 7
    out = compressed_msg_to_array(msg)
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(msg_to_array(msg), arr)


@pytest.mark.parametrize("kind", ["rosbags", "rclpy"])
def test_jpeg_roundtrip_keeps_rgb_order(kind):
    arr = _smooth_rgb()
    msg = _compressed(kind, arr, "jpeg", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8"
    out = compressed_msg_to_array(msg)
    assert out.shape == arr.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - arr.astype(int))
    assert err.mean() < 3.0, err.mean()
    assert out[..., 0].mean() > 180 and out[..., 2].mean() < 80  # red stays red, blue stays low


def test_jpeg_grey_and_quality_matters():
    y, x = np.mgrid[0:32, 0:32]
    arr = ((x * 7 + y * 3) % 256).astype(np.uint8)
    hi = array_to_compressed_msg(arr, "jpg", quality=95)
    lo = array_to_compressed_msg(arr, "jpeg", quality=5)
    assert hi.format == "mono8; jpeg compressed mono8"
    assert len(lo.data) < len(hi.data)
    assert compressed_msg_to_array(hi).shape == arr.shape


def test_image_transport_style_format_strings():
    """Payloads from other producers: the format string only names what was compressed."""
    import cv2

    arr = _smooth_rgb()
    ok, buf = cv2.imencode(".png", arr[..., ::-1])  # OpenCV writes BGR input
    assert ok
    for fmt in ("png", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8", ""):
        got = compressed_msg_to_array(SimpleNamespace(format=fmt, data=buf.tobytes()))
        np.testing.assert_array_equal(got, arr)
    grey = compressed_msg_to_array(
        SimpleNamespace(format="mono8; png compressed bgr8", data=buf.tobytes()))
    assert grey.shape == arr.shape[:2]


def test_compressed_depth_16uc1():
    import cv2

    depth = _random(np.uint16, 1, 6, 8)
    ok, png = cv2.imencode(".png", depth)
    header = struct.pack("<iff", 0, 0.0, 0.0)
    msg = SimpleNamespace(format="16UC1; compressedDepth png", data=header + png.tobytes())
    np.testing.assert_array_equal(compressed_msg_to_array(msg), depth)


def test_compressed_depth_32fc1_inverse_depth():
    """image_transport's 32FC1 compressedDepth: PNG of quantised inverse depth + (A, B) header."""
    import cv2

    depth = np.linspace(0.5, 10.0, 48, dtype=np.float32).reshape(6, 8)
    qa, qb = 1000.0, 0.0
    inv = np.round(qa / depth + qb).astype(np.uint16)
    inv[0, 0] = 0  # "no measurement"
    ok, png = cv2.imencode(".png", inv)
    msg = SimpleNamespace(format="32FC1; compressedDepth png",
                          data=struct.pack("<iff", 0, qa, qb) + png.tobytes())
    out = compressed_msg_to_array(msg)
    assert out.dtype == np.float32 and np.isnan(out[0, 0])
    np.testing.assert_allclose(out.reshape(-1)[1:], depth.reshape(-1)[1:], rtol=0.01)
    with pytest.raises(ImageDecodeError, match="quantisation header"):
        compressed_msg_to_array(SimpleNamespace(format=msg.format, data=png.tobytes()))


@pytest.mark.parametrize(
    "data,match", [(b"", "empty compressed"), (b"not an image at all", "undecodable"),
                   (b"\xff\xd8\xff\xe0" + bytes(20), "undecodable")]
)
def test_compressed_errors(data, match):
    with pytest.raises(ImageDecodeError, match=match):
        compressed_msg_to_array(SimpleNamespace(format="jpeg", data=data))


def test_truncated_png_is_an_error():
    msg = array_to_compressed_msg(_random(np.uint8, 3, 16, 16), "png")
    cut = SimpleNamespace(format=msg.format, data=bytes(msg.data[: len(msg.data) // 2]))
    with pytest.raises(ImageDecodeError):
        compressed_msg_to_array(cut)


@pytest.mark.parametrize(
    "arr,fmt,kw,match",
    [
        (np.zeros((4, 4), np.uint8), "tiff", {}, "unsupported compressed format"),
        (np.zeros((4, 4), np.uint16), "jpeg", {}, "jpeg needs a uint8"),
        (np.zeros((4, 4), np.float32), "png", {}, "png needs a uint8 or uint16"),
        (np.zeros((4, 4, 4), np.uint8), "jpeg", {}, "alpha"),
        (np.zeros((4, 4), np.uint8), "jpeg", {"quality": 0}, "quality"),
        (np.zeros((0, 4), np.uint8), "png", {}, "empty"),
        (np.zeros((4, 4, 2), np.uint8), "png", {}, "shape"),
    ],
)
def test_compressed_encode_errors(arr, fmt, kw, match):
    with pytest.raises(ValueError, match=match):
        array_to_compressed_msg(arr, fmt, **kw)


# --------------------------------------------------------------------------- YUV 4:2:2 and Bayer
# Colours with R, G and B all different: a swapped channel or pattern changes every one of them.
COLOURS = np.array([(200, 100, 30), (20, 180, 90), (60, 40, 220), (240, 230, 10)], np.uint8)


def _stripes(h=16, w=24) -> np.ndarray:
    """RGB ``[h, w, 3]``: horizontal stripes of 4 rows, one colour each (flat along a row)."""
    return np.repeat(COLOURS[np.arange(h) // 4 % len(COLOURS)][:, None], w, axis=1)


def _blocks(h=32, w=32) -> np.ndarray:
    """RGB ``[h, w, 3]``: 16x16 flat blocks of the four colours."""
    idx = (np.arange(h)[:, None] // 16 * 2 + np.arange(w)[None] // 16) % len(COLOURS)
    return COLOURS[idx]


def _yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Pack RGB as YUV 4:2:2 (BT.601 video range) by hand: ``[H, 2W]`` bytes in ``order``."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    u2, v2 = (c.reshape(c.shape[0], -1, 2).mean(axis=2) for c in (u, v))  # one pair per 2 px
    planes = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u2, "V": v2}
    names = ("U", "Y0", "V", "Y1") if order == "UYVY" else ("Y0", "U", "Y1", "V")
    packed = np.stack([planes[n] for n in names], axis=2)
    return np.clip(np.rint(packed), 0, 255).astype(np.uint8).reshape(rgb.shape[0], -1)


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Bayer-sample RGB by hand: ``pattern`` (e.g. "rggb") gives the top-left 2x2 cell."""
    out = np.zeros(rgb.shape[:2], np.uint8)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return out


def _wire(rows: np.ndarray, encoding: str, width: int, pad: int = 0):
    data = np.zeros((rows.shape[0], rows.shape[1] + pad), np.uint8)
    data[:, :rows.shape[1]] = rows
    return SimpleNamespace(height=rows.shape[0], width=width, encoding=encoding, is_bigendian=0,
                           step=rows.shape[1] + pad, data=data.tobytes())


@pytest.mark.parametrize("encoding,order", [("yuv422", "UYVY"), ("uyvy", "UYVY"),
                                            ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")])
@pytest.mark.parametrize("pad", [0, 6])
def test_yuv422_round_trip(encoding, order, pad):
    """ROS yuv422 is UYVY and yuv422_yuy2 is YUYV (image_encodings.hpp): decoded back to RGB."""
    rgb = _stripes()
    out = image_msg_to_array(_wire(_yuv422(rgb, order), encoding, rgb.shape[1], pad))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).max() <= 3
    other = "YUYV" if order == "UYVY" else "UYVY"  # the other byte order must not pass
    wrong = image_msg_to_array(_wire(_yuv422(rgb, other), encoding, rgb.shape[1]))
    assert np.abs(wrong.astype(int) - rgb).max() > 30


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_round_trip(pattern):
    """A flat-colour patch comes back with its colour (OpenCV's Bayer names are one off)."""
    rgb = _blocks()
    msg = _rosbags_roundtrip(array_to_image_msg(_mosaic(rgb, pattern), "mono8"))
    msg.encoding = f"bayer_{pattern}8"
    out = msg_to_array(msg)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    for y0 in (0, 16):
        for x0 in (0, 16):  # inside each block, away from its edges
            patch = out[y0 + 3:y0 + 13, x0 + 3:x0 + 13].reshape(-1, 3)
            np.testing.assert_array_equal(patch, np.broadcast_to(rgb[y0, x0], patch.shape))
    for other in {"rggb", "bggr", "gbrg", "grbg"} - {pattern}:
        msg.encoding = f"bayer_{other}8"
        assert not np.array_equal(msg_to_array(msg)[3:13, 3:13], out[3:13, 3:13]), other


@pytest.mark.parametrize("over,match", [
    ({"width": 23}, r"'yuv422' \(YUV 4:2:2 UYVY\) needs an even width"),
    ({"step": 46}, "step 46 is smaller than width\\*channels\\*bytes = 24\\*2\\*1 = 48"),
    ({"data": bytes(47)}, "truncated image data"),
])
def test_yuv422_size_errors_are_one_line(over, match):
    base = dict(height=2, width=24, encoding="yuv422", is_bigendian=0, step=48, data=bytes(96))
    base.update(over)
    if "width" in over:
        base.update(step=46, data=bytes(92))
    with pytest.raises(ImageDecodeError, match=match) as ei:
        image_msg_to_array(SimpleNamespace(**base))
    assert "\n" not in str(ei.value)


def test_bayer_wrong_step_and_unwritable_encodings():
    msg = _wire(np.zeros((4, 6), np.uint8), "bayer_grbg8", 6)
    msg.step = 5
    with pytest.raises(ImageDecodeError, match="step 5 is smaller"):
        image_msg_to_array(msg)
    with pytest.raises(ImageDecodeError, match="can be decoded but not written"):
        array_to_image_msg(np.zeros((4, 6), np.uint8), "bayer_rggb8")
