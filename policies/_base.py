"""The policy base class: public methods check invariants, private hooks hold algorithms."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from policies._distribution import Distribution
from policies._types import Action, Context, FeatureRef, Features
from policies.errors import (
    ConfigurationError,
    InvalidActionsError,
    InvalidFeaturesError,
    InvalidFeedbackError,
    InvalidModelError,
    SnapshotError,
)

__all__ = [
    "FEATURE_VALUE_LIMIT",
    "REWARD_LIMIT",
    "Policy",
    "check_feature_values",
    "check_reward",
    "snapshot_contents",
]

_MAGIC = b"streambandit-snapshot/1\n"

REWARD_LIMIT = 1e9
"""Largest reward magnitude any policy learns from (:meth:`Policy.learn` refuses more).

Vowpal Wabbit keeps its weights in single precision (float32, largest about 3.4e38): one
reward of about 3.4e38 or more made the cost infinite and every weight NaN. 1e9 keeps
squared costs, their gradients and sums of them far inside float32 for every built-in
policy (``tests/policies/test_poisoning.py``). The service's own reward range
(``settings.limits.min_reward`` / ``max_reward``, docs/limits.md) lies inside it.
"""

FEATURE_VALUE_LIMIT = 1e6
"""Largest magnitude of a numeric feature value any policy learns from.

