"""The hot paths (read, search, create, update) keep their guarantees with few database round
trips: the commands each interaction sends are counted (command monitoring, no timing), and the
shortcuts that save them are checked where they could go wrong: a write and its history version
sent together, a verified token remembered, access data realigned only when they change."""

from __future__ import annotations

import gc
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import PyMongoError

from fhir_server.access import tokens
from fhir_server.access.devissuer import dev_issuer, mint, patient_claims, system_claims
from fhir_server.access.tokens import AuthenticationError, Authenticator
from fhir_server.config import Settings
from fhir_server.rest.router import HttpRequest, HttpResponse, Router
from fhir_server.storage import MongoStore, StorageConflict
from fhir_server.storage import mongo as mongo_module
from tests.documents import VISIBILITY
from tests.http.conftest import BASE, JSON, running_app


class CommandCounter(monitoring.CommandListener):
    """Counts the commands sent from one thread (the test's), by (command, collection):
    background workers do not count."""

    def __init__(self) -> None:
        self.thread: int | None = None
        self.commands: Counter = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if threading.get_ident() == self.thread:
            target = event.command.get(event.command_name)
            self.commands[event.command_name, target if isinstance(target, str) else ""] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @contextmanager
    def counting(self) -> Iterator[Counter]:
        self.commands = Counter()
        self.thread = threading.get_ident()
        try:
            yield self.commands
        finally:
            self.thread = None


class Driver:
    """Requests handed to the Router in the test's own thread, as the HTTP layer hands them."""

    def __init__(self, router: Router, issuer_dir: Path) -> None:
        self.router = router
        self.headers = {"authorization": f"Bearer {mint(issuer_dir, system_claims('system/*.cruds', 'hot'))}",
                        "content-type": JSON}

    def __call__(self, method: str, path: str, body: dict | None = None,
                 query: list[tuple[str, str]] | None = None) -> HttpResponse:
        payload = json.dumps(body).encode() if body is not None else b""
        response = self.router.handle(HttpRequest(method, path, query or [], self.headers, payload, BASE))
        assert response.status < 300, response.body
        return response


def patient_resource(**extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": "Lefèvre", "given": ["Élodie"]}], "gender": "female",
            **extra}


# Commands per interaction of a trusted back-end on a Patient, once the patient's audit chain is
# known to the process: (audit on, audit off). A create with audit on reads the head of the new
# patient's chain; every write reads the patient's consent state and whether anyone subscribed;
# a read or search brings the access data the trail needs (visibility to the patient).
MAX_COMMANDS = {"read": (3, 1), "search": (3, 1), "create": (6, 4), "update": (7, 5)}


@pytest.fixture(scope="module", params=["on", "off"])
def counted(request: pytest.FixtureRequest, mongo_uri: str, settings: Settings, issuer_dir: Path
            ) -> Iterator[tuple[Driver, CommandCounter, int]]:
    counter = CommandCounter()
    make_client = pymongo.MongoClient
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mongo_module.pymongo, "MongoClient",
                      lambda *args, **kwargs: make_client(*args, event_listeners=[counter], **kwargs))
        with running_app(mongo_uri, settings, issuer_dir, env={"FHIR_AUDIT": request.param}) as client:
            yield Driver(Router(client.app.state.fhir), issuer_dir), counter, 0 if request.param == "on" else 1


def test_round_trips_of_the_hot_paths(counted: tuple[Driver, CommandCounter, int]) -> None:
    call, counter, audit = counted
    call("POST", "Patient", patient_resource())          # the app's first write learns about the deployment
    sent: dict[str, int] = {}
    with counter.counting() as commands:
        patient_id = json.loads(call("POST", "Patient", patient_resource()).body)["id"]
    sent["create"] = sum(commands.values())
    steps = {
        "read": lambda: call("GET", f"Patient/{patient_id}"),
        "search": lambda: call("GET", "Patient", query=[("_id", patient_id)]),
        "update": lambda: call("PUT", f"Patient/{patient_id}", patient_resource(id=patient_id, active=True)),
    }
    for name, step in steps.items():
        with counter.counting() as commands:
            step()
        sent[name] = sum(commands.values())
    over = {name: count for name, count in sent.items() if count > MAX_COMMANDS[name][audit]}
    assert over == {}, sent


