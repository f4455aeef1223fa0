"""Explanations within bounds: limited in size, off the event loop, and on time.

An explanation (:func:`bandit.service.explain.explain`) asks the policy again once per feature,
each time over every offered action. :class:`Explainer` keeps that from holding up the
service: :func:`explain_limit_errors` says which of ``settings.explain``'s limits a rank
breaks (the API refuses it before deciding), and :meth:`Explainer.run` computes an
explanation in a helper process, at most ``concurrency`` at once, giving up at its
deadline (the API then answers without it). Why and how: docs/privacy.md,
"Explanations".
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import structlog

from bandit.errors import PolicyError
from bandit.service.engine import LoadedPolicy, prepared_policy
from bandit.service.explain import Explanation, explain
from bandit.service.metrics import ApiMetrics
from bandit.settings import ExplainSettings
from bandit.wire.schemas import PolicySettings
from policies import Policy, available

__all__ = ["Explainer", "explain_limit_errors"]

_log = structlog.get_logger("bandit.service.explainer")


def _count(features: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(len(values) for values in features.values())


def explain_limit_errors(
    context: Mapping[str, Mapping[str, Any]],
    actions: Sequence[Mapping[str, Mapping[str, Any]]],
    settings: ExplainSettings,
) -> list[dict[str, Any]]:
    """Return the explanation limits a decision breaks, as 422 details (none: it may be).

    Parameters
    ----------
    context
        The decision's context, by namespace.
    actions
        Each offered action's features, by namespace.
    settings
        The limits.

    Returns
    -------
    list of dict
        ``{"loc", "msg", "type"}`` per broken limit, naming the field, the rule, the
        setting and what was found.

    Examples
    --------
    >>> limits = ExplainSettings(max_features=3, max_actions=2)
    >>> explain_limit_errors({"u": {"a": 1, "b": 2}}, [{}, {"i": {"t": "x"}}], limits)
    []
    >>> [e["type"] for e in explain_limit_errors({"u": {"a": 1, "b": 2}}, [{}] * 3, limits)]
    ['too_many_actions_to_explain']
    """
    errors: list[dict[str, Any]] = []
    if len(actions) > settings.max_actions:
        errors.append(
            {
                "loc": ["body", "actions"],
                "msg": (
                    f"an explained rank offers at most {settings.max_actions} actions "
                    f"(STREAMBANDIT_EXPLAIN__MAX_ACTIONS), got {len(actions)}; ask without "
                    "explain, or offer fewer"
                ),
                "type": "too_many_actions_to_explain",
            }
        )
    found = _count(context) + sum(_count(features) for features in actions)
    if found > settings.max_features:
        errors.append(
            {
                "loc": ["body", "explain"],
                "msg": (
                    f"an explained rank carries at most {settings.max_features} features in "
                    "its context and actions together (STREAMBANDIT_EXPLAIN__MAX_FEATURES), "
                    f"got {found}; ask without explain, or send fewer features"
                ),
                "type": "too_many_features_to_explain",
            }
        )
    return errors


class Explainer:
    """Compute explanations in helper processes, at most ``concurrency`` at once, on time.

    Parameters
    ----------
    settings
        ``concurrency`` helper processes; ``deadline_seconds`` (:meth:`deadline`).
    metrics
        Where explanations not given are counted.

    Notes
    -----
    Processes, not threads: an explanation is CPU work in Python and in VW, which hold
    Python's global interpreter lock, so in a thread it would still take turns with the
    event loop (measured: good ranks' median latency 3x while two explanations ran).
    A helper rebuilds the served policy from the saved model and settings the engine
    keeps (no work in the API; any other policy is sent as its snapshot), keeps the
    last few it rebuilt, and, once started, runs at a lower CPU priority than the API
    (``nice`` 10), so that on a machine with few cores the API's own work goes first.
    The helpers start with :meth:`start` (the API's own process calls it as it starts;
    they import in the background) or else with the first explanation; an explanation
    waits for them outside its deadline. An explanation checks its deadline between
    batches of predictions, so a helper is free soon after it, and later explanations
    wait for a free one no longer than their own deadline.
    """

    def __init__(self, settings: ExplainSettings, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._pool: ProcessPoolExecutor | None = None
        self._started: asyncio.Future[None] | None = None
        self._slots: asyncio.Semaphore | None = None  # made on the loop that uses them
        self._snapshots: weakref.WeakKeyDictionary[Policy, tuple[str, str, bytes]] = (
            weakref.WeakKeyDictionary()
        )
        self.running = 0
        """Explanations computing now (in the helper processes)."""

    def deadline(self) -> float:
        """Return the :func:`time.monotonic` time an explanation asked for now is due by."""
        return time.monotonic() + self.settings.deadline_seconds

    async def run(
        self,
        policy: Policy,
        deadline: float,
        *args: Any,
        served: LoadedPolicy | None = None,
        **kwargs: Any,
    ) -> Explanation | None:
        """Return ``explain(policy, *args, **kwargs)``, computed in a helper process.

        Parameters
        ----------
        policy
            The policy that decided.
        served
            The served policy it may be: a helper then rebuilds it from the model and
            settings `served` keeps (:func:`bandit.service.engine.prepared_policy`). Any other
            (the baseline, a model swapped out since) is sent as its snapshot
            (:meth:`policies.Policy.snapshot`, taken in a thread once per policy).
        deadline
            A :func:`time.monotonic` time: the explanation is given up past it
            (:func:`bandit.service.explain.explain` is handed it too). The helpers' start, at
            the first explanation, is not counted.
        *args, **kwargs
            The rest of :func:`bandit.service.explain.explain`'s arguments.

        Returns
        -------
        Explanation or None
            None when no helper was free or the explanation not done by `deadline`
            (reason ``deadline``), or it failed (``failed``: the policy could not
            predict, a helper process died and was replaced, or anything else went
            wrong: the decision stands either way); counted in
            ``streambandit_explanations_missed_total`` and logged.
        """
        try:
            return await self._run(policy, served, deadline, args, kwargs)
        except TimeoutError:
            self.metrics.explanations_missed.labels("deadline").inc()
            _log.warning("explanation.timed_out", deadline_seconds=self.settings.deadline_seconds)
        except PolicyError:
            self.metrics.explanations_missed.labels("failed").inc()
            _log.exception("explanation.failed")
        except BrokenProcessPool:  # a helper died (killed, out of memory): start anew
            self.metrics.explanations_missed.labels("failed").inc()
            _log.exception("explanation.failed")
            self._restart()
        except Exception:  # noqa: BLE001  (the decision stands: any failure here is logged)
            self.metrics.explanations_missed.labels("failed").inc()
            _log.exception("explanation.failed")
            if _failed(self._started):  # the helpers did not start
                self._started = None  # the next explanation tries again
        return None

    async def _run(
        self,
        policy: Policy,
        served: LoadedPolicy | None,
        deadline: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Explanation:
        deadline += await self._start()
        slots = self._slots
        assert slots is not None
        await asyncio.wait_for(slots.acquire(), _left(deadline))
        try:
            token, recipe = await self._recipe(policy, served)
            pool = self._pool
            assert pool is not None
            future = asyncio.wrap_future(
                pool.submit(_explain_in_helper, token, recipe, args, kwargs, deadline)
            )
        except BaseException:
            slots.release()
            raise
        self.running += 1

        def done(finished: asyncio.Future[Explanation]) -> None:
            # the slot is free when the helper is, not before
            self.running -= 1
            slots.release()
            if not finished.cancelled():
                finished.exception()  # retrieved: one given up on raises no warning later

        future.add_done_callback(done)
        return await asyncio.wait_for(asyncio.shield(future), _left(deadline))

    def start(self) -> None:
        """Start the helpers now, in the background (else the first explanation does)."""
        if self._started is None:
            self._slots = asyncio.Semaphore(self.settings.concurrency)
            self._started = asyncio.ensure_future(self._spawn())

    async def _start(self) -> float:
        """Start the helpers once; return how long this call waited for them.

        The wait is not counted against the explanation's deadline, but it is bounded
        (``_START_SECONDS``): a helper that never comes up times the explanation out.
        """
        started = time.monotonic()
        self.start()
        assert self._started is not None
        await asyncio.wait_for(asyncio.shield(self._started), _START_SECONDS)
        return time.monotonic() - started

    async def _spawn(self) -> None:
        self._pool = _helpers(self.settings.concurrency)
        loop = asyncio.get_running_loop()
        ready = [loop.run_in_executor(self._pool, _ready) for _ in range(self.settings.concurrency)]
        await asyncio.gather(*ready)

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = _helpers(self.settings.concurrency)
        for _ in range(self.settings.concurrency):  # first in their queue: warmed up again
            self._pool.submit(_ready)

    async def _recipe(self, policy: Policy, served: LoadedPolicy | None) -> tuple[str, _Recipe]:
        """Return how a helper rebuilds `policy`, and a token naming that policy."""
        if served is not None and served.policy is policy:  # no work: the bytes are kept
            token = f"served/{served.name}/{served.version}/{served.settings_version}"
            return token, _Recipe(served.name, served.snapshot, served.settings)
        # Another policy (the baseline, a model swapped out since it decided): its own
        # snapshot, taken once per policy object and parameters (configure changes both).
        params = json.dumps(policy.params(), sort_keys=True, default=str)
        found = self._snapshots.get(policy)
        if found is None or found[0] != params:
            snapshot = await asyncio.to_thread(policy.snapshot)
            found = self._snapshots[policy] = (params, uuid.uuid4().hex, snapshot)
        return found[1], _Recipe(policy.name, found[2], None)

    def close(self) -> None:
        """Stop taking explanations; the helpers exit once their explanation is done."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _helpers(count: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        count,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_starting,
        initargs=(os.getpid(),),
    )


