"""The R4 websocket channel through FastAPI's TestClient: authenticate, `bind <id>`, `bound <id>`,
then `ping <id>` for each notification; refusals; `$status` when nobody is listening; several
server processes on one database (the socket in one, the write in another)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from fhir_server.access.devissuer import mint, patient_claims, practitioner_claims
from fhir_server.engine.model import now
from fhir_server.rest.app import create_app
from fhir_server.rest.websocket import WEBSOCKET_PATH
from fhir_server.storage.outbox import NOBODY_BOUND
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


# -- several server processes on one database -----------------------------------------------------
@pytest.fixture
def other_process(client, patient, settings, mongo_uri) -> Iterator[TestClient]:
    """A second server process on the same database, like another uvicorn worker."""
    with TestClient(create_app(settings, mongo_uri), base_url="http://testserver", headers=client.headers) as other:
        use_fast_worker(other)
        yield other
        idle_worker_at_teardown(other)


def handed_to(client, subscription_id: str, process: str) -> list[dict]:
    """The deliveries of the subscription handed to `process` for its sockets."""
    return [d for d in client.app.state.fhir.notifier.store.deliveries(subscription_id, 10)
            if process in d.get("targets", [])]


def test_a_socket_held_by_one_process_is_pinged_for_a_write_handled_by_another(client, patient, other_process):
    subscription_id = websocket_subscription(client, patient)
    holder = other_process.app.state.fhir.notifier
    # Only the first process works the outbox, so it is the one that must hand the delivery over.
    holder.worker.stop()
    try:
        with other_process.websocket_connect(WEBSOCKET_PATH, headers=patient) as websocket:
            websocket.send_text(f"bind {subscription_id}")
            assert receive(websocket) == f"bound {subscription_id}"
            assert client.post("/fhir/DocumentReference", json=document("ws-a", "Écrit ailleurs")).status_code == 201
            wait_until(lambda: handed_to(client, subscription_id, holder.process_id), what="the hand-over")
            holder.worker.start()
            assert receive(websocket) == f"ping {subscription_id}"
    finally:
        holder.worker.start()
    wait_until(lambda: counts(status_of(client, subscription_id, patient))["delivered"] == 1, what="delivered")


def test_sockets_bound_in_two_processes_are_each_pinged(client, patient, other_process):
    subscription_id = websocket_subscription(client, patient)
    with client.websocket_connect(WEBSOCKET_PATH, headers=patient) as here, \
            other_process.websocket_connect(WEBSOCKET_PATH, headers=patient) as there:
        for websocket in (here, there):
            websocket.send_text(f"bind {subscription_id}")
            assert receive(websocket) == f"bound {subscription_id}"
        assert other_process.post("/fhir/DocumentReference", json=document("ws-a", "Deux écoutes")).status_code == 201
        assert receive(here) == f"ping {subscription_id}"
        assert receive(there) == f"ping {subscription_id}"
    wait_until(lambda: counts(status_of(client, subscription_id, patient))["delivered"] == 1, what="delivered")


def test_a_delivery_handed_to_a_process_that_died_is_settled_once_it_stops_answering(client, patient):
    subscription_id = websocket_subscription(client, patient)
    store = client.app.state.fhir.notifier.store
    store.hold_socket(subscription_id, "a-process-that-dies", now())
    assert client.post("/fhir/DocumentReference", json=document("ws-a", "Pour un mort")).status_code == 201
    wait_until(lambda: handed_to(client, subscription_id, "a-process-that-dies"), what="the hand-over")
    # it died: no worker of its says it is alive any more
    store.hold_socket(subscription_id, "a-process-that-dies", now() - timedelta(hours=1))
    wait_until(lambda: counts(status_of(client, subscription_id, patient))["skipped"] == 1, what="the settlement")
    [delivery] = deliveries(status_of(client, subscription_id, patient))
    assert delivery["lastError"] == NOBODY_BOUND
    assert store.socket_holders(subscription_id, now() - timedelta(days=1)) == []
