"""Rules of secure messaging between professionals and patients (Communication).

A conversation is a thread: its first message (no `inResponseTo`) opens it, every reply
references that first message in `inResponseTo` (conversations are flat, like a mail thread, so
that `Communication?conversation=` finds all of them with one index look-up).

- Every message concerns one patient (`subject`), has a sender, at least one recipient and some
  content; a patient appears as a recipient only when the message is about them.
- Only a professional (Practitioner, PractitionerRole, Organization) opens a conversation.
- A patient writes in their own name, only in a conversation opened with them (they are among
  the first message's recipients) and only to its participants. Professionals write to each
  other freely (about a patient).
- A professional writes in their own name (the sender is them, their role or their
  organisation). A back-end system (system token) acts for the software that holds the message.
- Attachments are a Binary or a DocumentReference of the same patient (`contentReference`, or
  `contentAttachment.url` pointing at one).
- A sent message is never rewritten: only its read receipt (`received`, set once, by a
  recipient) and its withdrawal by its sender (`status` entered-in-error) may change; messages are
  not deleted (except by a back-end system).
"""

from __future__ import annotations

from typing import Any

from dateutil import parser as date_parser

from fhir_server.engine.errors import FhirError, error, unprocessable
from fhir_server.engine.interactions import WriteEvent
from fhir_server.messaging.participants import Resolver, all_keys, is_professional, keys, literal, type_of

ATTACHMENT_TYPES = frozenset({"Binary", "DocumentReference"})
# What may change on a message once sent.
MUTABLE_AFTER_SENDING = frozenset({"received", "status", "meta"})
DRAFT = "preparation"


def _forbidden(message: str, *expression: str) -> FhirError:
    return error(403, "forbidden", message, *expression)


class MessagingRules:
    def __init__(self, interactions: Any) -> None:
        self.interactions = interactions

    def __call__(self, event: WriteEvent) -> None:
        if event.resource_type != "Communication":
            return
        if event.new is None:
            self._check_delete(event)
        elif event.old is None or event.old.get("status") == DRAFT:
            self._check_message(event, event.new)
        else:
            self._check_change(event, event.old, event.new)

    # -- reading as the writer --------------------------------------------------------------------
    def _resolver(self, event: WriteEvent) -> Resolver:
        def resolve(target: str) -> dict | None:
            resource_type, _, resource_id = target.partition("/")
            try:
                return self.interactions.read(resource_type, resource_id, event.ctx, event.session).body
            except FhirError:
                return None
        return resolve

    # -- a new message ----------------------------------------------------------------------------
    def _check_message(self, event: WriteEvent, message: dict) -> None:
        subject = _check_content(message)
        if message.get("received") and _actor_kind(event) in ("patient", "practitioner"):
            # a back-end system may bring messages already read elsewhere (migration)
            raise unprocessable("received is the read receipt: the recipient sets it once the message is read",
                                "Communication.received")
        resolve = self._resolver(event)
        self._check_sender(event, message, resolve)
        if message.get("inResponseTo"):
            self._check_reply(event, message, subject, resolve)
        elif not is_professional(message.get("sender"), message):
            raise _forbidden("Only a health professional can start a conversation: a patient replies in a "
                             "conversation a professional opened with them", "Communication.sender")
        self._check_attachments(message, subject, resolve)

    def _check_sender(self, event: WriteEvent, message: dict, resolve: Resolver) -> None:
        access, kind = event.ctx.access, _actor_kind(event)
        sender = message.get("sender")
        if kind == "patient":
            if literal(sender) not in set(access.patients):
                raise _forbidden("A patient sends messages in their own name: the sender must be their Patient "
                                 "resource", "Communication.sender")
        elif kind == "practitioner":
            if not keys(sender, message, resolve) & set(access.keys):
                raise _forbidden("A professional sends messages in their own name: the sender must be them, their "
                                 "role or their organisation", "Communication.sender")

    def _check_reply(self, event: WriteEvent, message: dict, subject: str, resolve: Resolver) -> None:
        first = _conversation_of(message)
        opening = resolve(first)
        if opening is None:
            raise unprocessable(f"{first} does not exist or you may not see it: a reply references the first "
                                "message of its conversation", "Communication.inResponseTo")
        if opening.get("inResponseTo"):
            raise unprocessable(f"{first} is itself a reply: reference the first message of the conversation, "
                                f"{_conversation_of(opening)}", "Communication.inResponseTo")
        if literal(opening.get("subject")) != subject:
            raise unprocessable(f"The conversation {first} is about {literal(opening.get('subject'))}, not {subject}",
                                "Communication.subject")
        if _actor_kind(event) == "patient" or type_of(message.get("sender"), message) == "Patient":
            _check_patient_reply(message, opening, resolve)

    def _check_attachments(self, message: dict, subject: str, resolve: Resolver) -> None:
        """An attached resource (`contentReference`) exists, is readable by the sender and, for a
        document, belongs to the same patient. An Attachment's `url` is only checked for its form:
        its content may be stored in the same transaction, after the message."""
        for index, payload in enumerate(message.get("payload") or ()):
            where = f"Communication.payload[{index}].content"
            url = (payload.get("contentAttachment") or {}).get("url")
            if isinstance(url, str) and not url.startswith(("http://", "https://", "urn:")):
                _check_attachment_target(literal({"reference": url}), where)
            if "contentReference" not in payload:
                continue
            target = literal(payload["contentReference"])
            _check_attachment_target(target, where)
            attached = resolve(target)
            if attached is None:
                raise unprocessable(f"The attachment {target} does not exist or you may not see it", where)
            owner = literal(attached.get("subject"))
            if target.startswith("DocumentReference/") and owner != subject:
                raise unprocessable(f"The attached document {target} belongs to {owner}, not to {subject}", where)

    # -- changes to a sent message ----------------------------------------------------------------
    def _check_change(self, event: WriteEvent, old: dict, new: dict) -> None:
        changed = sorted(k for k in set(old) | set(new) if k not in MUTABLE_AFTER_SENDING and old.get(k) != new.get(k))
        if changed:
            raise error(409, "conflict", "A sent message cannot be changed: send a new message in the conversation "
                        "(its sender may withdraw it with status entered-in-error)", f"Communication.{changed[0]}")
        resolve = self._resolver(event)
        if new.get("received") != old.get("received"):
            self._check_receipt(event, old, new, resolve)
        if new.get("status") != old.get("status"):
            self._check_withdrawal(event, old, new, resolve)

    def _check_receipt(self, event: WriteEvent, old: dict, new: dict, resolve: Resolver) -> None:
        if old.get("received"):
            raise error(409, "conflict", f"This message was already received on {old['received']}",
                        "Communication.received")
        if not new.get("received"):
            return
        if not _acts_for(event, new.get("recipient") or (), new, resolve):
            raise _forbidden("Only a recipient of the message acknowledges its receipt", "Communication.received")
        if _earlier(new.get("received"), new.get("sent")):
            raise unprocessable("A message cannot be received before it was sent", "Communication.received")

    def _check_withdrawal(self, event: WriteEvent, old: dict, new: dict, resolve: Resolver) -> None:
        if new.get("status") != "entered-in-error":
            raise error(409, "conflict", f"A sent message stays {old.get('status')}; it can only be withdrawn "
                        "(entered-in-error)", "Communication.status")
        if not _acts_for(event, [new.get("sender")], new, resolve):
            raise _forbidden("Only the sender withdraws a message", "Communication.status")

    @staticmethod
    def _check_delete(event: WriteEvent) -> None:
        if _actor_kind(event) in ("patient", "practitioner"):
            raise _forbidden("Messages are kept: withdraw a message by setting its status to entered-in-error")


