"""Walk the audit chains and report the first break of each.

A chain is walked in chain order (`_audit.seq`, the position the compare-and-set gave each event
when it was linked), not in time order, and every link is checked three ways:

* content changed  - the hash recomputed from the stored event differs from the hash it carries
                     (or its history copy differs, or its chain extension is gone);
* chain broken     - its `previous` is not the hash of the event before it, or it sits in the
                     chain of another patient;
* missing link     - a position is missing, two events claim one position, or the chain head
                     in `_meta` names an event the walk never reached.

Rewriting an event *and* recomputing every following hash and the head would not be detected
from the database alone: anchor the head hashes this report prints somewhere else (a signed
log, a notary) to close that gap.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from fhir_server.audit.chain import (
    CHAIN_KEY_PREFIX,
    GENESIS,
    chain_facts,
    chain_hash,
    chain_key,
    patient_of_key,
    patients_of_event,
)
from fhir_server.storage import MongoStore
from fhir_server.storage.mongo import HISTORY, META

AUDIT_EVENT = "AuditEvent"
BATCH = 500

CONTENT_CHANGED = "content changed"
CHAIN_BROKEN = "chain broken"
MISSING_LINK = "missing link"


@dataclass(frozen=True)
class ChainBreak:
    event_id: str | None       # the AuditEvent at fault (None when it cannot be named)
    reason: str                # CONTENT_CHANGED | CHAIN_BROKEN | MISSING_LINK
    detail: str


@dataclass
class ChainReport:
    key: str                   # audit-chain:Patient/x | audit-chain:none
    events: int = 0
    head: str | None = None    # hash of the last event reached
    first_break: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.first_break is None


@dataclass
class VerifyReport:
    chains: list[ChainReport] = field(default_factory=list)
    unchained: int = 0         # AuditEvents stored without `_audit` (not written by AuditTrail)

    @property
    def ok(self) -> bool:
        return all(chain.ok for chain in self.chains)

    @property
    def breaks(self) -> list[tuple[str, ChainBreak]]:
        return [(chain.key, chain.first_break) for chain in self.chains if chain.first_break]

    def to_text(self) -> str:
        total = sum(chain.events for chain in self.chains)
        lines = [f"audit chain verification: {len(self.chains)} chain(s), {total} AuditEvent(s)"]
        for chain in self.chains:
            name = chain.key.removeprefix(CHAIN_KEY_PREFIX)
            if chain.first_break is None:
                lines.append(f"  OK      {name}: {chain.events} event(s), head {chain.head}")
            else:
                fault = chain.first_break
                at = f"AuditEvent/{fault.event_id}" if fault.event_id else "(unnamed event)"
                lines.append(f"  BROKEN  {name}: {fault.reason} at {at}: {fault.detail}")
        if self.unchained:
            lines.append(f"  note: {self.unchained} AuditEvent(s) are not part of any chain "
                         "(stored without the audit trail)")
        broken = len(self.breaks)
        lines.append("result: OK" if broken == 0 else f"result: BROKEN ({broken} chain(s))")
        return "\n".join(lines)


def verify_chains(store: MongoStore, patient: str | None = None) -> VerifyReport:
    """Verify the chain of `patient` ("Patient/x" or "none" for events without patient), or
    every chain when `patient` is None."""
    keys = [chain_key(_normalise(patient))] if patient else _all_chain_keys(store)
    report = VerifyReport([_verify_chain(store, key) for key in keys])
    if patient is None:
        report.unchained = store.count(AUDIT_EVENT, {"_audit": {"$exists": False}})
    return report


def _normalise(patient: str) -> str | None:
    if patient == "none":
        return None
    return patient if patient.startswith("Patient/") else f"Patient/{patient}"


def _all_chain_keys(store: MongoStore) -> list[str]:
    """Chains named by a head in `_meta`, plus chains whose head was removed."""
    heads = store.find(META, {"_id": {"$regex": f"^{CHAIN_KEY_PREFIX}"}}, projection={"_id": 1})
    return sorted({doc["_id"] for doc in heads} | set(_chains_in_events(store)))


def _chains_in_events(store: MongoStore) -> Iterator[str]:
    """Distinct `_audit.chain` values, one index probe per chain (skip scan on the chain index)."""
    condition: dict = {"$exists": True}
    while True:
        found = store.find(AUDIT_EVENT, {"_audit.chain": condition}, sort=[("_audit.chain", 1)], limit=1,
                           projection={"_audit.chain": 1})
        if not found:
            return
        key = found[0]["_audit"]["chain"]
        yield key
        condition = {"$gt": key}


def _chain_documents(store: MongoStore, key: str) -> Iterator[dict]:
    """The chain's events in chain order, in keyset batches on (seq, _id) so that two events
    claiming one position are both seen, whatever the batch boundaries."""
    after: dict = {}
    while True:
        query = {"_audit.chain": key, **after}
        batch = store.find(AUDIT_EVENT, query, sort=[("_audit.seq", 1), ("_id", 1)], limit=BATCH)
        histories = _history_copies(store, [doc["_id"] for doc in batch])
        for doc in batch:
            yield {**doc, "_history_copy": histories.get(doc["_id"])}
        if len(batch) < BATCH:
            return
        seq, last_id = batch[-1]["_audit"].get("seq"), batch[-1]["_id"]
        after = {"$or": [{"_audit.seq": {"$gt": seq}}, {"_audit.seq": seq, "_id": {"$gt": last_id}}]}


def _history_copies(store: MongoStore, ids: list[str]) -> dict[str, dict | None]:
    if not ids:
        return {}
    versions = store.find(HISTORY, {"_id": {"$in": [f"{AUDIT_EVENT}/{i}/1" for i in ids]}})
    return {v["id"]: v.get("resource") for v in versions}


def _verify_chain(store: MongoStore, key: str) -> ChainReport:
    report = ChainReport(key)
    walk = _Walk(key)
    for doc in _chain_documents(store, key):
        fault = walk.step(doc)
        if fault:
            report.first_break = fault
            break
    report.events, report.head = walk.count, walk.previous
    if report.first_break is None:
        report.first_break = walk.check_head(store.get_meta(key))
    return report


class _Walk:
    """The state of one chain walk: what the next event must link to."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.patient = patient_of_key(key)
        self.previous = GENESIS
        self.position = 0
        self.count = 0
        self.last_id: str | None = None

    def step(self, doc: dict) -> ChainBreak | None:
        event_id, resource = doc["_id"], doc["resource"]
        fault = self._position(doc) or self._link(event_id, resource) or self._content(doc)
        if fault:
            return fault
        self.previous = chain_facts(resource)[1]
        self.position += 1
        self.count += 1
        self.last_id = event_id
        return None

    def _position(self, doc: dict) -> ChainBreak | None:
        seq, expected = doc["_audit"].get("seq"), self.position + 1
        if seq == expected:
            return None
        if isinstance(seq, int) and seq < expected:
            return ChainBreak(doc["_id"], MISSING_LINK, f"it claims position {seq}, already taken by "
                              f"AuditEvent/{self.last_id}: the chain forked")
        return ChainBreak(doc["_id"], MISSING_LINK, f"position {expected} is missing before it "
                          f"(it is at position {seq}): an AuditEvent was removed")

    def _link(self, event_id: str, resource: dict) -> ChainBreak | None:
        facts = chain_facts(resource)
        if facts is None:
            return ChainBreak(event_id, CONTENT_CHANGED, "its audit-chain extension is missing")
        if facts[0] != self.previous:
            before = f"AuditEvent/{self.last_id}" if self.last_id else "the start of the chain"
            return ChainBreak(event_id, CHAIN_BROKEN, f"its previous hash {facts[0]} is not the hash {self.previous} "
                              f"of {before} (one of the two was altered)")
        patients = patients_of_event(resource)
        expected = [self.patient] if self.patient else []
        if sorted(set(patients)) != expected and not (self.patient is None and len(set(patients)) > 1):
            return ChainBreak(event_id, CHAIN_BROKEN, f"its patient entities {patients} do not belong to the chain "
                              f"{self.key}")
        return None

    def _content(self, doc: dict) -> ChainBreak | None:
        resource = doc["resource"]
        previous, declared = chain_facts(resource)
        recomputed = chain_hash(resource, previous)
        if recomputed != declared:
            return ChainBreak(doc["_id"], CONTENT_CHANGED, f"its content hashes to {recomputed}, not to the "
                              f"{declared} recorded when it was written")
        if doc.get("_history_copy") != resource:
            return ChainBreak(doc["_id"], CONTENT_CHANGED, "its history version (vread) differs from the "
                              "current one, or is missing")
        return None

    def check_head(self, head: dict | None) -> ChainBreak | None:
        if head is None:
            if self.count == 0:
                return None
            return ChainBreak(self.last_id, MISSING_LINK, "the chain head is missing from _meta")
        if head.get("_ver") == self.count and head.get("hash") == self.previous:
            return None
        return ChainBreak(head.get("last"), MISSING_LINK,
                          f"the chain head names {head.get('_ver')} event(s) ending with AuditEvent/{head.get('last')} "
                          f"(hash {head.get('hash')}), but the walk reached {self.count} ending with "
                          f"{'AuditEvent/' + self.last_id if self.last_id else 'nothing'}: the events after it "
                          "were removed or relinked")


# -- command line ---------------------------------------------------------------------------------
def verify_main(argv: Sequence[str] | None = None, store: MongoStore | None = None,
                out: TextIO | None = None) -> int:
    """`fhir-server audit verify [--patient Patient/x]`: print the report; exit status 0 when
    every chain is intact, 1 on a break, 2 when no database is configured."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="fhir-server audit verify",
                                     description="Check the hash chains of the audit trail")
    parser.add_argument("--patient", help='one chain: "Patient/x" (or "none" for events without patient)')
    args = parser.parse_args(list(argv) if argv is not None else None)
    own_store = store is None
    if own_store:
        from fhir_server.config import Settings

        settings = Settings()
        if settings.mongodb_uri is None:
            print("FHIR_MONGODB_URI is not set", file=sys.stderr)
            return 2
        store = MongoStore(settings.mongodb_uri, settings.mongodb_db)
    try:
        report = verify_chains(store, args.patient)
    finally:
        if own_store:
            store.close()
    print(report.to_text(), file=out)
    return 0 if report.ok else 1
