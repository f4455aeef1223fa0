"""FeatureRows: the compact form of a log's contexts, read back exactly, and fitted on alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from policies.dsjson import DSJSONReader
from policies.errors import LogFormatError
from replay import FeatureRows, HashedRidge, LoggedDecisions, read_log, to_dsjson, to_jsonl

MIXED: list[dict[str, dict[str, Any]]] = [
    {"user": {"tier": "gold", "age": 31, "score": 0.5, "member": True}},
    {},
    {"user": {"tier": "silver", "age": 2**60, "member": False}, "device": {"os": "ios"}},
    {"user": {"age": -3, "score": 0.0, "note": None}},
]


def _typed(rows: Any) -> list[Any]:
    """Rows with every value's type beside it, so 1 and 1.0 and True differ."""
    return [
        {ns: {k: (type(v).__name__, v) for k, v in values.items()} for ns, values in row.items()}
        for row in rows
    ]


def test_rows_read_back_equal_with_their_types() -> None:
    """Strings, ints (also beyond 2**53), floats, bools and None come back as they went in."""
    rows = FeatureRows.from_mappings(MIXED)
    assert len(rows) == len(MIXED)
    assert _typed(rows) == _typed(MIXED)
    assert rows == MIXED
    assert rows[-1] == MIXED[-1]


def test_take_slices_and_concat_keep_each_row() -> None:
    """take, slices and concat give the rows asked for, keys merged into one table."""
    rows = FeatureRows.from_mappings(MIXED)
    assert rows.take(np.array([3, 0, 0])) == [MIXED[3], MIXED[0], MIXED[0]]
    assert rows[1:3] == MIXED[1:3]
    joined = FeatureRows.concat([rows, FeatureRows.from_mappings([{"x": {"y": "z"}}]), rows])
    assert joined == [*MIXED, {"x": {"y": "z"}}, *MIXED]
    assert len(joined.keys) == len(rows.keys) + 1


def test_a_value_that_is_no_feature_is_refused_naming_it() -> None:
    """A list is no feature value: the error names the namespace and the feature."""
    with pytest.raises(LogFormatError, match=r"feature `user.tags` must be a string or a number"):
        FeatureRows.from_mappings([{"user": {"tags": ["a", "b"]}}])


def test_logs_take_keeps_feature_rows(tmp_path: Path) -> None:
    """LoggedDecisions.take of a read log keeps its contexts compact and equal."""
    logs = _log(40)
    path = tmp_path / "log.dsjson"
    to_dsjson(logs, path)
    read = read_log(path).logs
    assert isinstance(read.contexts, FeatureRows)
    taken = read.take(np.array([5, 1, 5]))
    assert isinstance(taken.contexts, FeatureRows)
    assert taken.contexts == [logs.contexts[5], logs.contexts[1], logs.contexts[5]]  # type: ignore[index]


def test_dsjson_contexts_are_what_the_reader_reads_line_by_line(tmp_path: Path) -> None:
    """read_log's contexts equal DSJSONReader's own dicts, row by row, types included."""
    path = tmp_path / "log.dsjson"
    to_dsjson(_log(60), path)
    reader = DSJSONReader()
    expected = [reader.line(line).context for line in path.read_bytes().splitlines()]  # type: ignore[union-attr]
    assert _typed(read_log(path).logs.contexts) == _typed(expected)


def test_jsonl_actions_with_the_same_id_and_features_share_one_dict(tmp_path: Path) -> None:
    """Equal action features are read once (the memory of wide logs); different ones apart."""
    path = tmp_path / "log.jsonl"
    rows = [
        {"actions": [{"id": "a", "features": {"i": {"s": 1}}}, {"id": "b", "features": {}}],
         "chosen": 0, "probability": 0.5, "reward": 1.0},
        {"actions": [{"id": "a", "features": {"i": {"s": 1}}}, {"id": "b", "features": None}],
         "chosen": 1, "probability": 0.5, "reward": 0.0},
        {"actions": [{"id": "a", "features": {"i": {"s": 1.0}}}, {"id": "b", "features": {}}],
         "chosen": 1, "probability": 0.5, "reward": 0.0},
    ]  # fmt: skip
    path.write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
    features = read_log(path).logs.action_features
    assert features is not None
    assert features[0][0] is features[1][0]
    assert features[2][0] is not features[0][0]  # 1.0 is not 1: read apart
    assert _typed([features[2][0]]) == [{"i": {"s": ("float", 1.0)}}]
    assert features[0][1] == features[1][1] == {}


