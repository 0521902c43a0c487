"""The three patch formats of the FHIR R4 `patch` interaction, as pure functions on resource dicts.

* JSON Patch (RFC 6902): `apply_json_patch(resource, operations)`.
* FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): `apply_fhirpath_patch(resource, parameters)`.
* XML Patch (RFC 5261): `apply_xml_patch(resource, document)`, on the resource's FHIR XML form.

All work on a copy and return it, so a patch that fails half-way never leaves a partially
modified resource behind. A malformed patch document is a 400 (`bad_request`); a well-formed patch
that cannot be applied to this resource (missing element, failed `test`, ambiguous path) is a 422
(`unprocessable`). Errors carry the FHIRPath expression of the element at fault.

FHIR JSON forbids empty objects and arrays, so both functions drop the ones a patch leaves behind
(removing the last telecom removes `telecom`), as parsing the patched resource would.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhirpathpy import evaluate
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from lxml import etree

from fhir_server.definitions import ElementInfo, load_definitions
from fhir_server.engine.errors import FhirError, bad_request, unprocessable
from fhir_server.formats.xml import FHIR_NS, XHTML_NS, parse_xml_safely, resource_to_xml, xml_to_resource

_MISSING: Any = object()


def _drop_empty(value: Any) -> Any:
    """Remove, in place and recursively, the `{}` and `[]` that FHIR JSON does not allow."""
    if isinstance(value, dict):
        for key in list(value):
            _drop_empty(value[key])
            if value[key] in ({}, []):
                del value[key]
    elif isinstance(value, list):
        for item in value:
            _drop_empty(item)
        value[:] = [item for item in value if item not in ({}, [])]
    return value


# =================================================================================================
# JSON Patch (RFC 6902, pointers per RFC 6901)
# =================================================================================================

_JSON_PATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")
_NEEDS_VALUE = ("add", "replace", "test")
_NEEDS_FROM = ("move", "copy")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE = re.compile(r"~(?![01])")


def apply_json_patch(resource: dict, operations: list) -> dict:
    """Apply an RFC 6902 JSON Patch document to `resource` and return the patched copy."""
    if not isinstance(operations, list):
        raise bad_request("A JSON Patch document must be a JSON array of operations")
    root_type = str(resource.get("resourceType") or "Resource")
    # Check the whole document before touching the resource: a malformed patch is a 400 whatever
    # the state of the resource.
    parsed = [_JsonPatchOp.parse(index, operation, root_type) for index, operation in enumerate(operations)]
    document: Any = copy.deepcopy(resource)
    for operation in parsed:
        document = operation.apply(document)
    if not isinstance(document, dict):
        raise unprocessable("The JSON Patch does not leave a JSON object as the resource", root_type)
    return _drop_empty(document)


def _pointer_expression(root_type: str, pointer: str) -> str:
    """The FHIRPath-like expression of a JSON pointer: `/name/0/family` -> `Patient.name[0].family`."""
    expression = root_type
    for token in pointer.split("/")[1:] if pointer else []:
        token = token.replace("~1", "/").replace("~0", "~")
        if _ARRAY_INDEX.fullmatch(token):
            expression += f"[{token}]"
        elif token != "-":                 # `-` (end of array) names no existing element
            expression += f".{token}"
    return expression


@dataclass(frozen=True)
class _JsonPatchOp:
    index: int                 # position in the patch document, named in every diagnostic
    op: str
    pointer: str
    from_pointer: str | None
    value: Any
    root_type: str

    @classmethod
    def parse(cls, index: int, operation: Any, root_type: str) -> _JsonPatchOp:
        def malformed(message: str, pointer: Any = None) -> FhirError:
            is_pointer = isinstance(pointer, str) and (not pointer or pointer.startswith("/"))
            expression = _pointer_expression(root_type, pointer) if is_pointer else ""
            return bad_request(f"JSON Patch operation {index}: {message}", expression)

        if not isinstance(operation, dict):
            raise malformed("an operation must be a JSON object")
        op, pointer = operation.get("op"), operation.get("path")
        if op is None:
            raise malformed("the 'op' member is missing", pointer)
        if op not in _JSON_PATCH_OPS:
            raise malformed(f"unknown op {op!r} (expected one of {', '.join(_JSON_PATCH_OPS)})", pointer)
        _check_pointer(pointer, "path", malformed)
        from_pointer = operation.get("from")
        if op in _NEEDS_FROM:
            _check_pointer(from_pointer, "from", malformed)
        if op == "move" and pointer.startswith(from_pointer + "/"):
            raise malformed(f"cannot move {from_pointer} into one of its own children", pointer)
        if op in _NEEDS_VALUE and "value" not in operation:
            raise malformed(f"the 'value' member is missing for op {op!r}", pointer)
        value = copy.deepcopy(operation["value"]) if op in _NEEDS_VALUE else _MISSING
        return cls(index, op, pointer, from_pointer if op in _NEEDS_FROM else None, value, root_type)

    def fail(self, message: str, pointer: str) -> FhirError:
        return unprocessable(f"JSON Patch operation {self.index} ({self.op}): {message}",
                             _pointer_expression(self.root_type, pointer))

    def apply(self, document: Any) -> Any:
        if self.op == "add":
            return self._add(document, self.pointer, self.value)
        if self.op == "remove":
            self._remove(document, self.pointer)
            return document
        if self.op == "replace":
            return self._replace(document, self.pointer, self.value)
        if self.op == "move":
            if self.from_pointer == self.pointer:
                self._get(document, self.pointer)
                return document
            moved = self._get(document, self.from_pointer)
            self._remove(document, self.from_pointer)
            return self._add(document, self.pointer, moved)
        if self.op == "copy":
            return self._add(document, self.pointer, copy.deepcopy(self._get(document, self.from_pointer)))
        actual = self._get(document, self.pointer)     # test
        if not _json_equal(actual, self.value):
            raise self.fail(f"the value at {self.pointer or '/'} is not the expected one", self.pointer)
        return document

    # -- pointer navigation ------------------------------------------------------------------------
    def _get(self, document: Any, pointer: str) -> Any:
        current = document
        for token in _tokens(pointer):
            current = self._child(current, token, pointer)
        return current

    def _child(self, container: Any, token: str, pointer: str) -> Any:
        if isinstance(container, dict) and token in container:
            return container[token]
        if isinstance(container, list) and _ARRAY_INDEX.fullmatch(token) and int(token) < len(container):
            return container[int(token)]
        raise self.fail(f"the path {pointer} does not exist in the resource", pointer)

    def _parent(self, document: Any, pointer: str) -> tuple[Any, str]:
        tokens = _tokens(pointer)
        parent = document
        for token in tokens[:-1]:
            parent = self._child(parent, token, pointer)
        return parent, tokens[-1]

    def _add(self, document: Any, pointer: str, value: Any) -> Any:
        if not pointer:
            return value                               # RFC 6902: adding at the root replaces it
        parent, token = self._parent(document, pointer)
        if isinstance(parent, dict):
            parent[token] = value
        elif isinstance(parent, list):
            if token == "-":
                parent.append(value)
            elif _ARRAY_INDEX.fullmatch(token) and int(token) <= len(parent):
                parent.insert(int(token), value)
            else:
                raise self.fail(f"the array index in {pointer} is out of range", pointer)
        else:
            raise self.fail(f"the parent of {pointer} is neither an object nor an array", pointer)
        return document

    def _replace(self, document: Any, pointer: str, value: Any) -> Any:
        if not pointer:
            return value
        parent, token = self._parent(document, pointer)
        self._child(parent, token, pointer)            # replace requires an existing target
        parent[token if isinstance(parent, dict) else int(token)] = value   # in place: keeps key order
        return document

    def _remove(self, document: Any, pointer: str) -> None:
        if not pointer:
            raise self.fail("the resource itself cannot be removed", pointer)
        parent, token = self._parent(document, pointer)
        self._child(parent, token, pointer)            # must exist
        if isinstance(parent, dict):
            del parent[token]
        else:
            del parent[int(token)]


def _check_pointer(pointer: Any, member: str, malformed: Callable[..., FhirError]) -> None:
    if not isinstance(pointer, str):
        raise malformed(f"the '{member}' member is missing or not a string")
    if pointer and not pointer.startswith("/"):
        raise malformed(f"'{member}' {pointer!r} is not a JSON pointer (it must start with '/')", pointer)
    if _BAD_ESCAPE.search(pointer):
        raise malformed(f"'{member}' {pointer!r} has a '~' not followed by 0 or 1", pointer)


def _tokens(pointer: str) -> list[str]:
    # ~1 before ~0, so that "~01" decodes to "~1" and not to "/" (RFC 6901 section 4)
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]] if pointer else []


def _json_equal(left: Any, right: Any) -> bool:
    """JSON equality for `test`: numbers compare by value (1.50 == 1.5) but never equal a boolean."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    numbers = (int, float, Decimal)
    if isinstance(left, numbers) and isinstance(right, numbers):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and left == right


