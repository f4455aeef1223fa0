"""Throughput and memory of reading decision logs, the off-policy estimators and the reward model.

Everything runs with one BLAS/OpenMP thread (threadpoolctl) and is timed in CPU seconds of
this process, so "one core" is honest and a busy machine does not inflate the figures.

1. **Reading**: a DSJSON log (streambandit's own format, written with
   :func:`replay.to_dsjson`: 10 actions a row, a small context, a catalogue of items
   with features) read back with :func:`replay.read_log`, with and without features;
   rows/s and MB/s of CPU time, then the peak memory of a read (tracemalloc, in a second
   pass, because tracing slows Python down) against the arrays the result holds.
2. **Estimators**: on one simulated log (default: one million decisions, 10 actions,
   full logged distributions, a stochastic target, true reward means as the DR model)
   every estimator, once without the bootstrap and once with the default 200 resamples;
   rows/s and the peak memory the call allocated (tracemalloc sees NumPy's buffers).
3. **End to end, with the reward model fitted for real**: a log shaped like the demo's
   (dictionary contexts, 10 of 50 catalogue items a row with their features, rewards
   that depend on context x item, a non-uniform logger) of the same size;
   :class:`replay.HashedRidge` cross-fitted on all of it (rows/s, CPU, then its peak
   memory in a traced pass, and again on a tenth of the rows), then IPS, SNIPS and DR
   (with that model) with the bootstrap, against the true value.

4. **From the file on disk** (the issue's end to end): the featured log written as DSJSON,
   then, each in a fresh process on one core, :func:`replay.read_log` + the reward model +
   IPS, SNIPS and DR with the bootstrap; CPU seconds of each step and the process's peak
   resident memory (VmHWM), without the cache, then with it (the first run writes it,
   the second reads it); beside them, in the same process, the same estimates written
   plainly with NumPy on the arrays already in memory. Then the same for a wide log
   (10,000 rows x 80 of 200 items, JSON lines). The reading section (1.) also times the
   plain baselines on the same file: an orjson loop over its lines, and pyarrow.json.

Verdicts, each PASS or FAIL:

- the issue's targets, from the file: read + reward model + IPS + SNIPS + DR with 200
  resamples on 1M rows x 10 actions in under a minute of CPU on one core and under 1 GB;
  a second run's read several (>= 3) times faster with the cache; the wide log under
  200 MB;
- memory that does not grow with the log beyond the arrays it needs: every
  estimator's peak, less the bootstrap's bounded buffer (``24 * max(chunk_size, n)``
  bytes), is at most the size of its inputs (O(n) work arrays, never O(n x resamples));
  the bootstrap's share does not grow from a log a tenth the size; a read's peak is at
  most twice what its result holds (the arrays, the action and event ids, and with
  features the contexts: what the estimators and targets need); and the reward model's
  peak, less the ``(n, K)`` predictions it returns, grows by at most 4 bytes a row
  from a log a tenth the size (its fold assignment takes one; the rest is a fixed
  budget of blocks and batches, and ``X'X``, which stops growing once every pair of
  buckets has been seen).

Run::

    .venv/bin/python bench/replay.py                                    # 1M rows, one core
    .venv/bin/python bench/replay.py --rows 100000 --read-rows 20000
    .venv/bin/python bench/replay.py --only-file                        # 4. alone
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import orjson
from threadpoolctl import threadpool_info, threadpool_limits

from replay import (
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    DirectMethod,
    DoublyRobust,
    DRos,
    Estimate,
    Estimator,
    HashedRidge,
    Intervals,
    LoggedDecisions,
    ReadResult,
    ReplayMethod,
    RewardPredictions,
    SwitchDR,
    TargetProbabilities,
    read_log,
    to_dsjson,
    to_jsonl,
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


def orjson_loop(path: Path) -> int:
    """The plain reading baseline: decode every line with orjson, keep nothing."""
    count = 0
    with path.open("rb") as file:
        for line in file:
            orjson.loads(line)
            count += 1
    return count


def pyarrow_json(path: Path) -> int:
    """The columnar reading baseline: pyarrow.json reads the whole file into a table."""
    import pyarrow.json

    return int(pyarrow.json.read_json(path).num_rows)


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
        cache = Path(folder) / "cache"
        runs: list[tuple[str, Callable[[], Any]]] = [
            ("features=False", lambda: read_log(path, features=False)),
            ("features=True", lambda: read_log(path)),
            ("cache: first (+write)", lambda: read_log(path, cache=True, cache_dir=cache)),
            ("cache: second (hit)", lambda: read_log(path, cache=True, cache_dir=cache)),
            ("baseline: orjson loop", partial(orjson_loop, path)),
            ("baseline: pyarrow.json", partial(pyarrow_json, path)),
        ]
        for label, call in runs:
            result, seconds = cpu(call)
            if isinstance(result, ReadResult):
                assert result.rows_kept == n
            print(
                f"{label:24} {seconds:6.2f} s {n / seconds:10,.0f} {size / seconds:7.1f} "
                f"{1e6 / (n / seconds):6.0f} s"
            )
        print(
            "baselines: decoding every line with orjson and keeping nothing; pyarrow.json "
            "reading the whole file into Arrow columns (no checks, no features as mappings)"
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
) -> tuple[float, float, Estimate]:
    """CPU seconds, peak MB allocated during the call, and the estimate.

    CPU time (this process, one BLAS thread) rather than wall time, so a busy machine
    does not inflate the figures; the wall time of the whole run is printed at the end.
    """
    tracemalloc.start()
    start = time.process_time()
    estimate = estimator.estimate(logs, target, rewards=rewards)
    seconds = time.process_time() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20, estimate


def featured_log(
    n: int, k: int, seed: int = 0
) -> tuple[LoggedDecisions, TargetProbabilities, float]:
    """A demo-shaped log whose rewards depend on context x item, a target, and its true value.

    Contexts have a segment, an activity level, a device and a daypart; each row offers k
    of 50 catalogue items (a topic of 8 and a length), sharing one features mapping per
    item as :func:`replay.read_log` does. An item pays with probability
    ``sigmoid(-1 + taste[segment, topic] + activity (length - 0.5) + 0.3 mobile)``; the
    logger is a noisy softmax of that logit, the target a sharper one.
    """
    rng = np.random.default_rng(seed)
    topic = np.arange(50) % 8
    length = rng.random(50).round(3)
    catalogue = [{"item": {"topic": f"t{topic[j]}", "length": float(length[j])}} for j in range(50)]
    names = [f"item-{j:02d}" for j in range(50)]
    offered = np.argsort(rng.random((n, 50)), axis=1)[:, :k]
    segment = rng.integers(0, 4, n)
    activity = rng.random(n).round(3)
    mobile = rng.random(n) < 0.5
    taste = rng.normal(0.0, 1.0, (4, 8))
    logit = (
        -1.0
        + taste[segment[:, None], topic[offered]]
        + activity[:, None] * (length[offered] - 0.5)
        + 0.3 * mobile[:, None]
    )
    mu = 1.0 / (1.0 + np.exp(-logit))
    logged = np.exp(0.5 * logit + rng.normal(0.0, 0.5, (n, k)))
    logged /= logged.sum(axis=1, keepdims=True)
    chosen = np.minimum((logged.cumsum(axis=1) <= rng.random((n, 1))).sum(axis=1), k - 1)
    rows = np.arange(n)
    segments, dayparts = ["young", "family", "retired", "student"], ["morning", "evening"]
    logs = LoggedDecisions(
        n_actions=np.full(n, k),
        chosen=chosen,
        propensity=logged[rows, chosen],
        reward=(rng.random(n) < mu[rows, chosen]).astype(np.float64),
        probabilities=logged,
        action_ids=[[names[j] for j in row] for row in offered.tolist()],
        contexts=[
            {
                "user": {"segment": segments[s], "activity": a},
                "device": {"type": "mobile" if m else "desktop"},
                "time": {"daypart": dayparts[i % 2]},
            }
            for i, (s, a, m) in enumerate(
                zip(segment.tolist(), activity.tolist(), mobile.tolist(), strict=True)
            )
        ],
        action_features=[[catalogue[j] for j in row] for row in offered.tolist()],
    )
    target = np.exp(3.0 * logit)
    target /= target.sum(axis=1, keepdims=True)
    return logs, TargetProbabilities(logs, target), float((target * mu).sum(axis=1).mean())


def bench_estimators(rows: int, actions: int, bootstrap: int) -> bool:
    """Print every estimator's figures; return whether their memory stays bounded."""
    start = time.perf_counter()
    logs, target, rewards = simulate(rows, actions)
    uniform = simulate(rows, actions, uniform=True)
    print(f"simulated in {time.perf_counter() - start:.1f} s\n")
    inputs = array_mb(logs) + target.probabilities.nbytes / _MB + rewards.values.nbytes / _MB
    chunk = Intervals().chunk_size
    buffer = 24 * max(chunk, rows) / _MB  # the bootstrap's bound (Intervals' docs)

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
        f"{'estimator':16} {'no bootstrap (CPU)':>22} {f'{bootstrap} resamples (CPU)':>24} "
        f"{'peak MB':>8} {'work MB':>8} {'value':>8}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for label, cls, kwargs in estimators:
        data = uniform if cls is ReplayMethod else (logs, target, rewards)
        plain, _, _ = measure(cls(**kwargs, intervals=Intervals(n_bootstrap=0)), *data)
        full, peak, estimate = measure(
            cls(**kwargs, intervals=Intervals(n_bootstrap=bootstrap)), *data
        )
        work = max(peak - buffer, 0.0)
        worst = max(worst, work)
        print(
            f"{label:16} {plain:7.2f} s {rows / plain:10,.0f}/s "
            f"{full:7.2f} s {rows / full:10,.0f}/s {peak:8.0f} {work:8.0f} {estimate.value:8.4f}"
        )
    print("* on a uniformly logged copy of the log (the replay method refuses others)")
    print(
        f"work MB: the peak less the bootstrap's bounded buffer, 24 x max(chunk_size, n) "
        f"bytes = {buffer:.0f} MB; the inputs (logged and target probabilities, reward "
        f"predictions, the log's vectors) hold {inputs:.0f} MB"
    )

    small = rows // 10
    small_logs, small_target, small_rewards = simulate(small, actions)
    with_boot = Intervals(n_bootstrap=bootstrap)
    _, big_peak, _ = measure(IPS(intervals=with_boot), logs, target, rewards)
    _, big_plain, _ = measure(IPS(intervals=Intervals(n_bootstrap=0)), logs, target, rewards)
    _, small_peak, _ = measure(IPS(intervals=with_boot), small_logs, small_target, small_rewards)
    _, small_plain, _ = measure(
        IPS(intervals=Intervals(n_bootstrap=0)), small_logs, small_target, small_rewards
    )
    big_boot, small_boot = big_peak - big_plain, small_peak - small_plain
    print(
        f"IPS's bootstrap share of the peak: {small_boot:.0f} MB on {small:,} rows, "
        f"{big_boot:.0f} MB on {rows:,} rows (bound {buffer:.0f} MB)"
    )
    lean = worst <= inputs and big_boot <= buffer + 1
    print(
        f"Estimator memory: largest work {worst:.0f} MB <= inputs {inputs:.0f} MB, bootstrap "
        f"within {buffer:.0f} MB at both sizes: {verdict(lean)}\n"
    )
    return lean


