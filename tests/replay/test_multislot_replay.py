"""Replay of multi-slot (CCB) decision logs, one slot at a time."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies import Action, Distribution, choose, rng_for_event
from policies.dsjson import LoggedSlot, ccb_dsjson_record, dsjson_line, dsjson_record
from replay import Intervals
from replay.pipeline import replay_logs
from replay.readers import ALL_SLOTS, read_log
from replay.slates import RIPS, SIPS, consecutive_slates
from replay.targets import build_target

ACTIONS = [Action(f"item-{j}", {"item": {"kind": f"k{j}"}}) for j in range(4)]
SLOTS = (("top", {"size": "Large"}, 2), ("side", {"size": "Small"}, 0))  # id, features, best
ROWS = 400
T0 = datetime(2026, 11, 27, tzinfo=UTC)


def _log(path: Path) -> Path:
    """A uniformly explored CCB log: each slot pays 1 for its best action, 0.1 otherwise."""
    rng = random.Random(7)
    with path.open("wb") as out:
        for i in range(ROWS):
            left = list(range(len(ACTIONS)))
            slots = []
            for number, (slot_id, features, best) in enumerate(SLOTS):
                include = list(left)
                distribution = Distribution(tuple(1 / len(include) for _ in include))
                index, _ = choose(distribution, rng_for_event(f"r{i}/{number}"))
                chosen = include[index]
                reward = 1.0 if chosen == best else 0.1 * rng.random()
                slots.append(
                    LoggedSlot(
                        slot_id, features, include, distribution.probabilities, chosen, reward
                    )
                )
                left.remove(chosen)
            record = ccb_dsjson_record(
                {"page": {"kind": "home"}}, ACTIONS, slots, event_id=f"r{i}", timestamp=T0
            )
            out.write(dsjson_line(record))
        single = dsjson_record({}, ACTIONS[:2], 0, [0.5, 0.5], 1.0, event_id="single", timestamp=T0)
        out.write(dsjson_line(single))
    return path


def test_a_slot_is_read_as_the_decision_it_was(tmp_path: Path) -> None:
    """With `slot`, each CCB line gives that slot's row: its actions, distribution, reward."""
    path = _log(tmp_path / "decisions.dsjson")
    top = read_log(path, slot="top")
    assert (top.rows_kept, dict(top.skipped)) == (ROWS, {"single_slot": 1})
    assert top.logs.action_ids is not None
    assert all(len(ids) == 4 for ids in top.logs.action_ids)
    side = read_log(path, slot=1)
    assert side.rows_kept == ROWS
    assert side.logs.action_ids is not None
    assert all(len(ids) == 3 for ids in side.logs.action_ids)  # the top slot took one
    assert side.logs.contexts is not None
    assert side.logs.contexts[0] == {"page": {"kind": "home"}, "_slot": {"size": "Small"}}
    plain = read_log(path)
    assert (plain.rows_kept, dict(plain.skipped)) == (1, {"multi_slot": ROWS})
    assert read_log(path, slot="footer").skipped == {"no_slot": ROWS, "single_slot": 1}


@pytest.mark.parametrize(
    ("slot", "best", "worth"),
    [("top", "item-2", 1.0), ("side", "item-0", 0.75)],  # side: the top slot takes it 1 in 4
)
def test_replay_evaluates_each_slot_on_its_own(
    tmp_path: Path, slot: str, best: str, worth: float
) -> None:
    """The slot's best action is worth what it pays where the slot could show it."""
    path = _log(tmp_path / "decisions.dsjson")
    run = replay_logs(
        path,
        [f"fixed:{best}", "uniform"],
        ["ips", "snips"],
        intervals=Intervals(n_bootstrap=0),
        slot=slot,
    )
    values = {(e.policy, e.estimator): e.estimate.value for e in run.report.evaluations}
    assert values[(f"fixed:{best}", "snips")] == pytest.approx(worth, abs=0.1)
    assert values[(f"fixed:{best}", "ips")] == pytest.approx(worth, abs=0.2)
    assert values[("uniform", "ips")] < worth - 0.3


def test_a_slot_read_alone_carries_its_number(tmp_path: Path) -> None:
    """`slot=` gives each multi-slot line's slot row, its position the slot's number."""
    path = _log(tmp_path / "decisions.dsjson")
    side = read_log(path, slot="side").logs
    assert side.position is not None
    assert set(side.position.tolist()) == {1}


def test_every_slot_makes_a_slate_log_that_rips_and_sips_value(tmp_path: Path) -> None:
    """slot="*" reads each line's slots in order; its slates have the true value in their CIs."""
    path = _log(tmp_path / "decisions.dsjson")
    result = read_log(path, slot=ALL_SLOTS)
    logs = result.logs
    assert (logs.n, result.skipped) == (2 * ROWS, {"single_slot": 1})
    assert logs.position is not None
    assert logs.position.tolist()[:4] == [0, 1, 0, 1]
    assert logs.event_ids is not None
    assert logs.event_ids[:4] == ["r0", "r0", "r1", "r1"]
    slates = consecutive_slates(logs.position)
    assert slates.max() == ROWS - 1
    # The target shows item-2 on top (worth 1 there) and item-0 beside it (worth 1): 2 a page.
    target = build_target("fixed:item-2,item-0", logs).probabilities
    for estimator in (RIPS(Intervals(n_bootstrap=0)), SIPS(Intervals(n_bootstrap=0))):
        estimate = estimator.estimate(logs, target, slates=slates)
        assert estimate.ci is not None
        assert 2.0 in estimate.ci, estimate
        assert estimate.n_slates == ROWS
