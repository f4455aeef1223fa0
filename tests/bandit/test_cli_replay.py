"""The `streambandit replay` command on a decision log written by the sink, and its errors."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from bandit.ops import cli
from bandit.wire.schemas import Decision, RankRequest, TrainingExample
from policies import decide_ranking, make_policy
from replay.report import Report
from streams.sink import DecisionLogWriter
from tests.policies import toy
from tests.replay.test_report import small_estimates

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
    for column in ("estimate", "normal 95%", "bootstrap", "ESS", "max w", "notes"):
        assert column in result.stdout
    assert "…" not in result.stdout  # no figure or name is cut
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
        (["-p", "callable:no_such_module_xyz:f"], "'--policy'", "cannot import"),
        (["-p", "file:probabilities.csv"], "'--policy'", "must end in one of"),
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


def test_replay_takes_targets_from_a_file_and_a_function(log_dir: Path, tmp_path: Path) -> None:
    """file:PATH (JSON lines keyed by event id) and callable:FILE.py:NAME run as targets."""
    k = len(toy.ACTIONS)
    row = [0.5] + [0.5 / (k - 1)] * (k - 1)
    lines = [json.dumps({"event_id": f"evt-{t}", "probabilities": row}) for t in range(399, -1, -1)]
    probabilities = tmp_path / "target.jsonl"
    probabilities.write_text("\n".join(lines) + "\n")
    module = tmp_path / "targets.py"
    module.write_text("def uniform(logs):\n    return logs.mask() / logs.n_actions[:, None]\n")
    specs = [f"file:{probabilities}", f"callable:{module}:uniform"]
    out_json = tmp_path / "out.json"
    args = ["replay", str(log_dir), "-e", "ips", "--bootstrap", "0", "--json", str(out_json)]
    result = runner.invoke(cli.app, [*args, "-p", "uniform", "-p", specs[0], "-p", specs[1]])
    assert result.exit_code == 0, result.output
    values = {e["policy"]: e["value"] for e in json.loads(out_json.read_text())["evaluations"]}
    assert values[specs[1]] == pytest.approx(values["uniform"])
    assert values[specs[0]] != pytest.approx(values["uniform"])
    assert "file:" in result.stdout
    assert "callable:" in result.stdout
    assert "…" not in result.stdout  # long labels fold, figures are never cut


def test_a_bad_target_file_exits_2_naming_the_policy_option_the_row_and_the_rule(
    log_dir: Path, tmp_path: Path
) -> None:
    """A file whose row does not sum to 1 is a usage error of --policy naming the row."""
    path = tmp_path / "bad.npy"
    table = np.full((400, len(toy.ACTIONS)), 1 / len(toy.ACTIONS))
    table[7, 0] += 0.1
    np.save(path, table)
    result = runner.invoke(cli.app, ["replay", str(log_dir), "-p", f"file:{path}"])
    assert result.exit_code == 2, result.output
    message = _one_line(result.stderr)
    assert "'--policy'" in message
    assert "row 7 (event id 'evt-7'): probabilities must sum to 1" in message.replace("│ ", "")


def test_the_table_writes_estimates_to_their_interval_s_digits() -> None:
    """0.00236 and 0.00233 (intervals 0.0005 wide) read 0.002360 and 0.002330, not 0.002."""
    table, _ = cli._replay_table(Report(tuple(small_estimates())), 200)
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    for figure in ("0.002360", "0.002110", "0.002610", "0.002330", "0.002080", "0.002580"):
        assert figure in text
    assert "0.002 " not in text


def test_replay_shows_the_range_respecting_intervals_within_the_reward_range(
    log_dir: Path, tmp_path: Path
) -> None:
    """--reward-range bounds the Bernstein and betting intervals, shown and in the JSON."""
    out_json = tmp_path / "out.json"
    args = ["replay", str(log_dir), "--policy", "fixed:item-0", "--estimator", "ips"]
    args += ["--bootstrap", "0", "--reward-range", "0,1", "--json", str(out_json)]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    for column in ("Bernstein", "betting"):
        assert column in result.stdout
    (evaluation,) = json.loads(out_json.read_text())["evaluations"]
    for key, method in (("bernstein_ci", "empirical Bernstein"), ("betting_ci", "betting")):
        interval = evaluation[key]
        assert interval["method"] == method
        assert 0.0 <= interval["low"] <= evaluation["value"] <= interval["high"] <= 1.0
    assert 0.0 <= evaluation["ci"]["low"] <= evaluation["ci"]["high"] <= 1.0  # clipped if need be
    assert isinstance(evaluation["ci"]["clipped"], bool)


@pytest.mark.parametrize("text", ["1,0", "0", "a,b", "0,inf"])
def test_replay_refuses_a_bad_reward_range(log_dir: Path, text: str) -> None:
    """A reward range that is not LO,HI with finite LO < HI is a usage error naming it."""
    args = ["replay", str(log_dir), "--policy", "uniform", "--reward-range", text]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2
    assert "--reward-range" in result.stderr
    assert "finite LO < HI" in result.stderr


def test_replay_adds_each_policys_anytime_valid_row(log_dir: Path, tmp_path: Path) -> None:
    """Each policy gets one ``anytime-valid`` row; the JSON holds its bounds around its IPS."""
    out_json = tmp_path / "anytime.json"
    args = ["replay", str(log_dir), "--bootstrap", "0", "--json", str(out_json)]
    args += ["--policy", "uniform", "--policy", "logging", "--estimator", "ips"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("anytime-valid") == 2
    found = json.loads(out_json.read_text())["anytime_valid"]
    ips = {e["policy"]: e["value"] for e in json.loads(out_json.read_text())["evaluations"]}
    for policy in ("uniform", "logging"):
        assert found[policy]["n"] == 400
        assert found[policy]["estimate"] == pytest.approx(ips[policy])
        assert found[policy]["low"] <= found[policy]["high"]
