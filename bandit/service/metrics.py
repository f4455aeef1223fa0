"""Prometheus metrics of the API, in a registry of their own (one per app).

Counted as things happen:

=============================================== ==================================
``streambandit_requests_total``                 requests by route, method, status
``streambandit_request_duration_seconds``       latency histogram by route, method
``streambandit_decisions_total``                decisions made by this process, by policy
``streambandit_explored_decisions_total``       those whose choice was not the most probable
``streambandit_degraded_decisions_total``       those decided without Redis features
``streambandit_consent_decisions_total``        decisions by policy, consent path
                                                (personalise, baseline) and learning
                                                consent (true, false)
``streambandit_consent_changes_total``          consents given or withdrawn, by kind
                                                (personalisation, learning) and granted
``streambandit_features_dropped_total``         features kept from policies (minimisation), by
                                                policy and reason (undeclared, identifier,
                                                invalid)
``streambandit_features_refused_total``         requests refused for a feature, by policy and
                                                reason (identifier, undeclared, invalid)
``streambandit_privacy_requests_total``         exports and erasures done, by kind
``streambandit_explanations_total``             explanations given, by kind (personalised,
                                                exploration, baseline)
``streambandit_explanations_missed_total``      explanations asked for and not given, by
                                                reason (deadline, failed, limits)
``streambandit_feedback_total``                 rewards, activations, events accepted, by kind
``streambandit_producer_rejected_total``        records refused with 503 (buffer full)
``streambandit_producer_dropped_total``         records dropped (rejected for good, lost)
``streambandit_producer_resent_total``          records produced again after the broker lost
                                                its log (the resend window)
``streambandit_model_swaps_total``              models hot-swapped in, by policy
``streambandit_model_rejected_total``           models refused because they are not finite
                                                (or do not restore), by policy and reason:
                                                the API's (``snapshot_not_finite``,
                                                ``snapshot_unreadable``, ``pmf_not_finite``)
                                                and, read from Redis at scrape time, the
                                                learners' (``not_finite_after_learning``,
                                                ``saved_model_not_finite``)
=============================================== ==================================

Set at scrape time (:meth:`ApiMetrics.observe_state`):

=============================================== ==================================
``streambandit_model_version``                  version of the served model, by policy
``streambandit_model_age_seconds``              seconds since that model was saved
``streambandit_model_learned_examples``         examples the served model learned
``streambandit_settings_version``               version of the applied settings
``streambandit_baseline_forced``                1 while the policy's kill switch serves the
                                                baseline (``policy baseline NAME``), else 0
``streambandit_exploration_share``              explored decisions / decisions (this process)
``streambandit_degraded``                       1 while Redis is unavailable, else 0
``streambandit_consent_share``                  share of decisions naming a person made
                                                with that consent, by kind (personalisation,
                                                learning); this process
``streambandit_opt_out_share``                  consent changes that withdrew a consent /
                                                consent changes; this process
``streambandit_producer_buffered``              records waiting for the broker
``streambandit_broker_available``               1 when the broker answered last, else 0
``streambandit_stream_counter_total``           the counters the stream workers keep in
                                                Redis (decisions, rewards, rewards
                                                joined / default / late, dead letters...),
                                                by scope (policy, or ``_streams``) and
                                                counter; absent when Redis cannot be read
``streambandit_live_evaluation_estimate``       each live candidate's IPS estimate, by
                                                policy and candidate (its spec, or
                                                ``logged``; at most 9 per policy):
                                                :mod:`bandit.service.liveeval`
``streambandit_live_evaluation_lower``          its anytime-valid lower bound
``streambandit_live_evaluation_upper``          its anytime-valid upper bound
``streambandit_live_evaluation_decisions``      the decisions it was evaluated on
=============================================== ==================================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ApiMetrics", "LiveReading", "PolicyState"]

MODEL_REJECTED_PREFIX = "model_rejected."
"""Redis counters named ``model_rejected.<reason>`` (by the learner) count refused models."""

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the scrape reports about one served policy."""

    name: str
    model_version: int
    model_age_seconds: float
    learned_examples: int
    settings_version: int
    baseline_forced: bool = False


