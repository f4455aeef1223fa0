"""The admin routes: a policy's settings, kill switch and model; privacy reports; the log.

Changing settings, the kill switch, exporting, resetting, importing or rolling back a
model, listing its kept versions, releasing a report and reading the privacy ledger need
an ``admin`` key; any key allowed the policy may read its settings and its model's
properties. Deleting the decision log, which holds every policy's decisions, needs an
``admin`` key allowed every policy.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat
from redis.exceptions import RedisError

from bandit.api.deps import (
    CONTROL_TIMEOUT,
    Caller,
    CallerDep,
    Service,
    ServiceDep,
    read_body,
    redis_or_503,
    resolve_policy,
)
from bandit.api.errors import (
    ERROR_RESPONSES,
    POLICY_ERRORS,
    RefusedRequestError,
    error_responses,
    json_response,
    model_response,
)
from bandit.api.native import parse_body
from bandit.api.openapi import reads_body
from bandit.api.requestlog import note
from bandit.errors import ConfigurationError, SnapshotError
from bandit.privacy.dp import BudgetExhaustedError, PrivacyLedger, laplace
from bandit.service.apprentice import (
    COUNT_NAMES,
    MIN_EVENTS,
    STARTED_AT,
    SUM_NAMES,
    ApprenticeMetrics,
)
from bandit.service.liveeval import check_candidates
from bandit.service.logfiles import log_files
from bandit.service.modelfile import (
    ModelFileError,
    fresh_snapshot,
    imported_snapshot,
    rolled_back_snapshot,
)
from bandit.service.state import KeptModel, ModelRecord
from bandit.wire.answers import ModelProperties, ModelSource, ModelVersion, ModelVersions
from bandit.wire.schemas import (
    LearningMode,
    ModelRollback,
    PolicyName,
    PolicySettings,
    WireModel,
)
from policies import policy_class, snapshot_contents
from policies.vw import VWPolicy

__all__ = [
    "MODEL_FILE_BODY",
    "MODEL_FILE_RESPONSES",
    "REPLACE_RESPONSES",
    "ROLLBACK_RESPONSES",
    "BaselineSwitch",
    "Ledger",
    "LogProperties",
    "ModelProperties",
    "Release",
    "Report",
    "ReportRequest",
    "SavedModel",
    "change_settings",
    "check_admin",
    "delete_log",
    "live_settings",
    "log_properties",
    "model_file",
    "replace_model",
    "rollback_model",
    "router",
    "saved_model",
    "takes_model_file",
]

router = APIRouter(prefix="/v1", tags=["native"], responses=ERROR_RESPONSES)


class ReportRequest(WireModel):
    """A noisy aggregate to release (``POST /v1/privacy/reports``, admin keys).

    Attributes
    ----------
    metric
        ``reward_rate``: decisions joined with a reward over decisions joined;
        ``learning_consent_rate``: decisions with learning consent over decisions.
    policy
        Whose counters.
    epsilon
        The privacy budget this release spends (half on each count).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["reward_rate", "learning_consent_rate"]
    policy: PolicyName
    # from 0.01: a subnormal ε halved to 0.0 (a 500 once the budget was spent)
    epsilon: StrictFloat = Field(ge=0.01, le=10.0, allow_inf_nan=False)


