"""Scores tables shared by ``astrid score`` and :func:`astrid.batch.process_pairs`: model identity, rows, files.

A scores table has one row per candidate: ``candidate_id``, ``score``,
``input`` (the file or pair it came from), ``model`` and ``model_sha256``,
plus the inputs' ``candid``, ``objectId``, ``drb``, ``survey`` and ``pair``
where they have them. Its metadata ``astrid_scores`` holds the model's identity (file
hash, card hash, version) and the drift check (:mod:`astrid.drift`). It is
written atomically as ECSV or Parquet, chosen by the file suffix.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table, vstack

from ._version import __version__
from .errors import AstridFileError, AstridInputError
from .io import write_ecsv

__all__ = [
    "model_identity",
    "scores_table",
    "write_scores",
    "read_scores",
    "SCORES_FORMAT",
    "TABLE_SUFFIXES",
]

SCORES_FORMAT = "astrid-scores/1"
TABLE_SUFFIXES = (".ecsv", ".parquet")
# Per-candidate values of the inputs worth keeping beside the score, and their "absent" values.
_EXTRA = {
    "candid": np.int64(-1),
    "objectId": "",
    "drb": np.float32(np.nan),
    "survey": "",
    "pair": "",
}
_COLUMNS = ["candidate_id", "score", "input", "model", "model_sha256", *_EXTRA]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_name(path: Path) -> str:
    name = path.name
    for suffix in (".keras", ".tflite", ".h5", ".hdf5"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def model_identity(model) -> dict[str, Any]:
    """What identifies a model file: its name, SHA-256, version and its card's SHA-256.

    Parameters
    ----------
    model : path-like
        A ``.keras``, braai ``.h5`` or ``.tflite`` file.

    Returns
    -------
    dict
        ``model`` (file name without suffix), ``model_path``,
        ``model_sha256`` (of the file), ``card_sha256`` (of
        ``<name>.card.json`` or the ``.tflite.json`` sidecar, None without
        one) and ``model_version`` (the card's ``created`` time or the
        sidecar's ``created_utc``; else the first 12 digits of the file's
        SHA-256), and ``calibration``: the method of the score calibration
        recorded in the card (``calibration``) or sidecar
        (``score_calibration``), which :func:`astrid.score.score` applies by
        default, or None.

    Raises
    ------
    AstridInputError
        ``model`` is not a path (a Keras object has no stable identity:
        save it first).
    AstridFileError
        The file does not exist.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise AstridInputError(
            f"model: expected the path of a .keras, .h5 or .tflite file, got {type(model).__name__} "
            "(save a Keras model with model.save('name.keras') first: its file identifies the scores)"
        )
    path = Path(model)
    if not path.is_file():
        raise AstridFileError(f"{path}: no such model file")
    sha = _sha256_file(path)
    name = _model_name(path)
    card_sha = version = calibration = None
    for card_path in (path.with_name(name + ".card.json"), path.with_name(path.name + ".json")):
        if card_path.is_file():
            card_sha = _sha256_file(card_path)
            try:
                card = json.loads(card_path.read_text())
            except (OSError, ValueError):
                card = {}
            if isinstance(card, dict):
                version = card.get("created") or card.get("created_utc")
                found = (
                    card.get("calibration")
                    if card_path.name.endswith(".card.json")
                    else card.get("score_calibration")
                )
                calibration = found.get("method") if isinstance(found, dict) else None
            break
    return {
        "model": name,
        "model_path": str(path.resolve()),
        "model_sha256": sha,
        "card_sha256": card_sha,
        "model_version": str(version) if version else sha[:12],
        "calibration": calibration,
    }


def scores_table(scores, input_name: str, identity: dict) -> Table:
    """Rows of a scores table for one input's scores (a DataArray from :func:`astrid.score.score`)."""
    n = int(scores.sizes[scores.dims[0]]) if hasattr(scores, "sizes") else len(scores)
    coords = getattr(scores, "coords", {})
    if "candidate_id" in coords:
        ids = np.asarray(coords["candidate_id"].values).astype(str)
    else:
        ids = np.array([f"{input_name}#{i}" for i in range(n)], dtype=str)
    table = Table()
    table["candidate_id"] = ids.astype(str)
    table["score"] = np.asarray(getattr(scores, "values", scores), dtype=np.float32)
    table["input"] = np.full(n, str(input_name), dtype=f"U{max(len(str(input_name)), 1)}")
    table["model"] = np.full(n, identity["model"], dtype=f"U{max(len(identity['model']), 1)}")
    table["model_sha256"] = np.full(n, identity["model_sha256"], dtype="U64")
    for name, fill in _EXTRA.items():
        if name in coords:
            values = np.asarray(coords[name].values)
            table[name] = values.astype(str) if isinstance(fill, str) else values.astype(type(fill))
        else:
            table[name] = np.full(n, fill, dtype=str if isinstance(fill, str) else type(fill))
    table["score"].description = "real/bogus score (1 = real)"
    table["input"].description = "file (or pair) the candidate was read from"
    table["model_sha256"].description = "SHA-256 of the model file that gave the score"
    return table


def empty_scores() -> Table:
    """A scores table with no rows and every column."""
    return scores_table(np.empty(0, dtype=np.float32), "", {"model": "", "model_sha256": ""})


def concat(tables: list[Table]) -> Table:
    """Stack scores tables (metadata of the first kept)."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return empty_scores()
    out = (
        vstack([t[_COLUMNS] for t in tables], metadata_conflicts="silent")
        if len(tables) > 1
        else tables[0][_COLUMNS]
    )
    return Table(out, copy=False)


def write_scores(path, table: Table) -> Path:
    """Write a scores table atomically; ECSV or Parquet by the suffix of ``path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ecsv":
        return write_ecsv(path, table)
    if suffix == ".parquet":
        # astropy's Parquet writer wants a file name; the rename keeps the write atomic.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            table.write(tmp, format="parquet", overwrite=True)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
    raise AstridInputError(
        f"{path}: a scores table is written as {' or '.join(TABLE_SUFFIXES)}, not {suffix!r}"
    )


def read_scores(path) -> Table:
    """Read a scores table written by :func:`write_scores`."""
    path = Path(path)
    try:
        table = Table.read(
            path, format="ascii.ecsv" if path.suffix.lower() == ".ecsv" else "parquet"
        )
    except (OSError, ValueError, TypeError) as exc:
        raise AstridFileError(
            f"{path}: not a readable scores table ({type(exc).__name__}: {exc})"
        ) from exc
    missing = [c for c in ("candidate_id", "score", "input") if c not in table.colnames]
    if missing:
        raise AstridFileError(f"{path}: not an AstrID scores table (no column(s) {missing})")
    table["candidate_id"] = np.asarray(table["candidate_id"]).astype(str)
    table["input"] = np.asarray(table["input"]).astype(str)
    return table


def table_meta(identity: dict, drift: dict | None, reference: str | None, **extra) -> dict:
    """The ``astrid_scores`` metadata of a scores table."""
    return {
        "format": SCORES_FORMAT,
        "astrid_version": __version__,
        "model": identity,
        "reference": reference,
        "drift": drift,
        **extra,
    }
