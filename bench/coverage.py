"""Coverage and width of the replay intervals on simulated logs whose true value is known.

A log of ``n`` decisions: each context is one of three kinds, the logger gives the
target's action probability 0.1, 0.25 or 0.5 by kind (four actions, the rest spread
evenly), clicks are Bernoulli with the target's action earning 0.05, 0.1 or 0.15 by kind
(true value 0.1), and the target always takes that action. The weights' effective sample
size is about ``n / E[1/p] = 3n / 16``, so ``n`` is set for an ESS of about 5, 50 and
5,000. Each cell repeats the simulation (default 200 times) and reports, per estimator
(IPS, SNIPS, DR with a reward model that is 0.1 too high everywhere) and interval (normal
or delta, percentile bootstrap, empirical Bernstein, betting), the share of intervals
that hold the true value, their mean width and the share that leave ``[0, 1]`` before
any clipping is shown (the normal interval is clipped and says so). A cell with no
interval (e.g. the normal one at n < 2) counts as not covering.

Run::

    .venv/bin/python bench/coverage.py              # 200 repetitions: minutes (the bootstrap)
    .venv/bin/python bench/coverage.py --reps 50 --bootstrap 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from replay import (
    IPS,
    SNIPS,
    DoublyRobust,
    Estimator,
    Intervals,
)

# the simulation the coverage tests run (one home: tests/replay/test_bounds.py)
from tests.replay.test_bounds import PROPENSITY, TRUTH, simulate

ESS_PER_ROW = 1.0 / float(np.mean(1.0 / PROPENSITY))


def rows_for(ess: float) -> int:
    """Rows for an effective sample size of about `ess`."""
    return max(2, round(ess / ESS_PER_ROW))


KINDS = ("normal", "bootstrap", "bernstein", "betting")


def run(reps: int, n_bootstrap: int, levels: tuple[float, ...], seed: int) -> None:
    """Print the coverage table."""
    kinds = KINDS if n_bootstrap else tuple(k for k in KINDS if k != "bootstrap")
    intervals = Intervals(n_bootstrap=n_bootstrap, reward_range=(0.0, 1.0), kinds=kinds)
    estimators: dict[str, Estimator] = {
        "ips": IPS(intervals=intervals),
        "snips": SNIPS(intervals=intervals),
        "dr": DoublyRobust(intervals=intervals),
    }
    level = intervals.level
    print(f"true value {TRUTH:.3f}; {reps} repetitions a cell; nominal level {level:.0%}")
    print(f"{'estimator':<10}{'interval':<11}", end="")
    for ess in levels:
        print(f"{'ESS ' + format(ess, ',.0f') + ': cover  width  left':>35}", end="")
    print()
    results: dict[tuple[str, str, float], list[tuple[bool, float, bool]]] = {}
    realised: dict[float, list[float]] = {ess: [] for ess in levels}
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for ess in levels:
        n = rows_for(ess)
        for rep in range(reps):
            logs, target, model = simulate(n, rng)
            for name, estimator in estimators.items():
                estimate = estimator.estimate(
                    logs, target, rewards=model, rng=np.random.default_rng(rep)
                )
                if name == "ips":
                    realised[ess].append(estimate.diagnostics.ess)
                for kind, interval in (
                    ("normal", estimate.ci),
                    ("bootstrap", estimate.bootstrap_ci),
                    ("bernstein", estimate.bernstein_ci),
                    ("betting", estimate.betting_ci),
                ):
                    if kind not in kinds:
                        continue
                    cell = results.setdefault((name, kind, ess), [])
                    if interval is None:
                        cell.append((False, float("nan"), False))
                        continue
                    strayed = interval.clipped or interval.low < 0.0 or interval.high > 1.0
                    cell.append((TRUTH in interval, interval.high - interval.low, strayed))
    for name in estimators:
        for kind in kinds:
            print(f"{name:<10}{kind:<11}", end="")
            for ess in levels:
                cell = results[name, kind, ess]
                cover = np.mean([c for c, _, _ in cell])
                width = np.nanmean([w for _, w, _ in cell])
                left = np.mean([s for _, _, s in cell])
                print(f"{'':>14}{cover:>7.3f}{width:>7.3f}{left:>7.2f}", end="")
            print()
    mean_ess = ", ".join(f"{np.mean(realised[e]):,.1f}" for e in levels)
    print(f"rows per log: {', '.join(f'{rows_for(e):,}' for e in levels)}; mean ESS {mean_ess}")
    print("'left': share of intervals that left [0, 1] (the normal one is then clipped)")
    print(f"{time.perf_counter() - started:.1f} s")


def main() -> None:
    """Parse the options and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="simulations a cell")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.reps, args.bootstrap, (5.0, 50.0, 5000.0), args.seed)


if __name__ == "__main__":
    main()