# =================================================================================================
# FHIRPath Patch (FHIR R4 Parameters)
# =================================================================================================

_FHIRPATH_PATCH_TYPES = ("add", "insert", "delete", "replace", "move")
_REQUIRED_PARTS = {
    "add": ("path", "name", "value"),
    "insert": ("path", "value", "index"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}
_R4_MODEL = models["r4"]
# One member step of a FHIRPath location: `given`, `given[1]`, `` `div` ``
_MEMBER = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_]*)|`([^`]+)`)(?:\[(\d+)\])?")


def apply_fhirpath_patch(resource: dict, parameters: dict) -> dict:
    """Apply a FHIRPath Patch (a `Parameters` resource of `operation`s) and return the patched copy."""
    operations = _parse_operations(parameters)
    document = copy.deepcopy(resource)
    for operation in operations:
        _APPLY[operation.type](document, operation)
        # An operation may leave an empty list or object (deleting the last given name); later
        # operations must see the resource as FHIR would, without it.
        _drop_empty(document)
    return document


# -- the Parameters document -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Operation:
    position: int              # index in Parameters.parameter, for error locations
    type: str
    parts: dict[str, tuple[int, dict]]   # part name -> (index in `part`, the part)

    @property
    def location(self) -> str:
        return f"Parameters.parameter[{self.position}]"

    @property
    def path(self) -> str:
        return self.string_part("path")

    def part_location(self, name: str) -> str:
        return f"{self.location}.part[{self.parts[name][0]}]"

    def string_part(self, name: str) -> str:
        value = self.parts[name][1].get("valueString")
        if not isinstance(value, str) or not value:
            raise bad_request(f"The '{name}' part of FHIRPath Patch operation {self.position} "
                              "must have a valueString", self.part_location(name))
        return value

    def integer_part(self, name: str) -> int:
        value = self.parts[name][1].get("valueInteger")
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad_request(f"The '{name}' part of FHIRPath Patch operation {self.position} "
                              "must have a valueInteger", self.part_location(name))
        return value

    def value_part(self, type_path: str | None) -> tuple[Any, str | None]:
        return _part_value(self.parts["value"][1], type_path, self.part_location("value"))

    def not_applicable(self, message: str) -> FhirError:
        return unprocessable(f"FHIRPath Patch operation {self.position} ({self.type}) on {self.path}: "
                             f"{message}", self.path)


def _parse_operations(parameters: Any) -> list[_Operation]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise bad_request("A FHIRPath Patch must be a Parameters resource", "Parameters")
    entries = parameters.get("parameter", [])
    if not isinstance(entries, list):
        raise bad_request("Parameters.parameter must be an array", "Parameters.parameter")
    return [_parse_operation(position, entry) for position, entry in enumerate(entries)]


def _parse_operation(position: int, entry: Any) -> _Operation:
    location = f"Parameters.parameter[{position}]"
    if not isinstance(entry, dict) or entry.get("name") != "operation":
        raise bad_request(f"Parameter {position} of a FHIRPath Patch must be named 'operation'",
                          f"{location}.name")
    raw_parts = entry.get("part")
    if not isinstance(raw_parts, list):
        raise bad_request(f"FHIRPath Patch operation {position} has no parts", f"{location}.part")
    parts: dict[str, tuple[int, dict]] = {}
    for index, part in enumerate(raw_parts):
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or name in parts:
            raise bad_request(f"Part {index} of FHIRPath Patch operation {position} is unnamed or repeated",
                              f"{location}.part[{index}]")
        parts[name] = (index, part)
    if "type" not in parts:
        raise bad_request(f"FHIRPath Patch operation {position} has no 'type' part", f"{location}.part")
    type_index, type_part = parts["type"]
    kind = type_part.get("valueCode")
    if kind not in _FHIRPATH_PATCH_TYPES:
        raise bad_request(f"FHIRPath Patch operation {position} has type {kind!r}; expected one of "
                          f"{', '.join(_FHIRPATH_PATCH_TYPES)}", f"{location}.part[{type_index}]")
    for required in _REQUIRED_PARTS[kind]:
        if required not in parts:
            raise bad_request(f"FHIRPath Patch operation {position} ({kind}) has no '{required}' part",
                              f"{location}.part")
    operation = _Operation(position, kind, parts)
    _check_part_types(operation)
    return operation


def _check_part_types(operation: _Operation) -> None:
    """Reject ill-typed parts before any operation runs: a malformed patch is a 400 whatever the
    resource. (Values are built again when applied, once the target type is known.)"""
    for name in _REQUIRED_PARTS[operation.type]:
        if name in ("path", "name"):
            operation.string_part(name)
        elif name == "value":
            operation.value_part(None)
        else:
            operation.integer_part(name)


def _part_value(part: dict, type_path: str | None, location: str) -> tuple[Any, str | None]:
    """The value a part carries and, for a `value[x]`, its type suffix (`valueCoding` -> `Coding`),
    which picks the JSON name of a choice element. Complex values may be spelled as nested parts."""
    value_keys = [key for key in part if key.startswith("value")]
    if len(value_keys) == 1 and "part" not in part and "resource" not in part:
        key = value_keys[0]
        return copy.deepcopy(part[key]), key[len("value"):]
    if not value_keys and "resource" in part and "part" not in part:
        return copy.deepcopy(part["resource"]), None
    if not value_keys and isinstance(part.get("part"), list) and "resource" not in part:
        return _value_from_parts(part["part"], type_path, f"{location}.part"), None
    raise bad_request("A FHIRPath Patch value must be exactly one of a value[x], a resource or parts",
                      location)


def _value_from_parts(parts: list, type_path: str | None, location: str) -> dict:
    """Build a complex value from parts named after its elements (see the `contact` example of the
    specification). Element definitions decide which elements are arrays."""
    children = _children(type_path)
    built: dict = {}
    for index, part in enumerate(parts):
        part_location = f"{location}[{index}]"
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or not name:
            raise bad_request("Each part of a complex FHIRPath Patch value must have a name", part_location)
        name = name.removesuffix("[x]")
        declared = children.get(name)
        value, suffix = _part_value(part, declared.path if declared else None, part_location)
        key = _property_name(name, suffix, children)
        info = children.get(key)
        if info is not None and info.is_array:
            built.setdefault(key, []).append(value)
        elif key in built:                     # an element of unknown cardinality given twice
            previous = built[key]
            built[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            built[key] = value
    return built


# -- definitions ----------------------------------------------------------------------------------

def _children(type_path: str | None) -> dict[str, ElementInfo]:
    return load_definitions().children(type_path) if type_path else {}


def _property_name(name: str, suffix: str | None, children: dict[str, ElementInfo]) -> str:
    """The JSON name for element `name` holding a value of type `suffix`: a choice element named by
    its stem (`value`) takes the type (`valueString`)."""
    if name in children or not suffix:
        return name
    return name + suffix if name + suffix in children else name


def _choice_renamed(key: str, suffix: str | None, children: dict[str, ElementInfo]) -> str:
    """The JSON name of choice element `key` (`valueQuantity`) once given a value of type `suffix`
    (`String` -> `valueString`); `key` itself when it is not a choice element."""
    info = children.get(key)
    if info is None or not suffix:
        return key
    type_suffix = info.type_code[:1].upper() + info.type_code[1:]
    stem = key.removesuffix(type_suffix)
    if stem and stem != key and stem + suffix in children:
        return stem + suffix
    return key


# -- locating elements ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Slot:
    """Where one element sits in the working copy: `container[key]`."""

    container: dict | list | None    # None for the resource itself
    key: str | int | None
    owner: dict | None               # the object holding the property (for list items: the list's owner)
    prop: str | None                 # the property name in `owner`
    owner_type: str | None           # definitions path of `owner`, for children()
    type_path: str | None            # definitions path of the element itself
    value: Any


def _index_nodes(document: dict) -> dict[int, _Slot]:
    """Slot of every object and array of the document, by identity: fhirpathpy hands back the very
    dicts of the document it evaluates, which is how results are mapped back to their place."""
    root_type = document.get("resourceType")
    slots = {id(document): _Slot(None, None, None, None, None, root_type, document)}
    _index_children(document, root_type, slots)
    return slots


def _index_children(node: dict, type_path: str | None, slots: dict[int, _Slot]) -> None:
    children = _children(type_path)
    for key, value in node.items():
        info = children.get(key)
        child_type = info.path if info else None
        if isinstance(value, list):
            slots[id(value)] = _Slot(node, key, node, key, type_path, child_type, value)
            for index, item in enumerate(value):
                _index_value(_Slot(value, index, node, key, type_path, child_type, item), slots)
        else:
            _index_value(_Slot(node, key, node, key, type_path, child_type, value), slots)


def _index_value(slot: _Slot, slots: dict[int, _Slot]) -> None:
    if not isinstance(slot.value, dict):
        return
    # a contained resource is described by its own type, not by `Resource`
    resource_type = slot.value.get("resourceType")
    if isinstance(resource_type, str):
        slot = dataclasses.replace(slot, type_path=resource_type)
    slots[id(slot.value)] = slot
    _index_children(slot.value, slot.type_path, slots)


def _evaluate(document: dict, operation: _Operation, path: str) -> list:
    variables = {"resource": document, "rootResource": document}
    try:
        # returnRawData keeps fhirpathpy's ResourceNodes (the document's own objects, plus the
        # location of primitives) instead of copies
        return evaluate(document, path, variables, _R4_MODEL, {"returnRawData": True})
    except Exception as exc:  # fhirpathpy raises bare Exceptions for syntax and evaluation errors
        reason = str(exc)[:200]            # fhirpathpy messages may embed whole collections
        raise bad_request(f"The path {path!r} of FHIRPath Patch operation {operation.position} cannot be "
                          f"evaluated: {reason}", operation.part_location("path")) from exc


def _locate(document: dict, operation: _Operation, path: str) -> list[_Slot]:
    """The slots of the elements `path` selects in `document`."""
    slots = _index_nodes(document)
    located: list[_Slot] = []
    for node in _evaluate(document, operation, path):
        if not isinstance(node, ResourceNode):
            raise operation.not_applicable("the path selects computed values, not elements of the resource")
        if isinstance(node.data, (dict, list)):
            slot = slots.get(id(node.data))
        else:
            slot = _primitive_slot(document, node, slots)
        if slot is None:
            # fhirpathpy gives primitives without their owner and a location only for simple paths
            # (not after `extension(url)`): find them through the element that holds them instead.
            by_parent = _locate_through_parent(document, operation, path, slots)
            if by_parent is None:
                raise operation.not_applicable("cannot tell where the selected element is in the resource")
            return by_parent
        located.append(slot)
    return _unique(located)


def _unique(located: list[_Slot]) -> list[_Slot]:
    seen: set[tuple[int, Any]] = set()
    unique = []
    for slot in located:
        if slot.prop is not None and slot.prop.startswith("_"):
            continue        # the extensions of a primitive (`_birthDate`) travel with the primitive
        identity = (id(slot.container), slot.key)
        if identity not in seen:
            seen.add(identity)
            unique.append(slot)
    return unique


def _primitive_slot(document: dict, node: ResourceNode, slots: dict[int, _Slot]) -> _Slot | None:
    """Follow the location fhirpathpy records for a primitive (`Patient.name[0].given[1]`), and
    trust it only if it leads to the value that was selected."""
    location = getattr(node, "propName", None)
    if not isinstance(location, str):
        return None
    head, *steps = location.split(".")
    if head != document.get("resourceType") or not steps:
        return None
    slot = slots[id(document)]
    for position, step in enumerate(steps):
        match = _MEMBER.fullmatch(step)
        owner = slot.value
        if match is None or not isinstance(owner, dict):
            return None
        is_last = position == len(steps) - 1
        key = _existing_key(owner, match.group(1) or match.group(2), node.path if is_last else None)
        slot = _member_slot(owner, key, match.group(3), slots) if key else None
        if slot is None:
            return None
    if type(slot.value) is not type(node.data) or slot.value != node.data:
        return None
    return slot


def _existing_key(owner: dict, name: str, type_code: str | None) -> str | None:
    """The key of `owner` that FHIRPath name `name` designates: itself, or the present choice
    element (`value` -> `valueQuantity`)."""
    if name in owner:
        return name
    if type_code:
        typed = name + type_code[:1].upper() + type_code[1:]
        if typed in owner:
            return typed
    for key in owner:
        if key.startswith(name) and key[len(name):][:1].isupper():
            return key
    return None


def _member_slot(owner: dict, key: str, index: str | None, slots: dict[int, _Slot]) -> _Slot | None:
    """Slot of `owner[key]` or, with an index, of `owner[key][index]`."""
    owner_slot = slots.get(id(owner))
    owner_type = owner_slot.type_path if owner_slot else None
    info = _children(owner_type).get(key)
    type_path = info.path if info else None
    value = owner[key]
    if isinstance(value, list):
        if index is None or int(index) >= len(value):
            return None
        return _Slot(value, int(index), owner, key, owner_type, type_path, value[int(index)])
    if index not in (None, "0"):                  # FHIRPath: a single value is item 0 of its collection
        return None
    return _Slot(owner, key, owner, key, owner_type, type_path, value)


def _split_last_member(path: str) -> tuple[str | None, str, str | None] | None:
    """Split `Patient.telecom.where(system='email').value[0]` into its parent expression, the last
    member name and its index; None when the path does not end with a member."""
    depth, quote, last_dot = 0, "", -1
    for position, char in enumerate(path):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'`\"":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "." and depth == 0:
            last_dot = position
    match = _MEMBER.fullmatch(path[last_dot + 1:].strip())
    if match is None:
        return None
    parent = path[:last_dot].strip() if last_dot >= 0 else None
    return parent, match.group(1) or match.group(2), match.group(3)


