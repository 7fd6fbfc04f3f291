"""Notebook widgets: :class:`TripletInspector` to look at and label candidates.

Example::

    from astrid.widgets import TripletInspector
    inspector = TripletInspector(ds, scores=scores, labels_path="labels/field01.jsonl")
    inspector.uncertain_first()
    inspector              # shows the widget; click Real / Bogus / Skip
    inspector.export_labels("labels/field01.ecsv")
"""

from ._inspector import KEYS, TripletInspector
from ._labels import LABELS, LabelRecord, LabelStore, default_labeller, model_id
from ._render import (
    NO_DATA_RGBA,
    difference_limit,
    stamp_to_rgba,
    triplet_pngs,
    triplet_strip_png,
    zscale_limits,
)

__all__ = [
    "TripletInspector",
    "LabelStore",
    "LabelRecord",
    "LABELS",
    "model_id",
    "default_labeller",
    "KEYS",
    "stamp_to_rgba",
    "triplet_pngs",
    "triplet_strip_png",
    "zscale_limits",
    "difference_limit",
    "NO_DATA_RGBA",
]
