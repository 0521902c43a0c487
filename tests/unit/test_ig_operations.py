"""Our OperationDefinitions in the implementation guide: listed under their own grouping, and a
page says for each where it is invoked and what its parameters are (parts included)."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from fhir_server.definitions import Definitions, load_definitions
from fhir_server.ig import build_site, implementation_guide, published_by_us


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return load_definitions()


@pytest.fixture(scope="module")
def operations(definitions: Definitions) -> list[dict]:
    return [r for r in published_by_us(definitions) if r["resourceType"] == "OperationDefinition"]


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> str:
    out = tmp_path_factory.mktemp("site")
    build_site(definitions, out)
    return (Path(out) / "operations.html").read_text(encoding="utf-8")


def parameter_names(parameters: list[dict], prefix: str = "") -> list[str]:
    return [name for p in parameters
            for name in [f"{prefix}{p['name']}", *parameter_names(p.get("part", []), f"{prefix}{p['name']}.")]]


def test_our_operations_are_published_and_grouped(definitions: Definitions, operations: list[dict]) -> None:
    assert {"access-history", "vaccination-status", "propose-reminders", "import-cda", "status", "everything",
            "document"} <= {o["code"] for o in operations}
    guide = implementation_guide(definitions)
    grouped = {r["reference"]["reference"] for r in guide["definition"]["resource"] if r["groupingId"] == "operations"}
    assert grouped == {f"OperationDefinition/{o['id']}" for o in operations}
    assert "operations" in {g["id"] for g in guide["definition"]["grouping"]}
    assert "operations.html" in {p["nameUrl"] for p in guide["definition"]["page"]["page"]}


def test_the_operations_page_shows_invocations_and_parameters(page: str, operations: list[dict]) -> None:
    assert "[base]/Patient/[id]/$access-history" in page and "[base]/Composition/$import-cda" in page
    assert "[base]/Patient/$everything" not in page               # ours: instance level only
    for operation in operations:
        assert f'id="{operation["id"]}"' in page
        for name in parameter_names(operation["parameter"]):
            assert f"<code>{html.escape(name)}</code>" in page, (operation["id"], name)
    assert "<code>delivery.attempt.httpStatus</code>" in page
