"""Verifying every chain at once (own database: the other modules tamper with theirs)."""

from __future__ import annotations

import io

from fhir_server.audit import AuditRecord, AuditTrail, verify_main
from fhir_server.storage import MongoStore
from tests.audit.conftest import DOCTOR, read_record


def test_every_chain_is_walked_including_the_global_one(trail: AuditTrail, store: MongoStore) -> None:
    for minutes in range(3):
        trail.record(read_record("Patient/a", minutes))
    trail.record(read_record("Patient/b"))
    trail.record(AuditRecord("search-system", 200, actor=DOCTOR, query="?_type=Practitioner"))
    store.db["AuditEvent"].insert_one({"_id": "foreign", "resource": {"resourceType": "AuditEvent", "id": "foreign"}})

    report = trail.verify()
    assert report.ok
    assert [(c.key, c.events) for c in report.chains] == [
        ("audit-chain:Patient/a", 3), ("audit-chain:Patient/b", 1), ("audit-chain:none", 1)]
    assert report.unchained == 1

    out = io.StringIO()
    assert verify_main([], store=store, out=out) == 0
    assert "3 chain(s), 5 AuditEvent(s)" in out.getvalue()
    assert "1 AuditEvent(s) are not part of any chain" in out.getvalue()


def test_a_chain_whose_head_was_removed_is_still_walked_and_reported(trail: AuditTrail, store: MongoStore) -> None:
    trail.record(read_record("Patient/c"))
    store.db["_meta"].delete_one({"_id": "audit-chain:Patient/c"})

    report = trail.verify()
    broken = dict(report.breaks)
    assert "audit-chain:Patient/c" in broken
    assert "head is missing" in broken["audit-chain:Patient/c"].detail


def test_verify_command_builds_its_store_from_the_environment(trail: AuditTrail, store: MongoStore, mongo_uri: str,
                                                              monkeypatch, capsys) -> None:
    trail.record(read_record("Patient/env"))
    monkeypatch.setenv("FHIR_MONGODB_URI", mongo_uri)
    monkeypatch.setenv("FHIR_MONGODB_DB", store.db.name)
    assert verify_main(["--patient", "Patient/env"]) == 0
    assert "OK      Patient/env: 1 event(s)" in capsys.readouterr().out


def test_verify_command_without_database_exits_2(monkeypatch, capsys) -> None:
    monkeypatch.delenv("FHIR_MONGODB_URI", raising=False)
    assert verify_main([]) == 2
    assert "FHIR_MONGODB_URI is not set" in capsys.readouterr().err