def test_an_update_keeping_the_access_data_leaves_the_history_alone(counted) -> None:
    call, counter, _ = counted
    patient_id = json.loads(call("POST", "Patient", patient_resource()).body)["id"]
    with counter.counting() as commands:
        call("PUT", f"Patient/{patient_id}", patient_resource(id=patient_id, active=True))
    assert commands["update", "_history"] == 0          # no realignment of the older versions' `_acl`
    versions = json.loads(call("GET", f"Patient/{patient_id}/_history").body)
    assert [e["response"]["etag"] for e in versions["entry"]] == ['W/"2"', 'W/"1"']


def test_a_search_after_a_write_in_one_batch_audits_the_visibility_written(counted) -> None:
    """The trail takes a resource's visibility to its patient from the read that just returned it,
    never from an earlier read of the same request that a write has made stale."""
    call, _, audit = counted
    if audit != 0:
        pytest.skip("the audit trail is off")
    patient_id = json.loads(call("POST", "Patient", patient_resource()).body)["id"]
    observation = {"resourceType": "Observation", "id": f"o-{uuid.uuid4().hex[:8]}", "status": "final",
                   "code": {"text": "Glycémie"}, "subject": {"reference": f"Patient/{patient_id}"}}
    call("PUT", f"Observation/{observation['id']}", observation)
    hidden = {**observation, "meta": {"security": [{"system": VISIBILITY, "code": "INVISIBLE_PATIENT"}]}}
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Observation/{observation['id']}"}},
        {"resource": hidden, "request": {"method": "PUT", "url": f"Observation/{observation['id']}"}},
        {"request": {"method": "GET", "url": f"Observation?_id={observation['id']}"}},
    ]}
    call("POST", "", batch)

    store = call.router.server.store
    events = store.find("AuditEvent", {"resource.entity.what.reference": {
        "$regex": f"^Observation/{observation['id']}"}})
    visible = [(e["resource"]["subtype"][0]["code"], "!invisible" not in e["_acl"]["deny"]) for e in events]
    # the write hid the events before it; the search after it must not show the resource either
    assert ("search-type", False) in visible
    assert [v for v in visible if v[1]] == []


