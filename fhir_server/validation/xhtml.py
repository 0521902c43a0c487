"""The narrative checks behind the `htmlChecks()` FHIRPath function (invariants txt-1 and txt-2):
the div must be well-formed XHTML made of the basic HTML formatting elements only (no scripts, forms,
frames, event handlers or `javascript:` links) and carry some non-whitespace content."""

from __future__ import annotations

import functools
import html.entities
import re

from lxml import etree

XHTML_NS = "http://www.w3.org/1999/xhtml"

# HTML 4.0 chapters 7-11 and 15 (text, lists, tables, presentation), links and images: the
# elements the FHIR narrative rules allow.
_ALLOWED_ELEMENTS = frozenset({
    "div", "span", "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "address", "bdo",
    "em", "strong", "dfn", "code", "samp", "kbd", "var", "cite", "abbr", "acronym", "blockquote", "q",
    "sub", "sup", "pre", "ins", "del", "ul", "ol", "li", "dl", "dt", "dd", "dir", "menu",
    "table", "caption", "thead", "tfoot", "tbody", "colgroup", "col", "tr", "th", "td",
    "tt", "i", "b", "u", "s", "strike", "big", "small", "font", "basefont", "center",
    "a", "img", "map", "area",
})
_URL_ATTRIBUTES = frozenset({"href", "src", "longdesc", "usemap", "cite"})
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})
_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


@functools.lru_cache(maxsize=2048)
def narrative_is_safe(div: str) -> bool:
    """True when `div` is a well-formed, safe XHTML narrative with some content."""
    try:
        root = etree.fromstring(_numeric_entities(div).encode("utf-8"), _PARSER)
    except (etree.XMLSyntaxError, ValueError):
        return False
    if _local_name(root) != "div":
        return False
    has_content = bool("".join(root.itertext()).strip())
    for element in root.iter():
        if not isinstance(element.tag, str):       # comments and processing instructions
            continue
        namespace, name = _split(element.tag)
        if namespace not in (None, XHTML_NS) or name not in _ALLOWED_ELEMENTS:
            return False
        if name == "img":
            has_content = True
        for attribute, value in element.attrib.items():
            attribute_name = _split(attribute)[1].lower()
            if attribute_name.startswith("on"):
                return False
            if attribute_name in _URL_ATTRIBUTES and value.strip().lower().startswith(("javascript:", "vbscript:")):
                return False
    return has_content


def _numeric_entities(text: str) -> str:
    """HTML named entities (`&nbsp;`) are common in narratives but unknown to an XML parser."""
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name in _XML_ENTITIES or name not in html.entities.name2codepoint:
            return match.group(0)
        return f"&#{html.entities.name2codepoint[name]};"
    return _ENTITY.sub(replace, text)


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return None, tag


def _local_name(element: etree._Element) -> str:
    return _split(element.tag)[1] if isinstance(element.tag, str) else ""
