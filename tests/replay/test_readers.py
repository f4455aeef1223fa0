"""Reading decision logs (our DSJSON, Personalizer's, JSON lines, Parquet) and exporting them."""

from __future__ import annotations

import gzip
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bandit.errors import ConfigurationError, LogFormatError
from bandit.wire.schemas import Decision, RankRequest, TrainingExample
from policies import Action, Policy, decide_ranking, make_policy
from policies.vw import VWPolicy
from policies.vwtext import to_vw_lines
from replay import LoggedDecisions
from replay.readers import read_log, to_dsjson, to_jsonl, to_obp, to_parquet, to_vw_text
from streams.sink import DecisionLogWriter
from tests.policies import toy

START = datetime(2026, 11, 27, 23, 15, tzinfo=UTC)

# Ids, values and names that need escaping in VW's text and DSJSON, or travel under
# DSJSON's hidden keys (`_text` for strings, `_sb` for numbers named with a leading `_`).
ACTIONS = [
    Action(
        f"item:{j}",
        {
            "item": {"kind": f"k {j}|50%", "size": 0.25 * (j + 1), "_rank": j, "_label": f"x={j}"},
            "_meta": {"fresh": j % 2},
        },
    )
    for j in range(toy.N_ACTIONS)
]


@dataclass
class Logged:
    """Decisions a policy made and learned, as the sink wrote them."""

    examples: list[TrainingExample]
    directory: Path


