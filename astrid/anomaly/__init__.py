"""Anomaly maps and anomaly baselines, and one metrics table per dataset across methods.

- :mod:`astrid.anomaly.unet`: a compact Keras U-Net over (science,
  reference, S_corr) planes of a difference result that outputs a per-pixel
  transient probability; training on simulated truth with a model card,
  tiled batched inference over whole images, map → candidate regions;
- :mod:`astrid.anomaly.baselines`: scikit-learn Isolation Forest and
  One-Class SVM on the candidate features of :func:`astrid.triplets.detect`;
- :mod:`astrid.anomaly.types`: transient type (supernova, variable,
  asteroid, bogus) from triplets, with Monte-Carlo-dropout uncertainty;
- :func:`evaluate_methods`: precision, recall, localisation IoU, false
  alarms and seconds per image of several methods on held-out fields, the
  threshold of each chosen on validation fields only.

TensorFlow is imported only when a U-Net is built, trained, loaded or run,
and scikit-learn only when a baseline is fitted.
"""

from importlib import import_module

_LAZY = {
    # unet (TensorFlow only inside the functions that need it)
    "build_unet": ".unet",
    "train_unet": ".unet",
    "UNetTrainResult": ".unet",
    "UNetTrainingOptions": ".unet",
    "load_unet": ".unet",
    "unet_inputs": ".unet",
    "anomaly_map": ".unet",
    "result_anomaly_map": ".unet",
    "map_regions": ".unet",
    "plot_anomaly_map": ".unet",
    "transient_mask": ".unet",
    "sample_tiles": ".unet",
    # baselines
    "FEATURES": ".baselines",
    "FeatureAnomalyModel": ".baselines",
    "IsolationForestBaseline": ".baselines",
    "OneClassSVMBaseline": ".baselines",
    "feature_matrix": ".baselines",
    # transient types
    "CLASSES": ".types",
    "type_labels": ".types",
    "build_type_model": ".types",
    "train_types": ".types",
    "TypesTrainingOptions": ".types",
    "predict_types": ".types",
    "type_report": ".types",
    "plot_confusion": ".types",
    # metrics
    "Field": "._metrics",
    "evaluate_methods": "._metrics",
    "MatchOptions": "._metrics",
    "match_predictions": "._metrics",
    "summarise_matches": "._metrics",
    "choose_threshold": "._metrics",
    "choose_region_level": "._metrics",
    "recall_lower_bound": "._metrics",
    "disc_iou": "._metrics",
    "zogy_threshold_method": "._metrics",
    "classic_threshold_method": "._metrics",
    "unet_method": "._metrics",
    "baseline_method": "._metrics",
    "braai_method": "._metrics",
    "plot_methods": "._metrics",
}

__all__ = [*_LAZY, "unet", "baselines", "types"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    if name in ("unet", "baselines", "types"):
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'astrid.anomaly' has no attribute {name!r}")
