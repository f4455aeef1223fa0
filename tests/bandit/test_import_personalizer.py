"""``streambandit import-personalizer``: Personalizer's exported logs and settings, warm-started.

Against a real API (uvicorn), the real broker and Redis: a generated Personalizer export
(its DSJSON layout, with lines not activated, malformed, of bad propensities, multi-slot,
dangling rewards, duplicates and one too long) is imported; the served model then
prefers what the simulated problem makes best, the configuration is applied field by
field, and a second import changes nothing.
"""

from __future__ import annotations

import asyncio
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
from redis.asyncio import Redis
from typer.testing import CliRunner

from bandit.api.app import create_app
from bandit.ops import cli
from bandit.ops.warmstart import (
    Bounds,
    export_files,
    inputs_digest,
    learn_export,
    plan_configuration,
    read_configuration,
)
from bandit.service.state import StateStore
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, Limits, RedisSettings, Settings
from bandit.wire.personalizer import PersonalizerServiceConfiguration, service_configuration
from bandit.wire.schemas import PolicySettings
from policies import Action, make_policy
from policies.errors import ConfigurationError
from policies.vw import VWPolicy
from tests.bandit.serving import served

ADMIN_KEY = "admin-key-import-personalizer-01"
APP_KEY = "app-key-import-personalizer-0123"
ACTIONS = ("news", "sports", "music", "weather")
BEST = {"gold": "sports", "silver": "news", "bronze": "music"}  # the simulated ground truth
TIERS = tuple(BEST)
MAX_LINE = 20_000
runner = CliRunner()


# -- a Personalizer export ----------------------------------------------------------------


def _decision(rng: random.Random, when: datetime, **extra: Any) -> dict[str, Any]:
    """One single-slot decision as Personalizer logged it, drawn from a skewed logging policy."""
    tier = rng.choice(TIERS)
    weights = [rng.uniform(0.2, 1.0) for _ in ACTIONS]
    total = sum(weights)
    # as Personalizer wrote them: `p` single precision's shortest text, the label widened
    probabilities = [float(str(np.float32(w / total))) for w in weights]
    chosen = rng.choices(range(len(ACTIONS)), probabilities)[0]
    clicked = rng.random() < (0.8 if ACTIONS[chosen] == BEST[tier] else 0.15)
    cost = -1.0 if clicked else 0.0
    order = [chosen, *(i for i in range(len(ACTIONS)) if i != chosen)]
    return {
        "_label_cost": cost,
        "_label_probability": float(np.float32(probabilities[chosen])),
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
        "o": [{"v": -cost, "EventId": "x", "ActionTaken": False}],
        "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        "Version": "1",
        "EventId": uuid.UUID(int=rng.getrandbits(128)).hex,
        "a": [i + 1 for i in order],
        "c": {
            "FromUrl": [{"tier": tier}, {"device": {"kind": rng.choice(["mobile", "desktop"])}}],
            "_synthetic": False,
            "_multi": [
                {"_tag": a, "i": {"constant": 1, "id": a}, "j": [{"topic": a}]} for a in ACTIONS
            ],
        },
        "p": [probabilities[i] for i in order],
        "VWState": {"m": "f00d/beef"},
        "_original_label_cost": cost,
        **extra,
    }


@dataclass(frozen=True)
class Export:
    """A generated Personalizer export: its logs folder and its configuration files."""

    logs: Path
    service: Path
    policy: Path
    learnable: int  # single-slot decisions that can be learned


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


