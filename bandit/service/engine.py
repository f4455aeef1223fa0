"""The decision engine: the served policies in memory, hot-swapped from Redis, and rank.

Every served policy (``settings.policies``) lives in memory as a :class:`LoadedPolicy`:
the policy object, the version of the model it holds, and the settings applied to it.
Rank reads it once per request, so a swap is atomic: a request sees the old model or
the new one, never a mix.

Startup
    Each policy's settings are initialised in Redis from its spec (never overwriting
    settings an admin changed), then the saved model is restored if there is one, else
    the policy is built from the spec in its settings (model version 0). If Redis is
    unreachable, policies are built from ``settings.policies`` and the poller catches up
    when Redis answers.
Hot swap
    A background task polls each policy's model version and settings version every
    ``settings.api.model_poll_seconds``. A new model version (newer or older: a rollback
    is a new version too) is restored off the event loop, checked to be finite
    (:meth:`policies.Policy.check_model`), configured with the current settings, and
    swapped in. A model that does not restore or is not finite is refused: the one
    served so far stays, ``model.rejected`` is logged and
    ``streambandit_model_rejected_total`` counts it (:attr:`DecisionEngine.rejections`).
    Should a served model still fail to give a finite distribution, the baseline
    decides that request (reason ``pmf_not_finite``): rank never fails for it.

    A new settings version is applied to the running policy with
    :meth:`policies.Policy.configure`: exploration parameters and the floor change, what
    the policy learned does not.
Rank
    :meth:`DecisionEngine.rank` reads the person's consent (:mod:`bandit.privacy.consent`) and
    the session and device features kept in Redis when the request names them, asks
    the served policy (or, without personalisation consent, the baseline policy) for
    its distribution, draws from it seeded by the event id, and returns the
    :class:`~bandit.wire.schemas.Decision` to log: without learning consent, with no
    feature and ``learn=False``. Consent that cannot be read counts as not given.
Kill switch
    While a policy's live setting ``baseline_forced`` is on, every request for it is
    served by the baseline policy (context unseen), logged with the baseline's
    probabilities and ``consent="baseline"``, and still learned from with learning
    consent; the served model is kept. Each process logs ``policy.baseline_forced`` when
    it applies the switch and ``policy.resumed`` when it is released.
Degraded mode
    Feature reads use the short ``settings.redis.socket_timeout_seconds`` and are never
    retried. When one fails, the request is answered from the request's own features
    and the engine is *degraded*: later requests skip Redis (no per-request timeout)
    until the next successful poll shows Redis is back.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pydantic
import structlog
from redis.exceptions import RedisError

from bandit.errors import (
    ConfigurationError,
    InvalidDistributionError,
    InvalidFeaturesError,
    InvalidModelError,
    SnapshotError,
    UnknownServedPolicyError,
)
from bandit.privacy.consent import (
    CONSENT_DENIED,
    CONSENT_GRANTED,
    Consent,
    ConsentRecord,
    effective_consent,
    subject_token,
)
from bandit.privacy.minimise import _NONE_DROPPED, Dropped, Minimiser
from bandit.service.process import stop_task
from bandit.service.state import FeatureKind, StateStore
from bandit.settings import Settings
from bandit.wire.schemas import (
    LENIENT_IDS,
    ActionCache,
    ConsentPath,
    Decision,
    LearningMode,
    LoggedCache,
    MultiSlotRankRequest,
    PolicySettings,
    RankRequest,
    RankSlot,
)
from policies import Action, Choice, Distribution, Policy, decide_ranking, make_policy, slot_seed
from policies.baselines import FixedOrder
from policies.vwtext import SLOT_NAMESPACE

__all__ = [
    "DecisionEngine",
    "LoadedPolicy",
    "RankOutcome",
    "UnknownServedPolicyError",
    "configured",
    "prepared_policy",
]


_REDIS_FAILURES = (RedisError, OSError, TimeoutError)
_ERASED = "erased"
"""What :meth:`DecisionEngine._subject` returns for a person erased while the rank ran
(never a subject token, which is 32 hex digits)."""
_log = structlog.get_logger("bandit.service.engine")


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A served policy as rank sees it: swapped as a whole, never edited.

    Attributes
    ----------
    name
        The policy's name.
    policy
        The policy object.
    version
        Version of the saved model it was restored from; 0 when built from its spec.
    saved_at
        When that model was saved (or the policy built), seconds since the epoch.
    settings
        The settings applied to it.
    settings_version
        Version of those settings in Redis (0 when Redis was unreachable).
    snapshot
        The saved model it was restored from (None: built from its spec):
        :func:`prepared_policy` rebuilds the same policy from it and `settings`
        elsewhere (the explanation helpers, :mod:`bandit.service.explainer`).
    """

    name: str
    policy: Policy
    version: int
    saved_at: float
    settings: PolicySettings
    settings_version: int
    snapshot: bytes | None = None

    @property
    def model_version(self) -> str:
        """The model version as decisions log it."""
        return str(self.version)


