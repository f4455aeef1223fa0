"""Pseudonyms, export and erasure through the whole loop, on real servers.

A person with a raw id (an email) gives consent, sends behaviour events and is ranked
and rewarded through the API, while a stream worker joins, learns and logs. The raw
id is then looked for everywhere the service keeps anything: every Kafka topic, every
Redis key and value, the decision log, the API's and the worker's logs, the metrics. It
is nowhere. Their logged decisions are linkable to them through their secret until
they are erased; after erasure nothing held in Redis is theirs, a decision still
pending in the join is never learned nor logged, and the logged ones keep their
propensities and rewards for replay with nothing left to link them.

Their decisions offer actions whose ids hold every character the id rule allows, ``:``
(which VW text escapes) included: the rank's answer, the decision log, the export and
replay all show the ids as the app gave them.
"""

from __future__ import annotations

import asyncio
import json
import string
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from pydantic import TypeAdapter
from redis.asyncio import Redis

from bandit.client import Client
from bandit.ops.runtime import LocalStack
from bandit.privacy.consent import pseudonymise, subject_token
from bandit.wire.schemas import ActionId, PolicySettings
from replay import read_log
from tests.integration.conftest import ACTIONS, read_counters, wait_for

# Every character the id rule allows, in ids that start as it requires.
ID_CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.:-"
RULE_ACTIONS = [
    {"id": ID_CHARACTERS, "features": {"item": {"kind": "k0"}}},
    {"id": "item:1", "features": {"item": {"kind": "k1"}}},
    {"id": "a:b.c_d-e::", "features": {"item": {"kind": "k2"}}},
]


