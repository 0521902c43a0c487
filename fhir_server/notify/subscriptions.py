"""R4 Subscriptions as this server accepts them: validation of criteria and channel, who may
subscribe to what, who owns a subscription, and the registry entry the worker reads.

Who may subscribe (checked when a Subscription is created or changed by a client):
- a system client: any criteria its scopes allow it to search;
- a patient: criteria restricted to their own record (e.g. `patient=Patient/<their id>`);
- a practitioner: criteria restricted to patients whose record they may see at that moment.
Criteria not restricted to a patient are refused with 422 for patients and practitioners; a
patient they may not see gives 403. The owner is recorded with the subscription, and matches are
later evaluated with the owner's access rights, so a subscription never reveals more than its
owner could search for. A rest-hook endpoint must be one the endpoint policy lets the server call
(endpoints.py, `FHIR_SUBSCRIPTION_ENDPOINTS`): checked whenever it is set or changed (422).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fhir_server.access.actor import Actor
from fhir_server.access.tokens import actor_from_claims
from fhir_server.engine.errors import FhirError, error, unprocessable
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import RequestContext, instant_or_none
from fhir_server.notify import channels
from fhir_server.notify.criteria import Criteria, CriteriaError, parse_criteria, restricted_patients
from fhir_server.notify.endpoints import EndpointPolicy, EndpointRefused
from fhir_server.storage.outbox import NotifyStore

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

SUBSCRIPTION = "Subscription"
DELIVERABLE = ("requested", "active")        # statuses under which notifications are sent
# Statuses under which matching writes are still collected: a subscription in error keeps what
# happens meanwhile, delivered once its owner sets it back (`off` collects nothing).
COLLECTING = ("requested", "active", "error")
CLIENT_STATUSES = frozenset({"requested", "active", "off"})
# Owner claims kept to evaluate matches later with the owner's rights (token bookkeeping dropped).
OWNER_CLAIMS = ("actor", "sub", "scope", "ins", "rpps", "profession", "specialty", "organization",
                "purpose_of_use", "client_id", "name")


@dataclass(frozen=True)
class Channel:
    type: str
    endpoint: str | None
    payload: str | None
    headers: tuple[str, ...]

    def as_document(self) -> dict:
        return {"type": self.type, "endpoint": self.endpoint, "payload": self.payload, "headers": list(self.headers)}


def read_channel(subscription: dict) -> Channel:
    """The channel of a Subscription, checked (422 when this server cannot deliver on it)."""
    channel = subscription.get("channel") or {}
    kind = channel.get("type")
    if kind not in channels.SUPPORTED_CHANNELS:
        raise unprocessable(f"Channel type {kind!r} is not supported; use one of "
                            f"{', '.join(sorted(channels.SUPPORTED_CHANNELS))}", "Subscription.channel.type")
    headers = tuple(channel.get("header") or [])
    try:
        channels.header_pairs(list(headers))
        channels.payload_kind(channel.get("payload"))
    except ValueError as exc:
        raise unprocessable(str(exc), "Subscription.channel") from None
    if any("\r" in h or "\n" in h for h in headers):
        raise unprocessable("channel.header values may not contain line breaks", "Subscription.channel.header")
    endpoint = channel.get("endpoint")
    if kind == "rest-hook":
        parts = urlsplit(endpoint or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise unprocessable("A rest-hook channel needs an http(s) endpoint URL", "Subscription.channel.endpoint")
    return Channel(kind, endpoint, channel.get("payload"), headers)


def _endpoint_of(subscription: dict | None) -> str | None:
    return ((subscription or {}).get("channel") or {}).get("endpoint")


def read_criteria(subscription: dict) -> Criteria:
    try:
        return parse_criteria(subscription.get("criteria"))
    except CriteriaError as exc:
        raise unprocessable(str(exc), "Subscription.criteria") from None


def registry_entry(subscription: dict, version: int, moment: datetime) -> dict:
    """What the worker needs of a Subscription (see storage/outbox.py, `_subscriptions`)."""
    criteria = read_criteria(subscription)
    return {
        "_id": subscription["id"], "resource_type": criteria.resource_type,
        "criteria": [list(p) for p in criteria.params], "channel": read_channel(subscription).as_document(),
        "status": subscription.get("status"), "end": instant_or_none(subscription.get("end")), "version": version,
        "updated": moment,
    }


# -- owners ---------------------------------------------------------------------------------------
def actor_key(actor: Actor) -> str:
    """A stable identity of an actor across tokens (the same person or software)."""
    if actor.kind == "patient" and actor.ins:
        return f"patient:{actor.ins}"
    if actor.kind == "practitioner" and actor.rpps:
        return f"ps:{actor.rpps}"
    if actor.kind == "system":
        return f"system:{actor.client_id or actor.subject}"
    return f"{actor.kind}:{actor.subject}"


def owner_of(actor: Actor, access: Any = None) -> dict:
    """What is kept of a subscription's owner: its key, the claims to act as them later, and the
    keys by which the access policy recognises them (`read_keys`, see `Notifier._mark_owner`)."""
    claims = {"actor": actor.kind, "sub": actor.subject, "scope": str(actor.scopes), "ins": actor.ins,
              "rpps": actor.rpps, "profession": actor.profession, "specialty": actor.specialty,
              "organization": actor.organization, "purpose_of_use": actor.purpose_of_use,
              "client_id": actor.client_id, "name": actor.name}
    if claims["purpose_of_use"] == "ETREAT":
        # break-the-glass is for the moment of the emergency, not a standing right of a subscription
        claims["purpose_of_use"] = "TREAT"
    if actor.kind == "patient":
        read_keys = list(getattr(access, "patients", None) or [])
    elif actor.kind == "practitioner" and actor.rpps:
        read_keys = [f"ps:{actor.rpps}"]
    else:
        read_keys = [actor_key(actor)]
    return {"key": actor_key(actor), "claims": {k: v for k, v in claims.items() if v is not None},
            "read_keys": read_keys}


def owner_actor(owner: dict | None) -> Actor | None:
    """The owner as an Actor again (None for a subscription without owner: the server's own)."""
    if not owner:
        return None
    return actor_from_claims({k: v for k, v in owner["claims"].items() if k in OWNER_CLAIMS})


# -- the write rule -------------------------------------------------------------------------------
class SubscriptionRules:
    """Write rule for Subscription: a valid, deliverable, authorised subscription, or a refusal."""

    def __init__(self, server: FhirServer, registry: NotifyStore,
                 endpoint_policy: Callable[[], EndpointPolicy] = EndpointPolicy.from_environment) -> None:
        self.server = server
        self.registry = registry            # the owners of existing subscriptions
        self.endpoint_policy = endpoint_policy

    def check(self, event: WriteEvent) -> None:
        if event.resource_type != SUBSCRIPTION:
            return
        actor = event.ctx.access.actor if event.ctx.access is not None else None
        if actor is not None and event.old is not None:
            self._check_owner(event.resource_id, actor)
        if event.new is None:
            return
        self._check_status(event.new, event.old, actor)
        channel = read_channel(event.new)
        criteria = read_criteria(event.new)
        self._check_searchable(criteria)
        if actor is not None:
            self._authorise(criteria, actor, event.ctx)
        if channel.type == "rest-hook" and _endpoint_of(event.new) != _endpoint_of(event.old):
            self._check_endpoint(channel.endpoint or "")

    def _check_endpoint(self, endpoint: str) -> None:
        """Only when the endpoint is new: a subscription whose endpoint the policy no longer allows
        may still be turned off (and the worker may still set it to error)."""
        try:
            self.endpoint_policy().check(endpoint)
        except EndpointRefused as exc:
            raise unprocessable(f"Subscription.channel.endpoint refused: {exc}", "Subscription.channel.endpoint") \
                from None

    def _check_owner(self, subscription_id: str, actor: Actor) -> None:
        entry = self.registry.subscription(subscription_id)
        owner = (entry or {}).get("owner")
        if owner and actor.kind != "system" and owner["key"] != actor_key(actor):
            raise error(403, "forbidden", "Only the owner of this Subscription (or a trusted system) may change it")

    @staticmethod
    def _check_status(new: dict, old: dict | None, actor: Actor | None) -> None:
        status = new.get("status")
        unchanged = old is not None and old.get("status") == status
        if actor is not None and status not in CLIENT_STATUSES and not unchanged:
            raise unprocessable(f"A client may set status requested, active or off, not {status!r} (the server "
                                "sets error)", "Subscription.status")

    def _check_searchable(self, criteria: Criteria) -> None:
        """Run the criteria once as a search (nothing returned) so that a subscription that could
        never match is refused now rather than silently never notifying."""
        try:
            self.server.search.search(criteria.resource_type, [*criteria.params, ("_count", "0")], base_url="",
                                      strict=True)
        except FhirError as exc:
            reason = "; ".join(i.diagnostics for i in exc.issues)
            raise unprocessable(f"Subscription.criteria is not a search this server supports: {reason}",
                                "Subscription.criteria") from None

    def _authorise(self, criteria: Criteria, actor: Actor, ctx: RequestContext) -> None:
        if not actor.scopes.allows(criteria.resource_type, "search"):
            raise error(403, "forbidden", f"The token's scopes do not allow searching {criteria.resource_type}, so "
                        "it may not subscribe to it")
        if actor.kind == "system":
            return
        if actor.kind not in ("patient", "practitioner"):
            raise error(403, "forbidden", f"A {actor.kind} may not subscribe to notifications")
        patients = restricted_patients(criteria, self.patient_params(criteria.resource_type))
        if patients is None:
            raise unprocessable("The criteria must be restricted to one patient's record, e.g. "
                                f"{criteria.resource_type}?patient=Patient/<id>", "Subscription.criteria")
        for patient in sorted(patients):
            if not self._may_see(patient, actor, ctx):
                raise error(403, "forbidden", f"This subscription would notify about {patient}, whose record the "
                            "requester may not see")

    def patient_params(self, resource_type: str) -> frozenset[str]:
        """The search parameters that tie a resource of this type to a patient."""
        if resource_type == "Patient":
            return frozenset({"_id"})
        params = set(self.server.policy.compartment_params.get(resource_type, []))
        if self.server.search_registry.param(resource_type, "patient") is not None:
            params.add("patient")
        return frozenset(params)

    def _may_see(self, patient: str, actor: Actor, ctx: RequestContext) -> bool:
        if actor.kind == "patient":
            return patient in ctx.access.patients
        try:
            self.server.interactions.read("Patient", patient.split("/", 1)[1], ctx)
        except FhirError:
            return False
        return True
