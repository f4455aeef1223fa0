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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import numpy.typing as npt
import scipy.optimize
import scipy.sparse
import scipy.special
from threadpoolctl import threadpool_limits

from policies._features import flatten
from policies.errors import ConfigurationError, LogFormatError
from policies.registry import parse_spec
from replay._data import FeatureRows, FloatArray, IntArray, LoggedDecisions, _first_bad

__all__ = [  # noqa: RUF022 - plain sorted(), which tests/test_public_api.py checks
    "AutoRewardModel",
    "BoostedTrees",
    "HashedLogistic",
    "HashedRidge",
    "ModelQuality",
    "REWARD_MODELS",
    "RewardModel",
    "RewardPredictions",
    "make_reward_model",
]

U64Array = npt.NDArray[np.uint64]

_MAX_FEATURES = 2**14
"""Largest hashed dimension: the model solves a dense system of up to ``d x d``."""

_BLOCK_ROWS = 2**13
"""Rows encoded at a time (their contexts' entries, and their actions' ids)."""

_BATCH_ENTRIES = 2**18
"""Hashed entries expanded at a time: with the block, this bounds the working memory."""


@dataclass(frozen=True, slots=True)
class ModelQuality:
    """How well cross-fitted predictions predict the held-out rewards, beside a constant.

    Computed on each row's logged choice with the prediction of the model that did not
    see that row (its held-out fold), and, as the baseline, the mean reward of the
    training folds (the best constant a model could have learned).

    Parameters
    ----------
    model
        The reward model that made the predictions (its class and hyperparameters).
    metric
        ``"log loss"`` when every reward is 0 or 1 (probabilities clipped to
        [:data:`LOG_LOSS_EPSILON`, 1 - :data:`LOG_LOSS_EPSILON`], so a prediction outside
        (0, 1) costs a bounded amount), else ``"RMSE"``.
    value
        The model's held-out metric (lower is better).
    baseline
        The same metric for the training folds' mean reward.
    out_of_range
        Share of the predictions (every offered action of every row) outside the
        observed reward range: an unbounded model's negative click probabilities.

    Examples
    --------
    >>> quality = ModelQuality("HashedLogistic(C=1.0)", "log loss", 0.52, 0.69, 0.0)
    >>> quality.better
    True
    >>> quality.warning() is None
    True
    """

    model: str
    metric: str
    value: float
    baseline: float
    out_of_range: float

    @property
    def better(self) -> bool:
        """Whether the model beats the constant baseline on held-out rows."""
        return self.value < self.baseline

    def warning(self) -> str | None:
        """Return a plain-language warning when the model is no better than the constant."""
        if self.better:
            return None
        return (
            f"the reward model {self.model} is no better than a constant on held-out rows "
            f"({self.metric} {self.value:.4g} against {self.baseline:.4g}): the estimators "
            "that use it (DM, DR, SNDR, Switch-DR, DRos) rest on a poor model"
        )

    def describe(self) -> str:
        """One line: the model, its held-out metric and the baseline's."""
        text = (
            f"reward model {self.model}: held-out {self.metric} {self.value:.4g} "
            f"(constant baseline {self.baseline:.4g})"
        )
        if self.out_of_range > 0:
            text += f"; {self.out_of_range:.1%} of predictions outside the reward range"
        return text