def model_memory(logs: LoggedDecisions) -> tuple[float, float]:
    """Peak MB of a traced cross-fit, and MB of the predictions it returns."""
    model = HashedRidge()
    tracemalloc.start()
    try:
        values = model.cross_fit(logs).values
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / _MB, values.nbytes / _MB


def bench_end_to_end(rows: int, actions: int, bootstrap: int) -> tuple[float, bool]:
    """Fit the reward model on a featured log and run IPS, SNIPS and DR with it.

    Returns the CPU seconds of model + IPS + SNIPS + DR and whether the model's memory
    beyond its predictions stays flat from a tenth of the log.
    """
    start = time.perf_counter()
    logs, target, truth = featured_log(rows, actions)
    print(
        f"featured log: {rows:,} rows x {actions} of 50 items, simulated in "
        f"{time.perf_counter() - start:.0f} s; true value of the target {truth:.4f}"
    )
    model = HashedRidge()
    rewards, seconds = cpu(partial(model.cross_fit, logs))
    at_chosen = rewards.at_chosen()
    rmse = float(np.sqrt(np.mean((at_chosen - logs.reward) ** 2)))
    print(
        f"HashedRidge().cross_fit (5 folds, 2^10 features, with interactions): "
        f"{seconds:.1f} CPU s, {rows / seconds:,.0f} rows/s, {rows * actions / seconds:,.0f} "
        f"pairs/s; cross-fitted RMSE on the logged rewards {rmse:.4f} (their mean's: "
        f"{logs.reward.std():.4f})"
    )
    total = seconds
    header = (
        f"{'estimator':16} {f'{bootstrap} resamples (CPU)':>24} {'peak MB':>8} {'value':>8} "
        f"{'error':>8} {'std err':>8}"
    )
    print(header)
    print("-" * len(header))
    for label, estimator in (
        ("IPS", IPS(intervals=Intervals(n_bootstrap=bootstrap))),
        ("SNIPS", SNIPS(intervals=Intervals(n_bootstrap=bootstrap))),
        ("DoublyRobust", DoublyRobust(intervals=Intervals(n_bootstrap=bootstrap))),
    ):
        full, peak, estimate = measure(estimator, logs, target, rewards)
        total += full
        print(
            f"{label:16} {full:7.2f} s {rows / full:10,.0f}/s {peak:8.0f} {estimate.value:8.4f} "
            f"{estimate.value - truth:+8.4f} {estimate.std_error:8.4f}"
        )
    print("error: the value less the true value; std err: the analytic standard error")
    del rewards, at_chosen

    peak, held = model_memory(logs)
    small = rows // 10
    del logs, target
    small_logs, _, _ = featured_log(small, actions, seed=1)
    small_peak, small_held = model_memory(small_logs)
    work, small_work = peak - held, small_peak - small_held
    growth = work - small_work
    allowed = 4 * (rows - small) / _MB
    lean = growth <= allowed
    print(
        f"HashedRidge memory (traced): peak {peak:,.0f} MB on {rows:,} rows, of which its "
        f"predictions {held:,.0f} MB, work {work:,.0f} MB; on {small:,} rows work "
        f"{small_work:,.0f} MB; growth {growth:,.1f} MB <= {allowed:,.1f} MB (4 bytes a row): "
        f"{verdict(lean)}"
    )
    return total, lean