def test_a_filtered_search_gets_its_page_and_total_in_one_command(counted, issuer_dir: Path) -> None:
    """The access filter is tested on each document the index fetches: the page and the total
    come from one pass over them, not from a page query and a count query testing each twice."""
    call, counter, _ = counted
    nir = "284037512345640"
    patient = patient_resource(identifier=[{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": nir}])
    patient_id = json.loads(call("POST", "Patient", patient).body)["id"]
    for code in ("Glycémie", "Créatinine", "Kaliémie"):
        call("POST", "Observation", {"resourceType": "Observation", "status": "final", "code": {"text": code},
                                     "subject": {"reference": f"Patient/{patient_id}"}})
    headers = {"authorization": f"Bearer {mint(issuer_dir, patient_claims(nir))}"}
    search = HttpRequest("GET", "Observation", [("patient", patient_id), ("_total", "accurate"), ("_count", "2")],
                         headers, b"", BASE)
    call.router.handle(search)                     # the first request learns who the patient is
    with counter.counting() as commands:
        bundle = json.loads(call.router.handle(search).body)
    assert bundle["total"] == 3 and len(bundle["entry"]) == 2
    # one aggregation (a page query and a count would be two); with the audit on, the trail then
    # reads the visibility of the two resources it records
    assert commands["aggregate", "Observation"] == 1 and commands["count", "Observation"] == 0


def test_what_start_up_built_is_left_out_of_full_collections(mongo_uri: str, settings: Settings,
                                                              issuer_dir: Path) -> None:
    """Definitions, profiles and indexes live as long as the server: frozen after start-up, a full
    garbage collection does not walk them again (a 100-190 ms pause each time, before)."""
    with running_app(mongo_uri, settings, issuer_dir):
        assert gc.get_freeze_count() > 100_000
    assert gc.get_freeze_count() == 0


# -- a write and its history version, together ----------------------------------------------------
@pytest.fixture(params=["one round trip", "one after the other"])
def store(request: pytest.FixtureRequest, mongo_uri: str) -> Iterator[MongoStore]:
    store = MongoStore(mongo_uri, "hot_" + uuid.uuid4().hex[:10])
    store.ensure_collections({"Patient": []})
    if request.param == "one after the other":
        store._supports_client_bulk_write = False         # a MongoDB older than 8.0
    yield store
    store.drop_everything()
    store.close()


def stored(resource_id: str, version: int, family: str) -> tuple[dict, dict]:
    resource = {"resourceType": "Patient", "id": resource_id, "name": [{"family": family}]}
    doc = {"_id": resource_id, "resource": resource, "_ver": version}
    entry = {"_id": f"Patient/{resource_id}/{version}", "type": "Patient", "id": resource_id, "ver": version,
             "resource": resource}
    return doc, entry


def versions_of(store: MongoStore, resource_id: str) -> list[tuple[int, str | None]]:
    found = store.find_versions({"type": "Patient", "id": resource_id}, [("ver", 1)], 0)
    return [(v["ver"], v["resource"]["name"][0]["family"] if v["resource"] else None) for v in found]


def test_a_write_that_lost_the_race_changes_nothing(store: MongoStore) -> None:
    store.run_in_transaction(lambda s: store.insert_with_version("Patient", *stored("p", 1, "Un"), s))
    store.run_in_transaction(lambda s: store.replace_with_version("Patient", stored("p", 2, "Deux")[0], 1,
                                                                  stored("p", 2, "Deux")[1], s))
    late = stored("p", 2, "Tard")
    with pytest.raises(StorageConflict):
        store.run_in_transaction(lambda s: store.replace_with_version("Patient", late[0], 1, late[1], s))
    with pytest.raises(StorageConflict):
        store.run_in_transaction(lambda s: store.remove_with_version("Patient", "p", 1, {
            "_id": "Patient/p/2", "type": "Patient", "id": "p", "ver": 2, "resource": None}, s))
    with pytest.raises(StorageConflict):
        store.run_in_transaction(lambda s: store.insert_with_version("Patient", *stored("p", 1, "Encore"), s))

    assert store.get("Patient", "p")["resource"]["name"][0]["family"] == "Deux"
    assert versions_of(store, "p") == [(1, "Un"), (2, "Deux")]


def test_a_delete_and_its_tombstone_go_together(store: MongoStore) -> None:
    store.run_in_transaction(lambda s: store.insert_with_version("Patient", *stored("d", 1, "Un"), s))
    store.run_in_transaction(lambda s: store.remove_with_version("Patient", "d", 1, {
        "_id": "Patient/d/2", "type": "Patient", "id": "d", "ver": 2, "resource": None}, s))
    assert store.get("Patient", "d") is None
    assert versions_of(store, "d") == [(1, "Un"), (2, None)]


def test_a_concurrent_transaction_still_surfaces_as_transient(store: MongoStore) -> None:
    """The driver retries a transaction on TransientTransactionError: a write conflict met by the
    writes sent together must keep that label."""
    store.run_in_transaction(lambda s: store.insert_with_version("Patient", *stored("c", 1, "Un"), s))
    with store.transaction() as first, store.transaction() as second:
        store.replace_with_version("Patient", stored("c", 2, "Premier")[0], 1, stored("c", 2, "Premier")[1], first)
        with pytest.raises(PyMongoError) as raised:
            store.replace_with_version("Patient", stored("c", 2, "Second")[0], 1, stored("c", 2, "Second")[1],
                                       second)
        assert raised.value.has_error_label("TransientTransactionError")
        second.abort_transaction()
    assert versions_of(store, "c") == [(1, "Un"), (2, "Premier")]


# -- a verified token is remembered until it expires ---------------------------------------------
def test_a_remembered_token_is_verified_again_once_expired(issuer_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    authenticator = Authenticator([dev_issuer(issuer_dir)])
    token = mint(issuer_dir, system_claims("system/*.rs", "remembered"), lifetime_seconds=3600)
    verified: list[str] = []
    verify = authenticator._verify
    monkeypatch.setattr(authenticator, "_verify", lambda t: verified.append(t) or verify(t))
    now = time.time()

    def at(moment: float) -> None:
        monkeypatch.setattr(tokens.time, "time", lambda: moment)

    at(now)
    first = authenticator.authenticate(f"Bearer {token}")
    assert authenticator.authenticate(f"Bearer {token}") == first
    assert len(verified) == 1
    at(now + tokens.VERIFIED_TOKEN_SECONDS + 1)          # remembered for a short while only
    authenticator.authenticate(f"Bearer {token}")
    assert len(verified) == 2
    at(now + 3600 + tokens.LEEWAY_SECONDS + 1)           # past its expiry: verified again
    authenticator.authenticate(f"Bearer {token}")
    assert len(verified) == 3


def test_a_refused_token_is_not_remembered(issuer_dir: Path) -> None:
    authenticator = Authenticator([dev_issuer(issuer_dir)])
    expired = mint(issuer_dir, system_claims("system/*.rs", "expired"), lifetime_seconds=-3600)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            authenticator.authenticate(f"Bearer {expired}")
