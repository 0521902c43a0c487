"""Delivery building blocks without a database: backoff, channel settings, the websocket hub,
the $status Parameters and subscription owners."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_server.access.devissuer import practitioner_claims
from fhir_server.access.tokens import actor_from_claims
from fhir_server.notify import NotifyConfig, WebsocketHub
from fhir_server.notify.channels import header_pairs, payload_kind, websocket
from fhir_server.notify.status import status_parameters
from fhir_server.notify.subscriptions import actor_key, owner_actor, owner_of

MOMENT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def test_backoff_doubles_and_is_capped():
    config = NotifyConfig(retry_base_seconds=2, retry_max_seconds=30)
    assert [config.backoff(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


def test_delivery_log_ttl_setting(monkeypatch):
    monkeypatch.delenv("FHIR_NOTIFY_DELIVERY_LOG_TTL_DAYS", raising=False)
    assert NotifyConfig().delivery_log_ttl_seconds == 30 * 86_400
    monkeypatch.setenv("FHIR_NOTIFY_DELIVERY_LOG_TTL_DAYS", "0.5")
    assert NotifyConfig().delivery_log_ttl_seconds == 43_200
    monkeypatch.setenv("FHIR_NOTIFY_DELIVERY_LOG_TTL_DAYS", "0")
    assert NotifyConfig().delivery_log_ttl_seconds is None


def test_endpoint_allow_list_setting(monkeypatch):
    monkeypatch.setenv("FHIR_SUBSCRIPTION_ENDPOINTS", "https://hooks.example.org/espace, 127.0.0.1")
    assert [entry.host for entry in NotifyConfig().endpoints.allowed] == ["hooks.example.org", "127.0.0.1"]
    monkeypatch.delenv("FHIR_SUBSCRIPTION_ENDPOINTS")
    assert NotifyConfig().endpoints.allowed == ()


def test_channel_headers_and_payload():
    assert header_pairs(["Authorization: Bearer a:b", "X-Y:z"]) == [("Authorization", "Bearer a:b"), ("X-Y", "z")]
    with pytest.raises(ValueError):
        header_pairs(["nothing"])
    assert payload_kind(None) is None and payload_kind("") is None
    assert payload_kind("application/fhir+json; charset=utf-8") == "json"
    assert payload_kind("application/fhir+xml") == "xml"
    with pytest.raises(ValueError):
        payload_kind("text/plain")


class Listener:
    def __init__(self, alive: bool = True) -> None:
        self.alive = alive
        self.sent: list[str] = []

    def send(self, text: str) -> bool:
        self.sent.append(text)
        return self.alive


def test_hub_pings_bound_listeners_and_drops_dead_ones():
    hub = WebsocketHub()
    good, dead, other = Listener(), Listener(alive=False), Listener()
    hub.bind("s1", good)
    hub.bind("s1", good)                                   # bound once
    hub.bind("s1", dead)
    hub.bind("s2", other)
    outcome = websocket(hub, "s1")
    assert outcome.ok and not outcome.skipped
    assert good.sent == ["ping s1"] and other.sent == []
    assert hub.listeners("s1") == [good]                   # the dead one is gone
    hub.unbind(good)
    assert websocket(hub, "s1").skipped


def test_owner_round_trip_drops_break_the_glass():
    actor = actor_from_claims({**practitioner_claims("123", "10", purpose_of_use="ETREAT"), "name": "Dr C"})
    owner = owner_of(actor)
    assert owner["key"] == actor_key(actor) == "ps:123"
    again = owner_actor(owner)
    assert (again.rpps, again.profession, again.name, again.purpose_of_use) == ("123", "10", "Dr C", "TREAT")
    assert not again.is_emergency
    assert str(again.scopes) == str(actor.scopes)
    assert owner_actor(None) is None


def test_status_parameters():
    subscription = {"resourceType": "Subscription", "id": "s1", "status": "error", "error": "Delivery failed"}
    entry = {"failures": 3, "last_error": "POST http://x answered 503"}
    delivery = {"focus": "DocumentReference/d1", "version": 2, "state": "pending", "created": MOMENT, "due": MOMENT,
                "tries": 1, "last_error": "boom",
                "attempts": [{"at": MOMENT, "outcome": "failed", "status": 503, "error": "boom"}]}
    parameters = status_parameters(subscription, entry, {"pending": 1}, [delivery])
    by_name = {p["name"]: p for p in parameters["parameter"]}
    assert by_name["status"]["valueCode"] == "error"
    assert by_name["error"]["valueString"] == "Delivery failed"
    assert by_name["consecutiveFailures"]["valueInteger"] == 3
    assert by_name["count"]["part"][0] == {"name": "pending", "valueInteger": 1}
    parts = {p["name"]: p for p in by_name["delivery"]["part"]}
    assert parts["focus"]["valueReference"] == {"reference": "DocumentReference/d1/_history/2"}
    assert parts["nextAttempt"]["valueInstant"] == "2026-03-01T09:30:00.000Z"
    assert parts["attempt"]["part"] == [{"name": "at", "valueInstant": "2026-03-01T09:30:00.000Z"},
                                        {"name": "outcome", "valueCode": "failed"},
                                        {"name": "httpStatus", "valueInteger": 503},
                                        {"name": "error", "valueString": "boom"}]