def _write_export(folder: Path, n: int = 1500, seed: int = 7) -> Export:
    rng = random.Random(seed)
    start = datetime(2026, 8, 1, tzinfo=UTC)
    logs = folder / "logs"
    (logs / "2026" / "08").mkdir(parents=True)
    records = [_decision(rng, start + timedelta(seconds=i)) for i in range(n)]
    # one decision with an e-mail in its context: learned, the e-mail dropped and counted
    records[0]["c"]["FromUrl"].append({"contact": "ann@example.com"})
    lines = [_line(r) for r in records]
    odd = [
        _line(_decision(rng, start, _skipLearn=True)),  # deferred, never activated
        _line(_decision(rng, start, _skipLearn=True)),
        _line(_decision(rng, start, _deferred=True)),  # the older flag of the same
        _line(records[5]),  # a duplicate of a decision learned
        '{"_label_cost":-1,"_label_probability":0.5,"c":{"_mu\n',  # cut short
        "not json at all\n",
        _line({**records[6], "EventId": "bad-p", "p": [0.5, 0.2, 0.1, 0.1]}),  # sums to 0.9
        _line({**records[7], "EventId": "bad-label", "_label_probability": 0.001}),
        _line(  # a multi-slot (CCB) decision
            {
                "Version": "1",
                "EventId": "ccb-1",
                "c": {
                    "FromUrl": [{"tier": "gold"}],
                    "_multi": [{"_tag": a, "j": [{"topic": a}]} for a in ACTIONS],
                    "_slots": [{"_id": "hero"}, {"_id": "sidebar"}],
                },
                "_outcomes": [
                    {
                        "_id": "hero",
                        "_label_cost": -1,
                        "_a": [1, 0, 2, 3],
                        "_p": [0.7, 0.1, 0.1, 0.1],
                    },
                    {"_id": "sidebar", "_label_cost": 0, "_a": [0, 2, 3], "_p": [0.8, 0.1, 0.1]},
                ],
            }
        ),
        _line({"RewardValue": 1.0, "EnqueuedTimeUtc": "2026-08-01T00:00:01Z", "EventId": "lost"}),
        _line({**records[8], "EventId": "long", "padding": "x" * MAX_LINE}),  # too long
        "\n",  # blank: not a line
    ]
    half = len(lines) // 2
    (logs / "2026" / "08" / "00_data_0.json").write_text("".join(lines[:half] + odd[:6]))
    (logs / "2026" / "08" / "01_data_0.json").write_text("".join(lines[half:] + odd[6:]))
    (logs / "README.txt").write_text("not a log: never read\n")
    service = folder / "service.json"
    service.write_text(
        json.dumps(
            {
                "rewardWaitTime": "PT10M",
                "defaultReward": 0.0,
                "rewardAggregation": "earliest",
                "explorationPercentage": 0.2,
                "modelExportFrequency": "PT5M",
                "logMirrorEnabled": False,
                "logRetentionDays": 90,
                "lastConfigurationEditDate": "2026-07-01T00:00:00Z",
                "learningMode": "Online",
                "isAutoOptimizationEnabled": False,
            }
        )
    )
    policy = folder / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "name": "Personalizer policy",
                "arguments": (
                    "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"
                ),
            }
        )
    )
    return Export(logs, service, policy, learnable=n)


# -- the service -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """A running API: its base URL and settings."""

    url: str
    settings: Settings