def _check_content(message: dict) -> str:
    """The message's own coherence; returns its patient (`Patient/id`)."""
    subject = literal(message.get("subject"))
    if subject is None or not subject.startswith("Patient/"):
        raise unprocessable("A message of the health space concerns one patient: subject must reference a Patient",
                            "Communication.subject")
    if not message.get("sender"):
        raise unprocessable("A message has a sender", "Communication.sender")
    recipients = message.get("recipient") or []
    if not recipients:
        raise unprocessable("A message has at least one recipient", "Communication.recipient")
    if not message.get("payload"):
        raise unprocessable("A message has some content (text, attachment or reference)", "Communication.payload")
    if message.get("status") != DRAFT and not message.get("sent"):
        raise unprocessable("A message that is not a draft (status preparation) says when it was sent",
                            "Communication.sent")
    for index, recipient in enumerate(recipients):
        if type_of(recipient, message) == "Patient" and literal(recipient) != subject:
            raise unprocessable(f"A patient receives messages about themselves only ({subject} is the subject)",
                                f"Communication.recipient[{index}]")
    return subject


def _check_attachment_target(target: str | None, where: str) -> None:
    if target is None or target.split("/", 1)[0] not in ATTACHMENT_TYPES:
        raise unprocessable("An attachment is a Binary or a DocumentReference of this server (Binary/[id], "
                            "DocumentReference/[id])", where)


def _conversation_of(message: dict) -> str:
    answered = message.get("inResponseTo") or []
    targets = [literal(r) for r in answered]
    if len(targets) != 1 or targets[0] is None or not targets[0].startswith("Communication/"):
        raise unprocessable("A reply references exactly one message in inResponseTo: the first message of its "
                            "conversation, as Communication/[id]", "Communication.inResponseTo")
    return targets[0]


def _check_patient_reply(message: dict, opening: dict, resolve: Resolver) -> None:
    patient = literal(message.get("sender"))
    if patient not in {literal(r) for r in opening.get("recipient") or ()}:
        raise _forbidden("A patient can only reply in a conversation a professional opened with them",
                         "Communication.inResponseTo")
    participants = all_keys([opening.get("sender"), *(opening.get("recipient") or ())], opening, resolve)
    for index, recipient in enumerate(message.get("recipient") or ()):
        if not keys(recipient, message, resolve) & participants:
            raise _forbidden("A patient writes only to the participants of the conversation",
                             f"Communication.recipient[{index}]")


def _acts_for(event: WriteEvent, references: Any, message: dict, resolve: Resolver) -> bool:
    """Whether the request's actor is one of `references` (a back-end system acts for anyone)."""
    access, kind = event.ctx.access, _actor_kind(event)
    if kind is None or kind == "system":
        return True
    named = all_keys(references, message, resolve)
    if kind == "patient":
        return bool(named & set(access.patients))
    return kind == "practitioner" and bool(named & set(access.keys))


def _earlier(first: Any, second: Any) -> bool:
    """Whether dateTime `first` is before `second` (False when either lacks a time of day)."""
    try:
        one, two = date_parser.isoparse(first), date_parser.isoparse(second)
    except (TypeError, ValueError):
        return False
    if one.tzinfo is None or two.tzinfo is None:
        return False
    return one < two


def _actor_kind(event: WriteEvent) -> str | None:
    return getattr(getattr(event.ctx.access, "actor", None), "kind", None)
