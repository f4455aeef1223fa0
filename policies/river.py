"""River-based policies: LinUCB, linear Thompson sampling and epsilon-greedy.

Each policy keeps one online River regressor over the joint features of a context and
an action (:func:`~policies._features.joint_features`: both sides and, by default,
every context x action product) and learns by plain regression of the observed reward
on the chosen action's features. They differ only in how they turn the regressor's
predictions into a distribution over the offered actions:

- :class:`LinUCB`: all mass on the action with the highest upper confidence bound.
- :class:`LinearTS`: the probability that each action wins a Thompson draw, estimated
  by seeded Monte Carlo.
- :class:`RiverGreedy`: epsilon-greedy on any of a few online regressors.

Features a model has not seen yet, including the id of a new action, simply start at
their prior (zero weight, and prior variance for the Bayesian models).

Snapshots pickle the River model. Unpickling runs code, so a snapshot must only ever be
restored from the service's own trusted store (the base class checks its checksum, which
guards against corruption, not against an attacker who can write to that store).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import pickle
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from river import linear_model, optim, tree
from threadpoolctl import ThreadpoolController

from bandit.errors import (
    ConfigurationError,
    InvalidFeaturesError,
    SnapshotError,
)
from policies._base import Policy
from policies._features import flatten, joint_features
from policies._types import Action, Context
from policies.registry import register

__all__ = ["LinUCB", "LinearTS", "Regressor", "RiverGreedy"]

Regressor = Literal["linear", "bayesian", "pa", "tree"]

_REGRESSORS: tuple[str, ...] = ("linear", "bayesian", "pa", "tree")

_MAX_SAMPLES = 100_000
"""Upper bound on `n_samples`: keeps one pmf call's memory and time bounded."""

_TIE_TOLERANCE = 1e-12
"""Scores within this relative distance of the best one count as tied for the best."""


class _RiverPolicy(Policy):
    """What every River policy shares: features, learning, and pickled snapshots."""

    def __init__(self, *, interactions: bool, floor: float) -> None:
        super().__init__(floor=floor)
        if not isinstance(interactions, bool):
            msg = f"`interactions` must be a bool, got {interactions!r}"
            raise ConfigurationError(msg)
        self.interactions = interactions
        self._model: Any = self._new_model()

    @abstractmethod
    def _new_model(self) -> Any:
        """Return a fresh, untrained River regressor."""

    def _bayesian(self) -> bool:
        """Whether the model is River's Bayesian linear regression."""
        return False

    def _rows(self, context: Context, actions: Sequence[Action]) -> list[dict[str, float]]:
        return [joint_features(context, a, interactions=self.interactions) for a in actions]

    def _learn(
        self,
        context: Context,
        actions: Sequence[Action],
        chosen: int,
        reward: float,
        probability: float,
    ) -> None:
        x = joint_features(context, actions[chosen], interactions=self.interactions)
        bad = _first_non_finite(x)
        if bad is not None:
            # One non-finite value would poison the model for good: refuse it.
            msg = (
                f"features of the chosen action {actions[chosen].id!r} must be finite, "
                f"got {bad[0]!r} = {bad[1]!r}"
            )
            raise InvalidFeaturesError(msg)
        if self._bayesian():  # its update is a BLAS call, see _one_blas_thread
            with _one_blas_thread():
                self._model.learn_one(x, reward)
        else:
            self._model.learn_one(x, reward)

    def _state(self) -> bytes:
        if self._bayesian():
            # River caches the posterior mean lazily, on the first prediction after an
            # update; fill the cache so that equal learned states pickle to equal bytes.
            self._model.predict_one({})
        return pickle.dumps(self._model, protocol=pickle.HIGHEST_PROTOCOL)

    def _load_state(self, payload: bytes) -> None:
        expected = type(self._model)
        try:
            model = pickle.loads(payload)  # noqa: S301  (trusted: the service's own snapshot)
        except Exception as exc:  # unpickling can raise almost anything
            msg = f"{self.name} snapshot does not hold a River model: {exc}"
            raise SnapshotError(msg) from exc
        if type(model) is not expected:
            msg = (
                f"{self.name} snapshot holds a {type(model).__name__}, "
                f"expected a {expected.__name__}"
            )
            raise SnapshotError(msg)
        self._model = model

    def _check_scores(
        self, scores: Sequence[float], rows: Sequence[dict[str, float]], actions: Sequence[Action]
    ) -> None:
        """Refuse non-finite scores with a message naming the feature that caused them."""
        for score, x, action in zip(scores, rows, actions, strict=True):
            if not math.isfinite(score):
                bad = _first_non_finite(x)
                cause = f"feature {bad[0]!r} = {bad[1]!r}" if bad else "features too large"
                msg = f"action {action.id!r} got a non-finite score {score!r}: {cause}"
                raise InvalidFeaturesError(msg)