class _StreamCounters(Collector):
    """Yields the Redis counters fetched for the current scrape."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, int]] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "streambandit_stream_counter",
            "Counters kept in Redis by the stream workers, read at scrape time.",
            labels=["scope", "counter"],
        )
        for scope, counters in sorted(self.values.items()):
            for name, value in sorted(counters.items()):
                family.add_metric([scope, name], value)
        yield family


LiveReading = tuple[str, str, float | None, float, float, int]
"""One live candidate's figures: policy, candidate, estimate, lower, upper, decisions."""


class _LiveEvaluation(Collector):
    """``streambandit_live_evaluation_*``: the live candidates' figures read at scrape time."""

    def __init__(self) -> None:
        self.readings: list[LiveReading] = []

    def collect(self) -> Iterator[Metric]:
        labels = ["policy", "candidate"]
        families = {
            name: GaugeMetricFamily(f"streambandit_live_evaluation_{name}", text, labels=labels)
            for name, text in (
                ("estimate", "A live candidate's IPS estimate of its mean reward per decision."),
                ("lower", "Its anytime-valid lower bound (a confidence sequence)."),
                ("upper", "Its anytime-valid upper bound (a confidence sequence)."),
                ("decisions", "Decisions it was evaluated on."),
            )
        }
        for policy, candidate, estimate, lower, upper, n in sorted(
            self.readings, key=lambda r: r[:2]
        ):
            if estimate is not None:
                families["estimate"].add_metric([policy, candidate], estimate)
            families["lower"].add_metric([policy, candidate], lower)
            families["upper"].add_metric([policy, candidate], upper)
            families["decisions"].add_metric([policy, candidate], n)
        yield from families.values()


class _ModelRejections(Collector):
    """``streambandit_model_rejected_total``: the API's own refusals and the learners'."""

    def __init__(self) -> None:
        self.api: Mapping[tuple[str, str], int] = {}
        self.learner: dict[tuple[str, str], int] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "streambandit_model_rejected",
            "Models refused (not finite, or not restorable), by policy and reason.",
            labels=["policy", "reason"],
        )
        for (policy, reason), value in sorted({**self.learner, **self.api}.items()):
            family.add_metric([policy, reason], value)
        yield family


