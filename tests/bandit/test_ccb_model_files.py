"""Model files of a ``vw-ccb`` policy: exported, imported, and refused across kinds.

A real uvicorn server, the real broker and Redis. A ``vw-ccb`` model exported by
``GET /model`` loads in pyvw (``-i``) and predicts, per slot, the distribution the
service serves; a model pyvw trained with ``--ccb_explore_adf --dsjson`` on our CCB log
lines imports and serves what the log taught; a single-slot model is refused by a
``vw-ccb`` policy and a multi-slot one by a single-slot policy, naming ``body``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from vowpalwabbit import pyvw

from bandit.api.app import create_app
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, RedisSettings, Settings
from bandit.wire.schemas import LENIENT_IDS, Decision
from policies import Action, Distribution, make_policy
from policies.dsjson import LoggedSlot, ccb_dsjson_record, dsjson_line
from policies.vw import VWPolicy
from policies.vwccb import SlotOutcome, VWCCBPolicy
from policies.vwtext import SLOT_NAMESPACE, example_text, to_ccb_lines
from tests.bandit.serving import served
from tests.bandit.test_api import _read

ADMIN_KEY = "admin-key-ccb-model-files-0001"
KEYS = {"exported": "app-key-ccb-exported-000000001", "trained": "app-key-ccb-trained-0000000001"}
ADMIN = {"X-API-Key": ADMIN_KEY}
ACTIONS = ("news", "sports", "music", "weather")
TIERS = ("gold", "silver")
SLOTS = {"hero": "top", "sidebar": "side"}
HERO = {"gold": "sports", "silver": "music"}  # the simulated ground truth: the hero's best
SIDEBAR = "weather"  # ... the sidebar's, whatever the tier
FLOOR = 1e-3  # the policies' exploration floor (VWPolicy's default)


@pytest.fixture(scope="module")
def server(broker: str, redis_url: str) -> Iterator[tuple[str, Settings]]:
    """The API serving two vw-ccb policies (one per app key) and a single-slot one."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(
                ApiKey(key=ADMIN_KEY, role="admin"),
                *(ApiKey(key=key, role="app", policies=(name,)) for name, key in KEYS.items()),
            ),
            model_poll_seconds=0.05,
        ),
        policies={"exported": "vw-ccb", "trained": "vw-ccb", "single": "vw-epsilon"},
    )
    with served(create_app(settings), "api-ccb-model-files") as url:
        yield url, settings


# The features as the Personalizer routes give them to the policy.
def _context(tier: str) -> dict[str, dict[str, str]]:
    return {"default": {"tier": tier}}


CATALOG = [Action(a, {"default": {"topic": a}}) for a in ACTIONS]


def _simulated(rng: random.Random, n: int) -> Iterator[tuple[str, list[LoggedSlot]]]:
    """`n` multi-slot decisions of a uniform logging policy: each tier and its slots."""
    for _ in range(n):
        tier = rng.choice(TIERS)
        left, slots = list(range(len(ACTIONS))), []
        for slot, pos in SLOTS.items():
            chosen = rng.choice(left)
            best = HERO[tier] if slot == "hero" else SIDEBAR
            reward = 1.0 if ACTIONS[chosen] == best else 0.0
            probabilities = [1 / len(left)] * len(left)
            slots.append(
                LoggedSlot(slot, {"default.pos": pos}, list(left), probabilities, chosen, reward)
            )
            left.remove(chosen)
        yield tier, slots


def _rank(server: tuple[str, Settings], broker: str, policy: str) -> list[Decision]:
    """Rank both tiers' pages through Personalizer's multi-slot route; the decisions logged."""
    url, settings = server
    events = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for tier in TIERS:
            # (each slot's draw is seeded by the event id: with these, every slot takes
            # its most probable action; a random id let the hero slot explore now and
            # then, leaving its best action to the sidebar, where the model rates it too)
            event_id = f"{policy}-{tier}"
            body = {
                "contextFeatures": [{"tier": tier}],
                "actions": [{"id": a, "features": [{"topic": a}]} for a in ACTIONS],
                "slots": [{"id": s, "features": [{"pos": p}]} for s, p in SLOTS.items()],
                "eventId": event_id,
            }
            answer = client.post(
                "/personalizer/v1.0/multislot/rank",
                json=body,
                headers={"Ocp-Apim-Subscription-Key": KEYS[policy]},
            )
            assert answer.status_code == 201, answer.text
            events.append(event_id)
    topic = f"{settings.kafka.topic_prefix}.decisions"
    decisions = [
        Decision.model_validate_json(value, context=LENIENT_IDS)
        for value in _read(broker, topic, set(events))
    ]
    assert len(decisions) == len(TIERS)
    assert not any(slot.explored for d in decisions for slot in d.slots or ())
    return decisions


