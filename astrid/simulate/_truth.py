"""The truth table of a simulated pair and its star and galaxy catalogues."""

from __future__ import annotations

import numpy as np
from astropy.table import Column, Table

from ._geometry import (
    Epoch,
    clip_segment,
    pixel_angle_deg,
    sky_positions,
)
from ._params import (
    EPOCHS,
    SimParams,
)
from ._scene import (
    Exposures,
    Scene,
    snr_columns,
)


def _mask_at(ep: Epoch, mask: np.ndarray, x, y) -> np.ndarray:
    x = np.atleast_1d(x)
    y = np.atleast_1d(y)
    ix = np.floor(x + 0.5).astype(int)
    iy = np.floor(y + 0.5).astype(int)
    ok = ep.contains(x, y)
    out = np.zeros(x.size, bool)
    out[ok] = mask[iy[ok], ix[ok]]
    return out


def _add(rows: list, eps: dict, kind, epoch, ra, dec, **cols) -> None:
    """Append a block of truth rows (one per position) to ``rows``."""
    n = np.size(ra)
    if n == 0:
        return
    block = {
        "kind": np.full(n, kind),
        "epoch": np.broadcast_to(np.asarray(epoch), n).copy(),
        **sky_positions(eps, ra, dec),
    }
    for key, value in cols.items():
        block[key] = np.broadcast_to(np.asarray(value), n).copy()
    rows.append(block)


def truth_table(
    p: SimParams, eps: dict, scene: Scene, exposures: Exposures, flux_ratio: float
) -> Table:
    """One row per injected transient or artifact appearance (columns: :class:`SimulatedPair`)."""
    rows: list[dict] = []
    _transient_rows(rows, eps, scene, exposures, flux_ratio)
    _artifact_rows(rows, eps, scene, exposures, flux_ratio)
    _saturated_rows(rows, eps, scene, exposures, flux_ratio)
    return _assemble(rows, p, eps, flux_ratio)


def _transient_rows(
    rows: list, eps: dict, scene: Scene, exposures: Exposures, flux_ratio: float
) -> None:
    """Supernovae, variable stars and asteroids (one row per appearance)."""
    stars, sne, ast = scene.stars, scene.supernovae, scene.asteroids
    variances, masks = exposures.variances, exposures.masks
    sci, ref = eps["science"], eps["reference"]
    nan = np.nan
    # Supernovae
    pos = sky_positions(eps, sne["ra"], sne["dec"])
    _add(
        rows,
        eps,
        "supernova",
        "science",
        sne["ra"],
        sne["dec"],
        flux_sci=sne["flux"],
        flux_ref=0.0,
        flux_diff=sne["flux"],
        mag=_mag(sne["flux"], sci.zp),
        mag_ref=nan,
        **snr_columns(eps, variances, flux_ratio, pos, sne["flux"]),
        host_id=sne["host"],
        host_offset_arcsec=sne["offset"],
        is_real=True,
        masked=_mask_at(sci, masks["science"], pos["x_sci"], pos["y_sci"]),
    )
    # Variables
    var = np.flatnonzero(stars["variable"])
    pos = sky_positions(eps, stars["ra"][var], stars["dec"][var])
    diff = stars["flux_sci"][var] - flux_ratio * stars["flux_ref"][var]
    _add(
        rows,
        eps,
        "variable",
        "both",
        stars["ra"][var],
        stars["dec"][var],
        flux_sci=stars["flux_sci"][var],
        flux_ref=stars["flux_ref"][var],
        flux_diff=diff,
        mag=stars["mag_sci"][var],
        mag_ref=stars["mag"][var],
        **snr_columns(eps, variances, flux_ratio, pos, diff),
        star_id=var,
        is_real=True,
        masked=_mask_at(sci, masks["science"], pos["x_sci"], pos["y_sci"]),
    )
    # Asteroids: one row per appearance.
    first_id = sum(len(r["kind"]) for r in rows)
    pos = sky_positions(eps, ast["ra"], ast["dec"])
    _add(
        rows,
        eps,
        "asteroid",
        "science",
        ast["ra"],
        ast["dec"],
        flux_sci=ast["flux"],
        flux_ref=0.0,
        flux_diff=ast["flux"],
        mag=_mag(ast["flux"], sci.zp),
        mag_ref=nan,
        **snr_columns(eps, variances, flux_ratio, pos, ast["flux"]),
        is_real=True,
        masked=_mask_at(sci, masks["science"], pos["x_sci"], pos["y_sci"]),
    )
    k_ref = np.flatnonzero(ast["in_ref"])
    pos = sky_positions(eps, ast["ra_ref"][k_ref], ast["dec_ref"][k_ref])
    _add(
        rows,
        eps,
        "asteroid",
        "reference",
        ast["ra_ref"][k_ref],
        ast["dec_ref"][k_ref],
        flux_sci=0.0,
        flux_ref=ast["flux_ref"][k_ref],
        flux_diff=-flux_ratio * ast["flux_ref"][k_ref],
        mag=_mag(ast["flux_ref"][k_ref], ref.zp),
        mag_ref=_mag(ast["flux_ref"][k_ref], ref.zp),
        **snr_columns(eps, variances, flux_ratio, pos, flux_ratio * ast["flux_ref"][k_ref]),
        parent_id=first_id + k_ref,
        is_real=True,
        masked=_mask_at(ref, masks["reference"], pos["x_ref"], pos["y_ref"]),
    )


