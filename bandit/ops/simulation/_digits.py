"""A supervised data set as a bandit problem: scikit-learn's bundled handwritten digits.

Following Bietti, Agarwal and Langford, *A Contextual Bandit Bake-off* (JMLR 2021): each
class is an action, the example's features are the context, and the reward is 1 when
the chosen action is the true label and 0 otherwise, so the policy only learns whether
its one guess was right.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from bandit.errors import DatasetError
from bandit.ops.simulation._round import Round
from policies import Action, FeatureValue

__all__ = ["DigitsEnvironment"]


class DigitsEnvironment:
    """The 1,797 8x8 handwritten digits of scikit-learn, as a 10-action bandit problem.

    The data ship inside the scikit-learn wheel (``sklearn.datasets.load_digits``), so
    nothing is downloaded. The context is ``{"pixels": {"p00": ..., "p63": ...}}``
    with each pixel's ink scaled from 0..16 to 0..1 (blank pixels are left out, as a
    zero feature is); the actions are ``digit-0`` ... ``digit-9`` and carry no
    features but their id. The reward of an action is 1 exactly when it is the label,
    so the oracle earns 1 every round and the regret is the error rate.

    Examples are visited in an order shuffled with `seed`. A run longer than the data
    set makes further passes, each in a fresh shuffled order: later passes show
    examples a policy has seen before, unlike the single pass of the bake-off.

    Parameters
    ----------
    seed
        Seeds the order of the examples.

    Examples
    --------
    >>> env = DigitsEnvironment(seed=3)
    >>> r = next(env.rounds(1))
    >>> r.expected.count(1.0), r.rewards == r.expected, r.best_expected
    (1, True, 1.0)
    """

    def __init__(self, *, seed: int = 0) -> None:
        from sklearn.datasets import load_digits

        data = load_digits()
        images: npt.NDArray[np.float64] = np.asarray(data.data, dtype=np.float64)
        labels: npt.NDArray[np.int64] = np.asarray(data.target, dtype=np.int64)
        if images.ndim != 2 or len(images) != len(labels) or len(images) == 0:
            msg = f"load_digits returned data of shape {images.shape}, expected (n, 64)"
            raise DatasetError(msg)
        self.seed = int(seed)
        self._labels = labels
        self._contexts = tuple(_pixels(row / 16.0) for row in images)
        self._actions = tuple(Action(f"digit-{k}") for k in range(10))

    @property
    def name(self) -> str:
        """``"digits"``."""
        return "digits"

    @property
    def n_actions(self) -> int:
        """Ten: one action per digit."""
        return len(self._actions)

    @property
    def n_examples(self) -> int:
        """How many examples one pass visits."""
        return len(self._labels)

    @property
    def description(self) -> str:
        """One line naming the data set and seed."""
        return (
            f"digits (scikit-learn, {self.n_examples} examples, 10 classes as actions, "
            f"reward 1 for the true label), seed {self.seed}"
        )

    def rounds(self, n: int) -> Iterator[Round]:
        """Yield `n` rounds, one example each, in the seeded shuffled order.

        Parameters
        ----------
        n
            How many rounds, at least 1.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            msg = f"`n` must be an integer >= 1, got {n!r}"
            raise DatasetError(msg)
        rng = np.random.default_rng([self.seed, 4])
        index = 0
        while index < n:
            for example in rng.permutation(self.n_examples):
                if index >= n:
                    return
                label = int(self._labels[example])
                outcome = tuple(1.0 if k == label else 0.0 for k in range(self.n_actions))
                yield Round(
                    index=index,
                    event_id=f"{self.name}-s{self.seed}-r{index}",
                    context=self._contexts[example],
                    actions=self._actions,
                    expected=outcome,
                    rewards=outcome,
                )
                index += 1


def _pixels(row: npt.NDArray[np.float64]) -> dict[str, dict[str, FeatureValue]]:
    return {"pixels": {f"p{i:02d}": round(float(v), 4) for i, v in enumerate(row) if v > 0.0}}
