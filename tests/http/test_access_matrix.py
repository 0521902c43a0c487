"""The access matrix is data (`fhir_server/access/access_matrix.json`, loaded at start): these tests
read the file itself and check, for every profession it lists and for an unlisted one, that a
professional reads exactly the classes of documents the file grants (and not the others), that
emergency access reads them all, and that the author privilege holds."""

from __future__ import annotations

import json

import pytest

from fhir_server.access.devissuer import practitioner_claims
from fhir_server.access.matrix import MATRIX_FILE, AccessMatrix
from tests.http.conftest import bearer
from tests.http.test_notify_support import minimal_documents

MATRIX = json.loads(MATRIX_FILE.read_text(encoding="utf-8"))
CLASSES = sorted(MATRIX["classes"])
PROFESSIONS = sorted(MATRIX["professions"])
UNLISTED = "99"                                  # a profession the file does not list: the default row
READER, AUTHOR = "10000000201", "10000000202"


@pytest.fixture(scope="module", autouse=True)
def _minimal_documents():
    with minimal_documents():
        yield


def test_the_file_is_consistent():
    for row in [*MATRIX["professions"].values(), MATRIX["default"]]:
        assert set(row["deny"]) <= set(CLASSES), row
    for name, group in MATRIX["classes"].items():
        assert group["codes"] and group["description"], name
    assert AccessMatrix.load().denied_classes(UNLISTED) == sorted(MATRIX["default"]["deny"])


def classified(class_name: str) -> dict:
    """A document of `class_name` (its first code) for Patient/m, written by AUTHOR."""
    system, _, value = MATRIX["classes"][class_name]["codes"][0].partition("|")
    return {"resourceType": "DocumentReference", "id": f"m-{class_name}", "status": "current",
            "subject": {"reference": "Patient/m"}, "category": [{"coding": [{"system": system, "code": value}]}],
            "author": [{"reference": f"Practitioner/ps-{AUTHOR}"}],
            "content": [{"attachment": {"contentType": "text/plain", "title": class_name}}]}


MEDICATION = {"resourceType": "MedicationRequest", "id": "m-medication", "status": "active", "intent": "order",
              "medicationCodeableConcept": {"text": "paracétamol"}, "subject": {"reference": "Patient/m"}}


@pytest.fixture(scope="module")
def world(client):
    assert "type:MedicationRequest" in MATRIX["classes"]["prescriptions"]["codes"]
    resources = [{"resourceType": "Patient", "id": "m"},
                 *[{"resourceType": "Practitioner", "id": f"ps-{r}",
                    "identifier": [{"system": "https://rpps.esante.gouv.fr", "value": r}]} for r in (READER, AUTHOR)],
                 *[classified(name) for name in CLASSES], MEDICATION]
    for resource in resources:
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text


def readable_classes(client, headers: dict) -> set[str]:
    return {name for name in CLASSES if client.get(f"/fhir/DocumentReference/m-{name}", headers=headers).status_code
            == 200}


@pytest.mark.parametrize("profession", [*PROFESSIONS, UNLISTED])
def test_each_profession_reads_exactly_what_the_matrix_grants(client, world, issuer_dir, profession):
    row = MATRIX["professions"].get(profession, MATRIX["default"])
    headers = bearer(issuer_dir, practitioner_claims(READER, profession))
    assert readable_classes(client, headers) == set(CLASSES) - set(row["deny"])
    medication = client.get("/fhir/MedicationRequest/m-medication", headers=headers).status_code
    assert medication == (404 if "prescriptions" in row["deny"] else 200)


@pytest.mark.parametrize("profession", [*PROFESSIONS, UNLISTED])
def test_emergency_access_reads_despite_the_matrix(client, world, issuer_dir, profession):
    headers = bearer(issuer_dir, practitioner_claims(READER, profession, purpose_of_use="ETREAT"))
    assert readable_classes(client, headers) == set(CLASSES)


def test_the_author_reads_what_the_matrix_would_deny(client, world, issuer_dir):
    author = bearer(issuer_dir, practitioner_claims(AUTHOR, UNLISTED))
    assert readable_classes(client, author) == set(CLASSES)
