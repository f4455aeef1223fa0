"""Everything the service keeps in Redis, behind one small async interface.

State lives in Redis, flows live in Kafka. Keys, all under the configured prefix
(``sb`` by default)::

    sb:policy:{name}:settings      JSON PolicySettings           (admin writes, all read)
    sb:policy:{name}:settings:v    integer, bumped on every change
    sb:policy:{name}:settings:at   when an admin last changed them (seconds since the epoch)
    sb:model:{name}                hash: snapshot, version, offsets (JSON), saved_at,
                                   created_at, source (what saved this version)
    sb:model-versions:{name}       hash: version -> JSON of a kept version (saved_at,
                                   created_at, source, bytes, restored_from), the last
                                   ``learner.model_history`` (docs/runbook.md)
    sb:model-snapshots:{name}      hash: version -> the snapshot of that kept version
    sb:learned:{name}              sorted set: event ids learned -> when (dedup window)
    sb:logged:{name}               sorted set: event ids in a decision log -> when (dedup
                                   window)
    sb:log-claims:{writer}         hash: "{policy} {event id}" -> its DSJSON line, for the
                                   lines a decision-log writer claimed and has not yet
                                   confirmed written (streams/ledger.py)
    sb:log:deletion                when the decision log was last asked to be deleted
                                   (seconds since the epoch, Redis's clock; DELETE /v1/log)
    sb:log:writers                 hash: decision-log writer id -> JSON LogWriter: when it
                                   last beat, the last deletion it applied, what that took
    sb:features:{kind}:{id}        hash of features with a TTL (session, device)
    sb:counters:{name}             hash of counters (decisions, rewards_late, ...)
    sb:consent:{pseudonym}         hash: a person's consents and secret
    sb:user:{pseudonym}:...        a person's sessions, decisions, recent decisions
    sb:erased:{sha256 of pseudonym}  the time of the person's last erasure
                                   (privacy.erasure_memory_seconds; docs/privacy.md)

The join agent's own keys are described in :mod:`streams.join`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from bandit.privacy.consent import CONSENT_SECRET_FIELD, ConsentRecord
from bandit.settings import LearnerSettings, RedisSettings
from bandit.wire.answers import ModelSource
from bandit.wire.schemas import PolicySettings

__all__ = [  # noqa: RUF022 - plain sorted(), which tests/test_public_api.py checks
    "FeatureKind",
    "HashChange",
    "KeptModel",
    "LogWriter",
    "ModelKeys",
    "ModelRecord",
    "RECENT_DECISIONS",
    "RECENT_SECONDS",
    "StateStore",
    "erasure_covers",
    "model_keys",
]

FeatureKind = Literal["session", "device"]

# how long ids learned and logged are remembered by default (docs/redis-memory.md)
_LEARNED_WINDOW_SECONDS: int = RedisSettings.model_fields["dedup_window_seconds"].default
# which model versions are kept by default (docs/runbook.md, "Rolling a model back")
_MODEL_HISTORY: int = LearnerSettings.model_fields["model_history"].default
_MODEL_HISTORY_SECONDS: float = LearnerSettings.model_fields["model_history_seconds"].default

# Save a model version and keep the policy's last versions (StateStore.save_model): one
# script, so the version kept and the oldest dropped go with the save, and the snapshot
# crosses the network once. KEYS: the model hash, the kept versions (version -> JSON),
# their snapshots (version -> bytes). ARGV: the snapshot, version, offsets (JSON), now,
# the lineage ('keep': the first save's creation time stays; 'new': now; else the
# creation time to set), the source, versions to keep, least seconds between kept
# versions for a learner's version, the version restored ('' for none).
# Kept: the version an import, reset or rollback replaces and the one it saves; the
# learner's first version, then one when at least those seconds after the newest kept.
_SAVE_MODEL = """
local function entry(version, saved_at, created_at, source, size, restored)
  return '{"version":' .. version .. ',"saved_at":' .. saved_at .. ',"created_at":'
    .. created_at .. ',"source":"' .. source .. '","bytes":' .. size
    .. ',"restored_from":' .. restored .. '}'
