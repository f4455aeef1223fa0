"""deploy/: alert rules, the Grafana dashboard and their wiring into docker-compose.yml.

Every metric name an alert or a dashboard query uses must be one the API registers
(bandit/service/metrics.py), so a renamed metric cannot leave a rule watching nothing; every
alert links to a section of docs/runbook.md; promtool checks the rules and runs their
unit tests (deploy/alerts.test.yml). `make test` installs promtool (Debian's prometheus
package) when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.registry import CollectorRegistry

from bandit.service.metrics import ApiMetrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
_METRIC = re.compile(r"\bstreambandit_[a-z0-9_]+")
_COMING = frozenset({"streambandit_learning_stalled"})
"""Names another change of issue 10 registers (the runtime branch's learning monitor);
remove a name from here once bandit/service/metrics.py registers it."""


def _registered() -> set[str]:
    """Every sample name the API's registry can expose."""
    registry: CollectorRegistry = ApiMetrics().registry
    names: set[str] = set()
    for family in registry.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",),
        }[family.type]
        names.update(family.name + suffix for suffix in suffixes)
    return names


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _alert_rules() -> list[dict[str, Any]]:
    groups = _load(DEPLOY / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _runbook_anchors() -> set[str]:
    """GitHub-style anchors of the runbook's headings."""
    anchors = set()
    for line in (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 -]", "", title).replace(" ", "-"))
    return anchors


def test_alert_rules_name_only_registered_metrics() -> None:
    """Each metric in an alert or recording rule is one the API registers."""
    registered = _registered() | _COMING
    used = {name for rule in _alert_rules() for name in _METRIC.findall(rule["expr"])}
    assert used, "no metric found in deploy/alerts.yml"
    assert used - registered == set()


def test_the_required_alerts_exist_with_severity_and_a_runbook_section() -> None:
    """Learning stalled, model age, dead letters, degraded, reward join: each with a runbook."""
    alerts = {rule["alert"]: rule for rule in _alert_rules() if "alert" in rule}
    watched = {
        "StreambanditLearningStalled": "streambandit_learning_stalled",
        "StreambanditModelStale": "streambandit_model_age_seconds",
        "StreambanditDeadLetters": "streambandit:dead_letters:rate10m",
        "StreambanditDegraded": "streambandit_degraded",
        "StreambanditNoRewardsJoined": "streambandit:rewarded_share:ratio15m",
        "StreambanditRewardJoinRateDropped": "streambandit:rewarded_share:ratio15m",
        "StreambanditBaselineForced": "streambandit_baseline_forced",
    }
    anchors = _runbook_anchors()
    for name, metric in watched.items():
        rule = alerts[name]
        assert metric in rule["expr"], name
        assert rule["labels"]["severity"] in {"page", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
        runbook = rule["annotations"]["runbook"]
        assert runbook.startswith("docs/runbook.md#"), name
        assert runbook.split("#", 1)[1] in anchors, f"{name}: no runbook section {runbook}"
    assert set(alerts) == set(watched)


def test_the_dashboard_is_valid_json_whose_queries_name_registered_metrics() -> None:
    """Every panel queries registered metrics through the provisioned datasource."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streambandit.json").read_text())
    datasources = _load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasources["datasources"][0]["uid"]
    registered = _registered() | _COMING
    titles = []
    used: set[str] = set()
    for panel in dashboard["panels"]:
        titles.append(panel["title"])
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            found = set(_METRIC.findall(target["expr"]))
            assert found, f"{panel['title']}: a query names no metric"
            used |= found
    assert used - registered == set()
    for wanted in (
        "Decisions/s",
        "Rewarded share",
        "latency p50 / p99",
        "Model version",
        "Model age",
        "Exploration share",
        "Dead letters",
        "Learning stalled",
        "Consent share",
    ):
        assert any(wanted in title for title in titles), wanted
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_compose_loads_the_rules_and_provisions_grafana() -> None:
    """Prometheus loads the mounted alerts.yml; Grafana is provisioned and health-checked."""
    compose = _load(ROOT / "docker-compose.yml")
    prometheus_config = _load(DEPLOY / "prometheus.yml")
    services = compose["services"]
    mounts = dict(
        volume.rsplit(":", 2)[:2] if volume.count(":") >= 2 else volume.split(":", 1)
        for volume in services["prometheus"]["volumes"]
    )
    assert mounts["./deploy/alerts.yml"] in prometheus_config["rule_files"]
    grafana = services["grafana"]
    grafana_mounts = [volume.split(":")[:2] for volume in grafana["volumes"]]
    for source, _ in grafana_mounts:
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    assert ["./deploy/grafana/provisioning", "/etc/grafana/provisioning"] in grafana_mounts
    provider = _load(DEPLOY / "grafana" / "provisioning" / "dashboards" / "streambandit.yml")
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert ["./deploy/grafana/dashboards", dashboards_path] in grafana_mounts
    assert "healthcheck" in grafana
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert compose["volumes"].keys() >= {"grafana-data", "prometheus-data"}


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found is not None, (
        "promtool is missing: `make test` installs it (apt-get install prometheus)"
    )
    return found


@pytest.mark.parametrize(
    "args",
    [("check", "rules", "alerts.yml"), ("test", "rules", "alerts.test.yml")],
    ids=["check", "unit-tests"],
)
def test_promtool_accepts_the_rules_and_their_unit_tests_pass(args: tuple[str, ...]) -> None:
    """promtool parses every rule, and each alert fires (or not) as its unit test says."""
    done = subprocess.run(
        [_promtool(), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_bounds_redis_without_eviction() -> None:
    """Compose's Redis has a maxmemory and the noeviction policy (docs/redis-memory.md)."""
    command = _load(ROOT / "docker-compose.yml")["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--maxmemory"]
    assert options["--appendonly"] == "yes"
