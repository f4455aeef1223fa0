"""What the stream worker checks of the service's own topics: schema version and structure.

``decisions`` is written by the API, which validated the request at the trust boundary
and built the decision from it; ``training`` by the join, which splices the decision's
bytes, as they came from ``decisions``, into the training record (:mod:`streams.join`).
The worker does not validate their rules again (the id syntax, feature names, the
ranking being a distribution: those live in the wire declarations,
:mod:`bandit.wire.schemas`, and are checked once, by the API). It checks what it relies on
to do its work: the schema version, and that every field it reads is there with the
type it reads. A record that fails raises :class:`StructureError`, whose reason names
the field and the rule (``decision.schema_version: must be 1, got 2 [schema_version]``);
the agent dead-letters the record with it (:mod:`streams.deadletter`).

What a policy must refuse, whoever produced the record (a reward or a feature value
that is not finite or beyond its bound, a probability outside (0, 1], a chosen index out
of range), :meth:`policies.Policy.learn` refuses, and the learner dead-letters the record
with that reason (:mod:`streams.learner`).

Examples
--------
>>> raw = (
...     b'{"schema_version": 1, "event_id": "e1", "reward": 1.0, "reward_count": 1,'
...     b' "default_reward": false, "occurred_at": "2026-11-27T23:15:00.2Z",'
...     b' "decision": {"schema_version": 1, "event_id": "e1", "policy": "p",'
...     b' "model_version": "1", "explored": false, "occurred_at": "2026-11-27T23:15:00Z",'
...     b' "actions": [{"id": "a"}, {"id": "b"}], "context": {},'
...     b' "ranking": [{"id": "b", "probability": 0.75}, {"id": "a", "probability": 0.25}],'
...     b' "chosen_action_id": "b", "chosen_index": 1, "probability": 0.75}}'
... )
>>> values = training_values(raw)
>>> values["decision"]["policy"], values["decision"]["learn"], values["reward"]
('p', True, 1.0)
>>> training_values(raw.replace(b'"schema_version": 1, "event_id": "e1", "policy"',
...                             b'"schema_version": 2, "event_id": "e1", "policy"'))
Traceback (most recent call last):
...
bandit.errors.StructureError: decision.schema_version: must be 1, got 2 [schema_version]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from operator import itemgetter
from typing import Any, Final, get_args

import orjson

from bandit.errors import StructureError
from bandit.wire.schemas import Event, LearningMode
from policies._distribution import SUM_TOLERANCE

__all__ = [
    "DECISION_DEFAULTS",
    "SCHEMA_VERSION",
    "StructureError",
    "TrustedDecision",
    "check_features",
    "decision_fields",
    "decision_offer",
    "read_object",
    "training_values",
]

SCHEMA_VERSION: Final[int] = Event.model_fields["schema_version"].default
"""The one schema version of every event on the topics (:class:`bandit.wire.schemas.Event`)."""

DECISION_DEFAULTS: Final[Mapping[str, Any]] = {
    "context": {},
    "deferred": False,
    "learn": True,
    "consent": "personalise",
    "subject": None,
    "learning_mode": "Online",
    "learned": None,
}
"""The declared defaults of :class:`bandit.wire.schemas.Decision`'s optional fields, for a
producer that leaves them out (a test compares them with the declaration)."""


@dataclass(frozen=True, slots=True)
class TrustedDecision:
    """A decision as it came from ``decisions``: its bytes, and the fields the join reads.

    Attributes
    ----------
    raw
        The decision's JSON, kept as it came and spliced into its training record.
    event_id, policy, occurred_at, learn, deferred
        Read from it by :meth:`read` (see :class:`bandit.wire.schemas.Decision`).
    slots
        A multi-slot decision's slot ids, in order; None for a single-slot decision.
    """

    raw: bytes
    event_id: str
    policy: str
    occurred_at: datetime
    learn: bool
    deferred: bool
    slots: tuple[str, ...] | None = None

    @classmethod
    def read(cls, raw: bytes) -> TrustedDecision:
        """Read a decision's JSON; raise :class:`StructureError` naming what is wrong.

        A learnable decision's offer is checked too (:func:`decision_offer`), so a
        broken one is dead-lettered where it came in, with its key, not later from
        ``training``.
        """
        values = read_object(raw)
        event_id, policy, occurred_at, learn, deferred = decision_fields(values, "")
        if learn:
            decision_offer(values, "")
        slots = values.get("slots")
        ids = None if not slots else tuple(str(slot.get("id")) for slot in slots)
        return cls(raw, event_id, policy, occurred_at, learn, deferred, ids)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _at(where: str, name: str | int) -> str:
    return f"{where}.{name}" if where else str(name)


def read_object(raw: bytes) -> dict[str, Any]:
    """Parse a record's JSON value, which must be an object.

    Raises
    ------
    StructureError
        If it is not JSON (``json_invalid``) or not an object (``object_type``).
    """
    try:
        values = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise StructureError("(record)", f"not JSON: {error}", "json_invalid") from None
    if type(values) is not dict:
        msg = f"must be a JSON object, got {_type_name(values)}"
        raise StructureError("(record)", msg, "object_type")
    return values


_ABSENT: Final = object()
_NUMBER: Final = (float, int)


def _wrong(where: str, value: object, kind: type | tuple[type, ...]) -> StructureError:
    """Return the error of a field at `where` found as `value` (``_ABSENT``) instead of `kind`."""
    if value is _ABSENT:
        return StructureError(where, "Field required", "missing")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wanted = " or ".join(k.__name__ for k in kinds)
    return StructureError(where, f"must be {wanted}, got {_type_name(value)}", "type")


def _field(values: Mapping[str, Any], where: str, name: str, kind: type | tuple[type, ...]) -> Any:
    """Return ``values[name]``, which must be there and of `kind` (exactly: no bool for int)."""
    value = values.get(name, _ABSENT)
    if type(value) is not kind and (type(kind) is not tuple or type(value) not in kind):
        raise _wrong(_at(where, name), value, kind)
    return value


def _check_version(values: Mapping[str, Any], where: str) -> None:
    version = values.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        found = repr(version) if type(version) is int else _type_name(version)
        msg = f"must be {SCHEMA_VERSION}, got {found}"
        raise StructureError(_at(where, "schema_version"), msg, "schema_version")


def _timestamp(values: Mapping[str, Any], where: str) -> datetime:
    text = _field(values, where, "occurred_at", str)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        msg = "must be an ISO 8601 time with a timezone"
        raise StructureError(_at(where, "occurred_at"), msg, "timestamp")
    return moment


def decision_fields(
    values: Mapping[str, Any], where: str = "decision"
) -> tuple[str, str, datetime, bool, bool]:
    """Check a decision's version and the fields the join reads; return them.

    Returns
    -------
    tuple
        ``(event_id, policy, occurred_at, learn, deferred)``, the last two defaulting
        as declared.

    Raises
    ------
    StructureError
        Naming the first field that is missing or of the wrong type, or a wrong version.
    """
    _check_version(values, where)
    event_id = _field(values, where, "event_id", str)
    policy = _field(values, where, "policy", str)
    if not event_id or not policy:
        name = "event_id" if not event_id else "policy"
        raise StructureError(_at(where, name), "must not be empty", "empty")
    learn = values.get("learn", DECISION_DEFAULTS["learn"])
    deferred = values.get("deferred", DECISION_DEFAULTS["deferred"])
    for name, value in (("learn", learn), ("deferred", deferred)):
        if type(value) is not bool:
            raise _wrong(_at(where, name), value, bool)
    return event_id, policy, _timestamp(values, where), learn, deferred


def training_values(raw: bytes) -> dict[str, Any]:
    """Read a training record's JSON into the plain data the learner and the log read.

    A decision without learning consent is read as far as the learner needs it (whose
    it is, and that it is not learned); any other as :func:`decision_offer` says, with
    the example's outcome (reward, reward count, default-reward flag). The decision's
    time is read into a :class:`~datetime.datetime`.

    Raises
    ------
    StructureError
        Naming the field and the rule.
    """
    values = read_object(raw)
    _check_version(values, "")
    _field(values, "", "event_id", str)
    decision = _field(values, "", "decision", dict)
    _event_id, _policy, occurred_at, learn, deferred = decision_fields(decision)
    decision["learn"], decision["deferred"], decision["occurred_at"] = learn, deferred, occurred_at
    if not learn:
        return values
    values["reward"] = float(_field(values, "", "reward", _NUMBER))
    count = _field(values, "", "reward_count", int)
    if count < 0:
        raise StructureError("reward_count", f"must be >= 0, got {count}", "greater_than_equal")
    _field(values, "", "default_reward", bool)
    decision_offer(decision, "decision")
    slot_rewards = values.setdefault("slot_rewards", None)
    if decision["slots"] is not None:
        slots = len(decision["slots"])
        rewards = _field(values, "", "slot_rewards", list)
        counts = _field(values, "", "slot_reward_counts", list)
        if len(rewards) != slots or len(counts) != slots:
            msg = f"must hold one entry per slot ({slots})"
            raise StructureError("slot_rewards", msg, "slot_rewards_length")
        if set(map(type, rewards)) - set(_NUMBER) or set(map(type, counts)) - {int}:
            raise StructureError("slot_rewards", "must be numbers, counts ints", "type")
        values["slot_rewards"] = [float(reward) for reward in rewards]
    elif slot_rewards is not None:
        raise StructureError("slot_rewards", "must be null for a single-slot decision", "type")
    return values


def decision_offer(decision: dict[str, Any], where: str = "decision") -> None:
    """Check the structure of what a learnable decision offered and chose, in place.

    Every field the learner and the decision log read must be there with its type; the
    actions must have distinct ids, which the ranking holds exactly, and the chosen
    index must point at one. Absent optional fields get their declared defaults, and
    the probability becomes a float. The feature values are checked by whoever writes
    them (:func:`policies.vw.logged_example`, or :func:`check_features` before
    :meth:`policies.Policy.learn`).

    Raises
    ------
    StructureError
        Naming the field (under `where`) and the rule.
    """
    for name, kind in (("context", dict), ("consent", str), ("subject", str)):
        found = decision.setdefault(name, DECISION_DEFAULTS[name])
        if type(found) is not kind and not (found is None and name == "subject"):
            raise _wrong(_at(where, name), found, kind)
    _field(decision, where, "model_version", str)
    _field(decision, where, "explored", bool)
    actions: list[Any] = _field(decision, where, "actions", list)
    ranking: list[Any] = _field(decision, where, "ranking", list)
    chosen: int = _field(decision, where, "chosen_index", int)
    decision["probability"] = float(_field(decision, where, "probability", _NUMBER))
    if not actions:
        raise StructureError(_at(where, "actions"), "must hold at least one action", "too_short")
    if not _offer_well_formed(actions, ranking):
        _check_offer(actions, ranking, where)
    if not 0 <= chosen < len(actions):
        msg = f"must be in [0, {len(actions)}), got {chosen}"
        raise StructureError(_at(where, "chosen_index"), msg, "chosen_index_range")
    slots = decision.setdefault("slots", None)
    if slots is not None:
        _check_slots(slots, actions, _at(where, "slots"))
    include = None if slots is None else slots[0]["include"]
    _learning_mode(decision, where, len(actions if include is None else include))


def _check_slots(slots: Any, actions: list[Any], where: str) -> None:
    """Check a multi-slot decision's slots: what the learner and the log read of each.

    Each slot's ``include`` indexes the actions, its ranking holds exactly those, its
    chosen index is one of them and no slot chooses what a slot before it chose.
    """
    if type(slots) is not list or not slots:
        raise StructureError(where, "must be a non-empty list or null", "slots_type")
    taken: set[int] = set()
    for number, slot in enumerate(slots):
        at = _at(where, number)
        if type(slot) is not dict:
            raise _wrong(at, slot, dict)
        _field(slot, at, "id", str)
        if type(slot.setdefault("features", {})) is not dict:
            raise _wrong(_at(at, "features"), slot["features"], dict)
        include: list[Any] = _field(slot, at, "include", list)
        ranking: list[Any] = _field(slot, at, "ranking", list)
        chosen: int = _field(slot, at, "chosen_index", int)
        slot["probability"] = float(_field(slot, at, "probability", _NUMBER))
        if set(map(type, include)) - {int} or any(not 0 <= i < len(actions) for i in include):
            msg = f"must be indices of the {len(actions)} actions"
            raise StructureError(_at(at, "include"), msg, "slot_include")
        offered = {actions[i]["id"] for i in include}
        if len(set(include)) != len(include) or _ranked_ids(ranking, at) != offered:
            msg = "must hold each of the slot's actions once, as `include` does"
            raise StructureError(_at(at, "ranking"), msg, "ranking_ids")
        if chosen not in include or taken & set(include):
            msg = "must be one of the slot's actions, none chosen by a slot before it"
            raise StructureError(_at(at, "chosen_index"), msg, "chosen_index_range")
        taken.add(chosen)


_LEARNING_MODES: Final = frozenset(get_args(LearningMode))


def _learning_mode(decision: dict[str, Any], where: str, n_actions: int) -> None:
    """Check the decision's learning mode, and the learned probabilities an Apprentice logs."""
    mode = decision.setdefault("learning_mode", "Online")
    if mode not in _LEARNING_MODES:
        msg = f"must be one of {sorted(_LEARNING_MODES)}, got {mode!r}"
        raise StructureError(_at(where, "learning_mode"), msg, "learning_mode")
    learned = decision.setdefault("learned", None)
    if learned is None:
        return
    if (
        type(learned) is not list
        or len(learned) != n_actions
        or not all(type(p) in _NUMBERS and 0.0 <= p <= 1.0 for p in learned)
        or abs(math.fsum(learned) - 1.0) > SUM_TOLERANCE
    ):
        msg = f"must be {n_actions} probabilities, one per offered action, summing to 1"
        raise StructureError(_at(where, "learned"), msg, "learned_distribution")


