"""The drift check on real ZTF alerts: quiet on held-out alerts, loud on shifted inputs.

ZTF's production model d6_m7 gave every alert of the shared folder
``ztf_alerts/fink-broker/all_distribute_topics`` its ``drb`` score. The
reference distribution is the ``drb`` of all but the first ``--held-out``
alerts (in the reader's order: by ``candid``, i.e. by time); the runs
compared with it are d6_m7's scores, computed here, of:

* the held-out real alerts (no drift expected);
* stamps cut from simulated differences (``astrid.triplets.synthetic_difference``:
  stars, transients, hot pixels), the "model validated on real alerts meets
  simulated data" case;
* the held-out alerts with science and template swapped (a pipeline that
  mixes up its channels);
* the held-out alerts with the difference negated (a sign error).

Prints one line per run: PSI, KS and the verdict (``astrid.drift.compare``).

Run::

    python benchmarks/validate_drift.py [--held-out 150] [--seeds 3]
"""

from __future__ import annotations

import argparse
import glob
import warnings

import numpy as np
import xarray as xr

from astrid.alerts import read_alerts
from astrid.drift import compare
from astrid.paths import shared_data
from astrid.score import score
from astrid.triplets import SyntheticScene, detect, make_triplets, synthetic_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    folder = shared_data("ztf_alerts", "fink-broker", "all_distribute_topics")
    model = shared_data("braai", "d6_m7.h5")
    if folder is None or model is None:
        raise SystemExit("needs ../shared/data/ztf_alerts and ../shared/data/braai/d6_m7.h5")

    alerts = read_alerts(sorted(glob.glob(str(folder / "*.avro"))))
    alerts = alerts.isel(candidate=np.flatnonzero(alerts["drbversion"].values == "d6_m7"))
    held_out = alerts.isel(candidate=slice(0, args.held_out)).load()
    reference = alerts["drb"].values[args.held_out :]

    runs = {"held-out real alerts": held_out}
    parts = []
    for seed in range(args.seeds):
        result = synthetic_difference(
            (256, 256), SyntheticScene(n_stars=40, n_transients=30), seed=seed
        )
        candidates = detect(
            result, 5.0, reference_sources=False, galaxies=False, prefix=f"sim{seed}-"
        )
        parts.append(make_triplets(result, candidates))
    runs["simulated stamps"] = xr.concat(parts, dim="candidate")
    swapped = held_out.copy(deep=True)
    swapped["triplets"].values[:] = held_out["triplets"].values[..., [1, 0, 2]]
    runs["science/template swapped"] = swapped
    flipped = held_out.copy(deep=True)
    flipped["triplets"].values[..., 2] *= -1
    runs["difference negated"] = flipped

    print(f"reference: drb of {reference.size} real ZTF alerts (d6_m7)")
    for name, ds in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = compare(score(ds, model).values, reference, warn=False)
        print(
            f"{name:28s} n={result.n:4d}  PSI {result.psi:6.3f}  KS {result.ks:.3f} "
            f"(5% critical {result.ks_critical:.3f})  {'DRIFT' if result.drifted else 'no drift'}"
        )


if __name__ == "__main__":
    main()