class BaselineSwitch(BaseModel):
    """The kill switch of a policy: the baseline serves (``forced``), or its own model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    forced: StrictBool


class Report(BaseModel):
    """A released noisy rate and the budget left (``POST /v1/privacy/reports``)."""

    metric: str
    policy: str
    value: float = Field(ge=0.0, le=1.0)
    noisy_numerator: float
    noisy_denominator: float
    noise_scale: float
    epsilon: float
    budget_left: float


class Release(BaseModel):
    """One noisy release: what, the ε it spent, when (Unix time)."""

    what: str
    epsilon: float
    at: float


class Ledger(BaseModel):
    """Every noisy release so far and the budget (``GET /v1/privacy/ledger``)."""

    budget: float
    spent: float
    releases: list[Release]


def check_admin(caller: Caller, what: str = "this") -> None:
    """Refuse (403) a key whose role is not ``admin``, saying what needed one."""
    if caller.key.role != "admin":
        message = f"{what} needs an admin key; this key's role is {caller.key.role!r}"
        raise RefusedRequestError(403, "Forbidden", message)


@router.post(
    "/privacy/reports",
    response_model=Report,
    responses=error_responses(404, 409),
    openapi_extra=reads_body(ReportRequest),
    tags=["privacy"],
)
async def privacy_report(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Release a rate with Laplace noise on both counts, spending ε from the ledger."""
    check_admin(caller, "releasing a report")
    body = await parse_body(request, ReportRequest, "the report request", service.settings.limits)
    resolve_policy(service, caller, body.policy)  # 404 when not served, 403 not the key's
    ledger = PrivacyLedger(
        service.control_redis,
        service.settings.redis.key_prefix,
        service.settings.privacy.report_budget,
    )
    try:
        counters = await service.store.counters(body.policy)
        left = await ledger.spend(body.epsilon, f"{body.metric} of {body.policy}")
    except BudgetExhaustedError as exc:
        raise RefusedRequestError(409, "Conflict", str(exc)) from None
    except (RedisError, OSError, TimeoutError) as exc:
        raise RefusedRequestError(
            503, "ServiceUnavailable", f"Redis is unavailable: {exc}"
        ) from None
    if body.metric == "reward_rate":
        joined = counters.get("joined", 0)
        numerator, denominator = joined - counters.get("default_rewards", 0), joined
    else:
        decisions = counters.get("decisions", 0)
        numerator, denominator = decisions - counters.get("not_learned", 0), decisions
    half = body.epsilon / 2
    noisy_numerator = laplace(numerator, sensitivity=1.0, epsilon=half)
    noisy_denominator = laplace(denominator, sensitivity=1.0, epsilon=half)
    value = min(max(noisy_numerator / max(noisy_denominator, 1.0), 0.0), 1.0)
    note(request, "report.released", metric=body.metric, policy=body.policy, epsilon=body.epsilon)
    return json_response(
        {
            "metric": body.metric,
            "policy": body.policy,
            "value": value,
            "noisy_numerator": noisy_numerator,
            "noisy_denominator": noisy_denominator,
            "noise_scale": 1.0 / half,
            "epsilon": body.epsilon,
            "budget_left": left,
        }
    )