def _locate_owners(document: dict, operation: _Operation, path: str
                   ) -> tuple[list[dict], str, str | None] | None:
    """The objects holding the last member of `path`, that member's name and its index."""
    split = _split_last_member(path)
    if split is None:
        return None
    parent, name, index = split
    if parent is None:
        if name == document.get("resourceType"):
            return None                      # the path is the resource itself, not one of its members
        return [document], name, index
    owners = [slot.value for slot in _locate(document, operation, parent)]
    if not all(isinstance(owner, dict) for owner in owners):
        return None
    return owners, name, index


def _locate_through_parent(document: dict, operation: _Operation, path: str,
                           slots: dict[int, _Slot]) -> list[_Slot] | None:
    found = _locate_owners(document, operation, path)
    if found is None:
        return None
    owners, name, index = found
    located = []
    for owner in owners:
        key = _existing_key(owner, name, None)
        if key is None:
            continue
        items = range(len(owner[key])) if isinstance(owner[key], list) else [None]
        located += [_member_slot(owner, key, None if i is None else str(i), slots) for i in items]
    located = _unique([slot for slot in located if slot is not None])
    if index is None:
        return located
    # FHIRPath indexes the whole collection (`name.given[1]` is the second given name overall)
    return located[int(index):int(index) + 1]


