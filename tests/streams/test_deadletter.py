"""Dead letters: what does not decode is sent on with the reason, and counted."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import TypeAdapter
from redis.asyncio import Redis

from bandit.service.state import StateStore
from bandit.wire.schemas import BehaviourEvent, DeadLetter, RewardReported, RewardsRecord
from streams.deadletter import (
    DEAD_LETTER_COUNTERS,
    DeadLetters,
    RawRecord,
    decode_record,
    make_dead_letter,
)

REWARD = TypeAdapter(RewardReported)


def _record(value: bytes | None, *, key: bytes | None = b"evt-1", offset: int = 7) -> RawRecord:
    return RawRecord("sb.rewards", 2, offset, key, value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"event_id": "evt-1", "reward": 1', "(record): Invalid JSON: EOF while parsing"),
        (b"\xff\xfe", "(record): Invalid JSON"),
        (
            b'{"event_id": "evt-1", "reward": 1, "extra": 2}',
            "extra: Extra inputs are not permitted [extra_forbidden]",
        ),
        (b'{"reward": 1}', "event_id: Field required [missing]"),
        (
            b'{"event_id": "evt-1", "reward": NaN}',
            "reward: Input should be a finite number [finite_number]",
        ),
        (None, "(record): the record has no value [missing_value]"),
    ],
)
def test_records_that_do_not_decode_become_dead_letters_with_the_reason(
    value: bytes | None, reason: str
) -> None:
    """The reason names the field and the rule."""
    letter = decode_record(REWARD, _record(value))
    assert isinstance(letter, DeadLetter)
    assert letter.reason.startswith(reason), letter.reason
    assert (letter.source_topic, letter.partition, letter.offset, letter.key) == (
        "sb.rewards",
        2,
        7,
        "evt-1",
    )


def test_valid_records_decode() -> None:
    """A valid record comes back as the model, discriminated unions included."""
    value = b'{"event_id": "evt-1", "type": "reward", "reward": 0.5}'
    decoded = decode_record(TypeAdapter(RewardsRecord), _record(value))
    assert isinstance(decoded, RewardReported)
    assert decoded.reward == 0.5


def test_reasons_do_not_echo_the_input() -> None:
    """A raw value (here a would-be user id) is named by its field, never copied."""
    value = (
        b'{"kind": "view", "user_id": "alice@example.com", "session_id": "s1", '
        b'"device": {"type": "phone", "os": "iOS"}}'
    )
    letter = decode_record(TypeAdapter(BehaviourEvent), _record(value))
    assert isinstance(letter, DeadLetter)
    assert "device.type" in letter.reason
    assert "alice" not in letter.reason
    assert "phone" not in letter.reason


def test_oversized_records_are_refused_unread_and_kept_cut_to_64_kib() -> None:
    """Records over the limit are dead-lettered without parsing; their text is cut."""
    big = b'{"event_id": "' + b"x" * 200_000 + b'"}'
    letter = decode_record(REWARD, _record(big), max_bytes=100_000)
    assert isinstance(letter, DeadLetter)
    assert letter.reason == (
        f"(record): records must be at most 100000 bytes, got {len(big)} [record_too_large]"
    )
    assert len(letter.value) == 65_536


def test_a_redelivered_record_gives_the_same_dead_letter_id() -> None:
    """The dead letter's id comes from topic, partition and offset."""
    one = make_dead_letter(_record(b"x"), "r")
    assert one.event_id == make_dead_letter(_record(b"y"), "r").event_id
    assert one.event_id != make_dead_letter(_record(b"x", offset=8), "r").event_id


def test_dead_letters_are_sent_keyed_by_the_source_key_and_counted(redis_url: str) -> None:
    """The helper produces the dead letter, counts it in Redis, and returns None."""
    sent: list[tuple[bytes | None, bytes]] = []

    async def send(key: bytes | None, value: bytes) -> None:
        sent.append((key, value))

    async def main() -> None:
        client = Redis.from_url(redis_url)
        store = StateStore(client, prefix=f"t{uuid.uuid4().hex[:12]}")
        try:
            letters = DeadLetters(send, store)
            good = await letters.decode(REWARD, _record(b'{"event_id": "e", "reward": 1}'))
            bad = await letters.decode(REWARD, _record(b"nope", key=b"k"))
            await letters.reject(_record(b"{}", key=None), "policy 'p' cannot learn it")
            assert isinstance(good, RewardReported)
            assert bad is None
            assert [key for key, _ in sent] == [b"k", None]
            letter = DeadLetter.model_validate_json(sent[0][1])
            assert (letter.value, letter.key) == ("nope", "k")
            assert DeadLetter.model_validate_json(sent[1][1]).reason.startswith("policy 'p'")
            assert letters.counts == {"sb.rewards": 2}
            assert await store.counters(DEAD_LETTER_COUNTERS) == {
                "dead_letters": 2,
                "dead_letters.sb.rewards": 2,
            }
        finally:
            await client.aclose()

    asyncio.run(main())