def _failed(future: asyncio.Future[None] | None) -> bool:
    if future is None or not future.done():
        return False
    return future.cancelled() or future.exception() is not None


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


# -- in the helper processes ------------------------------------------------------------

_RESTORED: dict[str, Policy] = {}
_START_SECONDS = 30.0  # the longest an explanation waits for the helpers to start
_NICE = 10  # how much lower a helper's CPU priority is than the API's
_KEPT = 4  # restored policies a helper keeps (the served ones, and the one before a swap)


_LOWERED: list[bool] = []


def _starting(parent: int) -> None:
    """Import at a priority a little below the API's (``nice`` 5): not starved, not first.

    And never outlive the API (process `parent`): a helper whose parent is gone (killed,
    or exited without shutting the pool down, even before this helper had started)
    exits within a second, instead of idling on as an orphan.
    """
    os.nice(_NICE // 2)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="explainer-parent-watch", daemon=True).start()


def _ready() -> None:
    """Warm a helper up: every policy module imported, then its priority lowered further.

    Lowered in two steps so that a helper starting on a busy machine is neither starved
    nor in the API's way; from then on the API's own process goes first on a shared core.
    """
    available()
    if not _LOWERED:
        os.nice(_NICE - _NICE // 2)
        _LOWERED.append(True)


@dataclass(frozen=True, slots=True)
class _Recipe:
    """What a helper rebuilds a policy from: a snapshot, and the served settings if any."""

    name: str
    snapshot: bytes | None
    settings: PolicySettings | None

    def policy(self) -> Policy:
        if self.settings is not None:
            return prepared_policy(self.name, self.snapshot, self.settings)
        assert self.snapshot is not None
        return Policy.restore(self.snapshot)


def _explain_in_helper(
    token: str,
    recipe: _Recipe,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deadline: float,
) -> Explanation:
    policy = _RESTORED.get(token)
    if policy is None:
        policy = recipe.policy()
        while len(_RESTORED) >= _KEPT:
            _RESTORED.pop(next(iter(_RESTORED)))
        _RESTORED[token] = policy
    return explain(policy, *args, **kwargs, deadline=deadline)
