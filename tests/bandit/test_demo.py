"""The live demo: its report logic on synthetic data, and one short run on the real stack."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from bandit.errors import ConfigurationError, LogFormatError
from bandit.ops.demo import (
    BASELINE_POLICY,
    DEFAULT_POLICY,
    REPLAY_ALTERNATIVES,
    REPLAY_ESTIMATORS,
    DecisionLogSummary,
    DecisionRecord,
    DemoConfig,
    DemoReplay,
    DemoReport,
    StreamCounts,
    TrustSummary,
    default_workdir,
    parse_stream_counters,
    parse_trust,
    read_decision_log,
    render_report,
    replay_decision_log,
    replay_lines,
    report_lines,
    run_demo,
    summarize,
)
from bandit.ops.simulation import SyntheticEnvironment
from bandit.service.metrics import ApiMetrics, PolicyState
from bandit.settings import Settings
from bandit.wire.schemas import Decision, RankRequest, TrainingExample
from policies import decide_ranking, make_policy
from streams.sink import DecisionLogWriter

START = datetime(2026, 11, 27, 23, 15, tzinfo=UTC)


def _record(
    at: float,
    policy: str,
    clicked: bool,
    *,
    latency: float = 0.01,
    best: float = 0.7,
    uniform: float = 0.2,
) -> DecisionRecord:
    return DecisionRecord(
        at=at,
        policy=policy,
        clicked=clicked,
        expected=0.5,
        best_expected=best,
        uniform_expected=uniform,
        latency=latency,
    )


def _learning_run() -> list[DecisionRecord]:
    """60 s: the learner clicks 1 in 5 in the first 30 s and 3 in 5 after; baseline 1 in 5."""
    records = []
    for second in range(60):
        for k in range(5):
            at = second + k / 5
            records.append(_record(at, DEFAULT_POLICY, k < (1 if second < 30 else 3)))
        records.append(_record(second + 0.5, BASELINE_POLICY, second % 5 == 0))
    return records


def _report(**changes: object) -> DemoReport:
    fields: dict[str, object] = {
        "config": DemoConfig(seconds=60, concurrency=4, workdir=Path("/data/demo-1")),
        "traffic": summarize(_learning_run(), seconds=60, windows=2),
        "counts": StreamCounts(
            decisions=360, rewards=100, joined=360, default_rewards=260, rewards_late=7
        ),
        "clicks": 120,
        "rewards_sent": 107,
        "rewards_unreported": 13,
        "events_sent": 120,
        "failed_requests": 0,
        "model_version": 42,
        "learned_examples": 300,
        "decision_log": DecisionLogSummary(Path("/data/demo-1/decisions"), 1, 360),
        "workdir": Path("/data/demo-1"),
        "drained": True,
    }
    fields.update(changes)
    return DemoReport(**fields)  # type: ignore[arg-type]


# -- summarize ------------------------------------------------------------------------------


def test_summarize_gives_each_policy_its_click_rate_per_window() -> None:
    """Rates per window follow the clicks of each policy's own decisions, in time order."""
    summary = summarize(_learning_run(), seconds=60, windows=2)
    first, second = summary.windows
    assert (first.start, first.end, second.start, second.end) == (0.0, 30.0, 30.0, 60.0)
    assert (first.learning_decisions, first.baseline_decisions) == (150, 30)
    assert first.learning_rate == pytest.approx(0.2)
    assert second.learning_rate == pytest.approx(0.6)
    assert first.baseline_rate == pytest.approx(0.2)
    assert second.baseline_rate == pytest.approx(0.2)
    assert second.lift == pytest.approx(2.0)
    assert summary.overall.learning_rate == pytest.approx(0.4)
    assert summary.overall.lift == pytest.approx(1.0)
    assert summary.decisions == 360
    assert summary.decisions_per_second == pytest.approx(6.0)


def test_summarize_averages_the_expected_rates_over_all_decisions() -> None:
    """The oracle's and uniform's expected rates average every decision of the window."""
    records = [
        _record(1.0, DEFAULT_POLICY, False, best=0.8, uniform=0.3),
        _record(2.0, BASELINE_POLICY, False, best=0.6, uniform=0.1),
        _record(3.0, "other", False, best=0.4, uniform=0.2),
    ]
    summary = summarize(records, seconds=4, windows=1)
    assert summary.overall.oracle_expected == pytest.approx(0.6)
    assert summary.overall.uniform_expected == pytest.approx(0.2)
    assert summary.decisions == 3
    assert (summary.overall.learning_decisions, summary.overall.baseline_decisions) == (1, 1)


