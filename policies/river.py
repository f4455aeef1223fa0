"""River-based policies: LinUCB, linear Thompson sampling and epsilon-greedy.

Each policy keeps one online River regressor over the joint features of a context and
an action (both sides, the action's id, and by default every context feature x action
feature product, see `interactions`) and learns by plain regression of the observed
reward on the chosen action's features. They differ only in how they turn the
regressor's predictions into a distribution over the offered actions:

- :class:`LinUCB`: all mass on the action with the highest upper confidence bound.
- :class:`LinearTS`: the probability that each action wins a joint Thompson draw,
  estimated by seeded Monte Carlo.
- :class:`RiverGreedy`: epsilon-greedy on any of a few online regressors.

Features a model has not seen yet, including the id of a new action, simply start at
their prior (zero weight, and prior variance for the Bayesian models).

The two Bayesian policies score all n offered actions at once, on the k features
those actions use: their rows as an n x k matrix, the k posterior means and the k x k
block of the posterior covariance, read from River's private arrays. That costs
O(k d + n k^2) per decision, d being the number of features the model has seen,
against O(n d^2) through River's ``predict_one``, action by action. A River version
that no longer keeps those arrays is detected on construction and on restore, and
then scored through the public ``predict_one(x, with_dist=True)`` instead, with the
same results up to rounding (per action, and for :class:`LinearTS` per pair of
actions), only slower. Learning is River's own ``learn_one``, O(d^2).

Snapshots pickle the River model. Unpickling runs code, so a snapshot must only ever be
restored from the service's own trusted store (the base class checks its checksum, which
guards against corruption, not against an attacker who can write to that store).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import pickle
import types
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from river import linear_model, optim, tree
from threadpoolctl import ThreadpoolController

from policies._base import Policy
from policies._features import flatten, joint_features
from policies._types import Action, Context
from policies.errors import (
    ConfigurationError,
    InvalidFeaturesError,
    SnapshotError,
)
from policies.registry import register

__all__ = ["Interactions", "LinUCB", "LinearTS", "Regressor", "RiverGreedy"]

Regressor = Literal["linear", "bayesian", "pa", "tree"]

Interactions = Literal["features", "all", "none"]
"""Which context x action products the features include; see :func:`_features`."""

_INTERACTIONS: tuple[str, ...] = ("features", "all", "none")

_REGRESSORS: tuple[str, ...] = ("linear", "bayesian", "pa", "tree")

FloatArray = npt.NDArray[np.float64]

_MAX_SAMPLES = 100_000
"""Upper bound on `n_samples`: keeps one pmf call's memory and time bounded."""

_TIE_TOLERANCE = 1e-12
"""Scores within this relative distance of the best one count as tied for the best."""