def _locate_one(document: dict, operation: _Operation) -> _Slot:
    located = _locate(document, operation, operation.path)
    if len(located) != 1:
        found = "no element" if not located else f"{len(located)} elements"
        raise operation.not_applicable(f"the path must select exactly one element, it selects {found}")
    return located[0]


@dataclass(frozen=True)
class _ListTarget:
    owner: dict
    prop: str
    info: ElementInfo | None
    items: list


def _locate_list(document: dict, operation: _Operation, create: bool) -> _ListTarget:
    """The list `path` names (`Patient.identifier`), which must belong to exactly one object."""
    found = _locate_owners(document, operation, operation.path)
    if found is None or found[2] is not None:
        raise operation.not_applicable("the path must end with the name of a repeating element")
    owners, name, _ = found
    if len(owners) != 1:
        raise operation.not_applicable(f"the path must belong to exactly one element, not {len(owners)}")
    owner = owners[0]
    owner_slot = _index_nodes(document).get(id(owner))
    children = _children(owner_slot.type_path if owner_slot else None)
    prop = _existing_key(owner, name, None) or name
    info = children.get(prop)
    if (info is not None and not info.is_array) or (children and info is None):
        raise operation.not_applicable(f"'{prop}' is not a repeating element")
    if prop not in owner:
        if not create:
            raise operation.not_applicable(f"there is no '{prop}' list to move items in")
        owner[prop] = []
    if not isinstance(owner[prop], list):
        raise operation.not_applicable(f"'{prop}' is not a list")
    return _ListTarget(owner, prop, info, owner[prop])


