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
import scipy.sparse

from policies._features import flatten
from policies.errors import ConfigurationError, LogFormatError
from replay._data import FeatureRows, FloatArray, IntArray, LoggedDecisions, _first_bad

__all__ = ["HashedRidge", "RewardModel", "RewardPredictions"]

U64Array = npt.NDArray[np.uint64]

_MAX_FEATURES = 2**14
"""Largest hashed dimension: the model solves a dense system of up to ``d x d``."""

_BLOCK_ROWS = 2**13
"""Rows encoded at a time (their contexts' entries, and their actions' ids)."""

_BATCH_ENTRIES = 2**18
"""Hashed entries expanded at a time: with the block, this bounds the working memory."""


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
    policies.errors.LogFormatError: reward `values` must have shape (2, 3), got (2, 2)
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

    @classmethod
    def _owned(cls, logs: LoggedDecisions, values: FloatArray) -> RewardPredictions:
        """Wrap `values` without a copy: finite where offered, 0 in padding, not shared."""
        values.flags.writeable = False
        predictions = object.__new__(cls)
        object.__setattr__(predictions, "logs", logs)
        object.__setattr__(predictions, "values", values)
        return predictions

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
        if not isinstance(self.interactions, bool):
            msg = f"`interactions` must be a bool, got {self.interactions!r}"
            raise ConfigurationError(msg)
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
        n = logs.n
        if n < self.n_folds:
            msg = f"`n_folds`={self.n_folds} needs at least {self.n_folds} rows, got {n}"
            raise ConfigurationError(msg)
        fold = np.random.default_rng(self.seed).permutation(n) % self.n_folds
        fold = fold.astype(np.min_scalar_type(self.n_folds - 1))  # a byte a row, usually
        encoder = _Encoder(logs, self.n_features, interactions=self.interactions)
        done = _ignore if progress is None else progress
        coefficients, intercepts = self._fit(encoder, fold, done)
        values = _predict(encoder, fold, coefficients, intercepts, lambda rows: done(n + rows))
        return RewardPredictions._owned(logs, values)

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
