"""Vowpal Wabbit contextual bandit with action-dependent features (``--cb_explore_adf``).

:class:`VWPolicy` hands VW its examples as text (:mod:`policies.vwtext`, the one home of
VW's text format and of its conventions: VW minimises a *cost* and numbers actions from
1; the rest of streambandit maximises a *reward* and numbers actions from 0). The
decision log's DSJSON has its own module, :mod:`policies.dsjson`; its writer and reader
are also importable from here, as before.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, Literal

from vowpalwabbit import pyvw

from policies._base import Policy
from policies._types import Action, Context, FeatureRef
from policies._vwmodel import (
    learner_bytes,
    non_finite_weight,
    read_model_id,
    read_options,
    rewrite_model_id,
    rewrite_options,
)
from policies.dsjson import (
    DSJSONRecord,
    FeatureRules,
    LoggedExample,
    dsjson_line,
    dsjson_record,
    logged_example,
    parse_dsjson_record,
)
from policies.errors import (
    ConfigurationError,
    InvalidFeaturesError,
    InvalidModelError,
    SnapshotError,
)
from policies.registry import register
from policies.vwargs import CB_TYPES, parse_arguments
from policies.vwargs import USES as _USES
from policies.vwtext import (
    ACTION_PREFIX,
    CONTEXT_PREFIX,
    ID_TOKEN,
    FeaturePieces,
    example_text,
    filled,
    namespace_text,
    reward_to_cost,
    shared_line_of,
    to_vw_lines,
    unescaped,
    write_tokens,
)

__all__ = [
    "DSJSONRecord",
    "Exploration",
    "FeatureRules",
    "LoggedExample",
    "VWPolicy",
    "dsjson_line",
    "dsjson_record",
    "logged_example",
    "model_file_id",
    "model_file_policy",
    "parse_dsjson_record",
    "reward_to_cost",
    "to_vw_lines",
]

Exploration = Literal["epsilon", "squarecb", "rnd", "bag", "cover", "softmax"]

_EXPLORATIONS: tuple[str, ...] = ("epsilon", "squarecb", "rnd", "bag", "cover", "softmax")

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

_TEXT_CACHE_SIZE = 20_000  # actions whose prediction line a policy keeps

# The options a VW model file from elsewhere may keep in its header (VW applies them on
# loading): a contextual bandit's learners and their hyperparameters. Anything else (a
# file to write, a port to open, another input format) is refused by name.
_MODEL_FILE_OPTIONS = frozenset(
    {
        "cb_adf", "cb_explore_adf", "cb_type", "csoaa_ldf", "csoaa_rank", "epsilon",
        "squarecb", "gamma_scale", "gamma_exponent", "cover", "psi", "nounif", "bag",
        "first_only", "rnd", "rnd_alpha", "rnd_invlambda", "softmax", "lambda",
        "interactions", "quadratic", "cubic", "learning_rate", "power_t", "l1", "l2",
        "bit_precision", "hash_seed", "noconstant", "ignore", "ignore_linear", "keep",
        "random_seed", "loss_function", "cb_min_cost", "cb_max_cost", "sparse_weights",
    }
)  # fmt: skip
# ... and those of a conditional contextual bandit's file, taken by a multi-slot policy only
# (VW builds the learners the file's header names, whatever the policy asks for).
_CCB_MODEL_FILE_OPTIONS = frozenset({"ccb_explore_adf", "cb_sample", "all_slots_loss"})
_SHORT_OPTIONS = {"q": "quadratic", "l": "learning_rate", "b": "bit_precision"}


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
    learning_rate, power_t, l1, l2, bit_precision
        VW's optimiser settings.
    seed
        VW's ``--random_seed``.
    floor
        Smallest probability any offered action gets.
    cb_type
        VW's ``--cb_type``: how a logged outcome becomes a cost estimate per action
        (``mtr``, VW's default; ``ips``, ``dr``, ``dm``, ``sm``).
    ignore
        Namespace prefixes whose features VW ignores (``--ignore``).
    noconstant
        No constant feature (``--noconstant``).

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
    learns_logged: ClassVar[bool] = True
    """Whether :meth:`learn_logged` learns the ``cb_explore_adf`` text of a logged example."""
    multi_slot: ClassVar[bool] = False
    """Whether the model is VW's conditional contextual bandit (``--ccb_explore_adf``)."""
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
        cb_type: str = "mtr",
        l1: float = 0.0,
        ignore: Sequence[str] = (),
        noconstant: bool = False,
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
        if cb_type not in CB_TYPES:
            msg = f"`cb_type` must be one of {list(CB_TYPES)}, got {cb_type!r}"
            raise ConfigurationError(msg)
        self.cb_type = cb_type
        self.l1 = _in_range("l1", l1, 0.0, math.inf)
        for term in ignore:
            if not term or any(ch.isspace() for ch in term):
                msg = f"`ignore` entries must be non-empty namespace prefixes, got {term!r}"
                raise ConfigurationError(msg)
        self.ignore = list(ignore)
        self.noconstant = bool(noconstant)
        try:
            self._vw = pyvw.Workspace(self._arguments(), enable_logging=False)
        except RuntimeError as exc:  # VW's own rule between options, e.g. squarecb's cb_type
            msg = f"VW refuses these options ({self.vw_arguments()}): {exc}"
            raise ConfigurationError(msg) from None
        self._saved: tuple[pyvw.Workspace, float, bytes] | None = None  # (_model_bytes)
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
        return f"{self.vw_arguments()} --quiet --no_stdin"

    def vw_arguments(self) -> str:
        """Return the VW command line this policy learns with, as ``vw`` takes it.

        :func:`policies.vwargs.parse_arguments` reads it back into the same parameters.

        Examples
        --------
        >>> from policies.vwargs import parse_arguments
        >>> policy = VWPolicy(exploration="epsilon", epsilon=0.2, cb_type="ips", seed=3)
        >>> policy.vw_arguments()[:47]
        '--cb_explore_adf --epsilon 0.2 --cb_type ips --'
        >>> again = VWPolicy(**parse_arguments(policy.vw_arguments()))
        >>> again.params() == policy.params()
        True
        """
        parts = ["--cb_explore_adf"]
        if self.exploration in ("squarecb", "softmax"):
            parts.append(f"--{self.exploration}")
        parts += self._exploration_arguments(_USES[self.exploration])
        if self.cb_type != "mtr":  # (VW's default: models saved without it stay the same)
            parts.append(f"--cb_type {self.cb_type}")
        parts += [f"--interactions {term}" for term in self.interactions]
        parts += [f"--ignore {term}" for term in self.ignore]
        if self.noconstant:
            parts.append("--noconstant")
        parts += [
            f"--learning_rate {self.learning_rate!r}",
            f"--power_t {self.power_t!r}",
            *([f"--l1 {self.l1!r}"] if self.l1 else []),
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
        """``example_text(to_vw_lines(context, actions))``, written in one pass, checked once.

        Every token of the decision goes into one text
        (:func:`~policies.vwtext.write_tokens`, then :func:`~policies.vwtext.filled` for
        its floats), checked for separators once (:func:`~policies.vwtext.unescaped`); a
        decision with a name or value to escape, or a number that is not finite, is
        written by :func:`~policies.vwtext.to_vw_lines` instead, which escapes it or says
        what is wrong.

        An app offers the same actions again and again; the rank path hands the same
        :class:`~policies.Action` object for an action seen unchanged
        (:meth:`bandit.wire.schemas.RankRequest.policy_inputs`). The second time an action
        object comes, its line is written on its own
        (:func:`~policies.vwtext.namespace_text`) and kept (for up to ``_TEXT_CACHE_SIZE``
        actions); from then on the text holds a NUL in its place until the checked text
        is whole, and the kept line replaces the NUL.
        """
        tokens = ["shared"]
        append = tokens.append
        floats: list[float] = []
        numeric = write_tokens(CONTEXT_PREFIX, context, append, floats)
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
                    try:
                        line = namespace_text(ACTION_PREFIX, action.features, action.id)[1:]
                    except InvalidFeaturesError:  # refused in the order the text is written
                        return example_text(to_vw_lines(context, actions))
                    kept[action.id] = (action, line)
                append("\n\0")
                lines.append(line)
                continue
            if len(kept) >= _TEXT_CACHE_SIZE:
                kept.clear()
            kept[action.id] = (action, None)
            append("\n")
            begin = len(tokens)
            numeric += write_tokens(ACTION_PREFIX, action.features, append, floats)
            append(ID_TOKEN + action.id)
            tokens[begin] = tokens[begin][1:]  # a line starts without a space
            spaces += len(tokens) - begin  # one a token, two in the id's, none in the first
            bars += len(action.features) + 1
        text = filled("".join(tokens), floats)
        if (
            text is None
            or (numeric and (":nan" in text or ":inf" in text or ":-inf" in text))
            or not unescaped(text, spaces, bars, numeric, len(actions))
            or (lines and text.count("\0") != len(lines))  # a NUL of a name or value
        ):
            return example_text(to_vw_lines(context, actions))
        if lines:
            parts = text.split("\0")
            text = "".join(chain.from_iterable(zip(parts[:-1], lines, strict=True))) + parts[-1]
        if text[-1].isspace():  # the last id ends in a blank escape() keeps, as "\x0b"
            return example_text([text])  # which pyvw strips
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
        shared = FeaturePieces(CONTEXT_PREFIX, context)
        cut: dict[int, FeaturePieces] = {}
        texts = []
        for feature in features:
            changed = list(lines)
            if feature.action is None:
                changed[0] = shared_line_of(shared.without(feature))
            else:
                action = actions[feature.action]
                pieces = cut.get(feature.action)
                if pieces is None:
                    pieces = cut[feature.action] = FeaturePieces(
                        ACTION_PREFIX, action.features, action.id
                    )
                changed[feature.action + 1] = pieces.without(feature)[1:]
            texts.append(example_text(changed))
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
        examples = vw._parse(example_text(lines))
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
        # The saved model holds every non-zero weight of every learner in the stack
        # (each bag, cover policy and RND network) with its learning-rate sums: one
        # vectorised pass over them (policies._vwmodel.non_finite_weight). The model is
        # saved anyway for the snapshot that follows a check (the learner's batch),
        # which takes these very bytes (_model_bytes).
        model = self._model_bytes()
        try:
            index = non_finite_weight(model, _learners_size(self._arguments()))
        except SnapshotError:  # a layout this code does not know: VW's JSON writer tells
            # It lists the non-zero weights and stops at the first NaN or infinity,
            # which JSON cannot hold: a healthy model's text ends with "]}".
            text: str = self._vw.json_weights()
            if text.endswith("]}"):
                return None
            found = text.rpartition('"index":')[2].partition(",")[0] or "?"
            return f"weight {found} is NaN or infinite"
        return None if index is None else f"weight {index} is NaN or infinite"

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
            "cb_type": self.cb_type,
            "l1": self.l1,
            "ignore": list(self.ignore),
            "noconstant": self.noconstant,
        }

    def _state(self) -> bytes:
        # VW does not save every piece of learner state (RND's random state, for one),
        # so a reloaded model can drift from the one that kept running. To make a
        # snapshot continue *exactly*, the live policy also continues from the reloaded
        # model: both sides then carry the same state from here on.
        model = self._model_bytes()
        self._vw = self._load_model(model, self._exploration_arguments(self._reloadable_used()))
        self._saved = None  # (not to keep the workspace it was saved from)
        return model

    def load_model_file(self, model: bytes) -> None:
        """Serve and learn on from `model`, a VW model file (``vw -f`` wrote it), if it fits.

        The options the file keeps in its header (which VW applies on loading) must be
        a contextual bandit's learners and hyperparameters only; an option that would
        have VW write a file, open a port or read another input is refused by name. The
        file is loaded with this policy's own exploration options, as a snapshot is, and
        its learned numbers must be finite (:meth:`check_model`); the policy is left
        unchanged when any check fails. The examples it learned are not counted in
        :attr:`n_learned` (this policy learned none of them).

        Raises
        ------
        SnapshotError
            If the file is not a VW model, keeps an option not of a contextual bandit,
            or VW cannot load it with this policy's options.
        InvalidModelError
            If the file's model holds a NaN or an infinity.

        Examples
        --------
        >>> from policies import make_policy
        >>> trained, fresh = make_policy("vw-epsilon"), make_policy("vw-epsilon")
        >>> trained.learn({"u": {"x": 1.0}}, [Action("a"), Action("b")], 0, 1.0, 0.5)
        >>> fresh.load_model_file(trained.model_file())
        >>> fresh.pmf({"u": {"x": 1.0}}, [Action("a"), Action("b")]).probabilities == (
        ...     trained.pmf({"u": {"x": 1.0}}, [Action("a"), Action("b")]).probabilities
        ... )
        True
        """
        _check_model_file_options(read_options(model), multi_slot=self.multi_slot)
        previous = self._vw
        self._vw = self._load_model(model, self._exploration_arguments(self._reloadable_used()))
        try:
            self.check_model()
        except InvalidModelError:
            self._vw.finish()
            self._vw = previous
            raise
        previous.finish()
        self._saved = None

    def model_file(self, *, model_id: str | None = None) -> bytes:
        """Return the model as the VW model file ``vw -i`` loads (:meth:`load_model_file`).

        Parameters
        ----------
        model_id
            Written as the file's model id (``vw --id``): printable ASCII, at most 511
            characters. VW keeps a model's id through every load and save, so a model
            that learns on from this file keeps it (:func:`model_file_id` reads it).
            None: the id the model has.

        Raises
        ------
        ConfigurationError
            If `model_id` is not printable ASCII or too long.

        Examples
        --------
        >>> from policies import make_policy
        >>> policy = make_policy("vw-epsilon")
        >>> model_file_id(policy.model_file(model_id="warm-start-1"))
        'warm-start-1'
        >>> other = make_policy("vw-epsilon")
        >>> other.load_model_file(policy.model_file(model_id="warm-start-1"))
        >>> model_file_id(other.model_file())
        'warm-start-1'
        """
        model = self._model_bytes()
        return model if model_id is None else rewrite_model_id(model, model_id)

    def _load_state(self, payload: bytes) -> None:
        self._vw.finish()
        self._vw = self._load_model(payload, self._exploration_arguments(self._reloadable_used()))
        self._saved = None

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
        self._saved = None

    # -- model files ----------------------------------------------------------------

    def _reloadable_used(self) -> list[str]:
        return [name for name in _USES[self.exploration] if name in _RELOADABLE]

    def _save_model(self) -> bytes:
        return _save(self._vw)

    def _model_bytes(self) -> bytes:
        """Return the model as VW saves it now; saved once while VW sees no example.

        Every example VW learns or predicts adds to its weighted example count, and
        every change of settings or snapshot loaded makes a new workspace: either
        makes the remembered bytes stale.
        """
        vw, seen = self._vw, self._vw.get_weighted_examples()
        saved = self._saved
        if saved is not None and saved[0] is vw and saved[1] == seen:
            return saved[2]
        model = self._save_model()
        self._saved = (vw, seen, model)
        return model

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


