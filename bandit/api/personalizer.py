"""The Personalizer routes: rank, reward, activate, model, configuration, at every path.

How they differ from Azure Personalizer is described in :mod:`bandit.wire.personalizer`;
they decide and produce as the native routes do (:mod:`bandit.api.native`), and the
model and configuration routes map onto the admin routes' (:mod:`bandit.api.admin`).

Personalizer's clients name the API version in the path (``/personalizer/v1.0/``, used
by ``azure-cognitiveservices-personalizer``; ``/personalizer/v1.1-preview.1|2|3/``, used
by the .NET 2.x client) or in the query (``/personalizer/rank?api-version=2022-09-01-preview``,
used by ``azure-ai-personalizer``). Each route has one handler, declared once here
(:func:`_route`), and is served at each of those paths; the query form answers 400
naming ``api-version`` for a version it does not know (declared, so the OpenAPI document
lists the versions).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, get_args

import pydantic
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from bandit.api.admin import (
    MODEL_FILE_BODY,
    MODEL_FILE_RESPONSES,
    REPLACE_RESPONSES,
    apprentice_metrics,
    change_settings,
    check_admin,
    delete_log,
    live_settings,
    log_properties,
    model_file,
    replace_model,
    saved_model,
)
from bandit.api.deps import (
    CONTROL_TIMEOUT,
    Caller,
    CallerDep,
    PolicyQuery,
    Service,
    ServiceDep,
    read_body,
    redis_or_503,
    resolve_policy,
)
from bandit.api.errors import (
    PERSONALIZER_ERRORS,
    RefusedRequestError,
    invalid,
    json_response,
    model_response,
)
from bandit.api.native import check_may_send, decide, feedback
from bandit.api.openapi import reads_body
from bandit.errors import ConfigurationError
from bandit.service.evaluation import (
    DEFAULT_ARGUMENTS,
    EvaluationJob,
    FeatureImportanceJob,
    PolicyToEvaluate,
    experiment_policies,
    run_evaluation,
    run_feature_importance,
)
from bandit.service.evaluations import JobKind
from bandit.wire.personalizer import (
    MODEL_RESET_HEADER,
    PersonalizerApplyFromEvaluation,
    PersonalizerApprenticeMetrics,
    PersonalizerDateRange,
    PersonalizerEvaluationRequest,
    PersonalizerFeatureImportanceRequest,
    PersonalizerLogProperties,
    PersonalizerModelProperties,
    PersonalizerMultiSlotRankRequest,
    PersonalizerMultiSlotRankResponse,
    PersonalizerMultiSlotRewardRequest,
    PersonalizerPolicy,
    PersonalizerRankRequest,
    PersonalizerRankResponse,
    PersonalizerRewardRequest,
    PersonalizerServiceConfiguration,
    configured_settings,
    learning_policy_settings,
    service_configuration,
    to_activation,
    to_multi_slot_rank_request,
    to_rank_request,
    to_reward,
    to_slot_rewards,
)
from bandit.wire.schemas import Decision
from policies import make_policy
from policies.vw import VWPolicy

__all__ = ["API_VERSIONS", "PATH_VERSIONS", "router"]

PATH_VERSIONS = ("v1.0", "v1.1-preview.1", "v1.1-preview.2", "v1.1-preview.3")
"""The API versions Personalizer's clients put in the path: ``/personalizer/<version>/``."""
ApiVersion = Literal["2022-09-01-preview"]
"""The API versions Personalizer's clients put in the query: ``?api-version=<version>``."""
API_VERSIONS: tuple[str, ...] = get_args(ApiVersion)

router = APIRouter(tags=["personalizer"], responses=PERSONALIZER_ERRORS)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def _api_version(
    api_version: Annotated[
        ApiVersion, Query(alias="api-version", description="The Personalizer API version.")
    ],
) -> None:
    """Take the query form's API version: any other is refused (400 naming ``api-version``)."""


