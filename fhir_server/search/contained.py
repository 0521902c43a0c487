"""Searching contained resources: `_contained=true|both` and `_containedType=container|contained`
(R4 search, "Contained resources").

Contained resources are indexed with their container (`_index._contained`, see index.py), each with
its own type's search parameters, so that `Observation?_contained=true&code=x` is one query per
container collection, `{"_index._contained": {"$elemMatch": {"_type": "Observation", "code": "x"}}}`,
AND-ed with the access filter of the *container*: a contained resource is seen by whoever sees its
container, and by nobody else.

Which collections hold containers of a type is recorded at write time (`record_containers`) in the
server state, once per (contained type, container type): a `_contained` search reads those
collections only, never all 146. A container collection is read without an index on the contained
values (they are rarely searched; indexing them would cost every write of every type).

Results are ordered by container type, container id, then contained id (`_sort` does not apply)
and paged with a cursor holding that position and a direction: `next` reads after the last result,
`previous` before the first, like the keyset cursors of other searches. With
`_containedType=contained` (the default) each matching contained resource is an entry of its own,
with the fullUrl `[base]/Container/id#cid`; with `container` the containers are the entries.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from fhir_server.engine.errors import bad_request
from fhir_server.search.filters import and_filters
from fhir_server.search.index import CONTAINED, CONTAINED_TYPE
from fhir_server.search.normalize import prefix_range
from fhir_server.search.query import Store
from fhir_server.storage.mongo import META

CONTAINED_FIELD = f"_index.{CONTAINED}"
CATALOGUE = "contained:"           # server-state keys: contained:{contained type}:{container type}
COUNT_BATCH = 1000


# -- which collections hold containers ------------------------------------------------------------

def record_containers(store: Store, container_type: str, resource: dict, session: Any = None) -> None:
    """Remember that `container_type` holds contained resources of the types `resource` contains
    (written once per pair, inside the caller's transaction)."""
    for contained_type in sorted(_contained_types(resource)):
        key = f"{CATALOGUE}{contained_type}:{container_type}"
        if store.get_meta(key, session) is None:
            store.put_meta(key, {"contained": contained_type, "container": container_type}, session)


def container_types(store: Store, contained_type: str) -> list[str]:
    """The resource types that were ever seen containing a `contained_type`, sorted."""
    prefix = f"{CATALOGUE}{contained_type}:"
    documents = store.find(META, {"_id": prefix_range(prefix)}, [("_id", 1)], 0, {"_id": 1})
    return [document["_id"][len(prefix):] for document in documents]


def _contained_types(resource: dict) -> set[str]:
    return {c["resourceType"] for c in resource.get("contained") or () if isinstance(c, dict)
            and isinstance(c.get("resourceType"), str) and isinstance(c.get("id"), str) and c["id"]}


# -- what to read ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One collection to read. Without `entry` its documents are the results; with `entry` (the
    condition on one contained entry) the results are the matching contained resources they hold."""

    resource_type: str
    query: dict
    entry: dict | None = None

    @property
    def expand(self) -> bool:
        return self.entry is not None

    @property
    def key(self) -> tuple[int, str]:
        """Sources are read in this order: the resources themselves first (`both`), then containers."""
        return int(self.expand), self.resource_type


@dataclass(frozen=True)
class Mark:
    """Where a result sits in the order: its source, its container's id, its own id if contained.
    As a cursor, `backwards` says whether the page wanted comes before it (`previous`) or after."""

    source: tuple[int, str]
    container_id: str
    contained_id: str = ""
    backwards: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """The position within its source."""
        return self.container_id, self.contained_id

    def cursor(self, backwards: bool) -> str:
        raw = json.dumps([*self.source, self.container_id, self.contained_id, int(backwards)], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Mark:
        try:
            expand, resource_type, container_id, contained_id, *direction = json.loads(
                base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            backwards = bool(direction[0]) if direction else False     # cursors before `previous` had none
            return cls((int(expand), str(resource_type)), str(container_id), str(contained_id), backwards)
        except (ValueError, TypeError, IndexError) as exc:
            raise bad_request("Invalid paging cursor: start the search again from its first page", "_cursor") from exc


@dataclass(frozen=True)
class Match:
    source: Source
    document: dict                     # the stored document read (the container, or the resource)
    contained: dict | None = None      # the matching contained resource, when results are those

    @property
    def mark(self) -> Mark:
        return Mark(self.source.key, self.document["_id"], (self.contained or {}).get("id", ""))

    @property
    def resource_type(self) -> str:
        return self.contained["resourceType"] if self.contained else self.source.resource_type

    def found(self) -> tuple[str, dict]:
        """(type, document) as `_include` reads it: a contained resource as a document of its own,
        known by an id (`Container/id#cid`) that no reference matches, with its own index entry."""
        if self.contained is None:
            return self.source.resource_type, self.document
        entries = (self.document.get("_index") or {}).get(CONTAINED) or []
        own = next((e for e in entries if e.get("_id") == self.contained["id"]
                    and e.get(CONTAINED_TYPE) == self.resource_type), {})
        return self.resource_type, {"_id": f"{self.source.resource_type}/{self.document['_id']}#{self.contained['id']}",
                                    "resource": self.contained, "_index": own}


# -- reading ---------------------------------------------------------------------------------------

@dataclass
class ContainedSearch:
    store: Store
    sources: list[Source]

    def page(self, mark: Mark | None, count: int, projection: dict) -> tuple[list[Match], bool]:
        """The `count` results after `mark` (before it when `mark.backwards`), in result order, and
        whether more follow in that direction."""
        backwards = mark is not None and mark.backwards
        matches: list[Match] = []
        for source in sorted(self.sources, key=lambda s: s.key, reverse=backwards):
            if mark is not None and (source.key > mark.source if backwards else source.key < mark.source):
                continue
            bound = mark if mark is not None and source.key == mark.source else None
            matches += self._matches(source, bound, count + 1 - len(matches), projection, backwards)
            if len(matches) > count:
                matches = matches[:count]
                return (matches[::-1] if backwards else matches), True
        return (matches[::-1] if backwards else matches), False

    def total(self) -> int:
        return sum(self._count(source) for source in self.sources)

    def _matches(self, source: Source, bound: Mark | None, room: int, projection: dict,
                 backwards: bool = False) -> list[Match]:
        """Up to `room` results of one source after `bound` (before it, nearest first, backwards)."""
        query = source.query
        if bound is not None:
            # the container of the bound may still hold other contained results on this side of it
            operator = ("$lte" if source.expand else "$lt") if backwards else ("$gte" if source.expand else "$gt")
            query = and_filters(query, {"_id": {operator: bound.container_id}})
        # every container read yields at least one result, but the bound's may yield no new one
        limit = room + 1 if source.expand and bound is not None else room
        documents = self.store.find(source.resource_type, query, [("_id", -1 if backwards else 1)], limit, projection)
        if not source.expand:
            return [Match(source, document) for document in documents]
        matches = sorted(self.expanded(source, documents), key=lambda m: m.mark.key, reverse=backwards)
        if bound is not None:
            matches = [m for m in matches if (m.mark.key < bound.key if backwards else m.mark.key > bound.key)]
        return matches[:room]

    def expanded(self, source: Source, documents: list[dict]) -> list[Match]:
        """The contained resources of these matching containers that match themselves. A container
        holding one candidate matched through it; with several, each is checked in the database."""
        assert source.entry is not None
        candidates = {d["_id"]: _candidates(d, source.entry[CONTAINED_TYPE]) for d in documents}
        confirmed = self._confirmed(source, {i: c for i, c in candidates.items() if len(c) > 1})
        return [Match(source, document, contained) for document in documents
                for contained in candidates[document["_id"]]
                if len(candidates[document["_id"]]) == 1 or (document["_id"], contained["id"]) in confirmed]

    def _confirmed(self, source: Source, ambiguous: dict[str, list[dict]]) -> set[tuple[str, str]]:
        """(container id, contained id) of the candidates that match, one query per contained id."""
        containers_by_id: dict[str, list[str]] = {}
        for container_id, candidates in ambiguous.items():
            for contained in candidates:
                containers_by_id.setdefault(contained["id"], []).append(container_id)
        confirmed: set[tuple[str, str]] = set()
        for contained_id, container_ids in sorted(containers_by_id.items()):
            query = {"_id": {"$in": container_ids},
                     CONTAINED_FIELD: {"$elemMatch": and_filters(source.entry, {"_id": contained_id})}}
            confirmed |= {(d["_id"], contained_id)
                          for d in self.store.find(source.resource_type, query, projection={"_id": 1})}
        return confirmed

    def _count(self, source: Source) -> int:
        if not source.expand:
            return self.store.count(source.resource_type, source.query)
        total, last_id = 0, None
        while True:
            query = source.query if last_id is None else and_filters(source.query, {"_id": {"$gt": last_id}})
            documents = self.store.find(source.resource_type, query, [("_id", 1)], COUNT_BATCH,
                                        {"resource.contained": 1})
            total += len(self.expanded(source, documents))
            if len(documents) < COUNT_BATCH:
                return total
            last_id = documents[-1]["_id"]


def _candidates(document: dict, contained_type: str) -> list[dict]:
    """The addressable contained resources of that type in a container, by id."""
    found = {c["id"]: c for c in (document.get("resource") or {}).get("contained") or ()
             if isinstance(c, dict) and c.get("resourceType") == contained_type
             and isinstance(c.get("id"), str) and c["id"]}
    return [found[i] for i in sorted(found)]