def model_file_id(model: bytes) -> str:
    """Return the model id a VW model file keeps (``vw --id``); ``""`` when it has none.

    Raises
    ------
    SnapshotError
        If `model` is not a VW model file (version 8.0.3 or later), or is corrupt.

    Examples
    --------
    >>> from policies import make_policy
    >>> model_file_id(make_policy("vw-epsilon").model_file())
    ''
    """
    return read_model_id(model)


# The learners VW adds under --cb_explore_adf and writes into a model's header with it;
# the option's value, if it takes one.
_IMPLIED_OPTIONS = {"cb_adf": False, "csoaa_ldf": True, "csoaa_rank": False}


def model_file_policy(model: bytes, *, floor: float = 1e-3) -> VWPolicy:
    """Return a policy that serves `model`, a single-slot VW model file, with its own options.

    The policy's parameters are those the file keeps in its header
    (:func:`policies.vwargs.parse_arguments` of them, the learners VW adds under
    ``--cb_explore_adf`` left out); the file is then loaded as
    :meth:`VWPolicy.load_model_file` loads one, with its checks. Its :meth:`~Policy.pmf`
    is VW's prediction from the file, with the exploration `floor` applied.

    Raises
    ------
    SnapshotError
        If `model` is not a VW model, keeps an option not of a contextual bandit, is a
        multi-slot model, or VW cannot load it.
    ConfigurationError
        If its options do not map onto a :class:`VWPolicy`.
    InvalidModelError
        If its model holds a NaN or an infinity.

    Examples
    --------
    >>> from policies import make_policy
    >>> trained = make_policy("vw-epsilon:epsilon=0.2")
    >>> trained.learn({"u": {"x": 1.0}}, [Action("a"), Action("b")], 0, 1.0, 0.5)
    >>> loaded = model_file_policy(trained.model_file())
    >>> round(loaded.epsilon, 6), loaded.exploration
    (0.2, 'epsilon')
    >>> loaded.pmf({"u": {"x": 1.0}}, [Action("a"), Action("b")]).probabilities == (
    ...     trained.pmf({"u": {"x": 1.0}}, [Action("a"), Action("b")]).probabilities
    ... )
    True
    """
    options = read_options(model)
    _check_model_file_options(options, multi_slot=False)
    tokens = options.split()
    stated: list[str] = []
    skip = False
    for token in tokens:
        name = token.lstrip("-")
        if skip:
            skip = False
        elif token.startswith("--") and name in _IMPLIED_OPTIONS:
            skip = _IMPLIED_OPTIONS[name]
        else:
            stated.append(token)
    policy = VWPolicy(**parse_arguments(" ".join(stated)), floor=floor)
    policy.load_model_file(model)
    return policy


