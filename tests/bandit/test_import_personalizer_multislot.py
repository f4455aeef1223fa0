"""``streambandit import-personalizer`` of multi-slot logs into a ``vw-ccb`` policy.

Against a real API (uvicorn), the real broker and Redis: a generated Personalizer
multi-slot export (VW's CCB DSJSON, its slots' features under ``j``, with a single-slot
line, a deferred one, a duplicate, a bad propensity and an e-mail among a slot's
features) is imported into a ``vw-ccb`` policy; the served model then prefers, per
slot, what the simulated problem makes best, and a second import changes nothing. A
single-slot VW policy skips the multi-slot lines, saying why.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from bandit.api.app import create_app
from bandit.ops import cli
from bandit.ops.warmstart import Bounds, learn_export
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, Limits, RedisSettings, Settings
from bandit.wire.schemas import LENIENT_IDS, Decision, PolicySettings
from policies import Action, make_policy
from policies.dsjson import LoggedSlot, ccb_dsjson_record, dsjson_line
from policies.vw import VWPolicy
from policies.vwccb import SlotOutcome, VWCCBPolicy
from policies.vwtext import SLOT_NAMESPACE
from tests.bandit.serving import served
from tests.bandit.test_api import _read

ADMIN_KEY = "admin-key-import-multislot-0001"
APP_KEY = "app-key-import-multislot-000001"
ACTIONS = ("news", "sports", "music", "weather")
TIERS = ("gold", "silver")
SLOTS = {"hero": "top", "sidebar": "side"}  # slot id: its position feature
HERO = {"gold": "sports", "silver": "music"}  # the simulated ground truth: the hero's best
SIDEBAR = "weather"  # ... the sidebar's, whatever the tier
runner = CliRunner()


def _pays(tier: str, slot: str, action: str) -> bool:
    return action == (HERO[tier] if slot == "hero" else SIDEBAR)


def _ccb_decision(rng: random.Random, when: datetime, **extra: Any) -> dict[str, Any]:
    """One multi-slot decision as Personalizer logged it, each slot drawn at random."""
    tier = rng.choice(TIERS)
    left = list(range(len(ACTIONS)))
    outcomes = []
    for slot in SLOTS:
        weights = [rng.uniform(0.2, 1.0) for _ in left]
        total = sum(weights)
        probabilities = [float(str(np.float32(w / total))) for w in weights]
        k = rng.choices(range(len(left)), probabilities)[0]
        chosen = left[k]
        clicked = rng.random() < (0.8 if _pays(tier, slot, ACTIONS[chosen]) else 0.15)
        order = [k, *sorted((i for i in range(len(left)) if i != k), key=lambda i: -weights[i])]
        outcomes.append(
            {
                "_id": slot,
                "_label_cost": -1.0 if clicked else 0.0,
                "_a": [left[i] for i in order],
                "_p": [probabilities[i] for i in order],
                "_o": [],
            }
        )
        left.remove(chosen)
    return {
        "Version": "1",
        "EventId": uuid.UUID(int=rng.getrandbits(128)).hex,
        "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        "c": {
            "FromUrl": [{"tier": tier}],
            "_multi": [
                {"_tag": a, "i": {"constant": 1, "id": a}, "j": [{"topic": a}]} for a in ACTIONS
            ],
            "_slots": [{"_id": slot, "j": [{"pos": pos}]} for slot, pos in SLOTS.items()],
        },
        "_outcomes": outcomes,
        "VWState": {"m": "f00d/beef"},
        **extra,
    }


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


@dataclass(frozen=True)
class Export:
    """A generated multi-slot export: its log file and how many decisions can be learned."""

    logs: Path
    policy: Path
    learnable: int


def _write_export(folder: Path, n: int = 1200, seed: int = 11) -> Export:
    rng = random.Random(seed)
    start = datetime(2026, 8, 1, tzinfo=UTC)
    records = [_ccb_decision(rng, start + timedelta(seconds=i)) for i in range(n)]
    # an e-mail among the hero's features: learned, the e-mail dropped and counted
    records[0]["c"]["_slots"][0]["j"].append({"contact": "ann@example.com"})
    bad = _ccb_decision(rng, start)
    bad["_outcomes"][1]["_p"] = [0.5, 0.2, 0.1]  # sums to 0.8
    single = {  # a single-slot decision: not for a vw-ccb policy
        "_label_cost": -1.0, "_label_probability": 0.5, "_labelIndex": 0, "a": [1, 2],
        "p": [0.5, 0.5], "EventId": "single-1",
        "c": {"FromUrl": [{"tier": "gold"}], "_multi": [{"_tag": "news"}, {"_tag": "sports"}]},
    }  # fmt: skip
    odd = [
        _line(_ccb_decision(rng, start, _skipLearn=True)),  # deferred, never activated
        _line(records[3]),  # a duplicate
        _line(bad),
        _line(single),
    ]
    logs = folder / "logs"
    logs.mkdir()
    (logs / "00_data_0.json").write_text("".join(map(_line, records)) + "".join(odd))
    policy = folder / "policy.json"
    arguments = "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"
    policy.write_text(json.dumps({"name": "Personalizer policy", "arguments": arguments}))
    return Export(logs, policy, n)


@dataclass(frozen=True)
class Api:
    """A running API: its base URL and settings."""

    url: str
    settings: Settings


@pytest.fixture(scope="module")
def api(broker: str, redis_url: str) -> Iterator[Api]:
    """An API serving a vw-ccb policy (first for the app key) and a single-slot one."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(
                ApiKey(key=ADMIN_KEY, role="admin"),
                ApiKey(key=APP_KEY, role="app", policies=("ccb",)),
            ),
            model_poll_seconds=0.05,
        ),
        policies={"ccb": "vw-ccb", "single": "vw-epsilon"},
    )
    with served(create_app(settings), "api-import-multislot") as url:
        yield Api(url, settings)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    return _write_export(tmp_path_factory.mktemp("export-multislot"))


