"""The static site of the implementation guide (`ig/site/`, served at `/ig/` by the app).

Everything an integrator reads about a profile is generated from its StructureDefinition (the
same definitions the server enforces): purpose and description, the elements the differential
constrains (cardinality, types and targets, bindings, fixed and pattern values), the must-support
elements, the invariants, and the examples of `examples/` that claim it. Hand-written Markdown
(`ig/pages/*.md`, `ig/pages/profiles/<id>.md`) adds the guidance no definition carries.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import orjson

from fhir_server.access.matrix import MATRIX_FILE
from fhir_server.definitions import Definitions
from fhir_server.ig.guide import IG_DIR, example_resources, grouping_of, implementation_guide, published_by_us
from fhir_server.ig.markdown import inline, render

SITE_DIR = IG_DIR / "site"
PAGES_DIR = IG_DIR / "pages"
GROUP_TITLES = {"profiles": "Profils", "extensions": "Extensions", "datatypes": "Types de données"}
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1b1b;line-height:1.45}
header{background:#000091;color:#fff;padding:.8rem 2rem}header a{color:#fff;margin-right:1.2rem;text-decoration:none}
header strong{margin-right:2rem}main{max-width:72rem;margin:1.5rem auto;padding:0 2rem}
table{border-collapse:collapse;margin:1rem 0;width:100%;font-size:.9rem}th,td{border:1px solid #ccc;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f0f0f7}code{background:#f4f4f4;padding:0 .2rem}
pre{background:#f6f6f6;padding:1rem;overflow:auto;font-size:.8rem}.ms{color:#b00;font-weight:bold}
.meta td:first-child{width:12rem;font-weight:bold}
"""


@dataclass(frozen=True)
class Example:
    path: Path
    location: str            # "" for the file's resource, else where it sits (Bundle.entry[0].resource)
    resource: dict


def build_site(definitions: Definitions, out: Path = SITE_DIR, pages: Path = PAGES_DIR,
               examples_dir: Path | None = None) -> list[Path]:
    """Write the whole site into `out` (emptied first); returns the files written."""
    guide = implementation_guide(definitions) if examples_dir is None else \
        implementation_guide(definitions, examples=examples_dir)
    examples = _claimed_examples(example_resources() if examples_dir is None else example_resources(examples_dir))
    site = _Site(out, guide)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ours = published_by_us(definitions)
    site.page("index.html", "Accueil", _markdown(pages / "index.md") + _artefact_summary(ours))
    site.page("profiles.html", "Profils et extensions", _profiles_index(ours))
    for sd in (r for r in ours if r["resourceType"] == "StructureDefinition"):
        full = definitions.structures.get(sd["url"], sd)
        body = _profile_page(full, definitions, examples.get(sd["url"], []), pages)
        site.page(f"StructureDefinition-{sd['id']}.html", sd.get("title") or sd["id"], body)
    site.page("terminology.html", "Terminologie", _terminology_page(ours))
    site.page("search-parameters.html", "Paramètres de recherche",
              _markdown(pages / "search-parameters.md") + _search_page(ours))
    site.page("operations.html", "Opérations", _markdown(pages / "operations.md") + _operations_page(ours))
    site.page("validation.html", "Validation", _markdown(pages / "validation.md"))
    site.page("security.html", "Modèle de sécurité", _markdown(pages / "security.md") + _access_matrix())
    for resource in ours:
        full = definitions.structures.get(resource.get("url", ""), resource) \
            if resource["resourceType"] == "StructureDefinition" else resource
        site.json(f"{resource['resourceType']}-{resource['id']}.json", full)
    site.json("ImplementationGuide-espace.json", guide)
    return site.written


