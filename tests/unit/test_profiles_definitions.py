"""Our conformance resources as the server loads them: snapshots generated from the differentials,
every canonical they point at resolvable, terminology subsets that confirm without refusing, the
loader's IG packages and precedence rules, and the events of the audit trail valid against our
AuditEvent profiles."""

from __future__ import annotations

import copy
import io
import json
import re
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

import fhir_server.definitions as definitions_module
from fhir_server.access.actor import Actor
from fhir_server.access.scopes import Scopes
from fhir_server.audit import AuditRecord, build_event
from fhir_server.definitions import (
    IG_PACKAGES_ENV,
    PROJECT_ROOT,
    Definitions,
    fill_snapshots,
    ig_package_paths,
    load_definitions,
    package_resources,
)
from fhir_server.ig.publish import published_resources
from fhir_server.loader import read_resource
from fhir_server.terminology import Terminology
from fhir_server.validation import ProfileValidator, StructureValidator
from fhir_server.validation.operation import DEFAULT_REQUIREMENTS, ProfileRequirement, parse_requirements

OURS = [r for folder in ("profiles/fr-core", "profiles/espace", "profiles/tde", "terminology")
        for r in (orjson.loads(p.read_bytes()) for p in sorted((PROJECT_ROOT / folder).rglob("*.json")))
        if "resourceType" in r]
OUR_SDS = [r for r in OURS if r.get("resourceType") == "StructureDefinition"]
ESP = "https://espace.example.org/fhir/StructureDefinition/"
NOS = "https://mos.esante.gouv.fr/NOS/"
# Value sets our profiles bind that Espace does not carry (their codes are reported as not checked).
NOT_CARRIED = {
    "https://smt.esante.gouv.fr/fhir/ValueSet/jdv-immunization-approach-site-code-cisis",
    "https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-practitioner-role-exercice",
    "https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-patient-contact-role",
    "https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-relation-type",
}


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return load_definitions()


def _elements(sd: dict) -> list[dict]:
    return sd["differential"]["element"]


def test_every_profile_of_ours_gets_a_snapshot(definitions: Definitions) -> None:
    for sd in OUR_SDS:
        loaded = definitions.structures[sd["url"]]
        assert loaded.get("snapshot", {}).get("element"), sd["url"]
        assert loaded in definitions.local


def test_ids_and_urls_are_consistent_and_unique() -> None:
    seen = set()
    for resource in OURS:
        kind, rid, url = resource["resourceType"], resource["id"], resource["url"]
        assert (kind, rid) not in seen
        seen.add((kind, rid))
        if url.startswith("https://espace.example.org/fhir/") or url.startswith("https://hl7.fr/ig/fhir/core/"):
            assert url.endswith(f"/{kind}/{rid}"), url
        assert resource.get("description"), url


def test_urn_uuids_of_our_resources_are_uuids() -> None:
    text = json.dumps(OURS)
    found = re.findall(r"urn:uuid:([^\"]+)", text)
    assert found
    for value in found:
        uuid.UUID(value)            # raises on `urn:uuid:some-name`


def test_every_canonical_our_profiles_use_is_known(definitions: Definitions) -> None:
    unknown = set()
    for sd in OUR_SDS:
        assert sd["baseDefinition"] in definitions.structures
        for element in _elements(sd):
            for type_ in element.get("type", []):
                for url in type_.get("profile", []) + type_.get("targetProfile", []):
                    if url not in definitions.structures:
                        unknown.add(url)
            binding = element.get("binding", {}).get("valueSet")
            if binding and binding not in definitions.value_sets and binding not in NOT_CARRIED:
                unknown.add(binding)
    assert unknown == set()


def test_fr_core_renditions_pin_version_2_1_0() -> None:
    fr_core = [sd for sd in OUR_SDS if sd["url"].startswith("https://hl7.fr/ig/fhir/core/")]
    assert len(fr_core) >= 15 and {sd["version"] for sd in fr_core} == {"2.1.0"}


def test_published_invariants_of_fr_core_patient_ins(definitions: Definitions) -> None:
    root = definitions.structures["https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"]["snapshot"]
    keys = {c["key"] for c in root["element"][0]["constraint"]}
    assert {"fr-core-1", "fr-core-2", "fr-core-3"} <= keys


