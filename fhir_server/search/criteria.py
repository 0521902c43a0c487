"""One search criterion (`date=ge2024-01-01`, `identifier=sys|123`, `name:exact=Élodie`) as a
MongoDB condition on the `_index` layout described in `index.py`.

Conditions are shaped for indexes: their flat part is what an index serves (one equality, `$in` or
range on one field), and whatever must also hold but no index serves (`$elemMatch` keeping two
bounds on one value of a list, the exact spelling of `:exact`, the other end of a date range) is
AND-ed as `{"$and": [exact]}`, a *narrowing* of that candidate. The store runs the flat part
first, so the embedded development server, whose planner only serves flat filters, still reaches
the documents through the index; MongoDB plans both together.

Everything here is pure: no database access. References to other resources by search
(chaining, `_has`) are resolved by `query.py`, which then calls these builders with ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal

from fhir_server.search.filters import NOTHING, and_filters, or_filters
from fhir_server.search.index import META_TERMS_FIELD, PREFIX_MAX_LENGTH
from fhir_server.search.normalize import (
    DATE_MAX,
    ONE_MS,
    UCUM,
    canonical_quantity,
    date_range,
    fold,
    implicit_range,
    local_reference,
    parse_decimal,
    prefix_range,
)

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

# Modifiers each type accepts (`missing` is accepted everywhere, `[type]` on references).
MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains"}),
    "token": frozenset({"not", "text", "of-type", "in", "not-in", "above", "below"}),
    "reference": frozenset({"identifier"}),
    "date": frozenset(),
    "number": frozenset(),
    "quantity": frozenset(),
    "uri": frozenset({"below", "above"}),
    "composite": frozenset(),
    "special": frozenset(),
}


class MalformedValue(ValueError):
    """The value cannot be read for this parameter type (always a 400)."""


class UnsupportedModifier(ValueError):
    """The modifier is valid FHIR but not supported here (a warning, or 400 when strict)."""


@dataclass(frozen=True)
class Target:
    """Where the values of one parameter live, and whether there may be several of them."""

    field: str
    multi: bool
    kind: str
    primitive_tokens: bool = False
    point: bool = False                  # a stored instant (`_lastUpdated`), not a {lo, hi} range
    aux_prefix: str | None = None        # `_index.code` prefix of the `:text`, `:exact`... fields
    prefix_field: str | None = None      # strings: the field holding every prefix of the values
    binding: str | None = None           # tokens: the ValueSet bound to the element, if only one
    terms_prefix: str | None = None      # meta parameters: also stored as `prefix + entry` in META_TERMS_FIELD
    span: timedelta | None = None        # dates: the longest range one value covers (None: Periods, unbounded)


ValueSetExpander = Callable[[str], list[str]]
# (system or None, code, "above" | "below", bound ValueSet) -> subsumed token entries `system|code`
Subsumer = Callable[[str | None, str, str, str | None], list[str]]


@dataclass
class CriteriaBuilder:
    timezone: tzinfo
    base_url: str = ""
    expand_value_set: ValueSetExpander | None = None
    now: datetime | None = None
    subsume: Subsumer | None = None

    # -- entry point -------------------------------------------------------------------------
    def build(self, target: Target, modifier: str | None, raw: str, targets: tuple[str, ...] = ()) -> dict:
        """The condition for `raw` (the text after `=`, comma-separated alternatives)."""
        if modifier == "missing":
            return self.missing(target, raw)
        values = split_escaped(raw, ",")
        kind = target.kind
        if kind == "string":
            return self.string(target, modifier, values)
        if kind == "token":
            return self.token(target, modifier, values)
        if kind == "reference":
            return self.reference(target, modifier, values, targets)
        if kind == "date":
            return or_filters([self.date(target, v) for v in values])
        if kind == "number":
            return or_filters([self.number(target, v) for v in values])
        if kind == "quantity":
            return or_filters([self.quantity(target, v) for v in values])
        if kind == "uri":
            return self.uri(target, modifier, values)
        raise UnsupportedModifier(f"search type {kind} is not supported")

    # -- composite ---------------------------------------------------------------------------
    def composite(self, target: Target, components: list[Target], raw: str, leading: Target | None = None) -> dict:
        """`code-value-quantity=http://loinc.org|8480-6$gt140`: every component matched by the
        same stored entry (the same observation component). `leading`: the parameter holding the
        values of the first component (`code`), whose index then serves the search."""
        alternatives = []
        first_parts = []
        for value in split_escaped(raw, ","):
            parts = split_escaped(value, "$")
            if len(parts) != len(components):
                raise MalformedValue(f"a value of this composite has {len(components)} parts separated by $")
            conditions = [self.build(component, None, part) for component, part in zip(components, parts,
                                                                                          strict=True)]
            alternatives.append({target.field: {"$elemMatch": and_filters(*conditions)}})
            first_parts.append(parts[0])
        exact = or_filters(alternatives)
        if leading is None:
            return exact
        return narrowed(self.build(leading, None, ",".join(first_parts)), exact)

    @staticmethod
    def missing(target: Target, raw: str) -> dict:
        """A value only reachable through a side field (a reference with just an identifier, a
        concept with just a text) is still a value."""
        if raw not in ("true", "false"):
            raise MalformedValue(":missing takes true or false")
        side = {"token": ":text", "reference": ":identifier"}.get(target.kind)
        fields = [target.field] + ([(target.aux_prefix or target.field) + side] if side and target.aux_prefix else [])
        if raw == "true":
            return {f: {"$exists": False} for f in fields}
        return or_filters([{f: {"$exists": True}} for f in fields])

    # -- string ------------------------------------------------------------------------------
    def string(self, target: Target, modifier: str | None, values: list[str]) -> dict:
        folded = [fold(v) for v in values]
        if modifier == "exact":
            # the folded value is what the parameter's index holds; the spelling narrows it
            exact_field = (target.aux_prefix or target.field) + ":exact"
            return narrowed(_any_of(target.field, folded), _any_of(exact_field, values))
        if modifier == "contains":
            # a substring: no index serves it (it would take a trigram index, like HAPI's)
            return or_filters([{target.field: {"$regex": re.escape(v)}} for v in folded])
        if modifier:
            raise UnsupportedModifier(f"modifier :{modifier} is not supported on string parameters")
        if any(not v for v in folded):                # a value of only spaces: any value at all
            return {target.field: {"$exists": True}}
        if target.prefix_field:
            return _prefix_lookup(target, target.prefix_field, folded)
        return or_filters([_within(target, prefix_range(v)) for v in folded])

    # -- token -------------------------------------------------------------------------------
    def token_entry(self, target: Target, value: str) -> tuple[str, bool]:
        """(stored entry, is_system_prefix) for one token value."""
        if "|" not in value.replace("\\|", ""):
            return unescape(value), False
        system, code = (unescape(part) for part in split_escaped(value, "|", 1))
        if not code:
            if not system:
                raise MalformedValue("a token needs a code or a system")
            return f"{system}|", True
        if not system:
            return (code if target.primitive_tokens else f"|{code}"), False
        return f"{system}|{code}", False

    def token(self, target: Target, modifier: str | None, values: list[str]) -> dict:
        if target.field == "_id":
            return self._ids(modifier, values)
        aux = target.aux_prefix or target.field
        if modifier == "text":
            return or_filters([{aux + ":text": {"$regex": r"(^|\s)" + re.escape(fold(v))}} for v in values])
        if modifier == "of-type":
            return self._of_type(target, aux, values)
        if modifier in ("above", "below"):
            return _any_value(target, self._subsumed(target, modifier, values))
        if modifier in ("in", "not-in"):
            codes = self._expand(values)
            if target.primitive_tokens:      # plain codes are stored without their system
                codes = sorted({c.partition("|")[2] for c in codes})
            if modifier == "in":
                return _any_value(target, codes)
            return {target.field: {"$nin": codes}}
        if modifier not in (None, "not"):
            raise UnsupportedModifier(f"modifier :{modifier} is not supported on token parameters")
        exact: list[str] = []
        systems: list[str] = []
        for value in values:
            entry, is_system = self.token_entry(target, value)
            (systems if is_system else exact).append(entry)
        if modifier == "not":
            conditions = ([{target.field: {"$in": exact}}] if exact else []) + \
                [_on_one_value(target, prefix_range(s)) for s in systems]
            return {"$nor": conditions}
        return or_filters(([_any_value(target, exact)] if exact else []) +
                          [_within(target, prefix_range(s)) for s in systems])

    @staticmethod
    def _of_type(target: Target, aux: str, values: list[str]) -> dict:
        """`identifier:of-type=typeSystem|typeCode|value`. The identifier's value is stored as a token
        entry of the parameter too: its index serves the search, the typed entries narrow it."""
        typed: list[str] = []
        plain: list[str] = []
        for value in values:
            parts = [unescape(part) for part in split_escaped(value, "|")]
            if len(parts) != 3 or not parts[2]:
                raise MalformedValue(":of-type takes system|code|value")
            typed.append("|".join(parts))
            plain.append(parts[2])
        return narrowed(_any_of(target.field, sorted(set(plain))), _any_of(aux + ":of-type", typed))

    @staticmethod
    def _ids(modifier: str | None, values: list[str]) -> dict:
        ids = [unescape(v) for v in values]
        if modifier == "not":
            return {"_id": {"$nin": ids}}
        if modifier:
            raise UnsupportedModifier(f"modifier :{modifier} is not supported on _id")
        return _any_of("_id", ids)

    def _subsumed(self, target: Target, direction: str, values: list[str]) -> list[str]:
        """The stored entries of every code in the hierarchy below (or above) the values."""
        if self.subsume is None:
            raise UnsupportedModifier(f":{direction} needs a terminology service")
        entries: list[str] = []
        for value in values:
            system, code = _system_and_code(value)
            entries.extend(self.subsume(system, code, direction, target.binding))
        if target.primitive_tokens:      # plain codes are stored without their system
            entries = sorted({e.partition("|")[2] for e in entries})
        return entries

    def _expand(self, urls: list[str]) -> list[str]:
        if self.expand_value_set is None:
            raise UnsupportedModifier(":in/:not-in need a terminology service")
        codes: list[str] = []
        for url in urls:
            codes.extend(self.expand_value_set(url))
        return codes

    # -- reference ---------------------------------------------------------------------------
    def reference(self, target: Target, modifier: str | None, values: list[str],
                  targets: tuple[str, ...]) -> dict:
        if modifier == "identifier":
            aux = (target.aux_prefix or target.field) + ":identifier"
            side = Target(aux, True, "token")
            entries = [self.token_entry(side, v) for v in values]
            return or_filters([_within(side, prefix_range(e)) if is_system else {aux: e} for e, is_system in entries])
        if modifier and not modifier[:1].isupper():
            raise UnsupportedModifier(f"modifier :{modifier} is not supported on reference parameters")
        references: list[str] = []
        for value in values:
            references.extend(self.reference_values(unescape(value), modifier, targets))
        return _any_of(target.field, references)

    def reference_values(self, value: str, type_modifier: str | None, targets: tuple[str, ...]) -> list[str]:
        """The stored forms a reference search value can match."""
        if self.base_url and value.startswith(self.base_url.rstrip("/") + "/"):
            value = value[len(self.base_url.rstrip("/")) + 1:]
        if type_modifier:
            if "/" in value and not value.startswith(type_modifier + "/"):
                raise MalformedValue(f"{value} is not a {type_modifier} reference")
            return [value if "/" in value else f"{type_modifier}/{value}"]
        if ":" in value:                                  # absolute URL, urn, canonical
            return [local_reference(value) or value]
        if "/" in value:
            local = local_reference(value) or ""
            kind, _, ident = local.partition("/")
            if not kind[:1].isupper() or not _ID.fullmatch(ident):
                raise MalformedValue(f"{value!r} is not a reference (Type/id)")
            return [local]
        if not _ID.fullmatch(value):
            raise MalformedValue(f"{value!r} is not a resource id")
        return [f"{t}/{value}" for t in targets]

    # -- date --------------------------------------------------------------------------------
    def date(self, target: Target, text: str) -> dict:
        prefix, value = split_prefix(text)
        try:
            low, high = date_range(value, self.timezone)
        except ValueError as exc:
            raise MalformedValue(f"{value!r} is not a valid date (YYYY, YYYY-MM, YYYY-MM-DD or "
                                 "YYYY-MM-DDThh:mm[:ss][Z|+hh:mm])") from exc
        if prefix == "ap":
            margin = max(abs(self._now() - low) / 10, timedelta(days=1))
            low, high = low - margin, high + margin
        if target.point:
            return {target.field: _point_condition(prefix, low, high)}
        exact = _range_condition(target, prefix, low, high)
        candidate = _range_end_candidate(target, prefix, low, high)
        return exact if candidate is None else narrowed(candidate, exact)

    def _now(self) -> datetime:
        return self.now or datetime.now(UTC)

    # -- number / quantity -------------------------------------------------------------------
    def number(self, target: Target, text: str) -> dict:
        prefix, value = split_prefix(text)
        number = _decimal(value)
        condition = _numeric_condition(prefix, number)
        return _value_condition(target.field, target.multi, condition, prefix)

    def quantity(self, target: Target, text: str) -> dict:
        parts = split_escaped(text, "|")
        if len(parts) not in (1, 3):
            raise MalformedValue("a quantity is [prefix]number|system|code, or a number")
        prefix, value = split_prefix(parts[0])
        number = _decimal(value)
        system, code = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
        canonical = canonical_quantity(number, system or UCUM, code) if code else None
        subfields: dict = {}
        if canonical:
            converted, unit = canonical
            subfields["cv"] = _numeric_condition(prefix, converted, scale_of=number)
            subfields["cu"] = unit
        else:
            subfields["v"] = _numeric_condition(prefix, number)
            if system:
                subfields["s"] = system
            if code:
                subfields["u"] = code
        exact = _quantity_condition(target, prefix, subfields)
        if prefix == "ne":
            return exact
        # the number (`v`, or `cv` in canonical units) is what the parameter's indexes hold
        number_key = "cv" if canonical else "v"
        candidate = {f"{target.field}.{number_key}": subfields[number_key]}
        return exact if exact == candidate else narrowed(candidate, exact)

    # -- uri ---------------------------------------------------------------------------------
    def uri(self, target: Target, modifier: str | None, values: list[str]) -> dict:
        """`:below`: the stored URL starts with the value; `:above`: the stored URL is the value or one
        of its ancestors by path segment (with or without the trailing `/`). Both only apply to
        URLs, not to URNs such as OIDs (R4 search, uri)."""
        values = [unescape(v) for v in values]
        if modifier in ("above", "below"):
            for value in values:
                if "://" not in value:
                    raise MalformedValue(f":{modifier} applies to URLs, not to {value!r}")
        if modifier == "below":
            return or_filters([_within(target, prefix_range(v)) for v in values])
        if modifier == "above":
            return _any_value(target, [p for v in values for p in _uri_ancestors(v)])
        if modifier:
            raise UnsupportedModifier(f"modifier :{modifier} is not supported on uri parameters")
        return _any_value(target, values)


# -- helpers ------------------------------------------------------------------------------------

def split_escaped(text: str, separator: str, maxsplit: int = -1) -> list[str]:
    """Split on `separator` not preceded by a backslash (`\\,` `\\|` `\\$` are literal)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char if char != separator else char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\([,|$\\])", r"\1", text)


