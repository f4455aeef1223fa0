"""Whether learning keeps up: worker heartbeats, and training examples held until learned.

The stream workers write, and the API reads (``/readyz``, the
``streambandit_learning_stalled{policy}`` gauge), two things in Redis, under the state's
prefix::

    sb:learning:workers            hash: worker id -> JSON {"at": time, "consuming": bool}
    sb:learning:held:{policy}      sorted set: event id -> when its example was released
    sb:learning:examples:{policy}  hash: event id -> the training example (JSON)

A worker beats every second, saying whether its consumers have partitions assigned
(the API is ready only once one does). The join holds every training example it
releases, once the broker has it, until the learner has applied it and the decision
log has it; so an example the broker loses (the embedded broker keeps its records in
memory) is still in Redis, and :meth:`LearningMonitor.held` hands it out to be produced
again (``streambandit up`` does so after it restarts the broker). The learner and the
decision log deduplicate by event id, so producing an example twice changes nothing.

Learning of a policy is *stalled* when no worker consuming has beaten for
``settings.learner.stall_seconds``, or when an example released that long ago is
still held. Times are the hosts' clocks (seconds since the epoch): keep the API and
worker hosts' clocks within a few seconds of each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bandit.service.state import StateStore

__all__ = ["LearningMonitor", "LearningStatus"]

_WORKERS_KEPT_SECONDS = 24 * 3600  # a worker silent this long is forgotten


@dataclass(frozen=True, slots=True)
class LearningStatus:
    """Whether learning of one policy is stalled, and why."""

    policy: str
    stalled: bool
    reason: str = ""


class LearningMonitor:
    """Read and write learning progress in Redis (see the module docstring).

    Parameters
    ----------
    store
        The Redis state.
    stall_seconds
        How long a worker may be silent, or an example unlearned, before learning
        counts as stalled (``settings.learner.stall_seconds``).
    """

    def __init__(self, store: StateStore, stall_seconds: float) -> None:
        self.store = store
        self.stall_seconds = stall_seconds

    def _workers(self) -> str:
        return self.store.key("learning", "workers")

    def _held(self, policy: str) -> str:
        return self.store.key("learning", "held", policy)

    def _examples(self, policy: str) -> str:
        return self.store.key("learning", "examples", policy)

    # -- the workers -----------------------------------------------------------------

    async def beat(self, worker: str, *, consuming: bool, now: float | None = None) -> None:
        """Note that `worker` is alive, and whether its consumers have partitions."""
        stamp = time.time() if now is None else now
        value = json.dumps({"at": stamp, "consuming": consuming})
        await self.store.redis.hset(self._workers(), worker, value)

    async def consuming_age(self, now: float | None = None) -> float | None:
        """Seconds since a consuming worker last beat; None when none ever did."""
        stamp = time.time() if now is None else now
        raw = await self.store.redis.hgetall(self._workers())
        newest: float | None = None
        stale: list[bytes | str] = []
        for worker, value in raw.items():
            beat = json.loads(value)
            if stamp - float(beat["at"]) > _WORKERS_KEPT_SECONDS:
                stale.append(worker)
            elif beat.get("consuming") and (newest is None or beat["at"] > newest):
                newest = float(beat["at"])
        if stale:
            await self.store.redis.hdel(self._workers(), *stale)
        return None if newest is None else max(stamp - newest, 0.0)

    # -- the examples ----------------------------------------------------------------

    async def hold(
        self, examples: Mapping[str, Sequence[tuple[str, bytes]]], now: float | None = None
    ) -> None:
        """Hold released examples, per policy: ``(event id, example JSON)`` pairs."""
        stamp = time.time() if now is None else now
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for policy, items in examples.items():
                if not items:
                    continue
                pipe.zadd(self._held(policy), {event_id: stamp for event_id, _ in items}, nx=True)
                pipe.hset(self._examples(policy), mapping=dict(items))
            await pipe.execute()

    async def learned(self, event_ids: Mapping[str, Sequence[str]]) -> None:
        """Stop holding examples the learner applied and the decision log has."""
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for policy, ids in event_ids.items():
                if ids:
                    pipe.zrem(self._held(policy), *ids)
                    pipe.hdel(self._examples(policy), *ids)
            await pipe.execute()

    async def forget(self, policy: str, event_ids: Sequence[str]) -> None:
        """Stop holding examples that will never be learned (their record is a dead letter).

        A training record that fails to decode names its policy (the record's key) and,
        when its JSON can be read at all, its event id: without this its example would
        stay held, learning would read as stalled for ever and a broker restart would
        produce it again.
        """
        await self.learned({policy: event_ids})

    async def held_policies(self) -> list[str]:
        """Policies that have examples held."""
        prefix = self.store.key("learning", "held", "")
        names = []
        async for raw in self.store.redis.scan_iter(match=prefix + "*", count=200):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            names.append(key[len(prefix) :])
        return sorted(names)

    async def held(
        self,
        policy: str,
        *,
        older_than: float = 0.0,
        limit: int = 1000,
        start: int = 0,
        now: float | None = None,
    ) -> list[tuple[str, bytes]]:
        """Return up to `limit` examples held at least `older_than` seconds, oldest first.

        From the `start`-th of them on (a page; entries whose example is gone are dropped
        as they are found, so the next page starts `start` plus the examples returned).
        """
        stamp = time.time() if now is None else now
        ids = await self.store.redis.zrangebyscore(
            self._held(policy), "-inf", stamp - older_than, start=start, num=limit
        )
        if not ids:
            return []
        values = await self.store.redis.hmget(self._examples(policy), list(map(_text, ids)))
        found = []
        missing = []
        for raw_id, value in zip(ids, values, strict=True):
            event_id = _text(raw_id)
            if value is None:
                missing.append(event_id)
            else:
                found.append((event_id, value if isinstance(value, bytes) else value.encode()))
        if missing:  # its example is gone (a torn write): nothing left to produce
            await self.store.redis.zrem(self._held(policy), *missing)
        return found

    # -- the verdict -----------------------------------------------------------------

    async def status(
        self, policies: Sequence[str], now: float | None = None
    ) -> list[LearningStatus]:
        """Say, for each policy, whether its learning is stalled and why."""
        stamp = time.time() if now is None else now
        limit = self.stall_seconds
        age = await self.consuming_age(stamp)
        if age is None or age > limit:
            since = "ever" if age is None else f"for {age:.0f} s"
            reason = f"no stream worker has consumed {since} (at most {limit:g} s, stall_seconds)"
            return [LearningStatus(name, stalled=True, reason=reason) for name in policies]
        out = []
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for name in policies:
                pipe.zrange(self._held(name), 0, 0, withscores=True)
                pipe.zcount(self._held(name), "-inf", stamp - limit)
            found = await pipe.execute()
        for index, name in enumerate(policies):
            oldest, overdue = found[2 * index], int(found[2 * index + 1])
            if overdue:
                waited = stamp - float(oldest[0][1])
                reason = (
                    f"{overdue} training examples of policy {name!r} released more than "
                    f"{limit:g} s ago are not learned yet (oldest {waited:.0f} s; "
                    "settings.learner.stall_seconds)"
                )
                out.append(LearningStatus(name, stalled=True, reason=reason))
            else:
                out.append(LearningStatus(name, stalled=False))
        return out


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
