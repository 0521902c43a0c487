"""The first-access check: once a professional is known to have seen a record, later reads of
that record by them need no database look-up (seen never reverts)."""

from __future__ import annotations

from fhir_server.access.actor import Actor
from fhir_server.access.scopes import Scopes
from fhir_server.notify.notifier import Notifier

DOCTOR = Actor("practitioner", "dr", Scopes.parse("user/*.rs"), rpps="10000000001", profession="10")


class SeenStore:
    def __init__(self, seen: bool) -> None:
        self.seen = seen
        self.lookups = 0

    def was_seen(self, patient: str, actor_key: str, session=None) -> bool:
        self.lookups += 1
        return self.seen


def test_a_known_reader_is_looked_up_once() -> None:
    store = SeenStore(seen=True)
    notifier = Notifier(server=None, store=store)
    for _ in range(3):
        assert notifier.on_access("Patient/p1", DOCTOR, emergency=False) == []
    assert store.lookups == 1
    notifier.on_access("Patient/p2", DOCTOR, emergency=False)
    assert store.lookups == 2                                  # another record: looked up


def test_what_a_transaction_saw_is_not_remembered() -> None:
    store = SeenStore(seen=True)
    notifier = Notifier(server=None, store=store)
    for _ in range(2):
        notifier.on_access("Patient/p1", DOCTOR, emergency=False, session=object())
    assert store.lookups == 2
