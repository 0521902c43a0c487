"""Reading a CDA R2 summary: dates, codes, safe parsing, entry mapping."""

from __future__ import annotations

import pytest
from lxml import etree

from fhir_server.engine.errors import FhirError
from fhir_server.vsm import cda
from fhir_server.vsm.cda_mapping import MappingContext, immunization, map_section, medication

CONTEXT = MappingContext({"reference": "Patient/p1"}, {"display": "Dr X"}, "2026-11-20")


@pytest.mark.parametrize(("value", "expected"), [
    ("2024", "2024"), ("202403", "2024-03"), ("20240315", "2024-03-15"),
    ("20240315103000+0100", "2024-03-15T10:30:00+01:00"),
    ("202407151030", "2024-07-15T10:30:00+02:00"),          # no zone: French summer time
    ("20240115103000.123-0500", "2024-01-15T10:30:00-05:00"),
    ("2024-03-15", None), ("20241315", None), ("20240230", None), ("", None),
])
def test_hl7_dates(value, expected):
    assert cda.fhir_datetime(value) == expected


def element(xml: str) -> etree._Element:
    return etree.fromstring(f'<x xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
                            f'{xml}</x>')[0]


def test_codes_with_translations():
    concept = cda.concept_of(element('<value code="I10" codeSystem="2.16.840.1.113883.6.3" displayName="HTA">'
                                     '<translation code="38341003" codeSystem="2.16.840.1.113883.6.96"/></value>'))
    assert concept["coding"] == [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": "HTA"},
                                 {"system": "http://snomed.info/sct", "code": "38341003"}]
    assert cda.coding_of(element('<code code="1" codeSystem="9.9"/>'))["system"] == "urn:oid:9.9"


@pytest.mark.parametrize(("data", "why"), [
    (b"<a>", "not well-formed"),
    (b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>', "DOCTYPE"),
    (b'<?xml version="1.0"?>\n<!DOCTYPE ClinicalDocument SYSTEM "http://example.org/x.dtd">'
     b'<ClinicalDocument/>', "DOCTYPE"),
    (b'<ClinicalDocument/>', "not ClinicalDocument"),
    (b'<ClinicalDocument xmlns="urn:hl7-org:v3"><code code="60591-5"/></ClinicalDocument>', "effectiveTime"),
])
def test_refusals_are_422_and_say_why(data, why):
    with pytest.raises(FhirError) as caught:
        cda.parse(data)
    assert caught.value.status == 422
    assert why in str(caught.value)


def administration(code: str, system: str = "2.16.840.1.113883.6.73", when: str = "20240912") -> etree._Element:
    return element(f'<entry><substanceAdministration classCode="SBADM" moodCode="EVN"><effectiveTime value="{when}"/>'
                   f'<consumable><manufacturedProduct><manufacturedMaterial><code code="{code}" codeSystem="{system}"/>'
                   '</manufacturedMaterial></manufacturedProduct></consumable></substanceAdministration></entry>')


def test_a_vaccination_is_mapped_only_with_a_vaccine_code():
    mapped = immunization(administration("J07CA01"), CONTEXT)
    assert mapped["vaccineCode"]["coding"][0]["code"] == "J07CA01" and mapped["primarySource"] is False
    assert immunization(administration("N02BE01"), CONTEXT) is None             # not a vaccine
    assert immunization(administration("FJ", "1.2.3"), CONTEXT) is None         # local code
    assert immunization(administration("J07CA01", when="20990101"), CONTEXT) is None


def test_a_treatment_keeps_its_name_when_uncoded():
    entry = element('<entry><substanceAdministration classCode="SBADM" moodCode="EVN"><consumable><manufacturedProduct>'
                    '<manufacturedMaterial><name>Préparation magistrale</name></manufacturedMaterial>'
                    '</manufacturedProduct></consumable></substanceAdministration></entry>')
    assert medication(entry, CONTEXT)["medicationCodeableConcept"] == {"text": "Préparation magistrale"}


def test_unknown_sections_count_their_entries_as_not_mapped():
    section = cda.CdaSection(code="46264-8", title="Dispositifs", text="Pacemaker",
                             entries=[element("<entry/>"), element("<entry/>")])
    mapped = map_section(section, CONTEXT)
    assert (mapped.resources, mapped.unmapped) == ([], 2)
