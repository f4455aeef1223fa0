r"""Live evaluation: candidate policies estimated on a served policy's live decisions.

A policy's :class:`~bandit.wire.schemas.LiveEvaluationSettings` name up to
:data:`~bandit.wire.schemas.MAX_CANDIDATES` candidate policy specs. The learner, for
each single-slot decision it learns from (or logs in ``LoggingOnly`` mode) with learning
consent, computes each candidate's probability :math:`\pi(a \mid x)` of the logged
choice :math:`a` among the offered actions, before the candidate learns from it
(counterfactual learning, as replay's ``policy:`` targets do: each candidate is then
evaluated on decisions it has not learned from). The term's importance weight
:math:`w = \pi(a \mid x) / p` (the logged probability :math:`p`) and reward feed the
candidate's anytime-valid confidence sequence
(:class:`replay.sequential.BettingSequence`): the IPS estimate of its mean reward per
decision and bounds that hold at every look at once. One more row, ``logged``, is the
served policy's own value (:math:`w = 1`), for comparison. A learning candidate changes
along the traffic; as each decision is scored before the candidate learns from it, its
sequence covers the mean value of its successive versions (Karampatziakis, Mineiro &
Ramdas 2021), which tends to its current value as it settles. Each candidate's sequence
holds at level ``alpha`` on its own: for all of them at once, use ``alpha`` divided by
their number.

The state is kept in Redis under the state's prefix::

    sb:evaluation:{policy}          hash: "settings" -> JSON of the alpha and reward range
                                    the sequences run at; "candidate:{spec}" -> a JSON
                                    line of its counts and times, then its sequence's
                                    bytes (:meth:`BettingSequence.to_bytes`)
    sb:evaluation-models:{policy}   hash: spec -> the candidate's policy snapshot

and written by the learner in the transaction that saves the policy's model
(:meth:`bandit.service.state.StateStore.save_model`), with the training offsets that
model covers, so a crash neither loses nor doubles a term, as for the apprentice
figures (:mod:`bandit.service.apprentice`). The training topic is keyed by policy, so
one learner writes a policy's evaluation, in order: a betting sequence is not a sum and
could not be merged from several writers.

Changing a policy's candidates starts the new ones and forgets the removed ones;
changing the reward range or alpha starts every sequence again (the old ones were valid
only at their own); setting ``live_evaluation`` to null forgets them all. A reward
outside the range is clipped to it and counted (``clipped``): the sequence is valid for
the clipped reward.

Examples
--------
>>> from bandit.wire.schemas import LiveEvaluationSettings
>>> from policies import Action
>>> evaluation = LiveEvaluation.restore({}, {})
>>> evaluation.configure(LiveEvaluationSettings(candidates=["uniform"]), now=0.0)
>>> actions = [Action("a"), Action("b")]
>>> for i in range(4):  # logged with probability 0.5: uniform's weight is 1
...     evaluation.observe({}, actions, chosen=i % 2, reward=float(i % 2), probability=0.5,
...                        now=1.0)
>>> figures = evaluation.figures()
>>> [(f.candidate, f.n, f.estimate) for f in figures.candidates]
[('uniform', 4, 0.5)]
>>> figures.logged.estimate
0.5
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import structlog

from bandit.errors import ConfigurationError, InvalidModelError, PolicyError, SnapshotError
from bandit.service.state import HashChange, StateStore
from bandit.wire.schemas import LiveEvaluationSettings
from policies import Action, Context, Policy, make_policy
from replay.sequential import BettingSequence, SequenceReading

__all__ = [  # noqa: RUF022 - plain sorted()
    "CandidateFigures",
    "LOGGED",
    "LiveEvaluation",
    "LiveFigures",
    "check_candidates",
    "evaluation_keys",
    "load_evaluation",
    "read_figures",
]

_log = structlog.get_logger(__name__)

LOGGED = "logged"
"""The row of the served policy's own value (the logged decisions, weight 1)."""
_LOGGED_FIELD = "~logged"  # its field: no policy spec starts with "~"
_SETTINGS_FIELD = "settings"
_CANDIDATE = "candidate:"


