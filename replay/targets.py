"""Target policies for off-policy evaluation, built row by row over a decision log.

A target is named by a spec:

===============================  ===========================================================
``fixed:ID[,ID...]``             all mass on the first listed id the row offers, else on the
                                 row's first offered action (needs action ids)
``uniform``                      every offered action equally likely
``logging``                      the logged probabilities (needs every action's)
``policy:SPEC``                  a registered policy (:func:`policies.make_policy` spec, e.g.
                                 ``policy:vw-squarecb:gamma_scale=20``), trained online along
                                 the log: counterfactual learning
``snapshot:PATH``                a saved policy (:meth:`policies.Policy.restore` of the file's
                                 bytes), evaluated as it is, without learning
``snapshot-learn:PATH``          the same, learning along the log as ``policy:`` does
===============================  ===========================================================

Counterfactual learning replays the log in order: for each row the policy's
:meth:`~policies.Policy.pmf` over the row's offered actions is the target distribution
of that row; then the policy learns from the logged outcome exactly as a live policy
fed that log would have, ``policy.learn(context, actions, chosen, reward, propensity)``
with the logged choice and its logged propensity. The estimate of such a target is the
value of the policy *while it learned* on this traffic (its online, progressive value),
not of the policy it ends as.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from policies import Action, Policy, make_policy
from policies.errors import ConfigurationError, LogFormatError, StreambanditError
from replay._data import FloatArray, LoggedDecisions, TargetProbabilities

__all__ = ["Target", "TargetSpec", "build_target", "parse_target"]

Kind = Literal["fixed", "uniform", "logging", "policy", "snapshot"]

_KINDS = "fixed:ID[,ID...], uniform, logging, policy:SPEC, snapshot:PATH, snapshot-learn:PATH"


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A parsed target spec.

    Parameters
    ----------
    spec
        The text it was parsed from (the target's label).
    kind
        ``"fixed"``, ``"uniform"``, ``"logging"``, ``"policy"`` or ``"snapshot"``.
    argument
        The ids (``fixed``, comma separated), the policy spec (``policy``) or the file
        path (``snapshot``); empty otherwise.
    learn
        Whether the policy learns along the log (``policy`` always, ``snapshot`` when
        given as ``snapshot-learn``).
    """

    spec: str
    kind: Kind
    argument: str = ""
    learn: bool = False


@dataclass(frozen=True, eq=False)
class Target:
    """A target policy's probabilities on a log, and what its learning did along it.

    Parameters
    ----------
    spec
        The spec the target was built from.
    probabilities
        The target's probability of every offered action, row by row.
    running_value
        For a policy target, ``(n,)`` the IPS estimate of its value over rows ``0..t``
        (``cumsum(w r) / (t + 1)``): its cumulative reward curve along the log. None for
        the fixed, uniform and logging targets.
    matched_reward
        For a policy target, ``(n,)`` the logged reward where the policy's most probable
        action is the logged choice, NaN elsewhere. None otherwise.
    """

    spec: TargetSpec
    probabilities: TargetProbabilities
    running_value: FloatArray | None = None
    matched_reward: FloatArray | None = None

    @property
    def label(self) -> str:
        """The spec as given."""
        return self.spec.spec


def parse_target(spec: str) -> TargetSpec:
    """Parse a target spec (see the module docstring).

    Raises
    ------
    ConfigurationError
        Naming the spec and the kinds accepted.

    Examples
    --------
    >>> parse_target("fixed:item-3,item-1")
    TargetSpec(spec='fixed:item-3,item-1', kind='fixed', argument='item-3,item-1', learn=False)
    >>> parse_target("policy:vw-squarecb:gamma_scale=20").argument
    'vw-squarecb:gamma_scale=20'
    >>> parse_target("snapshot-learn:model.bin").learn
    True
    >>> parse_target("best")
    Traceback (most recent call last):
    ...
    policies.errors.ConfigurationError: target 'best': must be one of fixed:ID[,ID...], ...
    """
    head, sep, rest = spec.strip().partition(":")
    rest = rest.strip()
    if head in ("uniform", "logging") and not sep:
        return TargetSpec(spec, head)  # type: ignore[arg-type]  # checked just above
    if head == "fixed" and rest and all(part.strip() for part in rest.split(",")):
        return TargetSpec(spec, "fixed", rest)
    if head == "policy" and rest:
        return TargetSpec(spec, "policy", rest, learn=True)
    if head in ("snapshot", "snapshot-learn") and rest:
        return TargetSpec(spec, "snapshot", rest, learn=head == "snapshot-learn")
    msg = f"target {spec!r}: must be one of {_KINDS}"
    raise ConfigurationError(msg)


