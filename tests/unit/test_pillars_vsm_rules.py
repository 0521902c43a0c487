"""The medical summary rules on their own (the HTTP tests meet the profile first for some of
them): exact messages and FHIRPath expressions."""

from __future__ import annotations

import pytest

from fhir_server.engine.errors import FhirError
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import RequestContext
from fhir_server.vsm.rules import SummaryRules, check_sections
from fhir_server.vsm.sections import MANDATORY, SECTIONS

STORE = {
    "Condition/c1": ({"resourceType": "Condition", "id": "c1"}, ["Patient/p1"]),
    "Condition/other": ({"resourceType": "Condition", "id": "other"}, ["Patient/p2"]),
    "Procedure/pr1": ({"resourceType": "Procedure", "id": "pr1"}, ["Patient/p1"]),
    "Composition/old": ({"resourceType": "Composition", "id": "old", "subject": {"reference": "Patient/p1"},
                         "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]}}, ["Patient/p1"]),
    "Composition/letter": ({"resourceType": "Composition", "id": "letter", "subject": {"reference": "Patient/p1"},
                            "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]}}, ["Patient/p1"]),
}
RULES = SummaryRules(lambda event, target: STORE.get(target, (None, []))[0],
                     lambda resource_type, resource: STORE[f"{resource_type}/{resource['id']}"][1])
EMPTY = {"coding": [{"code": "nilknown"}]}


def section(code: str, *entries: str) -> dict:
    built = {"code": {"coding": [{"system": "http://loinc.org", "code": code}]}}
    if entries:
        built["entry"] = [{"reference": e} for e in entries]
    else:
        built["emptyReason"] = EMPTY
    return built


def summary(problems: tuple[str, ...] = ("Condition/c1",), **extra) -> dict:
    sections = [section("11450-4", *problems), *(section(code) for code in MANDATORY[1:])]
    return {"resourceType": "Composition", "subject": {"reference": "Patient/p1"},
            "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]}, "section": sections, **extra}


def refusal(composition: dict) -> tuple[str, tuple[str, ...]]:
    event = WriteEvent(RequestContext("http://x"), "create", "Composition", "new", None, composition, None, 1)
    with pytest.raises(FhirError) as caught:
        RULES(event)
    assert caught.value.status == 422
    issue = caught.value.issues[0]
    return issue.diagnostics, issue.expression


def test_a_complete_summary_passes():
    RULES(WriteEvent(RequestContext("http://x"), "create", "Composition", "new", None, summary(), None, 1))


def test_mandatory_sections_are_named_when_missing():
    composition = summary()
    composition["section"] = composition["section"][:2]
    message, where = refusal(composition)
    assert where == ("Composition.section",)
    for code in MANDATORY[2:]:
        assert code in message and SECTIONS[code].title in message


@pytest.mark.parametrize(("change", "where"), [
    (lambda c: c["section"][1].pop("emptyReason"), "Composition.section[1].emptyReason"),
    (lambda c: c["section"][0].update(emptyReason=EMPTY), "Composition.section[0].emptyReason"),
    (lambda c: c["section"].append(section("11450-4", "Condition/c1")), "Composition.section[5].code"),
    (lambda c: c.update(subject={"reference": "Group/g"}), "Composition.subject"),
])
def test_section_rules(change, where):
    composition = summary()
    change(composition)
    assert refusal(composition)[1] == (where,)


@pytest.mark.parametrize(("entry", "message"), [
    ("Condition/other", "belongs to Patient/p2, not to Patient/p1"),
    ("Condition/missing", "does not exist or you may not read it"),
    ("Procedure/pr1", "holds Condition, not Procedure"),
    ("#local", "as Type/id"),
    ("Weird$Type/x", "as Type/id"),
])
def test_entry_rules(entry, message):
    text, where = refusal(summary((entry,)))
    assert where == ("Composition.section[0].entry[0]",)
    assert message in text


def test_entries_of_sub_sections_are_checked_for_their_section():
    composition = summary()
    composition["section"][0]["section"] = [{"title": "Anciens", "entry": [{"reference": "Procedure/pr1"}]}]
    assert refusal(composition)[1] == ("Composition.section[0].section[0].entry[0]",)


@pytest.mark.parametrize("target", ["Composition/letter", "Composition/missing", "Condition/c1"])
def test_a_summary_replaces_only_a_summary_of_the_patient(target):
    composition = summary(relatesTo=[{"code": "replaces", "targetReference": {"reference": target}}])
    assert refusal(composition)[1] == ("Composition.relatesTo[0].targetReference",)


def test_other_compositions_are_left_alone():
    letter = {"resourceType": "Composition", "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]}}
    RULES(WriteEvent(RequestContext("http://x"), "create", "Composition", "x", None, letter, None, 1))


def test_check_sections_accepts_optional_sections_with_entries():
    check_sections(summary()["section"] + [section("11369-6", "Immunization/i1")])
