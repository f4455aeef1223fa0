"""Targets built on a log: fixed, uniform, logging, learning, snapshots, files, VW models."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from vowpalwabbit import pyvw

from bandit.errors import ConfigurationError, LogFormatError
from policies import Action, make_policy
from policies.vwtext import example_text, reward_to_cost, to_vw_lines
from replay import SNIPS, LoggedDecisions, targets
from replay.estimators import IPS
from replay.targets import TargetLike, build_target, parse_target

N_SEGMENTS = N_ACTIONS = 3
GOOD, BAD = 0.8, 0.2
IDS = [f"item-{j}" for j in range(N_ACTIONS)]
ACTION_FEATURES = [{"item": {"kind": f"k{j}"}} for j in range(N_ACTIONS)]


def segment_log(n: int, seed: int = 0) -> tuple[LoggedDecisions, np.ndarray]:
    """A uniformly random log whose best action is the user's segment; also the true means."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, N_SEGMENTS, n)
    chosen = rng.integers(0, N_ACTIONS, n)
    means = np.where(np.arange(N_ACTIONS)[None, :] == segment[:, None], GOOD, BAD)
    reward = rng.binomial(1, means[np.arange(n), chosen]).astype(float)
    logs = LoggedDecisions(
        n_actions=np.full(n, N_ACTIONS),
        chosen=chosen,
        propensity=np.full(n, 1 / N_ACTIONS),
        reward=reward,
        probabilities=np.full((n, N_ACTIONS), 1 / N_ACTIONS),
        action_ids=[IDS] * n,
        contexts=[{"user": {"segment": f"s{s}"}} for s in segment],
        action_features=[ACTION_FEATURES] * n,
    )
    return logs, means


def small_log() -> LoggedDecisions:
    """Three rows offering different actions, with features."""
    ids = [["a", "b"], ["c", "b", "a"], ["c", "d"]]
    return LoggedDecisions(
        n_actions=np.array([2, 3, 2]),
        chosen=np.array([1, 0, 1]),
        propensity=np.array([0.5, 0.2, 0.5]),
        reward=np.array([1.0, 0.0, 1.0]),
        probabilities=np.array([[0.5, 0.5, 0], [0.2, 0.4, 0.4], [0.5, 0.5, 0]]),
        action_ids=ids,
        contexts=[{}] * 3,
        action_features=[[{}] * len(row) for row in ids],
    )


def test_fixed_puts_all_mass_on_the_first_listed_id_offered() -> None:
    """fixed:ID,ID ranks the ids; a row offering none of them takes its first action."""
    target = build_target("fixed:a,b", small_log())
    np.testing.assert_array_equal(
        target.probabilities.probabilities, [[1, 0, 0], [0, 0, 1], [1, 0, 0]]
    )
    assert target.running_value is None


def test_uniform_and_logging_targets_are_valid() -> None:
    """uniform spreads over each row's offers; logging reproduces the logged probabilities."""
    logs = small_log()
    uniform = build_target("uniform", logs).probabilities.probabilities
    np.testing.assert_allclose(uniform.sum(axis=1), 1.0)
    np.testing.assert_allclose(uniform[1], [1 / 3] * 3)
    assert uniform[0, 2] == 0.0
    logged = build_target("logging", logs).probabilities
    np.testing.assert_array_equal(logged.probabilities, logs.probabilities)
    np.testing.assert_allclose(logged.weights(), 1.0)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("best", "must be one of fixed:ID"),
        ("fixed:", "must be one of fixed:ID"),
        ("uniform:x", "must be one of"),
        ("policy:", "must be one of"),
        ("snapshot:", "must be one of"),
    ],
)
def test_bad_specs_are_refused_naming_the_spec(spec: str, match: str) -> None:
    """A spec of no known kind raises naming it and the kinds accepted."""
    with pytest.raises(ConfigurationError, match=match):
        parse_target(spec)


