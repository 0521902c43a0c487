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
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import pymongo
from bson.codec_options import CodecOptions, TypeCodec, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo import DeleteOne, InsertOne, ReplaceOne
from pymongo.client_session import ClientSession
from pymongo.errors import ClientBulkWriteException, DuplicateKeyError, OperationFailure, PyMongoError

HISTORY = "_history"
META = "_meta"


class StorageConflict(Exception):
    """A concurrent writer changed the resource first (optimistic concurrency)."""


class StorageBusy(Exception):
    """A transaction kept meeting transient conflicts until the driver's retry time ran out:
    nothing was written, and the same request may succeed a moment later."""


TRANSIENT_LABELS = ("TransientTransactionError", "UnknownTransactionCommitResult")
DUPLICATE_KEY = 11000
# A `$facet` result is one document: over 16 MB (10334, 16389) or 100 MB in the making (4031700).
RESULT_TOO_LARGE = frozenset({10334, 16389, 4031700})
# MongoDB 8.0 (wire version 25) added the client-level `bulkWrite` command: writes to several
# collections in one round trip.
CLIENT_BULK_WRITE_WIRE_VERSION = 25


class _DecimalCodec(TypeCodec):
    """FHIR decimals keep their precision: stored as Decimal128, read back as Decimal."""

    python_type = Decimal
    bson_type = Decimal128

    def transform_python(self, value: Decimal) -> Decimal128:
        return Decimal128(value)

    def transform_bson(self, value: Decimal128) -> Decimal:
        return value.to_decimal()


DECIMALS = TypeRegistry([_DecimalCodec()])
CODEC_OPTIONS = CodecOptions(tz_aware=True, tzinfo=UTC, type_registry=DECIMALS)

Session = ClientSession | None
T = TypeVar("T")
IndexSpec = Sequence[tuple[str, int]]


@dataclass(frozen=True)
class Insert:
    """A write for `MongoStore.write_all`: insert `doc`; StorageConflict when its `_id` exists."""

    collection: str
    doc: dict


@dataclass(frozen=True)
class CompareAndSet:
    """A write for `MongoStore.write_all`: replace `doc` (by `_id`) only if the stored one still
    has the `expected` field values; StorageConflict otherwise."""

    collection: str
    doc: dict
    expected: dict


Write = Insert | CompareAndSet


