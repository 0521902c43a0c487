"""Snapshot generation from differentials: checked against the snapshots shipped in the R4 core
package, and on profiles written the way ours are (differential only)."""

from __future__ import annotations

import copy

import pytest

from fhir_server.definitions import Definitions, load_definitions
from fhir_server.validation.snapshot import SnapshotError, ensure_snapshot, generate_snapshot

CORE = "http://hl7.org/fhir/StructureDefinition/"
EX = "https://espace.example/fhir/StructureDefinition/"

# Core profiles whose shipped snapshot we deliberately do not reproduce:
KNOWN_DIFFERENCES = {
    # in-place `value[x]` narrowing where we (and the R4 rules) make a type slice value[x]:valueQuantity
    CORE + "bp",
    # the shipped snapshot drops elements (Composition.date, FamilyMemberHistory.sex...) after a slice
    CORE + "catalog",
    CORE + "familymemberhistory-genetic",
    # the shipped snapshot also lists the children of unconstrained extension slices
    CORE + "elementdefinition-de",
    # the differential slices `extension` after setting its max to 0 (we report that as an error)
    CORE + "codesystem-history",
}


def core_profiles() -> list[str]:
    return sorted(
        url for url, sd in load_definitions().structures.items()
        if sd.get("derivation") == "constraint" and sd.get("differential") and sd.get("snapshot")
        and url not in KNOWN_DIFFERENCES
    )


def ids(sd: dict) -> list[str]:
    return [element["id"] for element in sd["snapshot"]["element"]]


def element(sd: dict, element_id: str) -> dict:
    return next(e for e in sd["snapshot"]["element"] if e["id"] == element_id)


def test_every_core_profile_snapshot_is_reproduced_from_its_differential() -> None:
    definitions = load_definitions()
    mismatches = []
    for url in core_profiles():
        shipped = definitions.structures[url]
        if ids(generate_snapshot(shipped, definitions)) != ids(shipped):
            mismatches.append(url)
    assert len(core_profiles()) > 400
    assert mismatches == []


def test_profile_on_profile_regenerates_its_bases() -> None:
    # bodyweight -> vitalsigns -> Observation, with both profiles stripped of their snapshots
    core = load_definitions()
    definitions = Definitions(structures=dict(core.structures))
    for name in ("vitalsigns", "bodyweight"):
        stripped = copy.deepcopy(core.structures[CORE + name])
        del stripped["snapshot"]
        definitions.structures[CORE + name] = stripped
    generated = ensure_snapshot(definitions.structures[CORE + "bodyweight"], definitions)
    assert ids(generated) == ids(core.structures[CORE + "bodyweight"])
    assert element(generated, "Observation.category:VSCat.coding.code")["fixedCode"] == "vital-signs"  # from vitalsigns
    assert element(generated, "Observation.value[x]:valueQuantity.system")["fixedUri"] == "http://unitsofmeasure.org"


