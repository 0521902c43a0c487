"""FHIRPath invariants (ElementDefinition.constraint) compiled once and evaluated with fhirpathpy.

fhirpathpy lacks a few functions the FHIR invariants use; we supply them as user functions:
`hasValue()`, `htmlChecks()` (safe-XHTML check), `memberOf()` (local terminology), `conformsTo()`
(our own profile validator) and `resolve()` (contained resources, bundle entries, then the store
through the validator's resolver). They need the resource being validated, which fhirpathpy does not
pass to user functions, so the validator publishes its services for the duration of a walk in a
context variable (`evaluation_services`).

Expressions are lightly pre-processed: `trace()` calls are dropped (fhirpathpy rejects the
two-argument form used by dom-3) and `.as(T)` becomes `.ofType(T)` (fhirpathpy raises on `as`
over a collection, which dom-3 does; `ofType` is the same test without that restriction).
fhirpathpy also reads a primitive that has both a value and a `_name` companion (`"type": "batch",
"_type": {extension}`) as two items, so resources holding such primitives are judged on a copy
without the companions (see `InvariantScope`).

The invariants that every element or resource carries (ele-1 on all elements, ext-1 on all
extensions, dom-3 on all resources with contained resources) are evaluated natively, matched by
their exact expression: through fhirpathpy they would cost ~25 us per element (ele-1) or several
milliseconds per resource (dom-3) and dominate validation. Their Python twins are checked against
fhirpathpy in the unit tests.

An invariant fhirpathpy cannot compile is skipped, with a note kept in `InvariantEngine.notes`; one
that raises at run time is treated as "unknown" for that element. Only an explicit `false` result is
a failure: an empty result is not, and neither is a `false` that depended on a user function which
could not decide (see `EvaluationServices.undecided`), so what we cannot evaluate never becomes a
false error.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from fhir_server.validation.values import codes_in
from fhir_server.validation.xhtml import narrative_is_safe

log = logging.getLogger(__name__)
_MODEL = models["r4"]


@dataclass(frozen=True, eq=False)
class Invariant:
    key: str
    severity: str                  # error | warning (as declared by the constraint)
    human: str
    expression: str
    evaluate: Callable[[object, dict], list] | None     # None: a native twin, or not compilable


class EvaluationServices:
    """What the user functions need from the walk in progress (see profile.py).

    `undecided` is raised by a user function that had to answer without knowing (a value set we
    cannot expand, an unknown profile, a reference we cannot resolve): a `false` result computed
    from such an answer is not trusted."""

    undecided: bool = False

    def resolve(self, reference: str) -> dict | None:
        return None

    def member_of(self, value_set: str, system: str | None, code: str) -> bool | None:
        return None

    def conforms_to(self, resource: dict, profile: str) -> bool | None:
        return None


_SERVICES: ContextVar[EvaluationServices | None] = ContextVar("fhir_validation_services", default=None)


@contextlib.contextmanager
def evaluation_services(services: EvaluationServices) -> Iterator[None]:
    token = _SERVICES.set(services)
    try:
        yield
    finally:
        _SERVICES.reset(token)


# -- user functions ------------------------------------------------------------------------------
def _has_value(inputs: list) -> list:
    return [len(inputs) == 1 and _is_primitive(inputs[0])]


def _html_checks(inputs: list) -> list:
    return [all(isinstance(div, str) and narrative_is_safe(div) for div in inputs)]


def _member_of(inputs: list, value_set: str) -> list:
    services = _SERVICES.get()
    if services is None or len(inputs) != 1:
        return []
    answers = [services.member_of(value_set, system, code) for system, code in codes_in(inputs[0]) or ()]
    if any(a is True for a in answers):
        return [True]
    if answers and all(a is False for a in answers):
        return [False]
    services.undecided = True
    return []


def _conforms_to(inputs: list, profile: str) -> list:
    services = _SERVICES.get()
    if services is None or len(inputs) != 1 or not isinstance(inputs[0], dict):
        return []
    if isinstance(inputs[0], _UnresolvedResource):
        services.undecided = True
        return []
    answer = services.conforms_to(inputs[0], profile)
    if answer is None:
        services.undecided = True
        return []
    return [answer]


def _resolve(inputs: list) -> list:
    services = _SERVICES.get()
    nodes = []
    for item in inputs:
        reference = item.get("reference") if isinstance(item, dict) else item
        if not isinstance(reference, str):
            continue
        target = services.resolve(reference) if services else None
        if target is None:
            target = _stub_from_reference(reference)
            if services is not None:
                services.undecided = True
        if target is not None:
            nodes.append(ResourceNode.create_node(target, target["resourceType"]))
    return nodes


class _UnresolvedResource(dict):
    """What `resolve()` gives for a `Type/id` it cannot find: enough for `resolve() is Patient`,
    and recognisable so that `conformsTo()` answers "unknown" about it rather than "no"."""


def _stub_from_reference(reference: str) -> dict | None:
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return _UnresolvedResource(resourceType=parts[-2], id=parts[-1])
    return None


_USER_FUNCTIONS = {
    "hasValue": {"fn": _has_value, "arity": {0: []}},
    "htmlChecks": {"fn": _html_checks, "arity": {0: []}},
    "memberOf": {"fn": _member_of, "arity": {1: ["String"]}},
    "conformsTo": {"fn": _conforms_to, "arity": {1: ["String"]}},
    "resolve": {"fn": _resolve, "arity": {0: []}},
}
_OPTIONS = {"userInvocationTable": _USER_FUNCTIONS, "returnRawData": True}


def _is_primitive(value: object) -> bool:
    return isinstance(value, str | bool | int | float | Decimal)


# -- native twins of the universal invariants ------------------------------------------------------
def _ele_1(data: object) -> bool:
    """hasValue() or (children().count() > id.count())"""
    if isinstance(data, dict):
        return any(key != "id" and value not in (None, [], {}) for key, value in data.items())
    return data is not None


def _ext_1(data: object) -> bool:
    """extension.exists() != value.exists()"""
    if not isinstance(data, dict):
        return True
    has_extension = bool(data.get("extension"))
    has_value = any(key.startswith("value") and key[5:6].isupper() for key in data)
    return has_extension != has_value


def _dom_3(resource: object) -> bool:
    """Every contained resource is referenced from the resource ('#id'), or refers to it ('#').
    fhirpathpy walks `%resource.descendants()` four times per contained resource for this; we walk
    once. Any string starting with '#' counts as a local reference, not only `reference`, canonical,
    uri and url values: a little more lenient, never stricter."""
    if not isinstance(resource, dict) or not isinstance(resource.get("contained"), list):
        return True
    local_references = set(_local_references(resource))
    for contained in resource["contained"]:
        if not isinstance(contained, dict):
            continue
        if "#" + str(contained.get("id")) not in local_references and "#" not in set(_local_references(contained)):
            return False
    return True


def _local_references(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _local_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _local_references(item)
    elif isinstance(node, str) and node.startswith("#"):
        yield node


DOM_3 = ("contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().as(canonical) | "
         "%resource.descendants().as(uri) | %resource.descendants().as(url))) or descendants().where(reference = '#')"
         ".exists() or descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) = '#')"
         ".exists()).not()).trace('unmatched', id).empty()")

NATIVE_INVARIANTS: dict[str, Callable[[object], bool]] = {
    "hasValue() or (children().count() > id.count())": _ele_1,
    "extension.exists() != value.exists()": _ext_1,
    DOM_3: _dom_3,
}


# -- compiling and evaluating ----------------------------------------------------------------------
class InvariantEngine:
    """Compiles each distinct invariant expression once (process-wide for this engine)."""

    def __init__(self) -> None:
        self._compiled: dict[str, Callable[[object, dict], list] | None] = {}
        self._lock = threading.Lock()
        self.notes: dict[str, str] = {}      # expression -> why it was skipped / failed once

    def compile_all(self, constraints: list[dict]) -> tuple[Invariant, ...]:
        invariants = []
        for constraint in constraints:
            expression = constraint.get("expression")
            if not expression:
                continue            # xpath-only constraints: nothing we can evaluate
            invariants.append(Invariant(
                key=constraint.get("key", "?"),
                severity="warning" if constraint.get("severity") == "warning" else "error",
                human=constraint.get("human", expression),
                expression=expression,
                evaluate=self._compile(expression),
            ))
        return tuple(invariants)

    def check(self, invariant: Invariant, data: object, fhirpath_type: str | None,
              scope: InvariantScope) -> bool | None:
        """True (holds), False (violated) or None (could not be evaluated)."""
        native = NATIVE_INVARIANTS.get(invariant.expression)
        if native is not None:
            return native(data)
        if invariant.evaluate is None:
            return None
        if not scope.split_primitives:
            return self._evaluate(invariant, data, fhirpath_type, scope.variables)
        # fhirpathpy reads a primitive that has both a value and a `_name` companion as two items
        # (`type.count()` = 2): judge such resources without the companions, unless the invariant
        # looks at extensions, in which case a failure is only "unknown".
        if "extension" in invariant.expression:
            result = self._evaluate(invariant, data, fhirpath_type, scope.variables)
            return None if result is False else result
        return self._evaluate(invariant, _without_companions(data), fhirpath_type, scope.clean_variables)

    def _evaluate(self, invariant: Invariant, data: object, fhirpath_type: str | None,
                  variables: dict) -> bool | None:
        assert invariant.evaluate is not None
        node = data if fhirpath_type is None else ResourceNode.create_node(data, fhirpath_type)
        services = _SERVICES.get() or EvaluationServices()
        # conformsTo() validates other resources, evaluating their invariants inside this one
        outer_undecided, services.undecided = services.undecided, False
        try:
            result = invariant.evaluate(node, variables)
        except Exception as exc:  # noqa: BLE001 - any engine failure means "unknown", never an error
            self._note(invariant.expression, f"{invariant.key}: evaluation failed: {exc}")
            return None
        finally:
            undecided, services.undecided = services.undecided, outer_undecided
        if len(result) == 1:
            value = result[0].data if isinstance(result[0], ResourceNode) else result[0]
            if value is False:
                return None if undecided else False
        return True

    def _compile(self, expression: str) -> Callable[[object, dict], list] | None:
        if expression in NATIVE_INVARIANTS:
            return None
        if expression not in self._compiled:
            with self._lock:
                if expression not in self._compiled:
                    try:
                        self._compiled[expression] = compile_fhirpath(prepare(expression), _MODEL, _OPTIONS)
                    except Exception as exc:  # noqa: BLE001 - an unparsable invariant is skipped, noted
                        self._compiled[expression] = None
                        self._note(expression, f"cannot be compiled: {exc}")
        return self._compiled[expression]

    def _note(self, expression: str, message: str) -> None:
        if expression not in self.notes:
            self.notes[expression] = message
            log.info("FHIRPath invariant skipped (%s): %s", message, expression)


class InvariantScope:
    """The resource invariants are evaluated in: `%resource` and `%rootResource` (the container of
    a contained resource, else the resource itself)."""

    def __init__(self, resource: dict, root: dict) -> None:
        self.variables = {"resource": resource, "rootResource": root}
        self.split_primitives = _has_companions(root)        # the root includes contained resources

    @functools.cached_property
    def clean_variables(self) -> dict:
        return {name: _without_companions(value) for name, value in self.variables.items()}


def _has_companions(node: object) -> bool:
    """Does some primitive in `node` have both a value and a `_name` companion?"""
    if isinstance(node, dict):
        return any((str(key).startswith("_") and key[1:] in node) or _has_companions(value)
                   for key, value in node.items())
    if isinstance(node, list):
        return any(_has_companions(item) for item in node)
    return False


def _without_companions(node: object) -> object:
    if isinstance(node, dict):
        return {key: _without_companions(value) for key, value in node.items()
                if not (key.startswith("_") and key[1:] in node)}
    if isinstance(node, list):
        return [_without_companions(item) for item in node]
    return node


def prepare(expression: str) -> str:
    """Rewrite an invariant into what fhirpathpy evaluates (see the module docstring)."""
    expression = _drop_calls(expression, ".trace(")
    return re.sub(r"\.as\(", ".ofType(", expression)


def _drop_calls(expression: str, call: str) -> str:
    """Remove every `.fn( ... )` call, parentheses and string literals respected."""
    while (start := expression.find(call)) >= 0:
        depth, index, quote = 0, start + len(call) - 1, None
        while index < len(expression):
            char = expression[index]
            if quote:
                if char == "\\":
                    index += 1
                elif char == quote:
                    quote = None
            elif char in "'\"`":
                quote = char
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    break
            index += 1
        expression = expression[:start] + expression[index + 1:]
    return expression