LOG_LOSS_EPSILON = 1e-6
"""Predicted probabilities are clipped to [eps, 1 - eps] for the held-out log loss."""


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
    quality
        The held-out quality of the model that made them, when it was cross-fitted
        (every model here sets it); None for predictions given from outside.

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
    policies.errors.LogFormatError: reward `values` must have shape (2, 3), got (2, 2)
    """

    logs: LoggedDecisions
    values: FloatArray
    quality: ModelQuality | None = None

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

    @classmethod
    def _owned(
        cls, logs: LoggedDecisions, values: FloatArray, quality: ModelQuality | None = None
    ) -> RewardPredictions:
        """Wrap `values` without a copy: finite where offered, 0 in padding, not shared."""
        values.flags.writeable = False
        predictions = object.__new__(cls)
        object.__setattr__(predictions, "logs", logs)
        object.__setattr__(predictions, "values", values)
        object.__setattr__(predictions, "quality", quality)
        return predictions

    def at_chosen(self) -> FloatArray:
        """``(n,)`` the predicted reward of each logged choice."""
        logs = self.logs
        return self.values[np.arange(logs.n), logs.chosen]


@runtime_checkable
class RewardModel(Protocol):
    """Anything that turns a log into cross-fitted :class:`RewardPredictions`."""

    def cross_fit(
        self, logs: LoggedDecisions, *, progress: Callable[[int], None] | None = None
    ) -> RewardPredictions:
        """Predict every offered action's reward, each row by a model that never saw it.

        `progress`, when given, is called with the rows done so far, of ``2 n`` (fitting
        counts the first ``n``, predicting the second).
        """
        ...


@dataclass(frozen=True, slots=True)
class HashedRidge:
    """Ridge regression of the reward on hashed joint (context, action) features.

    Each (context, action) pair is described by the features of
    :func:`policies._features.joint_features`: a bias, the context's features, the
    action's (its features and its id; a name on both sides takes the action's value)
    and, with `interactions`, every context x action product. They are hashed with a
    signed hash into `n_features` columns (Weinberger et al., *Feature hashing for large
    scale multitask learning*, ICML 2009): a name by its BLAKE2b digest, a product by
    its two names' digests mixed with SplitMix64's finaliser (Steele, Lea and Flood,
    *Fast splittable pseudorandom number generators*, OOPSLA 2014), so a ``*`` inside a
    name never merges two products the way their joined names would. Only logged
    choices are training examples (their reward is the target); every offered action
    is predicted.

    The fit is ridge regression (Hoerl and Kennard, *Ridge regression*, Technometrics
    1970) from its sufficient statistics ``X'X``, ``X'y``, ``sum x``, ``sum y`` and
    ``n``, accumulated per fold, so every fold's model comes from one pass over the log:
    the model for fold ``k`` is the ridge solution of the *other* folds' statistics
    summed. Rewards are centred on the training mean, so the intercept is not shrunk.

    The log is read in blocks of rows, once to fit and once to predict, so memory does
    not grow with the log beyond the ``(n, K)`` predictions returned and a byte a row
    of fold assignment: each block's features are encoded to integer ids (contexts
    from their compact form, :class:`~replay.FeatureRows`, which :func:`replay.read_log`
    builds: each distinct feature is named once, the rows are array lookups; an
    action's features once per distinct action) and expanded into hashed entries with
    NumPy, a bounded batch (2^18 entries, some tens of MB) at a time; ``X'X`` is
    accumulated with :mod:`scipy.sparse`. Distinct actions are recognised by their id
    and the identity of their features mapping, which :func:`replay.read_log` shares
    between the rows that offer the same action (a log that copies them is as right,
    only slower). Predicting, the context and action terms are computed once per row
    and once per distinct action; only the products are expanded pair by pair.

    Parameters
    ----------
    alpha
        L2 penalty, > 0.
    n_features
        Hashed dimension, in [1, 16384]. The model solves in the ``m <= n_features``
        buckets the training rows use, with one dense ``m x m`` matrix at a time (8 MB at
        the default); ``X'X`` is kept sparse per fold (at most ``n_folds`` m^2 entries).
        Raise it when the log has many distinct features (collisions blur them
        together).
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
    Python looks each (row, action) pair up once in a dictionary (and, for contexts
    given as dicts rather than :class:`~replay.FeatureRows`, puts each row in that form
    once per pass); the rest is vectorised. On one core, a million rows of 10 actions
    with a few features a side (``bench/replay.py``) take about a quarter of a minute.

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
    policies.errors.ConfigurationError: `n_folds` must be an integer >= 2, got 1
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
        _check_bool("interactions", self.interactions)
        _check_int("seed", self.seed, 0, None)

    def cross_fit(
        self, logs: LoggedDecisions, *, progress: Callable[[int], None] | None = None
    ) -> RewardPredictions:
        """Fit on all folds but one and predict the held-out fold, for every fold.

        Parameters
        ----------
        logs
            Decisions with `contexts` (and ideally `action_ids` and `action_features`);
            a missing column counts as empty features (a missing action id as the
            column index), so with nothing at all the model predicts a mean reward per
            column.
        progress
            Called with the rows done so far, of ``2 n`` (one pass to fit, one to
            predict), after each block of rows.

        Raises
        ------
        ConfigurationError
            If the log has fewer rows than `n_folds`.
        LogFormatError
            Naming the row, if its `action_features` list fewer mappings than it offers
            actions, or a prediction is not finite (a feature that is not).
        """
        _check_rows(logs, self.n_folds)
        fold = _folds(logs.n, self.n_folds, self.seed)
        encoder = _Encoder(logs, self.n_features, interactions=self.interactions)
        done = _ignore if progress is None else progress
        coefficients, intercepts = self._fit(encoder, fold, done)
        values = _predict(encoder, fold, coefficients, intercepts, lambda rows: done(logs.n + rows))
        quality = _quality(repr(self), logs, values, fold, self.n_folds)
        return RewardPredictions._owned(logs, values, quality)

    def _fit(
        self, encoder: _Encoder, fold: IntArray, progress: Callable[[int], None]
    ) -> tuple[FloatArray, FloatArray]:
        """``(n_folds, d)`` coefficients and ``(n_folds,)`` intercepts, fold k's from the others.

        The statistics of fold ``j`` sit in columns ``j d .. (j + 1) d`` of one design,
        so one sparse product per batch gives every fold's ``X'X`` (block diagonal).
        """
        logs, d, folds = encoder.logs, self.n_features, self.n_folds
        width = folds * d
        gram = scipy.sparse.csr_array((width, width))
        cross = np.zeros(width)  # X'y
        sums = np.zeros(width)  # sum of x
        for start in range(0, logs.n, _BLOCK_ROWS):
            stop = min(logs.n, start + _BLOCK_ROWS)
            block = encoder.encode(start, stop, chosen_only=True)
            reward, row_fold = logs.reward[start:stop], fold[start:stop].astype(np.int64)
            for pairs in block.batches():
                pair, bucket, value = encoder.entries(block, pairs)
                column = row_fold[pairs[pair]] * d + bucket
                x = scipy.sparse.csr_array(
                    scipy.sparse.coo_array((value, (pair, column)), shape=(pairs.size, width))
                )
                gram += x.T @ x
                cross += np.bincount(column, value * reward[pairs[pair]], minlength=width)
                sums += np.bincount(column, value, minlength=width)
            progress(stop)
        used = np.flatnonzero(gram.diagonal().reshape(folds, d).sum(axis=0) > 0)
        grams = [gram[j * d + used][:, j * d + used] for j in range(folds)]
        cross, sums = cross.reshape(folds, d)[:, used], sums.reshape(folds, d)[:, used]
        y_sum = np.bincount(fold, logs.reward, minlength=folds)
        y_count = np.bincount(fold, minlength=folds).astype(np.float64)

        coefficients = np.zeros((folds, d))
        intercepts = np.empty(folds)
        for k in range(folds):
            # Sum the other folds (not "all minus this one"), so not even rounding in a
            # row's prediction depends on its own fold's rewards.
            others = np.arange(folds) != k
            mean = y_sum[others].sum() / y_count[others].sum()
            rhs = cross[others].sum(axis=0) - mean * sums[others].sum(axis=0)
            matrix = np.diag(np.full(used.size, float(self.alpha)))
            for j in np.flatnonzero(others).tolist():
                matrix += grams[j].toarray()
            coefficients[k, used] = np.linalg.solve(matrix, rhs)
            intercepts[k] = mean
        return coefficients, intercepts


def _ignore(done: int) -> None:
    """Progress nobody shows."""


def _predict(
    encoder: _Encoder,
    fold: IntArray,
    coefficients: FloatArray,
    intercepts: FloatArray,
    progress: Callable[[int], None] = _ignore,
) -> FloatArray:
    """``(n, K)`` predictions of every offered action, each row by its own fold's model.

    A pair's prediction is its fold's intercept plus the bias, context, action and
    product terms. The context term is computed once per row and the action term once
    per distinct action, so only the products are expanded pair by pair.
    """
    logs, d = encoder.logs, encoder.d
    values = np.zeros((logs.n, logs.width))
    flat = coefficients.ravel()
    bias = encoder.bias_sign * coefficients[:, encoder.bias_bucket]
    action_terms = np.zeros((coefficients.shape[0], 0))
    for start in range(0, logs.n, _BLOCK_ROWS):
        stop = min(logs.n, start + _BLOCK_ROWS)
        block = encoder.encode(start, stop, chosen_only=False)
        row_fold = fold[start:stop].astype(np.int64)
        pair_fold = row_fold[block.pair_row]
        # the context term, per row
        owner = np.repeat(np.arange(stop - start), np.diff(block.ctx_ptr))
        signed = block.ctx_val * encoder.sign[block.ctx_vid]
        weight = coefficients[row_fold[owner], encoder.bucket[block.ctx_vid]]
        context_terms = np.bincount(owner, signed * weight, minlength=stop - start)
        # the action term, per distinct action (and fold), for the actions new this block
        action_terms = encoder.extend_action_terms(action_terms, coefficients)
        predicted = (
            intercepts[pair_fold]
            + bias[pair_fold]
            + context_terms[block.pair_row]
            + action_terms[pair_fold, block.pair_kind]
        )
        if encoder.interactions:
            for pairs in block.batches():
                pair, bucket, value = encoder.products(block, pairs)
                weight = flat[pair_fold[pairs[pair]] * d + bucket]
                predicted[pairs] += np.bincount(pair, value * weight, minlength=pairs.size)
        pair, entry = encoder.overlaps(block, np.arange(block.pair_row.size))
        if pair.size:  # a name on both sides: the action's value replaces the context's
            vid = block.ctx_vid[entry]
            weight = coefficients[pair_fold[pair], encoder.bucket[vid]]
            np.subtract.at(predicted, pair, block.ctx_val[entry] * encoder.sign[vid] * weight)
        real = np.arange(logs.width) < logs.n_actions[start:stop, None]
        bad = ~np.isfinite(predicted)
        if bad.any():  # a feature that is not finite, or too large
            row = start + int(block.pair_row[np.argmax(bad)])
            msg = f"row {row}: reward `values` must be finite for every offered action"
            raise LogFormatError(msg)
        values[start:stop][real] = predicted
        progress(stop)
    return values


