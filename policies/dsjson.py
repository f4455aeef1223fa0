"""The decision log's format, DSJSON: its one writer and its one reader.

The decision log is VW's DSJSON, one JSON object a line, readable by
``python -m vowpalwabbit --cb_explore_adf --dsjson -d FILE``, the format Personalizer
logged: ``_label_cost`` (``-reward``), ``_label_probability``, ``_label_Action``
(1-based), ``_labelIndex`` (0-based), ``Timestamp``, ``Version``, ``EventId``, ``a``
(1-based actions in rank order, the chosen one first), ``c`` (shared namespaces, and the
actions under ``_multi``), ``p`` (probabilities in the order of ``a``), and our own
fields under ``_sb``, a key VW skips.

Writing: :func:`dsjson_record` builds a decision's object and :func:`dsjson_line`
serialises it; :func:`logged_example` is the stream worker's fast path, which writes the
same line (and the VW text example) in one pass, or leaves the decision to those two.
Features are written with VW text's tokens and escapes (:mod:`policies.vwtext`), and an
action id as the namespace ``{"id": {"id=<escaped id>": 1}}`` (:func:`action_id_key`).

Reading: :class:`DSJSONReader` reads a line (orjson) into a :class:`LogRow`: offer-order
probabilities, the 0-based choice, ``reward = -cost``, the action ids unescaped
(:func:`read_action_id`), and the features if asked; it also reads the logs of Vowpal
Wabbit / Personalizer loops, whose actions carry their ids in ``_tag`` or a string
``id``. A row that breaks a rule raises :class:`~bandit.errors.LogFormatError` naming the
field and the rule, with a ``reason`` (see :class:`DSJSONReader`); :func:`read_file`
adds ``file:line``. :func:`parse_dsjson_record` reads one of our own records back into a
:class:`DSJSONRecord`, and :func:`log_files` finds a folder's log files.

Examples
--------
>>> from datetime import UTC, datetime
>>> from policies import Action
>>> line = dsjson_line(
...     dsjson_record(
...         {"user": {"tier": "gold"}},
...         [Action("item:1"), Action("item:2")],
...         chosen=1,
...         probabilities=[0.75, 0.25],
...         reward=1.0,
...         event_id="evt-1",
...         timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
...     )
... )
>>> row = DSJSONReader().line(line)
>>> row.action_ids, row.chosen, row.propensity, row.reward
(['item:1', 'item:2'], 1, 0.25, 1.0)
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
import struct
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias, cast

import orjson

from policies._base import FEATURE_VALUE_LIMIT, REWARD_LIMIT, _check_actions
from policies._distribution import SUM_TOLERANCE, Distribution
from policies._types import Action, Context, Features, FeatureValue
from policies.errors import (
    InvalidDistributionError,
    InvalidFeaturesError,
    InvalidFeedbackError,
    LogFormatError,
)
from policies.vwtext import (
    ACTION_BASE,
    ACTION_PREFIX,
    CONTEXT_PREFIX,
    ID_FEATURE,
    ID_NAMESPACE,
    ID_TOKEN,
    SLOT_NAMESPACE,
    SLOT_PREFIX,
    cost_to_reward,
    escape,
    label_text,
    needs_escaping,
    reward_to_cost,
    to_vw_action,
    unescape,
)

__all__ = [  # noqa: RUF022 - plain sorted(), which tests/test_public_api.py checks
    "DSJSONReader",
    "DSJSONRecord",
    "FeatureRules",
    "LOG_NAME",
    "LOG_SUFFIX",
    "LogRow",
    "LoggedExample",
    "LoggedSlot",
    "PROPENSITY_TOLERANCE",
    "SUM_TOLERANCE_READ",
    "SlotsRow",
    "action_id_key",
    "ccb_dsjson_record",
    "dsjson_line",
    "dsjson_record",
    "log_file_name",
    "log_file_opened",
    "log_file_sequence",
    "log_files",
    "logged_example",
    "parse_dsjson_record",
    "read_action_id",
    "read_event_ids",
    "read_file",
]

VERSION = "1"
# VW's JSON parser skips every key that starts with "_" (or reads it as one of its own
# fields), so features named that way travel under these keys instead.
_TEXT_KEY = "_text"
_HIDDEN_KEY = "_sb"
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ID_KEY_START = f"{ID_FEATURE}="

LOG_SUFFIX = ".dsjson"
"""The suffix of a decision log file."""
LOG_NAME = re.compile(r"^decisions-(\d{8}T\d{6}Z)-(\d{4,})\.dsjson$")
"""The name of a file the log sink writes: the UTC time it was opened, then its number."""

SUM_TOLERANCE_READ = 1e-6
"""How far from 1 a logged row's probabilities may sum (as :class:`replay.LoggedDecisions`)."""
PROPENSITY_TOLERANCE = 1e-9
"""How far a row's logged probability of its choice may be from its entry of the distribution.

Farther is also accepted when both round to the same single-precision number, as
Personalizer's logs write them (``_label_probability`` 0.8500000238418579, ``p`` 0.85).
"""


# -- action ids -----------------------------------------------------------------------------


def action_id_key(action_id: str) -> str:
    """Return the key an action's id is logged under in its namespace ``id``: ``id=<id>``.

    The id is escaped as VW text escapes it (:func:`policies.vwtext.escape`), so VW's
    JSON parser hashes it as its text parser hashes ``|id id=<id>``;
    :func:`read_action_id` reads it back.

    Examples
    --------
    >>> action_id_key("item:1")
    'id=item%3A1'
    """
    return _ID_KEY_START + escape(action_id)


def read_action_id(namespace: Any) -> str | None:
    """Return the id in an action's namespace ``{"id=<escaped id>": 1}``, unescaped, or None.

    Examples
    --------
    >>> read_action_id({"id=item%3A1": 1}), read_action_id({"topic=golf": 1})
    ('item:1', None)
    """
    if type(namespace) is dict and len(namespace) == 1:
        for key in namespace:
            if key[:3] == _ID_KEY_START:
                return unescape(key[3:])
    return None


# -- log files ------------------------------------------------------------------------------


def log_file_name(opened: datetime, sequence: int) -> str:
    """Return the name of the log sink's file number `sequence`, opened at `opened`.

    Examples
    --------
    >>> log_file_name(datetime(2026, 11, 27, 23, 15, tzinfo=UTC), 1)
    'decisions-20261127T231500Z-0001.dsjson'
    """
    stamp = opened.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"decisions-{stamp}-{sequence:04d}{LOG_SUFFIX}"


def log_file_sequence(path: Path) -> int:
    """Return the number in the name of a file the log sink wrote (0 for any other file).

    Examples
    --------
    >>> log_file_sequence(Path("decisions-20261127T231500Z-0012.dsjson"))
    12
    """
    match = LOG_NAME.match(path.name)
    return int(match.group(2)) if match else 0


def log_file_opened(path: Path) -> str:
    """Return when the log sink opened `path`, as its name says (``""`` for another file).

    Examples
    --------
    >>> log_file_opened(Path("decisions-20261127T231500Z-0012.dsjson"))
    '20261127T231500Z'
    """
    match = LOG_NAME.match(path.name)
    return match.group(1) if match else ""


def log_files(directory: Path) -> list[Path]:
    """Return the decision log files under `directory` (any depth), by path; [] if absent.

    Examples
    --------
    >>> log_files(Path("/nonexistent"))
    []
    """
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.rglob(f"*{LOG_SUFFIX}") if path.is_file())


# -- writing -------------------------------------------------------------------------------


