"""Document sharing (IHE MHD / ANS PDSm) through the HTTP server, audit on and off:

- ITI-65 Provide Document Bundle throughput: bundles/s, each with one ~200 KB PDF (submission set
  + document entry + Binary; profiles, size and SHA-1 checked; stored with history and audit);
- ITI-67 Find Document References latency for a patient with 500 documents (`--documents`), as a
  professional (access filter on): the first page, a filtered search, and all of them in one page;
- ITI-68 Retrieve Document of one of them.

`python -m bench.mhd [--bundles N] [--documents N]`
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.auth import BenchIssuer
from bench.harness import HEADER, Figures, database, run_concurrently, server
from fhir_server.access import devissuer
from tests.http.test_mhd_support import pdf

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mhd" / "01-iti65-cr-hospitalisation.json"
PATIENT = ROOT / "examples" / "patient-ins.json"
PDF_BYTES = 200 * 1024
AUTHOR_RPPS = "10101234564"            # the contained author of the example bundle


def provide_bundle(template: dict, title: str, size: int = PDF_BYTES) -> dict:
    """The example CR d'hospitalisation bundle, with a new document of `size` bytes and new ids."""
    bundle = copy.deepcopy(template)
    content = pdf(title, size)      # padded to `size` bytes, unique per title
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        request.pop("ifNoneExist", None)
        if resource["resourceType"] == "List":
            resource["identifier"][0]["value"] = f"urn:oid:2.25.{uuid.uuid4().int}"
        elif resource["resourceType"] == "DocumentReference":
            resource["masterIdentifier"]["value"] = f"urn:oid:2.25.{uuid.uuid4().int}"
            attachment = resource["content"][0]["attachment"]
            attachment.update(title=title, size=len(content),
                              hash=base64.b64encode(hashlib.sha1(content).digest()).decode())
        elif resource["resourceType"] == "Binary":
            resource["data"] = base64.b64encode(content).decode()
            request.update(method="POST", url="Binary")
    return bundle


class Failures:
    """Server errors and broken connections are counted, not raised: under 8 concurrent clients on one
    patient the audit chain of that patient is contended, and a run should say how often that fails
    (and, for a connection reset, which request it hit) rather than stop."""

    def __init__(self) -> None:
        self.count = 0
        self.transport: list[str] = []
        self.lock = threading.Lock()

    def check(self, send: Callable[[], httpx.Response]) -> None:
        try:
            response = send()
        except httpx.TransportError as exc:
            with self.lock:
                self.transport.append(f"{type(exc).__name__}: {exc} ({exc.request.method} {exc.request.url})")
            return
        if response.status_code >= 500:
            with self.lock:
                self.count += 1
            return
        response.raise_for_status()

    def report(self) -> str:
        lines = [f"server errors (5xx): {self.count}; broken connections: {len(self.transport)}"]
        return "\n".join(lines + [f"  {message}" for message in self.transport[:5]])


def provide_throughput(base: str, headers: dict[str, str], template: dict, bundles: int,
                       clients: int, failures: Failures) -> Figures:
    prepared = [json.dumps(provide_bundle(template, f"CR {clients}-{i}")).encode() for i in range(bundles)]
    local = threading.local()

    def provide(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=120, headers=headers)
        failures.check(lambda: local.client.post("", content=prepared[i]))

    return run_concurrently(f"ITI-65 provide (1 x {PDF_BYTES // 1024} KB PDF)", clients, bundles, provide)


def populate(base: str, headers: dict[str, str], template: dict, documents: int) -> None:
    """`documents` entries for the patient, 50 per provide bundle, small PDFs (the search does not
    read them)."""
    with httpx.Client(base_url=base, timeout=300, headers=headers) as http:
        for start in range(0, documents, 50):
            bundle = provide_bundle(template, "lot")
            entries = [bundle["entry"][0]]
            items = []
            for i in range(start, min(start + 50, documents)):
                one = provide_bundle(template, f"Document {i}", size=2048)
                document, binary = one["entry"][1], one["entry"][2]
                suffix = uuid.uuid4()
                document["fullUrl"], binary["fullUrl"] = f"urn:uuid:{suffix}", f"urn:uuid:{uuid.uuid4()}"
                document["resource"]["content"][0]["attachment"]["url"] = binary["fullUrl"]
                document["resource"]["date"] = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00+01:00"
                items.append({"item": {"reference": document["fullUrl"]}})
                entries += [document, binary]
            entries[0]["resource"]["entry"] = items
            bundle["entry"] = entries
            http.post("", json=bundle).raise_for_status()