def _artifact_rows(
    rows: list, eps: dict, scene: Scene, exposures: Exposures, flux_ratio: float
) -> None:
    """Cosmic rays, hot pixels and bad columns of each epoch, then satellite trails."""
    art, trails = scene.artifacts, scene.trails
    landed = exposures.landed
    # Detector artifacts of each epoch
    for name in EPOCHS:
        ep = eps[name]
        a = art[name]
        fkey = "flux_sci" if name == "science" else "flux_ref"
        other = "flux_ref" if name == "science" else "flux_sci"
        sign = 1.0 if name == "science" else -flux_ratio
        ra, dec = ep.world(a["cr"]["x"], a["cr"]["y"])
        _add(
            rows,
            eps,
            "cosmic_ray",
            name,
            ra,
            dec,
            **{fkey: landed[name], other: 0.0},
            flux_diff=sign * landed[name],
            length_px=a["cr"]["length"],
            angle_deg=pixel_angle_deg(ep, eps, name, a["cr"]["angle"]),
            masked=False,
        )
        ra, dec = ep.world(a["hot"]["x"], a["hot"]["y"])
        _add(
            rows,
            eps,
            "hot_pixel",
            name,
            ra,
            dec,
            **{fkey: a["hot"]["level"], other: 0.0},
            flux_diff=sign * a["hot"]["level"],
            masked=a["hot"]["masked"],
        )
        c = a["columns"]
        if c["x"].size:
            ymid = 0.5 * (c["y0"] + c["y1"] - 1)
            ra, dec = ep.world(c["x"], ymid)
            excess = np.where(c["hot"], c["level"] * (c["y1"] - c["y0"]), np.nan)
            _add(
                rows,
                eps,
                "bad_column",
                name,
                ra,
                dec,
                **{fkey: excess, other: 0.0},
                flux_diff=sign * excess,
                length_px=(c["y1"] - c["y0"]).astype(float),
                angle_deg=pixel_angle_deg(ep, eps, name, np.full(c["x"].size, np.pi / 2)),
                masked=True,
            )
    for trail in trails:
        name = trail["epoch"]
        ep = eps[name]
        length, xm, ym = clip_segment(
            trail["x"], trail["y"], trail["angle"], trail["half_length"], ep.shape
        )
        ra, dec = ep.world(np.array([xm]), np.array([ym]))
        fkey = "flux_sci" if name == "science" else "flux_ref"
        other = "flux_ref" if name == "science" else "flux_sci"
        sign = 1.0 if name == "science" else -flux_ratio
        _add(
            rows,
            eps,
            "satellite_trail",
            name,
            ra,
            dec,
            **{fkey: trail["flux"], other: 0.0},
            flux_diff=sign * trail["flux"],
            length_px=length,
            angle_deg=pixel_angle_deg(ep, eps, name, np.array([trail["angle"]])),
            masked=False,
        )


def _saturated_rows(
    rows: list, eps: dict, scene: Scene, exposures: Exposures, flux_ratio: float
) -> None:
    """Saturated stars (forced and natural)."""
    stars, saturated = scene.stars, exposures.saturated
    # Saturated stars (forced and natural)
    sat = np.flatnonzero(saturated["reference"] | saturated["science"])
    epoch = np.where(
        saturated["reference"][sat] & saturated["science"][sat],
        "both",
        np.where(saturated["science"][sat], "science", "reference"),
    )
    _add(
        rows,
        eps,
        "saturated_star",
        epoch,
        stars["ra"][sat],
        stars["dec"][sat],
        flux_sci=stars["flux_sci"][sat],
        flux_ref=stars["flux_ref"][sat],
        flux_diff=stars["flux_sci"][sat] - flux_ratio * stars["flux_ref"][sat],
        mag=stars["mag_sci"][sat],
        mag_ref=stars["mag"][sat],
        star_id=sat,
        masked=True,
    )


