"""Decode guard for compressed images (PNG, JPEG, ...), shared by the node, bags and folders.

Compressed images are checked before they are decoded: the pixel count is read from the file
header (never allocating the image) and refused above a limit (:data:`DEFAULT_MAX_PIXELS`,
the node's ``max_image_pixels``, the CLI's ``--max-pixels``); the container structure is checked
(PNG chunk CRCs up to IEND, a JPEG end-of-image marker after the scan) so truncated files are
refused with one clear line; what libpng / libjpeg / OpenCV print on stderr while decoding is
captured and logged at most once per :data:`DECODER_LOG_THROTTLE_S` (with a count).
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
import zlib
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """An image message that cannot be turned into an array (or an array into a message)."""


DEFAULT_MAX_PIXELS = 1 << 24  # 16 Mpx (4096 x 4096): larger frames are refused before decoding
DECODER_LOG_THROTTLE_S = 5.0
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                       0xCF))
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
_DECODER_LINE = re.compile(r"^(libpng (error|warning)|Corrupt JPEG data|Premature end of JPEG|"
                           r"Invalid JPEG|Unsupported JPEG|Bogus |JPEG datastream|"
                           r"\[ ?(WARN|ERROR)[^\]]*\].*(imgcodecs|grfmt|decoder))")


class ImageTooLargeError(ImageDecodeError):
    """A frame above the pixel limit (refused before its pixels are allocated)."""


def _be(data: bytes, pos: int, n: int) -> int:
    return int.from_bytes(data[pos:pos + n], "big")


def _le(data: bytes, pos: int, n: int) -> int:
    return int.from_bytes(data[pos:pos + n], "little")


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG after checking every chunk's length and CRC up to IEND."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageDecodeError(f"truncated PNG: no IHDR header ({len(data)} bytes)")
    pos, view = 8, memoryview(data)
    while True:
        if pos + 12 > len(data):
            raise ImageDecodeError(f"truncated PNG: {len(data)} bytes end before the IEND chunk")
        length, kind = _be(data, pos, 4), bytes(data[pos + 4:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ImageDecodeError(f"truncated PNG: chunk {kind!r} at byte {pos} needs {length} "
                                   f"bytes, the data ends after {len(data) - pos - 12}")
        if zlib.crc32(view[pos + 4:end - 4]) != _be(data, end - 4, 4):
            raise ImageDecodeError(f"corrupt PNG: CRC error in chunk {kind!r} at byte {pos}")
        if kind == b"IEND":
            return _be(data, 16, 4), _be(data, 20, 4)
        pos = end


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG frame header; checks an EOI marker follows the scan."""
    pos, size = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageDecodeError(f"corrupt JPEG: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI / start of scan
            break
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            size = (_be(data, pos + 7, 2), _be(data, pos + 5, 2))
        pos += 2 + _be(data, pos + 2, 2)
    if size is None:
        raise ImageDecodeError(f"truncated or corrupt JPEG: no frame header (SOF) in {len(data)} "
                               "bytes")
    if pos + 1 >= len(data) or data[pos + 1] != 0xDA or data.rfind(b"\xff\xd9", pos) < 0:
        raise ImageDecodeError(f"truncated JPEG: no end-of-image marker after the scan "
                               f"({len(data)} bytes)")
    return size


def _tiff_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first IFD of a classic TIFF."""
    rd = _le if data[:2] == b"II" else _be
    ifd, found = rd(data, 4, 4), {}
    count = rd(data, ifd, 2) if ifd + 2 <= len(data) else 0
    for i in range(count):
        e = ifd + 2 + 12 * i
        tag, typ = rd(data, e, 2), rd(data, e + 2, 2)
        if tag in (256, 257) and typ in (3, 4) and e + 12 <= len(data):
            found[tag] = rd(data, e + 8, 2 if typ == 3 else 4)
    if 256 not in found or 257 not in found:
        raise ImageDecodeError("truncated or unsupported TIFF: no ImageWidth/ImageLength")
    return found[256], found[257]


def _webp_size(data: bytes) -> tuple[int, int]:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        return _le(data, 24, 3) + 1, _le(data, 27, 3) + 1
    if kind == b"VP8L" and len(data) >= 25:
        bits = _le(data, 21, 4)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and len(data) >= 30:
        return _le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF
    raise ImageDecodeError("truncated or unsupported WebP header")


def _pnm_size(data: bytes) -> tuple[int, int]:
    tokens = re.sub(rb"#[^\n]*", b" ", bytes(data[:512])).split()
    if len(tokens) < 3 or not (tokens[1].isdigit() and tokens[2].isdigit()):
        raise ImageDecodeError("truncated or corrupt PNM header")
    return int(tokens[1]), int(tokens[2])


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise ImageDecodeError("truncated BMP header")
    if _le(data, 14, 4) == 12:  # BITMAPCOREHEADER
        return _le(data, 18, 2), _le(data, 20, 2)
    w = int.from_bytes(data[18:22], "little", signed=True)
    h = int.from_bytes(data[22:26], "little", signed=True)
    return abs(w), abs(h)


def image_header_size(data: Any) -> tuple[int, int, str]:
    """Return ``(width, height, format)`` of compressed image bytes, read from the header.

    Nothing is decoded (PNG, JPEG, BMP, WebP, classic TIFF, PNM). PNG chunks (CRCs, IEND) and
    the JPEG end-of-image marker are checked too. ``ImageDecodeError`` for anything else or
    truncated data.
    """
    data = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if data.startswith(_PNG_SIG):
        return (*_png_size(data), "png")
    if data.startswith(b"\xff\xd8"):
        return (*_jpeg_size(data), "jpeg")
    if data[:2] == b"BM":
        return (*_bmp_size(data), "bmp")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return (*_webp_size(data), "webp")
    if data[:4] in (b"II*\x00", b"MM\x00*") and len(data) >= 8:
        return (*_tiff_size(data), "tiff")
    if len(data) >= 2 and data[0:1] == b"P" and data[1:2] in b"123456":
        return (*_pnm_size(data), "pnm")
    raise ImageDecodeError(f"unsupported image format (header {data[:8]!r}): only PNG, JPEG, BMP, "
                           "WebP, TIFF and PNM can be size-checked before decoding")


def check_pixels(width: int, height: int, max_pixels: int | None, what: str = "image") -> None:
    """``ImageTooLargeError`` when ``width * height`` exceeds ``max_pixels`` (None: no limit)."""
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"{what}: empty image ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {width * height} pixels, above the pixel limit of "
            f"{max_pixels} (max_image_pixels / --max-pixels): refused before decoding")


class _DecoderLog:
    """Decoder messages (libpng / libjpeg / OpenCV), logged at most once per period."""

    def __init__(self, period_s: float = DECODER_LOG_THROTTLE_S) -> None:
        self.period_s, self._next, self._suppressed = period_s, 0.0, 0
        self._lock = threading.Lock()
        self.total = 0

    def note(self, message: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.total += 1
            if now < self._next:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._next = self._suppressed, 0, now + self.period_s
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning("image decoder: %s%s", message, more)


DECODER_LOG = _DecoderLog()
_FD2_LOCK = threading.Lock()
_SINK: list[Any] = []


def _imdecode_capturing(buf: np.ndarray, flags: int) -> tuple[np.ndarray | None, list[str]]:
    """Run ``cv2.imdecode`` with file descriptor 2 captured: (image or None, decoder messages).

    Anything else written to stderr meanwhile (other threads) is written back unchanged.
    """
    import cv2

    with _FD2_LOCK:
        try:
            if not _SINK:
                _SINK.append(tempfile.TemporaryFile())
            sink, saved = _SINK[0], os.dup(2)
        except OSError:
            return cv2.imdecode(buf, flags), []
        try:
            os.dup2(sink.fileno(), 2)
            try:
                img = cv2.imdecode(buf, flags)
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
        sink.seek(0)
        sink.truncate()
    lines = text.splitlines()
    ours = [ln.strip() for ln in lines if _DECODER_LINE.match(ln.strip())]
    other = [ln for ln in lines if not _DECODER_LINE.match(ln.strip())]
    if other:
        os.write(2, ("\n".join(other) + "\n").encode())
    return img, ours


def decode_image_bytes(data: Any, flags: int | None = None, max_pixels: int | None =
                       DEFAULT_MAX_PIXELS, what: str = "compressed image") -> np.ndarray:
    """Decode compressed image bytes after checking them (BGR(A) order, as OpenCV returns it).

    The header size is checked against ``max_pixels`` and the container structure first;
    decoder messages are captured and throttled. ``ImageDecodeError`` (``ImageTooLargeError``
    above the limit) when refused or undecodable.
    """
    import cv2

    raw = data if isinstance(data, np.ndarray) else np.frombuffer(bytes(data), np.uint8)
    raw = np.ascontiguousarray(raw.reshape(-1).view(np.uint8))
    if raw.size == 0:
        raise ImageDecodeError(f"{what}: empty data")
    try:
        width, height, kind = image_header_size(raw)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"undecodable {what} ({raw.size} bytes): {exc}") from exc
    check_pixels(width, height, max_pixels, f"{what} ({kind})")
    img, messages = _imdecode_capturing(raw, cv2.IMREAD_UNCHANGED if flags is None else flags)
    for msg in messages:
        DECODER_LOG.note(f"{what}: {msg}")
    if img is None or img.size == 0:
        detail = f": {messages[0]}" if messages else ""
        raise ImageDecodeError(f"undecodable {what} ({raw.size} bytes, {kind}){detail}")
    return img
