"""A simulated survey on disk: one pair and its truth per field, with a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._utils import json_safe
from ..errors import AstridInputError
from ..io import write_ecsv, write_image
from ..manifest import Manifest
from ._core import pair
from ._params import (
    EPOCHS,
    parse_size,
    resolve_params,
)


def _field_seed(seed: int, index: int) -> int:
    return int(
        np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0]
    )


def _field_is_written(manifest: Manifest, root: Path, name: str, signature: dict) -> bool:
    """Whether field ``name`` is complete on disk with the same parameters and intact files."""
    entry = manifest.targets.get(name)
    if entry is not None and entry.get("simulation") == signature and entry.get("complete"):
        files = [f["path"] for f in entry.get("files", [])]
        extra = [entry.get("truth")] + list(entry.get("catalogs", {}).values())
        if (
            files
            and all(manifest.has_file(f) for f in files)
            and all(e and (root / e).exists() for e in extra)
        ):
            return True
    return False


def _write_field(
    manifest: Manifest, root: Path, name: str, sim, p, preset: str, field_seed: int, signature: dict
) -> None:
    """Write one field's images and tables and record them in the manifest (not yet saved)."""
    mission = p.mission
    filt = p.filter
    stem = f"{name}_{mission.lower()}_{filt}"
    rel = {
        "reference": f"{name}/reference/{stem}_ref.fits",
        "science": f"{name}/science/{stem}_sci.fits",
    }
    for epoch in EPOCHS:
        image = sim.image(epoch)
        image.header["OBJECT"] = name
        write_image(
            root / rel[epoch],
            image,
            step="simulate",
            parameters={"preset": preset, "seed": field_seed},
        )
    write_ecsv(root / name / "truth.ecsv", sim.truth)
    write_ecsv(root / name / "stars.ecsv", sim.stars)
    write_ecsv(root / name / "galaxies.ecsv", sim.galaxies)
    manifest.target(
        name,
        ra=sim.params["ra"],
        dec=sim.params["dec"],
        truth=f"{name}/truth.ecsv",
        seed=field_seed,
        catalogs={"stars": f"{name}/stars.ecsv", "galaxies": f"{name}/galaxies.ecsv"},
        simulation=signature,
    )
    for epoch in EPOCHS:
        manifest.add_file(
            name,
            rel[epoch],
            epoch,
            mission=mission,
            instrument=p.instrument,
            filter=filt,
            mjd=sim.params[f"mjd_{epoch}"],
        )
    manifest.add_pair(
        name,
        rel["reference"],
        rel["science"],
        mission=mission,
        instrument=p.instrument,
        filter=filt,
    )


def survey(out_dir, n_fields=4, preset="ztf", seed=0, size=1024, **overrides) -> Manifest:
    """Write a simulated survey: one reference/science pair and a truth table per field.

    Layout (the one every AstrID data source writes)::

        <out_dir>/manifest.json
        <out_dir>/<target>/reference/<target>_<mission>_<filter>_ref.fits
        <out_dir>/<target>/science/<target>_<mission>_<filter>_sci.fits
        <out_dir>/<target>/truth.ecsv
        <out_dir>/<target>/stars.ecsv, galaxies.ecsv

    Targets are named ``SIM0000``, ``SIM0001``, ...; field ``i`` is
    ``pair(size, seed=<derived from (seed, i)>, preset, **overrides)`` at its
    own random sky position. The manifest is saved after each field, so an
    interrupted run leaves a consistent manifest, and a rerun skips every field
    already written with the same parameters and intact files (others are
    written again; fields beyond ``n_fields`` are left as they are).

    Parameters
    ----------
    out_dir : path-like
        Survey folder (created if needed).
    n_fields : int
        Number of fields.
    preset : {"ztf", "ztf_alert", "swift_uvot"}
    seed : int
        Seed of the survey; each field gets its own seed derived from it
        (recorded as ``seed`` in its manifest entry).
    size : int or (int, int)
        Image shape of every field.
    **overrides
        Simulation parameters, as for :func:`pair`.

    Returns
    -------
    astrid.Manifest
        The saved manifest (``source="simulated"``).

    Raises
    ------
    AstridInputError
        Bad parameters, or ``out_dir`` holds a survey from another source.
    """
    if isinstance(n_fields, bool) or not isinstance(n_fields, (int, np.integer)) or n_fields < 0:
        raise AstridInputError(f"n_fields must be a non-negative integer, got {n_fields!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise AstridInputError(f"seed must be a non-negative integer, got {seed!r}")
    p = resolve_params(preset, overrides)
    shape = parse_size(size)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise AstridInputError(f"{root}: exists and is not a folder")
    manifest = Manifest(root, source="simulated")
    if manifest.data.get("source") != "simulated" and manifest.targets:
        raise AstridInputError(
            f"{root}: holds a survey from source {manifest.data.get('source')!r}; simulate into another folder"
        )
    manifest.data["source"] = "simulated"
    manifest.data.setdefault("parameters", {})["simulation"] = json_safe(
        {"preset": preset, "seed": int(seed), "size": list(shape), "overrides": overrides}
    )
    for index in range(int(n_fields)):
        name = f"SIM{index:04d}"
        field_seed = _field_seed(seed, index)
        signature = json_safe(
            {"preset": preset, "seed": field_seed, "size": list(shape), "overrides": overrides}
        )
        if _field_is_written(manifest, root, name, signature):
            continue
        manifest.targets[name] = {"files": [], "pairs": []}
        sim = pair(shape, field_seed, preset, **overrides)
        _write_field(manifest, root, name, sim, p, preset, field_seed, signature)
        manifest.targets[name]["complete"] = True
        manifest.save()
    manifest.save()
    return manifest
