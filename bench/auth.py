"""Tokens for benchmarks: a throw-away development issuer trusted by the benchmark server."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fhir_server.access import devissuer


class BenchIssuer:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="espace-bench-issuer-"))

    @property
    def env(self) -> dict[str, str]:
        return {"FHIR_AUTH_DEV_ISSUER": "1", "FHIR_DEV_ISSUER_DIR": str(self.folder)}

    def headers(self, claims: dict) -> dict[str, str]:
        return {"Authorization": f"Bearer {devissuer.mint(self.folder, claims)}",
                "Content-Type": "application/fhir+json"}

    def system(self) -> dict[str, str]:
        return self.headers(devissuer.system_claims("system/*.cruds", "bench"))
