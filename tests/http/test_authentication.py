"""Bearer JWT authentication, SMART scopes, public endpoints."""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_server.access.devissuer import DEV_AUDIENCE, DEV_ISSUER, dev_issuer, mint, patient_claims, system_claims
from fhir_server.access.tokens import Authenticator
from fhir_server.cli import main as cli_main
from fhir_server.config import Settings
from fhir_server.rest.app import IG_SITE
from tests.http.conftest import bearer, patient, running_app

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"


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


def test_invalid_token_challenge_names_the_error(client):
    response = client.get("/fhir/Patient", headers={"Authorization": "Bearer not-a-jwt"})
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="espace"') and 'error="invalid_token"' in challenge


def test_unaccepted_algorithms_are_refused(client, issuer_dir):
    now = int(time.time())
    claims = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "x", "exp": now + 60, **system_claims("system/*.cruds")}
    for token in (jwt.encode(claims, "a-shared-secret-of-at-least-32-bytes!", algorithm="HS256",
                             headers={"kid": "espace-dev-1"}),
                  jwt.encode(claims, None, algorithm="none")):
        response = client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token


def test_ig_and_conformance_are_public_but_reach_no_patient_data(client):
    if IG_SITE.is_dir():
        assert client.get("/ig/", headers=no_auth(client)).status_code == 200
    assert client.put("/fhir/ValueSet/vs-public", json={"resourceType": "ValueSet", "id": "vs-public",
                                                         "status": "active", "url": "http://x/vs"}).status_code == 201
    created = client.post("/fhir/Patient", json=patient()).json()
    listed = {"resourceType": "List", "status": "current", "mode": "working", "title": "private",
              "subject": {"reference": f"Patient/{created['id']}"},
              "entry": [{"item": {"reference": "ValueSet/vs-public"}}]}
    stored = client.post("/fhir/List", json=listed)
    assert stored.status_code == 201, stored.text
    list_id = stored.json()["id"]
    # the link exists (the trusted back-end finds the List through it)...
    assert _ids(client.get("/fhir/List", params={"item": "ValueSet/vs-public"}).json()) == {list_id}
    # ...but a public search (token or not: public paths are answered anonymously) does not follow it
    for params in ({"_id": "vs-public", "_revinclude": "List:item"}, {"_has:List:item:_id": list_id}):
        for headers in (no_auth(client), {}):
            anonymous = client.get("/fhir/ValueSet", params=params, headers=headers)
            assert anonymous.status_code == 200
            assert _ids(anonymous.json()) == ({"vs-public"} if "_revinclude" in params else set())


def _ids(bundle: dict) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] != "OperationOutcome"}


def test_patient_token_maps_to_the_patient_by_ins(client, issuer_dir):
    ins = "299017512345678"
    mine = client.post("/fhir/Patient", json=patient(identifier=[{"system": INS_NIR, "value": ins}])).json()
    other = client.post("/fhir/Patient", json=patient()).json()
    headers = bearer(issuer_dir, patient_claims(ins))
    assert client.get(f"/fhir/Patient/{mine['id']}", headers=headers).status_code == 200
    assert client.get(f"/fhir/Patient/{other['id']}", headers=headers).status_code == 404
    unknown = bearer(issuer_dir, patient_claims("199017512345699"))                 # an INS no Patient carries
    assert client.get(f"/fhir/Patient/{mine['id']}", headers=unknown).status_code == 404


# -- the development issuer's command line -----------------------------------------------------------
def cli_token(monkeypatch, capsys, issuer_dir, *args: str) -> str:
    monkeypatch.setenv("FHIR_DEV_ISSUER_DIR", str(issuer_dir))
    assert cli_main(["token", *args]) == 0
    return capsys.readouterr().out.strip()