def wide_log(n: int, k: int, seed: int = 0) -> tuple[LoggedDecisions, TargetProbabilities]:
    """A wide log: k of 200 catalogue items a row (each with features), a small context."""
    rng = np.random.default_rng(seed)
    catalogue = [
        {"item": {"topic": f"t{j % 8}", "length": round(float(rng.random()), 3)}}
        for j in range(200)
    ]
    offered = np.argsort(rng.random((n, 200)), axis=1)[:, :k]
    logged = rng.dirichlet(np.ones(k), size=n)
    chosen = np.minimum((logged.cumsum(axis=1) <= rng.random((n, 1))).sum(axis=1), k - 1)
    logs = LoggedDecisions(
        n_actions=np.full(n, k),
        chosen=chosen,
        propensity=logged[np.arange(n), chosen],
        reward=(rng.random(n) < 0.3).astype(np.float64),
        probabilities=logged,
        action_ids=[[f"item-{j:03d}" for j in row] for row in offered.tolist()],
        contexts=[
            {"user": {"segment": "abcd"[i % 4], "activity": round(float(a), 3)}}
            for i, a in enumerate(rng.random(n))
        ],
        action_features=[[catalogue[j] for j in row] for row in offered.tolist()],
        event_ids=[f"evt-{i}" for i in range(n)],
    )
    target = rng.dirichlet(np.ones(k), size=n)
    return logs, TargetProbabilities(logs, target)