class _BayesianPolicy(_RiverPolicy):
    """A River Bayesian linear regression, read through its predictive distributions."""

    def __init__(
        self,
        *,
        prior_precision: float,
        noise_precision: float,
        interactions: bool,
        floor: float,
    ) -> None:
        self.prior_precision = _positive("prior_precision", prior_precision)
        self.noise_precision = _positive("noise_precision", noise_precision)
        super().__init__(interactions=interactions, floor=floor)

    def _new_model(self) -> Any:
        return linear_model.BayesianLinearRegression(
            alpha=self.prior_precision, beta=self.noise_precision
        )

    def _bayesian(self) -> bool:
        return True

    def _posterior(self, rows: Sequence[dict[str, float]]) -> tuple[list[float], list[float]]:
        """Posterior mean and epistemic variance of each row's expected reward.

        River's predictive variance is ``1 / noise_precision + x' S x``; the second term,
        the variance of the mean reward under the weight posterior, is what exploration
        needs. Rounding can leave it a hair below zero, hence the clamp.
        """
        noise = 1.0 / self.noise_precision
        means: list[float] = []
        variances: list[float] = []
        for x in rows:
            predictive = self._model.predict_one(x, with_dist=True)
            means.append(float(predictive.mu))
            variances.append(max(float(predictive.sigma) ** 2 - noise, 0.0))
        return means, variances

    def _bayesian_params(self) -> dict[str, Any]:
        return {
            "prior_precision": self.prior_precision,
            "noise_precision": self.noise_precision,
            "interactions": self.interactions,
        }


class LinUCB(_BayesianPolicy):
    r"""LinUCB: play the action with the highest upper confidence bound on its reward.

    The reward model is River's Bayesian linear regression (ridge regression with a
    Gaussian posterior) over the joint context x action features, one model shared by
    all actions; with the action-id indicators and their interactions among the
    features this covers both the disjoint and the hybrid model of Li et al. Each
    offered action is scored by

    .. math:: \mu_a + \alpha \sqrt{x_a^\top S x_a}

    where :math:`\mu_a` is the posterior mean reward and :math:`x_a^\top S x_a` the
    posterior (epistemic) variance of that mean: the predictive variance minus the
    observation noise :math:`1 / \beta`. All probability goes to the best score (ties,
    within a relative 1e-12, share it evenly); the exploration floor then gives every
    other action its minimum. A feature never seen before carries the prior variance
    :math:`1 / \text{prior\_precision}`, so new actions look optimistic.

    Learning costs O(d^2) time and the model O(d^2) memory, where d is the number of
    distinct features ever seen (every action id, and every context feature x action
    feature product); keep high-cardinality strings out of the features.

    Parameters
    ----------
    alpha
        Width of the confidence bound in posterior standard deviations, >= 0; 0 is
        greedy. Live: :meth:`configure` changes it without touching the posterior.
    prior_precision
        Precision of the zero-mean Gaussian prior on every weight (River's ``alpha``),
        the ridge penalty relative to `noise_precision`.
    noise_precision
        Precision of the Gaussian observation noise (River's ``beta``).
    interactions
        Whether the features include every context x action product.
    floor
        Smallest probability any offered action gets.

    References
    ----------
    Li, Chu, Langford and Schapire, *A Contextual-Bandit Approach to Personalized News
    Article Recommendation*, WWW 2010.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> policy = LinUCB(alpha=1.0)
    >>> actions = [Action("news"), Action("sport")]
    >>> for _ in range(60):
    ...     young = rng.random() < 0.5
    ...     context = {"user": {"young": float(young)}}
    ...     chosen = rng.randrange(2)
    ...     reward = float(chosen == int(young))  # the young like sport, the others news
    ...     policy.learn(context, actions, chosen, reward, probability=0.5)
    >>> policy.pmf({"user": {"young": 1.0}}, actions).probabilities
    (0.001, 0.999)
    >>> policy.pmf({"user": {"young": 0.0}}, actions).probabilities
    (0.999, 0.001)
    """

    name: ClassVar[str] = "linucb"
    live_params: ClassVar[frozenset[str]] = frozenset({"floor", "alpha"})

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        prior_precision: float = 1.0,
        noise_precision: float = 1.0,
        interactions: bool = True,
        floor: float = 1e-3,
    ) -> None:
        self.alpha = _non_negative("alpha", alpha)
        super().__init__(
            prior_precision=prior_precision,
            noise_precision=noise_precision,
            interactions=interactions,
            floor=floor,
        )

    def _weights(self, context: Context, actions: Sequence[Action]) -> Sequence[float]:
        rows = self._rows(context, actions)
        means, variances = self._posterior(rows)
        scores = [m + self.alpha * math.sqrt(v) for m, v in zip(means, variances, strict=True)]
        self._check_scores(scores, rows, actions)
        return _argmax_indicator(scores)

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, **self._bayesian_params()}

    def _configure(self, changes: dict[str, Any]) -> None:
        self.alpha = _non_negative("alpha", changes["alpha"])