def dsjson_record(
    context: Context,
    actions: Sequence[Action],
    chosen: int,
    probabilities: Sequence[float],
    reward: float,
    *,
    event_id: str,
    timestamp: datetime,
    ranking: Sequence[int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one decision's DSJSON object, as VW's ``--cb_explore_adf --dsjson`` reads it.

    The object is what Personalizer logged: ``_label_cost`` (``-reward``),
    ``_label_probability``, ``_label_Action`` (1-based), ``_labelIndex`` (0-based),
    ``Timestamp``, ``Version``, ``EventId``, ``a`` (1-based actions in rank order, the
    chosen one first), ``c`` (shared namespaces, and the actions under ``_multi``),
    ``p`` (probabilities in the order of ``a``), then `extra` under ``_sb``, a key VW
    skips. Serialise it with :func:`dsjson_line`, one object a line.

    Features are written so that VW's JSON parser hashes them exactly as its text parser
    hashes :func:`~policies.vwtext.to_vw_lines`: the same namespace names (``c<name>``,
    ``a<name>``), a number as ``{"name": value}`` (text ``name:value``), a string as
    ``{"name=value": 1}`` (text ``name=value``, escaped alike). A string value is never
    written as ``{"name": "value"}``: VW's JSON parser would hash that as ``namevalue``,
    or, with ``--chain_hash``, as neither. Each action's id is its namespace ``id``,
    ``{"id=<id>": 1}`` (text ``|id id=<id>``, escaped alike): VW learns it, and
    :func:`parse_dsjson_record` reads the id back from it.

    Parameters
    ----------
    context, actions
        The features the policy saw.
    chosen
        0-based offer-order index of the chosen action.
    probabilities
        The distribution the choice was drawn from, in offer order.
    reward
        The reward learned.
    event_id, timestamp
        The decision's id and when it was made (timezone-aware).
    ranking
        0-based offer-order indices in rank order, `chosen` first; by default `chosen`
        then the others by decreasing probability (as :func:`policies.decide_ranking`).
    extra
        JSON-serialisable fields of our own, written under ``_sb``.

    Returns
    -------
    dict
        Ready for ``json.dumps``; :func:`parse_dsjson_record` reads it back.

    Raises
    ------
    InvalidDistributionError
        If `probabilities` is not a distribution over `actions`.
    InvalidFeedbackError
        If `chosen`, `reward`, `ranking` or `timestamp` cannot be right.
    InvalidFeaturesError
        If a number is not finite, or a feature name holds ``=``.

    Notes
    -----
    What VW's DSJSON parser cannot learn exactly as :class:`~policies.vw.VWPolicy` did
    (VW's JSON parser skips every key starting with ``_``, or reads it as one of its own
    fields):

    - features whose names start with ``_``: strings go to the namespace's ``"_text"``
      (VW learns them with the text lines' hashes, after the namespace's other
      features), numbers to a nested ``"_sb"`` (VW skips them: it reads every
      ``"_text"`` token as a name worth 1, never as ``name:value``).
      :func:`parse_dsjson_record` reads both back.
    - number values: VW's text parser accumulates digits in single precision and is off
      by a few float32 ulps for long decimals (``0.24273997354306764`` reads as
      ``0.24273994565``), while its JSON parser rounds correctly (``0.24273997545``).
      Values with few significant digits, such as 0.25, 0.5, 3 or 0.875, read the same.
      The log keeps the value the policy was given, exactly.

    Zero-valued numbers are logged: the text lines leave them out and VW's JSON parser
    drops them, so they change nothing for VW.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> record = dsjson_record(
    ...     {"user": {"age": 0.5, "tier": "gold"}},
    ...     [Action("x", {"item": {"topic": "golf"}}), Action("y")],
    ...     chosen=1,
    ...     probabilities=[0.75, 0.25],
    ...     reward=1.0,
    ...     event_id="evt-1",
    ...     timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
    ...     extra={"policy": "vw"},
    ... )
    >>> from pprint import pprint
    >>> pprint(record, sort_dicts=False, width=88)
    {'_label_cost': -1.0,
     '_label_probability': 0.25,
     '_label_Action': 2,
     '_labelIndex': 1,
     'Timestamp': '2026-11-27T23:15:00.000000Z',
     'Version': '1',
     'EventId': 'evt-1',
     'a': [2, 1],
     'c': {'cuser': {'age': 0.5, 'tier=gold': 1},
           '_multi': [{'aitem': {'topic=golf': 1}, 'id': {'id=x': 1}},
                      {'id': {'id=y': 1}}]},
     'p': [0.25, 0.75],
     '_sb': {'policy': 'vw'}}
    """
    _check_actions(actions)
    distribution = Distribution(tuple(float(p) for p in probabilities))
    if len(distribution) != len(actions):
        msg = (
            f"`probabilities` must hold one probability per action ({len(actions)}), "
            f"got {len(distribution)}"
        )
        raise InvalidDistributionError(msg)
    if isinstance(chosen, bool) or not (0 <= chosen < len(actions)):
        msg = f"`chosen` must be an index in [0, {len(actions)}), got {chosen!r}"
        raise InvalidFeedbackError(msg)
    if not math.isfinite(reward):
        msg = f"`reward` must be finite, got {reward!r}"
        raise InvalidFeedbackError(msg)
    order = _dsjson_ranking(distribution.probabilities, chosen, ranking)
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        msg = f"`timestamp` must be timezone-aware, got {timestamp.isoformat()}"
        raise InvalidFeedbackError(msg)
    shared = _shared(context, actions)
    record: dict[str, Any] = {
        "_label_cost": reward_to_cost(float(reward)),
        "_label_probability": distribution[chosen],
        "_label_Action": to_vw_action(chosen),
        "_labelIndex": chosen,
        "Timestamp": timestamp.astimezone(UTC).strftime(_TIMESTAMP_FORMAT),
        "Version": VERSION,
        "EventId": event_id,
        "a": [to_vw_action(index) for index in order],
        "c": shared,
        "p": [distribution[index] for index in order],
    }
    if extra is not None:
        record[_HIDDEN_KEY] = dict(extra)
    return record


def _shared(context: Context, actions: Sequence[Action]) -> dict[str, Any]:
    """Write a decision's ``c``: the context's namespaces, and the actions under ``_multi``."""
    shared: dict[str, Any] = {
        CONTEXT_PREFIX + escape(namespace): _dsjson_namespace(namespace, values)
        for namespace, values in context.items()
    }
    # The id namespace comes last, as in the text lines: VW then orders features alike.
    shared["_multi"] = [
        {
            **{
                ACTION_PREFIX + escape(namespace): _dsjson_namespace(namespace, values)
                for namespace, values in action.features.items()
            },
            ID_NAMESPACE: {action_id_key(action.id): 1},
        }
        for action in actions
    ]
    return shared


@dataclass(frozen=True, slots=True)
class LoggedSlot:
    """One slot of a multi-slot decision, as :func:`ccb_dsjson_record` logs it.

    Attributes
    ----------
    id
        The slot's id (``_id``).
    features
        The slot's features, as the policy saw them in the namespace
        :data:`~policies.vwtext.SLOT_NAMESPACE` (one namespace of named values).
    include
        0-based indices of the decision's actions the slot could choose, in the order
        of `probabilities`.
    probabilities
        The slot's distribution over those actions.
    chosen
        0-based index (into the decision's actions) of the action it chose: one of
        `include`.
    reward
        The slot's reward.
    """

    id: str
    features: Mapping[str, FeatureValue]
    include: Sequence[int]
    probabilities: Sequence[float]
    chosen: int
    reward: float


def ccb_dsjson_record(
    context: Context,
    actions: Sequence[Action],
    slots: Sequence[LoggedSlot],
    *,
    event_id: str,
    timestamp: datetime,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one multi-slot decision's DSJSON object, as ``vw --ccb_explore_adf --dsjson`` reads it.

    VW's conditional contextual bandit form (what Personalizer's multi-slot loops
    logged): ``Timestamp``, ``Version``, ``EventId``, ``c`` (the shared namespaces and
    the actions under ``_multi``, written as :func:`dsjson_record` writes them, and the
    slots under ``_slots``: each its ``_id``, its features under ``s_slot`` as
    :func:`~policies.vwtext.to_ccb_lines` writes them, and ``_inc``, the actions it
    could choose), then ``_outcomes``, one a slot: ``_id``, ``_label_cost``
    (``-reward``), ``_a`` (0-based action indices, the chosen one first, the rest by
    decreasing probability) and ``_p`` (their probabilities); our own fields under
    ``_sb``.

    Raises
    ------
    InvalidDistributionError
        If a slot's probabilities are not a distribution over its actions.
    InvalidFeedbackError
        If a slot's choice or reward cannot be right, or two slots chose one action.
    InvalidFeaturesError
        As :func:`dsjson_record`.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from pprint import pprint
    >>> record = ccb_dsjson_record(
    ...     {"user": {"tier": "gold"}},
    ...     [Action("a"), Action("b"), Action("c")],
    ...     [
    ...         LoggedSlot("top", {"size": "Large"}, [2, 0], [0.75, 0.25], 2, 1.0),
    ...         LoggedSlot("side", {}, [0, 1], [0.5, 0.5], 0, 0.0),
    ...     ],
    ...     event_id="evt-1",
    ...     timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
    ... )
    >>> pprint(record["c"]["_slots"])
    [{'_id': 'top', '_inc': [2, 0], 's_slot': {'size=Large': 1}},
     {'_id': 'side', '_inc': [0, 1]}]
    >>> pprint(record["_outcomes"], sort_dicts=False)
    [{'_id': 'top', '_label_cost': -1.0, '_a': [2, 0], '_p': [0.75, 0.25]},
     {'_id': 'side', '_label_cost': -0.0, '_a': [0, 1], '_p': [0.5, 0.5]}]
    """
    _check_actions(actions)
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        msg = f"`timestamp` must be timezone-aware, got {timestamp.isoformat()}"
        raise InvalidFeedbackError(msg)
    if not slots:
        msg = "`slots` must hold at least one slot"
        raise InvalidFeedbackError(msg)
    shared = _shared(context, actions)
    written: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    taken: set[int] = set()
    for number, slot in enumerate(slots):
        include = list(slot.include)
        distribution = Distribution(tuple(float(p) for p in slot.probabilities))
        if len(distribution) != len(include):
            msg = f"slot {number}: `probabilities` must hold one per included action"
            raise InvalidDistributionError(msg)
        if (
            len(set(include)) != len(include)
            or any(isinstance(i, bool) or not 0 <= i < len(actions) for i in include)
            or slot.chosen not in include
            or slot.chosen in taken
        ):
            msg = (
                f"slot {number}: `include` must be distinct action indices holding `chosen` "
                f"({slot.chosen}), which no slot before it chose"
            )
            raise InvalidFeedbackError(msg)
        if not math.isfinite(slot.reward):
            msg = f"slot {number}: `reward` must be finite, got {slot.reward!r}"
            raise InvalidFeedbackError(msg)
        taken.add(slot.chosen)
        entry: dict[str, Any] = {"_id": slot.id}
        if slot.features:
            entry[SLOT_PREFIX + escape(SLOT_NAMESPACE)] = _dsjson_namespace(
                SLOT_NAMESPACE, slot.features
            )
        entry["_inc"] = include
        written.append(entry)
        order = _dsjson_ranking(distribution.probabilities, include.index(slot.chosen), None)
        outcomes.append(
            {
                "_id": slot.id,
                "_label_cost": reward_to_cost(float(slot.reward)),
                "_a": [include[i] for i in order],
                "_p": [distribution[i] for i in order],
            }
        )
    shared["_slots"] = written
    record: dict[str, Any] = {
        "Timestamp": timestamp.astimezone(UTC).strftime(_TIMESTAMP_FORMAT),
        "Version": VERSION,
        "EventId": event_id,
        "c": shared,
        "_outcomes": outcomes,
    }
    if extra is not None:
        record[_HIDDEN_KEY] = dict(extra)
    return record


def _dsjson_ranking(
    probabilities: tuple[float, ...], chosen: int, ranking: Sequence[int] | None
) -> list[int]:
    n = len(probabilities)
    if ranking is None:
        rest = sorted((i for i in range(n) if i != chosen), key=lambda i: (-probabilities[i], i))
        return [chosen, *rest]
    order = list(ranking)
    if sorted(order) != list(range(n)) or order[0] != chosen:
        msg = (
            f"`ranking` must order every index in [0, {n}) once, `chosen` ({chosen}) "
            f"first, got {order!r}"
        )
        raise InvalidFeedbackError(msg)
    return order


def _dsjson_namespace(namespace: str, values: Mapping[str, FeatureValue]) -> dict[str, Any]:
    """Write one namespace's features as VW's JSON parser must read them (see above)."""
    written: dict[str, Any] = {}
    text: list[str] = []
    hidden: dict[str, FeatureValue] = {}
    for name, value in values.items():
        if "=" in name:
            msg = f"feature name {namespace}.{name} must not hold '='"
            raise InvalidFeaturesError(msg)
        key = escape(name)
        if isinstance(value, str):
            token = f"{key}={escape(value)}"
            if name.startswith("_"):
                text.append(token)
            else:
                written[token] = 1
        else:
            if not math.isfinite(value):
                msg = f"feature {namespace}.{name} must be finite, got {value!r}"
                raise InvalidFeaturesError(msg)
            if name.startswith("_"):
                hidden[name] = value
            else:
                written[key] = value
    if text:
        written[_TEXT_KEY] = " ".join(text)
    if hidden:
        written[_HIDDEN_KEY] = hidden
    return written


# -- the stream worker's fast path: both formats at once ----------------------------------
#
# logged_example writes the VW text example beside the DSJSON line, in the one pass over
# the features that also checks them: the only VW text written outside policies.vwtext.
# Why: it is the stream worker's hot path, and writing the text with vwtext's functions
# would be a second pass. It is no second set of rules: it writes only what needs no
# escaping (vwtext.needs_escaping), with vwtext's namespaces, id token and label, and
# leaves anything else to vwtext.to_vw_lines and dsjson_record (returning None);
# tests/policies/test_vw_logged.py checks both outputs against theirs.
#
# What it costs is Python operations per feature, so it does few: an offered action (its
# id and features) is written once, as its whole text line and its whole DSJSON object,
# and found again by its exact JSON (one orjson.dumps, C-level); only the context, which
# changes with every decision, is written feature by feature.

_DSJSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_CACHE_SIZE = 65_536  # names a FeatureRules remembers as fine; extras remembered
_ACTION_CACHE_SIZE = 8_192  # actions a FeatureRules remembers the written pieces of
_HIDDEN_CACHE: dict[Any, str] = {}  # "_sb" objects written, by their items
_NOT_PLAIN = re.compile(r'["\\,{}]')  # in a name: JSON escapes it, or the writer uses it
_ONE_BASED: list[str] = [str(index + ACTION_BASE) for index in range(256)]  # "a"'s entries
_FLOATS: frozenset[type] = frozenset({float})
_INTS: frozenset[type] = frozenset({int})


def dsjson_line(record: Mapping[str, Any]) -> bytes:
    r"""Serialise a :func:`dsjson_record` object as one line of the decision log.

    Compact JSON, UTF-8, ending in a line break; NaN and infinities are refused.

    Examples
    --------
    >>> dsjson_line({"EventId": "evt-1", "p": [0.25, 0.75]})
    b'{"EventId":"evt-1","p":[0.25,0.75]}\n'
    """
    return (_DSJSON_ENCODER.encode(record) + "\n").encode()


@dataclass(frozen=True, slots=True)
class LoggedExample:
    """One logged decision and its reward, written in VW's two formats.

    Made by :func:`logged_example`; :meth:`policies.vw.VWPolicy.learn_logged` learns it.

    Attributes
    ----------
    text
        The ``cb_explore_adf`` learning example, exactly the text
        :meth:`policies.vw.VWPolicy.learn` gives VW for the same decision
        (:func:`~policies.vwtext.to_vw_lines`).
    dsjson
        The decision log line, exactly :func:`dsjson_line` of :func:`dsjson_record`.
    """

    text: str
    dsjson: bytes


def _anything(name: str) -> bool:
    return True


@dataclass(frozen=True, slots=True, eq=False)
class FeatureRules:
    """Rules a caller's features must also keep for :func:`logged_example` to write them.

    So a caller that validates features anyway (the stream worker) checks them in the
    same pass that writes them. Names found fine are remembered, and so are the tokens
    written for string values (categorical values repeat), up to 65,536 of each, and
    what was written for an action, its id and features (a catalog repeats its
    actions), up to 8,192 actions.

    Parameters
    ----------
    namespace_ok, name_ok
        Say whether a namespace name, and a feature name, is valid.
    max_namespaces, max_features, max_string_length
        The most namespaces per features mapping, features per namespace, and
        characters per string value.
    """

    namespace_ok: Callable[[str], bool] = _anything
    name_ok: Callable[[str], bool] = _anything
    max_namespaces: int = sys.maxsize
    max_features: int = sys.maxsize
    max_string_length: int = sys.maxsize
    _namespaces: set[str] = field(default_factory=set, init=False, repr=False)
    _names: set[str] = field(default_factory=set, init=False, repr=False)
    _heads: dict[str, dict[str, tuple[str, str]]] = field(
        default_factory=dict, init=False, repr=False
    )  # by prefix and namespace: its text and DSJSON openings
    _pairs: dict[tuple[str, str], tuple[str, str]] = field(
        default_factory=dict, init=False, repr=False
    )  # by feature name and string value: its text token and DSJSON member
    _lines: dict[bytes, str] = field(
        default_factory=dict, init=False, repr=False
    )  # by an action's id and features as JSON: its text line (without a label)
    _objects: dict[bytes, str] = field(
        default_factory=dict, init=False, repr=False
    )  # by the same key: its DSJSON object in ``_multi``

    def _namespace(self, name: object) -> bool:
        """Whether namespace `name` is valid and written as it is (remembered when so)."""
        if type(name) is not str or not name or not _plain(name) or not self.namespace_ok(name):
            return False
        if len(self._namespaces) < _CACHE_SIZE:
            self._namespaces.add(name)
        return True

    def _name(self, name: object) -> bool:
        """Whether feature `name` is valid and written as it is (remembered when so)."""
        if type(name) is not str or not name or name[0] == "_" or "=" in name:
            return False  # DSJSON writes these apart (dsjson_record)
        if not _plain(name) or not self.name_ok(name):
            return False
        if len(self._names) < _CACHE_SIZE:
            self._names.add(name)
        return True


_NO_RULES = FeatureRules()


def _plain(name: str) -> bool:
    """Whether `name` needs no escaping in VW text nor in JSON, nor holds ``,{}``."""
    return not needs_escaping(name) and name.isprintable() and _NOT_PLAIN.search(name) is None


def logged_example(  # noqa: PLR0911, PLR0912  (anything unusual: left to the slow path)
    context: Context,
    action_ids: Sequence[str],
    action_features: Sequence[Features],
    chosen: int,
    probabilities: Sequence[float],
    *,
    reward: float,
    event_id: str,
    timestamp: datetime,
    ranking: Sequence[int],
    extra: Mapping[str, Any] | None = None,
    rules: FeatureRules | None = None,
) -> LoggedExample | None:
    """Write one logged decision as VW learns it and as the decision log keeps it, or None.

    The stream worker's hot path: one pass over the features writes both the learning
    example (:func:`~policies.vwtext.to_vw_lines` with the label
    ``(chosen, -reward, probability)``) and the DSJSON line (:func:`dsjson_line` of
    :func:`dsjson_record`), each exactly as those functions write it, in a fraction of
    their time. It is an accelerator, never
    a second set of rules: for anything unusual (a name or value that needs escaping, a
    name starting with ``_``, a value that is not a number within
    :data:`~policies._base.FEATURE_VALUE_LIMIT` or a string, a reward beyond
    :data:`~policies._base.REWARD_LIMIT`, an
    invalid distribution or ranking, features breaking `rules`...) it returns None, and
    the caller writes the example with those functions, which escape it or say what is
    wrong.

    Parameters
    ----------
    context
        Shared features by namespace.
    action_ids, action_features
        The offered actions' ids and features, in offer order.
    chosen
        0-based offer-order index of the chosen action.
    probabilities
        The distribution the choice was drawn from, in offer order.
    reward
        The reward learned.
    event_id, timestamp, ranking, extra
        As :func:`dsjson_record` takes them; `ranking` is required here.
    rules
        What the features must also keep (None: nothing more).

    Returns
    -------
    LoggedExample or None

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> example = logged_example(
    ...     {"user": {"age": 0.5, "tier": "gold"}},
    ...     ["x", "y"],
    ...     [{"item": {"topic": "golf"}}, {}],
    ...     chosen=1,
    ...     probabilities=[0.75, 0.25],
    ...     reward=1.0,
    ...     event_id="evt-1",
    ...     timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
    ...     ranking=[1, 0],
    ... )
    >>> print(example.text)
    shared |cuser age:0.5 tier=gold
    |aitem topic=golf |id id=x
    0:-1.0:0.25 |id id=y
    >>> example.dsjson == dsjson_line(
    ...     dsjson_record(
    ...         {"user": {"age": 0.5, "tier": "gold"}},
    ...         [Action("x", {"item": {"topic": "golf"}}), Action("y")],
    ...         chosen=1,
    ...         probabilities=[0.75, 0.25],
    ...         reward=1.0,
    ...         event_id="evt-1",
    ...         timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
    ...         ranking=[1, 0],
    ...     )
    ... )
    True
    """
    n = len(action_ids)
    if not 0 < n == len(action_features) == len(probabilities) == len(ranking):
        return None
    if type(chosen) is not int or not 0 <= chosen < n or type(reward) is not float:
        return None
    if not -REWARD_LIMIT <= reward <= REWARD_LIMIT:  # (NaN too) learn says what is wrong
        return None
    if set(map(type, ranking)) != _INTS or ranking[0] != chosen:
        return None
    if sorted(ranking) != list(range(n)):
        return None
    if set(map(type, probabilities)) != _FLOATS or not min(probabilities) > 0.0:
        return None
    if not max(probabilities) <= 1.0 or not abs(math.fsum(probabilities) - 1.0) <= SUM_TOLERANCE:
        return None  # (a NaN makes the sum NaN)
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        return None
    if rules is None:
        rules = _NO_RULES
    try:
        keys = list(map(orjson.dumps, zip(action_ids, action_features, strict=True)))
        if len(set(action_ids)) != n:
            return None
    except TypeError:  # not JSON (an int beyond 64 bits, a key not a string), or no str
        return None
    written = _write_actions(keys, action_ids, action_features, rules)
    if written is None:
        return None
    lines, objects = written
    shared = _write_context(context, rules)
    if shared is None:
        return None
    cost = reward_to_cost(reward)
    texts = {p: repr(p) for p in set(probabilities)}  # (decisions repeat probabilities)
    ranked = list(map(texts.__getitem__, map(probabilities.__getitem__, ranking)))
    lines[chosen] = f"{label_text(cost, probabilities[chosen])} {lines[chosen]}"
    try:
        event = _DSJSON_ENCODER.encode(event_id)
        end = "" if extra is None else _hidden(extra)
    except (TypeError, ValueError):  # not JSON: dsjson_line says so
        return None
    if n > len(_ONE_BASED):
        _ONE_BASED.extend(str(index + ACTION_BASE) for index in range(len(_ONE_BASED), n))
    line = (
        f'{{"_label_cost":{cost!r},"_label_probability":{ranked[0]},'
        f'"_label_Action":{chosen + ACTION_BASE},"_labelIndex":{chosen},'
        f'"Timestamp":"{_timestamp(timestamp)}","Version":"{VERSION}",'
        f'"EventId":{event},"a":[{",".join(map(_ONE_BASED.__getitem__, ranking))}],'
        f'"c":{{{shared[1]}"_multi":[{",".join(objects)}]}},'
        f'"p":[{",".join(ranked)}]{end}}}\n'
    )
    return LoggedExample(f"shared{shared[0]}\n" + "\n".join(lines), line.encode())


def _hidden(extra: Mapping[str, Any]) -> str:
    """Return ``,"_sb":<extra as JSON>``, remembered for extras seen before (hashable)."""
    try:
        key: Any = tuple(extra.items())
        written = _HIDDEN_CACHE.get(key)
    except TypeError:  # a value that cannot be hashed
        return f',"{_HIDDEN_KEY}":' + _DSJSON_ENCODER.encode(dict(extra))
    if written is None:
        written = f',"{_HIDDEN_KEY}":' + _DSJSON_ENCODER.encode(dict(extra))
        if len(_HIDDEN_CACHE) >= _CACHE_SIZE:
            _HIDDEN_CACHE.clear()
        _HIDDEN_CACHE[key] = written
    return written


def _timestamp(timestamp: datetime) -> str:
    """Return ``timestamp.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)``, faster."""
    utc = timestamp if timestamp.tzinfo is UTC else timestamp.astimezone(UTC)
    if utc.year < 1000:  # strftime does not pad the year, isoformat does
        return utc.strftime(_TIMESTAMP_FORMAT)
    if utc.microsecond:  # isoformat writes all six digits, then "+00:00"
        return utc.isoformat()[:-6] + "Z"
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _write_context(context: Context, rules: FeatureRules) -> tuple[str, str] | None:
    """Write the shared features: their text after ``shared``, and their DSJSON members.

    The members end with a comma (``"_multi"`` follows them). None when a name, a value
    or a rule is off, or something needs escaping.
    """
    if not context:
        return " |", ""
    tokens: list[str] = []
    members: list[str] = []
    if not _write(CONTEXT_PREFIX, context, tokens, members, rules):
        return None
    return "".join(tokens), "".join(members).replace(",}", "}")


def _write_actions(
    keys: Sequence[bytes],
    action_ids: Sequence[str],
    action_features: Sequence[Features],
    rules: FeatureRules,
) -> tuple[list[str], list[str]] | None:
    """Return the actions' text lines (no label) and DSJSON objects, or None.

    Each action's are remembered by its key in `keys` (its id and features as exact
    JSON: ``1``, ``1.0`` and ``true`` write differently), up to ``_ACTION_CACHE_SIZE``
    actions per `rules`; the others are written and remembered, and what is refused is
    never remembered. None when one cannot be written in one pass.
    """
    known_lines, known_objects = rules._lines, rules._objects
    lines = list(map(known_lines.get, keys))
    objects = list(map(known_objects.get, keys))
    if None in lines:
        for index, line in enumerate(lines):
            if line is None:
                written = _write_action(action_ids[index], action_features[index], rules)
                if written is None:
                    return None
                lines[index], objects[index] = written
                if len(known_lines) >= _ACTION_CACHE_SIZE:
                    known_lines.clear()
                    known_objects.clear()
                known_lines[keys[index]], known_objects[keys[index]] = written
    return cast("list[str]", lines), cast("list[str]", objects)


def _write_action(
    action_id: str, features: Features, rules: FeatureRules
) -> tuple[str, str] | None:
    """Return an action's text line (no label) and DSJSON object, or None."""
    if type(action_id) is not str or type(features) is not dict:
        return None
    if not action_id.isprintable() or '"' in action_id or "\\" in action_id:
        return None
    if ",}" in action_id:
        return None
    escaped = escape(action_id) if needs_escaping(action_id) else action_id
    tokens: list[str] = []
    members = ["{"]
    if features and not _write(ACTION_PREFIX, features, tokens, members, rules):
        return None
    tokens.append(ID_TOKEN + escaped)
    members.append(f'"{ID_NAMESPACE}":{{"{_ID_KEY_START}{escaped}":1}}}}')
    return "".join(tokens)[1:], "".join(members).replace(",}", "}")


def _write(  # noqa: PLR0911, PLR0912  (one flat pass: anything off returns at once)
    prefix: str, features: Features, text: list[str], dsjson: list[str], rules: FeatureRules
) -> bool:
    """Append `features` to `text` as VW tokens and to `dsjson` as DSJSON members.

    Every text token starts with one space; every DSJSON member, and every feature in
    one, ends with a comma (``,}`` is cut once the line is whole). Returns False when a
    name, a value or a rule is off, or a string value would need escaping in either
    format (names are checked by `rules`, a string value when first seen).
    """
    if len(features) > rules.max_namespaces:
        return False
    if not (features.keys() <= rules._namespaces or all(map(rules._namespace, features))):
        return False
    names, per_namespace, longest = rules._names, rules.max_features, rules.max_string_length
    limit = FEATURE_VALUE_LIMIT
    heads = rules._heads.get(prefix)
    if heads is None:
        heads = rules._heads[prefix] = {}
    pairs = rules._pairs
    token, member = text.append, dsjson.append
    for namespace, values in features.items():
        if type(values) is not dict or len(values) > per_namespace:
            return False
        if not (values.keys() <= names or all(map(rules._name, values))):
            return False
        head = heads.get(namespace)
        if head is None:
            head = heads[namespace] = (f" |{prefix}{namespace}", f'"{prefix}{namespace}":{{')
        token(head[0])
        member(head[1])
        for name, value in values.items():
            kind = type(value)
            if kind is str:
                written = pairs.get((name, value))
                if written is None:
                    if len(value) > longest or not _plain_value(value):
                        return False
                    if len(pairs) >= _CACHE_SIZE:
                        pairs.clear()
                    pair = f"{name}={value}"
                    written = pairs[name, value] = (" " + pair, f'"{pair}":1,')
                token(written[0])
                member(written[1])
            elif (kind is float or kind is int) and -limit <= value <= limit:  # (no NaN, bool)
                number = repr(value)
                member(f'"{name}":{number},')
                if value:
                    token(f" {name}:{number}")
            else:
                return False
        member("},")
    return True


def _plain_value(value: str) -> bool:
    r"""Whether string `value` is written as it is in both formats (no escaping).

    Printable, nothing VW text escapes (:func:`~policies.vwtext.needs_escaping`), no
    ``"`` nor ``\`` (JSON escapes them), and no ``,}`` (where :func:`_write` cuts a
    namespace's trailing comma).
    """
    return (
        value.isprintable()
        and not needs_escaping(value)
        and '"' not in value
        and "\\" not in value
        and ",}" not in value
    )


# -- reading --------------------------------------------------------------------------------

_Features: TypeAlias = dict[str, dict[str, Any]]
_DEFAULT_NAMESPACE = "default"


@dataclass(slots=True)
class LogRow:
    """One decision as :class:`DSJSONReader` read it from a log line, in offer order.

    Attributes
    ----------
    chosen
        0-based offer-order index of the chosen action.
    probabilities
        Probability of every offered action, in offer order.
    reward
        The reward learned (``-cost``).
    event_id
        ``EventId``; None when the line has none.
    action_ids
        The offered actions' ids, unescaped; None when an action has none.
    context, action_features
        The features, as the writer was given them (None when not asked for).
    order
        ``a`` as logged: VW's 1-based action numbers in rank order.
    timestamp
        ``Timestamp`` as logged (None when absent or not a string).
    extra
        Our own fields, the top-level ``_sb`` object (empty when absent).
    ours
        Whether every action holds its id in our layout (``{"id": {"id=<id>": 1}}``).
    include
        A slot's row (:meth:`DSJSONReader.read_slot`): the 0-based indices, into the
        line's ``c._multi``, of the actions it is over, in its order; else None.
    slot_id
        A slot's row: the slot's ``_id`` (None when it has none, or for another row).
    position
        A slot's row: the slot's 0-based number (its position on the page); else None.
    """

    chosen: int
    probabilities: list[float]
    reward: float
    event_id: str | None
    action_ids: list[str] | None
    context: _Features | None
    action_features: list[_Features] | None
    order: list[int]
    timestamp: str | None
    extra: dict[str, Any]
    ours: bool
    include: list[int] | None = None
    slot_id: str | None = None
    position: int | None = None

    @property
    def propensity(self) -> float:
        """The logged probability of the chosen action."""
        return self.probabilities[self.chosen]

    @property
    def ranking(self) -> tuple[int, ...]:
        """0-based offer-order indices in rank order, the chosen action first."""
        return tuple(number - ACTION_BASE for number in self.order)

    @property
    def chosen_action_id(self) -> str | None:
        """The chosen action's id (None when the actions have none)."""
        return None if self.action_ids is None else self.action_ids[self.chosen]


@dataclass(slots=True)
class SlotsRow:
    """One multi-slot (CCB) decision as :meth:`DSJSONReader.read_slots` read it.

    Attributes
    ----------
    event_id
        ``EventId``; None when the line has none.
    action_ids
        Every offered action's id (``c._multi``), unescaped; None when an action has none.
    context, action_features
        The shared features (without a slot's) and every action's, as the writer was
        given them (None when not asked for).
    slots
        Each slot's row, in slot order (:meth:`DSJSONReader.read_slot`), its
        ``include`` and ``slot_id`` set.
    ours
        Whether every action holds its id in our layout.
    """

    event_id: str | None
    action_ids: list[str] | None
    context: _Features | None
    action_features: list[_Features] | None
    slots: list[LogRow]
    ours: bool


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int


def _bad(reason: str, message: str) -> LogFormatError:
    return LogFormatError(message, reason=reason)


_SINGLE = struct.Struct("<f")


def _same_single(a: float, b: float) -> bool:
    """Whether `a` and `b` round to the same single-precision number.

    Personalizer logged ``_label_probability`` as a float widened to double
    (``0.8500000238418579``) and ``p`` as the float's shortest text (``0.85``).

    Examples
    --------
    >>> _same_single(0.8500000238418579, 0.85), _same_single(0.8500001, 0.85)
    (True, False)
    """
    try:
        return _SINGLE.pack(a) == _SINGLE.pack(b)
    except OverflowError:  # beyond single precision: not a probability
        return False


class DSJSONReader:
    """Read decision log lines: the one reader of DSJSON, ours and VW's / Personalizer's.

    Fields read: ``_label_cost`` (or `cost_key`; ``reward = -cost``), ``_labelIndex``
    (0-based) and ``_label_Action`` (1-based; either is enough, both must agree),
    ``_label_probability`` (must equal the chosen action's entry of ``p``, within
    :data:`PROPENSITY_TOLERANCE` or single precision), ``a`` and
    ``p`` (each action once; probabilities in (0, 1] summing to 1 within
    :data:`SUM_TOLERANCE_READ`), ``c`` (shared namespaces; the actions under
    ``c._multi``), ``EventId``, ``Timestamp``, ``_sb``. ``_skipLearn: true`` marks a
    decision VW does not learn from: :meth:`read` returns None for it. A multi-slot
    (CCB) line, with ``_outcomes``, is read one slot at a time (:meth:`read_slot`,
    :meth:`rows`); :meth:`read` refuses it.

    An action of our own log holds its id as the namespace ``{"id": {"id=<id>": 1}}``
    and its namespaces as ``a<name>`` (the context's as ``c<name>``), read back exactly
    as :func:`dsjson_record` was given them. Any other action takes its id from
    ``"_tag"`` or a string ``"id"``, and its features as VW's JSON parser groups them: an
    object is a namespace, an array of objects adds their features to the namespace it
    is under, an array of numbers gives the features ``"0"``, ``"1"``, ...; a bare value
    outside any namespace goes to namespace ``"default"``; ``true`` is the number 1,
    ``false`` and ``null`` are left out, and keys starting with ``_`` are VW's fields.

    An action offered again with the same features shares one features dict across
    the rows read (treat them as read-only).

    Parameters
    ----------
    cost_key
        The field the reward is read from.
    features
        Whether to read the context and the actions' features (ids are always read).

    Raises
    ------
    LogFormatError
        From :meth:`read` and :meth:`line`, naming the field and the rule; its
        ``reason`` is one of ``invalid_json``, ``missing_field``, ``bad_probability``,
        ``ragged``, ``bad_chosen``, ``bad_reward``, ``bad_actions``, ``bad_features``,
        ``bad_event_id``, ``unsupported``.

    Examples
    --------
    >>> reader = DSJSONReader()
    >>> row = reader.line(
    ...     b'{"_label_cost": -1, "_labelIndex": 0, "a": [1, 2], "p": [0.9, 0.1],'
    ...     b' "c": {"cu": {"x": 2}, "_multi": [{"id": {"id=a%3A1": 1}}, {"_tag": "b"}]}}'
    ... )
    >>> row.action_ids, row.probabilities, row.reward, row.context, row.ours
    (['a:1', 'b'], [0.9, 0.1], 1.0, {'cu': {'x': 2}}, False)
    >>> reader.line(b'{"_label_cost": 0, "c": {"_multi": []}}')
    Traceback (most recent call last):
    ...
    policies.errors.LogFormatError: `c._multi` must list the offered actions (at least one), got []
    """

    def __init__(self, *, cost_key: str = "_label_cost", features: bool = True) -> None:
        self.cost_key = cost_key
        self.features = features
        self._seen: dict[tuple[str, bool], tuple[dict[str, Any], _Features]] = {}
        self._known: dict[str, tuple[str, dict[str, Any], _Features]] = {}

    def line(self, line: bytes | str) -> LogRow | None:
        """Decode one line (orjson) and :meth:`read` it."""
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _bad("invalid_json", f"the line is not valid JSON: {exc}") from None
        return self.read(record)

    def read(self, record: Any) -> LogRow | None:  # noqa: PLR0912, PLR0915  (one flat pass)
        """Read one decoded line; None for a ``_skipLearn`` row."""
        if type(record) is not dict:
            msg = f"a DSJSON line must hold a JSON object, got {_show(record)}"
            raise _bad("invalid_json", msg)
        if "_outcomes" in record:
            msg = (
                "`_outcomes` marks a multi-slot (CCB or slates) decision, which is not "
                "supported: only single-slot contextual bandit rows are"
            )
            raise _bad("unsupported", msg)
        if record.get("_skipLearn") is True:
            return None
        cost_key = self.cost_key
        cost = record.get(cost_key)
        if cost is None:
            msg = (
                f"`{cost_key}` is missing: every row needs the cost of its choice (reward = -cost)"
            )
            raise _bad("missing_field", msg)
        if not _is_number(cost) or not math.isfinite(cost):
            raise _bad("bad_reward", f"`{cost_key}` must be a finite number, got {_show(cost)}")
        shared = record.get("c")
        if type(shared) is not dict:
            reason = "missing_field" if shared is None else "bad_actions"
            msg = f"`c` must be an object with the actions under `_multi`, got {_show(shared)}"
            raise _bad(reason, msg)
        multi = shared.get("_multi")
        if type(multi) is not list or not multi:
            msg = f"`c._multi` must list the offered actions (at least one), got {_show(multi)}"
            raise _bad("bad_actions", msg)
        n = len(multi)
        order = record.get("a")
        ordered = record.get("p")
        if order is None or ordered is None:
            missing = "a" if order is None else "p"
            msg = f"`{missing}` is missing: every row needs `a` and `p`, the logged distribution"
            raise _bad("missing_field", msg)
        if type(order) is not list:
            raise _bad("bad_actions", f"`a` must be a list of action numbers, got {_show(order)}")
        if type(ordered) is not list:
            msg = f"`p` must be a list of probabilities, got {_show(ordered)}"
            raise _bad("bad_probability", msg)
        if len(order) != n:
            msg = (
                f"`a` must list each of the {n} actions in `c._multi` once, "
                f"got {len(order)} entries"
            )
            raise _bad("ragged", msg)
        if len(ordered) != n:
            msg = f"`p` must hold one probability per action ({n}), got {len(ordered)}"
            raise _bad("ragged", msg)
        probabilities = [0.0] * n
        base, last = ACTION_BASE, n - 1 + ACTION_BASE
        for k in range(n):
            number = order[k]
            probability = ordered[k]
            if type(number) is not int or not base <= number <= last:
                msg = (
                    f"`a` must hold action numbers in [{base}, {last}], "
                    f"got a[{k}] = {_show(number)}"
                )
                raise _bad("bad_actions", msg)
            if not _is_number(probability) or not 0.0 < probability <= 1.0:
                msg = f"`p` must hold probabilities in (0, 1], got p[{k}] = {_show(probability)}"
                raise _bad("bad_probability", msg)
            if probabilities[number - base]:
                raise _bad("bad_actions", f"`a` must list each action once, got {number} twice")
            probabilities[number - base] = float(probability)
        total = math.fsum(probabilities)
        if abs(total - 1.0) > SUM_TOLERANCE_READ:
            msg = f"`p` must sum to 1 within {SUM_TOLERANCE_READ}, got {total!r}"
            raise _bad("bad_probability", msg)
        chosen = record.get("_labelIndex")
        label_action = record.get("_label_Action")
        if (
            type(chosen) is not int
            or not 0 <= chosen < n
            or (
                label_action is not None
                and (type(label_action) is not int or label_action != chosen + ACTION_BASE)
            )
        ):
            chosen = _chosen(record, n)  # says what is wrong, or reads `_label_Action`
        propensity = probabilities[chosen]
        label_probability = record.get("_label_probability")
        if label_probability is not None and (
            not _is_number(label_probability)
            or (
                abs(label_probability - propensity) > PROPENSITY_TOLERANCE
                and not _same_single(label_probability, propensity)
            )
        ):
            msg = (
                f"`_label_probability` ({_show(label_probability)}) must equal the chosen "
                f"action's entry of `p` ({propensity!r})"
            )
            raise _bad("bad_probability", msg)
        event_id = record.get("EventId")
        if event_id is not None and type(event_id) is not str:
            raise _bad("bad_event_id", f"`EventId` must be a string, got {_show(event_id)}")
        extra = record.get(_HIDDEN_KEY)
        if extra is None:
            extra = {}
        elif type(extra) is not dict:
            raise _bad("unsupported", f"`{_HIDDEN_KEY}` must be an object, got {_show(extra)}")
        stamp = record.get("Timestamp")
        ids, ours, context, action_features = self._actions(shared, multi)
        return LogRow(
            chosen,
            probabilities,
            cost_to_reward(float(cost)),
            event_id,
            ids,
            context,
            action_features,
            order,
            stamp if type(stamp) is str else None,
            extra,
            ours,
        )

    def rows(self, line: bytes | str) -> list[LogRow]:
        """Decode one line and read every decision in it: a row, or one a slot (CCB).

        A ``_skipLearn`` row gives none; a multi-slot line its slots' rows in slot
        order (:meth:`read_slot`).
        """
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _bad("invalid_json", f"the line is not valid JSON: {exc}") from None
        if type(record) is dict and "_outcomes" in record:
            return self._slot_rows(record)
        row = self.read(record)
        return [] if row is None else [row]

    def read_slots(self, record: Any) -> SlotsRow:
        """Read a decoded multi-slot (CCB) line whole: its actions, and every slot's row.

        Each slot's row is :meth:`read_slot`'s, with its ``include`` and ``slot_id``.

        Raises
        ------
        LogFormatError
            Naming the field and the rule, as :meth:`read_slot`.

        Examples
        --------
        >>> from datetime import UTC, datetime
        >>> line = dsjson_line(ccb_dsjson_record(
        ...     {"u": {"x": 1.0}}, [Action("a"), Action("b"), Action("c")],
        ...     [LoggedSlot("top", {"size": "L"}, [1, 2], [0.25, 0.75], 2, 1.0),
        ...      LoggedSlot("side", {}, [0, 1], [0.5, 0.5], 1, 0.0)],
        ...     event_id="e1", timestamp=datetime(2026, 11, 27, tzinfo=UTC)))
        >>> read = DSJSONReader().read_slots(orjson.loads(line))
        >>> read.action_ids, read.context
        (['a', 'b', 'c'], {'u': {'x': 1.0}})
        >>> [(s.slot_id, s.include, s.include[s.chosen], s.reward) for s in read.slots]
        [('top', [1, 2], 2, 1.0), ('side', [0, 1], 1, 0.0)]
        """
        slots = self._slot_rows(record)
        shared: dict[str, Any] = record["c"]
        ids, ours, context, action_features = self._actions(shared, shared["_multi"])
        return SlotsRow(slots[0].event_id, ids, context, action_features, slots, ours)

    def _slot_rows(self, record: Any) -> list[LogRow]:
        """Return :meth:`read_slot`'s row of each slot of a multi-slot line, in order."""
        outcomes = record.get("_outcomes") if type(record) is dict else None
        count = len(outcomes) if type(outcomes) is list else 0
        rows = [self.read_slot(record, number) for number in range(max(count, 1))]
        return [row for row in rows if row is not None]

    def read_slot(self, record: Any, slot: str | int) -> LogRow | None:
        """Read one slot of a decoded multi-slot (CCB) line, as the decision that slot was.

        The row is over the actions the slot could choose (``_inc``; else, as VW reads
        a line without it, the actions the slots before it left), in that order; its
        context is the shared one with the slot's features in the namespace
        :data:`~policies.vwtext.SLOT_NAMESPACE` (what :class:`policies.vwccb.VWCCBPolicy`
        sees: ours as written, another writer's namespaced ``<namespace>.<name>``), and
        its distribution, choice (``_a[0]``) and reward (``-_label_cost``) are the
        slot's outcome's. What single-slot rows share (``EventId``, ``Timestamp``,
        ``_sb``) is the line's.

        Parameters
        ----------
        record
            The decoded line (its ``_outcomes`` one a slot, ``c._slots`` alike).
        slot
            The slot's ``_id``, or its 0-based number.

        Returns
        -------
        LogRow or None
            None when the line has no such slot.

        Raises
        ------
        LogFormatError
            Naming the field and the rule, as :meth:`read`.

        Examples
        --------
        >>> from datetime import UTC, datetime
        >>> line = dsjson_line(ccb_dsjson_record(
        ...     {"u": {"x": 1.0}}, [Action("a"), Action("b"), Action("c")],
        ...     [LoggedSlot("top", {"size": "L"}, [1, 2], [0.25, 0.75], 2, 1.0),
        ...      LoggedSlot("side", {}, [0, 1], [0.5, 0.5], 1, 0.0)],
        ...     event_id="e1", timestamp=datetime(2026, 11, 27, tzinfo=UTC)))
        >>> row = DSJSONReader().read_slot(orjson.loads(line), "top")
        >>> row.action_ids, row.probabilities, row.chosen, row.reward, row.context
        (['b', 'c'], [0.25, 0.75], 1, 1.0, {'u': {'x': 1.0}, '_slot': {'size': 'L'}})
        >>> DSJSONReader().read_slot(orjson.loads(line), 1).chosen_action_id
        'b'
        """
        if type(record) is not dict:
            msg = f"a DSJSON line must hold a JSON object, got {_show(record)}"
            raise _bad("invalid_json", msg)
        outcomes = record.get("_outcomes")
        shared = record.get("c")
        if type(outcomes) is not list or not outcomes or type(shared) is not dict:
            msg = "a multi-slot line needs `_outcomes` (one a slot) and `c`"
            raise _bad("missing_field", msg)
        multi = shared.get("_multi")
        slots = shared.get("_slots")
        if type(multi) is not list or not multi:
            msg = f"`c._multi` must list the offered actions (at least one), got {_show(multi)}"
            raise _bad("bad_actions", msg)
        if type(slots) is not list or len(slots) != len(outcomes):
            msg = f"`c._slots` must list one slot per outcome ({len(outcomes)})"
            raise _bad("ragged", msg)
        n = len(multi)
        taken: set[int] = set()
        for number, (outcome, described) in enumerate(zip(outcomes, slots, strict=True)):
            if type(outcome) is not dict or type(described) is not dict:
                msg = f"`_outcomes[{number}]` and `c._slots[{number}]` must be objects"
                raise _bad("unsupported", msg)
            include, chosen, probabilities = _slot_outcome(outcome, described, n, taken, number)
            taken.add(include[chosen])
            wanted = number if isinstance(slot, int) else outcome.get("_id", described.get("_id"))
            if wanted != slot:
                continue
            row = self._slot_row(
                record, (described, outcome), include=include, chosen=chosen,
                probabilities=probabilities,
            )  # fmt: skip
            row.position = number
            return row
        return None

    def _slot_row(
        self,
        record: dict[str, Any],
        slot: tuple[dict[str, Any], dict[str, Any]],
        *,
        include: list[int],
        chosen: int,
        probabilities: list[float],
    ) -> LogRow:
        """Build the row of one slot (`slot`: its described and outcome objects)."""
        described, outcome = slot
        shared: dict[str, Any] = record["c"]
        multi: list[Any] = shared["_multi"]
        cost: Any = outcome.get(self.cost_key, outcome.get("_label_cost"))
        if not _is_number(cost) or not math.isfinite(cost):
            msg = f"`{self.cost_key}` of a slot must be a finite number, got {_show(cost)}"
            raise _bad("bad_reward", msg)
        ids, ours, context, action_features = self._actions(shared, [multi[i] for i in include])
        if context is not None:
            slot_features: dict[str, Any] = {}
            for key, value in described.items():
                if key[:1] == "_":
                    continue
                if ours:
                    slot_features.update(_namespace(key, value))
                else:
                    for namespace, features in _vw_features({key: value}).items():
                        prefix = "" if namespace == _DEFAULT_NAMESPACE else f"{namespace}."
                        slot_features.update({prefix + k: v for k, v in features.items()})
            if slot_features:
                context = {**context, SLOT_NAMESPACE: slot_features}
        event_id = record.get("EventId")
        if event_id is not None and type(event_id) is not str:
            raise _bad("bad_event_id", f"`EventId` must be a string, got {_show(event_id)}")
        extra = record.get(_HIDDEN_KEY)
        stamp = record.get("Timestamp")
        position = {action: k for k, action in enumerate(include)}
        slot_id = outcome.get("_id", described.get("_id"))
        return LogRow(
            chosen,
            probabilities,
            cost_to_reward(float(cost)),
            event_id,
            ids,
            context,
            action_features,
            [position[a] + ACTION_BASE for a in outcome["_a"]],
            stamp if type(stamp) is str else None,
            extra if type(extra) is dict else {},
            ours,
            include,
            slot_id if type(slot_id) is str else None,
        )

    def _actions(
        self, shared: dict[str, Any], multi: list[Any]
    ) -> tuple[list[str] | None, bool, _Features | None, list[_Features] | None]:
        """Read the action ids and (if asked) the features, in our layout or VW's."""
        offered = self._offered(multi)
        if offered is not None:
            ids_read, features_read = offered
            if len(set(ids_read)) != len(ids_read):
                msg = f"the offered action ids must be distinct, got {_show(ids_read)}"
                raise _bad("bad_actions", msg)
            context = self._context(shared, ours=True) if self.features else None
            return ids_read, True, context, features_read if self.features else None
        ids, ours = _action_ids(multi)
        known: list[str] | None = None
        if None not in ids:
            known = [action_id for action_id in ids if action_id is not None]
            if len(set(known)) != len(known):
                msg = f"the offered action ids must be distinct, got {_show(known)}"
                raise _bad("bad_actions", msg)
        if not self.features:
            if ours:
                self._remember(multi, ids, None)
            return known, ours, None, None
        seen = self._seen
        action_features: list[_Features] = []
        for k, item in enumerate(multi):
            action_id = ids[k]
            last = None if action_id is None else seen.get((action_id, ours))
            if last is not None and last[0] == item:
                action_features.append(last[1])
                continue
            if ours:
                read = {
                    _namespace_name(key, ACTION_PREFIX, f"c._multi[{k}]"): _namespace(key, value)
                    for key, value in item.items()
                    if key != ID_NAMESPACE and key[:1] != "_"
                }
            else:
                read = _vw_features(item)
            if action_id is not None:
                seen[action_id, ours] = (item, read)
            action_features.append(read)
        if ours:
            self._remember(multi, ids, action_features)
        return known, ours, self._context(shared, ours=ours), action_features

    def _offered(self, multi: list[Any]) -> tuple[list[str], list[_Features]] | None:
        """Return the ids and features of actions all read before, as they were; else None.

        An action of our layout is remembered by the key of its id namespace
        (``id=<escaped id>``) with the object it was read from: the same object again
        (catalogue items repeat from row to row) gives the same id and features
        without reading them anew. Without features, the key alone gives the id.
        """
        known = self._known
        try:  # a few calls into C for the whole row: these loops run for every row read
            namespaces = list(map(_ID_OF, multi))
            hits: list[Any] = list(map(known.get, map(next, map(iter, namespaces))))
        except (KeyError, TypeError):  # an action without an id namespace, or not an object
            return None
        if None in hits:
            return None
        if self.features:
            if list(map(_ITEM_OF, hits)) != multi:  # each the very object read before
                return None
        elif set(map(type, namespaces)) != _DICT or set(map(len, namespaces)) != _ONE:
            return None
        return list(map(_ID_OF_HIT, hits)), list(map(_FEATURES_OF_HIT, hits))

    def _remember(
        self, multi: list[Any], ids: list[str | None], features: list[_Features] | None
    ) -> None:
        """Remember the actions of our layout just read, for :meth:`_offered` (a bounded number)."""
        known = self._known
        for k, item in enumerate(multi):
            action_id = ids[k]
            if action_id is None or len(known) >= _KNOWN_ACTIONS:
                continue
            for key in item[ID_NAMESPACE]:
                known[key] = (action_id, item, {} if features is None else features[k])

    def _context(self, shared: dict[str, Any], *, ours: bool) -> _Features:
        """Read the context: the shared namespaces, in our layout or as VW groups them."""
        if ours:
            return {
                _namespace_name(key, CONTEXT_PREFIX, "c"): _namespace(key, value)
                for key, value in shared.items()
                if key[:1] != "_"
            }
        return _vw_features(shared)


def _slot_outcome(
    outcome: dict[str, Any], described: dict[str, Any], n: int, taken: set[int], number: int
) -> tuple[list[int], int, list[float]]:
    """Read a slot's actions (include order), its choice among them and its distribution."""
    order = outcome.get("_a")
    ordered = outcome.get("_p")
    where = f"_outcomes[{number}]"
    if type(order) is not list or type(ordered) is not list or len(order) != len(ordered):
        raise _bad("ragged", f"`{where}._a` and `._p` must be lists of one length")
    if not order or any(type(a) is not int or not 0 <= a < n for a in order):
        raise _bad("bad_actions", f"`{where}._a` must hold action indices in [0, {n})")
    if len(set(order)) != len(order) or taken & set(order):
        msg = f"`{where}._a` must list actions once, none chosen by a slot before it"
        raise _bad("bad_actions", msg)
    if not all(_is_number(p) and 0.0 < p <= 1.0 for p in ordered):
        raise _bad("bad_probability", f"`{where}._p` must hold probabilities in (0, 1]")
    if abs(math.fsum(ordered) - 1.0) > SUM_TOLERANCE_READ:
        raise _bad("bad_probability", f"`{where}._p` must sum to 1 within {SUM_TOLERANCE_READ}")
    included = described.get("_inc")
    if included is None:
        include = [a for a in range(n) if a in set(order)]
    elif type(included) is list and sorted(included) == sorted(order):
        include = list(included)
    else:
        msg = f"`c._slots[{number}]._inc` must list the actions of `{where}._a`"
        raise _bad("bad_actions", msg)
    by_action = dict(zip(order, map(float, ordered), strict=True))
    return include, include.index(order[0]), [by_action[a] for a in include]


_KNOWN_ACTIONS = 100_000
"""How many actions a :class:`DSJSONReader` remembers by the key of their id namespace."""
_ID_OF = operator.itemgetter(ID_NAMESPACE)
_ID_OF_HIT, _ITEM_OF, _FEATURES_OF_HIT = (operator.itemgetter(k) for k in range(3))
_DICT, _ONE = {dict}, {1}


def _chosen(record: dict[str, Any], n: int) -> int:
    """Return the 0-based chosen index: ``_labelIndex`` or ``_label_Action`` (they must agree)."""
    index = record.get("_labelIndex")
    label_action = record.get("_label_Action")
    if index is None and label_action is None:
        msg = "`_labelIndex` and `_label_Action` are missing: every row needs its chosen action"
        raise _bad("missing_field", msg)
    if index is not None and type(index) is not int:
        raise _bad("bad_chosen", f"`_labelIndex` must be an integer, got {_show(index)}")
    if label_action is not None:
        if type(label_action) is not int:
            msg = f"`_label_Action` must be an integer, got {_show(label_action)}"
            raise _bad("bad_chosen", msg)
        if index is not None and label_action != to_vw_action(index):
            msg = (
                f"`_label_Action` ({label_action}) must equal `_labelIndex` + {ACTION_BASE} "
                f"({index} + {ACTION_BASE})"
            )
            raise _bad("bad_chosen", msg)
    if index is not None:
        if not 0 <= index < n:
            msg = f"`_labelIndex` must be in [0, {n}) for {n} actions, got {index}"
            raise _bad("bad_chosen", msg)
        return int(index)
    assert label_action is not None  # one of the two is present, checked above
    if not ACTION_BASE <= label_action < n + ACTION_BASE:
        msg = (
            f"`_label_Action` must be in [{ACTION_BASE}, {n - 1 + ACTION_BASE}] for {n} "
            f"actions, got {label_action}"
        )
        raise _bad("bad_chosen", msg)
    return int(label_action) - ACTION_BASE


def _action_ids(multi: list[Any]) -> tuple[list[str | None], bool]:
    """Return each action's id (None if it has none), and whether all are in our layout."""
    ids: list[str | None] = []
    append = ids.append
    ours = True
    start = _ID_KEY_START
    for k, item in enumerate(multi):
        if type(item) is not dict:
            raise _bad("bad_actions", f"`c._multi[{k}]` must be an object, got {_show(item)}")
        # read_action_id, written out: this loop runs for every action of every row read.
        namespace = item.get(ID_NAMESPACE)
        if type(namespace) is dict and len(namespace) == 1:
            for key in namespace:
                if key[:3] == start:
                    text = key[3:]
                    append(unescape(text) if "%" in text else text)
                    break
            else:
                namespace = None
            if namespace is not None:
                continue
        ours = False
        tag = item.get("_tag")
        if type(tag) is str:
            append(tag)
        elif type(item.get("id")) is str:
            append(item["id"])
        else:
            append(None)
    return ids, ours


def _namespace_name(key: str, prefix: str, where: str) -> str:
    """Return the namespace `key` stands for: without `prefix`, unescaped."""
    if key[:1] != prefix or len(key) == 1:
        raise _bad("bad_features", f"namespace {key!r} in `{where}` must start with {prefix!r}")
    name = key[1:]
    return unescape(name) if "%" in name else name


def _namespace(where: str, value: Any) -> dict[str, Any]:
    """Read one namespace of our layout (:func:`dsjson_record`) back."""
    if type(value) is not dict:
        raise _bad("bad_features", f"namespace {where!r} must be an object, got {_show(value)}")
    features: dict[str, Any] = {}
    for key, number in value.items():
        kind = type(number)
        if (kind is int or kind is float) and key[:1] != "_":  # the common case
            name, text = _feature_key(key)
            features[name] = number if text is None else text
            continue
        if key[:1] == "_":
            if key == _TEXT_KEY:
                for token in str(number).split():
                    name, _, text = token.partition("=")
                    features[unescape(name)] = unescape(text)
            elif key == _HIDDEN_KEY and type(number) is dict:
                for name, hidden in number.items():
                    if not _is_number(hidden):
                        msg = f"feature {where}.{name} must be a number, got {_show(hidden)}"
                        raise _bad("bad_features", msg)
                    features[name] = hidden
            continue  # else a field of VW's, or of another writer: not a feature
        msg = f"feature {where}.{key} must be a number, got {_show(number)}"
        raise _bad("bad_features", msg)
    return features


@functools.lru_cache(maxsize=2**16)
def _feature_key(key: str) -> tuple[str, str | None]:
    """Return the feature a key of a namespace names: ``name=text`` (a string), or a number's.

    Examples
    --------
    >>> _feature_key("tier=gold"), _feature_key("age"), _feature_key("size=extra%20large")
    (('tier', 'gold'), ('age', None), ('size', 'extra large'))
    """
    if "=" in key:
        name, _, text = key.partition("=")
        return unescape(name) if "%" in name else name, unescape(text) if "%" in text else text
    return unescape(key) if "%" in key else key, None


def _vw_features(item: dict[str, Any]) -> _Features:
    """Group another writer's JSON features into namespaces as VW's JSON parser does."""
    features: _Features = {}
    for key, value in item.items():
        if key[:1] != "_":
            _add_vw_value(features, _DEFAULT_NAMESPACE, key, value)
    return features


def _add_vw_value(features: _Features, namespace: str, name: str, value: Any) -> None:
    kind = type(value)
    if kind is str or kind is int or kind is float:
        features.setdefault(namespace, {})[name] = value
    elif kind is bool:
        if value:
            features.setdefault(namespace, {})[name] = 1
    elif kind is dict:
        features.setdefault(name, {})
        for key, inner in value.items():
            if key[:1] != "_":
                _add_vw_value(features, name, key, inner)
    elif kind is list:
        features.setdefault(name, {})
        for position, inner in enumerate(value):
            if type(inner) is dict:
                for key, deeper in inner.items():
                    if key[:1] != "_":
                        _add_vw_value(features, name, key, deeper)
            else:
                _add_vw_value(features, name, str(position), inner)
    # null: no feature


def read_file(
    path: Path,
    *,
    features: bool = False,
    skip_bad: bool = False,
    containing: bytes | None = None,
) -> Iterator[LogRow]:
    r"""Read every decision in one log file, in order: each slot of a multi-slot line.

    Parameters
    ----------
    path
        A DSJSON file.
    features
        Read the features too (:class:`DSJSONReader`).
    skip_bad
        Leave out the lines that break a rule (a line still being written, say) instead
        of raising.
    containing
        Read only the lines holding these bytes (a fast filter; the rest are not decoded).

    Raises
    ------
    LogFormatError
        Unless `skip_bad`, at the first bad line: ``file:line: `field` rule``.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "log.dsjson"
    >>> _ = path.write_bytes(b'{"_label_cost": 0, "_labelIndex": 0, "a": [1], "p": [2],'
    ...                      b' "c": {"_multi": [{"id": {"id=x": 1}}]}}\n')
    >>> list(read_file(path))
    Traceback (most recent call last):
    ...
    policies.errors.LogFormatError: ...:1: `p` must hold probabilities in (0, 1], got p[0] = 2
    >>> list(read_file(path, skip_bad=True))
    []
    >>> folder.cleanup()
    """
    reader = DSJSONReader(features=features)
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if (containing is not None and containing not in line) or not line.strip():
                continue
            try:
                rows = reader.rows(line)
            except LogFormatError as exc:
                if skip_bad:
                    continue
                raise LogFormatError(f"{path}:{number}: {exc}", reason=exc.reason) from None
            yield from rows


def read_event_ids(path: Path) -> list[str]:
    r"""Return the ``EventId`` of every line of a log file, in order: a cheap pass.

    The lines are decoded but not checked (what :class:`DSJSONReader` checks): for a
    writer remembering what its files already hold. A line that is not JSON (one being
    written) or has no string ``EventId`` is passed over.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "log.dsjson"
    >>> _ = path.write_bytes(b'{"EventId": "e1"}\n{"EventId": 2}\n{"EventId": "e3"}\n{"Ev')
    >>> read_event_ids(path)
    ['e1', 'e3']
    >>> folder.cleanup()
    """
    ids: list[str] = []
    with path.open("rb") as lines:
        for line in lines:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            event_id = record.get("EventId") if type(record) is dict else None
            if type(event_id) is str:
                ids.append(event_id)
    return ids


@dataclass(frozen=True, slots=True)
class DSJSONRecord:
    """One decision read back from a DSJSON log line, in streambandit's conventions.

    Attributes
    ----------
    event_id, timestamp
        The decision's event id and when it was made (UTC).
    context, actions
        The features the policy saw, as :func:`dsjson_record` was given them.
    chosen
        0-based offer-order index of the chosen action.
    probabilities
        Probability of every action, in offer order.
    ranking
        0-based offer-order indices in rank order, the chosen action first.
    reward
        The reward learned (``-_label_cost``).
    extra
        Our own fields, from the top-level ``"_sb"`` key (empty when absent).
    """

    event_id: str
    timestamp: datetime
    context: dict[str, dict[str, FeatureValue]]
    actions: list[Action]
    chosen: int
    probabilities: tuple[float, ...]
    ranking: tuple[int, ...]
    reward: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def probability(self) -> float:
        """The logged probability of the chosen action."""
        return self.probabilities[self.chosen]


def parse_dsjson_record(record: Mapping[str, Any]) -> DSJSONRecord:
    """Read back one object written by :func:`dsjson_record` (``json.loads`` of a line).

    It is :class:`DSJSONReader`'s reading, with what our own records always hold
    required too: an ``EventId``, a ``Timestamp`` as :func:`dsjson_record` writes it,
    and every action's id in our layout.

    Parameters
    ----------
    record
        The decoded JSON object.

    Returns
    -------
    DSJSONRecord
        0-based indices, probabilities in offer order, the reward (``-_label_cost``).

    Raises
    ------
    LogFormatError
        If a field is missing, of the wrong type, or disagrees with another; the
        message names it.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> line = dsjson_record(
    ...     {"user": {"tier": "gold"}},
    ...     [Action("x"), Action("y", {"item": {"size": 2}})],
    ...     chosen=1,
    ...     probabilities=[0.75, 0.25],
    ...     reward=1.0,
    ...     event_id="evt-1",
    ...     timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
    ... )
    >>> back = parse_dsjson_record(line)
    >>> back.chosen, back.probability, back.reward, back.probabilities
    (1, 0.25, 1.0, (0.75, 0.25))
    >>> back.context, back.actions[1]
    ({'user': {'tier': 'gold'}}, Action(id='y', features={'item': {'size': 2}}))
    """
    row = DSJSONReader(features=True).read(dict(record) if type(record) is not dict else record)
    if row is None:
        msg = "`_skipLearn` marks a decision that was not learned: not one of our records"
        raise _bad("unsupported", msg)
    for key in ("EventId", "Timestamp"):
        if key not in record:
            raise _bad("missing_field", f"DSJSON record lacks the field {key!r}")
    stamp = row.timestamp
    if row.event_id is None or stamp is None:
        raise _bad("bad_event_id", "DSJSON `EventId` and `Timestamp` must be strings")
    if not row.ours or row.action_ids is None:
        multi = record["c"]["_multi"]
        where = next(
            k for k, item in enumerate(multi) if read_action_id(item.get(ID_NAMESPACE)) is None
        )
        msg = (
            f"DSJSON `c._multi[{where}]` must hold the action id as namespace "
            f'`{ID_NAMESPACE}`: {{"{_ID_KEY_START}<id>": 1}}, '
            f"got {_show(multi[where].get(ID_NAMESPACE))}"
        )
        raise _bad("bad_actions", msg)
    try:
        timestamp = datetime.strptime(stamp, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        msg = f"DSJSON `Timestamp` must look like 2026-11-27T23:15:00.000000Z, got {stamp!r}"
        raise _bad("bad_event_id", msg) from None
    assert row.context is not None  # (features=True)
    assert row.action_features is not None
    return DSJSONRecord(
        event_id=row.event_id,
        timestamp=timestamp,
        context=row.context,
        actions=[
            Action(action_id, features)
            for action_id, features in zip(row.action_ids, row.action_features, strict=True)
        ],
        chosen=row.chosen,
        probabilities=tuple(row.probabilities),
        ranking=row.ranking,
        reward=row.reward,
        extra=dict(row.extra),
    )
