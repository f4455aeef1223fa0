"""Training records read once: schema version and structure checked, written in VW's formats."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from redis.asyncio import Redis

from bandit.errors import InvalidFeedbackError
from bandit.service.state import StateStore
from bandit.settings import Settings
from bandit.wire.schemas import DeadLetter, Decision, TrainingExample
from policies import Action, Policy, make_policy
from policies.vw import dsjson_line, to_vw_lines
from streams.agents import register_agents
from streams.app import create_app
from streams.deadletter import RawRecord, read_record
from streams.sink import training_record
from streams.training import TrainingRecord, decode_training
from streams.trusted import DECISION_DEFAULTS, StructureError, TrustedDecision, check_features
from tests.streams.test_learner import _example


def _data(i: int = 1, **changes: Any) -> dict[str, Any]:
    """A training example's values, as the join writes them (JSON-ready)."""
    data: dict[str, Any] = orjson.loads(_example(i, **changes).model_dump_json())
    return data


def _read(data: dict[str, Any] | bytes, offset: int = 7) -> TrainingRecord | DeadLetter:
    value = data if isinstance(data, bytes) else orjson.dumps(data)
    return decode_training(RawRecord("sb.training", 0, offset, b"p", value))


def test_a_record_is_read_and_written_as_vw_learns_and_the_log_keeps_it() -> None:
    """The one-pass writer's text is what VWPolicy.learn gives VW; its line is the log's."""
    for i in range(12):
        example = _example(i)
        record = _read(orjson.loads(example.model_dump_json()), offset=i)
        assert isinstance(record, TrainingRecord)
        decision = example.decision
        assert (record.policy, record.event_id, record.learnable) == ("p", f"evt-{i}", True)
        assert (record.partition, record.offset) == (0, i)
        actions = [Action(a.id, a.features) for a in decision.actions]
        label = (decision.chosen_index, -example.reward, decision.probability)
        assert record.written is not None
        assert record.written.text == "\n".join(to_vw_lines(decision.context, actions, label))
        assert record.log_entry().line == dsjson_line(training_record(example))
        context, learned, chosen, reward, probability = record.learn_inputs()
        assert (context, chosen, reward, probability) == (
            decision.context, decision.chosen_index, example.reward, decision.probability,
        )  # fmt: skip
        assert [(a.id, dict(a.features)) for a in learned] == [(a.id, a.features) for a in actions]


def _break(data: dict[str, Any], how: str) -> dict[str, Any] | bytes:
    data = copy.deepcopy(data)
    decision = data["decision"]
    breaks: dict[str, Any] = {
        "version": lambda: data.update(schema_version=2),
        "decision version": lambda: decision.update(schema_version=2),
        "no decision": lambda: data.pop("decision"),
        "reward text": lambda: data.update(reward="1.0"),
        "reward bool": lambda: data.update(reward=True),
        "negative count": lambda: data.update(reward_count=-1),
        "no actions": lambda: decision.update(actions=[]),
        "action not object": lambda: decision["actions"].append("d"),
        "features not object": lambda: decision["actions"][0].update(features=[1]),
        "ranking ids": lambda: decision["ranking"][1].update(id="zzz"),
        "same id twice": lambda: decision["actions"][1].update(id="a"),
        "action without id": lambda: decision["actions"][2].pop("id"),
        "features null": lambda: decision["actions"][1].update(features=None),
        "probability bool": lambda: decision["ranking"][2].update(probability=True),
        "ranking entry list": lambda: decision["ranking"].append([]),
        "chosen index": lambda: decision.update(chosen_index=3),
        "naive time": lambda: decision.update(occurred_at="2026-01-01T00:00:00"),
        "no policy": lambda: decision.pop("policy"),
        "learn text": lambda: decision.update(learn="yes"),
        "context list": lambda: decision.update(context=[]),
    }
    breaks[how]()
    return data


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("version", "schema_version: must be 1, got 2 [schema_version]"),
        ("decision version", "decision.schema_version: must be 1, got 2 [schema_version]"),
        ("no decision", "decision: Field required [missing]"),
        ("reward text", "reward: must be float or int, got str [type]"),
        ("reward bool", "reward: must be float or int, got bool [type]"),
        ("negative count", "reward_count: must be >= 0, got -1 [greater_than_equal]"),
        ("no actions", "decision.actions: must hold at least one action [too_short]"),
        ("action not object", "decision.actions.3: must be dict, got str [type]"),
        ("features not object", "decision.actions.0.features: must be dict, got list [type]"),
        ("ranking ids", "decision.ranking: must hold each offered action id once"),
        ("same id twice", "[ranking_ids]"),
        ("action without id", "decision.actions.2.id: Field required [missing]"),
        ("features null", "decision.actions.1.features: must be dict, got null [type]"),
        ("probability bool", "decision.ranking.2.probability: must be float or int, got bool"),
        ("ranking entry list", "decision.ranking.3: must be dict, got list [type]"),
        ("chosen index", "decision.chosen_index: must be in [0, 3), got 3 [chosen_index_range]"),
        ("naive time", "decision.occurred_at: must be an ISO 8601 time with a timezone"),
        ("no policy", "decision.policy: Field required [missing]"),
        ("learn text", "decision.learn: must be bool, got str [type]"),
        ("context list", "decision.context: must be dict, got list [type]"),
    ],
)
def test_a_wrong_version_or_structure_is_a_dead_letter_naming_field_and_rule(
    how: str, reason: str
) -> None:
    """Each broken record becomes a dead letter whose reason names the field and rule."""
    letter = _read(_break(_data(), how))
    assert isinstance(letter, DeadLetter)
    assert reason in letter.reason
    assert (letter.source_topic, letter.offset) == ("sb.training", 7)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "(record): not JSON: "),
        (b"[1, 2]", "(record): must be a JSON object, got list [object_type]"),
        (b'{"event_id": "e", "reward": 1e999}', "(record): not JSON: number is infinity"),
        (None, "(record): the record has no value [missing_value]"),
    ],
)
def test_what_is_not_a_json_object_is_a_dead_letter(value: bytes | None, reason: str) -> None:
    """Not JSON, not an object, a number beyond a double, or no value at all."""
    letter = decode_training(RawRecord("sb.training", 0, 1, b"p", value))
    assert isinstance(letter, DeadLetter)
    assert letter.reason.startswith(reason)