def test_targets_refuse_logs_missing_what_they_need() -> None:
    """logging needs every probability, fixed needs ids, policies need features."""
    bare = LoggedDecisions(
        n_actions=np.array([2]),
        chosen=np.array([0]),
        propensity=np.array([0.5]),
        reward=np.array([1.0]),
    )
    with pytest.raises(LogFormatError, match="only the chosen action's probability"):
        build_target("logging", bare)
    with pytest.raises(LogFormatError, match="no action ids"):
        build_target("fixed:a", bare)
    with pytest.raises(LogFormatError, match="features=True"):
        build_target("policy:uniform", bare)
    with pytest.raises(ConfigurationError, match="no policy named 'nope'"):
        build_target("policy:nope", small_log())


def test_counterfactual_learning_finds_the_segment_rule_and_its_true_value() -> None:
    """A learner replayed on a uniform log ends far above uniform and near its true value."""
    logs, means = segment_log(3000)
    learner = build_target("policy:vw-squarecb", logs)
    uniform = build_target("uniform", logs)
    estimate = SNIPS().estimate(logs, learner.probabilities)
    baseline = SNIPS().estimate(logs, uniform.probabilities).value
    truth = float(np.mean(np.sum(learner.probabilities.probabilities * means, axis=1)))
    assert truth > 0.7
    assert estimate.value > baseline + 0.25
    assert abs(estimate.value - truth) < 3 * estimate.std_error
    assert learner.running_value is not None
    assert learner.running_value[-1] == pytest.approx(
        IPS().estimate(logs, learner.probabilities).value
    )
    late = learner.probabilities.probabilities[-500:]
    best = np.array([int(c["user"]["segment"][1]) for c in logs.contexts[-500:]])  # type: ignore[index]
    assert np.mean(late.argmax(axis=1) == best) > 0.95


def test_learning_target_learns_the_logged_choice_with_its_propensity() -> None:
    """Row by row the target is the pmf of a policy fed the log's outcomes, as live."""
    logs, _ = segment_log(60, seed=1)
    target = build_target("policy:vw-epsilon:epsilon=0.1", logs)
    policy = make_policy("vw-epsilon:epsilon=0.1")
    actions = [Action(i, f) for i, f in zip(IDS, ACTION_FEATURES, strict=True)]
    for i in range(logs.n):
        context = logs.contexts[i]  # type: ignore[index]
        np.testing.assert_allclose(
            target.probabilities.probabilities[i], list(policy.pmf(context, actions))
        )
        policy.learn(context, actions, int(logs.chosen[i]), float(logs.reward[i]), 1 / 3)
    assert target.matched_reward is not None
    matched = ~np.isnan(target.matched_reward)
    np.testing.assert_array_equal(target.matched_reward[matched], logs.reward[matched])


def test_snapshot_target_is_evaluated_frozen_or_learning(tmp_path: Path) -> None:
    """snapshot:PATH scores a saved model without learning; snapshot-learn:PATH goes on."""
    train, _ = segment_log(1500, seed=2)
    trained = build_target("policy:vw-squarecb", train)
    assert trained.running_value is not None
    policy = make_policy("vw-squarecb")
    actions = [Action(i, f) for i, f in zip(IDS, ACTION_FEATURES, strict=True)]
    for i in range(train.n):
        policy.learn(
            train.contexts[i],  # type: ignore[index]
            actions,
            int(train.chosen[i]),
            float(train.reward[i]),
            1 / 3,
        )
    path = tmp_path / "model.snapshot"
    path.write_bytes(policy.snapshot())
    logs, means = segment_log(600, seed=3)
    frozen = build_target(f"snapshot:{path}", logs).probabilities.probabilities
    context = logs.contexts[0]  # type: ignore[index]
    same = [i for i in range(logs.n) if logs.contexts[i] == context]  # type: ignore[index]
    np.testing.assert_allclose(frozen[same], np.tile(frozen[same[0]], (len(same), 1)))
    assert float(np.mean(np.sum(frozen * means, axis=1))) > 0.7
    learning = build_target(f"snapshot-learn:{path}", logs).probabilities.probabilities
    np.testing.assert_allclose(learning[0], frozen[0])
    assert not np.allclose(learning, frozen)
    with pytest.raises(ConfigurationError, match="cannot read the snapshot"):
        build_target(f"snapshot:{tmp_path / 'missing'}", logs)


# -- probabilities from outside: files, functions, arrays, VW model files ------------------


