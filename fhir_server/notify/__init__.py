"""Notifications to the patient and FHIR R4 Subscriptions.

    install(server)                    wires everything below into the server
    server.notifier.on_write(event)    write hook: documents, messages, subscription registry, outbox
    server.notifier.on_access(patient, actor, emergency, session=None)
                                       first access of a professional, every emergency access
    server.notifier.notify(notice)     write any notification (messages.Notice)
    server.notifier.config             NotifyConfig (retry delays...), read at every worker round
    server.notifier.hub                websocket clients bound to subscriptions (rest/websocket.py)
    Subscription/[id]/$status          subscription state and delivery log

Flow: a write (hook, same transaction) -> notification Communication in the record + outbox item
-> worker thread (after commit) -> matching subscriptions -> deliveries with retries/backoff ->
rest-hook endpoint (if the endpoint policy allows it, endpoints.py) or websocket `ping <id>` (by
the worker of the process holding the socket, whichever process handled the write).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.notify.config import NotifyConfig
from fhir_server.notify.hub import WebsocketHub
from fhir_server.notify.messages import Notice
from fhir_server.notify.notifier import Notifier
from fhir_server.notify.status import status_operation
from fhir_server.notify.worker import DeliveryWorker, Dispatcher
from fhir_server.storage.outbox import NotifyStore

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

__all__ = ["DeliveryWorker", "Dispatcher", "Notice", "Notifier", "NotifyConfig", "WebsocketHub", "install"]


def install(server: FhirServer) -> None:
    store = NotifyStore(server.store)
    notifier = Notifier(server, store)
    notifier.worker = DeliveryWorker(Dispatcher(server, notifier))
    server.notifier = notifier
    server.startup_hooks.append(lambda: store.ensure(notifier.config.delivery_log_ttl_seconds))
    server.interactions.write_rules.append(notifier.rules.check)
    server.interactions.write_rules.append(notifier.refuse_forged_notifications)
    server.interactions.write_hooks.append(notifier.on_write)
    server.services.append(notifier.worker)
    server.operations.register(status_operation(notifier))