def evaluation_keys(store: StateStore, policy: str) -> tuple[str, str]:
    """Return the keys of `policy`'s live evaluation: its figures, its candidates' models."""
    return store.key("evaluation", policy), store.key("evaluation-models", policy)


@dataclass(frozen=True, slots=True)
class CandidateFigures:
    """One candidate's live figures.

    Attributes
    ----------
    candidate
        Its spec (or :data:`LOGGED` for the served policy's own value).
    n
        Decisions it was evaluated on.
    estimate
        IPS estimate of its mean reward per decision (None before the first decision).
    lower, upper
        The anytime-valid bounds of that value, at level ``1 - alpha``: they hold at
        every look at once, so they may be read at any time.
    clipped
        Rewards outside the reward range, clipped to it.
    learn_failures
        Decisions the candidate could not learn from (still evaluated on).
    started_at, updated_at
        When its evaluation started, and when it last counted a decision.
    """

    candidate: str
    n: int
    estimate: float | None
    lower: float
    upper: float
    clipped: int
    learn_failures: int
    started_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """A policy's live evaluation: its settings and every candidate's figures."""

    alpha: float
    reward_range: tuple[float, float]
    candidates: list[CandidateFigures]
    logged: CandidateFigures
    skipped: int = 0
    """Multi-slot decisions, which are not evaluated."""


@dataclass(slots=True)
class _Candidate:
    """A candidate in the learner: its sequence, its policy, its counts."""

    spec: str
    sequence: BettingSequence
    policy: Policy | None  # None for the logged row
    started_at: float
    updated_at: float | None = None
    clipped: int = 0
    learn_failures: int = 0
    weights: list[float] = field(default_factory=list)  # terms not yet in the sequence
    rewards: list[float] = field(default_factory=list)
    dirty: bool = False
    model_dirty: bool = False

    def flush(self) -> None:
        if self.weights:
            self.sequence.update(np.array(self.weights), np.array(self.rewards))
            self.weights, self.rewards = [], []

    def stored(self) -> bytes:
        self.flush()
        return json.dumps(self._meta()).encode() + b"\n" + self.sequence.to_bytes()

    def figures(self) -> CandidateFigures:
        self.flush()
        return _figures(self.spec, self.sequence.reading(), self._meta())

    def _meta(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "clipped": self.clipped,
            "learn_failures": self.learn_failures,
        }


