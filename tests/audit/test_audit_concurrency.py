"""Concurrent recording on one patient keeps one unbroken chain (no silent fork)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from fhir_server.audit import AuditTrail
from fhir_server.storage import MongoStore
from tests.audit.conftest import read_record

THREADS = 8
PER_THREAD = 6


def hammer(action: Callable[[int, int], None]) -> None:
    """Run `action(thread, i)` PER_THREAD times in each of THREADS threads started together."""
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def worker(thread: int) -> None:
        start.wait()
        try:
            for i in range(PER_THREAD):
                action(thread, i)
        except BaseException as exc:          # reported by the assertion below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
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
