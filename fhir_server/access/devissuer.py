"""The local development issuer: an ES256 key pair kept in the data folder, a JWKS for the
server to trust it (only when configured to), and the minting used by `fhir-server token`."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fhir_server.access.tokens import TrustedIssuer

DEV_ISSUER = "https://espace.invalid/dev-issuer"
DEV_AUDIENCE = "espace-fhir"
KID = "espace-dev-1"


def _private_key_path(folder: Path) -> Path:
    return folder / "dev-issuer-private.pem"


def _load_or_create_key(folder: Path) -> ec.EllipticCurvePrivateKey:
    path = _private_key_path(folder)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return key


def dev_issuer(folder: Path) -> TrustedIssuer:
    """The TrustedIssuer for the development keys in `folder` (created on first use)."""
    key = _load_or_create_key(folder)
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": KID, "use": "sig", "alg": "ES256"})
    jwks_path = folder / "dev-issuer-jwks.json"
    jwks_path.write_text(json.dumps({"keys": [jwk]}))
    return TrustedIssuer(DEV_ISSUER, DEV_AUDIENCE, str(jwks_path))


def mint(folder: Path, claims: dict, lifetime_seconds: int = 8 * 3600) -> str:
    key = _load_or_create_key(folder)
    now = int(time.time())
    payload = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "iat": now, "nbf": now, "exp": now + lifetime_seconds,
               "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": KID})


def patient_claims(ins: str) -> dict:
    return {"sub": f"patient-{ins}", "actor": "patient", "ins": ins, "scope": "patient/*.cruds"}


def practitioner_claims(rpps: str, profession: str, organization: str | None = None,
                        purpose_of_use: str | None = None, specialty: str | None = None) -> dict:
    claims = {"sub": f"rpps-{rpps}", "actor": "practitioner", "rpps": rpps, "profession": profession,
              "purpose_of_use": purpose_of_use or "TREAT", "scope": "user/*.cruds"}
    if organization:
        claims["organization"] = organization
    if specialty:
        claims["specialty"] = specialty
    return claims


def system_claims(scope: str, client_id: str = "dev-client") -> dict:
    return {"sub": client_id, "actor": "system", "client_id": client_id, "scope": scope}