class MongoStore:
    def __init__(self, uri: str, database: str) -> None:
        # The client encodes decimals too: client-level bulk writes use its codec options.
        self.client: pymongo.MongoClient = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=15000, tz_aware=True, uuidRepresentation="standard", type_registry=DECIMALS
        )
        self.db = self.client.get_database(database, codec_options=CODEC_OPTIONS)
        self._supports_transactions: bool | None = None
        self._supports_client_bulk_write: bool | None = None

    # -- set-up ------------------------------------------------------------------------------
    def ping(self) -> None:
        self.client.admin.command("ping")

    @property
    def supports_transactions(self) -> bool:
        if self._supports_transactions is None:
            self._learn_deployment()
        return bool(self._supports_transactions)

    @property
    def supports_client_bulk_write(self) -> bool:
        if self._supports_client_bulk_write is None:
            self._learn_deployment()
        return bool(self._supports_client_bulk_write)

    def _learn_deployment(self) -> None:
        hello = self.client.admin.command("hello")
        if self._supports_transactions is None:
            self._supports_transactions = bool(hello.get("setName") or hello.get("msg") == "isdbgrid")
        if self._supports_client_bulk_write is None:
            # a configured read concern would ride on a transaction's first statement (see _transaction_session)
            self._supports_client_bulk_write = hello.get("maxWireVersion", 0) >= CLIENT_BULK_WRITE_WIRE_VERSION \
                and not self.client.read_concern.document

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
        with self._transaction_session() as session, session.start_transaction():
            yield session

    def run_in_transaction(self, action: Callable[[Session], T]) -> T:
        """Run `action(session)` in a transaction, retried as a whole on transient errors (two
        writers touching the same document, e.g. the audit chain head of one patient). Without
        transactions, `action(None)` runs once."""
        if not self.supports_transactions:
            return action(None)
        with self._transaction_session() as session:
            try:
                return session.with_transaction(action)
            except PyMongoError as exc:
                if any(exc.has_error_label(label) for label in TRANSIENT_LABELS):
                    raise StorageBusy(str(exc)) from exc
                raise

    def _transaction_session(self) -> ClientSession:
        """A session for one unit of work (a transaction and its retries). Not causally
        consistent: a transaction reads one snapshot of the primary anyway, and so its first
        statement carries no read concern, which the embedded server refuses on bulkWrite."""
        return self.client.start_session(causal_consistency=False)

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

    def compare_and_set(self, collection: str, doc: dict, expected: dict, session: Session = None) -> None:
        """Replace `doc` (by `_id`) only if the stored one still has the `expected` field values."""
        result = self.db[collection].replace_one({"_id": doc["_id"], **expected}, doc, session=session)
        if result.matched_count != 1:
            raise StorageConflict(f"{collection}/{doc['_id']} changed concurrently")

    # -- a write and its history version, together ------------------------------------------
    # Inside a transaction they go in one client-level bulk write (one round trip instead of two)
    # when the deployment has it; otherwise one after the other, as separate commands.
    #
    # In the bulk, the version goes first and is the compare-and-set: every write that moves a
    # resource past version n stores version n+1 (`Type/id/n+1`, a unique `_id`) in the same
    # transaction, so a writer that lost the race stops at that duplicate before touching the
    # current version. The current version is then addressed by `_id` alone, which every planner
    # serves as a point lookup (the embedded one weighs each index for `{_id, _ver}`).
    def insert_with_version(self, resource_type: str, doc: dict, version: dict, session: Session = None) -> None:
        self.write_all([Insert(resource_type, doc), Insert(HISTORY, version)], session)

    def replace_with_version(self, resource_type: str, doc: dict, expected_ver: int, version: dict,
                             session: Session = None) -> None:
        def one_by_one() -> None:
            self.replace(resource_type, doc, expected_ver, session)
            self.add_version(version, session)
        model = ReplaceOne({"_id": doc["_id"]}, doc, namespace=self._namespace(resource_type))
        self._with_version(resource_type, doc["_id"], version, model, one_by_one, session)

    def remove_with_version(self, resource_type: str, resource_id: str, expected_ver: int, tombstone: dict,
                            session: Session = None) -> None:
        def one_by_one() -> None:
            self.remove(resource_type, resource_id, expected_ver, session)
            self.add_version(tombstone, session)
        model = DeleteOne({"_id": resource_id}, namespace=self._namespace(resource_type))
        self._with_version(resource_type, resource_id, tombstone, model, one_by_one, session)

    def _with_version(self, resource_type: str, resource_id: str, version: dict, current: ReplaceOne | DeleteOne,
                      one_by_one: Callable[[], None], session: Session) -> None:
        """The version first (its unique id is the compare-and-set), then `current` on the
        current version, in one bulk; `one_by_one` where bulks are not ready."""
        if not self._bulk_ready(session):
            one_by_one()
            return
        conflict = f"{resource_type}/{resource_id} changed concurrently"
        result = self._write_together([InsertOne(version, namespace=self._namespace(HISTORY)), current],
                                      session, [conflict, conflict])
        touched = result.deleted_count if isinstance(current, DeleteOne) else result.matched_count
        if touched != 1:
            raise StorageConflict(conflict)

    def write_all(self, writes: Sequence[Write], session: Session = None) -> None:
        """Make `writes` in order, stopping at the first conflict (StorageConflict). Inside a
        transaction they go in one round trip when the deployment allows it; a compare-and-set
        that misses is then only noticed once the later writes are made too, so the caller must
        let the conflict abort the transaction (as every transaction here does)."""
        if len(writes) < 2 or not self._bulk_ready(session):
            for write in writes:
                if isinstance(write, CompareAndSet):
                    self.compare_and_set(write.collection, write.doc, write.expected, session)
                elif write.collection == HISTORY:
                    self.add_version(write.doc, session)
                else:
                    self.insert(write.collection, write.doc, session)
            return
        models = [ReplaceOne({"_id": w.doc["_id"], **w.expected}, w.doc, namespace=self._namespace(w.collection))
                  if isinstance(w, CompareAndSet) else InsertOne(w.doc, namespace=self._namespace(w.collection))
                  for w in writes]
        result = self._write_together(models, session, [_conflict_message(w) for w in writes])
        expected_sets = [w for w in writes if isinstance(w, CompareAndSet)]
        if result.matched_count != len(expected_sets):
            raise StorageConflict(" or ".join(_conflict_message(w) for w in expected_sets))

    def _bulk_ready(self, session: Session) -> bool:
        """Only inside a transaction (a failure there rolls back the writes that went before it)
        of a session that sends no read concern (see _transaction_session)."""
        return session is not None and not session.options.causal_consistency and self.supports_client_bulk_write

    def _namespace(self, collection: str) -> str:
        return f"{self.db.name}.{collection}"

    def _write_together(self, models: list, session: Session, duplicate_messages: list[str]) -> Any:
        """One ordered client-level bulk write: it stops at the first failure. A duplicate key
        becomes StorageConflict (with the message of the failing write), and a command-level
        error is raised as itself, so that its error labels (TransientTransactionError) still
        drive the transaction retries."""
        try:
            return self.client.bulk_write(models, session=session, ordered=True)
        except ClientBulkWriteException as exc:
            if isinstance(exc.error, BaseException):
                raise exc.error from exc
            duplicate = next((e for e in exc.write_errors or [] if e.get("code") == DUPLICATE_KEY), None)
            if duplicate is not None:
                raise StorageConflict(duplicate_messages[duplicate["idx"]]) from exc
            raise

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

    def find_and_count(self, resource_type: str, query: dict, after: dict | None, sort: list[tuple[str, int]],
                       limit: int, projection: dict | None = None) -> tuple[list[dict], int]:
        """The first `limit` documents of `query` AND `after` in `sort` order, and the number of
        documents of `query`, from one pass over the query's candidates (a `$facet`). For a query
        whose operators are tested on every fetched document (an access filter), a separate
        count and page would fetch and test each candidate twice; an index-served query is
        better off with `find` and `count` (an index-only count, a fetch that stops at `limit`)."""
        collection = self.db[resource_type]
        indexed, residual = _split(query)
        matched = _stages(indexed, residual) if residual else [{"$match": indexed}]
        page = [*([{"$match": after}] if after else []), {"$sort": dict(sort)}, {"$limit": limit},
                *([{"$project": projection}] if projection else [])]
        try:
            facets = next(collection.aggregate([*matched, {"$facet": {"total": [{"$count": "n"}], "page": page}}]))
        except OperationFailure as exc:
            if exc.code not in RESULT_TOO_LARGE:
                raise
            return list(collection.aggregate([*matched, *page])), self._count(collection, query)
        return facets["page"], facets["total"][0]["n"] if facets["total"] else 0

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

    def find_versions_and_count(self, query: dict, after: dict | None, sort: list[tuple[str, int]],
                                limit: int) -> tuple[list[dict], int]:
        """A history page (`query` AND `after`) and the number of versions of `query`: from one
        pass when `query` tests operators on the versions its index fetches (an access filter,
        see `find_and_count`), else a limited fetch and a count."""
        if _split(query)[1] is not None:
            return self.find_and_count(HISTORY, query, after, sort, limit)
        return self.find_versions(restricted(query, after), sort, limit), self.count_versions(query)

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

    def get_metas(self, keys: list[str], session: Session = None) -> dict[str, dict]:
        """The entries that exist among `keys`, by key, in one round trip."""
        if len(keys) == 1:
            found = self.get_meta(keys[0], session)
            return {keys[0]: found} if found is not None else {}
        if not keys:
            return {}
        return {doc["_id"]: doc for doc in self.db[META].find({"_id": {"$in": list(keys)}}, session=session)}

    def put_meta(self, key: str, value: dict, session: Session = None) -> None:
        self.db[META].replace_one({"_id": key}, {"_id": key, **value}, upsert=True, session=session)


def _conflict_message(write: Write) -> str:
    """What StorageConflict says when `write` conflicts (as the single-write methods say it)."""
    if isinstance(write, CompareAndSet):
        return f"{write.collection}/{write.doc['_id']} changed concurrently"
    if write.collection == HISTORY:
        return f"version {write.doc['_id']} already exists"
    return f"{write.collection}/{write.doc['_id']} already exists"


def restricted(query: dict, where: dict | None) -> dict:
    """`query` AND `where` (an access filter, a paging condition), with `query`'s field conditions
    kept at the top level: that is the part an index serves (see `_stages`), where wrapping both
    in one `$and` would leave the embedded database nothing to plan but a collection scan."""
    if not where:
        return query
    if not query:
        return where
    return {**query, "$and": [*query.get("$and", []), where]}


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
