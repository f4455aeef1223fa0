"""Training records: read once, trusted, written once in VW's two formats, for learner and log.

The worker reads the ``training`` topic with one batch consumer that feeds both the
learner (:class:`streams.learner.Learner`) and the decision log (:mod:`streams.sink`).
``training`` is the service's own topic: the join writes each record, splicing in the
decision's bytes as they came from ``decisions``, which the API wrote after validating
the request. So a record is not validated again; :func:`decode_training` reads it once:

1. its schema version and structure are checked (:func:`streams.trusted.training_values`),
   into plain data; a record that fails becomes a dead letter whose reason names the
   field and the rule;
2. a learnable example is then written, in one pass over its features, both as the
   text VW learns (what :meth:`policies.vw.VWPolicy.learn` would write) and as its
   decision log line (:func:`policies.vw.logged_example`).

A VW policy learns the text through VW's native binding
(:meth:`~policies.vw.VWPolicy.learn_logged`), any other policy from the plain data
(:meth:`TrainingRecord.learn_inputs`); the decision log keeps the line
(:meth:`TrainingRecord.log_entry`). What the one-pass writer leaves alone (a value that
needs escaping, or one a policy must refuse: not finite, beyond its bound) is handed to
:meth:`policies.Policy.learn` after its features' structure is checked
(:func:`streams.trusted.check_features`), which learns it or refuses it with the reason
(the learner then dead-letters it), and is logged by the general writer.

Examples
--------
>>> raw = (
...     b'{"event_id": "e1", "reward": 1.0, "reward_count": 1, "default_reward": false,'
...     b' "occurred_at": "2026-11-27T23:15:00.2Z",'
...     b' "decision": {"event_id": "e1", "policy": "p", "model_version": "1",'
...     b' "context": {"user": {"tier": "gold"}}, "explored": false,'
...     b' "actions": [{"id": "a"}, {"id": "b", "features": {"item": {"size": 2}}}],'
...     b' "ranking": [{"id": "b", "probability": 0.75}, {"id": "a", "probability": 0.25}],'
...     b' "chosen_action_id": "b", "chosen_index": 1, "probability": 0.75,'
...     b' "occurred_at": "2026-11-27T23:15:00Z"}}'
... )
>>> record = decode_training(RawRecord("sb.training", 0, 7, b"p", raw))
>>> record.policy, record.event_id, record.learnable
('p', 'e1', True)
>>> print(record.written.text)
shared |cuser tier=gold
|id id=a
0:-1.0:0.75 |aitem size:2 |id id=b
>>> decode_training(RawRecord("sb.training", 0, 8, b"p", b"{}")).reason
'event_id: Field required [missing]'
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any, TypeAlias

import structlog

from bandit.service.process import die_with_parent
from bandit.wire.schemas import DeadLetter, LearningMode
from policies import Action, Context
from policies.dsjson import LoggedExample, dsjson_line, logged_example
from policies.vwccb import SlotOutcome
from policies.vwtext import SLOT_NAMESPACE
from streams.deadletter import DEAD_LETTER_MAX_BYTES, RawRecord, read_record
from streams.sink import LogEntry, dsjson_extra, training_record
from streams.trusted import check_features, training_values

__all__ = [
    "Decoded",
    "TrainingDecoder",
    "TrainingRecord",
    "decode_training",
    "write_training",
]

_log = structlog.get_logger("streams.training")
_ID = itemgetter("id")
_FEATURES = itemgetter("features")
_PROBABILITY = itemgetter("probability")


@dataclass(frozen=True, slots=True)
class TrainingRecord:
    """A training example read from ``training``, and where it was consumed from.

    Attributes
    ----------
    partition, offset
        Where the record was consumed from.
    policy, event_id
        The policy the example trains, and the decision's event id.
    learnable
        Whether the decision may be learned from and kept (learning consent).
    written
        The example in VW's formats, when the one-pass writer wrote it: VW policies
        learn its text, the decision log keeps its line.
    read, source
        The example as plain data (:func:`streams.trusted.training_values`), when kept;
        and the record's value it was read from (see :attr:`values`).
    mode
        The learning mode the decision was made in (``Decision.learning_mode``): a
        ``LoggingOnly`` decision is never learned, whatever the policy's mode is now.
    """

    partition: int
    offset: int
    policy: str
    event_id: str
    learnable: bool
    written: LoggedExample | None
    read: Mapping[str, Any] | None = field(default=None, repr=False)
    source: bytes = field(default=b"", repr=False)
    mode: LearningMode = "Online"

    @property
    def values(self) -> Mapping[str, Any]:
        """The example as plain data: as read, or read again from `source`.

        A record decoded in a helper process (:class:`TrainingDecoder`) comes back
        without them (only what the learner and the log use); its `source` passed the
        same checks there, so it is read again here, by the same function, when asked.
        """
        if self.read is not None:
            return self.read
        return training_values(self.source)

    def learn_inputs(self) -> tuple[Context, list[Action], int, float, float]:
        """Return what :meth:`policies.Policy.learn` takes for this example.

        ``(context, actions, chosen, reward, probability)``, the actions in offer order.

        Raises
        ------
        streams.trusted.StructureError
            If a features mapping is not namespaces of named strings and numbers (the
            one-pass writer vouched for them when `written` is set).
        """
        values = self.values
        decision = values["decision"]
        if self.written is None:
            check_features(decision["context"], "decision.context")
            for index, action in enumerate(decision["actions"]):
                check_features(action["features"], f"decision.actions.{index}.features")
        actions = [Action(action["id"], action["features"]) for action in decision["actions"]]
        chosen, probability = decision["chosen_index"], decision["probability"]
        return decision["context"], actions, chosen, values["reward"], probability

    def slot_inputs(self) -> tuple[Context, list[Action], list[SlotOutcome]] | None:
        """Return a multi-slot example as :meth:`policies.vwccb.VWCCBPolicy.learn_slots` takes it.

        ``(context, actions, slots)``; None for a single-slot example. Each slot's
        features are under :data:`~policies.vwtext.SLOT_NAMESPACE`, its probability is
        its chosen action's, its reward its own (:attr:`TrainingExample.slot_rewards`).

        Raises
        ------
        streams.trusted.StructureError
            If a features mapping is not namespaces of named strings and numbers.
        """
        values = self.values
        decision = values["decision"]
        if decision["slots"] is None:
            return None
        context, actions, _, _, _ = self.learn_inputs()
        outcomes = []
        for index, (slot, reward) in enumerate(
            zip(decision["slots"], values["slot_rewards"], strict=True)
        ):
            features = {SLOT_NAMESPACE: slot["features"]}
            check_features(features, f"decision.slots.{index}.features")
            outcomes.append(
                SlotOutcome(
                    features, tuple(slot["include"]), slot["chosen_index"], reward,
                    slot["probability"],
                )
            )  # fmt: skip
        return context, actions, outcomes

    def log_entry(self) -> LogEntry:
        """Return what the decision log keeps of this example.

        The line written on decoding when there is one; else it is written now
        (:func:`streams.sink.training_record`), which raises what
        :func:`policies.vw.dsjson_record` raises when it cannot be written.
        """
        if not self.learnable:
            return LogEntry(self.policy, self.event_id, learn=False, line=b"")
        if self.written is not None:
            line = self.written.dsjson
        else:
            line = dsjson_line(training_record(self.values))
        return LogEntry(self.policy, self.event_id, learn=True, line=line)


def decode_training(
    record: RawRecord, *, max_bytes: int = DEAD_LETTER_MAX_BYTES
) -> TrainingRecord | DeadLetter:
    """Read a ``training`` record once, or return its dead letter.

    Parameters
    ----------
    record
        The record consumed.
    max_bytes
        Larger records are dead-lettered unread.

    Returns
    -------
    TrainingRecord or DeadLetter
        The example as plain data, written in VW's formats when learnable and the
        one-pass writer could; or the dead letter naming the field and the rule its
        schema version or structure breaks.
    """
    values = read_record(training_values, record, max_bytes=max_bytes)
    if isinstance(values, DeadLetter):
        return values
    decision = values["decision"]
    return TrainingRecord(
        record.partition,
        record.offset,
        decision["policy"],
        values["event_id"],
        decision["learn"],
        write_training(values),
        values,
        record.value or b"",
        decision["learning_mode"],
    )


def write_training(values: Mapping[str, Any]) -> LoggedExample | None:
    """Write a learnable example's values in VW's formats (:func:`policies.vw.logged_example`).

    Returns None for a decision without learning consent, or one the one-pass writer
    leaves to the general functions. `values` are as
    :func:`streams.trusted.training_values` reads them (offered ids distinct, and
    exactly the ranking's).
    """
    decision = values["decision"]
    if not decision["learn"] or decision["slots"] is not None:  # (multi-slot: VW's CCB form)
        return None
    actions: Sequence[Mapping[str, Any]] = decision["actions"]
    ranking: Sequence[Mapping[str, Any]] = decision["ranking"]
    ids = list(map(_ID, actions))
    ranked_ids = list(map(_ID, ranking))
    by_id = dict(zip(ranked_ids, map(_PROBABILITY, ranking), strict=True))
    position = dict(zip(ids, range(len(ids)), strict=True))
    return logged_example(
        decision["context"],
        ids,
        list(map(_FEATURES, actions)),
        decision["chosen_index"],
        list(map(by_id.__getitem__, ids)),
        reward=values["reward"],
        event_id=decision["event_id"],
        timestamp=decision["occurred_at"],
        ranking=list(map(position.__getitem__, ranked_ids)),
        extra=dsjson_extra(values),
    )


Decoded: TypeAlias = "TrainingRecord | DeadLetter"
"""What a training record decodes to: the example, or its dead letter."""

SHARED_FROM = 200
"""Batches of at least this many records are decoded in the helper processes."""

_Compact: TypeAlias = tuple[str, str, str, bytes, LearningMode]
"""A learnable example written in VW's formats, as a helper sends it back: policy,
event id, VW text, DSJSON line (the rest the worker holds already)."""


class TrainingDecoder:
    """Decode batches of training records, large ones in helper processes.

    Decoding a record (:func:`decode_training`) costs about three times what VW's
    learning step costs, all of it Python holding the interpreter lock. With
    `processes` > 0, batches of at least `shared_from` records (a backlog) are split
    between that many helper processes, which run :func:`decode_training` itself and
    send back, per learnable example, only what the learner and the log use (policy,
    event id, the two written formats); the worker meanwhile learns the previous batch
    (:class:`streams.batch.BatchConsumer` prepares batches ahead). Smaller batches (live
    traffic) are decoded in the worker, where they cost less than the round trip.

    The helpers (``concurrent.futures.ProcessPoolExecutor``, spawned: they share nothing
    with the worker but what is sent them) start on the first large batch, which the
    worker decodes itself while they start, and die with the worker (Linux's
    parent-death signal). When one fails, the batch is decoded in the worker and new
    helpers start with the next large batch: decoding in a helper is only ever faster,
    never different.

    Parameters
    ----------
    processes
        Helper processes; 0 decodes everything in the worker
        (``settings.learner.decode_processes``).
    max_bytes
        Larger records are dead-lettered unread.
    shared_from
        The smallest batch decoded in the helpers.
    """

    def __init__(
        self,
        processes: int,
        *,
        max_bytes: int = DEAD_LETTER_MAX_BYTES,
        shared_from: int = SHARED_FROM,
    ) -> None:
        if processes < 0 or shared_from < 1:
            msg = f"`processes` must be >= 0 and `shared_from` >= 1, got {processes}, {shared_from}"
            raise ValueError(msg)
        self.processes = processes
        self.max_bytes = max_bytes
        self.shared_from = shared_from
        self.shared = 0
        """Records decoded in the helpers so far."""
        self._pool: ProcessPoolExecutor | None = None
        self._starting: list[Future[None]] = []

    async def decode(self, records: Sequence[RawRecord]) -> list[Decoded]:
        """Decode `records` (in order), in the helpers when the batch is large enough."""
        pool = self._ready() if len(records) >= self.shared_from and self.processes else None
        if pool is None:
            return self._decoded_here(records)
        size = -(-len(records) // self.processes)
        chunks = [records[start : start + size] for start in range(0, len(records), size)]
        loop = asyncio.get_running_loop()
        try:
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, _decode_shared, chunk, self.max_bytes)
                    for chunk in chunks
                )
            )
        except BrokenProcessPool as error:
            _log.warning("training.helper_failed", reason=str(error) or type(error).__name__)
            self.close()
            return self._decoded_here(records)
        decoded: list[Decoded] = []
        for chunk, part in zip(chunks, parts, strict=True):
            for record, outcome in zip(chunk, part, strict=True):
                if not isinstance(outcome, tuple):
                    decoded.append(outcome)
                    continue
                policy, event_id, text, dsjson, mode = outcome
                decoded.append(
                    TrainingRecord(
                        record.partition,
                        record.offset,
                        policy,
                        event_id,
                        True,
                        LoggedExample(text, dsjson),
                        None,
                        record.value or b"",
                        mode,
                    )
                )
        self.shared += len(records)
        return decoded

    def _decoded_here(self, records: Sequence[RawRecord]) -> list[Decoded]:
        return [decode_training(record, max_bytes=self.max_bytes) for record in records]

    def close(self) -> None:
        """Stop the helpers (new ones start with the next large batch)."""
        pool, self._pool, self._starting = self._pool, None, []
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _ready(self) -> ProcessPoolExecutor | None:
        """Return the helpers once they have started; start them if none are."""
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=context, initializer=die_with_parent
            )
            self._starting = [self._pool.submit(_started) for _ in range(self.processes)]
            return None
        if not all(future.done() for future in self._starting):
            return None
        if any(future.exception() is not None for future in self._starting):
            _log.warning("training.helper_failed", reason="a helper did not start")
            self.close()
            return None
        return self._pool


def _started() -> None:
    """Run in each helper once: it has started and imported this module."""


def _decode_shared(records: Sequence[RawRecord], max_bytes: int) -> list[_Compact | Decoded]:
    """In a helper: decode `records`; send back the compact form of written examples."""
    out: list[_Compact | Decoded] = []
    for record in records:
        outcome = decode_training(record, max_bytes=max_bytes)
        if isinstance(outcome, TrainingRecord):
            written = outcome.written
            if written is not None:
                compact = (outcome.policy, outcome.event_id, written.text, written.dsjson)
                out.append((*compact, outcome.mode))
                continue
            outcome = replace(outcome, source=b"")  # its values go back, not the source
        out.append(outcome)
    return out
