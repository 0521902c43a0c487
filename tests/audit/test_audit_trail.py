"""AuditEvents stored like every resource, in the caller's transaction."""

from __future__ import annotations

import pytest

from fhir_server.audit import AuditRecord, AuditTrail
from fhir_server.audit.chain import GENESIS, chain_facts
from fhir_server.storage import MongoStore
from tests.audit.conftest import DOCTOR, T0, patient_actor, read_record


def test_a_recorded_event_is_stored_with_index_acl_history_and_chain(trail: AuditTrail, store: MongoStore,
                                                                     patient: str) -> None:
    [event_id] = trail.record(read_record(patient))

    doc = store.get("AuditEvent", event_id)
    resource = doc["resource"]
    assert resource["id"] == event_id
    assert resource["meta"]["versionId"] == "1"
    assert resource["meta"]["lastUpdated"].endswith("Z")
    assert doc["_ver"] == 1
    assert patient in doc["_index"]["patient"]
    assert doc["_acl"]["patients"] == [patient]
    assert doc["_audit"] == {"chain": f"audit-chain:{patient}", "seq": 1, "patient": patient, "recorded": T0,
                             "self": False}
    previous, digest = chain_facts(resource)
    assert previous == GENESIS
    assert store.get_meta(f"audit-chain:{patient}") == {"_id": f"audit-chain:{patient}", "_ver": 1, "hash": digest,
                                                        "last": event_id}
    version = store.get_version("AuditEvent", event_id, 1)
    assert version["resource"] == resource
    assert version["method"] == "POST"
    assert version["_acl"] == doc["_acl"]


def test_one_event_per_patient_each_in_its_chain(trail: AuditTrail, store: MongoStore) -> None:
    record = AuditRecord("search-type", 200, actor=DOCTOR, query="Observation?code=x",
                         patients=["Patient/s1", "Patient/s2"],
                         data_references=["Observation/a", "Observation/b"],
                         data_patients={"Observation/a": ["Patient/s1"], "Observation/b": ["Patient/s2"]})
    first, second = trail.record(record)
    assert store.get("AuditEvent", first)["_audit"]["chain"] == "audit-chain:Patient/s1"
    assert store.get("AuditEvent", second)["_audit"]["chain"] == "audit-chain:Patient/s2"
    assert store.get("AuditEvent", first)["_acl"]["patients"] == ["Patient/s1"]


def test_events_without_patient_go_to_the_global_chain(trail: AuditTrail, store: MongoStore) -> None:
    [event_id] = trail.record(AuditRecord("read", 200, actor=DOCTOR, resource_type="Practitioner", resource_id="x"))
    doc = store.get("AuditEvent", event_id)
    assert doc["_audit"]["chain"] == "audit-chain:none"
    assert "_acl" not in doc            # reference data for the access policy


def test_the_audit_commits_and_aborts_with_the_write_it_describes(trail: AuditTrail, store: MongoStore,
                                                                  patient: str) -> None:
    observation = {"resourceType": "Observation", "id": "obs-tx", "status": "final",
                   "subject": {"reference": patient}}

    class Abort(Exception):
        pass

    with pytest.raises(Abort), store.transaction() as session:
        store.insert("Observation", {"_id": "obs-tx", "resource": observation, "_ver": 1}, session)
        [aborted] = trail.record(AuditRecord("create", 201, actor=DOCTOR, resource_type="Observation",
                                             resource_id="obs-tx", version=1, patients=[patient]), session)
        raise Abort
    assert store.get("Observation", "obs-tx") is None
    assert store.get("AuditEvent", aborted) is None
    assert store.get_meta(f"audit-chain:{patient}") is None

    with store.transaction() as session:
        store.insert("Observation", {"_id": "obs-tx", "resource": observation, "_ver": 1}, session)
        [kept] = trail.record(AuditRecord("create", 201, actor=DOCTOR, resource_type="Observation",
                                          resource_id="obs-tx", version=1, patients=[patient]), session)
    assert store.get("Observation", "obs-tx") is not None
    assert store.get("AuditEvent", kept)["_audit"]["seq"] == 1
    assert trail.verify(patient).ok


def test_the_patients_own_access_is_marked(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    [event_id] = trail.record(read_record(patient, actor=patient_actor(), actor_patients=[patient]))
    doc = store.get("AuditEvent", event_id)
    assert doc["_audit"]["self"] is True
    assert doc["resource"]["agent"][0]["who"]["reference"] == patient


def test_append_chains_an_event_built_elsewhere(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    external = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110101"},
        "recorded": "2025-01-07T09:32:15Z",
        "period": {"start": "2025-01-07T09:30:00Z"},
        "agent": [{"who": {"identifier": {"system": "https://rpps.esante.gouv.fr", "value": "10001234567"}},
                   "requestor": True}],
        "source": {"observer": {"display": "SIH"}},
        "entity": [{"what": {"reference": patient}, "role": {"code": "1"}}],
        # a forged chain extension is dropped
        "extension": [{"url": "https://espace.example.org/fhir/StructureDefinition/audit-chain",
                       "extension": [{"url": "previous", "valueString": "x"}, {"url": "hash", "valueString": "y"}]}],
    }
    trail.record(read_record(patient))
    event_id = trail.append(external)
    doc = store.get("AuditEvent", event_id)
    assert doc["_audit"]["chain"] == f"audit-chain:{patient}"
    assert doc["_audit"]["seq"] == 2
    assert chain_facts(doc["resource"])[0] != "x"
    assert trail.verify(patient).ok
