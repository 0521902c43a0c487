"""Subscription criteria: parsing, and the patients they restrict matches to."""

from __future__ import annotations

import pytest

from fhir_server.notify.criteria import CriteriaError, parse_criteria, restricted_patients

DOCUMENT_PARAMS = frozenset({"patient", "subject", "author"})


def test_parse_type_and_parameters():
    criteria = parse_criteria(" DocumentReference?patient=Patient/1&status=current ")
    assert criteria.resource_type == "DocumentReference"
    assert criteria.params == (("patient", "Patient/1"), ("status", "current"))
    assert criteria.text == "DocumentReference?patient=Patient%2F1&status=current"
    assert parse_criteria("Patient").params == ()


@pytest.mark.parametrize("text", [None, "", "   ", "?patient=1", "documentReference?x=1",
                                  "http://other/fhir/Observation?code=1", "/Observation?code=1",
                                  "Observation?code=1&_count=10", "Observation?_include=Observation:subject"])
def test_parse_refuses(text):
    with pytest.raises(CriteriaError):
        parse_criteria(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("DocumentReference?patient=Patient/1", {"Patient/1"}),
    ("DocumentReference?patient=1", {"Patient/1"}),
    ("DocumentReference?subject=Patient/1&status=current", {"Patient/1"}),
    ("DocumentReference?subject:Patient=1", {"Patient/1"}),
    ("DocumentReference?patient=Patient/1,Patient/2", {"Patient/1", "Patient/2"}),
    ("DocumentReference?patient=Patient/1,Patient/2&subject=Patient/2", {"Patient/2"}),
    ("DocumentReference?patient=https://espace.example.org/fhir/Patient/1", {"Patient/1"}),
    ("Patient?_id=1", None),                               # _id is only a patient parameter of Patient
])
def test_restricted_patients(text, expected):
    result = restricted_patients(parse_criteria(text), DOCUMENT_PARAMS)
    assert result == (frozenset(expected) if expected is not None else None)


@pytest.mark.parametrize("text", [
    "DocumentReference?status=current",
    "DocumentReference?subject=1",                        # a bare id could be any subject type
    "DocumentReference?subject=Group/1",
    "DocumentReference?patient=Patient/1,Group/2",         # one value outside patients: no restriction
    "DocumentReference?patient:missing=false",
    "DocumentReference?patient.identifier=x|1",            # chained: not checked, not a restriction
])
def test_not_restricted(text):
    assert restricted_patients(parse_criteria(text), DOCUMENT_PARAMS) is None


def test_patient_by_id():
    assert restricted_patients(parse_criteria("Patient?_id=1"), frozenset({"_id"})) == frozenset({"Patient/1"})
