"""The replay pipeline: logs on disk to estimates and written reports, step by step."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from bandit.errors import ConfigurationError, LogFormatError, StreambanditError
from replay import HashedLogistic, HashedRidge, Intervals, LoggedDecisions, to_dsjson
from replay.pipeline import Step, replay_logs
from replay.targets import TargetSpec
from tests.replay.test_targets import segment_log

QUICK = Intervals(n_bootstrap=20)


class StepFailedError(Exception):
    """An error tagged with the step it came through."""

    def __init__(self, step: str) -> None:
        super().__init__(step)
        self.step = step


class Recorder:
    """Records each step, the progress it reported, and tags errors with their step."""

    def __init__(self) -> None:
        self.steps: list[tuple[Step, str, int | None]] = []
        self.done: dict[str, list[int]] = {}

    @contextmanager
    def __call__(
        self, step: Step, label: str, total: int | None
    ) -> Iterator[Callable[[int], None]]:
        self.steps.append((step, label, total))
        counts = self.done.setdefault(f"{step} {label}", [])
        try:
            yield counts.append
        except StreambanditError as exc:
            raise StepFailedError(step) from exc


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LoggedDecisions]:
    """600 uniformly logged decisions whose best action is the user's segment, as DSJSON."""
    logs, _ = segment_log(600, seed=4)
    path = tmp_path_factory.mktemp("pipeline") / "log.dsjson"
    to_dsjson(logs, path)
    return path, logs


def test_targets_are_estimated_on_the_log_read(log_file: tuple[Path, LoggedDecisions]) -> None:
    """IPS of the logger is the logged mean; a policy learning the segments beats uniform."""
    path, logs = log_file
    run = replay_logs(path, ["logging", "uniform", "policy:vw-epsilon"], intervals=QUICK)
    assert run.read.rows_kept == run.logs.n == 600
    assert [(e.policy, e.estimator) for e in run.report.evaluations] == [
        (policy, estimator)
        for policy in ("logging", "uniform", "policy:vw-epsilon")
        for estimator in ("ips", "snips", "dr")
    ]
    values = {(e.policy, e.estimator): e.estimate.value for e in run.report.evaluations}
    assert values["logging", "ips"] == pytest.approx(float(np.mean(logs.reward)))
    assert values["policy:vw-epsilon", "snips"] > values["uniform", "snips"] + 0.1
    assert run.rewards is not None
    assert [t.label for t in run.targets] == ["logging", "uniform", "policy:vw-epsilon"]
    assert run.report.log["rows_read"] == 600
    assert set(run.report.curves) == {"policy:vw-epsilon"}
    assert (run.json_path, run.html_path) == (None, None)


def test_steps_are_shown_in_order_with_their_labels_and_sizes(
    log_file: tuple[Path, LoggedDecisions],
) -> None:
    """read, fit, each target, evaluate, what-if, write: with labels, totals and progress."""
    path, _ = log_file
    steps = Recorder()
    out = path.parent / "steps"
    replay_logs(
        path,
        ["uniform", "policy:vw-epsilon"],
        ["snips", "dr"],
        intervals=QUICK,
        whatif=("vw-epsilon:epsilon=0.2", "epsilon", [0.05]),
        json_path=out / "r.json",
        html_path=out / "r.html",
        progress=steps,
    )
    assert steps.steps == [
        ("read", str(path), None),
        ("fit", "HashedLogistic", 1200),
        ("target", "uniform", 600),
        ("target", "policy:vw-epsilon", 600),
        ("evaluate", "", 4),
        ("whatif", "epsilon", 1200),
        ("write", str(out / "r.json"), None),
        ("write", str(out / "r.html"), None),
    ]
    assert steps.done[f"read {path}"][-1] == 600
    assert steps.done["target policy:vw-epsilon"][-1] == 600
    assert steps.done["whatif epsilon"][-1] == 1200
    assert steps.done["fit HashedLogistic"][-1] == 1200  # fitted, then predicted
    assert steps.done["evaluate "] == [1, 2, 3, 4]


def test_an_error_comes_through_the_context_of_its_step(
    log_file: tuple[Path, LoggedDecisions], tmp_path: Path
) -> None:
    """A bad row fails in the read step, a target the log cannot support in its own step."""
    path, _ = log_file
    bad = tmp_path / "bad.dsjson"
    bad.write_text(path.read_text() + "{not json\n")
    with pytest.raises(StepFailedError, match="read") as read_error:
        replay_logs(bad, ["uniform"], progress=Recorder())
    assert "bad.dsjson:601: the line is not valid JSON" in str(read_error.value.__cause__)
    steps = Recorder()
    with pytest.raises(StepFailedError, match="target"):
        replay_logs(path, ["uniform", "snapshot:/no/such/file"], ["ips"], progress=steps)
    assert [step for step, _, _ in steps.steps] == ["read", "target", "target"]


def test_specs_are_checked_before_anything_is_read(tmp_path: Path) -> None:
    """A bad estimator, a bad target or none of either fail before the log is opened."""
    missing = tmp_path / "no-such-log.dsjson"
    steps = Recorder()
    with pytest.raises(ConfigurationError, match="no estimator named 'best'"):
        replay_logs(missing, ["uniform"], ["ips", "best"], progress=steps)
    with pytest.raises(ConfigurationError, match="target 'best': must be one of"):
        replay_logs(missing, ["best"], progress=steps)
    with pytest.raises(ConfigurationError, match="`targets` must name at least one"):
        replay_logs(missing, [], progress=steps)
    with pytest.raises(ConfigurationError, match="`estimators` must name at least one"):
        replay_logs(missing, ["uniform"], [], progress=steps)
    assert steps.steps == []