def split_prefix(text: str) -> tuple[str, str]:
    """`ge2024` -> ("ge", "2024"); no prefix means eq. Unknown letters are an error."""
    if text[:2].isalpha():
        if text[:2] not in PREFIXES:
            raise MalformedValue(f"unknown prefix {text[:2]!r} (eq, ne, gt, lt, ge, le, sa, eb, ap)")
        return text[:2], text[2:]
    return "eq", text


def _decimal(text: str) -> Decimal:
    try:
        return parse_decimal(text)
    except ValueError as exc:
        raise MalformedValue(str(exc)) from exc


def narrowed(candidate: dict, exact: dict) -> dict:
    """`candidate` (what an index serves) AND `exact` (what must hold too), kept apart: the flat
    part of the filter stays the candidate (see the module docstring)."""
    return and_filters(candidate, {"$and": [exact]})


def _on_one_value(target: Target, bounds: dict) -> dict:
    """Both bounds on the same value. On a list MongoDB checks each operator against any
    element, so `{$gte: "dup", $lt: "duq"}` would match ["helene", "durand"]: `$elemMatch`."""
    if target.multi and len(bounds) > 1:
        return {target.field: {"$elemMatch": bounds}}
    return {target.field: bounds}


def _within(target: Target, bounds: dict) -> dict:
    """A range on one value, as an index range narrowed to one value of a list. No planner serves
    `$elemMatch` alone from an index on the embedded server; the plain range is served everywhere."""
    exact = _on_one_value(target, bounds)
    if target.terms_prefix is not None:
        prefixed = {op: target.terms_prefix + bound for op, bound in bounds.items()}
        return narrowed({META_TERMS_FIELD: prefixed}, exact)
    candidate = {target.field: bounds}
    return exact if exact == candidate else narrowed(candidate, exact)


