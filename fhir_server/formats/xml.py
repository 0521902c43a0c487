"""FHIR R4 XML <-> the FHIR JSON representation (Python dicts), driven by the StructureDefinitions.

Which elements a type has, their order, their types and cardinality all come from
`Definitions.children()`; which of them are XML attributes (`Element.id`, `Extension.url`, the
`value` of primitives) comes from the `representation: xmlAttr` flag of the snapshots. Nothing here
is written per resource type.

Parsing is hardened: no DTD, no entity expansion, no network, libxml2's default size and depth
limits, a byte limit on the body, and any DOCTYPE or entity declaration is refused.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lxml import etree

from fhir_server.definitions import PRIMITIVE_TYPES, ElementInfo, load_definitions
from fhir_server.engine.errors import bad_request, error

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

_XML_WHITESPACE = " \t\r\n"
# Checked on the raw bytes before libxml2 sees the DTD, so a hostile internal subset is never parsed
# (for ASCII-compatible encodings; the docinfo check after parsing covers UTF-16 and friends). A
# literal "<!DOCTYPE" inside a comment or CDATA section is refused too, which no FHIR content needs.
_DTD_MARKUP = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)

# Lexical rules of the R4 primitive types that are not strings in JSON.
_INTEGER_PATTERNS = {
    "integer": re.compile(r"-?(0|[1-9][0-9]*)"),
    "unsignedInt": re.compile(r"0|[1-9][0-9]*"),
    "positiveInt": re.compile(r"\+?[1-9][0-9]*"),
}
_DECIMAL_PATTERN = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


# -- definitions ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    """How one type or backbone path is laid out in XML."""

    attributes: dict[str, ElementInfo]     # written as XML attributes (id, url, value)
    elements: dict[str, ElementInfo]       # written as child elements, in definition order
    position: dict[str, int]               # element name -> rank in the definition order
    json_names: frozenset[str]             # every property a JSON object of this type may carry


@functools.cache
def _xml_attribute_paths() -> frozenset[str]:
    return frozenset(
        element["path"]
        for sd in load_definitions().base_types.values()
        for element in sd["snapshot"]["element"]
        if "xmlAttr" in element.get("representation", ())
    )


@functools.cache
def _layout(context: str) -> _Layout:
    attribute_paths = _xml_attribute_paths()
    attributes: dict[str, ElementInfo] = {}
    elements: dict[str, ElementInfo] = {}
    for name, info in load_definitions().children(context).items():
        if f"{context}.{name}" in attribute_paths:
            attributes[name] = info
        else:
            elements[name] = info
    json_names = set(attributes) | set(elements)
    json_names.update("_" + name for name, info in elements.items() if info.type_code in PRIMITIVE_TYPES)
    position = {name: rank for rank, name in enumerate(elements)}
    return _Layout(attributes, elements, position, frozenset(json_names))


def _is_resource_type(name: str) -> bool:
    return load_definitions().is_resource_type(name)


# -- safe parsing --------------------------------------------------------------------------------

def _new_parser() -> etree.XMLParser:
    # One parser per document: lxml parsers must not be shared between threads. Comments and
    # processing instructions carry no FHIR content, so they are dropped rather than refused.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
        remove_comments=True, remove_pis=True,
    )


def parse_xml_safely(data: bytes, what: str, expr: str = "", status: int = 400) -> etree._Element:
    """Parse untrusted XML (FHIR XML, CDA): no DTD, no entities, no network, no huge trees. A
    refusal is a FhirError with `status` whose diagnostics start with `what`."""
    refusal = f"{what} contains a DOCTYPE or entity declaration, which is not allowed"
    if _DTD_MARKUP.search(data):
        raise error(status, "invalid", refusal, expr)
    try:
        root = etree.fromstring(data, _new_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise error(status, "invalid", f"{what} is not well-formed XML: {exc}", expr) from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise error(status, "invalid", refusal, expr)
    return root


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, local = tag[1:].split("}", 1)
        return namespace, local
    return "", tag


# -- XML -> JSON ---------------------------------------------------------------------------------

def xml_to_resource(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Parse a FHIR XML resource into its JSON representation (decimals as `Decimal`)."""
    if len(data) > max_bytes:
        raise error(413, "too-costly", f"The XML body is {len(data)} bytes; at most {max_bytes} are accepted")
    root = parse_xml_safely(data, "The body")
    _, local = _split_tag(root.tag)
    return _read_resource(root, local)


