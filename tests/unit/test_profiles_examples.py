"""Every example of ours (and every example anywhere that claims one of our profiles) validates
without error against the profiles it claims and those a write would require; every profile of
profiles/ is illustrated by at least one example (the PDSm extensions and payloads no file of
examples/mhd/ shows alone, by the valid variants derived from them in test_profiles_broken)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fhir_server.definitions import PROJECT_ROOT, load_definitions
from fhir_server.loader import example_files, read_resource
from fhir_server.validation.cli import build_validation
from fhir_server.validation.operation import ResourceValidation, errors_in
from tests.unit.test_profiles_broken import VALID_VARIANTS, used_canonicals, validate, variant

EXAMPLES = PROJECT_ROOT / "examples"
OUR_PROFILE_FOLDERS = ("profiles/fr-core", "profiles/espace", "profiles/tde", "profiles/pdsm")


def _ours() -> list[dict]:
    """Our StructureDefinitions, as loaded (snapshots filled)."""
    structures = load_definitions().structures
    authored = [orjson.loads(p.read_bytes()) for f in OUR_PROFILE_FOLDERS for p in (PROJECT_ROOT / f).glob("*.json")]
    return [structures[r["url"]] for r in authored if r.get("resourceType") == "StructureDefinition"]


OUR_PROFILES = {sd["url"] for sd in _ours()}


def claimed_profiles(resource: dict) -> set[str]:
    """Profiles claimed by a resource and by the resources it holds (bundle entries, contained)."""
    found = {p.split("|", 1)[0] for p in (resource.get("meta") or {}).get("profile") or []}
    for entry in resource.get("entry") or []:
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            found |= claimed_profiles(entry["resource"])
    for contained in resource.get("contained") or []:
        if isinstance(contained, dict):
            found |= claimed_profiles(contained)
    return found


def _our_examples() -> list[Path]:
    """Top-level examples, and any example claiming one of our profiles."""
    return [p for p in example_files([EXAMPLES])
            if p.parent == EXAMPLES or claimed_profiles(read_resource(p)) & OUR_PROFILES]


@pytest.fixture(scope="module")
def validation() -> ResourceValidation:
    return build_validation()


@pytest.mark.parametrize("path", _our_examples(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_is_valid_against_its_profiles(validation: ResourceValidation, path: Path) -> None:
    resource = read_resource(path)
    issues = validate(validation, str(path.relative_to(EXAMPLES)), resource)
    assert errors_in(issues) == []


def test_every_profile_and_extension_we_publish_has_an_example() -> None:
    used = set().union(*(used_canonicals(read_resource(p)) for p in example_files([EXAMPLES])))
    used |= {profile for example, mutation, profile in VALID_VARIANTS if profile in used_canonicals(
        variant(example, mutation))}
    structures = load_definitions().structures
    # a datatype profile is shown by the examples of the profiles typing their elements with it
    used |= {p for url in used if url in structures for e in structures[url].get("snapshot", {}).get("element", [])
             for t in e.get("type", []) for p in t.get("profile", [])}
    missing = [sd["url"] for sd in _ours() if sd["url"] not in used]
    assert missing == []


def test_every_invariant_of_our_profiles_is_evaluated(validation: ResourceValidation) -> None:
    for path in _our_examples():
        validate(validation, str(path.relative_to(EXAMPLES)), read_resource(path))
    ours = {c["expression"] for sd in _ours() for e in sd["differential"]["element"] for c in e.get("constraint", [])}
    assert ours
    assert {expression for expression in validation.profiles.invariants.notes if expression in ours} == set()


def test_examples_are_french_and_realistic() -> None:
    patient = read_resource(EXAMPLES / "patient-ins.json")
    nir = next(i["value"] for i in patient["identifier"] if i["system"] == "urn:oid:1.2.250.1.213.1.4.8")
    assert len(nir) == 15 and nir[0] in "12" and nir[1:3] == patient["birthDate"][2:4]   # sex, year of birth
    assert patient["name"][0]["use"] == "official" and patient["gender"] == "female"