class ApiMetrics:
    """The API's metrics and the registry they are exposed from.

    Parameters
    ----------
    registry
        Where to register; a fresh :class:`~prometheus_client.CollectorRegistry` by
        default, so several apps in one process do not collide.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "streambandit_requests", "HTTP requests.", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "streambandit_request_duration_seconds",
            "HTTP request latency, by route.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_shed = Counter(
            "streambandit_requests_shed",
            "Requests refused before their body was parsed (bandit/api/shedding.py), by reason: "
            "in_flight, queued, too_large, slow_body, media_type.",
            ["reason"],
            registry=r,
        )
        self._by_policy: dict[str, tuple[Counter, Counter, Counter]] = {}  # labelled children
        self._by_consent: dict[tuple[str, str, bool], Counter] = {}
        self.decisions = Counter(
            "streambandit_decisions", "Decisions made by this process.", ["policy"], registry=r
        )
        self.explored = Counter(
            "streambandit_explored_decisions",
            "Decisions whose choice was not the policy's most probable action.",
            ["policy"],
            registry=r,
        )
        self.degraded_decisions = Counter(
            "streambandit_degraded_decisions",
            "Decisions made without the Redis features they asked for.",
            ["policy"],
            registry=r,
        )
        self.consent_decisions = Counter(
            "streambandit_consent_decisions",
            "Decisions by the consent they were made under.",
            ["policy", "path", "learn"],
            registry=r,
        )
        self.consent_changes = Counter(
            "streambandit_consent_changes",
            "Consents given or withdrawn.",
            ["kind", "granted"],
            registry=r,
        )
        self.features_dropped = Counter(
            "streambandit_features_dropped",
            "Features kept from policies by minimisation.",
            ["policy", "reason"],
            registry=r,
        )
        self.features_refused = Counter(
            "streambandit_features_refused",
            "Rank requests refused for a feature the policy may not see.",
            ["policy", "reason"],
            registry=r,
        )
        self.privacy_requests = Counter(
            "streambandit_privacy_requests",
            "Exports and erasures of a person's data.",
            ["kind"],
            registry=r,
        )
        self.explanations = Counter(
            "streambandit_explanations",
            "Explanations given with rank answers.",
            ["kind"],
            registry=r,
        )
        self.explanations_missed = Counter(
            "streambandit_explanations_missed",
            "Explanations asked for and not given: past the deadline, failed, beyond limits.",
            ["reason"],
            registry=r,
        )
        self.consent_share = Gauge(
            "streambandit_consent_share",
            "Share of decisions naming a person made with this consent (this process).",
            ["kind"],
            registry=r,
        )
        self.opt_out_share = Gauge(
            "streambandit_opt_out_share",
            "Consent changes that withdrew a consent, over all consent changes (this process).",
            registry=r,
        )
        self._named = [0, 0, 0]  # decisions naming a person: all, personalised, learned
        self._changes = [0, 0]  # consent changes: all, withdrawals
        self.feedback = Counter(
            "streambandit_feedback",
            "Rewards, activations and behaviour events accepted.",
            ["kind"],
            registry=r,
        )
        self.producer_rejected = Counter(
            "streambandit_producer_rejected",
            "Records refused (503) because the broker was away and the buffer full.",
            registry=r,
        )
        self.producer_dropped = Counter(
            "streambandit_producer_dropped",
            "Records dropped: rejected for good by the broker, or buffered at shutdown.",
            registry=r,
        )
        self.producer_resent = Counter(
            "streambandit_producer_resent",
            "Records produced again (the resend window) after the broker lost its log.",
            registry=r,
        )
        self.model_swaps = Counter(
            "streambandit_model_swaps", "Models hot-swapped in.", ["policy"], registry=r
        )
        self.model_version = Gauge(
            "streambandit_model_version",
            "Version of the served model (0: built from its spec).",
            ["policy"],
            registry=r,
        )
        self.model_age = Gauge(
            "streambandit_model_age_seconds",
            "Seconds since the served model was saved (or built).",
            ["policy"],
            registry=r,
        )
        self.learned_examples = Gauge(
            "streambandit_model_learned_examples",
            "Examples the served model has learned from.",
            ["policy"],
            registry=r,
        )
        self.settings_version = Gauge(
            "streambandit_settings_version",
            "Version of the settings applied to the served policy.",
            ["policy"],
            registry=r,
        )
        self.baseline_forced = Gauge(
            "streambandit_baseline_forced",
            "1 while the policy's kill switch serves the baseline policy, else 0.",
            ["policy"],
            registry=r,
        )
        self.exploration_share = Gauge(
            "streambandit_exploration_share",
            "Explored decisions / decisions made by this process.",
            ["policy"],
            registry=r,
        )
        self.degraded = Gauge(
            "streambandit_degraded",
            "1 while Redis is unavailable (rank answers without stored features).",
            registry=r,
        )
        self.producer_buffered = Gauge(
            "streambandit_producer_buffered",
            "Records buffered in memory, waiting for the broker.",
            registry=r,
        )
        self.broker_available = Gauge(
            "streambandit_broker_available",
            "1 when the last exchange with the broker succeeded.",
            registry=r,
        )
        self.learning_stalled = Gauge(
            "streambandit_learning_stalled",
            "1 while the policy's learning is stalled: no worker consuming, or examples "
            "unlearned for longer than settings.learner.stall_seconds (see learning.py).",
            ["policy"],
            registry=r,
        )
        self._stream_counters = _StreamCounters()
        r.register(self._stream_counters)
        self._model_rejections = _ModelRejections()
        r.register(self._model_rejections)
        self._live_evaluation = _LiveEvaluation()
        r.register(self._live_evaluation)
        self._decided: dict[str, list[int]] = {}

    def observe_decision(
        self,
        policy: str,
        *,
        explored: bool,
        degraded: bool,
        path: str = "personalise",
        learn: bool = True,
    ) -> None:
        """Count one decision, and the consent it was made under."""
        children = self._by_policy.get(policy)
        if children is None:
            children = self._by_policy[policy] = (
                self.decisions.labels(policy),
                self.explored.labels(policy),
                self.degraded_decisions.labels(policy),
            )
        consented = self._by_consent.get((policy, path, learn))
        if consented is None:
            consented = self._by_consent[policy, path, learn] = self.consent_decisions.labels(
                policy, path, "true" if learn else "false"
            )
        consented.inc()
        children[0].inc()
        counts = self._decided.setdefault(policy, [0, 0])
        counts[0] += 1
        if explored:
            children[1].inc()
            counts[1] += 1
        if degraded:
            children[2].inc()

    def observe_named_decision(self, *, personalised: bool, learned: bool) -> None:
        """Count a decision naming a person, and the consents it was made with."""
        self._named[0] += 1
        self._named[1] += personalised
        self._named[2] += learned

    def observe_consent_change(self, kind: str, *, granted: bool) -> None:
        """Count one consent given or withdrawn."""
        self.consent_changes.labels(kind, "true" if granted else "false").inc()
        self._changes[0] += 1
        self._changes[1] += not granted

    def observe_state(
        self,
        policies: list[PolicyState],
        *,
        degraded: bool,
        buffered: int,
        broker_available: bool,
        stream_counters: Mapping[str, Mapping[str, int]] | None,
        model_rejections: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        """Set the gauges read at scrape time.

        `model_rejections` are the API's refused models by (policy, reason)
        (:attr:`bandit.service.engine.DecisionEngine.rejections`); the learners' come from
        `stream_counters` (``model_rejected.<reason>``).
        """
        for state in policies:
            self.model_version.labels(state.name).set(state.model_version)
            self.model_age.labels(state.name).set(state.model_age_seconds)
            self.learned_examples.labels(state.name).set(state.learned_examples)
            self.settings_version.labels(state.name).set(state.settings_version)
            self.baseline_forced.labels(state.name).set(1 if state.baseline_forced else 0)
            decided, explored = self._decided.get(state.name, (0, 0))
            self.exploration_share.labels(state.name).set(explored / decided if decided else 0.0)
        named, personalised, learned = self._named
        self.consent_share.labels("personalisation").set(personalised / named if named else 0.0)
        self.consent_share.labels("learning").set(learned / named if named else 0.0)
        changes, withdrawals = self._changes
        self.opt_out_share.set(withdrawals / changes if changes else 0.0)
        self.degraded.set(1 if degraded else 0)
        self.producer_buffered.set(buffered)
        self.broker_available.set(1 if broker_available else 0)
        self._stream_counters.values = (
            {} if stream_counters is None else {k: dict(v) for k, v in stream_counters.items()}
        )
        if model_rejections is not None:
            self._model_rejections.api = dict(model_rejections)
        if stream_counters is not None:  # else the last values read stay
            self._model_rejections.learner = {
                (policy, name.removeprefix(MODEL_REJECTED_PREFIX)): value
                for policy, counters in stream_counters.items()
                for name, value in counters.items()
                if name.startswith(MODEL_REJECTED_PREFIX)
            }

    def observe_live_evaluation(self, readings: Sequence[LiveReading]) -> None:
        """Set the live candidates' figures (:mod:`bandit.service.liveeval`), all at once."""
        self._live_evaluation.readings = list(readings)

    def observe_learning(self, stalled: Mapping[str, bool]) -> None:
        """Set ``streambandit_learning_stalled`` for each policy."""
        for policy, flag in stalled.items():
            self.learning_stalled.labels(policy).set(1 if flag else 0)

    def render(self) -> bytes:
        """Return the exposition text of every metric."""
        return generate_latest(self.registry)
