"""A synthetic personalization environment with a hidden, context-dependent click model.

Users visit in sessions on a device at some time of day; each decision offers a handful
of items from a catalog; a hidden logistic click model, with context x item
interactions, decides how likely each item is to be clicked. Because the interactions
are strong, the best item depends on who is asking, on what device, and when.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bandit.errors import DatasetError
from bandit.ops.simulation._round import Round
from policies import Action, Context, FeatureValue

__all__ = [
    "DAYPARTS",
    "DEFAULT_N_ACTIONS",
    "DEFAULT_N_ITEMS",
    "DEVICES",
    "REFERRERS",
    "SEGMENTS",
    "TOPICS",
    "SyntheticEnvironment",
]

FloatArray = npt.NDArray[np.float64]

TOPICS = ("news", "sports", "tech", "finance", "travel", "food", "culture", "health")
"""Item topics (``item.topic``)."""
SEGMENTS = ("student", "professional", "family", "retired")
"""Observable user segments (``user.segment``)."""
REFERRERS = ("direct", "search", "social", "email")
"""Where a session came from (``session.referrer``)."""
DEVICES = ("mobile", "desktop", "tablet")
"""Device types (``device.type``)."""
DAYPARTS = ("night", "morning", "afternoon", "evening")
"""Six-hour parts of the day, from midnight (``time.daypart``)."""

_SEGMENT_SHARES = (0.25, 0.35, 0.25, 0.15)
_REFERRER_SHARES = (0.35, 0.30, 0.25, 0.10)
# Which device each segment tends to use (rows: segments; columns: DEVICES), the mean of
# each user's own Dirichlet-drawn device mix.
_DEVICE_MIX = ((6.0, 1.5, 1.0), (2.0, 5.0, 1.0), (3.0, 2.0, 3.0), (1.5, 3.0, 3.5))

# Layout of the hidden encodings. Context x: one-hot segment, referrer, device,
# daypart, then weekend, tenure, activity, session depth. Item z: one-hot topic, then
# length, price, freshness, centred on 0.5 so that "mobile prefers short items" does
# not also mean "mobile users click less".
_X_SEGMENT = 0
_X_REFERRER = _X_SEGMENT + len(SEGMENTS)
_X_DEVICE = _X_REFERRER + len(REFERRERS)
_X_DAYPART = _X_DEVICE + len(DEVICES)
_X_WEEKEND = _X_DAYPART + len(DAYPARTS)
_X_TENURE = _X_WEEKEND + 1
_X_ACTIVITY = _X_TENURE + 1
_X_DEPTH = _X_ACTIVITY + 1
_X_DIM = _X_DEPTH + 1

_Z_TOPIC = 0
_Z_LENGTH = len(TOPICS)
_Z_PRICE = _Z_LENGTH + 1
_Z_FRESHNESS = _Z_PRICE + 1
_Z_DIM = _Z_FRESHNESS + 1

DEFAULT_N_ACTIONS = 10
"""Items offered per round unless told otherwise."""
DEFAULT_N_ITEMS = 20
"""Catalog size unless told otherwise."""

_BASE_LOGIT = -1.9
_TURNOVER_ROUNDS = 10_000
_MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True, slots=True)
class _Users:
    """The user population: observable traits, and hidden tastes (two draws, for drift)."""

    segment: npt.NDArray[np.int64]
    tenure: FloatArray
    activity: FloatArray
    device_mix: FloatArray  # (n_users, len(DEVICES))
    taste_a: FloatArray  # (n_users, len(TOPICS)) individual deviation from the segment
    taste_b: FloatArray


@dataclass(frozen=True, slots=True)
class _Catalog:
    topic: npt.NDArray[np.int64]
    length: FloatArray
    price: FloatArray
    quality: FloatArray  # hidden


class SyntheticEnvironment:
    """Simulated users, sessions, devices and times of day choosing among items.

    Every round is one decision in a user's session. The policy sees the context
    ``{"user": {segment, tenure, activity}, "session": {referrer, depth},
    "device": {type}, "time": {daypart, weekend}}`` and the offered items, each an
    :class:`~policies.Action` with ``{"item": {topic, length, price, freshness}}``.
    The user's id is used only to draw that user's hidden tastes; it is never a feature.

    The hidden click model is logistic::

        logit = b + quality[item] + base . z + x' (F + cos(a) A + sin(a) B) z
                + (cos(a) dA[user] + sin(a) dB[user]) . topic(z)

    with ``x`` the encoded context and ``z`` the encoded item. ``F`` holds fixed
    interactions (mobile users prefer short items and desktop users long ones; students
    and families avoid priced items; social and active visitors want fresh ones; longer
    reads at weekends, shorter ones deep in a session); ``A`` and ``B`` are two
    independent draws of segment x topic, daypart x topic and device x topic tastes;
    ``dA`` and ``dB`` are each user's own deviation from their segment. The best item
    therefore depends on the context, and not all of it can be learned: the individual
    deviation is hidden, so even a perfect policy of the observable features has some
    regret against the oracle.

    Drift turns the tastes from the ``A`` draw towards the independent ``B`` draw (and
    on to ``-A``...): the angle ``a`` grows by ``pi / 2`` (a complete turnover) every
    ``10_000 / drift`` rounds, and jumps by ``pi / 2`` at `change_point`.

    Parameters
    ----------
    seed
        Seeds everything: users, catalog, click model, sessions, offers and rewards.
    n_actions
        Items offered per round, at least 2, at most `n_items`.
    n_items
        Size of the catalog the offers are drawn from.
    n_users
        Size of the user population.
    drift
        Complete turnovers of the hidden tastes per 10,000 rounds; 0 is stationary.
    change_point
        Round at which the tastes jump by a complete turnover; ``None`` for never.
    taste_spread
        Standard deviation of each user's hidden deviation from their segment's tastes.

    Examples
    --------
    >>> env = SyntheticEnvironment(seed=7, n_actions=4)
    >>> first = next(env.rounds(1))
    >>> sorted(first.context), len(first.actions), first.event_id
    (['device', 'session', 'time', 'user'], 4, 'synthetic-s7-r0')
    >>> first.best_expected == max(first.expected)
    True
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        n_actions: int = DEFAULT_N_ACTIONS,
        n_items: int = DEFAULT_N_ITEMS,
        n_users: int = 1000,
        drift: float = 0.0,
        change_point: int | None = None,
        taste_spread: float = 0.5,
    ) -> None:
        if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 2:
            msg = f"`n_items` must be an integer >= 2, got {n_items!r}"
            raise DatasetError(msg)
        if isinstance(n_actions, bool) or not isinstance(n_actions, int) or n_actions < 2:
            msg = f"`n_actions` must be an integer >= 2, got {n_actions!r}"
            raise DatasetError(msg)
        if n_actions > n_items:
            msg = f"`n_actions` must be <= `n_items` ({n_items}), got {n_actions!r}"
            raise DatasetError(msg)
        if isinstance(n_users, bool) or not isinstance(n_users, int) or n_users < 1:
            msg = f"`n_users` must be an integer >= 1, got {n_users!r}"
            raise DatasetError(msg)
        if not (0.0 <= drift < math.inf):  # also rejects NaN
            msg = f"`drift` must be finite and >= 0, got {drift!r}"
            raise DatasetError(msg)
        if change_point is not None and (
            isinstance(change_point, bool) or not isinstance(change_point, int) or change_point < 0
        ):
            msg = f"`change_point` must be None or an integer >= 0, got {change_point!r}"
            raise DatasetError(msg)
        if not (0.0 <= taste_spread < math.inf):
            msg = f"`taste_spread` must be finite and >= 0, got {taste_spread!r}"
            raise DatasetError(msg)
        self.seed = int(seed)
        self.n_items = n_items
        self.drift = float(drift)
        self.change_point = change_point
        self.n_users = n_users
        self.taste_spread = float(taste_spread)
        self._n_actions = n_actions
        self._draw_click_model(np.random.default_rng([self.seed, 2]))
        self._catalog = _draw_catalog(np.random.default_rng([self.seed, 3]), n_items)
        self._users = _draw_users(self.seed, n_users, self.taste_spread)
        catalog = self._catalog
        width = len(str(n_items - 1))
        self._item_lists = (
            [TOPICS[t] for t in catalog.topic.tolist()],
            catalog.length.tolist(),
            catalog.price.tolist(),
            [f"item-{i:0{width}d}" for i in range(n_items)],
        )
        # The static part of each item's hidden encoding; freshness is set per offer.
        self._item_z = np.zeros((n_items, _Z_DIM))
        self._item_z[np.arange(n_items), _Z_TOPIC + catalog.topic] = 1.0
        self._item_z[:, _Z_LENGTH] = catalog.length - 0.5
        self._item_z[:, _Z_PRICE] = catalog.price - 0.5

    # -- the Environment protocol ----------------------------------------------------

    @property
    def name(self) -> str:
        """``"synthetic"``."""
        return "synthetic"

    @property
    def n_actions(self) -> int:
        """Items offered per round."""
        return self._n_actions

    @property
    def description(self) -> str:
        """One line naming the settings."""
        change = "" if self.change_point is None else f", change point at {self.change_point}"
        return (
            f"synthetic personalization: {self.n_actions} of {self.n_items} items per round, "
            f"{self.n_users} users, drift {self.drift:g}{change}, seed {self.seed}"
        )

    def rounds(self, n: int) -> Iterator[Round]:
        """Yield the first `n` rounds; the same seed always yields the same rounds.

        Parameters
        ----------
        n
            How many rounds, at least 1.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            msg = f"`n` must be an integer >= 1, got {n!r}"
            raise DatasetError(msg)
        rng = np.random.default_rng([self.seed, 0])
        users = self._users
        population = 0.2 + users.activity
        population = population / population.sum()
        clock = float(rng.uniform(0.0, 7 * _MINUTES_PER_DAY))  # minutes since Monday 00:00
        index = 0
        while index < n:
            # A new session: who, from where, on what.
            user = int(rng.choice(self.n_users, p=population))
            referrer = int(rng.choice(len(REFERRERS), p=_REFERRER_SHARES))
            device = int(rng.choice(len(DEVICES), p=users.device_mix[user]))
            length = 1 + int(rng.geometric(0.3))
            hour = (clock % _MINUTES_PER_DAY) / 60.0
            clock += float(rng.exponential(9.0 if hour < 6 else 3.0))
            for depth in range(length):
                if index >= n:
                    return
                yield self._round(
                    rng,
                    index=index,
                    clock=clock,
                    user=user,
                    referrer=referrer,
                    device=device,
                    depth=depth,
                )
                clock += float(rng.exponential(1.0))
                index += 1

    # -- what-if: the true click probability of any context and items ----------------

    def click_probabilities(
        self,
        context: Context,
        actions: Sequence[Action],
        *,
        round_index: int = 0,
        user: int | None = None,
    ) -> FloatArray:
        """Return the true click probability of each action in `context`.

        Parameters
        ----------
        context, actions
            Features as in a round of this environment.
        round_index
            The round whose (possibly drifted) tastes apply.
        user
            Whose hidden deviation from their segment applies; ``None`` for none (the
            segment's own tastes).

        Returns
        -------
        numpy.ndarray
            One probability per action, in offer order.

        Raises
        ------
        DatasetError
            If a feature is missing or has a value this environment never produces.
        """
        x = _encode_context(context)
        z = np.stack([_encode_item(action) for action in actions])
        quality = np.array([self._quality_of(action.id) for action in actions])
        if user is not None and not (0 <= user < self.n_users):
            msg = f"`user` must be None or in [0, {self.n_users}), got {user!r}"
            raise DatasetError(msg)
        return self._probabilities(x, z, quality, round_index, user)

    # -- internals --------------------------------------------------------------------

    def _draw_click_model(self, rng: np.random.Generator) -> None:
        fixed = np.zeros((_X_DIM, _Z_DIM))
        # Device x length: short items on phones, long reads on desktops.
        fixed[_X_DEVICE : _X_DEVICE + 3, _Z_LENGTH] = (-3.0, 2.5, 0.5)
        # Segment x price: students and families avoid priced items.
        fixed[_X_SEGMENT : _X_SEGMENT + 4, _Z_PRICE] = (-3.0, -0.3, -2.0, -1.0)
        # Referrer x freshness: social visitors want what is new.
        fixed[_X_REFERRER : _X_REFERRER + 4, _Z_FRESHNESS] = (0.5, 0.0, 3.0, 1.0)
        fixed[_X_WEEKEND, _Z_LENGTH] = 1.5
        fixed[_X_DEPTH, _Z_LENGTH] = -1.5
        fixed[_X_ACTIVITY, _Z_FRESHNESS] = 1.5
        self._fixed = fixed
        self._tastes = tuple(_draw_tastes(rng) for _ in range(2))
        self._base = np.zeros(_Z_DIM)
        self._base[_Z_PRICE] = -0.5
        self._base[_Z_FRESHNESS] = 0.5

    def _angle(self, round_index: int) -> float:
        angle = 0.5 * math.pi * self.drift * round_index / _TURNOVER_ROUNDS
        if self.change_point is not None and round_index >= self.change_point:
            angle += 0.5 * math.pi
        return angle

    def _quality_of(self, action_id: str) -> float:
        prefix, _, number = action_id.partition("-")
        if prefix != "item" or not number.isdigit() or int(number) >= self.n_items:
            msg = f"action id must be one of this catalog's 'item-N' ids, got {action_id!r}"
            raise DatasetError(msg)
        return float(self._catalog.quality[int(number)])

    def _probabilities(
        self,
        x: FloatArray,
        z: FloatArray,
        quality: FloatArray,
        round_index: int,
        user: int | None,
    ) -> FloatArray:
        angle = self._angle(round_index)
        c, s = math.cos(angle), math.sin(angle)
        interactions = self._fixed + c * self._tastes[0] + s * self._tastes[1]
        logits = _BASE_LOGIT + quality + z @ self._base + z @ (interactions.T @ x)
        if user is not None:
            own = c * self._users.taste_a[user] + s * self._users.taste_b[user]
            logits = logits + z[:, _Z_TOPIC : _Z_TOPIC + len(TOPICS)] @ own
        result: FloatArray = 1.0 / (1.0 + np.exp(-logits))
        return result

    def _round(
        self,
        rng: np.random.Generator,
        *,
        index: int,
        clock: float,
        user: int,
        referrer: int,
        device: int,
        depth: int,
    ) -> Round:
        users = self._users
        minute = clock % _MINUTES_PER_DAY
        daypart = int(minute // (6 * 60))
        weekend = 1.0 if (clock // _MINUTES_PER_DAY) % 7 >= 5 else 0.0
        tenure = round(float(users.tenure[user]), 3)
        activity = round(float(users.activity[user]), 3)
        depth_feature = round(min(depth, 10) / 10.0, 3)
        context: dict[str, dict[str, FeatureValue]] = {
            "user": {
                "segment": SEGMENTS[int(users.segment[user])],
                "tenure": tenure,
                "activity": activity,
            },
            "session": {"referrer": REFERRERS[referrer], "depth": depth_feature},
            "device": {"type": DEVICES[device]},
            "time": {"daypart": DAYPARTS[daypart], "weekend": weekend},
        }
        x = np.zeros(_X_DIM)
        x[_X_SEGMENT + int(users.segment[user])] = 1.0
        x[_X_REFERRER + referrer] = 1.0
        x[_X_DEVICE + device] = 1.0
        x[_X_DAYPART + daypart] = 1.0
        x[_X_WEEKEND] = weekend
        x[_X_TENURE] = tenure
        x[_X_ACTIVITY] = activity
        x[_X_DEPTH] = depth_feature

        offered = rng.choice(self.n_items, size=self.n_actions, replace=False)
        freshness = np.round(np.exp(-rng.exponential(30.0, size=self.n_actions) / 24.0), 3)
        z = self._item_z[offered]
        z[:, _Z_FRESHNESS] = freshness - 0.5
        topics, lengths, prices, ids = self._item_lists
        actions = tuple(
            Action(
                ids[item],
                {
                    "item": {
                        "topic": topics[item],
                        "length": lengths[item],
                        "price": prices[item],
                        "freshness": fresh,
                    }
                },
            )
            for item, fresh in zip(offered.tolist(), freshness.tolist(), strict=True)
        )
        expected = self._probabilities(x, z, self._catalog.quality[offered], index, user)
        draws = rng.random(self.n_actions)
        return Round(
            index=index,
            event_id=f"{self.name}-s{self.seed}-r{index}",
            context=context,
            actions=actions,
            expected=tuple(expected.tolist()),
            rewards=tuple((draws < expected).astype(np.float64).tolist()),
        )


def _draw_tastes(rng: np.random.Generator) -> FloatArray:
    tastes = np.zeros((_X_DIM, _Z_DIM))
    topics = slice(_Z_TOPIC, _Z_TOPIC + len(TOPICS))
    tastes[_X_SEGMENT : _X_SEGMENT + len(SEGMENTS), topics] = rng.normal(
        0.0, 1.0, (len(SEGMENTS), len(TOPICS))
    )
    tastes[_X_DAYPART : _X_DAYPART + len(DAYPARTS), topics] = rng.normal(
        0.0, 0.8, (len(DAYPARTS), len(TOPICS))
    )
    tastes[_X_DEVICE : _X_DEVICE + len(DEVICES), topics] = rng.normal(
        0.0, 0.4, (len(DEVICES), len(TOPICS))
    )
    return tastes


def _draw_catalog(rng: np.random.Generator, n_items: int) -> _Catalog:
    priced = rng.random(n_items) < 0.4
    return _Catalog(
        topic=rng.integers(0, len(TOPICS), size=n_items),
        length=np.round(rng.beta(2.0, 3.0, size=n_items), 3),
        price=np.where(priced, np.round(rng.uniform(0.1, 1.0, size=n_items), 2), 0.0),
        quality=rng.normal(0.0, 0.5, size=n_items),
    )


def _draw_users(seed: int, n_users: int, taste_spread: float) -> _Users:
    """Draw each user's traits from a generator seeded by (seed, user id) alone.

    The id only seeds the draw, so a user keeps their tastes whatever the population
    size; it never appears among the features.
    """
    segment = np.empty(n_users, dtype=np.int64)
    tenure = np.empty(n_users)
    activity = np.empty(n_users)
    device_mix = np.empty((n_users, len(DEVICES)))
    taste_a = np.empty((n_users, len(TOPICS)))
    taste_b = np.empty((n_users, len(TOPICS)))
    for user in range(n_users):
        rng = np.random.default_rng([seed, 1, user])
        segment[user] = rng.choice(len(SEGMENTS), p=_SEGMENT_SHARES)
        tenure[user] = rng.beta(1.5, 3.0)
        activity[user] = rng.beta(2.0, 2.0)
        device_mix[user] = rng.dirichlet(_DEVICE_MIX[segment[user]])
        taste_a[user] = rng.normal(0.0, 1.0, len(TOPICS))
        taste_b[user] = rng.normal(0.0, 1.0, len(TOPICS))
    return _Users(
        segment=segment,
        tenure=tenure,
        activity=activity,
        device_mix=device_mix,
        taste_a=taste_a * taste_spread,
        taste_b=taste_b * taste_spread,
    )


def _one_hot_index(
    features: Mapping[str, Mapping[str, FeatureValue]],
    namespace: str,
    name: str,
    values: Sequence[str],
) -> int:
    value = _feature(features, namespace, name)
    if value not in values:
        msg = f"`{namespace}.{name}` must be one of {list(values)}, got {value!r}"
        raise DatasetError(msg)
    return values.index(str(value))


def _number(features: Mapping[str, Mapping[str, FeatureValue]], namespace: str, name: str) -> float:
    value = features.get(namespace, {}).get(name, 0.0)  # a zero may be left out
    if isinstance(value, str) or not math.isfinite(value):
        msg = f"`{namespace}.{name}` must be a finite number, got {value!r}"
        raise DatasetError(msg)
    return float(value)


def _feature(
    features: Mapping[str, Mapping[str, FeatureValue]], namespace: str, name: str
) -> FeatureValue:
    try:
        return features[namespace][name]
    except KeyError:
        msg = f"`{namespace}.{name}` is missing from the features"
        raise DatasetError(msg) from None


def _encode_context(context: Context) -> FloatArray:
    x = np.zeros(_X_DIM)
    x[_X_SEGMENT + _one_hot_index(context, "user", "segment", SEGMENTS)] = 1.0
    x[_X_REFERRER + _one_hot_index(context, "session", "referrer", REFERRERS)] = 1.0
    x[_X_DEVICE + _one_hot_index(context, "device", "type", DEVICES)] = 1.0
    x[_X_DAYPART + _one_hot_index(context, "time", "daypart", DAYPARTS)] = 1.0
    x[_X_WEEKEND] = _number(context, "time", "weekend")
    x[_X_TENURE] = _number(context, "user", "tenure")
    x[_X_ACTIVITY] = _number(context, "user", "activity")
    x[_X_DEPTH] = _number(context, "session", "depth")
    return x


def _encode_item(action: Action) -> FloatArray:
    z = np.zeros(_Z_DIM)
    z[_Z_TOPIC + _one_hot_index(action.features, "item", "topic", TOPICS)] = 1.0
    z[_Z_LENGTH] = _number(action.features, "item", "length") - 0.5
    z[_Z_PRICE] = _number(action.features, "item", "price") - 0.5
    z[_Z_FRESHNESS] = _number(action.features, "item", "freshness") - 0.5
    return z
