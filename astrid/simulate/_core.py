"""The simulated survey: reference/science pairs with every effect that makes difference imaging hard.

One sky (stars, galaxies, transients) is generated in world coordinates and
projected through each epoch's own TAN WCS; each epoch is then rendered
independently with its own PSF, sky, zero point, noise and detector defects.
The truth table lists every injected transient and artifact with its position
in both pixel grids and its flux in both epochs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from ..errors import AstridInputError
from ..io import Image, header_meta
from . import _render
from ._artifacts import draw_artifacts, draw_satellites
from ._catalogues import (
    draw_asteroids,
    draw_galaxies,
    draw_stars,
    draw_supernovae,
)
from ._geometry import (
    Epoch,
    draw_geometry,
    make_epochs,
)
from ._params import (
    EPOCHS,
    SimParams,
    Streams,
    check_epoch,
    parse_size,
    resolve_params,
)
from ._scene import (
    STREAK_FRACTION,
    Exposures,
    Scene,
    add_noise,
    flux_for_snr,
    render_epoch,
    render_galaxies,
    render_points,
)
from ._truth import galaxy_table, star_table, truth_table

__all__ = ["SimulatedPair", "pair"]


@dataclass
class SimulatedPair:
    """A simulated reference/science pair with its truth.

    Attributes
    ----------
    reference : astrid.Image
        The reference epoch on its own pixel grid: float32 data in ADU
        (counts for UVOT), TAN WCS, mask (saturated and bleed pixels, bad
        columns, hot pixels in the bad-pixel map), per-pixel variance
        (ADU², from the noiseless model, so including source noise; cosmic
        rays and detector defects are not in it, and masked pixels keep the
        value their light would have), header and metadata.
    science : astrid.Image
        The science epoch on its own pixel grid, as ``reference``.
    truth : astropy.table.Table
        One row per injected transient or artifact appearance:

        - ``id``; ``kind`` (one of :data:`TRUTH_KINDS`); ``epoch``
          ("science", "reference" or "both");
        - ``ra``, ``dec`` (deg); ``x_sci``, ``y_sci``, ``x_ref``, ``y_ref``
          (0-based pixels in each grid);
        - ``flux_sci``, ``flux_ref``: total flux of the transient part in
          each epoch's own data units, 0 where absent (for variables and
          saturated stars the star's total flux; NaN for a dead column);
          ``flux_diff``: the flux in the ideal difference science −
          flux_ratio × reference, in science units;
        - ``mag`` (AB, science epoch; the reference epoch for an asteroid
          seen only there), ``mag_ref``;
        - ``snr_sci``: optimal PSF-fit S/N of ``flux_diff`` in the science
          image alone, from the true PSF and the true variance (sky, host
          and the source itself); ``snr_diff``: the same in the ideal
          difference, with the reference's PSF-fit error scaled by
          ``flux_ratio`` added in quadrature (real pipelines reach less on
          bright hosts, where alignment and PSF errors add noise);
        - ``host_id`` (row of ``galaxies``, -1 without host),
          ``host_offset_arcsec`` (NaN without host); ``star_id`` (row of
          ``stars`` for variables and saturated stars, else -1);
          ``parent_id`` (for an asteroid's reference appearance, the ``id``
          of its science appearance, else -1);
        - ``is_real``; ``masked`` (centre pixel flagged in its epoch's
          mask); ``length_px``, ``angle_deg`` (tracks, columns and trails;
          angle from +x in the science grid).

        ``is_real`` is True for supernovae, variables and asteroids: it says
        whether a detection is a genuine astrophysical source rather than an
        artifact, which is what a real/bogus classifier learns; asteroids
        keep their own ``kind`` so that a search for stationary transients
        can drop them.
    stars : astropy.table.Table
        Every star (including variables and deliberately saturated ones): ``id``,
        ``ra``, ``dec``, ``x_ref``, ``y_ref``, ``x_sci``, ``y_sci``, ``mag``
        (reference epoch), ``mag_sci``, ``flux_ref``, ``flux_sci``, ``variable``,
        ``saturated_ref``, ``saturated_sci``.
    galaxies : astropy.table.Table
        Every galaxy: ``id``, position columns as for stars, ``mag``,
        ``flux_ref``, ``flux_sci``, ``sersic_n``, ``r_eff_arcsec`` (major axis),
        ``axis_ratio``, ``pa_deg`` (east of north), ``host`` (hosts a supernova).
    params : dict
        Every parameter used (the preset after overrides) plus the true
        properties of the pair: ``psf_reference``/``psf_science`` (PSFs at the
        field centre, 2-D arrays normalised to sum 1, centred on the middle
        pixel), ``fwhm_reference``/``fwhm_science`` (px at the centre),
        ``flux_ratio`` (science/reference flux of a constant source),
        ``zp_reference``/``zp_science`` (MAGZP), ``sky_reference``/``sky_science``
        (ADU per pixel at the centre), ``shift_px``, ``rotation_deg``,
        ``pixel_scale_ratio``, ``sci_to_ref`` (2x3 affine matrix taking science
        pixels ``(x, y, 1)`` to reference pixels), ``saturation_reference``/
        ``saturation_science``, ``ra``/``dec`` of the reference centre,
        ``mjd_reference``/``mjd_science`` and ``timing_s`` (seconds per stage).
    _epochs : dict
        Private: each epoch's geometry and PSF, by epoch name, for the
        pair's PSF and source-image methods; not part of the public API.
    """

    reference: Image
    science: Image
    truth: Table
    stars: Table = field(default_factory=Table)
    galaxies: Table = field(default_factory=Table)
    params: dict = field(default_factory=dict)
    _epochs: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        kinds, counts = (
            np.unique(np.asarray(self.truth["kind"]), return_counts=True)
            if len(self.truth)
            else ([], [])
        )
        rows = ", ".join(f"{n} {k}" for k, n in zip(kinds, counts))
        return (
            f"SimulatedPair(preset={self.params.get('preset')!r}, seed={self.params.get('seed')}, "
            f"shape={self.science.shape}, truth: {rows})"
        )

    def image(self, epoch: str) -> Image:
        """The :class:`~astrid.Image` of ``epoch`` (``"reference"`` or ``"science"``)."""
        return {"reference": self.reference, "science": self.science}[check_epoch(epoch)]

    def psf(
        self,
        epoch: str = "science",
        x: float | None = None,
        y: float | None = None,
        size: int | None = None,
    ) -> np.ndarray:
        """The true PSF of an epoch at a pixel position.

        Parameters
        ----------
        epoch : {"science", "reference"}
        x, y : float, optional
            0-based pixel position in that epoch's grid; default the image centre.
        size : int, optional
            Odd side of the stamp (px); default twice the radius that encloses
            99.5 % of the flux, plus one.

        Returns
        -------
        numpy.ndarray, shape (size, size)
            The pixel-integrated PSF, normalised to sum 1, centred on the
            middle pixel.
        """
        ep = self._epochs[check_epoch(epoch)]
        x = ep.cx if x is None else float(x)
        y = ep.cy if y is None else float(y)
        fwhm = float(ep.fwhm_at(np.array([x]), np.array([y]))[0])
        if size is None:
            size = 2 * ep.psf_radius(fwhm) + 1
        size = int(size)
        if size < 3 or size % 2 == 0:
            raise AstridInputError(f"PSF size must be an odd integer >= 3, got {size}")
        return _render.psf_stamp(size, 0.0, 0.0, fwhm, ep.beta, ep.psf_q, ep.psf_theta, True)

    def render_source(
        self,
        epoch: str,
        x: float,
        y: float,
        flux: float,
        *,
        r_eff_arcsec: float | None = None,
        sersic_n: float = 1.0,
        axis_ratio: float = 1.0,
        pa_deg: float = 0.0,
    ) -> np.ndarray:
        """One noiseless source rendered exactly as the simulation renders it, on an empty image.

        Parameters
        ----------
        epoch : {"science", "reference"}
        x, y : float
            0-based pixel position of the centre in that epoch's grid.
        flux : float
            Total flux, in the epoch's data units.
        r_eff_arcsec : float, optional
            Half-light radius (major axis, arcsec) of a Sersic galaxy convolved with the local
            PSF; default a point source (the local PSF).
        sersic_n, axis_ratio, pa_deg : float, optional
            The galaxy's Sersic index, axis ratio and position angle (deg, east of north).

        Returns
        -------
        numpy.ndarray of float32, shape of the epoch's image
            The source alone (no sky, no noise), in data units.
        """
        ep = self._epochs[check_epoch(epoch)]
        image = np.zeros(ep.shape, np.float32)
        if r_eff_arcsec is None:
            render_points(
                image, ep, np.array([float(x)]), np.array([float(y)]), np.array([float(flux)])
            )
            return image
        ra, dec = ep.world(np.array([float(x)]), np.array([float(y)]))
        galaxy = {
            "ra": ra,
            "dec": dec,
            "r_eff_arcsec": np.array([float(r_eff_arcsec)]),
            "sersic_n": np.array([float(sersic_n)]),
            "axis_ratio": np.array([float(axis_ratio)]),
            "pa_deg": np.array([float(pa_deg)]),
        }
        render_galaxies(image, ep, galaxy, np.array([float(flux)]))
        return image


def _header(p: SimParams, ep: Epoch, seed: int, target: str | None) -> fits.Header:
    header = fits.Header()
    header["TELESCOP"] = (p.telescope, "simulated by AstrID")
    header["INSTRUME"] = p.instrument
    header["FILTER"] = p.filter
    if target:
        header["OBJECT"] = target
    t = Time(ep.mjd, format="mjd", scale="utc")
    header["DATE-OBS"] = (t.isot, "start of exposure (UTC)")
    header["MJD-OBS"] = (round(ep.mjd, 6), "start of exposure (MJD, UTC)")
    header["EXPTIME"] = (ep.exptime, "[s] exposure time")
    unit = "ADU" if p.bunit == "adu" else p.bunit
    header["GAIN"] = (ep.gain, f"[e-/{unit}]")
    header["RDNOISE"] = (ep.read_noise, "[e-] read noise")
    header["SATURATE"] = (round(ep.saturation, 3), f"[{unit}] saturation level")
    header["MAGZP"] = (round(ep.zp, 6), f"AB mag of 1 {unit} in this exposure")
    header["SEEING"] = (round(ep.fwhm0 * ep.pixel_scale, 3), "[arcsec] PSF FWHM at the centre")
    header["BUNIT"] = p.bunit
    header["SIMSEED"] = (seed, "astrid.simulate seed")
    header["SIMPRSET"] = (p.preset, "astrid.simulate preset")
    header["SIMEPOCH"] = (ep.name, "simulated epoch")
    header.update(ep.wcs.to_header())
    return header


def pair(size=2048, seed=0, preset="ztf", **overrides) -> SimulatedPair:
    """Simulate a reference/science pair of one field with a truth table.

    One sky (stars, galaxies, transients) is generated in world coordinates and projected through
    each epoch's TAN WCS; each epoch is rendered on its own pixel grid with its own PSF, sky, zero
    point, noise and detector artifacts. Deterministic: the same arguments give identical pixels.

    Parameters
    ----------
    size : int or (int, int)
        Image side, or shape ``(ny, nx)``, in pixels (>= 128); both epochs have this shape.
    seed : int or None
        Seed of every random choice. Each ingredient has its own random stream, so changing,
        say, ``n_supernovae`` leaves the rest of the images unchanged.
    preset : {"ztf", "ztf_alert", "swift_uvot"}
        Instrument preset (see :data:`PRESETS`); ``"ztf_alert"`` is ZTF as its alert stamps
        look: a deep co-added reference, the alerts' seeing, denser stars and more variables
        (``benchmarks/realism.py``).
    **overrides
        Any preset parameter. ``None`` means "draw at random from the seed".

        Geometry
            ``ra``, ``dec`` (deg, reference centre; default random),
            ``shift_px`` ``(dx, dy)``: the science centre sees reference pixel
            ``centre + (dx, dy)`` (default random: integer part within
            ``max_shift_px`` plus a sub-pixel part), ``rotation_deg``
            (science pixel axes turned counter-clockwise relative to the
            reference axes; default uniform within ``max_rotation_deg``),
            ``pixel_scale`` (arcsec/px, reference), ``pixel_scale_ratio``
            (science/reference pixel scale, default 1).
        Epochs
            ``filter`` (ZTF: g, r, i; UVOT: V, B, U, UVW1, UVM2, UVW2),
            ``exptime_reference``, ``exptime_science`` (s),
            ``reference_stack`` (exposures averaged into the reference:
            1/sqrt(N) of the noise, GAIN N times the detector's, and from 3
            on no cosmic rays or hot pixels),
            ``mjd_reference``, ``mjd_science`` (science at least 365 d later),
            ``fwhm_reference``, ``fwhm_science`` (px at the field centre;
            default drawn from ``seeing_reference``/``seeing_science`` in
            arcsec), ``psf_beta`` (Moffat index), ``psf_variation`` (largest
            fractional FWHM change across the field), ``psf_ellipticity``,
            ``zp_reference``, ``zp_science`` (MAGZP; default from the filter
            and exposure time, the science epoch losing ``transparency_loss``
            mag), ``sky_mag_reference``, ``sky_mag_science`` (mag/arcsec²),
            ``sky_brightening``, ``sky_gradient``, ``gain`` (e-/ADU),
            ``read_noise`` (e-), ``saturation`` (ADU; UVOT: ``saturation_rate``
            × exposure time), ``noise`` (False: noiseless data, same
            variance). Photon noise is drawn exactly from the Poisson
            distribution where a pixel expects fewer than 50 electrons, and
            through its Cornish-Fisher expansion (exact mean, variance and
            skewness) above, indistinguishable from exact draws (< 0.1 % in
            any quantile) and several times faster.
        Static sky
            ``n_stars``/``n_galaxies`` (expected number inside the reference
            image; default ``star_density``/``galaxy_density`` per arcmin²),
            ``star_mag_range``, ``star_count_slope`` (d log N / dm),
            ``galaxy_mag_range``, ``galaxy_count_slope``, ``n_host_galaxies``.
        Transients
            ``n_supernovae``, ``sn_snr_bright``/``sn_snr_faint`` (ranges of the
            science-image S/N), ``sn_faint_fraction``, ``sn_core_fraction``
            (on the host nucleus), ``sn_hostless_fraction``, ``n_variables``,
            ``variable_mag_range``, ``variable_amplitude`` (|Δmag| range),
            ``n_asteroids``, ``asteroid_snr``, ``asteroid_in_reference``
            (probability that it is also in the reference, elsewhere).
        Artifacts
            ``artifacts`` (False: no cosmic rays, hot pixels, bad columns,
            satellite trails or forced saturated stars; naturally bright
            stars still saturate), ``n_saturated_stars``,
            ``cosmic_ray_density``, ``hot_pixel_density`` (per megapixel per
            epoch, at least one when positive), ``cosmic_ray_charge``,
            ``hot_pixel_level`` (ADU ranges), ``hot_pixel_masked_fraction``
            (share of hot pixels in the bad-pixel mask), ``n_bad_columns``
            (per epoch, always masked), ``n_satellite_trails``,
            ``bleed_trails``, ``readout_streaks`` (UVOT).

    Returns
    -------
    SimulatedPair
        ``reference``, ``science``, ``truth`` (one row per transient or artifact appearance;
        columns under :class:`SimulatedPair`), ``stars``, ``galaxies``, ``params``.

    Raises
    ------
    AstridInputError
        Unknown preset, unknown parameter or out-of-range value.

    Notes
    -----
    Stars follow power-law number counts; galaxies are truncated Sersic profiles (n 0.6 to 4.5,
    size shrinking with magnitude) convolved with the local PSF of each epoch. The PSF is a Moffat
    profile whose FWHM varies smoothly across each image; every source is integrated over the
    pixels. Point-source stamps grow with flux until their wing drops below 5 % of the sky noise,
    so each source keeps at least 99.5 % of its flux in the image (the truth fluxes are totals).
    Transients keep 12 px apart (unless the field is too crowded) and at least 32 px inside both
    images. Both WCSs share their tangent point, so the science-to-reference pixel mapping is
    exactly the affine ``params["sci_to_ref"]``. The noise model is in the ``noise`` entry above;
    the variance image holds its per-pixel variance.
    """
    clock = _Clock()
    p = resolve_params(preset, overrides)
    shape = parse_size(size)
    rngs = Streams(seed)
    geo = draw_geometry(p, shape, rngs("geometry"))
    eps = make_epochs(p, shape, geo, rngs("epochs"))
    flux_ratio = 10 ** (0.4 * (eps["science"].zp - eps["reference"].zp))
    scene = _draw_scene(p, eps, rngs)
    clock.lap("catalogues")
    models, saturated = _render_static(eps, scene)
    clock.lap("render_static")
    _render_transients(p, eps, scene, models, saturated, flux_ratio)
    clock.lap("render_transients")
    exposures = _expose(p, eps, scene, models, saturated, rngs, clock)
    truth = truth_table(p, eps, scene, exposures, flux_ratio)
    truth.meta["seed"] = rngs.seed
    clock.lap("truth")
    result = _assemble(p, eps, geo, scene, exposures, truth, rngs.seed, shape, flux_ratio)
    clock.lap("assemble")
    result.params["timing_s"] = clock.timings
    return result


class _Clock:
    """Seconds per stage of :func:`pair` (``params["timing_s"]``), summed over repeated laps."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now