def _read_resource(elem: etree._Element, expr: str) -> dict:
    namespace, name = _split_tag(elem.tag)
    if namespace != FHIR_NS:
        raise bad_request(f"The resource element '{name}' must be in the namespace {FHIR_NS}, "
                          f"not {namespace or 'no namespace'}", expr)
    if not _is_resource_type(name):
        raise bad_request(f"'{name}' is not a FHIR R4 resource type", expr)
    return {"resourceType": name, **_read_complex(elem, name, expr)}


def _read_complex(elem: etree._Element, context: str, expr: str) -> dict:
    layout = _layout(context)
    out: dict[str, Any] = {}
    _read_attributes(elem, layout, expr, out)
    _reject_text(elem.text, expr)
    occurrences: dict[str, list[etree._Element]] = {}
    for child in elem:
        _reject_text(child.tail, expr)
        occurrences.setdefault(_child_name(child, layout, expr), []).append(child)
    # XML element order is not checked; the output follows the definition order anyway.
    for name in sorted(occurrences, key=layout.position.__getitem__):
        _read_property(occurrences[name], layout.elements[name], f"{expr}.{name}", out)
    return out


def _read_attributes(elem: etree._Element, layout: _Layout, expr: str, out: dict) -> None:
    for key, value in elem.attrib.items():
        namespace, local = _split_tag(key)
        if namespace and namespace != FHIR_NS:
            continue  # e.g. xsi:schemaLocation: foreign attributes carry no FHIR content
        if namespace or local not in layout.attributes:
            raise bad_request(f"Unknown attribute '{local}'", expr)
        if value == "":
            raise bad_request(f"The attribute '{local}' is empty; FHIR does not allow empty values", expr)
        out[local] = value


def _reject_text(text: str | None, expr: str) -> None:
    if text and text.strip(_XML_WHITESPACE):
        snippet = text.strip(_XML_WHITESPACE)[:40]
        raise bad_request(f"Text content {snippet!r} is not allowed here; FHIR puts values in "
                          "'value' attributes", expr)


def _child_name(child: etree._Element, layout: _Layout, expr: str) -> str:
    if not isinstance(child.tag, str):
        raise bad_request("Unexpected XML node (entity reference)", expr)
    namespace, name = _split_tag(child.tag)
    info = layout.elements.get(name)
    if info is None:
        raise bad_request(f"Unknown element '{name}'", f"{expr}.{name}")
    expected = XHTML_NS if info.type_code == "xhtml" else FHIR_NS
    if namespace != expected:
        raise bad_request(f"The element '{name}' must be in the namespace {expected}, "
                          f"not {namespace or 'no namespace'}", f"{expr}.{name}")
    return name


def _read_property(found: list[etree._Element], info: ElementInfo, expr: str, out: dict) -> None:
    if not info.is_array and len(found) > 1:
        raise bad_request(f"The element '{info.name}' occurs {len(found)} times but at most once is allowed",
                          expr)
    exprs = [f"{expr}[{i}]" for i in range(len(found))] if info.is_array else [expr]
    if info.type_code in PRIMITIVE_TYPES:
        _read_primitives(found, exprs, info, out)
        return
    pairs = zip(found, exprs, strict=True)
    if info.type_code == "Resource":
        items = [_read_contained(elem, item_expr) for elem, item_expr in pairs]
    else:
        items = [_read_complex(elem, info.path, item_expr) for elem, item_expr in pairs]
    out[info.name] = items if info.is_array else items[0]


def _read_primitives(found: list[etree._Element], exprs: list[str], info: ElementInfo, out: dict) -> None:
    """Primitive values go to `name`, their id/extensions to `_name`; lists stay aligned."""
    if info.type_code == "xhtml":
        pairs = [(_xhtml_to_string(elem), None) for elem in found]
    else:
        pairs = [_read_primitive(elem, info.type_code, item_expr)
                 for elem, item_expr in zip(found, exprs, strict=True)]
    values = [value for value, _ in pairs]
    extras = [extra for _, extra in pairs]
    if info.is_array:
        if any(value is not None for value in values):
            out[info.name] = values
        if any(extra is not None for extra in extras):
            out["_" + info.name] = extras
        return
    if values[0] is not None:
        out[info.name] = values[0]
    if extras[0] is not None:
        out["_" + info.name] = extras[0]


