"""The audit trail: AuditEvents written with the data they describe, chained per patient.

Storage layout (beside the usual `resource`, `_ver`, `_lastUpdated`, `_index`, `_acl`), each
AuditEvent document has an `_audit` sub-document used by the chain walk and the access history:

    {"chain": "audit-chain:Patient/x", "seq": 12, "patient": "Patient/x" | None,
     "recorded": datetime, "self": bool}

and the head of each chain lives in `_meta` under the chain key:

    {"_id": "audit-chain:Patient/x", "_ver": <seq of the last event>, "hash": <its hash>,
     "last": <its id>}

Appending is an optimistic compare-and-set on the head's `_ver` and `hash` (an insert for the
first event, a compare-and-set afterwards). The head moves *before* the event is written, so on
a deployment without transactions a crash in between leaves a head pointing at a missing event
(reported by `verify` as a missing link) rather than two events claiming the same predecessor (a
silent fork). The head this process wrote last is remembered (heads.py), so that the next append
to the chain need not read it: the compare-and-set tells when it is stale. In a transaction of
its own (reads, searches), the heads and events of one interaction are written together in one
round trip; in the caller's transaction (writes), the head moves first and alone, so that a miss
writes nothing and is retried in place.

Contention: inside one process, appends to a chain queue on a striped lock (locks.py) rather than
collide; the compare-and-set, retried with jittered backoff, covers the other processes. When the
retries are exhausted the event is not written and `AuditChainConflict` is raised (the caller
fails the request as transient: no unaudited access).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from dateutil import parser as date_parser

from fhir_server.audit.builder import BuiltEvent, build_events
from fhir_server.audit.chain import GENESIS, chain_facts, chain_key, patients_of_event, with_chain, without_chain
from fhir_server.audit.heads import ChainHeads
from fhir_server.audit.history import access_history
from fhir_server.audit.locks import ChainLocks
from fhir_server.audit.record import AuditRecord
from fhir_server.audit.verify import VerifyReport, verify_chains
from fhir_server.engine.model import instant, new_id, now
from fhir_server.storage import CompareAndSet, Insert, MongoStore, Session, StorageConflict, Write
from fhir_server.storage.mongo import HISTORY, META

AUDIT_EVENT = "AuditEvent"
MAX_ATTEMPTS = 60
# How long an append inside the caller's transaction waits for the chain lock (see _append_in_session).
SESSION_LOCK_WAIT_SECONDS = 0.2
BACKOFF_BASE_SECONDS = 0.002
BACKOFF_MAX_SECONDS = 0.1

# Indexes the audit trail relies on, in `MongoStore.ensure_collections` form: the chain walk
# (chain order) and the access history (newest first, keyset on `_id`).
AUDIT_INDEXES: list[list[tuple[str, int]]] = [
    [("_audit.chain", 1), ("_audit.seq", 1)],
    [("_audit.patient", 1), ("_audit.recorded", -1), ("_id", -1)],
]

T = TypeVar("T")


class Indexer(Protocol):
    def extract_index(self, resource: dict) -> dict: ...


class AclPolicy(Protocol):
    def acl_for(self, resource_type: str, resource: dict, index: dict, session: Any = None,
                known_invisible: dict[str, bool] | None = None) -> dict | None: ...


class AuditChainConflict(StorageConflict):
    """The chain head kept moving under us: the event was not written (the chain is intact)."""


class AuditTrail:
    def __init__(self, store: MongoStore, indexer: Indexer, policy: AclPolicy | None,
                 server_name: str = "espace") -> None:
        self.store = store
        self.indexer = indexer
        self.policy = policy
        self.server_name = server_name
        self.locks = ChainLocks()
        self.heads = ChainHeads()
        self._batch = threading.local()      # see _batching

    # -- writing --------------------------------------------------------------------------------
    def record(self, record: AuditRecord, session: Session = None) -> list[str]:
        """Write the AuditEvents of one interaction (one per patient concerned) and return their
        ids. With a session, they are written in the caller's transaction, so a write and its
        audit commit or fail together; a chain conflict then surfaces as the transaction's
        transient write conflict and the caller retries the whole transaction. Without one, they
        are written together in a transaction of their own (one commit, not one per patient)."""
        events = build_events(record, self.server_name)
        if session is not None:
            return [self._append_in_session(built, session) for built in events]
        return self._append_on_its_own(events)

    def append(self, event: dict, session: Session = None) -> str:
        """Chain and store an AuditEvent built elsewhere (e.g. received through `POST AuditEvent`,
        the TDE / ITI-20 feed). Any chain extension it brings is replaced by ours. It joins the
        chain of its patient entity when it has exactly one, the global chain otherwise."""
        if not isinstance(event, dict) or event.get("resourceType") != AUDIT_EVENT:
            raise ValueError("append() takes an AuditEvent resource")
        resource = without_chain(event)
        resource["id"] = resource.get("id") or new_id()
        resource["meta"] = {**(resource.get("meta") or {}), "versionId": "1"}
        patients = sorted(set(patients_of_event(resource)))
        built = BuiltEvent(patients[0] if len(patients) == 1 else None, resource, False)
        if session is not None:
            return self._append_in_session(built, session)
        return self._append_on_its_own([built])[0]

    def _append_on_its_own(self, events: list[BuiltEvent]) -> list[str]:
        # Held for the whole transaction, commit included: the next appender of this process then
        # reads a committed head instead of colliding with ours.
        with self.locks.holding(chain_key(built.patient) for built in events):
            if self.store.supports_transactions:
                return _retry(lambda: self._all_in_own_transaction(events), _is_retryable)
            # No transactions: each event is one step of its own, retried alone (retrying the
            # group would write again the events already linked).
            return [_retry(lambda built=built: self._link_and_store(built, None), _is_conflict) for built in events]

    def _all_in_own_transaction(self, events: list[BuiltEvent]) -> list[str]:
        try:
            with self.store.transaction() as own, self._batching(own) as writes:
                ids = [self._link_and_store(built, own) for built in events]
                # heads and events of the whole interaction in one round trip: a head that moved
                # meanwhile aborts the transaction, which is then retried as a whole
                self.store.write_all(writes, own)
                return ids
        except BaseException:
            # rolled back: the heads remembered for these chains were never committed
            for built in events:
                self.heads.forget(chain_key(built.patient))
            raise

    def _append_in_session(self, built: BuiltEvent, session: Session) -> str:
        # The caller commits, not us, so the lock cannot be held until the head is committed, and
        # waiting for it without limit could deadlock: its holder may be retrying against the
        # head this very transaction moved. So wait briefly (usually enough for a reader of this
        # process to commit), then go on and let the compare-and-set decide.
        with self.locks.briefly(chain_key(built.patient), SESSION_LOCK_WAIT_SECONDS):
            # A CAS miss has written nothing yet, so retrying in place is safe; a conflict the
            # server reports as a transient transaction error goes to the caller's retry loop.
            return _retry(lambda: self._link_and_store(built, session), _is_conflict)

    def _link_and_store(self, built: BuiltEvent, session: Session) -> str:
        key = chain_key(built.patient)
        head = self.heads.get(key) or self.store.get_meta(key, session)
        previous, seq = (head["hash"], head["_ver"] + 1) if head else (GENESIS, 1)
        moment = now()
        # with_chain copies deeply; built.resource stays untouched for a retry
        stamped = {**built.resource, "meta": {**(built.resource.get("meta") or {}), "lastUpdated": instant(moment)}}
        chained = with_chain(stamped, previous)
        _, digest = chain_facts(chained)
        new_head = {"_id": key, "_ver": seq, "hash": digest, "last": chained["id"]}
        audit = {"chain": key, "seq": seq, "patient": built.patient, "recorded": _recorded(chained, moment),
                 "self": built.self_access}
        try:
            self._write_link(_head_write(head, new_head),
                             self._event_writes(chained, moment, audit, session, built.known_invisible), session)
        except BaseException:
            self.heads.forget(key)        # stale, or written by a step that failed: read it again
            raise
        self.heads.remember(new_head)
        return chained["id"]

    def _write_link(self, head_write: Write, event_writes: list[Write], session: Session) -> None:
        """Into the open batch of our own transaction. Otherwise together, unless the head moves
        by compare-and-set: that one goes alone first, so that a miss writes nothing and can be
        retried in place (a failed insert stops the writes after it)."""
        batch = self._open_batch(session)
        if batch is not None:
            batch += [head_write, *event_writes]
        elif isinstance(head_write, CompareAndSet):
            self.store.write_all([head_write], session)
            self.store.write_all(event_writes, session)
        else:
            self.store.write_all([head_write, *event_writes], session)

    @contextmanager
    def _batching(self, session: Session) -> Iterator[list[Write]]:
        """While open, `_link_and_store` in `session` (our own transaction, in this thread) adds
        its writes to the yielded list instead of making them."""
        self._batch.open = (session, [])
        try:
            yield self._batch.open[1]
        finally:
            self._batch.open = None

    def _open_batch(self, session: Session) -> list[Write] | None:
        opened = getattr(self._batch, "open", None)
        return opened[1] if opened is not None and session is not None and opened[0] is session else None

    def _event_writes(self, resource: dict, moment: datetime, audit: dict, session: Session,
                      known_invisible: dict[str, bool] | None = None) -> list[Write]:
        """The AuditEvent document and its history version."""
        index = self.indexer.extract_index(resource)
        doc: dict = {"_id": resource["id"], "resource": resource, "_ver": 1, "_lastUpdated": moment,
                     "_index": index}
        acl = self.policy.acl_for(AUDIT_EVENT, resource, index, session, known_invisible) if self.policy else None
        if acl is not None:
            doc["_acl"] = acl
        doc["_audit"] = audit
        version = {"_id": f"{AUDIT_EVENT}/{resource['id']}/1", "type": AUDIT_EVENT, "id": resource["id"], "ver": 1,
                   "method": "POST", "lastUpdated": moment, "resource": resource}
        if acl is not None:
            version["_acl"] = acl
        return [Insert(AUDIT_EVENT, doc), Insert(HISTORY, version)]

    # -- reading --------------------------------------------------------------------------------
    def verify(self, patient: str | None = None) -> VerifyReport:
        """Walk the chain of `patient` ("Patient/x"), or every chain, and report the first break
        of each."""
        return verify_chains(self.store, patient)

    def access_history(self, patient: str, params: list[tuple[str, str]], base_url: str,
                       where: dict | None = None) -> dict:
        """The Bundle answering `GET Patient/[id]/$access-history` (see `history.py`)."""
        return access_history(self.store, patient, params, base_url, where)


def _head_write(head: dict | None, new_head: dict) -> Write:
    """Move a chain head: created with the chain's first event, then compare-and-set on the
    `_ver` and `hash` it had when the event was linked to it."""
    if head is None:
        return Insert(META, new_head)
    return CompareAndSet(META, new_head, {"_ver": head["_ver"], "hash": head["hash"]})


def _recorded(resource: dict, fallback: datetime) -> datetime:
    try:
        return date_parser.isoparse(resource["recorded"])
    except (KeyError, TypeError, ValueError):
        return fallback


def _is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, StorageConflict)


def _is_retryable(exc: BaseException) -> bool:
    """A CAS miss, or a transaction the server aborted because of a concurrent write (the driver
    labels those TransientTransactionError; checked by duck typing: no driver import here)."""
    has_label = getattr(exc, "has_error_label", None)
    return _is_conflict(exc) or (callable(has_label) and has_label("TransientTransactionError"))


def _retry(action: Callable[[], T], retryable: Callable[[BaseException], bool]) -> T:
    for attempt in range(MAX_ATTEMPTS):
        try:
            return action()
        except Exception as exc:
            if not retryable(exc):
                raise
            if attempt == MAX_ATTEMPTS - 1:
                raise AuditChainConflict(f"the audit chain kept changing during {MAX_ATTEMPTS} attempts") from exc
            # full-jitter backoff, so that processes contending for one chain spread out
            time.sleep(random.uniform(0, min(BACKOFF_BASE_SECONDS * 2 ** attempt, BACKOFF_MAX_SECONDS)))
    raise AssertionError("unreachable")
