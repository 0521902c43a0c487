"""Query values to MongoDB conditions, without a database: shapes that matter for correctness
(one value per condition on lists) and for indexes (flat filters, equalities)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from fhir_server.search.criteria import (
    CriteriaBuilder,
    MalformedValue,
    Target,
    UnsupportedModifier,
    split_escaped,
    split_prefix,
    unescape,
)
from fhir_server.search.filters import NOTHING, and_filters, field_names, relative_to, satisfies
from fhir_server.search.normalize import DATE_MAX, DEFAULT_TIMEZONE
from fhir_server.search.query import one_condition_per_list

BUILDER = CriteriaBuilder(DEFAULT_TIMEZONE, "http://h/fhir", now=datetime(2024, 1, 1, tzinfo=UTC))
STATUS = Target("_index.status", False, "token", primitive_tokens=True, aux_prefix="_index.status")
CODE = Target("_index.code", True, "token", aux_prefix="_index.code")
NAME = Target("_index.name", True, "string", aux_prefix="_index.name")
DESCRIPTION = Target("_index.description", False, "string", aux_prefix="_index.description")
FAMILY = Target("_index.family", True, "string", aux_prefix="_index.family", prefix_field="_index.family:prefix")
URL = Target("_index.url", False, "uri")
PERIOD = Target("_index.period", True, "date")
BIRTH = Target("_index.birthdate", False, "date")
POINT = Target("_index.date", False, "date", point=True)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_escaping() -> None:
    assert split_escaped(r"a\,b,c", ",") == ["a,b", "c"]
    assert split_escaped(r"s\|x|c|d", "|", 1) == ["s|x", "c|d"]
    assert unescape(r"a\$b\|c") == "a$b|c"
    assert split_prefix("ge2024") == ("ge", "2024") and split_prefix("2024") == ("eq", "2024")
    with pytest.raises(MalformedValue):
        split_prefix("xx2024")


def test_tokens_are_flat_equalities() -> None:
    assert BUILDER.build(STATUS, None, "current") == {"_index.status": "current"}
    assert BUILDER.build(STATUS, None, "|current") == {"_index.status": "current"}   # codes have no system
    assert BUILDER.build(CODE, None, "http://loinc.org|1234") == {"_index.code": "http://loinc.org|1234"}
    assert BUILDER.build(CODE, None, "|1234") == {"_index.code": "|1234"}
    assert BUILDER.build(CODE, None, "a,b") == {"_index.code": {"$in": ["a", "b"]}}
    # a system: the index range over its entries, narrowed to one entry of the list
    system = {"$gte": "http://loinc.org|", "$lt": "http://loinc.org}"}
    assert BUILDER.build(CODE, None, "http://loinc.org|") == {"_index.code": system,
                                                              "$and": [{"_index.code": {"$elemMatch": system}}]}
    assert BUILDER.build(CODE, "not", "a") == {"$nor": [{"_index.code": {"$in": ["a"]}}]}
    assert BUILDER.build(CODE, "missing", "true") == {"_index.code": {"$exists": False},
                                                      "_index.code:text": {"$exists": False}}
    with pytest.raises(UnsupportedModifier):
        BUILDER.build(CODE, "above", "a")


def test_strings_use_index_ranges_on_one_value() -> None:
    assert BUILDER.build(DESCRIPTION, None, "Hél") == {"_index.description": {"$gte": "hel", "$lt": "hem"}}
    hel = {"$gte": "hel", "$lt": "hem"}
    assert BUILDER.build(NAME, None, "Hél") == {"_index.name": hel, "$and": [{"_index.name": {"$elemMatch": hel}}]}
    assert BUILDER.build(NAME, "exact", "Hélène") == {"_index.name": "helene",
                                                      "$and": [{"_index.name:exact": "Hélène"}]}
    assert BUILDER.build(NAME, "contains", "l.n") == {"_index.name": {"$regex": r"l\.n"}}


def test_looked_up_strings_are_equalities_on_their_prefixes() -> None:
    assert BUILDER.build(FAMILY, None, "Dup") == {"_index.family:prefix": "dup"}
    assert BUILDER.build(FAMILY, None, "dup,MART") == {"_index.family:prefix": {"$in": ["dup", "mart"]}}
    long = "d" * 30
    on_one_name = {"_index.family": {"$elemMatch": {"$gte": long, "$lt": "d" * 29 + "e"}}}
    assert BUILDER.build(FAMILY, None, long) == {"_index.family:prefix": "d" * 24, "$and": [on_one_name]}
    assert BUILDER.build(FAMILY, None, f"dup,{long}") == {"$or": [
        {"_index.family:prefix": "dup"}, {"_index.family:prefix": "d" * 24, "$and": [on_one_name]}]}
    assert BUILDER.build(FAMILY, "exact", "Dupont") == {"_index.family": "dupont",
                                                        "$and": [{"_index.family:exact": "Dupont"}]}


def test_meta_parameters_ask_their_shared_terms() -> None:
    tag = Target("_index._tag", True, "token", aux_prefix="_index._tag", terms_prefix="_tag=")
    assert BUILDER.build(tag, None, "http://t|vip") == {"_index._meta": "_tag=http://t|vip"}
    assert BUILDER.build(tag, None, "vip,|x") == {"_index._meta": {"$in": ["_tag=vip", "_tag=|x"]}}
    assert BUILDER.build(tag, None, "http://t|") == {
        "_index._meta": {"$gte": "_tag=http://t|", "$lt": "_tag=http://t}"},
        "$and": [{"_index._tag": {"$elemMatch": {"$gte": "http://t|", "$lt": "http://t}"}}}]}
    assert BUILDER.build(tag, "not", "vip") == {"$nor": [{"_index._tag": {"$in": ["vip"]}}]}
    profile = Target("_index._profile", True, "uri", terms_prefix="_profile=")
    assert BUILDER.build(profile, "below", "http://p.org/") == {
        "_index._meta": {"$gte": "_profile=http://p.org/", "$lt": "_profile=http://p.org0"},
        "$and": [{"_index._profile": {"$elemMatch": {"$gte": "http://p.org/", "$lt": "http://p.org0"}}}]}
    assert BUILDER.build(profile, "above", "http://p.org/a")["_index._meta"]["$in"][0] == "_profile=http://p.org"


def test_of_type_is_served_by_the_identifier_value() -> None:
    identifier = Target("_index.identifier", True, "token", aux_prefix="_index.identifier")
    assert BUILDER.build(identifier, "of-type", r"http://t|NH|12\|3") == {
        "_index.identifier": "12|3", "$and": [{"_index.identifier:of-type": "http://t|NH|12|3"}]}
    with pytest.raises(MalformedValue):
        BUILDER.build(identifier, "of-type", "http://t|NH")


def test_composites_are_served_by_their_first_component() -> None:
    composite = Target("_index.code-value-quantity", True, "composite")
    parts = [Target("0", False, "token"), Target("1", False, "quantity")]
    one = {"_index.code-value-quantity": {"$elemMatch": {"0": "http://loinc.org|1", "1.v": {"$gt": Decimal(5)}}}}
    assert BUILDER.composite(composite, parts, "http://loinc.org|1$gt5") == one
    assert BUILDER.composite(composite, parts, "http://loinc.org|1$gt5", leading=CODE) == {
        "_index.code": "http://loinc.org|1", "$and": [one]}
    two = BUILDER.composite(composite, parts, "http://loinc.org|1$gt5,http://loinc.org|2$gt5", leading=CODE)
    assert two["_index.code"] == {"$in": ["http://loinc.org|1", "http://loinc.org|2"]}
    assert len(two["$and"][0]["$or"]) == 2


def test_two_criteria_on_one_list_are_not_merged_into_one_value() -> None:
    first, second = {"_index.value": {"$gt": 5}}, {"_index.value": {"$lt": 3}}
    assert one_condition_per_list([first, second], set()) == [first, {"$and": [second]}]
    # one value per resource: merged into one range, one index scan (`date=ge..&date=lt..`)
    assert one_condition_per_list([first, second], {"_index.value"}) == [first, second]
    dated = [{"_index.date.hi": {"$gt": 1}}, {"_index.date.hi": {"$lt": 3}}]
    assert one_condition_per_list(dated, {"_index.date"}) == dated


def test_subsumption() -> None:
    calls = []

    def subsume(system: str | None, code: str, direction: str, binding: str | None) -> list[str]:
        calls.append((system, code, direction, binding))
        return [f"{system or 'http://bound'}|{code}", f"{system or 'http://bound'}|{code}-child"]

    builder = CriteriaBuilder(DEFAULT_TIMEZONE, subsume=subsume)
    bound = Target("_index.status", False, "token", primitive_tokens=True, binding="http://vs")
    assert builder.build(CODE, "below", "http://s|a") == {"_index.code": {"$in": ["http://s|a", "http://s|a-child"]}}
    assert builder.build(bound, "above", "a") == {"_index.status": {"$in": ["a", "a-child"]}}   # codes only
    assert calls == [("http://s", "a", "below", None), (None, "a", "above", "http://vs")]
    assert CriteriaBuilder(DEFAULT_TIMEZONE, subsume=lambda *a: []).build(CODE, "below", "http://s|x") == NOTHING
    with pytest.raises(MalformedValue):
        builder.build(CODE, "below", "http://s|")


def test_uri_above_and_below() -> None:
    assert BUILDER.build(URL, "below", "http://a.org/fhir/") == {"_index.url": {"$gte": "http://a.org/fhir/",
                                                                               "$lt": "http://a.org/fhir0"}}
    assert BUILDER.build(URL, "above", "http://a.org/fhir/ValueSet/1")["_index.url"]["$in"] == [
        "http://a.org", "http://a.org/", "http://a.org/fhir", "http://a.org/fhir/", "http://a.org/fhir/ValueSet",
        "http://a.org/fhir/ValueSet/", "http://a.org/fhir/ValueSet/1", "http://a.org/fhir/ValueSet/1/"]
    for modifier in ("above", "below"):
        with pytest.raises(MalformedValue):
            BUILDER.build(URL, modifier, "urn:oid:1.2.3")


def test_conditions_moved_into_an_array_element() -> None:
    condition = {"_index.code": "a", "$or": [{"_index.status": "x"}, {"_id": "o1"}], "$nor": [{"_index.d": 1}]}
    assert field_names(condition) == {"_index.code", "_index.status", "_id", "_index.d"}
    assert relative_to(condition, "_index.") == {"code": "a", "$or": [{"status": "x"}, {"_id": "o1"}],
                                                 "$nor": [{"d": 1}]}


def test_dates() -> None:
    day = (utc(2024, 5, 31, 22), utc(2024, 6, 1, 22))
    # served by the index on the end of the ranges, narrowed to the exact condition
    # (an inclusive upper bound is written as the exclusive one a millisecond later, see _at_most)
    ms = timedelta(milliseconds=1)
    assert BUILDER.build(BIRTH, None, "2024-06-01") == {
        "_index.birthdate.hi": {"$gt": day[0], "$lt": day[1] + ms},
        "$and": [{"_index.birthdate.lo": {"$gte": day[0]}, "_index.birthdate.hi": {"$lte": day[1]}}]}
    assert BUILDER.build(PERIOD, None, "2024-06-01") == {
        "_index.period.hi": {"$gt": day[0], "$lt": day[1] + ms},
        "$and": [{"_index.period": {"$elemMatch": {"lo": {"$gte": day[0]}, "hi": {"$lte": day[1]}}}}]}
    assert BUILDER.build(BIRTH, None, "eb2024-06-01") == {"_index.birthdate.hi": {"$lt": day[0] + ms}}
    assert BUILDER.build(PERIOD, None, "ge2024-06-01") == {"_index.period.hi": {"$gt": day[0]}}
    assert BUILDER.build(PERIOD, None, "sa2024-06-01") == {"_index.period.hi": {"$gt": day[1]},
                                                           "$and": [{"_index.period.lo": {"$gte": day[1]}}]}
    # before a date: a Period may have started any time, a date covers at most `span`
    assert BUILDER.build(PERIOD, None, "lt2024-06-01") == {"_index.period.lo": {"$lt": day[0]}}
    bounded = Target("_index.birthdate", False, "date", span=timedelta(days=367))
    assert BUILDER.build(bounded, None, "lt2024-06-01") == {
        "_index.birthdate.hi": {"$lt": day[0] + timedelta(367) + ms},
        "$and": [{"_index.birthdate.lo": {"$lt": day[0]}}]}
    assert BUILDER.build(bounded, None, "le9999")["_index.birthdate.hi"] == {"$lte": DATE_MAX}
    assert BUILDER.build(BIRTH, None, "ne2024-06-01") == {"_index.birthdate": {"$exists": True}, "$nor": [
        {"_index.birthdate.lo": {"$gte": day[0]}, "_index.birthdate.hi": {"$lte": day[1]}}]}
    # a stored instant: every prefix is one range on one field, so ge & lt merge into one
    merged = and_filters(BUILDER.build(POINT, None, "ge2024-06-01"), BUILDER.build(POINT, None, "lt2024-06-08"))
    assert merged == {"_index.date": {"$gte": day[0], "$lt": utc(2024, 6, 7, 22)}}
    # ap: widened by 10% of the distance to now (at least a day)
    low, high = BUILDER.build(POINT, None, "ap2023-01-01")["_index.date"].values()
    assert high - low == timedelta(days=1) + 2 * ((utc(2024, 1, 1) - utc(2022, 12, 31, 23)) / 10)


def test_numbers_and_quantities() -> None:
    value = Target("_index.value", False, "number")
    assert BUILDER.build(value, None, "100") == {"_index.value": {"$gte": Decimal("99.5"), "$lt": Decimal("100.5")}}
    assert BUILDER.build(value, None, "gt1.5") == {"_index.value": {"$gt": Decimal("1.5")}}
    listed_numbers = Target("_index.value", True, "number")
    assert BUILDER.build(listed_numbers, None, "100") == {
        "_index.value": {"$gte": Decimal("99.5"), "$lt": Decimal("100.5")},
        "$and": [{"_index.value": {"$elemMatch": {"$gte": Decimal("99.5"), "$lt": Decimal("100.5")}}}]}
    listed = Target("_index.value", True, "quantity")
    milligrams = {"$gte": Decimal("0.00535"), "$lt": Decimal("0.00545")}
    assert BUILDER.build(listed, None, "5.4|http://unitsofmeasure.org|mg") == {
        "_index.value.cv": milligrams, "$and": [{"_index.value": {"$elemMatch": {"cv": milligrams, "cu": "g"}}}]}
    assert BUILDER.build(listed, None, "gt5") == {"_index.value.v": {"$gt": Decimal(5)}}
    single = Target("_index.value", False, "quantity")
    assert BUILDER.build(single, None, "le5||kg/h") == {"_index.value.v": {"$lte": Decimal(5)},
                                                      "$and": [{"_index.value.v": {"$lte": Decimal(5)},
                                                                "_index.value.u": "kg/h"}]}


def test_references() -> None:
    subject = Target("_index.subject", False, "reference", aux_prefix="_index.subject")
    targets = ("Patient", "Group")
    assert BUILDER.build(subject, None, "Patient/1", targets) == {"_index.subject": "Patient/1"}
    assert BUILDER.build(subject, "identifier", "urn:oid:1|", targets) == {
        "_index.subject:identifier": {"$gte": "urn:oid:1|", "$lt": "urn:oid:1}"},
        "$and": [{"_index.subject:identifier": {"$elemMatch": {"$gte": "urn:oid:1|", "$lt": "urn:oid:1}"}}}]}
    assert BUILDER.build(subject, None, "http://h/fhir/Patient/1", targets) == {"_index.subject": "Patient/1"}
    assert BUILDER.build(subject, None, "1", targets) == {"_index.subject": {"$in": ["Patient/1", "Group/1"]}}
    assert BUILDER.build(subject, "Patient", "1", targets) == {"_index.subject": "Patient/1"}
    assert BUILDER.build(subject, "identifier", "urn:oid:1|2", targets) == {"_index.subject:identifier": "urn:oid:1|2"}
    with pytest.raises(MalformedValue):
        BUILDER.build(subject, "Patient", "Group/1", targets)


def test_value_sets() -> None:
    builder = CriteriaBuilder(DEFAULT_TIMEZONE, expand_value_set=lambda url: ["http://s|a", "http://s|b"])
    assert builder.build(CODE, "in", "http://vs") == {"_index.code": {"$in": ["http://s|a", "http://s|b"]}}
    assert builder.build(STATUS, "not-in", "http://vs") == {"_index.status": {"$nin": ["a", "b"]}}
    empty = CriteriaBuilder(DEFAULT_TIMEZONE, expand_value_set=lambda url: [])
    assert empty.build(CODE, "in", "http://vs") == NOTHING


def test_and_filters_stay_flat() -> None:
    assert and_filters({"a": 1}, {"b": {"$gt": 2}}, None, {"b": {"$lt": 5}}) == {"a": 1, "b": {"$gt": 2, "$lt": 5}}
    assert and_filters({"b": {"$gt": 2}}, {"b": {"$gt": 4}}) == {"b": {"$gt": 4}}
    assert and_filters({"b": 3}, {"b": {"$gt": 2}}) == {"b": 3}              # the range adds nothing
    assert and_filters({"b": 1}, {"b": 2}) == {"b": 1, "$and": [{"b": 2}]}
    assert and_filters({"$or": [{"a": 1}]}, {"c": 1}) == {"c": 1, "$and": [{"$or": [{"a": 1}]}]}
    assert satisfies(Decimal("2.5"), {"$gt": 2, "$lte": Decimal("2.5")})
    assert not satisfies("a", {"$gt": 2})
