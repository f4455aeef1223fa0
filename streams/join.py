"""The decision-reward join: decisions wait in Redis for their rewards, then leave once.

Plain async functions over Redis that the join agent calls; nothing here knows Kafka
beyond partition numbers and record timestamps. A decision waits for the policy's
reward wait time; rewards (and, for deferred decisions, the activation) that reach the
join meanwhile are kept with it. Once the wait is over and every partition of
``rewards`` has been read past it (the watermarks below), :meth:`JoinStore.claim_due`
hands out a :class:`Joined`: a :class:`~bandit.wire.schemas.TrainingExample`'s JSON with the
aggregated reward (or the policy's default reward, flagged), or the reason the decision
is dropped. The agent produces it, then calls :meth:`JoinStore.complete`.

The decision's bytes are kept as they came from ``decisions`` (the API validated what
they were made of) and spliced into the training record unchanged: a decision is read
for the fields the join needs (:class:`streams.trusted.TrustedDecision`), never
validated again nor written again.

Semantics
---------
reward window
    Anchored at the decision's ``occurred_at`` (when the API decided, as in
    Personalizer's Rank call), not at its arrival here: the event's *deadline* is
    ``occurred_at + reward_wait_seconds`` whatever the consumer lag, so a re-delivered
    or replayed decision gets the same deadline and the same training example. Every
    reward that reaches the join before the event is *claimed* is aggregated; from
    the first claim on the event is frozen and later rewards are late.
watermarks
    "Late" means late: a reward appended to the ``rewards`` topic before its event's
    deadline is joined, never counted late, however far behind the consumer of its
    partition is (a worker killed with ``kill -9``, a rebalance). The join keeps a
    *watermark* per ``rewards`` partition: a time ``W[p]`` such that every record
    appended to partition ``p`` before ``W[p]`` has been handled (its effect is in
    Redis). With ``rewards_partitions`` set, an event is claimed only when

        deadline <= min(now, min over every partition p of W[p] - slack)

    (its lease expiry in place of the deadline once it was handed out), and nothing is
    claimed while a partition has no watermark yet. Watermarks only move forward, by
    two means:

    - every reward or activation handled moves its partition's watermark to the
      record's Kafka timestamp, in the same script as the record's effect, so a
      watermark never runs ahead of the state. A producer stamps a record before the
      broker appends it, so whatever was appended before that time precedes the
      record in its partition and was handled before it;
    - an idle partition gets no records, so its watermark would stop. When a due
      event is held back, :meth:`JoinStore.lagging_partitions` names the partitions
      behind, and the agent appends a *watermark marker* to each: a record carrying
      the time it was sent. Whatever was appended to the partition before that time
      precedes the marker, so once the marker is read the agent moves the watermark
      to its time (:meth:`JoinStore.advance_watermark`; records it cannot decode move
      it the same way, to their timestamp).

    ``slack`` (``settings.watermark_slack_seconds``) is how late after its timestamp a
    record may still reach the broker: the producer's batching (the API may answer a
    reward once it is queued, before the broker has it), and how far the clocks that
    stamp decisions, rewards and markers (API and worker hosts) disagree. Within it, a
    reward the API accepted before the deadline is joined. A time ahead of the Redis
    server's clock counts as that clock, so a host whose clock runs ahead
    spoils at most the moment its record is read, not the watermark from then on.
    Watermarks never rely on a partition's end offset (the local broker's ListOffsets
    can be short). The minimum is over every partition, not the event's own, because
    the join in Redis does not need a reward on its decision's partition (a reward
    from an app with another partitioner still joins). The price: while a partition
    is read by nobody (its worker dead, the group rebalancing) nothing is released;
    releases are delayed, never lost and never wrong. Without ``rewards_partitions``
    only the clock decides, for callers that hand every reward over before they claim
    (tests, replays).
aggregation
    By the policy's ``reward_aggregation`` as it was when the decision arrived:
    ``sum`` (exact, :func:`math.fsum`), ``earliest`` (smallest reward ``occurred_at``,
    ties broken by arrival order) or ``max``. With no reward, the policy's
    ``default_reward`` with ``default_reward=True`` and ``reward_count=0``.
early rewards
    A reward or activation whose decision has not arrived is kept (outcome ``early``)
    for ``orphan_ttl_seconds``. When the decision arrives they join it and are counted
    (``rewards``, ``rewards_early``, ...). Orphans that expire are removed by
    :meth:`JoinStore.claim_due` and counted under the pseudo-policy
    :attr:`JoinStore.ORPHANS` (``rewards_orphaned``, ``activations_orphaned``,
    ``rewards_duplicate``), since a reward does not name its policy.
late rewards
    A new reward for an event that is claimed, joined or dropped is counted
    (``rewards_late``) and neither stored nor learned; so is a late activation
    (``activations_late``). By the watermark rule, only a reward appended to ``rewards``
    after its deadline (give or take the slack) can be late. The done marker that
    recognises late rewards lives ``max(done_ttl_seconds, 2 * reward_wait_seconds)``;
    after that a reward for the event is treated as an orphan.
duplicates
    A decision whose event id is pending or done, and a reward whose ``reward_id`` was
    already kept for its event, change nothing and are counted
    (``decisions_duplicate``, ``rewards_duplicate``); the first value of a reward id
    wins. So does a copy of a reward or activation read again after the event is
    claimed or done (a redelivery after a crash): the event, then its done marker,
    keeps the fields it has seen, so each reward id is counted once, as joined
    (``rewards``) or late (``rewards_late``), and every copy as a duplicate.
policy scope
    A reward or activation sent with an API key scoped to some policies carries them
    (``scope``, set by the API). One whose decision is of another policy is refused:
    outcome ``forbidden``, counted (``rewards_forbidden``, ``activations_forbidden``)
    under the decision's policy, and the agent dead-letters it with the reason "key not
    allowed for policy X". One that comes before its decision waits under
    ``{field}|{scope}``, apart from the same field sent with another scope (so a record
    from the wrong key cannot shadow the right one); when the decision arrives, each
    such record whose scope allows the policy becomes the field (or a duplicate), and
    the others are deleted, counted the same way and logged (``records.refused``).
    Records without a scope (a key allowed ``*``, an app producing to the topic itself)
    act on any decision.
deferred decisions
    Learned only if activated before the event is claimed; otherwise dropped
    (``dropped_unactivated``) with their rewards.
learning consent
    A decision with ``learn=False`` leaves nothing in Redis but counters
    (``decisions``, ``not_learned``): any rewards already waiting for it are deleted
    uncounted, rewards arriving later become orphans, and a re-delivered copy is
    counted again, since nothing is kept to recognise it.
at-least-once
    :meth:`JoinStore.claim_due` moves each due event's score to ``now + lease`` in the
    same script that reads it, so a worker that crashes before :meth:`JoinStore.complete`
    loses nothing: the event is handed out again, identical, once the lease is over
    and the watermarks have passed it (the learner dedupes by event id).
    :meth:`JoinStore.complete` is idempotent and counts ``joined``, ``default_rewards``,
    ``dropped_unactivated`` and ``dropped_invalid`` once per event.
time
    Every method takes ``now`` (seconds since the epoch). When it is omitted the Redis
    server's clock is read inside the script, so all workers share one clock. Tests
    pass ``now`` and never sleep. Only retention (done markers, the backstop expiry of
    orphans) runs on Redis's own TTL clock.

Keys
----
Under the state's prefix (``sb`` by default)::

    sb:join:event:{event_id}   hash: the pending event (below); no TTL once the
                               decision is in, a backstop TTL of 2 x orphan_ttl before
    sb:join:due                sorted set: event id -> due time, or lease expiry while
                               claimed; only events whose decision arrived
    sb:join:orphans            sorted set: event id -> when its early rewards expire
    sb:join:done:{event_id}    string: the policy name, then the fields seen
                               (r:{reward_id}..., activated, late:r:{reward_id}...),
                               space-separated; TTL max(done_ttl, 2 x wait)
    sb:join:watermarks         hash: rewards partition -> its watermark (seconds since
                               the epoch)
    sb:counters:{policy}       the counters (StateStore.counters reads them)

Fields of an event hash: ``decision`` (the decision's JSON as it came), ``at`` (its
``occurred_at`` in µs since the epoch), ``policy``, ``aggregation``,
``default_reward``, ``wait`` (the settings at arrival), ``deferred`` (``1``/``0``),
``done_ttl`` (seconds), ``claimed`` (``1`` once handed out), ``seq`` (arrival
counter), ``r:{reward_id}`` (``"{seq} {occurred_at in µs} {reward!r}"`` per reward,
then `` {slot_id}`` for a slot's reward), ``slots`` (a multi-slot decision's slot ids),
``reward_count``, ``reward_duplicates``, ``activated``, ``activation_count``,
``activation_duplicates``, ``late:{field}`` for a reward or activation that came
while the event was claimed, and ``{field}|{scope}`` for a scoped record waiting for
its decision.

Every record costs O(1) commands (O(log n) on the sorted sets); ``claim_due`` works
in batches of ``limit`` and, like ``lagging_partitions``, reads one watermark per
``rewards`` partition. Each change of state is one Lua script, so it is atomic, and
its counters are added by the same script: a worker killed at any point neither loses
nor doubles a count. The scripts build per-event and per-policy keys from the prefix:
this needs a single Redis (or a cluster whose prefix is one hash tag), like the rest of
the state.
Due ids found without state (which should not happen) are counted as ``events_lost``
under :attr:`JoinStore.ORPHANS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Literal, TypeAlias

import orjson
import structlog

from bandit.service.state import StateStore
from bandit.settings import RedisSettings
from bandit.wire.schemas import (
    LENIENT_IDS,
    Activation,
    Decision,
    PolicySettings,
    RewardReported,
    TrainingExample,
)
from streams.trusted import SCHEMA_VERSION, StructureError, TrustedDecision

__all__ = [
    "DecisionOutcome",
    "DropReason",
    "JoinStore",
    "Joined",
    "RecordOutcome",
]

DecisionOutcome: TypeAlias = Literal["pending", "duplicate", "not_learned"]
"""What :meth:`JoinStore.add_decision` did with a decision."""

RecordOutcome: TypeAlias = Literal["pending", "early", "duplicate", "late", "forbidden"]
"""What :meth:`JoinStore.add_reward` and :meth:`JoinStore.add_activation` did."""

DropReason: TypeAlias = Literal["unactivated", "invalid"]
"""Why a due event yields no training example: a deferred decision never activated,
or state that cannot make a valid example (e.g. a reward sum that overflows)."""

_RECORD_OUTCOMES: Final[dict[str, RecordOutcome]] = {
    "pending": "pending",
    "early": "early",
    "duplicate": "duplicate",
    "late": "late",
    "forbidden": "forbidden",
}
_DEDUP_WINDOW_SECONDS: float = RedisSettings.model_fields["dedup_window_seconds"].default
_log = structlog.get_logger("streams.join")
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DETAIL_CHARS = 500
_JSON_BOOL: Final = {True: b"true", False: b"false"}

# Every script reads `now` from its argument, or from the server when it is ''.
_CLOCK = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# Counters change in the same script as the state they describe, so a worker killed
# between the two can neither lose nor double a count.
_COUNT = """
local function count(key, name, n)
  if n ~= 0 then redis.call('HINCRBY', key, name, n) end
