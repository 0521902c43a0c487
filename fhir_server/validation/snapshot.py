"""Snapshot generation: a StructureDefinition's full element list from its differential and the
snapshot of its base definition (itself generated first when it is a differential-only profile).

Our own profiles are authored as differentials only; the server fills in their snapshots at load
with `ensure_snapshot`. The algorithm follows the FHIR rules closely enough for validation:

- elements are addressed by `ElementDefinition.id` (`Patient.identifier:INS.system`); a differential
  without ids gets them derived from `path` and the slices it opened;
- a slice (`Patient.identifier:INS`) is a copy of the sliced element and of its children, placed
  after that element's previous slices; a new slice's `min` is 0 unless the differential says more; a
  slice the snapshot already has (from the base, or from a type profile expanded on the way) is
  constrained in place, never added twice;
- a constraint on a child of a complex datatype (`Patient.identifier.system`) expands the
  datatype's own snapshot in place (or the snapshot of the profile named in `type.profile`, which is
  how extension slices get their `url` and `value[x]`);
- a renamed choice (`Observation.valueQuantity`) is a type slice `Observation.value[x]:valueQuantity`
  restricted to that type, as the R4 specification defines it;
- properties of the differential override the base, constraints/conditions/mappings accumulate, and
  a differential may only narrow: widening a cardinality or changing to a type the base does not
  allow is an error (`SnapshotError`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

from fhir_server.definitions import Definitions

_ACCUMULATED = ("constraint", "condition", "mapping", "alias", "code")
_NOT_MERGED = frozenset({"id", "path", "sliceName", "base"})
_FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_ABSTRACT_TYPES = frozenset({"Resource", "DomainResource", "Element", "BackboneElement"})


class SnapshotError(ValueError):
    """The differential cannot be applied to its base (unknown element, widened cardinality...)."""

    def __init__(self, url: str, messages: list[str]) -> None:
        super().__init__(f"Cannot generate the snapshot of {url}: " + "; ".join(messages))
        self.url = url
        self.messages = messages


def ensure_snapshot(sd: dict, definitions: Definitions) -> dict:
    """`sd` itself when it has a snapshot, else a copy of it with a generated snapshot.
    Raises SnapshotError when the differential is inconsistent with its base."""
    if sd.get("snapshot", {}).get("element"):
        return sd
    return _generate(sd, definitions, in_progress=())


def generate_snapshot(sd: dict, definitions: Definitions) -> dict:
    """A copy of `sd` with a snapshot regenerated from its differential (even if it has one)."""
    return _generate(sd, definitions, in_progress=())


def _generate(sd: dict, definitions: Definitions, in_progress: tuple[str, ...]) -> dict:
    url = sd.get("url", "?")
    if url in in_progress:
        raise SnapshotError(url, ["the profile is (indirectly) its own base"])
    base = _snapshot_of(sd.get("baseDefinition"), definitions, in_progress + (url,))
    if base is None:
        raise SnapshotError(url, [f"unknown base definition {sd.get('baseDefinition')!r}"])
    builder = _SnapshotBuilder(definitions, base["snapshot"]["element"], in_progress + (url,))
    for element in sd.get("differential", {}).get("element", []):
        builder.apply(element)
    if builder.errors:
        raise SnapshotError(url, builder.errors)
    result = dict(sd)
    result["snapshot"] = {"element": builder.elements}
    return result


def _snapshot_of(url: str | None, definitions: Definitions, in_progress: tuple[str, ...]) -> dict | None:
    if not url:
        return None
    sd = definitions.structures.get(url.split("|", 1)[0])
    if sd is None:
        return None
    if sd.get("snapshot", {}).get("element"):
        return sd
    return _generate(sd, definitions, in_progress)


class _SnapshotBuilder:
    """Applies differential elements, in order, to a working copy of the base snapshot."""

    def __init__(self, definitions: Definitions, base_elements: list[dict], in_progress: tuple[str, ...]) -> None:
        self._definitions = definitions
        self._in_progress = in_progress
        self.elements: list[dict] = copy.deepcopy(base_elements)
        for element, element_id in zip(self.elements, derive_ids(self.elements), strict=True):
            element["id"] = element_id
        self.errors: list[str] = []
        self._open_slices: dict[str, str] = {}     # path -> latest slice name, to derive missing ids

    # -- applying one differential element ----------------------------------------------------------
    def apply(self, diff: dict) -> None:
        element_id = diff.get("id") or self._derive_id(diff)
        index = self._locate(element_id)
        if index is None:
            self.errors.append(f"{element_id}: no such element in the base definition")
            return
        self._merge(self.elements[index], diff, element_id)

    def _derive_id(self, diff: dict) -> str:
        path = diff["path"]
        if diff.get("sliceName"):
            self._open_slices[path] = diff["sliceName"]
        else:
            self._open_slices.pop(path, None)
            for open_path in [p for p in self._open_slices if p.startswith(path + ".")]:
                del self._open_slices[open_path]
        parts = path.split(".")
        segments = []
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            slice_name = self._open_slices.get(prefix)
            segments.append(parts[depth - 1] + (f":{slice_name}" if slice_name else ""))
        return ".".join(segments)

    # -- finding (or making) the element an id designates ------------------------------------------
    def _locate(self, element_id: str) -> int | None:
        index = self._index_of(element_id)
        if index is not None:
            return index
        parent_id, _, last = element_id.rpartition(".")
        if not parent_id:
            return None
        parent = self._locate(parent_id)
        if parent is None:
            return None
        if self.elements[parent]["id"] != parent_id:     # the parent was a renamed choice
            return self._locate(f"{self.elements[parent]['id']}.{last}")
        index = self._index_of(element_id)       # locating the parent may have brought the element in
        if index is not None:
            return index
        name, _, slice_name = last.partition(":")
        if slice_name:
            return self._locate_slice(parent_id, name, slice_name, element_id)
        if not self._has_children(parent) and self._expand_children(parent):
            index = self._index_of(element_id)
            if index is not None:
                return index
        stem = self._choice_stem(parent_id, name)
        if stem is not None:        # a renamed choice: valueQuantity is the type slice value[x]:valueQuantity
            return self._locate(f"{parent_id}.{stem}[x]:{name}")
        return None

    def _index_of(self, element_id: str) -> int | None:
        for index, element in enumerate(self.elements):
            if element["id"] == element_id:
                return index
        return None

    def _subtree_end(self, index: int, with_slices: bool) -> int:
        """Index just past the element at `index`, its children and (optionally) its slices and
        re-slices (`a:b/c` follows `a:b`)."""
        element_id = self.elements[index]["id"]
        prefixes = (element_id + ".", element_id + ":", element_id + "/") if with_slices else (element_id + ".",)
        end = index + 1
        while end < len(self.elements) and self.elements[end]["id"].startswith(prefixes):
            end += 1
        return end

    def _has_children(self, index: int) -> bool:
        return self._subtree_end(index, with_slices=False) > index + 1

    def _choice_stem(self, parent_id: str, name: str) -> str | None:
        for element in self._children_of(parent_id):
            last = element["id"].rsplit(".", 1)[-1]
            if last.endswith("[x]") and ":" not in last:
                stem = last[:-3]
                if name.startswith(stem) and _type_for_suffix(element, name[len(stem):]):
                    return stem
        return None

    def _children_of(self, parent_id: str) -> Iterator[dict]:
        prefix = parent_id + "."
        for element in self.elements:
            rest = element["id"][len(prefix):] if element["id"].startswith(prefix) else None
            if rest and "." not in rest:
                yield element

    # -- slices -------------------------------------------------------------------------------------
    def _locate_slice(self, parent_id: str, name: str, slice_name: str, slice_id: str) -> int | None:
        sliced = self._locate(sliced_element_id(parent_id, name, slice_name))
        if sliced is None:
            return None
        # Locating the sliced element may have expanded a type profile that already defines this slice
        # (`address.extension:commune` from an Address profile): constrain that one, do not add a copy.
        existing = self._index_of(slice_id)
        return existing if existing is not None else self._add_slice(sliced, slice_id, slice_name)

    def _add_slice(self, sliced: int, slice_id: str, slice_name: str) -> int:
        base = self.elements[sliced]
        end = self._subtree_end(sliced, with_slices=False)
        copies = copy.deepcopy(self.elements[sliced:end])
        base_id = base["id"]
        for element in copies:
            element["id"] = slice_id + element["id"][len(base_id):]
        head = copies[0]
        head["sliceName"] = slice_name
        head.pop("slicing", None)
        head["min"] = 0      # each slice's own cardinality; the differential sets it when it matters
        if base["path"].endswith("[x]"):
            self._narrow_to_type_slice(sliced, head, slice_name)
        insert_at = self._subtree_end(sliced, with_slices=True)
        self.elements[insert_at:insert_at] = copies
        return insert_at

    def _narrow_to_type_slice(self, sliced: int, head: dict, slice_name: str) -> None:
        """`value[x]:valueQuantity` only allows Quantity; the choice gets an implicit type slicing."""
        base = self.elements[sliced]
        stem = base["path"].rsplit(".", 1)[-1][:-3]
        chosen = _type_for_suffix(base, slice_name[len(stem):]) if slice_name.startswith(stem) else None
        if chosen is not None:
            head["type"] = [copy.deepcopy(chosen)]
        base.setdefault("slicing", {"discriminator": [{"type": "type", "path": "$this"}],
                                    "ordered": False, "rules": "open"})

    # -- children of complex datatypes ---------------------------------------------------------------
    def _expand_children(self, index: int) -> bool:
        """Insert the children of the element's datatype (or content reference) after it."""
        element = self.elements[index]
        source = self._children_source(element)
        if source is None:
            return False
        source_root_id, source_root_path, source_elements = source
        children = []
        for child in source_elements:
            child = copy.deepcopy(child)
            child["id"] = element["id"] + child["id"][len(source_root_id):]
            child["path"] = element["path"] + child["path"][len(source_root_path):]
            children.append(child)
        if not children:
            return False
        self.elements[index + 1:index + 1] = children
        return True

    def _children_source(self, element: dict) -> tuple[str, str, list[dict]] | None:
        reference = element.get("contentReference")
        if reference:
            path = reference.split("#", 1)[-1]
            for i, candidate in enumerate(self.elements):
                if candidate["path"] == path and ":" not in candidate["id"]:
                    if not self._has_children(i):
                        self._expand_children(i)
                    end = self._subtree_end(i, with_slices=False)
                    return candidate["id"], candidate["path"], self.elements[i + 1:end]
            return None
        codes = {t.get("code") for t in element.get("type", [])}
        if len(codes) != 1:
            if len(codes) > 1:
                self.errors.append(f"{element['id']}: constrain a single type of a choice "
                                   "(e.g. valueQuantity) before constraining its children")
            return None
        profiles = [p for t in element["type"] for p in t.get("profile", [])]
        type_sd = _snapshot_of(profiles[0], self._definitions, self._in_progress) if len(profiles) == 1 else None
        if type_sd is None:
            type_sd = self._definitions.base_types.get(codes.pop())
        if type_sd is None:
            return None
        type_elements = type_sd["snapshot"]["element"]
        with_ids = [dict(e, id=i) for e, i in zip(type_elements, derive_ids(type_elements), strict=True)]
        return with_ids[0]["id"], with_ids[0]["path"], with_ids[1:]

    # -- merging a differential element into its snapshot element -----------------------------------
    def _merge(self, target: dict, diff: dict, element_id: str) -> None:
        self._check_narrowing(target, diff, element_id)
        for key, value in diff.items():
            if key in _NOT_MERGED:
                continue
            if key in _ACCUMULATED:
                target[key] = _accumulate(target.get(key, []), value, key)
            elif key.startswith(("fixed", "pattern")):
                for old in [k for k in target if k.startswith(("fixed", "pattern"))]:
                    del target[old]
                target[key] = copy.deepcopy(value)
            elif key == "slicing":
                target[key] = {**target.get("slicing", {}), **copy.deepcopy(value)}
            else:
                target[key] = copy.deepcopy(value)

    def _check_narrowing(self, target: dict, diff: dict, element_id: str) -> None:
        base_min, base_max = target.get("min", 0), _max(target.get("max", "*"))
        new_min, new_max = diff.get("min", base_min), _max(diff.get("max", target.get("max", "*")))
        if new_min < base_min:
            self.errors.append(f"{element_id}: min {new_min} is less than the base minimum {base_min}")
        if base_max is not None and (new_max is None or new_max > base_max):
            self.errors.append(f"{element_id}: max {diff.get('max')} is more than the base maximum "
                               f"{target.get('max')}")
        if new_max is not None and new_min > new_max:
            self.errors.append(f"{element_id}: min {new_min} is more than max {new_max}")
        if "type" in diff and target.get("type"):
            allowed = {type_code(t) for t in target["type"]}
            for wanted in diff["type"]:
                code = type_code(wanted)
                if code not in allowed and not allowed & _ABSTRACT_TYPES:
                    self.errors.append(f"{element_id}: type {code} is not allowed by the base "
                                       f"(allowed: {', '.join(sorted(allowed))})")


