"""MongoDB storage through pymongo.

Works against a real replica set / sharded cluster and against the embedded MongoDB-wire server
used for development and tests.

Queries carry two kinds of conditions: flat field conditions (what indexes serve: patient,
status, date...) and top-level operators (`$or`/`$and`: the access filter, alternatives). A query
with both runs as an aggregation whose first `$match` holds the flat part and the second the
rest (see `_stages`): MongoDB merges adjacent `$match` stages and plans them as one find, while
simpler planners (the embedded server) serve the first from an index instead of scanning the
collection because of the operators. Multi-document transactions are used when the deployment
supports them (replica set or mongos); a standalone mongod has no transactions, so there each
write is still atomic per document but a failing transaction bundle cannot be rolled back (the
server refuses transaction bundles there rather than apply them half-way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import pymongo
from bson.codec_options import CodecOptions, TypeCodec, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo.client_session import ClientSession
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

HISTORY = "_history"
META = "_meta"


class StorageConflict(Exception):
    """A concurrent writer changed the resource first (optimistic concurrency)."""


class StorageBusy(Exception):
    """A transaction kept meeting transient conflicts until the driver's retry time ran out:
    nothing was written, and the same request may succeed a moment later."""


TRANSIENT_LABELS = ("TransientTransactionError", "UnknownTransactionCommitResult")


class _DecimalCodec(TypeCodec):
    """FHIR decimals keep their precision: stored as Decimal128, read back as Decimal."""

    python_type = Decimal
    bson_type = Decimal128

    def transform_python(self, value: Decimal) -> Decimal128:
        return Decimal128(value)

    def transform_bson(self, value: Decimal128) -> Decimal:
        return value.to_decimal()


CODEC_OPTIONS = CodecOptions(tz_aware=True, tzinfo=UTC, type_registry=TypeRegistry([_DecimalCodec()]))

Session = ClientSession | None
T = TypeVar("T")
IndexSpec = Sequence[tuple[str, int]]


class MongoStore:
    def __init__(self, uri: str, database: str) -> None:
        self.client: pymongo.MongoClient = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=15000, tz_aware=True, uuidRepresentation="standard"
        )
        self.db = self.client.get_database(database, codec_options=CODEC_OPTIONS)
        self._supports_transactions: bool | None = None

    # -- set-up ------------------------------------------------------------------------------
    def ping(self) -> None:
        self.client.admin.command("ping")

    @property
    def supports_transactions(self) -> bool:
        if self._supports_transactions is None:
            hello = self.client.admin.command("hello")
            self._supports_transactions = bool(hello.get("setName") or hello.get("msg") == "isdbgrid")
        return self._supports_transactions

    def ensure_collections(self, indexes: dict[str, list[IndexSpec]]) -> None:
        """Create every collection up front (no implicit creation inside transactions) and the
        indexes the search engine asks for."""
        existing = set(self.db.list_collection_names())
        for name in [HISTORY, META, *indexes]:
            if name not in existing:
                with contextlib.suppress(OperationFailure):
                    self.db.create_collection(name)
        history = self.db[HISTORY]
        history.create_index([("type", 1), ("id", 1), ("ver", -1)], name="type_id_ver")
        history.create_index([("lastUpdated", -1), ("_id", -1)], name="lastUpdated")
        history.create_index([("type", 1), ("lastUpdated", -1), ("_id", -1)], name="type_lastUpdated")
        # consent changes rewrite the access data of every version of one patient's resources
        history.create_index([("_acl.patients", 1)], name="acl_patients", sparse=True)
        for collection, specs in indexes.items():
            self.db[collection].create_index([("_lastUpdated", -1), ("_id", -1)], name="lastUpdated")
            self.db[collection].create_index([("_acl.patients", 1)], name="acl_patients", sparse=True)
            for spec in specs:
                name = "_".join(f"{field}{'' if order == 1 else order}" for field, order in spec)
                with contextlib.suppress(OperationFailure):
                    self.db[collection].create_index(list(spec), name=name[:120])

    def drop_everything(self) -> None:
        self.client.drop_database(self.db.name)

    def close(self) -> None:
        self.client.close()

    # -- transactions ------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session in a transaction (committed on success, aborted on exception), or None
        on deployments without transactions."""
        if not self.supports_transactions:
            yield None
            return
        with self.client.start_session() as session, session.start_transaction():
            yield session

    def run_in_transaction(self, action: Callable[[Session], T]) -> T:
        """Run `action(session)` in a transaction, retried as a whole on transient errors (two
        writers touching the same document, e.g. the audit chain head of one patient). Without
        transactions, `action(None)` runs once."""
        if not self.supports_transactions:
            return action(None)
        with self.client.start_session() as session:
            try:
                return session.with_transaction(action)
            except PyMongoError as exc:
                if any(exc.has_error_label(label) for label in TRANSIENT_LABELS):
                    raise StorageBusy(str(exc)) from exc
                raise

    # -- current versions --------------------------------------------------------------------
    def get(self, resource_type: str, resource_id: str, session: Session = None,
            where: dict | None = None) -> dict | None:
        """The current version, if it exists and matches `where` (an access filter)."""
        if not where:
            return self.db[resource_type].find_one({"_id": resource_id}, session=session)
        found = self._query(self.db[resource_type], {"_id": resource_id}, where, limit=1, session=session)
        return found[0] if found else None

    def insert(self, resource_type: str, doc: dict, session: Session = None) -> None:
        try:
            self.db[resource_type].insert_one(doc, session=session)
        except DuplicateKeyError as exc:
            raise StorageConflict(f"{resource_type}/{doc['_id']} already exists") from exc

    def replace(self, resource_type: str, doc: dict, expected_ver: int, session: Session = None) -> None:
        result = self.db[resource_type].replace_one(
            {"_id": doc["_id"], "_ver": expected_ver}, doc, session=session
        )
        if result.matched_count != 1:
            raise StorageConflict(f"{resource_type}/{doc['_id']} changed concurrently")

    def remove(self, resource_type: str, resource_id: str, expected_ver: int, session: Session = None) -> None:
        result = self.db[resource_type].delete_one({"_id": resource_id, "_ver": expected_ver}, session=session)
        if result.deleted_count != 1:
            raise StorageConflict(f"{resource_type}/{resource_id} changed concurrently")

    def find(
        self,
        resource_type: str,
        query: dict,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        projection: dict | None = None,
        session: Session = None,
    ) -> list[dict]:
        indexed, residual = _split(query)
        return self._query(self.db[resource_type], indexed, residual, sort, limit, projection, session)

    def count(self, resource_type: str, query: dict, limit: int = 0, session: Session = None) -> int:
        return self._count(self.db[resource_type], query, limit, session)

    def explain(self, resource_type: str, query: dict, sort: list[tuple[str, int]] | None = None) -> dict:
        """The plan of the stage that reaches the collection: the flat part of the query (the
        operators run on the documents it fetches, see `_stages`)."""
        cursor = self.db[resource_type].find(_split(query)[0])
        if sort:
            cursor = cursor.sort(sort)
        return cursor.explain()

    def update_many(self, collection: str, query: dict, update: dict | list[dict], session: Session = None) -> int:
        """`update` is an update document or an update pipeline."""
        return self.db[collection].update_many(query, update, session=session).modified_count

    # -- history -----------------------------------------------------------------------------
    def add_version(self, entry: dict, session: Session = None) -> None:
        try:
            self.db[HISTORY].insert_one(entry, session=session)
        except DuplicateKeyError as exc:
            raise StorageConflict(f"version {entry['_id']} already exists") from exc

    def latest_version(self, resource_type: str, resource_id: str, session: Session = None,
                       where: dict | None = None) -> dict | None:
        latest = self.db[HISTORY].find_one(
            {"type": resource_type, "id": resource_id}, sort=[("ver", -1)], session=session
        )
        if latest is None or where is None:
            return latest
        found = self._query(self.db[HISTORY], {"_id": latest["_id"]}, where, limit=1, session=session)
        return found[0] if found else None

    def get_version(self, resource_type: str, resource_id: str, ver: int, where: dict | None = None) -> dict | None:
        found = self._query(self.db[HISTORY], {"_id": f"{resource_type}/{resource_id}/{ver}"}, where, limit=1)
        return found[0] if found else None

    def find_versions(self, query: dict, sort: list[tuple[str, int]], limit: int) -> list[dict]:
        indexed, residual = _split(query)
        return self._query(self.db[HISTORY], indexed, residual, sort, limit)

    def count_versions(self, query: dict) -> int:
        return self._count(self.db[HISTORY], query)

    # -- query execution -----------------------------------------------------------------------
    @staticmethod
    def _query(collection: Any, indexed: dict, residual: dict | None, sort: list[tuple[str, int]] | None = None,
               limit: int = 0, projection: dict | None = None, session: Session = None) -> list[dict]:
        if not residual:
            cursor = collection.find(indexed, projection, session=session)
            if sort:
                cursor = cursor.sort(sort)
            if limit:
                cursor = cursor.limit(limit)
            return list(cursor)
        pipeline = _stages(indexed, residual)
        if sort:
            pipeline.append({"$sort": dict(sort)})
        if limit:
            pipeline.append({"$limit": limit})
        if projection:
            pipeline.append({"$project": projection})
        return list(collection.aggregate(pipeline, session=session))

    @staticmethod
    def _count(collection: Any, query: dict, limit: int = 0, session: Session = None) -> int:
        indexed, residual = _split(query)
        if not residual:
            kwargs: dict[str, Any] = {"limit": limit} if limit else {}
            return collection.count_documents(indexed, session=session, **kwargs)
        pipeline = _stages(indexed, residual) + ([{"$limit": limit}] if limit else []) + [{"$count": "n"}]
        counted = list(collection.aggregate(pipeline, session=session))
        return counted[0]["n"] if counted else 0

    def versions_current_at(self, query: dict, at: datetime, limit: int, skip: int = 0) -> list[dict]:
        """For `_history?_at=`: per resource, the version that was current at `at`."""
        pipeline: list[dict] = [
            {"$match": {**query, "lastUpdated": {"$lte": at}}},
            {"$sort": {"type": 1, "id": 1, "ver": -1}},
            {"$group": {"_id": {"type": "$type", "id": "$id"}, "doc": {"$first": "$$ROOT"}}},
            {"$replaceRoot": {"newRoot": "$doc"}},
            {"$sort": {"lastUpdated": -1, "_id": -1}},
            {"$skip": skip},
            {"$limit": limit},
        ]
        return list(self.db[HISTORY].aggregate(pipeline))

    # -- small key/value area (sequences, server state) --------------------------------------
    def get_meta(self, key: str, session: Session = None) -> dict | None:
        return self.db[META].find_one({"_id": key}, session=session)

    def put_meta(self, key: str, value: dict, session: Session = None) -> None:
        self.db[META].replace_one({"_id": key}, {"_id": key, **value}, upsert=True, session=session)


def _split(query: dict) -> tuple[dict, dict | None]:
    """(flat field conditions, top-level operators) of a query."""
    residual = {k: v for k, v in query.items() if k.startswith("$")}
    if not residual:
        return query, None
    return {k: v for k, v in query.items() if not k.startswith("$")}, residual


def _stages(indexed: dict, residual: dict) -> list[dict]:
    if not indexed:
        return [{"$match": residual}]
    return [{"$match": indexed}, {"$match": residual}]
