"""Tamper evidence: the chain walk finds the first break, and names the AuditEvent at fault."""

from __future__ import annotations

import io

from fhir_server.audit import AuditTrail, verify_main
from fhir_server.audit.chain import chain_facts, chain_hash, with_chain, without_chain
from fhir_server.audit.verify import CHAIN_BROKEN, CONTENT_CHANGED, MISSING_LINK
from fhir_server.storage import MongoStore
from tests.audit.conftest import read_record

N = 6


def recorded_chain(trail: AuditTrail, patient: str, count: int = N) -> list[str]:
    return [trail.record(read_record(patient, minutes=i))[0] for i in range(count)]


def events(store: MongoStore) -> object:
    return store.db["AuditEvent"]       # the tests play the attacker, straight on the collection


def test_chain_is_intact_after_n_records(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    ids = recorded_chain(trail, patient)

    report = trail.verify(patient)
    assert report.ok
    [chain] = report.chains
    assert (chain.key, chain.events, chain.first_break) == (f"audit-chain:{patient}", N, None)
    docs = [store.get("AuditEvent", i) for i in ids]
    assert [d["_audit"]["seq"] for d in docs] == list(range(1, N + 1))
    for before, after in zip(docs, docs[1:], strict=False):      # each links to the one before
        assert chain_facts(after["resource"])[0] == chain_facts(before["resource"])[1]
    assert chain.head == chain_facts(docs[-1]["resource"])[1] == store.get_meta(f"audit-chain:{patient}")["hash"]


def test_a_changed_recorded_date_is_detected_at_that_event(trail: AuditTrail, store: MongoStore,
                                                           patient: str) -> None:
    ids = recorded_chain(trail, patient)
    events(store).update_one({"_id": ids[3]}, {"$set": {"resource.recorded": "2020-01-01T00:00:00.000Z"}})

    report = trail.verify(patient)
    assert not report.ok
    fault = report.chains[0].first_break
    assert (fault.event_id, fault.reason) == (ids[3], CONTENT_CHANGED)
    assert report.chains[0].events == 3            # the three events before it are sound


def test_a_changed_event_with_a_recomputed_hash_breaks_the_next_link(trail: AuditTrail, store: MongoStore,
                                                                    patient: str) -> None:
    ids = recorded_chain(trail, patient)
    resource = store.get("AuditEvent", ids[2])["resource"]
    previous, _ = chain_facts(resource)
    forged = with_chain({**without_chain(resource), "outcome": "4"}, previous)
    events(store).update_one({"_id": ids[2]}, {"$set": {"resource": forged}})
    store.db["_history"].update_one({"_id": f"AuditEvent/{ids[2]}/1"}, {"$set": {"resource": forged}})

    fault = trail.verify(patient).chains[0].first_break
    assert (fault.event_id, fault.reason) == (ids[3], CHAIN_BROKEN)
    assert ids[2] in fault.detail


def test_a_removed_event_is_a_missing_link(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    ids = recorded_chain(trail, patient)
    events(store).delete_one({"_id": ids[2]})

    fault = trail.verify(patient).chains[0].first_break
    assert (fault.event_id, fault.reason) == (ids[3], MISSING_LINK)
    assert "position 3 is missing" in fault.detail


def test_removing_the_last_events_is_caught_by_the_head(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    ids = recorded_chain(trail, patient)
    events(store).delete_many({"_id": {"$in": ids[-2:]}})

    report = trail.verify(patient)
    fault = report.chains[0].first_break
    assert (fault.event_id, fault.reason) == (ids[-1], MISSING_LINK)
    assert report.chains[0].events == N - 2


def test_a_changed_history_copy_is_detected(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    ids = recorded_chain(trail, patient, 3)
    store.db["_history"].update_one({"_id": f"AuditEvent/{ids[1]}/1"}, {"$set": {"resource.outcome": "8"}})

    fault = trail.verify(patient).chains[0].first_break
    assert (fault.event_id, fault.reason) == (ids[1], CONTENT_CHANGED)
    assert "history" in fault.detail


def test_an_event_moved_to_another_patients_chain_is_detected(trail: AuditTrail, store: MongoStore,
                                                              patient: str) -> None:
    ids = recorded_chain(trail, patient, 3)
    doc = store.get("AuditEvent", ids[1])
    resource = doc["resource"]
    entity = resource["entity"][0]
    entity["what"]["reference"] = "Patient/someone-else"
    # even with a correct hash for the altered content, the event no longer belongs to this chain
    resource = with_chain(resource, chain_facts(resource)[0])
    events(store).update_one({"_id": ids[1]}, {"$set": {"resource": resource}})

    fault = trail.verify(patient).chains[0].first_break
    assert fault.event_id == ids[1]
    assert fault.reason == CHAIN_BROKEN


def test_two_events_at_one_position_are_a_fork(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    ids = recorded_chain(trail, patient, 3)
    copy = store.get("AuditEvent", ids[1])
    copy["_id"] = copy["resource"]["id"] = "zz-forged"
    events(store).insert_one(copy)

    fault = trail.verify(patient).chains[0].first_break
    assert fault.reason == MISSING_LINK
    assert "forked" in fault.detail


def test_hash_recomputation_matches_what_was_stored(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    [event_id] = recorded_chain(trail, patient, 1)
    resource = store.get("AuditEvent", event_id)["resource"]
    previous, digest = chain_facts(resource)
    assert chain_hash(resource, previous) == digest


def test_verify_command_prints_the_report_and_exits_1_on_a_break(trail: AuditTrail, store: MongoStore,
                                                                 patient: str) -> None:
    ids = recorded_chain(trail, patient, 3)
    out = io.StringIO()
    assert verify_main(["--patient", patient], store=store, out=out) == 0
    text = out.getvalue()
    assert f"OK      {patient}: 3 event(s)" in text
    assert text.rstrip().endswith("result: OK")

    events(store).update_one({"_id": ids[0]}, {"$set": {"resource.recorded": "2020-01-01T00:00:00.000Z"}})
    out = io.StringIO()
    assert verify_main(["--patient", patient], store=store, out=out) == 1
    text = out.getvalue()
    assert f"BROKEN  {patient}: content changed at AuditEvent/{ids[0]}" in text
    assert "result: BROKEN (1 chain(s))" in text


def test_verify_command_accepts_a_bare_id(trail: AuditTrail, store: MongoStore, patient: str) -> None:
    recorded_chain(trail, patient, 2)
    out = io.StringIO()
    assert verify_main(["--patient", patient.removeprefix("Patient/")], store=store, out=out) == 0