def _read_primitive(elem: etree._Element, type_code: str, expr: str) -> tuple[Any, dict | None]:
    # The primitive type's own definition says `value` and `id` are attributes, `extension` children.
    fields = _read_complex(elem, type_code, expr)
    raw = fields.pop("value", None)
    if raw is None and not fields:
        raise bad_request(f"The element '{expr.rsplit('.', 1)[-1]}' has neither a value nor extensions", expr)
    value = None if raw is None else _typed_value(raw, type_code, expr)
    return value, fields or None


def _typed_value(raw: str, type_code: str, expr: str) -> Any:
    if type_code == "boolean":
        if raw not in ("true", "false"):
            raise bad_request(f"Invalid boolean {raw!r}: expected 'true' or 'false'", expr)
        return raw == "true"
    if type_code in _INTEGER_PATTERNS:
        if not _INTEGER_PATTERNS[type_code].fullmatch(raw) or not _INT32_MIN <= int(raw) <= _INT32_MAX:
            raise bad_request(f"Invalid {type_code} {raw!r}", expr)
        return int(raw)
    if type_code == "decimal":
        if not _DECIMAL_PATTERN.fullmatch(raw):
            raise bad_request(f"Invalid decimal {raw!r}", expr)
        return Decimal(raw)  # keeps the written precision: "1.50" stays Decimal("1.50")
    return raw


def _read_contained(container: etree._Element, expr: str) -> dict:
    """`<contained><Patient>...</Patient></contained>`: the inner element names the resource type."""
    if any(not _split_tag(key)[0] for key in container.attrib):
        raise bad_request("A resource container element takes no attributes", expr)
    _reject_text(container.text, expr)
    children = list(container)
    if len(children) != 1 or not isinstance(children[0].tag, str):
        raise bad_request(f"Expected exactly one resource inside, found {len(children)} elements", expr)
    _reject_text(children[0].tail, expr)
    return _read_resource(children[0], expr)


def _xhtml_to_string(div: etree._Element) -> str:
    # A detached copy declares the xhtml namespace on the div itself; unused outer declarations
    # (xsi, the FHIR default) are dropped.
    detached = copy.deepcopy(div)
    detached.tail = None
    etree.cleanup_namespaces(detached)
    return etree.tostring(detached, encoding="unicode")


# -- JSON -> XML ---------------------------------------------------------------------------------

def resource_to_xml(resource: dict, pretty: bool = False) -> bytes:
    """Serialize a FHIR JSON resource as FHIR XML, elements in StructureDefinition order."""
    return _XmlWriter().write(resource, pretty)


