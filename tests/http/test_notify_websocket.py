"""The R4 websocket channel through FastAPI's TestClient: authenticate, `bind <id>`, `bound <id>`,
then `ping <id>` for each notification; refusals; `$status` when nobody is listening."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import pytest

from fhir_server.access.devissuer import mint, patient_claims, practitioner_claims
from fhir_server.rest.websocket import WEBSOCKET_PATH
from tests.http.conftest import bearer
from tests.http.test_notify_support import (
    counts,
    deliveries,
    document,
    idle_worker_at_teardown,
    minimal_documents,
    patient_resource,
    status_of,
    subscription,
    use_fast_worker,
    wait_active,
    wait_until,
)

INS = "284037512345645"


@pytest.fixture(scope="module", autouse=True)
def _minimal_documents():
    with minimal_documents():
        yield


@pytest.fixture(scope="module")
def patient(client, issuer_dir) -> Iterator[dict]:
    use_fast_worker(client)
    response = client.put("/fhir/Patient/ws-a", json=patient_resource("ws-a", INS))
    assert response.status_code in (200, 201), response.text
    yield bearer(issuer_dir, patient_claims(INS))
    idle_worker_at_teardown(client)


def websocket_subscription(client, headers: dict) -> str:
    response = client.post("/fhir/Subscription", json=subscription("DocumentReference?patient=Patient/ws-a",
                                                                   channel="websocket"), headers=headers)
    assert response.status_code == 201, response.text
    wait_active(client, response.json()["id"])
    return response.json()["id"]


def receive(websocket, timeout: float = 10.0) -> str:
    """receive_text with a time limit (the TestClient's blocks for ever)."""
    box: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: box.put(websocket.receive_text()), daemon=True).start()
    try:
        return box.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("no websocket message within the time limit") from None


def test_bind_then_ping_on_each_notification(client, patient):
    subscription_id = websocket_subscription(client, patient)
    with client.websocket_connect(WEBSOCKET_PATH, headers=patient) as websocket:
        websocket.send_text(f"bind {subscription_id}")
        assert receive(websocket) == f"bound {subscription_id}"
        for title in ("Premier", "Second"):
            assert client.post("/fhir/DocumentReference", json=document("ws-a", title)).status_code == 201
            assert receive(websocket) == f"ping {subscription_id}"
    status = status_of(client, subscription_id, patient)
    assert counts(status)["delivered"] == 2


def test_the_token_may_come_in_the_query_for_browsers(client, patient, issuer_dir):
    subscription_id = websocket_subscription(client, patient)
    token = mint(issuer_dir, patient_claims(INS))
    with client.websocket_connect(f"{WEBSOCKET_PATH}?access_token={token}") as websocket:
        websocket.send_text(f"bind Subscription/{subscription_id}")
        assert receive(websocket) == f"bound {subscription_id}"


def test_without_a_token_the_connection_is_refused(client, patient):
    with client.websocket_connect(WEBSOCKET_PATH, headers={"Authorization": ""}) as websocket:
        assert receive(websocket).startswith("error 401 ")


def test_binding_is_for_the_owner_of_a_websocket_subscription(client, patient, issuer_dir):
    subscription_id = websocket_subscription(client, patient)
    rest_hook = client.post("/fhir/Subscription", json=subscription("DocumentReference?patient=Patient/ws-a",
                                                                     "http://127.0.0.1:9/hook"), headers=patient)
    stranger = bearer(issuer_dir, practitioner_claims("10000000301", "10"))
    with client.websocket_connect(WEBSOCKET_PATH, headers=stranger) as websocket:
        websocket.send_text(f"bind {subscription_id}")
        assert receive(websocket).startswith("error 403 ")
        websocket.send_text("bind does-not-exist")
        assert receive(websocket).startswith("error 404 ")
        websocket.send_text("hello")
        assert receive(websocket).startswith("error 400 ")
    with client.websocket_connect(WEBSOCKET_PATH, headers=patient) as websocket:
        websocket.send_text(f"bind {rest_hook.json()['id']}")
        assert receive(websocket).startswith("error 400 ")


def test_a_notification_with_nobody_bound_is_logged_as_skipped(client, patient):
    subscription_id = websocket_subscription(client, patient)
    assert client.post("/fhir/DocumentReference", json=document("ws-a", "Personne n'écoute")).status_code == 201
    wait_until(lambda: counts(status_of(client, subscription_id, patient))["skipped"] >= 1, what="a skipped delivery")
    [delivery, *_] = deliveries(status_of(client, subscription_id, patient))
    assert delivery["lastError"] == "no websocket client was bound to the subscription"
    assert client.get(f"/fhir/Subscription/{subscription_id}").json()["status"] == "active"