@dataclass(frozen=True, slots=True)
class HashedLogistic:
    """Logistic regression of a reward in [0, 1] on the hashed features of :class:`HashedRidge`.

    The same joint (context, action) features, hashed the same way, with the same
    cross-fitting; the link is logistic, so every prediction is a probability in
    [0, 1] and a rare click rate is modelled on the log-odds scale, where a linear
    model fits it, rather than as a small number a least-squares line overshoots into
    negatives. Each fold's model minimises the log loss of the other folds' logged
    choices plus ``||w||^2 / (2 C)`` (the intercept is not penalised), as
    :class:`sklearn.linear_model.LogisticRegression` does, with L-BFGS-B (Liu and
    Nocedal, *On the limited memory BFGS method for large scale optimization*, 1989;
    :func:`scipy.optimize.minimize`). Columns are scaled by their root mean square on
    the training rows before the solve (a diagonal preconditioner, undone in the
    coefficients), which cuts the iterations several fold on hashed features; the
    intercept starts at the training folds' log-odds.

    Fractional rewards in [0, 1] are fitted with the same cross-entropy (soft labels);
    other rewards are refused (use :class:`HashedRidge`, or ``"auto"``).

    Parameters
    ----------
    C
        Inverse L2 penalty, > 0.
    n_features
        Hashed dimension, in [1, 16384].
    n_folds
        Number of cross-fitting folds, >= 2.
    interactions
        Whether the features include context x action products.
    max_iter
        Most L-BFGS iterations per fold, >= 1. With the scaling, 30 bring the held-out
        log loss within 1e-4 of the optimum's on the benchmark's logs, and a 0.4% click
        log's to its optimum.
    seed
        Seeds the random assignment of rows to folds.

    Raises
    ------
    ConfigurationError
        For a hyperparameter that breaks its rule (the message names it).

    Notes
    -----
    The logged choices' hashed design is held in memory as one sparse matrix (about 12
    bytes per entry: 20 entries a row with a few features a side, 240 MB for a million
    rows), and each fold's training rows are copied from it while that fold is fitted.
    On one core, a million rows of 10 actions with a few features a side take about
    twice :class:`HashedRidge`'s time: the two encoding passes they share, then about
    10 CPU seconds of L-BFGS.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 4000
    >>> young = rng.random(n) < 0.5
    >>> contexts = [{"user": {"young": float(y)}} for y in young]
    >>> chosen = rng.integers(0, 2, n)
    >>> mean = np.where(young == (chosen == 0), 0.05, 0.002)  # rare clicks
    >>> logs = LoggedDecisions(
    ...     n_actions=np.full(n, 2), chosen=chosen, propensity=np.full(n, 0.5),
    ...     reward=rng.binomial(1, mean).astype(float),
    ...     action_ids=[["a", "b"]] * n, contexts=contexts)
    >>> predictions = HashedLogistic().cross_fit(logs)
    >>> bool(predictions.values.min() >= 0.0)
    True
    >>> predictions.quality.metric, predictions.quality.better
    ('log loss', True)
    >>> HashedLogistic(C=0)
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: `C` must be > 0 and finite, got 0
    """

    C: float = 1.0
    n_features: int = 2**10
    n_folds: int = 5
    interactions: bool = True
    max_iter: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        _check_real("C", self.C, lambda v: 0 < v < math.inf, "> 0 and finite")
        _check_int("n_features", self.n_features, 1, _MAX_FEATURES)
        _check_int("n_folds", self.n_folds, 2, None)
        _check_bool("interactions", self.interactions)
        _check_int("max_iter", self.max_iter, 1, None)
        _check_int("seed", self.seed, 0, None)

    def cross_fit(
        self, logs: LoggedDecisions, *, progress: Callable[[int], None] | None = None
    ) -> RewardPredictions:
        """Fit on all folds but one and predict the held-out fold, for every fold.

        `progress` as :meth:`HashedRidge.cross_fit`'s.

        Raises
        ------
        ConfigurationError
            If the log has fewer rows than `n_folds`.
        LogFormatError
            Naming the row, if a reward is outside [0, 1], or as :meth:`HashedRidge.cross_fit`.
        """
        done = _ignore if progress is None else progress
        _check_rows(logs, self.n_folds)
        _first_bad(
            (logs.reward < 0.0) | (logs.reward > 1.0),
            "`reward` must be in [0, 1] for HashedLogistic (use HashedRidge, or 'auto')",
            logs.reward,
        )
        fold = _folds(logs.n, self.n_folds, self.seed)
        encoder = _Encoder(logs, self.n_features, interactions=self.interactions)
        # The rows fold by fold: a fold's training rows are the two runs around it,
        # taken as views rather than copied.
        order = np.argsort(fold, kind="stable")
        design = _chosen_design(encoder)[order]
        reward = logs.reward[order]
        ends = np.searchsorted(fold[order], np.arange(self.n_folds + 1))
        coefficients = np.zeros((self.n_folds, self.n_features))
        intercepts = np.zeros(self.n_folds)
        for k in range(self.n_folds):
            before, after = int(ends[k]), int(ends[k + 1])
            parts = [
                (_row_range(design, 0, before), reward[:before]),
                (_row_range(design, after, logs.n), reward[after:]),
            ]
            coefficients[k], intercepts[k] = self._fit_one(parts)
        del design, order, reward
        done(logs.n)
        values = _predict(encoder, fold, coefficients, intercepts, lambda rows: done(logs.n + rows))
        values = scipy.special.expit(values, out=values)
        values[~logs.mask()] = 0.0
        quality = _quality(repr(self), logs, values, fold, self.n_folds)
        return RewardPredictions._owned(logs, values, quality)

    def _fit_one(self, parts: list[tuple[Any, FloatArray]]) -> tuple[FloatArray, float]:
        """Coefficients (in the hashed space) and intercept of a model of `parts`' rows."""
        d = self.n_features
        n = sum(y.size for _, y in parts)
        squares = sum(np.bincount(x.indices, x.data * x.data, minlength=d) for x, _ in parts)
        scale = np.sqrt(squares / n)
        used = scale > 0
        inverse = np.where(used, 1.0 / np.where(used, scale, 1.0), 0.0)
        penalty = inverse * inverse / float(self.C)
        total = sum(float(y.sum()) for _, y in parts)
        mean = float(np.clip(total / n, _LOGIT_EPSILON, 1.0 - _LOGIT_EPSILON))
        start = np.zeros(d + 1)
        start[d] = math.log(mean / (1.0 - mean))

        def objective(w: FloatArray) -> tuple[float, FloatArray]:
            beta = w[:d] * inverse
            gradient = np.zeros(d + 1)
            value = 0.5 * float(np.sum(penalty * w[:d] * w[:d]))
            for x, y in parts:
                z = x @ beta + w[d]
                value += float(np.sum(np.logaddexp(0.0, z) - y * z))
                residual = scipy.special.expit(z) - y
                gradient[:d] += x.T @ residual
                gradient[d] += residual.sum()
            gradient[:d] = gradient[:d] * inverse + penalty * w[:d]
            return value / n, gradient / n

        bounds = [(None, None)] * d + [(-_MAX_LOGIT, _MAX_LOGIT)]
        result = scipy.optimize.minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": int(self.max_iter), "ftol": 1e-9, "gtol": 1e-7},
        )
        w = np.asarray(result.x)
        return w[:d] * inverse, float(w[d])


