"""Who may subscribe to what: a patient to their own record, a practitioner to records they may
see, a system client within its scopes; invalid subscriptions are refused before anything is
stored. Matches are evaluated with the owner's rights."""

from __future__ import annotations

import pytest

from fhir_server.access.devissuer import patient_claims, practitioner_claims, system_claims
from fhir_server.notify.endpoints import EndpointPolicy
from tests.http.conftest import bearer
from tests.http.test_access_scenarios import actor_provision, consent
from tests.http.test_notify_support import (
    Receiver,
    counts,
    document,
    idle_worker_at_teardown,
    minimal_documents,
    patient_resource,
    practitioner_resource,
    status_of,
    subscription,
    use_fast_worker,
    wait_active,
    wait_until,
)

INS_A, INS_B = "284037512345644", "190017512345680"
DOCTOR, BLOCKED = "10000000201", "10000000202"
VISIBILITY = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"


@pytest.fixture(scope="module", autouse=True)
def _minimal_documents():
    with minimal_documents():
        yield


@pytest.fixture(scope="module")
def world(client):
    use_fast_worker(client)
    for resource in (patient_resource("auth-a", INS_A), patient_resource("auth-b", INS_B),
                     practitioner_resource(DOCTOR), practitioner_resource(BLOCKED),
                     consent("consent-auth-a", "auth-a", {"type": "permit",
                                                          "provision": [actor_provision("deny", BLOCKED)]})):
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text
    yield client.app.state.fhir
    idle_worker_at_teardown(client)


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver().up()
    yield receiver
    receiver.down()


def post(client, body: dict, headers: dict):
    return client.post("/fhir/Subscription", json=body, headers=headers)


def patient_a(issuer_dir) -> dict:
    return bearer(issuer_dir, patient_claims(INS_A))


def doctor(issuer_dir, rpps: str = DOCTOR) -> dict:
    return bearer(issuer_dir, practitioner_claims(rpps, "10"))


# -- patients -------------------------------------------------------------------------------------
def test_a_patient_subscribes_to_their_own_record(client, world, issuer_dir, receiver):
    for criteria in ("Communication?recipient=Patient/auth-a", "DocumentReference?patient=auth-a",
                     "DocumentReference?subject=Patient/auth-a&status=current", "Patient?_id=auth-a"):
        response = post(client, subscription(criteria, receiver.url), patient_a(issuer_dir))
        assert response.status_code == 201, (criteria, response.text)


def test_a_patient_may_not_subscribe_to_another_record(client, world, issuer_dir, receiver):
    response = post(client, subscription("DocumentReference?patient=Patient/auth-b", receiver.url),
                    patient_a(issuer_dir))
    assert response.status_code == 403, response.text
    both = post(client, subscription("DocumentReference?patient=Patient/auth-a,Patient/auth-b", receiver.url),
                patient_a(issuer_dir))
    assert both.status_code == 403, both.text


def test_criteria_must_be_restricted_to_a_patient(client, world, issuer_dir, receiver):
    for criteria in ("DocumentReference?status=current", "DocumentReference", "Practitioner?name=Durand",
                     "DocumentReference?patient:missing=true"):
        response = post(client, subscription(criteria, receiver.url), patient_a(issuer_dir))
        assert response.status_code == 422, (criteria, response.text)
        assert "restricted to one patient" in response.text


# -- practitioners --------------------------------------------------------------------------------
def test_a_practitioner_subscribes_to_a_record_they_may_see(client, world, issuer_dir, receiver):
    response = post(client, subscription("DocumentReference?patient=Patient/auth-a", receiver.url),
                    doctor(issuer_dir))
    assert response.status_code == 201, response.text
    unrestricted = post(client, subscription("DocumentReference?status=current", receiver.url), doctor(issuer_dir))
    assert unrestricted.status_code == 422


def test_a_blocked_practitioner_may_not_subscribe(client, world, issuer_dir, receiver):
    response = post(client, subscription("DocumentReference?patient=Patient/auth-a", receiver.url),
                    doctor(issuer_dir, BLOCKED))
    assert response.status_code == 403, response.text
    other = post(client, subscription("DocumentReference?patient=Patient/auth-b", receiver.url),
                 doctor(issuer_dir, BLOCKED))
    assert other.status_code == 201, other.text