def _any_value(target: Target, entries: list[str]) -> dict:
    """Equality with any of the stored entries; the meta parameters ask their shared terms field."""
    if target.terms_prefix is not None:
        return _any_of(META_TERMS_FIELD, [target.terms_prefix + e for e in entries])
    return _any_of(target.field, entries)


def _prefix_lookup(target: Target, prefix_field: str, folded: list[str]) -> dict:
    """Prefix match through the field holding every prefix of the values: an equality (or `$in`)
    on one field, served by its index on any MongoDB and exact on lists. A value longer than the
    stored prefixes is served by its stored prefix, narrowed to the exact range on one value."""
    short = [v for v in folded if len(v) <= PREFIX_MAX_LENGTH]
    alternatives = [_any_of(prefix_field, short)] if short else []
    alternatives += [narrowed({prefix_field: v[:PREFIX_MAX_LENGTH]}, _on_one_value(target, prefix_range(v)))
                     for v in folded if len(v) > PREFIX_MAX_LENGTH]
    return or_filters(alternatives)


def _system_and_code(value: str) -> tuple[str | None, str]:
    """`system|code` or `code` of a `:below` / `:above` value (a concept, not a system alone)."""
    if "|" not in value.replace("\\|", ""):
        system, code = None, unescape(value)
    else:
        system, code = (unescape(part) for part in split_escaped(value, "|", 1))
    if not code:
        raise MalformedValue("a code is needed (system|code)")
    return system or None, code


