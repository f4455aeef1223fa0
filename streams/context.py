"""Context aggregation: behaviour events become session and device features in Redis.

The context agent folds each :class:`~bandit.wire.schemas.BehaviourEvent` into two feature
hashes that the rank API reads (both expire ``redis.feature_ttl_seconds`` after the
session's last event):

``features:session:{session_id}``
    ``events``, ``views``, ``clicks``, ``cart_adds``, ``cart_removes``, ``purchases``
    (counts), ``purchase_value`` (sum of purchase values), ``last_kind`` and
    ``last_item`` (the latest event's kind and item).
``features:device:{session_id}``
    ``type``, ``os`` and ``app_version`` of the device the session runs on. Devices are
    looked up by session: no device identifier is collected.

No user id is stored with the features; each person's list of sessions
(``user:{pseudonym}:sessions``) says which are theirs, for export and erasure. Events are
keyed by session id, so one worker folds a session's events in order. Each event id is
marked seen (``seen:event:{id}``, same TTL) before its features are written, so a
redelivered event is not counted twice (at most once: a crash between the two writes
loses that one event's contribution). An event whose person was erased after it was
accepted is dropped, atomically with the write (docs/privacy.md, "Erasure is final").

Examples
--------
>>> from bandit.wire.schemas import BehaviourEvent
>>> event = BehaviourEvent.model_validate({
...     "kind": "click", "user_id": "u1", "session_id": "s1", "item_id": "i9",
...     "device": {"type": "mobile", "os": "iOS 17.4"}})
>>> features = session_features({"events": 2, "views": 2}, event)
>>> features["events"], features["clicks"], features["last_item"]
(3, 1, 'i9')
>>> device_features(event)
{'type': 'mobile', 'os': 'iOS 17.4'}
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from bandit.service.state import StateStore
from bandit.wire.schemas import BehaviourEvent, BehaviourKind

__all__ = ["COUNTED_KINDS", "ContextAggregator", "device_features", "session_features"]

FeatureMap = dict[str, float | str]

_FOLDS_AT_ONCE = 32
"""Most sessions folded at once: each holds a Redis connection for its transaction, and
the client's pool refuses more than 100 (a batch may hold hundreds of sessions)."""

COUNTED_KINDS: Mapping[BehaviourKind, str] = {
    BehaviourKind.VIEW: "views",
    BehaviourKind.CLICK: "clicks",
    BehaviourKind.ADD_TO_CART: "cart_adds",
    BehaviourKind.REMOVE_FROM_CART: "cart_removes",
    BehaviourKind.PURCHASE: "purchases",
}
"""The session counter each kind of event increments."""


def _number(features: Mapping[str, float | str], name: str) -> float:
    value = features.get(name, 0)
    return value if isinstance(value, int | float) else 0


def session_features(previous: Mapping[str, float | str], event: BehaviourEvent) -> FeatureMap:
    """Return the session features after `event`, given those before it.

    Only the changed features are returned (they are merged into the stored hash).
    """
    counter = COUNTED_KINDS[event.kind]
    changed: FeatureMap = {
        "events": _number(previous, "events") + 1,
        counter: _number(previous, counter) + 1,
        "last_kind": event.kind.value,
    }
    if event.item_id is not None:
        changed["last_item"] = event.item_id
    if event.kind is BehaviourKind.PURCHASE and event.value is not None:
        changed["purchase_value"] = _number(previous, "purchase_value") + event.value
    return changed


def device_features(event: BehaviourEvent) -> FeatureMap:
    """Return the features of the device `event` came from."""
    features: FeatureMap = {"type": event.device.type.value, "os": event.device.os}
    if event.device.app_version is not None:
        features["app_version"] = event.device.app_version
    return features


class ContextAggregator:
    """Fold batches of behaviour events into Redis session and device features.

    Parameters
    ----------
    store
        The Redis state.
    ttl_seconds
        Lifetime of the features after a session's last event
        (``settings.redis.feature_ttl_seconds``).
    slack_seconds
        How far the clocks stamping events and erasures may disagree
        (``settings.watermark_slack_seconds``; see :func:`bandit.service.state.erasure_covers`).
    """

    def __init__(self, store: StateStore, ttl_seconds: int, slack_seconds: float = 0.0) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.slack_seconds = slack_seconds

    async def apply(
        self, events: Sequence[BehaviourEvent], accepted: Sequence[float | None] | None = None
    ) -> int:
        """Fold `events` (in consumption order) into the features; return how many were.

        Events already seen (redelivered) are skipped, and so are events whose person
        was erased after they were accepted: an event's acceptance time is the earlier
        of its ``occurred_at`` and its entry in `accepted` (the record's Kafka
        timestamp, when it has one), and the check is atomic with the write
        (:meth:`bandit.service.state.StateStore.fold_session`), so an event read after an
        erasure brings nothing back.
        """
        times = [
            event.occurred_at.timestamp()
            if stamp is None
            else min(stamp, event.occurred_at.timestamp())
            for event, stamp in zip(events, accepted or [None] * len(events), strict=True)
        ]
        fresh = await self._first_seen(events)
        by_session: dict[str, list[tuple[BehaviourEvent, float]]] = {}
        for index in fresh:
            event = events[index]
            by_session.setdefault(event.session_id, []).append((event, times[index]))
        turns = asyncio.Semaphore(_FOLDS_AT_ONCE)

        async def fold(session_id: str, events: list[tuple[BehaviourEvent, float]]) -> int:
            async with turns:
                return await self._fold(session_id, events)

        folded = await asyncio.gather(*(fold(sid, evs) for sid, evs in by_session.items()))
        return sum(folded)

    async def _first_seen(self, events: Sequence[BehaviourEvent]) -> list[int]:
        if not events:
            return []
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for event in events:
                key = self.store.key("seen", "event", event.event_id)
                pipe.set(key, 1, nx=True, ex=self.ttl_seconds)
            marked = await pipe.execute()
        # The second of two copies in one batch finds the key set by the first.
        return [index for index, was_set in enumerate(marked) if was_set]

    async def _fold(self, session_id: str, events: Sequence[tuple[BehaviourEvent, float]]) -> int:
        def fold(stored: dict[str, float | str], kept: list[int]) -> tuple[FeatureMap, FeatureMap]:
            current: FeatureMap = dict(stored)
            for index in kept:
                current.update(session_features(current, events[index][0]))
            return current, device_features(events[kept[-1]][0])

        kept = await self.store.fold_session(
            session_id,
            [(event.user_id, accepted_at) for event, accepted_at in events],
            fold,
            self.ttl_seconds,
            slack=self.slack_seconds,
        )
        return len(kept)
