"""Compiled SearchParameter expressions: FHIRPath in, a function `resource -> [(value, type)]` out.

A SearchParameter expression is compiled once per (parameter, resource type):

1. The expression is split on its top-level unions (`A | B | C`) and only the parts that apply to
   the resource type are kept (the shared `clinical-patient` expression lists 30 types; evaluating
   all of them for every resource is what makes naive extraction slow).
2. Each part that is a plain path, possibly with the handful of functions SearchParameters
   really use (`where(resolve() is X)`, `where(field='x')`, `as(X)`, `ofType(X)`,
   `extension('url')`), is compiled into a small typed walker driven by the StructureDefinitions.
   That covers all but a few of the R4 expressions and costs a few microseconds per part.
3. Anything else falls back to fhirpathpy (with the R4 model and our `resolve()`).

Each result carries its FHIR type (`CodeableConcept`, `dateTime`, `Reference`, ...), which is what
the index normalisers need to know how to read the value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.engine.nodes import FP_Type, ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from fhir_server.definitions import Definitions

log = logging.getLogger(__name__)

# (value, FHIR type code, path describing its children), type and path None when the fallback
# engine could not tell
Value = tuple[Any, str | None, str | None]
Evaluator = Callable[[dict], list[Value]]

# One node of the typed walker: the JSON value, its FHIR type code, and the path under which its
# children are described (the type name for data types, the element path for backbone elements).
_Node = tuple[Any, str, str]


class UnsupportedExpression(Exception):
    """The expression is outside the subset compiled natively (fhirpathpy takes over)."""


class UnknownElement(UnsupportedExpression):
    """The expression names an element the resource type does not have."""


@dataclass(frozen=True)
class CompiledExpression:
    """A search expression compiled for one resource type (or one composite component)."""

    source: str
    evaluate: Evaluator
    multi: bool          # may yield several values for one resource
    native: bool         # compiled by the typed walker (False: fhirpathpy fallback for some part)
    types: frozenset[str] | None     # FHIR types of the results (None: unknown, fallback engine)
    reference_targets: frozenset[str] | None = None   # for references: the types they may point to


# -- splitting ----------------------------------------------------------------------------------

def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` where it stands outside parentheses and string literals."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted:
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            elif char == separator and depth == 0:
                parts.append("".join(current).strip())
                current = []
                continue
        current.append(char)
    parts.append("".join(current).strip())
    return parts


def split_union(expression: str) -> list[str]:
    """Split on `|` outside parentheses and string literals."""
    return [p for p in _split_top_level(expression, "|") if p]


_ROOT_NAME = re.compile(r"^\(*\s*([A-Za-z]\w*)")


def parts_for_type(expression: str, resource_type: str, known_types: set[str]) -> list[str]:
    """The union parts of `expression` that can produce values for `resource_type`."""
    kept = []
    for part in split_union(expression):
        match = _ROOT_NAME.match(part)
        root = match.group(1) if match else ""
        if root in known_types and root not in (resource_type, "Resource", "DomainResource"):
            continue
        kept.append(part)
    return kept


# -- the typed walker ---------------------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_]\w*$")
_WHERE_RESOLVE = re.compile(r"^where\(\s*resolve\(\)\s+is\s+([A-Za-z]+)\s*\)$")
_WHERE_EQUALS = re.compile(r"^where\(\s*([A-Za-z_]\w*)\s*=\s*'([^']*)'\s*\)$")
_AS_FUNCTION = re.compile(r"^(?:as|ofType)\(\s*([A-Za-z]+)\s*\)$")
_EXTENSION = re.compile(r"^extension\(\s*'([^']*)'\s*\)$")
_AS_OPERATOR = re.compile(r"^(.*\S)\s+as\s+([A-Za-z]+)$", re.DOTALL)

_Step = Callable[[list[_Node], dict], list[_Node]]


def _split_dots(text: str) -> list[str]:
    return _split_top_level(text, ".")


def _matching_paren(text: str) -> int:
    depth = 0
    quoted = False
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted:
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    return index
    raise UnsupportedExpression(text)


class _Compiler:
    """Compiles one union part into a list of steps, tracking the possible types statically."""

    def __init__(self, definitions: Definitions, context_type: str, context_path: str,
                 known_types: set[str]) -> None:
        self.definitions = definitions
        self.known_types = known_types
        self.context = (context_type, context_path)
        self.types: set[tuple[str, str]] = {self.context}
        self.multi = False
        self.steps: list[_Step] = []
        self.elements: set[str] = set()          # element paths the last step reached
        self.resolved: set[str] | None = None    # types kept by `where(resolve() is X)`

    def compile(self, part: str) -> None:
        part = part.strip()
        if part.startswith("("):
            close = _matching_paren(part)
            self.compile(part[1:close])
            rest = part[close + 1:].strip()
            if rest:
                if not rest.startswith("."):
                    raise UnsupportedExpression(part)
                self._path(rest[1:], first=False)
            return
        match = _AS_OPERATOR.match(part)
        if match:
            self.compile(match.group(1))
            self._as_type(match.group(2))
            return
        self._path(part, first=True)

    def _path(self, text: str, first: bool) -> None:
        for position, token in enumerate(_split_dots(text)):
            if position == 0 and first and self._is_root(token):
                continue
            self._token(token)

    def _is_root(self, token: str) -> bool:
        if token in ("Resource", "DomainResource") or token == self.context[0]:
            return True
        if token in self.known_types:
            raise UnsupportedExpression(token)          # another type's part: filtered earlier
        return False

    def _token(self, token: str) -> None:
        if _IDENT.match(token):
            self._child(token)
        elif match := _WHERE_RESOLVE.match(token):
            self.steps.append(_resolve_is(match.group(1)))
            self.resolved = {match.group(1)} if self.resolved is None else self.resolved & {match.group(1)}
        elif match := _WHERE_EQUALS.match(token):
            self.steps.append(_where_equals(match.group(1), match.group(2)))
        elif match := _AS_FUNCTION.match(token):
            self._as_type(match.group(1))
        elif match := _EXTENSION.match(token):
            self._child("extension")
            self.steps.append(_where_equals("url", match.group(1)))
        else:
            raise UnsupportedExpression(token)

    def _as_type(self, type_name: str) -> None:
        self.types = {t for t in self.types if _is_a(t[0], type_name)}
        if not self.types:
            raise UnsupportedExpression(type_name)
        self.steps.append(_of_type(type_name))

    def _child(self, name: str) -> None:
        options: dict[str, list[tuple[str, str, str]]] = {}
        new_types: set[tuple[str, str]] = set()
        elements: set[str] = set()
        for _type_code, path in self.types:
            children = self.definitions.children(path)
            found = []
            info = children.get(name)
            if info is not None:
                found.append((info.name, info.type_code, info.path))
                self.multi = self.multi or info.is_array
                elements.add(f"{path}.{name}")
            else:   # a choice element: `value` stands for valueQuantity, valueString, ...
                for key, choice in children.items():
                    suffix = key[len(name):]
                    if key.startswith(name) and suffix and suffix[0].isupper() \
                            and suffix == choice.type_code[0].upper() + choice.type_code[1:]:
                        found.append((key, choice.type_code, choice.path))
                        self.multi = self.multi or choice.is_array
                        elements.add(f"{path}.{name}[x]")
            if found:
                options[path] = found
                new_types.update((code, child_path) for _key, code, child_path in found)
        if not options:
            raise UnknownElement(f"{name} is not an element of {', '.join(sorted(p for _c, p in self.types))}")
        self.types = new_types
        self.elements = elements
        self.resolved = None
        self.steps.append(_child_step(options))

    def reference_targets(self) -> set[str] | None:
        """Resource types the references reached may point to (None: any / unknown)."""
        if self.resolved is not None:
            return set(self.resolved)
        targets: set[str] = set()
        for element in self.elements:
            found = _element_targets(self.definitions, element)
            if found is None:
                return None
            targets |= found
        return targets or None

    def build(self) -> Callable[[dict, Any, str, str], list[Value]]:
        steps = tuple(self.steps)

        def run(root: dict, start: Any, type_code: str, path: str) -> list[Value]:
            nodes: list[_Node] = [(start, type_code, path)]
            for step in steps:
                nodes = step(nodes, root)
                if not nodes:
                    return []
            return nodes

        return run


# FHIRPath `as`/`ofType` also accept specialisations of the named type.
_SUBTYPES = {
    "Quantity": {"Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"},
    "uri": {"canonical", "url", "oid", "uuid"},
    "string": {"code", "id", "markdown"},
    "integer": {"positiveInt", "unsignedInt"},
}


def _is_a(type_code: str, wanted: str) -> bool:
    return type_code == wanted or type_code in _SUBTYPES.get(wanted, ())


def _child_step(options: dict[str, list[tuple[str, str, str]]]) -> _Step:
    def step(nodes: list[_Node], root: dict) -> list[_Node]:
        out: list[_Node] = []
        for value, _code, path in nodes:
            if not isinstance(value, dict):
                continue
            for key, code, child_path in options.get(path, ()):
                child = value.get(key)
                if child is None:
                    continue
                if isinstance(child, list):
                    out.extend((item, code, child_path) for item in child if item is not None)
                else:
                    out.append((child, code, child_path))
        return out
    return step


def _of_type(type_name: str) -> _Step:
    def step(nodes: list[_Node], root: dict) -> list[_Node]:
        return [node for node in nodes if _is_a(node[1], type_name)]
    return step


def _where_equals(field: str, literal: str) -> _Step:
    def step(nodes: list[_Node], root: dict) -> list[_Node]:
        return [node for node in nodes if isinstance(node[0], dict) and node[0].get(field) == literal]
    return step


def reference_type(reference: str, root: dict | None = None) -> str | None:
    """The resource type a literal reference points to (`Patient/1`, `http://x/fhir/Patient/1`,
    `Patient/1/_history/2`, or `#id` of a contained resource)."""
    if reference.startswith("#"):
        for contained in (root or {}).get("contained", ()):
            if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                return contained.get("resourceType")
        return None
    segments = reference.split("?", 1)[0].split("/")
    if len(segments) >= 4 and segments[-2] == "_history":
        segments = segments[:-2]
    if len(segments) >= 2 and segments[-2][:1].isupper():
        return segments[-2]
    return None


def _resolve_is(type_name: str) -> _Step:
    def step(nodes: list[_Node], root: dict) -> list[_Node]:
        out = []
        for node in nodes:
            value = node[0]
            if isinstance(value, dict):
                reference = value.get("reference")
                if isinstance(reference, str) and reference_type(reference, root) == type_name:
                    out.append(node)
            elif isinstance(value, str) and reference_type(value, root) == type_name:   # canonical/uri
                out.append(node)
        return out
    return step


def _element_targets(definitions: Definitions, element_path: str) -> set[str] | None:
    """Target types of a Reference/canonical element from its `targetProfile`s."""
    sd = definitions.base_types.get(element_path.split(".", 1)[0])
    if sd is None:
        return None
    for element in sd["snapshot"]["element"]:
        if element["path"] == element_path:
            targets: set[str] = set()
            for kind in element.get("type", ()):
                if kind.get("code") not in ("Reference", "canonical"):
                    continue
                profiles = kind.get("targetProfile") or []
                names = {p.rsplit("/", 1)[-1] for p in profiles}
                if not names or names & {"Resource", "DomainResource"}:
                    return None
                targets |= names
            return targets or None
    return None


# -- fhirpathpy fallback ------------------------------------------------------------------------

def _resolve_for_fhirpathpy(inputs: list) -> list:
    """`resolve()` for the fallback engine: a typed stub of the target, enough for `is X` tests."""
    out = []
    for item in inputs:
        reference = item.get("reference") if isinstance(item, dict) else item
        if isinstance(reference, str):
            target = reference_type(reference)
            if target:
                out.append(ResourceNode.create_node({"resourceType": target}, target))
    return out


def _has_extension(inputs: list, url: str) -> list:
    """`hasExtension(url)`, missing from fhirpathpy: true for each input carrying that extension."""
    return [any(isinstance(ext, dict) and ext.get("url") == url for ext in item.get("extension", ()))
            for item in inputs if isinstance(item, dict)] or [False]


_FHIRPATHPY_OPTIONS = {
    "userInvocationTable": {
        "resolve": {"fn": _resolve_for_fhirpathpy, "arity": {0: []}},
        "hasExtension": {"fn": _has_extension, "arity": {1: ["String"]}},
    },
    "returnRawData": True,
}


def _fhirpathpy_part(part: str) -> Callable[[dict, Any, str, str], list[Value]]:
    try:
        compiled = fhirpath_compile(part, models["r4"], _FHIRPATHPY_OPTIONS)
    except Exception as exc:  # noqa: BLE001 - the parser raises bare Exceptions
        raise ValueError(f"invalid FHIRPath expression {part!r}: {exc}") from exc

    def run(root: dict, start: Any, type_code: str, path: str) -> list[Value]:
        node = start if start is root else ResourceNode.create_node(start, path)
        try:
            found = compiled(node, {"resource": root, "rootResource": root})
        except Exception as exc:  # noqa: BLE001 - fhirpathpy raises bare Exceptions on odd data
            # indexing must never refuse a valid resource: the parameter just gets no value
            log.warning("search expression %r failed on %s: %s", part, root.get("resourceType"), exc)
            return []
        return [_from_fhirpathpy(item) for item in found if item is not None]

    return run


def _from_fhirpathpy(item: Any) -> Value:
    if isinstance(item, ResourceNode):
        path = item.path
        if isinstance(path, str) and "." not in path:
            return item.data, path, path
        return item.data, None, path
    if isinstance(item, FP_Type):
        return str(item), None, None
    return item, None, None


class _RaiseOnError(ErrorListener):
    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):  # noqa: N802, N803 - antlr API
        raise ValueError(f"FHIRPath syntax error at column {column}: {msg}")


def check_syntax(expression: str) -> None:
    """Raise ValueError for an expression FHIRPath cannot parse (fhirpathpy's own parser
    recovers silently and fails later, at evaluation)."""
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_RaiseOnError())
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_RaiseOnError())
    parser.expression()
    if parser.getCurrentToken().type != Token.EOF:
        raise ValueError(f"FHIRPath syntax error: unexpected {parser.getCurrentToken().text!r}")


# -- public entry points ------------------------------------------------------------------------

def compile_expression(definitions: Definitions, expression: str, context_type: str,
                       context_path: str | None = None, *, known_types: set[str] | None = None,
                       native: bool = True, strict: bool = False) -> CompiledExpression:
    """Compile `expression` for values of `context_type` (a resource type, or for composite
    components the element type/path the component expression starts from).

    `strict` (for SearchParameters posted at run time) rejects paths naming elements that do not
    exist, instead of silently indexing nothing. Raises ValueError for invalid expressions."""
    known = known_types if known_types is not None else set(definitions.resource_types)
    if strict:
        check_syntax(expression)
    parts = parts_for_type(expression, context_type, known)
    runners = []
    multi = len(parts) > 1
    all_native = True
    types: set[str] = set()
    targets: set[str] | None = set()
    for part in parts:
        runner = None
        if native:
            compiler = _Compiler(definitions, context_type, context_path or context_type, known)
            try:
                compiler.compile(part)
                runner = compiler.build()
                multi = multi or compiler.multi
                types.update(code for code, _path in compiler.types)
                part_targets = compiler.reference_targets()
                targets = None if part_targets is None or targets is None else targets | part_targets
            except UnknownElement as exc:
                if strict:
                    raise ValueError(str(exc)) from exc
                runner = None
            except UnsupportedExpression:
                runner = None
        if runner is None:
            runner = _fhirpathpy_part(part)
            multi = True
            all_native = False
            targets = None
        runners.append(runner)
    start_type, start_path = context_type, context_path or context_type
    evaluate = _combine(tuple(runners), start_type, start_path)
    return CompiledExpression(expression, evaluate, multi, all_native,
                              frozenset(types) if all_native else None,
                              frozenset(targets) if targets else None)


def _combine(runners: tuple, type_code: str, path: str) -> Evaluator:
    if len(runners) == 1:
        only = runners[0]

        def evaluate_one(value: Any, root: dict | None = None) -> list[Value]:
            return only(root if root is not None else value, value, type_code, path)
        return evaluate_one

    def evaluate_all(value: Any, root: dict | None = None) -> list[Value]:
        out: list[Value] = []
        for run in runners:
            out.extend(run(root if root is not None else value, value, type_code, path))
        return out
    return evaluate_all
