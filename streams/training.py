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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from bandit.wire.schemas import DeadLetter
from policies import Action, Context
from policies.dsjson import LoggedExample, dsjson_line, logged_example
from streams.deadletter import DEAD_LETTER_MAX_BYTES, RawRecord, read_record
from streams.sink import LogEntry, dsjson_extra, training_record
from streams.trusted import check_features, training_values

__all__ = [
    "TrainingRecord",
    "decode_training",
    "write_training",
]

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
    values
        The example as plain data (:func:`streams.trusted.training_values`).
    """

    partition: int
    offset: int
    policy: str
    event_id: str
    learnable: bool
    written: LoggedExample | None
    values: Mapping[str, Any]

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
    )


def write_training(values: Mapping[str, Any]) -> LoggedExample | None:
    """Write a learnable example's values in VW's formats (:func:`policies.vw.logged_example`).

    Returns None for a decision without learning consent, or one the one-pass writer
    leaves to the general functions. `values` are as
    :func:`streams.trusted.training_values` reads them (offered ids distinct, and
    exactly the ranking's).
    """
    decision = values["decision"]
    if not decision["learn"]:
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