def test_deliveries_respect_the_owners_rights(client, world, issuer_dir, receiver):
    """A practitioner's subscription is not told about a document masked from professionals."""
    created = post(client, subscription("DocumentReference?patient=Patient/auth-b", receiver.url + "/doctor"),
                   doctor(issuer_dir))
    assert created.status_code == 201
    wait_active(client, created.json()["id"])
    masked = document("auth-b", "Masqué", securityLabel=[{"coding": [{"system": VISIBILITY, "code": "MASQUE_PS"}]}])
    assert client.post("/fhir/DocumentReference", json=masked).status_code == 201
    assert client.post("/fhir/DocumentReference", json=document("auth-b", "Visible")).status_code == 201
    wait_until(lambda: [r for r in receiver.received if r.path == "/hook/doctor"], what="the visible document")
    wait_until(lambda: counts(status_of(client, created.json()["id"]))["delivered"] == 1, what="$status")
    assert counts(status_of(client, created.json()["id"])) == {"pending": 0, "delivered": 1, "skipped": 0,
                                                               "cancelled": 0}      # one delivery only


# -- systems --------------------------------------------------------------------------------------
def test_a_system_subscribes_within_its_scopes(client, world, issuer_dir, receiver):
    scoped = bearer(issuer_dir, system_claims("system/Subscription.cruds system/Patient.rs", "scoped-client"))
    refused = post(client, subscription("DocumentReference?status=current", receiver.url), scoped)
    assert refused.status_code == 403, refused.text
    allowed = post(client, subscription("Patient?family=Martin", receiver.url), scoped)
    assert allowed.status_code == 201, allowed.text


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "expression"), [
    ({"criteria": "DocumentReference?patient=Patient/auth-a&unknown-param=1"}, "Subscription.criteria"),
    ({"criteria": "DocumentReference?patient=Patient/auth-a&_sort=date"}, "Subscription.criteria"),
    ({"criteria": "http://elsewhere/fhir/DocumentReference?patient=Patient/auth-a"}, "Subscription.criteria"),
    ({"criteria": "NotAType?patient=Patient/auth-a"}, "Subscription.criteria"),
    ({"channel": {"type": "email", "endpoint": "mailto:a@example.org"}}, "Subscription.channel.type"),
    ({"channel": {"type": "rest-hook"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "rest-hook", "endpoint": "ftp://example.org/x"}}, "Subscription.channel.endpoint"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://example.org/x", "payload": "text/csv"}},
     "Subscription.channel"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://example.org/x", "header": ["no colon"]}},
     "Subscription.channel"),
    ({"status": "error"}, "Subscription.status"),
    # the tests allow only 127.0.0.1 (FHIR_SUBSCRIPTION_ENDPOINTS)
    ({"channel": {"type": "rest-hook", "endpoint": "https://hooks.example.org/x"}}, "Subscription.channel.endpoint"),
])
def test_invalid_subscriptions_are_refused(client, world, change, expression):
    body = {**subscription("DocumentReference?patient=Patient/auth-a", "http://127.0.0.1:9/hook"), **change}
    response = client.post("/fhir/Subscription", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == [expression]


def subscription_count(client) -> int:
    return client.get("/fhir/Subscription", params={"_summary": "count"}).json()["total"]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]/hook",
                                      "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/hook",
                                      "gopher://hooks.example.org/x"])
def test_without_an_allow_list_internal_endpoints_are_refused_and_nothing_is_stored(client, world, endpoint):
    use_fast_worker(client, endpoints=EndpointPolicy.parse(""))
    try:
        before = subscription_count(client)
        response = client.post("/fhir/Subscription",
                               json=subscription("DocumentReference?patient=Patient/auth-a", endpoint))
        assert response.status_code == 422, response.text
        assert response.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]
        assert subscription_count(client) == before
    finally:
        use_fast_worker(client)