def _draw_scene(p: SimParams, eps: dict[str, Epoch], rngs: Streams) -> Scene:
    """Every catalogue of the field: static sky, transients, the artifacts of both epochs."""
    ref, sci = eps["reference"], eps["science"]
    stars = draw_stars(p, eps, rngs)
    stars["flux_ref"] = 10 ** (-0.4 * (stars["mag"] - ref.zp))
    stars["flux_sci"] = 10 ** (-0.4 * (stars["mag_sci"] - sci.zp))
    gal = draw_galaxies(p, eps, rngs)
    # Transients avoid one another: variables first, then asteroids, then
    # supernovae, so removing supernovae moves nothing else.
    xv, yv = sci.pix(stars["ra"][stars["variable"]], stars["dec"][stars["variable"]])
    taken = list(zip(xv.tolist(), yv.tolist()))
    forced = sci.pix(
        stars["ra"][stars["forced_saturated"]], stars["dec"][stars["forced_saturated"]]
    )
    ast = draw_asteroids(p, eps, rngs, taken, forced)
    sne = draw_supernovae(p, eps, gal, rngs, taken, forced)
    art = {name: draw_artifacts(p, eps[name], rngs(f"artifacts_{name}")) for name in EPOCHS}
    trails = draw_satellites(p, eps, rngs("satellites"))
    return Scene(
        stars=stars, galaxies=gal, supernovae=sne, asteroids=ast, artifacts=art, trails=trails
    )


