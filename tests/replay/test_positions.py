"""Positions in logs: read from our layouts and the Open Bandit Dataset's, and written back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policies.errors import ConfigurationError, LogFormatError
from replay import LoggedDecisions, read_log, to_jsonl, to_obp, to_parquet

ITEMS = "item_id,item_feature_0,item_feature_1\n0,-0.5,aa\n1,0.25,bb\n2,1.0,aa\n"
HEADER = ",timestamp,item_id,position,click,propensity_score,user_feature_0,user-item_affinity_0"


def _obd(folder: Path, rows: list[str], campaign: str = "all") -> Path:
    """An Open Bandit Dataset campaign folder: {campaign}/{campaign}.csv and item_context.csv."""
    where = folder / "random" / campaign
    where.mkdir(parents=True)
    (where / "item_context.csv").write_text(ITEMS)
    lines = [f"{i},2019-11-24 00:00:0{i},{row},u{i % 2},0.5" for i, row in enumerate(rows)]
    (where / f"{campaign}.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    return where


def test_positions_survive_jsonl_parquet_and_obp(tmp_path: Path) -> None:
    """Our writers write each row's position and the readers read it back."""
    logs = LoggedDecisions(
        n_actions=np.array([2, 2, 3]), chosen=np.array([1, 0, 2]),
        propensity=np.array([0.5, 0.5, 0.25]), reward=np.array([1.0, 0.0, 1.0]),
        action_ids=[["a", "b"], ["a", "b"], ["a", "b", "c"]], position=np.array([0, 1, 0]),
    )  # fmt: skip
    to_jsonl(logs, tmp_path / "log.jsonl")
    to_parquet(logs, tmp_path / "log.parquet")
    for name in ("log.jsonl", "log.parquet"):
        back = read_log(tmp_path / name).logs
        assert back.position is not None
        assert back.position.tolist() == [0, 1, 0]
    assert to_obp(logs)["position"].tolist() == [0, 1, 0]
    plain = LoggedDecisions(n_actions=np.array([2]), chosen=np.array([0]),
                            propensity=np.array([0.5]), reward=np.array([1.0]))  # fmt: skip
    assert to_obp(plain)["position"] is None
    to_jsonl(plain, tmp_path / "plain.jsonl")
    assert read_log(tmp_path / "plain.jsonl").logs.position is None


def test_a_position_some_rows_lack_is_dropped_and_a_bad_one_refused(tmp_path: Path) -> None:
    """Position is kept only when every row has one; a negative one names the rule."""
    path = tmp_path / "log.jsonl"
    row = '{"actions": ["a", "b"], "chosen": 0, "probability": 0.5, "reward": 1.0'
    path.write_text(f'{row}, "position": 1}}\n{row}}}\n')
    assert read_log(path).logs.position is None
    path.write_text(f'{row}, "position": -1}}\n{row}, "position": 2}}\n')
    with pytest.raises(LogFormatError, match=r"log.jsonl:1: `position` must be an integer >= 0"):
        read_log(path)
    skipped = read_log(path, on_error="skip")
    assert skipped.skipped == {"bad_position": 1}
    assert skipped.logs.position is not None
    assert skipped.logs.position.tolist() == [2]


def test_the_open_bandit_dataset_layout_is_read(tmp_path: Path) -> None:
    """Each CSV row is a row over every item: the item chosen, 0-based position, click."""
    folder = _obd(tmp_path, ["2,1,1,0.25", "0,3,0,0.5"])
    result = read_log(tmp_path)  # found by its layout, at any depth
    logs = result.logs
    assert result.files == (folder / "all.csv",)
    assert (logs.n, logs.width) == (2, 3)
    assert logs.chosen.tolist() == [2, 0]
    assert logs.position is not None
    assert logs.position.tolist() == [0, 2]
    assert logs.reward.tolist() == [1.0, 0.0]
    assert logs.propensity.tolist() == [0.25, 0.5]
    assert logs.probabilities is None
    assert logs.action_ids == [["0", "1", "2"]] * 2
    assert logs.contexts == [{"user": {"user_feature_0": "u0"}}, {"user": {"user_feature_0": "u1"}}]
    assert logs.action_features is not None
    assert logs.action_features[0][1] == {"item": {"item_feature_0": 0.25, "item_feature_1": "bb"}}
    assert read_log(folder / "all.csv", format="obd").logs.n == 2
    assert read_log(folder, features=False).logs.contexts is None


@pytest.mark.parametrize(
    ("row", "reason", "match"),
    [
        ("7,1,1,0.5", "bad_chosen", "`item_id` must be an item of item_context.csv"),
        ("1,0,1,0.5", "bad_position", "`position` must be an integer >= 1"),
        ("1,1.5,1,0.5", "bad_position", "`position` must be an integer >= 1"),
        ("1,1,,0.5", "bad_reward", "`click` must be a finite number"),
        ("1,1,1,0", "bad_probability", r"`propensity_score` must be in \(0, 1\]"),
        ("1,1,1,1.5", "bad_probability", r"`propensity_score` must be in \(0, 1\]"),
    ],
)
def test_a_bad_open_bandit_dataset_row_names_its_line(
    tmp_path: Path, row: str, reason: str, match: str
) -> None:
    """A bad row stops the read naming file:line and the rule, or is skipped and counted."""
    folder = _obd(tmp_path, ["0,1,0,0.5", row])
    with pytest.raises(LogFormatError, match=rf"all\.csv:3: {match}"):
        read_log(folder)
    skipped = read_log(folder, on_error="skip")
    assert (skipped.rows_read, skipped.rows_kept, skipped.skipped) == (2, 1, {reason: 1})
    assert skipped.messages[0].endswith(match.replace("\\", ""))


def test_open_bandit_dataset_errors_name_the_problem(tmp_path: Path) -> None:
    """A missing column, a missing item list or a slot are refused, naming what is wrong."""
    folder = _obd(tmp_path, ["0,1,0,0.5"])
    with pytest.raises(ConfigurationError, match="`slot` reads multi-slot DSJSON"):
        read_log(folder, slot=0)
    (folder / "all.csv").write_text("item_id,position,click\n0,1,0\n")
    with pytest.raises(LogFormatError, match="column `propensity_score` is missing"):
        read_log(folder)
    (folder / "item_context.csv").unlink()
    with pytest.raises(LogFormatError, match="not an Open Bandit Dataset CSV"):
        read_log(folder / "all.csv", format="obd")