def build_target(
    spec: str | TargetSpec,
    logs: LoggedDecisions,
    *,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 1_000,
) -> Target:
    """Build the target's probabilities on `logs` (training it along them if it learns).

    Parameters
    ----------
    spec
        A target spec (text or parsed).
    logs
        The logged decisions. ``policy`` and ``snapshot`` targets need their contexts
        and action features (``read_log(..., features=True)``, the default).
    progress
        For policy targets, called with the rows replayed so far every
        `progress_every` rows and at the end.
    progress_every
        Rows between progress calls, >= 1.

    Returns
    -------
    Target

    Raises
    ------
    ConfigurationError
        For a bad spec, a policy that cannot be built or a snapshot that cannot be read.
    LogFormatError
        When the log lacks what the target needs (action ids, probabilities, features).

    Examples
    --------
    >>> logs = LoggedDecisions(
    ...     n_actions=np.array([2, 3]), chosen=np.array([1, 0]),
    ...     propensity=np.array([0.5, 1 / 3]), reward=np.array([1.0, 0.0]),
    ...     action_ids=[["a", "b"], ["c", "b", "a"]],
    ...     contexts=[{}, {}], action_features=[[{}, {}], [{}, {}, {}]],
    ... )
    >>> build_target("fixed:b", logs).probabilities.probabilities
    array([[0., 1., 0.],
           [0., 1., 0.]])
    >>> build_target("uniform", logs).probabilities.probabilities.round(3)
    array([[0.5  , 0.5  , 0.   ],
           [0.333, 0.333, 0.333]])
    >>> target = build_target("policy:uniform", logs)
    >>> target.running_value
    array([1. , 0.5])
    """
    parsed = parse_target(spec) if isinstance(spec, str) else spec
    if progress_every < 1:
        msg = f"`progress_every` must be >= 1, got {progress_every!r}"
        raise ConfigurationError(msg)
    if parsed.kind == "fixed":
        ids = [part.strip() for part in parsed.argument.split(",")]
        return Target(parsed, TargetProbabilities(logs, _fixed(logs, ids, parsed.spec)))
    if parsed.kind == "uniform":
        return Target(parsed, TargetProbabilities(logs, _uniform(logs)))
    if parsed.kind == "logging":
        if logs.probabilities is None:
            msg = (
                f"target {parsed.spec!r}: the log holds only the chosen action's probability, "
                "not every offered action's; the logging target needs them all"
            )
            raise LogFormatError(msg)
        return Target(parsed, TargetProbabilities(logs, logs.probabilities))
    policy = _policy(parsed)
    return _replay(parsed, policy, logs, progress, progress_every)


# -- the targets ---------------------------------------------------------------------------


def _uniform(logs: LoggedDecisions) -> FloatArray:
    mask = logs.mask()
    uniform: FloatArray = mask / logs.n_actions[:, None].astype(np.float64)
    return uniform


def _fixed(logs: LoggedDecisions, ids: Sequence[str], spec: str) -> FloatArray:
    if logs.action_ids is None:
        msg = f"target {spec!r}: the log holds no action ids, so no fixed id can be found"
        raise LogFormatError(msg)
    rank = {action_id: r for r, action_id in enumerate(ids)}
    probabilities = np.zeros((logs.n, logs.width))
    for i, offered in enumerate(logs.action_ids):
        ranks = [rank.get(action_id, len(rank)) for action_id in offered]
        probabilities[i, int(np.argmin(ranks))] = 1.0  # ties: the first offered
    return probabilities


def _policy(parsed: TargetSpec) -> Policy:
    try:
        if parsed.kind == "policy":
            return make_policy(parsed.argument)
        data = Path(parsed.argument).read_bytes()
        return Policy.restore(data)
    except OSError as exc:
        msg = f"target {parsed.spec!r}: cannot read the snapshot: {exc.strerror or exc}"
        raise ConfigurationError(msg) from exc
    except StreambanditError as exc:
        msg = f"target {parsed.spec!r}: {exc}"
        raise ConfigurationError(msg) from exc


def _replay(
    parsed: TargetSpec,
    policy: Policy,
    logs: LoggedDecisions,
    progress: Callable[[int], None] | None,
    every: int,
) -> Target:
    """Run `policy` along the log: its pmf is each row's target, then it learns the row."""
    if logs.contexts is None or logs.action_features is None:
        msg = (
            f"target {parsed.spec!r}: a policy target needs the log's contexts and action "
            "features (read the log with features=True)"
        )
        raise LogFormatError(msg)
    probabilities = np.zeros((logs.n, logs.width))
    matched = np.full(logs.n, np.nan)
    for i in range(logs.n):
        context = logs.contexts[i]
        actions = _actions(logs, i)
        pmf = np.fromiter(policy.pmf(context, actions), dtype=np.float64, count=len(actions))
        probabilities[i, : len(actions)] = pmf
        chosen = int(logs.chosen[i])
        if int(np.argmax(pmf)) == chosen:
            matched[i] = logs.reward[i]
        if parsed.learn:
            policy.learn(context, actions, chosen, float(logs.reward[i]), float(logs.propensity[i]))
        if progress is not None and (i + 1) % every == 0:
            progress(i + 1)
    if progress is not None:
        progress(logs.n)
    target = TargetProbabilities(logs, probabilities)
    return Target(parsed, target, _running_value(target), matched)


def _actions(logs: LoggedDecisions, i: int) -> list[Action]:
    n = int(logs.n_actions[i])
    ids = logs.action_ids[i] if logs.action_ids is not None else [str(j) for j in range(n)]
    features: Sequence[Mapping[str, Mapping[str, Any]]] = (
        logs.action_features[i] if logs.action_features is not None else [{}] * n
    )
    return [Action(str(action_id), features[j]) for j, action_id in enumerate(ids)]


def _running_value(target: TargetProbabilities) -> FloatArray:
    """``(n,)`` the IPS estimate over the first ``t + 1`` rows, for every t."""
    terms = target.weights() * target.logs.reward
    steps: npt.NDArray[np.float64] = np.arange(1, terms.size + 1, dtype=np.float64)
    running: FloatArray = np.cumsum(terms) / steps
    return running