class _XmlWriter:
    def __init__(self) -> None:
        # Narrative divs are swapped in after indentation so pretty printing never alters XHTML.
        self._divs: list[tuple[etree._Element, etree._Element]] = []

    def write(self, resource: dict, pretty: bool) -> bytes:
        expr = resource.get("resourceType", "") if isinstance(resource, dict) else ""
        root = self._resource(resource, None, str(expr))
        if pretty:
            etree.indent(root, space="  ")
        for placeholder, div in self._divs:
            div.tail = placeholder.tail
            placeholder.getparent().replace(placeholder, div)
        body = etree.tostring(root, encoding="UTF-8")
        return XML_DECLARATION + body + (b"\n" if pretty else b"")

    def _resource(self, resource: Any, container: etree._Element | None, expr: str) -> etree._Element:
        name = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(name, str) or not _is_resource_type(name):
            raise bad_request(f"Expected a resource with a known resourceType, got {name!r}", expr)
        tag = f"{{{FHIR_NS}}}{name}"
        if container is None:
            elem = etree.Element(tag, nsmap={None: FHIR_NS})
        else:
            elem = etree.SubElement(container, tag)
        self._complex(elem, resource, name, expr, is_resource=True)
        return elem

    def _complex(self, elem: etree._Element, obj: Any, context: str, expr: str,
                 is_resource: bool = False) -> None:
        if not isinstance(obj, dict):
            raise bad_request(f"Expected a JSON object, got {type(obj).__name__}", expr)
        layout = _layout(context)
        _reject_unknown_properties(obj, layout, expr, is_resource)
        for name in layout.attributes:
            if obj.get(name) is not None:
                # FHIRPath names a primitive's `value` by the primitive element itself
                _set_attribute(elem, name, obj[name], expr if name == "value" else f"{expr}.{name}")
        for name, info in layout.elements.items():
            value = obj.get(name)
            extras = obj.get("_" + name) if info.type_code in PRIMITIVE_TYPES else None
            if value is not None or extras is not None:
                self._property(elem, info, value, extras, f"{expr}.{name}")

    def _property(self, parent: etree._Element, info: ElementInfo, value: Any, extras: Any,
                  expr: str) -> None:
        values = _as_items(value, info, expr)
        if info.type_code == "xhtml":
            for item in values:
                self._xhtml(parent, info.name, item, expr)
        elif info.type_code in PRIMITIVE_TYPES:
            self._primitives(parent, info, values, _as_items(extras, info, expr), expr)
        else:
            for index, item in enumerate(values):
                item_expr = f"{expr}[{index}]" if info.is_array else expr
                child = etree.SubElement(parent, f"{{{FHIR_NS}}}{info.name}")
                if info.type_code == "Resource":
                    self._resource(item, child, item_expr)
                else:
                    self._complex(child, item, info.path, item_expr)

    def _primitives(self, parent: etree._Element, info: ElementInfo, values: list, extras: list,
                    expr: str) -> None:
        for index in range(max(len(values), len(extras))):
            value = values[index] if index < len(values) else None
            extra = extras[index] if index < len(extras) else None
            if value is None and extra is None:
                continue  # a null in both aligned lists means "no item here"
            item_expr = f"{expr}[{index}]" if info.is_array else expr
            if extra is not None and not isinstance(extra, dict):
                raise bad_request(f"Expected a JSON object, got {type(extra).__name__}", item_expr)
            merged = dict(extra or {})
            if value is not None:
                merged["value"] = value
            child = etree.SubElement(parent, f"{{{FHIR_NS}}}{info.name}")
            self._complex(child, merged, info.type_code, item_expr)

    def _xhtml(self, parent: etree._Element, name: str, text: Any, expr: str) -> None:
        placeholder = etree.SubElement(parent, f"{{{FHIR_NS}}}{name}")
        self._divs.append((placeholder, _string_to_xhtml(text, expr)))


def _reject_unknown_properties(obj: dict, layout: _Layout, expr: str, is_resource: bool) -> None:
    for key in obj:
        if key not in layout.json_names and not (is_resource and key == "resourceType"):
            raise bad_request(f"Unknown property '{key}'", f"{expr}.{key}")


def _as_items(value: Any, info: ElementInfo, expr: str) -> list:
    if value is None:
        return []
    if isinstance(value, list) != info.is_array:
        expected = "an array" if info.is_array else "a single value"
        raise bad_request(f"'{info.name}' must be {expected}", expr)
    return value if info.is_array else [value]


def _set_attribute(elem: etree._Element, name: str, value: Any, expr: str) -> None:
    try:
        elem.set(name, _primitive_text(value, expr))
    except ValueError as exc:  # characters XML cannot carry, e.g. control characters
        raise bad_request(f"The value cannot be written as XML: {exc}", expr) from exc


def _primitive_text(value: Any, expr: str) -> str:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if hasattr(value, "to_decimal"):  # bson.Decimal128 read back from the database
        return str(value.to_decimal())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise bad_request(f"Expected a primitive value, got {type(value).__name__}", expr)


def _string_to_xhtml(text: Any, expr: str) -> etree._Element:
    if not isinstance(text, str):
        raise bad_request(f"The narrative must be a string of XHTML, got {type(text).__name__}", expr)
    # The wrapper makes the xhtml namespace the default, so a div written without xmlns still
    # lands in it; an explicit xmlns on the div wins.
    wrapped = f'<wrapper xmlns="{XHTML_NS}">{text}</wrapper>'.encode()
    wrapper = parse_xml_safely(wrapped, "The narrative", expr)
    _reject_text(wrapper.text, expr)
    children = list(wrapper)
    if len(children) != 1 or children[0].tag != f"{{{XHTML_NS}}}div":
        raise bad_request("The narrative must be a single XHTML <div> element", expr)
    _reject_text(children[0].tail, expr)
    # The copy carries its own xmlns declaration instead of borrowing a prefix from the wrapper.
    div = copy.deepcopy(children[0])
    div.tail = None
    return div
