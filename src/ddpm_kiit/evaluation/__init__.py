"""Sample-quality metrics and the feature networks they use."""

from .evaluate import evaluate_pipeline, format_report, real_floor, score_samples
from .features import DigitClassifier, InceptionFeatures, load_classifier
from .metrics import copy_fraction, edge_share, frechet_distance, kernel_inception_distance, precision_recall

__all__ = [
    "DigitClassifier",
    "InceptionFeatures",
    "copy_fraction",
    "edge_share",
    "evaluate_pipeline",
    "format_report",
    "frechet_distance",
    "kernel_inception_distance",
    "load_classifier",
    "precision_recall",
    "real_floor",
    "score_samples",
]
