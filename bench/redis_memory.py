"""Redis memory per decision: what the service keeps, how long, and what that sums to.

One Redis server started here (``redis-server`` as :class:`bandit.ops.runtime.LocalServices`
starts it), the service's own code paths, no broker: N ranks by the real
:class:`~bandit.service.engine.DecisionEngine` (a share of them naming a person, who has
consented), each decision added to the join (:class:`streams.join.JoinStore`) as the
join agent does, a reward for some, then every decision claimed and completed, its id
saved as learned with a model (:meth:`StateStore.save_model`) and marked logged
(:meth:`StateStore.mark_logged`). ``INFO memory``'s ``used_memory`` is read before, with
the decisions pending in the join, and once they are done; ``MEMORY USAGE`` splits what
stays by family of keys. How long each family stays is read from Redis (TTLs) and from
the store's dedup window, so the same script measured on an older tree (``PYTHONPATH``)
gives the figures before a change.

    python bench/redis_memory.py [--decisions 20000] [--named 0.5] [--persons 1000]

Prints bytes per decision pending and done, by family, bytes per person, and memory at
steady state for 10, 75 and 1,000 decisions/s (docs/redis-memory.md), with the windows
of this tree and with those before issue 10 bounded them (a day for done markers and
logged ids, a week for learned ids and a person's decision ids). For the figures of
another tree, copy this file out of ``bench/`` and run it with that tree first on
``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bandit.ops.runtime import LocalServices
from bandit.service.engine import DecisionEngine
from bandit.service.state import StateStore
from bandit.settings import KafkaSettings, PrivacySettings, RedisSettings, Settings
from bandit.wire.schemas import RankRequest, RewardReported
from streams.join import JoinStore

POLICY = "default"
WAIT = 10.0
RATES = (10, 75, 1000)
_DAY = 86_400.0
_FIXED_BEFORE = {"learned": 7 * _DAY, "logged": _DAY}  # the windows before they were set
_BEFORE = {  # how long each family was kept before issue 10 bounded them
    "join done markers": _DAY,
    "learned ids": 7 * _DAY,
    "logged ids": _DAY,
    "person: decision ids": 7 * _DAY,
}


def _request(event_id: str, rng: random.Random) -> RankRequest:
    """A rank request of a typical size: two namespaces, five actions with features."""
    return RankRequest.model_validate(
        {
            "event_id": event_id,
            "context": {
                "user": {"tier": rng.choice(["gold", "silver"]), "visits": rng.randint(1, 50)},
                "page": {"section": rng.choice(["news", "sport", "tech"]), "hour": 14},
            },
            "actions": [
                {"id": f"article-{rng.randint(1, 500)}-{i}", "features": {"item": {"len": i}}}
                for i in range(5)
            ],
        }
    )


async def _used(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def _usage(redis: Redis, pattern: str) -> tuple[int, int, float | None]:
    """Total MEMORY USAGE of the keys matching `pattern`, their count, a TTL of one."""
    total, count, ttl = 0, 0, None
    async for key in redis.scan_iter(match=pattern, count=1000):
        total += int(await redis.memory_usage(key, samples=0) or 0)
        count += 1
        if ttl is None:
            found = await redis.ttl(key)
            ttl = float(found) if found >= 0 else None
    return total, count, ttl


async def measure(redis_url: str, decisions: int, named: float, persons: int) -> dict[str, Any]:
    """Run the decisions through the service's paths; return what Redis held, by family."""
    prefix = f"m{uuid.uuid4().hex[:6]}"
    settings = Settings(
        # a generous timeout: a slow answer on a loaded machine must not degrade the engine
        redis=RedisSettings(url=redis_url, key_prefix=prefix, socket_timeout_seconds=10.0),
        privacy=PrivacySettings(consent_default="granted"),
        policies={POLICY: "vw-epsilon"},
    )
    redis = Redis.from_url(redis_url)
    store = StateStore(redis, prefix)
    engine = DecisionEngine(settings, store)
    await engine.start()
    await engine.stop()  # no poller: nothing else writes meanwhile
    loaded = engine.loaded(POLICY)
    assert loaded is not None
    policy_settings = loaded.settings.model_copy(update={"reward_wait_seconds": WAIT})
    join = JoinStore(store)
    rng = random.Random(0)
    people = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(persons)]
    await redis.memory_purge()
    start = await _used(redis)
    ids = []
    for i in range(decisions):
        event_id = str(uuid.uuid4())
        user = rng.choice(people) if rng.random() < named else None
        outcome = await engine.rank(_request(event_id, rng), POLICY, user=user)
        await join.add_decision(outcome.decision, policy_settings)
        if i % 3 == 0:
            reward = RewardReported(event_id=event_id, reward=1.0)
            await join.add_reward(reward)
        ids.append(event_id)
    if engine.degraded:
        msg = "the engine lost Redis during the run: the figures would be wrong"
        raise RuntimeError(msg)
    pending = await _used(redis)
    later = (datetime.now(UTC) + timedelta(seconds=2 * WAIT)).timestamp()
    while claimed := await join.claim_due(now=later, limit=1000):
        await join.complete(claimed)
    for first in range(0, len(ids), 1000):
        batch = ids[first : first + 1000]
        await store.save_model(POLICY, loaded.policy.snapshot(), 1 + first, {}, batch)
        await store.mark_logged(POLICY, batch)
    await redis.memory_purge()
    done = await _used(redis)
    window = getattr(store, "dedup_window_seconds", None)
    families: dict[str, tuple[int, int, float | None]] = {
        "join done markers": await _usage(redis, f"{prefix}:join:done:*"),
        "learned ids": await _usage(redis, f"{prefix}:learned:*"),
        "logged ids": await _usage(redis, f"{prefix}:logged:*"),
        "person: decision ids": await _usage(redis, f"{prefix}:user:*:decisions"),
        "person: last decisions": await _usage(redis, f"{prefix}:user:*:recent"),
        "person: consent, secret": await _usage(redis, f"{prefix}:consent:*"),
        "join: pending events": await _usage(redis, f"{prefix}:join:event:*"),
    }
    kept = {
        "learned ids": window if window is not None else _FIXED_BEFORE["learned"],
        "logged ids": window if window is not None else _FIXED_BEFORE["logged"],
    }
    await redis.aclose()
    return {
        "pending": (pending - start) / decisions,
        "done": (done - start) / decisions,
        "families": families,
        "kept": kept,
        "named": named,
    }