def test_summarize_puts_records_outside_the_run_in_the_edge_windows() -> None:
    """An answer after the end counts in the last window, one before 0 in the first."""
    summary = summarize(
        [_record(-0.1, DEFAULT_POLICY, True), _record(10.5, DEFAULT_POLICY, False)],
        seconds=10,
        windows=2,
    )
    assert [w.learning_decisions for w in summary.windows] == [1, 1]
    assert [w.learning_rate for w in summary.windows] == [1.0, 0.0]


def test_summarize_reports_latency_percentiles_in_milliseconds() -> None:
    """p50, p90 and p99 are the linear percentiles of the rank latencies."""
    records = [_record(i / 100, DEFAULT_POLICY, False, latency=(i + 1) / 1000) for i in range(100)]
    summary = summarize(records, seconds=1)
    assert summary.latency_ms == pytest.approx((50.5, 90.1, 99.01))


def test_summarize_without_decisions_has_no_rates_and_no_latency() -> None:
    """No decisions: every rate, lift and the latency are None, not zero or NaN."""
    summary = summarize([], seconds=5, windows=3)
    assert summary.decisions == 0
    assert summary.latency_ms is None
    for window in (*summary.windows, summary.overall):
        assert window.learning_rate is None
        assert window.baseline_rate is None
        assert window.oracle_expected is None
        assert window.lift is None


def test_lift_is_none_against_a_baseline_that_never_clicked() -> None:
    """A zero baseline rate gives no lift rather than a division by zero."""
    summary = summarize(
        [_record(1.0, DEFAULT_POLICY, True), _record(2.0, BASELINE_POLICY, False)],
        seconds=3,
        windows=1,
    )
    assert summary.overall.baseline_rate == 0.0
    assert summary.overall.lift is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seconds": 0}, r"`seconds` must be a finite number > 0, got 0"),
        ({"seconds": float("nan")}, r"`seconds` must be a finite number > 0, got nan"),
        ({"seconds": 5, "windows": 0}, r"`windows` must be an integer >= 1, got 0"),
        ({"seconds": 5, "windows": 2.0}, r"`windows` must be an integer >= 1, got 2.0"),
    ],
)
def test_summarize_refuses_bad_arguments(arguments: dict[str, float], message: str) -> None:
    """Bad durations and window counts raise ConfigurationError naming the argument."""
    with pytest.raises(ConfigurationError, match=message):
        summarize([], **arguments)  # type: ignore[arg-type]


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seconds": -1.0}, r"`seconds` must be > 0, got -1.0"),
        ({"concurrency": 0}, r"`concurrency` must be an integer in \[1, 256\], got 0"),
        ({"concurrency": True}, r"`concurrency` must be an integer in \[1, 256\], got True"),
        ({"seed": -3}, r"`seed` must be an integer >= 0, got -3"),
        ({"policy": ""}, r"`policy` must be a spec, got ''"),
        ({"baseline_share": 1.0}, r"`baseline_share` must be in \(0, 1\), got 1.0"),
        ({"reward_wait_seconds": 0.0}, r"`reward_wait_seconds` must be > 0, got 0.0"),
        ({"reward_delay_seconds": -0.5}, r"`reward_delay_seconds` must be >= 0, got -0.5"),
        ({"unreported_share": 1.0}, r"`unreported_share` must be in \[0, 1\), got 1.0"),
        ({"windows": 0}, r"`windows` must be >= 1, got 0"),
        (
            {"replay_policies": ["vw-epsilon"]},
            r"`replay_policies` must be a tuple of policy specs, got \['vw-epsilon'\]",
        ),
        (
            {"replay_policies": ("vw-epsilon", "")},
            r"`replay_policies` must be a tuple of policy specs, got \('vw-epsilon', ''\)",
        ),
    ],
)
def test_config_refuses_values_that_break_a_rule(changes: dict[str, object], message: str) -> None:
    """Each bad setting raises ConfigurationError naming it, its rule and the value."""
    with pytest.raises(ConfigurationError, match=message):
        DemoConfig(**changes)  # type: ignore[arg-type]


