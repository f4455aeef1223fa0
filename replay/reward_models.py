"""Reward models for the direct method and the doubly robust estimators.

An estimator that uses a reward model wants, for every logged row, the predicted reward
of *every* offered action: :class:`RewardPredictions`, an ``(n, K)`` array tied to the
log it describes. There are two ways to get one:

- pass any predictions you have (an oracle in a simulation, another team's model, a
  constant): ``RewardPredictions(logs, values)`` or ``RewardPredictions.constant``;
- fit :class:`HashedRidge` with cross-fitting: ``HashedRidge().cross_fit(logs)``.

Cross-fitting (Chernozhukov et al., *Double/debiased machine learning*, 2018) splits the
rows into ``n_folds`` folds, fits the model on all folds but one and predicts the rows of
the held-out fold, so no row's prediction has seen that row's reward. Without it a
flexible model partly memorises the rewards it is then subtracted from, and the doubly
robust correction shrinks towards zero.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bandit.errors import ConfigurationError, LogFormatError
from policies._features import flatten, joint_features
from policies._types import Action
from replay._data import FloatArray, IntArray, LoggedDecisions, _first_bad

__all__ = ["HashedRidge", "RewardModel", "RewardPredictions"]

_MAX_FEATURES = 2**14
"""Largest hashed dimension: the model keeps a dense ``d x d`` matrix per fold."""

_GRAM_CHUNK = 2**22
"""Outer-product entries accumulated per step when building the ridge statistics."""


@dataclass(frozen=True, eq=False)
class RewardPredictions:
    """Predicted reward of every offered action, row by row, for one log.

    Parameters
    ----------
    logs
        The decisions these predictions are for.
    values
        ``(n, K)`` predicted rewards, finite on every offered action. Padding columns
        (beyond a row's ``n_actions``) are ignored and stored as 0.

    Raises
    ------
    LogFormatError
        If the shape does not match `logs` or a prediction is not finite (naming the row).

    Examples
    --------
    >>> logs = LoggedDecisions(n_actions=np.array([2, 3]), chosen=np.array([1, 0]),
    ...                        propensity=np.array([0.5, 0.2]), reward=np.array([1.0, 0.0]))
    >>> RewardPredictions(logs, np.array([[0.1, 0.9, 0.0], [0.3, 0.2, 0.5]])).at_chosen()
    array([0.9, 0.3])
    >>> RewardPredictions(logs, np.zeros((2, 2)))
    Traceback (most recent call last):
    ...
    bandit.errors.LogFormatError: reward `values` must have shape (2, 3), got (2, 2)
    """

    logs: LoggedDecisions
    values: FloatArray

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64)  # a copy: padding is zeroed below
        n, width = self.logs.n, self.logs.width
        if values.shape != (n, width):
            msg = f"reward `values` must have shape ({n}, {width}), got {values.shape}"
            raise LogFormatError(msg)
        real = self.logs.mask()
        _first_bad(
            (real & ~np.isfinite(values)).any(axis=1),
            "reward `values` must be finite for every offered action",
            self.logs.n_actions,
        )
        values[~real] = 0.0
        values.flags.writeable = False
        object.__setattr__(self, "values", values)

    @classmethod
    def constant(cls, logs: LoggedDecisions, value: float) -> RewardPredictions:
        """Predict the same reward for every action of every row (a deliberately poor model).

        Examples
        --------
        >>> logs = LoggedDecisions(n_actions=np.array([2]), chosen=np.array([0]),
        ...                        propensity=np.array([0.5]), reward=np.array([1.0]))
        >>> RewardPredictions.constant(logs, 0.5).values
        array([[0.5, 0.5]])
        """
        return cls(logs, np.full((logs.n, logs.width), float(value)))

    def at_chosen(self) -> FloatArray:
        """``(n,)`` the predicted reward of each logged choice."""
        logs = self.logs
        return self.values[np.arange(logs.n), logs.chosen]


@runtime_checkable
class RewardModel(Protocol):
    """Anything that turns a log into cross-fitted :class:`RewardPredictions`."""

    def cross_fit(self, logs: LoggedDecisions) -> RewardPredictions:
        """Predict every offered action's reward, each row by a model that never saw it."""
        ...


@dataclass(frozen=True, slots=True)
class HashedRidge:
    """Ridge regression of the reward on hashed joint (context, action) features.

    Each (context, action) pair is described by
    :func:`policies._features.joint_features` (context features, action features, the
    action id, and their products), hashed with a signed hash into `n_features` columns.
    Only logged choices are training examples (their reward is the target); every
    offered action is predicted.

    The model is kept as its sufficient statistics ``X'X``, ``X'y``, ``sum x``,
    ``sum y`` and ``n``, which are accumulated row by row (so the model can be updated
    online) and per fold, so cross-fitting is exact and takes one pass: the model for
    fold ``k`` is the ridge solution of *all statistics minus fold k's*. Rewards are
    centred on the training mean, so the intercept is not shrunk.

    Parameters
    ----------
    alpha
        L2 penalty, > 0.
    n_features
        Hashed dimension, in [1, 16384]. The model works in the ``m <= n_features``
        buckets the log actually uses and holds ``n_folds + 2`` dense ``m x m``
        matrices: at most 56 MB with the defaults, about 8 (n_folds + 2) n_features^2
        bytes in the worst case. Raise it when the log has many distinct features
        (collisions blur them together).
    n_folds
        Number of cross-fitting folds, >= 2.
    interactions
        Whether the features include context x action products (a linear model needs
        them to let different contexts prefer different actions).
    seed
        Seeds the random assignment of rows to folds.

    Raises
    ------
    ConfigurationError
        For a hyperparameter that breaks its rule (the message names it).

    Notes
    -----
    Featurising calls a Python function per (row, action) pair: expect on the order of
    tens of thousands of pairs per second. The linear algebra is vectorised.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 2000
    >>> young = rng.random(n) < 0.5
    >>> contexts = [{"user": {"young": float(y)}} for y in young]
    >>> chosen = rng.integers(0, 2, n)
    >>> mean = np.where(young == (chosen == 0), 0.8, 0.2)  # the young like action "a"
    >>> logs = LoggedDecisions(
    ...     n_actions=np.full(n, 2), chosen=chosen, propensity=np.full(n, 0.5),
    ...     reward=rng.binomial(1, mean).astype(float),
    ...     action_ids=[["a", "b"]] * n, contexts=contexts)
    >>> predictions = HashedRidge(alpha=1.0, n_folds=5).cross_fit(logs)
    >>> predictions.values[:3].round(2)
    array([[0.23, 0.78],
           [0.8 , 0.21],
           [0.81, 0.18]])
    >>> young[:3]
    array([False,  True,  True])
    >>> HashedRidge(n_folds=1)
    Traceback (most recent call last):
    ...
    bandit.errors.ConfigurationError: `n_folds` must be an integer >= 2, got 1
    """

    alpha: float = 1.0
    n_features: int = 2**10
    n_folds: int = 5
    interactions: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check_real("alpha", self.alpha, lambda v: 0 < v < math.inf, "> 0 and finite")
        _check_int("n_features", self.n_features, 1, _MAX_FEATURES)
        _check_int("n_folds", self.n_folds, 2, None)
        if not isinstance(self.interactions, bool):
            msg = f"`interactions` must be a bool, got {self.interactions!r}"
            raise ConfigurationError(msg)
        _check_int("seed", self.seed, 0, None)

    def cross_fit(self, logs: LoggedDecisions) -> RewardPredictions:
        """Fit on all folds but one and predict the held-out fold, for every fold.

        Parameters
        ----------
        logs
            Decisions with `contexts` (and ideally `action_ids` and `action_features`);
            a missing column counts as empty features (a missing action id as the
            column index), so with nothing at all the model predicts a mean reward per
            column.

        Raises
        ------
        ConfigurationError
            If the log has fewer rows than `n_folds`.
        """
        n = logs.n
        if n < self.n_folds:
            msg = f"`n_folds`={self.n_folds} needs at least {self.n_folds} rows, got {n}"
            raise ConfigurationError(msg)
        pointer, hashed, value = self._featurise(logs)
        # Solve in the buckets actually used: a bucket no training row touches gets a zero
        # coefficient anyway, so this is exact, and the matrices are (used x used).
        # (the buckets' ranks, as np.unique's inverse gives them, without its sort)
        used = np.zeros(self.n_features, dtype=bool)
        used[hashed] = True
        index = (np.cumsum(used) - 1)[hashed]
        d = int(np.count_nonzero(used)) or 1
        pair_start = np.concatenate(([0], np.cumsum(logs.n_actions)[:-1]))
        chosen_pair = pair_start + logs.chosen
        folds = self.n_folds
        fold = np.random.default_rng(self.seed).permutation(n) % folds
        reward = logs.reward

        grams = np.zeros((folds, d, d))
        cross = np.zeros((folds, d))  # X'y
        sums = np.zeros((folds, d))  # sum of x
        for k in range(folds):
            pairs = chosen_pair[fold == k]
            grams[k] = _gram(pointer, index, value, pairs, d)
            rows = np.repeat(np.arange(pairs.size), pointer[pairs + 1] - pointer[pairs])
            entries = _entries(pointer, pairs)
            ys = reward[fold == k]
            cross[k] = np.bincount(index[entries], value[entries] * ys[rows], minlength=d)
            sums[k] = np.bincount(index[entries], value[entries], minlength=d)
        y_sum = np.bincount(fold, reward, minlength=folds)
        y_count = np.bincount(fold, minlength=folds).astype(np.float64)

        coefficients = np.empty((folds, d))
        intercepts = np.empty(folds)
        ridge = self.alpha * np.eye(d)
        for k in range(folds):
            # Sum the other folds (not "all minus this one"), so not even rounding in a
            # row's prediction depends on its own fold's rewards.
            others = np.arange(folds) != k
            mean = y_sum[others].sum() / y_count[others].sum()
            rhs = cross[others].sum(axis=0) - mean * sums[others].sum(axis=0)
            gram = ridge.copy()
            for j in np.flatnonzero(others).tolist():
                gram += grams[j]
            coefficients[k] = np.linalg.solve(gram, rhs)
            intercepts[k] = mean

        pair_row = np.repeat(np.arange(n), logs.n_actions)
        entry_pair = np.repeat(np.arange(pointer.size - 1), np.diff(pointer))
        entry_fold = fold[pair_row[entry_pair]]
        contribution = value * coefficients[entry_fold, index]
        predicted = (
            np.bincount(entry_pair, contribution, minlength=pointer.size - 1).astype(np.float64)
            + intercepts[fold[pair_row]]
        )
        values = np.zeros((n, logs.width))
        values[logs.mask()] = predicted
        return RewardPredictions(logs, values)

    def _featurise(self, logs: LoggedDecisions) -> tuple[IntArray, IntArray, FloatArray]:
        """CSR form of every (row, offered action) pair's hashed features, row-major.

        The entries are :func:`joint_features`' of each pair, in its order. The context
        is flattened once per row and a product's bucket is looked up by its two names,
        without building the product's name again; a pair where names could collide (a
        name on both sides, a ``*`` in a name) takes :func:`joint_features` itself.
        (Flat names always hold a ``.`` or ``=``, so none is ``bias``.)
        """
        empty: Mapping[str, Mapping[str, Any]] = {}
        contexts, ids, features = logs.contexts, logs.action_ids, logs.action_features
        d, interactions = self.n_features, self.interactions
        cache: dict[str, tuple[int, float]] = {}
        products: dict[str, dict[str, tuple[int, float]]] = {}
        bias = _hash("bias", d)
        index: list[int] = []
        value: list[float] = []
        pointer = [0]

        def hashed(name: str) -> tuple[int, float]:
            hit = cache.get(name)
            if hit is None:
                hit = cache[name] = _hash(name, d)
            return hit

        for i, count in enumerate(logs.n_actions.tolist()):
            context = empty if contexts is None else contexts[i]
            shared = flatten(context)
            simple = not any("*" in name for name in shared)
            shared_entries = [
                (bucket, sign * x) for name, x in shared.items() for bucket, sign in (hashed(name),)
            ]
            for j in range(count):
                action = Action(
                    str(j) if ids is None else ids[i][j],
                    empty if features is None else features[i][j],
                )
                own = flatten(action.features)
                own[f"action={action.id}"] = 1.0
                if not (
                    simple
                    and own.keys().isdisjoint(shared)
                    and not any("*" in name for name in own)
                ):
                    for name, x in joint_features(
                        context, action, interactions=interactions
                    ).items():
                        bucket, sign = hashed(name)
                        index.append(bucket)
                        value.append(sign * x)
                    pointer.append(len(index))
                    continue
                index.append(bias[0])
                value.append(bias[1])
                for bucket, signed in shared_entries:
                    index.append(bucket)
                    value.append(signed)
                own_items = list(own.items())
                for name, x in own_items:
                    bucket, sign = hashed(name)
                    index.append(bucket)
                    value.append(sign * x)
                if interactions:
                    for ck, cv in shared.items():
                        known = products.get(ck)
                        if known is None:
                            known = products[ck] = {}
                        for ak, av in own_items:
                            hit = known.get(ak)
                            if hit is None:
                                hit = known[ak] = _hash(f"{ck}*{ak}", d)
                            index.append(hit[0])
                            value.append(hit[1] * (cv * av))
                pointer.append(len(index))
        return (
            np.asarray(pointer, dtype=np.int64),
            np.asarray(index, dtype=np.int64),
            np.asarray(value, dtype=np.float64),
        )


def _hash(name: str, d: int) -> tuple[int, float]:
    """Stable bucket and sign of a feature name (not Python's per-process salted hash)."""
    digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    return digest % d, 1.0 if digest >> 63 else -1.0


def _entries(pointer: IntArray, pairs: IntArray) -> IntArray:
    """Return the positions in the CSR arrays of every entry of `pairs`, pair by pair."""
    lengths = pointer[pairs + 1] - pointer[pairs]
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(pointer[pairs], lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    entries: IntArray = starts + offsets
    return entries


def _gram(
    pointer: IntArray, index: IntArray, value: FloatArray, pairs: IntArray, d: int
) -> FloatArray:
    """``X'X`` over the sparse rows `pairs`, grouped by row length so it vectorises."""
    gram = np.zeros(d * d)
    lengths = pointer[pairs + 1] - pointer[pairs]
    for length in np.unique(lengths).tolist():
        if length == 0:
            continue
        group = pairs[lengths == length]
        step = max(1, _GRAM_CHUNK // (length * length))
        for start in range(0, group.size, step):
            at = pointer[group[start : start + step], None] + np.arange(length)
            idx, val = index[at], value[at]
            flat = (idx[:, :, None] * d + idx[:, None, :]).ravel()
            gram += np.bincount(flat, (val[:, :, None] * val[:, None, :]).ravel(), d * d)
    return gram.reshape(d, d)


def _check_real(name: str, value: object, ok: Any, rule: str) -> None:
    """Raise naming `name`, `rule` and `value` unless `value` is a real number that is ok."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(float(value)):
        msg = f"`{name}` must be {rule}, got {value!r}"
        raise ConfigurationError(msg)


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    """Raise naming `name`, the bounds and `value` unless it is an integer in bounds."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
        if number >= low and (high is None or number <= high):
            return
    rule = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    msg = f"`{name}` must be {rule}, got {value!r}"
    raise ConfigurationError(msg)
