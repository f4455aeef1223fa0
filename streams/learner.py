"""The learner: training examples in, policy updates applied exactly once, snapshots out.

The ``training`` topic is keyed by policy name, so each policy lives in one partition
and one learner (one writer) updates it. The worker's training consumer hands batches
of records, decoded once (:mod:`streams.training`), to :meth:`Learner.process`, which
applies them and then saves a snapshot of every policy it changed; the consumer commits
the batch's offsets only after that, so they never pass what a saved snapshot covers.

A VW policy learns the text written when the record was decoded, through VW's native
binding (:meth:`policies.vw.VWPolicy.learn_logged`); other policies, and records the
one-pass writer left alone, go through :meth:`policies.Policy.learn`. Both learn the
same thing.

Exactly once, under an at-least-once stream
-------------------------------------------
Each saved model (``StateStore.save_model``) holds, in one Redis transaction, the policy
snapshot, a version (bumped on every save), the last applied offset of every training
partition, and the event ids learned since the previous save (kept in
``learned:{policy}`` for ``redis.dedup_window_seconds``). A record is learned only if

1. its offset is past the offset the policy's model covers for its partition (records
   redelivered after a crash or a rebalance are already in the snapshot), and
2. its event id was not learned before: not in this batch, not since the last save,
   and not in ``learned:{policy}`` (one ``ZMSCORE`` per policy per batch), so a training
   example produced twice by the join is learned once.

A broker that lost its log (the embedded broker restarted) numbers new records from 0
again: ``streambandit up`` forgets the saved offsets before its workers start again
(:func:`bandit.service.recovery.forget_offsets`), so the new log is learned, not skipped as
covered (docs/live-loop.md, "Restarts").

A crash loses only what was not saved, and that was not acknowledged either, so it is
delivered again and learned then. Each save is conditional (``WATCH``) on the model in
Redis still being the version it extends; if another learner saved meanwhile (a
rebalance moved the partition and back), nothing is written and the learner reloads
that model and applies the batch again. The learner's counters (``learned``,
``learn_duplicates``, ...) are added in the same transaction, so they are exact too.

Live evaluation
---------------
A policy whose settings name candidates (``live_evaluation``) has them evaluated on
each decision it learns (or logs in ``LoggingOnly`` mode), and learn from it; their
state is saved in the same transaction as the model (:mod:`bandit.service.liveeval`).

Live settings
-------------
Every batch checks the version of each policy's :class:`~bandit.wire.schemas.PolicySettings`;
when it changed, the new ``exploration`` parameters and ``exploration_floor`` are
applied with :meth:`policies.Policy.configure`, keeping what the model learned.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from bandit.errors import (
    ConfigurationError,
    InvalidModelError,
    PolicyError,
    SnapshotError,
    StructureError,
    UnknownServedPolicyError,
)
from bandit.service.apprentice import COUNT_NAMES, STARTED_AT, SUM_PREFIX, apprentice_terms
from bandit.service.liveeval import LiveEvaluation, load_evaluation
from bandit.service.metrics import MODEL_REJECTED_PREFIX
from bandit.service.state import StateStore
from bandit.settings import Settings
from bandit.wire.schemas import PolicySettings
from policies import Action, Context, Policy, make_policy
from policies.vw import VWPolicy
from policies.vwccb import SlotOutcome, VWCCBPolicy
from streams.training import TrainingRecord

__all__ = ["BatchResult", "Learner", "TrainingRecord"]

_log = structlog.get_logger("streams.learner")

_MAX_CONFLICT_RETRIES = 3


@dataclass(slots=True)
class BatchResult:
    """What one batch did.

    Attributes
    ----------
    learned
        Examples the policies learned from.
    replayed
        Examples skipped because the saved model already covers their offset.
    duplicates
        Examples skipped because their event id was already learned.
    not_learnable
        Examples of decisions without learning consent (``decision.learn`` false).
    rejected
        Records no policy could learn from, with the reason (for the dead letters).
    saved
        The version saved for each policy the batch changed.
    """

    learned: int = 0
    replayed: int = 0
    duplicates: int = 0
    not_learnable: int = 0
    rejected: list[tuple[TrainingRecord, str]] = field(default_factory=list)
    saved: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchResult) -> None:
        """Add `other`'s counts to this result."""
        self.learned += other.learned
        self.replayed += other.replayed
        self.duplicates += other.duplicates
        self.not_learnable += other.not_learnable
        self.rejected.extend(other.rejected)
        self.saved.update(other.saved)