class LinearTS(_BayesianPolicy):
    r"""Linear Thompson sampling, reporting the probability of each action winning.

    Thompson sampling (Agrawal and Goyal, 2013) draws a plausible reward for every
    action from the posterior and plays the best. A service that logs propensities
    needs the probability of that choice, which has no closed form, so this policy
    estimates it, and sampling then happens outside the policy, from the estimate:

    1. Score each offered action by River's Bayesian linear regression over its joint
       context x action features: posterior mean :math:`\mu_a` and epistemic variance
       :math:`v_a` (the predictive variance minus the observation noise
       :math:`1 / \beta`).
    2. Seed NumPy's default generator (``PCG64``) with a 128-bit BLAKE2b hash of a
       canonical JSON text of `seed`, the flattened context, and each offered action's
       id and flattened features in offer order (keys sorted, numbers as floats, zeros
       dropped, strings one-hot: exactly what the model sees).
    3. Draw an `n_samples` x (number of actions) matrix of standard normals
       :math:`z_{s,a}`, row by row, and form
       :math:`\mu_a + \sqrt{\text{scale} \cdot v_a} \, z_{s,a}`.
    4. Give each action the fraction of rows in which it is the best; a row's ties,
       which need a zero variance (``scale=0``, say), split its unit evenly (scores
       within a relative 1e-12 of the best tie). The floor then applies.

    The result is a deterministic function of the learned state, `seed`, the context
    and the actions: the same inputs give the same distribution, bit for bit (on the
    same platform and library versions, as the posterior is floating-point
    arithmetic), so a logged distribution can be re-derived. The decision is then drawn from this
    distribution by :func:`~policies._distribution.choose`, so the logged propensity is
    exact for the draw actually made. The Monte Carlo error, a standard error of
    :math:`\sqrt{p (1 - p) / n\_samples} \le 0.5 / \sqrt{n\_samples}` per probability
    (so within about :math:`1 / \sqrt{n\_samples}` at two standard errors), only makes
    the policy differ a little from exact Thompson sampling; it never makes the log
    wrong.

    **Approximation.** Exact linear Thompson sampling draws the whole weight vector
    jointly, so the sampled rewards of different actions are correlated through the
    weights they share. River keeps the posterior covariance only in private
    attributes, so this policy draws each action's reward independently from its
    public predictive marginal instead: each action's own spread is exact, but the
    covariance between actions is dropped. That covariance is usually positive (every
    action shares the bias and the context weights), so differences between actions
    come out noisier than in joint draws and this policy explores somewhat more than
    joint Thompson sampling, most at the start; as the shared weights are learned
    (every example updates them) the difference fades.

    Parameters
    ----------
    n_samples
        Monte Carlo draws per distribution, in [1, 100000]. Live. The default 500 keeps
        the standard error of every probability below 0.023 and the cost of the draws
        below that of scoring 10 actions; raise it where pmf throughput allows.
    scale
        Multiplies the posterior variance before sampling (the :math:`v^2` of Agrawal
        and Goyal), >= 0; larger explores more, 0 is greedy. Live.
    seed
        Seeds the Monte Carlo estimate, together with the input.
    prior_precision
        Precision of the zero-mean Gaussian prior on every weight (River's ``alpha``).
    noise_precision
        Precision of the Gaussian observation noise (River's ``beta``).
    interactions
        Whether the features include every context x action product.
    floor
        Smallest probability any offered action gets.

    References
    ----------
    Agrawal and Goyal, *Thompson Sampling for Contextual Bandits with Linear Payoffs*,
    ICML 2013.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> policy = LinearTS(n_samples=1000, seed=42)
    >>> actions = [Action("news"), Action("sport")]
    >>> context = {"user": {"young": 1.0}}
    >>> for _ in range(40):
    ...     chosen = rng.randrange(2)
    ...     policy.learn(context, actions, chosen, reward=float(chosen), probability=0.5)
    >>> policy.pmf(context, actions).probabilities
    (0.001, 0.999)
    >>> policy.pmf(context, actions) == policy.pmf(context, actions)
    True
    """

    name: ClassVar[str] = "lints"
    live_params: ClassVar[frozenset[str]] = frozenset({"floor", "n_samples", "scale"})

    def __init__(
        self,
        *,
        n_samples: int = 500,
        scale: float = 1.0,
        seed: int = 0,
        prior_precision: float = 1.0,
        noise_precision: float = 1.0,
        interactions: bool = True,
        floor: float = 1e-3,
    ) -> None:
        self.n_samples = _count("n_samples", n_samples, _MAX_SAMPLES)
        self.scale = _non_negative("scale", scale)
        if isinstance(seed, bool) or not isinstance(seed, int):
            msg = f"`seed` must be an integer, got {seed!r}"
            raise ConfigurationError(msg)
        self.seed = seed
        super().__init__(
            prior_precision=prior_precision,
            noise_precision=noise_precision,
            interactions=interactions,
            floor=floor,
        )

    def _weights(self, context: Context, actions: Sequence[Action]) -> Sequence[float]:
        rows = self._rows(context, actions)
        means, variances = self._posterior(rows)
        self._check_scores([m + v for m, v in zip(means, variances, strict=True)], rows, actions)
        rng = np.random.default_rng(self._sampler_seed(context, actions))
        spread = np.sqrt(self.scale * np.asarray(variances))
        draws = np.asarray(means) + rng.standard_normal((self.n_samples, len(rows))) * spread
        if np.all(spread > 0.0):
            # Continuous draws: each row has one best action (exact ties are negligible).
            wins = np.bincount(draws.argmax(axis=1), minlength=len(rows))
        else:
            # Some action has no spread (scale 0, say): equal means tie in every row.
            best = draws.max(axis=1, keepdims=True)
            top = draws >= best - _TIE_TOLERANCE * np.maximum(1.0, np.abs(best))
            wins = (top / top.sum(axis=1, keepdims=True)).sum(axis=0)
        return [float(w) for w in wins]

    def _sampler_seed(self, context: Context, actions: Sequence[Action]) -> int:
        """Return a 128-bit seed from `seed` and exactly what the model sees."""
        shared = sorted(flatten(context).items())
        offered = [[a.id, sorted(flatten(a.features).items())] for a in actions]
        text = json.dumps([self.seed, shared, offered], separators=(",", ":"))
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        return int.from_bytes(digest, "big")

    def _params(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "scale": self.scale,
            "seed": self.seed,
            **self._bayesian_params(),
        }

    def _configure(self, changes: dict[str, Any]) -> None:
        n_samples = _count("n_samples", changes.get("n_samples", self.n_samples), _MAX_SAMPLES)
        scale = _non_negative("scale", changes.get("scale", self.scale))
        self.n_samples, self.scale = n_samples, scale


