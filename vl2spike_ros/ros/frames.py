"""Latest-frame-only hand-off and running statistics for the node (no rclpy import).

:class:`LatestSlot` holds at most one pending item: the subscription callback puts every
incoming message, the worker thread takes the newest one, and an item replaced before it
was taken counts as dropped. Memory is bounded by one message whatever the camera rate.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")
BAD_FRAME_WARN_S = 10.0  # /diagnostics stays WARN this long after the last bad frame / error
GAP_HISTORY = 32  # stamp intervals the camera period is estimated from (median)
MAX_GAP_PERIODS = 20  # longer silences are pauses of the stream, not lost frames


class LatestSlot(Generic[T]):
    """Single-item mailbox that keeps only the newest item and counts replaced ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.received += 1
            self._cond.notify()

    def take(self, timeout: float | None = None) -> T | None:
        """Newest item (removing it), or ``None`` after ``timeout`` seconds or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def discard(self) -> bool:
        """Drop the pending item (counted as dropped); True if there was one."""
        with self._cond:
            if self._item is None:
                return False
            self._item = None
            self.dropped += 1
            return True

    def close(self) -> None:
        """Wake up a waiting ``take`` (returns ``None``) and refuse to wait afterwards."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            self._item = None


class StampGaps:
    """Frames missing between received ones, estimated from gaps in header stamps.

    The camera period is the median of the last :data:`GAP_HISTORY` stamp intervals; an interval
    of ``k`` periods (rounded, ``2 <= k <= MAX_GAP_PERIODS``) counts ``k - 1`` missing frames.
    Stamps that go backwards (a restarted camera or bag) restart the estimate.
    """

    def __init__(self) -> None:
        self._last: int | None = None
        self._deltas: deque = deque(maxlen=GAP_HISTORY)
        self.missing = 0

    def observe(self, stamp_ns: int) -> int:
        """Account one received stamp; returns the frames estimated missing just before it."""
        last, self._last = self._last, stamp_ns
        if last is None or stamp_ns < last:
            self._deltas.clear()
            return 0
        delta, missed = stamp_ns - last, 0
        if delta > 0 and len(self._deltas) >= 4:
            periods = round(delta / float(np.median(self._deltas)))
            missed = periods - 1 if 2 <= periods <= MAX_GAP_PERIODS else 0
        if delta > 0:
            self._deltas.append(delta)
        self.missing += missed
        return missed


@dataclass
class NodeStats:
    """Counters and windows reported on /diagnostics (thread-safe through ``lock``)."""

    window: int = 300
    processed: int = 0
    bad_frames: int = 0
    errors: int = 0
    mapped: int = 0
    accepted: int = 0
    last_bad_reason: str = ""
    last_bad_time: float = float("-inf")  # time.monotonic() of the last bad frame or error
    last_good_time: float = float("-inf")  # ... and of the last processed frame
    lost_transport: int = 0  # samples the middleware reports lost (message_lost event)
    gaps: StampGaps = field(default_factory=StampGaps)
    latencies_ms: deque = field(default_factory=deque)
    infer_ms: deque = field(default_factory=deque)
    done_times: deque = field(default_factory=deque)
    firing_rates: deque = field(default_factory=deque)
    energies_mj: deque = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, latency_ms: float, infer_ms: float, firing_rate: float | None,
               energy_mj: float | None, accepted: bool) -> None:
        with self.lock:
            self.processed += 1
            self.accepted += int(bool(accepted))
            self.last_good_time = time.monotonic()
            self._push(self.latencies_ms, latency_ms)
            self._push(self.infer_ms, infer_ms)
            self._push(self.done_times, time.monotonic())
            if firing_rate is not None and np.isfinite(firing_rate):
                self._push(self.firing_rates, float(firing_rate))
            if energy_mj is not None and np.isfinite(energy_mj):
                self._push(self.energies_mj, float(energy_mj))

    def bad(self, reason: str) -> None:
        with self.lock:
            self.bad_frames += 1
            self.last_bad_reason = reason
            self.last_bad_time = time.monotonic()

    def error(self, reason: str) -> None:
        """Count a failure inside the pipeline (apart from bad input)."""
        with self.lock:
            self.errors += 1
            self.last_bad_reason = reason
            self.last_bad_time = time.monotonic()

    def bad_recently(self, now: float | None = None, hold_s: float = BAD_FRAME_WARN_S) -> bool:
        """Tell whether bad frames / errors are recent (the /diagnostics WARN condition).

        True while the latest outcome was a bad frame / error, or one is under ``hold_s`` old:
        the WARN clears once frames are good again for ``hold_s``.
        """
        now = time.monotonic() if now is None else now
        with self.lock:
            return (self.last_bad_time > self.last_good_time
                    or now - self.last_bad_time < hold_s)

    def stamp(self, stamp_ns: int) -> None:
        """Header stamp of a received frame (transport-loss estimate)."""
        with self.lock:
            self.gaps.observe(stamp_ns)

    def lost(self, total_count: int) -> None:
        """Record the middleware's running count of lost samples (message_lost event)."""
        with self.lock:
            self.lost_transport = max(self.lost_transport, int(total_count))

    def _push(self, dq: deque, value: float) -> None:
        dq.append(value)
        while len(dq) > self.window:
            dq.popleft()

    def summary(self) -> dict[str, float]:
        """Rates and percentiles over the last ``window`` frames (NaN when nothing yet)."""
        with self.lock:
            lat = np.asarray(self.latencies_ms, dtype=np.float64)
            inf = np.asarray(self.infer_ms, dtype=np.float64)
            times = list(self.done_times)
            fr = np.asarray(self.firing_rates, dtype=np.float64)
            en = np.asarray(self.energies_mj, dtype=np.float64)
            counts = {"frames_processed": self.processed, "bad_frames": self.bad_frames,
                      "processing_errors": self.errors, "frames_accepted": self.accepted,
                      "frames_mapped": self.mapped, "frames_lost_transport": self.lost_transport,
                      "frames_missing_estimate": self.gaps.missing}
        rate = float("nan")
        if len(times) >= 2 and times[-1] > times[0]:
            # frames in the window divided by the time they span, up to now (goes to 0 when idle)
            rate = (len(times) - 1) / (max(time.monotonic(), times[-1]) - times[0])
        nan = float("nan")
        return {
            **counts,
            "processing_rate_hz": rate,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else nan,
            "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else nan,
            "inference_ms_p50": float(np.percentile(inf, 50)) if inf.size else nan,
            "mean_firing_rate": float(fr.mean()) if fr.size else nan,
            "energy_mj_per_frame": float(en.mean()) if en.size else nan,
        }


class RateLimiter:
    """Allows at most ``rate_hz`` events per second (0 = unlimited)."""

    def __init__(self, rate_hz: float = 0.0) -> None:
        self.rate_hz = rate_hz
        self._next = 0.0

    def ready(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if self.rate_hz <= 0 or now >= self._next:
            return True
        return False

    def remaining(self, now: float | None = None) -> float:
        """Seconds until the next event is allowed (0 when ready)."""
        now = time.monotonic() if now is None else now
        return 0.0 if self.rate_hz <= 0 else max(0.0, self._next - now)

    def mark(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.rate_hz > 0:
            self._next = now + 1.0 / self.rate_hz