class _RiverPolicy(Policy):
    """What every River policy shares: features, learning, and pickled snapshots."""

    def __init__(self, *, interactions: Interactions | bool, floor: float) -> None:
        super().__init__(floor=floor)
        self.interactions: Interactions = _check_interactions(interactions)
        self._model: Any = self._new_model()

    @abstractmethod
    def _new_model(self) -> Any:
        """Return a fresh, untrained River regressor."""

    def _bayesian(self) -> bool:
        """Whether the model is River's Bayesian linear regression."""
        return False

    def _rows(self, context: Context, actions: Sequence[Action]) -> list[dict[str, float]]:
        return [_features(context, a, self.interactions) for a in actions]

    def _learn(
        self,
        context: Context,
        actions: Sequence[Action],
        chosen: int,
        reward: float,
        probability: float,
    ) -> None:
        x = _features(context, actions[chosen], self.interactions)
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

    def _non_finite(self) -> str | None:
        return _non_finite_number(self._model, "model", set())

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
    """A River Bayesian linear regression, read through the posterior of its weights.

    Scoring reads the posterior only on the features the offered actions use (see
    :meth:`_active`), through River's private arrays when this River version has them
    and through its public predictive distributions otherwise.
    """

    def __init__(
        self,
        *,
        prior_precision: float,
        noise_precision: float,
        interactions: Interactions | bool,
        floor: float,
    ) -> None:
        self.prior_precision = _positive("prior_precision", prior_precision)
        self.noise_precision = _positive("noise_precision", noise_precision)
        super().__init__(interactions=interactions, floor=floor)
        self._fast = _reads_posterior(self._model)

    def _new_model(self) -> Any:
        return linear_model.BayesianLinearRegression(
            alpha=self.prior_precision, beta=self.noise_precision
        )

    def _bayesian(self) -> bool:
        return True

    def _load_state(self, payload: bytes) -> None:
        super()._load_state(payload)
        self._fast = _reads_posterior(self._model)

    def _posterior(self, rows: Sequence[dict[str, float]]) -> tuple[FloatArray, FloatArray]:
        """Posterior mean and epistemic variance of each row's expected reward.

        River's predictive variance is ``1 / noise_precision + x' S x``; the second term,
        the variance of the mean reward under the weight posterior, is what exploration
        needs. Rounding can leave it a hair below zero, hence the clamp.
        """
        if not self._fast:
            moments = [self._public_moments(x) for x in rows]
            means = np.array([m for m, _ in moments])
            return means, np.maximum([v for _, v in moments], 0.0)
        active = self._active(rows)
        with np.errstate(all="ignore"):  # non-finite features are named by _check_scores
            means = active.seen @ active.mean
            variances = np.einsum("ij,ij->i", active.seen @ active.covariance, active.seen)
            variances += np.einsum("ij,ij->i", active.unseen, active.unseen) * active.prior
        return means, np.maximum(variances, 0.0)

    def _joint_posterior(self, rows: Sequence[dict[str, float]]) -> tuple[FloatArray, FloatArray]:
        """Posterior mean of each row's expected reward, and their joint covariance.

        The covariance is that of ``X w`` under the weight posterior, ``X S X'``, with
        ``X`` the rows; its diagonal is :meth:`_posterior`'s variances, unclamped.
        """
        if not self._fast:
            return self._public_joint_posterior(rows)
        active = self._active(rows)
        with np.errstate(all="ignore"):  # non-finite features are named by _check_scores
            means = active.seen @ active.mean
            covariance = (active.seen @ active.covariance) @ active.seen.T
            covariance += (active.unseen @ active.unseen.T) * active.prior
        return means, covariance

    def _active(self, rows: Sequence[dict[str, float]]) -> _Active:
        """Return the rows as dense matrices over the features they use, and the posterior.

        Features the model has seen get columns of `seen`, with their posterior mean
        and covariance read out of the model; features it has not seen get columns of
        `unseen`: independent weights at their prior, zero mean and variance
        `prior`, exactly as River's ``predict_one(x, with_dist=True)`` treats them.
        """
        model = self._model
        index: dict[str, int] = model._idx
        names: list[str] = []
        values: list[float] = []
        for x in rows:
            names.extend(x)
            values.extend(x.values())
        row_of = np.repeat(np.arange(len(rows)), [len(x) for x in rows])
        cells = np.array(values, dtype=np.float64)
        positions = np.array([index.get(name, -1) for name in names], dtype=np.intp)
        known = positions >= 0
        # Seen features in River's index order; unseen ones in order of appearance.
        where, seen_column = np.unique(positions[known], return_inverse=True)
        seen_matrix = np.zeros((len(rows), len(where)))
        seen_matrix[row_of[known], seen_column] = cells[known]
        unknown = np.flatnonzero(~known).tolist()
        unseen: dict[str, int] = {}
        unseen_column = [unseen.setdefault(names[i], len(unseen)) for i in unknown]
        unseen_matrix = np.zeros((len(rows), len(unseen)))
        unseen_matrix[row_of[unknown], unseen_column] = cells[unknown]
        # River's posterior mean is `_ss_inv_arr @ _eta_arr`, cached in `_m_arr` on the
        # first prediction after an update. Only the k entries of the seen features are
        # needed, O(k d) rather than O(d^2); and never reading the cache keeps the result
        # a function of the learned state alone, whether the cache is filled or not. The
        # covariance is symmetric and kept column-major, so its columns are read.
        columns = model._ss_inv_arr[:, where]
        return _Active(
            seen=seen_matrix,
            mean=model._eta_arr @ columns,
            covariance=columns[where],
            unseen=unseen_matrix,
            prior=1.0 / float(model.alpha),
        )

    def _public_moments(self, x: dict[str, float]) -> tuple[float, float]:
        """Posterior mean and (unclamped) epistemic variance of one row, via River's API."""
        predictive = self._model.predict_one(x, with_dist=True)
        return float(predictive.mu), float(predictive.sigma) ** 2 - 1.0 / self.noise_precision

    def _public_joint_posterior(
        self, rows: Sequence[dict[str, float]]
    ) -> tuple[FloatArray, FloatArray]:
        """:meth:`_joint_posterior` through River's public API: O(n^2) predictions.

        The covariance of two rows is recovered from variances alone, by polarisation:
        ``Cov(a, b) = (Var(a + b) - Var(a) - Var(b)) / 2``, where ``a + b`` is the
        feature-wise sum of the two rows.
        """
        moments = [self._public_moments(x) for x in rows]
        means = np.array([m for m, _ in moments])
        covariance = np.diag([v for _, v in moments])
        for a, b in itertools.combinations(range(len(rows)), 2):
            both = dict(rows[a])
            for name, value in rows[b].items():
                both[name] = both.get(name, 0.0) + value
            _, total = self._public_moments(both)
            covariance[a, b] = covariance[b, a] = (total - moments[a][1] - moments[b][1]) / 2
        return means, covariance

    def _bayesian_params(self) -> dict[str, Any]:
        return {
            "prior_precision": self.prior_precision,
            "noise_precision": self.noise_precision,
            "interactions": self.interactions,
        }