def _any_of(field: str, values: list) -> dict:
    if not values:
        return dict(NOTHING)
    return {field: values[0] if len(values) == 1 else {"$in": values}}


def _uri_ancestors(uri: str) -> list[str]:
    head, _, rest = uri.partition("://")
    segments = rest.rstrip("/").split("/")
    ancestors: list[str] = []
    for n in range(1, len(segments) + 1):
        path = f"{head}://" + "/".join(segments[:n])
        ancestors += [path, path + "/"]
    return ancestors if uri in ancestors else [*ancestors, uri]


def _numeric_condition(prefix: str, value: Decimal, scale_of: Decimal | None = None) -> dict:
    """Condition on one number; `eq` uses the precision the client wrote (`100` is [99.5, 100.5))."""
    if prefix in ("eq", "ne"):
        low, high = implicit_range(scale_of if scale_of is not None else value)
        if scale_of is not None:             # a converted quantity: scale the range with it
            factor = value / scale_of if scale_of else Decimal(1)
            low, high = low * factor, high * factor
        condition: dict = {"$gte": low, "$lt": high}
        return {"$not": condition} if prefix == "ne" else condition
    if prefix == "ap":
        margin = abs(value) / 10
        return {"$gte": value - margin, "$lte": value + margin}
    operator = {"gt": "$gt", "sa": "$gt", "lt": "$lt", "eb": "$lt", "ge": "$gte", "le": "$lte"}[prefix]
    return {operator: value}