def test_default_workdir_is_a_fresh_timestamped_folder(tmp_path: Path) -> None:
    """The folder is streambandit-data/demo-<timestamp>, suffixed when it already exists."""
    now = datetime(2026, 11, 27, 23, 15, 0)
    first = default_workdir(now, tmp_path)
    assert first == tmp_path.resolve() / "streambandit-data" / "demo-20261127-231500"
    first.mkdir(parents=True)
    assert default_workdir(now, tmp_path).name == "demo-20261127-231500-2"


# -- counters and the decision log ----------------------------------------------------------


def test_stream_counters_are_read_back_from_the_metrics_exposition() -> None:
    """parse_stream_counters reads what the API's /metrics renders, by scope and name."""
    metrics = ApiMetrics()
    metrics.observe_state(
        [PolicyState(DEFAULT_POLICY, 3, 1.0, 10, 1)],
        degraded=False,
        buffered=0,
        broker_available=True,
        stream_counters={
            DEFAULT_POLICY: {"decisions": 10, "joined": 8, "default_rewards": 5},
            BASELINE_POLICY: {"joined": 2, "rewards_late": 1},
        },
    )
    counters = parse_stream_counters(metrics.render().decode())
    assert counters == {
        DEFAULT_POLICY: {"decisions": 10, "joined": 8, "default_rewards": 5},
        BASELINE_POLICY: {"joined": 2, "rewards_late": 1},
    }
    total = StreamCounts.from_counters(counters[DEFAULT_POLICY]) + StreamCounts.from_counters(
        counters[BASELINE_POLICY]
    )
    assert total == StreamCounts(decisions=10, joined=10, default_rewards=5, rewards_late=1)
    assert total.joined_with_reward == 5


def test_stream_counters_are_empty_when_the_api_could_not_read_redis() -> None:
    """Without stream counters in the exposition, the result is empty, not an error."""
    metrics = ApiMetrics()
    metrics.observe_state(
        [], degraded=True, buffered=0, broker_available=True, stream_counters=None
    )
    assert parse_stream_counters(metrics.render().decode()) == {}


def test_decision_log_counts_every_dsjson_line_of_every_worker(tmp_path: Path) -> None:
    """Lines of *.dsjson files at any depth are counted; blank lines and other files not."""
    (tmp_path / "worker-1").mkdir()
    (tmp_path / "worker-2").mkdir()
    (tmp_path / "worker-1" / "a.dsjson").write_text('{"EventId": "1"}\n{"EventId": "2"}\n\n')
    (tmp_path / "worker-2" / "b.dsjson").write_text('{"EventId": "3"}\n')
    (tmp_path / "worker-2" / "notes.txt").write_text("not a decision\n")
    assert read_decision_log(tmp_path) == DecisionLogSummary(tmp_path, 2, 3)
    assert read_decision_log(tmp_path / "absent") == DecisionLogSummary(tmp_path / "absent", 0, 0)


# -- the report -----------------------------------------------------------------------------


def test_report_lines_tell_rates_lift_latency_rewards_model_and_log() -> None:
    """Each figure of the report appears in its sentence."""
    trust = TrustSummary(
        personalisation_share=1.0,
        learning_share=0.875,
        opt_out_share=0.1,
        consent_changes=80,
        explanations=12,
        erasures=1,
    )
    lines = report_lines(
        dataclasses.replace(_report(), trust=trust, people=40, learning_opt_outs=4)
    )
    assert lines[0] == (
        "Decisions: 360 in 60 s (6/s): 300 by default (vw-squarecb), 60 by baseline "
        "(uniform); 0 requests failed."
    )
    assert lines[1] == (
        "Click rate: default 0.400, baseline 0.200 (lift +100%); last window 0.600 against "
        "0.200 (lift +200%). Expected: oracle 0.700, uniform 0.200."
    )
    assert lines[2] == (
        "Trust, next to that engagement: 40 people shown the consent banner, 4 declined "
        "learning; of the decisions naming a person 100% personalised and 88% learned; "
        "opt-out share 10% of 80 consent changes; 12 explanations viewed; 1 erasures "
        "(0 decisions counted without learning consent)."
    )
    assert (
        lines[3] == "Rank latency seen by the app (4 users): p50 10.0 ms, p90 10.0 ms, p99 10.0 ms."
    )
    assert lines[4] == (
        "Rewards: 120 clicks, 107 reported after a delay, 13 never; 120 click events "
        "published. Joined: 100 with a reward, 260 with the default reward; 7 rewards late "
        "(counted, not learned)."
    )
    assert lines[5] == "Model: default served at version 42, 300 examples learned."
    assert lines[6] == (
        "Decision log: /data/demo-1/decisions (1 DSJSON files, 360 lines), kept with the "
        "servers' logs in /data/demo-1."
    )
    assert len(lines) == 7