end
"""

# A record's scope: '' (any policy) or the policies of the key that sent it, comma-separated.
_SCOPE = """
local function allowed(scope, policy)
  return scope == '' or string.find(',' .. scope .. ',', ',' .. policy .. ',', 1, true) ~= nil
end
"""

# KEYS: event hash, done marker, due set, orphan set, the policy's counters
# ARGV: event id, learn ('1'/'0'), due score, policy, field, value, field, value, ...
# Early records sent with a scope wait under '{field}|{scope}': now that the policy is
# known, each becomes its field if the scope allows the policy (or a duplicate, when
# the field is there already), and is refused and counted otherwise.
_ADD_DECISION = (
    _COUNT
    + _SCOPE
    + """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HEXISTS', KEYS[1], 'decision') == 1 then
  count(KEYS[5], 'decisions_duplicate', 1)
  return {'duplicate'}
end
local refused = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  local field, scope = string.match(name, '^([^|]+)|(.+)$')
  if field then
    local kind = field == 'activated' and 'activation' or 'reward'
    local value = redis.call('HGET', KEYS[1], name)
    redis.call('HDEL', KEYS[1], name)
    if not allowed(scope, ARGV[4]) then
      redis.call('HINCRBY', KEYS[1], kind .. '_count', -1)
      count(KEYS[5], kind .. 's_forbidden', 1)
      refused[#refused + 1] = field
    elseif redis.call('HSETNX', KEYS[1], field, value) == 0 then
      redis.call('HINCRBY', KEYS[1], kind .. '_count', -1)
      redis.call('HINCRBY', KEYS[1], kind .. '_duplicates', 1)
    end
  end
end
local early = redis.call('HMGET', KEYS[1], 'reward_count', 'reward_duplicates',
                         'activation_count', 'activation_duplicates')
redis.call('ZREM', KEYS[4], ARGV[1])
count(KEYS[5], 'decisions', 1)
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
  count(KEYS[5], 'not_learned', 1)
  return {'not_learned', refused}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
local rewards, reward_dups = tonumber(early[1] or '0'), tonumber(early[2] or '0')
local activations, activation_dups = tonumber(early[3] or '0'), tonumber(early[4] or '0')
count(KEYS[5], 'rewards', rewards)
count(KEYS[5], 'rewards_early', rewards)
count(KEYS[5], 'rewards_duplicate', reward_dups)
count(KEYS[5], 'activations', activations)
count(KEYS[5], 'activations_early', activations)
count(KEYS[5], 'activations_duplicate', activation_dups)
return {'pending', refused}
"""
)

# Watermarks only move forward, and never past the clock (`now`): a host whose clock runs
# ahead must not leave a watermark in the future.
_WATERMARK = """
local function advance(key, partition, time)
  local current = redis.call('HGET', key, partition)
  if not current or tonumber(current) < time then
    redis.call('HSET', key, partition, string.format('%.17g', time))
  end
end
"""

# KEYS: event hash, done marker, orphan set, watermarks
# ARGV: event id, field, value, now, orphan ttl, backstop ttl, count field, duplicates field,
#       counters key prefix, counter name ('rewards' / 'activations'),
#       rewards partition and record time ('' and '' when not read from Kafka), scope
# Early records are counted when their decision arrives or when they expire: until then
# their policy is unknown; one with a scope waits under '{field}|{scope}' (see
# _ADD_DECISION). A record whose scope does not allow its decision's policy is refused
# ('forbidden', counted). Whatever the outcome, the record is handled: its partition's
# watermark moves to its time in the same script.
_ADD_RECORD = (
    _CLOCK
    + _COUNT
    + _WATERMARK
    + _SCOPE
    + """
local function add()
  local counters = ARGV[9]
  local scope = ARGV[13]
  local done = redis.call('GET', KEYS[2])
  if done then
    -- The done marker: the policy, then the fields seen (joined, or late:...), each
    -- after a space. A field seen before is a copy; a new one is late, once.
    local policy, seen = string.match(done, '^(%S+)(.*)$')
    if policy ~= '_erased' and not allowed(scope, policy) then
      count(counters .. policy, ARGV[10] .. '_forbidden', 1)
      return {'forbidden', policy}
    end
    seen = seen .. ' '
    if string.find(seen, ' ' .. ARGV[2] .. ' ', 1, true)
        or string.find(seen, ' late:' .. ARGV[2] .. ' ', 1, true) then
      count(counters .. policy, ARGV[10] .. '_duplicate', 1)
      return {'duplicate', policy}
    end
    redis.call('SET', KEYS[2], done .. ' late:' .. ARGV[2], 'KEEPTTL')
    count(counters .. policy, ARGV[10] .. '_late', 1)
    return {'late', policy}
  end
  local policy = redis.call('HGET', KEYS[1], 'policy')
  if policy and not allowed(scope, policy) then
    count(counters .. policy, ARGV[10] .. '_forbidden', 1)
    return {'forbidden', policy}
  end
  local field = ARGV[2]
  if not policy and scope ~= '' then field = field .. '|' .. scope end
  if redis.call('HEXISTS', KEYS[1], field) == 1 then
    if policy then
      count(counters .. policy, ARGV[10] .. '_duplicate', 1)
      return {'duplicate', policy}
    end
    redis.call('HINCRBY', KEYS[1], ARGV[8], 1)
    return {'duplicate'}
  end
  if policy and redis.call('HEXISTS', KEYS[1], 'claimed') == 1 then
    if redis.call('HSETNX', KEYS[1], 'late:' .. ARGV[2], '1') == 0 then
      count(counters .. policy, ARGV[10] .. '_duplicate', 1)
      return {'duplicate', policy}
    end
    count(counters .. policy, ARGV[10] .. '_late', 1)
    return {'late', policy}
  end
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[1], field, seq .. ' ' .. ARGV[3])
  redis.call('HINCRBY', KEYS[1], ARGV[7], 1)
  if policy then
    count(counters .. policy, ARGV[10], 1)
    return {'pending', policy}
  end
  redis.call('ZADD', KEYS[3], 'NX', clock(ARGV[4]) + tonumber(ARGV[5]), ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  return {'early'}
end
local reply = add()
if ARGV[11] ~= '' then
  advance(KEYS[4], ARGV[11], math.min(tonumber(ARGV[12]), clock(ARGV[4])))
end
return reply
"""
)

# KEYS: watermarks
# ARGV: rewards partition, time, now
_ADVANCE = (
    _CLOCK
    + _WATERMARK
    + """
advance(KEYS[1], ARGV[1], math.min(tonumber(ARGV[2]), clock(ARGV[3])))
return redis.call('HGET', KEYS[1], ARGV[1])
"""
)

# KEYS: due set
# ARGV: now
# Returns the seconds from now until the first score of the due set (a string), or false.
_NEXT_DUE = (
    _CLOCK
    + """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return false end
return tostring(tonumber(first[2]) - clock(ARGV[1]))
"""
)

# KEYS: due set, watermarks
# ARGV: now, rewards partitions, slack
# Returns the partitions whose watermark holds back the oldest due event.
_LAGGING = (
    _CLOCK
    + """
local slack = tonumber(ARGV[3])
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', clock(ARGV[1]) - slack,
                          'LIMIT', 0, 1, 'WITHSCORES')