_DICTS: Final = frozenset({dict})
_STRS: Final = frozenset({str})
_NUMBERS: Final = frozenset(_NUMBER)
_ID = itemgetter("id")
_PROBABILITY = itemgetter("probability")


def _offer_well_formed(actions: list[Any], ranking: list[Any]) -> bool:
    """Whether the offer keeps :func:`_check_offer`'s rules, checked in C-level passes.

    What a record of the service's own topics always does; when not, :func:`_check_offer`
    finds what is wrong. Actions without features get ``{}``.
    """
    if set(map(type, actions)) != _DICTS or set(map(type, ranking)) != _DICTS:
        return False
    try:
        ids = list(map(_ID, actions))
        ranked = list(map(_ID, ranking))
        probabilities = set(map(type, map(_PROBABILITY, ranking)))
    except KeyError:
        return False
    if set(map(type, ids)) != _STRS or set(map(type, ranked)) != _STRS:
        return False
    features = set(map(type, map(dict.get, actions, repeat("features"))))
    if not probabilities <= _NUMBERS or features != _DICTS:
        return False  # (features absent or null: _check_offer tells which)
    unique = set(ids)
    return len(unique) == len(ids) == len(ranked) and unique == set(ranked)


def _check_offer(actions: list[Any], ranking: list[Any], where: str) -> None:
    """Check the offer entry by entry, raising the first rule it breaks.

    Actions without features get ``{}``.
    """
    ids: set[str] = set()
    for index, action in enumerate(actions):
        if type(action) is not dict:
            raise _wrong(_at(where, f"actions.{index}"), action, dict)
        action_id = action.get("id", _ABSENT)
        if type(action_id) is not str:
            raise _wrong(_at(where, f"actions.{index}.id"), action_id, str)
        if type(action.setdefault("features", {})) is not dict:
            raise _wrong(_at(where, f"actions.{index}.features"), action["features"], dict)
        ids.add(action_id)
    ranked = _ranked_ids(ranking, where)
    if len(ids) != len(actions) or len(ranked) != len(ranking) or ranked != ids:
        msg = "must hold each offered action id once, as `actions` does"
        raise StructureError(_at(where, "ranking"), msg, "ranking_ids")


