"""The privacy routes: consents, export and erasure for the app, and the privacy page.

The app names a person by their raw user id in the body (never in the URL); the
person's own page (``GET /privacy``) calls the ``/v1/me`` routes with the token the
app gave it (``POST /v1/privacy/token``). See docs/privacy.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from bandit.api.deps import (
    CallerDep,
    Service,
    ServiceDep,
    pseudonym,
    pseudonym_key,
    redis_or_503,
)
from bandit.api.errors import (
    ERROR_RESPONSES,
    RefusedRequestError,
    json_response,
    model_response,
)
from bandit.api.native import parse_body
from bandit.api.openapi import reads_body
from bandit.api.requestlog import note
from bandit.privacy.consent import (
    ConsentKind,
    ConsentLookup,
    ConsentRecord,
    ConsentUpdate,
    ConsentView,
    EffectiveConsent,
    PageToken,
    effective_consent,
    find_logged,
    page_token,
    read_page_token,
)
from bandit.privacy.page import PAGE, PAGE_SCRIPT_HASH, PAGE_STYLE_HASH
from bandit.service.explainer import explain_limit_errors
from bandit.service.state import erasure_covers
from policies import Action

__all__ = ["Erasure", "Export", "PageConsent", "PageLink", "PersonView", "page_router", "router"]

router = APIRouter(prefix="/v1", tags=["native"], responses=ERROR_RESPONSES)
page_router = APIRouter(tags=["operations"])
"""The page itself, outside ``/v1`` and the OpenAPI document."""


class PageLink(BaseModel):
    """A token that opens a person's privacy page until `expires_at`, and the page's path."""

    token: str
    expires_at: int = Field(description="Unix time.")
    path: str


class Erasure(BaseModel):
    """What an erasure removed (``POST /v1/privacy/erase``, ``/v1/me/erase``)."""

    erased: bool
    sessions: int
    pending_decisions: int
    keys_deleted: int


class Export(BaseModel):
    """Everything held about a person in Redis (``POST /v1/privacy/export``)."""

    pseudonym: str
    consent: dict[str, Any] | None
    has_secret: bool
    sessions: dict[str, Any] = Field(description="Session and device features, by session.")
    recent_decisions: list[str]
    pending_decisions: list[str]
    last_decisions: list[dict[str, Any]]
    logged_decisions: list[dict[str, Any]] | None = Field(
        default=None, description="Found in the decision log, when this API can read it."
    )


class PersonView(BaseModel):
    """A person's own view on the privacy page (``GET /v1/me``)."""

    consent: ConsentView
    held: dict[str, Any]
    decisions: list[dict[str, Any]] = Field(description="Recent decisions, each explained.")


def _consent_changes(
    personalisation: bool | None, learning: bool | None
) -> dict[ConsentKind, bool]:
    changes: dict[ConsentKind, bool] = {}
    if personalisation is not None:
        changes["personalisation"] = personalisation
    if learning is not None:
        changes["learning"] = learning
    return changes


async def _change_consent(
    request: Request,
    service: Service,
    user: str,
    changes: dict[ConsentKind, bool],
    source: str,
    *,
    accepted_at: float,
    **noted: str,
) -> Response:
    """Record consent `changes` from `source`, count and log them; answer the new view.

    Refused (409) when the person was erased after `accepted_at`: an erasure is final.
    """
    with redis_or_503():
        record = await service.store.update_consent(
            user,
            ConsentRecord().with_changes(changes, source),
            accepted_at=accepted_at,
            slack=service.settings.watermark_slack_seconds,
        )
    if record is None:
        message = "the person was erased while this request was handled: nothing was recorded"
        raise RefusedRequestError(409, "Conflict", message)
    for kind, granted in changes.items():
        service.metrics.observe_consent_change(kind, granted=granted)
    note(request, "consent.changed", **noted, **changes)
    return model_response(consent_view(service, record))


async def _erase(request: Request, service: Service, user: str, **noted: str) -> dict[str, Any]:
    """Erase a person (see ``StateStore.erase``), count and log it; return the answer."""
    with redis_or_503():
        erased = await service.store.erase(user, service.settings.privacy.erasure_memory_seconds)
    service.metrics.privacy_requests.labels("erasure").inc()
    note(request, "person.erased", **noted, **erased)
    return {"erased": True, **erased}


