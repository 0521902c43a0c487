"""Concurrent recording on one patient keeps one unbroken chain (no silent fork); through the
server, concurrent requests on one patient all succeed, each audited once; a chain that stays
busy fails the request as transient (503), never with a 500 and never unaudited."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from fhir_server.audit import AuditTrail, verify_chains
from fhir_server.audit import trail as trail_module
from fhir_server.audit.chain import chain_key
from fhir_server.config import Settings
from fhir_server.storage import MongoStore, StorageConflict
from tests.audit.conftest import read_record
from tests.http.conftest import running_app

THREADS = 8
PER_THREAD = 6


def hammer(action: Callable[[int, int], None], count: int = THREADS, rounds: int = PER_THREAD) -> None:
    """Run `action(thread, i)` `rounds` times in each of `count` threads started together."""
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def worker(thread: int) -> None:
        start.wait()
        try:
            for i in range(rounds):
                action(thread, i)
        except BaseException as exc:          # reported by the assertion below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def assert_one_chain(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    report = trail.verify(patient)
    assert report.ok, report.to_text()
    assert report.chains[0].events == THREADS * PER_THREAD
    docs = store.find("AuditEvent", {"_audit.chain": f"audit-chain:{patient}"})
    assert sorted(d["_audit"]["seq"] for d in docs) == list(range(1, THREADS * PER_THREAD + 1))


def test_threads_recording_on_one_patient(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    hammer(lambda thread, i: trail.record(read_record(patient, minutes=thread * 100 + i)))
    assert_one_chain(trail, store, patient)


def test_threads_recording_inside_their_own_write_transactions(trail: AuditTrail, store: MongoStore,
                                                               patient: str) -> None:
    """How the engine should call it: the whole write transaction is retried by the driver when
    the chain head conflicts (transient transaction error)."""
    def write_and_audit(thread: int, i: int) -> None:
        with store.client.start_session() as session:
            session.with_transaction(lambda s: trail.record(read_record(patient, minutes=thread * 100 + i), s))

    hammer(write_and_audit)
    assert_one_chain(trail, store, patient)


@pytest.fixture
def store_without_transactions(mongo_uri: str, store: MongoStore) -> Iterator[MongoStore]:
    """The same database seen as a standalone server (no multi-document transactions): only the
    compare-and-set on the head protects the chain there."""
    standalone = MongoStore(mongo_uri, store.db.name)
    standalone._supports_transactions = False
    yield standalone
    standalone.close()


def test_threads_recording_without_transactions(store_without_transactions: MongoStore, indexer, policy,
                                                patient: str) -> None:
    trail = AuditTrail(store_without_transactions, indexer, policy)
    hammer(lambda thread, i: trail.record(read_record(patient, minutes=thread * 100 + i)))
    assert_one_chain(trail, store_without_transactions, patient)


def test_an_append_inside_a_transaction_goes_on_when_the_chain_lock_stays_held(trail: AuditTrail, store: MongoStore,
                                                                              patient: str) -> None:
    """A request of this process holding the chain (here: this very thread, which would deadlock
    on a blocking wait) only delays an append made inside the caller's transaction."""
    trail.record(read_record(patient, minutes=0))
    with trail.locks.holding([chain_key(patient)]), store.transaction() as session:
        [event_id] = trail.record(read_record(patient, minutes=1), session)
    assert store.get("AuditEvent", event_id)["_audit"]["seq"] == 2
    assert trail.verify(patient).ok


# -- through the whole server: concurrent reads, searches and writes of one patient -------------
READERS = 16
ROUNDS = 4
# What each thread does at each round, in turn: mostly reads and searches, some writes.
KINDS = ("read", "search-type", "read", "search-type", "create")


@pytest.fixture(scope="module")
def client(mongo_uri: str, database_name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    issuer_dir = tmp_path_factory.mktemp("issuer")
    settings = Settings(mongodb_db=f"{database_name}_app", dev_issuer=True, data_dir=tmp_path_factory.mktemp("data"),
                        dev_issuer_dir_override=issuer_dir)
    with running_app(mongo_uri, settings, issuer_dir) as test_client:
        yield test_client


@pytest.fixture
def record_of(client: TestClient) -> str:
    """A fresh Patient with two Observations; its id."""
    patient_id = f"p-{uuid.uuid4().hex[:10]}"
    response = client.put(f"/fhir/Patient/{patient_id}", json={"resourceType": "Patient", "id": patient_id,
                                                               "name": [{"family": "Martin"}]})
    assert response.status_code == 201, response.text
    for _ in range(2):
        assert client.post("/fhir/Observation", json=observation(patient_id)).status_code == 201
    return patient_id


def observation(patient_id: str) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "Glycémie"},
            "subject": {"reference": f"Patient/{patient_id}"}}


