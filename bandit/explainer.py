"""Explanations within bounds: limited in size, off the event loop, and on time.

An explanation (:func:`bandit.explain.explain`) asks the policy again once per feature,
each time over every offered action. :class:`Explainer` keeps that from holding up the
service: :func:`explain_limit_errors` says which of ``settings.explain``'s limits a rank
breaks (the API refuses it before deciding), and :meth:`Explainer.run` computes an
explanation in a thread of its own, at most ``concurrency`` at once, giving up at its
deadline (the API then answers without it). Why and how: docs/privacy.md,
"Explanations".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bandit.explain import Explanation
from bandit.settings import ExplainSettings

__all__ = ["Explainer", "explain_limit_errors"]


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
    >>> [e["msg"] for e in explain_limit_errors({"u": {"a": 1, "b": 2}}, [{}] * 3, limits)]
    ['an explained rank offers at most 2 actions (STREAMBANDIT_EXPLAIN__MAX_ACTIONS), got 3']
    """
    errors: list[dict[str, Any]] = []
    if len(actions) > settings.max_actions:
        errors.append(
            {
                "loc": ["body", "actions"],
                "msg": (
                    f"an explained rank offers at most {settings.max_actions} actions "
                    f"(STREAMBANDIT_EXPLAIN__MAX_ACTIONS), got {len(actions)}"
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
    """Compute explanations in a bounded thread pool, each by its deadline.

    Parameters
    ----------
    settings
        ``concurrency`` threads; ``deadline_seconds`` is the caller's to apply
        (:meth:`deadline`).

    Notes
    -----
    A thread, not a process: the policy explained is the very object that decided (a
    swapped-out model stays alive while its explanation runs), and the policies only
    read their models to predict. The explanation checks its deadline between batches
    of predictions, so a thread is free again soon after its deadline; until then it
    holds its slot, and later explanations wait for a slot no longer than their own
    deadline.
    """

    def __init__(self, settings: ExplainSettings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="explain")
        self._slots: asyncio.Semaphore | None = None  # made on the loop that uses it
        self.running = 0
        """Explanations computing now (in the threads)."""

    def deadline(self) -> float:
        """Return the :func:`time.monotonic` time an explanation asked for now is due by."""
        return time.monotonic() + self.settings.deadline_seconds

    async def run(self, job: Callable[[float], Explanation], deadline: float) -> Explanation:
        """Run ``job(deadline)`` in a thread once one is free; return its explanation.

        Parameters
        ----------
        job
            Computes the explanation; it is handed `deadline`, to give up at it
            (:func:`bandit.explain.explain` raises :class:`TimeoutError`).
        deadline
            A :func:`time.monotonic` time.

        Raises
        ------
        TimeoutError
            If no thread was free, or the explanation not done, by `deadline`.
        policies.PolicyError
            What `job` raised.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.concurrency)
        slots = self._slots
        await asyncio.wait_for(slots.acquire(), max(deadline - time.monotonic(), 0.0))
        self.running += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self._pool, job, deadline)
        except BaseException:
            self.running -= 1
            slots.release()
            raise

        def done(finished: asyncio.Future[Explanation]) -> None:
            # the slot is free when the thread is, not before
            self.running -= 1
            slots.release()
            if not finished.cancelled():
                finished.exception()  # retrieved: one given up on raises no warning later

        future.add_done_callback(done)
        return await asyncio.wait_for(asyncio.shield(future), max(deadline - time.monotonic(), 0.0))

    def close(self) -> None:
        """Stop taking explanations; those running finish by their deadlines."""
        self._pool.shutdown(wait=False, cancel_futures=True)
