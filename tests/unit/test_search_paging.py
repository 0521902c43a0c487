"""Keyset paging helpers and local ValueSet expansion."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.search.criteria import MalformedValue, UnsupportedModifier
from fhir_server.search.paging import (
    Position,
    SortKey,
    after_filters,
    decode_cursor,
    encode_cursor,
    merge_sorted,
    sort_value,
)
from fhir_server.search.terminology import LocalTerminology

DATE = SortKey("_index.date", descending=True)
NAMES = SortKey("_index.given", multi=True)


def test_after_filters_are_flat_and_ordered() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    assert after_filters([DATE], Position((when,), "d9", "DocumentReference"), id_descending=False) == [
        {"_index.date": when, "_id": {"$gt": "d9"}},       # ties first
        {"_index.date": {"$lt": when}},                   # then older
        {"_index.date": None},                            # then those without a date (last descending)
    ]
    assert after_filters([], Position((), "d9", "X"), id_descending=True, id_inclusive=True) == \
        [{"_id": {"$lte": "d9"}}]


def test_after_filters_on_lists_follow_mongodb_sort_semantics() -> None:
    # ascending on a list sorts by its smallest value: after "b" means no value <= "b"
    assert after_filters([NAMES], Position(("b",), "p1", "Patient"), id_descending=False) == [
        {"_index.given": {"$eq": "b", "$not": {"$lt": "b"}}, "_id": {"$gt": "p1"}},
        {"_index.given": {"$exists": True, "$not": {"$lte": "b"}}},
    ]


def test_sort_value() -> None:
    document = {"_index": {"given": ["marie", "anne"], "date": [{"hi": 2}, {"hi": 5}]}}
    assert sort_value(document, NAMES) == "anne"
    assert sort_value(document, SortKey("_index.given", True, True)) == "marie"
    assert sort_value(document, SortKey("_index.date.hi", True, True)) == 5
    assert sort_value(document, SortKey("_index.nothing")) is None


def test_merge_sorted_removes_duplicates() -> None:
    def item(value: int, ident: str) -> tuple[Position, str]:
        return Position((value,), ident, "T"), ident
    merged = merge_sorted([[item(1, "a"), item(3, "c")], [item(1, "a"), item(2, "b")]],
                          [SortKey("v")], False, 10)
    assert [d for _p, d in merged] == ["a", "b", "c"]


def test_cursor_round_trip_and_tampering() -> None:
    position = Position((datetime(2024, 1, 1, tzinfo=UTC), Decimal("1.50"), "x", None), "id-1", "Patient")
    decoded, backwards = decode_cursor(encode_cursor(position, True), 4)
    assert decoded == position and backwards
    for cursor, count in (("not-a-cursor", 4), (encode_cursor(position, False), 2)):
        with pytest.raises(FhirError) as caught:
            decode_cursor(cursor, count)
        assert caught.value.issues[0].expression == ("_cursor",)


class FakeDefinitions:
    code_systems = {"http://cs": {"content": "complete", "concept": [
        {"code": "a", "concept": [{"code": "a1"}]}, {"code": "b"}]}}
    value_sets = {
        "http://vs/all": {"compose": {"include": [{"system": "http://cs"}]}},
        "http://vs/some": {"compose": {"include": [{"system": "http://cs", "concept": [{"code": "a"}]},
                                                   {"system": "http://other", "concept": [{"code": "x"}]}]}},
        "http://vs/nested": {"compose": {"include": [{"valueSet": ["http://vs/all"]}],
                                         "exclude": [{"system": "http://cs", "concept": [{"code": "b"}]}]}},
        "http://vs/filtered": {"compose": {"include": [{"system": "http://cs", "filter": [{"op": "is-a"}]}]}},
        "http://vs/expanded": {"expansion": {"contains": [{"system": "http://e", "code": "z"}]}},
    }


def test_local_value_set_expansion() -> None:
    terminology = LocalTerminology(FakeDefinitions())
    assert terminology.expand("http://vs/all") == ["http://cs|a", "http://cs|a1", "http://cs|b"]
    assert terminology.expand("http://vs/some|1.0") == ["http://cs|a", "http://other|x"]
    assert terminology.expand("http://vs/nested") == ["http://cs|a", "http://cs|a1"]
    assert terminology.expand("http://vs/expanded") == ["http://e|z"]
    with pytest.raises(UnsupportedModifier):
        terminology.expand("http://vs/filtered")
    with pytest.raises(MalformedValue):
        terminology.expand("http://vs/unknown")
