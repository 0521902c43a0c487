"""Shared pieces of the MHD / PDSm tests (no test here): the French example payloads of
`examples/mhd/`, builders for documents and bundles, the actors of the scenarios."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from pathlib import Path

from fhir_server.access.devissuer import patient_claims, practitioner_claims
from tests.http.conftest import bearer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "mhd"
PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
VISIBILITY = "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
IS_ARCHIVED = PDSM + "pdsm-ext-is-archived"
RFC3986 = "urn:ietf:rfc:3986"
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
PATIENT_ID, PATIENT_INS = "exemple-patient-ins", "284037512345640"
OTHER_PATIENT_ID, OTHER_PATIENT_INS = "autre-patient", "190017512345678"
HOSPITAL_DOCTOR, GP, BIOLOGIST, RADIOLOGIST = "10101234564", "10003456786", "10107654328", "10109876549"
STRANGER_DOCTOR, PHARMACIST = "10199999999", "10188888888"
CR, ORDONNANCE, BIOLOGIE, IMAGERIE, REMPLACEMENT, PHOTO = (
    "01-iti65-cr-hospitalisation.json", "02-iti65-ordonnance.json", "03-iti65-resultat-biologie.json",
    "04-iti65-cr-imagerie-classeur.json", "05-iti65-remplacement-cr-hospitalisation.json",
    "06-iti105-photo-patient.json")
FHIR_JSON = "application/fhir+json"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def load_patients(client) -> None:
    """The patient of the examples (examples/patient-ins.json) and a second one."""
    patient = json.loads((ROOT / "examples" / "patient-ins.json").read_text(encoding="utf-8"))
    assert client.put(f"/fhir/Patient/{PATIENT_ID}", json=patient).status_code in (200, 201)
    other = {"resourceType": "Patient", "id": OTHER_PATIENT_ID,
             "identifier": [{"system": INS_SYSTEM, "value": OTHER_PATIENT_INS}],
             "name": [{"family": "Durand", "given": ["Paul"]}], "gender": "male", "birthDate": "1990-01-17"}
    assert client.put(f"/fhir/Patient/{OTHER_PATIENT_ID}", json=other).status_code in (200, 201)


# -- actors ------------------------------------------------------------------------------------------
def doctor(issuer_dir, rpps: str, profession: str = "10") -> dict[str, str]:
    return bearer(issuer_dir, practitioner_claims(rpps, profession))


def patient(issuer_dir, ins: str = PATIENT_INS) -> dict[str, str]:
    return bearer(issuer_dir, patient_claims(ins))


# -- documents -----------------------------------------------------------------------------------------
def pdf(title: str, filler_bytes: int = 0) -> bytes:
    """A small valid PDF with one page of text (padded with a comment to `filler_bytes`)."""
    stream = f"BT /F1 14 Tf 50 790 Td ({title}) Tj ET".encode("cp1252")
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 6\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    if filler_bytes > len(out):
        out += b"%" + b"x" * (filler_bytes - len(out) - 2) + b"\n"
    return bytes(out)


def sha1(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def unique_oid() -> str:
    return "urn:oid:2.25." + str(uuid.uuid4().int)


def fresh(bundle: dict) -> dict:
    """An example provide bundle made new: its own unique ids and Binary ids, plain POSTs (no
    conditional create), so that it can be posted many times in one test module."""
    bundle = copy.deepcopy(bundle)
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        request.pop("ifNoneExist", None)
        if resource["resourceType"] == "DocumentReference":
            resource["masterIdentifier"]["value"] = unique_oid()
        elif resource["resourceType"] == "List":
            resource["identifier"][0]["value"] = unique_oid()
            resource.pop("id", None)
            request.update(method="POST", url="List")
        elif resource["resourceType"] == "Binary":
            request.update(method="POST", url="Binary")
    return bundle


def with_document(bundle: dict, content: bytes, content_type: str = "application/pdf") -> dict:
    """The bundle with its (first) document replaced by `content`, metadata updated accordingly."""
    bundle = copy.deepcopy(bundle)
    binary = entry_of(bundle, "Binary")["resource"]
    binary.update(contentType=content_type, data=base64.b64encode(content).decode())
    attachment = entry_of(bundle, "DocumentReference")["resource"]["content"][0]["attachment"]
    attachment.update(contentType=content_type, size=len(content), hash=sha1(content))
    return bundle


def entry_of(bundle: dict, resource_type: str) -> dict:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type)


def index_of(bundle: dict, resource_type: str) -> int:
    return next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == resource_type)


def provide(client, bundle: dict, headers: dict | None = None):
    return client.post("/fhir", json=bundle, headers=headers or {})


def provided_document(client, bundle: dict, headers: dict | None = None) -> dict:
    """Provide the bundle and read back the stored DocumentReference."""
    response = provide(client, bundle, headers)
    assert response.status_code == 200, response.text
    location = next(e["response"]["location"] for e in response.json()["entry"]
                    if e["response"]["location"].startswith("DocumentReference/"))
    return client.get("/fhir/" + location.split("/_history")[0], headers={"Accept": FHIR_JSON}).json()


def expressions(outcome: dict) -> list[str]:
    return [e for issue in outcome.get("issue", []) for e in issue.get("expression", [])]


def diagnostics(outcome: dict) -> str:
    return " | ".join(issue.get("diagnostics", "") for issue in outcome.get("issue", []))


def search_ids(client, params: dict | list, headers: dict | None = None) -> set[str]:
    response = client.get("/fhir/DocumentReference", params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


def for_patient(bundle: dict, patient_id: str) -> dict:
    """The bundle with every reference to the examples' patient moved to `patient_id`."""
    text = json.dumps(bundle).replace(f"Patient/{PATIENT_ID}", f"Patient/{patient_id}")
    return json.loads(text)


def with_author(bundle: dict, *authors: dict) -> dict:
    """The bundle whose document entry is written by `authors` (contained resources, the first of
    each being the one `author` points at): e.g. a PractitionerRole and the Practitioner it names."""
    bundle = copy.deepcopy(bundle)
    document = entry_of(bundle, "DocumentReference")["resource"]
    document["contained"] = [*authors]
    document["author"] = [{"reference": f"#{authors[0]['id']}"}]
    document["authenticator"] = {"reference": f"#{authors[0]['id']}"}
    return bundle


def practitioner(local_id: str, given: str, family: str, rpps: str) -> dict:
    return {"resourceType": "Practitioner", "id": local_id,
            "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "8" + rpps}],
            "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr"]}]}


def practitioner_role(local_id: str, practitioner_id: str, rpps: str) -> dict:
    return {"resourceType": "PractitionerRole", "id": local_id,
            "practitioner": {"reference": f"#{practitioner_id}",
                             "identifier": {"system": "https://rpps.esante.gouv.fr", "value": rpps}},
            "code": [{"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/"
                                            "TRE-G15-ProfessionSante", "code": "10", "display": "Médecin"}]}]}