def test_a_decision_without_learning_consent_is_read_for_whose_it_is_only() -> None:
    """No features are kept for it, so none are read: not learnable, logged without a line."""
    data = _data()
    data["decision"].update(learn=False, actions="(none kept)", context=None)
    record = _read(data)
    assert isinstance(record, TrainingRecord)
    assert (record.policy, record.learnable, record.written) == ("p", False, None)
    assert record.log_entry().line == b""


def test_absent_optional_fields_get_their_declared_defaults() -> None:
    """A producer leaving out defaults (as some encoders do) writes the same example."""
    declared = {
        name: Decision.model_fields[name].get_default(call_default_factory=True)
        for name in DECISION_DEFAULTS
    }
    assert dict(DECISION_DEFAULTS) == declared
    full = _data(4)
    lean = copy.deepcopy(full)
    for name in ("deferred", "learn", "consent", "subject", "schema_version"):
        lean["decision"].pop(name, None)
    lean.pop("schema_version")
    for action in lean["decision"]["actions"]:
        if not action["features"]:
            del action["features"]
    found, expected = _read(lean), _read(full)
    assert isinstance(found, TrainingRecord)
    assert isinstance(expected, TrainingRecord)
    assert found.written == expected.written
    assert found.learn_inputs() == expected.learn_inputs()


def test_what_the_one_pass_writer_leaves_alone_goes_to_the_general_path() -> None:
    """A name needing escapes is learned and logged by the general functions; a feature
    of the wrong type, or a reward a policy must refuse, is refused naming it."""
    data = _data(2)
    data["decision"]["context"]["user"]["odd name"] = 2.0
    record = _read(data)
    assert isinstance(record, TrainingRecord)
    assert record.written is None
    context, actions, chosen, reward, probability = record.learn_inputs()
    assert context["user"]["odd name"] == 2.0
    policy = make_policy("vw-squarecb")
    policy.learn(context, actions, chosen, reward, probability)
    assert policy.n_learned == 1
    assert b"odd" in record.log_entry().line

    data["decision"]["context"]["user"]["odd name"] = True  # booleans are never logged
    record = _read(data)
    assert isinstance(record, TrainingRecord)
    with pytest.raises(StructureError, match=r"decision\.context\.user\.odd name: must be a "):
        record.learn_inputs()

    poisoned = _data(3)
    poisoned["reward"] = 1e308
    record = _read(poisoned)
    assert isinstance(record, TrainingRecord)
    assert record.written is None
    with pytest.raises(InvalidFeedbackError, match="`reward` must be finite and within"):
        make_policy("vw-squarecb").learn(*record.learn_inputs())


def test_check_features_names_the_namespace_or_feature() -> None:
    """Namespaces must be objects of strings and numbers."""
    check_features({"user": {"age": 31, "tier": "gold", "x": 0.5}}, "decision.context")
    with pytest.raises(StructureError, match=r"^decision\.context\.user: must be dict, got list"):
        check_features({"user": [1]}, "decision.context")
    with pytest.raises(StructureError, match=r"\.user\.age: must be a number or a string, got "):
        check_features({"user": {"age": None}}, "decision.context")