def _primitive_extensions(owner: dict, prop: str) -> list | None:
    """The `_given`-style array that holds the ids/extensions of a primitive array, item by item."""
    extensions = owner.get("_" + prop)
    return extensions if isinstance(extensions, list) else None


# -- the operations -------------------------------------------------------------------------------

def _add(document: dict, operation: _Operation) -> None:
    target = _locate_one(document, operation)
    if not isinstance(target.value, dict):
        raise operation.not_applicable("elements can only be added to a complex element")
    children = _children(target.type_path)
    name = operation.string_part("name").removesuffix("[x]")
    declared = children.get(name)
    value, suffix = operation.value_part(declared.path if declared else None)
    prop = _property_name(name, suffix, children)
    info = children.get(prop)
    if children and info is None:
        raise operation.not_applicable(f"{target.type_path} has no element '{prop}'")
    existing = target.value.get(prop)
    if (info is not None and info.is_array) or isinstance(existing, list):
        target.value.setdefault(prop, []).append(value)
    elif prop in target.value:
        raise operation.not_applicable(f"'{prop}' already has a value and does not repeat: use replace")
    else:
        target.value[prop] = value


def _insert(document: dict, operation: _Operation) -> None:
    target = _locate_list(document, operation, create=True)
    index = operation.integer_part("index")
    if not 0 <= index <= len(target.items):
        raise operation.not_applicable(f"index {index} is outside 0..{len(target.items)}")
    value, _ = operation.value_part(target.info.path if target.info else None)
    target.items.insert(index, value)
    extensions = _primitive_extensions(target.owner, target.prop)
    if extensions is not None:
        extensions.insert(index, None)


