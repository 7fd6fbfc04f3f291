"""braai: ZTF's real/bogus CNN for image triplets (Duev et al. 2019), in Keras 3.

- :func:`vgg6`, :func:`three_block`, :func:`build_model`: the architectures;
- :func:`preprocess`: braai's exact input preparation (NaN → 0, per-stamp L2
  normalisation, 1e-9 padding); :func:`no_data`: candidates whose stamps hold
  no usable data (scored NaN by :func:`astrid.score.score`);
- :func:`load_braai`: ZTF's published Keras 2 models (``d6_m7``, the model
  behind the alerts' ``drb`` score, and ``braai_d6_m9``);
- :func:`predict`: scores for a triplet dataset or array;
- :func:`train` with a :class:`TrainConfig`: training with a model card
  (:func:`card_path` says where it lies beside the ``.keras`` file).

TensorFlow/Keras is imported only when a model is built or loaded.
"""

from ._active import (
    FINE_TUNE_CONFIG,
    HUMAN_COORDS,
    STRATEGIES,
    apply_labels,
    fine_tune,
    label_conflicts,
    labels_hash,
    mc_dropout_scores,
    query,
    training_labels,
)
from ._calibrate import CALIBRATION_METHODS, Calibration, fit_calibration
from ._evaluate import (
    binary_curves,
    calibration_curve,
    evaluate,
    plot_calibration,
    plot_roc_pr,
    plot_score_histograms,
    plot_triplet_gallery,
    threshold_for_fnr,
)
from ._load import DEFAULT_NORM, load_braai, norm_for_model, predict
from ._models import MODELS, build_model, three_block, vgg6
from ._preprocess import NORMS, PAD_VALUE, mean_over_symmetries, no_data, preprocess
from ._retrospective import RetrospectiveResult, retrospective, target_mask
from ._train import (
    SPLITS,
    TrainConfig,
    TrainResult,
    card_path,
    class_weights,
    dataset_hash,
    load_trained,
    split_groups,
    train,
)

__all__ = [
    "vgg6",
    "three_block",
    "build_model",
    "MODELS",
    "preprocess",
    "mean_over_symmetries",
    "no_data",
    "NORMS",
    "PAD_VALUE",
    "load_braai",
    "predict",
    "norm_for_model",
    "DEFAULT_NORM",
    "train",
    "TrainConfig",
    "TrainResult",
    "card_path",
    "load_trained",
    "split_groups",
    "class_weights",
    "dataset_hash",
    "SPLITS",
    "evaluate",
    "threshold_for_fnr",
    "binary_curves",
    "calibration_curve",
    "plot_roc_pr",
    "plot_score_histograms",
    "plot_calibration",
    "plot_triplet_gallery",
    "fit_calibration",
    "Calibration",
    "CALIBRATION_METHODS",
    "apply_labels",
    "training_labels",
    "label_conflicts",
    "labels_hash",
    "query",
    "STRATEGIES",
    "mc_dropout_scores",
    "fine_tune",
    "FINE_TUNE_CONFIG",
    "HUMAN_COORDS",
    "retrospective",
    "RetrospectiveResult",
    "target_mask",
]