def test_an_endpoint_changed_to_one_outside_the_allow_list_is_refused(client, world, receiver):
    created = client.post("/fhir/Subscription", json=subscription("DocumentReference?patient=Patient/auth-a",
                                                                   receiver.url))
    assert created.status_code == 201, created.text
    resource = wait_active(client, created.json()["id"])
    moved = {**resource, "channel": {**resource["channel"], "endpoint": "https://hooks.example.org/x"}}
    response = client.put(f"/fhir/Subscription/{resource['id']}", json=moved)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]
    assert client.get(f"/fhir/Subscription/{resource['id']}").json()["channel"]["endpoint"] == receiver.url


# -- ownership ------------------------------------------------------------------------------------
def test_only_the_owner_changes_a_subscription_or_reads_its_status(client, world, issuer_dir, receiver):
    created = post(client, subscription("Communication?recipient=Patient/auth-a", receiver.url),
                   patient_a(issuer_dir))
    assert created.status_code == 201
    subscription_id = created.json()["id"]
    resource = wait_active(client, subscription_id)
    intruder = doctor(issuer_dir)
    changed = {**resource, "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/stolen"}}
    # 403 from the subscription rules; 404 once the access policy hides others' subscriptions
    assert client.put(f"/fhir/Subscription/{subscription_id}", json=changed, headers=intruder).status_code in (403, 404)
    assert client.delete(f"/fhir/Subscription/{subscription_id}", headers=intruder).status_code in (403, 404)
    assert client.get(f"/fhir/Subscription/{subscription_id}/$status", headers=intruder).status_code in (403, 404)
    status_of(client, subscription_id, patient_a(issuer_dir))                      # the owner may
    status_of(client, subscription_id)                                             # so may a trusted system
    turned_off = {**resource, "status": "off"}
    response = client.put(f"/fhir/Subscription/{subscription_id}", json=turned_off, headers=patient_a(issuer_dir))
    assert response.status_code == 200, response.text


def test_subscriptions_carry_their_owners_keys_for_the_access_policy(client, world, issuer_dir, receiver):
    """`_owner` on the stored Subscription (and its versions) is what the access policy filters
    on, so that nobody else reads the endpoint and its headers."""
    store = world.store
    by_patient = post(client, subscription("Communication?recipient=Patient/auth-a", receiver.url),
                      patient_a(issuer_dir)).json()["id"]
    by_doctor = post(client, subscription("DocumentReference?patient=Patient/auth-a", receiver.url),
                     doctor(issuer_dir)).json()["id"]
    wait_active(client, by_patient)                                      # version 2, written by the worker
    assert store.get("Subscription", by_patient)["_owner"] == ["Patient/auth-a"]
    assert store.get("Subscription", by_doctor)["_owner"] == [f"ps:{DOCTOR}"]
    for version in (1, 2):
        assert store.get_version("Subscription", by_patient, version)["_owner"] == ["Patient/auth-a"]
    # the filter the policy applies for a practitioner with these keys
    assert store.get("Subscription", by_doctor, where={"_owner": {"$in": [f"ps:{DOCTOR}"]}}) is not None
    assert store.get("Subscription", by_patient, where={"_owner": {"$in": [f"ps:{DOCTOR}"]}}) is None


def test_nobody_else_reads_a_subscription(client, world, issuer_dir, receiver):
    created = post(client, subscription("Communication?recipient=Patient/auth-a", receiver.url,
                                        header=["Authorization: Bearer secret"]), patient_a(issuer_dir))
    subscription_id = created.json()["id"]
    assert client.get(f"/fhir/Subscription/{subscription_id}", headers=patient_a(issuer_dir)).status_code == 200
    assert client.get(f"/fhir/Subscription/{subscription_id}", headers=doctor(issuer_dir)).status_code == 404
    other_patient = bearer(issuer_dir, patient_claims(INS_B))
    assert client.get(f"/fhir/Subscription/{subscription_id}", headers=other_patient).status_code == 404
    found = client.get("/fhir/Subscription", headers=doctor(issuer_dir)).json()
    assert subscription_id not in {e["resource"]["id"] for e in found.get("entry", []) if "resource" in e}