def _route(path: str, method: str = "POST", **options: Any) -> Callable[[Handler], Handler]:
    """Serve the decorated handler at ``method path`` under every Personalizer API version.

    ``/personalizer/<version><path>`` for each of :data:`PATH_VERSIONS`, and
    ``/personalizer<path>?api-version=...`` for :data:`API_VERSIONS`.
    """

    def register(handler: Handler) -> Handler:
        for version in PATH_VERSIONS:
            router.add_api_route(
                f"/personalizer/{version}{path}", handler, methods=[method], **options
            )
        router.add_api_route(
            f"/personalizer{path}",
            handler,
            methods=[method],
            dependencies=[Depends(_api_version)],
            **options,
        )
        return handler

    return register


def _decision_headers(decision: Decision) -> dict[str, str]:
    """Return the headers of a rank's answer: which policy and model version decided."""
    return {
        "X-Streambandit-Policy": decision.policy,
        "X-Streambandit-Model-Version": decision.model_version,
    }


# -- Personalizer routes -----------------------------------------------------------------

EventIdPath = Annotated[str, Path(alias="eventId", description="The event id of the decision.")]


@_route(
    "/rank",
    status_code=201,
    response_model=PersonalizerRankResponse,
    openapi_extra=reads_body(PersonalizerRankRequest),
)
async def personalizer_rank(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Personalizer's Rank: the ranking, the event id and the action to reward (201)."""
    served_by = resolve_policy(service, caller, policy)
    raw = await read_body(request)
    try:
        rank_request = to_rank_request(raw, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the rank request") from None
    identifiers = service.settings.privacy.personalizer_identifiers
    outcome = await decide(request, service, rank_request, served_by, identifiers=identifiers)
    decision = outcome.decision
    headers = _decision_headers(decision)
    answer = PersonalizerRankResponse.from_decision(decision, rank_request.excluded_actions)
    return model_response(answer, 201, headers)


@_route(
    "/events/{eventId:path}/reward",
    status_code=204,
    openapi_extra=reads_body(PersonalizerRewardRequest),
)
async def personalizer_reward(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    event_id: EventIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Personalizer's Reward for the event's chosen action (204)."""
    check_may_send(service, caller, policy)
    raw = await read_body(request)
    try:
        record = to_reward(event_id, raw, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the reward") from None
    await feedback(request, service, caller, "reward", record)
    return Response(status_code=204)


@_route("/events/{eventId:path}/activate", status_code=204)
async def personalizer_activate(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    event_id: EventIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Personalizer's Activate for an event ranked with ``deferActivation`` (204)."""
    check_may_send(service, caller, policy)
    try:
        record = to_activation(event_id, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the activation") from None
    await feedback(request, service, caller, "activation", record)
    return Response(status_code=204)


@_route(
    "/multislot/rank",
    status_code=201,
    response_model=PersonalizerMultiSlotRankResponse,
    openapi_extra=reads_body(PersonalizerMultiSlotRankRequest),
)
async def personalizer_multi_slot_rank(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Personalizer's multi-slot Rank: each slot's action, no action twice, the event id (201).

    The policy fills the slots in order, as :meth:`bandit.service.engine.DecisionEngine.rank`
    decides a rank (consent, features, learning mode); the decision logged holds every
    slot's distribution (:class:`bandit.wire.schemas.SlotDecision`).
    """
    served_by = resolve_policy(service, caller, policy)
    raw = await read_body(request)
    try:
        rank_request = to_multi_slot_rank_request(raw, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the multi-slot rank request") from None
    identifiers = service.settings.privacy.personalizer_identifiers
    outcome = await decide(request, service, rank_request, served_by, identifiers=identifiers)
    decision = outcome.decision
    headers = _decision_headers(decision)
    return model_response(PersonalizerMultiSlotRankResponse.from_decision(decision), 201, headers)


@_route(
    "/multislot/events/{eventId:path}/reward",
    status_code=204,
    openapi_extra=reads_body(PersonalizerMultiSlotRewardRequest),
)
async def personalizer_multi_slot_reward(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    event_id: EventIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Personalizer's multi-slot Reward: one reward per slot, each to the rewards topic (204)."""
    check_may_send(service, caller, policy)
    raw = await read_body(request)
    try:
        records = to_slot_rewards(event_id, raw, service.settings.limits)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the multi-slot reward") from None
    for record in records:
        await feedback(request, service, caller, "reward", record)
    return Response(status_code=204)


@_route("/multislot/events/{eventId:path}/activate", status_code=204)
async def personalizer_multi_slot_activate(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    event_id: EventIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Personalizer's multi-slot Activate: the whole decision, every slot (204)."""
    return await personalizer_activate(request, service, caller, event_id, policy)


@_route("/model", "GET", response_class=Response, responses=MODEL_FILE_RESPONSES)
async def personalizer_model(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    policy: PolicyQuery = None,
    signed: Annotated[bool, Query(description="A signed archive: not provided.")] = False,
) -> Response:
    """Personalizer's model export: the VW model file of the policy (admin keys)."""
    name = resolve_policy(service, caller, policy)
    if signed:
        detail = {
            "loc": ["query", "signed"],
            "msg": "signed model archives are not provided: ask for signed=false",
            "type": "signed_not_provided",
        }
        raise RefusedRequestError(422, "BadRequest", "signed archives are not provided",
                                  details=[detail])  # fmt: skip
    return await model_file(request, service, caller, name)


@_route("/model/properties", "GET", response_model=PersonalizerModelProperties)
async def personalizer_model_properties(
    service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Personalizer's model properties: when the policy's model was created and saved."""
    name = resolve_policy(service, caller, policy)
    model = (await saved_model(service, name)).properties(name)
    answer = PersonalizerModelProperties(
        creationTime=model.created_at, lastModifiedTime=model.saved_at
    )
    return model_response(answer)


@_route("/model", "DELETE", status_code=204, responses=REPLACE_RESPONSES)
async def personalizer_reset_model(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Personalizer's model reset: the policy serves a fresh model (admin keys; 204)."""
    name = resolve_policy(service, caller, policy)
    await replace_model(request, service, caller, name, None)
    return Response(status_code=204)


@_route(
    "/model",
    "PUT",
    status_code=204,
    responses=REPLACE_RESPONSES,
    openapi_extra=MODEL_FILE_BODY,
)
async def personalizer_import_model(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Personalizer's model import: serve a VW model file, once checked (admin keys; 204)."""
    name = resolve_policy(service, caller, policy)
    check_admin(caller, "replacing a model")  # before the body is read
    model = await read_body(request)
    await replace_model(request, service, caller, name, model)
    return Response(status_code=204)


# -- configuration -------------------------------------------------------------------------


def _epsilon(service: Service, name: str) -> float | None:
    """Return the served policy's epsilon when it explores epsilon-greedily, else None."""
    loaded = service.engine.loaded(name)
    policy = None if loaded is None else loaded.policy
    if isinstance(policy, VWPolicy) and policy.exploration == "epsilon":
        return policy.epsilon
    return None


async def _configuration(service: Service, name: str) -> PersonalizerServiceConfiguration:
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            settings, _ = await live_settings(service, name)
            edited = await service.store.settings_changed_at(name)
    apprentice = None
    if settings.learning_mode == "Apprentice":
        _, metrics = await apprentice_metrics(service, name)
        apprentice = PersonalizerApprenticeMetrics(
            startTime=metrics.started_at,
            lastProcessedEventTime=metrics.last_event_at,
            numberOfEvents=metrics.events,
            numberOfImitatedEvents=metrics.imitated_events,
            sumOfRewards=metrics.rewards,
            sumOfImitatedRewards=metrics.imitated_rewards,
        )
    return service_configuration(
        settings,
        epsilon=_epsilon(service, name),
        snapshot_seconds=service.settings.learner.snapshot_every_seconds,
        edited_at=None if edited is None else datetime.fromtimestamp(edited, UTC),
        apprentice=apprentice,
        retention_days=service.settings.decision_log.retention_days,
    )


@_route("/configurations/service", "GET", response_model=PersonalizerServiceConfiguration)
async def personalizer_service_configuration(
    service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Personalizer's service configuration, read from the policy's live settings."""
    name = resolve_policy(service, caller, policy)
    return model_response(await _configuration(service, name))


@_route(
    "/configurations/service",
    "PUT",
    response_model=PersonalizerServiceConfiguration,
    openapi_extra=reads_body(PersonalizerServiceConfiguration),
)
async def personalizer_update_service_configuration(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Change the policy's live settings as Personalizer's configuration asks (admin keys).

    Reward wait time, default reward, reward aggregation and (an epsilon-greedy
    policy's) exploration percentage apply at once; asking for what this service does
    not do (another learning mode, automatic optimisation, log mirroring, a log
    retention other than the deployment's, another model export frequency) is refused
    with 400 naming the field.
    """
    name = resolve_policy(service, caller, policy)
    check_admin(caller, "changing settings")
    raw = await read_body(request)
    try:
        config = PersonalizerServiceConfiguration.model_validate_json(raw)
        with redis_or_503():
            async with asyncio.timeout(CONTROL_TIMEOUT):
                current, _ = await live_settings(service, name)
        settings = configured_settings(
            config,
            current,
            epsilon=_epsilon(service, name),
            snapshot_seconds=service.settings.learner.snapshot_every_seconds,
            limits=service.settings.limits,
            retention_days=service.settings.decision_log.retention_days,
        )
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the service configuration") from None
    await change_settings(request, service, name, settings)
    return model_response(await _configuration(service, name))


@_route("/logs/properties", "GET", response_model=PersonalizerLogProperties)
async def personalizer_log_properties(service: ServiceDep, caller: CallerDep) -> Response:
    """Personalizer's log properties: the dates of the decision log's first and last lines."""
    found = await log_properties(service)
    span = PersonalizerDateRange.model_validate({"from": found.first, "to": found.last})
    return model_response(PersonalizerLogProperties(dateRange=span))


# -- the learning policy -----------------------------------------------------------------


def _served_vw(service: Service, name: str) -> VWPolicy:
    """Return the served VW policy `name`; 400 when it runs another kind of policy."""
    loaded = service.engine.loaded(name)
    assert loaded is not None  # (resolved by the caller)
    if not isinstance(loaded.policy, VWPolicy):
        message = (
            f"policy {name!r} runs {loaded.settings.spec!r}, not a VW policy: it has no VW "
            "learning policy (see its settings: GET /v1/policies/{name}/settings)"
        )
        detail = {"loc": ["policy"], "msg": message, "type": "not_a_vw_policy"}
        raise RefusedRequestError(422, "BadRequest", message, details=[detail])
    return loaded.policy


def _learning_policy(service: Service, name: str, reset: bool | None = None) -> Response:
    answer = PersonalizerPolicy(name=name, arguments=_served_vw(service, name).vw_arguments())
    headers = None if reset is None else {MODEL_RESET_HEADER: str(reset).lower()}
    return model_response(answer, headers=headers)


async def apply_learning_policy(
    request: Request,
    service: Service,
    caller: Caller,
    name: str,
    arguments: str,
    *,
    spec: str | None = None,
) -> Response:
    """Apply a VW command line to policy `name`: live, or with a fresh model (and say which).

    `spec`, when given, is the spec `arguments` were written from: a fresh model takes it
    as written (``vw-epsilon``), rather than the ``vw:...`` the arguments map onto.
    """
    served = _served_vw(service, name)
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            current, _ = await live_settings(service, name)
    try:
        settings, reset = learning_policy_settings(arguments, current, served)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the learning policy") from None
    if not reset:
        await change_settings(request, service, name, settings)
        return _learning_policy(service, name, reset=False)
    if spec is not None:
        settings = settings.model_copy(update={"spec": spec, "exploration": {}})
    try:
        await replace_model(request, service, caller, name, None, rebuilt=settings)
    except ConfigurationError as exc:  # VW's own rules between options, checked as it builds
        detail = {"loc": ["arguments"], "msg": str(exc), "type": "value_not_applicable"}
        raise RefusedRequestError(422, "BadRequest", str(exc), details=[detail]) from None
    return _learning_policy(service, name, reset=True)


@_route("/configurations/policy", "GET", response_model=PersonalizerPolicy)
async def personalizer_policy(
    service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Personalizer's learning policy: the VW command line the served policy learns with."""
    name = resolve_policy(service, caller, policy)
    return _learning_policy(service, name)


@_route(
    "/configurations/policy",
    "PUT",
    response_model=PersonalizerPolicy,
    responses=REPLACE_RESPONSES,
    openapi_extra=reads_body(PersonalizerPolicy),
)
async def personalizer_update_policy(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Learn with a VW command line (admin keys); the model is kept where VW allows.

    A change of exploration hyperparameters VW changes on a live model (``--epsilon``)
    keeps the model; any other change serves a fresh model of the new options, as
    Personalizer retrained on a new learning policy. The answer's
    ``X-Streambandit-Model-Reset`` header says which (:func:`learning_policy_settings`).
    Options touching files, daemons or the process, and options not mapped, are refused
    with 400 naming them.
    """
    name = resolve_policy(service, caller, policy)
    check_admin(caller, "changing the learning policy")
    raw = await read_body(request)
    try:
        body = PersonalizerPolicy.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the learning policy") from None
    return await apply_learning_policy(request, service, caller, name, body.arguments)


@_route(
    "/configurations/policy",
    "DELETE",
    response_model=PersonalizerPolicy,
    responses=REPLACE_RESPONSES,
)
async def personalizer_reset_policy(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Learn with the configured spec's VW command line again (admin keys), as PUT applies one."""
    name = resolve_policy(service, caller, policy)
    check_admin(caller, "changing the learning policy")
    _served_vw(service, name)
    spec = service.settings.policies[name]
    configured = await asyncio.to_thread(make_policy, spec)
    if not isinstance(configured, VWPolicy):
        message = f"policy {name!r} is configured as {spec!r}, not VW"
        raise RefusedRequestError(422, "BadRequest", message)
    arguments = configured.vw_arguments()
    return await apply_learning_policy(request, service, caller, name, arguments, spec=spec)


@_route("/logs", "DELETE", status_code=204)
async def personalizer_delete_logs(
    request: Request, service: ServiceDep, caller: CallerDep
) -> Response:
    """Personalizer's log deletion: every policy's decision log (admin keys, every policy; 204).

    As ``DELETE /v1/log`` (:func:`bandit.api.admin.delete_log`): each worker deletes its
    files; decisions still on their way to the log are written afterwards.
    """
    await delete_log(request, service, caller)
    return Response(status_code=204)


# -- evaluations and feature importances -------------------------------------------------

EvaluationIdPath = Annotated[
    str, Path(alias="evaluationId", min_length=1, max_length=256, description="The job's id.")
]
ImportanceIdPath = Annotated[
    str,
    Path(alias="featureImportanceId", min_length=1, max_length=256, description="The job's id."),
]


def _listed(request: Request, items: list[dict[str, Any]]) -> Response:
    """Answer a list as the client's version had it: an array (v1.x), or ``{"value": [...]}``."""
    if "api-version" in request.query_params:
        return json_response({"value": items})
    return json_response(items)


def _not_found(kind: str, job_id: str) -> RefusedRequestError:
    return RefusedRequestError(404, "ResourceNotFound", f"no {kind} with id {job_id!r}")


async def _online_arguments(service: Service, name: str) -> str:
    """Return the VW command line policy `name` learns with ("" for a policy not VW's)."""
    loaded = service.engine.loaded(name)
    policy = None if loaded is None else loaded.policy
    if isinstance(policy, VWPolicy):
        return await asyncio.to_thread(policy.vw_arguments)
    return ""


async def _stored(service: Service, kind: JobKind, record: dict[str, Any]) -> None:
    """Add the job's record, or refuse: its id taken (409), or the store full (400)."""
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            added = await service.jobs.store.create(kind, record)
    if added == 0:
        message = f"{kind}: id {record['id']!r} exists; delete it first, or choose another"
        raise RefusedRequestError(409, "Conflict", message)
    if added == -1:
        kept = service.settings.evaluations.max_kept
        message = (
            f"{kind}: {kept} are kept at most (STREAMBANDIT_EVALUATIONS__MAX_KEPT); "
            "delete one first"
        )
        detail = {"loc": [kind], "msg": message, "type": "too_many_jobs"}
        raise RefusedRequestError(400, "BadRequest", message, details=[detail])


async def _record(service: Service, kind: JobKind, job_id: str) -> dict[str, Any]:
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            found = await service.jobs.store.get(kind, job_id)
    if found is None:
        raise _not_found(kind, job_id)
    return found


def _job_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {
        key: record[key] for key in ("id", "name", "startTime", "endTime", "creationTime", "status")
    } | {"description": record.get("description", "")}


_V1_STATUSES = {"Running": "pending", "Succeeded": "completed", "Failed": "failed"}
"""The statuses of v1.1's evaluations (the 2022-09 API's are the stored ones)."""


def _evaluation(
    request: Request, record: dict[str, Any], *, listed: bool = False
) -> dict[str, Any]:
    """Show an evaluation in Personalizer's shapes: v1.1's ``policyResults``, 2022's ``content``.

    At the ``/v1.x/`` paths the status is v1.1's (``pending``, ``completed``,
    ``failed``). A listed one, as Personalizer listed them, holds each policy's
    ``totalSummary`` only, not its summaries per interval.
    """
    result = record.get("result") or {}
    results = result.get("policyResults", record["policies"])
    fields = _job_fields(record)
    if "api-version" not in request.query_params:
        fields |= {"status": _V1_STATUSES[record["status"]], "jobId": record["id"]}
    answer = {
        **fields,
        "evaluationType": "Manual",
        "policyResults": results,
        "featureImportance": [],
        "optimalPolicy": result.get("optimalPolicy", ""),
        "log": result.get("log"),
    }
    if listed:
        drop = ("summary", "timeseries")
        answer["policyResults"] = [
            {key: value for key, value in found.items() if key not in drop} for found in results
        ]
        return answer
    content = [
        {
            "name": found["name"],
            "arguments": found["arguments"],
            "policySource": found["policySource"],
            "slotId": "",
            "summary": {
                "expectedReward": found["estimates"]["snips"]["value"],
                "confidenceInterval": found["estimates"]["snips"]["confidenceInterval"],
            },
            "timeseries": found["timeseries"],
        }
        for found in result.get("policyResults", [])
    ]
    answer["content"] = {
        "startTime": record["startTime"],
        "endTime": record["endTime"],
        "intervalInMinutes": (result.get("log") or {}).get("intervalInMinutes"),
        "value": content,
    }
    return answer


async def _create_evaluation(
    request: Request, service: Service, caller: Caller, policy: str | None, job_id: str
) -> dict[str, Any]:
    name = resolve_policy(service, caller, policy)
    check_admin(caller, "running an evaluation")
    raw = await read_body(request)
    try:
        body = PersonalizerEvaluationRequest.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the evaluation") from None
    record, _ = await start_evaluation(service, name, job_id, body)
    return record


async def start_evaluation(
    service: Service, name: str, job_id: str, body: PersonalizerEvaluationRequest
) -> tuple[dict[str, Any], asyncio.Task[None]]:
    """Store evaluation `job_id` of policy `name` and start it in the helper process.

    Return its record (``Running``) and the task that stores its outcome. Refused as
    :func:`_stored` refuses: its id taken, or the store full.
    """
    online = await _online_arguments(service, name)
    policies = [
        PolicyToEvaluate("online", online, "Online"),
        PolicyToEvaluate("baseline", "", "Baseline"),
        PolicyToEvaluate("random", "", "Random"),
        *(PolicyToEvaluate(p.name, p.arguments, "Custom") for p in body.policies),
    ]
    if body.experiment:
        grid = online or DEFAULT_ARGUMENTS
        policies += await asyncio.to_thread(experiment_policies, grid)
    record = {
        "id": job_id,
        "name": body.name,
        "startTime": body.start_time.isoformat(),
        "endTime": body.end_time.isoformat(),
        "creationTime": datetime.now(UTC).isoformat(),
        "status": "Running",
        "policy": name,
        "policies": [
            {"name": p.name, "arguments": p.arguments, "policySource": p.source} for p in policies
        ],
    }
    job = EvaluationJob(
        service.settings.decision_log.directory,
        name,
        body.start_time,
        body.end_time,
        tuple(policies),
        max_rows=service.settings.evaluations.max_rows,
    )
    await _stored(service, "evaluations", record)
    return record, service.jobs.submit("evaluations", record, run_evaluation, job)


_CREATE_RESPONSES = {409: {"description": "A job of that id exists: delete it, or choose another."}}


@_route(
    "/evaluations/{evaluationId}",
    "PUT",
    responses=_CREATE_RESPONSES,
    openapi_extra=reads_body(PersonalizerEvaluationRequest),
)
async def personalizer_create_evaluation(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    evaluation_id: EvaluationIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Start an offline evaluation with this id (admin keys; 2022-09-01-preview's create, 200).

    Replays the policy's decision log lines dated in the window, in a helper process:
    the online (logged), baseline, random and custom policies, with IPS and SNIPS
    estimates and their confidence intervals (docs/migrating-from-personalizer.md).
    """
    record = await _create_evaluation(request, service, caller, policy, evaluation_id)
    return json_response(_evaluation(request, record))


@_route(
    "/evaluations",
    "POST",
    status_code=201,
    openapi_extra=reads_body(PersonalizerEvaluationRequest),
)
async def personalizer_submit_evaluation(
    request: Request, service: ServiceDep, caller: CallerDep, policy: PolicyQuery = None
) -> Response:
    """Start an offline evaluation under a new id (admin keys; v1.1's create, 201 + Location)."""
    record = await _create_evaluation(request, service, caller, policy, str(uuid.uuid4()))
    location = f"{str(request.url).split('?')[0]}/{record['id']}"
    return json_response(_evaluation(request, record), 201, {"Location": location})


@_route("/evaluations", "GET")
async def personalizer_evaluations(
    request: Request, service: ServiceDep, caller: CallerDep
) -> Response:
    """List every offline evaluation kept, oldest first (admin keys)."""
    check_admin(caller, "reading evaluations")
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            records = await service.jobs.store.list("evaluations")
    return _listed(request, [_evaluation(request, r, listed=True) for r in records])


@_route("/evaluations/{evaluationId}", "GET")
async def personalizer_evaluation(
    request: Request, service: ServiceDep, caller: CallerDep, evaluation_id: EvaluationIdPath
) -> Response:
    """Read an offline evaluation: its status, and once ``Succeeded`` its results (admin keys)."""
    check_admin(caller, "reading evaluations")
    found = await _record(service, "evaluations", evaluation_id)
    return json_response(_evaluation(request, found))


@_route("/evaluations/{evaluationId}", "DELETE", status_code=204)
async def personalizer_delete_evaluation(
    service: ServiceDep, caller: CallerDep, evaluation_id: EvaluationIdPath
) -> Response:
    """Delete an offline evaluation; a running one's result is dropped (admin keys; 204)."""
    check_admin(caller, "deleting evaluations")
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            if not await service.jobs.store.delete("evaluations", evaluation_id):
                raise _not_found("evaluations", evaluation_id)
    return Response(status_code=204)


@_route(
    "/configurations/applyFromEvaluation",
    "POST",
    status_code=204,
    responses=REPLACE_RESPONSES,
    openapi_extra=reads_body(PersonalizerApplyFromEvaluation),
)
async def personalizer_apply_from_evaluation(
    request: Request, service: ServiceDep, caller: CallerDep
) -> Response:
    """Learn with an evaluated policy's VW command line, as ``PUT /configurations/policy`` does.

    Applied to the policy the evaluation read (admin keys; 204). The baseline and random
    policies have no command line to learn with: refused with 400.
    """
    check_admin(caller, "changing the learning policy")
    raw = await read_body(request)
    try:
        body = PersonalizerApplyFromEvaluation.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the evaluation to apply") from None
    record = await _record(service, "evaluations", body.evaluation_id)
    wanted = body.policy_name.casefold()
    found = next((p for p in record["policies"] if p["name"].casefold() == wanted), None)
    if found is None or not found["arguments"]:
        names = [p["name"] for p in record["policies"] if p["arguments"]]
        message = (
            f"evaluation {body.evaluation_id!r} holds no learning policy named "
            f"{body.policy_name!r} with VW arguments; it holds {names}"
        )
        detail = {"loc": ["policyName"], "msg": message, "type": "value_not_applicable"}
        raise RefusedRequestError(400, "BadRequest", message, details=[detail])
    name = resolve_policy(service, caller, record["policy"])
    await apply_learning_policy(request, service, caller, name, found["arguments"])
    return Response(status_code=204)


def _importance(record: dict[str, Any]) -> dict[str, Any]:
    result = record.get("result") or {}
    return {
        **_job_fields(record),
        "arguments": record["arguments"],
        "featureScores": result.get("featureScores", []),
        "namespaceScores": result.get("namespaceScores", []),
        "value": result.get("value"),
        "log": result.get("log"),
    }


@_route(
    "/featureImportances/{featureImportanceId}",
    "PUT",
    responses=_CREATE_RESPONSES,
    openapi_extra=reads_body(PersonalizerFeatureImportanceRequest),
)
async def personalizer_create_feature_importance(
    request: Request,
    service: ServiceDep,
    caller: CallerDep,
    importance_id: ImportanceIdPath,
    policy: PolicyQuery = None,
) -> Response:
    """Start a feature importance with this id (admin keys; 200).

    Each feature's score (and each namespace's) is the drop in the served learning
    policy's SNIPS estimate, trained along the log, when it is removed
    (:func:`bandit.service.evaluation.run_feature_importance`).
    """
    name = resolve_policy(service, caller, policy)
    check_admin(caller, "running a feature importance")
    raw = await read_body(request)
    try:
        body = PersonalizerFeatureImportanceRequest.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        raise invalid(exc, "the feature importance") from None
    arguments = await _online_arguments(service, name) or DEFAULT_ARGUMENTS
    record = {
        "id": importance_id,
        "name": body.name,
        "startTime": body.start_time.isoformat(),
        "endTime": body.end_time.isoformat(),
        "creationTime": datetime.now(UTC).isoformat(),
        "status": "Running",
        "policy": name,
        "arguments": arguments,
    }
    job = FeatureImportanceJob(
        service.settings.decision_log.directory,
        name,
        body.start_time,
        body.end_time,
        arguments,
        max_rows=service.settings.evaluations.max_rows,
        max_features=service.settings.evaluations.max_features,
    )
    await _stored(service, "featureImportances", record)
    service.jobs.submit("featureImportances", record, run_feature_importance, job)
    return json_response(_importance(record))


@_route("/featureImportances", "GET")
async def personalizer_feature_importances(
    request: Request, service: ServiceDep, caller: CallerDep
) -> Response:
    """List every feature importance kept, oldest first (admin keys)."""
    check_admin(caller, "reading feature importances")
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            records = await service.jobs.store.list("featureImportances")
    return _listed(request, [_importance(record) for record in records])


@_route("/featureImportances/{featureImportanceId}", "GET")
async def personalizer_feature_importance(
    service: ServiceDep, caller: CallerDep, importance_id: ImportanceIdPath
) -> Response:
    """Read a feature importance: its status, and once ``Succeeded`` its scores (admin keys)."""
    check_admin(caller, "reading feature importances")
    return json_response(_importance(await _record(service, "featureImportances", importance_id)))


@_route("/featureImportances/{featureImportanceId}", "DELETE", status_code=204)
async def personalizer_delete_feature_importance(
    service: ServiceDep, caller: CallerDep, importance_id: ImportanceIdPath
) -> Response:
    """Delete a feature importance (admin keys; 204)."""
    check_admin(caller, "deleting feature importances")
    with redis_or_503():
        async with asyncio.timeout(CONTROL_TIMEOUT):
            if not await service.jobs.store.delete("featureImportances", importance_id):
                raise _not_found("featureImportances", importance_id)
    return Response(status_code=204)