# -- a differential-only French-style profile --------------------------------------------------------
NIVEAU = {
    "resourceType": "StructureDefinition", "url": EX + "niveau", "name": "Niveau", "status": "active",
    "kind": "complex-type", "abstract": False, "type": "Extension", "derivation": "constraint",
    "context": [{"type": "element", "expression": "Patient"}],
    "baseDefinition": CORE + "Extension",
    "differential": {"element": [
        {"id": "Extension", "path": "Extension", "max": "1"},
        {"id": "Extension.url", "path": "Extension.url", "fixedUri": EX + "niveau"},
        {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": "Coding"}]},
    ]},
}

PATIENT = {
    "resourceType": "StructureDefinition", "url": EX + "patient", "name": "EspacePatient", "status": "active",
    "kind": "resource", "abstract": False, "type": "Patient", "derivation": "constraint",
    "baseDefinition": CORE + "Patient",
    "differential": {"element": [
        {"id": "Patient", "path": "Patient",
         "constraint": [{"key": "esp-1", "severity": "error", "human": "Un nom ou un identifiant",
                         "expression": "name.exists() or identifier.exists()"}]},
        {"id": "Patient.extension:niveau", "path": "Patient.extension", "sliceName": "niveau", "max": "1",
         "type": [{"code": "Extension", "profile": [EX + "niveau"]}]},
        {"id": "Patient.extension:niveau.value[x]", "path": "Patient.extension.value[x]", "short": "Niveau"},
        {"id": "Patient.identifier", "path": "Patient.identifier", "min": 1,
         "slicing": {"discriminator": [{"type": "pattern", "path": "system"}], "rules": "open"}},
        {"id": "Patient.identifier.value", "path": "Patient.identifier.value", "min": 1},
        {"id": "Patient.identifier:INS", "path": "Patient.identifier", "sliceName": "INS", "min": 1, "max": "1"},
        {"id": "Patient.identifier:INS.system", "path": "Patient.identifier.system", "min": 1,
         "patternUri": "urn:oid:1.2.250.1.213.1.4.8"},
        {"id": "Patient.identifier:RPPS", "path": "Patient.identifier", "sliceName": "RPPS", "max": "1"},
        {"id": "Patient.gender", "path": "Patient.gender", "min": 1, "fixedCode": "female"},
        {"id": "Patient.deceasedBoolean", "path": "Patient.deceasedBoolean", "fixedBoolean": False},
        {"id": "Patient.contact.name.family", "path": "Patient.contact.name.family", "min": 1},
    ]},
}


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    core = load_definitions()
    definitions = Definitions(structures=dict(core.structures))
    definitions.add(NIVEAU)
    definitions.add(PATIENT)
    return definitions


@pytest.fixture(scope="module")
def patient(definitions: Definitions) -> dict:
    return ensure_snapshot(definitions.structures[EX + "patient"], definitions)


def test_snapshot_is_generated_once_and_left_alone_when_present(definitions: Definitions, patient: dict) -> None:
    assert "snapshot" not in definitions.structures[EX + "patient"]      # the definition is not modified
    assert ensure_snapshot(patient, definitions) is patient


def test_element_count(definitions: Definitions, patient: dict) -> None:
    base = len(definitions.structures[CORE + "Patient"]["snapshot"]["element"])
    identifier = len(definitions.structures[CORE + "Identifier"]["snapshot"]["element"]) - 1
    human_name = len(definitions.structures[CORE + "HumanName"]["snapshot"]["element"]) - 1
    extension = len(NIVEAU_SNAPSHOT_CHILDREN)
    # + niveau slice and its children, identifier children, two identifier slices with theirs,
    # + HumanName children under contact.name, deceased[x] type slice
    assert len(patient["snapshot"]["element"]) == (base + (1 + extension) + identifier + 2 * (1 + identifier)
                                                   + human_name + 1)


NIVEAU_SNAPSHOT_CHILDREN = ["id", "extension", "url", "value[x]"]


def test_slices_follow_their_sliced_element_and_its_children(patient: dict) -> None:
    order = ids(patient)
    start = order.index("Patient.identifier")
    assert order[start:start + 3] == ["Patient.identifier", "Patient.identifier.id", "Patient.identifier.extension"]
    ins, rpps, active = (order.index(i)
                         for i in ("Patient.identifier:INS", "Patient.identifier:RPPS", "Patient.active"))
    assert order.index("Patient.identifier.assigner") < ins < order.index("Patient.identifier:INS.assigner") < rpps
    assert rpps < order.index("Patient.identifier:RPPS.assigner") < active


def test_slices_inherit_the_constraints_of_the_sliced_element(patient: dict) -> None:
    # Patient.identifier.value min 1 was set before the slices were made: they carry it
    assert element(patient, "Patient.identifier:INS.value")["min"] == 1
    assert element(patient, "Patient.identifier:RPPS.value")["min"] == 1
    assert element(patient, "Patient.identifier:INS.system")["patternUri"] == "urn:oid:1.2.250.1.213.1.4.8"
    assert "patternUri" not in element(patient, "Patient.identifier:RPPS.system")
    # a new slice starts at min 0 unless the differential says otherwise; slicing stays on the base
    assert element(patient, "Patient.identifier:RPPS")["min"] == 0
    assert element(patient, "Patient.identifier:INS")["sliceName"] == "INS"
    assert "slicing" not in element(patient, "Patient.identifier:INS")
    assert element(patient, "Patient.identifier")["slicing"]["discriminator"] == [{"type": "pattern", "path": "system"}]


def test_inherited_and_added_constraints(patient: dict) -> None:
    root_keys = [c["key"] for c in element(patient, "Patient")["constraint"]]
    assert root_keys == ["dom-2", "dom-3", "dom-4", "dom-5", "dom-6", "esp-1"]
    assert [c["key"] for c in element(patient, "Patient.contact")["constraint"]] == ["ele-1", "pat-1"]
    assert [c["key"] for c in element(patient, "Patient.identifier:INS.system")["constraint"]] == ["ele-1"]


def test_complex_datatype_children_are_expanded_on_demand(patient: dict) -> None:
    family = element(patient, "Patient.contact.name.family")
    assert family["min"] == 1 and family["path"] == "Patient.contact.name.family"
    assert family["base"]["path"] == "HumanName.family"
    assert "Patient.name.family" not in ids(patient)          # only where the differential asked


def test_extension_slice_children_come_from_the_extension_profile(patient: dict) -> None:
    assert element(patient, "Patient.extension:niveau")["type"] == [{"code": "Extension", "profile": [EX + "niveau"]}]
    assert element(patient, "Patient.extension:niveau.url")["fixedUri"] == EX + "niveau"
    value = element(patient, "Patient.extension:niveau.value[x]")
    assert (value["type"], value["min"], value["short"]) == ([{"code": "Coding"}], 1, "Niveau")


def test_renamed_choice_becomes_a_type_slice(patient: dict) -> None:
    deceased = element(patient, "Patient.deceased[x]:deceasedBoolean")
    assert deceased["type"] == [{"code": "boolean"}]
    assert deceased["fixedBoolean"] is False
    assert element(patient, "Patient.deceased[x]")["slicing"]["discriminator"] == [{"type": "type", "path": "$this"}]


def test_ids_are_derived_when_the_differential_has_none(definitions: Definitions) -> None:
    without_ids = copy.deepcopy(PATIENT)
    for diff in without_ids["differential"]["element"]:
        del diff["id"]
    assert ids(ensure_snapshot(without_ids, definitions)) == ids(ensure_snapshot(PATIENT, definitions))


def test_content_reference_children_are_expanded() -> None:
    questionnaire = {
        "resourceType": "StructureDefinition", "url": EX + "questionnaire", "name": "Q", "status": "active",
        "kind": "resource", "abstract": False, "type": "Questionnaire", "derivation": "constraint",
        "baseDefinition": CORE + "Questionnaire",
        "differential": {"element": [
            {"id": "Questionnaire.item.item.text", "path": "Questionnaire.item.item.text", "min": 1}]},
    }
    snapshot = ensure_snapshot(questionnaire, load_definitions())
    assert element(snapshot, "Questionnaire.item.item.text")["min"] == 1
    assert "Questionnaire.item.item.item" in ids(snapshot)     # a content reference again, left unexpanded


def profile_with(*elements: dict) -> dict:
    return {
        "resourceType": "StructureDefinition", "url": EX + "broken", "name": "Broken", "status": "active",
        "kind": "resource", "abstract": False, "type": "Patient", "derivation": "constraint",
        "baseDefinition": CORE + "Patient", "differential": {"element": list(elements)},
    }


@pytest.mark.parametrize(("diff", "message"), [
    ({"id": "Patient.gender", "path": "Patient.gender", "max": "2"},
     "Patient.gender: max 2 is more than the base maximum 1"),
    ({"id": "Patient.name", "path": "Patient.name", "min": 2, "max": "1"},
     "Patient.name: min 2 is more than max 1"),
    ({"id": "Patient.identifier:INS", "path": "Patient.identifier", "sliceName": "INS", "max": "*"}, None),
    ({"id": "Patient.active", "path": "Patient.active", "type": [{"code": "string"}]},
     "Patient.active: type string is not allowed by the base (allowed: boolean)"),
    ({"id": "Patient.nickname", "path": "Patient.nickname"},
     "Patient.nickname: no such element in the base definition"),
    ({"id": "Patient.deceasedString", "path": "Patient.deceasedString"},
     "Patient.deceasedString: no such element in the base definition"),
])
def test_inconsistent_differentials_are_rejected(diff: dict, message: str | None) -> None:
    if message is None:          # a slice may repeat as much as its sliced element
        ensure_snapshot(profile_with(diff), load_definitions())
        return
    with pytest.raises(SnapshotError) as raised:
        ensure_snapshot(profile_with(diff), load_definitions())
    assert raised.value.messages == [message]
    assert raised.value.url == EX + "broken"


def test_narrowing_min_below_a_profile_minimum_is_rejected(definitions: Definitions) -> None:
    child = profile_with({"id": "Patient.gender", "path": "Patient.gender", "min": 0})
    child["baseDefinition"] = EX + "patient"
    with pytest.raises(SnapshotError, match="Patient.gender: min 0 is less than the base minimum 1"):
        ensure_snapshot(child, definitions)


def test_unknown_base_is_an_error() -> None:
    orphan = profile_with()
    orphan["baseDefinition"] = EX + "nowhere"
    with pytest.raises(SnapshotError, match="unknown base definition"):
        ensure_snapshot(orphan, load_definitions())


# -- slices that the base already brings through a type profile -------------------------------------
ADRESSE = {
    "resourceType": "StructureDefinition", "url": EX + "adresse", "name": "Adresse", "status": "active",
    "kind": "complex-type", "abstract": False, "type": "Address", "derivation": "constraint",
    "baseDefinition": CORE + "Address",
    "differential": {"element": [
        {"id": "Address.extension:commune", "path": "Address.extension", "sliceName": "commune", "max": "1",
         "type": [{"code": "Extension", "profile": [EX + "niveau"]}]},
    ]},
}
PATIENT_ADRESSE = {
    "resourceType": "StructureDefinition", "url": EX + "patient-adresse", "name": "PatientAdresse",
    "status": "active", "kind": "resource", "abstract": False, "type": "Patient", "derivation": "constraint",
    "baseDefinition": CORE + "Patient",
    "differential": {"element": [
        {"id": "Patient.address", "path": "Patient.address",
         "type": [{"code": "Address", "profile": [EX + "adresse"]}]},
    ]},
}


def with_address_profiles(definitions: Definitions) -> Definitions:
    extended = Definitions(structures=dict(definitions.structures))
    for sd in (ADRESSE, PATIENT_ADRESSE):
        extended.add(copy.deepcopy(sd))
    return extended


def constraining(base: str, *elements: dict) -> dict:
    sd = profile_with(*elements)
    sd["url"], sd["baseDefinition"] = EX + "contrainte", base
    return sd


COMMUNE_REQUIRED = {"id": "Patient.address.extension:commune", "path": "Patient.address.extension",
                    "sliceName": "commune", "min": 1}


@pytest.mark.parametrize(("base", "elements"), [
    # the slice comes from the type profile of Patient.address, named directly (no `extension` element first)
    (CORE + "Patient", [{"id": "Patient.address", "path": "Patient.address",
                         "type": [{"code": "Address", "profile": [EX + "adresse"]}]}, COMMUNE_REQUIRED]),
    # the same, with Patient.address typed by the inherited profile
    (EX + "patient-adresse", [COMMUNE_REQUIRED]),
    # a child of the slice only: the slice itself is not repeated in the differential
    (EX + "patient-adresse", [{"id": "Patient.address.extension:commune.value[x]",
                               "path": "Patient.address.extension.value[x]", "short": "Commune"}]),
], ids=["type-profile", "inherited-type-profile", "child-of-inherited-slice"])
def test_a_slice_brought_by_a_type_profile_is_merged_not_added_again(
        definitions: Definitions, base: str, elements: list[dict]) -> None:
    snapshot = ensure_snapshot(constraining(base, *elements), with_address_profiles(definitions))
    order = ids(snapshot)
    assert order.count("Patient.address.extension:commune") == 1
    assert len(order) == len(set(order))
    commune = element(snapshot, "Patient.address.extension:commune")
    assert commune["type"] == [{"code": "Extension", "profile": [EX + "niveau"]}]   # from the type profile
    assert commune["max"] == "1"


def test_a_constrained_slice_from_a_type_profile_keeps_the_differential(definitions: Definitions) -> None:
    snapshot = ensure_snapshot(constraining(EX + "patient-adresse", COMMUNE_REQUIRED),
                               with_address_profiles(definitions))
    assert element(snapshot, "Patient.address.extension:commune")["min"] == 1

    child = {"id": "Patient.address.extension:commune.value[x]", "path": "Patient.address.extension.value[x]",
             "short": "Commune"}
    snapshot = ensure_snapshot(constraining(EX + "patient-adresse", child), with_address_profiles(definitions))
    assert [e["short"] for e in snapshot["snapshot"]["element"]
            if e["id"] == "Patient.address.extension:commune.value[x]"] == ["Commune"]
