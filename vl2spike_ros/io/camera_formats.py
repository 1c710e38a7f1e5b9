"""Camera-native ``sensor_msgs/Image`` encodings -> RGB: YUV 4:2:2 and 8-bit Bayer (no rclpy).

Names as in ROS ``sensor_msgs/image_encodings.hpp``:

* ``yuv422`` is **UYVY** (bytes ``U0 Y0 V0 Y1``) and ``yuv422_yuy2`` is **YUYV** (``Y0 U0 Y1
  V0``); the newer names ``uyvy`` / ``yuyv`` are accepted as aliases. Two bytes per pixel, one
  chroma pair per two pixels, so the width must be even. Converted with OpenCV
  (``COLOR_YUV2RGB_UYVY`` / ``_YUY2``: BT.601, video range 16..235), as ``cv_bridge`` does;
* ``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8``: one byte per pixel, the
  four letters the colours of the top-left 2x2 cell row by row. Demosaiced with OpenCV's
  bilinear ``COLOR_Bayer**2RGB``, named by the second and third pixels of the pattern's second
  row: ROS ``rggb`` is OpenCV ``BayerBG``, ``bggr`` is ``BayerRG``, ``gbrg`` is ``BayerGR``,
  ``grbg`` is ``BayerGB`` (checked by a round trip in ``test/test_images.py``).

:func:`camera_format` says whether an encoding is one of these; :func:`camera_rows_to_rgb`
converts the rows of a message (``[H, row_bytes]`` uint8, padding already cut) to ``[H, W, 3]``
RGB uint8. Errors are :class:`~vl2spike_ros.io.decode.ImageDecodeError` (one line).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vl2spike_ros.io.decode import ImageDecodeError

__all__ = ["CameraFormat", "CAMERA_ENCODINGS", "camera_format", "camera_rows_to_rgb"]


class CameraFormat(NamedTuple):
    """A camera-native encoding: what it is, bytes per pixel and the OpenCV conversion."""

    kind: str  # e.g. "YUV 4:2:2 UYVY", "Bayer RGGB"
    bytes_per_pixel: int
    cv_code: str  # name of the cv2.COLOR_* constant converting to RGB

    @property
    def even_width(self) -> bool:
        """YUV 4:2:2 shares one chroma pair between two pixels: widths must be even."""
        return self.bytes_per_pixel == 2


_UYVY = CameraFormat("YUV 4:2:2 UYVY", 2, "COLOR_YUV2RGB_UYVY")
_YUYV = CameraFormat("YUV 4:2:2 YUYV", 2, "COLOR_YUV2RGB_YUY2")
CAMERA_ENCODINGS: dict[str, CameraFormat] = {
    "yuv422": _UYVY, "uyvy": _UYVY,
    "yuv422_yuy2": _YUYV, "yuyv": _YUYV,
    "bayer_rggb8": CameraFormat("Bayer RGGB", 1, "COLOR_BayerBG2RGB"),
    "bayer_bggr8": CameraFormat("Bayer BGGR", 1, "COLOR_BayerRG2RGB"),
    "bayer_gbrg8": CameraFormat("Bayer GBRG", 1, "COLOR_BayerGR2RGB"),
    "bayer_grbg8": CameraFormat("Bayer GRBG", 1, "COLOR_BayerGB2RGB"),
}


def camera_format(encoding: str) -> CameraFormat | None:
    """Return the :class:`CameraFormat` of ``encoding`` (case-insensitive), None for others."""
    return CAMERA_ENCODINGS.get(str(encoding).strip().lower())


def camera_rows_to_rgb(rows: np.ndarray, fmt: CameraFormat, width: int,
                       encoding: str = "") -> np.ndarray:
    """Convert ``rows`` ``[H, width * bytes_per_pixel]`` uint8 to RGB ``[H, width, 3]`` uint8.

    Raises ImageDecodeError for an odd width of a YUV 4:2:2 image or rows of the wrong size.
    """
    import cv2

    name = f"{encoding!r} ({fmt.kind})" if encoding else fmt.kind
    h = rows.shape[0]
    if fmt.even_width and width % 2:
        raise ImageDecodeError(f"{name} needs an even width (two pixels share one "
                               f"chroma pair), got a {h}x{width} image")
    if rows.ndim != 2 or rows.shape[1] != width * fmt.bytes_per_pixel or rows.dtype != np.uint8:
        raise ImageDecodeError(f"{name} rows of shape {rows.shape} ({rows.dtype}) do not hold "
                               f"{width} pixels of {fmt.bytes_per_pixel} byte(s)")
    src = np.ascontiguousarray(rows).reshape(h, width, fmt.bytes_per_pixel)
    if fmt.bytes_per_pixel == 1:
        src = src[:, :, 0]
    return np.ascontiguousarray(cv2.cvtColor(src, getattr(cv2, fmt.cv_code)))
