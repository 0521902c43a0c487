"""The chain head each trail remembers is only a hint: an append after another process moved the
head, or after a transaction that moved it was rolled back, still links to the stored head."""

from __future__ import annotations

import pytest

from fhir_server.audit import AuditTrail
from fhir_server.audit.chain import chain_key
from fhir_server.storage import MongoStore
from tests.audit.conftest import read_record


def chain_seqs(store: MongoStore, patient: str) -> list[int]:
    return sorted(d["_audit"]["seq"] for d in store.find("AuditEvent", {"_audit.chain": chain_key(patient)}))


def test_an_append_after_another_process_moved_the_head_links_to_the_stored_head(
        trail: AuditTrail, store: MongoStore, indexer, policy, patient: str) -> None:
    other_process = AuditTrail(store, indexer, policy)
    trail.record(read_record(patient, minutes=0))
    other_process.record(read_record(patient, minutes=1))
    trail.record(read_record(patient, minutes=2))                 # its remembered head is stale
    with store.transaction() as session:
        other_process.record(read_record(patient, minutes=3), session)
    trail.record(read_record(patient, minutes=4))

    report = trail.verify(patient)
    assert report.ok, report.to_text()
    assert chain_seqs(store, patient) == [1, 2, 3, 4, 5]


def test_an_append_after_a_rolled_back_one_links_to_the_committed_head(trail: AuditTrail, store: MongoStore,
                                                                       patient: str) -> None:
    trail.record(read_record(patient, minutes=0))
    with pytest.raises(RuntimeError), store.transaction() as session:
        trail.record(read_record(patient, minutes=1), session)     # remembered, then rolled back
        raise RuntimeError("the write this event audits failed")
    trail.record(read_record(patient, minutes=2))

    report = trail.verify(patient)
    assert report.ok, report.to_text()
    assert chain_seqs(store, patient) == [1, 2]


def test_a_head_removed_behind_the_trail_starts_the_chain_again(trail: AuditTrail, store: MongoStore,
                                                                patient: str) -> None:
    """What `verify` reports is the database's state: the remembered head never resurrects one."""
    trail.record(read_record(patient, minutes=0))
    store.db["_meta"].delete_one({"_id": chain_key(patient)})
    trail.record(read_record(patient, minutes=1))
    assert store.get_meta(chain_key(patient))["_ver"] == 1