@router.get("/privacy/ledger", response_model=Ledger, tags=["privacy"])
async def privacy_ledger(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """List every noisy release so far and the budget left (admin keys)."""
    check_admin(caller, "reading the privacy ledger")
    budget = service.settings.privacy.report_budget
    ledger = PrivacyLedger(service.control_redis, service.settings.redis.key_prefix, budget)
    entries = await ledger.entries()
    spent = math.fsum(float(e["epsilon"]) for e in entries)  # type: ignore[arg-type]
    return json_response({"budget": budget, "spent": spent, "releases": entries})


@router.get(
    "/policies/{name}/settings",
    response_model=PolicySettings,
    responses=POLICY_ERRORS,
    name="get_policy_settings",
)
async def get_settings_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Return a policy's live settings (their ``ETag`` is the settings version)."""
    resolve_policy(service, caller, name)
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            settings, version = await live_settings(service, name)
    note(request, policy=name, settings_version=version)
    return model_response(settings, headers={"ETag": f'"{version}"'})


async def live_settings(service: Service, name: str) -> tuple[PolicySettings, int]:
    """Return a served policy's settings and their version: stored, else those it runs."""
    found = await service.store.policy_settings(name)
    if found is None:
        loaded = service.engine.loaded(name)
        assert loaded is not None
        found = (loaded.settings, loaded.settings_version)
    return found


async def _store_settings(
    request: Request, service: Service, name: str, settings: PolicySettings
) -> Response:
    """Store a policy's new settings, apply them here at once, and answer with them."""
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            version = await service.store.set_policy_settings(name, settings)
            await service.engine.refresh(name)
    note(
        request,
        "settings.changed",
        policy=name,
        settings_version=version,
        exploration=settings.exploration,
        exploration_floor=settings.exploration_floor,
        baseline_forced=settings.baseline_forced,
    )
    return model_response(settings, headers={"ETag": f'"{version}"'})


@router.put(
    "/policies/{name}/settings",
    response_model=PolicySettings,
    responses=POLICY_ERRORS,
    name="put_policy_settings",
    openapi_extra=reads_body(PolicySettings),
)
async def put_settings_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Change a policy's settings; exploration applies at once, the model is kept."""
    resolve_policy(service, caller, name)
    check_admin(caller, "changing settings")
    body = await parse_body(request, PolicySettings, "the policy settings", service.settings.limits)
    return await change_settings(request, service, name, body)


async def change_settings(
    request: Request, service: Service, name: str, settings: PolicySettings
) -> Response:
    """Check that policy `name` can run `settings` (422 naming why not), then store them.

    Entering Apprentice mode starts its figures again (:mod:`bandit.service.apprentice`).
    """
    try:
        await service.engine.check_settings(name, settings)
        await asyncio.to_thread(check_candidates, settings.live_evaluation)
    except (ConfigurationError, TypeError, ValueError) as exc:
        found = re.search(r"`(spec|live_evaluation\.candidates\.\d+)`", str(exc))
        field = found.group(1).split(".") if found else ["exploration"]
        detail = {"loc": field, "msg": str(exc), "type": "settings_not_applicable"}
        raise RefusedRequestError(422, "BadRequest", str(exc), details=[detail]) from None
    if settings.learning_mode == "Apprentice":
        with redis_or_503():
            async with asyncio.timeout(CONTROL_TIMEOUT):
                current, _ = await live_settings(service, name)
                if current.learning_mode != "Apprentice":
                    await service.store.forget_figures(
                        name, COUNT_NAMES, SUM_NAMES, {STARTED_AT: time.time()}
                    )
    return await _store_settings(request, service, name, settings)


class ApprenticeReport(BaseModel):
    """How a policy's model compares with the baseline action (``GET .../apprentice``).

    In Apprentice mode the baseline action serves and the model learns beside it. The
    figures count decisions made in Apprentice mode since the policy last entered it, as
    the learner learned them; the estimates, their bound and the recommendation are
    :class:`bandit.service.apprentice.ApprenticeMetrics`'.
    """

    model_config = ConfigDict(frozen=True)

    policy: str
    learning_mode: LearningMode
    min_events: int = MIN_EVENTS
    figures: ApprenticeMetrics


async def apprentice_metrics(service: Service, name: str) -> tuple[LearningMode, ApprenticeMetrics]:
    """Return policy `name`'s learning mode and apprentice figures, read from Redis."""
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            settings, _ = await live_settings(service, name)
            counters = await service.store.counters(name)
            sums = await service.store.sums(name)
            saved_at = await service.store.model_saved_at(name)
    started = sums.get(STARTED_AT)
    metrics = ApprenticeMetrics.of(
        counters,
        sums,
        started_at=None if started is None else datetime.fromtimestamp(started, UTC),
        last_event_at=None if saved_at is None else datetime.fromtimestamp(saved_at, UTC),
    )
    return settings.learning_mode, metrics


@router.get(
    "/policies/{name}/apprentice",
    response_model=ApprenticeReport,
    responses=POLICY_ERRORS,
    name="get_policy_apprentice",
)
async def get_apprentice_route(service: ServiceDep, caller: CallerDep, name: str) -> Response:
    """Say how the policy's model compares with the baseline action (Apprentice mode)."""
    resolve_policy(service, caller, name)
    mode, metrics = await apprentice_metrics(service, name)
    return model_response(ApprenticeReport(policy=name, learning_mode=mode, figures=metrics))


@router.put(
    "/policies/{name}/baseline",
    response_model=PolicySettings,
    responses=POLICY_ERRORS,
    name="put_policy_baseline",
    openapi_extra=reads_body(BaselineSwitch),
)
async def put_baseline_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Kill switch: serve the baseline now (``forced``) or the policy's model again.

    Only ``baseline_forced`` changes: the other stored settings are kept as they are,
    and not checked again, so rules changed since they were set (a narrower reward
    range, say) can never stand in the way of the switch.
    """
    resolve_policy(service, caller, name)
    check_admin(caller, "the kill switch")
    body = await parse_body(request, BaselineSwitch, "the kill switch", service.settings.limits)
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            current, _ = await live_settings(service, name)
    switched = current.model_copy(update={"baseline_forced": body.forced})
    return await _store_settings(request, service, name, switched)


# -- models ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SavedModel:
    """A policy's saved model as the model routes read it: record, header and payload."""

    record: ModelRecord
    header: dict[str, Any]
    payload: bytes

    @property
    def is_vw(self) -> bool:
        """Whether the payload is a VW model file (``vw -i`` loads it)."""
        return _is_vw(self.header)

    def properties(self, name: str) -> ModelProperties:
        """Return what :class:`ModelProperties` says of it, for the policy `name`."""
        return ModelProperties(
            policy=name,
            policy_class=str(self.header["policy"]),
            model_version=self.record.version,
            n_learned=int(self.header["n_learned"]),
            created_at=datetime.fromtimestamp(self.record.created_at, UTC),
            saved_at=datetime.fromtimestamp(self.record.saved_at, UTC),
            vw_model_bytes=len(self.payload) if self.is_vw else None,
        )


def _is_vw(header: dict[str, Any]) -> bool:
    """Whether a snapshot with `header` holds a VW model file."""
    return issubclass(policy_class(str(header["policy"])), VWPolicy)


async def _contents(snapshot: bytes, what: str) -> tuple[dict[str, Any], bytes]:
    """Read a snapshot's header and payload off the event loop (500 naming `what`)."""
    try:
        return await asyncio.to_thread(snapshot_contents, snapshot)
    except SnapshotError as exc:
        message = f"{what} cannot be read: {exc}"
        raise RefusedRequestError(500, "InternalServerError", message) from None


async def saved_model(service: Service, name: str) -> SavedModel:
    """Read the saved model of the served policy `name` (404 when it has none yet).

    The snapshot's checksum is checked off the event loop (a model can be megabytes).
    """
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            record = await service.store.load_model(name)
    if record is None:
        message = f"policy {name!r} has no saved model yet: it has learned nothing so far"
        raise RefusedRequestError(404, "ResourceNotFound", message)
    header, payload = await _contents(record.snapshot, f"the saved model of policy {name!r}")
    return SavedModel(record, header, payload)


async def model_file(request: Request, service: Service, caller: Caller, name: str) -> Response:
    """Answer the VW model file of policy `name` (admin keys; 409 for a policy not VW's)."""
    check_admin(caller, "exporting a model")
    model = await saved_model(service, name)
    return _vw_file(request, name, model.record.version, model.header, model.payload)


def _vw_file(
    request: Request, name: str, version: int, header: dict[str, Any], payload: bytes
) -> Response:
    """Answer model `version` of policy `name` as its VW model file (409 when not VW's)."""
    if not _is_vw(header):
        message = (
            f"policy {name!r} is a {header['policy']!r} policy, which has no VW "
            "model file to export"
        )
        raise RefusedRequestError(409, "Conflict", message)
    note(request, "model.exported", policy=name, model_version=version, bytes=len(payload))
    headers = {
        "X-Streambandit-Model-Version": str(version),
        "Content-Disposition": f'attachment; filename="{name}-{version}.vw"',
    }
    return Response(payload, media_type="application/octet-stream", headers=headers)


_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
MODEL_FILE_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": _BINARY}}
"""OpenAPI request body of the model import routes: a VW model file."""
MODEL_FILE_RESPONSES: dict[int | str, Any] = {
    200: {"description": "The VW model file (``vw -i`` loads it).", "content": _BINARY},
    409: {"description": "The policy is not a VW policy: it has no VW model file."},
}
"""OpenAPI answers of the model file routes (with the error answers of their surface)."""


@router.get(
    "/policies/{name}/model",
    response_class=Response,
    responses={**POLICY_ERRORS, **MODEL_FILE_RESPONSES},
    name="get_policy_model",
)
async def get_model_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Export the policy's saved model as the VW model file VW loads (admin keys)."""
    resolve_policy(service, caller, name)
    return await model_file(request, service, caller, name)


@router.get(
    "/policies/{name}/model/properties",
    response_model=ModelProperties,
    responses=POLICY_ERRORS,
    name="get_policy_model_properties",
)
async def get_model_properties_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Say which model the policy serves: its version, size, and when it was saved."""
    resolve_policy(service, caller, name)
    model = await saved_model(service, name)
    note(request, policy=name, model_version=model.record.version)
    return model_response(model.properties(name))


# -- replacing a model: reset and import -------------------------------------------------


def takes_model_file(method: str, path: str) -> bool:
    """Whether a request uploads a model file (any media type): ``PUT .../model``."""
    return method == "PUT" and path.endswith("/model")


async def replace_model(
    request: Request,
    service: Service,
    caller: Caller,
    name: str,
    model: bytes | None,
    *,
    rebuilt: PolicySettings | None = None,
) -> SavedModel:
    """Serve a new model of policy `name` (admin keys): `model`, a VW model file, or a fresh one.

    The snapshot is saved as the next model version, with the training offsets of the
    one it replaces, as the learner saves one; the learner learns on from it, the API
    serves it at once. A VW model file is checked in a child process first
    (:mod:`bandit.service.modelfile`): 422 naming ``body`` (400 on Personalizer's routes)
    when the policy cannot learn on from it. 409 when the learner saved a model
    meanwhile (send it again).

    With `rebuilt` (and no `model`), the fresh model is built from these new settings,
    whose spec may differ from the served one (a new learning policy), and they are
    stored with it in one transaction.
    """
    check_admin(caller, "replacing a model")
    loaded = service.engine.loaded(name)
    assert loaded is not None  # (resolved by the caller)
    settings = loaded.settings if rebuilt is None else rebuilt
    if model is None:
        snapshot = await asyncio.to_thread(fresh_snapshot, settings)
    else:
        try:
            snapshot = await imported_snapshot(settings, model)
        except ModelFileError as exc:
            detail = {"loc": ["body"], "msg": str(exc), "type": "model_file"}
            message = f"policy {name!r} cannot learn on from this model file: {exc}"
            raise RefusedRequestError(422, "BadRequest", message, details=[detail]) from None
    source: ModelSource = "import" if model is not None else "reset"
    previous = await _serve(service, name, snapshot, source=source, settings=rebuilt)
    replaced = await saved_model(service, name)
    note(
        request,
        "model.imported" if model is not None else "model.reset",
        policy=name,
        model_version=replaced.record.version,
        previous_version=previous,
        **({} if rebuilt is None else {"spec": rebuilt.spec}),
    )
    return replaced


async def _serve(
    service: Service,
    name: str,
    snapshot: bytes,
    *,
    source: ModelSource,
    created_at: float | None = None,
    restored_from: int | None = None,
    settings: PolicySettings | None = None,
) -> int:
    """Save `snapshot` as the next model version of `name`, serve it here; return the last.

    It keeps the training offsets of the version it replaces, as the learner saves one:
    the learner, finding a newer version than its own, learns on from it. A new lineage
    (now), unless `created_at` says when it began. 409 when the learner saved meanwhile.
    `settings`, new settings of the policy, are stored in the same transaction.
    """
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            current = await service.store.load_model(name)
            version = 0 if current is None else current.version
            offsets = {} if current is None else current.offsets
            saved = await service.store.save_model(
                name,
                snapshot,
                version + 1,
                offsets,
                expected_version=version,
                new_lineage=created_at is None,
                created_at=created_at,
                source=source,
                restored_from=restored_from,
                settings=settings,
            )
            if not saved:
                message = (
                    f"the learner saved a new model of policy {name!r} meanwhile: "
                    "send the request again"
                )
                raise RefusedRequestError(409, "Conflict", message)
            await service.engine.refresh(name)
    return version


REPLACE_RESPONSES: dict[int | str, Any] = {
    409: {"description": "The learner saved a model meanwhile: send the request again."},
}
"""OpenAPI answers of the model replacing routes (with the error answers of their surface)."""


@router.delete(
    "/policies/{name}/model",
    response_model=ModelProperties,
    responses={**POLICY_ERRORS, **REPLACE_RESPONSES},
    name="reset_policy_model",
)
async def reset_model_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Reset the policy's model: serve a fresh one (admin keys); its log stays."""
    resolve_policy(service, caller, name)
    replaced = await replace_model(request, service, caller, name, None)
    return model_response(replaced.properties(name))


@router.put(
    "/policies/{name}/model",
    response_model=ModelProperties,
    responses={**POLICY_ERRORS, **REPLACE_RESPONSES},
    name="import_policy_model",
    openapi_extra=MODEL_FILE_BODY,
)
async def import_model_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Serve a VW model file trained elsewhere (``vw -f``), once checked (admin keys)."""
    resolve_policy(service, caller, name)
    check_admin(caller, "replacing a model")
    model = await read_body(request)
    replaced = await replace_model(request, service, caller, name, model)
    return model_response(replaced.properties(name))


# -- kept versions and rollback ------------------------------------------------------------


def _listed(entry: KeptModel) -> ModelVersion:
    return ModelVersion(
        version=entry.version,
        source=entry.source,
        saved_at=datetime.fromtimestamp(entry.saved_at, UTC),
        created_at=datetime.fromtimestamp(entry.created_at, UTC),
        snapshot_bytes=entry.size,
        restored_from=entry.restored_from,
    )


async def _kept(service: Service, name: str, version: int) -> tuple[KeptModel, bytes]:
    """Return kept `version` of policy `name` and its snapshot; 404 naming what is kept."""
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            found = await service.store.kept_model(name, version)
            if found is not None:
                return found
            kept = [entry.version for entry in await service.store.model_versions(name)]
    if kept:
        which = f"it keeps versions {', '.join(map(str, kept))}"
    elif service.settings.learner.model_history == 0:
        which = "it keeps none (settings.learner.model_history is 0)"
    else:
        which = "it keeps none yet"
    message = f"policy {name!r} keeps no model version {version}: {which}"
    raise RefusedRequestError(404, "ResourceNotFound", message)


@router.get(
    "/policies/{name}/model/versions",
    response_model=ModelVersions,
    responses=POLICY_ERRORS,
    name="list_policy_model_versions",
)
async def list_model_versions_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """List the kept versions of the policy's model, newest first (admin keys)."""
    resolve_policy(service, caller, name)
    check_admin(caller, "listing model versions")
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            kept = await service.store.model_versions(name)
            current = await service.store.model_version(name)
    note(request, policy=name, model_version=current, kept=len(kept))
    learner = service.settings.learner
    answer = ModelVersions(
        policy=name,
        model_version=current,
        keep=learner.model_history,
        keep_every_seconds=learner.model_history_seconds,
        versions=[_listed(entry) for entry in kept],
    )
    return model_response(answer)


@router.get(
    "/policies/{name}/model/versions/{version}",
    response_class=Response,
    responses={**POLICY_ERRORS, **MODEL_FILE_RESPONSES},
    name="get_policy_model_version",
)
async def get_model_version_route(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    name: str,
    version: Annotated[int, Path(ge=1, description="A kept version of the model.")],
) -> Response:
    """Export a kept version of the policy's model as its VW model file (admin keys)."""
    resolve_policy(service, caller, name)
    check_admin(caller, "exporting a model")
    _, snapshot = await _kept(service, name, version)
    header, payload = await _contents(snapshot, f"version {version} of policy {name!r}")
    return _vw_file(request, name, version, header, payload)


async def rollback_model(
    request: Request, service: Service, caller: Caller, name: str, version: int
) -> SavedModel:
    """Serve kept `version` of policy `name` again, as its next model version (admin keys).

    The version counter never goes back: the kept snapshot, with today's live settings
    (:func:`bandit.service.modelfile.rolled_back_snapshot`), is saved as the next version
    with the training offsets of the one it replaces, as an import is, so the API
    serves it at once and the learner learns on from it; what was learned since the
    kept version is not learned again. 404 naming the kept versions when `version` is
    not one; 409 when it cannot serve under the live settings, or the learner saved
    a model meanwhile (send it again).
    """
    check_admin(caller, "rolling back a model")
    loaded = service.engine.loaded(name)
    assert loaded is not None  # (resolved by the caller)
    entry, kept = await _kept(service, name, version)
    try:
        snapshot = await asyncio.to_thread(rolled_back_snapshot, loaded.settings, kept)
    except ModelFileError as exc:
        message = f"version {version} of policy {name!r} cannot serve again: {exc}"
        raise RefusedRequestError(409, "Conflict", message) from None
    previous = await _serve(
        service,
        name,
        snapshot,
        source="rollback",
        created_at=entry.created_at,
        restored_from=version,
    )
    rolled = await saved_model(service, name)
    note(
        request,
        "model.rolled_back",
        policy=name,
        model_version=rolled.record.version,
        previous_version=previous,
        restored_version=version,
    )
    return rolled


ROLLBACK_RESPONSES: dict[int | str, Any] = {
    409: {
        "description": (
            "The kept version cannot serve under the live settings, or the learner saved "
            "a model meanwhile (send the request again)."
        )
    },
}
"""OpenAPI answers of the rollback route (with the error answers of its surface)."""


@router.post(
    "/policies/{name}/model/rollback",
    response_model=ModelProperties,
    responses={**POLICY_ERRORS, **ROLLBACK_RESPONSES},
    name="rollback_policy_model",
    openapi_extra=reads_body(ModelRollback),
)
async def rollback_model_route(
    request: Request, service: ServiceDep, caller: CallerDep, name: str
) -> Response:
    """Serve a kept version of the policy's model again, as its next version (admin keys)."""
    resolve_policy(service, caller, name)
    check_admin(caller, "rolling back a model")
    body = await parse_body(request, ModelRollback, "the rollback", service.settings.limits)
    rolled = await rollback_model(request, service, caller, name, body.version)
    return model_response(rolled.properties(name))


# -- the decision log ----------------------------------------------------------------------


class LogProperties(BaseModel):
    """The decision log's files (``GET /v1/log/properties``).

    Attributes
    ----------
    files, bytes
        How many DSJSON files the log holds, and their size.
    first, last
        The dates of its first and last decisions (to within the policies' reward wait:
        :mod:`bandit.service.logfiles`); None while it is empty.
    """

    model_config = ConfigDict(frozen=True)

    files: int
    bytes: int
    first: datetime | None
    last: datetime | None


async def log_properties(service: Service) -> LogProperties:
    """Read the decision log's files (``settings.decision_log.directory``) off the event loop."""
    found = await asyncio.to_thread(log_files, service.settings.decision_log.directory)
    return LogProperties(files=found.files, bytes=found.bytes, first=found.first, last=found.last)


@router.get("/log/properties", response_model=LogProperties, name="get_log_properties")
async def get_log_properties_route(service: ServiceDep, caller: CallerDep) -> Response:
    """Say how many files the decision log holds, their size, and its first and last dates."""
    return model_response(await log_properties(service))


_DELETE_WAIT_SECONDS = 10.0
"""How long ``DELETE /v1/log`` waits for the running workers to delete their files."""
_WRITER_ALIVE_SECONDS = 10.0
"""A decision-log writer that beat this recently runs (it beats every second): waited for."""
_WRITER_FORGOTTEN_SECONDS = 30 * 24 * 3600.0
"""A writer silent this long is forgotten (its folder is gone for good, presumably)."""


async def delete_log(request: Request, service: Service, caller: Caller) -> None:
    """Delete the decision log: every worker's files, each by its worker (admin, every policy).

    The request goes to Redis (:meth:`~bandit.service.state.StateStore.request_log_deletion`);
    each worker deletes its own files between two batches and says so
    (:mod:`streams.ledger`). This waits, off the files and without blocking the event
    loop, until every running worker has; a stopped worker's folder is deleted when it
    starts, before it writes anything. What was deleted is logged
    (``decision_log.deleted``); the workers count it (``log_files_deleted.request``).

    Raises
    ------
    RefusedRequestError
        403 for a key that is not an admin's or not allowed every policy; 503 when Redis
        cannot be reached, or a running worker has not confirmed within 10 s (the
        request stands: it deletes its files before it writes again).
    """
    check_admin(caller, "deleting the decision log")
    if "*" not in caller.key.policies:
        message = (
            "the decision log holds every policy's decisions: deleting it needs an admin "
            "key allowed every policy ('*')"
        )
        raise RefusedRequestError(403, "Forbidden", message)
    store = service.store
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            requested = await store.request_log_deletion()
        deadline = time.monotonic() + _DELETE_WAIT_SECONDS
        while True:
            async with asyncio.timeout(CONTROL_TIMEOUT):
                writers = await store.log_writers(forget_after=_WRITER_FORGOTTEN_SECONDS)
                now = await store.redis_time()  # the writers beat by Redis's clock
            waiting = sorted(
                name
                for name, writer in writers.items()
                if writer.deleted_at < requested and now - writer.at <= _WRITER_ALIVE_SECONDS
            )
            if not waiting:
                break
            if time.monotonic() >= deadline:
                note(request, "decision_log.deletion_unconfirmed", writers=waiting)
                message = (
                    f"the decision log's deletion is asked for, but {len(waiting)} running "
                    "worker(s) did not confirm it in time; each deletes its files before "
                    "it writes again (GET /v1/log/properties shows what is left). Asking "
                    "again also deletes what was written since"
                )
                raise RefusedRequestError(
                    503, "ServiceUnavailable", message, headers={"Retry-After": "5"}
                )
            await asyncio.sleep(0.05)
    done = [writer for writer in writers.values() if writer.deleted_at >= requested]
    note(
        request,
        "decision_log.deleted",
        files=sum(writer.files for writer in done),
        bytes=sum(writer.bytes for writer in done),
        writers=len(done),
        pending=len(writers) - len(done),  # stopped: deleted when they start
    )


@router.delete("/log", status_code=204, name="delete_log")
async def delete_log_route(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Delete the decision log, every policy's lines (admin keys allowed every policy; 204).

    Each worker deletes its own files, between two batches: lines written before this
    request are gone once it answers, lines written after it are kept. Decisions still
    on their way to the log (waiting for their reward in the join, or on the
    ``training`` topic) are written afterwards.
    """
    await delete_log(request, service, caller)
    return Response(status_code=204)
