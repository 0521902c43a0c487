"""Registry of FHIR operations (`$name`): business modules register handlers here; the REST layer
routes `[base]/$op`, `[base]/Type/$op` and `[base]/Type/id/$op` to them, and the
CapabilityStatement lists them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir_server.engine.errors import error
from fhir_server.engine.model import RequestContext, Result


@dataclass(frozen=True)
class OperationCall:
    name: str
    resource_type: str | None
    resource_id: str | None
    method: str
    params: list[tuple[str, str]]      # from the URL
    body: Any                           # parsed body (usually Parameters or a resource), or None
    ctx: RequestContext

    @property
    def arguments(self) -> list[tuple[str, str]]:
        """The URL parameters, then the primitive parameters of a `Parameters` body written as the
        URL would carry them: an operation reads its simple inputs alike, invoked by GET or POST."""
        return [*self.params, *primitive_parameters(self.body)]


Handler = Callable[[OperationCall], Result]


def primitive_parameters(body: Any) -> list[tuple[str, str]]:
    """(name, value) of the `value[x]` parameters of a Parameters resource whose value is a
    primitive (booleans as `true`/`false`); other bodies have none."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return []
    found = []
    for parameter in body.get("parameter") or []:
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            continue
        value = next((v for k, v in parameter.items() if k.startswith("value")), None)
        if isinstance(value, bool):
            found.append((parameter["name"], "true" if value else "false"))
        elif isinstance(value, str | int | float | Decimal):
            found.append((parameter["name"], str(value)))
    return found


@dataclass
class Operation:
    name: str
    handler: Handler
    definition: str                     # canonical URL of the OperationDefinition
    resource_types: tuple[str, ...] = ()  # empty = every type
    system: bool = False
    type_level: bool = True
    instance: bool = False
    affects_state: bool = False
    documentation: str = ""


@dataclass
class OperationRegistry:
    operations: dict[str, Operation] = field(default_factory=dict)

    def register(self, operation: Operation) -> None:
        self.operations[operation.name] = operation

    def call(self, invocation: OperationCall) -> Result:
        operation = self.operations.get(invocation.name)
        if operation is None:
            raise error(404, "not-supported", f"Operation ${invocation.name} is not supported by this server")
        level_ok = (
            (invocation.resource_type is None and operation.system)
            or (invocation.resource_type is not None and invocation.resource_id is None and operation.type_level)
            or (invocation.resource_id is not None and operation.instance)
        )
        type_ok = invocation.resource_type is None or not operation.resource_types or \
            invocation.resource_type in operation.resource_types
        if not (level_ok and type_ok):
            where = invocation.resource_type or "system"
            raise error(404, "not-supported", f"Operation ${invocation.name} is not available at this level ({where})")
        if operation.affects_state and invocation.method == "GET":
            raise error(405, "not-supported", f"Operation ${invocation.name} changes data: invoke it with POST")
        return operation.handler(invocation)

    def for_type(self, resource_type: str) -> list[Operation]:
        return [op for op in self.operations.values()
                if (op.type_level or op.instance) and (not op.resource_types or resource_type in op.resource_types)]

    def system_level(self) -> list[Operation]:
        return [op for op in self.operations.values() if op.system]