def _import(api: Api, export: Export, policy: str) -> Any:
    return runner.invoke(
        cli.app,
        ["import-personalizer", "--logs", str(export.logs), "--configuration",
         str(export.policy), "--api", api.url,
         "--key", ADMIN_KEY, "--policy", policy],
    )  # fmt: skip


def _row(output: str, label: str) -> str:
    """The report's line (or table row) that starts with `label`, spaces squeezed."""
    for line in output.splitlines():
        cells = " ".join(line.replace("│", " ").split())
        if cells.startswith(label):
            return cells
    raise AssertionError(f"no line {label!r} in:\n{output}")


@pytest.fixture(scope="module")
def first(api: Api, export: Export) -> Any:
    """The first import of the export into the vw-ccb policy."""
    result = _import(api, export, "ccb")
    assert result.exit_code == 0, result.output
    return result


def test_multi_slot_lines_are_learned_and_the_others_counted_by_reason(
    first: Any, export: Export
) -> None:
    """Every multi-slot decision is learned; a single-slot one is skipped, saying why."""
    out = first.stdout
    assert _row(out, "lines read") == f"lines read {export.learnable + 4:,}"
    assert _row(out, "learned") == f"learned {export.learnable:,}"
    for label, count in (
        ("not activated", 1),
        ("duplicate event id", 1),
        ("bad propensity", 1),
        ("single-slot: the served policy is vw-ccb", 1),
    ):
        assert _row(out, label).startswith(f"{label} {count} "), out
    assert "features dropped: 1 identifier-like" in " ".join(out.split())
    assert "model imported: version 1 serves it" in " ".join(out.split())
    # Personalizer's single-slot learning policy does not apply to a vw-ccb policy
    assert _row(out, "policy refused").startswith('policy refused "--cb_explore_adf'), out


def test_the_served_model_prefers_per_slot_what_the_log_taught(
    first: Any, api: Api, broker: str
) -> None:
    """Ranked through Personalizer's multi-slot route, each slot's top action is its best."""
    events = {}
    with httpx.Client(base_url=api.url, timeout=10) as client:
        for tier in TIERS:
            event_id = f"check-{tier}-{uuid.uuid4().hex[:6]}"
            body = {
                "contextFeatures": [{"tier": tier}],
                "actions": [{"id": a, "features": [{"topic": a}]} for a in ACTIONS],
                "slots": [{"id": s, "features": [{"pos": p}]} for s, p in SLOTS.items()],
                "eventId": event_id,
            }
            answer = client.post(
                "/personalizer/v1.0/multislot/rank",
                json=body,
                headers={"Ocp-Apim-Subscription-Key": APP_KEY},
            )
            assert answer.status_code == 201, answer.text
            events[event_id] = tier
    topic = f"{api.settings.kafka.topic_prefix}.decisions"
    for value in _read(broker, topic, set(events)):
        decision = Decision.model_validate_json(value, context=LENIENT_IDS)
        assert decision.model_version == "1"
        assert decision.slots is not None
        tier = events[decision.event_id]
        hero, sidebar = decision.slots
        for slot, best in ((hero, HERO[tier]), (sidebar, SIDEBAR)):
            if best not in {decision.actions[i].id for i in slot.include}:
                continue  # (the hero showed it: the sidebar cannot)
            top = max(slot.ranking, key=lambda entry: entry.probability)
            assert top.id == best, (tier, slot.id, slot.ranking)