def _render_static(eps: dict[str, Epoch], scene: Scene) -> tuple[dict, dict]:
    """Each epoch's noiseless sky, stars and galaxies; which stars saturate (bool per star)."""
    models, saturated = {}, {}
    for name, key in (("reference", "flux_ref"), ("science", "flux_sci")):
        models[name], saturated[name] = render_epoch(eps[name], scene.stars, scene.galaxies, key)
    return models, saturated


def _render_transients(
    p: SimParams,
    eps: dict[str, Epoch],
    scene: Scene,
    models: dict,
    saturated: dict,
    flux_ratio: float,
) -> None:
    """Add transients (flux from their S/N on the static scene), trails, streaks to ``models``."""
    ref, sci = eps["reference"], eps["science"]
    sne, ast, stars = scene.supernovae, scene.asteroids, scene.stars
    xs, ys = sci.pix(sne["ra"], sne["dec"])
    sne["flux"] = flux_for_snr(sci, models["science"], xs, ys, sne["snr_target"])
    render_points(models["science"], sci, xs, ys, sne["flux"])
    xa, ya = sci.pix(ast["ra"], ast["dec"])
    ast["flux"] = flux_for_snr(sci, models["science"], xa, ya, ast["snr_target"])
    render_points(models["science"], sci, xa, ya, ast["flux"])
    # In the reference the asteroid has the same magnitude, in reference units.
    ast["flux_ref"] = np.where(ast["in_ref"], ast["flux"] / flux_ratio, 0.0)
    k_ref = np.flatnonzero(ast["in_ref"])
    render_points(
        models["reference"],
        ref,
        *ref.pix(ast["ra_ref"][k_ref], ast["dec_ref"][k_ref]),
        ast["flux_ref"][k_ref],
    )
    for trail in scene.trails:
        ep = eps[trail["epoch"]]
        trail["flux"] = _render.render_line(
            models[trail["epoch"]],
            trail["x"],
            trail["y"],
            trail["angle"],
            trail["half_length"],
            trail["surface"],
            trail["fwhm"],
            ep.beta,
        )
    if p.readout_streaks:
        for name in EPOCHS:
            ep = eps[name]
            x, _ = ep.pix(stars["ra"], stars["dec"])
            flux = stars["flux_ref" if name == "reference" else "flux_sci"]
            for k in np.flatnonzero(saturated[name]):
                _render.render_line(
                    models[name],
                    float(x[k]),
                    ep.cy,
                    math.pi / 2,
                    ep.shape[0] / 2.0 + 1.0,
                    STREAK_FRACTION * flux[k] / ep.shape[0],
                    1.2,
                    ep.beta,
                )


