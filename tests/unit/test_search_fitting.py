"""Fitting a query's flat part to one declared index (the rest is checked on what it fetches)."""

from __future__ import annotations

from fhir_server.search.fitting import fit_to_indexes, served_part

PATIENT_STATUS = ("_index.patient", "_index.status", "_id")
PATIENT_DATE = ("_index.patient", "_index.date", "_id")
INDEXES = [PATIENT_STATUS, PATIENT_DATE, ("_index.code",), ("_id",)]


def test_what_an_index_serves() -> None:
    flat = {"_index.patient": "P/1", "_index.status": "current", "_index.type": "t"}
    assert served_part(PATIENT_STATUS, flat) == ("_index.patient", "_index.status")
    assert served_part(PATIENT_DATE, {"_index.patient": "P/1", "_index.date": {"$gte": 1}, "_id": {"$gt": "a"}}) == \
        ("_index.patient", "_index.date")                        # one range, and it ends there
    assert served_part(PATIENT_STATUS, {"_index.status": "current"}) == ()          # not a leading field
    assert served_part(("_index.code",), {"_index.code": {"$elemMatch": {"$gte": "a"}}}) == ()
    assert served_part(("_index.code",), {"_index.code": None}) == ()               # missing values


def test_the_fields_the_best_index_leaves_out_are_checked_afterwards() -> None:
    query = {"_index.patient": "P/1", "_index.status": "current", "_index.type": "t", "$or": [{"_acl.x": 1}]}
    assert fit_to_indexes(query, INDEXES) == {"_index.patient": "P/1", "_index.status": "current",
                                              "$and": [{"$or": [{"_acl.x": 1}]}, {"_index.type": "t"}]}
    # the keyset condition of a following page, beside a range the index serves
    page = {"_index.code": {"$gte": "x|", "$lt": "x}"}, "_id": {"$gt": "o1"}}
    assert fit_to_indexes(page, INDEXES) == {"_index.code": {"$gte": "x|", "$lt": "x}"},
                                             "$and": [{"_id": {"$gt": "o1"}}]}
    tie = {"_index.code": "x|1", "_id": {"$gt": "o1"}}          # an equality rather than an `_id` range
    assert fit_to_indexes(tie, INDEXES) == {"_index.code": "x|1", "$and": [{"_id": {"$gt": "o1"}}]}
    ids = {"_id": {"$in": ["a", "b"]}, "_index.code": {"$gte": "x|", "$lt": "x}"}}
    assert fit_to_indexes(ids, INDEXES) == {"_id": {"$in": ["a", "b"]},
                                            "$and": [{"_index.code": {"$gte": "x|", "$lt": "x}"}}]}


def test_queries_an_index_serves_or_none_does_are_left_alone() -> None:
    served = {"_index.patient": "P/1", "_index.status": "current", "_id": {"$gt": "d4"}}
    assert fit_to_indexes(served, INDEXES) is served
    unserved = {"_index.family": "x", "_index.given": "y"}
    assert fit_to_indexes(unserved, INDEXES) is unserved
    # only search criteria move: other fields may have indexes this package does not know of
    audit = {"_index.patient": "P/1", "_audit.recorded": {"$gte": 1}}
    assert fit_to_indexes(audit, INDEXES) is audit