def _check_model_file_options(options: str, *, multi_slot: bool) -> None:
    """Refuse (SnapshotError, naming it) an option a VW model file may not keep.

    A multi-slot policy takes only a ``--ccb_explore_adf`` file, any other VW policy
    never one: VW builds the learners the file names, whatever the policy asks for.
    """
    named: dict[str, str] = {}  # option name: as the file writes it
    for token in options.split():
        if not token.startswith("-") or _is_number(token):
            continue  # an option's value
        name = token.lstrip("-")
        named.setdefault(
            _SHORT_OPTIONS.get(name, name) if not token.startswith("--") else name, token
        )
    if ("ccb_explore_adf" in named) != multi_slot:
        msg = (
            "the model file is a multi-slot model (--ccb_explore_adf), and this policy is "
            "single-slot (--cb_explore_adf): import it into a vw-ccb policy"
            if not multi_slot
            else "the model file is a single-slot model (no --ccb_explore_adf), and this "
            "policy is multi-slot (vw-ccb, --ccb_explore_adf): import it into a single-slot "
            "VW policy"
        )
        raise SnapshotError(msg)
    allowed = _MODEL_FILE_OPTIONS | _CCB_MODEL_FILE_OPTIONS if multi_slot else _MODEL_FILE_OPTIONS
    for name, token in named.items():
        if name not in allowed:
            msg = (
                f"the model file keeps the option {token!r}, which is not a contextual "
                f"bandit's learner or hyperparameter; allowed: {sorted(allowed)}"
            )
            raise SnapshotError(msg)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