def consent_view(service: Service, record: ConsentRecord | None) -> ConsentView:
    effective = effective_consent(record, service.settings.privacy)
    record = record or ConsentRecord()
    return ConsentView(
        personalisation=record.personalisation,
        learning=record.learning,
        effective=EffectiveConsent(personalisation=effective.personalise, learning=effective.learn),
    )


@router.post(
    "/consent",
    response_model=ConsentView,
    openapi_extra=reads_body(ConsentUpdate),
    tags=["privacy"],
)
async def set_consent(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Give or withdraw a person's consents; answer with all of them and their effect.

    The person is named by their raw user id in the body (never in the URL, which
    proxies log); it is replaced by its pseudonym before anything is stored.
    """
    accepted_at = time.time()
    body = await parse_body(request, ConsentUpdate, "the consent", service.settings.limits)
    user = pseudonym(service, body.user_id)
    changes = _consent_changes(body.personalisation, body.learning)
    return await _change_consent(
        request, service, user, changes, body.source, accepted_at=accepted_at
    )


@router.post(
    "/consent/lookup",
    response_model=ConsentView,
    openapi_extra=reads_body(ConsentLookup),
    tags=["privacy"],
)
async def lookup_consent(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Read a person's consents (named in the body) and what they allow now."""
    body = await parse_body(request, ConsentLookup, "the consent lookup", service.settings.limits)
    user = pseudonym(service, body.user_id)
    with redis_or_503():
        record = await service.store.consent(user)
    return model_response(consent_view(service, record))


@router.post(
    "/privacy/export",
    response_model=Export,
    openapi_extra=reads_body(ConsentLookup),
    tags=["privacy"],
)
async def export_person(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Return everything held about a person in Redis (named in the body, hashed)."""
    body = await parse_body(request, ConsentLookup, "the export request", service.settings.limits)
    user = pseudonym(service, body.user_id)
    with redis_or_503():
        record, secret = await service.store.consent_and_secret(user)
        held = await service.store.held(user, record, secret)
    directory = service.settings.decision_log.directory
    if secret is not None and directory.is_dir():  # a log this API can read
        held["logged_decisions"] = await asyncio.to_thread(find_logged, directory, secret)
    service.metrics.privacy_requests.labels("export").inc()
    note(request, "person.exported")
    return json_response({"pseudonym": user, **held})


@router.post(
    "/privacy/erase",
    response_model=Erasure,
    openapi_extra=reads_body(ConsentLookup),
    tags=["privacy"],
)
async def erase_person(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Erase a person: consents, secret, features, pending decisions; logs unlinkable."""
    body = await parse_body(request, ConsentLookup, "the erasure request", service.settings.limits)
    return json_response(await _erase(request, service, pseudonym(service, body.user_id)))


_PAGE_TOKEN_SECONDS = 3600
"""How long a privacy page token opens the page."""


class PageConsent(BaseModel):
    """The consents a person changes on their privacy page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    personalisation: StrictBool | None = None
    learning: StrictBool | None = None


@router.post(
    "/privacy/token",
    response_model=PageLink,
    openapi_extra=reads_body(ConsentLookup),
    tags=["privacy"],
)
async def privacy_token(request: Request, service: ServiceDep, caller: CallerDep) -> Response:
    """Give the app a token that opens a person's privacy page for an hour."""
    body = await parse_body(request, ConsentLookup, "the token request", service.settings.limits)
    user = pseudonym(service, body.user_id)
    key = pseudonym_key(service)
    issued_at = time.time()
    expires_at = int(issued_at) + _PAGE_TOKEN_SECONDS
    token = page_token(key, user, expires_at, issued_at)
    return json_response(
        {"token": token, "expires_at": expires_at, "path": f"/privacy#token={token}"}
    )


_privacy_token = APIKeyHeader(
    name="X-Privacy-Token",
    auto_error=False,
    scheme_name="PrivacyToken",
    description="The privacy page's token (POST /v1/privacy/token), for /v1/me routes.",
)


async def _page_person(
    service: ServiceDep, token: Annotated[str | None, Depends(_privacy_token)]
) -> PageToken:
    """Return the page token's person, unless it is invalid or an erasure revoked it."""
    read = read_page_token(pseudonym_key(service), token, now=time.time()) if token else None
    if read is None:
        message = "this page needs a valid privacy token (ask the app for a new link)"
        raise RefusedRequestError(401, "Unauthorized", message)
    with redis_or_503():
        erased_at = await service.store.erased_at(read.pseudonym)
    if erasure_covers(read.issued_at, erased_at, service.settings.watermark_slack_seconds):
        message = "this privacy link was revoked by an erasure (ask the app for a new link)"
        raise RefusedRequestError(401, "Unauthorized", message)
    return read


PagePerson = Annotated[PageToken, Depends(_page_person)]
"""The person whose privacy page calls (by its ``X-Privacy-Token``)."""


@page_router.get("/privacy", include_in_schema=False)
async def privacy_page() -> Response:
    """Serve the privacy page (its token is in the URL fragment, never sent here)."""
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


_PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src '{PAGE_SCRIPT_HASH}'; style-src '{PAGE_STYLE_HASH}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@router.get("/me", response_model=PersonView, tags=["privacy page"])
async def me(service: ServiceDep, person: PagePerson) -> Response:
    """Show a person their consents, what is held, and their recent decisions explained."""
    user = person.pseudonym
    with redis_or_503():
        record, secret = await service.store.consent_and_secret(user)
        held = await service.store.held(user, record, secret)
    decisions = []
    deadline = service.explainer.deadline()  # one for the page
    for entry in held.pop("last_decisions"):
        explained = await _recent_explanation(service, entry, deadline)
        decisions.append({**_summary(entry), "explanation": explained})
    service.metrics.explanations.labels("page").inc(len(decisions))
    return json_response(
        {
            "consent": consent_view(service, record).model_dump(mode="json"),
            "held": held,
            "decisions": decisions,
        },
        headers={"Cache-Control": "no-store"},
    )


def _summary(entry: Mapping[str, Any]) -> dict[str, Any]:
    names = ("event_id", "at", "policy", "model_version", "consent", "chosen_action_id")
    return {name: entry.get(name) for name in names}


async def _recent_explanation(
    service: Service, entry: Mapping[str, Any], deadline: float
) -> dict[str, Any]:
    """Explain a recent decision with the model serving now (said so in the text).

    Within the same limits and off the event loop, as a rank's explanation.
    """
    loaded = service.engine.loaded(str(entry.get("policy")))
    personalised = entry.get("consent") == "personalise"
    actions = [Action(a["id"], a["features"]) for a in entry.get("actions", [])]
    context = entry.get("context", {})
    if explain_limit_errors(context, [a.features for a in actions], service.settings.explain):
        service.metrics.explanations_missed.labels("limits").inc()
        return {"kind": "unavailable", "text": "This decision used too many features to explain."}
    if loaded is None or not actions:
        chooser = service.engine.baseline
        personalised = False
    else:
        chooser = loaded.policy if personalised else service.engine.baseline
    explained = await service.explainer.run(
        chooser,
        deadline,
        context,
        actions,
        int(entry.get("chosen_index", 0)),
        served=loaded,
        explored=bool(entry.get("explored")),
        personalised=personalised,
        policy_name=str(entry.get("policy")),
        model_version=str(entry.get("model_version")),
    )
    if explained is None:
        return {"kind": "unavailable", "text": "This decision cannot be explained now."}
    if explained.kind == "personalised" and loaded is not None:
        now = loaded.model_version
        note = f" (Explained with the model serving now, version {now}.)"
        explained = explained.model_copy(update={"text": explained.text + note})
    return explained.model_dump()


@router.post(
    "/me/consent",
    response_model=ConsentView,
    openapi_extra=reads_body(PageConsent),
    tags=["privacy page"],
)
async def me_consent(request: Request, service: ServiceDep, token: PagePerson) -> Response:
    """Change one's own consents from the privacy page (refused once erased since issued)."""
    body = await parse_body(request, PageConsent, "the consent", service.settings.limits)
    changes = _consent_changes(body.personalisation, body.learning)
    if not changes:
        raise RefusedRequestError(422, "BadRequest", "give personalisation, learning or both")
    return await _change_consent(
        request,
        service,
        token.pseudonym,
        changes,
        "privacy-page",
        accepted_at=token.issued_at,
        via="privacy-page",
    )


@router.post("/me/erase", response_model=Erasure, tags=["privacy page"])
async def me_erase(request: Request, service: ServiceDep, token: PagePerson) -> Response:
    """Erase oneself from the privacy page."""
    erased = await _erase(request, service, token.pseudonym, via="privacy-page")
    # what the page shows now: its token is revoked, so it cannot ask again
    consent = consent_view(service, None).model_dump(mode="json")
    return json_response({**erased, "consent": consent})