@pytest.fixture(scope="module")
def api(broker: str, redis_url: str) -> Iterator[Api]:
    """An API serving vw-epsilon policies, one with a model that learned live traffic."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(
            keys=(ApiKey(key=ADMIN_KEY, role="admin"), ApiKey(key=APP_KEY, role="app")),
            model_poll_seconds=0.05,
        ),
        policies={
            "default": "vw-epsilon",
            "dry": "vw-epsilon",
            "live": "vw-epsilon",
            "uniform": "uniform",
            "empty": "vw-epsilon",
        },
    )
    asyncio.run(_save_live_model(settings))
    with served(create_app(settings), "api-import-personalizer") as url:
        yield Api(url, settings)


async def _save_live_model(settings: Settings) -> None:
    """Policy 'live' serves a model that learned 30 examples of live traffic."""
    policy = make_policy("vw-epsilon")
    for i in range(30):
        policy.learn({"u": {"x": 1.0}}, [Action("a"), Action("b")], i % 2, 1.0, 0.5)
    redis = Redis.from_url(settings.redis.url)
    try:
        await StateStore(redis, settings.redis.key_prefix).save_model(
            "live", policy.snapshot(), 1, {}
        )
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    return _write_export(tmp_path_factory.mktemp("export"))


def _import(api: Api, export: Export, *args: str) -> Any:
    return runner.invoke(
        cli.app,
        [
            "import-personalizer",
            "--logs",
            str(export.logs),
            "--configuration",
            str(export.service),
            "--configuration",
            str(export.policy),
            "--api",
            api.url,
            "--key",
            ADMIN_KEY,
            "--max-line-bytes",
            str(MAX_LINE),
            *args,
        ],
    )


def _get(api: Api, path: str) -> httpx.Response:
    answer = httpx.get(f"{api.url}{path}", headers={"X-API-Key": ADMIN_KEY}, timeout=10)
    assert answer.status_code in (200, 404), answer.text
    return answer


@pytest.fixture(scope="module")
def first(api: Api, export: Export) -> Any:
    """The first import of the export into 'default' (the key's first policy)."""
    result = _import(api, export)
    assert result.exit_code == 0, result.output
    return result


def _row(output: str, label: str) -> str:
    """The report's line (or table row) that starts with `label`, spaces squeezed."""
    for line in output.splitlines():
        cells = " ".join(line.replace("│", " ").split())
        if cells.startswith(label):
            return cells
    raise AssertionError(f"no line {label!r} in:\n{output}")


def test_every_line_is_read_and_each_left_out_is_counted_by_reason(
    first: Any, export: Export
) -> None:
    """Lines read, learned and skipped by reason, each with where its first one is."""
    out = first.stdout
    odd = 11  # the lines of `odd` but the blank one
    assert _row(out, "lines read") == f"lines read {export.learnable + odd:,}"
    assert _row(out, "learned") == f"learned {export.learnable:,}"
    for label, count in (
        ("not activated", 3),
        ("not JSON", 2),
        ("bad propensity", 2),
        ("multi-slot: the served policy is not vw-ccb", 1),
        ("not a decision", 1),
        ("duplicate event id", 1),
        ("line too long", 1),
    ):
        assert _row(out, label).startswith(f"{label} {count} "), out
    assert "00_data_0.json:" in _row(out, "not activated")  # named under the files' folder
    assert "README" not in out
    assert "features dropped: 1 identifier-like" in " ".join(out.split())


def test_the_served_model_prefers_what_the_log_taught(first: Any, api: Api) -> None:
    """Ranked through Personalizer's route, each tier's best action has the top probability."""
    # version 1: the fresh model of Personalizer's learning policy, sent just before
    assert "model imported: version 2 serves it" in " ".join(first.stdout.split())
    for tier, best in BEST.items():
        body = {
            "contextFeatures": [{"tier": tier}, {"device": {"kind": "mobile"}}],
            "actions": [{"id": a, "features": [{"topic": a}]} for a in ACTIONS],
        }
        answer = httpx.post(
            f"{api.url}/personalizer/v1.0/rank",
            json=body,
            headers={"Ocp-Apim-Subscription-Key": APP_KEY},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        assert answer.headers["X-Streambandit-Model-Version"] == "2"
        ranking = answer.json()["ranking"]
        top = max(ranking, key=lambda entry: entry["probability"])
        assert top["id"] == best, (tier, ranking)
        # exploration is the exported 20 %, spread over the four actions
        assert top["probability"] == pytest.approx(0.8 + 0.2 / 4)


def test_the_configuration_is_applied_as_far_as_the_service_can(first: Any, api: Api) -> None:
    """Reward wait, exploration and the learning policy apply; retention, export frequency not."""
    settings = _get(api, "/v1/policies/default/settings").json()
    assert settings["reward_wait_seconds"] == 600.0
    assert "epsilon=0.2" in settings["spec"]  # the learning policy's, as its exploration
    out = first.stdout
    assert _row(out, "rewardWaitTime").startswith('rewardWaitTime applied "PT10M"')
    assert _row(out, "explorationPercentage").startswith("explorationPercentage applied 0.2")
    assert _row(out, "defaultReward").startswith("defaultReward unchanged")
    assert _row(out, "learningMode").startswith("learningMode unchanged")
    assert _row(out, "logRetentionDays").startswith("logRetentionDays refused 90")
    assert "retention is -1" in _row(out, "logRetentionDays")
    assert _row(out, "modelExportFrequency").startswith("modelExportFrequency refused")
    assert _row(out, "lastConfigurationEditDate").startswith("lastConfigurationEditDate ignored")
    assert '"--cb_explore_adf' in _row(out, "policy applied")  # Personalizer's own options
    spec = settings["spec"]
    assert spec.startswith("vw:")
    assert 'interactions=["::"]' in spec


def test_a_second_import_of_the_same_files_changes_nothing_and_says_so(
    first: Any, api: Api, export: Export
) -> None:
    """Same files, same configuration: no line read, no setting or model written."""
    etag = _get(api, "/v1/policies/default/settings").headers["ETag"]
    again = _import(api, export)
    assert again.exit_code == 0, again.output
    out = " ".join(again.stdout.split())
    assert "not read again" in out
    assert "model unchanged (version 2)" in out
    assert "nothing changed" in out
    assert _get(api, "/v1/policies/default/settings").headers["ETag"] == etag
    assert _get(api, "/v1/policies/default/model/properties").json()["model_version"] == 2


def test_a_dry_run_reads_and_plans_but_changes_nothing(api: Api, export: Export) -> None:
    """--dry-run reports lines and fields as a real run would; no model, no setting changes."""
    before = _get(api, "/v1/policies/dry/settings")
    result = _import(api, export, "--policy", "dry", "--dry-run")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert _row(out, "learned") == f"learned {export.learnable:,}"
    assert _row(out, "rewardWaitTime").startswith("rewardWaitTime applied")
    assert "dry run: nothing was changed" in out
    after = _get(api, "/v1/policies/dry/settings")
    assert after.json() == before.json()
    assert after.headers["ETag"] == before.headers["ETag"]
    assert _get(api, "/v1/policies/dry/model/properties").status_code == 404


def test_a_model_that_learned_live_is_replaced_only_when_asked(api: Api, export: Export) -> None:
    """A served model with live learning is kept (exit 2, naming --replace) unless --replace."""
    kept = _import(api, export, "--policy", "live")
    assert kept.exit_code == 2, kept.output
    assert "learned 30 examples" in " ".join(kept.output.split())
    assert "--replace" in kept.output
    assert _get(api, "/v1/policies/live/model/properties").json()["model_version"] == 1
    replaced = _import(api, export, "--policy", "live", "--replace")
    assert replaced.exit_code == 0, replaced.output
    # version 2: the fresh model of Personalizer's learning policy, sent just before
    assert "version 3 serves it (it replaces version 1)" in " ".join(replaced.stdout.split())
    assert _get(api, "/v1/policies/live/model/properties").json()["model_version"] == 3


def test_a_policy_not_of_vw_is_refused(api: Api, export: Export) -> None:
    """A served policy that is not VW's takes no trained model: exit 2 naming its spec."""
    result = _import(api, export, "--policy", "uniform")
    assert result.exit_code == 2, result.output
    assert "'uniform', not a VW policy" in " ".join(result.output.split())


def test_logs_with_nothing_to_learn_import_no_model(api: Api, tmp_path: Path) -> None:
    """Only multi-slot and deactivated lines: exit 1, the lines counted, no model served."""
    rng = random.Random(3)
    when = datetime(2026, 8, 1, tzinfo=UTC)
    ccb = {**_decision(rng, when), "_outcomes": []}
    path = tmp_path / "nothing.json"
    path.write_text(_line(ccb) + _line(_decision(rng, when, _skipLearn=True)))
    (tmp_path / "p.json").write_text('{"name": "p", "arguments": "--cb_explore_adf"}')
    result = runner.invoke(
        cli.app,
        ["import-personalizer", "--logs", str(path), "--configuration", str(tmp_path / "p.json"),
         "--api", api.url, "--key", ADMIN_KEY, "--policy", "empty"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert _row(out, "lines read") == "lines read 2"
    assert _row(out, "learned") == "learned 0"
    assert _row(out, "multi-slot: the served policy is not vw-ccb").startswith(
        "multi-slot: the served policy is not vw-ccb 1 "
    )
    assert "model not imported: no line could be learned" in " ".join(out.split())
    assert _get(api, "/v1/policies/empty/model/properties").status_code == 404


@pytest.mark.parametrize(
    ("bound", "value", "named"),
    [
        ("--max-files", "1", "more than 1 log files (--max-files)"),
        ("--max-bytes", "1000", "more than 1,000 (--max-bytes)"),
    ],
)
def test_logs_beyond_the_bounds_are_refused_before_anything_is_read(
    api: Api, export: Export, bound: str, value: str, named: str
) -> None:
    """More files or bytes than allowed: exit 2 naming the option, nothing read."""
    result = _import(api, export, "--policy", "dry", bound, value)
    assert result.exit_code == 2, result.output
    assert named in " ".join(result.output.split())
    assert "'--logs'" in result.output


# -- the pieces, without a service ----------------------------------------------------------


def test_a_model_trained_on_the_export_is_the_same_for_the_same_files(export: Export) -> None:
    """The digest is the files' bytes and the spec; training is deterministic."""
    files = export_files([export.logs], Bounds())
    settings = PolicySettings(spec="vw-epsilon")
    assert inputs_digest(files, settings) == inputs_digest(list(reversed(files)), settings)
    assert inputs_digest(files, settings) != inputs_digest(files[:1], settings)
    assert inputs_digest(files, settings) != inputs_digest(
        files, PolicySettings(spec="vw-squarecb")
    )
    models = []
    for _ in range(2):
        policy = make_policy("vw-epsilon")
        assert isinstance(policy, VWPolicy)
        report = learn_export(
            files,
            policy,
            settings,
            limits=Limits(),
            identifiers="drop",
            bounds=Bounds(max_line_bytes=MAX_LINE),
        )
        models.append(policy.model_file())
    assert report.learned == export.learnable
    assert models[0] == models[1]


def test_a_line_whose_features_the_route_would_refuse_is_counted(tmp_path: Path) -> None:
    """With identifiers refused (a strict setting), a line holding an e-mail is not learned."""
    rng = random.Random(1)
    record = _decision(rng, datetime(2026, 8, 1, tzinfo=UTC))
    record["c"]["FromUrl"].append({"contact": "ann@example.com"})
    path = tmp_path / "one.json"
    path.write_text(_line(record) + _line(_decision(rng, datetime(2026, 8, 1, tzinfo=UTC))))
    policy = make_policy("vw-epsilon")
    assert isinstance(policy, VWPolicy)
    report = learn_export(
        [path],
        policy,
        PolicySettings(spec="vw-epsilon"),
        limits=Limits(),
        identifiers="refuse",
        bounds=Bounds(),
    )
    assert (report.lines, report.learned) == (2, 1)
    assert report.skipped == {"features refused": 1}
    assert "contact" in report.first["features refused"]


def test_a_line_of_the_longest_length_is_learned_and_one_byte_more_is_skipped(
    tmp_path: Path,
) -> None:
    """--max-line-bytes counts a line without its line break; a longer one is only counted."""
    rng = random.Random(2)
    when = datetime(2026, 8, 1, tzinfo=UTC)
    short, long = _line(_decision(rng, when)), _line(_decision(rng, when, pad="xy"))
    path = tmp_path / "edge.json"
    # the short line twice (its second copy without an event id, not to be a duplicate),
    # once ending in \r\n: neither break counts
    path.write_text(short.replace("\n", "\r\n") + long + short.replace("EventId", "Eventld"))
    longest = len(short) - 1
    assert len(long) - 1 > longest
    policy = make_policy("vw-epsilon")
    assert isinstance(policy, VWPolicy)
    report = learn_export(
        [path],
        policy,
        PolicySettings(spec="vw-epsilon"),
        limits=Limits(),
        identifiers="drop",
        bounds=Bounds(max_line_bytes=longest),
    )
    assert (report.lines, report.learned) == (3, 2)
    assert report.skipped == {"line too long": 1}
    assert report.first["line too long"].startswith(f"{path.name}:2: longer than")


def test_the_configuration_plan_says_what_each_field_does() -> None:
    """Each exported field is applied, unchanged, refused (with the rule) or ignored."""
    settings = PolicySettings(spec="vw-epsilon", exploration={"epsilon": 0.05})
    current = service_configuration(settings, epsilon=0.05, snapshot_seconds=0.25, edited_at=None)
    exported = PersonalizerServiceConfiguration.model_validate(
        {
            "rewardWaitTime": "PT1H",
            "defaultReward": 5000.0,  # beyond the reward range
            "rewardAggregation": "average",  # not provided
            "explorationPercentage": 0.05,
            "learningMode": "Apprentice",
            "autoOptimizationFrequency": "P1D",
        }
    )
    outcomes, wanted = plan_configuration(exported, current, settings, Limits())
    status = {o.field: (o.status, o.note) for o in outcomes}
    assert status["rewardWaitTime"][0] == "applied"
    assert status["defaultReward"][0] == "refused"
    assert status["rewardAggregation"] == ("refused", status["rewardAggregation"][1])
    assert "average" in status["rewardAggregation"][1]
    assert status["explorationPercentage"][0] == "unchanged"
    assert status["learningMode"][0] == "applied"
    assert status["autoOptimizationFrequency"] == ("applied", 'was "P7D"')
    assert wanted is not None
    assert wanted.reward_wait_time == timedelta(hours=1)
    assert (wanted.default_reward, wanted.reward_aggregation) == (0.0, "earliest")
    nothing, none = plan_configuration(current, current, settings, Limits())
    assert none is None
    assert {o.status for o in nothing} == {"unchanged"}
    kept = service_configuration(
        settings, epsilon=0.05, snapshot_seconds=0.25, edited_at=None, retention_days=30
    )  # a deployment with a log retention reads its own configuration back unchanged
    nothing, none = plan_configuration(kept, kept, settings, Limits())
    assert none is None
    assert {o.status for o in nothing} == {"unchanged"}


def test_a_configuration_file_of_neither_kind_is_refused_naming_it(tmp_path: Path) -> None:
    """A file that is neither Personalizer configuration is a usage error naming the file."""
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(ConfigurationError, match=r"other\.json: neither"):
        read_configuration([path])
    broken = tmp_path / "broken.json"
    broken.write_text('{"rewardWaitTime": "soon", "defaultReward": 0, "rewardAggregation": "sum"}')
    with pytest.raises(ConfigurationError, match=r"broken\.json: .*rewardWaitTime"):
        read_configuration([broken])