def _ranked_ids(ranking: list[Any], where: str) -> set[str]:
    """Check the ranking's entries (an id and a probability each); return their ids."""
    ranked: set[str] = set()
    for index, entry in enumerate(ranking):
        if type(entry) is not dict:
            raise _wrong(_at(where, f"ranking.{index}"), entry, dict)
        entry_id = entry.get("id", _ABSENT)
        if type(entry_id) is not str:
            raise _wrong(_at(where, f"ranking.{index}.id"), entry_id, str)
        probability = entry.get("probability", _ABSENT)
        if type(probability) not in _NUMBER:
            raise _wrong(_at(where, f"ranking.{index}.probability"), probability, _NUMBER)
        ranked.add(entry_id)
    return ranked


def check_features(features: Any, where: str) -> None:
    """Check that `features` are namespaces of named strings or numbers (no booleans).

    For the features of a record the one-pass writer left alone, before
    :meth:`policies.Policy.learn` checks their values' bounds.

    Raises
    ------
    StructureError
        Naming the first namespace or feature of the wrong type.
    """
    if type(features) is not dict:
        raise _wrong(where, features, dict)
    for namespace, named in features.items():
        at = f"{where}.{namespace}"
        if type(named) is not dict:
            raise _wrong(at, named, dict)
        for name, value in named.items():
            if type(value) not in (str, int, float):
                msg = f"must be a number or a string, got {_type_name(value)}"
                raise StructureError(f"{at}.{name}", msg, "feature_value_type")