_LEARNERS_SIZES: dict[str, int] = {}


def _learners_size(arguments: str) -> int:
    """How many bytes VW's learners write before the weights table, with `arguments`.

    As many as in a model that learned nothing (:func:`policies._vwmodel.non_finite_weight`);
    found once per command line.
    """
    size = _LEARNERS_SIZES.get(arguments)
    if size is None:
        vw = pyvw.Workspace(arguments, enable_logging=False)
        try:
            size = _LEARNERS_SIZES[arguments] = learner_bytes(_save(vw))
        finally:
            vw.finish()
    return size


def _save(vw: pyvw.Workspace) -> bytes:
    """Return the bytes of the model `vw` saves."""
    with tempfile.TemporaryDirectory(prefix="streambandit-vw-") as folder:
        path = Path(folder) / "model.vw"
        vw.save(str(path))
        return path.read_bytes()


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


_MAX_COUNT = 64
"""The most bagged, cover or RND policies: each multiplies every update's and prediction's cost."""


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_COUNT:
        msg = f"`{name}` must be an integer in [1, {_MAX_COUNT}], got {value!r}"
        raise ConfigurationError(msg)
    return value


register(
    VWPolicy,
    *((f"vw-{kind}", {"exploration": kind}) for kind in _EXPLORATIONS),
)
