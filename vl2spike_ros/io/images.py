"""ROS ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` <-> numpy (no rclpy import).

Works on rclpy messages and on messages read or built with ``rosbags`` alike: decoding is
duck-typed on the attributes ``height, width, encoding, is_bigendian, step, data`` (raw) and
``format, data`` (compressed).

Array conventions (both directions):

* single-channel images are ``[H, W]``; multi-channel images are ``[H, W, C]``;
* colour is in **RGB(A) order** whatever the wire encoding (``bgr8`` / ``bgra8`` / ``bgr16`` and
  JPEG/PNG payloads are reordered); generic OpenCV encodings (``8UC3`` ...) are returned as-is;
* dtype follows the encoding (``uint8`` for ``*8``/``8UC*``, ``uint16`` for ``mono16``/``16UC*``,
  ``float32`` for ``32FC*``...), always in native byte order and never aliasing the message;
* camera-native encodings (YUV 4:2:2 ``yuv422`` = UYVY, ``yuv422_yuy2`` = YUYV, 8-bit Bayer
  ``bayer_rggb8`` ...) are decoded to ``[H, W, 3]`` RGB uint8 (read only; see
  :mod:`vl2spike_ros.io.camera_formats`).

Bad input (unknown encoding, truncated data, ``step`` too small, empty image, undecodable
compressed payload) raises :class:`ImageDecodeError`, a ``ValueError``.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import re
from typing import Any, NamedTuple

import numpy as np

from vl2spike_ros.io.camera_formats import CAMERA_ENCODINGS, camera_format, camera_rows_to_rgb
from vl2spike_ros.io.decode import (DEFAULT_MAX_PIXELS, ImageDecodeError, ImageTooLargeError,
                                    check_pixels, decode_image_bytes, image_header_size)

log = logging.getLogger(__name__)

__all__ = [
    "ImageDecodeError",
    "EncodingInfo",
    "encoding_info",
    "default_typestore",
    "image_msg_to_array",
    "array_to_image_msg",
    "compressed_msg_to_array",
    "array_to_compressed_msg",
    "msg_to_array",
    "stamp_ns",
    "is_compressed_msg",
    "ImageTooLargeError",
    "DEFAULT_MAX_PIXELS",
    "image_header_size",
    "check_pixels",
    "decode_image_bytes",
]


class EncodingInfo(NamedTuple):
    """What one ``sensor_msgs/Image`` encoding means: element dtype, channels, channel order."""

    dtype: np.dtype
    channels: int
    order: str  # "RGB", "BGR", "RGBA", "BGRA", "MONO" or "RAW" (generic nUCk: no reordering)


_NAMED = {
    "mono8": (np.uint8, 1, "MONO"),
    "mono16": (np.uint16, 1, "MONO"),
    "rgb8": (np.uint8, 3, "RGB"),
    "bgr8": (np.uint8, 3, "BGR"),
    "rgba8": (np.uint8, 4, "RGBA"),
    "bgra8": (np.uint8, 4, "BGRA"),
    "rgb16": (np.uint16, 3, "RGB"),
    "bgr16": (np.uint16, 3, "BGR"),
    "rgba16": (np.uint16, 4, "RGBA"),
    "bgra16": (np.uint16, 4, "BGRA"),
}
_GENERIC = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C([1-4])$")
_GENERIC_DTYPES = {
    "8U": np.uint8, "8S": np.int8, "16U": np.uint16, "16S": np.int16,
    "32S": np.int32, "32F": np.float32, "64F": np.float64,
}
_DTYPE_TO_GENERIC = {np.dtype(v): k for k, v in _GENERIC_DTYPES.items()}


def encoding_info(encoding: str) -> EncodingInfo:
    """Describe ``encoding`` (e.g. ``"rgb8"``, ``"16UC1"``); ``ImageDecodeError`` if unknown."""
    enc = str(encoding).strip()
    if enc.lower() in _NAMED:
        dt, ch, order = _NAMED[enc.lower()]
        return EncodingInfo(np.dtype(dt), ch, order)
    m = _GENERIC.match(enc.upper())
    if m:
        ch = int(m.group(2))
        return EncodingInfo(np.dtype(_GENERIC_DTYPES[m.group(1)]), ch,
                            "MONO" if ch == 1 else "RAW")
    known = ", ".join(sorted(_NAMED)) + ", 8UC1..64FC4"
    if enc.lower() in CAMERA_ENCODINGS:  # decoded by image_msg_to_array, never written
        raise ImageDecodeError(f"image encoding {encoding!r} can be decoded but not written "
                               f"(writable: {known})")
    raise ImageDecodeError(f"unsupported image encoding {encoding!r} (supported: {known}, "
                           f"{', '.join(CAMERA_ENCODINGS)})")


@functools.lru_cache(maxsize=1)
def default_typestore():
    """Return the rosbags typestore used to build messages without rclpy (ROS 2 Kilted)."""
    from rosbags.typesys import Stores, get_typestore

    store = getattr(Stores, "ROS2_KILTED", None) or Stores.LATEST
    return get_typestore(store)


def _data_bytes(data: Any) -> np.ndarray:
    """Message ``data`` (bytes, array.array, ndarray, list) as a flat uint8 view or array."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "buffer_info"):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageDecodeError(f"image data of type {type(data).__name__} is not bytes") from exc


def stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` (or a bare ``Time``) as integer nanoseconds."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None) or msg
    try:
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    except AttributeError as exc:
        raise ValueError(f"{type(msg).__name__} has no header.stamp / sec+nanosec") from exc


def _reorder_to_rgb(arr: np.ndarray, order: str) -> np.ndarray:
    """Swap B and R of ``[H, W, 3|4]`` for BGR(A) orders (the swap is its own inverse)."""
    if order not in ("BGR", "BGRA"):
        return arr
    import cv2  # far faster than numpy fancy indexing for this

    code = cv2.COLOR_BGR2RGB if order == "BGR" else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(np.ascontiguousarray(arr), code)


def image_msg_to_array(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``[H, W]`` or ``[H, W, C]`` array (RGB order, native endian).

    Honours ``step`` (row padding) and ``is_bigendian``. Raises ``ImageDecodeError``
    (``ImageTooLargeError`` above ``max_pixels``, None: :data:`DEFAULT_MAX_PIXELS`).
    """
    try:
        h, w, step = int(msg.height), int(msg.width), int(msg.step)
        encoding, big = msg.encoding, bool(msg.is_bigendian)
        raw = _data_bytes(msg.data)
    except AttributeError as exc:
        raise ImageDecodeError(f"not a sensor_msgs/Image: {exc}") from exc
    camera = camera_format(encoding)  # YUV 4:2:2 / Bayer: converted to RGB
    info = encoding_info(encoding) if camera is None else None
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f"empty image ({h}x{w}, encoding {encoding!r})")
    check_pixels(w, h, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
                 f"{encoding} image")
    if camera is not None:
        rows = _rows(raw, h, w, step, (camera.bytes_per_pixel, 1), encoding)
        return camera_rows_to_rgb(rows, camera, w, encoding)
    rows = _rows(raw, h, w, step, (info.channels, info.dtype.itemsize), encoding)
    wire = info.dtype.newbyteorder(">" if big else "<")
    arr = np.array(rows, copy=True).view(wire).reshape(h, w, info.channels)
    arr = arr.astype(info.dtype.newbyteorder("="), copy=False)
    arr = _reorder_to_rgb(arr, info.order)
    arr = arr[..., 0] if info.channels == 1 else arr
    return np.ascontiguousarray(arr)


def _rows(raw: np.ndarray, h: int, w: int, step: int, pixel: tuple[int, int],
          encoding: str) -> np.ndarray:
    """Rows ``[h, w * channels * bytes]`` of the message data (padding cut; a strided view).

    ``pixel``: (channels, bytes per channel). ImageDecodeError for a ``step`` below the row size,
    truncated data or more data than ``step * h``.
    """
    row_bytes = w * pixel[0] * pixel[1]
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width*channels*bytes = {w}*{pixel[0]}*"
            f"{pixel[1]} = {row_bytes} for encoding {encoding!r}"
        )
    need, expected = (h - 1) * step + row_bytes, h * step
    if raw.size < need:
        raise ImageDecodeError(
            f"truncated image data: {raw.size} bytes, a {h}x{w} {encoding!r} image with step "
            f"{step} needs {expected}"
        )
    if raw.size > expected:
        raise ImageDecodeError(
            f"image data has {raw.size} bytes, more than step*height = {expected} "
            f"({h}x{w} {encoding!r}): wrong height/step/encoding?"
        )
    return np.lib.stride_tricks.as_strided(raw, shape=(h, row_bytes), strides=(step, 1))


def _infer_encoding(arr: np.ndarray) -> str:
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    if arr.dtype == np.uint8:
        return {1: "mono8", 3: "rgb8", 4: "rgba8"}.get(ch, f"8UC{ch}")
    if arr.dtype == np.uint16:
        return {1: "mono16", 3: "rgb16", 4: "rgba16"}.get(ch, f"16UC{ch}")
    if arr.dtype in _DTYPE_TO_GENERIC:
        return f"{_DTYPE_TO_GENERIC[arr.dtype]}C{ch}"
    raise ValueError(f"no image encoding for arrays of dtype {arr.dtype}")


def _check_array(arr: np.ndarray, info: EncodingInfo, encoding: str) -> np.ndarray:
    """Validate shape/dtype against ``info``; return ``[H, W, C]``."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != info.channels:
        raise ValueError(
            f"array of shape {arr.shape} does not fit encoding {encoding!r} "
            f"({info.channels} channel(s): expected [H, W]{'' if info.channels == 1 else ', C'})"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image array of shape {arr.shape}")
    if arr.dtype.newbyteorder("=") != info.dtype:
        raise ValueError(f"array dtype {arr.dtype} does not match encoding {encoding!r} "
                         f"({info.dtype})")
    return arr


def _new_msg(msg_cls: Any, msgtype: str) -> tuple[Any, bool]:
    """(message instance, is_rosbags_dataclass) for ``msg_cls`` (None, a class or an instance)."""
    if msg_cls is None:
        msg_cls = default_typestore().types[msgtype]
    if dataclasses.is_dataclass(msg_cls):
        if isinstance(msg_cls, type):
            return None, True  # built with keyword arguments by the caller
        return msg_cls, True
    return (msg_cls() if isinstance(msg_cls, type) else msg_cls), False


def _rosbags_header(stamp: int, frame_id: str) -> Any:
    types = default_typestore().types
    sec, nanosec = divmod(stamp, 1_000_000_000)
    t = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return types["std_msgs/msg/Header"](stamp=t, frame_id=frame_id)


def _fill(msg_cls: Any, msgtype: str, fields: dict, stamp: int, frame_id: str) -> Any:
    """Make/fill a message of ``msgtype``: rosbags dataclass (data as ndarray) or rclpy object."""
    if stamp < 0:
        raise ValueError(f"stamp_ns must be >= 0, got {stamp}")
    msg, is_dc = _new_msg(msg_cls, msgtype)
    if is_dc:
        fields = dict(fields, data=np.frombuffer(fields["data"], dtype=np.uint8).copy())
        header = _rosbags_header(stamp, frame_id)
        if msg is None:
            cls = msg_cls if msg_cls is not None else default_typestore().types[msgtype]
            return cls(header=header, **fields)
        msg.header = header
    else:
        msg.header.stamp.sec = stamp // 1_000_000_000
        msg.header.stamp.nanosec = stamp % 1_000_000_000
        msg.header.frame_id = frame_id
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def array_to_image_msg(
    arr: np.ndarray,
    encoding: str | None = None,
    msg_cls: Any = None,
    *,
    stamp_ns: int = 0,
    frame_id: str = "",
    is_bigendian: bool = False,
    step: int | None = None,
) -> Any:
    """``[H, W]`` / ``[H, W, C]`` array (RGB order) -> ``sensor_msgs/Image``.

    ``encoding`` None infers it (uint8: mono8/rgb8/rgba8, uint16: mono16/rgb16/rgba16, else
    e.g. ``32FC1``). ``msg_cls``: None -> a rosbags dataclass (Kilted typestore, serialisable with
    ``typestore.serialize_cdr``); an rclpy class such as ``sensor_msgs.msg.Image``; a rosbags
    class; or an existing message instance to fill. ``step`` > row bytes pads each row with zeros.
    """
    arr = np.asarray(arr)
    if arr.ndim not in (2, 3):
        raise ValueError(f"image array must be [H, W] or [H, W, C], got shape {arr.shape}")
    encoding = encoding or _infer_encoding(arr)
    info = encoding_info(encoding)
    a = _check_array(arr, info, encoding)
    if info.order in ("BGR", "BGRA"):  # input is RGB(A); the wire wants BGR(A)
        a = _reorder_to_rgb(a, info.order)
    h, w = a.shape[:2]
    a = a.astype(info.dtype.newbyteorder(">" if is_bigendian else "<"), copy=False)
    row_bytes = w * info.channels * info.dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ValueError(f"step {step} < row size {row_bytes} bytes for a {w}-wide {encoding!r} "
                         "image")
    rows = np.zeros((h, step), dtype=np.uint8)
    rows[:, :row_bytes] = np.ascontiguousarray(a).view(np.uint8).reshape(h, row_bytes)
    fields = {
        "height": h, "width": w, "encoding": encoding, "is_bigendian": int(bool(is_bigendian)),
        "step": step, "data": rows.tobytes(),
    }
    return _fill(msg_cls, "sensor_msgs/msg/Image", fields, int(stamp_ns), frame_id)


# ----------------------------------------------------------------------------- compressed

_PNG_MAGIC = b"\x89PNG"


def is_compressed_msg(msg: Any) -> bool:
    """Tell ``sensor_msgs/CompressedImage``-like objects (``format`` + ``data``) apart."""
    return hasattr(msg, "format") and hasattr(msg, "data") and not hasattr(msg, "encoding")


def _decode_compressed_depth(raw: np.ndarray, fmt: str, max_pixels: int) -> np.ndarray:
    """``compressedDepth`` payload: 12-byte config header (int32 format, 2 float32) + PNG."""
    if raw[:4].tobytes() == _PNG_MAGIC:
        header, png = None, raw
    else:
        header, png = raw[:12], raw[12:]
    img = decode_image_bytes(png, None, max_pixels, f"compressedDepth payload (format {fmt!r})")
    if fmt.lower().startswith("32fc1"):
        if header is None:
            raise ImageDecodeError("32FC1 compressedDepth without its quantisation header")
        qa, qb = np.frombuffer(header[4:12].tobytes(), dtype="<f4")
        inv = img.astype(np.float32)
        with np.errstate(divide="ignore"):
            depth = np.where(inv > 0, qa / (inv - qb), np.nan).astype(np.float32)
        return depth
    return img


def compressed_msg_to_array(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg/png, also ``compressedDepth`` png) -> array.

    Returns ``[H, W]`` (grey, 8 or 16 bit) or ``[H, W, 3|4]`` in RGB(A) order. A payload whose
    original encoding (``"mono8; jpeg compressed mono8"``) is mono but decodes to colour is
    converted to grey. Raises ``ImageDecodeError`` when the data cannot be decoded, is truncated
    or its header announces more than ``max_pixels`` (None: :data:`DEFAULT_MAX_PIXELS`;
    ``ImageTooLargeError``, checked before decoding).
    """
    import cv2

    try:
        fmt, raw = str(msg.format or ""), _data_bytes(msg.data)
    except AttributeError as exc:
        raise ImageDecodeError(f"not a sensor_msgs/CompressedImage: {exc}") from exc
    if raw.size == 0:
        raise ImageDecodeError(f"empty compressed image data (format {fmt!r})")
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        return _decode_compressed_depth(raw, fmt, limit)
    img = decode_image_bytes(raw, None, limit, f"compressed image (format {fmt!r})")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB if img.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
        original = fmt.split(";")[0].strip().lower()
        if original in ("mono8", "mono16", "8uc1", "16uc1"):
            grey = cv2.COLOR_RGB2GRAY if img.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
            img = cv2.cvtColor(img, grey)
    return np.ascontiguousarray(img)


def array_to_compressed_msg(
    arr: np.ndarray,
    fmt: str = "jpeg",
    quality: int = 90,
    msg_cls: Any = None,
    *,
    stamp_ns: int = 0,
    frame_id: str = "",
) -> Any:
    """``[H, W]`` / ``[H, W, 3|4]`` array (RGB order) -> ``sensor_msgs/CompressedImage``.

    ``fmt`` "jpeg"/"jpg" (uint8, quality 1..100) or "png" (uint8 or uint16, lossless; quality
    ignored). ``format`` is written as image_transport does, e.g. ``"rgb8; jpeg compressed bgr8"``.
    ``msg_cls`` as in :func:`array_to_image_msg`.
    """
    import cv2

    kind = str(fmt).lower().strip()
    kind = {"jpg": "jpeg"}.get(kind, kind)
    if kind not in ("jpeg", "png"):
        raise ValueError(f"unsupported compressed format {fmt!r} (use 'jpeg' or 'png')")
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"image array must be [H, W] or [H, W, 3|4], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"empty image array of shape {arr.shape}")
    allowed = (np.uint8,) if kind == "jpeg" else (np.uint8, np.uint16)
    if arr.dtype not in [np.dtype(a) for a in allowed]:
        names = " or ".join(np.dtype(a).name for a in allowed)
        raise ValueError(f"{kind} needs a {names} array, got {arr.dtype}")
    if kind == "jpeg" and arr.ndim == 3 and arr.shape[2] == 4:
        raise ValueError("jpeg cannot store an alpha channel: pass [H, W, 3] or use png")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    original = _infer_encoding(arr)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
        target = "bgr8" if arr.shape[2] == 3 else "bgra8"
        target = target.replace("8", "16") if arr.dtype == np.uint16 else target
    else:
        target = original
    params = ([cv2.IMWRITE_JPEG_QUALITY, int(quality)] if kind == "jpeg"
              else [cv2.IMWRITE_PNG_COMPRESSION, 3])
    ok, buf = cv2.imencode(".jpg" if kind == "jpeg" else ".png", arr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {arr.shape} {arr.dtype} array as {kind}")
    fields = {"format": f"{original}; {kind} compressed {target}", "data": buf.tobytes()}
    return _fill(msg_cls, "sensor_msgs/msg/CompressedImage", fields, int(stamp_ns), frame_id)


def msg_to_array(msg: Any, max_pixels: int | None = None) -> np.ndarray:
    """Convert either kind of image message to an array (``format`` vs ``encoding``).

    Frames above ``max_pixels`` (None: :data:`DEFAULT_MAX_PIXELS`) are refused.
    """
    if is_compressed_msg(msg):
        return compressed_msg_to_array(msg, max_pixels)
    return image_msg_to_array(msg, max_pixels)
