"""Dead letters: decode a record, or send it to ``dead-letters`` with why.

Every agent decodes its records through :class:`DeadLetters`: records that come from
outside the service (``events``, ``rewards``: apps may produce to them) are validated
with their schema (:func:`decode_record`); records of the service's own topics
(``decisions``, ``training``) are read for their schema version and structure
(:func:`read_record`, :mod:`streams.trusted`). A record that is not JSON,
breaks a rule of its schema, or is larger than allowed becomes a
:class:`~bandit.wire.schemas.DeadLetter` on the ``<prefix>.dead-letters`` topic (keyed by the
source key), is counted, and the agent goes on with the next record. The reason names
each field and rule (``actions.0.id: ... [id_syntax]``) without echoing the input: it is
built from ``ValidationError.errors(include_input=False)``, so a raw identifier sent by
mistake is not copied into the reason. The record itself is kept in ``value`` (as text,
cut to 64 KiB) for the operator who replays it.

Examples
--------
>>> from pydantic import TypeAdapter
>>> from bandit.wire.schemas import RewardReported
>>> record = RawRecord("sb.rewards", 0, 7, b"evt-1", b'{"event_id": "evt-1", "reward": "x"}')
>>> outcome = decode_record(TypeAdapter(RewardReported), record)
>>> isinstance(outcome, DeadLetter)
True
>>> outcome.reason
'reward: Input should be a valid number [float_type]'
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import structlog
from pydantic import ValidationError

from bandit.service.state import StateStore
from bandit.settings import Limits
from bandit.wire.schemas import LENIENT_IDS, DeadLetter
from streams.trusted import StructureError

__all__ = [
    "DEAD_LETTER_COUNTERS",
    "DEAD_LETTER_MAX_BYTES",
    "DeadLetters",
    "RawRecord",
    "decode_record",
    "describe_validation_error",
    "make_dead_letter",
    "read_record",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class JsonDecoder(Protocol[T_co]):
    """What decodes a record: a pydantic ``TypeAdapter``, say."""

    def validate_json(self, data: bytes, /, *, context: Any = None) -> T_co:
        """Validate JSON `data`, raising :class:`pydantic.ValidationError`."""
        ...


DEAD_LETTER_MAX_BYTES = 1024 * 1024
"""Records larger than this are dead-lettered without being parsed."""

DEAD_LETTER_COUNTERS = "_streams"
"""Counters name (``<prefix>:counters:_streams``) under which dead letters are counted,
as ``dead_letters`` and ``dead_letters.<source topic>``, and the decision log's deleted
files (:mod:`streams.ledger`); no policy can have it."""

_VALUE_CHARS = 65_536
_KEY_CHARS = 1024
_MAX_ERRORS_SHOWN = 10
_MAX_REASON_CHARS = 4000
_DEAD_LETTER_NAMESPACE = uuid.UUID("5b1d2f0e-8c57-4f1e-9a53-2a6c1f0d9e44")

_log = structlog.get_logger("streams.deadletter")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as consumed: where it came from, and its key and value bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def from_event(cls, event: Any) -> RawRecord:
        """Return the record of a Faust event (raw key and value serializers)."""
        message = event.message
        return cls(
            topic=str(message.topic),
            partition=int(message.partition),
            offset=int(message.offset),
            key=_as_bytes(message.key),
            value=_as_bytes(message.value),
        )


def _as_bytes(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return bytes(cast(bytearray, value))  # bytearray or memoryview


def describe_validation_error(error: ValidationError) -> str:
    """Return a one-line reason naming every broken field and rule, without the input.

    Examples
    --------
    >>> from pydantic import TypeAdapter
    >>> try:
    ...     TypeAdapter(dict[str, int]).validate_json(b'{"a": "secret"}')
    ... except ValidationError as error:
    ...     print(describe_validation_error(error))
    a: Input should be a valid integer, unable to parse string as an integer [int_parsing]
    """
    errors = error.errors(include_input=False, include_url=False)
    parts = []
    for entry in errors[:_MAX_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in entry["loc"]) or "(record)"
        parts.append(f"{where}: {entry['msg']} [{entry['type']}]")
    if len(errors) > _MAX_ERRORS_SHOWN:
        parts.append(f"... and {len(errors) - _MAX_ERRORS_SHOWN} more errors")
    reason = "; ".join(parts)
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 3] + "..."
    return reason


def make_dead_letter(record: RawRecord, reason: str) -> DeadLetter:
    """Return the dead letter of `record`.

    Its event id is derived from the record's topic, partition and offset, so a record
    dead-lettered twice (after a redelivery) gives the same id.
    """
    where = f"{record.topic}/{record.partition}/{record.offset}"
    value = b"" if record.value is None else record.value
    key = None if record.key is None else record.key.decode("utf-8", "replace")[:_KEY_CHARS]
    return DeadLetter(
        event_id=uuid.uuid5(_DEAD_LETTER_NAMESPACE, where).hex,
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        value=value[: _VALUE_CHARS * 4].decode("utf-8", "replace")[:_VALUE_CHARS],
        reason=reason,
    )


def decode_record(
    adapter: JsonDecoder[T],
    record: RawRecord,
    *,
    limits: Limits | None = None,
    max_bytes: int = DEAD_LETTER_MAX_BYTES,
) -> T | DeadLetter:
    """Decode `record`'s JSON value with `adapter`, or return its dead letter.

    Parameters
    ----------
    adapter
        The schema, e.g. ``TypeAdapter(Decision)``.
    record
        The record consumed.
    limits
        Size limits passed to the schema's validators (defaults apply when omitted).
    max_bytes
        Larger values are refused unread.

    Returns
    -------
    T or DeadLetter
        The decoded value, or the dead letter naming why it could not be decoded.
    """
    unread = _unreadable(record, max_bytes)
    if unread is not None:
        return unread
    assert record.value is not None
    # the topics carry what either surface accepted: Personalizer's ids too
    context = {"limits": limits if limits is not None else Limits(), **LENIENT_IDS}
    try:
        return adapter.validate_json(record.value, context=context)
    except ValidationError as error:
        return make_dead_letter(record, describe_validation_error(error))


def read_record(
    read: Callable[[bytes], T], record: RawRecord, *, max_bytes: int = DEAD_LETTER_MAX_BYTES
) -> T | DeadLetter:
    """Read a record of the service's own topics with `read`, or return its dead letter.

    Parameters
    ----------
    read
        Checks the schema version and structure of a record's value and returns what
        the agent reads of it (:mod:`streams.trusted`), raising
        :class:`~streams.trusted.StructureError`.
    record
        The record consumed.
    max_bytes
        Larger values are refused unread.

    Returns
    -------
    T or DeadLetter
        What `read` returned, or the dead letter with the reason naming field and rule.
    """
    unread = _unreadable(record, max_bytes)
    if unread is not None:
        return unread
    assert record.value is not None
    try:
        return read(record.value)
    except StructureError as error:
        return make_dead_letter(record, error.reason)


def _unreadable(record: RawRecord, max_bytes: int) -> DeadLetter | None:
    """Return the dead letter of a record without a value or too large to read, or None."""
    if record.value is None:
        return make_dead_letter(record, "(record): the record has no value [missing_value]")
    if len(record.value) > max_bytes:
        reason = (
            f"(record): records must be at most {max_bytes} bytes, "
            f"got {len(record.value)} [record_too_large]"
        )
        return make_dead_letter(record, reason)
    return None


class DeadLetters:
    """Decode records for an agent; send what fails to the dead-letter topic and count it.

    Parameters
    ----------
    send
        Coroutine function ``send(key, value)`` that produces one record to the
        dead-letter topic and returns once the broker has it.
    store
        Where dead letters are counted (``counters:_streams``); not counted when None.
    limits
        Size limits the schemas validate against.
    max_bytes
        Larger records are dead-lettered unread.

    Attributes
    ----------
    counts
        Dead letters sent by this instance, by source topic.
    """

    def __init__(
        self,
        send: Callable[[bytes | None, bytes], Awaitable[object]],
        store: StateStore | None = None,
        *,
        limits: Limits | None = None,
        max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        self._send = send
        self._store = store
        self.limits = limits if limits is not None else Limits()
        self.max_bytes = max_bytes
        self.counts: Counter[str] = Counter()

    async def decode(self, adapter: JsonDecoder[T], record: RawRecord) -> T | None:
        """Return `record` decoded with `adapter`, or None after dead-lettering it."""
        outcome = decode_record(adapter, record, limits=self.limits, max_bytes=self.max_bytes)
        if isinstance(outcome, DeadLetter):
            await self.send(record, outcome)
            return None
        return outcome

    async def read(self, read: Callable[[bytes], T], record: RawRecord) -> T | None:
        """Return `record` read with `read` (:func:`read_record`); None once dead-lettered."""
        outcome = read_record(read, record, max_bytes=self.max_bytes)
        if isinstance(outcome, DeadLetter):
            await self.send(record, outcome)
            return None
        return outcome

    async def reject(self, record: RawRecord, reason: str) -> DeadLetter:
        """Dead-letter a record that decoded but could not be used, with `reason`."""
        letter = make_dead_letter(record, reason)
        await self.send(record, letter)
        return letter

    async def send(self, record: RawRecord, letter: DeadLetter) -> None:
        """Produce `letter` keyed by the source key, count it and log it."""
        await self._send(record.key, letter.model_dump_json().encode())
        self.counts[record.topic] += 1
        if self._store is not None:
            await self._store.count(
                DEAD_LETTER_COUNTERS, {"dead_letters": 1, f"dead_letters.{record.topic}": 1}
            )
        _log.warning(
            "record.dead_lettered",
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=letter.reason,
        )