def _expose(
    p: SimParams,
    eps: dict[str, Epoch],
    scene: Scene,
    models: dict,
    saturated: dict,
    rngs: Streams,
    clock: _Clock,
) -> Exposures:
    """Noise, then the detector: cosmic rays, bleeds, hot pixels, bad columns, saturation.

    ``models`` is consumed (its arrays become the data).
    """
    exposures = Exposures(saturated=saturated)
    for name in EPOCHS:
        ep = eps[name]
        model = models.pop(name)
        np.maximum(model, 0.0, out=model)
        var = model / np.float32(ep.gain)
        var += np.float32(ep.noise_floor**2)
        exposures.variances[name] = var
        data = add_noise(model, ep, rngs.seq(f"noise_{name}")) if p.noise else model.copy()
        del model
        clock.lap("noise")
        art = scene.artifacts[name]
        cr = art["cr"]
        exposures.landed[name] = _render.deposit_tracks(
            data, cr["x"], cr["y"], cr["angle"], cr["length"], cr["charge"], cr["width"]
        )
        mask = np.zeros(ep.shape, dtype=bool)
        _render.bleed_columns(data, np.float32(ep.saturation), bool(p.bleed_trails), mask)
        hot = art["hot"]
        np.add.at(data, (hot["y"], hot["x"]), hot["level"].astype(np.float32))
        mask[hot["y"][hot["masked"]], hot["x"][hot["masked"]]] = True
        cols = art["columns"]
        for x, y0, y1, is_hot, level in zip(
            cols["x"], cols["y0"], cols["y1"], cols["hot"], cols["level"]
        ):
            if is_hot:
                data[y0:y1, x] += np.float32(level)
            else:
                data[y0:y1, x] *= np.float32(level)
            mask[y0:y1, x] = True
        np.minimum(data, np.float32(ep.saturation), out=data)
        mask |= data >= np.float32(ep.saturation)
        exposures.images[name], exposures.masks[name] = data, mask
        clock.lap("artifacts")
    return exposures


