"""The streambandit command line: simulate, policies, demo, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bandit.ops import cli
from policies import available

runner = CliRunner()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_simulate_prints_a_row_per_policy_and_the_references() -> None:
    """The table holds every policy given, the oracle and uniform references, and a verdict."""
    result = runner.invoke(
        cli.app,
        [
            "simulate",
            "-p",
            "uniform",
            "-p",
            "fixed",
            "-p",
            "vw-epsilon:epsilon=0.1",
            "--rounds",
            "300",
        ],
    )
    assert result.exit_code == 0, result.output
    for label in (
        "uniform",
        "fixed",
        "vw-epsilon:epsilon=0.1",
        "oracle (expected)",
        "uniform (expected)",
    ):
        assert label in result.stdout
    for column in ("mean reward", "regret vs oracle", "explored", "decisions/s"):
        assert column in result.stdout
    assert "Best: " in result.stdout
    assert "300 rounds x 3 policies" in result.stdout


def test_simulate_runs_the_digits_environment() -> None:
    """--env digits runs the bandit version of the digits data set, oracle reward 1."""
    result = runner.invoke(
        cli.app, ["simulate", "-p", "uniform", "--env", "digits", "--rounds", "200"]
    )
    assert result.exit_code == 0, result.output
    assert "digits (scikit-learn" in result.stdout
    assert "│ oracle (expected)  │       1.000 │" in result.stdout


def test_simulate_accepts_drift_and_a_change_point() -> None:
    """Drift settings reach the synthetic environment and show in the table's title."""
    result = runner.invoke(
        cli.app,
        [
            "simulate",
            "-p",
            "uniform",
            "--rounds",
            "100",
            "--drift",
            "0.5",
            "--change-point",
            "50",
            "--actions",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "drift 0.5, change point at 50" in result.stdout
    assert "4 of 20 items per round" in result.stdout


def test_simulate_logs_one_json_summary_line_off_a_terminal() -> None:
    """Off a terminal the run ends with a JSON "simulation.finished" line on standard error."""
    result = runner.invoke(cli.app, ["simulate", "-p", "uniform", "--rounds", "50"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    finished = [e for e in events if e["event"] == "simulation.finished"]
    assert len(finished) == 1
    assert finished[0]["rounds"] == 50
    assert finished[0]["level"] == "info"
    assert set(finished[0]["policies"]) == {"uniform"}


@pytest.mark.parametrize(
    ("args", "option", "rule"),
    [
        (["-p", "no-such-policy"], "'--policy'", "no policy named 'no-such-policy'; known: "),
        (
            ["-p", "vw-squarecb:gamma_scale=-1"],
            "'--policy'",
            "`gamma_scale` must be finite and > 0, got -1",
        ),
        (
            ["-p", "uniform", "-p", "uniform"],
            "'--policy'",
            "must be given once, got 'uniform' twice",
        ),
        (["-p", "uniform", "--rounds", "0"], "'--rounds'", "greater than or equal to 1"),
        (
            ["-p", "uniform", "--env", "mnist"],
            "'--env'",
            "'mnist' is not one of 'synthetic', 'digits'",
        ),
        (["-p", "uniform", "--actions", "1"], "'--actions'", "greater than or equal to 2"),
        (
            ["-p", "uniform", "--actions", "51"],
            "'--actions'",
            "must be <= 50 (settings limits.max_actions), got 51",
        ),
        (
            ["-p", "uniform", "--actions", "30"],
            "'--actions'",
            "must be <= the catalog size, --items (20), got 30",
        ),
        (
            ["-p", "uniform", "--items", "5"],
            "'--items'",
            "must be >= the items offered per round, --actions (10), got 5",
        ),
        (["-p", "uniform", "--drift", "-1"], "'--drift'", "greater than or equal to 0"),
        (
            ["-p", "uniform", "--env", "digits", "--drift", "0.2"],
            "'--drift'",
            "applies only to --env synthetic",
        ),
        (
            ["-p", "uniform", "--env", "digits", "--actions", "5"],
            "'--actions'",
            "applies only to --env synthetic",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_option_and_rule(
    args: list[str], option: str, rule: str
) -> None:
    """Each bad option ends with exit code 2, a message naming it and its rule, no traceback."""
    result = runner.invoke(cli.app, ["simulate", *args])
    assert result.exit_code == 2, result.output
    message = _one_line(result.stderr)
    assert option in message
    assert rule in message
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_simulate_requires_a_policy() -> None:
    """simulate without --policy is a usage error naming the option."""
    result = runner.invoke(cli.app, ["simulate"])
    assert result.exit_code == 2
    assert "--policy" in result.stderr


def test_policies_lists_every_registered_name() -> None:
    """`policies` prints exactly the registered names, one per line."""
    result = runner.invoke(cli.app, ["policies"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == available()
    assert {"uniform", "fixed", "vw-squarecb"} <= set(result.stdout.splitlines())


def test_demo_refuses_an_unknown_learning_policy_before_starting_anything(
    tmp_path: Path,
) -> None:
    """demo --policy with an unknown name is a usage error naming the option; no stack runs."""
    workdir = tmp_path / "demo"
    result = runner.invoke(cli.app, ["demo", "--policy", "nope", "--workdir", str(workdir)])
    assert result.exit_code == 2
    assert "Invalid value for '--policy': no policy named 'nope'" in _one_line(result.stderr)
    assert not workdir.exists()


@pytest.mark.parametrize(
    ("arguments", "option"),
    [
        (["--seconds", "0"], "--seconds"),
        (["--concurrency", "0"], "--concurrency"),
        (["--concurrency", "1000"], "--concurrency"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_demo_refuses_options_out_of_range(arguments: list[str], option: str) -> None:
    """Out-of-range demo options are usage errors (exit 2) naming the option."""
    result = runner.invoke(cli.app, ["demo", *arguments])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in _one_line(result.stderr)


def test_console_script_exits_2_without_a_traceback() -> None:
    """The real entry point, in its own process, exits 2 on an unknown policy with no traceback."""
    completed = subprocess.run(
        [sys.executable, "-c", "from bandit.ops.cli import main; main()", "simulate", "-p", "nope"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "Invalid value for '--policy': no policy named 'nope'" in completed.stderr
    assert "Traceback" not in completed.stderr