_LOGIT_EPSILON = 1e-9
_MAX_LOGIT = 40.0
"""The intercept's bound: a fold whose rewards are all 0 (or 1) stays finite."""


@dataclass(frozen=True, slots=True)
class BoostedTrees:
    """Gradient-boosted trees on the joint (context, action) features, cross-fitted.

    Each pair is a dense row of the `max_columns` feature names most frequent among the
    logged choices (a name's value, 0 when absent; a name on both sides takes the
    action's value, as in :func:`policies._features.joint_features`; the action's id is
    the name ``action=ID``). Trees find the interactions themselves, so no products are
    formed. The model is scikit-learn's histogram gradient boosting (Ke et al.,
    *LightGBM*, NeurIPS 2017): :class:`~sklearn.ensemble.HistGradientBoostingClassifier`
    (log loss, predictions in [0, 1]) when every reward is 0 or 1, else
    :class:`~sklearn.ensemble.HistGradientBoostingRegressor` (squared error, predictions
    clipped to the observed reward range). Where the reward depends on its features
    in ways a linear model on hashed products cannot express (thresholds, saturation,
    higher-order interactions) it fits better; it is also slower.

    Parameters
    ----------
    max_columns
        Most feature names used, in [1, 1024]: bounds the dense design's width (a
        million rows of 64 columns are 256 MB as float32).
    max_iter
        Boosting iterations per fold, >= 1.
    learning_rate
        Shrinkage of each tree, in (0, 1].
    max_leaf_nodes
        Leaves per tree, >= 2.
    n_folds
        Number of cross-fitting folds, >= 2.
    seed
        Seeds the fold assignment and the trees.

    Raises
    ------
    ConfigurationError
        For a hyperparameter that breaks its rule (the message names it).

    Notes
    -----
    Boosting runs on one OpenMP thread (its threads spin while they wait, which on a
    busy machine cost it 25 times the CPU). On one core, 200,000 rows of 10 actions
    with a few features a side take about a minute, twelve times the linear models'
    time: fit it on a sample of a large log, or with fewer `max_iter`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n = 3000
    >>> age = rng.random(n).round(2)
    >>> chosen = rng.integers(0, 2, n)
    >>> mean = np.where((age > 0.5) == (chosen == 0), 0.8, 0.1)  # a threshold
    >>> logs = LoggedDecisions(
    ...     n_actions=np.full(n, 2), chosen=chosen, propensity=np.full(n, 0.5),
    ...     reward=rng.binomial(1, mean).astype(float), action_ids=[["a", "b"]] * n,
    ...     contexts=[{"user": {"age": float(a)}} for a in age])
    >>> predictions = BoostedTrees(max_iter=20).cross_fit(logs)
    >>> predictions.quality.metric, predictions.quality.better
    ('log loss', True)
    >>> BoostedTrees(max_columns=0)
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: `max_columns` must be an integer in [1, 1024], got 0
    """

    max_columns: int = 64
    max_iter: int = 100
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    n_folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("max_columns", self.max_columns, 1, _MAX_COLUMNS)
        _check_int("max_iter", self.max_iter, 1, None)
        _check_real("learning_rate", self.learning_rate, lambda v: 0 < v <= 1, "in (0, 1]")
        _check_int("max_leaf_nodes", self.max_leaf_nodes, 2, None)
        _check_int("n_folds", self.n_folds, 2, None)
        _check_int("seed", self.seed, 0, None)

    def cross_fit(
        self, logs: LoggedDecisions, *, progress: Callable[[int], None] | None = None
    ) -> RewardPredictions:
        """Fit on all folds but one and predict the held-out fold, for every fold.

        `progress` as :meth:`HashedRidge.cross_fit`'s (told when the fits and when the
        predictions are done).

        Raises
        ------
        ConfigurationError
            If the log has fewer rows than `n_folds`.
        LogFormatError
            As :meth:`HashedRidge.cross_fit`.
        """
        done = _ignore if progress is None else progress
        _check_rows(logs, self.n_folds)
        fold = _folds(logs.n, self.n_folds, self.seed)
        encoder = _Encoder(logs, 1, interactions=False)
        pair, vid, value = _chosen_names(encoder)
        counts = np.bincount(vid, minlength=len(encoder.names))
        kept = np.argsort(-counts, kind="stable")[: self.max_columns]
        kept = kept[counts[kept] > 0]
        column = np.full(counts.size, -1, dtype=np.int64)
        column[kept] = np.arange(kept.size)
        width = max(1, kept.size)
        design = np.zeros((logs.n, width), dtype=np.float32)
        keep = column[vid] >= 0
        design[pair[keep], column[vid[keep]]] = value[keep]
        del pair, vid, value
        # OpenMP's threads spin while they wait: on a busy machine boosting ran 25 times
        # slower with them than on one thread, so it runs on one. (scikit-learn is
        # imported first: a limit binds only the OpenMP runtime already loaded.)
        from sklearn.ensemble import (
            HistGradientBoostingClassifier,
            HistGradientBoostingRegressor,
        )

        with threadpool_limits(limits=1, user_api="openmp"):
            models = self._fit(
                design,
                fold,
                logs.reward,
                (HistGradientBoostingClassifier, HistGradientBoostingRegressor),
            )
            del design
            done(logs.n)
            values = self._predict(encoder, fold, models, column, width)
        done(2 * logs.n)
        quality = _quality(repr(self), logs, values, fold, self.n_folds)
        return RewardPredictions._owned(logs, values, quality)

    def _fit(
        self, design: Any, fold: IntArray, reward: FloatArray, classes: tuple[Any, Any]
    ) -> list[Any]:
        """One fitted model per fold, each on the other folds' rows of `design`.

        `classes` are the classifier (for 0/1 rewards) and the regressor.
        """
        classifier, regressor = classes
        binary = _binary(reward)
        models = []
        for k in range(self.n_folds):
            train = fold != k
            params = {
                "max_iter": int(self.max_iter),
                "learning_rate": float(self.learning_rate),
                "max_leaf_nodes": int(self.max_leaf_nodes),
                "early_stopping": False,
                "random_state": int(self.seed),
            }
            y = reward[train]
            if binary and 0.0 < y.mean() < 1.0:
                models.append(classifier(**params).fit(design[train], y))
            else:
                models.append(regressor(**params).fit(design[train], y))
        return models

    def _predict(
        self, encoder: _Encoder, fold: IntArray, models: list[Any], column: IntArray, width: int
    ) -> FloatArray:
        """``(n, K)`` predictions of every offered pair, each row by its own fold's model."""
        logs = encoder.logs
        low, high = float(logs.reward.min()), float(logs.reward.max())
        values = np.zeros((logs.n, logs.width))
        for start in range(0, logs.n, _BLOCK_ROWS):
            stop = min(logs.n, start + _BLOCK_ROWS)
            block = encoder.encode(start, stop, chosen_only=False)
            x = _dense_pairs(encoder, block, column, width)
            pair_fold = fold[start:stop][block.pair_row]
            predicted = np.empty(block.pair_row.size)
            for k, model in enumerate(models):
                mine = pair_fold == k
                if not mine.any():
                    continue
                if hasattr(model, "predict_proba"):
                    predicted[mine] = model.predict_proba(x[mine])[:, 1]
                else:
                    predicted[mine] = model.predict(x[mine])
            real = np.arange(logs.width) < logs.n_actions[start:stop, None]
            values[start:stop][real] = np.clip(predicted, low, high)
        return values


