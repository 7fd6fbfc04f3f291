"""Candidates and triplets: from a difference image to labelled training data.

The step between :func:`astrid.difference` and the real/bogus classifier::

    result = astrid.difference(reference, science)
    candidates = detect(result, threshold=5)              # peaks of S_corr + features
    labelled = label_candidates(candidates, truth)         # real / bogus from the truth
    ds = make_triplets(result, labelled, field="f01")      # 63x63 science/reference/difference
    write_triplets(ds, "triplets.zarr", mode="a")          # Zarr (append) or netCDF
    ds = load_triplets("triplets.zarr")                    # lazy (Dask)

:func:`build_training_set` does all of it over many pairs with class
balancing; :func:`synthetic_difference` makes a small difference result with
known sources for tests and benchmarks; :func:`split_by_field` / :func:`split_by_time` split without
leaking a field; :func:`image_metrics` scores detection per image.
Triplets follow one shared schema (:func:`validate_triplets`,
:func:`new_triplet_dataset`, :data:`CHANNELS`, :data:`STAMP_SIZE`), the same as
ZTF alert cutouts read by :mod:`astrid.alerts`.
"""

from ..schema import CHANNELS, STAMP_SIZE, new_triplet_dataset, validate_triplets
from ._detect import CANDIDATE_COLUMNS, DetectOptions, detect, measure_positions
from ._label import ARTIFACT_KINDS, REAL_KINDS, label_candidates, relabel
from ._metrics import MetricsOptions, circle_iou, image_metrics
from ._sources import reference_catalog
from ._stamps import coords_to_table, make_triplets
from ._store import COMMIT_ATTR, load_triplets, write_triplets
from ._synthetic import (
    SyntheticDifference,
    SyntheticScene,
    add_gaussian,
    synthetic_difference,
)
from ._training import (
    ExampleOptions,
    balance_classes,
    build_training_set,
    concat_triplets,
    random_positions,
    split_by_field,
    split_by_survey,
    split_by_time,
)

__all__ = [
    "detect",
    "DetectOptions",
    "measure_positions",
    "reference_catalog",
    "label_candidates",
    "relabel",
    "make_triplets",
    "coords_to_table",
    "write_triplets",
    "load_triplets",
    "build_training_set",
    "ExampleOptions",
    "balance_classes",
    "concat_triplets",
    "random_positions",
    "split_by_field",
    "split_by_time",
    "split_by_survey",
    "image_metrics",
    "MetricsOptions",
    "circle_iou",
    "synthetic_difference",
    "SyntheticScene",
    "SyntheticDifference",
    "add_gaussian",
    "CANDIDATE_COLUMNS",
    "CHANNELS",
    "STAMP_SIZE",
    "COMMIT_ATTR",
    "new_triplet_dataset",
    "validate_triplets",
    "REAL_KINDS",
    "ARTIFACT_KINDS",
]
