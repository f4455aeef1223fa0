"""Throughput and memory of reading decision logs, the off-policy estimators and the reward model.

1. **Reading**: a DSJSON log (streambandit's own format, written with
   :func:`replay.to_dsjson`: 10 actions a row, a small context, a catalogue of items
   with features) read back with :func:`replay.read_log`, with and without features;
   rows/s and MB/s of CPU time, then the peak memory of a read (tracemalloc, in a second
   pass, because tracing slows Python down) against the arrays the result holds.
2. **Estimators**: on one simulated log (default: one million decisions, 10 actions,
   full logged distributions, a stochastic target, true reward means as the DR model)
   every estimator, once without the bootstrap and once with the default 200 resamples;
   rows/s and the peak memory the call allocated (tracemalloc sees NumPy's buffers).
3. **Reward model**: HashedRidge's cross-fitting on a smaller log with dictionary
   features (it featurises in Python, pair by pair).

Verdicts, each PASS or FAIL:

- the issue's target, IPS, SNIPS and DR with 200 resamples on the 1M rows x 10 actions
  in under a minute of CPU on one core;
- memory that does not grow with the log beyond the arrays it needs: every
  estimator's peak, less the bootstrap's bounded buffer (``24 * max(chunk_size, n)``
  bytes), is at most the size of its inputs (O(n) work arrays, never O(n x resamples));
  the bootstrap's share does not grow from a log a tenth the size; and a read's peak is
  at most twice what its result holds (the arrays, the action and event ids, and with
  features the contexts: what the estimators and targets need).

Run::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/replay.py             # 1M rows, one core
    .venv/bin/python bench/replay.py --rows 100000 --read-rows 20000 --ridge-rows 5000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

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
    read_log,
    to_dsjson,
)

T = TypeVar("T")
_MB = 2**20


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


def dsjson_log(n: int, k: int, seed: int = 0) -> LoggedDecisions:
    """A log shaped like the demo's: a context of a few namespaces, k of 50 items a row."""
    rng = np.random.default_rng(seed)
    catalogue = [
        {"item": {"topic": f"t{j % 8}", "length": round(float(rng.random()), 3)}} for j in range(50)
    ]
    offered = np.argsort(rng.random((n, 50)), axis=1)[:, :k]
    logged = rng.dirichlet(np.ones(k), size=n)
    chosen = np.minimum((logged.cumsum(axis=1) <= rng.random((n, 1))).sum(axis=1), k - 1)
    segments, devices = ["young", "family", "retired", "student"], ["mobile", "desktop"]
    return LoggedDecisions(
        n_actions=np.full(n, k),
        chosen=chosen,
        propensity=logged[np.arange(n), chosen],
        reward=(rng.random(n) < 0.3).astype(np.float64),
        probabilities=logged,
        action_ids=[[f"item-{j:02d}" for j in row] for row in offered.tolist()],
        contexts=[
            {
                "user": {"segment": segments[i % 4], "activity": round(float(a), 3)},
                "device": {"type": devices[i % 2]},
                "time": {"daypart": "evening", "weekend": float(i % 7 > 4)},
            }
            for i, a in enumerate(rng.random(n))
        ],
        action_features=[[catalogue[j] for j in row] for row in offered.tolist()],
        event_ids=[f"evt-{i}" for i in range(n)],
    )


def cpu(call: Callable[[], T]) -> tuple[T, float]:
    """The call's result and the CPU seconds it took (this process)."""
    start = time.process_time()
    result = call()
    return result, time.process_time() - start


def traced_peak(call: Callable[[], Any]) -> float:
    """Peak MB allocated while `call` runs (tracemalloc: Python objects and NumPy buffers)."""
    return traced(call)[1]


def traced(call: Callable[[], Any]) -> tuple[float, float]:
    """MB still held by `call`'s result when it returns, and the peak MB while it ran."""
    tracemalloc.start()
    try:
        result = call()
        held, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        tracemalloc.stop()
    return held / _MB, peak / _MB