def test_a_log_with_no_decision_left_names_the_paths_and_why(tmp_path: Path) -> None:
    """Every row skipped: a LogFormatError naming the file and the reasons; nothing written."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"actions": ["a"], "chosen": 3, "probability": 1, "reward": 0}\n' * 2)
    report = tmp_path / "out" / "replay.json"
    with pytest.raises(
        LogFormatError,
        match=(
            r"bad.jsonl: no decision to evaluate "
            r"\(2 rows read, all skipped: \{'bad_chosen': 2\}\)"
        ),
    ):
        replay_logs(bad, ["uniform"], on_error="skip", json_path=report)
    assert not report.parent.exists()


def test_reports_are_written_with_the_extra_keys_and_the_title(
    log_file: tuple[Path, LoggedDecisions], tmp_path: Path
) -> None:
    """JSON holds every figure, the what-if and the extra keys; HTML carries the title."""
    path, _ = log_file
    json_path, html_path = tmp_path / "a" / "b" / "replay.json", tmp_path / "replay.html"
    run = replay_logs(
        path,
        ["uniform", "uniform", "fixed:item-1"],
        ["ips"],
        intervals=QUICK,
        whatif=("vw-epsilon:epsilon=0.2", "epsilon", [0.05, 0.5]),
        json_path=json_path,
        html_path=html_path,
        title="a <title>",
        json_extra={"observed": {"uniform": 0.25}},
    )
    data = json.loads(json_path.read_text())
    assert [(e["policy"], e["estimator"]) for e in data["evaluations"]] == [
        ("uniform", "ips"),
        ("fixed:item-1", "ips"),
    ]
    assert data["observed"] == {"uniform": 0.25}
    assert [row["spec"] for row in data["whatif"]["rows"]] == [
        "vw-epsilon:epsilon=0.2",
        "vw-epsilon:epsilon=0.05",
        "vw-epsilon:epsilon=0.5",
    ]
    # The parameter's setting and the estimate's value are both kept, under their own keys.
    assert [row["setting"] for row in data["whatif"]["rows"]] == [0.2, 0.05, 0.5]
    assert all(isinstance(row["value"], float) for row in data["whatif"]["rows"])
    assert run.report.whatif is not None
    assert run.rewards is None  # IPS needs no reward model
    page = html_path.read_text()
    assert "<title>a &lt;title&gt;</title>" in page


def test_the_reward_model_given_is_the_one_fitted(log_file: tuple[Path, LoggedDecisions]) -> None:
    """A reward model passed in is the one fitted; for 0/1 rewards by default HashedLogistic."""
    path, _ = log_file
    given = replay_logs(
        path, ["uniform"], ["dr"], intervals=QUICK, reward_model=HashedRidge(seed=5)
    )
    default = replay_logs(path, ["uniform"], ["dr"], intervals=Intervals(n_bootstrap=20, seed=5))
    assert given.rewards is not None
    assert default.rewards is not None
    np.testing.assert_array_equal(
        given.rewards.values, HashedRidge(seed=5).cross_fit(given.logs).values
    )
    np.testing.assert_array_equal(
        default.rewards.values, HashedLogistic(seed=5).cross_fit(given.logs).values
    )


def test_arrays_and_functions_are_targets_without_text(
    log_file: tuple[Path, LoggedDecisions],
) -> None:
    """An (n, K) array, a function and a labelled TargetSpec run as targets, each once."""
    path, logs = log_file
    uniform = np.full((logs.n, logs.width), 1 / logs.width)

    def first(read: LoggedDecisions) -> np.ndarray:
        return np.eye(read.width)[np.zeros(read.n, dtype=int)]

    labelled = TargetSpec("my-first", "callable", value=first)
    run = replay_logs(path, [uniform, first, labelled, uniform.copy()], ["ips"], intervals=QUICK)
    labels = [t.label for t in run.targets]
    assert len(labels) == 3  # the two equal arrays are one target
    assert labels[0].startswith("array:")
    assert labels[1].startswith("callable:tests.replay.test_pipeline:")
    assert labels[2] == "my-first"
    values = {e.policy: e.estimate.value for e in run.report.evaluations}
    assert values[labels[0]] == pytest.approx(float(np.mean(logs.reward)))
    assert values[labels[1]] == values["my-first"]


def test_one_target_not_in_a_list_is_refused(log_file: tuple[Path, LoggedDecisions]) -> None:
    """An array, a function or a spec given as `targets` itself asks to be put in a list."""
    path, logs = log_file
    for one in (np.full((logs.n, logs.width), 1 / logs.width), np.mean, "uniform"):
        with pytest.raises(ConfigurationError, match="put it in a list"):
            replay_logs(path, one)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("callable:no_such_module_xyz:f", "cannot import 'no_such_module_xyz'"),
        ("callable:json:no_such_function", "module 'json' has no attribute"),
        ("file:missing.npy", "cannot read missing.npy"),
        ("file:probabilities.csv", "must end in one of"),
        ("vw-model:missing.vw", "cannot read missing.vw"),
    ],
)
def test_functions_and_files_are_checked_before_the_log_is_read(
    tmp_path: Path, spec: str, rule: str
) -> None:
    """A function that does not import or a file not there fails before any log is read."""
    with pytest.raises(ConfigurationError, match=rf"target '{spec}': .*{rule}"):
        replay_logs(tmp_path / "no-log-here", [spec])