def _assemble(rows: list, p: SimParams, eps: dict, flux_ratio: float) -> Table:
    """The table of the row blocks: every column filled, typed and with its unit."""
    sci, ref = eps["science"], eps["reference"]
    columns = {
        "kind": str,
        "epoch": str,
        "ra": float,
        "dec": float,
        "x_sci": float,
        "y_sci": float,
        "x_ref": float,
        "y_ref": float,
        "flux_sci": float,
        "flux_ref": float,
        "flux_diff": float,
        "mag": float,
        "mag_ref": float,
        "snr_sci": float,
        "snr_diff": float,
        "host_id": int,
        "host_offset_arcsec": float,
        "star_id": int,
        "parent_id": int,
        "is_real": bool,
        "masked": bool,
        "length_px": float,
        "angle_deg": float,
    }
    defaults = {float: np.nan, int: -1, bool: False, str: ""}
    data = {}
    total = sum(len(r["kind"]) for r in rows)
    for name, kind in columns.items():
        parts = [
            np.asarray(r[name]) if name in r else np.full(len(r["kind"]), defaults[kind])
            for r in rows
        ]
        values = np.concatenate(parts) if parts else np.array([], dtype=kind)
        data[name] = values.astype(kind) if kind is not str else values.astype("U16")
    units = {
        "ra": "deg",
        "dec": "deg",
        "x_sci": "pix",
        "y_sci": "pix",
        "x_ref": "pix",
        "y_ref": "pix",
        "flux_sci": p.bunit,
        "flux_ref": p.bunit,
        "flux_diff": p.bunit,
        "mag": "mag",
        "mag_ref": "mag",
        "host_offset_arcsec": "arcsec",
        "length_px": "pix",
        "angle_deg": "deg",
    }
    table = Table()
    table["id"] = np.arange(total, dtype=np.int64)
    for name in columns:
        table[name] = Column(data[name], unit=units.get(name))
    table.meta.update(
        {
            "preset": p.preset,
            "filter": p.filter,
            "flux_ratio": float(flux_ratio),
            "zp_reference": ref.zp,
            "zp_science": sci.zp,
            "description": "astrid.simulate truth: one row per injected transient or artifact appearance",
        }
    )
    return table


def _mag(flux, zp):
    flux = np.asarray(flux, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zp - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)


def star_table(stars, eps, saturated, bunit) -> Table:
    table = Table()
    n = stars["ra"].size
    table["id"] = np.arange(n, dtype=np.int64)
    for key, value in sky_positions(eps, stars["ra"], stars["dec"]).items():
        table[key] = Column(value, unit="deg" if key in ("ra", "dec") else "pix")
    table["mag"] = Column(stars["mag"], unit="mag", description="reference epoch")
    table["mag_sci"] = Column(stars["mag_sci"], unit="mag")
    table["flux_ref"] = Column(stars["flux_ref"], unit=bunit)
    table["flux_sci"] = Column(stars["flux_sci"], unit=bunit)
    table["variable"] = stars["variable"]
    table["saturated_ref"] = saturated["reference"]
    table["saturated_sci"] = saturated["science"]
    return table


def galaxy_table(gal, eps, hosts, bunit) -> Table:
    table = Table()
    n = gal["ra"].size
    table["id"] = np.arange(n, dtype=np.int64)
    for key, value in sky_positions(eps, gal["ra"], gal["dec"]).items():
        table[key] = Column(value, unit="deg" if key in ("ra", "dec") else "pix")
    table["mag"] = Column(gal["mag"], unit="mag")
    table["flux_ref"] = Column(10 ** (-0.4 * (gal["mag"] - eps["reference"].zp)), unit=bunit)
    table["flux_sci"] = Column(10 ** (-0.4 * (gal["mag"] - eps["science"].zp)), unit=bunit)
    table["sersic_n"] = gal["sersic_n"]
    table["r_eff_arcsec"] = Column(gal["r_eff_arcsec"], unit="arcsec")
    table["axis_ratio"] = gal["axis_ratio"]
    table["pa_deg"] = Column(gal["pa_deg"], unit="deg", description="major axis, east of north")
    host = np.zeros(n, bool)
    host[hosts[hosts >= 0]] = True
    table["host"] = host
    return table
