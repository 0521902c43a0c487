"""Configuration, from environment variables (12-factor): see README, "Configuration"."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fhir_server.definitions.paths import PROJECT_ROOT


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    mongodb_uri: str | None = field(default_factory=lambda: os.environ.get("FHIR_MONGODB_URI") or None)
    mongodb_db: str = field(default_factory=lambda: os.environ.get("FHIR_MONGODB_DB", "espace"))
    host: str = field(default_factory=lambda: os.environ.get("FHIR_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: _int("FHIR_PORT", 8080))
    # Public base URL (behind a proxy); by default derived from each request.
    base_url: str | None = field(default_factory=lambda: os.environ.get("FHIR_BASE_URL") or None)
    max_body_bytes: int = field(default_factory=lambda: _int("FHIR_MAX_BODY_BYTES", 64 * 1024 * 1024))
    max_bundle_entries: int = field(default_factory=lambda: _int("FHIR_MAX_BUNDLE_ENTRIES", 10_000))
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("FHIR_DATA_DIR", PROJECT_ROOT / ".data")))
    # One production issuer of bearer JWTs (Pro Santé Connect style): issuer, audience, JWKS file or URL.
    auth_issuer: str | None = field(default_factory=lambda: os.environ.get("FHIR_AUTH_ISSUER") or None)
    auth_audience: str | None = field(default_factory=lambda: os.environ.get("FHIR_AUTH_AUDIENCE") or None)
    auth_jwks: str | None = field(default_factory=lambda: os.environ.get("FHIR_AUTH_JWKS") or None)
    # Trust the local development issuer (`fhir-server token ...`): on in `make run`, off otherwise.
    dev_issuer: bool = field(default_factory=lambda: _flag("FHIR_AUTH_DEV_ISSUER", False))
    dev_issuer_dir_override: Path | None = field(
        default_factory=lambda: Path(os.environ["FHIR_DEV_ISSUER_DIR"]) if os.environ.get("FHIR_DEV_ISSUER_DIR")
        else None)

    @property
    def dev_issuer_dir(self) -> Path:
        """Where the development issuer keeps its key pair."""
        return self.dev_issuer_dir_override or self.data_dir / "dev-issuer"
