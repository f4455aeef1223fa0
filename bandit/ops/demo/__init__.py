"""The live demo: ``streambandit up`` plus simulated app traffic over HTTP, then a report.

:func:`run_demo` starts a :class:`~bandit.ops.runtime.LocalStack` (broker, Redis, a stream
worker and the API, as child processes) serving two policies: ``default``, the learning
one (``vw-squarecb`` unless told otherwise), and ``baseline``, uniform random. It shortens
their reward wait so learning shows within the demo, then plays the app: a fixed number
of concurrent simulated users take turns from the :class:`~bandit.ops.simulation.
SyntheticEnvironment` (users with hidden preferences, sessions, devices, times of day).
Each turn asks ``POST /v1/rank`` (most turns with ``default``, a share with
``baseline``), draws the click from the environment's hidden click probability of the
chosen item, publishes a ``click`` behaviour event, and reports the click as reward 1
after a random delay; some clicks are never reported, and non-clicks never are, so the
default reward applies. Late rewards are counted by the join and not learned.

While it runs, a live panel shows decisions/s, the click rate of each policy over the
last seconds, the served model version and the rank latency. At the end, once every
decision is joined and learned, :class:`DemoReport` holds the click rate over time
windows for both policies against the oracle's and uniform's expected rates, the lift,
client-side latency percentiles, the stream workers' reward counters (``GET /metrics``),
the final model and where the DSJSON decision log is. The working folder is kept.

Then, once the stack has stopped and closed its files, the decision log the live loop
wrote is replayed off-policy with the :mod:`replay` package (:func:`replay_decision_log`,
what ``streambandit replay`` does): the logging policy itself, uniform random, the
served learning policy and :data:`REPLAY_ALTERNATIVES` trained along the log, each
estimated with IPS, SNIPS and DR with 95% intervals and effective sample sizes. The
logging policy's estimate must cover the reward rate the service observed (a sanity
check of the log and the estimators, shown to the user), and uniform's is set against
what the uniform baseline earned. The replay's JSON and HTML report go next to the
decision log, ``replay.json`` and ``replay.html`` in the working folder.

The modules, each usable without servers except the last:

- :mod:`~bandit.ops.demo.config`: :class:`DemoConfig` and the demo's policy names;
- :mod:`~bandit.ops.demo.traffic`: the simulated app, and :func:`summarize`, which turns
  its :class:`DecisionRecord` objects into a :class:`TrafficSummary`;
- :mod:`~bandit.ops.demo.metrics`: what the servers counted, read out of ``GET /metrics``
  with prometheus_client's parser (:func:`parse_stream_counters`, :func:`parse_trust`),
  and the decision log they left (:func:`read_decision_log`);
- :mod:`~bandit.ops.demo.offpolicy`: :func:`replay_decision_log`, the closing replay by
  the one replay pipeline, and its table and lines;
- :mod:`~bandit.ops.demo.report`: :class:`DemoReport`, :func:`report_lines` and
  :func:`render_report`;
- :mod:`~bandit.ops.demo.live`: the live panel and progress line while traffic runs;
- :mod:`~bandit.ops.demo.run`: :func:`run_demo`, which starts the stack and drives it.
"""

from __future__ import annotations

from bandit.ops.demo.config import (
    BASELINE_POLICY,
    DEFAULT_POLICY,
    DEFAULT_SECONDS,
    REPLAY_ALTERNATIVES,
    REPLAY_ESTIMATORS,
    DemoConfig,
    default_workdir,
)
from bandit.ops.demo.metrics import (
    DecisionLogSummary,
    StreamCounts,
    TrustSummary,
    parse_stream_counters,
    parse_trust,
    read_decision_log,
)
from bandit.ops.demo.offpolicy import (
    DemoReplay,
    replay_decision_log,
    replay_lines,
    replay_table,
)
from bandit.ops.demo.report import (
    DemoReport,
    render_report,
    report_lines,
)
from bandit.ops.demo.run import run_demo
from bandit.ops.demo.traffic import (
    DecisionRecord,
    TrafficSummary,
    WindowRates,
    summarize,
)

__all__ = [  # noqa: RUF022 - plain sorted(), which tests/test_public_api.py checks
    "BASELINE_POLICY",
    "DEFAULT_POLICY",
    "DEFAULT_SECONDS",
    "DecisionLogSummary",
    "DecisionRecord",
    "DemoConfig",
    "DemoReplay",
    "DemoReport",
    "REPLAY_ALTERNATIVES",
    "REPLAY_ESTIMATORS",
    "StreamCounts",
    "TrafficSummary",
    "TrustSummary",
    "WindowRates",
    "default_workdir",
    "parse_stream_counters",
    "parse_trust",
    "read_decision_log",
    "render_report",
    "replay_decision_log",
    "replay_lines",
    "replay_table",
    "report_lines",
    "run_demo",
    "summarize",
]