def _value_condition(field: str, multi: bool, condition: dict, prefix: str) -> dict:
    if prefix == "ne":
        return {field: {"$exists": True, **condition}} if not multi else \
            {field: {"$exists": True, "$not": {"$elemMatch": condition["$not"]}}}
    if multi and len(condition) > 1:          # both bounds on the same value of the list
        return narrowed({field: condition}, {field: {"$elemMatch": condition}})
    return {field: condition}


def _quantity_condition(target: Target, prefix: str, subfields: dict) -> dict:
    """Every subfield condition on the same stored quantity."""
    if target.multi and (len(subfields) > 1 or len(next(iter(subfields.values()))) > 1):
        return {target.field: {"$elemMatch": subfields}}
    if prefix == "ne" and len(subfields) > 1:
        # `ne` with a unit: a value of that unit that differs (dotted paths stay on one value)
        return {target.field: {"$elemMatch": subfields}}
    return {f"{target.field}.{k}": v for k, v in subfields.items()}


def _point_condition(prefix: str, low: datetime, high: datetime) -> dict:
    """A stored instant t, read as the millisecond [t, t+1ms): every prefix is one range on t."""
    return {
        "eq": {"$gte": low, "$lt": high}, "ap": {"$gte": low, "$lt": high},
        "ne": {"$not": {"$gte": low, "$lt": high}},
        "gt": {"$gte": high}, "sa": {"$gte": high}, "ge": {"$gte": low},
        "lt": {"$lt": low}, "eb": {"$lt": low}, "le": {"$lt": high},
    }[prefix]


