"""The patient's notifications: when to write them, and the outbox that feeds Subscriptions.

Triggers:
- a DocumentReference added to the record (create), or one that replaces others (relatesTo
  `replaces`, on create or when an update adds it);
- a professional accessing the record for the first time (per patient, per RPPS);
- every emergency (break-the-glass) access;
- a message to the patient (a new Communication whose recipient is the patient).

A notification is a Communication in the patient's record (see `messages.py`), written through
the normal create interaction (index, access data, history and audit like any resource) in the
transaction of what triggered it. It is itself delivered through the patient's Subscriptions, but
never triggers a "new message" notification: notifications are recognised by their category.

Every create/update of a type someone subscribes to also leaves an item in the outbox, in the same
transaction; the delivery worker (worker.py) does the rest after the commit.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import TYPE_CHECKING

from fhir_server.access.actor import Actor
from fhir_server.access.policy import INVISIBLE
from fhir_server.engine.errors import error
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import RequestContext, new_id, now
from fhir_server.notify import codes, messages
from fhir_server.notify.config import NotifyConfig
from fhir_server.notify.hub import Listener, WebsocketHub
from fhir_server.notify.messages import Notice, ProfessionalInfo
from fhir_server.notify.subscriptions import (
    COLLECTING,
    DELIVERABLE,
    SUBSCRIPTION,
    SubscriptionRules,
    actor_key,
    owner_of,
    registry_entry,
)
from fhir_server.storage import Session
from fhir_server.storage.mongo import HISTORY
from fhir_server.storage.outbox import NotifyStore

if TYPE_CHECKING:
    from fhir_server.notify.worker import DeliveryWorker
    from fhir_server.server import FhirServer

log = logging.getLogger(__name__)

SEEN_CACHE_SIZE = 100_000
RPPS_IDENTIFIER_SYSTEMS = ("https://rpps.esante.gouv.fr|{rpps}", "urn:oid:1.2.250.1.71.4.2.1|8{rpps}")


class Notifier:
    def __init__(self, server: FhirServer, store: NotifyStore, hub: WebsocketHub | None = None,
                 config: NotifyConfig | None = None) -> None:
        self.server = server
        self.store = store
        self.hub = hub or WebsocketHub()
        # Names this server process to the others (websocket deliveries are routed by it).
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Read by the worker at every round: tests and operators may replace it at run time.
        self.config = config or NotifyConfig()
        # (patient, professional) pairs known to have accessed the record: "seen" never reverts,
        # so a hit spares the look-up on every later read (bounded: cleared when full).
        self._seen: set[tuple[str, str]] = set()
        self.rules = SubscriptionRules(server, store, lambda: self.config.endpoints)
        self.worker: DeliveryWorker | None = None         # set by install()

    # -- write side ---------------------------------------------------------------------------
    def on_write(self, event: WriteEvent) -> None:
        """Write hook (inside the write's transaction): keep the subscription registry in step,
        queue the write for subscribers, and write the patient's notifications."""
        if event.resource_type == SUBSCRIPTION:
            self._sync_subscription(event)
        self._queue_for_subscribers(event)
        for notice in notices_for_write(event):
            self.notify(notice, event.session, event.ctx.base_url)

    def refuse_forged_notifications(self, event: WriteEvent) -> None:
        """Write rule: only the server (or a trusted system) writes notifications, so that the
        category can be trusted to mean "from Espace" and to stop the message trigger."""
        access = event.ctx.access
        actor = access.actor if access is not None else None
        if actor is None or actor.kind == "system" or codes.notification_code(event.new) is None:
            return
        raise error(403, "forbidden", "Notification Communications are written by the server only")

    def _sync_subscription(self, event: WriteEvent) -> None:
        if event.new is None:
            self.store.remove_subscription(event.resource_id, event.session)
            self.store.cancel_pending(event.resource_id, "Subscription deleted", now(), event.session)
            return
        access = event.ctx.access
        actor = access.actor if access is not None else None
        owner = owner_of(actor, access) if actor is not None else None
        entry = registry_entry(event.new, event.version, now())
        # A client asking again (requested, or active) after an error starts with a clean slate;
        # the worker's own status changes (no actor) keep the count.
        fresh_start = entry["status"] == "requested" or (actor is not None and entry["status"] in DELIVERABLE)
        self.store.save_subscription(entry, owner, reset_failures=fresh_start, session=event.session)
        if entry["status"] == "off":
            # turned off: what was waiting is dropped, or it would wait for ever
            self.store.cancel_pending(event.resource_id, "Subscription turned off", now(), event.session)
        self._mark_owner(event)

    def _mark_owner(self, event: WriteEvent) -> None:
        """Write `_owner` (the owner's identity keys, in the access policy's terms: `Patient/x`
        for a patient, `ps:<RPPS>` for a practitioner) on the stored Subscription and its history
        version, on every write since each write replaces the document. A Subscription holds the
        subscriber's endpoint and headers (often a secret): the access policy restricts reads of
        Subscriptions by patients and practitioners to `{"_owner": {"$in": their keys}}`."""
        registered = self.store.subscription(event.resource_id, event.session) or {}
        keys = (registered.get("owner") or {}).get("read_keys", [])
        self.server.store.update_many(SUBSCRIPTION, {"_id": event.resource_id}, {"$set": {"_owner": keys}},
                                      event.session)
        self.server.store.update_many(HISTORY, {"_id": f"{SUBSCRIPTION}/{event.resource_id}/{event.version}"},
                                      {"$set": {"_owner": keys}}, event.session)

    def _queue_for_subscribers(self, event: WriteEvent) -> None:
        # R4 notifies when a matching resource is created or updated; a deleted resource can no
        # longer be matched against the criteria.
        if event.new is None:
            return
        if not self.store.has_subscribers(event.resource_type, COLLECTING, event.session):
            return
        self.store.add_event({"_id": new_id(), "resource_type": event.resource_type,
                              "resource_id": event.resource_id, "version": event.version,
                              "interaction": event.interaction, "created": now()}, event.session)

    # -- access side --------------------------------------------------------------------------
    def on_access(self, patient: str, actor: Actor | None, emergency: bool, session: Session = None) -> list[str]:
        """Called for each patient whose record an actor successfully accessed. Notifies the
        first access of each professional and every emergency access; returns the ids of the
        notifications written. Without a session, runs in its own transaction so that "already
        seen" and the notification are recorded together."""
        if actor is None or actor.kind != "practitioner":
            return []
        patient = patient if patient.startswith("Patient/") else f"Patient/{patient}"
        emergency = emergency or actor.is_emergency
        pair = (patient, actor_key(actor))
        if not emergency and (pair in self._seen or self.store.was_seen(*pair, session)):
            if session is None:         # what a transaction saw may still be rolled back
                self._remember_seen(pair)
            return []                   # the common case, on every read: no write, mostly no look-up
        if session is not None:
            return self._access_notices(patient, actor, emergency, session)
        return self.server.store.run_in_transaction(lambda s: self._access_notices(patient, actor, emergency, s))

    def _remember_seen(self, pair: tuple[str, str]) -> None:
        if len(self._seen) >= SEEN_CACHE_SIZE:
            self._seen.clear()
        self._seen.add(pair)

    def _access_notices(self, patient: str, actor: Actor, emergency: bool, session: Session) -> list[str]:
        first = self.store.mark_seen(patient, actor_key(actor), now(), session)
        if not (first or emergency):
            return []
        professional = self._professional(actor)
        # An emergency access says more than a first access: one notification, not two.
        notice = (messages.emergency_access(patient, professional) if emergency
                  else messages.first_access(patient, professional))
        return [self.notify(notice, session)]

    def _professional(self, actor: Actor) -> ProfessionalInfo:
        practitioner_id = None
        if actor.rpps:
            criteria = ",".join(s.format(rpps=actor.rpps) for s in RPPS_IDENTIFIER_SYSTEMS)
            found = self.server.search.matching_ids("Practitioner", [("identifier", criteria)], limit=1)
            practitioner_id = found[0] if found else None
        return ProfessionalInfo(actor.rpps, actor.name, practitioner_id)

    def professionals_seen(self, patient: str) -> list[str]:
        """Keys (`ps:<RPPS>`) of the professionals who already accessed the patient's record."""
        return self.store.seen_by(patient if patient.startswith("Patient/") else f"Patient/{patient}")

    # -- websocket channel --------------------------------------------------------------------
    def binding_refusal(self, subscription_id: str, actor: Actor) -> str | None:
        """Why `actor` may not bind a websocket to this subscription ("<status> <reason>"), or
        None when it may: it must be a websocket subscription of theirs (or they a system)."""
        entry = self.store.subscription(subscription_id)
        if entry is None:
            return f"404 Subscription/{subscription_id} does not exist"
        if entry["channel"]["type"] != "websocket":
            return f"400 Subscription/{subscription_id} does not use the websocket channel"
        owner = entry.get("owner")
        if actor.kind != "system" and (owner is None or owner["key"] != actor_key(actor)):
            return f"403 Only the owner of Subscription/{subscription_id} may bind to it"
        return None

    def hold_socket(self, subscription_id: str) -> None:
        """A websocket of this process is being bound to the subscription: from now on its pings
        come here, whichever process handles the write that triggers them."""
        self.store.hold_socket(subscription_id, self.process_id, now())

    def release_socket(self, listener: Listener) -> None:
        """A websocket closed: forget it, and tell the other processes when it was the last one
        of a subscription here."""
        for subscription_id in self.hub.unbind(listener):
            try:
                self.store.release_socket(subscription_id, self.process_id)
            except Exception:
                # e.g. the database is gone at shutdown: the binding expires without upkeep anyway
                log.warning("websocket binding of Subscription/%s not released", subscription_id, exc_info=True)

    # -- writing a notification ---------------------------------------------------------------
    def notify(self, notice: Notice, session: Session = None, base_url: str | None = None) -> str:
        """Write one notification Communication (in `session` when given); its id. The server
        writes it (no actor): the patient's consent decides who reads it, not who caused it."""
        ctx = RequestContext(base_url=base_url or self.server.settings.base_url or "")
        result = self.server.interactions.create("Communication", messages.communication(notice, now()), ctx,
                                                 session=session)
        log.debug("notification %s for %s: %s", notice.code, notice.patient, notice.text)
        return result.body["id"]


# -- which writes notify whom ---------------------------------------------------------------------
def notices_for_write(event: WriteEvent) -> list[Notice]:
    if event.new is None:
        return []
    if event.resource_type == "DocumentReference":
        return _document_notices(event)
    if event.resource_type == "Communication":
        return _message_notices(event)
    return []


def _document_notices(event: WriteEvent) -> list[Notice]:
    document = event.new
    if document.get("status") == "entered-in-error":
        return []
    replaced = sorted(_replaced(document) - _replaced(event.old or {}))
    if not replaced and event.old is not None:
        return []                       # an ordinary update of a document already notified
    notices = []
    for patient in _patients_to_tell(event):
        notices.append(messages.replaced_document(patient, document, replaced) if replaced
                       else messages.new_document(patient, document))
    return notices


def _message_notices(event: WriteEvent) -> list[Notice]:
    message = event.new
    # A notification is itself a Communication to the patient: it must not announce itself.
    if event.old is not None or codes.notification_code(message) is not None:
        return []
    sender = _patient_of((message.get("sender") or {}).get("reference"))
    recipients = {_patient_of((r or {}).get("reference")) for r in message.get("recipient") or []} - {None, sender}
    return [messages.new_message(patient, message) for patient in _patients_to_tell(event) if patient in recipients]


def _patients_to_tell(event: WriteEvent) -> list[str]:
    """The patients of the record(s) the resource belongs to, except when it is hidden from the
    patient (INVISIBLE_PATIENT: telling would reveal it) and except the patient who wrote it."""
    acl = event.acl or {}
    if INVISIBLE in acl.get("deny", []):
        return []
    access = event.ctx.access
    writers = set(access.patients) if access is not None else set()
    return [p for p in acl.get("patients", []) if p not in writers]


def _replaced(document: dict) -> set[str]:
    return {(r.get("target") or {}).get("reference") for r in document.get("relatesTo") or []
            if r.get("code") == "replaces" and (r.get("target") or {}).get("reference")}


def _patient_of(reference: str | None) -> str | None:
    if not isinstance(reference, str) or "Patient/" not in reference:
        return None
    return "Patient/" + reference.rsplit("Patient/", 1)[1].split("/_history/")[0]