_MAX_COLUMNS = 1024


def _chosen_names(encoder: _Encoder) -> tuple[IntArray, IntArray, FloatArray]:
    """``(row, name id, value)`` of every feature of every logged choice, by name id.

    A name on both sides keeps the action's value: the context's entry is dropped.
    """
    logs = encoder.logs
    rows: list[IntArray] = []
    vids: list[IntArray] = []
    values: list[FloatArray] = []
    for start in range(0, logs.n, _BLOCK_ROWS):
        stop = min(logs.n, start + _BLOCK_ROWS)
        block = encoder.encode(start, stop, chosen_only=True)
        pair, vid, value = _pair_names(encoder, block)
        rows.append(pair + start)  # chosen_only: a pair per row, in order
        vids.append(vid)
        values.append(value)
    return np.concatenate(rows), np.concatenate(vids), np.concatenate(values)


def _pair_names(encoder: _Encoder, block: _Block) -> tuple[IntArray, IntArray, FloatArray]:
    """``(pair, name id, value)`` of every context and action feature of a block's pairs."""
    pairs = np.arange(block.pair_row.size)
    rows, kinds = block.pair_row, block.pair_kind
    ctx_pair, ctx_entry = _ranges(block.ctx_ptr[rows], np.diff(block.ctx_ptr)[rows])
    drop_pair, drop_entry = encoder.overlaps(block, pairs)
    if drop_pair.size:  # the action's value wins
        dropped = np.zeros(ctx_pair.size, dtype=bool)
        key = ctx_pair.astype(np.int64) * (block.ctx_vid.size + 1) + ctx_entry
        gone = drop_pair.astype(np.int64) * (block.ctx_vid.size + 1) + drop_entry
        dropped[np.isin(key, gone)] = True
        ctx_pair, ctx_entry = ctx_pair[~dropped], ctx_entry[~dropped]
    own_pair, own_entry = _ranges(encoder.kind_ptr[kinds], np.diff(encoder.kind_ptr)[kinds])
    pair = np.concatenate([ctx_pair, own_pair])
    vid = np.concatenate([block.ctx_vid[ctx_entry], encoder.kind_vid[own_entry]])
    value = np.concatenate([block.ctx_val[ctx_entry], encoder.kind_val[own_entry]])
    return pair, vid, value


def _dense_pairs(encoder: _Encoder, block: _Block, column: IntArray, width: int) -> Any:
    """``(pairs, width)`` float32 design of a block's pairs: each kept name in its column."""
    pair, vid, value = _pair_names(encoder, block)
    x = np.zeros((block.pair_row.size, width), dtype=np.float32)
    known = vid < column.size
    col = np.full(vid.size, -1, dtype=np.int64)
    col[known] = column[vid[known]]
    keep = col >= 0
    x[pair[keep], col[keep]] = value[keep]
    return x


@dataclass(frozen=True, slots=True)
class AutoRewardModel:
    """Choose the reward model by the rewards: logistic for 0/1 rewards, ridge otherwise.

    A log of clicks (every reward 0 or 1) gets :class:`HashedLogistic`, whose predictions
    are probabilities; any other rewards get :class:`HashedRidge`.

    Parameters
    ----------
    seed
        Seeds the chosen model's fold assignment.

    Examples
    --------
    >>> logs = LoggedDecisions(n_actions=np.full(10, 2), chosen=np.arange(10) % 2,
    ...                        propensity=np.full(10, 0.5), reward=np.arange(10) % 3 / 2)
    >>> AutoRewardModel().choose(logs)
    HashedRidge(alpha=1.0, n_features=1024, n_folds=5, interactions=True, seed=0)
    """

    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, 0, None)

    def choose(self, logs: LoggedDecisions) -> RewardModel:
        """Return the model used for `logs`."""
        if _binary(logs.reward):
            return HashedLogistic(seed=self.seed)
        return HashedRidge(seed=self.seed)

    def cross_fit(
        self, logs: LoggedDecisions, *, progress: Callable[[int], None] | None = None
    ) -> RewardPredictions:
        """Cross-fit the model :meth:`choose` picks for `logs`."""
        return self.choose(logs).cross_fit(logs, progress=progress)


REWARD_MODELS: Mapping[str, type[Any]] = {
    "auto": AutoRewardModel,
    "gbt": BoostedTrees,
    "logistic": HashedLogistic,
    "ridge": HashedRidge,
}
"""Reward model names (``--reward-model``) and their classes."""


def make_reward_model(spec: str, *, seed: int = 0) -> RewardModel:
    """Build a reward model from its name, optionally with hyperparameters.

    ``auto`` (logistic for 0/1 rewards, else ridge), ``ridge``, ``logistic`` or
    ``gbt``, with parameters as in a policy spec: ``logistic:C=0.1``. `seed` seeds the
    fold assignment unless the spec sets it.

    Raises
    ------
    ConfigurationError
        For an unknown name or a hyperparameter the model refuses.

    Examples
    --------
    >>> make_reward_model("logistic:C=0.1")
    HashedLogistic(C=0.1, n_features=1024, n_folds=5, interactions=True, max_iter=30, seed=0)
    >>> make_reward_model("forest")
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: no reward model named 'forest'; known: auto, gbt, ...
    """
    name, params = parse_spec(spec)
    cls = REWARD_MODELS.get(name)
    if cls is None:
        msg = f"no reward model named {name!r}; known: {', '.join(REWARD_MODELS)}"
        raise ConfigurationError(msg)
    try:
        model: RewardModel = cls(**{"seed": seed, **params})
    except TypeError as exc:
        msg = f"reward model {spec!r}: {exc}"
        raise ConfigurationError(msg) from exc
    return model


def _binary(reward: FloatArray) -> bool:
    """Whether every reward is 0 or 1."""
    return bool(np.all((reward == 0.0) | (reward == 1.0)))


def _folds(n: int, n_folds: int, seed: int) -> IntArray:
    """Each row's fold: a seeded random permutation, in as few bytes a row as fit."""
    fold = np.random.default_rng(seed).permutation(n) % n_folds
    return fold.astype(np.min_scalar_type(n_folds - 1))


def _check_rows(logs: LoggedDecisions, n_folds: int) -> None:
    """Refuse a log with fewer rows than folds."""
    if logs.n < n_folds:
        msg = f"`n_folds`={n_folds} needs at least {n_folds} rows, got {logs.n}"
        raise ConfigurationError(msg)