class LiveEvaluation:
    """A policy's live evaluation in the learner: update, then save with the model.

    Build it with :meth:`restore` from what Redis holds (:func:`load_evaluation`),
    :meth:`configure` it with the policy's settings, :meth:`observe` each decision, and
    write :meth:`changes` in the model's save; then call :meth:`saved`.
    """

    def __init__(self) -> None:
        self.alpha: float | None = None
        self.reward_range: tuple[float, float] | None = None
        self.candidates: dict[str, _Candidate] = {}
        self.logged: _Candidate | None = None
        self.skipped = 0
        self._forget_all = False
        self._removed: set[str] = set()
        self._saved_models: dict[str, bytes] = {}
        self._pending_models: dict[str, bytes] = {}

    @property
    def active(self) -> bool:
        """Whether any decision is evaluated (the settings name a live evaluation)."""
        return self.logged is not None

    # -- building ----------------------------------------------------------------------

    @classmethod
    def restore(cls, figures: Mapping[str, bytes], models: Mapping[str, bytes]) -> LiveEvaluation:
        """Rebuild the evaluation saved in Redis (the two hashes, fields decoded to text).

        A candidate whose stored state cannot be read is dropped, with a log line; the
        next :meth:`configure` starts it again.
        """
        evaluation = cls()
        raw_settings = figures.get(_SETTINGS_FIELD)
        if raw_settings is None:
            return evaluation
        try:
            settings = json.loads(raw_settings)
            low, high = settings["reward_range"]
            evaluation.alpha = float(settings["alpha"])
            evaluation.reward_range = (float(low), float(high))
            evaluation.skipped = int(settings.get("skipped", 0))
        except (ValueError, KeyError, TypeError) as error:  # started again, all of it
            _log.warning("evaluation.unreadable", candidate=None, reason=str(error))
            evaluation._reset()
            return evaluation
        for name, value in figures.items():
            if not name.startswith(_CANDIDATE):
                continue
            spec = name[len(_CANDIDATE) :]
            try:
                meta, sequence = _parse_stored(value)
                policy = None
                if spec != _LOGGED_FIELD:
                    snapshot = models.get(spec)
                    policy = make_policy(spec) if snapshot is None else Policy.restore(snapshot)
                    if snapshot is not None:
                        evaluation._saved_models[spec] = snapshot
                candidate = _Candidate(
                    spec,
                    sequence,
                    policy,
                    float(meta["started_at"]),
                    None if meta.get("updated_at") is None else float(meta["updated_at"]),
                    int(meta.get("clipped", 0)),
                    int(meta.get("learn_failures", 0)),
                )
            except (ValueError, KeyError, TypeError, SnapshotError, PolicyError) as error:
                _log.warning("evaluation.unreadable", candidate=spec, reason=str(error))
                continue
            if spec == _LOGGED_FIELD:
                evaluation.logged = candidate
            else:
                evaluation.candidates[spec] = candidate
        return evaluation

    def configure(self, settings: LiveEvaluationSettings | None, *, now: float) -> None:
        """Follow the policy's settings: start, keep and forget candidates (module doc)."""
        if settings is None:
            if self.alpha is not None:
                self._reset()
            return
        if (self.alpha, self.reward_range) != (settings.alpha, settings.reward_range):
            if self.alpha is not None:
                self._reset()
            self.alpha, self.reward_range = settings.alpha, settings.reward_range
        if self.logged is None:
            self.logged = self._fresh(_LOGGED_FIELD, None, now)
        for spec in list(self.candidates):
            if spec not in settings.candidates:
                del self.candidates[spec]
                self._saved_models.pop(spec, None)
                self._removed.add(spec)
        for spec in settings.candidates:
            if spec in self.candidates:
                continue
            try:
                policy = make_policy(spec)
            except (ConfigurationError, PolicyError, TypeError, ValueError) as error:
                _log.warning("evaluation.candidate_refused", candidate=spec, reason=str(error))
                continue
            self.candidates[spec] = self._fresh(spec, policy, now)
            self._removed.discard(spec)

    def _reset(self) -> None:
        """Forget every candidate, here and (at the next save) in Redis."""
        self.alpha = self.reward_range = self.logged = None
        self.candidates.clear()
        self.skipped = 0
        self._removed.clear()
        self._saved_models.clear()
        self._forget_all = True

    def _fresh(self, spec: str, policy: Policy | None, now: float) -> _Candidate:
        assert self.alpha is not None
        assert self.reward_range is not None
        low, high = self.reward_range
        sequence = BettingSequence(alpha=self.alpha, low=low, high=high)
        learns = policy is not None and policy.learns
        return _Candidate(spec, sequence, policy, now, dirty=True, model_dirty=learns)

    # -- the decisions -------------------------------------------------------------------

    def observe(
        self,
        context: Context,
        actions: Sequence[Action],
        *,
        chosen: int,
        reward: float,
        probability: float,
        now: float,
    ) -> None:
        """Evaluate every candidate on one logged decision, then let it learn from it."""
        if self.logged is None or self.reward_range is None:
            return
        low, high = self.reward_range
        clipped = min(max(reward, low), high)
        for candidate in (self.logged, *self.candidates.values()):
            policy = candidate.policy
            if policy is None:
                weight = 1.0
            else:
                try:
                    target = policy.pmf(context, actions).probabilities[chosen]
                except (PolicyError, ValueError) as error:
                    # a candidate that cannot score the decision is not evaluated on it
                    candidate.learn_failures += 1
                    candidate.dirty = True
                    _log.debug("evaluation.pmf_failed", candidate=candidate.spec, reason=str(error))
                    continue
                weight = target / probability
            candidate.weights.append(weight)
            candidate.rewards.append(clipped)
            candidate.clipped += clipped != reward
            candidate.updated_at = now
            candidate.dirty = True
            if policy is not None and policy.learns:
                try:
                    policy.learn(context, actions, chosen, reward, probability)
                except (PolicyError, ValueError):
                    candidate.learn_failures += 1
                else:
                    candidate.model_dirty = True

    def skip(self) -> None:
        """Count a decision that is not evaluated (a multi-slot one)."""
        if self.logged is not None:
            self.skipped += 1
            self.logged.dirty = True

    def flush(self) -> None:
        """Add the terms observed since the last flush to the sequences.

        CPU-bound numpy work, which mostly releases the GIL: the learner runs it in a thread.
        """
        for candidate in (*self.candidates.values(), *filter(None, [self.logged])):
            candidate.flush()

    def check_models(self) -> None:
        """Put back, from their last saved state, candidates whose model is not finite."""
        for candidate in self.candidates.values():
            policy = candidate.policy
            if policy is None or not candidate.model_dirty:
                continue
            try:
                policy.check_model()
            except InvalidModelError as error:
                saved = self._saved_models.get(candidate.spec)
                candidate.policy = (
                    make_policy(candidate.spec) if saved is None else Policy.restore(saved)
                )
                candidate.learn_failures += 1
                _log.warning("evaluation.model_reset", candidate=candidate.spec, reason=str(error))

    # -- reading and saving ----------------------------------------------------------------

    def figures(self) -> LiveFigures | None:
        """Return the figures now (None when no evaluation runs)."""
        if self.logged is None or self.alpha is None or self.reward_range is None:
            return None
        return LiveFigures(
            alpha=self.alpha,
            reward_range=self.reward_range,
            candidates=[c.figures() for c in self.candidates.values()],
            logged=self.logged.figures(),
            skipped=self.skipped,
        )

    @property
    def changed(self) -> bool:
        """Whether anything is to be written at the next save."""
        return (
            self._forget_all
            or bool(self._removed)
            or any(c.dirty for c in (*self.candidates.values(), *filter(None, [self.logged])))
        )

    def changes(self, store: StateStore, policy: str) -> list[HashChange]:
        """Return the writes that bring Redis up to this evaluation (for the model's save)."""
        if not self.changed:
            return []
        figures_key, models_key = evaluation_keys(store, policy)
        out: list[HashChange] = []
        if self._forget_all:
            out += [HashChange(figures_key, clear=True), HashChange(models_key, clear=True)]
        elif self._removed:
            removed = sorted(self._removed)
            out += [
                HashChange(figures_key, delete=[_CANDIDATE + spec for spec in removed]),
                HashChange(models_key, delete=removed),
            ]
        if self.logged is None:
            return out
        settings = {"alpha": self.alpha, "reward_range": self.reward_range, "skipped": self.skipped}
        figures = {_SETTINGS_FIELD: json.dumps(settings).encode()}
        models: dict[str, bytes] = {}
        for candidate in (self.logged, *self.candidates.values()):
            if candidate.dirty or self._forget_all:
                figures[_CANDIDATE + candidate.spec] = candidate.stored()
            if candidate.policy is not None and candidate.model_dirty:
                models[candidate.spec] = candidate.policy.snapshot()
        out.append(HashChange(figures_key, set=figures))
        if models:
            out.append(HashChange(models_key, set=models))
        self._pending_models = models
        return out

    def saved(self) -> None:
        """Note that the last :meth:`changes` were written."""
        self._saved_models.update(self._pending_models)
        self._pending_models = {}
        self._forget_all = False
        self._removed.clear()
        for candidate in (*self.candidates.values(), *filter(None, [self.logged])):
            candidate.dirty = candidate.model_dirty = False


