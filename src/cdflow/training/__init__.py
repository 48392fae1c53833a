"""Training: the LightningModule, its default networks, loggers, figure callbacks and solver statistics."""

from cdflow.training.module import ContinuousDepthClassifier
from cdflow.training.networks import EncodeFlowHead, build_classifier
from cdflow.training.stats import solve_stats

__all__ = ["ContinuousDepthClassifier", "EncodeFlowHead", "build_classifier", "solve_stats"]