def test_trust_counts_the_decisions_made_without_reading_consent() -> None:
    """Degraded decisions are summed over policies and told in the trust line."""
    trust = parse_trust(
        "# TYPE streambandit_degraded_decisions counter\n"
        'streambandit_degraded_decisions_total{policy="default"} 7.0\n'
        'streambandit_degraded_decisions_total{policy="baseline"} 2.0\n'
    )
    assert trust.degraded_decisions == 9
    line = report_lines(dataclasses.replace(_report(), trust=trust))[2]
    assert line.endswith(
        "(0 decisions counted without learning consent); 9 decisions made while Redis was "
        "slow to answer served the baseline without reading consent."
    )


def test_report_lines_say_when_the_figures_are_partial() -> None:
    """An interrupted run opens with a notice; an undrained one ends with a note."""
    lines = report_lines(_report(interrupted=True, drained=False))
    assert lines[0] == "Interrupted after 60 s: the figures are partial."
    assert lines[-1].startswith("Note: not every decision was joined and learned")


def test_rendered_report_has_a_row_per_window_and_the_whole_run() -> None:
    """The table shows each window's rates and lift, then the whole run, then the lines."""
    console = Console(file=io.StringIO(), width=160)
    for part in render_report(_report()):
        console.print(part)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "│ 0-30 s    │       180 │                 0.200 │              0.200 │   +0% │" in text
    assert "│ 30-60 s   │       180 │                 0.600 │              0.200 │ +200% │" in text
    assert "│ whole run │       360 │                 0.400 │              0.200 │ +100% │" in text
    assert "Model: default served at version 42" in text


def test_rendered_report_shows_a_dash_where_a_window_has_no_decisions() -> None:
    """A window without baseline decisions shows '-' for its rate and lift."""
    traffic = summarize([_record(0.5, DEFAULT_POLICY, True)], seconds=2, windows=2)
    console = Console(file=io.StringIO(), width=160)
    for part in render_report(_report(traffic=traffic)):
        console.print(part)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "│ 0-1 s     │         1 │                 1.000 │                  - │    - │" in text
    assert "│ 1-2 s     │         0 │                     - │                  - │    - │" in text


# -- the off-policy replay of the decision log ----------------------------------------------


@dataclass(frozen=True)
class LiveLog:
    """A decision log as the live loop writes it, and the reward rates it observed."""

    directory: Path
    observed: dict[str, float]
    rows: int


def _live_log(directory: Path, rounds: int, seed: int) -> LiveLog:
    """The demo's traffic without servers: a learning policy and a uniform baseline decide
    the synthetic environment's rounds (a quarter to the baseline), the learner learns,
    and the sink writes the joined decisions into ``decisions/worker-1``."""
    learning, baseline = make_policy("vw-squarecb"), make_policy("uniform")
    rng = random.Random(seed)
    examples: list[TrainingExample] = []
    rewards: dict[str, list[float]] = {DEFAULT_POLICY: [], BASELINE_POLICY: []}
    for round_ in SyntheticEnvironment(seed=seed).rounds(rounds):
        served = BASELINE_POLICY if rng.random() < 0.25 else DEFAULT_POLICY
        policy = baseline if served == BASELINE_POLICY else learning
        request = RankRequest.model_validate(
            {
                "event_id": f"demo-test-r{round_.index}",
                "context": round_.context,
                "actions": [{"id": a.id, "features": a.features} for a in round_.actions],
            }
        )
        seen, candidates = request.policy_inputs()
        choice = decide_ranking(policy.pmf(seen, candidates), request.event_id)
        reward = round_.reward(choice.index)
        policy.learn(seen, candidates, choice.index, reward, choice.probability)
        decision = Decision.from_choice(
            choice,
            request=request,
            policy=served,
            model_version="1",
            occurred_at=START + timedelta(seconds=round_.index),
        )
        examples.append(
            TrainingExample(
                event_id=decision.event_id,
                decision=decision,
                reward=reward,
                reward_count=int(reward > 0),
                default_reward=reward == 0,
            )
        )
        rewards[served].append(reward)
    folder = directory / "decisions" / "worker-1"
    with DecisionLogWriter(folder, 2_000_000, clock=lambda: START) as writer:
        writer.write(examples)
    every = rewards[DEFAULT_POLICY] + rewards[BASELINE_POLICY]
    observed = {
        "logging": math.fsum(every) / len(every),
        "uniform": math.fsum(rewards[BASELINE_POLICY]) / len(rewards[BASELINE_POLICY]),
    }
    return LiveLog(directory / "decisions", observed, len(examples))