end
local keep = tonumber(ARGV[7])
local old = redis.call('HMGET', KEYS[1], 'version', 'saved_at', 'created_at', 'source')
local replacing = ARGV[6] ~= 'learner'
if keep > 0 and replacing and old[1] and redis.call('HEXISTS', KEYS[2], old[1]) == 0 then
  local snapshot = redis.call('HGET', KEYS[1], 'snapshot')
  if snapshot then
    local saved_at = old[2] or ARGV[4]
    redis.call('HSET', KEYS[3], old[1], snapshot)
    redis.call('HSET', KEYS[2], old[1],
      entry(old[1], saved_at, old[3] or saved_at, old[4] or 'learner', #snapshot, 'null'))
  end
end
redis.call('HSET', KEYS[1], 'snapshot', ARGV[1], 'version', ARGV[2], 'offsets', ARGV[3],
  'saved_at', ARGV[4])
local changed = old[1] ~= ARGV[2]
if changed then redis.call('HSET', KEYS[1], 'source', ARGV[6]) end
if ARGV[5] == 'keep' then
  redis.call('HSETNX', KEYS[1], 'created_at', ARGV[4])
elseif ARGV[5] == 'new' then
  redis.call('HSET', KEYS[1], 'created_at', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'created_at', ARGV[5])
end
if keep <= 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  return 0
end
local versions = redis.call('HKEYS', KEYS[2])
if changed and redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  local due = replacing or #versions == 0
  if not due then
    local newest = versions[1]
    for i = 2, #versions do
      if tonumber(versions[i]) > tonumber(newest) then newest = versions[i] end
    end
    local last = cjson.decode(redis.call('HGET', KEYS[2], newest))
    due = tonumber(ARGV[4]) >= last.saved_at + tonumber(ARGV[8])
  end
  if due then
    local created = redis.call('HGET', KEYS[1], 'created_at')
    local restored = ARGV[9] == '' and 'null' or ARGV[9]
    redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
    redis.call('HSET', KEYS[2], ARGV[2],
      entry(ARGV[2], ARGV[4], created, ARGV[6], #ARGV[1], restored))
    versions[#versions + 1] = ARGV[2]
  end
end
if #versions > keep then
  table.sort(versions, function(a, b) return tonumber(a) < tonumber(b) end)
  for i = 1, #versions - keep do
    redis.call('HDEL', KEYS[2], versions[i])
    redis.call('HDEL', KEYS[3], versions[i])
  end
end
return 1
"""

# Sets of event ids (a learner batch holds a thousand) travel as one JSON argument of
# these scripts: packing a thousand arguments costs the client a millisecond or two.
_HAS = """
local ids = cjson.decode(ARGV[1])
local found = {}
for i = 1, #ids do
  found[i] = redis.call('ZSCORE', KEYS[1], ids[i]) and 1 or 0
end
return found
"""
# ZADD KEYS[1] with score ARGV[1] for the ids in ARGV[2]; then forget scores <= ARGV[3].
_ADD = """
local ids = cjson.decode(ARGV[2])
for i = 1, #ids, 1000 do
  local pairs = {}
  for j = i, math.min(i + 999, #ids) do
    pairs[#pairs + 1] = ARGV[1]
    pairs[#pairs + 1] = ids[j]
  end
  redis.call('ZADD', KEYS[1], unpack(pairs))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
return #ids
"""
# Claim event ids for a decision-log writer (streams/ledger.py). KEYS: the policy's
# logged set, the writer's claims hash. ARGV: now, forget-before, the policy, then event
# id and line pairs. An id is the writer's to write if it claimed it before (a retried
# call) or nobody logged or claimed it; then it is recorded as logged and its line kept
# with the claim, in this one step. Returns 1 (write it) or 0 (logged already) per id.
_CLAIM_LOG = """
local found = {}
local n = 0
for i = 4, #ARGV, 2 do
  n = n + 1
  local field = ARGV[3] .. ' ' .. ARGV[i]
  if redis.call('HEXISTS', KEYS[2], field) == 1 then
    found[n] = 1
  elseif redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    found[n] = 0
  else
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    redis.call('HSET', KEYS[2], field, ARGV[i + 1])
    found[n] = 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
return found
"""


RECENT_DECISIONS = 10
"""How many of a person's last decisions their privacy page shows."""
RECENT_SECONDS = 7 * 24 * 3600
"""How long those are kept after the newest."""
# The erasure rule, in every script that writes something about a person: a write whose
# request was accepted at ARGV time `accepted` is refused when the person's erasure marker
# (the time of their last erasure) is at or after `accepted - slack`. Python's twin for
# the one reader that cannot be a script (the context fold) is `erasure_covers`.
_ERASED = """
local function erased(key, accepted, slack)
  local at = redis.call('GET', key)
  return at and tonumber(accepted) <= tonumber(at) + tonumber(slack)
end
"""

_NOTE_DECISION = (
    _ERASED
    + f"""
if erased(KEYS[4], ARGV[7], ARGV[8]) then return false end
redis.call('HSETNX', KEYS[1], '{CONSENT_SECRET_FIELD}', ARGV[1])
local secret = redis.call('HGET', KEYS[1], '{CONSENT_SECRET_FIELD}')
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[4])
  redis.call('LTRIM', KEYS[3], 0, ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[6])
end
return secret
"""
)

# KEYS: consent hash, erasure marker; ARGV: accepted, slack, field, value, ...
# Returns the whole hash, or false when the person was erased after `accepted`.
_UPDATE_CONSENT = (
    _ERASED
    + """
if ARGV[1] ~= '' and erased(KEYS[2], ARGV[1], ARGV[2]) then return false end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: erasure markers..., a feature hash. Returns each marker (false: none), then the hash.
_READ_SESSION = """
local found = {}
for i = 1, #KEYS - 1 do found[i] = redis.call('GET', KEYS[i]) end
found[#KEYS] = redis.call('HGETALL', KEYS[#KEYS])
return found
"""

# KEYS: erasure marker; ARGV: now, seconds to remember. The marker only moves forward.
_MARK_ERASED = """
local at = redis.call('GET', KEYS[1])
local now = tonumber(ARGV[1])
if at and tonumber(at) > now then now = tonumber(at) end
redis.call('SET', KEYS[1], string.format('%.17g', now), 'EX', ARGV[2])
return tostring(now)
"""

# KEYS: the deletion request. Sets it to Redis's time, after the last request whatever
# the clock did, and returns it: the writers compare it with the last they applied.
_REQUEST_LOG_DELETION = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if now <= last then now = last + 0.000001 end
local text = string.format('%.6f', now)
redis.call('SET', KEYS[1], text)
return text
"""


def erasure_covers(accepted_at: float, erased_at: float | None, slack: float) -> bool:
    """Whether an erasure at `erased_at` covers what was accepted at `accepted_at`.

    What a request or record brings about a person is dropped when it was accepted
    before their last erasure, give or take `slack` (how far the clocks stamping the
    two may disagree, ``settings.watermark_slack_seconds``): the erasure wins a tie.
    The scripts of :class:`StateStore` apply the same rule inside Redis.

    Examples
    --------
    >>> erasure_covers(100.0, None, 0.1), erasure_covers(100.0, 100.05, 0.1)
    (False, True)
    >>> erasure_covers(100.0, 99.8, 0.1)  # accepted after the erasure: new activity
    False
    """
    return erased_at is not None and accepted_at <= erased_at + slack


@dataclass(frozen=True, slots=True)
class LogWriter:
    """What a decision-log writer (a worker's folder) last told Redis (streams/ledger.py).

    Attributes
    ----------
    at
        When it last beat (seconds since the epoch, Redis's clock: the API compares it
        with Redis's time, whatever the hosts' clocks say).
    deleted_at
        The last deletion request it applied (:meth:`StateStore.request_log_deletion`);
        0.0 if none.
    files, bytes
        What applying that request deleted (0 when it was applied before a restart).
    """

    at: float
    deleted_at: float = 0.0
    files: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A saved model: its snapshot bytes, version and the training offsets it covers.

    `saved_at` is when this version was saved; `created_at` when the policy's first
    model was (its lineage began: every later version learned on from it).
    """

    snapshot: bytes
    version: int
    offsets: dict[int, int]
    saved_at: float
    created_at: float


@dataclass(frozen=True, slots=True)
class KeptModel:
    """A kept model version, as its policy's list of versions says it.

    Attributes
    ----------
    version, saved_at, created_at
        As the :class:`ModelRecord` of that version had them.
    source
        What saved it (:data:`ModelSource`).
    size
        Its snapshot's bytes.
    restored_from
        For a rollback, the version it serves again; else None.
    """

    version: int
    saved_at: float
    created_at: float
    source: ModelSource
    size: int
    restored_from: int | None


@dataclass(frozen=True, slots=True)
class HashChange:
    """Writes to one Redis hash made in a model's save (:meth:`StateStore.save_model`).

    `clear` deletes the hash first; then the fields in `delete` are deleted and those in
    `set` set.
    """

    key: str
    set: Mapping[str, bytes] | None = None
    delete: Sequence[str] = ()
    clear: bool = False


@dataclass(frozen=True, slots=True)
class ModelKeys:
    """The Redis keys of a policy's model: the served one, the kept versions, their snapshots."""

    model: str
    versions: str
    snapshots: str


def model_keys(prefix: str, policy: str) -> ModelKeys:
    """Return the keys of `policy`'s model under key prefix `prefix`.

    Examples
    --------
    >>> keys = model_keys("sb", "main")
    >>> keys.model, keys.versions, keys.snapshots
    ('sb:model:main', 'sb:model-versions:main', 'sb:model-snapshots:main')
    """
    return ModelKeys(
        f"{prefix}:model:{policy}",
        f"{prefix}:model-versions:{policy}",
        f"{prefix}:model-snapshots:{policy}",
    )


class StateStore:
    """Async access to streambandit's Redis state.

    Parameters
    ----------
    redis
        A ``redis.asyncio.Redis`` client (bytes responses).
    prefix
        Key prefix, from ``settings.redis.key_prefix``.
    dedup_window_seconds
        How long event ids learned and logged are remembered, from
        ``settings.redis.dedup_window_seconds``.
    model_history, model_history_seconds
        How many model versions each policy keeps, and the least time between two kept
        versions for one the learner saved to be kept, from ``settings.learner``.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str = "sb",
        *,
        dedup_window_seconds: float = _LEARNED_WINDOW_SECONDS,
        model_history: int = _MODEL_HISTORY,
        model_history_seconds: float = _MODEL_HISTORY_SECONDS,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.dedup_window_seconds = dedup_window_seconds
        self.model_history = model_history
        self.model_history_seconds = model_history_seconds
        self._save_model = redis.register_script(_SAVE_MODEL)
        self._has = redis.register_script(_HAS)
        self._add = redis.register_script(_ADD)
        self._note_decision = redis.register_script(_NOTE_DECISION)
        self._update_consent = redis.register_script(_UPDATE_CONSENT)
        self._mark_erased = redis.register_script(_MARK_ERASED)
        self._read_session = redis.register_script(_READ_SESSION)
        self._claim_log = redis.register_script(_CLAIM_LOG)
        self._request_log_deletion = redis.register_script(_REQUEST_LOG_DELETION)

    def key(self, *parts: str) -> str:
        """Return the full key for `parts`: ``prefix:part:part``."""
        return ":".join((self.prefix, *parts))

    # -- policy settings ---------------------------------------------------------------

    async def policy_settings(self, policy: str) -> tuple[PolicySettings, int] | None:
        """Return a policy's settings and their version, or None when never set."""
        raw, version = await self.redis.mget(
            self.key("policy", policy, "settings"), self.key("policy", policy, "settings", "v")
        )
        if raw is None:
            return None
        return PolicySettings.model_validate_json(raw), int(version or 0)

    async def settings_version(self, policy: str) -> int:
        """Return the version of a policy's settings (0 when never set)."""
        raw = await self.redis.get(self.key("policy", policy, "settings", "v"))
        return int(raw or 0)

    async def set_policy_settings(self, policy: str, settings: PolicySettings) -> int:
        """Store new settings for `policy` and return their version."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self._put_settings(pipe, policy, settings, time.time())
            _, version, _ = await pipe.execute()
        return int(version)

    def _put_settings(
        self, pipe: Pipeline, policy: str, settings: PolicySettings, now: float
    ) -> None:
        """Queue on `pipe` the three writes of new settings: them, their version, when."""
        pipe.set(self.key("policy", policy, "settings"), settings.model_dump_json())
        pipe.incr(self.key("policy", policy, "settings", "v"))
        pipe.set(self.key("policy", policy, "settings", "at"), repr(now))

    async def settings_changed_at(self, policy: str) -> float | None:
        """Return when a policy's settings were last changed, or None if they never were."""
        raw = await self.redis.get(self.key("policy", policy, "settings", "at"))
        return None if raw is None else float(raw)

    async def init_policy_settings(self, policy: str, settings: PolicySettings) -> bool:
        """Store `settings` only if the policy has none yet; return whether stored."""
        stored = await self.redis.set(
            self.key("policy", policy, "settings"), settings.model_dump_json(), nx=True
        )
        if stored:
            await self.redis.incr(self.key("policy", policy, "settings", "v"))
        return bool(stored)

    async def policy_names(self) -> list[str]:
        """Return every policy that has settings, sorted."""
        names = []
        pattern = self.key("policy", "*", "settings")
        async for raw in self.redis.scan_iter(match=pattern, count=200):
            key = _text(raw)
            names.append(key[len(self.prefix) + len(":policy:") : -len(":settings")])
        return sorted(names)

    # -- models ------------------------------------------------------------------------

    async def save_model(
        self,
        policy: str,
        snapshot: bytes,
        version: int,
        offsets: Mapping[int, int],
        learned_ids: Sequence[str] = (),
        *,
        counts: Mapping[str, int] | None = None,
        sums: Mapping[str, float] | None = None,
        expected_version: int | None = None,
        new_lineage: bool = False,
        settings: PolicySettings | None = None,
        created_at: float | None = None,
        source: ModelSource = "learner",
        restored_from: int | None = None,
        hashes: Sequence[HashChange] = (),
    ) -> bool:
        """Atomically store a snapshot, its version and offsets, and the ids it learned.

        The policy's kept versions change in the same transaction (:meth:`model_versions`):
        an import, reset or rollback (`source`) is kept, and so is the version it
        replaces; a version the learner saved is kept when it is the first, or saved at
        least ``model_history_seconds`` after the newest kept one. Beyond
        ``model_history`` versions the oldest are dropped.

        Parameters
        ----------
        new_lineage
            The snapshot does not learn on from the stored one (a reset, an import):
            its creation time is now. Otherwise the first save's is kept.
        settings
            New settings of the policy, stored in the same transaction (as
            :meth:`set_policy_settings` stores them): for a model built from a new spec,
            so that no reader sees the new model with the old spec or the reverse.
        created_at
            The snapshot's lineage began then (a rollback: the restored version's);
            not with `new_lineage`.
        source
            What saves it: the learner, or an admin's import, reset or rollback.
        restored_from
            For a rollback, the version it serves again.
        counts
            Added to the policy's counters in the same transaction, so a crash can
            neither lose nor double them.
        sums
            Likewise, added to the policy's float sums (:meth:`sums`).
        hashes
            Other writes made in the same transaction (the live evaluation's,
            :mod:`bandit.service.liveeval`).
        expected_version
            Save only if the stored model still has this version (0: none stored);
            otherwise nothing changes and False is returned: another writer saved
            meanwhile.

        Returns
        -------
        bool
            Whether the model was saved.
        """
        if new_lineage and created_at is not None:
            msg = "give `new_lineage` or `created_at`, not both"
            raise ValueError(msg)
        now = time.time()
        keys = model_keys(self.prefix, policy)
        lineage = "new" if new_lineage else "keep" if created_at is None else repr(created_at)
        async with self.redis.pipeline(transaction=True) as pipe:
            if expected_version is not None:
                await pipe.watch(keys.model)
                stored = await pipe.hget(keys.model, "version")
                if int(stored or 0) != expected_version:
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
            await self._save_model(
                keys=[keys.model, keys.versions, keys.snapshots],
                args=[
                    snapshot,
                    str(version),
                    json.dumps({str(p): o for p, o in offsets.items()}),
                    repr(now),
                    lineage,
                    source,
                    self.model_history,
                    repr(float(self.model_history_seconds)),
                    "" if restored_from is None else str(restored_from),
                ],
                client=pipe,
            )
            if settings is not None:
                self._put_settings(pipe, policy, settings, now)
            if learned_ids:
                forget = repr(now - self.dedup_window_seconds)
                ids = json.dumps(list(learned_ids))
                learned = [self.key("learned", policy)]
                await self._add(keys=learned, args=[repr(now), ids, forget], client=pipe)
            for name, amount in (counts or {}).items():
                if amount:
                    pipe.hincrby(self.key("counters", policy), name, amount)
            for name, value in (sums or {}).items():
                if value:
                    pipe.hincrbyfloat(self.key("sums", policy), name, value)
            _queue_changes(pipe, hashes)
            try:
                await pipe.execute()
            except WatchError:
                return False
        return True

    async def model_versions(self, policy: str) -> list[KeptModel]:
        """Return the kept versions of `policy`'s model, newest first (their snapshots apart)."""
        raw = await self.redis.hvals(model_keys(self.prefix, policy).versions)
        kept = [_kept_model(json.loads(entry)) for entry in raw]
        return sorted(kept, key=lambda entry: entry.version, reverse=True)

    async def kept_model(self, policy: str, version: int) -> tuple[KeptModel, bytes] | None:
        """Return a kept version of `policy`'s model and its snapshot, or None if not kept."""
        keys = model_keys(self.prefix, policy)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(keys.versions, str(version))
            pipe.hget(keys.snapshots, str(version))
            entry, snapshot = await pipe.execute()
        if entry is None or snapshot is None:
            return None
        return _kept_model(json.loads(entry)), _bytes(snapshot)

    async def forget_offsets(self) -> list[str]:
        """Forget the training offsets every saved model covers; return those policies.

        For a training log that was lost (:func:`bandit.service.recovery.forget_offsets`); the
        snapshots, versions and learned ids stay.
        """
        prefix = model_keys(self.prefix, "").model
        changed = []
        async for raw in self.redis.scan_iter(match=prefix + "*", count=200):
            key = _text(raw)
            if await self.redis.hexists(key, "offsets"):
                await self.redis.hset(key, "offsets", "{}")
                changed.append(key[len(prefix) :])
        return sorted(changed)

    async def load_model(self, policy: str) -> ModelRecord | None:
        """Return the saved model of `policy`, or None."""
        raw = await self.redis.hgetall(model_keys(self.prefix, policy).model)
        if not raw or b"snapshot" not in raw:
            return None
        offsets = json.loads(raw[b"offsets"])
        return ModelRecord(
            snapshot=_bytes(raw[b"snapshot"]),
            version=int(raw[b"version"]),
            offsets={int(p): int(o) for p, o in offsets.items()},
            saved_at=float(raw[b"saved_at"]),
            created_at=float(raw.get(b"created_at", raw[b"saved_at"])),
        )

    async def model_saved_at(self, policy: str) -> float | None:
        """Return when the saved model of `policy` was saved, or None (without its snapshot)."""
        raw = await self.redis.hget(model_keys(self.prefix, policy).model, "saved_at")
        return None if raw is None else float(raw)

    async def model_version(self, policy: str) -> int | None:
        """Return the version of the saved model of `policy`, or None (cheap to poll)."""
        raw = await self.redis.hget(model_keys(self.prefix, policy).model, "version")
        return None if raw is None else int(raw)

    async def learned(self, policy: str, event_ids: Sequence[str]) -> list[bool]:
        """Say, for each event id, whether a saved model of `policy` already learned it."""
        return await self._contains(self.key("learned", policy), event_ids)

    # -- decision logs -----------------------------------------------------------------

    async def logged(self, policy: str, event_ids: Sequence[str]) -> list[bool]:
        """Say, for each event id, whether a decision log already holds it (dedup window)."""
        return await self._contains(self.key("logged", policy), event_ids)

    async def mark_logged(self, policy: str, event_ids: Sequence[str]) -> None:
        """Record that a decision log now holds `event_ids`; forget those past the window."""
        if not event_ids:
            return
        now = time.time()
        forget = repr(now - self.dedup_window_seconds)
        keys = [self.key("logged", policy)]
        await self._add(keys=keys, args=[repr(now), json.dumps(list(event_ids)), forget])

    async def claim_log(
        self, writer: str, policy: str, entries: Sequence[tuple[str, bytes]]
    ) -> list[bool]:
        """Claim `entries` (event id, line) of `policy` for decision-log writer `writer`.

        In one step, each event id that no decision log holds or claimed is recorded as
        logged (:meth:`logged` finds it from now on) and its line kept under the
        writer's claims until :meth:`confirm_log`. Returns, per entry, whether the
        writer is to write it: True for the ids it claimed now or had claimed before.
        """
        if not entries:
            return []
        now = time.time()
        keys = [self.key("logged", policy), self.key("log-claims", writer)]
        args: list[str | bytes] = [repr(now), repr(now - self.dedup_window_seconds), policy]
        for event_id, line in entries:
            args += [event_id, line]
        found = await self._claim_log(keys=keys, args=args)
        return [bool(hit) for hit in found]

    async def confirm_log(self, writer: str, claims: Sequence[tuple[str, str]]) -> None:
        """Forget the claims (policy, event id) of `writer`: their lines are written."""
        if claims:
            fields = [f"{policy} {event_id}" for policy, event_id in claims]
            await self.redis.hdel(self.key("log-claims", writer), *fields)

    async def log_claims(self, writer: str) -> list[tuple[str, str, bytes]]:
        """Return the claims of `writer` not yet confirmed: (policy, event id, line)."""
        raw = await self.redis.hgetall(self.key("log-claims", writer))
        claims = []
        for field, line in raw.items():
            policy, _, event_id = _text(field).partition(" ")
            claims.append((policy, event_id, _bytes(line)))
        return sorted(claims)

    async def _contains(self, key: str, event_ids: Sequence[str]) -> list[bool]:
        if not event_ids:
            return []
        found = await self._has(keys=[key], args=[json.dumps(list(event_ids))])
        return [bool(hit) for hit in found]

    # -- features ----------------------------------------------------------------------

    async def put_features(
        self, kind: FeatureKind, entity: str, features: Mapping[str, float | str], ttl: int
    ) -> None:
        """Merge `features` into an entity's feature hash and refresh its TTL."""
        key = self.key("features", kind, entity)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=_encoded(features))  # type: ignore[arg-type]
            pipe.expire(key, ttl)
            await pipe.execute()

    async def features(self, kind: FeatureKind, entity: str) -> dict[str, float | str]:
        """Return an entity's features (empty when unknown or expired)."""
        return _features(await self.redis.hgetall(self.key("features", kind, entity)))

    async def fold_session(
        self,
        session_id: str,
        events: Sequence[tuple[str, float]],
        fold: Callable[
            [dict[str, float | str], list[int]],
            tuple[Mapping[str, float | str], Mapping[str, float | str]],
        ],
        ttl: int,
        *,
        slack: float = 0.0,
    ) -> list[int]:
        """Fold a session's events into its features, unless their person was erased since.

        Parameters
        ----------
        session_id
            The session (its device's features are kept under the same id).
        events
            ``(pseudonym, accepted_at)`` of each event, in order. An event that its
            person's erasure covers (:func:`erasure_covers`) is left out.
        fold
            ``fold(stored, kept)`` gets the session's stored features and the indices of
            the events kept, and returns the session's and the device's features to
            merge in (called only when some are kept).
        ttl
            Lifetime of both hashes and of each person's list of sessions.
        slack
            See :func:`erasure_covers`.

        Returns
        -------
        list[int]
            The indices of the events folded in.

        Notes
        -----
        One transaction, watched on the people's erasure markers and both feature
        hashes: an erasure meanwhile (which sets the marker before it deletes) makes it
        start again, so nothing an erasure deleted is written back. Each person whose
        events were kept gets the session in their list, for their erasure.
        """
        people = sorted({pseudonym for pseudonym, _ in events})
        markers = [self.erased_key(pseudonym) for pseudonym in people]
        session_key = self.key("features", "session", session_id)
        device_key = self.key("features", "device", session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*markers, session_key, device_key)
                    *found, stored = await self._read_session(
                        keys=[*markers, session_key], client=pipe
                    )
                    erased = {
                        pseudonym: None if at is None else float(at)
                        for pseudonym, at in zip(people, found, strict=True)
                    }
                    kept = [
                        i
                        for i, (pseudonym, accepted_at) in enumerate(events)
                        if not erasure_covers(accepted_at, erased[pseudonym], slack)
                    ]
                    if not kept:
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return []
                    pairs = dict(zip(stored[::2], stored[1::2], strict=True))
                    session, device = fold(_features(pairs), kept)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    for key, features in ((session_key, session), (device_key, device)):
                        pipe.hset(key, mapping=_encoded(features))  # type: ignore[arg-type]
                        pipe.expire(key, ttl)
                    for pseudonym in sorted({events[i][0] for i in kept}):
                        sessions = self.key("user", pseudonym, "sessions")
                        pipe.sadd(sessions, session_id)
                        pipe.expire(sessions, ttl)
                    await pipe.execute()
                except WatchError:
                    continue
                return kept

    async def decision_policy(self, event_id: str) -> str | None:
        """Return the policy of a decision the join holds (pending or done), or None.

        None too for a decision not yet read by the join, or erased.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.key("join", "event", event_id), "policy")
            pipe.get(self.key("join", "done", event_id))
            pending, done = await pipe.execute()
        if pending is not None:
            return _text(pending)
        if done is None:
            return None
        policy = _text(done).split(" ", 1)[0]
        return None if policy == "_erased" else policy

    # -- consent -------------------------------------------------------------------------

    async def consent(self, pseudonym: str) -> ConsentRecord | None:
        """Return a person's consent record, or None when they have none."""
        return (await self.consent_and_secret(pseudonym))[0]

    async def consent_and_secret(self, pseudonym: str) -> tuple[ConsentRecord | None, bytes | None]:
        """Return a person's consent record (None: none) and their secret (None: none yet)."""
        fields = await self.redis.hgetall(self.key("consent", pseudonym))
        secret = fields.pop(CONSENT_SECRET_FIELD.encode(), None)
        record = _consent_record(fields) if fields else None
        return record, None if secret is None else _bytes(secret)

    async def note_decision(
        self,
        pseudonym: str,
        event_id: str,
        ttl: int,
        recent: bytes | None = None,
        *,
        started_at: float,
        slack: float = 0.0,
    ) -> bytes | None:
        """Remember a person's decision (for erasure); return their secret.

        The set of their decisions' ids (what an erasure removes from the join) lives
        `ttl` after the newest: the engine passes the time the join may still hold a
        decision. `recent`, the decision as the privacy page shows it, joins their last
        ``RECENT_DECISIONS``, kept ``RECENT_SECONDS``. The secret is made now if they
        have none. One script: when the person was erased at or after `started_at` (less
        `slack`, see :func:`erasure_covers`) — a rank that read their consent before the
        erasure — nothing is written and None is returned: the caller must keep nothing
        of the decision.
        """
        found = await self._note_decision(
            keys=[
                self.key("consent", pseudonym),
                self.key("user", pseudonym, "decisions"),
                self.key("user", pseudonym, "recent"),
                self.erased_key(pseudonym),
            ],
            args=[
                secrets.token_bytes(32),
                event_id,
                ttl,  # the ids of their decisions the join may still hold
                recent or b"",
                RECENT_DECISIONS - 1,
                RECENT_SECONDS,
                repr(started_at),
                repr(slack),
            ],
        )
        return None if found is None else _bytes(found)

    def erased_key(self, pseudonym: str) -> str:
        """Return the key of a person's erasure marker: the time of their last erasure.

        Named by a hash of the pseudonym, not the pseudonym itself; kept for
        ``privacy.erasure_memory_seconds`` after the erasure.
        """
        return self.key("erased", hashlib.sha256(pseudonym.encode()).hexdigest()[:32])

    async def erased_at(self, pseudonym: str) -> float | None:
        """Return when the person was last erased (seconds since the epoch), or None."""
        found = await self.redis.get(self.erased_key(pseudonym))
        return None if found is None else float(found)

    async def recent_decisions(self, pseudonym: str) -> list[dict[str, Any]]:
        """Return a person's last decisions (newest first), as :meth:`note_decision` kept them."""
        found = await self.redis.lrange(self.key("user", pseudonym, "recent"), 0, -1)
        return [json.loads(entry) for entry in found]

    async def note_session(self, pseudonym: str, session_id: str, ttl: int) -> None:
        """Remember that a session (and its device features) is a person's (for erasure)."""
        key = self.key("user", pseudonym, "sessions")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, session_id)
            pipe.expire(key, ttl)
            await pipe.execute()

    async def held(
        self, pseudonym: str, record: ConsentRecord | None, secret: bytes | None
    ) -> dict[str, Any]:
        """Return everything held about a person: consents, sessions' features, decisions.

        `record` and `secret` are theirs, as :meth:`consent_and_secret` read them.
        """
        sessions = sorted(
            _text(s) for s in await self.redis.smembers(self.key("user", pseudonym, "sessions"))
        )
        decisions = sorted(
            _text(e) for e in await self.redis.smembers(self.key("user", pseudonym, "decisions"))
        )
        features = {
            session: {
                "session": await self.features("session", session),
                "device": await self.features("device", session),
            }
            for session in sessions
        }
        pending = [
            event_id
            for event_id in decisions
            if await self.redis.exists(self.key("join", "event", event_id))
        ]
        recent = await self.recent_decisions(pseudonym)
        return {
            "consent": None if record is None else record.model_dump(mode="json"),
            "has_secret": secret is not None,
            "sessions": features,
            "recent_decisions": decisions,
            "pending_decisions": pending,
            "last_decisions": recent,
        }

    async def erase(
        self, pseudonym: str, remember_seconds: int, now: float | None = None
    ) -> dict[str, int]:
        """Erase a person: consents and secret, their sessions' features, pending joins.

        First the person's erasure marker is set to `now` (default: this host's clock)
        for `remember_seconds`: from then on every script that writes about them
        refuses what was accepted before it (:func:`erasure_covers`), so a rank, event
        or consent change on its way cannot bring anything back, however late it is
        read. Only then is what they have read and deleted.

        A pending decision is removed from the join and marked done for
        `remember_seconds`, so its record, should it still be on its way, is taken as a
        duplicate and dropped, and its rewards as late. Logged decisions keep their
        subject tokens, which nothing can link to the person once the secret is gone.
        """
        when = time.time() if now is None else now
        await self._mark_erased(
            keys=[self.erased_key(pseudonym)], args=[repr(when), remember_seconds]
        )
        sessions_key = self.key("user", pseudonym, "sessions")
        decisions_key = self.key("user", pseudonym, "decisions")
        sessions = [_text(s) for s in await self.redis.smembers(sessions_key)]
        decisions = [_text(e) for e in await self.redis.smembers(decisions_key)]
        removed = 0
        for event_id in decisions:
            event_key = self.key("join", "event", event_id)
            policy = await self.redis.hget(event_key, "policy")
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(event_key)
                pipe.zrem(self.key("join", "due"), event_id)
                pipe.zrem(self.key("join", "orphans"), event_id)
                pipe.set(
                    self.key("join", "done", event_id),
                    _text(policy) if policy else "_erased",
                    nx=True,
                    ex=remember_seconds,
                )
                deleted, *_ = await pipe.execute()
            removed += int(deleted)
        feature_keys = [
            self.key("features", kind, session)
            for session in sessions
            for kind in ("session", "device")
        ]
        existing = await self.redis.delete(
            self.key("consent", pseudonym),
            sessions_key,
            decisions_key,
            self.key("user", pseudonym, "recent"),
            *feature_keys,
        )
        return {
            "sessions": len(sessions),
            "pending_decisions": removed,
            "keys_deleted": int(existing),
        }

    async def update_consent(
        self,
        pseudonym: str,
        changes: ConsentRecord,
        *,
        accepted_at: float | None = None,
        slack: float = 0.0,
    ) -> ConsentRecord | None:
        """Store the consents `changes` holds (the others stay) and return the whole record.

        Each consent is a field of the person's hash, written and read back in one
        script: concurrent changes of different consents both stay. With
        `accepted_at`, nothing is written and None is returned when the person was
        erased at or after it (less `slack`, :func:`erasure_covers`).
        """
        fields = [item for pair in changes.to_redis().items() for item in pair]
        found = await self._update_consent(
            keys=[self.key("consent", pseudonym), self.erased_key(pseudonym)],
            args=["" if accepted_at is None else repr(accepted_at), repr(slack), *fields],
        )
        if found is None:
            return None
        return ConsentRecord.from_redis(dict(zip(found[::2], found[1::2], strict=True)))

    # -- counters ----------------------------------------------------------------------

    async def count(self, policy: str, counts: Mapping[str, int]) -> None:
        """Add to a policy's counters."""
        if not counts:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, amount in counts.items():
                pipe.hincrby(self.key("counters", policy), name, amount)
            await pipe.execute()

    async def counters(self, policy: str) -> dict[str, int]:
        """Return a policy's counters."""
        raw = await self.redis.hgetall(self.key("counters", policy))
        return {_text(name): int(value) for name, value in raw.items()}

    async def sums(self, policy: str) -> dict[str, float]:
        """Return a policy's float sums (added by :meth:`save_model`)."""
        raw = await self.redis.hgetall(self.key("sums", policy))
        return {_text(name): float(value) for name, value in raw.items()}

    async def forget_figures(
        self,
        policy: str,
        counters: Sequence[str],
        sums: Sequence[str],
        start: Mapping[str, float] | None = None,
    ) -> None:
        """Forget some of a policy's counters and sums, and set the sums `start`, at once."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if counters:
                pipe.hdel(self.key("counters", policy), *counters)
            if sums:
                pipe.hdel(self.key("sums", policy), *sums)
            if start:
                pipe.hset(
                    self.key("sums", policy),
                    mapping={name: repr(value) for name, value in start.items()},
                )
            await pipe.execute()

    # -- the decision log's deletions -----------------------------------------------------

    async def request_log_deletion(self) -> float:
        """Ask every decision-log writer to delete its files; return the request's time.

        The time is Redis's, and later than any request before it.
        """
        found = await self._request_log_deletion(keys=[self.key("log", "deletion")])
        return float(found)

    async def log_deletion_requested(self) -> float | None:
        """Return the time of the last request to delete the decision log, or None."""
        found = await self.redis.get(self.key("log", "deletion"))
        return None if found is None else float(found)

    async def redis_time(self) -> float:
        """Return Redis's time (seconds since the epoch)."""
        seconds, microseconds = await self.redis.time()
        return seconds + microseconds / 1_000_000

    async def note_log_writer(
        self, writer_id: str, *, deleted_at: float = 0.0, files: int = 0, size: int = 0
    ) -> None:
        """Record that a decision-log writer lives (now, by Redis's clock), and its deletion.

        `deleted_at` is the last deletion request it applied; `files` and `size` (bytes)
        what that deleted.
        """
        value = json.dumps(
            {"at": await self.redis_time(), "deleted_at": deleted_at,
             "files": files, "bytes": size}
        )  # fmt: skip
        await self.redis.hset(self.key("log", "writers"), writer_id, value)

    async def log_writers(self, forget_after: float | None = None) -> dict[str, LogWriter]:
        """Return what each decision-log writer last told, by writer id.

        With `forget_after` (seconds), writers silent that long are forgotten (a folder
        gone for good); not returned either.
        """
        raw = await self.redis.hgetall(self.key("log", "writers"))
        found = {_text(name): LogWriter(**json.loads(value)) for name, value in raw.items()}
        if forget_after is None:
            return found
        now = await self.redis_time()
        silent = [name for name, writer in found.items() if now - writer.at > forget_after]
        if silent:
            await self.redis.hdel(self.key("log", "writers"), *silent)
        return {name: w for name, w in found.items() if name not in silent}

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete keys (a helper for erasure and tests)."""
        keys = list(keys)
        if keys:
            await self.redis.delete(*keys)


_RECORDS: dict[tuple[tuple[Any, Any], ...], ConsentRecord] = {}
"""Consent records by their stored fields: a person's record is read on each rank."""


def _queue_changes(pipe: Pipeline, hashes: Sequence[HashChange]) -> None:
    """Queue on `pipe` the writes of `hashes`, in order."""
    for change in hashes:
        if change.clear:
            pipe.delete(change.key)
        if change.delete:
            pipe.hdel(change.key, *change.delete)
        if change.set:
            pipe.hset(change.key, mapping=cast(Any, dict(change.set)))


def _consent_record(fields: Mapping[Any, bytes | str]) -> ConsentRecord:
    """Read a consent record from its hash fields, once per distinct content."""
    key = tuple(sorted(fields.items()))
    record = _RECORDS.get(key)
    if record is None:
        if len(_RECORDS) >= 65_536:
            _RECORDS.clear()
        record = _RECORDS[key] = ConsentRecord.from_redis(fields)
    return record


def _kept_model(entry: Mapping[str, Any]) -> KeptModel:
    """Read a kept version's entry (the JSON the save script writes)."""
    restored = entry.get("restored_from")
    return KeptModel(
        version=int(entry["version"]),
        saved_at=float(entry["saved_at"]),
        created_at=float(entry["created_at"]),
        source=cast(ModelSource, entry["source"]),
        size=int(entry["bytes"]),
        restored_from=None if restored is None else int(restored),
    )


def _encoded(features: Mapping[str, float | str]) -> dict[str, str]:
    """Return features as the fields of their Redis hash (one JSON value each)."""
    return {name: json.dumps(value) for name, value in features.items()}


def _features(raw: Mapping[Any, Any]) -> dict[str, float | str]:
    """Read features from the fields of their Redis hash."""
    return {_text(name): json.loads(value) for name, value in raw.items()}


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