@dataclass(frozen=True, slots=True)
class _Active:
    """Offered rows over the features they use, and the weight posterior on those."""

    seen: FloatArray
    """(rows, k) values of the k features the model has seen."""
    mean: FloatArray
    """(k,) posterior mean of their weights."""
    covariance: FloatArray
    """(k, k) posterior covariance of their weights."""
    unseen: FloatArray
    """(rows, u) values of the u features the model has not seen."""
    prior: float
    """Prior variance of every unseen weight, ``1 / prior_precision``."""


class LinUCB(_BayesianPolicy):
    r"""LinUCB: play the action with the highest upper confidence bound on its reward.

    The reward model is River's Bayesian linear regression (ridge regression with a
    Gaussian posterior) over the joint context x action features, one model shared by
    all actions: Li et al.'s hybrid model, whose shared part crosses the context with
    the action features and whose per-action part is the action-id weight (and, with
    ``interactions="all"``, a weight per action and context feature as in their
    disjoint model). Each offered action is scored by

    .. math:: \mu_a + \alpha \sqrt{x_a^\top S x_a}

    where :math:`\mu_a` is the posterior mean reward and :math:`x_a^\top S x_a` the
    posterior (epistemic) variance of that mean: the predictive variance minus the
    observation noise :math:`1 / \beta`. All probability goes to the best score (ties,
    within a relative 1e-12, share it evenly); the exploration floor then gives every
    other action its minimum. A feature never seen before carries the prior variance
    :math:`1 / \text{prior\_precision}`, so new actions look optimistic.

    Learning costs O(d^2) time and the model O(d^2) memory, where d is the number of
    distinct features ever seen (every action id, and every context feature x action
    feature product); keep high-cardinality strings out of the features. Scoring n
    offered actions that use k distinct features between them costs O(k d + n k^2).

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
        Which context x action products the features include: ``"features"`` (every
        context feature x action feature, or x the action id for an action without
        features), ``"all"`` (also every context feature x action id: a weight per
        action and context feature, so d grows with the catalog) or ``"none"``.
        ``True`` and ``False``, from earlier versions, mean ``"all"`` and ``"none"``.
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
        interactions: Interactions | bool = "features",
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
        with np.errstate(all="ignore"):  # non-finite scores are named by _check_scores
            scores = (means + self.alpha * np.sqrt(variances)).tolist()
        self._check_scores(scores, rows, actions)
        return _argmax_indicator(scores)

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, **self._bayesian_params()}

    def _configure(self, changes: dict[str, Any]) -> None:
        self.alpha = _non_negative("alpha", changes["alpha"])


class LinearTS(_BayesianPolicy):
    r"""Linear Thompson sampling, reporting the probability of each action winning.

    Thompson sampling (Agrawal and Goyal, 2013) draws a weight vector from the
    posterior and plays the action it rewards most. A service that logs propensities
    needs the probability of that choice, which has no closed form, so this policy
    estimates it, and sampling then happens outside the policy, from the estimate:

    1. Score the offered actions by River's Bayesian linear regression over their
       joint context x action features :math:`x_a`: the posterior means
       :math:`\mu_a = x_a^\top m` and the epistemic covariance
       :math:`C_{ab} = x_a^\top S x_b` of their mean rewards (:math:`m`, :math:`S`: the
       weight posterior; a feature never seen has prior mean 0 and variance
       :math:`1 / \text{prior\_precision}`). Only the features the offered actions use
       enter, and the posterior restricted to them is exact, as the marginal of a
       Gaussian.
    2. Seed NumPy's default generator (``PCG64``) with a 128-bit BLAKE2b hash of a
       canonical JSON text of `seed`, the flattened context, and each offered action's
       id and flattened features in offer order (keys sorted, numbers as floats, zeros
       dropped, strings one-hot: exactly what the model sees).
    3. Draw an `n_samples` x (number of actions) matrix :math:`Z` of standard normals,
       row by row, and form the rows of :math:`\mu + Z L^\top`, where :math:`L` is the
       lower Cholesky factor of :math:`\text{scale} \cdot C` (``numpy.linalg.cholesky``);
       when that matrix is not positive definite (``scale=0``, say),
       :math:`L = V \operatorname{diag}(\sqrt{\max(w, 0)})` from its eigendecomposition
       :math:`V \operatorname{diag}(w) V^\top` (``numpy.linalg.eigh``).
    4. Give each action the fraction of rows in which it is the best; when :math:`L`
       came from the eigendecomposition, a row's ties split its unit evenly (scores
       within a relative 1e-12 of the best tie). The floor then applies.

    Each row of step 3 is distributed exactly as the offered actions' mean rewards
    :math:`X \theta` under one joint draw :math:`\theta` of the whole weight vector from
    the posterior (with covariance times `scale`), so this is joint linear Thompson
    sampling: actions that share weights (the bias, the context, common action
    features) are sampled with the correlation those shared weights give them, and
    only the uncertainty about what differs between actions drives exploration.

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
        Which context x action products the features include: ``"features"`` (every
        context feature x action feature, or x the action id for an action without
        features), ``"all"`` (also every context feature x action id: a weight per
        action and context feature, so d grows with the catalog) or ``"none"``.
        ``True`` and ``False``, from earlier versions, mean ``"all"`` and ``"none"``.
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
    samples: ClassVar[bool] = True  # the pmf is a Monte Carlo estimate
    live_params: ClassVar[frozenset[str]] = frozenset({"floor", "n_samples", "scale"})

    def __init__(
        self,
        *,
        n_samples: int = 500,
        scale: float = 1.0,
        seed: int = 0,
        prior_precision: float = 1.0,
        noise_precision: float = 1.0,
        interactions: Interactions | bool = "features",
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
        means, covariance = self._joint_posterior(rows)
        with np.errstate(all="ignore"):  # non-finite scores are named by _check_scores
            self._check_scores((means + np.diagonal(covariance)).tolist(), rows, actions)
        rng = np.random.default_rng(self._sampler_seed(context, actions))
        z = rng.standard_normal((self.n_samples, len(rows)))
        factor, definite = _factor(self.scale * covariance)
        draws = means + z @ factor.T
        if definite:
            # Continuous draws: each row has one best action (exact ties are negligible).
            wins = np.bincount(draws.argmax(axis=1), minlength=len(rows))
        else:
            # Some direction has no spread (scale 0, say): equal means tie in every row.
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
        Which context x action products the features include: ``"features"`` (every
        context feature x action feature, or x the action id for an action without
        features), ``"all"`` (also every context feature x action id: a weight per
        action and context feature, so d grows with the catalog) or ``"none"``.
        ``True`` and ``False``, from earlier versions, mean ``"all"`` and ``"none"``.
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
        interactions: Interactions | bool = "features",
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


def _features(context: Context, action: Action, interactions: Interactions) -> dict[str, float]:
    """Return the features of one (context, action) pair that a River model learns from.

    Always the bias, the flattened context, the flattened action features and the
    indicator ``action=<id>``; then, by `interactions`:

    - ``"features"``: every context feature x action feature product; an action with no
      features of its own is crossed with its id instead, so that it can still be
      preferred in some contexts and not others. The number of distinct features grows
      with the number of context features x action features, not with the catalog.
    - ``"all"``: every context feature x (action feature or action id) product, as
      :func:`~policies._features.joint_features` builds them: each action also gets its
      own weight for every context feature (Li et al.'s disjoint part), at the price of
      a number of distinct features proportional to the catalog size.
    - ``"none"``: no products; the context then cannot change which action is best.

    Examples
    --------
    >>> context = {"u": {"young": 1.0}}
    >>> sorted(_features(context, Action("a", {"i": {"topic": "golf"}}), "features"))
    ['action=a', 'bias', 'i.topic=golf', 'u.young', 'u.young*i.topic=golf']
    >>> sorted(_features(context, Action("b"), "features"))
    ['action=b', 'bias', 'u.young', 'u.young*action=b']
    """
    if interactions != "features":
        return joint_features(context, action, interactions=interactions == "all")
    shared = flatten(context)
    own = flatten(action.features)
    crossed = own or {f"action={action.id}": 1.0}
    joint: dict[str, float] = {"bias": 1.0, **shared, **own, f"action={action.id}": 1.0}
    for ck, cv in shared.items():
        for ak, av in crossed.items():
            joint[f"{ck}*{ak}"] = cv * av
    return joint


def _check_interactions(interactions: object) -> Interactions:
    """Validate `interactions`; the bools of earlier versions mean "all" and "none"."""
    if interactions is True:
        return "all"
    if interactions is False:
        return "none"
    if interactions == "features":
        return "features"
    if interactions == "all":
        return "all"
    if interactions == "none":
        return "none"
    msg = f"`interactions` must be one of {list(_INTERACTIONS)} or a bool, got {interactions!r}"
    raise ConfigurationError(msg)


def _reads_posterior(model: Any) -> bool:
    """Whether `model` keeps its posterior where :meth:`_BayesianPolicy._active` reads it.

    River 0.26 keeps the feature index in ``_idx``, the posterior covariance in
    ``_ss_inv_arr`` and the natural mean in ``_eta_arr`` (the posterior mean is their
    product). These are private: a River version without them gets the public, slower
    path, which computes the same numbers (``tests/policies/test_river.py`` checks
    that both agree on the installed version, and that it has them).
    """
    covariance = getattr(model, "_ss_inv_arr", None)
    natural_mean = getattr(model, "_eta_arr", None)
    return (
        isinstance(getattr(model, "_idx", None), dict)
        and isinstance(covariance, np.ndarray)
        and covariance.ndim == 2
        and isinstance(natural_mean, np.ndarray)
        and natural_mean.shape == covariance.shape[:1]
        and getattr(model, "smoothing", None) is None
        and _is_number(getattr(model, "alpha", None))
    )


def _factor(covariance: FloatArray) -> tuple[FloatArray, bool]:
    """Return L with ``L @ L.T == covariance``, and whether `covariance` is definite.

    The lower Cholesky factor when `covariance` is positive definite; otherwise, as
    when it is all zeros (``scale=0``), ``V diag(sqrt(max(w, 0)))`` from its eigen
    decomposition ``V diag(w) V'``.
    """
    try:
        return np.asarray(np.linalg.cholesky(covariance), dtype=np.float64), True
    except np.linalg.LinAlgError:
        pass
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    return eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0)), False


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


