"""Vowpal Wabbit contextual bandit with action-dependent features (``--cb_explore_adf``).

This module is the only place that knows VW's conventions: VW minimises a *cost* and
numbers actions from 1; the rest of streambandit maximises a *reward* and numbers
actions from 0. Here ``cost = -reward`` and label lines are written on the chosen
action's own line.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from vowpalwabbit import pyvw

from bandit.errors import (
    ConfigurationError,
    DatasetError,
    InvalidDistributionError,
    InvalidFeaturesError,
    InvalidFeedbackError,
    SnapshotError,
)
from policies._base import FEATURE_VALUE_LIMIT, REWARD_LIMIT, Policy, _check_actions
from policies._distribution import SUM_TOLERANCE, Distribution
from policies._types import Action, Context, FeatureRef, Features, FeatureValue
from policies._vwmodel import rewrite_options
from policies.registry import register

__all__ = [
    "DSJSONRecord",
    "Exploration",
    "FeatureRules",
    "LoggedExample",
    "VWPolicy",
    "dsjson_line",
    "dsjson_record",
    "logged_example",
    "parse_dsjson_record",
    "reward_to_cost",
    "to_vw_lines",
]

Exploration = Literal["epsilon", "squarecb", "rnd", "bag", "cover", "softmax"]

_EXPLORATIONS: tuple[str, ...] = ("epsilon", "squarecb", "rnd", "bag", "cover", "softmax")

# Which hyperparameters each exploration algorithm reads; only these reach VW.
_USES: dict[str, tuple[str, ...]] = {
    "epsilon": ("epsilon",),
    "squarecb": ("gamma_scale", "gamma_exponent"),
    "rnd": ("rnd", "rnd_alpha", "rnd_invlambda"),
    "bag": ("bag", "epsilon"),
    "cover": ("cover", "psi"),
    "softmax": ("softmax_lambda",),
}

# Hyperparameters VW reads from the command line on every load, so they can change
# on a live model by reloading it with new flags.
_RELOADABLE = frozenset({"epsilon", "rnd_alpha", "rnd_invlambda", "softmax_lambda"})

# Hyperparameters VW freezes into a saved model: they change by rewriting the saved
# model's options (and header checksum) before reloading it. The counts (`bag`,
# `cover`, `rnd`) shape the learned state itself and can never change on a live model.
_REWRITABLE = frozenset({"gamma_scale", "gamma_exponent", "psi"})

# The rule every live-changeable hyperparameter must keep, as (low, high, low inclusive).
_LIVE_RANGES: dict[str, tuple[float, float, bool]] = {
    "epsilon": (0.0, 1.0, True),
    "gamma_exponent": (0.0, 1.0, True),
    "psi": (0.0, math.inf, True),
}

# Characters that would break VW's text format inside a feature name or value.
_ESCAPES = str.maketrans(
    {"%": "%25", " ": "%20", "\t": "%09", "\n": "%0A", "\r": "%0D", "|": "%7C", ":": "%3A"}
)

# Each action's id is the feature ``id=<id>`` in namespace ``id`` (VW's letter ``i``).
# Context and action namespaces are written ``c<name>`` and ``a<name>``, so no user
# namespace shares its letter; and VW's JSON parser reads it, as it reads no key that
# starts with ``_`` (the id's namespace was ``_id`` before, invisible in DSJSON).
_ID_NAMESPACE = "id"
_ID_FEATURE = "id"
_ID_TEXT = f" |{_ID_NAMESPACE} {_ID_FEATURE}="
_TEXT_CACHE_SIZE = 20_000  # actions whose prediction line a policy keeps


def reward_to_cost(reward: float) -> float:
    """VW learns costs; streambandit speaks rewards. ``cost = -reward``.

    Examples
    --------
    >>> reward_to_cost(1.0)
    -1.0
    """
    return -reward


def _write_tokens(
    prefix: str, features: Features, append: Callable[[str], object], floats: list[float]
) -> int:
    """Append `features` as VW text tokens, unescaped; return how many are numeric.

    The tokens are `` |<prefix><namespace>`` for each namespace, then `` name=value``
    for a string and `` name:value`` for a non-zero number (a zero is left out, as VW
    leaves it out): each starts with one space and holds no other separator unless a
    name or value does, which :func:`_unescaped` finds out. A float's value is written
    ``%s`` and appended to `floats`, for :func:`_filled` to write them all at once.
    """
    numeric = 0
    for namespace, values in features.items():
        append(f" |{prefix}{namespace}")
        for name, value in values.items():
            if type(value) is float:
                if value:
                    append(f" {name}:%s")
                    floats.append(value)
                    numeric += 1
            elif isinstance(value, str):
                append(f" {name}={value}")
            elif value:
                append(f" {name}:{value}")
                numeric += 1
    return numeric


def _filled(template: str, floats: list[float]) -> str | None:
    """`template` with its ``%s`` replaced by ``repr`` of `floats`; None if it holds another ``%``.

    Python's ``repr`` of a float is most of the cost of writing VW text; orjson writes
    the same shortest round-trip digits in the same notation (``0.1``, ``1e+16``) many
    times faster, for every float but those below 1e-4 (``0.00001`` for ``1e-05``) and
    the non-finite ones (``null``): those are written with ``repr``.
    """
    if template.count("%") != len(floats):  # a name or value holds a '%': to escape
        return None
    if not floats:
        return template
    written = orjson.dumps(floats).decode()
    if "e-" in written or "0.0000" in written or "null" in written:
        return template % tuple(map(repr, floats))
    return template % tuple(written[1:-1].split(","))


def _unescaped(text: str, spaces: int, bars: int, colons: int, lines: int) -> bool:
    """Whether `text` holds exactly the separators it was written with, and nothing to escape.

    Ints and floats add no separator, so any name, value or other number that does
    changes a count, or adds a ``%``, tab or carriage return: the text is then not VW's.
    """
    return (
        text.count(" ") == spaces
        and text.count("|") == bars
        and text.count(":") == colons
        and text.count("\n") == lines
        and "%" not in text
        and "\t" not in text
        and "\r" not in text
    )


def _namespace_text(prefix: str, features: Features, action_id: str | None = None) -> str:
    """Write namespaces as `` |<prefix><name> feature ...``, then `` |id id=<action_id>``.

    The hot path: names and values are written as they are (:func:`_write_tokens`),
    then the text is checked to hold exactly the separators written
    (:func:`_unescaped`), so it is kept only when nothing needed escaping; otherwise
    it is written again, escaped, by :func:`_escaped_namespace_text`. Either way the
    result is the escaped text.
    """
    tokens: list[str] = []
    floats: list[float] = []
    numeric = _write_tokens(prefix, features, tokens.append, floats)
    spaces = len(tokens)
    bars = len(features)
    if action_id is not None:
        tokens.append(_ID_TEXT + action_id)
        spaces += 2
        bars += 1
    text = _filled("".join(tokens), floats)
    if numeric and (text is None or "nan" in text or "inf" in text):
        _check_finite(features)
    if text is not None and _unescaped(text, spaces, bars, numeric, 0):
        return text
    return _escaped_namespace_text(prefix, features, action_id)


def _check_finite(features: Features) -> None:
    """Refuse NaN and infinite values: once learned, VW cannot unlearn them."""
    for namespace, values in features.items():
        for name, value in values.items():
            if not isinstance(value, str) and not math.isfinite(value):
                msg = f"feature {namespace}.{name} must be finite, got {value!r}"
                raise InvalidFeaturesError(msg)


def _escaped_namespace_text(prefix: str, features: Features, action_id: str | None) -> str:
    parts: list[str] = []
    for namespace, values in features.items():
        tokens = [f" |{prefix}{namespace.translate(_ESCAPES)}"]
        for name, value in values.items():
            key = name.translate(_ESCAPES)
            if isinstance(value, str):
                tokens.append(f"{key}={value.translate(_ESCAPES)}")
            elif value:
                tokens.append(f"{key}:{value}")
        parts.append(" ".join(tokens))
    if action_id is not None:
        parts.append(_ID_TEXT + action_id.translate(_ESCAPES))
    return "".join(parts)


def to_vw_lines(
    context: Context,
    actions: Sequence[Action],
    label: tuple[int, float, float] | None = None,
    *,
    context_prefix: str = "c",
    action_prefix: str = "a",
) -> list[str]:
    """Write one decision as VW multi-line ``cb_explore_adf`` text.

    Context namespaces are written as ``|c<name>`` and action namespaces as
    ``|a<name>``, so VW's one-letter interactions (``ca``) cross every context
    namespace with every action namespace. Each action also carries its id as the
    feature ``|id id=<id>`` (namespace ``id``, VW's letter ``i``), so actions without
    features are still told apart.

    Parameters
    ----------
    context, actions
        The decision.
    label
        ``(chosen, cost, probability)`` with a 0-based `chosen`, to write a learning
        example; ``None`` for a prediction.

    Examples
    --------
    >>> actions = [Action("x", {"item": {"topic": "golf"}})]
    >>> to_vw_lines({"user": {"age": 0.5}}, actions, (0, -1.0, 0.25))
    ['shared |cuser age:0.5', '0:-1.0:0.25 |aitem topic=golf |id id=x']
    """
    lines = [_shared_line(context, context_prefix)]
    chosen = -1 if label is None else label[0]
    for index, action in enumerate(actions):
        # Every body starts with " |": the label takes the space, or it is dropped.
        body = _namespace_text(action_prefix, action.features, action.id)
        if label is not None and index == chosen:
            lines.append(f"0:{label[1]}:{label[2]}{body}")
        else:
            lines.append(body[1:])
    return lines


def _shared_line(context: Context, prefix: str) -> str:
    """Write the ``shared`` line of a multi-line example (the context's namespaces)."""
    # With no context features the shared line still needs its bar, or VW takes the
    # line "shared" for one more action.
    return "shared" + (_namespace_text(prefix, context) or " |")


class _Pieces:
    """:func:`_namespace_text` of some features, cut so that each feature is one piece.

    The pieces joined are exactly the text :func:`_namespace_text` writes: every
    namespace's header, then each of its features (a feature that writes nothing, a
    zero, is an empty piece), then the action id's namespace.
    """

    def __init__(self, prefix: str, features: Features, action_id: str | None = None) -> None:
        self.parts: list[str] = []
        self.where: dict[tuple[str, str], int] = {}
        for namespace, values in features.items():
            header = _namespace_text(prefix, {namespace: {}})
            self.parts.append(header)
            for name, value in values.items():
                self.where[namespace, name] = len(self.parts)
                self.parts.append(
                    _namespace_text(prefix, {namespace: {name: value}})[len(header) :]
                )
        if action_id is not None:
            self.parts.append(_namespace_text(prefix, {}, action_id))

    def without(self, feature: FeatureRef) -> str:
        """Return the text without `feature` (its namespace's header stays)."""
        index = self.where[feature.namespace, feature.name]
        return "".join(self.parts[:index]) + "".join(self.parts[index + 1 :])


def _vw_text(lines: list[str]) -> str:
    """Join example lines into the one text VW parses, exactly as ``pyvw`` does."""
    return "\n".join(lines).replace("\r", "").strip()


class VWPolicy(Policy):
    """Vowpal Wabbit ``--cb_explore_adf``: one model over (context, action) features.

    VW computes the exploration distribution; streambandit then applies the
    exploration floor and draws from it, so the logged probability is exactly the
    probability of the draw. Exploration algorithms (Bietti, Agarwal and Langford,
    *A Contextual Bandit Bake-off*, JMLR 2021):

    - ``epsilon``: epsilon-greedy on the regression oracle.
    - ``squarecb``: inverse-gap weighting (Foster and Rakhlin, 2020), gamma grows as
      ``gamma_scale * t ** gamma_exponent``.
    - ``rnd``: random network distillation bonus (`rnd` networks).
    - ``bag``: online bootstrap with `bag` policies, mixed with `epsilon`.
    - ``cover``: online cover with `cover` policies and diversity `psi`.
    - ``softmax``: Boltzmann exploration on scores with inverse temperature
      `softmax_lambda`.

    Parameters
    ----------
    exploration
        One of the algorithms above.
    epsilon, gamma_scale, gamma_exponent, rnd, rnd_alpha, rnd_invlambda
        Hyperparameters of the algorithms above, under VW's names.
    bag, cover, psi, softmax_lambda
        Likewise; ``softmax_lambda`` is VW's ``--lambda``.
    interactions
        VW interaction strings over namespace prefixes: ``c`` for the context, ``a``
        for actions, ``i`` for the action id; the default ``["ca", "ci"]`` crosses the
        context with action features and with action ids.
    learning_rate, power_t, l2, bit_precision
        VW's optimiser settings.
    seed
        VW's ``--random_seed``.
    floor
        Smallest probability any offered action gets.

    Examples
    --------
    >>> policy = VWPolicy(exploration="epsilon", epsilon=0.1, seed=1)
    >>> actions = [Action("a"), Action("b")]
    >>> for _ in range(50):
    ...     policy.learn({"u": {"x": 1.0}}, actions, chosen=1, reward=1.0, probability=0.5)
    >>> [round(p, 3) for p in policy.pmf({"u": {"x": 1.0}}, actions)]
    [0.05, 0.95]
    """

    name: ClassVar[str] = "vw"
    live_params: ClassVar[frozenset[str]] = frozenset({"floor"} | _RELOADABLE | _REWRITABLE)

    def __init__(
        self,
        *,
        exploration: Exploration = "squarecb",
        epsilon: float = 0.05,
        gamma_scale: float = 10.0,
        gamma_exponent: float = 0.5,
        rnd: int = 3,
        rnd_alpha: float = 0.1,
        rnd_invlambda: float = 0.1,
        bag: int = 5,
        cover: int = 3,
        psi: float = 1.0,
        softmax_lambda: float = 10.0,
        interactions: Sequence[str] = ("ca", "ci"),
        learning_rate: float = 0.5,
        power_t: float = 0.5,
        l2: float = 0.0,
        bit_precision: int = 18,
        seed: int = 0,
        floor: float = 1e-3,
    ) -> None:
        super().__init__(floor=floor)
        if exploration not in _EXPLORATIONS:
            msg = f"`exploration` must be one of {list(_EXPLORATIONS)}, got {exploration!r}"
            raise ConfigurationError(msg)
        self.exploration: Exploration = exploration
        self.epsilon = _in_range("epsilon", epsilon, 0.0, 1.0)
        self.gamma_scale = _positive("gamma_scale", gamma_scale)
        self.gamma_exponent = _in_range("gamma_exponent", gamma_exponent, 0.0, 1.0)
        self.rnd = _count("rnd", rnd)
        self.rnd_alpha = _positive("rnd_alpha", rnd_alpha)
        self.rnd_invlambda = _positive("rnd_invlambda", rnd_invlambda)
        self.bag = _count("bag", bag)
        self.cover = _count("cover", cover)
        self.psi = _in_range("psi", psi, 0.0, math.inf)
        self.softmax_lambda = _positive("softmax_lambda", softmax_lambda)
        for term in interactions:
            if not term or any(ch.isspace() for ch in term):
                msg = f"`interactions` entries must be non-empty namespace prefixes, got {term!r}"
                raise ConfigurationError(msg)
        self.interactions = list(interactions)
        self.learning_rate = _positive("learning_rate", learning_rate)
        self.power_t = _in_range("power_t", power_t, 0.0, 1.0)
        self.l2 = _in_range("l2", l2, 0.0, math.inf)
        if not (1 <= bit_precision <= 30):
            msg = f"`bit_precision` must be in [1, 30], got {bit_precision!r}"
            raise ConfigurationError(msg)
        self.bit_precision = bit_precision
        self.seed = int(seed)
        self._vw = pyvw.Workspace(self._arguments(), enable_logging=False)
        # By action id: the action, and its prediction line once it came a second time.
        self._texts: dict[str, tuple[Action, str | None]] = {}

    # -- VW command line ----------------------------------------------------------

    def _exploration_arguments(self, names: Sequence[str]) -> list[str]:
        flags = {
            "epsilon": f"--epsilon {self.epsilon!r}",
            "gamma_scale": f"--gamma_scale {self.gamma_scale!r}",
            "gamma_exponent": f"--gamma_exponent {self.gamma_exponent!r}",
            "rnd": f"--rnd {self.rnd}",
            "rnd_alpha": f"--rnd_alpha {self.rnd_alpha!r}",
            "rnd_invlambda": f"--rnd_invlambda {self.rnd_invlambda!r}",
            "bag": f"--bag {self.bag}",
            "cover": f"--cover {self.cover}",
            "psi": f"--psi {self.psi!r}",
            "softmax_lambda": f"--lambda {self.softmax_lambda!r}",
        }
        return [flags[name] for name in names]

    def _arguments(self) -> str:
        parts = ["--cb_explore_adf", "--quiet", "--no_stdin"]
        if self.exploration in ("squarecb", "softmax"):
            parts.append(f"--{self.exploration}")
        parts += self._exploration_arguments(_USES[self.exploration])
        parts += [f"--interactions {term}" for term in self.interactions]
        parts += [
            f"--learning_rate {self.learning_rate!r}",
            f"--power_t {self.power_t!r}",
            f"--l2 {self.l2!r}",
            f"--bit_precision {self.bit_precision}",
            f"--random_seed {self.seed}",
        ]
        return " ".join(parts)

    # -- hooks --------------------------------------------------------------------

    # The hot path parses, predicts, learns and finishes through VW's native binding
    # (which pyvw.Workspace extends), as pyvw's own predict/learn do, but without
    # wrapping every parsed line in a Python pyvw.Example: that wrapping, not VW, is
    # most of pyvw's cost per text example. Examples are built by VW's text parser, not
    # pushed feature by feature: that parser reads "0.24273997354306764" a few float32
    # ulps away from the correctly rounded value a pushed float would have, so pushed
    # examples would not give the probabilities pyvw's text predict gives.

    def _prediction_text(self, context: Context, actions: Sequence[Action]) -> str:
        """``_vw_text(to_vw_lines(context, actions))``, written in one pass, checked once.

        Every token of the decision goes into one text (:func:`_write_tokens`, then
        :func:`_filled` for its floats), checked for separators once
        (:func:`_unescaped`); a decision with a name or value to escape, or a number
        that is not finite, is written by :func:`to_vw_lines` instead, which escapes it
        or says what is wrong.

        An app offers the same actions again and again; the rank path hands the same
        :class:`~policies.Action` object for an action seen unchanged
        (:meth:`bandit.schemas.RankRequest.policy_inputs`). The second time an action
        object comes, its line is written on its own (:func:`_namespace_text`) and kept
        (for up to ``_TEXT_CACHE_SIZE`` actions); from then on the text holds a NUL in
        its place until the checked text is whole, and the kept line replaces the NUL.
        """
        tokens = ["shared"]
        append = tokens.append
        floats: list[float] = []
        numeric = _write_tokens("c", context, append, floats)
        bars = len(context)
        if not bars:  # the shared line still needs its bar, or VW reads one more action
            append(" |")
            bars = 1
        spaces = len(tokens) - 1  # one a token, but "shared"
        kept = self._texts
        lines: list[str] = []  # the kept lines, in offer order
        for action in actions:
            entry = kept.get(action.id)
            if entry is not None and entry[0] is action:  # (the entry keeps `action` alive)
                line = entry[1]
                if line is None:
                    line = _namespace_text("a", action.features, action.id)[1:]
                    kept[action.id] = (action, line)
                append("\n\0")
                lines.append(line)
                continue
            if len(kept) >= _TEXT_CACHE_SIZE:
                kept.clear()
            kept[action.id] = (action, None)
            append("\n")
            begin = len(tokens)
            numeric += _write_tokens("a", action.features, append, floats)
            append(_ID_TEXT + action.id)
            tokens[begin] = tokens[begin][1:]  # a line starts without a space
            spaces += len(tokens) - begin  # one a token, two in the id's, none in the first
            bars += len(action.features) + 1
        text = _filled("".join(tokens), floats)
        if (
            text is None
            or (numeric and (":nan" in text or ":inf" in text or ":-inf" in text))
            or not _unescaped(text, spaces, bars, numeric, len(actions))
            or (lines and text.count("\0") != len(lines))  # a NUL of a name or value
        ):
            return _vw_text(to_vw_lines(context, actions))
        if lines:
            parts = text.split("\0")
            text = "".join(chain.from_iterable(zip(parts[:-1], lines, strict=True))) + parts[-1]
        return text

    def _prediction_lines(self, context: Context, actions: Sequence[Action]) -> list[str]:
        """``to_vw_lines(context, actions)``, as :meth:`_prediction_text` writes them."""
        return self._prediction_text(context, actions).split("\n")

    def _weights(self, context: Context, actions: Sequence[Action]) -> Sequence[float]:
        return self._predicted(self._prediction_text(context, actions))

    def _weights_without(
        self, context: Context, actions: Sequence[Action], features: Sequence[FeatureRef]
    ) -> list[Sequence[float]]:
        # Each namespace text is written once, cut into one piece per feature; the text
        # without a feature is the other pieces joined, so no feature is written again.
        lines = self._prediction_lines(context, actions)
        shared = _Pieces("c", context)
        cut: dict[int, _Pieces] = {}
        texts = []
        for feature in features:
            changed = list(lines)
            if feature.action is None:
                changed[0] = "shared" + (shared.without(feature) or " |")
            else:
                action = actions[feature.action]
                pieces = cut.get(feature.action)
                if pieces is None:
                    pieces = cut[feature.action] = _Pieces("a", action.features, action.id)
                changed[feature.action + 1] = pieces.without(feature)[1:]
            texts.append(_vw_text(changed))
        return [self._predicted(text) for text in texts]

    def _predicted(self, text: str) -> list[float]:
        """VW's exploration distribution for one decision's prediction text."""
        vw = self._vw
        examples = vw._parse(text)
        vw.predict_multi(examples)
        probabilities: list[float] = examples[0].get_action_scores()
        vw._finish_example_multi_ex(examples)
        return [max(float(p), 0.0) for p in probabilities]

    def _learn(
        self,
        context: Context,
        actions: Sequence[Action],
        chosen: int,
        reward: float,
        probability: float,
    ) -> None:
        vw = self._vw
        lines = to_vw_lines(context, actions, (chosen, reward_to_cost(reward), probability))
        examples = vw._parse(_vw_text(lines))
        vw.learn_multi(examples)
        vw._finish_example_multi_ex(examples)

    def learn_logged(self, example: LoggedExample) -> None:
        """Learn a logged decision written by :func:`logged_example`, as :meth:`learn` would.

        :func:`logged_example` wrote exactly the text :meth:`learn` would give VW, after
        checking what :meth:`learn` checks; this hands that text to VW's native binding
        and counts the update.
        """
        vw = self._vw
        examples = vw._parse(example.text)
        vw.learn_multi(examples)
        vw._finish_example_multi_ex(examples)
        self._n_learned += 1

    def _non_finite(self) -> str | None:
        # VW's JSON writer lists every non-zero weight of every learner in the stack
        # (each bag, cover policy and RND network) and stops at the first NaN or
        # infinity, which JSON cannot hold: a healthy model's text ends with "]}".
        # It costs about 2 µs per non-zero weight.
        text: str = self._vw.json_weights()
        if text.endswith("]}"):
            return None
        index = text.rpartition('"index":')[2].partition(",")[0] or "?"
        return f"weight {index} is NaN or infinite"

    def _params(self) -> dict[str, Any]:
        return {
            "exploration": self.exploration,
            "epsilon": self.epsilon,
            "gamma_scale": self.gamma_scale,
            "gamma_exponent": self.gamma_exponent,
            "rnd": self.rnd,
            "rnd_alpha": self.rnd_alpha,
            "rnd_invlambda": self.rnd_invlambda,
            "bag": self.bag,
            "cover": self.cover,
            "psi": self.psi,
            "softmax_lambda": self.softmax_lambda,
            "interactions": list(self.interactions),
            "learning_rate": self.learning_rate,
            "power_t": self.power_t,
            "l2": self.l2,
            "bit_precision": self.bit_precision,
            "seed": self.seed,
        }

    def _state(self) -> bytes:
        # VW does not save every piece of learner state (RND's random state, for one),
        # so a reloaded model can drift from the one that kept running. To make a
        # snapshot continue *exactly*, the live policy also continues from the reloaded
        # model: both sides then carry the same state from here on.
        model = self._save_model()
        self._vw = self._load_model(model, self._exploration_arguments(self._reloadable_used()))
        return model

    def _load_state(self, payload: bytes) -> None:
        self._vw.finish()
        self._vw = self._load_model(payload, self._exploration_arguments(self._reloadable_used()))

    def tunable_params(self) -> frozenset[str]:
        """Return `floor` and the hyperparameters of this exploration that can change live."""
        live = _RELOADABLE | _REWRITABLE
        return frozenset({"floor", *(name for name in _USES[self.exploration] if name in live)})

    def _configure(self, changes: dict[str, Any]) -> None:
        checked: dict[str, float] = {}
        for key, value in changes.items():
            if key in _LIVE_RANGES:
                low, high, _ = _LIVE_RANGES[key]
                checked[key] = _in_range(key, value, low, high)
            else:
                checked[key] = _positive(key, value)
        model = self._save_model()
        frozen = {key: repr(value) for key, value in checked.items() if key in _REWRITABLE}
        if frozen:
            model = rewrite_options(model, frozen)
        for key, value in checked.items():
            setattr(self, key, value)
        self._vw = self._load_model(model, self._exploration_arguments(self._reloadable_used()))

    # -- model files ----------------------------------------------------------------

    def _reloadable_used(self) -> list[str]:
        return [name for name in _USES[self.exploration] if name in _RELOADABLE]

    def _save_model(self) -> bytes:
        with tempfile.TemporaryDirectory(prefix="streambandit-vw-") as folder:
            path = Path(folder) / "model.vw"
            self._vw.save(str(path))
            return path.read_bytes()

    def _load_model(self, model: bytes, overrides: list[str]) -> pyvw.Workspace:
        with tempfile.TemporaryDirectory(prefix="streambandit-vw-") as folder:
            path = Path(folder) / "model.vw"
            path.write_bytes(model)
            try:
                return pyvw.Workspace(
                    " ".join(["--quiet", "--no_stdin", "-i", str(path), *overrides]),
                    enable_logging=False,
                )
            except RuntimeError as exc:
                msg = f"VW could not load the snapshot's model: {exc}"
                raise SnapshotError(msg) from exc

    def __del__(self) -> None:
        vw = getattr(self, "_vw", None)
        if vw is not None:
            vw.finish()


def _positive(name: str, value: float) -> float:
    if not (0.0 < value < math.inf):  # also rejects NaN
        msg = f"`{name}` must be finite and > 0, got {value!r}"
        raise ConfigurationError(msg)
    return float(value)


def _in_range(name: str, value: float, low: float, high: float) -> float:
    if not (low <= value <= high):  # also rejects NaN
        msg = f"`{name}` must be in [{low}, {high}], got {value!r}"
        raise ConfigurationError(msg)
    return float(value)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"`{name}` must be an integer >= 1, got {value!r}"
        raise ConfigurationError(msg)
    return value


register(
    VWPolicy,
    *((f"vw-{kind}", {"exploration": kind}) for kind in _EXPLORATIONS),
)


# -- DSJSON: the decision log VW's own ``--dsjson`` parser reads ---------------------------

_DSJSON_VERSION = "1"
# How ``to_vw_lines`` prefixes namespaces (its defaults, which VWPolicy uses).
_CONTEXT_PREFIX = "c"
_ACTION_PREFIX = "a"
# VW's JSON parser skips every key that starts with "_" (or reads it as one of its own
# fields), so features named that way travel under these keys instead.
_TEXT_KEY = "_text"
_HIDDEN_KEY = "_sb"
_UNESCAPES = {code: char for char, code in ((chr(k), v) for k, v in _ESCAPES.items())}
_UNESCAPE_RE = re.compile("|".join(re.escape(code) for code in _UNESCAPES))
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True, slots=True)
class DSJSONRecord:
    """One decision read back from a DSJSON log line, in streambandit's conventions.

    Attributes
    ----------
    event_id, timestamp
        The decision's event id and when it was made (UTC).
    context, actions
        The features the policy saw, as :func:`dsjson_record` was given them.
    chosen
        0-based offer-order index of the chosen action.
    probabilities
        Probability of every action, in offer order.
    ranking
        0-based offer-order indices in rank order, the chosen action first.
    reward
        The reward learned (``-_label_cost``).
    extra
        Our own fields, from the top-level ``"_sb"`` key (empty when absent).
    """

    event_id: str
    timestamp: datetime
    context: dict[str, dict[str, FeatureValue]]
    actions: list[Action]
    chosen: int
    probabilities: tuple[float, ...]
    ranking: tuple[int, ...]
    reward: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def probability(self) -> float:
        """The logged probability of the chosen action."""
        return self.probabilities[self.chosen]


def dsjson_record(
    context: Context,
    actions: Sequence[Action],
    chosen: int,
    probabilities: Sequence[float],
    reward: float,
    *,
    event_id: str,
    timestamp: datetime,
    ranking: Sequence[int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one decision's DSJSON object, as VW's ``--cb_explore_adf --dsjson`` reads it.

    The object is what Personalizer logged: ``_label_cost`` (``-reward``),
    ``_label_probability``, ``_label_Action`` (1-based), ``_labelIndex`` (0-based),
    ``Timestamp``, ``Version``, ``EventId``, ``a`` (1-based actions in rank order, the
    chosen one first), ``c`` (shared namespaces, and the actions under ``_multi``),
    ``p`` (probabilities in the order of ``a``), then `extra` under ``_sb``, a key VW
    skips. Serialise it with ``json.dumps(..., allow_nan=False)``, one object a line.

    Features are written so that VW's JSON parser hashes them exactly as its text parser
    hashes :func:`to_vw_lines`: the same namespace names (``c<name>``, ``a<name>``), a
    number as ``{"name": value}`` (text ``name:value``), a string as
    ``{"name=value": 1}`` (text ``name=value``, escaped alike). A string value is never
    written as ``{"name": "value"}``: VW's JSON parser would hash that as ``namevalue``,
    or, with ``--chain_hash``, as neither. Each action's id is its namespace ``id``,
    ``{"id=<id>": 1}`` (text ``|id id=<id>``, escaped alike): VW learns it, and
    :func:`parse_dsjson_record` reads the id back from it.

    Parameters
    ----------
    context, actions
        The features the policy saw.
    chosen
        0-based offer-order index of the chosen action.
    probabilities
        The distribution the choice was drawn from, in offer order.
    reward
        The reward learned.
    event_id, timestamp
        The decision's id and when it was made (timezone-aware).
    ranking
        0-based offer-order indices in rank order, `chosen` first; by default `chosen`
        then the others by decreasing probability (as :func:`policies.decide_ranking`).
    extra
        JSON-serialisable fields of our own, written under ``_sb``.

    Returns
    -------
    dict
        Ready for ``json.dumps``; :func:`parse_dsjson_record` reads it back.

    Raises
    ------
    InvalidDistributionError
        If `probabilities` is not a distribution over `actions`.
    InvalidFeedbackError
        If `chosen`, `reward`, `ranking` or `timestamp` cannot be right.
    InvalidFeaturesError
        If a number is not finite, or a feature name holds ``=``.

    Notes
    -----
    What VW's DSJSON parser cannot learn exactly as :class:`VWPolicy` did (VW's JSON
    parser skips every key starting with ``_``, or reads it as one of its own fields):

    - features whose names start with ``_``: strings go to the namespace's ``"_text"``
      (VW learns them with the text lines' hashes, after the namespace's other
      features), numbers to a nested ``"_sb"`` (VW skips them: it reads every
      ``"_text"`` token as a name worth 1, never as ``name:value``).
      :func:`parse_dsjson_record` reads both back.
    - number values: VW's text parser accumulates digits in single precision and is off
      by a few float32 ulps for long decimals (``0.24273997354306764`` reads as
      ``0.24273994565``), while its JSON parser rounds correctly (``0.24273997545``).
      Values with few significant digits, such as 0.25, 0.5, 3 or 0.875, read the same.
      The log keeps the value the policy was given, exactly.

    Zero-valued numbers are logged: the text lines leave them out and VW's JSON parser
    drops them, so they change nothing for VW.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> record = dsjson_record(
    ...     {"user": {"age": 0.5, "tier": "gold"}},
    ...     [Action("x", {"item": {"topic": "golf"}}), Action("y")],
    ...     chosen=1,
    ...     probabilities=[0.75, 0.25],
    ...     reward=1.0,
    ...     event_id="evt-1",
    ...     timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
    ...     extra={"policy": "vw"},
    ... )
    >>> from pprint import pprint
    >>> pprint(record, sort_dicts=False, width=88)
    {'_label_cost': -1.0,
     '_label_probability': 0.25,
     '_label_Action': 2,
     '_labelIndex': 1,
     'Timestamp': '2026-11-27T23:15:00.000000Z',
     'Version': '1',
     'EventId': 'evt-1',
     'a': [2, 1],
     'c': {'cuser': {'age': 0.5, 'tier=gold': 1},
           '_multi': [{'aitem': {'topic=golf': 1}, 'id': {'id=x': 1}},
                      {'id': {'id=y': 1}}]},
     'p': [0.25, 0.75],
     '_sb': {'policy': 'vw'}}
    """
    _check_actions(actions)
    distribution = Distribution(tuple(float(p) for p in probabilities))
    if len(distribution) != len(actions):
        msg = (
            f"`probabilities` must hold one probability per action ({len(actions)}), "
            f"got {len(distribution)}"
        )
        raise InvalidDistributionError(msg)
    if isinstance(chosen, bool) or not (0 <= chosen < len(actions)):
        msg = f"`chosen` must be an index in [0, {len(actions)}), got {chosen!r}"
        raise InvalidFeedbackError(msg)
    if not math.isfinite(reward):
        msg = f"`reward` must be finite, got {reward!r}"
        raise InvalidFeedbackError(msg)
    order = _dsjson_ranking(distribution.probabilities, chosen, ranking)
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        msg = f"`timestamp` must be timezone-aware, got {timestamp.isoformat()}"
        raise InvalidFeedbackError(msg)
    shared: dict[str, Any] = {
        f"{_CONTEXT_PREFIX}{namespace.translate(_ESCAPES)}": _dsjson_namespace(namespace, values)
        for namespace, values in context.items()
    }
    # The id namespace comes last, as in the text lines: VW then orders features alike.
    shared["_multi"] = [
        {
            **{
                f"{_ACTION_PREFIX}{namespace.translate(_ESCAPES)}": _dsjson_namespace(
                    namespace, values
                )
                for namespace, values in action.features.items()
            },
            _ID_NAMESPACE: {f"{_ID_FEATURE}={action.id.translate(_ESCAPES)}": 1},
        }
        for action in actions
    ]
    record: dict[str, Any] = {
        "_label_cost": reward_to_cost(float(reward)),
        "_label_probability": distribution[chosen],
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
        "Timestamp": timestamp.astimezone(UTC).strftime(_TIMESTAMP_FORMAT),
        "Version": _DSJSON_VERSION,
        "EventId": event_id,
        "a": [index + 1 for index in order],
        "c": shared,
        "p": [distribution[index] for index in order],
    }
    if extra is not None:
        record[_HIDDEN_KEY] = dict(extra)
    return record


def _dsjson_ranking(
    probabilities: tuple[float, ...], chosen: int, ranking: Sequence[int] | None
) -> list[int]:
    n = len(probabilities)
    if ranking is None:
        rest = sorted((i for i in range(n) if i != chosen), key=lambda i: (-probabilities[i], i))
        return [chosen, *rest]
    order = list(ranking)
    if sorted(order) != list(range(n)) or order[0] != chosen:
        msg = (
            f"`ranking` must order every index in [0, {n}) once, `chosen` ({chosen}) "
            f"first, got {order!r}"
        )
        raise InvalidFeedbackError(msg)
    return order


def _dsjson_namespace(namespace: str, values: Mapping[str, FeatureValue]) -> dict[str, Any]:
    """Write one namespace's features as VW's JSON parser must read them (see above)."""
    written: dict[str, Any] = {}
    text: list[str] = []
    hidden: dict[str, FeatureValue] = {}
    for name, value in values.items():
        if "=" in name:
            msg = f"feature name {namespace}.{name} must not hold '='"
            raise InvalidFeaturesError(msg)
        key = name.translate(_ESCAPES)
        if isinstance(value, str):
            token = f"{key}={value.translate(_ESCAPES)}"
            if name.startswith("_"):
                text.append(token)
            else:
                written[token] = 1
        else:
            if not math.isfinite(value):
                msg = f"feature {namespace}.{name} must be finite, got {value!r}"
                raise InvalidFeaturesError(msg)
            if name.startswith("_"):
                hidden[name] = value
            else:
                written[key] = value
    if text:
        written[_TEXT_KEY] = " ".join(text)
    if hidden:
        written[_HIDDEN_KEY] = hidden
    return written


def parse_dsjson_record(record: Mapping[str, Any]) -> DSJSONRecord:
    """Read back one object written by :func:`dsjson_record` (``json.loads`` of a line).

    Parameters
    ----------
    record
        The decoded JSON object.

    Returns
    -------
    DSJSONRecord
        0-based indices, probabilities in offer order, the reward (``-_label_cost``).

    Raises
    ------
    DatasetError
        If a field is missing, of the wrong type, or disagrees with another; the
        message names it.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> line = dsjson_record(
    ...     {"user": {"tier": "gold"}},
    ...     [Action("x"), Action("y", {"item": {"size": 2}})],
    ...     chosen=1,
    ...     probabilities=[0.75, 0.25],
    ...     reward=1.0,
    ...     event_id="evt-1",
    ...     timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
    ... )
    >>> back = parse_dsjson_record(line)
    >>> back.chosen, back.probability, back.reward, back.probabilities
    (1, 0.25, 1.0, (0.75, 0.25))
    >>> back.context, back.actions[1]
    ({'user': {'tier': 'gold'}}, Action(id='y', features={'item': {'size': 2}}))
    """
    try:
        cost = _number(record, "_label_cost")
        label_action = _integer(record, "_label_Action")
        chosen = _integer(record, "_labelIndex")
        label_probability = _number(record, "_label_probability")
        event_id = record["EventId"]
        stamp = record["Timestamp"]
        order = record["a"]
        ordered_probabilities = record["p"]
        shared = record["c"]
    except KeyError as exc:
        msg = f"DSJSON record lacks the field {exc.args[0]!r}"
        raise DatasetError(msg) from None
    if not isinstance(event_id, str) or not isinstance(stamp, str):
        msg = "DSJSON `EventId` and `Timestamp` must be strings"
        raise DatasetError(msg)
    if not isinstance(shared, Mapping) or not isinstance(shared.get("_multi"), list):
        msg = "DSJSON `c` must be an object holding the actions under `_multi`"
        raise DatasetError(msg)
    actions = [_parse_action(i, value) for i, value in enumerate(shared["_multi"])]
    n = len(actions)
    if (
        not isinstance(order, list)
        or not all(isinstance(a, int) and not isinstance(a, bool) for a in order)
        or sorted(order) != list(range(1, n + 1))
    ):
        msg = f"DSJSON `a` must list the actions 1..{n} once each, got {order!r}"
        raise DatasetError(msg)
    if not isinstance(ordered_probabilities, list) or len(ordered_probabilities) != n:
        msg = f"DSJSON `p` must hold {n} probabilities, one per entry of `a`"
        raise DatasetError(msg)
    if label_action != chosen + 1 or order[0] != label_action:
        msg = (
            f"DSJSON `_label_Action` ({label_action}) must equal `_labelIndex` + 1 "
            f"({chosen} + 1) and `a[0]` ({order[0]})"
        )
        raise DatasetError(msg)
    probabilities = [0.0] * n
    for action, probability in zip(order, ordered_probabilities, strict=True):
        if isinstance(probability, bool) or not isinstance(probability, int | float):
            msg = f"DSJSON `p` must hold numbers, got {probability!r}"
            raise DatasetError(msg)
        probabilities[action - 1] = float(probability)
    if probabilities[chosen] != label_probability:
        msg = (
            f"DSJSON `_label_probability` ({label_probability!r}) must equal the chosen "
            f"action's entry of `p` ({probabilities[chosen]!r})"
        )
        raise DatasetError(msg)
    try:
        timestamp = datetime.strptime(stamp, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        msg = f"DSJSON `Timestamp` must look like 2026-11-27T23:15:00.000000Z, got {stamp!r}"
        raise DatasetError(msg) from None
    context = {
        _namespace_name(key, _CONTEXT_PREFIX, "c"): _parse_namespace(key, value)
        for key, value in shared.items()
        if not key.startswith("_")  # `_multi`, or a field of VW's: not a namespace
    }
    extra = record.get(_HIDDEN_KEY, {})
    if not isinstance(extra, Mapping):
        msg = f"DSJSON `{_HIDDEN_KEY}` must be an object, got {extra!r}"
        raise DatasetError(msg)
    return DSJSONRecord(
        event_id=event_id,
        timestamp=timestamp,
        context=context,
        actions=actions,
        chosen=chosen,
        probabilities=tuple(probabilities),
        ranking=tuple(a - 1 for a in order),
        reward=-cost,
        extra=dict(extra),
    )


def _number(record: Mapping[str, Any], key: str) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"DSJSON `{key}` must be a number, got {value!r}"
        raise DatasetError(msg)
    return float(value)


def _integer(record: Mapping[str, Any], key: str) -> int:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"DSJSON `{key}` must be an integer, got {value!r}"
        raise DatasetError(msg)
    return value


def _namespace_name(key: str, prefix: str, where: str) -> str:
    """Return the namespace name `key` stands for: without `prefix`, unescaped."""
    if not key.startswith(prefix) or len(key) == len(prefix):
        msg = f"DSJSON namespace {key!r} in `{where}` must start with {prefix!r}"
        raise DatasetError(msg)
    return _unescape(key[len(prefix) :])


def _unescape(text: str) -> str:
    return _UNESCAPE_RE.sub(lambda match: _UNESCAPES[match.group(0)], text)


def _parse_action(index: int, value: Any) -> Action:
    where = f"c._multi[{index}]"
    if not isinstance(value, Mapping):
        msg = f"DSJSON `{where}` must be an object, got {value!r}"
        raise DatasetError(msg)
    features = {
        _namespace_name(key, _ACTION_PREFIX, where): _parse_namespace(key, namespace)
        for key, namespace in value.items()
        if key != _ID_NAMESPACE and not key.startswith("_")  # `_...`: a field of VW's
    }
    return Action(_parse_action_id(where, value.get(_ID_NAMESPACE)), features)


def _parse_action_id(where: str, namespace: Any) -> str:
    """Read the id from the namespace ``{"id=<escaped id>": 1}``, unescaped."""
    if isinstance(namespace, Mapping) and len(namespace) == 1:
        ((key, value),) = namespace.items()
        name, equals, text = str(key).partition("=")
        if name == _ID_FEATURE and equals and value == 1 and not isinstance(value, bool):
            return _unescape(text)
    msg = (
        f"DSJSON `{where}` must hold the action id as namespace "
        f'`{_ID_NAMESPACE}`: {{"{_ID_FEATURE}=<id>": 1}}, got {namespace!r}'
    )
    raise DatasetError(msg)


def _parse_namespace(where: str, value: Any) -> dict[str, FeatureValue]:
    if not isinstance(value, Mapping):
        msg = f"DSJSON namespace {where!r} must be an object, got {value!r}"
        raise DatasetError(msg)
    features: dict[str, FeatureValue] = {}
    for key, number in value.items():
        if key == _TEXT_KEY:
            for token in str(number).split():
                name, _, text = token.partition("=")
                features[_unescape(name)] = _unescape(text)
        elif key == _HIDDEN_KEY and isinstance(number, Mapping):
            for name, hidden in number.items():
                if isinstance(hidden, bool) or not isinstance(hidden, int | float):
                    msg = f"DSJSON feature {where}.{name} must be a number, got {hidden!r}"
                    raise DatasetError(msg)
                features[name] = hidden
        elif key.startswith("_"):
            continue  # a field of VW's, or of another writer: not a feature
        elif isinstance(number, bool) or not isinstance(number, int | float):
            msg = f"DSJSON feature {where}.{key} must be a number, got {number!r}"
            raise DatasetError(msg)
        elif "=" in key:
            name, _, text = key.partition("=")
            features[_unescape(name)] = _unescape(text)
        else:
            features[_unescape(key)] = number
    return features


# -- both formats at once: a logged decision as VW learns it and as the log keeps it -------

_DSJSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_CACHE_SIZE = 65_536  # names a FeatureRules remembers as fine; extras remembered
_ACTION_CACHE_SIZE = 8_192  # actions a FeatureRules remembers the written pieces of
_HIDDEN_CACHE: dict[Any, str] = {}  # "_sb" objects written, by their items
_ID_SPECIALS = re.compile(r'[ |:%"\\]')  # in an id: VW escapes it, or JSON would
_NOT_PLAIN = re.compile(r'["\\,{}]')  # in a name: JSON escapes it, or the writer uses it


def dsjson_line(record: Mapping[str, Any]) -> bytes:
    r"""Serialise a :func:`dsjson_record` object as one line of the decision log.

    Compact JSON, UTF-8, ending in a line break; NaN and infinities are refused.

    Examples
    --------
    >>> dsjson_line({"EventId": "evt-1", "p": [0.25, 0.75]})
    b'{"EventId":"evt-1","p":[0.25,0.75]}\n'
    """
    return (_DSJSON_ENCODER.encode(record) + "\n").encode()


@dataclass(frozen=True, slots=True)
class LoggedExample:
    """One logged decision and its reward, written in VW's two formats.

    Made by :func:`logged_example`; :meth:`VWPolicy.learn_logged` learns it.

    Attributes
    ----------
    text
        The ``cb_explore_adf`` learning example, exactly the text
        :meth:`VWPolicy.learn` gives VW for the same decision (:func:`to_vw_lines`).
    dsjson
        The decision log line, exactly :func:`dsjson_line` of :func:`dsjson_record`.
    """

    text: str
    dsjson: bytes


def _anything(name: str) -> bool:
    return True


@dataclass(frozen=True, slots=True, eq=False)
class FeatureRules:
    """Rules a caller's features must also keep for :func:`logged_example` to write them.

    So a caller that validates features anyway (the stream worker) checks them in the
    same pass that writes them. Names found fine are remembered, and so are the tokens
    written for string values (categorical values repeat), up to 65,536 of each, and
    the pieces written for an action's features (a catalog repeats its actions), up to
    8,192 actions.

    Parameters
    ----------
    namespace_ok, name_ok
        Say whether a namespace name, and a feature name, is valid.
    max_namespaces, max_features, max_string_length
        The most namespaces per features mapping, features per namespace, and
        characters per string value.
    """

    namespace_ok: Callable[[str], bool] = _anything
    name_ok: Callable[[str], bool] = _anything
    max_namespaces: int = sys.maxsize
    max_features: int = sys.maxsize
    max_string_length: int = sys.maxsize
    _namespaces: set[str] = field(default_factory=set, init=False, repr=False)
    _names: set[str] = field(default_factory=set, init=False, repr=False)
    _heads: dict[str, dict[str, tuple[str, str]]] = field(
        default_factory=dict, init=False, repr=False
    )  # by prefix and namespace: its text and DSJSON openings
    _pairs: dict[tuple[str, str], tuple[str, str]] = field(
        default_factory=dict, init=False, repr=False
    )  # by feature name and string value: its text token and DSJSON member
    _actions: dict[bytes, tuple[tuple[str, ...], tuple[str, ...], int]] = field(
        default_factory=dict, init=False, repr=False
    )  # by an action's features as JSON: its text tokens, DSJSON members, numeric tokens

    def _namespace(self, name: object) -> bool:
        """Whether namespace `name` is valid and written as it is (remembered when so)."""
        if type(name) is not str or not name or not _plain(name) or not self.namespace_ok(name):
            return False
        if len(self._namespaces) < _CACHE_SIZE:
            self._namespaces.add(name)
        return True

    def _name(self, name: object) -> bool:
        """Whether feature `name` is valid and written as it is (remembered when so)."""
        if type(name) is not str or not name or name[0] == "_" or "=" in name:
            return False  # DSJSON writes these apart (dsjson_record)
        if not _plain(name) or not self.name_ok(name):
            return False
        if len(self._names) < _CACHE_SIZE:
            self._names.add(name)
        return True


_NO_RULES = FeatureRules()


def _plain(name: str) -> bool:
    """Whether `name` needs no escaping in VW text nor in JSON, nor holds ``,{}``."""
    return (
        name.translate(_ESCAPES) == name and name.isprintable() and _NOT_PLAIN.search(name) is None
    )


def logged_example(  # noqa: PLR0911, PLR0912  (anything unusual: left to the slow path)
    context: Context,
    action_ids: Sequence[str],
    action_features: Sequence[Features],
    chosen: int,
    probabilities: Sequence[float],
    *,
    reward: float,
    event_id: str,
    timestamp: datetime,
    ranking: Sequence[int],
    extra: Mapping[str, Any] | None = None,
    rules: FeatureRules | None = None,
) -> LoggedExample | None:
    """Write one logged decision as VW learns it and as the decision log keeps it, or None.

    The stream worker's hot path: one pass over the features writes both the learning
    example (:func:`to_vw_lines` with the label ``(chosen, -reward, probability)``) and
    the DSJSON line (:func:`dsjson_line` of :func:`dsjson_record`), each exactly as
    those functions write it, in a fraction of their time. It is an accelerator, never
    a second set of rules: for anything unusual (a name or value that needs escaping, a
    name starting with ``_``, a value that is not a number within
    :data:`~policies._base.FEATURE_VALUE_LIMIT` or a string, a reward beyond
    :data:`~policies._base.REWARD_LIMIT`, an
    invalid distribution or ranking, features breaking `rules`...) it returns None, and
    the caller writes the example with those functions, which escape it or say what is
    wrong.

    Parameters
    ----------
    context
        Shared features by namespace.
    action_ids, action_features
        The offered actions' ids and features, in offer order.
    chosen
        0-based offer-order index of the chosen action.
    probabilities
        The distribution the choice was drawn from, in offer order.
    reward
        The reward learned.
    event_id, timestamp, ranking, extra
        As :func:`dsjson_record` takes them; `ranking` is required here.
    rules
        What the features must also keep (None: nothing more).

    Returns
    -------
    LoggedExample or None

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> example = logged_example(
    ...     {"user": {"age": 0.5, "tier": "gold"}},
    ...     ["x", "y"],
    ...     [{"item": {"topic": "golf"}}, {}],
    ...     chosen=1,
    ...     probabilities=[0.75, 0.25],
    ...     reward=1.0,
    ...     event_id="evt-1",
    ...     timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
    ...     ranking=[1, 0],
    ... )
    >>> print(example.text)
    shared |cuser age:0.5 tier=gold
    |aitem topic=golf |id id=x
    0:-1.0:0.25 |id id=y
    >>> example.dsjson == dsjson_line(
    ...     dsjson_record(
    ...         {"user": {"age": 0.5, "tier": "gold"}},
    ...         [Action("x", {"item": {"topic": "golf"}}), Action("y")],
    ...         chosen=1,
    ...         probabilities=[0.75, 0.25],
    ...         reward=1.0,
    ...         event_id="evt-1",
    ...         timestamp=datetime(2026, 11, 27, 23, 15, tzinfo=UTC),
    ...         ranking=[1, 0],
    ...     )
    ... )
    True
    """
    n = len(action_ids)
    if not 0 < n == len(action_features) == len(probabilities) == len(ranking):
        return None
    if type(chosen) is not int or not 0 <= chosen < n or type(reward) is not float:
        return None
    if not -REWARD_LIMIT <= reward <= REWARD_LIMIT:  # (NaN too) learn says what is wrong
        return None
    if ranking[0] != chosen or sorted(ranking) != list(range(n)):
        return None
    for p in probabilities:
        if type(p) is not float or not 0.0 < p <= 1.0:
            return None
    if abs(math.fsum(probabilities) - 1.0) > SUM_TOLERANCE:
        return None
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        return None
    ids = _plain_ids(action_ids)
    if ids is None:
        return None
    if rules is None:
        rules = _NO_RULES
    escapes = 0 if ids is action_ids else sum(action_id.count("%") for action_id in ids)
    texts = {p: repr(p) for p in set(probabilities)}  # (decisions repeat probabilities)
    ranked = [texts[probabilities[index]] for index in ranking]  # [0]: the chosen one's
    cost = reward_to_cost(reward)
    # One list of text pieces and one of DSJSON pieces for the whole example. Every
    # feature token starts with one space, so counting the spaces, bars and colons of
    # the text tells whether a value held one (it needs escaping, as '%' would); the
    # DSJSON needs nothing escaped when every string is printable (`_write` checks) and
    # none holds '"' or '\\'; ',}' (where a namespace's trailing comma is cut) must not
    # be in one either.
    text = ["shared"]
    dsjson = ["{"]
    numeric = _write(_CONTEXT_PREFIX, context, text, dsjson, rules)
    if numeric is None:
        return None
    if not context:
        text.append(" |")
    dsjson.append('"_multi":[')
    for index, (action_id, features) in enumerate(zip(ids, action_features, strict=True)):
        text.append("\n")  # the unlabelled lines lose their first space below
        if index == chosen:
            text.append(f"0:{cost}:{ranked[0]}")
        dsjson.append("{" if index == 0 else ",{")
        if features:
            written = _write_action(features, text, dsjson, rules)
            if written is None:
                return None
            numeric += written
        text.append(_ID_TEXT + action_id)
        dsjson.append(f'"{_ID_NAMESPACE}":{{"{_ID_FEATURE}={action_id}":1}}}}')
    namespaces = len(context) + sum(map(len, action_features))
    written_text = "".join(text)
    written_json = "".join(dsjson)
    if (
        written_text.count(" ") != len(text) - 2  # one a piece but "shared" and the label,
        # and the newlines (n of them, no space) make up for the ids (n, two spaces each)
        or written_text.count("|") != namespaces + n + (not context)
        or written_text.count(":") != numeric + 2  # the label's two
        or written_text.count("%") != escapes  # of escaped ids: any other is a value's
        or '"' in written_text
        or "\\" in written_text
        or ",}" in written_text
    ):
        return None
    try:
        event = _DSJSON_ENCODER.encode(event_id)
        end = "" if extra is None else _hidden(extra)
    except (TypeError, ValueError):  # not JSON: dsjson_line says so
        return None
    line = (
        f'{{"_label_cost":{cost!r},"_label_probability":{ranked[0]},'
        f'"_label_Action":{chosen + 1},"_labelIndex":{chosen},'
        f'"Timestamp":"{_timestamp(timestamp)}","Version":"{_DSJSON_VERSION}",'
        f'"EventId":{event},"a":[{",".join([str(index + 1) for index in ranking])}],'
        f'"c":{written_json.replace(",}", "}")}]}},"p":[{",".join(ranked)}]{end}}}\n'
    )
    return LoggedExample(written_text.replace("\n ", "\n"), line.encode())


def _hidden(extra: Mapping[str, Any]) -> str:
    """Return ``,"_sb":<extra as JSON>``, remembered for extras seen before (hashable)."""
    try:
        key: Any = tuple(extra.items())
        written = _HIDDEN_CACHE.get(key)
    except TypeError:  # a value that cannot be hashed
        return f',"{_HIDDEN_KEY}":' + _DSJSON_ENCODER.encode(dict(extra))
    if written is None:
        written = f',"{_HIDDEN_KEY}":' + _DSJSON_ENCODER.encode(dict(extra))
        if len(_HIDDEN_CACHE) >= _CACHE_SIZE:
            _HIDDEN_CACHE.clear()
        _HIDDEN_CACHE[key] = written
    return written


def _timestamp(timestamp: datetime) -> str:
    """Return ``timestamp.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)``, faster."""
    utc = timestamp.astimezone(UTC)
    if utc.year < 1000:  # strftime does not pad the year, isoformat does
        return utc.strftime(_TIMESTAMP_FORMAT)
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _plain_ids(action_ids: Sequence[str]) -> Sequence[str] | None:
    """Return the ids as both formats write them (VW-escaped); None if JSON escapes one."""
    try:
        joined = "".join(action_ids)
    except TypeError:  # not strings
        return None
    if len(set(action_ids)) != len(action_ids):
        return None
    if not joined.isprintable() or '"' in joined or "\\" in joined:
        return None
    if _ID_SPECIALS.search(joined) is None:
        return action_ids
    return [action_id.translate(_ESCAPES) for action_id in action_ids]


def _write_action(
    features: Features, text: list[str], dsjson: list[str], rules: FeatureRules
) -> int | None:
    """:func:`_write` for an action's features, remembered by their exact JSON.

    An app's catalog offers the same actions again and again: their pieces are written
    once (up to ``_ACTION_CACHE_SIZE`` actions) and appended again from then on.
    """
    try:
        key = orjson.dumps(features)  # exact: 1, 1.0 and true write differently
    except TypeError:  # not JSON (an int beyond 64 bits, a key not a string): no cache
        return _write(_ACTION_PREFIX, features, text, dsjson, rules)
    known = rules._actions.get(key)
    if known is not None:
        text.extend(known[0])
        dsjson.extend(known[1])
        return known[2]
    text_from, dsjson_from = len(text), len(dsjson)
    written = _write(_ACTION_PREFIX, features, text, dsjson, rules)
    if written is not None:  # (what is refused is never remembered)
        if len(rules._actions) >= _ACTION_CACHE_SIZE:
            rules._actions.clear()
        rules._actions[key] = (tuple(text[text_from:]), tuple(dsjson[dsjson_from:]), written)
    return written


def _write(  # noqa: PLR0911, PLR0912  (one flat pass: anything off returns at once)
    prefix: str, features: Features, text: list[str], dsjson: list[str], rules: FeatureRules
) -> int | None:
    """Append `features` to `text` as VW tokens and to `dsjson` as DSJSON members.

    Every text token starts with one space; every DSJSON member, and every feature in
    one, ends with a comma (``,}`` is cut once the line is whole). Returns how many
    numeric tokens were written, or None when a name, a value or a rule is off.
    """
    if len(features) > rules.max_namespaces:
        return None
    if not (features.keys() <= rules._namespaces or all(map(rules._namespace, features))):
        return None
    names, per_namespace, longest = rules._names, rules.max_features, rules.max_string_length
    heads = rules._heads.get(prefix)
    if heads is None:
        heads = rules._heads[prefix] = {}
    pairs = rules._pairs
    token, member = text.append, dsjson.append
    numeric = 0
    for namespace, values in features.items():
        if type(values) is not dict or len(values) > per_namespace:
            return None
        if not (values.keys() <= names or all(map(rules._name, values))):
            return None
        head = heads.get(namespace)
        if head is None:
            head = heads[namespace] = (f" |{prefix}{namespace}", f'"{prefix}{namespace}":{{')
        token(head[0])
        member(head[1])
        for name, value in values.items():
            kind = type(value)
            if kind is str:
                written = pairs.get((name, value))
                if written is None:
                    if len(value) > longest or not value.isprintable():
                        return None
                    if len(pairs) >= _CACHE_SIZE:
                        pairs.clear()
                    pair = f"{name}={value}"
                    written = pairs[name, value] = (" " + pair, f'"{pair}":1,')
                token(written[0])
                member(written[1])
            elif kind is float:
                if not -FEATURE_VALUE_LIMIT <= value <= FEATURE_VALUE_LIMIT:  # (NaN too)
                    return None
                number = repr(value)
                member(f'"{name}":{number},')
                if value:
                    token(f" {name}:{number}")
                    numeric += 1
            elif kind is int and -FEATURE_VALUE_LIMIT <= value <= FEATURE_VALUE_LIMIT:  # (no bool)
                number = repr(value)
                member(f'"{name}":{number},')
                if value:
                    token(f" {name}:{number}")
                    numeric += 1
            else:
                return None
        member("},")
    return numeric