def _delete(document: dict, operation: _Operation) -> None:
    located = _locate(document, operation, operation.path)
    if not located:
        return                                  # the specification: delete the element "if found"
    if len(located) > 1:
        raise operation.not_applicable(f"only one element can be deleted, the path selects {len(located)}")
    slot = located[0]
    if slot.container is None:
        raise operation.not_applicable("the resource itself cannot be deleted")
    if isinstance(slot.container, list):
        del slot.container[slot.key]
        extensions = _primitive_extensions(slot.owner, slot.prop)
        if extensions is not None and slot.key < len(extensions):
            del extensions[slot.key]
    else:
        del slot.container[slot.key]
        slot.container.pop("_" + slot.key, None)


def _replace(document: dict, operation: _Operation) -> None:
    slot = _locate_one(document, operation)
    if slot.container is None:
        raise operation.not_applicable("the resource itself cannot be replaced")
    value, suffix = operation.value_part(slot.type_path)
    if isinstance(slot.container, list):
        slot.container[slot.key] = value
        return
    key = _choice_renamed(slot.key, suffix, _children(slot.owner_type))
    if key != slot.key:
        # valueQuantity -> valueString: same place in the object, new name, old extensions gone
        items = [(key if k == slot.key else k, v) for k, v in slot.container.items() if k != "_" + slot.key]
        slot.container.clear()
        slot.container.update(items)
    slot.container[key] = value


