"""The admin routes an import uses, through :class:`bandit.client.Client` with an admin key."""

from __future__ import annotations

from bandit.client import Client
from bandit.errors import APIError, NotFoundError
from bandit.wire.answers import ModelProperties
from bandit.wire.personalizer import PersonalizerServiceConfiguration
from bandit.wire.schemas import PolicySettings

__all__ = ["AdminApi"]

_PUT_TRIES = 3  # a model import answered 409 (the learner saved meanwhile) is sent again


class AdminApi:
    """The admin routes an import uses, through :class:`bandit.client.Client`.

    Raises
    ------
    InvalidArgumentError
        On construction, for a URL or key the client refuses; from a call, for a policy
        name no server could serve.
    APIError
        From each call answered with an error status (``.status``, the server's message).
    TransportError
        From each call that got no answer.
    """

    def __init__(self, url: str, key: str, *, timeout: float = 120.0) -> None:
        self._client = Client(url, key, timeout=timeout)
        self.url = self._client.base_url

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def policies(self) -> list[str]:
        """Return the served policies this key may use, the first one first."""
        return [entry.name for entry in self._client.list_policies()]

    def settings(self, name: str) -> PolicySettings:
        """Return the policy's live settings."""
        return self._client.get_settings(name)

    def configuration(self, name: str) -> PersonalizerServiceConfiguration:
        """Return the policy's settings as Personalizer's service configuration."""
        return self._client.service_configuration(name)

    def configure(
        self, name: str, config: PersonalizerServiceConfiguration
    ) -> PersonalizerServiceConfiguration:
        """Change the policy's settings as `config` asks (``PUT /configurations/service``)."""
        return self._client.set_service_configuration(name, config)

    def set_learning_policy(self, name: str, arguments: str) -> bool:
        """Learn with VW `arguments` (``PUT /configurations/policy``); say if it reset the model."""
        return self._client.set_learning_policy(name, arguments)

    def model_file(self, name: str) -> bytes | None:
        """Return the served VW model file; None before the policy saved a model."""
        try:
            return self._client.export_model(name).data
        except NotFoundError:
            return None

    def model_properties(self, name: str) -> ModelProperties | None:
        """Return which model the policy serves; None before it saved one."""
        try:
            return self._client.model_properties(name)
        except NotFoundError:
            return None

    def import_model(self, name: str, model: bytes) -> ModelProperties:
        """Serve `model` (``PUT /v1/policies/{name}/model``); sent again on a 409."""
        for attempt in range(_PUT_TRIES):
            try:
                return self._client.import_model(name, model)
            except APIError as exc:
                if exc.status != 409 or attempt == _PUT_TRIES - 1:
                    raise
        raise AssertionError  # (the loop returns or raises)