@pytest.mark.parametrize("interactions", [True, False])
def test_the_reward_model_fits_feature_rows_as_it_fits_dicts(
    tmp_path: Path, interactions: bool
) -> None:
    """HashedRidge predicts the same, bit for bit, from a read log and from its dicts."""
    logs = _log(300)
    path = tmp_path / "log.jsonl"
    to_jsonl(logs, path)
    read = read_log(path).logs
    assert isinstance(read.contexts, FeatureRows)
    as_dicts = LoggedDecisions(
        n_actions=read.n_actions,
        chosen=read.chosen,
        propensity=read.propensity,
        reward=read.reward,
        action_ids=read.action_ids,
        contexts=list(read.contexts),
        action_features=read.action_features,
    )
    model = HashedRidge(n_features=64, interactions=interactions)
    compact = model.cross_fit(read).values
    assert np.array_equal(compact, model.cross_fit(as_dicts).values)
    assert np.isfinite(compact).all()
    assert compact.std() > 0  # the features are used


def test_the_reward_model_fit_on_mixed_values_predicts_as_flattened() -> None:
    """Zeros, None and bools are what flatten makes of them: the model sees no difference."""
    n = 200
    rng = np.random.default_rng(3)
    ages = rng.integers(0, 3, n).tolist()
    raw: list[dict[str, dict[str, Any]]] = [
        {"u": {"age": age, "gold": bool(i % 2), "z": 0.0, "none": None}}
        for i, age in enumerate(ages)
    ]
    flat: list[dict[str, dict[str, Any]]] = [
        {"u": {"age": float(age), "gold": 1.0 if i % 2 else 0.0}} for i, age in enumerate(ages)
    ]

    def logs(contexts: list[dict[str, dict[str, Any]]]) -> LoggedDecisions:
        return LoggedDecisions(
            n_actions=np.full(n, 2), chosen=np.arange(n) % 2,
            propensity=np.full(n, 0.5), reward=np.arange(n) % 3 / 2.0,
            action_ids=[["x", "y"]] * n, contexts=contexts,
        )  # fmt: skip

    model = HashedRidge(n_features=32)
    assert np.array_equal(model.cross_fit(logs(raw)).values, model.cross_fit(logs(flat)).values)


def _log(n: int) -> LoggedDecisions:
    """n rows of 3 of 5 items with features, a context of strings, numbers and bools."""
    rng = np.random.default_rng(0)
    catalogue = [{"item": {"topic": f"t{j % 2}", "size": j + 0.5}} for j in range(5)]
    offered = np.argsort(rng.random((n, 5)), axis=1)[:, :3]
    logged = rng.dirichlet(np.ones(3), size=n)
    chosen = rng.integers(0, 3, n)
    return LoggedDecisions(
        n_actions=np.full(n, 3),
        chosen=chosen,
        propensity=logged[np.arange(n), chosen],
        reward=rng.random(n),
        probabilities=logged,
        action_ids=[[f"item-{j}" for j in row] for row in offered.tolist()],
        contexts=[
            {
                "user": {"segment": "ab"[i % 2], "activity": round(float(a), 3), "n": i % 4},
                "device": {"mobile": float(i % 3 == 0)},
            }
            for i, a in enumerate(rng.random(n))
        ],
        action_features=[[catalogue[j] for j in row] for row in offered.tolist()],
        event_ids=[f"e{i}" for i in range(n)],
    )
