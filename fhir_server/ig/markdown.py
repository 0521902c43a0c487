"""A small Markdown renderer for the integrator pages (no dependency): headings, paragraphs, bullet
and numbered lists, tables, fenced code blocks, inline code, bold, italics and links. It renders
our own pages, not arbitrary Markdown: everything else is shown as text."""

from __future__ import annotations

import html
import re

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*]+)\*|\[([^\]]+)\]\(([^)\s]+)\)")


def inline(text: str) -> str:
    """Escape `text` and render its inline markup."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        code, strong, em, label, target = match.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif strong is not None:
            out.append(f"<strong>{inline(strong)}</strong>")
        elif em is not None:
            out.append(f"<em>{inline(em)}</em>")
        else:
            out.append(f'<a href="{html.escape(target, quote=True)}">{inline(label)}</a>')
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def render(markdown: str) -> str:
    """Markdown -> an HTML fragment."""
    lines = markdown.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
        elif stripped.startswith("```"):
            i = _code_block(lines, i, out)
        elif heading := re.match(r"^(#{1,4})\s+(.*)$", stripped):
            level = len(heading.group(1))
            anchor = re.sub(r"[^a-z0-9]+", "-", heading.group(2).lower()).strip("-")
            out.append(f'<h{level} id="{anchor}">{inline(heading.group(2))}</h{level}>')
            i += 1
        elif stripped.startswith("|"):
            i = _table(lines, i, out)
        elif re.match(r"^([-*]|\d+\.)\s+", stripped):
            i = _list(lines, i, out)
        else:
            i = _paragraph(lines, i, out)
    return "\n".join(out)


def _code_block(lines: list[str], i: int, out: list[str]) -> int:
    body = []
    i += 1
    while i < len(lines) and not lines[i].strip().startswith("```"):
        body.append(lines[i])
        i += 1
    out.append(f"<pre><code>{html.escape(chr(10).join(body))}</code></pre>")
    return i + 1


def _table(lines: list[str], i: int, out: list[str]) -> int:
    rows = []
    while i < len(lines) and lines[i].strip().startswith("|"):
        cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
        if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells):
            rows.append(cells)
        i += 1
    if rows:
        head, *body = rows
        out.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead><tbody>")
        out.extend("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body)
        out.append("</tbody></table>")
    return i


def _list(lines: list[str], i: int, out: list[str]) -> int:
    ordered = bool(re.match(r"^\d+\.", lines[i].strip()))
    tag = "ol" if ordered else "ul"
    items: list[str] = []
    while i < len(lines) and lines[i].strip():
        item = re.match(r"^([-*]|\d+\.)\s+(.*)$", lines[i].strip())
        if item:
            items.append(item.group(2))
        elif items:
            items[-1] += " " + lines[i].strip()        # a wrapped item continues
        i += 1
    out.append(f"<{tag}>" + "".join(f"<li>{inline(item)}</li>" for item in items) + f"</{tag}>")
    return i


def _paragraph(lines: list[str], i: int, out: list[str]) -> int:
    text = []
    while i < len(lines) and lines[i].strip() and not re.match(r"^(#{1,4}\s|```|\||[-*]\s|\d+\.\s)",
                                                               lines[i].strip()):
        text.append(lines[i].strip())
        i += 1
    out.append(f"<p>{inline(' '.join(text))}</p>")
    return i
