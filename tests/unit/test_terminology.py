"""The local terminology service: ValueSet expansion over the CodeSystems we hold, code validation
that answers "unknown" rather than guessing, and display lookup."""

from __future__ import annotations

import pytest

from fhir_server.definitions import Definitions, load_definitions
from fhir_server.terminology import Terminology, strip_version

EX = "https://espace.example/fhir/"
LEVELS = EX + "CodeSystem/niveau"

# A small hierarchical code system: A > (A1 > A1a), A2 ; D.   "E" is only linked by a property.
LEVEL_SYSTEM = {
    "resourceType": "CodeSystem", "url": LEVELS, "status": "active", "content": "complete",
    "hierarchyMeaning": "is-a",
    "property": [{"code": "parent", "type": "code"}, {"code": "grade", "type": "string"}],
    "concept": [
        {"code": "A", "display": "Autonome", "concept": [
            {"code": "A1", "display": "Autonome avec aide", "concept": [{"code": "A1a", "display": "Aide légère"}]},
            {"code": "A2", "display": "Autonome avec surveillance",
             "property": [{"code": "grade", "valueString": "2"}]},
        ]},
        {"code": "D", "display": "Dépendant", "property": [{"code": "grade", "valueString": "2"}]},
        {"code": "E", "display": "Dépendant partiel", "property": [{"code": "parent", "valueCode": "D"}]},
    ],
}
FRAGMENT_SYSTEM = {"resourceType": "CodeSystem", "url": EX + "CodeSystem/fragment", "status": "active",
                   "content": "fragment", "concept": [{"code": "x"}]}


def value_set(name: str, include: list[dict], exclude: list[dict] | None = None) -> dict:
    compose: dict = {"include": include}
    if exclude:
        compose["exclude"] = exclude
    return {"resourceType": "ValueSet", "url": EX + "ValueSet/" + name, "version": "1.0.0", "status": "active",
            "compose": compose}


def levels_where(prop: str, op: str, value: str) -> dict:
    return {"system": LEVELS, "filter": [{"property": prop, "op": op, "value": value}]}


VALUE_SETS = [
    value_set("all-levels", [{"system": LEVELS}]),
    value_set("autonomous", [levels_where("concept", "is-a", "A")]),
    value_set("below-a", [levels_where("concept", "descendent-of", "A")]),
    value_set("not-a", [levels_where("concept", "is-not-a", "A")]),
    value_set("under-d", [levels_where("concept", "is-a", "D")]),
    value_set("grade-2", [levels_where("grade", "=", "2")]),
    value_set("autonomous-but-a1", [levels_where("concept", "is-a", "A")],
              exclude=[{"system": LEVELS, "concept": [{"code": "A1"}]}]),
    value_set("import-plus-gender", [{"valueSet": [EX + "ValueSet/under-d|1.0.0"]},
                                     {"system": "http://hl7.org/fhir/administrative-gender"}]),
    value_set("listed-loinc", [{"system": "http://loinc.org", "concept": [{"code": "8480-6"}, {"code": "8462-4"}]}]),
    value_set("loinc-and-listed", [{"system": "http://loinc.org"},
                                   {"system": LEVELS, "concept": [{"code": "A"}]}]),
    value_set("fragment", [{"system": EX + "CodeSystem/fragment"}]),
    value_set("unsupported-filter", [levels_where("concept", "generalizes", "A1")]),
    value_set("exclude-unknown", [{"system": LEVELS}], exclude=[{"system": "http://snomed.info/sct"}]),
    value_set("cycle-1", [{"valueSet": [EX + "ValueSet/cycle-2"]}]),
    value_set("cycle-2", [{"valueSet": [EX + "ValueSet/cycle-1"]}]),
]


@pytest.fixture(scope="module")
def terminology() -> Terminology:
    core = load_definitions()
    definitions = Definitions(structures=core.structures, value_sets=dict(core.value_sets),
                              code_systems=dict(core.code_systems))
    for resource in [LEVEL_SYSTEM, FRAGMENT_SYSTEM, *VALUE_SETS]:
        definitions.add(resource)
    return Terminology(definitions)