def interact(client: TestClient, kind: str, patient_id: str) -> tuple[str, int, str]:
    if kind == "read":
        response = client.get(f"/fhir/Patient/{patient_id}")
    elif kind == "search-type":
        response = client.get("/fhir/Observation", params={"subject": f"Patient/{patient_id}"})
    else:
        response = client.post("/fhir/Observation", json=observation(patient_id))
    return kind, response.status_code, response.text[:300]


def audit_interactions(store: MongoStore, patient: str) -> Counter:
    """How many AuditEvents of each interaction (restful-interaction code) the patient's chain holds."""
    docs = store.find("AuditEvent", {"_audit.chain": f"audit-chain:{patient}"})
    return Counter(d["resource"]["subtype"][0]["code"] for d in docs)


def test_concurrent_reads_searches_and_writes_of_one_patient_are_each_audited_once(client: TestClient,
                                                                                    record_of: str) -> None:
    store = client.app.state.fhir.store
    patient = f"Patient/{record_of}"
    before = audit_interactions(store, patient)
    everything_before = store.count("AuditEvent", {})
    answers: list[tuple[str, int, str]] = []
    hammer(lambda thread, i: answers.append(interact(client, KINDS[(thread + i) % len(KINDS)], record_of)),
           READERS, ROUNDS)

    assert len(answers) == READERS * ROUNDS
    assert [a for a in answers if a[1] != (201 if a[0] == "create" else 200)] == []
    report = verify_chains(store, patient)
    assert report.ok, report.to_text()
    # exactly one AuditEvent per interaction: in the patient's chain, and none anywhere else
    assert audit_interactions(store, patient) - before == Counter(kind for kind, _, _ in answers)
    assert store.count("AuditEvent", {}) - everything_before == len(answers)


def test_readers_of_one_process_queue_on_the_chain_instead_of_colliding(client: TestClient, record_of: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    trail = client.app.state.fhir.audit
    link_and_store, write_all = trail._link_and_store, trail.store.write_all
    collisions: list[BaseException] = []

    def counting(built, session):
        try:
            return link_and_store(built, session)
        except Exception as exc:            # a CAS miss or a transient transaction conflict
            collisions.append(exc)
            raise

    def counting_writes(writes, session=None):
        try:                                # where a reader's heads and events are written together
            return write_all(writes, session)
        except Exception as exc:
            collisions.append(exc)
            raise

    monkeypatch.setattr(trail, "_link_and_store", counting)
    monkeypatch.setattr(trail.store, "write_all", counting_writes)
    statuses: list[int] = []
    hammer(lambda thread, i: statuses.append(interact(client, ("read", "search-type")[(thread + i) % 2],
                                                      record_of)[1]), READERS, ROUNDS)
    assert statuses == [200] * READERS * ROUNDS
    assert collisions == []


def test_a_chain_that_stays_busy_answers_503_and_nothing_unaudited(client: TestClient, record_of: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    server = client.app.state.fhir
    store = server.store
    observations = store.count("Observation", {"resource.subject.reference": f"Patient/{record_of}"})
    events = store.count("AuditEvent", {})

    def head_always_moved(built, session):
        raise StorageConflict("the chain head moved")

    monkeypatch.setattr(trail_module, "MAX_ATTEMPTS", 3)
    monkeypatch.setattr(server.audit, "_link_and_store", head_always_moved)
    for response in (client.get(f"/fhir/Patient/{record_of}"),
                     client.get("/fhir/Observation", params={"subject": f"Patient/{record_of}"}),
                     client.post("/fhir/Observation", json=observation(record_of)),
                     # a refusal (400) is audited too: when it cannot be, that is the answer
                     client.post("/fhir/Observation", json={"resourceType": "Observation"})):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert [issue["code"] for issue in outcome["issue"]] == ["transient"]
    monkeypatch.undo()

    assert store.count("Observation", {"resource.subject.reference": f"Patient/{record_of}"}) == observations
    assert store.count("AuditEvent", {}) == events