def from_file(log: Path, target_path: Path, bootstrap: int, cache_dir: Path | None) -> None:
    """(In a child process) read the log, fit, estimate; print CPU seconds and peak RSS as JSON.

    Then the same estimates the plain NumPy way, on the arrays already in memory: what
    an experimenter would write (IPS, SNIPS, DR and percentile bootstrap intervals).
    """
    times: dict[str, float] = {}
    read, times["read"] = cpu(
        lambda: read_log(log, cache=cache_dir is not None, cache_dir=cache_dir)
    )
    logs = read.logs
    target = TargetProbabilities(logs, np.load(target_path))
    rewards, times["reward model"] = cpu(partial(HashedRidge().cross_fit, logs))
    values: dict[str, float] = {}
    for label, estimator in (
        ("IPS", IPS(intervals=Intervals(n_bootstrap=bootstrap))),
        ("SNIPS", SNIPS(intervals=Intervals(n_bootstrap=bootstrap))),
        ("DR", DoublyRobust(intervals=Intervals(n_bootstrap=bootstrap))),
    ):
        estimate, times[label] = cpu(partial(estimator.estimate, logs, target, rewards=rewards))
        values[label] = estimate.value
    total = sum(times.values())
    peak = peak_rss_mb()
    baseline, numpy_seconds = cpu(
        partial(numpy_estimates, logs, target.probabilities, rewards.values, bootstrap)
    )
    print(
        orjson.dumps(
            {
                "times": times,
                "total": total,
                "peak_mb": peak,
                "values": values,
                "numpy_seconds": numpy_seconds,
                "numpy_values": baseline,
            }
        ).decode()
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB: Linux's VmHWM, which starts afresh at exec.

    (``ru_maxrss`` would not do: Linux carries it over from the parent across exec.)
    """
    import resource

    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def numpy_estimates(
    logs: LoggedDecisions, target: np.ndarray, predicted: np.ndarray, bootstrap: int
) -> dict[str, float]:
    """IPS, SNIPS and DR with percentile bootstrap intervals, written plainly with NumPy."""
    rows = np.arange(logs.n)
    weight = target[rows, logs.chosen] / logs.propensity
    reward = logs.reward
    direct = (target * predicted).sum(axis=1)
    dr_terms = direct + weight * (reward - predicted[rows, logs.chosen])
    rng = np.random.default_rng(0)
    draws = np.empty((bootstrap, 3))
    for b in range(bootstrap):
        index = rng.integers(0, logs.n, logs.n)
        w, r = weight[index], reward[index]
        draws[b] = (w * r).mean(), (w * r).sum() / w.sum(), dr_terms[index].mean()
    low, high = np.percentile(draws, [2.5, 97.5], axis=0) if bootstrap else (draws, draws)
    del low, high  # computed as an experimenter would; only the time is compared
    return {
        "IPS": float((weight * reward).mean()),
        "SNIPS": float((weight * reward).sum() / weight.sum()),
        "DR": float(dr_terms.mean()),
    }


def child(log: Path, target: Path, bootstrap: int, cache: Path | None) -> dict[str, Any]:
    """Run :func:`from_file` in a fresh process (its own peak memory) and return its figures."""
    import subprocess

    command = [sys.executable, __file__, "--from-file", str(log), str(target), str(bootstrap)]
    if cache is not None:
        command.append(str(cache))
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    figures: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return figures


def bench_from_file(
    rows: int, actions: int, bootstrap: int, *, wide: bool = False
) -> list[dict[str, Any]]:
    """The issue's end to end: read the file, fit the model, IPS/SNIPS/DR with intervals.

    Each run is a fresh process on one core: without the cache, then with it (the first
    run writes it, the second reads it). Returns the three runs' figures.
    """
    with tempfile.TemporaryDirectory(prefix="sb-bench-file-") as folder:
        log = Path(folder) / ("log.jsonl" if wide else "log.dsjson")
        target_path = Path(folder) / "target.npy"
        if wide:
            logs, target = wide_log(rows, actions)
            to_jsonl(logs, log)
        else:
            logs, target, _ = featured_log(rows, actions)
            to_dsjson(logs, log)
        np.save(target_path, target.probabilities)
        del logs, target
        size = log.stat().st_size / _MB
        kind = "JSON lines" if wide else "DSJSON"
        print(
            f"from the file: {kind} {rows:,} rows x {actions} actions, {size:,.0f} MB; "
            f"read + HashedRidge + IPS/SNIPS/DR with {bootstrap} resamples, one process each"
        )
        header = (
            f"{'run':20} {'read':>7} {'model':>7} {'IPS':>6} {'SNIPS':>6} {'DR':>6} "
            f"{'total':>7} {'peak RSS':>9} {'NumPy IPS/SNIPS/DR':>19}"
        )
        print(header)
        print("-" * len(header))
        cache = Path(folder) / "cache"
        runs = []
        for label, where in (
            ("no cache", None),
            ("cache: first run", cache),
            ("cache: second run", cache),
        ):
            figures = child(log, target_path, bootstrap, where)
            runs.append(figures)
            t = figures["times"]
            print(
                f"{label:20} {t['read']:6.1f}s {t['reward model']:6.1f}s {t['IPS']:5.1f}s "
                f"{t['SNIPS']:5.1f}s {t['DR']:5.1f}s {figures['total']:6.1f}s "
                f"{figures['peak_mb']:7,.0f} MB {figures['numpy_seconds']:17.1f} s"
            )
        same = all(
            abs(figures["values"][k] - figures["numpy_values"][k]) < 1e-9
            for k in ("IPS", "SNIPS", "DR")
        )
        print(
            f"NumPy: the same IPS, SNIPS and DR (and {bootstrap} bootstrap resamples) on the "
            f"arrays already in memory, with the same reward predictions: equal values "
            f"{verdict(same)}\n"
        )
    return runs


def threads() -> str:
    pools = threadpool_info()
    return ", ".join(f"{pool['internal_api']} {pool['num_threads']}" for pool in pools) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--actions", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=Intervals().n_bootstrap)
    parser.add_argument("--read-rows", type=int, default=200_000)
    parser.add_argument("--wide-rows", type=int, default=10_000)
    parser.add_argument("--wide-actions", type=int, default=80)
    parser.add_argument(
        "--only-file",
        action="store_true",
        help="run only the end to end from the file (and the wide log)",
    )
    parser.add_argument("--from-file", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.from_file:  # the child process of bench_from_file
        log, target, bootstrap, *cache = args.from_file
        with threadpool_limits(limits=1):
            from_file(Path(log), Path(target), int(bootstrap), Path(cache[0]) if cache else None)
        return

    with threadpool_limits(limits=1):
        print(f"{args.rows:,} rows x {args.actions} actions; thread pools: {threads()}\n")
        wall = time.perf_counter()
        reading_ok = estimators_ok = model_ok = True
        total = math.nan
        if not args.only_file:
            reading_ok = bench_reading(args.read_rows, args.actions)
            estimators_ok = bench_estimators(args.rows, args.actions, args.bootstrap)
            total, model_ok = bench_end_to_end(args.rows, args.actions, args.bootstrap)
            print()
        plain, _, cached = bench_from_file(args.rows, args.actions, args.bootstrap)
        wide = bench_from_file(args.wide_rows, args.wide_actions, args.bootstrap, wide=True)[0]

    few = "" if args.rows >= 1_000_000 else " (fewer rows than the target's million)"
    print(
        f"\nTarget, from the file: read + reward model + IPS + SNIPS + DR with "
        f"{args.bootstrap} resamples on {args.rows:,} rows x {args.actions} actions: "
        f"{plain['total']:.1f} CPU s, under 60 s: {verdict(plain['total'] < 60.0)}; peak RSS "
        f"{plain['peak_mb']:,.0f} MB, under 1 GB: {verdict(plain['peak_mb'] < 1024)}{few}"
    )
    speedup = plain["times"]["read"] / cached["times"]["read"]
    print(
        f"Target, the cache: a second run reads in {cached['times']['read']:.1f} s instead "
        f"of {plain['times']['read']:.1f} s ({speedup:.1f}x), the run takes "
        f"{cached['total']:.1f} s: several times faster reading: {verdict(speedup >= 3)}"
    )
    print(
        f"Target, wide: {args.wide_rows:,} rows x {args.wide_actions} actions from JSON lines, "
        f"peak RSS {wide['peak_mb']:,.0f} MB, under 200 MB: {verdict(wide['peak_mb'] < 200)}"
    )
    if not args.only_file:
        print(
            f"In memory (no reading): reward model + IPS + SNIPS + DR with {args.bootstrap} "
            f"resamples on {args.rows:,} rows x {args.actions} actions: {total:.1f} CPU s{few}"
        )
    print(
        f"Memory: estimators within their inputs and bootstrap bound, reads within twice "
        f"their result, reward model flat beyond its predictions: "
        f"{verdict(estimators_ok and reading_ok and model_ok)}"
    )
    print(f"wall time of the whole run: {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