def soft_target(logs: LoggedDecisions) -> np.ndarray:
    """A stochastic target: 0.6 on the row's segment's action, 0.2 on each other one."""
    assert logs.contexts is not None
    segment = np.array([int(c["user"]["segment"][1]) for c in logs.contexts])
    return np.where(np.arange(N_ACTIONS)[None, :] == segment[:, None], 0.6, 0.2)


def with_event_ids(logs: LoggedDecisions) -> LoggedDecisions:
    return replace(logs, event_ids=[f"evt-{i}" for i in range(logs.n)])


def write_jsonl(path: Path, table: np.ndarray, ids: list[str] | None) -> None:
    lines = []
    for i, row in enumerate(table):
        record: dict[str, object] = {"probabilities": row.tolist()}
        if ids is not None:
            record["event_id"] = ids[i]
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


def test_a_stochastic_target_from_any_source_gets_an_interval_covering_its_true_value(
    tmp_path: Path,
) -> None:
    """npy, npz, JSON lines by id, Parquet, a .py function, an array: one target, truth covered."""
    logs, means = segment_log(4000, seed=5)
    logs = with_event_ids(logs)
    table = soft_target(logs)
    truth = float(np.mean(np.sum(table * means, axis=1)))
    np.save(tmp_path / "p.npy", table)
    np.savez(tmp_path / "p.npz", other=np.zeros(1), mine=table)
    shuffled = np.random.default_rng(0).permutation(logs.n)
    ids = [logs.event_ids[k] for k in shuffled]  # type: ignore[index]
    extra = np.vstack([table[shuffled], [[1.0, 0.0, 0.0]]])  # a row the log does not have
    write_jsonl(tmp_path / "p.jsonl", extra, [*ids, "not-in-the-log"])
    pq.write_table(
        pa.table({"event_id": ids, "probabilities": table[shuffled].tolist()}),
        tmp_path / "p.parquet",
    )
    (tmp_path / "mine.py").write_text(
        "import numpy as np\n\n"
        "def soft(logs):\n"
        "    seg = np.array([int(c['user']['segment'][1]) for c in logs.contexts])\n"
        "    return np.where(np.arange(3)[None, :] == seg[:, None], 0.6, 0.2)\n"
    )
    sources: list[TargetLike] = [
        f"file:{tmp_path / 'p.npy'}",
        f"file:{tmp_path / 'p.npz'}#mine",
        f"file:{tmp_path / 'p.jsonl'}",
        f"file:{tmp_path / 'p.parquet'}",
        f"callable:{tmp_path / 'mine.py'}:soft",
        table,
        soft_target,
    ]
    for source in sources:
        target = build_target(source, logs)
        np.testing.assert_allclose(target.probabilities.probabilities, table, err_msg=str(source))
        assert target.running_value is None
    estimate = IPS().estimate(logs, target.probabilities)
    assert estimate.ci is not None
    assert truth in estimate.ci
    assert estimate.value == pytest.approx(truth, abs=3 * estimate.std_error)
    assert abs(truth - (GOOD + 2 * BAD) / 3) > 4 * estimate.std_error  # not uniform's value