local lagging = {}
if #oldest == 0 then return lagging end
local due = tonumber(oldest[2])
local fields = {}
for p = 0, tonumber(ARGV[2]) - 1 do fields[#fields + 1] = tostring(p) end
for i, mark in ipairs(redis.call('HMGET', KEYS[2], unpack(fields))) do
  if not mark or tonumber(mark) - slack < due then lagging[#lagging + 1] = i - 1 end
end
return lagging
"""
)

# KEYS: due set, orphan set, the orphans' counters, watermarks
# ARGV: now, limit, lease seconds, event key prefix,
#       rewards partitions ('' to go by the clock alone), slack
# Returns {orphan totals, claimed {id, hgetall}..., count of due ids without state}.
_CLAIM = (
    _CLOCK
    + _COUNT
    + """
local now = clock(ARGV[1])
local limit = tonumber(ARGV[2])
local prefix = ARGV[4]
-- Events are claimed up to the clock, and no further than every rewards partition is read.
local horizon = now
if ARGV[5] ~= '' then
  local fields = {}
  for p = 0, tonumber(ARGV[5]) - 1 do fields[#fields + 1] = tostring(p) end
  for _, mark in ipairs(redis.call('HMGET', KEYS[4], unpack(fields))) do
    if not mark then
      horizon = nil
      break
    end
    horizon = math.min(horizon, tonumber(mark) - tonumber(ARGV[6]))
  end
end
local totals = {0, 0, 0, 0}
local names = {'reward_count', 'reward_duplicates', 'activation_count', 'activation_duplicates'}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
  local key = prefix .. id
  if redis.call('HEXISTS', key, 'decision') == 0 then
    local counts = redis.call('HMGET', key, unpack(names))
    for i = 1, 4 do totals[i] = totals[i] + tonumber(counts[i] or '0') end
    redis.call('DEL', key)
  end
  redis.call('ZREM', KEYS[2], id)
end
local claimed = {}
local lost = 0
local due = {}
if horizon then
  due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', horizon, 'LIMIT', 0, limit)
end
for _, id in ipairs(due) do
  local key = prefix .. id
  if redis.call('HEXISTS', key, 'decision') == 1 then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
    redis.call('HSET', key, 'claimed', '1')
    claimed[#claimed + 1] = {id, redis.call('HGETALL', key)}
  else
    redis.call('ZREM', KEYS[1], id)
    lost = lost + 1
  end
end
count(KEYS[3], 'rewards_orphaned', totals[1])
count(KEYS[3], 'rewards_duplicate', totals[2])
count(KEYS[3], 'activations_orphaned', totals[3])
count(KEYS[3], 'activations_duplicate', totals[4])
count(KEYS[3], 'events_lost', lost)
return {totals, claimed, lost}
"""
)

# KEYS: due set
# ARGV: event key prefix, done key prefix, counters key prefix,
#       then per event: id, policy, counter names joined by ','
# Returns the ids completed now (not already completed); only those are counted.
_COMPLETE = (
    _COUNT
    + """
local completed = {}
for i = 4, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local key = ARGV[1] .. id
    local fields = redis.call('HMGET', key, 'policy', 'done_ttl')
    if fields[1] then
      -- Keep the fields seen (joined, or late while claimed), so that a redelivered
      -- copy is known for a duplicate.
      local marker = {fields[1]}
      for _, name in ipairs(redis.call('HKEYS', key)) do
        local kind = string.sub(name, 1, 2)
        if kind == 'r:' or name == 'activated' or string.sub(name, 1, 5) == 'late:' then
          marker[#marker + 1] = name
        end
      end
      redis.call('SET', ARGV[2] .. id, table.concat(marker, ' '), 'EX', fields[2])
    end
    redis.call('DEL', key)
    for name in string.gmatch(ARGV[i + 2], '[^,]+') do
      count(ARGV[3] .. ARGV[i + 1], name, 1)
    end
    completed[#completed + 1] = id
  end
end
return completed
"""
)


@dataclass(frozen=True, slots=True)
class Joined:
    """A due event, handed out by :meth:`JoinStore.claim_due`.

    Exactly one of `value` and `dropped` is set.

    Attributes
    ----------
    event_id
        The decision's event id.
    policy
        The policy that decided.
    value
        The training example to learn and log, when the event is learned: a
        :class:`~bandit.wire.schemas.TrainingExample`'s JSON, the decision's bytes in it as
        they came from ``decisions``.
    default_reward
        Whether the example holds the policy's default reward (no reward came).
    dropped
        Why the event is not learned, otherwise.
    detail
        A human-readable explanation when `dropped` is ``"invalid"``.
    """

    event_id: str
    policy: str
    value: bytes | None = None
    default_reward: bool = False
    dropped: DropReason | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if (self.value is None) == (self.dropped is None):
            msg = (
                "a Joined needs exactly one of `value` and `dropped`, got "
                f"value={self.value is not None} and dropped={self.dropped!r}"
            )
            raise ValueError(msg)

    @property
    def example(self) -> TrainingExample | None:
        """The training example as its declared model (validated now), or None if dropped.

        For readers and tests; the worker produces `value` as it is.
        """
        if self.value is None:
            return None
        return TrainingExample.model_validate_json(self.value, context=dict(LENIENT_IDS))


class JoinStore:
    """The join's state in Redis: pending decisions, their rewards, due times.

    Parameters
    ----------
    state
        The Redis state store; keys go under ``state.key("join", ...)`` and counters
        under ``state.key("counters", policy)``.
    orphan_ttl_seconds
        How long a reward or activation waits for its decision.
    done_ttl_seconds
        Least time a done marker recognises late rewards and duplicate decisions
        (``settings.redis.dedup_window_seconds``); it is at least twice the policy's
        reward wait.
    rewards_partitions
        How many partitions the ``rewards`` topic has (``settings.kafka.partitions``):
        events are claimed only once each of them is read past their deadline (see
        "watermarks" above). None claims by the clock alone.
    watermark_slack_seconds
        How late after its timestamp a record may still reach the broker
        (``settings.watermark_slack_seconds``); unused without `rewards_partitions`.

    Raises
    ------
    ValueError
        If a TTL is not a finite number > 0, `rewards_partitions` not None or >= 1,
        or `watermark_slack_seconds` not a finite number >= 0.
    """

    ORPHANS: ClassVar[str] = "_orphans"
    """Pseudo-policy whose counters hold expired early rewards and due ids found
    without state (real policy names cannot start with ``_``)."""

    def __init__(
        self,
        state: StateStore,
        *,
        orphan_ttl_seconds: float = 3600.0,
        done_ttl_seconds: float = _DEDUP_WINDOW_SECONDS,
        rewards_partitions: int | None = None,
        watermark_slack_seconds: float = 0.1,
    ) -> None:
        for name, value in (
            ("orphan_ttl_seconds", orphan_ttl_seconds),
            ("done_ttl_seconds", done_ttl_seconds),
        ):
            if not (math.isfinite(value) and value > 0):
                msg = f"`{name}` must be a finite number > 0, got {value!r}"
                raise ValueError(msg)
        if rewards_partitions is not None and not (
            isinstance(rewards_partitions, int) and rewards_partitions >= 1
        ):
            msg = f"`rewards_partitions` must be None or an int >= 1, got {rewards_partitions!r}"
            raise ValueError(msg)
        slack = watermark_slack_seconds
        if not (math.isfinite(slack) and slack >= 0):
            msg = f"`watermark_slack_seconds` must be a finite number >= 0, got {slack!r}"
            raise ValueError(msg)
        self.state = state
        self.orphan_ttl_seconds = orphan_ttl_seconds
        self.done_ttl_seconds = done_ttl_seconds
        self.rewards_partitions = rewards_partitions
        self.watermark_slack_seconds = watermark_slack_seconds
        redis = state.redis
        self._add_decision = redis.register_script(_ADD_DECISION)
        self._add_record = redis.register_script(_ADD_RECORD)
        self._advance = redis.register_script(_ADVANCE)
        self._lagging = redis.register_script(_LAGGING)
        self._next_due = redis.register_script(_NEXT_DUE)
        self._claim = redis.register_script(_CLAIM)
        self._complete = redis.register_script(_COMPLETE)

    # -- keys ----------------------------------------------------------------------------

    def event_key(self, event_id: str) -> str:
        """Return the key of an event's pending state."""
        return self.state.key("join", "event", event_id)

    def done_key(self, event_id: str) -> str:
        """Return the key of an event's done marker."""
        return self.state.key("join", "done", event_id)

    @property
    def due_key(self) -> str:
        """The key of the sorted set of due times."""
        return self.state.key("join", "due")

    @property
    def orphans_key(self) -> str:
        """The key of the sorted set of early rewards' expiry times."""
        return self.state.key("join", "orphans")

    @property
    def watermarks_key(self) -> str:
        """The key of the hash of the ``rewards`` partitions' watermarks."""
        return self.state.key("join", "watermarks")

    # -- records -------------------------------------------------------------------------

    async def add_decision(
        self,
        decision: TrustedDecision | Decision,
        settings: PolicySettings,
        now: float | None = None,
    ) -> DecisionOutcome:
        """Start waiting for a decision's rewards.

        Parameters
        ----------
        decision
            The decision, as read from the ``decisions`` topic (its bytes are kept as
            they are), or a model (kept as its JSON).
        settings
            Its policy's current settings: the reward wait, default reward and
            aggregation are fixed for this decision now.
        now
            Accepted for a uniform signature and checked; the window is anchored at
            ``decision.occurred_at``, so arrival time does not matter.

        Returns
        -------
        str
            ``"pending"`` (waiting), ``"duplicate"`` (already pending or done: nothing
            changed) or ``"not_learned"`` (``learn=False``: nothing kept).
        """
        _check_now(now)
        if isinstance(decision, Decision):
            decision = TrustedDecision.read(decision.model_dump_json().encode())
        event_id = decision.event_id
        wait = settings.reward_wait_seconds
        due = decision.occurred_at.timestamp() + wait
        done_ttl = math.ceil(max(self.done_ttl_seconds, 2 * wait))
        fields: dict[str, str | bytes] = {
            "decision": decision.raw,
            "at": str(_microseconds(decision.occurred_at)),
            "policy": decision.policy,
            "aggregation": settings.reward_aggregation,
            "default_reward": repr(settings.default_reward),
            "wait": repr(wait),
            "deferred": "1" if decision.deferred else "0",
            "done_ttl": str(done_ttl),
        }
        if decision.slots is not None:
            fields["slots"] = orjson.dumps(decision.slots)
        reply = await self._add_decision(
            keys=[
                self.event_key(event_id),
                self.done_key(event_id),
                self.due_key,
                self.orphans_key,
                self.state.key("counters", decision.policy),
            ],
            args=[
                event_id,
                "1" if decision.learn else "0",
                repr(due),
                decision.policy,
                *(item for pair in fields.items() for item in pair),
            ],
        )
        outcome = _text(reply[0])  # counted by the script
        if len(reply) > 1 and reply[1]:
            _log.warning(
                "records.refused",
                event_id=event_id,
                policy=decision.policy,
                fields=[_text(field) for field in reply[1]],
                reason=f"key not allowed for policy {decision.policy!r}",
            )
        if outcome == "duplicate":
            return "duplicate"
        if outcome == "not_learned":
            return "not_learned"
        return "pending"

    async def add_reward(
        self,
        record: RewardReported,
        now: float | None = None,
        *,
        partition: int | None = None,
        record_time: float | None = None,
    ) -> RecordOutcome:
        """Keep a reward for its decision, once per ``reward_id``.

        Parameters
        ----------
        record
            The reward, from the ``rewards`` topic.
        now
            The current time (seconds since the epoch); the Redis server's when omitted.
            It sets when an early reward expires.
        partition, record_time
            Where the record was read: its ``rewards`` partition and Kafka timestamp
            (seconds since the epoch). Given (both or neither), the partition's
            watermark moves to `record_time` (at most `now`) in the same script,
            whatever the outcome.

        Returns
        -------
        str
            ``"pending"`` (kept with its decision), ``"early"`` (kept until the decision
            arrives), ``"duplicate"`` (reward id already seen, kept or late: nothing
            changed), ``"late"`` (a new reward id for an event claimed or done:
            counted, not learned) or ``"forbidden"`` (the record's scope does not allow
            the decision's policy: counted, nothing else changed).

        Raises
        ------
        ValueError
            If only one of `partition` and `record_time` is given, `partition` is < 0
            or a time is not finite.
        """
        value = f"{_microseconds(record.occurred_at)} {record.reward!r}"
        if record.slot_id is not None:  # (last: a slot id may hold spaces)
            value += f" {record.slot_id}"
        field = f"r:{record.reward_id}"
        read = _read_at(partition, record_time)
        return await self._add(
            record.event_id, field, value, "reward", now=now, read=read, scope=record.scope
        )

    async def add_activation(
        self,
        record: Activation,
        now: float | None = None,
        *,
        partition: int | None = None,
        record_time: float | None = None,
    ) -> RecordOutcome:
        """Mark a deferred decision as activated (shown), so it may be learned.

        Parameters
        ----------
        record
            The activation, from the ``rewards`` topic.
        now
            The current time (seconds since the epoch); the Redis server's when omitted.
        partition, record_time
            Where the record was read, as for :meth:`add_reward`.

        Returns
        -------
        str
            ``"pending"``, ``"early"``, ``"duplicate"``, ``"late"`` or ``"forbidden"``,
            as for :meth:`add_reward`. Activating a decision that was not deferred is harmless.

        Raises
        ------
        ValueError
            As for :meth:`add_reward`.
        """
        value = str(_microseconds(record.occurred_at))
        read = _read_at(partition, record_time)
        return await self._add(
            record.event_id,
            "activated",
            value,
            "activation",
            now=now,
            read=read,
            scope=record.scope,
        )

    async def _add(
        self,
        event_id: str,
        field: str,
        value: str,
        kind: str,
        *,
        now: float | None,
        read: tuple[str, str],
        scope: Sequence[str] | None,
    ) -> RecordOutcome:
        _check_now(now)
        reply = await self._add_record(
            keys=[
                self.event_key(event_id),
                self.done_key(event_id),
                self.orphans_key,
                self.watermarks_key,
            ],
            args=[
                event_id,
                field,
                value,
                "" if now is None else repr(now),
                repr(self.orphan_ttl_seconds),
                str(math.ceil(2 * self.orphan_ttl_seconds)),
                f"{kind}_count",
                f"{kind}_duplicates",
                self.state.key("counters", ""),
                f"{kind}s",
                *read,
                "" if scope is None else ",".join(scope),
            ],
        )
        # Counted by the script; early records, and duplicates of them, when their
        # decision arrives or when they expire: until then their policy is unknown.
        return _RECORD_OUTCOMES[_text(reply[0])]

    # -- watermarks ----------------------------------------------------------------------

    async def advance_watermark(
        self, partition: int, time: float, now: float | None = None
    ) -> float:
        """Record that ``rewards`` partition `partition` is read up to `time`.

        For what the agent reads besides rewards and activations: a watermark marker
        (everything appended before its time precedes it), or a record it cannot decode
        (its Kafka timestamp). Watermarks only move forward, and no further than `now`.

        Parameters
        ----------
        partition
            The ``rewards`` partition.
        time
            Seconds since the epoch.
        now
            The current time (seconds since the epoch); the Redis server's when omitted.

        Returns
        -------
        float
            The partition's watermark now.

        Raises
        ------
        ValueError
            If `partition` is < 0 or a time is not finite.
        """
        _check_now(now)
        field, value = _read_at(partition, time)
        reply = await self._advance(
            keys=[self.watermarks_key], args=[field, value, "" if now is None else repr(now)]
        )
        return float(_text(reply))

    async def watermarks(self) -> dict[int, float]:
        """Return the watermark of each ``rewards`` partition that has one."""
        raw = await self.state.redis.hgetall(self.watermarks_key)
        return {int(_text(partition)): float(_text(mark)) for partition, mark in raw.items()}

    async def next_due(self, now: float | None = None) -> float | None:
        """Return the seconds until the first event in the due set is due (< 0: overdue).

        An event handed out counts from its lease's end. The agent sleeps until then
        (and the slack after it, when the watermarks need markers) rather than looking
        again and again; None when no event waits.

        Parameters
        ----------
        now
            The current time (seconds since the epoch); the Redis server's when omitted.
        """
        _check_now(now)
        reply = await self._next_due(keys=[self.due_key], args=["" if now is None else repr(now)])
        return None if reply is None else float(_text(reply))

    async def lagging_partitions(self, now: float | None = None) -> list[int]:
        """Return the ``rewards`` partitions whose watermark holds back a due event.

        A partition lags when its watermark (less the slack) is before the deadline of
        the oldest event due by ``now - slack``, or when it has none.
        The agent sends each a watermark marker: a partition read up to its end moves
        on when the marker is read; one behind (its worker dead) moves on once read.

        Parameters
        ----------
        now
            The current time (seconds since the epoch); the Redis server's when omitted.

        Returns
        -------
        list[int]
            In increasing order; always empty without `rewards_partitions`.
        """
        _check_now(now)
        if self.rewards_partitions is None:
            return []
        reply = await self._lagging(
            keys=[self.due_key, self.watermarks_key],
            args=[
                "" if now is None else repr(now),
                str(self.rewards_partitions),
                repr(self.watermark_slack_seconds),
            ],
        )
        return [int(partition) for partition in reply]

    # -- joining -------------------------------------------------------------------------

    async def claim_due(
        self, now: float | None = None, limit: int = 500, lease_seconds: float = 30.0
    ) -> list[Joined]:
        """Hand out up to `limit` due events, leased for `lease_seconds`.

        An event is due once its deadline is past and, with `rewards_partitions`, every
        ``rewards`` partition is read past it (see "watermarks" above). Also removes up
        to `limit` expired orphans (early rewards whose decision never came) and counts
        them under :attr:`JoinStore.ORPHANS`. An event not completed within the lease is
        handed out again, identical, under the same rule; once claimed, it takes no more
        rewards.

        Parameters
        ----------
        now
            The current time (seconds since the epoch); the Redis server's when omitted.
        limit
            Most events handed out (and most orphans removed) in this call.
        lease_seconds
            How long the caller has to produce and :meth:`complete` the events.

        Returns
        -------
        list[Joined]
            Oldest due first.

        Raises
        ------
        ValueError
            If `limit` is not >= 1 or `lease_seconds` not a finite number > 0.
        """
        _check_now(now)
        if limit < 1:
            msg = f"`limit` must be >= 1, got {limit!r}"
            raise ValueError(msg)
        if not (math.isfinite(lease_seconds) and lease_seconds > 0):
            msg = f"`lease_seconds` must be a finite number > 0, got {lease_seconds!r}"
            raise ValueError(msg)
        _totals, claimed, _lost = await self._claim(
            keys=[
                self.due_key,
                self.orphans_key,
                self.state.key("counters", self.ORPHANS),
                self.watermarks_key,
            ],
            args=[
                "" if now is None else repr(now),
                str(limit),
                repr(lease_seconds),
                self.state.key("join", "event", ""),
                "" if self.rewards_partitions is None else str(self.rewards_partitions),
                repr(self.watermark_slack_seconds),
            ],
        )
        return [_joined(_text(raw_id), _fields(raw)) for raw_id, raw in claimed]

    async def complete(self, joined: Sequence[Joined]) -> None:
        """Finish events once their outcome is produced: delete their state, mark them done.

        Idempotent: events already completed (by this or another worker) change
        nothing and are not counted again.

        Parameters
        ----------
        joined
            Events handed out by :meth:`claim_due`.
        """
        if not joined:
            return
        await self._complete(
            keys=[self.due_key],
            args=[
                self.state.key("join", "event", ""),
                self.state.key("join", "done", ""),
                self.state.key("counters", ""),
                *(
                    part
                    for item in joined
                    for part in (item.event_id, item.policy, ",".join(_completion_counters(item)))
                ),
            ],
        )


def _completion_counters(item: Joined) -> list[str]:
    if item.value is None:
        return [f"dropped_{item.dropped}"]
    if item.default_reward:
        return ["joined", "default_rewards"]
    return ["joined"]


def _joined(event_id: str, fields: Mapping[str, str]) -> Joined:
    """Build the outcome of a due event from its stored fields.

    The training record is written around the decision's bytes, which are spliced in
    as they came (a :class:`~bandit.wire.schemas.TrainingExample`'s JSON).
    """
    policy = fields["policy"]
    if fields["deferred"] == "1" and "activated" not in fields:
        return Joined(event_id, policy, dropped="unactivated")
    try:
        wait = float(fields["wait"])
        stored = sorted(_reward(value) for name, value in fields.items() if name.startswith("r:"))
        slotted = _slot_rewards(fields, stored)
        rewards = [(at, seq, reward) for at, seq, reward, _ in stored]
        if slotted is not None:
            rewards = slotted[0]
        if rewards:
            reward = _aggregate(fields["aggregation"], rewards)
        else:
            reward = float(fields["default_reward"])
        if not math.isfinite(reward):
            msg = f"the reward must be finite, got {reward!r}"
            raise ValueError(msg)
        slots = b""
        if slotted is not None:
            default = float(fields["default_reward"])
            per_slot = [_aggregate(fields["aggregation"], r) if r else default for r in slotted]
            if not all(map(math.isfinite, per_slot)):
                msg = f"the slots' rewards must be finite, got {per_slot!r}"
                raise ValueError(msg)
            slots = b"".join(
                (
                    b',"slot_rewards":',
                    orjson.dumps(per_slot),
                    b',"slot_reward_counts":',
                    orjson.dumps([len(r) for r in slotted]),
                )
            )
        occurred_at = _decided_at(fields) + timedelta(seconds=wait)
        value = b"".join(
            (
                b'{"schema_version":%d,"event_id":' % SCHEMA_VERSION,
                orjson.dumps(event_id),
                b',"occurred_at":',
                orjson.dumps(occurred_at, option=orjson.OPT_UTC_Z),
                b',"decision":',
                fields["decision"].encode(),
                b',"reward":',
                orjson.dumps(reward),
                b',"reward_count":%d' % len(rewards),
                b',"default_reward":%s' % _JSON_BOOL[not rewards],
                slots,
                b"}",
            )
        )
    except (ValueError, OverflowError, KeyError) as error:
        detail = f"{type(error).__name__}: {error}"[:_DETAIL_CHARS]
        return Joined(event_id, policy, dropped="invalid", detail=detail)
    return Joined(event_id, policy, value=value, default_reward=not rewards)


def _decided_at(fields: Mapping[str, str]) -> datetime:
    """Return when the stored decision was made (read from its JSON if kept before ``at``)."""
    at = fields.get("at")
    if at is not None:
        return _EPOCH + timedelta(microseconds=int(at))
    try:
        return TrustedDecision.read(fields["decision"].encode()).occurred_at
    except StructureError as error:
        raise ValueError(error.reason) from None


def _reward(value: str) -> tuple[int, int, float, str | None]:
    """Parse a stored reward into (occurred_at in µs, arrival seq, reward, slot id or None)."""
    seq, occurred, reward, *slot = value.split(" ", 3)
    return int(occurred), int(seq), float(reward), slot[0] if slot else None


def _slot_rewards(
    fields: Mapping[str, str], rewards: Sequence[tuple[int, int, float, str | None]]
) -> list[list[tuple[int, int, float]]] | None:
    """Group a multi-slot decision's rewards by slot, in slot order; None for a single slot.

    A reward naming no slot is the first slot's (as the top-level fields of a
    multi-slot decision are); one naming a slot the decision has not is left out.
    """
    if "slots" not in fields:
        return None
    ids: list[str] = orjson.loads(fields["slots"])
    grouped: dict[str, list[tuple[int, int, float]]] = {slot: [] for slot in ids}
    for at, seq, reward, slot in rewards:
        found = grouped.get(ids[0] if slot is None else slot)
        if found is not None:
            found.append((at, seq, reward))
    return [grouped[slot] for slot in ids]


def _aggregate(aggregation: str, rewards: Sequence[tuple[int, int, float]]) -> float:
    """Combine rewards sorted by (occurred_at, arrival)."""
    values = [reward for _, _, reward in rewards]
    if aggregation == "sum":
        total = math.fsum(values)  # raises OverflowError rather than returning inf
    elif aggregation == "earliest":
        total = values[0]
    elif aggregation == "max":
        total = max(values)
    else:
        msg = f"unknown reward aggregation {aggregation!r}"
        raise ValueError(msg)
    return total


def _fields(raw: Sequence[Any]) -> dict[str, str]:
    """Turn a flat HGETALL reply into a dict of text."""
    return {_text(raw[i]): _text(raw[i + 1]) for i in range(0, len(raw), 2)}


def _microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _read_at(partition: int | None, time: float | None) -> tuple[str, str]:
    """Check where a record was read; return the script arguments ('' and '' if nowhere)."""
    if partition is None and time is None:
        return "", ""
    if partition is None or time is None:
        msg = (
            "`partition` and `record_time` go together: give both or neither, got "
            f"partition={partition!r} and record_time={time!r}"
        )
        raise ValueError(msg)
    if not (isinstance(partition, int) and partition >= 0):
        msg = f"`partition` must be an int >= 0, got {partition!r}"
        raise ValueError(msg)
    if not math.isfinite(time):
        msg = f"a record time must be a finite number of seconds since the epoch, got {time!r}"
        raise ValueError(msg)
    return str(partition), repr(time)


def _check_now(now: float | None) -> None:
    if now is not None and not math.isfinite(now):
        msg = f"`now` must be a finite number of seconds since the epoch, got {now!r}"
        raise ValueError(msg)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
