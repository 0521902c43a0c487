"""Cost of profile validation: validations per second in process (JSON schema, profile, both) for
an INS Patient and, when the PDSm profile is loaded, a PDSm DocumentReference; then the latency
that profile enforcement adds to `POST Patient` through the HTTP server (the same INS Patient,
claiming fr-core-patient-ins or claiming nothing), in the same run against the same database."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.auth import BenchIssuer
from bench.harness import HEADER, Figures, database, run_concurrently, server
from fhir_server.definitions import PROJECT_ROOT
from fhir_server.formats.json import parse_json
from fhir_server.validation.cli import build_validation
from fhir_server.validation.operation import PDSM_DOCUMENT_REFERENCE, ResourceValidation

EXAMPLES = PROJECT_ROOT / "examples"


def _example(path: Path) -> dict:
    return parse_json(path.read_bytes())          # as the server reads a body: Decimal numbers


def _pdsm_document(validation: ResourceValidation) -> dict | None:
    """A DocumentReference of the MHD examples that meets the PDSm profile, if the profile is loaded."""
    if not validation.is_known(PDSM_DOCUMENT_REFERENCE):
        return None
    for path in sorted((EXAMPLES / "mhd").glob("*.json")):
        bundle = _example(path)
        for entry in bundle.get("entry", []):
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == "DocumentReference" and not [
                    i for i in validation.validate(resource, None, [PDSM_DOCUMENT_REFERENCE]) if i.severity == "error"]:
                return resource
    return None


def _rate(action: Callable[[], object], seconds: float = 2.0) -> tuple[float, float]:
    """(validations per second, milliseconds per validation) of `action`, after a warm-up."""
    action()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        action()
        runs += 1
    elapsed = time.perf_counter() - started
    return runs / elapsed, elapsed / runs * 1000


def in_process() -> None:
    validation = build_validation()
    cases = [("INS Patient (fr-core-patient-ins)", _example(EXAMPLES / "patient-ins.json"))]
    document = _pdsm_document(validation)
    if document is not None:
        cases.append(("PDSm DocumentReference", document))
    else:
        print("(the PDSm DocumentReference profile is not loaded: skipped)")
    print(f"{'in process, one thread':<52} {'validations/s':>14} {'ms each':>9}")
    for name, resource in cases:
        profiles = (resource.get("meta") or {}).get("profile") or [PDSM_DOCUMENT_REFERENCE]
        for label, action in (
                ("JSON schema", lambda r=resource: validation.structure.validate(r)),
                ("profile", lambda r=resource, p=profiles: validation.profiles.validate(r, p)),
                ("both ($validate)", lambda r=resource, p=profiles: validation.validate(r, None, p))):
            per_second, each = _rate(action)
            print(f"{name + ' - ' + label:<52} {per_second:>14.0f} {each:>9.2f}")


def enforcement_latency(operations: int) -> None:
    patient = json.loads((EXAMPLES / "patient-ins.json").read_text(encoding="utf-8"))
    patient.pop("id")
    unclaimed = copy.deepcopy(patient)
    del unclaimed["meta"]
    issuer = BenchIssuer()
    with database() as uri, server(uri, "bench_" + uuid.uuid4().hex[:8], issuer.env) as base:
        client = httpx.Client(base_url=base, timeout=60, headers=issuer.system())

        def create(body: dict) -> Callable[[int], None]:
            return lambda i: client.post("/Patient", json=body).raise_for_status()

        rows = [run_concurrently("POST Patient, profile enforced", 1, operations, create(patient)),
                run_concurrently("POST Patient, no profile claimed", 1, operations, create(unclaimed)),
                run_concurrently("POST Patient, profile enforced (again)", 1, operations, create(patient))]
        client.close()
    print(HEADER)
    for row in rows:
        print(row.row())
    print(f"added latency of enforcement (p50): {_p50(rows[2]) - _p50(rows[1]):.2f} ms")


def _p50(figures: Figures) -> float:
    return figures.percentile(50)


def main(operations: int = 300) -> None:
    print("Validation benchmark")
    in_process()
    enforcement_latency(operations)


if __name__ == "__main__":
    main()
