"""Stream workers killed with ``kill -9`` under traffic, as ``streambandit up`` runs them.

A :class:`bandit.ops.runtime.LocalStack` (the broker, Redis, the API and two stream workers,
as ``up`` starts them, with the default settings but for a 1 s reward wait) serves a
steady stream of ranks, a third of them rewarded. Every ``--every`` seconds one worker
(in turn) is killed with SIGKILL and started again. Printed:

- **seconds without a new model served after a kill**: the longest time, from each kill
  to the next, during which no rank answer carried a model version newer than every
  one before; the yardstick is the same gap between new models before the first kill
  (the reward wait, the snapshot cadence and the API's model polling are in both);
- **decision log**: decisions answered, lines logged across every worker's files,
  event ids logged more than once, and answered decisions never logged;
- **learned**: examples the saved model learned, against the decisions answered;
- **worker log lines**: warnings per minute (and the ``Timer ... is overlapping`` ones),
  lines holding terminal escape codes, and lines that are not JSON, over both workers'
  logs.

Kills closer together than a worker's restart and rejoin (about 20 s on a loaded
2-core machine) keep the groups rebalancing, and then no model is served at all.

Measured on the project's 2-core machine, shared with other work (3 kills every 40 s,
50 ranks/s), before and after the fixes of issue 10 in the worker: 15.2, 16.7 and
16.8 s without a new model after the kills, then 5.0, 6.0 and 5.6 s (yardstick: a new
model every 1.0 s between kills); worker warnings 91.7 a minute (87.2 of them "Timer
release-due is overlapping"), then 4.5 (the broker's "rebalancing" heartbeat replies
during the kills, none overlapping); 5 lines with escape codes and 251 not JSON, then 0
and 0; 0 duplicate or missing log lines in both.

Run::

    .venv/bin/python bench/worker_kills.py                  # 3 kills, about 3.5 minutes
    .venv/bin/python bench/worker_kills.py --kills 6 --every 30 --rate 60
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bandit.client import AsyncClient, Client
from bandit.ops.runtime import LocalStack
from bandit.settings import ApiSettings, Settings
from bandit.wire.schemas import PolicySettings

ACTIONS = [{"id": f"item-{i}", "features": {"item": {"kind": f"k{i}"}}} for i in range(3)]
REWARD_WAIT = 1.0


def _new_versions(answers: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """When each newer model version was first served."""
    seen: list[tuple[float, int]] = []
    for at, version in sorted(answers):
        if not seen or version > seen[-1][1]:
            seen.append((at, version))
    return seen


def _longest_gap(firsts: list[tuple[float, int]], start: float, end: float) -> float:
    """The longest time in [start, end) without a newer model served."""
    times = [start] + [at for at, _ in firsts if start < at < end] + [end]
    return max(b - a for a, b in itertools.pairwise(times))


def _log_lines(stack: LocalStack) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(stack.decision_logs.rglob("*.dsjson")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def _worker_log_figures(stack: LocalStack, minutes: float) -> dict[str, float]:
    text = "".join(
        path.read_text(errors="replace") for path in sorted(stack.workdir.glob("worker-*.log"))
    )
    lines = text.splitlines()
    warnings = sum(1 for line in lines if "warning" in line.lower())
    overlapping = sum(1 for line in lines if "is overlapping" in line)
    escapes = sum(1 for line in lines if "\x1b[" in line)
    not_json = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json += 1
    return {
        "lines": len(lines),
        "warnings_per_minute": warnings / minutes,
        "overlapping_per_minute": overlapping / minutes,
        "lines_with_escape_codes": escapes,
        "lines_not_json": not_json,
    }


def _learned(stack: LocalStack) -> int:
    import redis

    from policies import Policy

    client = redis.Redis.from_url(stack.services.redis_url)
    try:
        snapshot = client.hget(f"{stack.settings.redis.key_prefix}:model:default", "snapshot")
    finally:
        client.close()
    return 0 if snapshot is None else Policy.restore(bytes(snapshot)).n_learned  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--every", type=float, default=40.0, help="seconds between kills")
    parser.add_argument("--rate", type=float, default=50.0, help="ranks per second")
    parser.add_argument(
        "--session-timeout", type=float, help="STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS"
    )
    parser.add_argument("--keep", type=Path, help="copy the stack's folder (logs) here")
    args = parser.parse_args()

    settings = Settings(api=ApiSettings(port=0))
    env = {"STREAMBANDIT_POLICIES": json.dumps({"default": "vw-epsilon"})}
    if args.session_timeout is not None:
        env["STREAMBANDIT_KAFKA__SESSION_TIMEOUT_SECONDS"] = str(args.session_timeout)
    seconds = args.every * (args.kills + 1)
    answers: list[tuple[float, int]] = []  # (monotonic time, model version)
    answered: list[str] = []
    kills: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-kills-") as tmp:
        stack = LocalStack(settings, workers=2, workdir=Path(tmp) / "stack", extra_env=env)
        with stack:
            started_at = time.monotonic()
            with Client(stack.api_url, api_key=stack.admin_key) as admin:
                admin.set_settings(
                    "default", PolicySettings(spec="vw-epsilon", reward_wait_seconds=REWARD_WAIT)
                )
            stop = threading.Event()

            def killer() -> None:
                while not stop.wait(args.every) and len(kills) < args.kills:
                    victim = stack.processes[f"worker-{1 + len(kills) % 2}"]
                    kills.append(time.monotonic())
                    victim.kill()
                    victim.stop()
                    victim.start()

            async def traffic() -> None:
                rng = random.Random(7)
                async with AsyncClient(stack.api_url, api_key=stack.app_key) as client:

                    async def one() -> None:
                        segment = rng.randrange(2)
                        result = await client.rank({"user": {"segment": f"s{segment}"}}, ACTIONS)
                        answers.append((time.monotonic(), int(result.model_version)))
                        answered.append(result.event_id)
                        if rng.random() < 1 / 3:
                            await client.reward(result.event_id, 1.0)

                    loop = asyncio.get_running_loop()
                    begin = loop.time()
                    sent = 0
                    tasks: set[asyncio.Task[None]] = set()
                    while loop.time() - begin < seconds:
                        due = begin + sent / args.rate
                        await asyncio.sleep(max(0.0, due - loop.time()))
                        task = asyncio.create_task(one())
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        sent += 1
                    await asyncio.gather(*tasks)

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            try:
                asyncio.run(traffic())
            finally:
                stop.set()
                thread.join()
            minutes = (time.monotonic() - started_at) / 60
            deadline = time.monotonic() + 120
            want = set(answered)
            while time.monotonic() < deadline:
                logged = {line["EventId"] for line in _log_lines(stack)}
                if logged >= want and _learned(stack) >= len(want):
                    break
                time.sleep(1)
            time.sleep(3)  # anything logged or learned twice would show by now
            lines = _log_lines(stack)
            counts = Counter(line["EventId"] for line in lines)
            learned = _learned(stack)
            logs = _worker_log_figures(stack, minutes)
        if args.keep is not None:
            shutil.copytree(stack.workdir, args.keep, dirs_exist_ok=True)

    firsts = _new_versions(answers)
    ends = [*kills[1:], answers[-1][0]]
    stalls = [_longest_gap(firsts, at, end) for at, end in zip(kills, ends, strict=True)]
    steady = [at for at, _ in firsts if kills and firsts[0][0] + 2 < at < kills[0]]
    print(f"workers killed: {len(kills)} (every {args.every:.0f} s, {args.rate:.0f} ranks/s)")
    print(
        "longest time without a newer model served, from each kill to the next: "
        + ", ".join(f"{s:.1f} s" for s in stalls)
    )
    if len(steady) > 1:
        gaps = [b - a for a, b in itertools.pairwise(steady)]
        print(
            f"  yardstick, between new models before the first kill: median "
            f"{statistics.median(gaps):.1f} s, max {max(gaps):.1f} s (n={len(gaps)})"
        )
    print(f"decisions answered: {len(answered)}")
    print(f"decision log lines: {len(lines)} in all worker files")
    print(f"  event ids logged more than once: {sum(1 for c in counts.values() if c > 1)}")
    print(f"  answered but never logged: {len(set(answered) - set(counts))}")
    print(f"learned by the saved model: {learned} (answered: {len(answered)})")
    print(
        "worker logs: {lines} lines, {warnings_per_minute:.1f} warnings/min "
        "({overlapping_per_minute:.1f}/min 'Timer ... is overlapping'), "
        "{lines_with_escape_codes} lines with escape codes, "
        "{lines_not_json} lines not JSON".format(**logs)
    )


if __name__ == "__main__":
    main()
