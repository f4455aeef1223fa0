"""Hot-path throughput of every registered policy, beside raw Vowpal Wabbit.

For each policy from :func:`policies.available` this measures, on one fixed set of
examples (10 actions, about 20 features per (context, action) pair):

- decisions/s: ``policy.pmf`` plus :func:`policies.decide_ranking`, i.e. everything the
  API does per decision (validation, VW text, prediction, floor, seeded draw, ranking);
- learns/s: ``policy.learn``.

For every VW policy the same run also times raw VW on the same examples, given to it as
ready-made text lines rendered before timing, with the command line the policy builds
for itself, so both sides are the same model, fed the same calls in the same order (the
script checks that they end with the same predictions):

- raw VW: ``pyvw.Workspace.predict`` / ``.learn`` on the list of text lines. The target
  is a VW policy at >= 0.5 of this, for decisions and for learns.
- native VW (second table, for reference): the same text through VW's native binding,
  without pyvw's Python ``Example`` wrappers; the fastest text can go in this process.

Every rate is per CPU-second of this process (``time.process_time``), not per second of
wall clock: on a shared machine, time the process spends waiting for a core would
otherwise land on whichever side was running, and move the ratios from run to run.

Run::

    .venv/bin/python bench/policies.py            # every policy, 2000 examples, best of 5
    .venv/bin/python bench/policies.py --quick    # a quick look
    .venv/bin/python bench/policies.py --policies vw-squarecb vw-epsilon --rounds 5000
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import vowpalwabbit
from rich.console import Console
from rich.table import Table
from vowpalwabbit import pyvw

from policies import Action, Context, Policy, available, decide_ranking, make_policy
from policies.vw import VWPolicy, reward_to_cost, to_vw_lines

TARGET = 0.5
"""A VW policy must reach this share of raw VW's throughput, for decisions and learns."""

N_ACTIONS = 10
TOPICS = ("sports", "politics", "tech", "music", "food", "travel", "health", "finance")


# -- the examples ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    """One decision with its logged outcome, and VW's text for both uses."""

    event_id: str
    context: Context
    actions: list[Action]
    chosen: int
    reward: float
    probability: float
    predict_lines: list[str]
    learn_lines: list[str]
    predict_text: str
    learn_text: str


def _context(rng: random.Random) -> Context:
    """14 shared features in 4 namespaces: 7 numeric, 7 categorical."""
    return {
        "user": {
            "age": rng.random(),
            "tier": rng.choice(("free", "plus", "gold")),
            "country": rng.choice(("de", "fr", "us", "jp", "br")),
            "visits": rng.randint(1, 40),
        },
        "session": {
            "device": rng.choice(("mobile", "desktop", "tablet")),
            "hour": rng.randint(0, 23) / 23,
            "referrer": rng.choice(("search", "social", "direct", "mail")),
            "depth": rng.randint(1, 12),
        },
        "page": {
            "section": rng.choice(TOPICS),
            "scroll": round(rng.random(), 3),
            "dwell": rng.random() * 30,
        },
        "time": {
            "daypart": rng.choice(("morning", "noon", "evening", "night")),
            "weekend": rng.choice((0, 1)),
            "season": rng.choice(("winter", "spring", "summer", "autumn")),
        },
    }


def _actions(rng: random.Random) -> list[Action]:
    """10 actions, each with 6 features in 2 namespaces: 3 numeric, 3 categorical."""
    return [
        Action(
            f"article-{rng.randrange(500)}-{j}",
            {
                "item": {
                    "topic": rng.choice(TOPICS),
                    "length": round(rng.random(), 3),
                    "age_days": rng.randint(0, 30) / 30,
                    "popularity": rng.random(),
                },
                "meta": {
                    "author": f"author{rng.randrange(40)}",
                    "format": rng.choice(("text", "video", "gallery")),
                },
            },
        )
        for j in range(N_ACTIONS)
    ]


