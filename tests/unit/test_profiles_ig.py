"""The implementation guide: the ImplementationGuide resource lists everything we publish, and the
static site has a page per profile (purpose, constraints, must-support elements, an example), the
terminology, the search parameters and the security model with the access matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_server.definitions import Definitions, load_definitions
from fhir_server.ig import build_site, implementation_guide, published_by_us
from fhir_server.ig.guide import IG_SOURCE
from fhir_server.ig.markdown import render
from fhir_server.ig.site import PAGES_DIR


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return load_definitions()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, definitions: Definitions) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site(definitions, out)
    return out


def _references(guide: dict) -> set[str]:
    return {r["reference"]["reference"] for r in guide["definition"]["resource"]}


def test_the_guide_lists_every_resource_we_publish_and_the_examples(definitions: Definitions) -> None:
    guide = implementation_guide(definitions)
    references = _references(guide)
    for resource in published_by_us(definitions):
        assert f"{resource['resourceType']}/{resource['id']}" in references
    examples = [r for r in guide["definition"]["resource"] if r["groupingId"] == "examples"]
    assert {"Patient/exemple-patient-ins", "Consent/exemple-consentement-restrictions"} <= {
        r["reference"]["reference"] for r in examples}
    patient = next(r for r in examples if r["reference"]["reference"] == "Patient/exemple-patient-ins")
    assert patient["exampleCanonical"].endswith("/fr-core-patient-ins")
    groups = {g["id"] for g in guide["definition"]["grouping"]}
    assert {r["groupingId"] for r in guide["definition"]["resource"]} <= groups


def test_the_committed_guide_lists_our_profiles_and_terminology(definitions: Definitions) -> None:
    committed = _references(json.loads(IG_SOURCE.read_text(encoding="utf-8")))
    ours = {f"{r['resourceType']}/{r['id']}" for r in published_by_us(definitions)
            if "espace.example.org" in r["url"] or "hl7.fr/ig/fhir/core" in r["url"]}
    assert ours and ours <= committed, "run `make ig` to refresh ig/ImplementationGuide-espace.json"


def test_a_page_per_profile_with_constraints_must_support_and_example(site: Path) -> None:
    page = (site / "StructureDefinition-fr-core-patient-ins.html").read_text(encoding="utf-8")
    assert "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins" in page
    assert "fr-core-1" in page and "Patient.identifier:INS-NIR" in page
    assert "must support" in page and "examples/patient-ins.json" in page
    assert "Pour l&#x27;intégrateur" in page or "Pour l'intégrateur" in page        # the hand-written part
    for name in ("espace-consent", "espace-communication", "espace-vsm-composition", "espace-auditevent",
                 "espace-immunization", "fr-core-identity-reliability", "audit-chain"):
        assert (site / f"StructureDefinition-{name}.html").exists(), name
    vsm = (site / "StructureDefinition-espace-vsm-composition.html").read_text(encoding="utf-8")
    assert "bundle-vsm-synthese-medicale.json" in vsm and "Bundle.entry[0].resource" in vsm


def test_every_published_profile_has_an_integrator_section(definitions: Definitions, site: Path) -> None:
    """Each StructureDefinition we publish (profiles, extensions, datatypes) has its hand-written
    `ig/pages/profiles/<id>.md`: who sends it, with which interaction, the rules integrators get
    wrong, an example. A new profile without one fails here."""
    missing, unrendered = [], []
    for sd in published_by_us(definitions):
        if sd["resourceType"] != "StructureDefinition":
            continue
        page = PAGES_DIR / "profiles" / f"{sd['id']}.md"
        if not page.exists() or "## Pour l'intégrateur" not in page.read_text(encoding="utf-8"):
            missing.append(sd["id"])
            continue
        html = (site / f"StructureDefinition-{sd['id']}.html").read_text(encoding="utf-8")
        if 'id="pour-l-int-grateur"' not in html:
            unrendered.append(sd["id"])
    assert not missing, f"write ig/pages/profiles/<id>.md with a '## Pour l'intégrateur' section for {missing}"
    assert not unrendered, unrendered


def test_terminology_search_and_security_pages(site: Path) -> None:
    terminology = (site / "terminology.html").read_text(encoding="utf-8")
    assert "MASQUE_PS" in terminology and "sous-ensemble" in terminology
    assert "psychiatrie" in (site / "security.html").read_text(encoding="utf-8")
    security = (site / "security.html").read_text(encoding="utf-8")
    assert "Masseur-kinésithérapeute" in security and "refusé" in security and "ETREAT" in security
    search = (site / "search-parameters.html").read_text(encoding="utf-8")
    assert "period-start" in search and "conversation" in search          # generated table + usage rules
    assert "FR Core 2.1.0" in (site / "index.html").read_text(encoding="utf-8")
    downloaded = json.loads((site / "StructureDefinition-espace-consent.json").read_text(encoding="utf-8"))
    assert downloaded["snapshot"]["element"]
    assert json.loads((site / "ImplementationGuide-espace.json").read_text(encoding="utf-8"))["id"] == "espace"


@pytest.mark.parametrize(("markdown", "html"), [
    ("# Titre *un*", '<h1 id="titre-un">Titre <em>un</em></h1>'),
    ("Du `code` et **gras** [lien](a.html)",
     '<p>Du <code>code</code> et <strong>gras</strong> <a href="a.html">lien</a></p>'),
    ("- a\n- b <c>", "<ul><li>a</li><li>b &lt;c&gt;</li></ul>"),
    ("1. un\n2. deux", "<ol><li>un</li><li>deux</li></ol>"),
    ("| A | B |\n|---|---|\n| 1 | 2 |", "<table><thead><tr><th>A</th><th>B</th></tr></thead><tbody>\n<tr><td>1</td>"
                                        "<td>2</td></tr>\n</tbody></table>"),
    ("```\n<x>\n```", "<pre><code>&lt;x&gt;</code></pre>"),
])
def test_markdown(markdown: str, html: str) -> None:
    assert render(markdown) == html
