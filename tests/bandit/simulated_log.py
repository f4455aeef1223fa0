"""A decision log with a known answer: two groups of users, each liking its own item.

Logged uniformly at random over items ``a`` and ``b``; a user of group ``g0`` clicks
``a`` with probability 0.8 and ``b`` with 0.2, a user of ``g1`` the reverse. The
baseline (always the first offered, ``a``) and uniform random earn 0.5; a policy that
learns the user-item interaction (``-q ca``) earns up to 0.8.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from policies import Action
from policies.dsjson import dsjson_line, dsjson_record

START = datetime(2026, 12, 1, tzinfo=UTC)
"""The first decision's time; one decision a second after it."""
LIKED = 0.8


def click_rate(group: int, chosen: int) -> float:
    """The known expected reward of offering action `chosen` to a user of `group`."""
    return LIKED if chosen == group else 1 - LIKED


def write_log(
    path: Path, n: int, *, policy: str, seed: int = 0, offset: int = 0, user_noise: bool = False
) -> list[int]:
    """Append `n` uniformly logged decisions of `policy` to `path`; return each row's group.

    With `user_noise`, the ``user`` namespace also holds ``shoe``, a categorical feature
    drawn apart from the group, on which the reward does not depend.
    """
    rng = np.random.default_rng(seed)
    groups = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        for i in range(n):
            group = int(rng.integers(0, 2))
            chosen = int(rng.integers(0, 2))
            reward = float(rng.random() < click_rate(group, chosen))
            user = {"group": f"g{group}"}
            if user_noise:
                user["shoe"] = f"s{int(rng.integers(0, 4))}"
            context = {"user": user, "noise": {"x": float(rng.random())}}
            actions = [Action("a", {"item": {"kind": "a"}}), Action("b", {"item": {"kind": "b"}})]
            record = dsjson_record(
                context,
                actions,
                chosen,
                [0.5, 0.5],
                reward,
                event_id=f"{policy}-{seed}-{i}",
                timestamp=START + timedelta(seconds=offset + i),
                extra={"policy": policy},
            )
            file.write(dsjson_line(record))
            groups.append(group)
    return groups