def codes(*values: str, system: str = LEVELS) -> frozenset[tuple[str, str]]:
    return frozenset((system, value) for value in values)


def test_administrative_gender_has_exactly_four_codes(terminology: Terminology) -> None:
    assert terminology.expand("http://hl7.org/fhir/ValueSet/administrative-gender") == codes(
        "male", "female", "other", "unknown", system="http://hl7.org/fhir/administrative-gender")


def test_versioned_canonical_is_the_same_value_set(terminology: Terminology) -> None:
    plain = terminology.expand("http://hl7.org/fhir/ValueSet/administrative-gender")
    assert terminology.expand("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1") == plain
    assert strip_version("http://x/ValueSet/y|1.2") == "http://x/ValueSet/y"


def test_a_core_is_a_filter_on_a_v3_hierarchy(terminology: Terminology) -> None:
    # v3-PurposeOfUse = ActReason is-a PurposeOfUse: includes nested codes such as ETREAT under TREAT
    expansion = terminology.expand("http://terminology.hl7.org/ValueSet/v3-PurposeOfUse")
    assert expansion is not None
    reason = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
    assert {(reason, "TREAT"), (reason, "ETREAT"), (reason, "PurposeOfUse")} <= expansion
    assert (reason, "_ActAccommodationReason") not in expansion


@pytest.mark.parametrize(("name", "expected"), [
    ("all-levels", codes("A", "A1", "A1a", "A2", "D", "E")),
    ("autonomous", codes("A", "A1", "A1a", "A2")),
    ("below-a", codes("A1", "A1a", "A2")),
    ("not-a", codes("D", "E")),
    ("under-d", codes("D", "E")),                 # E is below D through its `parent` property
    ("grade-2", codes("A2", "D")),
    ("autonomous-but-a1", codes("A", "A1a", "A2")),
    ("import-plus-gender", codes("D", "E") | codes("male", "female", "other", "unknown",
                                                   system="http://hl7.org/fhir/administrative-gender")),
    ("listed-loinc", codes("8480-6", "8462-4", system="http://loinc.org")),
])
def test_expansions(terminology: Terminology, name: str, expected: frozenset) -> None:
    assert terminology.expand(EX + "ValueSet/" + name) == expected


@pytest.mark.parametrize("name", [
    "loinc-and-listed",       # all of LOINC: we do not hold it
    "fragment",               # a code system that does not list all its codes
    "unsupported-filter",
    "exclude-unknown",        # cannot know what the exclusion removes
    "cycle-1",
    "no-such-value-set",
])
def test_value_sets_that_cannot_be_expanded_give_none(terminology: Terminology, name: str) -> None:
    assert terminology.expand(EX + "ValueSet/" + name) is None


def test_snomed_based_core_value_set_cannot_be_expanded(terminology: Terminology) -> None:
    assert terminology.expand("http://hl7.org/fhir/ValueSet/clinical-findings") is None


@pytest.mark.parametrize(("name", "system", "code", "expected"), [
    ("autonomous", LEVELS, "A1a", True),
    ("autonomous", LEVELS, "D", False),
    ("autonomous", None, "A2", True),                      # a bare `code`: any system of the value set
    ("autonomous", "http://other.example/cs", "A2", False),
    ("loinc-and-listed", LEVELS, "A", True),               # a listed code is certainly a member...
    ("loinc-and-listed", "http://loinc.org", "1234-5", None),   # ...an unlisted LOINC code: unknown
    ("loinc-and-listed", LEVELS, "D", None),
    ("exclude-unknown", LEVELS, "A", None),                # may have been excluded
    ("no-such-value-set", LEVELS, "A", None),
    ("autonomous|1.0.0", LEVELS, "A", True),
])
def test_validate_code(terminology: Terminology, name: str, system: str | None, code: str,
                       expected: bool | None) -> None:
    assert terminology.validate_code(EX + "ValueSet/" + name, system, code) is expected