class RiverGreedy(_RiverPolicy):
    """Epsilon-greedy on an online River regressor of the reward.

    The regressor predicts the reward of each offered action from its joint context x
    action features. The action with the highest prediction gets ``1 - epsilon`` (split
    evenly between ties, within a relative 1e-12) and every action gets ``epsilon / n``
    more, n being the number of offered actions. When ``epsilon / n`` is below the
    floor, the floor is mixed in on top (see :meth:`Distribution.from_weights`).

    Regressors, by name:

    - ``"linear"``: ``linear_model.LinearRegression`` with AdaGrad (learning rate 0.1),
      which adapts the step of each feature to how often it occurs, as one-hot
      features need.
    - ``"bayesian"``: ``linear_model.BayesianLinearRegression`` (posterior mean); exact
      ridge regression, O(d^2) per update in the number of distinct features d.
    - ``"pa"``: ``linear_model.PARegressor`` (passive-aggressive, Crammer et al. 2006).
    - ``"tree"``: ``tree.HoeffdingTreeRegressor`` (River's defaults: each leaf predicts
      with its mean or its own linear model, whichever has erred less); it splits only
      after hundreds of examples, and can then find non-linear structure.

    Parameters
    ----------
    epsilon
        Share of probability spread uniformly over the offered actions, in [0, 1]. Live.
    regressor
        One of the names above.
    interactions
        Whether the features include every context x action product.
    floor
        Smallest probability any offered action gets.

    References
    ----------
    Sutton and Barto, *Reinforcement Learning: An Introduction* (epsilon-greedy);
    Langford and Zhang, *The Epoch-Greedy Algorithm for Contextual Multi-armed Bandits*,
    NIPS 2007.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(0)
    >>> policy = RiverGreedy(epsilon=0.1, regressor="linear")
    >>> actions = [Action("a"), Action("b"), Action("c")]
    >>> for _ in range(300):
    ...     chosen = rng.randrange(3)
    ...     reward = float(rng.random() < (0.8 if chosen == 1 else 0.2))
    ...     policy.learn({}, actions, chosen, reward, probability=1 / 3)
    >>> [round(p, 4) for p in policy.pmf({}, actions)]
    [0.0333, 0.9333, 0.0333]
    """

    name: ClassVar[str] = "river-greedy"
    live_params: ClassVar[frozenset[str]] = frozenset({"floor", "epsilon"})

    def __init__(
        self,
        *,
        epsilon: float = 0.1,
        regressor: Regressor = "linear",
        interactions: bool = True,
        floor: float = 1e-3,
    ) -> None:
        self.epsilon = _in_range("epsilon", epsilon, 0.0, 1.0)
        if regressor not in _REGRESSORS:
            msg = f"`regressor` must be one of {list(_REGRESSORS)}, got {regressor!r}"
            raise ConfigurationError(msg)
        self.regressor: Regressor = regressor
        super().__init__(interactions=interactions, floor=floor)

    def _new_model(self) -> Any:
        if self.regressor == "linear":
            return linear_model.LinearRegression(optimizer=optim.AdaGrad(lr=0.1), intercept_lr=0.1)
        if self.regressor == "bayesian":
            return linear_model.BayesianLinearRegression()
        if self.regressor == "pa":
            return linear_model.PARegressor(C=0.01, mode=1, eps=0.1)  # type: ignore[no-untyped-call]
        return tree.HoeffdingTreeRegressor()

    def _bayesian(self) -> bool:
        return self.regressor == "bayesian"

    def _weights(self, context: Context, actions: Sequence[Action]) -> Sequence[float]:
        rows = self._rows(context, actions)
        scores = [float(self._model.predict_one(x)) for x in rows]
        self._check_scores(scores, rows, actions)
        top = _argmax_indicator(scores)
        n, n_top = len(actions), sum(top)
        return [self.epsilon / n + (1.0 - self.epsilon) * t / n_top for t in top]

    def _params(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "regressor": self.regressor,
            "interactions": self.interactions,
        }

    def _configure(self, changes: dict[str, Any]) -> None:
        self.epsilon = _in_range("epsilon", changes["epsilon"], 0.0, 1.0)