def find_latencies(base: str, headers: dict[str, str], patient: str, documents: int, operations: int,
                   failures: Failures) -> list[Figures]:
    local = threading.local()

    def http() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=120, headers=headers)
        return local.client

    def search(params: dict) -> Callable[[int], None]:
        def run(_: int) -> None:
            failures.check(lambda: http().get("/DocumentReference", params=params))
        return run

    mine = {"patient": patient, "status": "current"}
    first = http().get("/DocumentReference", params={**mine, "_count": "1"}).json()
    binary = first["entry"][0]["resource"]["content"][0]["attachment"]["url"]

    def retrieve(_: int) -> None:
        failures.check(lambda: http().get(f"/{binary}", headers={"Accept": "application/pdf"}))

    rows = []
    for clients in (1, 8):
        rows += [
            run_concurrently("ITI-67 patient+status, 1st page (20)", clients, operations, search(mine)),
            run_concurrently("ITI-67 + type + date range", clients, operations, search(
                {**mine, "type": "http://loinc.org|34112-3", "date": "ge2026-06-01"})),
            run_concurrently(f"ITI-67 all {documents} in one page", clients, max(20, operations // 5),
                             search({**mine, "_count": str(documents)})),
            run_concurrently("ITI-68 retrieve (2 KB PDF)", clients, operations, retrieve),
        ]
    return rows


def main(bundles: int = 200, documents: int = 500, operations: int = 200) -> None:
    print(f"MHD benchmark: ITI-65 x {bundles} bundles; ITI-67 over a patient with {documents} documents "
          "(practitioner token, access filter on); server and database on this machine")
    issuer = BenchIssuer()
    template = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    for audit in ("on", "off"):
        failures = Failures()
        with database() as uri:
            name = "bench_mhd_" + uuid.uuid4().hex[:8]
            with server(uri, name, {**issuer.env, "FHIR_AUDIT": audit}) as base:
                rows = run_workloads(base, issuer, template, bundles, documents, operations, failures)
        print(f"\naudit {audit}:")
        print(HEADER)
        for figures in rows:
            print(figures.row())
        print(failures.report())


def run_workloads(base: str, issuer: BenchIssuer, template: dict, bundles: int, documents: int, operations: int,
                  failures: Failures) -> list[Figures]:
    system = issuer.system()
    patient = json.loads(PATIENT.read_text(encoding="utf-8"))
    httpx.put(f"{base}/Patient/{patient['id']}", json=patient, headers=system, timeout=60).raise_for_status()
    author = issuer.headers(devissuer.practitioner_claims(AUTHOR_RPPS, "10"))
    rows = [provide_throughput(base, author, template, bundles, clients, failures) for clients in (1, 8)]
    other_patient = {**copy.deepcopy(patient), "id": "bench-other"}
    other_patient["identifier"][0]["value"] = "284037512345643"
    httpx.put(f"{base}/Patient/bench-other", json=other_patient, headers=system, timeout=60).raise_for_status()
    populate(base, system, json.loads(json.dumps(template).replace("exemple-patient-ins", "bench-other")), documents)
    searcher = issuer.headers(devissuer.practitioner_claims("10199999999", "10"))
    return rows + find_latencies(base, searcher, "Patient/bench-other", documents, operations, failures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.mhd")
    parser.add_argument("--bundles", type=int, default=200)
    parser.add_argument("--documents", type=int, default=500)
    parser.add_argument("--operations", type=int, default=200)
    arguments = parser.parse_args()
    main(arguments.bundles, arguments.documents, arguments.operations)