@pytest.mark.parametrize(("system", "code", "display"), [
    (LEVELS, "A1a", "Aide légère"),
    (LEVELS, "Z", None),
    ("http://hl7.org/fhir/administrative-gender", "female", "Female"),
    ("http://hl7.org/fhir/administrative-gender|4.0.1", "male", "Male"),
    ("http://loinc.org", "8480-6", None),
])
def test_lookup(terminology: Terminology, system: str, code: str, display: str | None) -> None:
    assert terminology.lookup(system, code) == display


def test_expansions_are_cached(terminology: Terminology) -> None:
    first = terminology.expand(EX + "ValueSet/autonomous")
    assert terminology.expand(EX + "ValueSet/autonomous") is first


# -- what our profiles bind: carried whole, or as a documented subset -------------------------------------
NOS = "https://mos.esante.gouv.fr/NOS/"
FR_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/"
CARRIED = [
    ("ValueSet", NOS + "JDV_J06-XdsClassCode-CISIS/FHIR/JDV-J06-XdsClassCode-CISIS"),
    ("ValueSet", NOS + "JDV_J07-XdsTypeCode-CISIS/FHIR/JDV-J07-XdsTypeCode-CISIS"),
    ("ValueSet", NOS + "JDV_J08-XdsConfidentialityCode-CISIS/FHIR/JDV-J08-XdsConfidentialityCode-CISIS"),
    ("ValueSet", NOS + "JDV_J10-XdsFormatCode-CISIS/FHIR/JDV-J10-XdsFormatCode-CISIS"),
    ("ValueSet", NOS + "JDV_J02-XdsHealthcareFacilityTypeCode-CISIS/FHIR/JDV-J02-XdsHealthcareFacilityTypeCode-CISIS"),
    ("ValueSet", NOS + "JDV_J04-XdsPracticeSettingCode-CISIS/FHIR/JDV-J04-XdsPracticeSettingCode-CISIS"),
    ("CodeSystem", NOS + "TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"),
    ("CodeSystem", NOS + "TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"),
    ("CodeSystem", FR_CS + "fr-core-cs-v2-0203"),
    ("CodeSystem", FR_CS + "fr-core-cs-v2-0445"),
    ("CodeSystem", FR_CS + "fr-core-cs-method-collection"),
    ("CodeSystem", FR_CS + "fr-core-cs-mode-validation-identity"),
    ("CodeSystem", FR_CS + "fr-core-cs-v2-3307"),
    ("ValueSet", "https://espace.example.org/fhir/ValueSet/espace-vaccine-atc"),
    ("ValueSet", "https://smt.esante.gouv.fr/fhir/ValueSet/jdv-immunization-route-code-cisis"),
    ("ValueSet", "https://smt.esante.gouv.fr/fhir/ValueSet/jdv-hl7-v3-ActSubstanceAdministrationImmunizationCode-cisis"),
]


@pytest.mark.parametrize(("kind", "url"), CARRIED, ids=[url.rsplit("/", 1)[-1] for _, url in CARRIED])
def test_what_the_profiles_bind_is_carried_whole_or_as_a_documented_subset(kind: str, url: str) -> None:
    definitions = load_definitions()
    held = Terminology(definitions)
    resource = (definitions.value_sets if kind == "ValueSet" else definitions.code_systems).get(url)
    assert resource is not None, url
    whole = held.expand(url) is not None if kind == "ValueSet" else resource.get("content") == "complete"
    if not whole:      # a subset says so, and never refuses a code it does not list
        assert any(word in resource["description"].lower() for word in ("subset", "fragment", "unclosed")), url
        if kind == "ValueSet":
            assert held.validate_code(url, None, "code-absent-du-sous-ensemble") is None
        else:
            assert resource["content"] == "fragment"
