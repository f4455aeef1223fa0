"""The admin routes an import uses, over HTTP with an admin key."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import httpx

from bandit.api.admin import ModelProperties
from bandit.api.personalizer import MODEL_RESET_HEADER
from bandit.errors import APIError, TransportError
from bandit.wire.answers import PoliciesResponse
from bandit.wire.personalizer import PersonalizerServiceConfiguration
from bandit.wire.schemas import PolicySettings

__all__ = ["AdminApi"]

_PUT_TRIES = 3  # a model import answered 409 (the learner saved meanwhile) is sent again


class AdminApi:
    """The admin routes an import uses, over HTTP with an admin key.

    Raises
    ------
    APIError
        From each call answered with an error status (``.status``, the server's message).
    TransportError
        From each call that got no answer.
    """

    def __init__(self, url: str, key: str, *, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"X-API-Key": key}, timeout=timeout)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def policies(self) -> list[str]:
        """Return the served policies this key may use, the first one first."""
        answer = PoliciesResponse.model_validate_json(self._send("GET", "/v1/policies").content)
        return [entry.name for entry in answer.policies]

    def settings(self, name: str) -> PolicySettings:
        """Return the policy's live settings."""
        answer = self._send("GET", f"/v1/policies/{_segment(name)}/settings")
        return PolicySettings.model_validate_json(answer.content)

    def configuration(self, name: str) -> PersonalizerServiceConfiguration:
        """Return the policy's settings as Personalizer's service configuration."""
        answer = self._send("GET", _CONFIGURATION, params={"policy": name})
        return PersonalizerServiceConfiguration.model_validate_json(answer.content)

    def configure(
        self, name: str, config: PersonalizerServiceConfiguration
    ) -> PersonalizerServiceConfiguration:
        """Change the policy's settings as `config` asks (``PUT /configurations/service``)."""
        body = config.model_dump_json(by_alias=True).encode()
        answer = self._send(
            "PUT",
            _CONFIGURATION,
            params={"policy": name},
            content=body,
            headers={"Content-Type": "application/json"},
        )
        return PersonalizerServiceConfiguration.model_validate_json(answer.content)

    def set_learning_policy(self, name: str, arguments: str) -> bool:
        """Learn with VW `arguments` (``PUT /configurations/policy``); say if it reset the model."""
        body = json.dumps({"name": name, "arguments": arguments}).encode()
        answer = self._send(
            "PUT",
            _LEARNING_POLICY,
            params={"policy": name},
            content=body,
            headers={"Content-Type": "application/json"},
        )
        return bool(answer.headers.get(MODEL_RESET_HEADER) == "true")

    def model_file(self, name: str) -> bytes | None:
        """Return the served VW model file; None before the policy saved a model."""
        answer = self._send("GET", f"/v1/policies/{_segment(name)}/model", missing_ok=True)
        return None if answer.status_code == 404 else answer.content

    def model_properties(self, name: str) -> ModelProperties | None:
        """Return which model the policy serves; None before it saved one."""
        path = f"/v1/policies/{_segment(name)}/model/properties"
        answer = self._send("GET", path, missing_ok=True)
        if answer.status_code == 404:
            return None
        return ModelProperties.model_validate_json(answer.content)

    def import_model(self, name: str, model: bytes) -> ModelProperties:
        """Serve `model` (``PUT /v1/policies/{name}/model``); sent again on a 409."""
        path = f"/v1/policies/{_segment(name)}/model"
        headers = {"Content-Type": "application/octet-stream"}
        for attempt in range(_PUT_TRIES):
            try:
                answer = self._send("PUT", path, content=model, headers=headers)
            except APIError as exc:
                if exc.status != 409 or attempt == _PUT_TRIES - 1:
                    raise
                continue
            return ModelProperties.model_validate_json(answer.content)
        raise AssertionError  # (the loop returns or raises)

    def _send(
        self, method: str, path: str, *, missing_ok: bool = False, **options: Any
    ) -> httpx.Response:
        try:
            answer = self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            msg = f"{method} {self.url}{path}: no answer ({type(exc).__name__}: {exc})"
            raise TransportError(msg) from exc
        if answer.is_success or (missing_ok and answer.status_code == 404):
            return answer
        raise APIError(_message(answer), status=answer.status_code, body=answer.text)


_CONFIGURATION = "/personalizer/v1.0/configurations/service"
_LEARNING_POLICY = "/personalizer/v1.0/configurations/policy"


def _segment(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _message(answer: httpx.Response) -> str:
    """Return the server's message: a native ``detail``, or Personalizer's ``error``."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip()[:500] or answer.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        parts = [str(error.get("message", ""))]
        parts += [
            f"{detail.get('target')}: {detail.get('message')}"
            for detail in error.get("details") or []
            if isinstance(detail, dict)
        ]
        return "; ".join(part for part in parts if part)
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):
            return "; ".join(
                f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                for d in detail
                if isinstance(d, dict)
            )
        return str(detail)
    return answer.text.strip()[:500]