# -- terminology --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def terminology(definitions: Definitions) -> Terminology:
    return Terminology(definitions)


@pytest.mark.parametrize(("value_set", "system", "code", "answer"), [
    # complete lists: members and non-members are known
    ("https://espace.example.org/fhir/ValueSet/document-class", None, "psychiatrie", True),
    ("https://espace.example.org/fhir/ValueSet/document-class", None, "cardiologie", False),
    ("https://hl7.fr/ig/fhir/core/ValueSet/fr-core-vs-patient-gender-INS", None, "other", False),
    (NOS + "JDV_J110-StatutVisibiliteDocument-CISIS/FHIR/JDV-J110-StatutVisibiliteDocument-CISIS",
     NOS + "TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument", "MASQUE_PS", True),
    # documented subsets: listed codes confirmed, others unknown (never refused)
    (NOS + "JDV_J07-XdsTypeCode-CISIS/FHIR/JDV-J07-XdsTypeCode-CISIS", "http://loinc.org", "60591-5", True),
    (NOS + "JDV_J07-XdsTypeCode-CISIS/FHIR/JDV-J07-XdsTypeCode-CISIS", "http://loinc.org", "11490-0", None),
    ("https://espace.example.org/fhir/ValueSet/espace-vaccine-atc", "http://www.whocc.no/atc", "J07CA09", True),
])
def test_complete_lists_decide_and_subsets_never_refuse(terminology: Terminology, value_set: str, system: str | None,
                                                       code: str, answer: bool | None) -> None:
    assert terminology.validate_code(value_set, system, code) is answer


def test_the_access_matrix_codes_are_in_our_terminology(terminology: Terminology) -> None:
    matrix = json.loads((PROJECT_ROOT / "fhir_server/access/access_matrix.json").read_text(encoding="utf-8"))
    for group in matrix["classes"].values():
        for code in group["codes"]:
            system, _, value = code.partition("|")
            if system.startswith("https://espace.example.org/") or system.startswith(NOS):
                assert terminology.lookup(system, value), code
    for profession in matrix["professions"]:
        assert terminology.lookup(NOS + "TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante", profession)