def _decide(policy: Policy, rounds: int, seed: int) -> list[TrainingExample]:
    """Let `policy` decide and learn `rounds` toy decisions; return them joined with rewards."""
    rng = random.Random(seed)
    examples = []
    for t in range(rounds):
        segment = rng.randrange(toy.N_SEGMENTS)
        request = RankRequest.model_validate(
            {
                "event_id": f"evt-{seed}-{t}",
                "context": {
                    "user": {
                        "segment": f"s{segment}",
                        "activity": 0.5 + rng.random() * 0.1,
                        "note": "a: b=c",
                        "member": rng.random() < 0.5,
                    },
                },
                "actions": [{"id": a.id, "features": a.features} for a in ACTIONS],
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
        policy.learn(seen, candidates, choice.index, reward, choice.probability)
        examples.append(
            TrainingExample(
                event_id=decision.event_id,
                decision=decision,
                reward=reward,
                reward_count=1,
                default_reward=False,
            )
        )
    return examples


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    """300 VW and 100 LinTS decisions written by the sink into several rotated files."""
    examples = _decide(VWPolicy(seed=1), 300, seed=1) + _decide(make_policy("lints"), 100, seed=2)
    directory = tmp_path_factory.mktemp("log")
    with DecisionLogWriter(directory, 60_000, clock=lambda: START) as writer:
        for start in range(0, len(examples), 50):
            writer.write(examples[start : start + 50])
        assert len(writer.files()) > 2
    return Logged(examples, directory)


def _expected(examples: list[TrainingExample]) -> dict[str, Any]:
    """The arrays a reader must return for `examples`, probabilities in offer order."""
    width = max(len(e.decision.actions) for e in examples)
    probabilities = np.zeros((len(examples), width))
    for i, example in enumerate(examples):
        by_id = {entry.id: entry.probability for entry in example.decision.ranking}
        for j, action in enumerate(example.decision.actions):
            probabilities[i, j] = by_id[action.id]
    return {
        "n_actions": np.array([len(e.decision.actions) for e in examples]),
        "chosen": np.array([e.decision.chosen_index for e in examples]),
        "propensity": np.array([e.decision.probability for e in examples]),
        "reward": np.array([e.reward for e in examples]),
        "probabilities": probabilities,
        "action_ids": [[a.id for a in e.decision.actions] for e in examples],
        "contexts": [e.decision.context for e in examples],
        "action_features": [[a.features for a in e.decision.actions] for e in examples],
        "event_ids": [e.decision.event_id for e in examples],
    }


def _assert_same(logs: LoggedDecisions, expected: dict[str, Any]) -> None:
    for name in ("n_actions", "chosen", "propensity", "reward", "probabilities"):
        np.testing.assert_array_equal(getattr(logs, name), expected[name], err_msg=name)
    for name in ("action_ids", "contexts", "action_features", "event_ids"):
        assert [_plain(x) for x in getattr(logs, name)] == expected[name], name


def _plain(value: Any) -> Any:
    """Lists and dicts all the way down (the sink's values come from pydantic models)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _run_vw(*arguments: str) -> int:
    """Run VW's command line; return the number of examples it reports."""
    done = subprocess.run(
        [sys.executable, "-m", "vowpalwabbit", *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    found = re.search(r"number of examples = (\d+)", output)
    assert found is not None, output
    return int(found.group(1))


# -- our own DSJSON -------------------------------------------------------------------------


def test_sink_log_round_trips_exactly(logged: Logged) -> None:
    """The sink's rotated files read back as the decisions made, probabilities in offer order."""
    result = read_log(logged.directory)
    assert result.rows_read == result.rows_kept == len(logged.examples)
    assert result.skipped == {}
    assert len(result.files) > 2
    _assert_same(result.logs, _expected(logged.examples))


def test_rank_order_differs_from_offer_order_in_the_log(logged: Logged) -> None:
    """The log's `p` is in rank order, so reading it back is a real reordering."""
    lines = [
        json.loads(line)
        for path in logged.directory.glob("*.dsjson")
        for line in path.read_text().splitlines()
    ]
    assert all(line["a"][0] == line["_labelIndex"] + 1 for line in lines)
    assert sum(line["a"] != sorted(line["a"]) for line in lines) > len(lines) / 2


def test_redelivered_line_keeps_the_first(logged: Logged, tmp_path: Path) -> None:
    """A line repeated in a later file (redelivery past the sink's window) is read once."""
    files = sorted(p for p in logged.directory.glob("*.dsjson"))
    copies = [tmp_path / p.name for p in files]
    for source, copy in zip(files, copies, strict=True):
        copy.write_bytes(source.read_bytes())
    with copies[-1].open("a") as file:
        file.write(files[0].read_text().splitlines()[3] + "\n")
    result = read_log(tmp_path)
    assert result.rows_read == len(logged.examples) + 1
    assert result.skipped == {"duplicate": 1}
    _assert_same(result.logs, _expected(logged.examples))


def test_workers_folders_are_read_and_interleaved_by_when_files_were_opened(
    tmp_path: Path,
) -> None:
    """`decisions/worker-N/` of `streambandit up`: every worker's rows, files by open time."""
    examples = _decide(VWPolicy(seed=4), 40, seed=4)
    clocks = {  # worker-1 opens its files at 0 s and 20 s, worker-2 at 10 s and 30 s
        "worker-1": iter([START, START + timedelta(seconds=20)]),
        "worker-2": iter([START + timedelta(seconds=10), START + timedelta(seconds=30)]),
    }
    batches = {
        "worker-1": (examples[0:10], examples[20:30]),
        "worker-2": (examples[10:20], examples[30:40]),
    }
    for worker, parts in batches.items():
        folder = tmp_path / "decisions" / worker
        for part in parts:  # one writer per file, as after a restart
            opened = next(clocks[worker])
            with DecisionLogWriter(folder, 60_000, clock=lambda at=opened: at) as writer:
                writer.write(part)
    (tmp_path / "decisions" / "worker-2" / "notes.txt").write_text("not a log\n")
    result = read_log(tmp_path / "decisions")
    assert [p.parent.name for p in result.files] == ["worker-1", "worker-2"] * 2
    _assert_same(result.logs, _expected(examples))


def test_features_off_keeps_arrays_and_ids(logged: Logged) -> None:
    """``features=False`` keeps the arrays, ids and event ids, and no features."""
    result = read_log(logged.directory, features=False)
    expected = _expected(logged.examples)
    np.testing.assert_array_equal(result.logs.probabilities, expected["probabilities"])
    assert result.logs.action_ids == expected["action_ids"]
    assert result.logs.contexts is None
    assert result.logs.action_features is None


def test_progress_reports_rows_read(logged: Logged) -> None:
    """The progress callback gets growing row counts, ending at the rows read."""
    seen: list[int] = []
    result = read_log(logged.directory, progress=seen.append)
    assert seen[-1] == result.rows_read
    assert seen == sorted(seen)


def test_gzipped_log_reads_the_same(logged: Logged, tmp_path: Path) -> None:
    """A ``.dsjson.gz`` file reads as the plain file does."""
    plain = sorted(logged.directory.glob("*.dsjson"))[0]
    packed = tmp_path / (plain.name + ".gz")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = read_log(plain), read_log(packed)
    np.testing.assert_array_equal(a.logs.probabilities, b.logs.probabilities)
    assert a.logs.contexts == b.logs.contexts


# -- Personalizer / VW DSJSON ---------------------------------------------------------------

# Hand-written in the shape a Personalizer loop exports: ids in `_tag` (and a namespace),
# namespaces as objects or arrays of objects, costs negative rewards, `p` in `a` order.
PERSONALIZER = [
    {
        "_label_cost": -1.0,
        "_label_probability": 0.7,
        "_label_Action": 2,
        "_labelIndex": 1,
        "o": [{"v": 1.0, "EventId": "pz-1", "ActionTaken": False}],
        "Timestamp": "2024-03-01T08:00:01.1234567Z",
        "Version": "1",
        "EventId": "pz-1",
        "a": [2, 1, 3],
        "c": {
            "Device": {"os": "android", "battery": 0.4},
            "Visit": [{"daypart": "morning", "returning": True, "weekend": False}],
            "_multi": [
                {"_tag": "news", "i": {"constant": 1, "id": "news"}, "Item": {"length": 3}},
                {"_tag": "sports", "i": {"constant": 1, "id": "sports"}, "Item": {"length": 1}},
                {
                    "_tag": "weather",
                    "i": {"constant": 1, "id": "weather"},
                    "Item": [{"length": 2, "region": "north"}],
                },
            ],
        },
        "p": [0.7, 0.2, 0.1],
        "VWState": {"m": "model-7/abc"},
        "_original_label_cost": -1.0,
    },
    {
        "_label_cost": 0.0,
        "_label_probability": 0.1,
        "_label_Action": 3,
        "_labelIndex": 2,
        "o": [],
        "Timestamp": "2024-03-01T08:00:02.0000000Z",
        "Version": "1",
        "EventId": "pz-2",
        "a": [3, 1, 2],
        "c": {
            "Device": {"os": "ios", "battery": 0.9},
            "_multi": [
                {"_tag": "news", "i": {"constant": 1, "id": "news"}, "Item": {"length": 3}},
                {"_tag": "sports", "i": {"constant": 1, "id": "sports"}, "Item": {"length": 1}},
                {
                    "_tag": "weather",
                    "i": {"constant": 1, "id": "weather"},
                    "Item": [{"length": 2, "region": "north"}],
                },
            ],
        },
        "p": [0.1, 0.6, 0.3],
        "VWState": {"m": "model-7/abc"},
        "_original_label_cost": -0.5,
    },
    {  # deferred, never activated: VW does not learn it, replay must not evaluate on it
        "_label_cost": 0.0,
        "_label_probability": 0.5,
        "_label_Action": 1,
        "_labelIndex": 0,
        "_skipLearn": True,
        "o": [],
        "Timestamp": "2024-03-01T08:00:03.0000000Z",
        "Version": "1",
        "EventId": "pz-3",
        "a": [1, 2],
        "c": {"Device": {"os": "ios"}, "_multi": [{"_tag": "news"}, {"_tag": "sports"}]},
        "p": [0.5, 0.5],
        "VWState": {"m": "model-7/abc"},
        "_original_label_cost": 0.0,
    },
]


@pytest.fixture
def personalizer_log(tmp_path: Path) -> Path:
    path = tmp_path / "personalizer.json"
    path.write_text("".join(json.dumps(record) + "\n" for record in PERSONALIZER))
    return path


def test_personalizer_sample_reads_in_offer_order(personalizer_log: Path) -> None:
    """Personalizer's rows read with `p` in offer order, reward = -cost, skipLearn left out."""
    result = read_log(personalizer_log)
    logs = result.logs
    assert result.skipped == {"skip_learn": 1}
    np.testing.assert_array_equal(logs.chosen, [1, 2])
    np.testing.assert_array_equal(logs.propensity, [0.7, 0.1])
    np.testing.assert_array_equal(logs.reward, [1.0, -0.0])
    np.testing.assert_array_equal(logs.probabilities, [[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    assert logs.action_ids == [["news", "sports", "weather"]] * 2
    assert logs.event_ids == ["pz-1", "pz-2"]


def test_personalizer_features_group_as_vw_does(personalizer_log: Path) -> None:
    """Objects are namespaces, arrays of objects add to theirs, true is 1, false is left out."""
    logs = read_log(personalizer_log).logs
    assert logs.contexts is not None
    assert logs.action_features is not None
    assert logs.contexts[0] == {
        "Device": {"os": "android", "battery": 0.4},
        "Visit": {"daypart": "morning", "returning": 1},
    }
    assert logs.action_features[0][2] == {
        "i": {"constant": 1, "id": "weather"},
        "Item": {"length": 2, "region": "north"},
    }


def test_original_label_cost_is_read_when_asked(personalizer_log: Path) -> None:
    """``cost_key="_original_label_cost"`` reads the cost before Personalizer's learning mode."""
    logs = read_log(personalizer_log, cost_key="_original_label_cost").logs
    np.testing.assert_array_equal(logs.reward, [1.0, 0.5])


def test_personalizer_sample_is_dsjson_vw_reads(personalizer_log: Path) -> None:
    """VW's own DSJSON parser reads the hand-written sample (it is the real shape)."""
    count = _run_vw("--cb_explore_adf", "--dsjson", "--strict_parse", "-d", str(personalizer_log))
    assert count == 2  # VW skips the `_skipLearn` row too


# -- JSON lines and Parquet -----------------------------------------------------------------


def test_jsonl_round_trip(logged: Logged, tmp_path: Path) -> None:
    """to_jsonl then read_log gives back every column exactly."""
    logs = read_log(logged.directory).logs
    path = tmp_path / "log.jsonl"
    assert to_jsonl(logs, path) == logs.n
    result = read_log(path)
    assert result.files == (path,)
    _assert_same(result.logs, _expected(logged.examples))


def test_parquet_round_trip(logged: Logged, tmp_path: Path) -> None:
    """to_parquet then read_log (told by the name) gives back every column exactly."""
    logs = read_log(logged.directory).logs
    path = tmp_path / "log.parquet"
    assert to_parquet(logs, path, row_group_size=128) == logs.n
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    _assert_same(read_log(path).logs, _expected(logged.examples))


def test_parquet_told_by_magic_bytes(logged: Logged, tmp_path: Path) -> None:
    """A Parquet file without the suffix is still recognised."""
    logs = read_log(logged.directory).logs
    path = tmp_path / "exported.bin"
    to_parquet(logs, path)
    assert read_log(path).logs.n == logs.n


def test_jsonl_schema_by_hand(tmp_path: Path) -> None:
    """Hand-written rows: ids or {id, features}, optional columns, booleans as numbers."""
    path = tmp_path / "hand.jsonl"
    rows = [
        {
            "actions": ["a", {"id": "b", "features": {"item": {"size": 2, "new": True}}}],
            "chosen": 1,
            "probability": 0.25,
            "probabilities": [0.75, 0.25],
            "reward": 3.5,
            "context": {"user": {"tier": "gold"}},
            "event_id": "h1",
        },
        {"actions": ["a", "b", "c"], "chosen": 0, "probability": 0.5, "reward": 0},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    logs = read_log(path).logs
    np.testing.assert_array_equal(logs.n_actions, [2, 3])
    assert logs.probabilities is None  # the second row has none
    assert logs.event_ids is None
    assert logs.action_ids == [["a", "b"], ["a", "b", "c"]]
    assert logs.contexts == [{"user": {"tier": "gold"}}, {}]
    assert logs.action_features == [[{}, {"item": {"size": 2, "new": 1.0}}], [{}, {}, {}]]


def test_parquet_written_by_hand(tmp_path: Path) -> None:
    """Parquet with plain id lists and no optional columns reads as the JSON lines would."""
    path = tmp_path / "plain.parquet"
    table = pa.table(
        {
            "actions": [["a", "b"], ["c", "a", "b"]],
            "chosen": [0, 2],
            "probability": [0.5, 0.2],
            "reward": [1.0, 0.0],
        }
    )
    pq.write_table(table, path)
    logs = read_log(path).logs
    np.testing.assert_array_equal(logs.chosen, [0, 2])
    np.testing.assert_array_equal(logs.propensity, [0.5, 0.2])
    assert logs.probabilities is None
    assert logs.action_ids == [["a", "b"], ["c", "a", "b"]]


# -- bad rows -------------------------------------------------------------------------------


def _good_dsjson(event_id: str) -> dict[str, Any]:
    return {
        "_label_cost": -1.0,
        "_label_probability": 0.8,
        "_label_Action": 2,
        "_labelIndex": 1,
        "EventId": event_id,
        "a": [2, 1, 3],
        "p": [0.8, 0.1, 0.1],
        "c": {"U": {"x": 1}, "_multi": [{"_tag": "a"}, {"_tag": "b"}, {"_tag": "c"}]},
    }


def _good_jsonl(event_id: str) -> dict[str, Any]:
    return {
        "actions": ["a", "b", "c"],
        "chosen": 1,
        "probability": 0.5,
        "probabilities": [0.25, 0.5, 0.25],
        "reward": 1.0,
        "event_id": event_id,
    }


def _set(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda record: record.update(changes)


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def drop(record: dict[str, Any]) -> None:
        for key in keys:
            del record[key]

    return drop


def _actions(*tags: str) -> Callable[[dict[str, Any]], None]:
    return lambda record: record["c"].update(_multi=[{"_tag": tag} for tag in tags])


def _label_action_only(value: int) -> Callable[[dict[str, Any]], None]:
    def change(record: dict[str, Any]) -> None:
        del record["_labelIndex"]
        record["_label_Action"] = value

    return change


@dataclass
class Bad:
    """A bad row: how it breaks a good one, the reason it is counted under, the message."""

    name: str
    kind: str
    change: Callable[[dict[str, Any]], None] | str
    reason: str
    match: str


# fmt: off
BAD_ROWS = [
    Bad("p above 1", "dsjson", _set(p=[1.5, 0.1, 0.1]), "bad_probability",
        r"`p` must hold probabilities in \(0, 1\], got p\[0\] = 1.5"),
    Bad("p zero", "dsjson", _set(p=[0.8, 0.2, 0.0]), "bad_probability",
        r"`p` must hold probabilities in \(0, 1\], got p\[2\] = 0.0"),
    Bad("p text", "dsjson", _set(p=[0.8, "0.1", 0.1]), "bad_probability",
        r"`p` must hold probabilities in \(0, 1\], got p\[1\] = '0.1'"),
    Bad("p sum", "dsjson", _set(p=[0.8, 0.2, 0.1]), "bad_probability",
        r"`p` must sum to 1 within 1e-06, got 1.1"),
    Bad("label probability", "dsjson", _set(_label_probability=0.5), "bad_probability",
        r"`_label_probability` \(0.5\) must equal the chosen action's entry of `p` \(0.8\)"),
    Bad("no cost", "dsjson", _drop("_label_cost"), "missing_field",
        r"`_label_cost` is missing: every row needs the cost of its choice"),
    Bad("cost text", "dsjson", _set(_label_cost="high"), "bad_reward",
        r"`_label_cost` must be a finite number, got 'high'"),
    Bad("no label", "dsjson", _drop("_labelIndex", "_label_Action"), "missing_field",
        r"`_labelIndex` and `_label_Action` are missing"),
    Bad("ragged p", "dsjson", _set(p=[0.8, 0.2]), "ragged",
        r"`p` must hold one probability per action \(3\), got 2"),
    Bad("ragged a", "dsjson", _set(a=[2, 1]), "ragged",
        r"`a` must list each of the 3 actions in `c._multi` once, got 2 entries"),
    Bad("ragged actions", "dsjson", _actions("a", "b"), "ragged",
        r"`a` must list each of the 2 actions in `c._multi` once, got 3 entries"),
    Bad("index out of range", "dsjson", _set(_labelIndex=3, _label_Action=4), "bad_chosen",
        r"`_labelIndex` must be in \[0, 3\) for 3 actions, got 3"),
    Bad("action out of range", "dsjson", _label_action_only(0), "bad_chosen",
        r"`_label_Action` must be in \[1, 3\] for 3 actions, got 0"),
    Bad("label disagrees", "dsjson", _set(_label_Action=3), "bad_chosen",
        r"`_label_Action` \(3\) must equal `_labelIndex` \+ 1 \(1 \+ 1\)"),
    Bad("a repeats", "dsjson", _set(a=[2, 2, 3]), "bad_actions",
        r"`a` must list each action once, got 2 twice"),
    Bad("a out of range", "dsjson", _set(a=[2, 1, 4]), "bad_actions",
        r"`a` must hold action numbers in \[1, 3\], got a\[2\] = 4"),
    Bad("no actions", "dsjson", _actions(), "bad_actions",
        r"`c._multi` must list the offered actions \(at least one\), got \[\]"),
    Bad("same ids", "dsjson", _actions("a", "a", "c"), "bad_actions",
        r"the offered action ids must be distinct, got \['a', 'a', 'c'\]"),
    Bad("event id number", "dsjson", _set(EventId=5), "bad_event_id",
        r"`EventId` must be a string, got 5"),
    Bad("invalid json", "dsjson", '{"_label_cost": -1.0, "a": [1,', "invalid_json",
        r"the line is not valid JSON: "),
    Bad("not an object", "dsjson", "[1, 2]", "invalid_json",
        r"a DSJSON line must hold a JSON object, got \[1, 2\]"),
    Bad("probability zero", "jsonl", _set(probability=0.0), "bad_probability",
        r"`probability` must be in \(0, 1\], got 0.0"),
    Bad("probability above 1", "jsonl", _set(probability=1.2), "bad_probability",
        r"`probability` must be in \(0, 1\], got 1.2"),
    Bad("no reward", "jsonl", _drop("reward"), "missing_field",
        r"`reward` is missing: every row needs its observed reward"),
    Bad("reward text", "jsonl", _set(reward="1"), "bad_reward",
        r"`reward` must be a finite number, got '1'"),
    Bad("no chosen", "jsonl", _drop("chosen"), "missing_field", r"`chosen` is missing"),
    Bad("chosen out of range", "jsonl", _set(chosen=3), "bad_chosen",
        r"`chosen` must be an index in \[0, 3\), got 3"),
    Bad("chosen negative", "jsonl", _set(chosen=-1), "bad_chosen",
        r"`chosen` must be an index in \[0, 3\), got -1"),
    Bad("ragged probabilities", "jsonl", _set(probabilities=[0.5, 0.5]), "ragged",
        r"`probabilities` must hold one probability per action \(3\), got 2"),
    Bad("probabilities disagree", "jsonl", _set(probability=0.25), "bad_probability",
        r"`probability` \(0.25\) must equal `probabilities\[1\]` \(0.5\)"),
    Bad("probabilities sum", "jsonl", _set(probabilities=[0.5, 0.5, 0.5]), "bad_probability",
        r"`probabilities` must sum to 1 within 1e-06, got 1.5"),
    Bad("no actions", "jsonl", _set(actions=[]), "bad_actions",
        r"`actions` must be a non-empty list of ids or \{id, features\}, got \[\]"),
    Bad("action without id", "jsonl", _set(actions=["a", {"features": {}}, "c"]),
        "bad_actions", r"`actions\[1\]` must be an id or an object with a string `id`"),
    Bad("same ids", "jsonl", _set(actions=["a", "b", "a"]), "bad_actions",
        r"the offered action ids must be distinct"),
    Bad("feature list", "jsonl", _set(context={"u": {"x": [1]}}), "bad_features",
        r"`context.u.x` must be a string or a finite number, got \[1\]"),
    Bad("invalid json", "jsonl", '{"actions": ["a"], chosen: 0}', "invalid_json",
        r"the line is not valid JSON: "),
]
# fmt: on
def _bad_file(tmp_path: Path, bad: Bad) -> Path:
    """A good row, the bad one on line 2, another good row."""
    good = _good_dsjson if bad.kind == "dsjson" else _good_jsonl
    if isinstance(bad.change, str):
        middle = bad.change
    else:
        record = good("e2")
        bad.change(record)
        middle = json.dumps(record)
    path = tmp_path / f"bad.{bad.kind}"
    path.write_text("\n".join([json.dumps(good("e1")), middle, json.dumps(good("e3"))]) + "\n")
    return path


@pytest.mark.parametrize("bad", BAD_ROWS, ids=lambda bad: f"{bad.kind}: {bad.name}")
def test_bad_row_stops_the_read_naming_line_field_and_rule(tmp_path: Path, bad: Bad) -> None:
    """With on_error="stop" a bad row raises LogFormatError: file:line, the field, the rule."""
    path = _bad_file(tmp_path, bad)
    with pytest.raises(LogFormatError, match=re.escape(f"{path}:2: ") + bad.match):
        read_log(path, format=bad.kind)


@pytest.mark.parametrize("bad", BAD_ROWS, ids=lambda bad: f"{bad.kind}: {bad.name}")
def test_bad_row_is_counted_under_its_reason_when_skipping(tmp_path: Path, bad: Bad) -> None:
    """With on_error="skip" the bad row is left out and counted; the good rows are kept."""
    path = _bad_file(tmp_path, bad)
    result = read_log(path, on_error="skip")
    assert result.rows_read == 3
    assert result.rows_kept == 2
    assert result.skipped == {bad.reason: 1}
    assert result.logs.event_ids == ["e1", "e3"]
    assert len(result.messages) == 1
    assert re.match(re.escape(f"{path}:2: ") + bad.match, result.messages[0])


def test_skip_mode_counts_many_reasons(tmp_path: Path) -> None:
    """Skipping counts every reason; rows read = rows kept + rows skipped."""
    lines = []
    for i in range(30):
        record = _good_dsjson(f"e{i}")
        if i % 3 == 1:
            record["p"] = [0.8, 0.2]
        elif i % 5 == 2:
            del record["_label_cost"]
        lines.append(json.dumps(record))
    lines += ["{oops", json.dumps(_good_dsjson("e0"))]
    path = tmp_path / "mixed.dsjson"
    path.write_text("\n".join(lines) + "\n")
    result = read_log(path, on_error="skip")
    assert result.skipped == {"ragged": 10, "missing_field": 4, "invalid_json": 1, "duplicate": 1}
    assert result.rows_read == 32 == result.rows_kept + result.rows_skipped
    assert result.rows_kept == 16


def test_bad_parquet_row_names_its_row(tmp_path: Path) -> None:
    """A bad Parquet row is named by file and 0-based row index."""
    path = tmp_path / "bad.parquet"
    table = pa.table(
        {
            "actions": [["a", "b"], ["a", "b"]],
            "chosen": [0, 1],
            "probability": [0.5, 1.5],
            "reward": [1.0, 0.0],
        }
    )
    pq.write_table(table, path)
    with pytest.raises(LogFormatError, match=re.escape(f"{path}[row 1]: `probability`")):
        read_log(path)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    """A JSON file with neither DSJSON nor JSON-lines keys asks for `format=`."""
    path = tmp_path / "other.json"
    path.write_text('{"user": 1}\n')
    with pytest.raises(LogFormatError, match=r"cannot tell the log format.*pass format="):
        read_log(path)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"format": "csv"},
            r"`format` must be one of \['auto', 'dsjson', 'jsonl', 'parquet', 'obd'\]",
        ),
        ({"on_error": "ignore"}, r"`on_error` must be one of \['stop', 'skip'\], got 'ignore'"),
        ({"cost_key": "cost"}, r"`cost_key` must be one of"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any], match: str) -> None:
    """Arguments outside their choices raise ConfigurationError naming them."""
    path = tmp_path / "log.jsonl"
    path.write_text("")
    with pytest.raises(ConfigurationError, match=match):
        read_log(path, **options)


def test_missing_file_is_named(tmp_path: Path) -> None:
    """A path that does not exist raises, naming it."""
    with pytest.raises(LogFormatError, match="no such file or directory"):
        read_log(tmp_path / "absent.dsjson")


# -- exports --------------------------------------------------------------------------------


def test_vw_text_export_is_what_the_policy_learned(logged: Logged, tmp_path: Path) -> None:
    """Each exported example is the text VWPolicy learned that decision from.

    Features named with a leading ``_`` travel under DSJSON's ``_text`` and ``_sb`` keys,
    after the namespace's others, so only the order within a namespace may differ.
    """
    logs = read_log(logged.directory).logs
    path = tmp_path / "log.vw"
    assert to_vw_text(logs, path) == logs.n
    blocks = path.read_text().split("\n\n")
    assert blocks[-1] == ""
    assert len(blocks) == logs.n + 1
    for block, example in zip(blocks, logged.examples, strict=False):
        decision = example.decision
        actions = [Action(a.id, a.features) for a in decision.actions]
        label = (decision.chosen_index, -example.reward, decision.probability)
        learned = to_vw_lines(decision.context, actions, label)
        assert block.split("\n")[0] == learned[0]  # the shared line, exactly
        assert [_in_any_order(line) for line in block.split("\n")] == [
            _in_any_order(line) for line in learned
        ]


def _in_any_order(line: str) -> list[list[str]]:
    """A VW text line with the features of each namespace in sorted order."""
    return [sorted(segment.split(" ")) for segment in line.split(" |")]


def test_vw_reads_every_exported_example(logged: Logged, tmp_path: Path) -> None:
    """`python -m vowpalwabbit --cb_explore_adf` parses every exported example."""
    logs = read_log(logged.directory).logs
    path = tmp_path / "log.vw"
    to_vw_text(logs, path)
    assert _run_vw("--cb_explore_adf", "--strict_parse", "-d", str(path)) == logs.n


def test_dsjson_export_round_trips_and_vw_reads_it(tmp_path: Path) -> None:
    """to_dsjson writes a JSON-lines log back as DSJSON that VW and read_log both read."""
    source = tmp_path / "hand.jsonl"
    rows = [
        {
            "actions": ["a", {"id": "b c", "features": {"item": {"size": 2}}}],
            "chosen": i % 2,
            "probability": [0.75, 0.25][i % 2],
            "probabilities": [0.75, 0.25],
            "reward": float(i % 3),
            "context": {"user": {"tier": "gold", "age": i}},
            "event_id": f"d{i}",
        }
        for i in range(6)
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    logs = read_log(source).logs
    path = tmp_path / "log.dsjson"
    assert to_dsjson(logs, path) == 6
    back = read_log(path).logs
    for name in ("n_actions", "chosen", "propensity", "reward", "probabilities"):
        np.testing.assert_array_equal(getattr(back, name), getattr(logs, name))
    assert back.action_ids == logs.action_ids
    assert back.contexts == logs.contexts
    assert back.event_ids == logs.event_ids
    assert _run_vw("--cb_explore_adf", "--dsjson", "--strict_parse", "-d", str(path)) == 6


def test_dsjson_export_needs_the_full_distribution() -> None:
    """Without every row's distribution there is no `p` to write."""
    logs = LoggedDecisions(
        n_actions=np.array([2]),
        chosen=np.array([0]),
        propensity=np.array([0.5]),
        reward=np.array([1.0]),
    )
    with pytest.raises(LogFormatError, match="to_dsjson needs every row's full distribution"):
        to_dsjson(logs, "unused.dsjson")


def test_obp_export_keys_and_shapes(logged: Logged) -> None:
    """to_obp gives OBP's bandit_feedback keys, global action indices and matching shapes."""
    logs = read_log(logged.directory).logs
    feedback = to_obp(logs)
    n, k = logs.n, toy.N_ACTIONS
    assert set(feedback) >= {
        "n_rounds",
        "n_actions",
        "action",
        "position",
        "reward",
        "pscore",
        "context",
        "action_context",
        "pi_b",
    }
    assert feedback["n_rounds"] == n
    assert feedback["n_actions"] == k
    assert feedback["position"] is None
    assert feedback["action"].shape == feedback["reward"].shape == feedback["pscore"].shape == (n,)
    assert feedback["action_ids"] == [a.id for a in ACTIONS]
    np.testing.assert_array_equal(feedback["action"], logs.chosen)  # same offer order
    np.testing.assert_array_equal(feedback["pscore"], logs.propensity)
    assert feedback["pi_b"].shape == (n, k, 1)
    np.testing.assert_allclose(feedback["pi_b"].sum(axis=1), 1.0)
    np.testing.assert_array_equal(
        feedback["pi_b"][np.arange(n), feedback["action"], 0], feedback["pscore"]
    )
    context = feedback["context"]
    assert context.shape[0] == n
    assert context.shape[1] == 6  # activity, member, note=..., segment=s0, =s1, =s2
    assert feedback["action_context"].shape[0] == k
    hashed = to_obp(logs, hash_dim=8)
    assert hashed["context"].shape == (n, 8)
    np.testing.assert_allclose(hashed["context"].sum(axis=1), context.sum(axis=1))


def test_obp_export_maps_ids_across_offers() -> None:
    """Actions offered in different orders map to one global index each."""
    logs = LoggedDecisions(
        n_actions=np.array([2, 3]),
        chosen=np.array([1, 2]),
        propensity=np.array([0.5, 0.2]),
        reward=np.array([1.0, 0.0]),
        probabilities=np.array([[0.5, 0.5, 0.0], [0.3, 0.5, 0.2]]),
        action_ids=[["b", "a"], ["c", "a", "b"]],
    )
    feedback = to_obp(logs)
    assert feedback["action_ids"] == ["b", "a", "c"]
    np.testing.assert_array_equal(feedback["action"], [1, 0])
    np.testing.assert_array_equal(feedback["pi_b"][:, :, 0], [[0.5, 0.5, 0.0], [0.2, 0.5, 0.3]])
    assert feedback["context"] is None
    assert "action_context" not in feedback


def test_empty_log_reads_as_no_rows(tmp_path: Path) -> None:
    """An empty file gives an empty, valid LoggedDecisions."""
    path = tmp_path / "empty.dsjson"
    path.write_text("\n")
    result = read_log(path)
    assert result.rows_read == 0
    assert result.logs.n == 0