def check_candidates(settings: LiveEvaluationSettings | None) -> None:
    """Check that every candidate spec builds a policy (blocking: VW builds a workspace).

    Raises
    ------
    bandit.errors.ConfigurationError
        Naming the candidate (``live_evaluation.candidates.<i>``) and why it does not build.
    """
    for index, spec in enumerate(() if settings is None else settings.candidates):
        try:
            make_policy(spec)
        except (ConfigurationError, PolicyError, TypeError, ValueError) as error:
            msg = f"`live_evaluation.candidates.{index}` ({spec!r}) is not a policy spec: {error}"
            raise ConfigurationError(msg) from None


# -- reading from Redis --------------------------------------------------------------------


async def load_evaluation(store: StateStore, policy: str) -> LiveEvaluation:
    """Read `policy`'s saved live evaluation (empty when none), for the learner."""
    figures_key, models_key = evaluation_keys(store, policy)
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(figures_key)
        pipe.hgetall(models_key)
        figures, models = await pipe.execute()
    return LiveEvaluation.restore(_texts(figures), _texts(models))


async def read_figures(store: StateStore, policy: str) -> LiveFigures | None:
    """Read `policy`'s live figures from Redis (None when it evaluates no candidate).

    Only the small figures hash is read, never the candidates' models.
    """
    figures_key, _ = evaluation_keys(store, policy)
    raw = _texts(await store.redis.hgetall(figures_key))
    if _SETTINGS_FIELD not in raw:
        return None
    settings = json.loads(raw[_SETTINGS_FIELD])
    low, high = settings["reward_range"]
    candidates = []
    logged = None
    for name, value in sorted(raw.items()):
        if not name.startswith(_CANDIDATE):
            continue
        spec = name[len(_CANDIDATE) :]
        try:
            meta, sequence = _parse_stored(value)
            found = _figures(spec, sequence.reading(), meta)
        except (ValueError, KeyError, TypeError) as error:  # the learner starts it again
            _log.warning("evaluation.unreadable", candidate=spec, reason=str(error))
            continue
        if spec == _LOGGED_FIELD:
            logged = found
        else:
            candidates.append(found)
    if logged is None:
        return None
    return LiveFigures(
        alpha=float(settings["alpha"]),
        reward_range=(float(low), float(high)),
        candidates=candidates,
        logged=logged,
        skipped=int(settings.get("skipped", 0)),
    )


def _parse_stored(value: bytes) -> tuple[dict[str, Any], BettingSequence]:
    head, sep, body = value.partition(b"\n")
    if not sep:
        msg = "a stored candidate must be a JSON line then a sequence"
        raise ValueError(msg)
    meta: dict[str, Any] = json.loads(head)
    return meta, BettingSequence.from_bytes(body)


def _figures(spec: str, reading: SequenceReading, meta: Mapping[str, Any]) -> CandidateFigures:
    updated = meta.get("updated_at")
    estimate = reading.estimate
    return CandidateFigures(
        candidate=LOGGED if spec == _LOGGED_FIELD else spec,
        n=reading.n,
        estimate=None if estimate is None or not math.isfinite(estimate) else estimate,
        lower=reading.lower,
        upper=reading.upper,
        clipped=int(meta.get("clipped", 0)),
        learn_failures=int(meta.get("learn_failures", 0)),
        started_at=datetime.fromtimestamp(float(meta["started_at"]), UTC),
        updated_at=None if updated is None else datetime.fromtimestamp(float(updated), UTC),
    )


def _texts(raw: Mapping[Any, Any]) -> dict[str, bytes]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v if isinstance(v, bytes) else str(v).encode()
        )
        for k, v in raw.items()
    }
