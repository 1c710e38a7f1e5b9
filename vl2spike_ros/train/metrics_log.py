"""Training metrics sink shared by the training loops: CSV (``train_log.csv``) + TensorBoard."""
from __future__ import annotations

import csv
from pathlib import Path

LOG_FILE = "train_log.csv"
TB_DIR = "tb"


class MetricsLog:
    """Rank-0 metrics sink: ``out/train_log.csv`` (appended) + TensorBoard events in ``out/tb/``.

    The CSV header is fixed by the first row written to the file (also across a resume); keys a
    later row lacks stay empty, new keys are left out of the CSV (TensorBoard gets them all).
    """

    def __init__(self, out: Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled, self.path, self.tb = enabled, Path(out) / LOG_FILE, None
        if enabled:
            Path(out).mkdir(parents=True, exist_ok=True)
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(Path(out) / TB_DIR))

    def _header(self, row: dict) -> list[str]:
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                first = next(csv.reader(fh), None)
            if first:
                return first
        return ["step", *row]

    def log(self, step: int, row: dict[str, float]) -> None:
        """Append one row (``step`` + numbers) to the CSV and TensorBoard."""
        if not self.enabled:
            return
        new = not self.path.is_file()
        fields = self._header(row)
        with open(self.path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore", restval="")
            if new:
                w.writeheader()
            w.writerow({"step": step, **{k: f"{v:.6g}" for k, v in row.items()}})
        if self.tb is not None:
            for k, v in row.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