@dataclass(frozen=True, slots=True)
class RankOutcome:
    """What rank decided, and how.

    Attributes
    ----------
    decision
        The decision to log and answer with.
    consent
        What the person's consent allowed: personalisation, learning.
    degraded
        Whether consent or Redis features were wanted but could not be read.
    stored_features
        How many session and device features from Redis the policy saw.
    dropped
        Features the policy did not see (minimisation: undeclared, identifier-like,
        stored features breaking the schema).
    chooser, inputs
        The policy that chose (the served one, or the baseline) and what it saw: for
        :func:`bandit.service.explain.explain`.
    baseline_forced
        Whether the baseline served because the policy's kill switch is on
        (``PolicySettings.baseline_forced``), whatever the consent.
    """

    decision: Decision
    consent: Consent
    degraded: bool
    stored_features: int
    dropped: Dropped = _NONE_DROPPED
    chooser: Policy | None = None
    inputs: tuple[Mapping[str, Mapping[str, Any]], list[Action]] | None = None
    baseline_forced: bool = False


@dataclass(frozen=True, slots=True)
class _SlotChoice:
    """One slot as :meth:`DecisionEngine._choose_slots` decided it."""

    slot: RankSlot
    features: dict[str, Any]
    include: list[int]
    choice: Choice
    learned: tuple[float, ...] | None
    chooser: Policy
    seen: tuple[Mapping[str, Mapping[str, Any]], list[Action]]
    dropped: Dropped


@dataclass(frozen=True, slots=True)
class _Picked:
    """What decided a rank and how: for a multi-slot rank, its first slot's, and every slot."""

    chooser: Policy
    seen: tuple[Mapping[str, Mapping[str, Any]], list[Action]]
    choice: Choice
    learned: tuple[float, ...] | None
    chosen_index: int
    slots: list[_SlotChoice] = dataclasses.field(default_factory=list)
    dropped: Dropped = _NONE_DROPPED