def test_a_second_import_of_the_same_files_changes_nothing(
    first: Any, api: Api, export: Export
) -> None:
    """Same files: no line read, the model served is the one imported."""
    again = _import(api, export, "ccb")
    assert again.exit_code == 0, again.output
    out = " ".join(again.stdout.split())
    assert "not read again" in out
    assert "model unchanged (version 1)" in out
    assert "nothing changed" in out
    properties = httpx.get(
        f"{api.url}/v1/policies/ccb/model/properties",
        headers={"X-API-Key": ADMIN_KEY},
        timeout=10,
    )
    assert properties.json()["model_version"] == 1


def test_a_single_slot_policy_skips_multi_slot_lines_saying_why(api: Api, export: Export) -> None:
    """Into vw-epsilon, the multi-slot lines are counted as not for it; the one single-slot
    line is learned."""
    result = _import(api, export, "single")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert _row(out, "learned") == "learned 1"
    label = "multi-slot: the served policy is not vw-ccb"
    # every multi-slot line but the deferred one (counted as not activated)
    assert _row(out, label).startswith(f"{label} {export.learnable + 2:,} "), out
    assert _row(out, "not activated").startswith("not activated 1 ")


# -- the pieces, without a service ----------------------------------------------------------


def test_each_skipped_line_says_where_and_why(export: Export) -> None:
    """The report names the first line of each reason and the rule it broke."""
    policy = make_policy("vw-ccb")
    assert isinstance(policy, VWPolicy)
    files = sorted(export.logs.iterdir())
    report = learn_export(
        files, policy, PolicySettings(spec="vw-ccb"), limits=Limits(), identifiers="refuse",
        bounds=Bounds(),
    )  # fmt: skip
    # with identifiers refused, the decision with an e-mail among its slot's features
    assert report.learned == export.learnable - 1
    assert "slots.0.features.default.contact" in report.first["features refused"]
    assert "`_outcomes[1]._p` must sum to 1" in report.first["bad propensity"]
    assert report.first["single-slot: the served policy is vw-ccb"].startswith(
        f"{files[0].name}:{export.learnable + 4}: a single-slot decision"
    )


def test_our_own_multi_slot_log_is_learned_as_the_learner_learns_it(tmp_path: Path) -> None:
    """streambandit's CCB lines train the same model as learn_slots on the same outcomes."""
    rng = random.Random(5)
    actions = [Action(a, {"item": {"topic": a}}) for a in ACTIONS]
    direct = make_policy("vw-ccb")
    assert isinstance(direct, VWCCBPolicy)
    lines = []
    for i in range(60):
        context = {"user": {"tier": rng.choice(TIERS)}}
        left, logged, outcomes = list(range(len(actions))), [], []
        for slot, pos in SLOTS.items():
            chosen = rng.choice(left)
            reward = float(rng.random() < 0.5)
            features = {"default.pos": pos}
            logged.append(
                LoggedSlot(slot, features, list(left), [1 / len(left)] * len(left), chosen, reward)
            )
            outcomes.append(
                SlotOutcome({SLOT_NAMESPACE: features}, tuple(left), chosen, reward, 1 / len(left))
            )
            left.remove(chosen)
        direct.learn_slots(context, actions, outcomes)
        record = ccb_dsjson_record(
            context, actions, logged, event_id=f"e{i}", timestamp=datetime(2026, 8, 1, tzinfo=UTC)
        )
        lines.append(dsjson_line(record))
    path = tmp_path / "ours.dsjson"
    path.write_bytes(b"".join(lines))
    imported = make_policy("vw-ccb")
    assert isinstance(imported, VWPolicy)
    report = learn_export(
        [path], imported, PolicySettings(spec="vw-ccb"), limits=Limits(), identifiers="drop",
        bounds=Bounds(),
    )  # fmt: skip
    assert (report.lines, report.learned, dict(report.skipped)) == (60, 60, {})
    assert imported.model_file() == direct.model_file()