def report(found: dict[str, Any], decisions: int) -> None:
    """Print bytes per decision and memory at steady state."""
    print(f"{decisions:,} decisions, {found['named']:.0%} naming one of the persons")
    print(f"used_memory per decision while pending in the join : {found['pending']:8.0f} B")
    print(f"used_memory per decision once done                  : {found['done']:8.0f} B")
    print()
    print(f"{'family':<26} {'keys':>7} {'B/decision':>11} {'kept':>12}")
    per_decision: list[tuple[str, float, float]] = []
    for name, (total, count, ttl) in found["families"].items():
        kept = found["kept"].get(name, ttl)
        share = total / decisions
        shown = "-" if kept is None else f"{kept / 3600:.1f} h"
        print(f"{name:<26} {count:>7,} {share:>11.1f} {shown:>12}")
        if kept is not None and name.startswith(("join done", "learned", "logged", "person: d")):
            per_decision.append((name, share, kept))
    people = found["families"]["person: consent, secret"][1]
    if people:
        person = sum(
            found["families"][name][0]
            for name in ("person: consent, secret", "person: last decisions")
        )
        print(
            f"per person ({people:,} named, {decisions * found['named'] / people:.0f} "
            f"decisions each): {person / people:,.0f} B (consent, secret, last decisions)"
        )
    print()
    before = [(name, share, _BEFORE[name]) for name, share, _ in per_decision]
    for label, families in (("this tree", per_decision), ("the windows before", before)):
        print(f"steady state (every window full), per-decision state only, {label}:")
        held = sum(share * kept for _, share, kept in families)  # byte-seconds per decision
        for rate in RATES:
            day = sum(share * min(kept, _DAY) for _, share, kept in families) * rate
            print(
                f"  {rate:>5} decisions/s: {held * rate / 2**20:10,.0f} MiB held; "
                f"{day / 2**20:10,.0f} MiB after the first day"
            )


def main() -> None:
    """Run the measurement on a Redis started here."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--named", type=float, default=0.5)
    parser.add_argument("--persons", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        # only Redis is started: the broker is named, never reached
        settings = Settings(kafka=KafkaSettings(broker="127.0.0.1:9"))
        with LocalServices(settings, workdir=Path(folder)) as services:
            found = asyncio.run(
                measure(services.redis_url, args.decisions, args.named, args.persons)
            )
    report(found, args.decisions)


if __name__ == "__main__":
    main()