class _Site:
    def __init__(self, out: Path, guide: dict) -> None:
        self.out = out
        self.guide = guide
        self.written: list[Path] = []
        root = guide.get("definition", {}).get("page", {})
        self.nav = [(root.get("nameUrl", "index.html"), root.get("title", "Accueil"))] + [
            (p["nameUrl"], p["title"]) for p in root.get("page", [])]

    def page(self, name: str, title: str, body: str) -> None:
        links = "".join(f'<a href="{n}">{html.escape(t)}</a>' for n, t in self.nav)
        text = (f'<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"><title>{html.escape(title)} - '
                f'{html.escape(self.guide.get("title", ""))}</title><style>{STYLE}</style></head><body><header>'
                f'<strong>Espace FHIR {html.escape(self.guide.get("version", ""))}</strong>{links}</header><main>'
                f"<h1>{html.escape(title)}</h1>{body}</main></body></html>\n")
        self._write(name, text)

    def json(self, name: str, resource: dict) -> None:
        self._write(name, orjson.dumps(resource, option=orjson.OPT_INDENT_2).decode() + "\n")

    def _write(self, name: str, text: str) -> None:
        path = self.out / name
        path.write_text(text, encoding="utf-8")
        self.written.append(path)


# -- examples -------------------------------------------------------------------------------------------
def _claimed_examples(files: Iterable[tuple[Path, dict]]) -> dict[str, list[Example]]:
    """Profile URL -> the example resources claiming it (files, bundle entries, contained)."""
    claimed: dict[str, list[Example]] = {}
    for path, resource in files:
        for location, item in _resources_in(resource, ""):
            for url in (item.get("meta") or {}).get("profile") or []:
                claimed.setdefault(url.split("|", 1)[0], []).append(Example(path, location, item))
    return claimed


def _resources_in(resource: dict, location: str) -> Iterator[tuple[str, dict]]:
    yield location, resource
    for index, entry in enumerate(resource.get("entry") or []):
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            yield from _resources_in(entry["resource"], f"{location or 'Bundle'}.entry[{index}].resource")


# -- pages ----------------------------------------------------------------------------------------------
def _markdown(path: Path) -> str:
    return render(path.read_text(encoding="utf-8")) if path.exists() else ""


def _link(resource: dict) -> str:
    return f'<a href="{resource["resourceType"]}-{resource["id"]}.html">{html.escape(_title(resource))}</a>'


def _title(resource: dict) -> str:
    return resource.get("title") or resource.get("name") or resource.get("id", "")


def _first_sentence(text: str) -> str:
    sentence = (text or "").split(". ", 1)[0].strip()
    return sentence + ("" if sentence.endswith(".") else ".")


def _artefact_summary(ours: list[dict]) -> str:
    counts: dict[str, int] = {}
    for resource in ours:
        counts[grouping_of(resource)] = counts.get(grouping_of(resource), 0) + 1
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(counts.items()))
    return f"<h2>Contenu du guide</h2><table><tr><th>Catégorie</th><th>Ressources</th></tr>{rows}</table>"


def _profiles_index(ours: list[dict]) -> str:
    parts = []
    for group, title in GROUP_TITLES.items():
        rows = [f"<tr><td>{_link(r)}</td><td><code>{html.escape(r['url'])}</code></td>"
                f"<td>{html.escape(_first_sentence(r.get('description', '')))}</td></tr>"
                for r in ours if r["resourceType"] == "StructureDefinition" and grouping_of(r) == group]
        if rows:
            parts.append(f"<h2>{title}</h2><table><tr><th>Nom</th><th>URL canonique</th><th>Objet</th></tr>"
                         + "".join(rows) + "</table>")
    return "".join(parts)