VW squares feature values (its normalised updates) and multiplies them (interactions):
with the default interactions a context x action product is at most 1e12 and its square
1e24, inside float32; values of 1e30 left a model without any learning signal and 1e308
made it NaN. Request and event schemas refuse larger values (``bandit.wire.schemas``).
"""


class Policy(ABC):
    """A contextual bandit policy that always yields a full probability distribution.

    Subclasses implement :meth:`_weights` (non-negative weights per action), :meth:`_learn`
    and :meth:`_state` / :meth:`_load_state`; this class validates every input, applies
    the exploration floor, counts updates and wraps snapshots in a checked envelope.

    Constructor arguments are stored under their own names (River-style) and listed by
    :meth:`params`; those in :attr:`live_params` can be changed on a running policy with
    :meth:`configure` without losing what it learned.

    Parameters
    ----------
    floor
        Smallest probability any offered action gets, in (0, 1]; capped at 1/n actions.
    """

    name: ClassVar[str]
    """Registry name of the policy class."""

    live_params: ClassVar[frozenset[str]] = frozenset({"floor"})
    """Parameters :meth:`configure` may change on some running policy of this class;
    :meth:`tunable_params` says which apply to this one."""

    learns: ClassVar[bool] = True
    """Whether :meth:`learn` changes future distributions (baselines do not)."""

    samples: ClassVar[bool] = False
    """Whether :meth:`pmf` is estimated by sampling (so a small input change moves it)."""

    def __init__(self, *, floor: float = 1e-3) -> None:
        self.floor = _check_floor(floor)
        self._n_learned = 0

    # -- the public surface -------------------------------------------------------------

    def pmf(self, context: Context, actions: Sequence[Action]) -> Distribution:
        """Return the probability of choosing each of `actions` in `context`.

        Parameters
        ----------
        context
            Shared features by namespace. Not mutated.
        actions
            The offered actions, at least one, with distinct ids. Not mutated.

        Returns
        -------
        Distribution
            One probability per action, in offer order, every one at least the floor.
        """
        _check_actions(actions)
        return Distribution.from_weights(self._weights(context, actions), floor=self.floor)

    def pmf_without(
        self, context: Context, actions: Sequence[Action], features: Sequence[FeatureRef]
    ) -> list[Distribution]:
        """Return :meth:`pmf` with each of `features` taken away in turn, in one batch.

        What an explanation asks (:func:`bandit.service.explain.explain`): how likely each action
        is without this feature, for every feature. A policy may answer faster than one
        :meth:`pmf` per feature (VW writes the example text once and cuts one feature
        out of it per prediction); the answers are the same.

        Parameters
        ----------
        context, actions
            The decision, as for :meth:`pmf`. Not mutated.
        features
            The features to take away, one per answer; each must be in the decision.

        Returns
        -------
        list of Distribution
            One per feature, in order: :meth:`pmf` of the decision without it.

        Raises
        ------
        InvalidFeaturesError
            If one of `features` is not in the decision.

        Examples
        --------
        >>> from policies import make_policy
        >>> policy = make_policy("uniform")
        >>> [d.probabilities for d in policy.pmf_without(
        ...     {"page": {"section": "sport"}}, [Action("a"), Action("b")],
        ...     [FeatureRef(None, "page", "section")])]
        [(0.5, 0.5)]
        """
        _check_actions(actions)
        for feature in features:
            _check_feature(context, actions, feature)
        return [
            Distribution.from_weights(weights, floor=self.floor)
            for weights in self._weights_without(context, actions, features)
        ]

    def learn(
        self,
        context: Context,
        actions: Sequence[Action],
        chosen: int,
        reward: float,
        probability: float,
    ) -> None:
        """Update the policy with the outcome of one logged decision.

        Parameters
        ----------
        context, actions
            Exactly what the decision was made on.
        chosen
            Offer-order index of the chosen action, ``0 <= chosen < len(actions)``.
        reward
            The observed reward, finite. Higher is better.
        probability
            The logged probability of the chosen action, in (0, 1].

        Raises
        ------
        InvalidFeedbackError, InvalidFeaturesError
            If an input breaks its rule (a reward beyond :data:`REWARD_LIMIT`, a feature
            value beyond :data:`FEATURE_VALUE_LIMIT`...); nothing was learned.
        InvalidModelError
            If the update overflowed: the model may be broken, restore the last snapshot.
        """
        _check_actions(actions)
        if not (0 <= chosen < len(actions)):
            msg = f"`chosen` must be an index in [0, {len(actions)}), got {chosen!r}"
            raise InvalidFeedbackError(msg)
        check_reward(reward)
        if not (0.0 < probability <= 1.0):
            msg = f"`probability` must be in (0, 1], got {probability!r}"
            raise InvalidFeedbackError(msg)
        check_feature_values(context)
        for action in actions:
            check_feature_values(action.features, f"action {action.id!r} ")
        try:
            self._learn(context, actions, chosen, float(reward), float(probability))
        except ArithmeticError as exc:  # an overflow half-way: the state may be broken
            msg = f"the {self.name} model overflowed learning this outcome: {exc}"
            raise InvalidModelError(msg) from exc
        self._n_learned += 1

    def check_model(self) -> None:
        """Raise if the learned state holds a NaN or an infinity.

        Bounded inputs (:meth:`learn` refuses rewards beyond :data:`REWARD_LIMIT` and
        feature values beyond :data:`FEATURE_VALUE_LIMIT`) keep every built-in policy
        finite; this is the check behind that guard, over the whole learned state. The
        learner runs it before saving a snapshot and the API before serving one, so a
        model that could serve non-finite probabilities is neither saved nor served.

        Raises
        ------
        InvalidModelError
            If some learned number is not finite; the message says where.
        """
        problem = self._non_finite()
        if problem is not None:
            msg = f"the {self.name} model is not finite: {problem}"
            raise InvalidModelError(msg)

    @property
    def n_learned(self) -> int:
        """How many outcomes this policy has learned from (survives snapshots)."""
        return self._n_learned

    def params(self) -> dict[str, Any]:
        """Return the constructor arguments that rebuild this policy, untrained."""
        return {"floor": self.floor, **self._params()}

    def tunable_params(self) -> frozenset[str]:
        """Return the parameters :meth:`configure` accepts on this policy as built."""
        return self.live_params

    def configure(self, **changes: Any) -> None:
        """Change exploration parameters of the running policy, keeping what it learned.

        Raises
        ------
        ConfigurationError
            If a name is not in :meth:`tunable_params`, or a value breaks its rule.
        """
        tunable = self.tunable_params()
        unknown = sorted(set(changes) - tunable)
        if unknown:
            msg = (
                f"{self.name} cannot change {', '.join(map(repr, unknown))} while running; "
                f"live parameters are {sorted(tunable)}"
            )
            raise ConfigurationError(msg)
        if "floor" in changes:
            self.floor = _check_floor(changes.pop("floor"))
        if changes:
            self._configure(changes)

    def snapshot(self) -> bytes:
        """Serialise everything needed to continue exactly where this policy is."""
        payload = self._state()
        header = {
            "policy": self.name,
            "params": self.params(),
            "n_learned": self._n_learned,
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        return _MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """Rebuild a policy from :meth:`snapshot` bytes.

        Called on :class:`Policy` itself it restores whichever registered policy wrote
        the snapshot; called on a subclass it also checks the snapshot is of that class.

        Raises
        ------
        SnapshotError
            If the bytes are not a snapshot, are corrupt, or belong to another policy.
        """
        header, payload = _open_envelope(data)
        from policies.registry import policy_class  # the registry imports every policy

        target = policy_class(str(header["policy"]))
        if not issubclass(target, cls):
            msg = f"snapshot is of policy {header['policy']!r}, not {cls.name!r}"
            raise SnapshotError(msg)
        params = header["params"]
        if not isinstance(params, Mapping):
            msg = "snapshot header `params` must be an object"
            raise SnapshotError(msg)
        policy = target(**params)
        policy._load_state(payload)
        policy._n_learned = int(header["n_learned"])
        return policy

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # -- hooks ------------------------------------------------------------------------

    @abstractmethod
    def _weights(self, context: Context, actions: Sequence[Action]) -> Sequence[float]:
        """Non-negative weights, one per action, not all zero (normalised by the caller)."""

    def _weights_without(
        self, context: Context, actions: Sequence[Action], features: Sequence[FeatureRef]
    ) -> list[Sequence[float]]:
        """:meth:`_weights` without each of the checked `features`; override to batch."""
        return [self._weights(*_without(context, actions, feature)) for feature in features]

    @abstractmethod
    def _learn(
        self,
        context: Context,
        actions: Sequence[Action],
        chosen: int,
        reward: float,
        probability: float,
    ) -> None:
        """Learn from one validated outcome."""

    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """Return the constructor arguments other than `floor`, JSON-serialisable."""

    @abstractmethod
    def _state(self) -> bytes:
        """Return the learned state as bytes."""

    @abstractmethod
    def _load_state(self, payload: bytes) -> None:
        """Load the learned state written by :meth:`_state` into a fresh instance."""

    def _configure(self, changes: dict[str, Any]) -> None:
        """Apply validated live changes other than `floor`; override per policy."""
        for key, value in changes.items():
            setattr(self, key, value)

    def _non_finite(self) -> str | None:
        """Say where the learned state holds a NaN or infinity; None when nowhere.

        Policies that learn override it; one without learned numbers has none.
        """
        return None


def check_reward(reward: float) -> None:
    """Refuse a reward that is not finite or beyond :data:`REWARD_LIMIT`.

    Raises
    ------
    InvalidFeedbackError
        Naming the rule and the reward.
    """
    if not (-REWARD_LIMIT <= reward <= REWARD_LIMIT):  # also rejects NaN
        msg = (
            f"`reward` must be finite and within [-{REWARD_LIMIT:g}, {REWARD_LIMIT:g}] "
            f"(policies._base.REWARD_LIMIT), got {reward!r}"
        )
        raise InvalidFeedbackError(msg)


def check_feature_values(features: Features, owner: str = "") -> None:
    """Refuse numeric feature values that are not finite or beyond :data:`FEATURE_VALUE_LIMIT`.

    Parameters
    ----------
    features
        Features by namespace; strings are categorical and always fine here.
    owner
        Prefix naming whose features they are in the message (``"action 'a' "``).

    Raises
    ------
    InvalidFeaturesError
        Naming the feature, the rule and the value.

    Examples
    --------
    >>> check_feature_values({"user": {"age": 31, "tier": "gold"}})
    >>> check_feature_values({"user": {"age": 1e308}})
    Traceback (most recent call last):
    ...
    policies.errors.InvalidFeaturesError: feature user.age must be a finite number within ...
    """
    for namespace, values in features.items():
        for name, value in values.items():
            if isinstance(value, str) or -FEATURE_VALUE_LIMIT <= value <= FEATURE_VALUE_LIMIT:
                continue  # (the comparison is False for NaN)
            msg = (
                f"feature {owner}{namespace}.{name} must be a finite number within "
                f"[-{FEATURE_VALUE_LIMIT:g}, {FEATURE_VALUE_LIMIT:g}] "
                f"(policies._base.FEATURE_VALUE_LIMIT), got {value!r}"
            )
            raise InvalidFeaturesError(msg)


def _check_floor(floor: float) -> float:
    if not (0.0 < floor <= 1.0):  # also rejects NaN
        msg = f"`floor` must be in (0, 1], got {floor!r}"
        raise ConfigurationError(msg)
    return float(floor)


def _check_actions(actions: Sequence[Action]) -> None:
    if not actions:
        msg = "`actions` must offer at least one action, got none"
        raise InvalidActionsError(msg)
    if len({a.id for a in actions}) != len(actions):
        ids = [a.id for a in actions]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        msg = f"`actions` must have distinct ids, repeated: {repeated}"
        raise InvalidActionsError(msg)


def _without(
    context: Context, actions: Sequence[Action], feature: FeatureRef
) -> tuple[Context, list[Action]]:
    """Return the decision without `feature`; its other namespaces and actions are shared."""
    if feature.action is None:
        return _dropped(context, feature), list(actions)
    changed = list(actions)
    action = changed[feature.action]
    changed[feature.action] = Action(action.id, _dropped(action.features, feature))
    return context, changed


def _dropped(features: Context, feature: FeatureRef) -> dict[str, Mapping[str, Any]]:
    kept: dict[str, Mapping[str, Any]] = dict(features)
    kept[feature.namespace] = {
        name: value for name, value in features[feature.namespace].items() if name != feature.name
    }
    return kept


def _check_feature(context: Context, actions: Sequence[Action], feature: FeatureRef) -> None:
    if feature.action is None:
        where, features = "the context", context
    elif 0 <= feature.action < len(actions):
        where, features = f"action {actions[feature.action].id!r}", actions[feature.action].features
    else:
        msg = f"feature action index must be in [0, {len(actions)}), got {feature.action!r}"
        raise InvalidFeaturesError(msg)
    if feature.name not in features.get(feature.namespace, {}):
        msg = f"{where} has no feature {feature.namespace}.{feature.name} to take away"
        raise InvalidFeaturesError(msg)


def snapshot_contents(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Return a snapshot's header and payload, checked (:meth:`Policy.snapshot` wrote them).

    The header holds ``policy`` (the class name), ``params``, ``n_learned`` and the
    payload's ``sha256``; for a VW policy the payload is the model file VW saved, which
    ``vw -i`` loads.

    Raises
    ------
    SnapshotError
        If the bytes are not a snapshot, or are corrupt.

    Examples
    --------
    >>> from policies import make_policy
    >>> header, payload = snapshot_contents(make_policy("uniform").snapshot())
    >>> header["policy"], header["n_learned"]
    ('uniform', 0)
    """
    return _open_envelope(data)


def _open_envelope(data: bytes) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(_MAGIC):
        msg = "not a streambandit policy snapshot (bad magic bytes)"
        raise SnapshotError(msg)
    head, sep, payload = data[len(_MAGIC) :].partition(b"\n")
    if not sep:
        msg = "snapshot is truncated: no header line"
        raise SnapshotError(msg)
    try:
        header = json.loads(head)
    except ValueError as exc:
        msg = f"snapshot header is not JSON: {exc}"
        raise SnapshotError(msg) from exc
    if not isinstance(header, dict) or not {"policy", "params", "n_learned", "sha256"} <= set(
        header
    ):
        msg = "snapshot header must hold `policy`, `params`, `n_learned` and `sha256`"
        raise SnapshotError(msg)
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        msg = "snapshot payload is corrupt (checksum mismatch)"
        raise SnapshotError(msg)
    return header, payload