def _non_finite_number(value: object, path: str, seen: set[int]) -> str | None:
    """Return where a NaN or infinity is inside a River model's state, or None.

    Walks the numbers the model keeps: floats, NumPy arrays (River's Bayesian
    posterior), mappings (weights, AdaGrad's squared gradients), sequences, and the
    attributes of River's objects (a tree's nodes, their statistics and leaf models).
    """
    if isinstance(value, float | np.floating):
        return None if math.isfinite(value) else f"{path} = {float(value)!r}"
    if isinstance(value, np.ndarray):
        bad = 0 if value.dtype.kind not in "fc" else int(value.size - np.isfinite(value).sum())
        return f"{path} holds {bad} non-finite numbers" if bad else None
    if id(value) in seen or isinstance(value, _ATOMS):
        return None
    seen.add(id(value))
    for child, where in _children(value, path):
        found = _non_finite_number(child, where, seen)
        if found is not None:
            return found
    return None


_ATOMS = (
    type(None),
    bool,
    int,
    str,
    bytes,
    type,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
)


def _children(value: object, path: str) -> Iterator[tuple[object, str]]:
    """Yield the values held by a mapping, a sequence or an object, each with its path."""
    items: Any = getattr(value, "items", None)
    if callable(items):
        try:
            pairs = list(items())
        except TypeError:  # an `items` that is not a mapping's
            pairs = []
        for key, item in pairs:
            yield item, f"{path}[{key!r}]"
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            yield item, f"{path}[{index}]"
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        for name, item in attributes.items():
            yield item, f"{path}.{name}"


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
