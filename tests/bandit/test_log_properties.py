"""What the decision log holds, from its files: natively and as Personalizer's log properties.

A real uvicorn server reading DSJSON files laid out as the stream workers write them
(a folder per worker, a last line still being written); Personalizer's own client reads
the dates.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient
from azure.core.credentials import AzureKeyCredential

from bandit.api.app import create_app
from bandit.settings import ApiKey, ApiSettings, KafkaSettings, LogSettings, RedisSettings, Settings
from tests.bandit.serving import served

KEY = "log-properties-key-0123456"


def _line(at: str) -> str:
    return f'{{"_label_cost":-1.0,"Timestamp":"{at}","EventId":"e-{uuid.uuid4().hex[:6]}"}}\n'


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "decisions"
    (folder / "worker-a").mkdir(parents=True)
    (folder / "worker-b").mkdir(parents=True)
    (folder / "worker-a" / "decisions-1.dsjson").write_text(
        _line("2026-12-01T08:00:00Z") + _line("2026-12-01T09:00:00Z")
    )
    (folder / "worker-b" / "decisions-1.dsjson").write_text(
        _line("2026-12-02T10:00:00Z")
        + _line("2026-12-03T11:30:00Z")
        + '{"_label_co'  # (being written)
    )
    return folder


def _serve(broker: str, redis_url: str, directory: Path) -> Iterator[str]:
    prefix = f"lp{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(keys=(ApiKey(key=KEY),)),
        decision_log=LogSettings(directory=directory),
        policies={"main": "uniform"},
    )
    with served(create_app(settings), "api-log-properties") as url:
        yield url


@pytest.fixture
def url(broker: str, redis_url: str, logs: Path) -> Iterator[str]:
    yield from _serve(broker, redis_url, logs)


def test_the_log_properties_say_its_files_and_dates(url: str, logs: Path) -> None:
    native = httpx.get(f"{url}/v1/log/properties", headers={"X-API-Key": KEY}).json()
    size = sum(p.stat().st_size for p in logs.rglob("*.dsjson"))
    assert (native["files"], native["bytes"]) == (2, size)
    assert (native["first"], native["last"]) == ("2026-12-01T08:00:00Z", "2026-12-03T11:30:00Z")
    for path in ("/personalizer/v1.1-preview.3/logs/properties",
                 "/personalizer/logs/properties?api-version=2022-09-01-preview"):  # fmt: skip
        answer = httpx.get(f"{url}{path}", headers={"Ocp-Apim-Subscription-Key": KEY})
        assert answer.json() == {
            "dateRange": {"from": "2026-12-01T08:00:00Z", "to": "2026-12-03T11:30:00Z"}
        }
    sdk = PersonalizerAdministrationClient(url, AzureKeyCredential(KEY))
    assert sdk.get_log_properties()["dateRange"]["to"] == "2026-12-03T11:30:00Z"


def test_an_empty_or_absent_log_has_no_dates(broker: str, redis_url: str, tmp_path: Path) -> None:
    for url in _serve(broker, redis_url, tmp_path / "nothing-here"):
        native = httpx.get(f"{url}/v1/log/properties", headers={"X-API-Key": KEY}).json()
        assert native == {"files": 0, "bytes": 0, "first": None, "last": None}
        answer = httpx.get(
            f"{url}/personalizer/v1.0/logs/properties", headers={"X-API-Key": KEY}
        ).json()
        assert answer == {"dateRange": {"from": None, "to": None}}
