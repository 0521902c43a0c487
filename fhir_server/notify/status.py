"""`GET Subscription/[id]/$status`: the state of a subscription and its delivery log, as
Parameters, for its owner (or a trusted system / auditor):

    subscription        Reference        the Subscription
    status              code             its status (requested | active | error | off)
    error               string           Subscription.error, when in error
    consecutiveFailures integer          failures of its channel since the last success
    lastError           string           the last failure, if any
    count               (parts)          deliveries per state: pending, delivered, skipped, cancelled
    delivery            (parts), newest first (`_count`, default 20, at most 100):
        focus           Reference        Type/id/_history/version that triggered it
        state           code             pending | delivered | skipped | cancelled
        created         instant
        attempts        integer          how many attempts so far
        nextAttempt     instant          when pending
        lastError       string
        attempt         (parts)          each recorded attempt: at, outcome (ok | failed |
                                         skipped), httpStatus, error
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.engine.errors import bad_request, error
from fhir_server.engine.model import Result, instant
from fhir_server.engine.operations import Operation, OperationCall
from fhir_server.notify.subscriptions import SUBSCRIPTION, actor_key

if TYPE_CHECKING:
    from fhir_server.notify.notifier import Notifier

DEFAULT_COUNT = 20
MAX_COUNT = 100
STATES = ("pending", "delivered", "skipped", "cancelled")
DEFINITION = "https://espace.example.org/fhir/OperationDefinition/Subscription-status"


def status_operation(notifier: Notifier) -> Operation:
    return Operation(
        name="status", handler=lambda call: status(notifier, call), resource_types=(SUBSCRIPTION,),
        type_level=False, instance=True, definition=DEFINITION,
        documentation="State of a Subscription and its delivery log (attempts, last error)")


def status(notifier: Notifier, call: OperationCall) -> Result:
    subscription = notifier.server.interactions.read(SUBSCRIPTION, call.resource_id, call.ctx).body
    entry = notifier.store.subscription(call.resource_id) or {}
    _check_reader(call, entry)
    deliveries = notifier.store.deliveries(call.resource_id, _count(call.arguments))
    counts = notifier.store.delivery_counts(call.resource_id)
    return Result(200, status_parameters(subscription, entry, counts, deliveries))


def _check_reader(call: OperationCall, entry: dict) -> None:
    access = call.ctx.access
    actor = access.actor if access is not None else None
    if actor is None or actor.kind in ("system", "auditor"):
        return
    owner = entry.get("owner")
    if owner is None or owner["key"] != actor_key(actor):
        raise error(403, "forbidden", "Only the owner of this Subscription may read its delivery status")


def _count(params: list[tuple[str, str]]) -> int:
    value = next((v for k, v in params if k == "_count"), None)
    if value is None:
        return DEFAULT_COUNT
    if not value.isdigit():
        raise bad_request(f"_count={value!r} must be a non-negative integer", "_count")
    return min(int(value), MAX_COUNT)


def status_parameters(subscription: dict, entry: dict, counts: dict[str, int], deliveries: list[dict]) -> dict:
    parameters: list[dict] = [
        {"name": "subscription", "valueReference": {"reference": f"{SUBSCRIPTION}/{subscription['id']}"}},
        {"name": "status", "valueCode": subscription.get("status")},
    ]
    if subscription.get("error"):
        parameters.append({"name": "error", "valueString": subscription["error"]})
    parameters.append({"name": "consecutiveFailures", "valueInteger": int(entry.get("failures") or 0)})
    if entry.get("last_error"):
        parameters.append({"name": "lastError", "valueString": entry["last_error"]})
    parameters.append({"name": "count", "part": [{"name": state, "valueInteger": counts.get(state, 0)}
                                                 for state in STATES]})
    parameters.extend({"name": "delivery", "part": _delivery_parts(d)} for d in deliveries)
    return {"resourceType": "Parameters", "parameter": parameters}


def _delivery_parts(delivery: dict) -> list[dict]:
    parts: list[dict] = [
        {"name": "focus", "valueReference": {"reference": f"{delivery['focus']}/_history/{delivery['version']}"}},
        {"name": "state", "valueCode": delivery["state"]},
        {"name": "created", "valueInstant": instant(delivery["created"])},
        {"name": "attempts", "valueInteger": int(delivery.get("tries") or 0)},
    ]
    if delivery["state"] == "pending":
        parts.append({"name": "nextAttempt", "valueInstant": instant(delivery["due"])})
    if delivery.get("last_error"):
        parts.append({"name": "lastError", "valueString": delivery["last_error"]})
    parts.extend({"name": "attempt", "part": _attempt_parts(a)} for a in delivery.get("attempts") or [])
    return parts


def _attempt_parts(attempt: dict) -> list[dict]:
    parts: list[dict] = [{"name": "at", "valueInstant": instant(attempt["at"])},
                         {"name": "outcome", "valueCode": attempt["outcome"]}]
    if attempt.get("status") is not None:
        parts.append({"name": "httpStatus", "valueInteger": attempt["status"]})
    if attempt.get("error"):
        parts.append({"name": "error", "valueString": attempt["error"]})
    return parts