def _accumulate(existing: list, added: list, key: str) -> list:
    result = copy.deepcopy(existing)
    if key == "constraint":
        keys = {c.get("key") for c in result}
        result.extend(copy.deepcopy(c) for c in added if c.get("key") not in keys)
    else:
        result.extend(copy.deepcopy(v) for v in added if v not in result)
    return result


def type_code(type_: dict) -> str:
    """The FHIR type code of an ElementDefinition.type; R4 snapshots give the primitive `value` and
    `Extension.url` elements a FHIRPath system type plus an extension naming the FHIR type."""
    code = type_.get("code", "")
    if code.startswith("http://hl7.org/fhirpath/System."):
        for extension in type_.get("extension", []):
            if extension.get("url") == _FHIR_TYPE_EXTENSION:
                return extension.get("valueUrl") or extension.get("valueUri") or code
    return code


def _max(value: str) -> int | None:
    return None if value == "*" else int(value)


def _type_for_suffix(element: dict, suffix: str) -> dict | None:
    """The type of a choice element named by a JSON suffix: `Quantity` -> Quantity, `String` -> string."""
    for type_ in element.get("type", []):
        code = type_.get("code", "")
        if code and code[0].upper() + code[1:] == suffix:
            return type_
    return None


def sliced_element_id(parent_id: str, name: str, slice_name: str) -> str:
    """The element a slice slices: `Patient.identifier` for `Patient.identifier:INS`, and the slice
    `a.b:s` for the re-slice `a.b:s/t`."""
    if "/" in slice_name:
        return f"{parent_id}.{name}:{slice_name.rsplit('/', 1)[0]}"
    return f"{parent_id}.{name}"


def derive_ids(elements: list[dict]) -> list[str]:
    """The element ids of a snapshot, deriving the missing ones from `path` and `sliceName`
    (slices apply to the elements that follow them until the sliced path is left)."""
    ids = []
    open_slices: dict[str, str] = {}
    for element in elements:
        path = element["path"]
        if element.get("sliceName"):
            open_slices[path] = element["sliceName"]
        else:
            open_slices.pop(path, None)
        open_slices = {p: s for p, s in open_slices.items() if path == p or path.startswith(p + ".")}
        if element.get("id"):
            ids.append(element["id"])
            continue
        parts = path.split(".")
        ids.append(".".join(
            part + (f":{open_slices['.'.join(parts[:i + 1])]}" if ".".join(parts[:i + 1]) in open_slices else "")
            for i, part in enumerate(parts)
        ))
    return ids