def _assemble(
    p: SimParams,
    eps: dict[str, Epoch],
    geo: dict,
    scene: Scene,
    exposures: Exposures,
    truth: Table,
    seed: int,
    shape: tuple[int, int],
    flux_ratio: float,
) -> SimulatedPair:
    """The :class:`SimulatedPair`: images with headers, catalogues, and every parameter used."""
    out_images = {}
    for name in EPOCHS:
        ep = eps[name]
        header = _header(p, ep, seed, None)
        out_images[name] = Image(
            data=exposures.images[name],
            wcs=ep.wcs.deepcopy(),
            mask=exposures.masks[name],
            variance=exposures.variances[name],
            header=header,
            meta=header_meta(header),
        )
    stars = star_table(scene.stars, eps, exposures.saturated, p.bunit)
    galaxies = galaxy_table(scene.galaxies, eps, scene.supernovae["host"], p.bunit)
    params = {k: v for k, v in p.as_dict().items() if k != "filters"}
    params.update(
        {
            "seed": seed,
            "shape": shape,
            "ra": geo["ra"],
            "dec": geo["dec"],
            "shift_px": geo["shift_px"],
            "rotation_deg": geo["rotation_deg"],
            "pixel_scale_ratio": geo["pixel_scale_ratio"],
            "sci_to_ref": geo["sci_to_ref"],
            "flux_ratio": float(flux_ratio),
            "psf_beta": float(p.psf_beta),
        }
    )
    for name in EPOCHS:
        ep = eps[name]
        params.update(
            {
                f"fwhm_{name}": ep.fwhm0,
                f"zp_{name}": ep.zp,
                f"sky_{name}": ep.sky0,
                f"sky_mag_{name}": ep.sky_mag,
                f"mjd_{name}": ep.mjd,
                f"saturation_{name}": ep.saturation,
                f"exptime_{name}": ep.exptime,
                f"psf_axis_ratio_{name}": ep.psf_q,
                f"psf_angle_deg_{name}": float(np.rad2deg(ep.psf_theta)),
                f"pixel_scale_{name}": ep.pixel_scale,
            }
        )
    result = SimulatedPair(
        reference=out_images["reference"],
        science=out_images["science"],
        truth=truth,
        stars=stars,
        galaxies=galaxies,
        params=params,
        _epochs=eps,
    )
    params["psf_reference"] = result.psf("reference")
    params["psf_science"] = result.psf("science")
    return result
