"""R4 Subscriptions with the rest-hook channel, delivered to a local HTTP receiver: activation,
payloads, retries while the receiver is down (nothing lost), a worker restart, a server restart,
the error state after repeated failures, `off`, deletion and the `$status` log; an endpoint that
DNS turns internal is not called; the delivery log expires (TTL index)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pymongo.errors import OperationFailure

from fhir_server.engine.model import now
from fhir_server.notify.endpoints import EndpointPolicy
from fhir_server.server import FhirServer
from tests.http.test_notify_support import (
    Receiver,
    counts,
    deliveries,
    document,
    idle_worker_at_teardown,
    minimal_documents,
    parameter,
    patient_resource,
    status_of,
    subscription,
    use_fast_worker,
    wait_active,
    wait_until,
)

COMMAND_NOT_FOUND = 59


@pytest.fixture(scope="module", autouse=True)
def _minimal_documents():
    with minimal_documents():
        yield


@pytest.fixture(scope="module")
def server(client) -> Iterator[FhirServer]:
    use_fast_worker(client)
    for patient_id, ins in (("sub-a", "284037512345643"), ("sub-b", "190017512345679")):
        response = client.put(f"/fhir/Patient/{patient_id}", json=patient_resource(patient_id, ins))
        assert response.status_code in (200, 201), response.text
    yield client.app.state.fhir
    idle_worker_at_teardown(client)


@pytest.fixture
def receiver(client):
    receiver = Receiver().up()
    yield receiver
    receiver.down()
    # each test starts without the subscriptions of the others (their receivers are gone)
    for entry in client.get("/fhir/Subscription", params={"_count": "100"}).json().get("entry", []):
        client.delete(f"/fhir/Subscription/{entry['resource']['id']}")


def subscribe(client, criteria: str, endpoint: str, **channel) -> str:
    response = client.post("/fhir/Subscription", json=subscription(criteria, endpoint, **channel))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "requested"
    subscription_id = response.json()["id"]
    wait_active(client, subscription_id)
    return subscription_id


def add_document(client, patient_id: str, title: str) -> str:
    response = client.post("/fhir/DocumentReference", json=document(patient_id, title))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def delivered(client, subscription_id: str) -> int:
    return counts(status_of(client, subscription_id))["delivered"]


def test_rest_hook_without_payload_posts_an_empty_notification(client, server, receiver):
    subscription_id = subscribe(client, "DocumentReference?patient=Patient/sub-a", receiver.url,
                                header=["Authorization: Bearer secret-of-the-subscriber"])
    add_document(client, "sub-b", "Pas pour cet abonné")
    add_document(client, "sub-a", "Pour cet abonné")
    wait_until(lambda: receiver.received, what="the notification")
    time.sleep(0.2)                                       # no second, non-matching delivery
    [notification] = receiver.received
    assert (notification.method, notification.path, notification.body) == ("POST", "/hook", b"")
    assert notification.headers["authorization"] == "Bearer secret-of-the-subscriber"
    assert notification.headers["content-length"] == "0" and "content-type" not in notification.headers
    status = status_of(client, subscription_id)
    assert parameter(status, "status") == "active"
    [delivery] = deliveries(status)
    assert delivery["state"] == "delivered" and delivery["attempts"] == 1
    assert delivery["attempt"][0]["outcome"] == "ok" and delivery["attempt"][0]["httpStatus"] == 200


def test_rest_hook_with_payload_puts_the_resource_under_the_endpoint(client, server, receiver):
    subscribe(client, "DocumentReference?patient=Patient/sub-b", receiver.url.rsplit("/", 1)[0] + "/fhir",
              payload="application/fhir+json")
    document_id = add_document(client, "sub-b", "Avec contenu")
    wait_until(lambda: receiver.received, what="the notification")
    [notification] = receiver.received
    assert (notification.method, notification.path) == ("PUT", f"/fhir/DocumentReference/{document_id}")
    assert notification.headers["content-type"].startswith("application/fhir+json")
    assert json.loads(notification.body)["id"] == document_id


def test_nothing_is_lost_while_the_receiver_is_down(client, server, receiver):
    subscription_id = subscribe(client, "Communication?recipient=Patient/sub-a", receiver.url)
    receiver.down()
    for title in ("Un", "Deux", "Trois"):
        add_document(client, "sub-a", title)              # each one notifies sub-a: a Communication
    status = wait_until(lambda: (s := status_of(client, subscription_id)) and
                        parameter(s, "consecutiveFailures") >= 3 and s, what="failed attempts")
    assert "failed" in parameter(status, "lastError")
    assert parameter(status, "status") == "active"
    assert all(d["state"] == "pending" for d in deliveries(status))
    receiver.up()
    wait_until(lambda: len(receiver.received) == 3, what="the three notifications once the receiver is back")
    status = status_of(client, subscription_id)
    assert [d["state"] for d in deliveries(status)] == ["delivered"] * 3
    retried = [d for d in deliveries(status) if d["attempts"] > 1]
    assert retried and all(d["attempt"][0]["outcome"] == "failed" for d in retried)
    assert parameter(status, "consecutiveFailures") == 0
    posted = client.post(f"/fhir/Subscription/{subscription_id}/$status", json={
        "resourceType": "Parameters", "parameter": [{"name": "_count", "valueInteger": 2}]})
    assert posted.status_code == 200, posted.text
    assert len(deliveries(posted.json())) == 2             # `_count` read from the body


def test_undelivered_items_survive_a_worker_restart(client, server, receiver):
    subscription_id = subscribe(client, "DocumentReference?patient=Patient/sub-a", receiver.url)
    worker = server.notifier.worker
    worker.stop()
    try:
        add_document(client, "sub-a", "Écrit pendant l'arrêt")
        time.sleep(0.2)
        assert receiver.received == []
        assert server.notifier.store.pending_events() >= 1
    finally:
        worker.start()
    wait_until(lambda: receiver.received, what="delivery after the restart")
    assert delivered(client, subscription_id) == 1


def test_an_item_held_by_a_crashed_worker_is_taken_up_once_its_lease_expires(client, server, receiver):
    subscription_id = subscribe(client, "DocumentReference?patient=Patient/sub-a", receiver.url)
    worker = server.notifier.worker
    worker.stop()
    try:
        add_document(client, "sub-a", "Pris par un processus qui meurt")
        moment = now()
        held = server.notifier.store.claim_event(moment, moment + timedelta(seconds=1.5))   # ...and never finished
        assert held is not None
    finally:
        worker.start()
    time.sleep(0.2)
    assert receiver.received == []                        # still held
    wait_until(lambda: receiver.received, what="delivery after the lease expired")
    assert delivered(client, subscription_id) == 1


def test_undelivered_items_survive_a_server_restart(client, server, receiver, mongo_uri):
    subscription_id = subscribe(client, "DocumentReference?patient=Patient/sub-b", receiver.url)
    server.notifier.worker.stop()
    try:
        add_document(client, "sub-b", "Écrit avant le redémarrage")
        restarted = FhirServer(server.settings, mongo_uri, server.definitions)      # a new process, same data
        restarted.notifier.config = server.notifier.config
        restarted.start()
        try:
            wait_until(lambda: receiver.received, what="delivery by the restarted server")
        finally:
            restarted.close()
    finally:
        server.notifier.worker.start()
    assert delivered(client, subscription_id) == 1


def test_repeated_failures_put_the_subscription_in_error_until_it_is_requested_again(client, server, receiver):
    server.notifier.config = server.notifier.config.__class__(**{**server.notifier.config.__dict__,
                                                                 "max_failures": 3})
    try:
        subscription_id = subscribe(client, "DocumentReference?patient=Patient/sub-b", receiver.url)
        receiver.status = 503
        add_document(client, "sub-b", "Jamais reçu tant que l'abonné est en panne")

        def in_error() -> dict | None:
            body = client.get(f"/fhir/Subscription/{subscription_id}").json()
            return body if body["status"] == "error" else None

        errored = wait_until(in_error, what="the error status")
        assert errored["error"].startswith("Delivery failed 3 times in a row")
        assert "503" in errored["error"]
        status = status_of(client, subscription_id)
        assert parameter(status, "status") == "error" and parameter(status, "consecutiveFailures") == 3
        [delivery] = deliveries(status)
        assert delivery["state"] == "pending" and delivery["attempts"] == 3
        assert [a["httpStatus"] for a in delivery["attempt"]] == [503, 503, 503]

        add_document(client, "sub-b", "Écrit pendant l'état d'erreur")      # still collected
        receiver.status = 200                             # the subscriber repairs its endpoint...
        count = len(receiver.received)
        time.sleep(0.2)
        assert len(receiver.received) == count            # ...nothing is sent while in error
        errored["status"] = "requested"                   # ...and asks again
        assert client.put(f"/fhir/Subscription/{subscription_id}", json=errored).status_code == 200
        wait_active(client, subscription_id)
        wait_until(lambda: delivered(client, subscription_id) == 2, what="the held deliveries")
        assert "error" not in client.get(f"/fhir/Subscription/{subscription_id}").json()
    finally:
        use_fast_worker(client)


def test_an_off_subscription_is_not_notified(client, server, receiver):
    response = client.post("/fhir/Subscription", json={
        **subscription("DocumentReference?patient=Patient/sub-a", receiver.url), "status": "off"})
    assert response.status_code == 201
    add_document(client, "sub-a", "Ignoré")
    time.sleep(0.3)
    assert receiver.received == []
    assert client.get(f"/fhir/Subscription/{response.json()['id']}").json()["status"] == "off"


@pytest.mark.parametrize("how", ["delete", "off"])
def test_deleting_or_turning_off_a_subscription_cancels_its_pending_deliveries(client, server, receiver, how):
    subscription_id = subscribe(client, "DocumentReference?patient=Patient/sub-a", receiver.url)
    receiver.down()
    add_document(client, "sub-a", "Jamais livré")
    wait_until(lambda: parameter(status_of(client, subscription_id), "consecutiveFailures") >= 1, what="a failure")
    if how == "delete":
        assert client.delete(f"/fhir/Subscription/{subscription_id}").status_code == 200
    else:
        resource = client.get(f"/fhir/Subscription/{subscription_id}").json()
        response = client.put(f"/fhir/Subscription/{subscription_id}", json={**resource, "status": "off"})
        assert response.status_code == 200, response.text
    [delivery] = server.notifier.store.deliveries(subscription_id, 10)
    assert delivery["state"] == "cancelled"
    assert delivery["last_error"] == ("Subscription deleted" if how == "delete" else "Subscription turned off")


def test_an_ended_subscription_is_turned_off(client, server, receiver):
    response = client.post("/fhir/Subscription", json={
        **subscription("DocumentReference?patient=Patient/sub-a", receiver.url), "end": "2020-01-01T00:00:00Z"})
    assert response.status_code == 201
    wait_until(lambda: client.get(f"/fhir/Subscription/{response.json()['id']}").json()["status"] == "off",
               what="the off status")


def test_an_endpoint_whose_host_now_resolves_to_an_internal_address_is_not_called(client, server, receiver):
    """DNS may change after the subscription was accepted: each delivery resolves the host again
    and refuses a loopback / private answer, and the subscription goes to error at once."""
    dns = {"hooks.example.test": ["93.184.216.34"]}
    use_fast_worker(client, endpoints=EndpointPolicy.parse("", lambda host, port: dns[host]))
    try:
        subscription_id = subscribe(client, "DocumentReference?patient=Patient/sub-a",
                                    f"http://hooks.example.test:{receiver.port}/hook")
        dns["hooks.example.test"] = ["127.0.0.1"]            # where the receiver listens
        add_document(client, "sub-a", "Ne doit pas partir")

        def in_error() -> dict | None:
            body = client.get(f"/fhir/Subscription/{subscription_id}").json()
            return body if body["status"] == "error" else None

        errored = wait_until(in_error, what="the error status")
    finally:
        use_fast_worker(client)
    assert errored["error"].startswith("Delivery refused")
    assert "127.0.0.1" in errored["error"]
    status = status_of(client, subscription_id)
    assert "refused" in parameter(status, "lastError")
    [delivery] = deliveries(status)
    assert delivery["state"] == "pending" and delivery["attempt"][0]["outcome"] == "failed"
    assert receiver.received == []


def prune_expired(store) -> None:
    """Run the embedded database's TTL sweep now (it runs once a minute by itself, like MongoDB's
    TTL monitor, which cannot be triggered: against a real MongoDB the test is skipped)."""
    try:
        store.db.client.admin.command("secantusAdmin.pruneTtl")
    except OperationFailure as exc:
        if exc.code != COMMAND_NOT_FOUND:
            raise
        pytest.skip("the database cannot be asked to expire documents now (a real MongoDB)")


def test_finished_deliveries_expire_with_the_delivery_log_ttl(server):
    store = server.notifier.store
    assert store.delivery_log_ttl() == 30 * 86_400                  # FHIR_NOTIFY_DELIVERY_LOG_TTL_DAYS
    moment = now()
    for delivery_id, state, finished, created in (
            ("ttl|old", "delivered", moment - timedelta(days=31), moment - timedelta(days=31)),
            ("ttl|recent", "delivered", moment - timedelta(days=29), moment - timedelta(days=29)),
            ("ttl|pending", "pending", None, moment - timedelta(days=60))):      # still to deliver: kept
        store.add_delivery({"_id": delivery_id, "subscription": "ttl", "state": state, "created": created,
                            **({"finished": finished} if finished else {})})
    prune_expired(store)
    assert sorted(d["_id"] for d in store.deliveries("ttl", 10)) == ["ttl|pending", "ttl|recent"]


def test_the_delivery_log_ttl_follows_the_setting(server):
    store = server.notifier.store
    try:
        store.ensure(86_400)
        assert store.delivery_log_ttl() == 86_400
        store.ensure(None)                                           # 0 days: kept for ever
        assert store.delivery_log_ttl() is None
    finally:
        store.ensure(server.notifier.config.delivery_log_ttl_seconds)