# -- helpers ----------------------------------------------------------------------------


@functools.cache
def _blas_controller() -> Any:
    return ThreadpoolController()


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run River's Bayesian update on one BLAS thread.

    Its rank-one covariance update (SciPy's ``dger``) on a matrix of a few hundred
    rows is far too small to gain from threads, yet NumPy and SciPy each bring their
    own OpenBLAS thread pool; on a small machine the two pools' spinning threads fight
    for the cores and one update took milliseconds instead of about 0.1 ms. The
    limit is process-wide while it lasts and is restored afterwards.
    """
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


def _argmax_indicator(scores: Sequence[float]) -> list[float]:
    """1.0 for every score tied with the best (within a relative 1e-12), else 0.0."""
    best = max(scores)
    threshold = best - _TIE_TOLERANCE * max(1.0, abs(best))
    return [1.0 if s >= threshold else 0.0 for s in scores]


def _first_non_finite(x: dict[str, float]) -> tuple[str, float] | None:
    for key, value in x.items():
        if not math.isfinite(value):
            return key, value
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(name: str, value: float) -> float:
    if not (_is_number(value) and 0.0 < value < math.inf):  # also rejects NaN
        msg = f"`{name}` must be a finite number > 0, got {value!r}"
        raise ConfigurationError(msg)
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if not (_is_number(value) and 0.0 <= value < math.inf):  # also rejects NaN
        msg = f"`{name}` must be a finite number >= 0, got {value!r}"
        raise ConfigurationError(msg)
    return float(value)


def _in_range(name: str, value: float, low: float, high: float) -> float:
    if not (_is_number(value) and low <= value <= high):  # also rejects NaN
        msg = f"`{name}` must be a number in [{low}, {high}], got {value!r}"
        raise ConfigurationError(msg)
    return float(value)


def _count(name: str, value: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (1 <= value <= high):
        msg = f"`{name}` must be an integer in [1, {high}], got {value!r}"
        raise ConfigurationError(msg)
    return value


register(LinUCB)
register(LinearTS)
register(RiverGreedy, *((f"river-greedy-{kind}", {"regressor": kind}) for kind in _REGRESSORS))
