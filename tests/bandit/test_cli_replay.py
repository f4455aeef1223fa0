"""The `streambandit replay` command on a decision log written by the sink, and its errors."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bandit.ops import cli
from bandit.wire.schemas import Decision, RankRequest, TrainingExample
from policies import decide_ranking, make_policy
from streams.sink import DecisionLogWriter
from tests.policies import toy

runner = CliRunner()
START = datetime(2026, 11, 27, 23, 15, tzinfo=UTC)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 decisions of a uniform policy on the toy problem, written by the sink."""
    policy = make_policy("uniform")
    rng = random.Random(0)
    examples = []
    for t in range(400):
        segment = rng.randrange(toy.N_SEGMENTS)
        request = RankRequest.model_validate(
            {
                "event_id": f"evt-{t}",
                "context": toy.context_for(segment),
                "actions": [{"id": a.id, "features": a.features} for a in toy.ACTIONS],
            }
        )
        seen, candidates = request.policy_inputs()
        choice = decide_ranking(policy.pmf(seen, candidates), request.event_id)
        decision = Decision.from_choice(
            choice,
            request=request,
            policy=policy.name,
            model_version="m-1",
            occurred_at=START + timedelta(seconds=t),
        )
        reward = float(rng.random() < toy.expected_reward(segment, choice.index))
        examples.append(
            TrainingExample(
                event_id=decision.event_id,
                decision=decision,
                reward=reward,
                reward_count=1,
                default_reward=False,
            )
        )
    directory = tmp_path_factory.mktemp("log")
    with DecisionLogWriter(directory, 60_000, clock=lambda: START) as writer:
        writer.write(examples)
    return directory


def test_replay_prints_every_policy_and_estimator_and_writes_reports(
    log_dir: Path, tmp_path: Path
) -> None:
    """Exit 0; the table lists each policy x estimator; JSON holds the figures; HTML has SVG."""
    out_json, out_html = tmp_path / "out.json", tmp_path / "out.html"
    policies = ["uniform", "logging", "fixed:item-0", "policy:vw-squarecb"]
    estimators = ["ips", "snips", "dr"]
    args = ["replay", str(log_dir), "--bootstrap", "50", "--json", str(out_json)]
    args += ["--html", str(out_html)]
    for spec in policies:
        args += ["--policy", spec]
    for name in estimators:
        args += ["--estimator", name]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    for spec in policies:
        assert spec in result.stdout
    assert result.stdout.count("│ snips ") == len(policies)
    for column in ("estimate", "CI low", "boot high", "ESS", "max w", "warnings"):
        assert column in result.stdout
    # Warnings are said once each, under the table, and pointed to by number.
    data = json.loads(out_json.read_text()) if out_json.exists() else {}
    said = {w for e in data.get("evaluations", []) for w in e["diagnostics"]["warnings"]}
    flat = " ".join(result.stdout.split())
    for warning in said:
        assert flat.count(" ".join(warning.split())) == 1, warning
    assert (f"[{len(said)}]" in result.stdout) is bool(said)
    data = json.loads(out_json.read_text())
    assert data["log"]["rows_kept"] == 400
    pairs = {(e["policy"], e["estimator"]) for e in data["evaluations"]}
    assert pairs == {(p, e) for p in policies for e in estimators}
    logging_ips = next(
        e for e in data["evaluations"] if e["policy"] == "logging" and e["estimator"] == "ips"
    )
    assert logging_ips["diagnostics"]["weight_max"] == pytest.approx(1.0)
    assert "policy:vw-squarecb" in data["curves"]
    assert "<svg" in out_html.read_text()


@pytest.mark.parametrize(
    ("model", "name"),
    [("logistic", "HashedLogistic"), ("gbt:max_iter=10", "BoostedTrees"), ("ridge", "HashedRidge")],
)
def test_replay_shows_the_reward_model_and_the_tuned_threshold(
    log_dir: Path, tmp_path: Path, model: str, name: str
) -> None:
    """--reward-model is the model fitted; its held-out quality and the tuned tau are shown."""
    out_json, out_html = tmp_path / "out.json", tmp_path / "out.html"
    args = ["replay", str(log_dir), "-p", "fixed:item-0", "-e", "dr", "-e", "switch-dr"]
    args += ["-e", "dros:tuning=mse", "--bootstrap", "0", "--reward-model", model]
    result = runner.invoke(cli.app, [*args, "--json", str(out_json), "--html", str(out_html)])
    assert result.exit_code == 0, result.output
    flat = _one_line(result.stdout)
    assert f"reward model {name}(" in flat
    assert "held-out log loss" in flat  # the toy log's rewards are clicks
    assert "constant baseline" in flat
    assert "switch-dr (tau=" in flat
    assert ", slope)" in flat
    assert "dros:tuning=mse (lambda_=" in flat
    data = json.loads(out_json.read_text())
    quality = data["reward_model"]
    assert quality["model"].startswith(name)
    assert quality["metric"] == "log loss"
    assert quality["held_out"] < quality["constant_baseline"]  # the toy log has a signal
    tuned = {e["estimator"]: e["diagnostics"]["tuning"] for e in data["evaluations"]}
    assert tuned["dr"] is None
    assert tuned["switch-dr"]["parameter"] == "tau"
    assert tuned["switch-dr"]["method"] == "slope"
    assert tuned["dros:tuning=mse"]["method"] == "mse"
    assert tuned["switch-dr"]["grid"][0] == "inf"
    assert "held-out" in out_html.read_text()


