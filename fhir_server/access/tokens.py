"""Bearer JWT authentication against configured issuers (RS256 / ES256; exp and nbf checked).

Each trusted issuer has an audience and a key set: a JWKS file, a JWKS URL, or the local
development issuer (`fhir-server token ...`), which is trusted only when configured to be.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from fhir_server.access.actor import KINDS, Actor
from fhir_server.access.scopes import Scopes
from fhir_server.engine.errors import FhirError, Issue

ALGORITHMS = ["RS256", "ES256"]
LEEWAY_SECONDS = 30
# A verified token is remembered (its signature check costs more than the rest of a small read)
# until it expires, and at most this long: a key dropped from an issuer's JWKS stops vouching soon.
VERIFIED_TOKEN_SECONDS = 60
MAX_VERIFIED_TOKENS = 10_000


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    audience: str
    jwks: str                  # path to a JWKS file, or an https URL


class AuthenticationError(FhirError):
    pass


def unauthorized(reason: str, error_code: str = "invalid_token") -> AuthenticationError:
    challenge = f'Bearer realm="espace", error="{error_code}", error_description="{reason}"'
    return AuthenticationError(401, [Issue("error", "login", reason)], {"WWW-Authenticate": challenge})


class Authenticator:
    def __init__(self, issuers: list[TrustedIssuer]) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._key_sets: dict[str, object] = {}
        self._verified: dict[str, tuple[float, Actor]] = {}     # token -> (valid until, actor)

    def authenticate(self, authorization: str | None) -> Actor:
        if not authorization:
            raise unauthorized("This request needs a bearer token (Authorization: Bearer <JWT>)", "invalid_request")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("The Authorization header must be 'Bearer <JWT>'", "invalid_request")
        token = token.strip()
        remembered = self._verified.get(token)
        if remembered is not None and time.time() < remembered[0]:
            return remembered[1]
        claims = self._verify(token)
        actor = actor_from_claims(claims)
        self._remember(token, claims, actor)
        return actor

    def _remember(self, token: str, claims: dict, actor: Actor) -> None:
        """Until the moment `_verify` would call the token expired, within VERIFIED_TOKEN_SECONDS."""
        if len(self._verified) >= MAX_VERIFIED_TOKENS:
            self._verified.clear()
        now = time.time()
        self._verified[token] = (min(float(claims["exp"]) + LEEWAY_SECONDS, now + VERIFIED_TOKEN_SECONDS), actor)

    def _verify(self, token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise unauthorized("The bearer token is not a well-formed JWT") from None
        issuer = self._issuers.get(unverified.get("iss", ""))
        if issuer is None:
            raise unauthorized(f"The token issuer {unverified.get('iss')!r} is not trusted by this server")
        if header.get("alg") not in ALGORITHMS:
            raise unauthorized(f"Token algorithm {header.get('alg')!r} is not accepted (RS256 or ES256)")
        key = self._signing_key(issuer, header.get("kid"))
        try:
            return jwt.decode(token, key, algorithms=ALGORITHMS, audience=issuer.audience, issuer=issuer.issuer,
                              options={"require": ["exp", "iss", "aud", "sub"]}, leeway=LEEWAY_SECONDS)
        except jwt.ExpiredSignatureError:
            raise unauthorized("The token has expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthorized("The token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise unauthorized(f"The token audience is not {issuer.audience!r}") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(f"The token is not valid: {exc}") from None

    def _signing_key(self, issuer: TrustedIssuer, kid: str | None) -> object:
        if issuer.jwks.startswith(("https://", "http://")):
            client = self._key_sets.get(issuer.issuer)
            if client is None:
                client = jwt.PyJWKClient(issuer.jwks, cache_keys=True, lifespan=300)
                self._key_sets[issuer.issuer] = client
            try:
                return client.get_signing_key(kid).key if kid else client.get_signing_keys()[0].key
            except jwt.PyJWKClientError as exc:
                raise unauthorized(f"No key of the issuer matches the token: {exc}") from None
        key_set = self._key_sets.get(issuer.issuer)
        if key_set is None:
            key_set = jwt.PyJWKSet.from_dict(json.loads(Path(issuer.jwks).read_text()))
            self._key_sets[issuer.issuer] = key_set
        for key in key_set.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise unauthorized(f"No key of the issuer has kid {kid!r}")


def actor_from_claims(claims: dict) -> Actor:
    kind = claims.get("actor") or ("system" if claims.get("client_id") and not claims.get("rpps") else None)
    if kind not in KINDS:
        raise unauthorized(f"The token does not say who acts (claim 'actor' must be one of {sorted(KINDS)})")
    actor = Actor(
        kind=kind,
        subject=claims["sub"],
        scopes=Scopes.parse(claims.get("scope")),
        ins=claims.get("ins"),
        rpps=claims.get("rpps"),
        profession=claims.get("profession"),
        specialty=claims.get("specialty"),
        organization=claims.get("organization"),
        purpose_of_use=claims.get("purpose_of_use"),
        client_id=claims.get("client_id") or claims.get("azp"),
        name=claims.get("name"),
        claims=claims,
    )
    if kind == "patient" and not actor.ins:
        raise unauthorized("A patient token must carry the patient's INS (claim 'ins')")
    if kind == "practitioner" and not (actor.rpps and actor.profession):
        raise unauthorized("A practitioner token must carry 'rpps' and 'profession' (TRE_G15)")
    return actor
