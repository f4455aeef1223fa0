"""Live evaluation in the learner (real Redis): candidates evaluated once per decision.

The logging policy of these examples is uniform over three actions and the reward is 1
exactly when action ``a`` was chosen, so the truth is known: ``uniform`` is worth 1/3,
``fixed:order=["a"]`` (``a`` but for the floor) about 1.
"""

from __future__ import annotations

import dataclasses

import pytest

from bandit.service.liveeval import LOGGED, LiveFigures, evaluation_keys, read_figures
from bandit.service.state import StateStore
from bandit.wire.schemas import LiveEvaluationSettings, PolicySettings
from policies import Policy
from tests.streams.test_learner import SETTINGS, _example, _run, record_of

FIXED_A = 'fixed:order=["a"]'


def _settings(*candidates: str, alpha: float = 0.05) -> PolicySettings:
    return PolicySettings(
        spec="vw-epsilon",
        live_evaluation=LiveEvaluationSettings(candidates=list(candidates), alpha=alpha),
    )


def _figures(found: LiveFigures | None) -> dict[str, tuple[int, float | None, float, float]]:
    assert found is not None
    rows = [*found.candidates, found.logged]
    return {f.candidate: (f.n, f.estimate, f.lower, f.upper) for f in rows}


def test_candidates_are_evaluated_once_and_their_state_survives_a_restart(
    redis_url: str,
) -> None:
    """Each decision counts once (redelivered or not); a new learner goes on from Redis."""
    from streams.learner import Learner

    examples = [_example(i, "q") for i in range(300)]
    rewards = [e.reward for e in examples]

    async def body(store: StateStore) -> None:
        await store.set_policy_settings("q", _settings("uniform", FIXED_A, "vw-epsilon"))
        await Learner(store, SETTINGS).process(
            [record_of(0, i, e) for i, e in enumerate(examples[:200])]
        )
        # redelivered after a crash (offsets not committed) to a new learner: no double
        learner = Learner(store, SETTINGS)
        await learner.process([record_of(0, i, e) for i, e in enumerate(examples)])
        figures = _figures(await read_figures(store, "q"))
        n, estimate, lower, upper = figures["uniform"]
        assert n == 300
        # uniform logging: the uniform candidate's weight is 1, its estimate the mean
        assert estimate == pytest.approx(sum(rewards) / 300)
        assert lower <= 1 / 3 <= upper
        assert figures[LOGGED][1] == pytest.approx(sum(rewards) / 300)
        n, estimate, lower, upper = figures[FIXED_A]
        assert n == 300
        assert lower <= 0.998 <= upper
        assert upper - lower < 0.5
        assert lower > figures["uniform"][3]  # the better candidate is told apart
        assert figures["vw-epsilon"][0] == 300
        _, models = evaluation_keys(store, "q")
        snapshot = await store.redis.hget(models, "vw-epsilon")
        assert isinstance(snapshot, bytes)
        assert Policy.restore(snapshot).n_learned == 300  # it learned along the traffic

    _run(redis_url, body)


def test_changing_the_candidates_starts_new_ones_and_forgets_removed_ones(
    redis_url: str,
) -> None:
    """A removed candidate's figures go; an added one starts at 0; a new alpha restarts all."""
    from streams.learner import Learner

    async def body(store: StateStore) -> None:
        await store.set_policy_settings("q", _settings("uniform", FIXED_A))
        learner = Learner(store, SETTINGS)
        await learner.process([record_of(0, i, _example(i, "q")) for i in range(50)])
        await store.set_policy_settings("q", _settings("uniform", "vw-epsilon"))
        await learner.process([record_of(0, i, _example(i, "q")) for i in range(50, 80)])
        figures = _figures(await read_figures(store, "q"))
        assert set(figures) == {"uniform", "vw-epsilon", LOGGED}
        assert figures["uniform"][0] == 80
        assert figures["vw-epsilon"][0] == 30
        _, models = evaluation_keys(store, "q")
        assert await store.redis.hkeys(models) == [b"vw-epsilon"]
        await store.set_policy_settings("q", _settings("uniform", alpha=0.1))
        await learner.process([record_of(0, i, _example(i, "q")) for i in range(80, 90)])
        found = await read_figures(store, "q")
        assert found is not None
        assert found.alpha == 0.1
        assert _figures(found)["uniform"][0] == 10
        await store.set_policy_settings("q", PolicySettings(spec="vw-epsilon"))
        await learner.process([record_of(0, i, _example(i, "q")) for i in range(90, 95)])
        assert await read_figures(store, "q") is None

    _run(redis_url, body)