def _row_range(matrix: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a CSR `matrix`, sharing its data (scipy's slicing copies)."""
    ptr = matrix.indptr
    first, last = int(ptr[start]), int(ptr[stop])
    return scipy.sparse.csr_array(
        (matrix.data[first:last], matrix.indices[first:last], ptr[start : stop + 1] - first),
        shape=(stop - start, matrix.shape[1]),
    )


def _chosen_design(encoder: _Encoder) -> Any:
    """``(n, d)`` sparse hashed features of every row's logged choice."""
    logs, d = encoder.logs, encoder.d
    parts = []
    for start in range(0, logs.n, _BLOCK_ROWS):
        stop = min(logs.n, start + _BLOCK_ROWS)
        block = encoder.encode(start, stop, chosen_only=True)
        for pairs in block.batches():
            pair, bucket, value = encoder.entries(block, pairs)
            matrix = scipy.sparse.coo_array((value, (pair, bucket)), shape=(pairs.size, d))
            parts.append(scipy.sparse.csr_array(matrix))
    return scipy.sparse.vstack(parts, format="csr")


def _quality(
    model: str, logs: LoggedDecisions, values: FloatArray, fold: IntArray, n_folds: int
) -> ModelQuality:
    """Held-out quality of cross-fitted `values` on the logged choices, and the baseline's.

    The baseline predicts each row the mean reward of the folds it was not in. Summed
    block by block, so memory does not grow with the log.
    """
    reward = logs.reward
    sums = np.bincount(fold, reward, minlength=n_folds)
    counts = np.bincount(fold, minlength=n_folds).astype(np.float64)
    others = (sums.sum() - sums) / np.maximum(counts.sum() - counts, 1.0)
    low, high = float(reward.min()), float(reward.max())
    binary = _binary(reward)
    loss = base = outside = 0.0
    for start in range(0, logs.n, _BLOCK_ROWS):
        stop = min(logs.n, start + _BLOCK_ROWS)
        y = reward[start:stop]
        block = values[start:stop]
        predicted = block[np.arange(stop - start), logs.chosen[start:stop]]
        baseline = others[fold[start:stop]]
        if binary:
            loss += _log_loss_sum(y, predicted)
            base += _log_loss_sum(y, baseline)
        else:
            loss += float(np.sum((y - predicted) ** 2))
            base += float(np.sum((y - baseline) ** 2))
        real = np.arange(logs.width) < logs.n_actions[start:stop, None]
        outside += float(np.count_nonzero(real & ((block < low) | (block > high))))
    offered = float(logs.n_actions.sum())
    share = outside / offered if offered else 0.0
    if binary:
        return ModelQuality(model, "log loss", loss / logs.n, base / logs.n, share)
    return ModelQuality(model, "RMSE", math.sqrt(loss / logs.n), math.sqrt(base / logs.n), share)


def _log_loss_sum(reward: FloatArray, probability: FloatArray) -> float:
    """Return the summed log loss of 0/1 `reward` under `probability`, clipped to (0, 1)."""
    p = np.clip(probability, LOG_LOSS_EPSILON, 1.0 - LOG_LOSS_EPSILON)
    return float(-np.sum(reward * np.log(p) + (1.0 - reward) * np.log1p(-p)))


@dataclass(frozen=True, slots=True)
class _Block:
    """A block of rows encoded as integer name ids: contexts in CSR form, pairs by action.

    ``pair_row`` is each pair's row within the block, ``pair_kind`` its action's
    :class:`_Encoder` id; ``entry_sizes`` how many entries each pair expands into at
    once (its products, and when fitting its linear entries too).
    """

    ctx_ptr: IntArray
    ctx_vid: IntArray
    ctx_val: FloatArray
    pair_row: IntArray
    pair_kind: IntArray
    entry_sizes: IntArray

    def batches(self) -> Iterator[IntArray]:
        """Yield consecutive pair indices, batches of at most :data:`_BATCH_ENTRIES` entries."""
        ends = np.cumsum(self.entry_sizes)
        start = 0
        while start < ends.size:
            done = ends[start - 1] if start else 0
            stop = int(np.searchsorted(ends, done + _BATCH_ENTRIES, side="right"))
            stop = max(stop, start + 1)  # a pair larger than a batch is a batch of its own
            yield np.arange(start, stop)
            start = stop


class _Encoder:
    """Integer ids for a log's feature names and actions, and their hashed buckets.

    A name's id indexes its digest, bucket and sign. A *kind* is one distinct action (an
    id with one features mapping) as a CSR row of its own names' ids and values, built
    once however many rows offer it. Kinds are looked up by the action id and the
    identity of the features mapping (the mapping is kept, so its identity is not
    reused while the encoder lives); an equal mapping in another object is encoded
    again as another kind, with the same features.
    """

    def __init__(self, logs: LoggedDecisions, d: int, *, interactions: bool) -> None:
        self.logs, self.d, self.interactions = logs, d, interactions
        self.names: dict[str, int] = {}
        self.kinds: dict[tuple[str, int], int] = {}
        self._kept: list[object] = []
        self._new_digests: list[int] = []
        self._new_kind_vid: list[int] = []
        self._new_kind_val: list[float] = []
        self._new_kind_sizes: list[int] = []
        self._defaults: dict[int, tuple[list[str], list[Mapping[str, Mapping[str, Any]]]]] = {}
        self._table: tuple[FeatureRows, IntArray, FloatArray, npt.NDArray[np.bool_]] | None = None
        self.digest = np.zeros(0, dtype=np.uint64)
        self.left = np.zeros(0, dtype=np.uint64)  # the digest premultiplied for _mix
        self.bucket = np.zeros(0, dtype=np.int64)
        self.sign = np.zeros(0)
        self.action_side = np.zeros(0, dtype=bool)
        self.kind_ptr = np.zeros(1, dtype=np.int64)
        self.kind_vid = np.zeros(0, dtype=np.int64)
        self.kind_val = np.zeros(0)
        self.kind_keys = np.zeros(0, dtype=np.int64)  # kind * 2^32 + name id, sorted
        self.bias_bucket, self.bias_sign = _hash("bias", d)

    def name(self, name: str) -> int:
        """Give the new name `name` the next id, and return it."""
        vid = self.names[name] = len(self.names)
        self._new_digests.append(_digest(name))
        return vid

    def kind(self, action_id: str, features: Mapping[str, Mapping[str, Any]]) -> int:
        """Return the id of the action `action_id` with `features`, encoding it if new."""
        key = (action_id, id(features))
        known = self.kinds.get(key)
        if known is not None:
            return known
        own = flatten(features)
        own[f"action={action_id}"] = 1.0
        names = self.names
        for name, x in own.items():
            vid = names.get(name)
            self._new_kind_vid.append(self.name(name) if vid is None else vid)
            self._new_kind_val.append(x)
        self._new_kind_sizes.append(len(own))
        self._kept.append(features)
        kind = self.kinds[key] = len(self.kinds)
        return kind

    def encode(self, start: int, stop: int, *, chosen_only: bool) -> _Block:
        """Encode rows ``start:stop``: every offered pair, or only each logged choice."""
        logs = self.logs
        ids, features = logs.action_ids, logs.action_features
        kinds, kind = self.kinds.get, self.kind
        ctx_ptr, ctx_vid, ctx_val = self._contexts(start, stop)
        pair_kind: list[int] = []
        counts = logs.n_actions[start:stop].tolist()
        picks = logs.chosen[start:stop].tolist()
        last_ids: object = None
        last_features: object = None
        last_kinds: list[int] = []
        # (map and zip walk a row's names and actions in C; Python only for what is new)
        for i, count in enumerate(counts, start):
            if ids is None or features is None:
                row_ids, row_features = self._defaults_for(i, count)
            else:
                row_ids, row_features = ids[i], features[i]
            if len(row_features) < count:  # (more are ignored, as by indexing)
                msg = (
                    f"row {i}: `action_features` must list {count} actions, got {len(row_features)}"
                )
                raise LogFormatError(msg)
            if chosen_only:
                j = picks[i - start]
                known = kinds((row_ids[j], id(row_features[j])))
                pair_kind.append(kind(row_ids[j], row_features[j]) if known is None else known)
            elif row_ids is last_ids and row_features is last_features:
                pair_kind += last_kinds
            else:
                seen = list(map(kinds, zip(row_ids, map(id, row_features), strict=False)))
                if None in seen:
                    seen = [kind(a, f) for a, f in zip(row_ids, row_features, strict=False)]
                last_kinds = cast("list[int]", seen)
                last_ids, last_features = row_ids, row_features
                pair_kind += last_kinds
        self._sync()
        return self._block(ctx_ptr, ctx_vid, ctx_val, pair_kind, counts, chosen_only=chosen_only)

    def _contexts(self, start: int, stop: int) -> tuple[IntArray, IntArray, FloatArray]:
        """Rows ``start:stop``'s contexts as CSR ``(ptr, name id, value)``, as flattened.

        A log read by :func:`replay.read_log` holds its contexts as
        :class:`~replay._data.FeatureRows` already: its keys are mapped to name ids once,
        and each block is array lookups. Other contexts are put in that form a block at
        a time. The entries are :func:`policies._features.flatten`'s, in its order: a
        string feature is the name ``namespace.name=value`` with 1, a number is
        ``namespace.name`` with its value, and a zero (or a missing value) is no entry.
        """
        rows = stop - start
        contexts = self.logs.contexts
        if contexts is None:
            nothing = np.zeros(0, dtype=np.int64)
            return np.zeros(rows + 1, dtype=np.int64), nothing, np.zeros(0)
        if isinstance(contexts, FeatureRows):
            table, first = contexts, start
            if self._table is None or self._table[0] is not table:
                self._table = (table, *self._key_names(table))
        else:
            table, first = FeatureRows.from_mappings(contexts[i] for i in range(start, stop)), 0
            self._table = (table, *self._key_names(table))
        _, key_vid, key_fixed, key_uses_entry = self._table
        ptr = table.ptr[first : first + rows + 1]
        key = table.key[ptr[0] : ptr[-1]]
        vid = key_vid[key]
        val = np.where(key_uses_entry[key], table.value[ptr[0] : ptr[-1]], key_fixed[key])
        keep = (vid >= 0) & (val != 0.0)
        owner = np.repeat(np.arange(rows), np.diff(ptr))
        ctx_ptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner[keep], minlength=rows), out=ctx_ptr[1:])
        self._sync()
        return ctx_ptr, vid[keep], val[keep]

    def _key_names(self, rows: FeatureRows) -> tuple[IntArray, FloatArray, npt.NDArray[np.bool_]]:
        """Each key's flattened name id (-1: none), fixed value, and whether entries carry it."""
        size = len(rows.keys)
        vid = np.full(size, -1, dtype=np.int64)
        fixed = np.zeros(size)
        uses_entry = np.zeros(size, dtype=bool)
        names, name = self.names.get, self.name
        for k, (namespace, feature, value) in enumerate(rows.keys):
            if isinstance(value, str):
                flat, fixed[k] = f"{namespace}.{feature}={value}", 1.0
            elif type(value) is type:
                flat, uses_entry[k] = f"{namespace}.{feature}", True
            elif value:  # a constant number (an integer too large for a float64 to hold)
                flat, fixed[k] = f"{namespace}.{feature}", float(value)
            else:
                continue
            known = names(flat)
            vid[k] = name(flat) if known is None else known
        return vid, fixed, uses_entry

    def _block(
        self,
        ctx_ptr: IntArray,
        ctx_vid: IntArray,
        ctx_val: FloatArray,
        pair_kind: list[int],
        counts: list[int],
        *,
        chosen_only: bool,
    ) -> _Block:
        """Return the encoded rows as a :class:`_Block`, with each pair's entry count."""
        rows = len(counts)
        pair_row = np.arange(rows) if chosen_only else np.repeat(np.arange(rows), counts)
        ptr = ctx_ptr
        kinds_array = np.asarray(pair_kind, dtype=np.int64)
        ctx_size = np.diff(ptr)[pair_row]
        kind_size = np.diff(self.kind_ptr)[kinds_array]
        # the batches bound the entries expanded at once: products, plus for fitting
        # the linear entries of every pair
        sizes = ctx_size * kind_size if self.interactions else np.zeros_like(ctx_size)
        if chosen_only:
            sizes = sizes + 1 + ctx_size + kind_size
        return _Block(
            ctx_ptr=ptr,
            ctx_vid=ctx_vid,
            ctx_val=ctx_val,
            pair_row=pair_row,
            pair_kind=kinds_array,
            entry_sizes=sizes,
        )

    def _defaults_for(
        self, i: int, count: int
    ) -> tuple[Sequence[str], Sequence[Mapping[str, Mapping[str, Any]]]]:
        """Row `i`'s action ids and features, the column indices and empty ones if absent."""
        logs = self.logs
        defaults = self._defaults.get(count)
        if defaults is None:
            empty: Mapping[str, Mapping[str, Any]] = {}
            defaults = self._defaults[count] = ([str(j) for j in range(count)], [empty] * count)
        ids = defaults[0] if logs.action_ids is None else logs.action_ids[i]
        features = defaults[1] if logs.action_features is None else logs.action_features[i]
        return ids, features

    def _sync(self) -> None:
        """Append the names and kinds new since the last call to the NumPy arrays."""
        if self._new_digests:
            digest = np.array(self._new_digests, dtype=np.uint64)
            self._new_digests.clear()
            self.digest = np.concatenate([self.digest, digest])
            self.left = np.concatenate([self.left, digest * _GOLDEN])
            self.bucket = np.concatenate(
                [self.bucket, (digest % np.uint64(self.d)).astype(np.int64)]
            )
            self.sign = np.concatenate([self.sign, np.where(digest >> np.uint64(63), 1.0, -1.0)])
            self.action_side = np.concatenate([self.action_side, np.zeros(digest.size, dtype=bool)])
        if self._new_kind_sizes:
            vid = np.array(self._new_kind_vid, dtype=np.int64)
            sizes = np.array(self._new_kind_sizes, dtype=np.int64)
            first = self.kind_ptr.size - 1
            self.kind_ptr = np.concatenate([self.kind_ptr, self.kind_ptr[-1] + np.cumsum(sizes)])
            self.kind_vid = np.concatenate([self.kind_vid, vid])
            self.kind_val = np.concatenate([self.kind_val, self._new_kind_val])
            self.action_side[vid] = True
            keys = np.repeat(np.arange(first, first + sizes.size), sizes) * 2**32 + vid
            self.kind_keys = np.union1d(self.kind_keys, keys)  # sorted, for searchsorted
            for pending in (self._new_kind_vid, self._new_kind_val, self._new_kind_sizes):
                pending.clear()

    def entries(self, block: _Block, pairs: IntArray) -> tuple[IntArray, IntArray, FloatArray]:
        """Return ``(pair, bucket, value)`` of every hashed entry of `pairs` (indexing `pairs`)."""
        rows, kinds = block.pair_row[pairs], block.pair_kind[pairs]
        size = pairs.size
        ctx_pair, ctx_entry = _ranges(block.ctx_ptr[rows], np.diff(block.ctx_ptr)[rows])
        ctx_vid = block.ctx_vid[ctx_entry]
        own_pair, own_entry = _ranges(self.kind_ptr[kinds], np.diff(self.kind_ptr)[kinds])
        own_vid = self.kind_vid[own_entry]
        product = self.products(block, pairs)
        drop_pair, drop_entry = self.overlaps(block, pairs)
        drop_vid = block.ctx_vid[drop_entry]
        pair = np.concatenate([np.arange(size), ctx_pair, own_pair, product[0], drop_pair])
        bucket = np.concatenate(
            [
                np.full(size, self.bias_bucket),
                self.bucket[ctx_vid],
                self.bucket[own_vid],
                product[1],
                self.bucket[drop_vid],
            ]
        )
        value = np.concatenate(
            [
                np.full(size, self.bias_sign),
                block.ctx_val[ctx_entry] * self.sign[ctx_vid],
                self.kind_val[own_entry] * self.sign[own_vid],
                product[2],
                -block.ctx_val[drop_entry] * self.sign[drop_vid],
            ]
        )
        return pair, bucket, value

    def products(self, block: _Block, pairs: IntArray) -> tuple[IntArray, IntArray, FloatArray]:
        """``(pair, bucket, value)`` of every context x action product of `pairs`."""
        if not self.interactions:
            nothing = np.zeros(0, dtype=np.int64)
            return nothing, nothing, np.zeros(0)
        rows, kinds = block.pair_row[pairs], block.pair_kind[pairs]
        ctx_start, own_start = block.ctx_ptr[rows], self.kind_ptr[kinds]
        own_size = np.diff(self.kind_ptr)[kinds]
        sizes = np.diff(block.ctx_ptr)[rows] * own_size
        pair, offset = _ranges(np.zeros_like(sizes), sizes)
        per_row = own_size[pair]
        ctx_entry = offset // per_row
        own_entry = own_start[pair] + (offset - ctx_entry * per_row)
        ctx_entry += ctx_start[pair]
        ctx_vid, own_vid = block.ctx_vid[ctx_entry], self.kind_vid[own_entry]
        digest = _mix(self.left[ctx_vid], self.digest[own_vid])
        bucket = (digest % np.uint64(self.d)).astype(np.int64)
        value = block.ctx_val[ctx_entry] * self.kind_val[own_entry]
        value *= np.where(digest >> np.uint64(63), 1.0, -1.0)
        return pair, bucket, value

    def overlaps(self, block: _Block, pairs: IntArray) -> tuple[IntArray, IntArray]:
        """``(pair, context entry)`` where `pairs`' action has a name of its row's context.

        :func:`joint_features` keeps the action's value for such a name, so the
        context's entry is dropped (products keep it).
        """
        nothing = np.zeros(0, dtype=np.int64)
        candidate = np.flatnonzero(self.action_side[block.ctx_vid])
        if candidate.size == 0:
            return nothing, nothing
        rows = block.ctx_ptr.size - 1
        per_row = np.bincount(
            np.searchsorted(block.ctx_ptr, candidate, side="right") - 1, minlength=rows
        )
        first = np.cumsum(per_row) - per_row
        row = block.pair_row[pairs]
        pair, position = _ranges(first[row], per_row[row])
        entry = candidate[position]
        keys = block.pair_kind[pairs][pair] * 2**32 + block.ctx_vid[entry]
        found = np.searchsorted(self.kind_keys, keys)
        hit = self.kind_keys[np.minimum(found, self.kind_keys.size - 1)] == keys
        return pair[hit], entry[hit]

    def extend_action_terms(self, terms: FloatArray, coefficients: FloatArray) -> FloatArray:
        """``(n_folds, kinds)`` each fold's action term of every kind, computing new ones."""
        first = terms.shape[1]
        last = self.kind_ptr.size - 1
        if first == last:
            return terms
        ptr = self.kind_ptr[first : last + 1]
        vid = self.kind_vid[ptr[0] : ptr[-1]]
        signed = self.kind_val[ptr[0] : ptr[-1]] * self.sign[vid]
        contribution = coefficients[:, self.bucket[vid]] * signed
        new = np.add.reduceat(contribution, ptr[:-1] - ptr[0], axis=1)  # a kind has >= 1 entry
        return np.concatenate([terms, new], axis=1)