@pytest.fixture(scope="module")
def live_log(tmp_path_factory: pytest.TempPathFactory) -> LiveLog:
    """1,500 decisions of the demo's two policies, written by the sink."""
    return _live_log(tmp_path_factory.mktemp("demo-log"), 1_500, seed=5)


@pytest.fixture(scope="module")
def replayed(live_log: LiveLog) -> DemoReplay:
    """The demo's replay of that log, with one alternative policy trained along it."""
    return replay_decision_log(
        live_log.directory,
        out=live_log.directory.parent,
        policies=("vw-squarecb", "vw-epsilon:epsilon=0.1"),
        observed=live_log.observed,
        seed=0,
        n_bootstrap=50,
    )


def test_replay_estimates_every_target_with_every_estimator(
    live_log: LiveLog, replayed: DemoReplay
) -> None:
    """Logging, uniform and each trained policy get IPS, SNIPS and DR with 95% intervals."""
    labels = ["logging", "uniform", "policy:vw-squarecb", "policy:vw-epsilon:epsilon=0.1"]
    assert [(e.policy, e.estimator) for e in replayed.report.evaluations] == [
        (label, estimator) for label in labels for estimator in REPLAY_ESTIMATORS
    ]
    assert replayed.decisions == live_log.rows
    assert replayed.skipped == {}
    for evaluation in replayed.report.evaluations:
        estimate = evaluation.estimate
        assert estimate.ci is not None
        assert estimate.ci.level == 0.95
        assert estimate.ci.low <= estimate.value <= estimate.ci.high
        assert estimate.bootstrap_ci is not None
        assert 0 < estimate.diagnostics.ess <= live_log.rows + 1e-6


def test_logging_policy_estimate_is_the_observed_reward_rate(
    live_log: LiveLog, replayed: DemoReplay
) -> None:
    """IPS of the logger is the logged mean reward: its interval covers the observed rate."""
    ips = replayed.estimate("logging", "ips")
    assert ips.value == pytest.approx(live_log.observed["logging"], abs=1e-12)
    assert ips.diagnostics.ess == pytest.approx(live_log.rows)
    assert replayed.covers("logging")
    for estimator in REPLAY_ESTIMATORS:
        assert replayed.covers("logging", estimator)


def test_uniform_estimate_from_the_whole_log_covers_the_baselines_own_rate(
    replayed: DemoReplay,
) -> None:
    """Uniform, estimated off-policy from every decision, agrees with the baseline's rate.

    SNIPS and DR: with uniform's small ESS here, the ones the warnings recommend.
    """
    assert replayed.covers("uniform", "snips")
    assert replayed.covers("uniform", "dr")
    assert replayed.covers("policy:vw-squarecb") is None  # nothing observed for it here


