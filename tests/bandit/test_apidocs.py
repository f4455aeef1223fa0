"""/docs in a real headless browser: Swagger UI renders from this origin alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from bandit.api.app import create_app
from bandit.settings import KafkaSettings, RedisSettings, Settings
from tests.bandit.browser import chromium
from tests.bandit.serving import served


@pytest.fixture(scope="module")
def api_url(broker: str, redis_url: str) -> Iterator[str]:
    prefix = f"docs{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        policies={"default": "uniform"},
    )
    with served(create_app(settings), "docs-api") as url:
        yield url


def test_swagger_ui_renders_with_every_resource_from_this_origin(api_url: str) -> None:
    """The page shows the API's routes; every resource it loaded came from the API itself."""
    with chromium() as browser:
        browser.get(f"{api_url}/docs")
        WebDriverWait(browser, 30).until(
            expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, ".swagger-ui .info .title"), "streambandit"
            )
        )
        assert browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")  # the routes
        loaded = _resources(browser)
        assert any(url.endswith("/openapi.json") for url in loaded)
        assert all(url.startswith((f"{api_url}/", "data:")) for url in loaded), loaded
        refused = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert refused == []  # nothing refused by the CSP, no script error


def _resources(browser: webdriver.Chrome) -> list[str]:
    names = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert isinstance(names, list)
    return [str(name) for name in names]
