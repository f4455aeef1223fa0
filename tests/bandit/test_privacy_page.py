"""The privacy page, end to end in a real headless browser (Debian's chromium).

The API runs on a free port against the session's broker and Redis. A person consents
and is ranked through the API; the app asks for their page token; chromium opens the
page, which shows their consents, what is held and their recent decisions with an
explanation each; the person withdraws personalisation and erases their data by
clicking, and the API confirms both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from bandit.api.app import create_app
from bandit.client import Client
from bandit.settings import (
    ApiKey,
    ApiSettings,
    ExplainSettings,
    KafkaSettings,
    PrivacySettings,
    RedisSettings,
    Settings,
)
from tests.bandit.browser import chromium
from tests.bandit.serving import served

APP_KEY = "app-key-privacy-page-01234"
ACTIONS = [
    {"id": "golf-news", "features": {"item": {"topic": "golf"}}},
    {"id": "chess-news", "features": {"item": {"topic": "chess"}}},
]


@pytest.fixture(scope="module")
def api_url(broker: str, redis_url: str) -> Iterator[str]:
    prefix = f"pp{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka=KafkaSettings(broker=broker, topic_prefix=prefix),
        redis=RedisSettings(url=redis_url, key_prefix=prefix),
        api=ApiSettings(keys=(ApiKey(key=APP_KEY, role="app"),)),
        privacy=PrivacySettings(pseudonym_key="pseudonym-key-privacy-page-0"),
        policies={"default": "vw-squarecb"},
        # the page's explanations, not their deadline, are tested here: a loaded host
        # (the whole suite on 2 cores) may take more than the default second
        explain=ExplainSettings(deadline_seconds=30.0),
    )
    with served(create_app(settings), "privacy-page-api") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Debian's chromium, headless, driven through its chromedriver."""
    with chromium() as driver:
        yield driver


def _status(browser: webdriver.Chrome, text: str) -> None:
    WebDriverWait(browser, 15).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "status"), text)
    )


def test_a_person_sees_their_data_changes_consent_and_erases_it(
    api_url: str, browser: webdriver.Chrome
) -> None:
    """Consents, data held and explained decisions shown; consent changed; data erased."""
    person = f"page-{uuid.uuid4().hex[:6]}@example.org"
    with Client(api_url, api_key=APP_KEY) as client:
        client.set_consent(person, personalisation=True, learning=True, source="signup-form")
        for section in ("golf", "chess", "golf"):
            client.rank({"page": {"section": section}}, ACTIONS, user_id=person)
    token = httpx.post(
        f"{api_url}/v1/privacy/token", json={"user_id": person}, headers={"X-API-Key": APP_KEY}
    ).json()
    assert token["path"].startswith("/privacy#token=")

    browser.get(f"{api_url}{token['path']}")
    _status(browser, "Loaded.")
    personalisation = browser.find_element(By.ID, "consent-personalisation")
    learning = browser.find_element(By.ID, "consent-learning")
    assert personalisation.is_selected()
    assert learning.is_selected()
    assert "via signup-form" in browser.find_element(By.ID, "consent-detail").text
    held = browser.find_element(By.ID, "held").text
    assert '"has_secret": true' in held
    assert "example.org" not in browser.page_source  # the page knows the pseudonym only
    decisions = browser.find_elements(By.CSS_SELECTOR, "#decisions li.decision")
    assert len(decisions) == 3
    for decision in decisions:
        explanation = decision.find_element(By.CLASS_NAME, "explanation").text
        assert "was the model's best guess" in explanation or "exploratory" in explanation

    personalisation.click()  # withdraw personalisation
    browser.find_element(By.ID, "save-consent").click()
    _status(browser, "Your choices are saved.")
    with Client(api_url, api_key=APP_KEY) as client:
        view = client.consent(person)
        assert view.personalisation is not None
        assert view.personalisation.granted is False
        assert view.personalisation.source == "privacy-page"
        assert view.learning is not None
        assert view.learning.granted is True
        assert view.learning.source == "signup-form"  # not touched: not recorded again
        baseline = client.rank({"page": {"section": "golf"}}, ACTIONS, user_id=person)
        assert [r.probability for r in baseline.ranking] == [0.5, 0.5]  # the baseline now

    browser.find_element(By.ID, "erase").click()
    _status(browser, "Type ERASE to confirm.")  # nothing happens without confirming
    browser.find_element(By.ID, "erase-confirm").send_keys("ERASE")
    browser.find_element(By.ID, "erase").click()
    _status(browser, "Your data is erased.")
    assert not browser.find_element(By.ID, "consent-personalisation").is_selected()
    assert "No recent decision is held." in browser.find_element(By.ID, "decisions").text
    with Client(api_url, api_key=APP_KEY) as client:
        after = client.export(person)
    assert after["consent"] is None
    assert after["has_secret"] is False
    assert after["last_decisions"] == []


def test_the_page_refuses_a_forged_or_missing_token(
    api_url: str, browser: webdriver.Chrome
) -> None:
    """Without a valid token the page loads nothing and says why."""
    browser.get(f"{api_url}/privacy#token=p0000.9999999999.forged")
    _status(browser, "Could not load your data")
    assert "valid privacy token" in browser.find_element(By.ID, "status").text
    answer = httpx.get(f"{api_url}/v1/me")
    assert answer.status_code == 401
    page = httpx.get(f"{api_url}/privacy")
    assert "default-src 'none'" in page.headers["content-security-policy"]