def array_mb(logs: LoggedDecisions) -> float:
    """MB of the NumPy arrays a LoggedDecisions holds."""
    names = ("n_actions", "chosen", "propensity", "reward", "probabilities")
    return (
        sum(getattr(logs, name).nbytes for name in names if getattr(logs, name) is not None) / _MB
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def bench_reading(n: int, k: int) -> bool:
    """Print reading figures; return whether a read's memory stays near its arrays."""
    with tempfile.TemporaryDirectory(prefix="sb-bench-replay-") as folder:
        path = Path(folder) / "log.dsjson"
        _, seconds = cpu(lambda: to_dsjson(dsjson_log(n, k), path))
        size = path.stat().st_size / _MB
        print(f"DSJSON log: {n:,} rows x {k} actions, {size:,.0f} MB, written in {seconds:.1f} s")
        print(f"{'read_log':24} {'CPU':>8} {'rows/s':>10} {'MB/s':>7} {'1M rows':>8}")
        for features in (False, True):
            result, seconds = cpu(lambda f=features: read_log(path, features=f))
            assert result.rows_kept == n
            label = f"features={features}"
            print(
                f"{label:24} {seconds:6.2f} s {n / seconds:10,.0f} {size / seconds:7.1f} "
                f"{1e6 / (n / seconds):6.0f} s"
            )
        del result
        arrays = array_mb(read_log(path, features=False).logs)
        ok = True
        for features in (False, True):
            held, peak = traced(lambda f=features: read_log(path, features=f))
            ok = ok and peak <= 2 * held
            print(
                f"memory, features={features} (traced): the result holds {held:,.1f} MB "
                f"({held * _MB / n:,.0f} bytes/row; {arrays:,.1f} MB of it NumPy arrays, the "
                f"rest action ids, event ids{', contexts and features' if features else ''}), "
                f"peak {peak:,.1f} MB: {verdict(peak <= 2 * held)} (peak at most twice "
                "what the result holds)"
            )
        print()
    return ok


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
    parser.add_argument("--read-rows", type=int, default=200_000)
    parser.add_argument("--ridge-rows", type=int, default=20_000)
    args = parser.parse_args()

    print(
        f"{args.rows:,} rows x {args.actions} actions; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}\n"
    )
    wall = time.perf_counter()
    reading_ok = bench_reading(args.read_rows, args.actions)

    start = time.perf_counter()
    logs, target, rewards = simulate(args.rows, args.actions)
    uniform = simulate(args.rows, args.actions, uniform=True)
    print(f"simulated in {time.perf_counter() - start:.1f} s\n")
    inputs = array_mb(logs) + target.probabilities.nbytes / _MB + rewards.values.nbytes / _MB
    chunk = Intervals().chunk_size
    buffer = 24 * max(chunk, args.rows) / _MB  # the bootstrap's bound (Intervals' docs)

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
        f"{'peak MB':>8} {'work MB':>8} {'value':>8}"
    )
    print(header)
    print("-" * len(header))
    total = 0.0
    worst = 0.0
    for label, cls, kwargs in estimators:
        data = uniform if cls is ReplayMethod else (logs, target, rewards)
        plain, _, _ = measure(cls(**kwargs, intervals=Intervals(n_bootstrap=0)), *data)
        full, peak, value = measure(
            cls(**kwargs, intervals=Intervals(n_bootstrap=args.bootstrap)), *data
        )
        if label in ("IPS", "SNIPS", "DoublyRobust"):
            total += full
        work = max(peak - buffer, 0.0)
        worst = max(worst, work)
        print(
            f"{label:16} {plain:7.2f} s {args.rows / plain:10,.0f}/s "
            f"{full:7.2f} s {args.rows / full:10,.0f}/s {peak:8.0f} {work:8.0f} {value:8.4f}"
        )
    print("* on a uniformly logged copy of the log (the replay method refuses others)")
    print(
        f"work MB: the peak less the bootstrap's bounded buffer, 24 x max(chunk_size, n) "
        f"bytes = {buffer:.0f} MB; the inputs (logged and target probabilities, reward "
        f"predictions, the log's vectors) hold {inputs:.0f} MB"
    )

    small = args.rows // 10
    small_logs, small_target, small_rewards = simulate(small, args.actions)
    with_boot = Intervals(n_bootstrap=args.bootstrap)
    _, big_peak, _ = measure(IPS(intervals=with_boot), logs, target, rewards)
    _, big_plain, _ = measure(IPS(intervals=Intervals(n_bootstrap=0)), logs, target, rewards)
    _, small_peak, _ = measure(IPS(intervals=with_boot), small_logs, small_target, small_rewards)
    _, small_plain, _ = measure(
        IPS(intervals=Intervals(n_bootstrap=0)), small_logs, small_target, small_rewards
    )
    big_boot, small_boot = big_peak - big_plain, small_peak - small_plain
    print(
        f"IPS's bootstrap share of the peak: {small_boot:.0f} MB on {small:,} rows, "
        f"{big_boot:.0f} MB on {args.rows:,} rows (bound {buffer:.0f} MB)"
    )

    n = args.ridge_rows
    log = ridge_log(n, args.actions)
    _, seconds = cpu(lambda: HashedRidge().cross_fit(log))
    print(
        f"\nHashedRidge.cross_fit, {n:,} rows x {args.actions} actions (5 folds): "
        f"{seconds:.2f} CPU s, {n / seconds:,.0f} rows/s, {n * args.actions / seconds:,.0f} "
        f"pairs/s; {args.rows / (n / seconds):,.0f} s projected for {args.rows:,} rows"
    )

    fast = total < 60.0
    lean = worst <= inputs and big_boot <= buffer + 1 and reading_ok
    print(
        f"\nTarget: IPS + SNIPS + DR with {args.bootstrap} resamples on {args.rows:,} rows x "
        f"{args.actions} actions: {total:.1f} CPU s, under 60 s: {verdict(fast)}"
        + ("" if args.rows >= 1_000_000 else " (fewer rows than the target's million)")
    )
    print(
        f"Memory: largest estimator work {worst:.0f} MB <= inputs {inputs:.0f} MB, bootstrap "
        f"within {buffer:.0f} MB at both sizes, reads within twice their result: {verdict(lean)}"
    )
    print(f"wall time of the whole run: {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