def test_replay_writes_its_json_and_html_next_to_the_decision_log(
    live_log: LiveLog, replayed: DemoReplay
) -> None:
    """replay.json parses with every estimate and the observed rates; replay.html is a page."""
    assert replayed.json_path == live_log.directory.parent / "replay.json"
    assert replayed.html_path == live_log.directory.parent / "replay.html"
    data = json.loads(replayed.json_path.read_text())
    assert data["observed"] == pytest.approx(live_log.observed)
    assert data["log"]["rows_kept"] == live_log.rows
    assert len(data["evaluations"]) == 4 * len(REPLAY_ESTIMATORS)
    logging_ips = data["evaluations"][0]
    assert (logging_ips["policy"], logging_ips["estimator"]) == ("logging", "ips")
    assert logging_ips["ci"]["low"] <= data["observed"]["logging"] <= logging_ips["ci"]["high"]
    assert logging_ips["diagnostics"]["ess"] == pytest.approx(live_log.rows)
    assert set(data["curves"]) == {"policy:vw-squarecb", "policy:vw-epsilon:epsilon=0.1"}
    page = replayed.html_path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2  # the estimates, and learning along the log
    assert "off-policy replay of the decision log" in page


def test_report_ends_with_the_replay_table_and_its_checks(replayed: DemoReplay) -> None:
    """The rendered report shows each policy's estimates, the checks and the report paths."""
    console = Console(file=io.StringIO(), width=200)
    for part in render_report(_report(replay=replayed)):
        console.print(part)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "off-policy replay of the decision log: 1,500 decisions" in text
    observed = replayed.observed["logging"]
    for name in REPLAY_ESTIMATORS:
        estimate = replayed.estimate("logging", name)
        assert estimate.ci is not None
        boot = estimate.bootstrap_ci
        assert boot is not None
        row = (
            rf"│ {'logging' if name == 'ips' else ''}\s*│ {name}\s*│\s*{estimate.value:.3f} │ "
            rf"{estimate.ci.low:.3f} - {estimate.ci.high:.3f} │ {boot.low:.3f} - {boot.high:.3f} │"
            rf"\s*1,500 │\s*{f'{observed:.3f}' if name == 'ips' else '-'} │"
        )
        assert re.search(row, text), row
    lines = replay_lines(replayed)
    ips, snips, dr = (replayed.estimate("logging", name) for name in REPLAY_ESTIMATORS)
    assert ips.ci is not None
    assert snips.ci is not None
    assert dr.ci is not None
    assert lines[1] == (
        f"Check, logging: observed live {observed:.3f} on all decisions; "
        f"IPS {ips.value:.3f} ({ips.ci.low:.3f} - {ips.ci.high:.3f}), "
        f"SNIPS {snips.value:.3f} ({snips.ci.low:.3f} - {snips.ci.high:.3f}), "
        f"DR {dr.value:.3f} ({dr.ci.low:.3f} - {dr.ci.high:.3f}): every interval covers it."
    )
    assert lines[2].startswith(
        f"Check, uniform: observed live {replayed.observed['uniform']:.3f} on the baseline's "
        "decisions; IPS "
    )
    assert lines[3].startswith("Warning, policy:vw-squarecb: effective sample size ")
    assert lines[-1] == f"Replay report: {replayed.html_path} (HTML), {replayed.json_path} (JSON)."
    flowing = " ".join(text.split())  # long lines wrap on the console
    for line in lines:
        assert " ".join(line.split()) in flowing


def test_a_check_that_fails_says_so(replayed: DemoReplay) -> None:
    """An observed rate outside the intervals is reported as not covered, not hidden."""
    off = dataclasses.replace(replayed, observed={"logging": 0.999})
    assert off.covers("logging") is False
    assert off.covers("uniform") is None
    assert replay_lines(off)[1].endswith(": NO interval covers it.")
    assert not replay_lines(off)[2].startswith("Check, uniform")


def test_report_says_why_the_replay_did_not_run() -> None:
    """Without a replay the report ends with the reason instead of the table."""
    console = Console(file=io.StringIO(), width=160)
    note = "no decision was logged in /data/demo-1/decisions"
    for part in render_report(_report(replay_note=note)):
        console.print(part)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"Off-policy replay: not run, {note}." in text
    assert "off-policy replay of the decision log" not in text


def test_replay_of_a_log_without_decisions_raises(tmp_path: Path) -> None:
    """An empty log is a LogFormatError naming the folder, and writes no report."""
    (tmp_path / "decisions" / "worker-1").mkdir(parents=True)
    (tmp_path / "decisions" / "worker-1" / "decisions-20261127T231500Z-0001.dsjson").touch()
    with pytest.raises(LogFormatError, match=r"decisions: no decision to evaluate \(0 rows"):
        replay_decision_log(tmp_path / "decisions", out=tmp_path)
    assert not (tmp_path / "replay.json").exists()


