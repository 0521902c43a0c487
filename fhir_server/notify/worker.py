"""The delivery worker: a thread in `server.services` that turns outbox items into deliveries and
delivers them, after the writes that queued them have committed.

One round (`Dispatcher.run_once`):
1. statuses: `requested` subscriptions become `active`; those past their `end` become `off`;
2. fan-out: each outbox item is matched against the subscriptions of its type, with each
   owner's access rights, and becomes one delivery per matching subscription (idempotent, so an
   item fanned out twice after a crash gives the same deliveries), then leaves the outbox;
3. delivery: due deliveries of deliverable subscriptions are attempted. A failure postpones every
   pending delivery of that subscription by an exponential backoff; after `max_failures`
   consecutive failures the Subscription goes to `error` and its deliveries wait (nothing is
   dropped) until the client sets it back to `requested`. An endpoint the endpoint policy
   refuses (endpoints.py) puts the Subscription in `error` at once: retrying would not help;
4. websockets: the sockets live in the process that accepted them, and any process may handle
   the write. So a websocket delivery is handed, through the database, to the processes that
   hold a socket bound to its subscription (`_socket_bindings`); the worker of each process
   pings its own sockets for the deliveries handed to it (polled every round), and the delivery
   is settled once all of them have answered. Each worker also says, every quarter of a lease,
   which subscriptions its process holds sockets for; a process that stops saying so (it died)
   is dropped after a lease, with what was handed to it.

Matching runs the criteria as a search restricted to the resource (`criteria&_id=<id>`) on the
committed data, rather than in memory: the same query engine as every search, chains and `_has`
included, with the owner's access filter AND-ed in. It sees the current version of the resource,
which is what a subscriber who is told "search again" will find anyway.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fhir_server.access.policy import NOTHING
from fhir_server.engine.errors import FhirError
from fhir_server.engine.model import RequestContext, etag, instant, now
from fhir_server.notify import channels
from fhir_server.notify.config import NotifyConfig
from fhir_server.notify.subscriptions import COLLECTING, DELIVERABLE, SUBSCRIPTION, owner_actor
from fhir_server.storage.outbox import NOBODY_BOUND

if TYPE_CHECKING:
    from fhir_server.notify.notifier import Notifier
    from fhir_server.server import FhirServer

log = logging.getLogger(__name__)

StopFlag = Callable[[], bool]


class Dispatcher:
    def __init__(self, server: FhirServer, notifier: Notifier) -> None:
        self.server = server
        self.notifier = notifier
        self.store = notifier.store
        self._last_socket_upkeep: float | None = None      # time.monotonic() of the last `keep_sockets`

    @property
    def config(self) -> NotifyConfig:
        return self.notifier.config

    def run_once(self, stopping: StopFlag = lambda: False) -> bool:
        """One round; True when there was something to do (the worker then goes on at once)."""
        self.keep_sockets()
        busy = self.maintain_statuses()
        busy = self.fan_out(stopping) or busy
        busy = self.deliver(stopping) or busy
        return self.ping_own_sockets(stopping) or busy

    # -- 1. statuses ----------------------------------------------------------------------------
    def maintain_statuses(self) -> bool:
        changed = False
        for entry in self.store.subscriptions(["requested"]):
            changed = self._set_status(entry["_id"], "active") or changed
        moment = now()
        for entry in self.store.subscriptions(DELIVERABLE):
            if entry.get("end") is not None and entry["end"] <= moment:
                changed = self._set_status(entry["_id"], "off") or changed
        return changed

    def _set_status(self, subscription_id: str, status: str, error_text: str | None = None) -> bool:
        """Change a Subscription's status as the server (a new version, audited like any write).
        A concurrent change by its owner wins: the next round looks again."""
        doc = self.server.store.get(SUBSCRIPTION, subscription_id)
        if doc is None:
            return False
        resource = copy.deepcopy(doc["resource"])
        resource["status"] = status
        if error_text:
            resource["error"] = error_text
        else:
            resource.pop("error", None)
        try:
            self.server.interactions.update(SUBSCRIPTION, subscription_id, resource, self._server_context(),
                                            if_match=etag(doc["_ver"]))
        except FhirError as exc:
            log.info("Subscription/%s not set to %s: %s", subscription_id, status, exc.issues[0].diagnostics)
            return False
        return True

    # -- 2. fan-out -----------------------------------------------------------------------------
    def fan_out(self, stopping: StopFlag = lambda: False) -> bool:
        done = 0
        while done < self.config.batch and not stopping():
            moment = now()
            event = self.store.claim_event(moment, moment + timedelta(seconds=self.config.lease_seconds))
            if event is None:
                break
            self._fan_out_event(event)
            self.store.finish_event(event["_id"])
            done += 1
        return done > 0

    def _fan_out_event(self, event: dict) -> None:
        for entry in self.store.subscriptions(COLLECTING, event["resource_type"]):
            if self._matches(entry, event):
                self.store.add_delivery(_delivery_for(entry, event))

    def _matches(self, entry: dict, event: dict) -> bool:
        try:
            extra_filter = self._owner_filter(entry)
            params = [*(tuple(p) for p in entry["criteria"]), ("_id", event["resource_id"])]
            bundle = self.server.search.search(entry["resource_type"], params, base_url="", extra_filter=extra_filter)
        except FhirError as exc:
            log.warning("Subscription/%s: criteria not evaluated: %s", entry["_id"], exc.issues[0].diagnostics)
            return False
        return any((e.get("search") or {}).get("mode") == "match" for e in bundle.get("entry", []))

    def _owner_filter(self, entry: dict) -> Callable[[str], dict | None] | None:
        """The owner's access filter (None: no restriction, for a system owner or no owner)."""
        try:
            owner = owner_actor(entry.get("owner"))
        except FhirError:
            return lambda resource_type: dict(NOTHING)          # an owner no longer recognised sees nothing
        if owner is None:
            return None
        access = self.server.policy.request_access(owner)
        return lambda resource_type: self.server.policy.read_filter(access, resource_type)

    # -- 3. delivery ----------------------------------------------------------------------------
    def deliver(self, stopping: StopFlag = lambda: False) -> bool:
        moment = now()
        due = self.store.due_subscriptions(moment)
        subscriptions = {e["_id"]: e for e in self.store.subscriptions_among(due, DELIVERABLE)} if due else {}
        done = 0
        while subscriptions and done < self.config.batch and not stopping():
            moment = now()
            delivery = self.store.claim_delivery(sorted(subscriptions), moment,
                                                 moment + timedelta(seconds=self.config.lease_seconds))
            if delivery is None:
                break
            entry = subscriptions[delivery["subscription"]]
            if not self._attempt(delivery, entry):
                subscriptions.pop(entry["_id"])       # failing: its other deliveries wait
            done += 1
        return done > 0

    def _attempt(self, delivery: dict, entry: dict) -> bool:
        """Try one delivery; False when the subscription's channel failed."""
        channel = entry["channel"]
        if channel["type"] == "websocket":
            self._hand_to_socket_holders(delivery, entry)
            return True
        resource = self._payload(entry, delivery) if channel.get("payload") else None
        if channel.get("payload") and resource is None:
            self.store.finish_delivery(delivery["_id"], "skipped", None, now(),
                                       "the resource is no longer available to the subscriber")
            return True
        outcome = channels.rest_hook(channel, resource, self.config.http_timeout_seconds, self.config.endpoints)
        moment = now()
        attempt = {"at": moment, "outcome": "skipped" if outcome.skipped else "ok" if outcome.ok else "failed",
                   "status": outcome.status, "error": outcome.error}
        if outcome.ok:
            self.store.finish_delivery(delivery["_id"], "skipped" if outcome.skipped else "delivered", attempt,
                                       moment, outcome.error)
            if not outcome.skipped:
                self.store.record_success(entry["_id"])
            return True
        if outcome.refused:
            self._refused(delivery, entry, attempt, moment)
        else:
            self._failed(delivery, entry, attempt, moment)
        return False

    def _payload(self, entry: dict, delivery: dict) -> dict | None:
        """The current version of the resource, if its subscriber may still see it."""
        extra_filter = self._owner_filter(entry)
        resource_type, _, resource_id = delivery["focus"].partition("/")
        where = extra_filter(resource_type) if extra_filter else None
        doc = self.server.store.get(resource_type, resource_id, where=where)
        return doc["resource"] if doc else None

    def _refused(self, delivery: dict, entry: dict, attempt: dict, moment: datetime) -> None:
        """The endpoint policy refuses the endpoint now (its host resolves to an internal address,
        or the allow-list changed): no point retrying, the subscription goes to error at once."""
        self.store.record_failure(entry["_id"], attempt["error"])
        self.store.retry_delivery(delivery["_id"], attempt, moment)        # kept pending, like any error
        self._set_status(entry["_id"], "error", f"Delivery refused at {instant(moment)}: {attempt['error']}. "
                         "Change the endpoint, or set the status back to 'requested' to try again.")

    def _failed(self, delivery: dict, entry: dict, attempt: dict, moment: datetime) -> None:
        failures = self.store.record_failure(entry["_id"], attempt["error"])
        if failures >= self.config.max_failures:
            # Stays pending: it is delivered once the client repairs the subscription.
            self.store.retry_delivery(delivery["_id"], attempt, moment)
            self._set_status(entry["_id"], "error",
                             f"Delivery failed {failures} times in a row (last at {instant(moment)}): "
                             f"{attempt['error']}. Set the status back to 'requested' to resume.")
            return
        due = moment + timedelta(seconds=self.config.backoff(failures))
        self.store.retry_delivery(delivery["_id"], attempt, due)
        self.store.postpone(entry["_id"], due)

    # -- 4. websockets, whichever process holds them -------------------------------------------
    def _hand_to_socket_holders(self, delivery: dict, entry: dict) -> None:
        moment = now()
        holders = self.store.socket_holders(entry["_id"], moment - timedelta(seconds=self.config.lease_seconds))
        if not holders:
            attempt = {"at": moment, "outcome": "skipped", "status": None, "error": NOBODY_BOUND}
            self.store.finish_delivery(delivery["_id"], "skipped", attempt, moment, NOBODY_BOUND)
            return
        self.store.relay_delivery(delivery["_id"], holders, moment)

    def ping_own_sockets(self, stopping: StopFlag = lambda: False) -> bool:
        """Ping this process's sockets for the websocket deliveries handed to it."""
        process = self.notifier.process_id
        handed = self.store.relayed_to(process, self.config.batch)
        for delivery in handed:
            if stopping():
                break
            outcome = channels.websocket(self.notifier.hub, delivery["subscription"])
            self.store.relay_done(delivery["_id"], process, received=not outcome.skipped)
        if handed:
            self.store.settle_relays(now())
        return bool(handed)

    def keep_sockets(self) -> None:
        """Every quarter of a lease: say which subscriptions this process holds sockets for, and
        drop the holders that stopped saying so, settling what they left unanswered."""
        clock = time.monotonic()
        if self._last_socket_upkeep is not None and clock - self._last_socket_upkeep < self.config.lease_seconds / 4:
            return
        self._last_socket_upkeep = clock
        moment = now()
        self.store.keep_sockets_alive(self.notifier.hub.subscriptions(), self.notifier.process_id, moment)
        if self.store.drop_stale_holders(moment - timedelta(seconds=self.config.lease_seconds)):
            self.store.settle_relays(moment)

    def _server_context(self) -> RequestContext:
        return RequestContext(base_url=self.server.settings.base_url or "")


def _delivery_for(entry: dict, event: dict) -> dict:
    moment = now()
    return {
        "_id": f"{entry['_id']}|{event['_id']}", "subscription": entry["_id"], "event": event["_id"],
        "focus": f"{event['resource_type']}/{event['resource_id']}", "version": event["version"],
        "interaction": event["interaction"], "channel": entry["channel"]["type"], "state": "pending",
        "created": moment, "due": moment, "tries": 0, "attempts": [], "last_error": None,
    }


class DeliveryWorker:
    """The thread (a `server.services` entry: start()/stop(), restartable)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="espace-notify-worker",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the item in hand (its lease is released by finishing it)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(self.dispatcher.config.http_timeout_seconds + 5)
        self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                busy = self.dispatcher.run_once(stop.is_set)
            except Exception:
                # the database may be briefly unreachable: log, wait, try again
                log.exception("notification worker round failed")
                busy = False
            if not busy:
                self._wake.wait(self.dispatcher.config.poll_seconds)
                self._wake.clear()