def _range_end_candidate(target: Target, prefix: str, low: datetime, high: datetime) -> dict | None:
    """A condition on the end of the stored ranges (`code.hi`, the indexed field, see
    SearchParam.sort_field) that every match of `prefix` meets, when the exact condition is on
    their start. Stored ranges end after they start (a Period's end is not before its start,
    per-1); `lt`/`le` need the longest range a value covers (`span`: a year for a date), unknown
    for Periods."""
    end = f"{target.field}.hi"
    if prefix == "eq":
        return {end: {"$gt": low, **_at_most(high)}}
    if prefix == "ap":
        return {end: {"$gt": low}}
    if prefix == "sa":
        return {end: {"$gt": high}}
    if prefix in ("lt", "le") and target.span is not None:
        return {end: _at_most(_later(low if prefix == "lt" else high, target.span))}
    return None


def _at_most(moment: datetime) -> dict:
    """`<= moment` as `< moment + 1 ms` (dates are stored to the millisecond): the embedded server's
    compound index scan drops the values equal to an inclusive upper bound on a field other than
    the last one (`{patient, date.hi, _id}`)."""
    if moment >= DATE_MAX:
        return {"$lte": DATE_MAX}
    return {"$lt": moment + ONE_MS}


def _later(moment: datetime, span: timedelta) -> datetime:
    try:
        return min(moment + span, DATE_MAX)
    except OverflowError:
        return DATE_MAX


def _range_condition(target: Target, prefix: str, low: datetime, high: datetime) -> dict:
    """Conditions on a stored range [lo, hi) against the search range [low, high), following the
    spec: eq = the value is within the search range, gt = it extends after it, sa = it starts
    after it ends, ap = it overlaps the search range widened by 10% of its distance to now."""
    one_sided = {
        "gt": ("hi", {"$gt": high}), "ge": ("hi", {"$gt": low}),
        "lt": ("lo", {"$lt": low}), "le": ("lo", {"$lt": high}),
        "sa": ("lo", {"$gte": high}), "eb": ("hi", _at_most(low)),
    }
    if prefix in one_sided:
        sub, condition = one_sided[prefix]
        return {f"{target.field}.{sub}": condition}
    if prefix == "ap":
        both = {"lo": {"$lt": high}, "hi": {"$gt": low}}
    else:
        both = {"lo": {"$gte": low}, "hi": {"$lte": high}}
    if target.multi:
        matched = {target.field: {"$elemMatch": both}}
    else:
        matched = {f"{target.field}.{k}": v for k, v in both.items()}
    if prefix == "ne":
        return {target.field: {"$exists": True}, "$nor": [matched]}
    return matched