def _profile_page(sd: dict, definitions: Definitions, examples: list[Example], pages: Path) -> str:
    base = definitions.structures.get(str(sd.get("baseDefinition", "")).split("|", 1)[0])
    base_name = html.escape(_title(base) if base else str(sd.get("baseDefinition")))
    if base and base in definitions.local:
        base_name = _link(base)
    meta = [("URL canonique", f"<code>{html.escape(sd['url'])}</code>"),
            ("Version", html.escape(str(sd.get("version", "")))), ("Type", html.escape(sd.get("type", ""))),
            ("Dérive de", base_name), ("Éditeur", html.escape(sd.get("publisher", "")))]
    if sd.get("context"):
        meta.append(("Contexte", ", ".join(f"<code>{html.escape(c.get('expression', ''))}</code>"
                                            for c in sd["context"])))
    body = ["<table class=\"meta\">" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in meta) + "</table>",
            f"<p>{inline(sd.get('description', ''))}</p>"]
    if sd.get("purpose"):
        body.append(f"<p><em>{inline(sd['purpose'])}</em></p>")
    body.append(_markdown(pages / "profiles" / f"{sd['id']}.md"))
    body.append(_constraints_table(sd))
    body.append(_must_support(sd))
    body.append(_invariants(sd))
    body.append(_examples(examples))
    body.append(f'<p><a href="StructureDefinition-{html.escape(sd["id"])}.json">StructureDefinition (JSON, '
                "avec snapshot)</a></p>")
    return "".join(body)


def _snapshot_by_id(sd: dict) -> dict[str, dict]:
    return {e.get("id", e["path"]): e for e in (sd.get("snapshot") or {}).get("element", [])}


def _constraints_table(sd: dict) -> str:
    snapshot = _snapshot_by_id(sd)
    rows = []
    for diff in (sd.get("differential") or {}).get("element", []):
        element = snapshot.get(diff.get("id", diff["path"]), diff)
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in (
            f"<code>{html.escape(diff.get('id', diff['path']))}</code>",
            f"{element.get('min', '')}..{element.get('max', '')}",
            html.escape(_types(diff)), _binding(diff), _value(diff),
            '<span class="ms">MS</span>' if diff.get("mustSupport") else "",
            html.escape(diff.get("short", "")))) + "</tr>")
    return ("<h2>Contraintes du profil</h2><table><tr><th>Élément</th><th>Card.</th><th>Type</th><th>Liaison</th>"
            "<th>Valeur</th><th>MS</th><th>Description</th></tr>" + "".join(rows) + "</table>")


def _types(element: dict) -> str:
    shown = []
    for type_ in element.get("type", []):
        targets = [t.rsplit("/", 1)[-1] for t in type_.get("targetProfile", []) + type_.get("profile", [])]
        shown.append(f"{type_.get('code')}({' | '.join(targets)})" if targets else type_.get("code", ""))
    return ", ".join(shown)


def _binding(element: dict) -> str:
    binding = element.get("binding")
    if not binding:
        return ""
    return f"{html.escape(binding.get('strength', ''))} : <code>{html.escape(binding.get('valueSet', ''))}</code>"


def _value(element: dict) -> str:
    for key, value in element.items():
        if key.startswith(("fixed", "pattern")):
            shown = html.escape(json.dumps(value, ensure_ascii=False))
            return f"{'fixed' if key.startswith('fixed') else 'pattern'} <code>{shown}</code>"
    if element.get("slicing"):
        discriminators = ", ".join(f"{d['type']} @ {d['path']}" for d in element["slicing"].get("discriminator", []))
        return f"découpage : {html.escape(discriminators)} ({html.escape(element['slicing'].get('rules', ''))})"
    return ""


def _must_support(sd: dict) -> str:
    items = [e.get("id", e["path"]) for e in (sd.get("snapshot") or {}).get("element", []) if e.get("mustSupport")]
    if not items:
        return ""
    return ("<h2>Éléments « must support »</h2><p>Un système qui produit ces éléments les renseigne quand il les "
            "connaît ; un système qui les reçoit les stocke et les restitue.</p><ul>"
            + "".join(f"<li><code>{html.escape(i)}</code></li>" for i in items) + "</ul>")


def _invariants(sd: dict) -> str:
    rows = [f"<tr><td>{html.escape(c.get('key', ''))}</td><td>{html.escape(c.get('severity', ''))}</td>"
            f"<td><code>{html.escape(e.get('id', e['path']))}</code></td><td>{html.escape(c.get('human', ''))}</td>"
            f"<td><code>{html.escape(c.get('expression', ''))}</code></td></tr>"
            for e in (sd.get("differential") or {}).get("element", []) for c in e.get("constraint", [])]
    if not rows:
        return ""
    return ("<h2>Invariants</h2><table><tr><th>Clé</th><th>Sévérité</th><th>Élément</th><th>Règle</th>"
            "<th>FHIRPath</th></tr>" + "".join(rows) + "</table>")