def test_cli_tokens_are_trusted_by_a_server_configured_for_the_dev_issuer(client, issuer_dir, monkeypatch, capsys):
    authenticator = Authenticator([dev_issuer(issuer_dir)])
    patient_actor = authenticator.authenticate("Bearer " + cli_token(monkeypatch, capsys, issuer_dir, "patient",
                                                                     "--ins", "284037512345640"))
    assert (patient_actor.kind, patient_actor.ins) == ("patient", "284037512345640")
    professional = authenticator.authenticate("Bearer " + cli_token(
        monkeypatch, capsys, issuer_dir, "practitioner", "--rpps", "10000000001", "--profession", "70",
        "--organization", "130000001", "--purpose-of-use", "ETREAT"))
    assert (professional.kind, professional.rpps, professional.profession, professional.organization,
            professional.purpose_of_use) == ("practitioner", "10000000001", "70", "130000001", "ETREAT")
    software = cli_token(monkeypatch, capsys, issuer_dir, "system", "--scope", "system/DocumentReference.cr user/*.rs")
    actor = authenticator.authenticate(f"Bearer {software}")
    assert actor.kind == "system" and str(actor.scopes) == "system/DocumentReference.cr user/*.rs"
    documents = {"Authorization": "Bearer " + cli_token(monkeypatch, capsys, issuer_dir, "system", "--scope",
                                                        "system/DocumentReference.rs")}
    assert client.get("/fhir/Patient", headers=documents).status_code == 403
    assert client.get("/fhir/DocumentReference", params={"_id": "x"}, headers=documents).status_code == 200


# -- a configured production issuer (RS256, JWKS file or URL); the dev issuer off -------------------------
@pytest.fixture(scope="module")
def rsa_issuer(tmp_path_factory) -> tuple[object, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "prod-1", "use": "sig", "alg": "RS256"})
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return key, path


def production_token(key, **changes) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": "https://psc.example", "aud": "espace-api", "sub": "client", "iat": now, "exp": now + 300,
              **system_claims("system/*.rs"), **changes}
    return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": "prod-1"})}


@contextmanager
def production_app(mongo_uri, issuer_dir, tmp_path_factory, jwks: str):
    settings = Settings(mongodb_db="fhirtest_" + uuid.uuid4().hex[:12], dev_issuer=False,
                        data_dir=tmp_path_factory.mktemp("prod-data"), auth_issuer="https://psc.example",
                        auth_audience="espace-api", auth_jwks=jwks)
    with running_app(mongo_uri, settings, issuer_dir) as app_client:
        yield app_client


def test_production_issuer_with_a_jwks_file(mongo_uri, issuer_dir, tmp_path_factory, rsa_issuer):
    key, path = rsa_issuer
    with production_app(mongo_uri, issuer_dir, tmp_path_factory, str(path)) as prod:
        assert prod.get("/fhir/Patient", headers=production_token(key)).status_code == 200
        assert prod.get("/fhir/Patient", headers=production_token(key, aud="espace-fhir")).status_code == 401
        assert prod.get("/fhir/Patient", headers=production_token(key, exp=int(time.time()) - 600)).status_code == 401
        dev = bearer(issuer_dir, system_claims("system/*.cruds"))
        refused = prod.get("/fhir/Patient", headers=dev)                  # production config: no dev issuer
        assert refused.status_code == 401 and "not trusted" in refused.json()["issue"][0]["diagnostics"]
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert prod.get("/fhir/Patient", headers=production_token(other_key)).status_code == 401


def test_production_issuer_with_a_jwks_url(mongo_uri, issuer_dir, tmp_path_factory, rsa_issuer):
    key, path = rsa_issuer
    body = path.read_bytes()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks.json"
        with production_app(mongo_uri, issuer_dir, tmp_path_factory, url) as prod:
            assert prod.get("/fhir/Patient", headers=production_token(key)).status_code == 200
            other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            assert prod.get("/fhir/Patient", headers=production_token(other_key)).status_code == 401
    finally:
        server.shutdown()
        thread.join()


def test_the_dev_issuer_is_on_in_make_run_and_off_otherwise(monkeypatch):
    monkeypatch.delenv("FHIR_AUTH_DEV_ISSUER", raising=False)
    assert Settings().dev_issuer is False                               # `serve`, production: off
    served: list[Settings] = []
    monkeypatch.setenv("FHIR_MONGODB_URI", "mongodb://127.0.0.1:1")
    monkeypatch.setattr("fhir_server.cli._serve", lambda settings, uri, folders: served.append(settings))
    assert cli_main(["run", "--no-examples"]) == 0                      # `make run`: on by default
    monkeypatch.setenv("FHIR_AUTH_DEV_ISSUER", "0")
    assert cli_main(["run", "--no-examples"]) == 0                      # unless turned off
    assert [s.dev_issuer for s in served] == [True, False]