def test_replay_without_a_model_based_estimator_reports_no_model(log_dir: Path) -> None:
    """With only IPS and SNIPS nothing is fitted, and no model quality is printed."""
    result = runner.invoke(
        cli.app, ["replay", str(log_dir), "-p", "uniform", "-e", "ips", "--bootstrap", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "reward model" not in result.stdout


def test_replay_runs_a_what_if_grid(log_dir: Path) -> None:
    """--whatif with --grid prints the settings and the recommendation sentence."""
    result = runner.invoke(
        cli.app,
        [
            "replay",
            str(log_dir),
            "-p",
            "uniform",
            "-e",
            "snips",
            "--bootstrap",
            "0",
            "--whatif",
            "vw-epsilon:epsilon=1.0",
            "--grid",
            "epsilon=0.05,0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "what-if: epsilon" in result.stdout
    assert "recommended" in result.stdout
    assert "beats the current epsilon=1.0" in _one_line(result.stdout)


def test_replay_skips_bad_rows_only_when_asked(log_dir: Path, tmp_path: Path) -> None:
    """A bad row stops the read with exit 2 naming the file; --on-error skip counts it."""
    source = sorted(log_dir.glob("*.dsjson"))[0]
    bad = tmp_path / "bad.dsjson"
    text = source.read_text()
    bad.write_text(text + "{not json\n")
    stop = runner.invoke(cli.app, ["replay", str(bad), "-p", "uniform", "-e", "ips"])
    assert stop.exit_code == 2
    assert f"bad.dsjson:{len(text.splitlines()) + 1}: the line is not valid JSON" in _one_line(
        stop.stderr
    )
    assert "--on-error skip" in _one_line(stop.stderr)
    skip = runner.invoke(
        cli.app, ["replay", str(bad), "-p", "uniform", "-e", "ips", "--on-error", "skip"]
    )
    assert skip.exit_code == 0, skip.output
    assert "skipped 1 rows" in skip.stdout


@pytest.mark.parametrize(
    ("args", "option", "rule"),
    [
        (["-p", "best"], "'--policy'", "must be one of fixed:ID"),
        (["-p", "policy:nope"], "'--policy'", "no policy named 'nope'"),
        (["-p", "snapshot:/no/such/file"], "'--policy'", "cannot read the snapshot"),
        (["-p", "uniform", "-p", "uniform"], "'--policy'", "given once"),
        (["-p", "uniform", "-e", "nope"], "'--estimator'", "no estimator named 'nope'"),
        (["-p", "uniform", "-e", "ips", "-e", "ips"], "'--estimator'", "given once"),
        (["-p", "uniform", "--reward-model", "forest"], "'--reward-model'", "no reward model"),
        (
            ["-p", "uniform", "--reward-model", "logistic:C=0"],
            "'--reward-model'",
            "`C` must be > 0",
        ),
        (
            ["-p", "uniform", "-e", "switch-dr:tuning=best"],
            "'--estimator'",
            "`tuning` must be 'slope' or 'mse'",
        ),
        (["-p", "uniform", "--bootstrap", "-1"], "'--bootstrap'", "greater than or equal to 0"),
        (["-p", "uniform", "--on-error", "maybe"], "'--on-error'", "maybe"),
        (["-p", "uniform", "--grid", "epsilon=0.1"], "'--grid'", "needs --whatif"),
        (["-p", "uniform", "--whatif", "vw-epsilon"], "'--whatif'", "needs --grid"),
        (
            ["-p", "uniform", "--whatif", "vw-epsilon", "--grid", "nope=1"],
            "'--grid'",
            "has no parameter 'nope'",
        ),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    log_dir: Path, args: list[str], option: str, rule: str
) -> None:
    """Each bad option ends with exit code 2 and a message naming it and its rule."""
    result = runner.invoke(cli.app, ["replay", str(log_dir), *args])
    assert result.exit_code == 2, result.output
    message = _one_line(result.stderr)
    assert option in message
    assert rule in message
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_replay_requires_a_policy(log_dir: Path) -> None:
    """replay without --policy is a usage error naming the option."""
    result = runner.invoke(cli.app, ["replay", str(log_dir)])
    assert result.exit_code == 2
    assert "--policy" in result.stderr