# -- the real thing -------------------------------------------------------------------------


def test_a_short_demo_learns_on_the_real_stack_and_keeps_its_decision_log(
    tmp_path: Path,
) -> None:
    """15 s of traffic: decisions made, rewards joined, a saved model served, DSJSON kept,
    and replayed off-policy: the logging policy's estimates cover the observed rate."""
    workdir = tmp_path / "demo"
    progress = io.StringIO()
    report = run_demo(
        DemoConfig(seconds=15, concurrency=4, seed=3, workdir=workdir),
        console=Console(file=progress, width=120),
        settings=Settings(),
    )
    assert not report.interrupted
    assert report.drained
    assert report.workdir == workdir
    traffic = report.traffic
    assert traffic.decisions > 0
    assert traffic.overall.learning_decisions > traffic.overall.baseline_decisions > 0
    assert traffic.latency_ms is not None
    assert report.clicks > 0
    counts = report.counts  # every decision joined, or counted without learning consent
    assert counts.joined + counts.not_learned >= traffic.decisions - report.trust.erasures * 50
    assert counts.not_learned > 0  # some people declined learning
    assert report.learning_opt_outs > 0
    assert report.trust.explanations > 0
    assert report.trust.erasures == 1
    assert 0.8 < report.trust.learning_share < 1.0
    # everyone consented to personalisation: only a decision made while Redis was too slow
    # to read their consent (under load) is served the baseline
    assert report.trust.personalisation_share == 1.0 or report.trust.degraded_decisions > 0
    assert report.counts.joined_with_reward > 0
    assert report.model_version > 0
    assert report.learned_examples > 0

    assert report.decision_log.directory == workdir / "decisions"
    assert report.decision_log.lines > 0
    records = [
        json.loads(line)
        for path in sorted(report.decision_log.directory.rglob("*.dsjson"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    assert len(records) == report.decision_log.lines
    event_ids = {record["EventId"] for record in records}
    assert len(event_ids) >= counts.joined  # those without learning consent are not kept
    assert all(event_id.startswith("demo-") for event_id in event_ids)
    assert {record["_sb"]["policy"] for record in records} == {DEFAULT_POLICY, BASELINE_POLICY}
    assert all(0 < record["_label_probability"] <= 1 for record in records)
    assert any(record["_label_cost"] == -1.0 for record in records)  # a click, learned

    lines = report_lines(report)
    assert f"Decision log: {workdir / 'decisions'} (" in lines[-1]
    assert (workdir / "api.log").is_file()

    # The replay of that log: the logger's estimate is the reward rate the service saw.
    replay = report.replay
    assert replay is not None, report.replay_note
    assert replay.decisions + sum(replay.skipped.values()) == report.decision_log.lines
    assert set(replay.skipped) <= {"duplicate"}
    observed = report.counts.joined_with_reward / report.counts.joined
    assert replay.observed["logging"] == pytest.approx(observed)
    for name in REPLAY_ESTIMATORS:
        assert replay.covers("logging", name), replay.estimate("logging", name)
    baseline = report.policy_counts[BASELINE_POLICY]
    assert replay.observed["uniform"] == pytest.approx(
        baseline.joined_with_reward / baseline.joined
    )
    assert "policy:vw-squarecb" in replay.observed
    assert [e.policy for e in replay.report.evaluations[:: len(REPLAY_ESTIMATORS)]] == [
        "logging",
        "uniform",
        "policy:vw-squarecb",
        *(f"policy:{spec}" for spec in REPLAY_ALTERNATIVES),
    ]
    assert (replay.json_path, replay.html_path) == (
        workdir / "replay.json",
        workdir / "replay.html",
    )
    data = json.loads(replay.json_path.read_text())
    assert data["log"]["rows_kept"] == replay.decisions
    first = data["evaluations"][0]
    assert first["ci"]["low"] <= data["observed"]["logging"] <= first["ci"]["high"]
    assert replay.html_path.read_text().startswith("<!DOCTYPE html>")
    console = Console(file=io.StringIO(), width=200)
    for part in render_report(report):
        console.print(part)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"off-policy replay of the decision log: {replay.decisions:,} decisions" in text
    assert "Check, logging: observed live " in text
    assert "every interval covers it." in text
