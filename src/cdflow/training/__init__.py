"""Training: the LightningModule, its default networks, loggers, figure callbacks and solver statistics.

The ``cdflow`` command (:mod:`cdflow.cli`) wires these together; figure callbacks live in
:mod:`cdflow.training.callbacks` (imported on demand: they load matplotlib).
"""

from cdflow.training.loggers import make_logger, wandb_mode
from cdflow.training.member_early_stopping import MemberEarlyStopping
from cdflow.training.member_fit import MemberFit, MemberTraining, fit_members, fit_node_members
from cdflow.training.member_stopping import MemberStopping, StoppingRule, member_views
from cdflow.training.module import ContinuousDepthClassifier
from cdflow.training.networks import EncodeFlowHead, build_classifier
from cdflow.training.stats import diffusion_products, solve_stats
from cdflow.training.wandb_offline import OfflineRun, read_offline_run

__all__ = [
    "ContinuousDepthClassifier", "EncodeFlowHead", "MemberEarlyStopping", "MemberFit", "MemberStopping",
    "MemberTraining", "OfflineRun", "StoppingRule", "build_classifier", "diffusion_products", "fit_members",
    "fit_node_members", "make_logger", "member_views", "read_offline_run", "solve_stats", "wandb_mode",
]