def _move(document: dict, operation: _Operation) -> None:
    target = _locate_list(document, operation, create=False)
    source, destination = operation.integer_part("source"), operation.integer_part("destination")
    last = len(target.items) - 1
    for name, index in (("source", source), ("destination", destination)):
        if not 0 <= index <= last:
            raise operation.not_applicable(f"{name} index {index} is outside 0..{last}")
    target.items.insert(destination, target.items.pop(source))
    extensions = _primitive_extensions(target.owner, target.prop)
    if extensions is not None and len(extensions) == len(target.items):
        extensions.insert(destination, extensions.pop(source))


_APPLY: dict[str, Callable[[dict, _Operation], None]] = {
    "add": _add,
    "insert": _insert,
    "delete": _delete,
    "replace": _replace,
    "move": _move,
}


# =================================================================================================
# XML Patch (RFC 5261), on the FHIR XML form of the resource
# =================================================================================================

_XML_PATCH_OPS = ("add", "replace", "remove")
_ADD_POSITIONS = (None, "before", "after", "prepend")
_MAX_SELECTOR = 1000
_LOCATION_STEP = re.compile(r"^[A-Za-z_][\w.-]*(?::[A-Za-z_][\w.-]*)?(?:[/\[]|$)")
# Selectors are plain XPath 1.0: the extension functions lxml offers for some namespaces (EXSLT
# regular expressions...) are not made available to clients.
_EXTENSION_NAMESPACES = ("http://exslt.org/",)


def apply_xml_patch(resource: dict, patch: bytes) -> dict:
    """Apply an RFC 5261 XML Patch document (`<diff>` of add / replace / remove operations, with
    XPath selectors over the resource's FHIR XML) and return the patched resource."""
    diff = parse_xml_safely(patch, "The XML Patch document")
    root_type = str(resource.get("resourceType") or "Resource")
    operations = [_XmlPatchOp.parse(index, element, root_type)
                  for index, element in enumerate(e for e in diff if isinstance(e.tag, str))]
    document = etree.fromstring(resource_to_xml(resource)).getroottree()     # our own output: trusted
    for operation in operations:
        operation.apply(document)
    try:
        patched = xml_to_resource(etree.tostring(document.getroot(), encoding="UTF-8"))
    except FhirError as exc:
        reasons = "; ".join(issue.diagnostics for issue in exc.issues)
        raise unprocessable(f"The XML Patch leaves a resource that is not valid FHIR XML: {reasons}",
                            *(e for issue in exc.issues for e in issue.expression)) from None
    return patched


