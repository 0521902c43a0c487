"""What a Consent actor stands for: a PractitionerRole is the professional in that role, not the
whole organisation; a CareTeam or a Group stands for its members."""

from __future__ import annotations

import pytest

from fhir_server.access.devissuer import practitioner_claims
from tests.documents import pdsm_document
from tests.http.conftest import bearer
from tests.http.test_access_scenarios import INS, RPPS, consent

FINESS = "https://finess.esante.gouv.fr"
HOSPITAL = "350000139"
IN_ROLE, COLLEAGUE, TEAM_MEMBER, GROUP_MEMBER = "10000000011", "10000000012", "10000000013", "10000000014"


def practitioner(rpps: str) -> dict:
    return {"resourceType": "Practitioner", "id": f"ps-{rpps}", "identifier": [{"system": RPPS, "value": rpps}]}


def deny(reference: str) -> dict:
    return {"type": "permit", "provision": [{"type": "deny", "actor": [{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "reference": {"reference": reference}}]}]}


@pytest.fixture(scope="module")
def world(client):
    resources = [
        {"resourceType": "Patient", "id": "pat-roles", "identifier": [{"system": INS, "value": "273063523804229"}]},
        {"resourceType": "Organization", "id": "chu", "identifier": [{"system": FINESS, "value": HOSPITAL}],
         "name": "CHU de Rennes"},
        *(practitioner(rpps) for rpps in (IN_ROLE, COLLEAGUE, TEAM_MEMBER, GROUP_MEMBER)),
        {"resourceType": "PractitionerRole", "id": "role-cardio",
         "practitioner": {"reference": f"Practitioner/ps-{IN_ROLE}"},
         "organization": {"reference": "Organization/chu"}},
        {"resourceType": "CareTeam", "id": "equipe", "subject": {"reference": "Patient/pat-roles"},
         "participant": [{"member": {"reference": f"Practitioner/ps-{TEAM_MEMBER}"}}]},
        {"resourceType": "Group", "id": "remplacants", "type": "practitioner", "actual": True,
         "member": [{"entity": {"reference": f"Practitioner/ps-{GROUP_MEMBER}"}}]},
        pdsm_document("doc-roles", "pat-roles", "Practitioner/ps-author"),
        consent("deny-role", "pat-roles", deny("PractitionerRole/role-cardio")),
        consent("deny-team", "pat-roles", deny("CareTeam/equipe")),
        consent("deny-group", "pat-roles", deny("Group/remplacants")),
    ]
    for resource in resources:
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text
    return client


@pytest.mark.parametrize(("rpps", "sees"), [
    (IN_ROLE, False),          # blocked in the role the patient named
    (COLLEAGUE, True),         # same hospital, not blocked: the role is not the organisation
    (TEAM_MEMBER, False),      # member of the blocked care team
    (GROUP_MEMBER, False),     # member of the blocked group
])
def test_consent_actor_stands_for_the_right_professionals(world, issuer_dir, rpps: str, sees: bool) -> None:
    headers = bearer(issuer_dir, practitioner_claims(rpps, "10", organization=HOSPITAL))
    read = world.get("/fhir/DocumentReference/doc-roles", headers=headers)
    assert read.status_code == (200 if sees else 404), read.text
    found = world.get("/fhir/DocumentReference", params={"patient": "Patient/pat-roles", "status": "current",
                                                          "_total": "accurate"}, headers=headers)
    assert found.json()["total"] == (1 if sees else 0)
