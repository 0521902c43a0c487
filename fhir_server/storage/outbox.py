"""Storage of the notification machinery (see `fhir_server.notify`): the outbox, the delivery log,
the subscription registry and the professionals who already accessed each record.

Collections (internal, never exposed as FHIR resources):

    _outbox         one item per write a subscription may care about, inserted in the write's
                    transaction: {_id, resource_type, resource_id, version, interaction, created,
                    lease_until}. Deleted once fanned out into deliveries.
    _delivery       one item per (subscription, outbox item): the delivery and its log:
                    {_id: "<subscription>|<event>", subscription, event, focus, version, channel,
                    state: pending|delivered|skipped|cancelled, created, due, lease_until, tries,
                    attempts: [{at, outcome, status, error}] (last ATTEMPTS_KEPT), last_error,
                    finished}. Finished ones expire `finished` + the log's TTL later (a TTL index,
                    `ensure`); pending ones never do. A websocket delivery handed to the processes
                    holding its sockets also has `targets` (those that have not pinged yet) and
                    `received` (how many had a client to ping).
    _socket_bindings one document per (subscription, server process) holding a websocket bound to
                    it: {_id: "<subscription>|<process>", subscription, process, alive}; `alive`
                    is refreshed by the process's worker, so a process that died stops counting.
    _subscriptions  what the worker needs of each Subscription, kept in step with the resource in
                    the same transaction: {_id, resource_type, criteria, channel, status, end,
                    version, updated, owner: {key, claims, read_keys}, failures (consecutive),
                    last_error}
    _notify_seen    one document per (patient, professional) who accessed the record:
                    {_id: "<patient>|<actor key>", patient, actor, first}

Work is claimed with a lease (`lease_until`) rather than a lock, so that several server
processes may run workers on one database, and an item claimed by a process that died is taken
up again once its lease expires: nothing is lost across restarts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime

from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import OperationFailure

from fhir_server.storage.mongo import MongoStore, Session

OUTBOX = "_outbox"
DELIVERIES = "_delivery"
SUBSCRIPTIONS = "_subscriptions"
SEEN = "_notify_seen"
SOCKETS = "_socket_bindings"
ATTEMPTS_KEPT = 20
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
LOG_TTL_INDEX = "finished_ttl"
INDEX_OPTIONS_CONFLICT = (85, 86)     # IndexOptionsConflict, IndexKeySpecsConflict
NOBODY_BOUND = "no websocket client was bound to the subscription"
NOT_RELAYED = {"targets": {"$exists": False}}

_INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    OUTBOX: [[("lease_until", 1), ("created", 1)]],
    DELIVERIES: [[("state", 1), ("due", 1)], [("subscription", 1), ("created", -1)], [("targets", 1)]],
    SUBSCRIPTIONS: [[("resource_type", 1), ("status", 1)], [("status", 1)]],
    SEEN: [[("patient", 1), ("first", -1)]],
    SOCKETS: [[("subscription", 1), ("alive", 1)], [("alive", 1)]],
}


class NotifyStore:
    def __init__(self, store: MongoStore) -> None:
        self.db = store.db

    def ensure(self, delivery_log_ttl_seconds: int | None = None) -> None:
        """Create the collections up front (transactions cannot create them) and their indexes,
        and the TTL of the delivery log (None: kept for ever)."""
        existing = set(self.db.list_collection_names())
        for name, specs in _INDEXES.items():
            if name not in existing:
                with contextlib.suppress(OperationFailure):
                    self.db.create_collection(name)
            for spec in specs:
                self.db[name].create_index(spec, name="_".join(f"{f}{'' if o == 1 else o}" for f, o in spec))
        self._ensure_log_ttl(delivery_log_ttl_seconds)

    def _ensure_log_ttl(self, seconds: int | None) -> None:
        """A TTL index on `finished`: the database itself removes finished deliveries that old
        (MongoDB's TTL monitor, and the embedded database's sweeper, run about once a minute)."""
        deliveries = self.db[DELIVERIES]
        if seconds is None:
            if LOG_TTL_INDEX in deliveries.index_information():
                deliveries.drop_index(LOG_TTL_INDEX)
            return
        try:
            deliveries.create_index([("finished", 1)], name=LOG_TTL_INDEX, expireAfterSeconds=seconds)
        except OperationFailure as exc:
            if exc.code not in INDEX_OPTIONS_CONFLICT:
                raise
            # it exists with another TTL (the setting changed): change it in place
            self.db.command("collMod", DELIVERIES, index={"name": LOG_TTL_INDEX, "expireAfterSeconds": seconds})

    def delivery_log_ttl(self) -> int | None:
        """The TTL of the delivery log, in seconds, as the database has it."""
        return self.db[DELIVERIES].index_information().get(LOG_TTL_INDEX, {}).get("expireAfterSeconds")

    # -- professionals who already accessed a record ------------------------------------------
    def mark_seen(self, patient: str, actor_key: str, moment: datetime, session: Session = None) -> bool:
        """Remember that `actor_key` accessed `patient`'s record; True the first time only. An
        upsert rather than an insert: a duplicate key error would abort the caller's transaction."""
        result = self.db[SEEN].update_one(
            {"_id": f"{patient}|{actor_key}"},
            {"$setOnInsert": {"patient": patient, "actor": actor_key, "first": moment}},
            upsert=True, session=session)
        return result.upserted_id is not None

    def was_seen(self, patient: str, actor_key: str, session: Session = None) -> bool:
        return self.db[SEEN].find_one({"_id": f"{patient}|{actor_key}"}, {"_id": 1}, session=session) is not None

    def seen_by(self, patient: str) -> list[str]:
        return [d["actor"] for d in self.db[SEEN].find({"patient": patient}).sort([("first", 1), ("_id", 1)])]

    # -- subscription registry ----------------------------------------------------------------
    def save_subscription(self, entry: dict, owner: dict | None, reset_failures: bool,
                          session: Session = None) -> None:
        """Upsert the registry entry of a Subscription. The owner is only written when the entry
        is created (the worker's own status updates have no owner to give)."""
        update: dict = {"$set": dict(entry)}
        if reset_failures:
            update["$set"].update({"failures": 0, "last_error": None})
        else:
            update["$setOnInsert"] = {"failures": 0, "last_error": None}
        if owner is not None:
            update.setdefault("$setOnInsert", {})["owner"] = owner
        self.db[SUBSCRIPTIONS].update_one({"_id": entry["_id"]}, update, upsert=True, session=session)

    def remove_subscription(self, subscription_id: str, session: Session = None) -> None:
        self.db[SUBSCRIPTIONS].delete_one({"_id": subscription_id}, session=session)

    def cancel_pending(self, subscription_id: str, reason: str, moment: datetime, session: Session = None) -> int:
        """Give up the pending deliveries of a subscription (deleted or turned off)."""
        return self.db[DELIVERIES].update_many(
            {"subscription": subscription_id, "state": "pending"},
            {"$set": {"state": "cancelled", "finished": moment, "last_error": reason}},
            session=session).modified_count

    def subscription(self, subscription_id: str, session: Session = None) -> dict | None:
        return self.db[SUBSCRIPTIONS].find_one({"_id": subscription_id}, session=session)

    def subscriptions(self, statuses: Iterable[str], resource_type: str | None = None,
                      session: Session = None) -> list[dict]:
        query: dict = {"status": {"$in": list(statuses)}}
        if resource_type is not None:
            query["resource_type"] = resource_type
        return list(self.db[SUBSCRIPTIONS].find(query, session=session))

    def subscriptions_among(self, subscription_ids: list[str], statuses: Iterable[str]) -> list[dict]:
        return list(self.db[SUBSCRIPTIONS].find({"_id": {"$in": subscription_ids}, "status": {"$in": list(statuses)}}))

    def has_subscribers(self, resource_type: str, statuses: Iterable[str], session: Session = None) -> bool:
        query = {"resource_type": resource_type, "status": {"$in": list(statuses)}}
        # asked on every write: a find of one `_id` costs the database less than a counting aggregation
        return self.db[SUBSCRIPTIONS].find_one(query, {"_id": 1}, session=session) is not None

    def record_failure(self, subscription_id: str, message: str) -> int:
        """Count one more consecutive failure of the subscription's channel; the new count."""
        entry = self.db[SUBSCRIPTIONS].find_one_and_update(
            {"_id": subscription_id}, {"$inc": {"failures": 1}, "$set": {"last_error": message}},
            return_document=ReturnDocument.AFTER)
        return entry["failures"] if entry else 0

    def record_success(self, subscription_id: str) -> None:
        self.db[SUBSCRIPTIONS].update_one({"_id": subscription_id, "failures": {"$ne": 0}},
                                          {"$set": {"failures": 0}})

    # -- outbox -------------------------------------------------------------------------------
    def add_event(self, event: dict, session: Session = None) -> None:
        self.db[OUTBOX].insert_one({**event, "lease_until": NEVER}, session=session)

    def claim_event(self, moment: datetime, lease_until: datetime) -> dict | None:
        """The oldest outbox item nobody holds, now held by the caller until `lease_until`."""
        return self.db[OUTBOX].find_one_and_update(
            {"lease_until": {"$lte": moment}}, {"$set": {"lease_until": lease_until}},
            sort=[("created", 1), ("_id", 1)], return_document=ReturnDocument.AFTER)

    def finish_event(self, event_id: str) -> None:
        self.db[OUTBOX].delete_one({"_id": event_id})

    def pending_events(self) -> int:
        return self.db[OUTBOX].count_documents({})

    # -- deliveries -----------------------------------------------------------------------------
    def add_delivery(self, delivery: dict) -> None:
        """Idempotent: fanning the same outbox item out twice (after a crash) adds nothing."""
        self.db[DELIVERIES].update_one({"_id": delivery["_id"]},
                                       {"$setOnInsert": {**delivery, "lease_until": NEVER}}, upsert=True)

    def due_subscriptions(self, moment: datetime) -> list[str]:
        """The subscriptions that have deliveries due: the worker only looks at those, however many
        subscriptions exist."""
        return sorted(self.db[DELIVERIES].distinct("subscription", {"state": "pending", "due": {"$lte": moment},
                                                                    **NOT_RELAYED}))

    def claim_delivery(self, subscription_ids: list[str], moment: datetime, lease_until: datetime) -> dict | None:
        """The next due delivery of one of these subscriptions, held by the caller until
        `lease_until`."""
        if not subscription_ids:
            return None
        return self.db[DELIVERIES].find_one_and_update(
            {"state": "pending", "due": {"$lte": moment}, "lease_until": {"$lte": moment},
             "subscription": {"$in": subscription_ids}, **NOT_RELAYED},
            {"$set": {"lease_until": lease_until}},
            sort=[("due", 1), ("created", 1)], return_document=ReturnDocument.AFTER)

    def finish_delivery(self, delivery_id: str, state: str, attempt: dict | None, moment: datetime,
                        note: str | None = None) -> None:
        update: dict = {"$set": {"state": state, "finished": moment, "lease_until": NEVER, "last_error": note}}
        if attempt is not None:
            update["$push"] = {"attempts": {"$each": [attempt], "$slice": -ATTEMPTS_KEPT}}
            update["$inc"] = {"tries": 1}
        # only a pending one: it may have been cancelled while it was being attempted
        self.db[DELIVERIES].update_one({"_id": delivery_id, "state": "pending"}, update)

    def retry_delivery(self, delivery_id: str, attempt: dict, due: datetime) -> None:
        self.db[DELIVERIES].update_one({"_id": delivery_id, "state": "pending"}, {
            "$set": {"due": due, "lease_until": NEVER, "last_error": attempt.get("error")},
            "$push": {"attempts": {"$each": [attempt], "$slice": -ATTEMPTS_KEPT}},
            "$inc": {"tries": 1}})

    def postpone(self, subscription_id: str, due: datetime) -> None:
        """Hold every pending delivery of the subscription until `due`: while its endpoint is
        failing there is no point in trying the others, and order is kept when it comes back."""
        self.db[DELIVERIES].update_many({"subscription": subscription_id, "state": "pending"},
                                        {"$max": {"due": due}})

    def deliveries(self, subscription_id: str, limit: int) -> list[dict]:
        return list(self.db[DELIVERIES].find({"subscription": subscription_id})
                    .sort([("created", -1), ("_id", -1)]).limit(limit))

    def delivery_counts(self, subscription_id: str) -> dict[str, int]:
        pipeline = [{"$match": {"subscription": subscription_id}},
                    {"$group": {"_id": "$state", "n": {"$sum": 1}}}]
        return {row["_id"]: row["n"] for row in self.db[DELIVERIES].aggregate(pipeline)}

    # -- websocket sockets, across server processes ------------------------------------------
    def hold_socket(self, subscription_id: str, process: str, moment: datetime) -> None:
        """`process` holds a websocket bound to the subscription."""
        self.db[SOCKETS].update_one({"_id": f"{subscription_id}|{process}"},
                                    {"$set": {"subscription": subscription_id, "process": process, "alive": moment}},
                                    upsert=True)

    def release_socket(self, subscription_id: str, process: str) -> None:
        self.db[SOCKETS].delete_one({"_id": f"{subscription_id}|{process}"})

    def keep_sockets_alive(self, subscription_ids: Iterable[str], process: str, moment: datetime) -> None:
        updates = [UpdateOne({"_id": f"{s}|{process}"},
                             {"$set": {"subscription": s, "process": process, "alive": moment}}, upsert=True)
                   for s in subscription_ids]
        if updates:
            self.db[SOCKETS].bulk_write(updates, ordered=False)

    def socket_holders(self, subscription_id: str, alive_since: datetime) -> list[str]:
        """The processes holding a websocket bound to the subscription (that said so recently)."""
        return sorted(self.db[SOCKETS].distinct("process", {"subscription": subscription_id,
                                                            "alive": {"$gte": alive_since}}))

    def drop_stale_holders(self, alive_before: datetime) -> int:
        """Forget the holders that stopped saying they are alive (their process died), and what
        was handed to them; how many were dropped."""
        dropped = 0
        for stale in self.db[SOCKETS].find({"alive": {"$lt": alive_before}}):
            self.db[DELIVERIES].update_many(
                {"subscription": stale["subscription"], "state": "pending", "targets": stale["process"]},
                {"$pull": {"targets": stale["process"]}})
            # unless it came back to life meanwhile
            dropped += self.db[SOCKETS].delete_one({"_id": stale["_id"], "alive": {"$lt": alive_before}}).deleted_count
        return dropped

    def relay_delivery(self, delivery_id: str, processes: list[str], moment: datetime) -> None:
        """Hand a websocket delivery to the processes holding its sockets: each pings its own."""
        self.db[DELIVERIES].update_one({"_id": delivery_id, "state": "pending"},
                                       {"$set": {"targets": processes, "received": 0, "relayed": moment,
                                                 "lease_until": NEVER}})

    def relayed_to(self, process: str, limit: int) -> list[dict]:
        return list(self.db[DELIVERIES].find({"state": "pending", "targets": process})
                    .sort([("due", 1), ("created", 1)]).limit(limit))

    def relay_done(self, delivery_id: str, process: str, received: bool) -> None:
        self.db[DELIVERIES].update_one({"_id": delivery_id, "targets": process},
                                       {"$pull": {"targets": process}, "$inc": {"received": int(received)}})

    def settle_relays(self, moment: datetime) -> int:
        """Close the websocket deliveries every holder has answered: delivered when one of them
        had a client to ping, skipped otherwise. How many were closed."""
        settled = 0
        for state, received, note in (("delivered", {"$gt": 0}, None), ("skipped", {"$not": {"$gt": 0}}, NOBODY_BOUND)):
            attempt = {"at": moment, "outcome": "ok" if state == "delivered" else "skipped", "status": None,
                       "error": note}
            settled += self.db[DELIVERIES].update_many(
                {"state": "pending", "targets": {"$size": 0}, "received": received},
                {"$set": {"state": state, "finished": moment, "lease_until": NEVER, "last_error": note},
                 "$push": {"attempts": {"$each": [attempt], "$slice": -ATTEMPTS_KEPT}}, "$inc": {"tries": 1}},
            ).modified_count
        return settled