def test_decisions_without_learning_consent_are_not_evaluated(redis_url: str) -> None:
    """Nothing about a decision without learning consent is kept: it is not evaluated."""
    from streams.learner import Learner

    async def body(store: StateStore) -> None:
        await store.set_policy_settings("q", _settings("uniform"))
        records = [record_of(0, i, _example(i, "q", learn=i % 2 == 0)) for i in range(40)]
        await Learner(store, SETTINGS).process(records)
        assert _figures(await read_figures(store, "q"))["uniform"][0] == 20

    _run(redis_url, body)


def test_a_damaged_stored_candidate_is_started_again_and_the_others_go_on(
    redis_url: str,
) -> None:
    """Unreadable bytes in Redis neither stop the learner nor the reader: that one restarts."""
    from streams.learner import Learner

    async def body(store: StateStore) -> None:
        await store.set_policy_settings("q", _settings("uniform", FIXED_A))
        await Learner(store, SETTINGS).process(
            [record_of(0, i, _example(i, "q")) for i in range(30)]
        )
        figures_key, _ = evaluation_keys(store, "q")
        await store.redis.hset(figures_key, "candidate:uniform", b"{not json\nxx")
        assert set(_figures(await read_figures(store, "q"))) == {FIXED_A, LOGGED}
        await Learner(store, SETTINGS).process(
            [record_of(0, i, _example(i, "q")) for i in range(30, 40)]
        )
        figures = _figures(await read_figures(store, "q"))
        assert (figures["uniform"][0], figures[FIXED_A][0], figures[LOGGED][0]) == (10, 40, 40)

    _run(redis_url, body)


def test_logging_only_decisions_are_evaluated_though_never_learned(redis_url: str) -> None:
    """The baseline serves and nothing is learned, but candidates are evaluated on it."""
    from streams.learner import Learner

    async def body(store: StateStore) -> None:
        await store.set_policy_settings("q", _settings("uniform"))
        records = [
            record_of(0, i, _example(i, "q", learning_mode="LoggingOnly")) for i in range(25)
        ]
        await Learner(store, SETTINGS).process(records)
        assert _figures(await read_figures(store, "q"))["uniform"][0] == 25
        assert (await store.counters("q"))["learn_logging_only"] == 25

    _run(redis_url, body)


def test_multi_slot_decisions_are_counted_as_skipped_not_evaluated(redis_url: str) -> None:
    """A multi-slot decision has no single logged choice to weigh: it is counted apart."""
    from streams.learner import Learner

    async def body(store: StateStore) -> None:
        await store.set_policy_settings("q", _settings("uniform"))
        records = []
        for i in range(6):
            record = record_of(0, i, _example(i, "q", learning_mode="LoggingOnly"))
            if i % 2:  # as a multi-slot decision reads (its slots are never looked into)
                values = dict(record.values)
                values["decision"] = {**values["decision"], "slots": [{"id": "slot-0"}]}
                record = dataclasses.replace(record, read=values)
            records.append(record)
        await Learner(store, SETTINGS).process(records)
        found = await read_figures(store, "q")
        assert found is not None
        assert (found.skipped, _figures(found)["uniform"][0]) == (3, 3)

    _run(redis_url, body)
