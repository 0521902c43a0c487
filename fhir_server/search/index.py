"""Index entries: how the values a search expression yields are stored under `_index`.

Layout of `_index` (one key per search parameter code; see `docs` in SearchParam.field):

    string     code: folded values ("dupont")         code:exact: values as written ("Dupont")
               code:prefix: every prefix of the folded values ("d", "du", ... "dupont"), for the
               looked-up parameters (`family`, `name`...): a prefix search is then one equality
    token      code: "code", "system|code" or "|code" (system and code of one coding kept together)
               code:text: folded display/text         code:of-type: "typeSystem|typeCode|value"
    reference  code: "Type/id", absolute URL, or canonical (with and without `|version`)
               code:identifier: token entries of Reference.identifier
    date       code: {"lo": start, "hi": end}         UTC datetimes, half-open [lo, hi)
               (single `instant` elements: just the instant, see SearchParam.point)
    number     code: Decimal
    quantity   code: {"v": value, "s": system, "u": code or unit, "cv": canonical value, "cu": canonical unit}
    uri        code: the URI
    composite  code: [{"0": entries of component 0, "1": entries of component 1, ...}]

The meta parameters (`_tag`, `_security`, `_profile`, `_source`), which every resource type has,
are also stored together as `code=entry` terms, so that one index per collection serves them all
(three indexes on every collection would cost every write; most resources carry no meta values):

    _meta      ["_profile=http://...", "_tag=|test", "_tag=test", "_security=R", ...]

Contained resources are indexed with their container, each per its own type's parameters:

    _contained [{"_type": "Observation", "_id": "o1", <code>: entries as above...}, ...]

A parameter that can only have one value for a resource (`multi` False) is stored as a scalar,
every other as a list: real MongoDB refuses compound indexes over two array fields, and the
patient-compartment indexes combine `patient`, `status` and `date`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fhir_server.search.fhirpath import Value
from fhir_server.search.normalize import (
    DATE_MAX,
    DATE_MIN,
    canonical_quantity,
    date_range,
    fold,
    local_reference,
)

if TYPE_CHECKING:
    from fhir_server.search.registry import SearchParam

PRIMITIVE_TOKEN_TYPES = frozenset({
    "code", "string", "id", "uri", "url", "canonical", "oid", "uuid", "boolean", "integer",
    "positiveInt", "unsignedInt", "decimal", "markdown",
})
DATE_TYPES = frozenset({"date", "dateTime", "instant"})
QUANTITY_TYPES = frozenset({"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity",
                            "MoneyQuantity", "Money"})
NUMBER_TYPES = frozenset({"decimal", "integer", "positiveInt", "unsignedInt"})

Entries = dict[str, list]      # `_index` key -> entries for one parameter

PREFIX_SUFFIX = ":prefix"
# Prefixes are stored up to this length; a longer search value also checks the whole value.
PREFIX_MAX_LENGTH = 24
CONTAINED = "_contained"       # `_index` key of the contained resources' entries
META_PARAMS = ("_tag", "_security", "_profile", "_source")
META_TERMS = "_meta"           # `_index` key of the meta parameters' entries, as `code=entry`
META_TERMS_FIELD = f"_index.{META_TERMS}"
CONTAINED_TYPE = "_type"       # the resource type of one contained entry (its id is `_id`)


def _add(out: Entries, key: str, value: Any) -> None:
    bucket = out.setdefault(key, [])
    if value not in bucket:
        bucket.append(value)


# -- string -------------------------------------------------------------------------------------

_STRING_PARTS = {
    "HumanName": ("family", "given", "prefix", "suffix", "text"),
    "Address": ("line", "city", "district", "state", "postalCode", "country", "text"),
    "CodeableConcept": ("text",),
    "Coding": ("display",),
    "Annotation": ("text",),
    "Reference": ("display",),
    "Identifier": ("value",),
    "ContactPoint": ("value",),
}


def _strings_of(value: Any, type_code: str | None) -> Iterable[str]:
    if isinstance(value, str):
        yield value
        return
    if not isinstance(value, dict):
        return
    type_code = type_code or ("HumanName" if "family" in value or "given" in value else
                              "Address" if "line" in value or "city" in value else None)
    for name in _STRING_PARTS.get(type_code or "", ("text",)):
        part = value.get(name)
        if isinstance(part, str):
            yield part
        elif isinstance(part, list):
            yield from (p for p in part if isinstance(p, str))
    if type_code == "HumanName" and "text" not in value:
        # "Jean Dupont" finds the name even though no single element holds it.
        whole = " ".join([*value.get("given", ()), value.get("family", "")]).strip()
        if " " in whole:
            yield whole


def string_entries(code: str, values: list[Value]) -> Entries:
    out: Entries = {}
    for value, type_code, _path in values:
        for text in _strings_of(value, type_code):
            folded = fold(text)
            if folded:
                _add(out, code, folded)
                _add(out, code + ":exact", text)
    return out


def prefix_entries(folded: list[str]) -> list[str]:
    """Every prefix of the folded values up to PREFIX_MAX_LENGTH, once each. Prefixes ending in a
    space are left out: a search value is folded, and folding trims it."""
    out: dict[str, None] = {}
    for value in folded:
        for end in range(1, min(len(value), PREFIX_MAX_LENGTH) + 1):
            if value[end - 1] != " ":
                out[value[:end]] = None
    return list(out)


# -- token --------------------------------------------------------------------------------------

def _coding_entries(out: Entries, code: str, system: Any, value: Any) -> None:
    if not isinstance(value, str) or not value:
        return
    _add(out, code, value)
    _add(out, code, f"{system}|{value}" if isinstance(system, str) and system else f"|{value}")


def _add_text(out: Entries, code: str, text: Any) -> None:
    if isinstance(text, str) and text:
        _add(out, code + ":text", fold(text))


def _token_type(value: Any) -> str | None:
    if isinstance(value, dict):
        if "coding" in value or ("text" in value and "value" not in value):
            return "CodeableConcept"
        if "code" in value and "value" not in value:
            return "Coding"
        if "value" in value:
            return "Identifier"
    return None


def token_entries(code: str, values: list[Value]) -> Entries:
    out: Entries = {}
    for value, type_code, _path in values:
        if not isinstance(value, dict):
            if isinstance(value, bool):
                _add(out, code, "true" if value else "false")
            elif isinstance(value, str | int | Decimal) and str(value):
                _add(out, code, str(value))     # a code has no system: one entry, kept scalar
            continue
        kind = type_code if type_code in ("CodeableConcept", "Coding", "Identifier", "ContactPoint") \
            else _token_type(value)
        if kind == "CodeableConcept":
            for coding in value.get("coding", ()):
                if isinstance(coding, dict):
                    _coding_entries(out, code, coding.get("system"), coding.get("code"))
                    _add_text(out, code, coding.get("display"))
            _add_text(out, code, value.get("text"))
        elif kind == "Coding":
            _coding_entries(out, code, value.get("system"), value.get("code"))
            _add_text(out, code, value.get("display"))
        elif kind == "Identifier":
            _identifier_entries(out, code, value)
        elif kind == "ContactPoint":
            _coding_entries(out, code, value.get("system"), value.get("value"))
        elif "code" in value or "system" in value:      # Quantity and friends used as a token
            _coding_entries(out, code, value.get("system"), value.get("code"))
    return out


def _identifier_entries(out: Entries, code: str, identifier: dict) -> None:
    value = identifier.get("value")
    _coding_entries(out, code, identifier.get("system"), value)
    kind = identifier.get("type")
    if isinstance(kind, dict) and isinstance(value, str):
        _add_text(out, code, kind.get("text"))
        for coding in kind.get("coding", ()):
            if isinstance(coding, dict) and coding.get("code"):
                _add(out, code + ":of-type", f"{coding.get('system') or ''}|{coding['code']}|{value}")


# -- reference ----------------------------------------------------------------------------------

def reference_entries(code: str, values: list[Value]) -> Entries:
    out: Entries = {}
    for value, _type, _path in values:
        if isinstance(value, dict):
            reference = value.get("reference")
            if isinstance(reference, str):
                local = local_reference(reference)
                if local:
                    _add(out, code, local)
            identifier = value.get("identifier")
            if isinstance(identifier, dict):
                target: Entries = {}
                _identifier_entries(target, code + ":identifier", identifier)
                for entry in target.get(code + ":identifier", ()):
                    _add(out, code + ":identifier", entry)
        elif isinstance(value, str) and value:          # canonical / uri
            _add(out, code, value)
            if "|" in value:
                _add(out, code, value.split("|", 1)[0])
    return out


# -- date ---------------------------------------------------------------------------------------

def _ranges_of(value: Any, type_code: str | None, timezone: tzinfo) -> Iterable[dict]:
    if isinstance(value, str):
        try:
            low, high = date_range(value, timezone)
        except ValueError:
            return
        yield {"lo": low, "hi": high}
    elif isinstance(value, dict):
        if type_code == "Timing" or "event" in value or "repeat" in value:
            for event in value.get("event", ()):
                yield from _ranges_of(event, "dateTime", timezone)
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            if isinstance(bounds, dict):
                yield from _ranges_of(bounds, "Period", timezone)
            return
        start, end = value.get("start"), value.get("end")
        if start is None and end is None:
            return
        try:
            low = date_range(start, timezone)[0] if start else DATE_MIN
            high = date_range(end, timezone)[1] if end else DATE_MAX
        except ValueError:
            return
        yield {"lo": low, "hi": high}


def date_entries(code: str, values: list[Value], timezone: tzinfo, point: bool = False) -> Entries:
    out: Entries = {}
    for value, type_code, _path in values:
        for entry in _ranges_of(value, type_code, timezone):
            _add(out, code, entry["lo"] if point else entry)
    return out


# -- number / quantity / uri ----------------------------------------------------------------------

def number_entries(code: str, values: list[Value]) -> Entries:
    out: Entries = {}
    for value, _type, _path in values:
        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            _add(out, code, value)
        elif isinstance(value, str):
            try:
                _add(out, code, Decimal(value))
            except ArithmeticError:
                continue
    return out


def quantity_entry(value: dict) -> dict | None:
    number = value.get("value")
    if isinstance(number, bool) or not isinstance(number, Decimal | int):
        return None
    entry: dict = {"v": number}
    if "currency" in value:                           # Money
        entry["s"], entry["u"] = "urn:iso:std:iso:4217", value["currency"]
        return entry
    system, unit = value.get("system"), value.get("code") or value.get("unit")
    if system:
        entry["s"] = system
    if unit:
        entry["u"] = unit
    canonical = canonical_quantity(Decimal(number), system, value.get("code"))
    if canonical:
        entry["cv"], entry["cu"] = canonical
    return entry


def quantity_entries(code: str, values: list[Value]) -> Entries:
    out: Entries = {}
    for value, _type, _path in values:
        if isinstance(value, dict):
            entry = quantity_entry(value)
            if entry:
                _add(out, code, entry)
    return out


def uri_entries(code: str, values: list[Value]) -> Entries:
    out: Entries = {}
    for value, _type, _path in values:
        if isinstance(value, str) and value:
            _add(out, code, value)
    return out


# -- meta terms ---------------------------------------------------------------------------------

def meta_terms(index: dict[str, Any]) -> list[str]:
    """The `code=entry` terms of the meta parameters in an `_index` (see the module docstring)."""
    terms: list[str] = []
    for code in META_PARAMS:
        entries = index.get(code)
        for entry in entries if isinstance(entries, list) else [entries] if entries is not None else []:
            terms.append(f"{code}={entry}")
    return terms


# -- dispatch -----------------------------------------------------------------------------------

def entries_for(param: SearchParam, values: list[Value], timezone: tzinfo, point: bool = False,
                root: dict | None = None) -> Entries:
    kind = param.type
    if kind == "string":
        return string_entries(param.code, values)
    if kind == "token":
        return token_entries(param.code, values)
    if kind == "reference":
        return reference_entries(param.code, values)
    if kind == "date":
        return date_entries(param.code, values, timezone, point)
    if kind == "number":
        return number_entries(param.code, values)
    if kind == "quantity":
        return quantity_entries(param.code, values)
    if kind == "uri":
        return uri_entries(param.code, values)
    if kind == "composite":
        return composite_entries(param, values, timezone, root or {})
    return {}


def composite_entries(param: SearchParam, values: list[Value], timezone: tzinfo, root: dict) -> Entries:
    """One entry per element the composite expression selects, so that `code$value` matches
    the code and the value of the *same* observation component."""
    out: Entries = {}
    for value, type_code, path in values:
        per_component: list[list] = []
        for component in param.components:
            found = component.evaluate(value, type_code, path, root)
            entries = entries_for(component.param, found, timezone).get(component.param.code, [])
            if not entries:
                break
            # Tokens and strings are matched with `$in`/equality on the list as a whole; values
            # compared by range (dates, quantities, numbers) need one entry per value.
            per_component.append([entries] if component.param.type in ("token", "string", "reference", "uri")
                                 else entries)
        else:
            for combination in itertools.product(*per_component):
                _add(out, param.code, {str(i): part for i, part in enumerate(combination)})
    return out
