"""Append-only label files: every label on disk before the next click."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import AstridFileError, AstridInputError, AstridWarning

__all__ = ["LABELS", "LabelRecord", "LabelStore"]

#: The labels a person can give a candidate. ``skip`` records "seen, undecided".
LABELS = ("real", "bogus", "skip")


@dataclass(frozen=True)
class LabelRecord:
    """One labelling act.

    Attributes
    ----------
    candidate_id : str
        The candidate's ``candidate_id``.
    label : str
        ``"real"``, ``"bogus"`` or ``"skip"``.
    time : str
        ISO 8601 UTC time of the click.
    score : float or None
        The classifier's score shown at the time, when there was one.
    """

    candidate_id: str
    label: str
    time: str
    score: float | None = None

    def to_json(self) -> str:
        values = {"candidate_id": self.candidate_id, "label": self.label, "time": self.time}
        if self.score is not None:
            values["score"] = self.score
        return json.dumps(values, allow_nan=False)


class LabelStore:
    """Labels in a JSON-lines file, one line per click, fsync'ed at once.

    The file is only appended to, so a kernel that dies loses nothing already
    clicked; relabelling a candidate appends a newer line, and the newest line
    of a candidate is its label. Opening an existing file reloads its labels.

    Parameters
    ----------
    path : str or path-like
        The label file (``.jsonl``); created with its folder on the first label.

    Raises
    ------
    AstridFileError
        A line other than the last is not a label record (the file was edited
        or is not a label file).

    Warns
    -----
    AstridWarning
        The last line was incomplete (the kernel stopped while writing it); the
        line is removed so the next label starts on a clean line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.history: list[LabelRecord] = []
        if self.path.is_dir():
            raise AstridFileError(f"{self.path}: is a folder; labels_path must name a file")
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # after the last newline: b"" for a complete file
        offset = 0
        for number, line in enumerate(lines, start=1):
            offset += len(line) + 1
            if not line.strip():
                continue
            self.history.append(self._parse(line, number))
        if tail.strip():
            try:
                self.history.append(self._parse(tail, len(lines) + 1))
                with open(self.path, "ab") as fh:  # complete the line for the next append
                    fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
            except AstridFileError:
                warnings.warn(
                    f"{self.path}: the last line is incomplete (the kernel stopped while writing it) "
                    f"and is dropped: {tail[:80]!r}",
                    AstridWarning,
                    stacklevel=3,
                )
                with open(self.path, "r+b") as fh:
                    fh.truncate(offset)
                    fh.flush()
                    os.fsync(fh.fileno())

    def _parse(self, line: bytes, number: int) -> LabelRecord:
        try:
            values = json.loads(line)
            record = LabelRecord(
                candidate_id=str(values["candidate_id"]),
                label=str(values["label"]),
                time=str(values["time"]),
                score=values.get("score"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise AstridFileError(
                f"{self.path}: line {number} is not a label record ({type(exc).__name__}: {exc}); "
                "a label file holds one JSON object per line with candidate_id, label and time"
            ) from None
        if record.label not in LABELS:
            raise AstridFileError(f"{self.path}: line {number} has label {record.label!r}, expected one of {LABELS}")
        return record

    @property
    def labels(self) -> dict[str, str]:
        """The current label of each labelled candidate (its newest record)."""
        return {record.candidate_id: record.label for record in self.history}

    def latest(self) -> dict[str, LabelRecord]:
        """The newest record of each labelled candidate."""
        return {record.candidate_id: record for record in self.history}

    def add(self, candidate_id: str, label: str, score: float | None = None) -> LabelRecord:
        """Append a label and force it to disk before returning.

        Parameters
        ----------
        candidate_id : str
            The candidate.
        label : {"real", "bogus", "skip"}
            The label.
        score : float, optional
            The classifier score shown when labelling (kept for analysis).

        Returns
        -------
        LabelRecord
        """
        if label not in LABELS:
            raise AstridInputError(f"label {label!r}: expected one of {LABELS}")
        if score is not None and score != score:  # NaN: no score
            score = None
        record = LabelRecord(
            candidate_id=str(candidate_id),
            label=label,
            time=datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            score=None if score is None else float(score),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(record.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.history.append(record)
        return record

    def export(self, path: str | os.PathLike, *, include_skipped: bool = False) -> Path:
        """Write the current labels as a table for retraining.

        Parameters
        ----------
        path : str or path-like
            ``.csv`` or ``.ecsv`` file (written atomically).
        include_skipped : bool, optional
            Also write candidates whose newest label is ``skip``.

        Returns
        -------
        pathlib.Path
            The written file, with columns ``candidate_id``, ``label``, ``time``
            (of the newest label) and ``score`` (NaN where none was shown),
            in labelling order.
        """
        import numpy as np
        from astropy.table import Table

        from ..io import atomic_write

        path = Path(path)
        formats = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv"}
        if path.suffix.lower() not in formats:
            raise AstridInputError(f"{path}: export format from the suffix must be .csv or .ecsv")
        latest = [r for r in self.latest().values() if include_skipped or r.label != "skip"]
        latest.sort(key=lambda r: r.time)
        table = Table(
            {
                "candidate_id": np.array([r.candidate_id for r in latest], dtype=str),
                "label": np.array([r.label for r in latest], dtype=str),
                "time": np.array([r.time for r in latest], dtype=str),
                "score": np.array([np.nan if r.score is None else r.score for r in latest], dtype=float),
            }
        )
        table.meta["labels_file"] = str(self.path)
        atomic_write(path, lambda fh: table.write(fh, format=formats[path.suffix.lower()]), mode="w")
        return path