def _examples(examples: list[Example]) -> str:
    if not examples:
        return ""
    parts = ["<h2>Exemples</h2>"]
    for example in examples[:3]:
        where = f" ({html.escape(example.location)})" if example.location else ""
        text = json.dumps(example.resource, ensure_ascii=False, indent=2, default=_number)
        parts.append(f"<h3><code>examples/{html.escape(example.path.name)}</code>{where}</h3>"
                     f"<pre><code>{html.escape(text)}</code></pre>")
    return "".join(parts)


def _number(value: object) -> float | int:
    """Examples are parsed with Decimal numbers (as the server reads them)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _terminology_page(ours: list[dict]) -> str:
    parts = ["<p>Listes complètes : les codes absents sont refusés quand la liaison est <em>required</em>. "
             "Sous-ensembles documentés (CodeSystem <code>fragment</code>, ValueSet en expansion non close) : "
             "les codes listés sont confirmés, les autres acceptés sans vérification.</p>"]
    for kind in ("CodeSystem", "ValueSet"):
        parts.append(f"<h2>{kind}</h2>")
        for resource in (r for r in ours if r["resourceType"] == kind):
            parts.append(f"<h3 id=\"{html.escape(resource['id'])}\">{html.escape(_title(resource))}</h3>"
                         f"<p><code>{html.escape(resource['url'])}</code> — {html.escape(_completeness(resource))}</p>"
                         f"<p>{inline(resource.get('description', ''))}</p>{_codes(resource)}")
    return "".join(parts)


def _completeness(resource: dict) -> str:
    if resource["resourceType"] == "CodeSystem":
        return "liste complète" if resource.get("content") == "complete" else "sous-ensemble (fragment)"
    return "sous-ensemble documenté (expansion non close)" if "expansion" in resource and "compose" not in resource \
        else "définition en intension"


def _codes(resource: dict) -> str:
    if resource["resourceType"] == "CodeSystem":
        rows = [(resource["url"], c.get("code", ""), c.get("display", "")) for c in resource.get("concept", [])]
    else:
        rows = [(c.get("system", ""), c.get("code", ""), c.get("display", ""))
                for c in (resource.get("expansion") or {}).get("contains", [])]
        for include in (resource.get("compose") or {}).get("include", []):
            system = include.get("system", "")
            if include.get("concept"):
                rows += [(system, c.get("code", ""), c.get("display", "")) for c in include["concept"]]
            elif include.get("system"):
                rows.append((include["system"], "(tous les codes)", ""))
    body = "".join(f"<tr><td><code>{html.escape(s)}</code></td><td><code>{html.escape(c)}</code></td>"
                   f"<td>{html.escape(d)}</td></tr>" for s, c, d in rows)
    return f"<table><tr><th>Système</th><th>Code</th><th>Libellé</th></tr>{body}</table>" if rows else ""


def _search_page(ours: list[dict]) -> str:
    rows = []
    for parameter in (r for r in ours if r["resourceType"] == "SearchParameter"):
        cells = [f"<code>{html.escape(parameter.get('code', ''))}</code>",
                 html.escape(", ".join(parameter.get("base", []))), html.escape(parameter.get("type", "")),
                 f"<code>{html.escape(parameter.get('expression', ''))}</code>",
                 f"<code>{html.escape(parameter.get('url', ''))}</code>", inline(parameter.get("description", ""))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<p>Paramètres de recherche ajoutés aux paramètres FHIR R4 (tous les paramètres R4 des types servis "
            "restent disponibles ; la liste complète est dans le CapabilityStatement, "
            "<code>GET [base]/metadata</code>).</p><table><tr><th>Code</th><th>Base</th><th>Type</th>"
            "<th>Expression</th><th>URL</th><th>Description</th></tr>" + "".join(rows) + "</table>")


def _operations_page(ours: list[dict]) -> str:
    """Each OperationDefinition we publish: where it is invoked, what it does, its parameters."""
    parts = ["<p>Opérations propres au serveur, et restrictions des opérations FHIR R4 telles que le serveur les "
             "sert (<code>base</code>). Le CapabilityStatement (<code>GET [base]/metadata</code>) nomme la "
             "définition de chaque opération déclarée.</p>"]
    for operation in (r for r in ours if r["resourceType"] == "OperationDefinition"):
        meta = [("URL canonique", f"<code>{html.escape(operation['url'])}</code>"),
                ("Invocation", "<br>".join(f"<code>{html.escape(path)}</code>" for path in _invocations(operation))),
                ("Modifie des données", "oui (POST)" if operation.get("affectsState") else "non (GET ou POST)")]
        if operation.get("base"):
            meta.append(("Restreint", f"<code>{html.escape(operation['base'])}</code>"))
        parts.append(f"<h2 id=\"{html.escape(operation['id'])}\">{html.escape(_title(operation))}</h2>"
                     "<table class=\"meta\">" + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in meta)
                     + f"</table><p>{inline(operation.get('description', ''))}</p>"
                     f"<p>{inline(operation.get('comment', ''))}</p>{_parameters_table(operation)}")
    return "".join(parts)


def _invocations(operation: dict) -> list[str]:
    code = f"${operation['code']}"
    paths = [f"[base]/{code}"] if operation.get("system") else []
    for resource_type in operation.get("resource", []):
        paths += [f"[base]/{resource_type}/{code}"] if operation.get("type") else []
        paths += [f"[base]/{resource_type}/[id]/{code}"] if operation.get("instance") else []
    return paths


def _parameters_table(operation: dict) -> str:
    rows = "".join(_parameter_rows(operation.get("parameter", []), ""))
    return ("<table><tr><th>Paramètre</th><th>Sens</th><th>Card.</th><th>Type</th><th>Description</th></tr>"
            f"{rows}</table>")


def _parameter_rows(parameters: list[dict], prefix: str) -> Iterator[str]:
    for parameter in parameters:
        name = f"{prefix}{parameter['name']}"
        cells = (f"<code>{html.escape(name)}</code>", "entrée" if parameter["use"] == "in" else "sortie",
                 f"{parameter['min']}..{parameter['max']}", html.escape(parameter.get("type", "(parties)")),
                 inline(parameter.get("documentation", "")))
        yield "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        yield from _parameter_rows(parameter.get("part", []), f"{name}.")


def _access_matrix(matrix_file: Path = MATRIX_FILE) -> str:
    matrix = json.loads(matrix_file.read_text(encoding="utf-8"))
    classes = list(matrix["classes"])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    rows = []
    for code, profession in [*matrix["professions"].items(), ("autre", matrix["default"])]:
        denied = set(profession.get("deny", []))
        cells = "".join(f"<td>{'refusé' if c in denied else 'autorisé'}</td>" for c in classes)
        rows.append(f"<tr><td>{html.escape(code)} — {html.escape(profession.get('label', ''))}</td>{cells}</tr>")
    definitions = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(group.get('description', ''))}</td>"
        f"<td>{'<br>'.join(f'<code>{html.escape(c)}</code>' for c in group['codes'])}</td></tr>"
        for name, group in matrix["classes"].items())
    return (f"<h2>Matrice d'habilitation (générée de <code>access_matrix.json</code>)</h2>"
            f"<p>{html.escape(matrix.get('description', ''))}</p>"
            f"<table><tr><th>Profession (TRE_G15)</th>{head}</tr>{''.join(rows)}</table>"
            f"<h3>Classes de données</h3><table><tr><th>Classe</th><th>Description</th><th>Codes</th></tr>"
            f"{definitions}</table>")