def test_the_training_consumer_learns_and_logs_each_example_once(
    broker: str, redis_url: str, tmp_path: Path
) -> None:
    """A backlog (large batches) with a duplicate, a broken record and one no policy can
    learn: each example learned once, logged once; the broken one and the unlearnable
    one dead-lettered, with their reasons."""
    prefix = f"tr{uuid.uuid4().hex[:10]}"
    settings = Settings.model_validate(
        {
            "kafka": {"broker": broker, "topic_prefix": prefix},
            "redis": {"url": redis_url, "key_prefix": prefix},
            "policies": {"default": "vw-squarecb"},
            "learner": {"snapshot_every_examples": 400, "snapshot_every_seconds": 0.5},
            "decision_log": {"directory": str(tmp_path / "log")},
        }
    )
    values = [_example(i, "default").model_dump_json().encode() for i in range(600)]
    nobody = _example(600, "nobody").model_dump_json().encode()  # not in settings.policies
    sent = [*values[:300], values[7], b'{"event_id": "broken"}', nobody, *values[300:]]

    async def main() -> None:
        client = Redis.from_url(redis_url)
        store = StateStore(client, prefix)
        services = register_agents(create_app(settings, agents=False))
        topic = services.app.bandit_topics.training.get_topic_name()
        producer = AIOKafkaProducer(bootstrap_servers=broker, enable_idempotence=False)
        await producer.start()
        try:
            batch = [await producer.send(topic, value, key=b"default") for value in sent]
            await asyncio.gather(*batch)
        finally:
            await producer.stop()
        await services.app.producer.start()  # for the dead letter
        running = asyncio.create_task(services.consumers["learner"].run())
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                saved = await store.load_model("default")
                if saved is not None and Policy.restore(saved.snapshot).n_learned >= 600:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # a duplicate learned late would show by now
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await services.app.producer.stop()
            await services.app.close_state_store()
        saved = await store.load_model("default")
        assert saved is not None
        assert Policy.restore(saved.snapshot).n_learned == 600
        counters = await store.counters("default")
        assert (counters["learned"], counters["learn_duplicates"]) == (600, 1)
        assert (await store.counters("_streams"))["dead_letters"] == 2
        await client.aclose()

    asyncio.run(main())
    lines = [
        orjson.loads(line)
        for path in sorted((tmp_path / "log").glob("*.dsjson"))
        for line in path.read_bytes().splitlines()
    ]
    # The log keeps every joined decision, the one no policy could learn included.
    assert sorted(line["EventId"] for line in lines) == sorted(f"evt-{i}" for i in range(601))
    assert json.loads(values[0])["decision"]["event_id"] == "evt-0"
    assert TrainingExample.model_validate_json(values[0]).decision.policy == "default"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"schema_version": 2}, "schema_version: must be 1, got 2 [schema_version]"),
        ({"policy": None}, "policy: must be str, got null [type]"),
        ({"occurred_at": "yesterday"}, "occurred_at: must be an ISO 8601 time with a timezone"),
        ({"ranking": []}, "ranking: must hold each offered action id once"),
        ({"chosen_index": -1}, "chosen_index: must be in [0, 3), got -1 [chosen_index_range]"),
    ],
)
def test_a_decision_the_join_cannot_read_is_a_dead_letter_of_decisions(
    change: dict[str, Any], reason: str
) -> None:
    """The join reads a decision's version, the fields it keeps and its offer; what fails
    is dead-lettered where it came in, with its key."""
    values = {**orjson.loads(_example(5).decision.model_dump_json()), **change}
    record = RawRecord("sb.decisions", 1, 3, b"evt-5", orjson.dumps(values))
    letter = read_record(TrustedDecision.read, record)
    assert isinstance(letter, DeadLetter)
    assert letter.reason.startswith(reason)
    assert (letter.source_topic, letter.key) == ("sb.decisions", "evt-5")


def test_a_decision_is_kept_as_its_bytes_with_the_fields_the_join_reads() -> None:
    """Without learning consent only whose it is, when and that it is not learned count."""
    decision = _example(6).decision
    raw = decision.model_dump_json().encode()
    read = TrustedDecision.read(raw)
    assert read.raw is raw
    assert (read.event_id, read.policy, read.occurred_at) == (
        "evt-6", "p", decision.occurred_at,
    )  # fmt: skip
    assert (read.learn, read.deferred) == (True, False)
    unlearned = orjson.loads(raw) | {"learn": False, "actions": None, "ranking": None}
    assert TrustedDecision.read(orjson.dumps(unlearned)).learn is False


def test_actions_without_features_are_read_with_none() -> None:
    """An action the producer wrote without ``features`` is read with ``{}``, and learned."""
    data = _data()
    for action in data["decision"]["actions"]:
        action.pop("features", None)
    record = _read(data)
    assert isinstance(record, TrainingRecord)
    assert [action["features"] for action in record.values["decision"]["actions"]] == [{}] * 3
    assert record.written is not None
