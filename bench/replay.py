"""Throughput and memory of the off-policy estimators and the reward model.

On one simulated log (default: one million decisions, 10 actions, full logged
distributions, a stochastic target, true reward means as the DR model) it times every
estimator, once without the bootstrap and once with the default 200 resamples, and
reports rows/s and the peak memory the call allocated (tracemalloc sees NumPy's
buffers). The issue's target: IPS, SNIPS and DR on 1M rows x 10 actions in under a
minute on one core. A second table times HashedRidge's cross-fitting on a smaller log
with dictionary features (it featurises in Python, pair by pair).

Run::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/replay.py             # 1M rows, one core
    .venv/bin/python bench/replay.py --rows 100000 --ridge-rows 5000     # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from replay import (
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    DRos,
    Estimator,
    HashedRidge,
    Intervals,
    LoggedDecisions,
    ReplayMethod,
    RewardPredictions,
    SwitchDR,
    TargetProbabilities,
)


def simulate(
    n: int, k: int, *, uniform: bool = False, seed: int = 0
) -> tuple[LoggedDecisions, TargetProbabilities, RewardPredictions]:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, k))
    if uniform:
        logged = np.full((n, k), 1.0 / k)
    else:
        logged = np.exp(scores)
        logged /= logged.sum(axis=1, keepdims=True)
    chosen = np.minimum((logged.cumsum(axis=1) <= rng.random((n, 1))).sum(axis=1), k - 1)
    rows = np.arange(n)
    mu = 1.0 / (1.0 + np.exp(-scores))
    logs = LoggedDecisions(
        n_actions=np.full(n, k),
        chosen=chosen,
        propensity=logged[rows, chosen],
        reward=(rng.random(n) < mu[rows, chosen]).astype(np.float64),
        probabilities=logged,
    )
    target = np.exp(2.0 * scores)
    target /= target.sum(axis=1, keepdims=True)
    return logs, TargetProbabilities(logs, target), RewardPredictions(logs, mu)


def measure(
    estimator: Estimator,
    logs: LoggedDecisions,
    target: TargetProbabilities,
    rewards: RewardPredictions,
) -> tuple[float, float, float]:
    """CPU seconds, peak MB allocated during the call, and the value.

    CPU time (this process, one BLAS thread) rather than wall time, so a busy machine
    does not inflate the figures; the wall time of the whole run is printed at the end.
    """
    tracemalloc.start()
    start = time.process_time()
    estimate = estimator.estimate(logs, target, rewards=rewards)
    seconds = time.process_time() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20, estimate.value


def ridge_log(n: int, k: int, seed: int = 0) -> LoggedDecisions:
    rng = np.random.default_rng(seed)
    taste = rng.random((n, k))
    chosen = rng.integers(0, k, n)
    ids = [f"a{j}" for j in range(k)]
    return LoggedDecisions(
        n_actions=np.full(n, k),
        chosen=chosen,
        propensity=np.full(n, 1.0 / k),
        reward=(rng.random(n) < 0.2 + 0.6 * taste[np.arange(n), chosen]).astype(np.float64),
        action_ids=[ids] * n,
        contexts=[
            {"user": {"age": float(t[0]), "tier": "gold" if t[1] > 0.5 else "basic"}} for t in taste
        ],
        action_features=[[{"item": {"topic": f"t{j % 4}", "len": j / k}} for j in range(k)]] * n,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--actions", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=Intervals().n_bootstrap)
    parser.add_argument("--ridge-rows", type=int, default=20_000)
    args = parser.parse_args()

    print(
        f"{args.rows:,} rows x {args.actions} actions; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    )
    wall = time.perf_counter()
    start = time.perf_counter()
    logs, target, rewards = simulate(args.rows, args.actions)
    uniform = simulate(args.rows, args.actions, uniform=True)
    print(f"simulated in {time.perf_counter() - start:.1f} s\n")

    estimators: list[tuple[str, type, dict[str, object]]] = [
        ("DirectMethod", DirectMethod, {}),
        ("IPS", IPS, {}),
        ("ClippedIPS(10)", ClippedIPS, {"max_weight": 10.0}),
        ("SNIPS", SNIPS, {}),
        ("DoublyRobust", DoublyRobust, {}),
        ("SNDR", SNDR, {}),
        ("SwitchDR(5)", SwitchDR, {"tau": 5.0}),
        ("DRos(1)", DRos, {"lambda_": 1.0}),
        ("ReplayMethod*", ReplayMethod, {}),
    ]
    header = (
        f"{'estimator':16} {'no bootstrap (CPU)':>22} {f'{args.bootstrap} resamples (CPU)':>24} "
        f"{'peak MB':>8} {'value':>8}"
    )
    print(header)
    print("-" * len(header))
    total = 0.0
    for label, cls, kwargs in estimators:
        data = uniform if cls is ReplayMethod else (logs, target, rewards)
        plain, _, _ = measure(cls(**kwargs, intervals=Intervals(n_bootstrap=0)), *data)
        full, peak, value = measure(
            cls(**kwargs, intervals=Intervals(n_bootstrap=args.bootstrap)), *data
        )
        if label in ("IPS", "SNIPS", "DoublyRobust"):
            total += full
        print(
            f"{label:16} {plain:7.2f} s {args.rows / plain:10,.0f}/s "
            f"{full:7.2f} s {args.rows / full:10,.0f}/s {peak:8.0f} {value:8.4f}"
        )
    print("* on a uniformly logged copy of the log (the replay method refuses others)")
    print(f"\nIPS + SNIPS + DR with {args.bootstrap} resamples: {total:.1f} CPU s (target < 60 s)")

    n = args.ridge_rows
    log = ridge_log(n, args.actions)
    start = time.process_time()
    HashedRidge().cross_fit(log)
    seconds = time.process_time() - start
    print(
        f"\nHashedRidge.cross_fit, {n:,} rows x {args.actions} actions (5 folds): "
        f"{seconds:.2f} CPU s, {n / seconds:,.0f} rows/s, {n * args.actions / seconds:,.0f} pairs/s"
    )
    print(f"wall time of the whole run: {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