def _post(stack: LocalStack, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(
        f"{stack.api_url}{path}", json=body, headers={"X-API-Key": stack.app_key}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _log_lines(stack: LocalStack) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(stack.decision_logs.rglob("*.dsjson"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


async def _all_topics(broker: str, prefix: str) -> bytes:
    """Every key and value of every topic of this stack, from the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, auto_offset_reset="earliest")
    await consumer.start()
    try:
        topics = sorted(t for t in await consumer.topics() if t.startswith(f"{prefix}."))
        consumer.subscribe(topics)
        blob = bytearray()
        quiet = 0
        while quiet < 5:
            batches = await consumer.getmany(timeout_ms=300)
            records = [r for batch in batches.values() for r in batch]
            quiet = 0 if records else quiet + 1
            for record in records:
                blob += (record.key or b"") + b"\n" + (record.value or b"") + b"\n"
        assert len(topics) >= 4, topics
        return bytes(blob)
    finally:
        await consumer.stop()


async def _redis_dump(redis_url: str, prefix: str) -> tuple[list[bytes], bytes]:
    """Every key of this stack, and every value (strings, hashes, sets, sorted sets)."""
    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(f"{prefix}:*")]
        blob = bytearray()
        for key in keys:
            kind = await redis.type(key)
            if kind == b"string":
                blob += await redis.get(key) or b""
            elif kind == b"hash":
                for field, value in (await redis.hgetall(key)).items():
                    blob += field + b"=" + value + b"\n"
            elif kind == b"set":
                blob += b"\n".join(await redis.smembers(key))
            elif kind == b"zset":
                blob += b"\n".join(await redis.zrange(key, 0, -1))
        return keys, bytes(blob)
    finally:
        await redis.aclose()


def _secret(redis_url: str, prefix: str, pseudonym: str) -> bytes | None:
    async def read() -> bytes | None:
        redis = Redis.from_url(redis_url)
        try:
            found: bytes | None = await redis.hget(f"{prefix}:consent:{pseudonym}", "secret")
            return found
        finally:
            await redis.aclose()

    return asyncio.run(read())


def test_raw_ids_are_kept_nowhere_and_erasure_leaves_nothing_linkable(
    stack: LocalStack, redis_url: str, broker: str
) -> None:
    """Plant a raw id; find it nowhere; export it all; erase; find nothing linkable."""
    prefix: str = stack.prefix  # type: ignore[attr-defined]
    raw = f"planted-{uuid.uuid4().hex[:8]}@example.net"
    marker = raw.split("@", maxsplit=1)[0]
    session = f"sess-{uuid.uuid4().hex[:8]}"
    pseudonym = pseudonymise(raw, stack.pseudonym_key().encode())
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings("default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=0.5))
    with Client(stack.api_url, api_key=stack.app_key) as client:
        client.set_consent(raw, personalisation=True, learning=True, source="test")
        for item in ("item-1", "item-2"):
            client.event(
                kind="click",
                user_id=raw,
                session_id=session,
                device={"type": "mobile", "os": "iOS 17"},
                item_id=item,
            )
        wait_for(
            lambda: _post(stack, "/v1/privacy/export", {"user_id": raw})["sessions"].get(session),
            30,
            "the session features",
        )
        event_ids = []
        chosen: dict[str, str] = {}
        for i in range(10):
            result = client.rank({"page": {"n": i}}, RULE_ACTIONS, user_id=raw, session_id=session)
            event_ids.append(result.event_id)
            chosen[result.event_id] = result.action_id
            client.reward(result.event_id, 1.0)
        wait_for(
            lambda: {line["EventId"] for line in _log_lines(stack)} >= set(event_ids),
            60,
            "the decision log",
        )
        metrics = httpx.get(f"{stack.api_url}/metrics", timeout=10).text

    # the raw id is nowhere
    assert marker not in asyncio.run(_all_topics(broker, prefix)).decode(errors="replace")
    keys, values = asyncio.run(_redis_dump(redis_url, prefix))
    assert not any(marker.encode() in key for key in keys)
    assert marker.encode() not in values
    logs = b"".join(p.read_bytes() for p in stack.decision_logs.rglob("*.dsjson"))
    assert marker.encode() not in logs
    service_logs = b"".join(p.read_bytes() for p in Path(stack.workdir).glob("*.log"))
    assert service_logs  # the API and worker wrote their logs there
    assert marker.encode() not in service_logs
    assert marker not in metrics

    # export: everything held, and the log linkable through the secret
    held = _post(stack, "/v1/privacy/export", {"user_id": raw})
    assert held["pseudonym"] == pseudonym
    assert held["consent"]["learning"]["granted"] is True
    assert held["has_secret"] is True
    assert held["sessions"][session]["session"]["clicks"] == 2
    assert set(event_ids) <= set(held["recent_decisions"])
    logged_for_them = {d["event_id"]: d for d in held["logged_decisions"]}
    assert set(logged_for_them) == set(event_ids)  # found in the log through their secret
    assert all(d["reward"] == 1.0 and 0 < d["probability"] <= 1 for d in logged_for_them.values())
    # the ids round trip: rank -> decision log -> export -> replay, unchanged
    assert {e: d["chosen_action_id"] for e, d in logged_for_them.items()} == chosen
    offered = [action["id"] for action in RULE_ACTIONS]
    read = read_log(stack.decision_logs).logs
    assert read.event_ids is not None
    assert read.action_ids is not None
    replayed = dict(zip(read.event_ids, range(read.n), strict=True))
    for event_id, action_id in chosen.items():
        row = replayed[event_id]
        assert read.action_ids[row] == offered
        assert read.action_ids[row][int(read.chosen[row])] == action_id
    secret = _secret(redis_url, prefix, pseudonym)
    assert secret is not None
    lines = {line["EventId"]: line for line in _log_lines(stack)}
    for event_id in event_ids:
        assert lines[event_id]["_sb"]["subject"] == subject_token(secret, event_id)

    # one decision still pending in the join when the person is erased
    with Client(stack.api_url, api_key=stack.admin_key) as admin:
        admin.set_settings("default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=6.0))
    with Client(stack.api_url, api_key=stack.app_key) as client:
        deadline_check = read_counters(stack, redis_url).get("decisions", 0)
        pending = client.rank({"page": {"n": 99}}, ACTIONS, user_id=raw).event_id
        wait_for(
            lambda: read_counters(stack, redis_url).get("decisions", 0) > deadline_check,
            30,
            "the join to hold the pending decision",
        )
        erased = client.erase(raw)
        assert erased["pending_decisions"] == 1
        assert erased["sessions"] == 1
        after = client.export(raw)
        assert after["consent"] is None
        assert after["has_secret"] is False
        assert after["sessions"] == {}
        assert after["recent_decisions"] == []
        assert "logged_decisions" not in after  # no secret left to find them with
        # a decision for someone else, decided after the pending one was due, gets logged
        later = client.rank({"page": {"n": 100}}, ACTIONS).event_id
        wait_for(lambda: later in {line["EventId"] for line in _log_lines(stack)}, 60, "later")

    keys, values = asyncio.run(_redis_dump(redis_url, prefix))
    assert not any(pseudonym.encode() in key for key in keys)  # nothing held is theirs
    assert not any(session.encode() in key for key in keys if b":features:" in key)
    assert _secret(redis_url, prefix, pseudonym) is None
    logged = {line["EventId"]: line for line in _log_lines(stack)}
    assert pending not in logged  # erased while pending: never learned nor logged
    for event_id in event_ids:  # still usable for replay, linked to nobody now
        line = logged[event_id]
        assert line["_label_probability"] > 0
        assert len(line["_sb"]["subject"]) == 32


def test_the_round_trip_ids_are_every_character_the_id_rule_allows() -> None:
    """The ids above hold each character the id rule's pattern allows, and pass the rule."""
    pattern: str = TypeAdapter(ActionId).json_schema()["pattern"]
    assert pattern == "^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
    assert set(ID_CHARACTERS) == set(string.ascii_letters + string.digits + "_.:-")
    for action in RULE_ACTIONS:
        assert TypeAdapter(ActionId).validate_python(action["id"]) == action["id"]
