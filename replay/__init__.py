"""Reading decision logs, off-policy estimators and counterfactual replay."""

from __future__ import annotations

from replay._data import LoggedDecisions, TargetProbabilities
from replay.estimators import (
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    Diagnostics,
    DirectMethod,
    DoublyRobust,
    DRos,
    Estimate,
    Estimator,
    Interval,
    Intervals,
    ReplayMethod,
    SwitchDR,
)
from replay.readers import (
    ReadResult,
    read_log,
    to_dsjson,
    to_jsonl,
    to_obp,
    to_parquet,
    to_vw_text,
)
from replay.reward_models import (
    AutoRewardModel,
    BoostedTrees,
    HashedLogistic,
    HashedRidge,
    ModelQuality,
    RewardModel,
    RewardPredictions,
    make_reward_model,
)

__all__ = [  # noqa: RUF022 - plain sorted(), which tests/test_public_api.py checks
    "AutoRewardModel",
    "BoostedTrees",
    "ClippedIPS",
    "DRos",
    "Diagnostics",
    "DirectMethod",
    "DoublyRobust",
    "Estimate",
    "Estimator",
    "HashedLogistic",
    "HashedRidge",
    "IPS",
    "Interval",
    "Intervals",
    "LoggedDecisions",
    "ModelQuality",
    "ReadResult",
    "ReplayMethod",
    "RewardModel",
    "RewardPredictions",
    "SNDR",
    "SNIPS",
    "SwitchDR",
    "TargetProbabilities",
    "make_reward_model",
    "read_log",
    "to_dsjson",
    "to_jsonl",
    "to_obp",
    "to_parquet",
    "to_vw_text",
]