def _ranges(starts: IntArray, sizes: IntArray) -> tuple[IntArray, IntArray]:
    """Return the ranges ``starts[i] + arange(sizes[i])`` concatenated, with their ``i``."""
    owner = np.repeat(np.arange(sizes.size), sizes)
    shift = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes)
    return owner, np.arange(owner.size) + shift


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(left: U64Array, right: U64Array) -> U64Array:
    """SplitMix64's finaliser of ``left ^ right`` (`left` premultiplied by the golden ratio)."""
    x = left ^ right
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _digest(name: str) -> int:
    """Return a stable 64-bit digest of a feature name (not Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _hash(name: str, d: int) -> tuple[int, float]:
    """Stable bucket and sign of a feature name: its digest modulo `d`, its top bit."""
    digest = _digest(name)
    return digest % d, 1.0 if digest >> 63 else -1.0


def _check_real(name: str, value: object, ok: Any, rule: str) -> None:
    """Raise naming `name`, `rule` and `value` unless `value` is a real number that is ok."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(float(value)):
        msg = f"`{name}` must be {rule}, got {value!r}"
        raise ConfigurationError(msg)


def _check_bool(name: str, value: object) -> None:
    """Raise naming `name` and `value` unless it is a bool."""
    if not isinstance(value, bool):
        msg = f"`{name}` must be a bool, got {value!r}"
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


def _design(logs: LoggedDecisions, d: int, *, interactions: bool) -> Any:
    """``(pairs, d)`` sparse hashed features of every offered pair, row by row (for tests)."""
    encoder = _Encoder(logs, d, interactions=interactions)
    block = encoder.encode(0, logs.n, chosen_only=False)
    pairs = np.arange(block.pair_row.size)
    pair, bucket, value = encoder.entries(block, pairs)
    matrix = scipy.sparse.coo_array((value, (pair, bucket)), shape=(pairs.size, d))
    return scipy.sparse.csr_array(matrix)