def make_examples(n: int, seed: int) -> list[Example]:
    """Build `n` fixed decisions; the rewarded action matches the page's section."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        context = _context(rng)
        actions = _actions(rng)
        chosen = rng.randrange(N_ACTIONS)
        section = context["page"]["section"]
        reward = 1.0 if actions[chosen].features["item"]["topic"] == section else 0.0
        probability = 1.0 / N_ACTIONS
        predict_lines = to_vw_lines(context, actions)
        learn_lines = to_vw_lines(context, actions, (chosen, reward_to_cost(reward), probability))
        examples.append(
            Example(
                event_id=f"evt-{seed}-{i}",
                context=context,
                actions=actions,
                chosen=chosen,
                reward=reward,
                probability=probability,
                predict_lines=predict_lines,
                learn_lines=learn_lines,
                predict_text="\n".join(predict_lines),
                learn_text="\n".join(learn_lines),
            )
        )
    return examples


def features_per_pair(example: Example) -> float:
    """Mean number of features VW reads per (context, action) pair, before interactions."""
    shared = sum(len(v) for v in example.context.values())
    own = [sum(len(v) for v in a.features.values()) + 1 for a in example.actions]  # +1: id
    return shared + sum(own) / len(own)


# -- timing ------------------------------------------------------------------------------


def timed(run: Callable[[], int]) -> float:
    """Items per CPU-second of one call of `run`, which returns how many items it did."""
    gc.collect()
    start = time.process_time()
    done = run()
    return done / (time.process_time() - start)


def budgeted(step: Callable[[Example], object], examples: Sequence[Example], budget: float):
    """A run of `step` over `examples` that stops after `budget` seconds (checked every 32)."""

    def run() -> int:
        start = time.perf_counter()
        done = 0
        for begin in range(0, len(examples), 32):
            for example in examples[begin : begin + 32]:
                step(example)
            done = min(begin + 32, len(examples))
            if time.perf_counter() - start > budget:
                break
        return done

    return run


def max_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


@dataclass
class Row:
    """Figures for one policy; the raw and native ones only for VW policies."""

    name: str
    decisions: float = math.nan
    learns: float = math.nan
    raw_predict: float = math.nan
    raw_learn: float = math.nan
    native_predict: float = math.nan
    native_learn: float = math.nan
    warmed: int = 0
    same_model: bool | None = None
    rss: float = math.nan
    error: str = ""

    @property
    def is_vw(self) -> bool:
        return not math.isnan(self.raw_predict)

    @property
    def passed(self) -> bool:
        return (
            self.decisions / self.raw_predict >= TARGET
            and self.learns / self.raw_learn >= TARGET
            and bool(self.same_model)
        )


def bench_vw(name: str, policy: VWPolicy, examples: list[Example], args: Any) -> Row:
    """Time the policy, raw pyvw and native VW in lockstep: same model, same calls."""
    arguments = policy._arguments()
    raw = pyvw.Workspace(arguments, enable_logging=False)
    native = pyvw.Workspace(arguments, enable_logging=False)

    def policy_learn(example: Example) -> None:
        policy.learn(
            example.context, example.actions, example.chosen, example.reward, example.probability
        )

    def native_predict_one(text: str) -> list[float]:
        parsed = native._parse(text)
        native.predict_multi(parsed)
        scores: list[float] = parsed[0].get_action_scores()
        native._finish_example_multi_ex(parsed)
        return scores

    def native_learn_one(text: str) -> None:
        parsed = native._parse(text)
        native.learn_multi(parsed)
        native._finish_example_multi_ex(parsed)

    def decide() -> int:
        for example in examples:
            decide_ranking(policy.pmf(example.context, example.actions), example.event_id)
        return len(examples)

    def learn() -> int:
        for example in examples:
            policy_learn(example)
        return len(examples)

    def raw_predict() -> int:
        for example in examples:
            raw.predict(example.predict_lines)
        return len(examples)

    def raw_learn() -> int:
        for example in examples:
            raw.learn(example.learn_lines)
        return len(examples)

    def native_predict() -> int:
        for example in examples:
            native_predict_one(example.predict_text)
        return len(examples)

    def native_learn() -> int:
        for example in examples:
            native_learn_one(example.learn_text)
        return len(examples)

    try:
        warm = examples[: args.warmup]
        for example in warm:
            policy_learn(example)
            raw.learn(example.learn_lines)
            native_learn_one(example.learn_text)

        row = Row(name, warmed=len(warm))
        row.decisions = row.learns = 0.0
        row.raw_predict = row.raw_learn = row.native_predict = row.native_learn = 0.0
        # Best of N, the sides interleaved run by run so changes in machine load hit all.
        for _ in range(args.repeats):
            row.raw_predict = max(row.raw_predict, timed(raw_predict))
            row.decisions = max(row.decisions, timed(decide))
            row.native_predict = max(row.native_predict, timed(native_predict))
            row.raw_learn = max(row.raw_learn, timed(raw_learn))
            row.learns = max(row.learns, timed(learn))
            row.native_learn = max(row.native_learn, timed(native_learn))

        # Same model: after identical calls all three must predict the same distribution.
        probe = examples[-1]
        from_raw = [max(float(p), 0.0) for p in raw.predict(probe.predict_lines)]
        from_native = [max(float(p), 0.0) for p in native_predict_one(probe.predict_text)]
        from_policy = list(policy._weights(probe.context, probe.actions))
        row.same_model = from_raw == from_native == from_policy
        return row
    finally:
        raw.finish()
        native.finish()


def bench_other(name: str, policy: Policy, examples: list[Example], args: Any) -> Row:
    """Time a policy without a raw counterpart; slow ones get a time budget per run."""

    def decide(example: Example) -> None:
        decide_ranking(policy.pmf(example.context, example.actions), example.event_id)

    def learn(example: Example) -> None:
        policy.learn(
            example.context, example.actions, example.chosen, example.reward, example.probability
        )

    row = Row(name)
    row.warmed = budgeted(learn, examples[: args.warmup], args.budget)()
    row.decisions = max(timed(budgeted(decide, examples, args.budget)) for _ in range(args.repeats))
    row.learns = max(timed(budgeted(learn, examples, args.budget)) for _ in range(args.repeats))
    return row


def bench(name: str, examples: list[Example], args: Any) -> Row:
    """Build a fresh policy by registry name and time it."""
    try:
        policy = make_policy(name)
        if isinstance(policy, VWPolicy):
            row = bench_vw(name, policy, examples, args)
        else:
            row = bench_other(name, policy, examples, args)
    except Exception as exc:  # noqa: BLE001 - report a broken policy, bench the others
        row = Row(name, error=f"{type(exc).__name__}: {exc}")
    row.rss = max_rss_mib()
    return row


# -- report ------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"


def _ratio(numerator: float, denominator: float) -> str:
    return "—" if math.isnan(denominator) else f"{numerator / denominator:.2f}"


def report(rows: list[Row], examples: list[Example], args: Any, console: Console) -> bool:
    """Print the tables, the verdicts and peak memory; return whether every VW row passed."""
    table = Table(
        title=(
            f"Policy hot path: {len(examples)} examples, {N_ACTIONS} actions, "
            f"{features_per_pair(examples[0]):.0f} features per (context, action) pair, "
            f"best of {args.repeats}"
        ),
        title_justify="left",
    )
    table.add_column("policy", no_wrap=True)
    for column in (
        "decisions/s",
        "raw VW predict/s",
        "ratio",
        "learns/s",
        "raw VW learn/s",
        "ratio",
        "same model",
        "learned first",
        "max RSS MiB",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        if row.error:
            table.add_row(row.name, f"[red]{row.error}[/red]", *[""] * 8, f"{row.rss:,.0f}")
            continue
        table.add_row(
            row.name,
            _rate(row.decisions),
            _rate(row.raw_predict),
            _ratio(row.decisions, row.raw_predict),
            _rate(row.learns),
            _rate(row.raw_learn),
            _ratio(row.learns, row.raw_learn),
            {None: "—", True: "yes", False: "[red]NO[/red]"}[row.same_model],
            f"{row.warmed:,}",
            f"{row.rss:,.0f}",
        )
    console.print(table)
    console.print(
        "Rates per CPU-second of this process. "
        "decisions = policy.pmf + decide_ranking (seeded draw and ranking). raw VW = pyvw "
        "Workspace.predict/learn on ready-made text lines, with the policy's own VW flags. "
        "Non-VW policies run at most "
        f"{args.budget:g} s per timed run, and learn at most that long first."
    )

    vw_rows = [row for row in rows if row.is_vw and not row.error]
    if vw_rows:
        native = Table(
            title="For reference: the same text through VW's native binding (no pyvw wrappers)",
            title_justify="left",
        )
        native.add_column("policy", no_wrap=True)
        for column in ("native predict/s", "decisions/native", "native learn/s", "learns/native"):
            native.add_column(column, justify="right")
        for row in vw_rows:
            native.add_row(
                row.name,
                _rate(row.native_predict),
                _ratio(row.decisions, row.native_predict),
                _rate(row.native_learn),
                _ratio(row.learns, row.native_learn),
            )
        console.print(native)

    all_passed = True
    for row in vw_rows:
        verdict = "PASS" if row.passed else "FAIL"
        all_passed = all_passed and row.passed
        colour = "green" if row.passed else "red"
        console.print(
            f"[{colour}]{verdict}[/{colour}] {row.name}: decisions "
            f"{row.decisions / row.raw_predict:.2f}x, learns {row.learns / row.raw_learn:.2f}x "
            f"raw VW (target >= {TARGET}x each); decisions "
            f"{row.decisions / row.native_predict:.2f}x, learns "
            f"{row.learns / row.native_learn:.2f}x VW's native binding"
            + ("" if row.same_model else "; the policy and raw VW disagree on the model")
        )
    console.print(f"Peak memory (max RSS of this process): {max_rss_mib():,.1f} MiB")
    return all_passed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2000, help="examples per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    parser.add_argument(
        "--warmup", type=int, default=500, help="learn from the first N examples before timing"
    )
    parser.add_argument(
        "--budget", type=float, default=2.0, help="seconds per run for non-VW policies"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the example set")
    parser.add_argument("--quick", action="store_true", help="400 examples, best of 3")
    parser.add_argument("--policies", nargs="+", metavar="NAME", help="only these policies")
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a VW policy misses"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.repeats, args.warmup, args.budget = 400, 3, 200, 1.0
    if args.rounds < 1 or args.repeats < 1 or args.warmup < 0 or not args.budget > 0:
        parser.error("--rounds and --repeats must be >= 1, --warmup >= 0, --budget > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=max(Console().width, 150))
    names = available()
    if args.policies:
        unknown = sorted(set(args.policies) - set(names))
        if unknown:
            console.print(f"unknown policies {unknown}; known: {names}")
            return 2
        names = [name for name in names if name in args.policies]
    console.print(
        f"Python {platform.python_version()}, vowpalwabbit {vowpalwabbit.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}, load average "
        + " ".join(f"{load:.2f}" for load in os.getloadavg())
    )
    examples = make_examples(args.rounds, args.seed)
    rows = []
    for name in names:
        console.print(f"  benchmarking {name} ...", style="dim")
        rows.append(bench(name, examples, args))
    passed = report(rows, examples, args, console)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