# -- loader: IG packages, precedence, schema erratum ----------------------------------------------------
def _package(path: Path, resources: list[dict]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        files = {"package/package.json": {"name": "example.pkg", "version": "1.0.0"},
                 "package/example/Patient-x.json": {"resourceType": "Patient", "id": "x"},
                 **{f"package/{r['resourceType']}-{r['id']}.json": r for r in resources}}
        for name, content in files.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_ig_packages_are_read_and_our_definitions_win(tmp_path: Path, definitions: Definitions) -> None:
    ours = definitions.structures[ESP + "espace-consent"]
    package_profile = {"resourceType": "StructureDefinition", "id": "pkg-patient", "url": "http://pkg.example/SD/p",
                       "name": "P", "status": "active", "kind": "resource", "abstract": False, "type": "Patient",
                       "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient", "derivation": "constraint",
                       "differential": {"element": [{"id": "Patient.birthDate", "path": "Patient.birthDate",
                                                     "min": 1}]}}
    clash = {**package_profile, "id": "clash", "url": ours["url"]}
    path = _package(tmp_path / "package.tgz", [package_profile, clash])
    assert ig_package_paths(f"{path}{':'}{tmp_path / 'other.tgz'}") == [path, tmp_path / "other.tgz"]
    loaded = list(package_resources(path))
    assert {r["id"] for r in loaded} == {"pkg-patient", "clash"}            # examples and manifests skipped

    defs = Definitions(structures=dict(definitions.structures), value_sets=dict(definitions.value_sets),
                       code_systems=dict(definitions.code_systems))
    for resource in [*loaded, ours]:                     # ours after the package's, as load_definitions does
        defs.add(resource)
    packaged = fill_snapshots(defs, loaded)
    assert defs.structures["http://pkg.example/SD/p"]["snapshot"]["element"]
    assert defs.structures[ours["url"]] is ours                                   # ours won
    assert packaged[1] is loaded[1] and "snapshot" not in packaged[1]             # the clash was left alone


FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
PACKAGED = (FR_CORE + "fr-core-patient", FR_CORE + "fr-core-patient-ins")


def _fr_core_package(path: Path, definitions: Definitions) -> Path:
    """A tiny FR Core package in FHIR npm format, made of our two patient profiles as the ANS
    publishes them: the patient profile with its snapshot, Patient-INS as authored (differential)."""
    authored = {r["url"]: r for r in OUR_SDS}
    patient = copy.deepcopy(definitions.structures[PACKAGED[0]])
    assert patient.get("snapshot")
    manifest = {"name": "hl7.fhir.fr.core", "version": "2.1.0", "fhirVersions": ["4.0.1"],
                "dependencies": {"hl7.fhir.r4.core": "4.0.1"}}
    files = {"package/package.json": manifest,
             "package/StructureDefinition-fr-core-patient.json": patient,
             "package/StructureDefinition-fr-core-patient-ins.json": copy.deepcopy(authored[PACKAGED[1]]),
             "package/example/Patient-example.json": {"resourceType": "Patient", "id": "example"}}
    with tarfile.open(path, "w:gz") as archive:
        for name, content in files.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _issues(definitions: Definitions, resource: dict) -> list[tuple]:
    validator = ProfileValidator(definitions, Terminology(definitions))
    return [(i.severity, i.code, i.expression, i.diagnostics) for i in validator.validate(copy.deepcopy(resource))]


def _patient_variants() -> list[dict]:
    """Our patient examples and their broken variants of the test table."""
    from tests.unit.test_profiles_broken import CASES, EXAMPLES

    variants = [read_resource(EXAMPLES / "patient-ins.json"), read_resource(EXAMPLES / "patient-fr-core-ipp.json")]
    for case in CASES:
        if case.example in ("patient-ins.json", "patient-fr-core-ipp.json"):
            resource = read_resource(EXAMPLES / case.example)
            case.mutation(resource)
            variants.append(resource)
    return variants


def test_a_published_package_loaded_at_start_validates_the_same_as_our_copy(
        tmp_path: Path, definitions: Definitions, monkeypatch: pytest.MonkeyPatch) -> None:
    package = _fr_core_package(tmp_path / "package.tgz", definitions)
    monkeypatch.setenv(IG_PACKAGES_ENV, str(package))
    ours_withheld = definitions_module.local_resources
    monkeypatch.setattr(definitions_module, "local_resources", lambda: (
        r for r in ours_withheld() if r.get("url") not in PACKAGED))
    from_package = load_definitions.__wrapped__()           # what the server runs at start, uncached
    assert [r["url"] for r in from_package.packaged] == list(PACKAGED)
    for url in PACKAGED:
        assert from_package.structures[url] in from_package.packaged                 # the package's copy is used
        assert from_package.structures[url]["snapshot"]["element"]
    variants = _patient_variants()
    assert len(variants) > 10
    for resource in variants:
        assert _issues(from_package, resource) == _issues(definitions, resource)
    served = {(r["resourceType"], r["id"]) for r in published_resources(from_package)}
    assert ("StructureDefinition", "fr-core-patient-ins") in served


def test_our_copy_wins_over_a_package_and_is_published_once(
        tmp_path: Path, definitions: Definitions, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IG_PACKAGES_ENV, str(_fr_core_package(tmp_path / "package.tgz", definitions)))
    loaded = load_definitions.__wrapped__()
    assert loaded.packaged == []                            # both replaced by ours: not loaded, not served twice
    assert all(loaded.structures[url] in loaded.local for url in PACKAGED)
    published = [(r["resourceType"], r["id"]) for r in published_resources(loaded)]
    assert len(published) == len(set(published))


def test_the_schema_accepts_fhir_version_4_0_1(definitions: Definitions) -> None:
    sd = {k: v for k, v in definitions.structures[ESP + "espace-consent"].items() if k != "snapshot"}
    assert StructureValidator(definitions).validate({**sd, "fhirVersion": "4.0.1"}) == []


# -- profile requirements ------------------------------------------------------------------------------
def test_requirements_configuration() -> None:
    assert parse_requirements("none") == () and parse_requirements("") == ()
    assert parse_requirements("Patient=http://a/p, Observation=http://a/o") == (
        ProfileRequirement("Patient", "http://a/p"), ProfileRequirement("Observation", "http://a/o"))
    with pytest.raises(ValueError, match="Type=profile-url"):
        parse_requirements("Patient")
    assert {r.resource_type for r in DEFAULT_REQUIREMENTS} == {"DocumentReference", "Composition", "AuditEvent"}


# -- the audit trail's events ------------------------------------------------------------------------------
DOCTOR = Actor("practitioner", "rpps-10003456786", Scopes.parse("user/*.cruds"), rpps="10003456786",
               profession="10", organization="350000139", purpose_of_use="TREAT", client_id="logiciel")
PATIENT_ACTOR = Actor("patient", "patient-284037512345640", Scopes.parse("patient/*.cruds"),
                      ins="284037512345640", client_id="appli-patient")
SYSTEM = Actor("system", "batch", Scopes.parse("system/*.cruds"), client_id="batch")
WHEN = datetime(2026, 11, 21, 9, 15, tzinfo=UTC)
ME = "Patient/exemple-patient-ins"
AUDIT_CASES = [
    ("read", AuditRecord("read", 200, actor=DOCTOR, resource_type="DocumentReference", resource_id="d", version=2,
                         patients=[ME], request_id="r-1", recorded=WHEN), "espace-auditevent-patient-read"),
    ("vread by the patient", AuditRecord("vread", 200, actor=PATIENT_ACTOR, resource_type="Observation",
                                         resource_id="o", version=1, patients=[ME], actor_patients=[ME],
                                         recorded=WHEN), "espace-auditevent-patient-read"),
    ("emergency read", AuditRecord("read", 200, actor=DOCTOR, resource_type="Composition", resource_id="c",
                                   patients=[ME], emergency=True, recorded=WHEN), "espace-auditevent-patient-read"),
    ("search", AuditRecord("search-type", 200, actor=DOCTOR, resource_type="DocumentReference",
                           query="DocumentReference?patient=Patient/exemple-patient-ins", patients=[ME],
                           data_references=["DocumentReference/d"], recorded=WHEN), "espace-auditevent-patient-query"),
    ("history of a type", AuditRecord("history-type", 200, actor=DOCTOR, resource_type="Observation",
                                      query="Observation/_history", patients=[ME], recorded=WHEN),
     "espace-auditevent-patient-query"),
    ("create by a system", AuditRecord("create", 201, actor=SYSTEM, resource_type="Immunization", resource_id="i",
                                       version=1, patients=[ME], recorded=WHEN), "espace-auditevent-patient-create"),
    ("patch", AuditRecord("patch", 200, actor=DOCTOR, resource_type="DocumentReference", resource_id="d", version=3,
                          patients=[ME], recorded=WHEN), "espace-auditevent-patient-update"),
    ("delete", AuditRecord("delete", 200, actor=DOCTOR, resource_type="Communication", resource_id="m", version=2,
                           patients=[ME], recorded=WHEN), "espace-auditevent-patient-delete"),
    ("consent refusal", AuditRecord("read", 403, actor=DOCTOR, resource_type="DocumentReference", resource_id="d",
                                    patients=[ME], consent_denied=True, consent_references=["Consent/c"],
                                    recorded=WHEN), "espace-auditevent-consent-refusal"),
    ("failed request without patient", AuditRecord("search-system", 500, actor=SYSTEM, query="?_type=Patient",
                                                    diagnostics="boom", recorded=WHEN), None),
]


@pytest.mark.parametrize(("record", "variant"), [c[1:] for c in AUDIT_CASES], ids=[c[0] for c in AUDIT_CASES])
def test_the_audit_trail_events_meet_our_audit_profiles(definitions: Definitions, record: AuditRecord,
                                                        variant: str | None) -> None:
    validator = ProfileValidator(definitions, Terminology(definitions))
    patient = record.patients[0] if record.patients else None
    event = build_event(record, patient, "espace")
    profiles = [ESP + "espace-auditevent"] + ([ESP + variant] if variant else [])
    issues = validator.validate(event, profiles) + validator.validate(event)      # ours, and the TDE it claims
    assert [i for i in issues if i.severity == "error"] == []
