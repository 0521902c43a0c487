"""create / read / update / search (by `_id`) through the HTTP server, at 1 and 8 concurrent
clients, next to raw pymongo insert / find on the same database in the same run (the floor)."""

from __future__ import annotations

import copy
import threading
import uuid

import httpx
import pymongo

from bench.auth import BenchIssuer
from bench.harness import HEADER, Figures, database, run_concurrently, server

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "284037512345640"}],
    "name": [{"use": "official", "family": "Lefèvre", "given": ["Élodie", "Marie"]}],
    "telecom": [{"system": "phone", "value": "+33 6 12 34 56 78"}],
    "gender": "female",
    "birthDate": "1984-03-17",
    "address": [{"line": ["12 rue des Lilas"], "city": "Rennes", "postalCode": "35000"}],
}


def raw_pymongo(uri: str, database_name: str, operations: int, clients: int) -> list[Figures]:
    client = pymongo.MongoClient(uri)
    collection = client[database_name]["raw_floor"]
    ids = [str(uuid.uuid4()) for _ in range(operations)]

    def insert(i: int) -> None:
        collection.insert_one({"_id": ids[i], "resource": copy.deepcopy(PATIENT)})

    def find(i: int) -> None:
        collection.find_one({"_id": ids[i]})

    figures = [run_concurrently("pymongo insert_one (floor)", clients, operations, insert),
               run_concurrently("pymongo find_one by _id (floor)", clients, operations, find)]
    collection.drop()
    client.close()
    return figures


def http_crud(base: str, operations: int, clients: int, headers: dict[str, str]) -> list[Figures]:
    local = threading.local()
    ids: list[str | None] = [None] * operations

    def http() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=60, headers=headers)
        return local.client

    def create(i: int) -> None:
        response = http().post("/Patient", json=PATIENT)
        response.raise_for_status()
        ids[i] = response.json()["id"]

    def read(i: int) -> None:
        http().get(f"/Patient/{ids[i]}").raise_for_status()

    def update(i: int) -> None:
        http().put(f"/Patient/{ids[i]}", json={**PATIENT, "id": ids[i], "active": True}).raise_for_status()

    def search(i: int) -> None:
        http().get("/Patient", params={"_id": ids[i]}).raise_for_status()

    return [run_concurrently("HTTP create (POST)", clients, operations, create),
            run_concurrently("HTTP read (GET)", clients, operations, read),
            run_concurrently("HTTP update (PUT)", clients, operations, update),
            run_concurrently("HTTP search (GET ?_id=)", clients, operations, search)]


def main(operations: int = 500) -> None:
    print(f"CRUD benchmark: {operations} operations per workload; server and database on this machine")
    issuer = BenchIssuer()
    for audit in ("on", "off"):
        with database() as uri:
            name = "bench_" + uuid.uuid4().hex[:8]
            with server(uri, name, {**issuer.env, "FHIR_AUDIT": audit}) as base:
                rows: list[Figures] = []
                for clients in (1, 8):
                    rows += raw_pymongo(uri, name, operations, clients)
                    rows += http_crud(base, operations, clients, issuer.system())
            pymongo.MongoClient(uri).drop_database(name)
        print(f"\naudit {audit}:")
        report(rows)


def report(rows: list[Figures]) -> None:
    print(HEADER)
    for figures in rows:
        print(figures.row())
    floor = {(f.name.split()[1], f.clients): f.throughput for f in rows if f.name.startswith("pymongo")}
    print("ratio of HTTP throughput to the raw pymongo floor:")
    for f in rows:
        if f.name.startswith("HTTP"):
            reference = floor[("insert_one", f.clients)] if "create" in f.name or "update" in f.name \
                else floor[("find_one", f.clients)]
            print(f"  {f.name:<22} {f.clients} client(s): {f.throughput / reference:6.1%} of the floor")