class DecisionEngine:
    """The served policies, kept fresh from Redis, and the rank path.

    Parameters
    ----------
    settings
        Service settings: served policies, limits, poll interval, Redis timeouts.
    store
        State store for the control path: settings, models (polled, loaded).
    features_store
        State store for feature reads on the rank path, whose client has the short
        socket timeout and no retries; defaults to `store`.
    """

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        *,
        features_store: StateStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.features_store = features_store or store
        self._loaded: dict[str, LoadedPolicy] = {}
        self._rejected_models: dict[str, int] = {}
        self.rejections: collections.Counter[tuple[str, str]] = collections.Counter()
        """Models refused by this process, by (policy, reason); see :meth:`_rejected`."""
        self._rejected_logged: dict[tuple[str, str], int] = {}  # model version last logged
        self._locks = {name: asyncio.Lock() for name in settings.policies}
        self._poller: asyncio.Task[None] | None = None
        self.degraded = False
        self._actions: ActionCache = {}  # policy actions of repeated catalog actions
        self._logged: LoggedCache = {}  # and their logged form
        self._baseline = make_policy(settings.privacy.baseline_policy)
        self._baseline_actions: dict[float, Policy] = {}
        self._minimisers: dict[str, tuple[PolicySettings, Minimiser]] = {}
        self._anonymous = (
            CONSENT_GRANTED if settings.privacy.anonymous == "granted" else CONSENT_DENIED
        )
        """Whether Redis is unavailable (features are skipped until a poll succeeds)."""
        self.degraded_since: float | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load every served policy, then start polling for new models and settings.

        Raises
        ------
        bandit.errors.UnknownPolicyError, bandit.errors.ConfigurationError
            If a served policy's spec does not build a policy.
        """
        for name, spec in self.settings.policies.items():
            self._loaded[name] = await self._load(name, spec)
        self._poller = asyncio.create_task(self._poll_loop(), name="engine-poller")

    async def stop(self) -> None:
        """Stop polling."""
        if self._poller is not None:
            await stop_task(self._poller)
            self._poller = None

    # -- reading -------------------------------------------------------------------------

    @property
    def served(self) -> list[str]:
        """Names of the served policies, in settings order."""
        return list(self.settings.policies)

    @property
    def baseline(self) -> Policy:
        """The policy serving requests without personalisation consent."""
        return self._baseline

    def loaded(self, name: str) -> LoadedPolicy | None:
        """Return the policy served under `name` now, or None before it is loaded."""
        return self._loaded.get(name)

    def _require(self, name: str) -> LoadedPolicy:
        loaded = self._loaded.get(name)
        if loaded is None:
            msg = f"no policy named {name!r} is served; served: {self.served}"
            raise UnknownServedPolicyError(msg)
        return loaded

    # -- rank ----------------------------------------------------------------------------

    async def rank(
        self,
        request: RankRequest,
        policy: str,
        *,
        session_id: str | None = None,
        device_id: str | None = None,
        user: str | None = None,
        identifiers: Literal["refuse", "drop"] = "refuse",
    ) -> RankOutcome:
        """Decide `request` with the policy served as `policy`, as `user`'s consent allows.

        Parameters
        ----------
        request
            The validated request.
        policy
            Name of a served policy.
        session_id, device_id
            Entities whose stored features (Redis) join the context, under the
            namespaces ``session`` and ``device``; the request's own features of the
            same name win. Not read without personalisation consent.
        user
            The person's pseudonym (:func:`bandit.privacy.consent.pseudonymise`), whose
            consent is read; None for a request naming nobody
            (``settings.privacy.anonymous``).
        identifiers
            What an identifier-like feature of the request gets
            (:meth:`bandit.privacy.minimise.Minimiser.apply`): refused, or dropped and
            counted (the Personalizer routes, ``settings.privacy.personalizer_identifiers``).

        Returns
        -------
        RankOutcome

        Raises
        ------
        UnknownServedPolicyError
            If `policy` is not served.
        """
        loaded = self._require(policy)
        wanted: list[tuple[FeatureKind, str]] = []
        if session_id is not None:
            wanted.append(("session", session_id))
        if device_id is not None:
            wanted.append(("device", device_id))
        consent = self._anonymous
        stored: dict[str, dict[str, Any]] = {}
        degraded = False
        started_at = time.time() if user is not None else 0.0  # an erasure after it wins
        if user is not None or wanted:
            found = await self._read_state(user, wanted)
            if found is None:
                degraded = True
                if user is not None:
                    consent = CONSENT_DENIED  # unknown consent is no consent
            else:
                record, stored = found
                if user is not None:
                    consent = effective_consent(record, self.settings.privacy)
        minimiser = self._minimiser(loaded)
        dropped = _NONE_DROPPED
        decided = request
        if stored and consent.personalise:
            stored, dropped = minimiser.stored(stored)
            if stored:
                decided = self._with_stored_features(request, stored)
        context, actions = decided.policy_inputs(self._actions)
        context, actions, lost = minimiser.apply(
            context,
            actions,
            ids=lambda: {a.id: i for i, a in enumerate(request.actions)},
            identifiers=identifiers,
        )
        dropped += lost
        forced = loaded.settings.baseline_forced  # the kill switch
        personalise = consent.personalise and not forced
        mode: LearningMode = "Online" if forced else loaded.settings.learning_mode
        picked = self._pick(
            loaded, mode, (personalise, consent.learn), context, actions,
            request=request, identifiers=identifiers,
        )  # fmt: skip
        dropped += picked.dropped
        choice, chosen_index = picked.choice, picked.chosen_index
        choosers = [slot.chooser for slot in picked.slots] or [picked.chooser]
        # what decided: the baseline also when the model could give no distribution; in
        # Apprentice and LoggingOnly, what the person's consent allowed
        path: ConsentPath = (
            "personalise"
            if all(c is loaded.policy for c in choosers) or (mode != "Online" and personalise)
            else "baseline"
        )
        subject = None
        if consent.learn and user is not None:
            recent = orjson.dumps(
                {
                    "event_id": request.event_id,
                    "at": time.time(),
                    "policy": policy,
                    "model_version": loaded.model_version,
                    "consent": path,
                    "chosen_action_id": actions[chosen_index].id,
                    "chosen_index": chosen_index,
                    "probability": choice.probability,
                    "explored": choice.explored,
                    "context": context,
                    "actions": [{"id": a.id, "features": a.features} for a in actions],
                }
            )
            subject = await self._subject(user, request.event_id, loaded, recent, started_at)
            if subject == _ERASED:  # erased while this rank ran: keep nothing of it
                consent = Consent(personalise=consent.personalise, learn=False)
                subject = None
        if not consent.learn:  # nothing about the decision is kept but what counts it
            context, actions = {}, [_bare(action) for action in actions]
        decision = self._record(
            picked, decided, loaded, (context, actions),
            learn=consent.learn, consent=path, subject=subject, mode=mode,
        )  # fmt: skip
        used = sum(len(features) for features in stored.values()) if decided is not request else 0
        return RankOutcome(
            decision, consent, degraded, used, dropped, picked.chooser, picked.seen, forced
        )

    def _choose(
        self,
        loaded: LoadedPolicy,
        mode: LearningMode,
        consent: tuple[bool, bool],
        context: Mapping[str, Mapping[str, Any]],
        actions: list[Action],
    ) -> tuple[
        Policy,
        tuple[Mapping[str, Mapping[str, Any]], list[Action]],
        Distribution,
        tuple[float, ...] | None,
    ]:
        """Return who decides, what it sees, its distribution, and what the model would do.

        The served policy with personalisation consent (`consent`: personalise, learn),
        else the baseline policy; in Apprentice and LoggingOnly mode, the baseline
        action (:meth:`_baseline_action`). The baselines see nothing about the person,
        not even the request's context. In Apprentice mode, with both consents, the
        last item is the served policy's own distribution (:meth:`_learned`).
        """
        personalise, learn = consent
        chooser = loaded.policy if personalise else self._baseline
        if mode != "Online":
            chooser = self._baseline_action(loaded.settings.exploration_floor)
        seen: tuple[Mapping[str, Mapping[str, Any]], list[Action]] = (
            (context, actions) if chooser is loaded.policy else ({}, actions)
        )
        learned = None
        if mode == "Apprentice" and personalise and learn:
            learned = self._learned(loaded, context, actions)
        return (*self._distribution(loaded, chooser, seen), learned)

    def _pick(
        self,
        loaded: LoadedPolicy,
        mode: LearningMode,
        consent: tuple[bool, bool],
        context: dict[str, dict[str, Any]],
        actions: list[Action],
        *,
        request: RankRequest,
        identifiers: Literal["refuse", "drop"],
    ) -> _Picked:
        """Decide a rank (:meth:`_choose`, one draw) or each slot of a multi-slot rank."""
        if isinstance(request, MultiSlotRankRequest):
            slots = self._choose_slots(
                loaded, mode, consent, context, actions, request=request, identifiers=identifiers
            )
            first = slots[0]
            return _Picked(
                first.chooser, first.seen, first.choice, first.learned,
                first.include[first.choice.index], slots,
                sum((slot.dropped for slot in slots), _NONE_DROPPED),
            )  # fmt: skip
        chooser, seen, distribution, learned = self._choose(loaded, mode, consent, context, actions)
        choice = decide_ranking(distribution, request.event_id)
        return _Picked(chooser, seen, choice, learned, choice.index)

    def _record(
        self,
        picked: _Picked,
        request: RankRequest,
        loaded: LoadedPolicy,
        inputs: tuple[dict[str, dict[str, Any]], list[Action]],
        *,
        learn: bool,
        consent: ConsentPath,
        subject: str | None,
        mode: LearningMode,
    ) -> Decision:
        """Build the decision to log: of one draw, or of every slot's."""
        if picked.slots:
            return Decision.of_slots(
                [(s.slot, s.features, s.include, s.choice, s.learned) for s in picked.slots],
                request=request,
                policy=loaded.name,
                model_version=loaded.model_version,
                inputs=inputs,
                learn=learn,
                consent=consent,
                subject=subject,
                learning_mode=mode,
                limits=self.settings.limits,
            )
        return Decision.of_rank(
            picked.choice,
            request=request,
            policy=loaded.name,
            model_version=loaded.model_version,
            inputs=inputs,
            learn=learn,
            consent=consent,
            subject=subject,
            cache=self._logged,
            learning_mode=mode,
            learned=picked.learned,
        )

    def _choose_slots(
        self,
        loaded: LoadedPolicy,
        mode: LearningMode,
        consent: tuple[bool, bool],
        context: Mapping[str, Mapping[str, Any]],
        actions: list[Action],
        *,
        request: MultiSlotRankRequest,
        identifiers: Literal["refuse", "drop"],
    ) -> list[_SlotChoice]:
        """Decide each slot of a multi-slot rank in order, as :meth:`_choose` decides a rank.

        Slot ``k`` chooses among the actions neither it excludes nor a slot before it
        chose, its baseline action first (the action the baseline serves); it sees the
        shared context and its own features (minimised as the context's) in the
        namespace :data:`policies.vwtext.SLOT_NAMESPACE`; its draw is seeded by the
        event id and ``k`` (:func:`policies.slot_seed`).
        """
        minimiser = self._minimiser(loaded)
        index_of = {action.id: i for i, action in enumerate(actions)}
        taken: set[int] = set()
        chosen: list[_SlotChoice] = []
        for number, slot in enumerate(request.slots):
            banned = set(slot.excluded_actions)
            include = [
                i for i, action in enumerate(actions) if i not in taken and action.id not in banned
            ]
            baseline = None if slot.baseline_action is None else index_of.get(slot.baseline_action)
            if baseline in include:
                include.remove(baseline)
                include.insert(0, baseline)
            kept, lost = minimiser.slot(slot.features, number, identifiers=identifiers)
            features = RankSlot.flat(kept)
            offered = [actions[i] for i in include]
            chooser, seen, distribution, learned = self._choose(
                loaded, mode, consent, {**context, SLOT_NAMESPACE: features}, offered
            )
            choice = decide_ranking(distribution, slot_seed(request.event_id, number))
            taken.add(include[choice.index])
            chosen.append(
                _SlotChoice(slot, features, include, choice, learned, chooser, seen, lost)
            )
        return chosen

    def _baseline_action(self, floor: float) -> Policy:
        """Return the policy serving the baseline action (the first offered) with `floor`."""
        policy = self._baseline_actions.get(floor)
        if policy is None:
            if len(self._baseline_actions) >= 64:  # floors an admin set, one at a time
                self._baseline_actions.clear()
            policy = self._baseline_actions[floor] = FixedOrder(floor=floor)
        return policy

    def _learned(
        self, loaded: LoadedPolicy, context: Mapping[str, Mapping[str, Any]], actions: list[Action]
    ) -> tuple[float, ...] | None:
        """Return what the served policy would have done (Apprentice), None if it cannot say."""
        try:
            return loaded.policy.pmf(context, actions).probabilities
        except (InvalidDistributionError, InvalidFeaturesError) as exc:
            self._rejected(loaded.name, loaded.version, "pmf_not_finite", str(exc))
            return None

    def _distribution(
        self,
        loaded: LoadedPolicy,
        chooser: Policy,
        seen: tuple[Mapping[str, Mapping[str, Any]], list[Action]],
    ) -> tuple[Policy, tuple[Mapping[str, Mapping[str, Any]], list[Action]], Distribution]:
        """Return `chooser`'s distribution; the baseline's when a model cannot give one.

        A model that cannot give a finite distribution never makes rank fail: the
        baseline decides (its probabilities logged), and ``model.rejected`` says why.
        """
        try:
            return chooser, seen, chooser.pmf(*seen)
        except (InvalidDistributionError, InvalidFeaturesError) as exc:
            if chooser is self._baseline:
                raise
            self._rejected(loaded.name, loaded.version, "pmf_not_finite", str(exc))
            fallback: tuple[Mapping[str, Mapping[str, Any]], list[Action]] = ({}, seen[1])
            return self._baseline, fallback, self._baseline.pmf(*fallback)

    async def _subject(
        self, user: str, event_id: str, loaded: LoadedPolicy, recent: bytes, started_at: float
    ) -> str | None:
        """Note the person's decision (for erasure) and return its subject token.

        None when Redis fails: the decision is then kept linked to nobody.
        :data:`_ERASED` when the person was erased after this rank began (it may have
        read their consent and features before): the caller keeps nothing of it.
        """
        if self.degraded:
            return None
        ttl = int(max(2 * loaded.settings.reward_wait_seconds, 60.0) + 3600)
        try:
            async with asyncio.timeout(self.settings.redis.socket_timeout_seconds * 2):
                secret = await self.features_store.note_decision(
                    user,
                    event_id,
                    ttl,
                    recent,
                    started_at=started_at,
                    slack=self.settings.watermark_slack_seconds,
                )
        except _REDIS_FAILURES as exc:
            self._mark_degraded("subject", exc)
            return None
        if secret is None:
            return _ERASED
        return subject_token(secret, event_id)

    def _minimiser(self, loaded: LoadedPolicy) -> Minimiser:
        """Return the minimiser of a policy's current settings (new when they change)."""
        entry = self._minimisers.get(loaded.name)
        if entry is None or entry[0] is not loaded.settings:
            entry = self._minimisers[loaded.name] = (
                loaded.settings,
                Minimiser(loaded.settings.feature_schema),
            )
        return entry[1]

    async def _read_state(
        self, user: str | None, wanted: list[tuple[FeatureKind, str]]
    ) -> tuple[ConsentRecord | None, dict[str, dict[str, Any]]] | None:
        """Read consent and features together; None when Redis fails (degraded, no retry)."""
        if self.degraded:
            return None
        store = self.features_store
        try:
            async with asyncio.timeout(self.settings.redis.socket_timeout_seconds * 2):
                values: list[dict[str, float | str]] = []
                if not wanted:  # (a gather costs a task per awaitable)
                    record = await store.consent(user) if user is not None else None
                else:
                    record, values = await asyncio.gather(
                        store.consent(user) if user is not None else _none(),
                        asyncio.gather(*(store.features(kind, entity) for kind, entity in wanted)),
                    )
        except _REDIS_FAILURES as exc:
            self._mark_degraded("consent and features" if user else "features", exc)
            return None
        except pydantic.ValidationError as exc:  # a consent record we cannot read
            _log.error("consent.unreadable", user=user, reason=str(exc))
            return None
        stored: dict[str, dict[str, Any]] = {
            kind: found for (kind, _), found in zip(wanted, values, strict=True) if found
        }
        return record, stored

    def _with_stored_features(
        self, request: RankRequest, stored: Mapping[str, Mapping[str, Any]]
    ) -> RankRequest:
        """Merge stored features into the request and validate; keep it as is if invalid."""
        context: dict[str, dict[str, Any]] = {ns: dict(f) for ns, f in request.context.items()}
        for namespace, features in stored.items():
            context[namespace] = {**features, **context.get(namespace, {})}
        data = request.model_dump(include=set(RankRequest.model_fields))
        data["context"] = context
        try:
            # (its ids passed the rule of the surface it came by already)
            return RankRequest.model_validate(
                data, context={"limits": self.settings.limits, **LENIENT_IDS}
            )
        except pydantic.ValidationError as exc:
            _log.warning(
                "features.rejected",
                namespaces=sorted(stored),
                reason="; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors(include_input=False)
                ),
            )
            return request

    # -- settings ------------------------------------------------------------------------

    async def check_settings(self, name: str, settings: PolicySettings) -> None:
        """Check that `settings` can be applied to the running policy `name`.

        The spec cannot change (a running policy is reconfigured, never rebuilt), and
        every exploration parameter must be live on this policy and valid; a copy of
        the policy is configured to find out.

        Raises
        ------
        UnknownServedPolicyError
            If `name` is not served.
        bandit.errors.ConfigurationError
            If the settings cannot be applied; the message names the parameter.
        """
        loaded = self._require(name)
        if settings.spec != loaded.settings.spec:
            msg = (
                f"`spec` must stay {loaded.settings.spec!r} while the policy serves "
                f"(a running policy is reconfigured, never rebuilt), got {settings.spec!r}"
            )
            raise ConfigurationError(msg)
        if "floor" in settings.exploration:
            msg = "`exploration` must not hold 'floor': set `exploration_floor` instead"
            raise ConfigurationError(msg)
        snapshot = loaded.policy.snapshot()
        await asyncio.to_thread(_restored_and_configured, snapshot, settings)

    async def refresh(self, name: str) -> LoadedPolicy:
        """Bring policy `name` up to date with Redis now: new model, new settings.

        Raises
        ------
        UnknownServedPolicyError
            If `name` is not served.
        redis.exceptions.RedisError, OSError, TimeoutError
            If Redis cannot be read.
        """
        loaded = self._require(name)
        async with self._locks[name]:
            loaded = self._require(name)
            model_version, settings_version = await asyncio.gather(
                self.store.model_version(name), self.store.settings_version(name)
            )
            settings, current_settings_version = loaded.settings, loaded.settings_version
            if settings_version == 0:  # Redis was away at startup: store what is served
                await self.store.init_policy_settings(name, loaded.settings)
                settings_version = await self.store.settings_version(name)
            if settings_version != loaded.settings_version:
                found = await self.store.policy_settings(name)
                if found is not None:
                    settings, current_settings_version = found
            new_model = (
                model_version is not None
                and model_version != loaded.version
                and self._rejected_models.get(name) != model_version
            )
            if new_model:
                swapped = await self._swap_model(loaded, settings, current_settings_version)
                if swapped is not None:
                    loaded = swapped
            elif current_settings_version != loaded.settings_version:
                loaded = self._apply_settings(loaded, settings, current_settings_version)
            previous = self._loaded[name]
            if loaded.settings.baseline_forced != previous.settings.baseline_forced:
                _log_baseline(loaded)
            self._loaded[name] = loaded
            return loaded

    def _apply_settings(
        self, loaded: LoadedPolicy, settings: PolicySettings, version: int
    ) -> LoadedPolicy:
        try:
            configured(loaded.policy, settings)
        except (ConfigurationError, TypeError, ValueError) as exc:
            _log.error(
                "settings.rejected", policy=loaded.name, settings_version=version, reason=str(exc)
            )
            # the kill switch applies even when the exploration settings beside it cannot
            kept = loaded.settings.model_copy(update={"baseline_forced": settings.baseline_forced})
            return dataclasses.replace(loaded, settings=kept, settings_version=version)
        _log.info(
            "settings.applied",
            policy=loaded.name,
            settings_version=version,
            exploration=settings.exploration,
            exploration_floor=settings.exploration_floor,
        )
        return dataclasses.replace(loaded, settings=settings, settings_version=version)

    async def _swap_model(
        self, loaded: LoadedPolicy, settings: PolicySettings, settings_version: int
    ) -> LoadedPolicy | None:
        record = await self.store.load_model(loaded.name)
        if record is None:
            return None
        try:
            policy = await asyncio.to_thread(_prepared, loaded.name, record.snapshot, settings)
        except (SnapshotError, ConfigurationError, TypeError, ValueError) as exc:
            self._rejected_models[loaded.name] = record.version
            self._rejected(loaded.name, record.version, _reason(exc), str(exc))
            return None  # the model served so far stays
        _log.info(
            "model.swapped",
            policy=loaded.name,
            model_version=record.version,
            previous_version=loaded.version,
            n_learned=policy.n_learned,
        )
        return LoadedPolicy(
            loaded.name, policy, record.version, record.saved_at, settings, settings_version,
            record.snapshot,
        )  # fmt: skip

    # -- loading and polling -------------------------------------------------------------

    async def _load(self, name: str, spec: str) -> LoadedPolicy:
        initial = PolicySettings(spec=spec, exploration_floor=self.settings.exploration_floor)
        settings, settings_version, record = initial, 0, None
        try:
            await self.store.init_policy_settings(name, initial)
            found = await self.store.policy_settings(name)
            if found is not None:
                settings, settings_version = found
            record = await self.store.load_model(name)
        except _REDIS_FAILURES as exc:
            self._mark_degraded("startup", exc)
        if settings.spec != spec:
            _log.warning(
                "settings.spec_differs", policy=name, configured=spec, stored=settings.spec
            )
        if record is not None:
            try:
                policy = await asyncio.to_thread(_prepared, name, record.snapshot, settings)
            except (SnapshotError, ConfigurationError, TypeError, ValueError) as exc:
                self._rejected_models[name] = record.version
                self._rejected(name, record.version, _reason(exc), str(exc))
            else:
                _log.info("model.loaded", policy=name, model_version=record.version)
                loaded = LoadedPolicy(
                    name, policy, record.version, record.saved_at, settings, settings_version,
                    record.snapshot,
                )  # fmt: skip
                if settings.baseline_forced:
                    _log_baseline(loaded)
                return loaded
        policy = await asyncio.to_thread(_prepared, name, None, settings)
        _log.info("model.built", policy=name, spec=settings.spec)
        loaded = LoadedPolicy(name, policy, 0, time.time(), settings, settings_version)
        if settings.baseline_forced:
            _log_baseline(loaded)
        return loaded

    async def poll_once(self) -> None:
        """Refresh every served policy once; Redis failures mark the engine degraded."""
        try:
            for name in self.served:
                await self.refresh(name)
        except _REDIS_FAILURES as exc:
            self._mark_degraded("poll", exc)
            return
        if self.degraded:
            _log.info("redis.available", degraded_seconds=time.time() - (self.degraded_since or 0))
            self.degraded = False
            self.degraded_since = None

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.api.model_poll_seconds)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must outlive any one failure
                _log.exception("engine.poll_failed")

    def _rejected(self, name: str, version: int, reason: str, detail: str) -> None:
        """Count a refused model of `name` by `reason`; log it once per model version."""
        key = (name, reason)
        if self.rejections[key] == 0 or self._rejected_logged.get(key) != version:
            self._rejected_logged[key] = version
            _log.error(
                "model.rejected", policy=name, model_version=version, reason=reason, detail=detail
            )
        self.rejections[key] += 1

    def _mark_degraded(self, operation: str, exc: BaseException) -> None:
        if not self.degraded:
            _log.warning(
                "redis.unavailable", operation=operation, reason=f"{type(exc).__name__}: {exc}"
            )
            self.degraded = True
            self.degraded_since = time.time()