@dataclass(slots=True)
class _Live:
    """A policy in memory, and how it relates to its saved model."""

    policy: Policy
    version: int  # version of the saved model this one extends; 0 when none was saved
    offsets: dict[int, int]  # last offset applied, per partition, saved or not
    snapshot: bytes | None  # bytes of the saved model, when unchanged since
    settings_version: int = -1
    pending: list[str] = field(default_factory=list)  # learned ids not yet saved
    pending_ids: set[str] = field(default_factory=set)
    changed: bool = False  # learned something since the last save
    moved: bool = False  # offsets advanced since the last save
    counts: Counter[str] = field(default_factory=Counter)
    sums: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    apprentice_since: float = 0.0  # when the policy last entered Apprentice mode
    evaluation: LiveEvaluation = field(default_factory=LiveEvaluation)  # its candidates


class Learner:
    """Apply training records to policies exactly once and save them to Redis.

    Parameters
    ----------
    store
        The Redis state: saved models, learned ids, policy settings, counters.
    settings
        ``settings.policies`` and ``settings.exploration_floor`` build a policy that has
        no saved model and no stored settings.
    clock
        Returns the current time in seconds (for logs).

    Examples
    --------
    In the learner agent, for each batch taken from the ``training`` topic::

        result = await learner.process(records)   # learn, then save snapshots
        for event in events:
            await stream.ack(event)               # only now may offsets be committed
    """

    def __init__(
        self,
        store: StateStore,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._live: dict[str, _Live] = {}
        self._lock = asyncio.Lock()
        self._invalid = False

    # -- the agent's entry points -----------------------------------------------------

    async def process(self, records: Sequence[TrainingRecord]) -> BatchResult:
        """Apply `records` and save every policy they changed; return what happened.

        When this returns, the records may be acknowledged. When it raises (Redis
        unreachable), they must not be: call it again with the same records, which
        learns nothing twice and saves what was learned.
        """
        async with self._lock:
            if self._invalid:
                self._live.clear()
                self._invalid = False
            by_policy = _by_policy(records)
            results = await self._apply_grouped(by_policy)
            saved: dict[str, int] = {}
            conflicts = await self._checkpoint(saved)
            for _ in range(_MAX_CONFLICT_RETRIES):
                if not conflicts:
                    break
                retried = {name: by_policy[name] for name in conflicts if name in by_policy}
                results.update(await self._apply_grouped(retried))
                conflicts = await self._checkpoint(saved)
            if conflicts:
                msg = f"models of {sorted(conflicts)} keep changing under this learner"
                raise RuntimeError(msg)
            result = _total(results.values())
            result.saved = saved
            return result

    def invalidate(self) -> None:
        """Forget the policies in memory before the next batch (partitions reassigned).

        They are loaded again from Redis when next needed.
        """
        self._invalid = True

    # -- the batch logic ---------------------------------------------------------------

    async def apply(self, records: Sequence[TrainingRecord]) -> BatchResult:
        """Learn from the records not learned before; save nothing.

        Parameters
        ----------
        records
            Training records in consumption order.

        Returns
        -------
        BatchResult
            Counts, and the records rejected with the reason.
        """
        return _total((await self._apply_grouped(_by_policy(records))).values())

    async def checkpoint(self) -> dict[str, int]:
        """Save every policy changed since its last save; return the versions saved.

        Raises
        ------
        RuntimeError
            If another learner saved one of the models meanwhile (it is dropped from
            memory; :meth:`process` handles this by applying the batch again).
        """
        saved: dict[str, int] = {}
        conflicts = await self._checkpoint(saved)
        if conflicts:
            msg = f"models of {sorted(conflicts)} were saved by another learner"
            raise RuntimeError(msg)
        return saved

    async def policy(self, name: str) -> Policy:
        """Return the live policy `name`, loading or building it when needed."""
        return (await self._ensure(name)).policy

    # -- internals ---------------------------------------------------------------------

    async def _apply_grouped(
        self, by_policy: Mapping[str, Sequence[TrainingRecord]]
    ) -> dict[str, BatchResult]:
        names = list(by_policy)
        outcomes = await asyncio.gather(*(self._apply_policy(n, by_policy[n]) for n in names))
        return dict(zip(names, outcomes, strict=True))

    async def _apply_policy(
        self, name: str, records: Sequence[TrainingRecord], *, guarded: bool = False
    ) -> BatchResult:
        """Learn `records` into policy `name`; a batch that breaks the model is redone.

        When the model is not finite after the batch (:meth:`policies.Policy.check_model`)
        or an update overflowed, what the batch learned is dropped: the last saved model
        is loaded again and the batch applied `guarded`, record by record, each checked
        and undone if it breaks the model, and then rejected with the reason.
        """
        result = BatchResult()
        try:
            live = await self._ensure(name)
        except (UnknownServedPolicyError, PolicyError, ValueError) as error:
            result.rejected.extend((record, str(error)) for record in records)
            return result
        await self._refresh_settings(name, live)
        fresh: list[TrainingRecord] = []
        for record in records:  # covered by the saved model: learned before (contract 3)
            if record.offset <= live.offsets.get(record.partition, -1):
                result.replayed += 1
            else:
                fresh.append(record)
        ids = [r.event_id for r in fresh]
        seen_before = await self.store.learned(name, ids)
        pending, pending_ids = live.pending, live.pending_ids
        broken: str | None = None
        for record, event_id, seen in zip(fresh, ids, seen_before, strict=True):
            if seen or event_id in pending_ids:
                result.duplicates += 1
                continue
            if not record.learnable or record.mode == "LoggingOnly":
                _not_learned(live, result, record, self.clock())
                continue
            try:
                _learn_one(live, record, guarded=guarded)
            except InvalidModelError as error:
                if not guarded:
                    broken = str(error)
                    break
                # undone: the record alone goes to the dead letters
                result.rejected.append((record, f"policy {name!r} cannot learn it: {error}"))
                continue
            except (PolicyError, ValueError) as error:
                result.rejected.append((record, f"policy {name!r} cannot learn it: {error}"))
                continue
            pending.append(event_id)
            pending_ids.add(event_id)
            live.changed = True
            result.learned += 1
            _count_apprentice(live, record)
            _evaluate(live, record, self.clock())
        if broken is None and live.changed and not guarded:
            broken = _problem(live.policy)
        if broken is not None:
            # Never saved: forget this model, learn the batch again from the last saved one.
            await self._rejected_model(name, "not_finite_after_learning", broken)
            del self._live[name]
            return await self._apply_policy(name, records, guarded=True)
        live.evaluation.check_models()
        _advance(live, records)
        live.counts.update(
            {
                "learned": result.learned,
                "learn_replayed": result.replayed,
                "learn_duplicates": result.duplicates,
                "learn_not_consented": result.not_learnable,
                "learn_rejected": len(result.rejected),
            }
        )
        return result

    async def _ensure(self, name: str) -> _Live:
        """Return the live policy, (re)loading it if Redis holds a newer model."""
        live = self._live.get(name)
        saved_version = await self.store.model_version(name)
        if live is not None and live.version == (saved_version or 0):
            return live
        if live is not None:
            _log.warning("model.reloaded", policy=name, ours=live.version, saved=saved_version)
        record = await self.store.load_model(name)
        if record is not None:
            try:
                policy = Policy.restore(record.snapshot)
            except SnapshotError:
                _log.exception("model.unreadable", policy=name, version=record.version)
                raise
            try:
                policy.check_model()
            except InvalidModelError as error:
                # Saved before models were checked: nothing learned in it can be trusted,
                # so learning starts again from the spec (the next save replaces it).
                await self._rejected_model(name, "saved_model_not_finite", str(error))
                policy = await self._build(name)
                live = _Live(policy, record.version, dict(record.offsets), None, changed=True)
            else:
                live = _Live(policy, record.version, dict(record.offsets), record.snapshot)
        else:
            live = _Live(await self._build(name), 0, {}, None)
        live.evaluation = await load_evaluation(self.store, name)
        self._live[name] = live
        _log.info("model.loaded", policy=name, version=live.version, offsets=live.offsets)
        return live

    async def _rejected_model(self, name: str, reason: str, detail: str) -> None:
        """Say that a model of `name` was refused: a log line and a counter in Redis.

        The counter ``model_rejected.<reason>`` is exported by the API as
        ``streambandit_model_rejected_total{policy, reason}``.
        """
        _log.error("model.rejected", policy=name, reason=reason, detail=detail)
        await self.store.count(name, {f"{MODEL_REJECTED_PREFIX}{reason}": 1})

    async def _build(self, name: str) -> Policy:
        stored = await self.store.policy_settings(name)
        if stored is not None:
            return make_policy(stored[0].spec)  # settings applied by _refresh_settings
        spec = self.settings.policies.get(name)
        if spec is None:
            msg = (
                f"policy {name!r} has no stored settings and is not in settings.policies "
                f"({sorted(self.settings.policies)})"
            )
            raise UnknownServedPolicyError(msg)
        return make_policy(spec, floor=self.settings.exploration_floor)

    async def _refresh_settings(self, name: str, live: _Live) -> None:
        version = await self.store.settings_version(name)
        if version == live.settings_version:
            return
        live.settings_version = version
        stored = await self.store.policy_settings(name) if version else None
        if stored is None:
            return
        settings: PolicySettings = stored[0]
        live.evaluation.configure(settings.live_evaluation, now=self.clock())
        if settings.learning_mode == "Apprentice":
            since = (await self.store.sums(name)).get(STARTED_AT, 0.0)
            if since != live.apprentice_since:  # a new period: what is unsaved was the last's
                live.apprentice_since = since
                for figure in COUNT_NAMES:
                    live.counts.pop(figure, None)
                live.sums.clear()
        changes = {"floor": settings.exploration_floor, **settings.exploration}
        before = live.policy.params()
        try:
            live.policy.configure(**changes)
        except ConfigurationError as error:
            live.counts["settings_rejected"] += 1
            _log.warning("settings.rejected", policy=name, version=version, reason=str(error))
            return
        if live.policy.params() == before:
            return
        live.changed = True
        _log.info("settings.applied", policy=name, version=version, changes=changes)

    async def _checkpoint(self, saved: dict[str, int]) -> set[str]:
        """Save changed policies, noting their versions in `saved`.

        Returns the policies whose model another learner saved meanwhile; they are
        dropped from memory.
        """
        conflicts: set[str] = set()
        for name, live in list(self._live.items()):
            if not (live.changed or live.moved):
                continue
            if live.snapshot is None and not live.changed:
                if not live.evaluation.changed:
                    continue  # offsets of skipped records only, and nothing saved yet
                live.changed = True  # the first model, to carry the evaluation's terms
            if not await self._save(name, live):
                _log.warning(
                    "model.conflict",
                    policy=name,
                    ours=live.version,
                    saved=await self.store.model_version(name),
                )
                del self._live[name]
                conflicts.add(name)
                continue
            saved[name] = live.version
        return conflicts

    async def _save(self, name: str, live: _Live) -> bool:
        """Save `live` if the stored model is still the one it extends; say whether saved.

        The learned ids and the counters go in the same transaction as the snapshot.
        """
        started = self.clock()
        if live.changed:
            snapshot = live.policy.snapshot()
            version = live.version + 1
        else:
            assert live.snapshot is not None
            snapshot, version = live.snapshot, live.version
        counts = {key: value for key, value in live.counts.items() if value}
        if live.evaluation.changed:  # the sequences' numpy work, off the event loop
            await asyncio.to_thread(live.evaluation.flush)
        saved = await self.store.save_model(
            name,
            snapshot,
            version,
            live.offsets,
            live.pending,
            counts=counts,
            sums=dict(live.sums),
            expected_version=live.version,
            hashes=live.evaluation.changes(self.store, name),
        )
        if not saved:
            return False
        live.evaluation.saved()
        learned = len(live.pending)
        live.version, live.snapshot = version, snapshot
        live.pending, live.pending_ids = [], set()
        live.changed = live.moved = False
        live.counts, live.sums = Counter(), defaultdict(float)
        _log.info(
            "model.saved",
            policy=name,
            version=version,
            learned=learned,
            n_learned=live.policy.n_learned,
            offsets=live.offsets,
            seconds=round(self.clock() - started, 4),
        )
        return True


def _advance(live: _Live, records: Sequence[TrainingRecord]) -> None:
    """Move the live policy's offsets past `records` (learned, skipped or rejected)."""
    for record in records:
        if record.offset > live.offsets.get(record.partition, -1):
            live.offsets[record.partition] = record.offset
            live.moved = True


def _not_learned(live: _Live, result: BatchResult, record: TrainingRecord, now: float) -> None:
    """Count a record not learned: without learning consent, or decided in LoggingOnly.

    A LoggingOnly decision with learning consent still evaluates the live candidates.
    """
    if record.learnable:  # decided in LoggingOnly mode: logged, never learned
        live.counts["learn_logging_only"] += 1
        _evaluate(live, record, now)
    else:
        result.not_learnable += 1


def _learn_slots(
    policy: Policy, context: Context, actions: list[Action], slots: list[SlotOutcome]
) -> None:
    """Learn a multi-slot decision: as one CCB example, or (any other policy) slot by slot.

    A policy other than VW's CCB learns each slot as the decision the slot was: the
    shared context with the slot's features, over the actions it could choose.
    """
    if isinstance(policy, VWCCBPolicy):
        policy.learn_slots(context, actions, slots)
        return
    for slot in slots:
        offered = [actions[i] for i in slot.include or range(len(actions))]
        chosen = (slot.include or tuple(range(len(actions)))).index(slot.chosen)
        policy.learn({**context, **slot.features}, offered, chosen, slot.reward, slot.probability)


def _count_apprentice(live: _Live, record: TrainingRecord) -> None:
    """Add an apprentice decision's figures (:mod:`bandit.service.apprentice`) to `live`.

    Only decisions made in Apprentice mode since the policy last entered it, with the
    learned policy's probabilities, count; the record's values are read again from its
    bytes (a VW record's were not kept), which costs only for those decisions.
    """
    if record.mode != "Apprentice":
        return
    values = record.values
    decision = values["decision"]
    learned = decision.get("learned")
    occurred = decision["occurred_at"]
    made = (
        occurred if isinstance(occurred, datetime) else datetime.fromisoformat(occurred)
    ).timestamp()
    if not learned or made < live.apprentice_since:  # (a decision of an earlier period)
        return
    chosen = int(decision["chosen_index"])
    if decision.get("slots"):  # its first slot's figures: `learned` is over its actions
        chosen = decision["slots"][0]["include"].index(chosen)
    terms = apprentice_terms(
        reward=float(values["reward"]),
        probability=float(decision["probability"]),
        learned=learned,
        chosen=chosen,
    )
    live.counts[SUM_PREFIX + "events"] += terms.events
    live.counts[SUM_PREFIX + "imitated_events"] += terms.imitated_events
    live.counts[SUM_PREFIX + "baseline_events"] += terms.baseline_events
    for name, value in terms.sums.items():
        live.sums[SUM_PREFIX + name] += value


def _evaluate(live: _Live, record: TrainingRecord, now: float) -> None:
    """Evaluate the policy's live candidates on `record` (:mod:`bandit.service.liveeval`).

    Multi-slot decisions are counted, not evaluated; a record whose features cannot be
    read (a logged-only one, never checked by learning) is left out.
    """
    evaluation = live.evaluation
    if not evaluation.active:
        return
    if record.values["decision"]["slots"] is not None:
        evaluation.skip()
        return
    try:
        context, actions, chosen, reward, probability = record.learn_inputs()
    except StructureError:
        return
    evaluation.observe(
        context, actions, chosen=chosen, reward=reward, probability=probability, now=now
    )


def _learn_one(live: _Live, record: TrainingRecord, *, guarded: bool) -> None:
    """Learn `record` into ``live.policy``; `guarded`, check the model and undo a break.

    A VW policy learns the text written when the record was decoded, when there is one.

    Raises
    ------
    InvalidModelError
        If the update broke the model: unguarded, the model may be broken; guarded, it
        was restored to what it was before this record.
    PolicyError, ValueError
        If the policy cannot learn the record; nothing was learned.
    """
    policy = live.policy
    before = policy.snapshot() if guarded else None
    try:
        slots = record.slot_inputs()
        if slots is not None:
            _learn_slots(policy, *slots)
        elif isinstance(policy, VWPolicy) and policy.learns_logged and record.written is not None:
            policy.learn_logged(record.written)
        else:
            policy.learn(*record.learn_inputs())
        if guarded:
            policy.check_model()
    except InvalidModelError:
        if before is not None:
            live.policy = Policy.restore(before)
        raise


def _problem(policy: Policy) -> str | None:
    """Return why `policy`'s model is not finite, or None when it is."""
    try:
        policy.check_model()
    except InvalidModelError as error:
        return str(error)
    return None


def _by_policy(records: Sequence[TrainingRecord]) -> dict[str, list[TrainingRecord]]:
    grouped: dict[str, list[TrainingRecord]] = {}
    for record in records:
        grouped.setdefault(record.policy, []).append(record)
    return grouped


def _total(results: Iterable[BatchResult]) -> BatchResult:
    total = BatchResult()
    for result in results:
        total.add(result)
    return total