def _check_vw_predicts_what_is_served(model: Path, decisions: list[Decision]) -> None:
    """pyvw, loading `model`, gives each slot the distribution it was served (floor applied)."""
    vw = pyvw.Workspace(f"--quiet --no_stdin -i {model}", enable_logging=False)
    try:
        for decision in decisions:
            assert decision.slots is not None
            for slot in decision.slots:
                offered = [
                    Action(decision.actions[i].id, decision.actions[i].features)
                    for i in slot.include
                ]
                lines = to_ccb_lines(
                    decision.context, offered, [({SLOT_NAMESPACE: slot.features}, None, None)]
                )
                examples = vw.parse(example_text(lines))
                [scores] = vw.predict(examples)
                vw.finish_example(examples)
                weights = [0.0] * len(offered)
                for index, probability in scores:
                    weights[index] = max(float(probability), 0.0)
                predicted = Distribution.from_weights(weights, floor=FLOOR).probabilities
                served_ = {entry.id: entry.probability for entry in slot.ranking}
                assert [served_[a.id] for a in offered] == pytest.approx(predicted, abs=1e-6)
    finally:
        vw.finish()


def _check_taught(decisions: list[Decision]) -> None:
    """Each slot's most probable action is its best one (when the slots before left it)."""
    for decision in decisions:
        assert decision.slots is not None
        tier = decision.context["default"]["tier"]
        for slot, best in zip(decision.slots, (HERO[tier], SIDEBAR), strict=True):
            if best in {decision.actions[i].id for i in slot.include}:
                top = max(slot.ranking, key=lambda entry: entry.probability)
                assert top.id == best, (tier, slot.id, slot.ranking)


def test_an_exported_ccb_model_loads_in_vw_and_predicts_what_is_served(
    server: tuple[str, Settings], broker: str, tmp_path: Path
) -> None:
    """GET /model of a vw-ccb policy is a CCB model VW loads; per slot, it predicts the
    distribution the service serves."""
    url, _ = server
    policy = make_policy("vw-ccb")
    assert isinstance(policy, VWCCBPolicy)
    for tier, slots in _simulated(random.Random(1), 400):
        policy.learn_slots(
            _context(tier),
            CATALOG,
            [
                SlotOutcome({SLOT_NAMESPACE: s.features}, tuple(s.include), s.chosen, s.reward,
                            s.probabilities[s.include.index(s.chosen)])
                for s in slots
            ],
        )  # fmt: skip
    with httpx.Client(base_url=url, timeout=10) as client:
        put = client.put("/v1/policies/exported/model", content=policy.model_file(), headers=ADMIN)
        assert put.status_code == 200, put.text
        got = client.get("/v1/policies/exported/model", headers=ADMIN)
        assert got.status_code == 200, got.text
    path = tmp_path / "exported.vw"
    path.write_bytes(got.content)
    decisions = _rank(server, broker, "exported")
    assert {d.model_version for d in decisions} == {got.headers["X-Streambandit-Model-Version"]}
    _check_vw_predicts_what_is_served(path, decisions)
    _check_taught(decisions)


def test_a_ccb_model_vw_trained_on_our_log_imports_and_serves(
    server: tuple[str, Settings], broker: str, tmp_path: Path
) -> None:
    """pyvw --ccb_explore_adf --dsjson learns our CCB log lines; the model imports and serves
    what VW predicts, and what the log taught."""
    url, _ = server
    served_policy = make_policy("vw-ccb")
    assert isinstance(served_policy, VWCCBPolicy)
    vw = pyvw.Workspace(f"{served_policy.vw_arguments()} --dsjson --quiet", enable_logging=False)
    try:
        for i, (tier, slots) in enumerate(_simulated(random.Random(2), 400)):
            record = ccb_dsjson_record(
                _context(tier), CATALOG, slots, event_id=f"e{i}",
                timestamp=datetime(2026, 11, 1, tzinfo=UTC),
            )  # fmt: skip
            examples = vw.parse(dsjson_line(record).decode())  # VW's own DSJSON parser
            vw.learn(examples)
            vw.finish_example(examples)
        path = tmp_path / "trained.vw"
        vw.save(str(path))
    finally:
        vw.finish()
    with httpx.Client(base_url=url, timeout=10) as client:
        put = client.put("/v1/policies/trained/model", content=path.read_bytes(), headers=ADMIN)
        assert put.status_code == 200, put.text
        version = put.json()["model_version"]
    decisions = _rank(server, broker, "trained")
    assert {d.model_version for d in decisions} == {str(version)}
    _check_vw_predicts_what_is_served(path, decisions)
    _check_taught(decisions)


@pytest.mark.parametrize(
    ("policy", "spec", "why"),
    [
        ("exported", "vw-epsilon", "single-slot model (no --ccb_explore_adf)"),
        ("single", "vw-ccb", "multi-slot model (--ccb_explore_adf)"),
    ],
)
def test_a_model_of_the_other_kind_is_refused_naming_body(
    server: tuple[str, Settings], policy: str, spec: str, why: str
) -> None:
    """A single-slot file into vw-ccb, or a multi-slot one into vw-epsilon: 422 on `body`."""
    url, _ = server
    other = make_policy(spec)
    assert isinstance(other, VWPolicy)
    model = other.model_file()
    with httpx.Client(base_url=url, timeout=10) as client:
        before = client.get(f"/v1/policies/{policy}/model/properties", headers=ADMIN)
        answer = client.put(f"/v1/policies/{policy}/model", content=model, headers=ADMIN)
        after = client.get(f"/v1/policies/{policy}/model/properties", headers=ADMIN)
    assert answer.status_code == 422, answer.text
    text = answer.text
    assert '"body"' in text
    assert why in text
    assert after.json() == before.json()  # nothing served instead