def _log_baseline(loaded: LoadedPolicy) -> None:
    """Say that a policy's kill switch is now on (``policy.baseline_forced``) or off."""
    if loaded.settings.baseline_forced:
        _log.warning(
            "policy.baseline_forced",
            policy=loaded.name,
            settings_version=loaded.settings_version,
            model_version=loaded.version,
        )
    else:
        _log.info(
            "policy.resumed",
            policy=loaded.name,
            settings_version=loaded.settings_version,
            model_version=loaded.version,
        )


def _bare(action: Action) -> Action:
    """Return the action as a decision without learning consent logs it: its id alone."""
    return Action(action.id, {})


async def _none() -> None:
    return None


def configured(policy: Policy, settings: PolicySettings) -> Policy:
    """Apply the live parts of `settings` (exploration, floor) to `policy` in place; return it."""
    policy.configure(**{**settings.exploration, "floor": settings.exploration_floor})
    return policy


def _restored_and_configured(snapshot: bytes, settings: PolicySettings) -> Policy:
    return configured(Policy.restore(snapshot), settings)


def _reason(exc: BaseException) -> str:
    """Return the ``reason`` label of a refused snapshot."""
    return "snapshot_not_finite" if isinstance(exc, InvalidModelError) else "snapshot_unreadable"


def prepared_policy(name: str, snapshot: bytes | None, settings: PolicySettings) -> Policy:
    """Rebuild served policy `name` from what its :class:`LoadedPolicy` keeps.

    Parameters
    ----------
    name
        The policy's name (for the log).
    snapshot, settings
        :attr:`LoadedPolicy.snapshot` (None: build from the spec) and
        :attr:`LoadedPolicy.settings`.

    Returns
    -------
    policies.Policy
        A policy that decides as the served one does.
    """
    return _prepared(name, snapshot, settings)


def _prepared(name: str, snapshot: bytes | None, settings: PolicySettings) -> Policy:
    """Restore `snapshot` (or build from the spec), then apply what of `settings` applies.

    Settings that do not apply (stored before a policy change, say) are logged and
    skipped, so a policy still serves; a snapshot that does not restore, or whose model
    is not finite (:meth:`policies.Policy.check_model`), raises.
    """
    if snapshot is None:
        policy = make_policy(settings.spec)
    else:
        policy = Policy.restore(snapshot)
        policy.check_model()
    try:
        configured(policy, settings)
    except (ConfigurationError, TypeError, ValueError) as exc:
        _log.error("settings.rejected", policy=name, reason=str(exc))
    return policy
