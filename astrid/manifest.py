"""The survey directory layout shared by the simulator and the archive downloads.

Every data source writes the same tree, so every later step reads archive and
simulated data alike::

    <root>/manifest.json
    <root>/<target>/reference/<file>.fits
    <root>/<target>/science/<file>.fits
    <root>/<target>/truth.ecsv          (simulated fields only)

``manifest.json`` (schema ``astrid-survey/1``) lists, per target, its files
(path relative to ``root``, role, mission, instrument, filter, MJD, size,
sha256) and its reference/science pairs. It is rewritten atomically after each
change, so an interrupted run leaves a consistent manifest that a rerun can
resume from.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import AstridFileError, AstridInputError

__all__ = ["SCHEMA", "SurveyPair", "Manifest", "sha256sum"]

SCHEMA = "astrid-survey/1"
MANIFEST_NAME = "manifest.json"


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks.

    Parameters
    ----------
    path : str or path-like
        The file.
    chunk : int, optional
        Bytes read at a time.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SurveyPair:
    """One reference/science pair of a survey tree (absolute paths).

    Attributes
    ----------
    target : str
        Name of the target the pair belongs to.
    reference : pathlib.Path
        The reference image file.
    science : pathlib.Path
        The science image file.
    mission : str or None
        Mission of the pair, when the manifest records it.
    instrument : str or None
        Instrument of the pair, when the manifest records it.
    filter : str or None
        Filter of the pair, when the manifest records it.
    truth : pathlib.Path or None
        The target's truth table file, if any.
    """

    target: str
    reference: Path
    science: Path
    mission: str | None = None
    instrument: str | None = None
    filter: str | None = None
    truth: Path | None = None

    @property
    def name(self) -> str:
        """A stable name for the pair: ``<target>/<science file stem>``."""
        stem = self.science.name
        for suffix in (".gz", ".fits", ".fit", ".fts"):
            stem = stem.removesuffix(suffix)
        return f"{self.target}/{stem}"


class Manifest:
    """Read, update and write a survey's ``manifest.json``.

    Parameters
    ----------
    root : path-like
        The survey folder.
    data : dict, optional
        Manifest content; by default read from ``root/manifest.json`` if it
        exists, else a new empty manifest.
    source : str, optional
        Recorded as the ``source`` of a new empty manifest.
    """

    def __init__(
        self, root: str | os.PathLike, data: dict | None = None, *, source: str = "unknown"
    ):
        self.root = Path(root)
        if data is None:
            path = self.root / MANIFEST_NAME
            if path.exists():
                data = self._read(path)
            else:
                data = {
                    "schema": SCHEMA,
                    "source": source,
                    "created": _now(),
                    "parameters": {},
                    "targets": {},
                }
        if data.get("schema") != SCHEMA:
            raise AstridInputError(
                f"{self.root / MANIFEST_NAME}: unknown manifest schema {data.get('schema')!r}"
            )
        self.data = data

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AstridFileError(f"{path}: corrupt manifest JSON ({exc})") from exc

    @classmethod
    def load(cls, root: str | os.PathLike) -> "Manifest":
        """Load an existing manifest; raise when the folder has none."""
        root = Path(root)
        if root.is_file() and root.name == MANIFEST_NAME:
            root = root.parent
        if not (root / MANIFEST_NAME).exists():
            raise AstridFileError(f"{root}: no {MANIFEST_NAME} (not a survey folder)")
        return cls(root)

    @property
    def targets(self) -> dict[str, dict]:
        return self.data["targets"]

    def target(self, name: str, **info: Any) -> dict:
        """The entry of target ``name``, created (with ``info``) when new."""
        entry = self.targets.setdefault(name, {"files": [], "pairs": []})
        entry.update({k: v for k, v in info.items() if v is not None})
        return entry

    def add_file(
        self, target: str, path: str | os.PathLike, role: str, *, checksum: bool = True, **info: Any
    ) -> dict:
        """Record a file that landed under ``root`` (replaces an entry with the same path)."""
        if role not in ("reference", "science"):
            raise AstridInputError(f"role must be 'reference' or 'science', got {role!r}")
        path = Path(path)
        rel = (path if not path.is_absolute() else path.relative_to(self.root)).as_posix()
        full = self.root / rel
        record = {"path": rel, "role": role, **{k: v for k, v in info.items() if v is not None}}
        if full.exists():
            record["size"] = full.stat().st_size
            if checksum:
                record["sha256"] = sha256sum(full)
        entry = self.target(target)
        entry["files"] = [f for f in entry["files"] if f["path"] != rel] + [record]
        return record

    def add_pair(
        self, target: str, reference: str | os.PathLike, science: str | os.PathLike, **info: Any
    ) -> dict:
        """Record a reference/science pair of files already added."""
        ref = (
            Path(reference).as_posix()
            if not Path(reference).is_absolute()
            else Path(reference).relative_to(self.root).as_posix()
        )
        sci = (
            Path(science).as_posix()
            if not Path(science).is_absolute()
            else Path(science).relative_to(self.root).as_posix()
        )
        record = {
            "reference": ref,
            "science": sci,
            **{k: v for k, v in info.items() if v is not None},
        }
        entry = self.target(target)
        entry["pairs"] = [
            p for p in entry["pairs"] if (p["reference"], p["science"]) != (ref, sci)
        ] + [record]
        return record

    def pairs(self) -> Iterator[SurveyPair]:
        """Every pair of every target, with absolute paths."""
        for name, entry in self.targets.items():
            truth = self.root / entry["truth"] if entry.get("truth") else None
            for pair in entry.get("pairs", []):
                yield SurveyPair(
                    target=name,
                    reference=self.root / pair["reference"],
                    science=self.root / pair["science"],
                    mission=pair.get("mission"),
                    instrument=pair.get("instrument"),
                    filter=pair.get("filter"),
                    truth=truth,
                )

    def has_file(self, rel_path: str, verify: bool = True) -> bool:
        """Whether ``rel_path`` is recorded and, with ``verify``, present with its recorded size and checksum."""
        for entry in self.targets.values():
            for record in entry.get("files", []):
                if record["path"] == rel_path:
                    if not verify:
                        return True
                    full = self.root / rel_path
                    if not full.exists() or full.stat().st_size != record.get(
                        "size", full.stat().st_size
                    ):
                        return False
                    return "sha256" not in record or sha256sum(full) == record["sha256"]
        return False

    def save(self) -> Path:
        """Write ``manifest.json`` atomically."""
        from .io import atomic_write

        self.data["updated"] = _now()
        text = json.dumps(self.data, indent=1, sort_keys=False, default=str).encode()
        return atomic_write(self.root / MANIFEST_NAME, lambda fh: fh.write(text))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
