"""Append-only label files: every label on disk before the next click."""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .._locks import store_lock
from ..errors import AstridFileError, AstridInputError, AstridWarning

__all__ = ["LABELS", "LabelRecord", "LabelStore", "default_labeller", "model_id"]

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
    labeller : str or None
        Who gave the label (None in label files written before AstrID
        recorded it).
    model : str or None
        The model that proposed the candidate and gave ``score``, e.g.
        ``"vgg6 sha256:1a2b..."`` (:func:`model_id`); None when unknown.
    """

    candidate_id: str
    label: str
    time: str
    score: float | None = None
    labeller: str | None = None
    model: str | None = None

    def to_json(self) -> str:
        values = {"candidate_id": self.candidate_id, "label": self.label, "time": self.time}
        if self.score is not None:
            values["score"] = self.score
        # Written only when known: a record without them reads as before.
        if self.labeller is not None:
            values["labeller"] = self.labeller
        if self.model is not None:
            values["model"] = self.model
        return json.dumps(values, allow_nan=False)


def default_labeller() -> str:
    """The login name of whoever runs Python (the default ``labeller``).

    Returns
    -------
    str
        The login name; ``"unknown"`` when there is none.
    """
    import getpass

    try:
        return getpass.getuser() or "unknown"
    except Exception:  # no login name (some containers): getpass raises OSError or KeyError
        return "unknown"


def model_id(model) -> str | None:
    """A short identity of a model for label provenance: its name and the sha256 of its file.

    Parameters
    ----------
    model : str, path-like, keras.Model or None
        A ``.keras``/``.h5`` file (named by its stem and the first 16 hex
        digits of its SHA-256), a Keras model (its name, plus the file's hash
        when it was loaded by :func:`astrid.braai.load_trained`), or a string
        kept as given.

    Returns
    -------
    str or None
        The identity, e.g. ``"<name> sha256:<16 hex digits>"``; None for a None model.
    """
    import hashlib

    if model is None:
        return None
    if isinstance(model, os.PathLike) or (
        isinstance(model, str) and Path(model).suffix in (".keras", ".h5", ".hdf5")
    ):
        path = Path(model)
        if not path.is_file():
            raise AstridFileError(f"{path}: model file does not exist")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return f"{path.name.removesuffix('.keras')} sha256:{digest[:16]}"
    if isinstance(model, str):
        return model
    name = getattr(model, "name", None)
    if name is None:
        raise AstridInputError(
            f"model: expected a path, a name or a Keras model, got {type(model).__name__}"
        )
    digest = getattr(model, "astrid_sha256", None)
    return f"{name} sha256:{digest[:16]}" if digest else str(name)


class LabelStore:
    """Labels in a JSON-lines file, one line per click, fsync'ed at once.

    The file is only ever appended to, so a kernel that dies loses nothing
    already clicked; relabelling a candidate appends a newer line, and the
    newest line of a candidate is its label. Opening an existing file
    reloads its labels.

    Several stores may share one file (two notebooks, a notebook and a
    script): each append holds an inter-process lock on the sibling file
    ``.<name>.lock`` (the lock every AstrID store uses), and :attr:`labels`, :meth:`latest` and
    :attr:`history` first read what other writers appended since.

    Nothing is ever deleted or rewritten. A line that is not a label record
    (a writer killed mid-line, a hand edit, a record of an unknown label) is
    skipped, copied once to the side file ``<name>.quarantine`` and reported
    in an :class:`~astrid.errors.AstridWarning` that says how many labels
    were kept. A torn last line is closed with a newline before the next
    label, so it cannot swallow that label.

    Parameters
    ----------
    path : str or path-like
        The label file (``.jsonl``); created with its folder on the first label.
    labeller : str, optional
        Who labels: written with every new record (default: the login name,
        :func:`default_labeller`). Records of older files have none.
    model : str, path-like or keras.Model, optional
        The model whose scores proposed the candidates (:func:`model_id`),
        written with every new record.

    Raises
    ------
    AstridFileError
        ``path`` is a folder, or a non-empty file none of whose lines is a
        label record (not a label file: AstrID will not append to it).

    Warns
    -----
    AstridWarning
        Lines that are not label records were skipped (and quarantined).
    """

    def __init__(self, path: str | os.PathLike, *, labeller: str | None = None, model=None):
        self.path = Path(path)
        if labeller is not None and (not isinstance(labeller, str) or not labeller.strip()):
            raise AstridInputError(f"labeller={labeller!r}: expected a non-empty name")
        self.labeller = labeller.strip() if labeller is not None else default_labeller()
        self.model = model_id(model)
        self._history: list[LabelRecord] = []
        self._offset = 0  # bytes of the file already read, always at a line end
        self._line = 0
        self._quarantined = 0
        if self.path.is_dir():
            raise AstridFileError(f"{self.path}: is a folder; labels_path must name a file")
        if self.path.exists():
            self.refresh()

    @property
    def quarantine_path(self) -> Path:
        """The side file that receives lines which are not label records."""
        return self.path.with_name(self.path.name + ".quarantine")

    @property
    def history(self) -> list[LabelRecord]:
        """Every label record of the file, oldest first (re-read from disk)."""
        self.refresh()
        return self._history

    def refresh(self) -> int:
        """Read the records that any writer appended since the last read.

        Returns
        -------
        int
            The number of new records.
        """
        if not self.path.exists():
            return 0
        with store_lock(
            self.path, reading=True
        ):  # a writer holds it while writing: read only whole lines
            return self._read_new()

    def _read_new(self) -> int:
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < self._offset:  # replaced by another file: start again
                self._history, self._offset, self._line = [], 0, 0
            fh.seek(self._offset)
            raw = fh.read()
        if not raw:
            return 0
        bad: list[tuple[int, bytes, str]] = []
        before = len(self._history)
        # The part after the last newline is a line whose writer died (writers
        # hold the lock): a complete record is still taken, a torn one
        # quarantined, and the next append closes the line first.
        for line in raw.split(b"\n"):
            self._offset += len(line) + 1
            self._line += 1
            if line.strip():
                self._take(line, self._line, bad)
        self._offset -= 1  # no newline after the last piece
        self._line -= 1
        if bad and not self._history:
            # Not a label file (a table, a notebook, a typo'd path): refuse it rather than append to it.
            self._offset, self._line = 0, 0
            raise AstridFileError(
                f"{self.path}: none of its {len(bad)} line(s) is a label record (first: {bad[0][2]}); "
                "a label file holds one JSON object per line with candidate_id, label and time"
            )
        if bad:
            self._quarantine(bad)
        return len(self._history) - before

    def _take(self, line: bytes, number: int, bad: list) -> None:
        try:
            self._history.append(self._parse(line, number))
        except AstridFileError as exc:
            bad.append((number, line, str(exc)))

    def _quarantine(self, bad: list[tuple[int, bytes, str]]) -> None:
        kept = self.quarantine_path
        seen = set(kept.read_bytes().splitlines()) if kept.exists() else set()
        entries = [
            json.dumps(
                {"file": str(self.path), "line": number, "text": line.decode("utf-8", "replace")}
            ).encode()
            for number, line, _ in bad
        ]
        new = [entry for entry in entries if entry not in seen]
        try:
            if new:
                with open(kept, "ab") as fh:
                    fh.write(b"".join(entry + b"\n" for entry in new))
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:  # a read-only folder: the lines stay in the label file all the same
            kept = f"nowhere else ({kept}: {exc.strerror or exc})"
        self._quarantined += len(bad)
        first = bad[0][2]
        warnings.warn(
            f"{self.path}: {len(bad)} line(s) are not label records and were skipped (first: {first}); "
            f"they are left in the file and copied to {kept}; {len(self._history)} label record(s) loaded",
            AstridWarning,
            stacklevel=4,
        )

    def _parse(self, line: bytes, number: int) -> LabelRecord:
        try:
            values = json.loads(line)
            record = LabelRecord(
                candidate_id=str(values["candidate_id"]),
                label=str(values["label"]),
                time=str(values["time"]),
                score=values.get("score"),
                labeller=None if values.get("labeller") is None else str(values["labeller"]),
                model=None if values.get("model") is None else str(values["model"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise AstridFileError(
                f"{self.path}: line {number} is not a label record ({type(exc).__name__}: {exc}); "
                "a label file holds one JSON object per line with candidate_id, label and time"
            ) from None
        if record.label not in LABELS:
            raise AstridFileError(
                f"{self.path}: line {number} has label {record.label!r}, expected one of {LABELS}"
            )
        if record.score is not None and (
            isinstance(record.score, bool) or not isinstance(record.score, int | float)
        ):
            raise AstridFileError(
                f"{self.path}: line {number} has score {record.score!r}, expected a number or null"
            )
        return record

    @property
    def labels(self) -> dict[str, str]:
        """The current label of each labelled candidate (its newest record)."""
        return {record.candidate_id: record.label for record in self.history}

    def latest(self) -> dict[str, LabelRecord]:
        """The newest record of each labelled candidate."""
        return {record.candidate_id: record for record in self.history}

    def add(
        self,
        candidate_id: str,
        label: str,
        score: float | None = None,
        *,
        labeller: str | None = None,
        model=None,
    ) -> LabelRecord:
        """Append a label and force it to disk before returning.

        Parameters
        ----------
        candidate_id : str
            The candidate.
        label : {"real", "bogus", "skip"}
            The label.
        score : float, optional
            The classifier score shown when labelling (kept for analysis).
        labeller, model : optional
            Override the store's ``labeller`` and ``model`` for this record.

        Returns
        -------
        LabelRecord
        """
        if label not in LABELS:
            raise AstridInputError(f"label {label!r}: expected one of {LABELS}")
        if score is not None:
            try:
                score = float(score)
            except (TypeError, ValueError):
                raise AstridInputError(f"score: expected a number or None, got {score!r}") from None
            if score != score:  # NaN: the classifier gave no score
                score = None
            elif not math.isfinite(score):
                raise AstridInputError(
                    f"score: {score} is not a finite classifier score (give None when there is none)"
                )
        record = LabelRecord(
            candidate_id=str(candidate_id),
            label=label,
            time=datetime.now(timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            score=None if score is None else float(score),
            labeller=self.labeller if labeller is None else str(labeller),
            model=self.model if model is None else model_id(model),
        )
        line = record.to_json().encode() + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with store_lock(self.path):
                with open(self.path, "ab") as fh:
                    if self.path.exists():
                        self._read_new()
                    if self._offset > 0:
                        with open(self.path, "rb") as check:
                            check.seek(self._offset - 1)
                            if check.read(1) != b"\n":
                                line = b"\n" + line  # close a dead writer's torn line first
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
                self._offset += len(line)
                self._line += line.count(b"\n")
        except OSError as exc:
            raise AstridFileError(
                f"{self.path}: cannot write the label ({exc.strerror or exc})"
            ) from None
        self._history.append(record)
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
            (of the newest label), ``score`` (NaN where none was shown),
            ``labeller`` and ``model`` (empty where the record has none), in
            labelling order.
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
                "score": np.array(
                    [np.nan if r.score is None else r.score for r in latest], dtype=float
                ),
                "labeller": np.array([r.labeller or "" for r in latest], dtype=str),
                "model": np.array([r.model or "" for r in latest], dtype=str),
            }
        )
        table.meta["labels_file"] = str(self.path)
        atomic_write(
            path, lambda fh: table.write(fh, format=formats[path.suffix.lower()]), mode="w"
        )
        return path
