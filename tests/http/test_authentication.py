"""Bearer JWT authentication, SMART scopes, public endpoints."""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from fhir_server.access.devissuer import DEV_AUDIENCE, DEV_ISSUER, mint, system_claims
from tests.http.conftest import bearer, patient


def no_auth(client) -> dict[str, str]:
    return {"Authorization": ""}


def test_metadata_and_conformance_are_public(client):
    assert client.get("/fhir/metadata", headers=no_auth(client)).status_code == 200
    assert client.get("/fhir/StructureDefinition", headers=no_auth(client)).status_code != 401


def test_patient_data_needs_a_token(client):
    response = client.get("/fhir/Patient", headers=no_auth(client))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["issue"][0]["code"] == "login"
    assert client.post("/fhir/Patient", json=patient(), headers=no_auth(client)).status_code == 401
    assert client.post("/fhir", json={"resourceType": "Bundle", "type": "batch"},
                       headers=no_auth(client)).status_code == 401


def test_malformed_and_foreign_tokens(client, issuer_dir):
    assert client.get("/fhir/Patient", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    assert client.get("/fhir/Patient", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    forged = jwt.encode({"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "x", "exp": now + 60, "actor": "system",
                         "scope": "system/*.cruds"}, foreign_key, algorithm="ES256", headers={"kid": "espace-dev-1"})
    response = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    untrusted = jwt.encode({"iss": "https://elsewhere.example", "aud": DEV_AUDIENCE, "sub": "x", "exp": now + 60},
                           foreign_key, algorithm="ES256")
    response = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {untrusted}"})
    assert response.status_code == 401
    assert "not trusted" in response.json()["issue"][0]["diagnostics"]


def test_expired_not_yet_valid_and_wrong_audience(client, issuer_dir):
    claims = system_claims("system/*.cruds")
    expired = mint(issuer_dir, {**claims, "exp": int(time.time()) - 3600})
    response = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401 and "expired" in response.json()["issue"][0]["diagnostics"]
    future = mint(issuer_dir, {**claims, "nbf": int(time.time()) + 3600})
    assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {future}"}).status_code == 401
    wrong_audience = mint(issuer_dir, {**claims, "aud": "another-api"})
    assert client.get("/fhir/Patient", headers={"Authorization": f"Bearer {wrong_audience}"}).status_code == 401


def test_token_without_actor_is_refused(client, issuer_dir):
    headers = bearer(issuer_dir, {"sub": "someone", "scope": "system/*.cruds"})
    assert client.get("/fhir/Patient", headers=headers).status_code == 401


def test_scopes_are_enforced(client, issuer_dir):
    documents_only = bearer(issuer_dir, system_claims("system/DocumentReference.cr"))
    assert client.post("/fhir/Patient", json=patient(), headers=documents_only).status_code == 403
    created = client.post("/fhir/Patient", json=patient()).json()
    assert client.get(f"/fhir/Patient/{created['id']}", headers=documents_only).status_code == 403
    read_only = bearer(issuer_dir, system_claims("system/Patient.rs"))
    assert client.get(f"/fhir/Patient/{created['id']}", headers=read_only).status_code == 200
    assert client.put(f"/fhir/Patient/{created['id']}", json=created, headers=read_only).status_code == 403
    assert client.delete(f"/fhir/Patient/{created['id']}", headers=read_only).status_code == 403
    v1_scope = bearer(issuer_dir, system_claims("system/Patient.read"))
    assert client.get(f"/fhir/Patient/{created['id']}", headers=v1_scope).status_code == 200


def test_non_clinical_actor_sees_no_clinical_data(client, issuer_dir):
    created = client.post("/fhir/Patient", json=patient()).json()
    insurer = bearer(issuer_dir, {"sub": "cpam", "actor": "insurer", "scope": "user/*.cruds"})
    assert client.get(f"/fhir/Patient/{created['id']}", headers=insurer).status_code == 404
    assert client.post("/fhir/Patient", json=patient(), headers=insurer).status_code == 403