@dataclass(frozen=True)
class _XmlPatchOp:
    index: int                 # position in the patch document, named in every diagnostic
    op: str
    selector: str
    namespaces: dict[str, str]
    element: Any               # the operation's element in the patch document (its content)
    root_type: str

    @classmethod
    def parse(cls, index: int, element: Any, root_type: str) -> _XmlPatchOp:
        op = etree.QName(element).localname
        if op not in _XML_PATCH_OPS:
            raise bad_request(f"XML Patch operation {index}: <{op}> is not an operation (expected "
                              f"{', '.join(_XML_PATCH_OPS)})")
        selector = element.get("sel")
        if not selector or len(selector) > _MAX_SELECTOR:
            raise bad_request(f"XML Patch operation {index} (<{op}>): the sel attribute (an XPath selector of at "
                              f"most {_MAX_SELECTOR} characters) is required")
        if op == "add" and element.get("pos") not in _ADD_POSITIONS:
            raise bad_request(f"XML Patch operation {index} (<add>): pos is before, after or prepend, not "
                              f"{element.get('pos')!r}")
        namespaces = {prefix: uri for prefix, uri in element.nsmap.items()
                      if prefix and not uri.startswith(_EXTENSION_NAMESPACES)}
        # RFC 5261: a relative location path starts at the document node (`f:Patient/...`)
        absolute = "/" + selector if _LOCATION_STEP.match(selector) else selector
        return cls(index, op, absolute, namespaces, element, root_type)

    def malformed(self, message: str) -> FhirError:
        return bad_request(f"XML Patch operation {self.index} (<{self.op}> {self.selector}): {message}")

    def fail(self, message: str, node: Any = None) -> FhirError:
        location = _node_expression(node, self.root_type) if node is not None else self.root_type
        return unprocessable(f"XML Patch operation {self.index} (<{self.op}> {self.selector}): {message}", location)

    def apply(self, document: Any) -> None:
        target = self._select(document)
        if self.op == "add":
            self._add(target)
        elif self.op == "replace":
            self._replace(target)
        else:
            self._remove(target)

    def _select(self, document: Any) -> Any:
        try:
            found = document.xpath(self.selector, namespaces=self.namespaces)
        except (etree.XPathError, ValueError) as exc:
            raise self.malformed(f"the selector is not a valid XPath expression ({exc})") from None
        if not isinstance(found, list):
            raise self.malformed("the selector must select a node, not compute a value")
        if len(found) != 1:
            raise self.fail(f"the selector must select exactly one node, it selects {len(found)}")
        return found[0]

    # -- the operations ------------------------------------------------------------------------------
    def _add(self, target: Any) -> None:
        if not isinstance(target, etree._Element):
            raise self.fail("nodes are added to an element", _owner(target))
        kind = self.element.get("type")
        if kind is not None:
            self._add_attribute(target, kind)
            return
        content = self._content_elements()
        position = self.element.get("pos")
        if position in ("before", "after"):
            parent = target.getparent()
            if parent is None:
                raise self.fail("nothing is added beside the resource itself", target)
            start = parent.index(target) + (1 if position == "after" else 0)
            for offset, child in enumerate(content):
                parent.insert(start + offset, child)
        elif position == "prepend":
            for offset, child in enumerate(content):
                target.insert(offset, child)
        else:
            target.extend(content)

    def _add_attribute(self, target: Any, kind: str) -> None:
        name = kind[1:] if kind.startswith("@") else ""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
            raise self.malformed(f"type {kind!r}: only unqualified attributes (type=\"@name\") are added")
        if name in target.attrib:
            raise self.fail(f"the element already has a {name} attribute: use replace", target)
        target.set(name, self.element.text or "")

    def _replace(self, target: Any) -> None:
        if isinstance(target, etree._Element):
            replacement = self._content_elements()
            parent = target.getparent()
            if len(replacement) != 1:
                raise self.malformed(f"an element is replaced by exactly one element, not {len(replacement)}")
            if parent is None:
                raise self.fail("the resource itself is not replaced", target)
            parent.replace(target, replacement[0])
        elif getattr(target, "is_attribute", False):
            target.getparent().set(target.attrname, self.element.text or "")
        else:
            raise self.fail("only elements and attributes are replaced (FHIR XML has no text content)",
                            _owner(target))

    def _remove(self, target: Any) -> None:
        if isinstance(target, etree._Element):
            parent = target.getparent()
            if parent is None:
                raise self.fail("the resource itself is not removed", target)
            parent.remove(target)
        elif getattr(target, "is_attribute", False):
            del target.getparent().attrib[target.attrname]
        else:
            raise self.fail("only elements and attributes are removed (FHIR XML has no text content)",
                            _owner(target))

    def _content_elements(self) -> list:
        """Copies of the elements an add or replace carries, which must be FHIR elements."""
        if (self.element.text or "").strip() or any((child.tail or "").strip() for child in self.element):
            raise self.malformed("FHIR XML has no text outside attributes: the operation carries elements only")
        content = [copy.deepcopy(child) for child in self.element if isinstance(child.tag, str)]
        for child in content:
            child.tail = None
            for node in child.iter():
                namespace = etree.QName(node).namespace if isinstance(node.tag, str) else FHIR_NS
                if namespace not in (FHIR_NS, XHTML_NS):
                    raise self.malformed(f"<{etree.QName(node).localname}> is not in the FHIR namespace: added "
                                         f"elements are FHIR elements (declare xmlns=\"{FHIR_NS}\")")
        return content


def _owner(node: Any) -> Any:
    """The element an attribute or a text node belongs to."""
    return node.getparent() if hasattr(node, "getparent") else None


def _node_expression(node: Any, root_type: str) -> str:
    """FHIRPath-like location of an element of the resource's XML: `DocumentReference.securityLabel[1]`."""
    if not isinstance(node, etree._Element):
        return root_type
    steps = []
    while node is not None and node.getparent() is not None:
        name = etree.QName(node).localname
        same = [s for s in node.getparent() if isinstance(s.tag, str) and etree.QName(s).localname == name]
        steps.append(f"{name}[{same.index(node)}]" if len(same) > 1 else name)
        node = node.getparent()
    return ".".join([root_type, *reversed(steps)])