def test_file_rows_follow_the_log_by_event_id_or_in_order(tmp_path: Path) -> None:
    """With ids on both sides rows match by id (extras ignored); else by order, counts equal."""
    logs = small_log()
    table = np.array([[0.25, 0.75, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    path = tmp_path / "p.jsonl"
    write_jsonl(path, table, None)
    np.testing.assert_allclose(
        build_target(f"file:{path}", logs).probabilities.probabilities, table
    )
    keyed = replace(logs, event_ids=["x", "y", "z"])
    write_jsonl(path, np.vstack([table[::-1], table[:1]]), ["z", "y", "x", "extra"])
    np.testing.assert_allclose(
        build_target(f"file:{path}", keyed).probabilities.probabilities, table
    )
    # A row may list only its offered actions: padding is implied.
    path.write_text(
        '{"probabilities": [0.5, 0.5]}\n{"probabilities": [0, 1, 0]}\n{"probabilities": [1, 0]}\n'
    )
    assert build_target(f"file:{path}", logs).probabilities.at_chosen().tolist() == [0.5, 0, 0]


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        ([[0.5, 0.5, 0], [0.2, 0.4, 0.4]], r"holds 2 rows and the log 3; .* in order"),
        ([[0.5, 0.5], [0.2, 0.4], [0.5, 0.5]], r"must have shape \(3, K\) with K >= 3"),
        ([[0.5, 0.5, 0], [0.2, 0.4, 0.3], [1, 0, 0]], r"row 1: probabilities must sum to 1"),
        ([[0.5, 0.5, 0], [1.2, -0.2, 0], [1, 0, 0]], r"row 1: probabilities must be >= 0"),
        ([[0.5, 0.5, 0], [1, 0, 0], [0.5, 0.25, 0.25]], r"row 2: .* 0 past the row's offered"),
        ([[0.5, 0.5, 0], [1, 0, 0], [np.nan, 1, 0]], r"row 2: probabilities must be finite"),
        ([[0.5, 0.5, 0, 0], [1, 0, 0, 0], [1, 0, 0, 1e-3]], r"row 2: .* 0 past the row's"),
    ],
)
def test_bad_probabilities_are_refused_naming_the_file_row_and_rule(
    tmp_path: Path, content: list[list[float]], rule: str
) -> None:
    """Row count, width, sum, sign, padding, finiteness: LogFormatError naming file, row, rule."""
    path = tmp_path / "bad.npy"
    np.save(path, np.array(content, dtype=float))
    with pytest.raises(LogFormatError, match=rf"target 'file:.*bad\.npy': .*{rule}"):
        build_target(f"file:{path}", small_log())


@pytest.mark.parametrize(
    ("name", "text", "error", "rule"),
    [
        ("p.csv", "0.5,0.5", ConfigurationError, r"must end in one of \.jsonl"),
        ("p.jsonl", "{oops\n", LogFormatError, r"line 1: not JSON"),
        ("p.jsonl", '{"probabilities": [0.5, 0.5]}\n[1]\n', LogFormatError, r"line 2: must be an"),
        ("p.jsonl", '{"probabilities": ["a"]}\n', LogFormatError, r"line 1: .* numbers only"),
        ("p.jsonl", '{"probabilities": [1], "event_id": 3}\n', LogFormatError, r"must be a string"),
        ("p.jsonl", '{"probabilities": [1]}\n', LogFormatError, r"holds 1 rows and the log 3"),
    ],
)
def test_bad_files_are_refused_naming_the_file_and_rule(
    tmp_path: Path, name: str, text: str, error: type[Exception], rule: str
) -> None:
    """Unknown formats, unreadable lines, wrong types and counts name the spec and the line."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(error, match=rf"target 'file:.*{name}': .*{rule}"):
        build_target(f"file:{path}", small_log())


def test_event_id_matching_refuses_missing_and_repeated_ids(tmp_path: Path) -> None:
    """A log row whose id the file lacks, or an id given twice, is named."""
    logs = replace(small_log(), event_ids=["x", "y", "z"])
    path = tmp_path / "p.jsonl"
    write_jsonl(path, np.tile([1.0, 0, 0], (3, 1)), ["x", "y", "q"])
    with pytest.raises(LogFormatError, match=r"row 2: the log's event id 'z' is not in the file"):
        build_target(f"file:{path}", logs)
    write_jsonl(path, np.tile([1.0, 0, 0], (4, 1)), ["x", "y", "z", "y"])
    with pytest.raises(LogFormatError, match=r"event id 'y' is given twice \(rows 1 and 3\)"):
        build_target(f"file:{path}", logs)
    np.savez(tmp_path / "p.npz", a=np.zeros((3, 3)), b=np.zeros((3, 3)))
    with pytest.raises(
        LogFormatError, match=r"holds no array 'probabilities'; it holds \['a', 'b'\]"
    ):
        build_target(f"file:{tmp_path / 'p.npz'}", logs)
    with pytest.raises(ConfigurationError, match=r"cannot read .*missing\.npy"):
        build_target(f"file:{tmp_path / 'missing.npy'}", logs)


def test_functions_failing_to_import_or_answering_wrongly_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Import errors, missing names, raised errors and wrong shapes name the spec."""
    logs = small_log()
    (tmp_path / "experiment_targets.py").write_text(
        "import numpy as np\n"
        "def first(logs):\n"
        "    out = np.zeros((logs.n, logs.width))\n"
        "    out[:, 0] = 1.0\n"
        "    return out\n"
        "def ragged(logs):\n"
        "    return [[1.0], [1.0, 0.0]]\n"
        "def broken(logs):\n"
        "    raise KeyError('segment')\n"
        "NOT_A_FUNCTION = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    first = build_target("callable:experiment_targets:first", logs).probabilities
    assert first.at_chosen().tolist() == [0.0, 1.0, 0.0]
    cases = [
        ("callable:no_such_module_xyz:f", ConfigurationError, "cannot import 'no_such_module_xyz'"),
        ("callable:experiment_targets:missing", ConfigurationError, "has no attribute 'missing'"),
        ("callable:experiment_targets:NOT_A_FUNCTION", ConfigurationError, "3 is not callable"),
        ("callable:experiment_targets:broken", ConfigurationError, "raised KeyError: 'segment'"),
        ("callable:experiment_targets:ragged", LogFormatError, r"\(its return value\): must be"),
        (f"callable:{tmp_path / 'nope.py'}:f", ConfigurationError, "no Python file at"),
    ]
    for spec, error, rule in cases:
        with pytest.raises(error, match=rf"target '{re.escape(spec)}'.*{rule}"):
            build_target(spec, logs)
    with pytest.raises(ConfigurationError, match="must be callable:MODULE:FUNCTION"):
        parse_target("callable:only_a_module")


def test_a_model_vw_saved_is_evaluated_as_vw_predicts(tmp_path: Path) -> None:
    """vw-model:PATH gives VW's own pmf from the file on every row, and learns nothing."""
    train, _ = segment_log(800, seed=6)
    path = tmp_path / "model.vw"
    actions = [Action(i, f) for i, f in zip(IDS, ACTION_FEATURES, strict=True)]
    vw = pyvw.Workspace(f"--cb_explore_adf --epsilon 0.1 -q ca --quiet -f {path}")
    for i in range(train.n):
        outcome = (int(train.chosen[i]), reward_to_cost(float(train.reward[i])), 1 / 3)
        examples = vw.parse(example_text(to_vw_lines(train.contexts[i], actions, outcome)))  # type: ignore[index]
        vw.learn(examples)
        vw.finish_example(examples)
    vw.finish()
    logs, means = segment_log(1500, seed=7)
    target = build_target(f"vw-model:{path}", logs)
    reader = pyvw.Workspace(f"--quiet -i {path}")
    for i in range(0, logs.n, 97):
        examples = reader.parse(example_text(to_vw_lines(logs.contexts[i], actions)))  # type: ignore[index]
        reader.predict(examples)
        expected = examples[0].get_action_scores()
        reader.finish_example(examples)
        np.testing.assert_allclose(target.probabilities.probabilities[i], expected, atol=1e-12)
    reader.finish()
    table = target.probabilities.probabilities
    truth = float(np.mean(np.sum(table * means, axis=1)))
    assert truth > 0.7  # what the training log taught it
    estimate = IPS().estimate(logs, target.probabilities)
    assert estimate.ci is not None
    assert truth in estimate.ci
    not_vw = tmp_path / "not.vw"
    not_vw.write_bytes(b"\x07\x00\x00\x00garbage")
    with pytest.raises(ConfigurationError, match=r"target 'vw-model:.*not\.vw': .*VW model"):
        build_target(f"vw-model:{not_vw}", logs)
    multi = tmp_path / "ccb.vw"
    pyvw.Workspace(f"--ccb_explore_adf --quiet -f {multi}").finish()
    with pytest.raises(ConfigurationError, match=r"target 'vw-model:.*ccb\.vw': .*multi-slot"):
        build_target(f"vw-model:{multi}", logs)


def test_files_past_the_size_bound_are_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target file or VW model larger than MAX_FILE_BYTES is refused naming its size."""
    path = tmp_path / "p.npy"
    np.save(path, np.tile([1.0, 0.0, 0.0], (3, 1)))
    monkeypatch.setattr(targets, "MAX_FILE_BYTES", 64)
    for spec in (f"file:{path}", f"vw-model:{path}"):
        with pytest.raises(
            ConfigurationError,
            match=rf"^target {re.escape(repr(spec))}: \S*p\.npy is \d+ bytes, more than 64$",
        ):
            build_target(spec, small_log())
