"""A tiny document model rendered twice: Markdown (report.md) and self-contained HTML (report.html,
figures embedded as base64 PNG, inline CSS, no network access needed, print-friendly)."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CSS_FILE = Path(__file__).with_name("style.css")


@dataclass
class Block:
    kind: str  # h1 h2 h3 p list table figure kv pre
    text: str = ""
    items: list = field(default_factory=list)
    table: pd.DataFrame | None = None
    image: Path | None = None
    note: str = ""
    anchor: str = ""


def fmt(x, digits: int | None = None) -> str:
    """Numbers for people: about three significant digits, "–" for undefined."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int,)) or (isinstance(x, float) and x.is_integer() and abs(x) >= 100):
        return f"{int(x)}"
    if digits is not None:
        return f"{x:.{digits}f}"
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a == 0:
        return "0"
    return f"{x:.3g}"


def fmt_ci(mean: float, lo: float, hi: float) -> str:
    """ "12.3 [11.0, 13.5]"; the bracket reads "n<2" when the CI is undefined."""
    if isinstance(mean, float) and math.isnan(mean):
        return "–"
    if math.isnan(lo) or math.isnan(hi):
        return f"{fmt(mean)} [n<2]"
    return f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


# ----------------------------------------------------------------------------- Markdown


def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(_md_cell(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def to_markdown(blocks: list[Block], figure_dir_name: str = "figures") -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "list":
            out.append("\n".join(f"- {i}" for i in b.items))
        elif b.kind == "kv":
            out.append(_md_table(pd.DataFrame(b.items, columns=["", "value"])))
        elif b.kind == "table" and b.table is not None:
            out.append(_md_table(b.table) if not b.table.empty else "_(none)_")
        elif b.kind == "figure" and b.image is not None:
            out.append(f"![{b.text}]({figure_dir_name}/{b.image.name})\n\n*{b.note}*")
        elif b.kind == "pre":
            out.append(f"```\n{b.text}\n```")
        if b.note and b.kind not in ("figure",):
            out.append(f"_{b.note}_")
    return "\n\n".join(out) + "\n"


# ----------------------------------------------------------------------------- HTML


def _inline_md(text: str) -> str:
    """Escape, then the little inline Markdown the report uses: `code` and **bold**."""
    parts = html.escape(text).split("`")
    s = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = s.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(df: pd.DataFrame, cls: str = "") -> str:
    if df.empty:
        return "<p class='none'>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for r in df.itertuples(index=False):
        cells = []
        for v in r:
            s = str(v)
            klass = ""
            if s.startswith("✗") or s == "fail":
                klass = " class='bad'"
            elif s.startswith("✓") or s == "pass":
                klass = " class='good'"
            elif "⚠" in s:
                klass = " class='flag'"
            cells.append(f"<td{klass}>{_inline_md(s)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<div class='tablewrap'><table class='{cls}'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def to_html(blocks: list[Block], title: str) -> str:
    css = CSS_FILE.read_text(encoding="utf-8") if CSS_FILE.is_file() else ""
    body: list[str] = []
    toc = [b for b in blocks if b.kind == "h2"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            anchor = b.anchor or _slug(b.text)
            body.append(f"<{b.kind} id='{anchor}'>{_inline_md(b.text)}</{b.kind}>")
            if b.kind == "h1" and toc:
                links = "".join(
                    f"<li><a href='#{t.anchor or _slug(t.text)}'>{html.escape(t.text)}</a></li>" for t in toc
                )
                body.append(f"<nav class='toc'><ul>{links}</ul></nav>")
        elif b.kind == "p":
            body.append(f"<p>{_inline_md(b.text)}</p>")
        elif b.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_md(str(i))}</li>" for i in b.items) + "</ul>")
        elif b.kind == "kv":
            rows = "".join(
                f"<tr><th>{html.escape(str(k))}</th><td>{_inline_md(str(v))}</td></tr>" for k, v in b.items
            )
            body.append(f"<table class='kv'>{rows}</table>")
        elif b.kind == "table" and b.table is not None:
            body.append(_html_table(b.table))
        elif b.kind == "figure" and b.image is not None:
            body.append(
                f"<figure><img src='{_img(b.image)}' alt='{html.escape(b.text)}'>"
                f"<figcaption><strong>{html.escape(b.text)}.</strong> {_inline_md(b.note)}"
                "</figcaption></figure>"
            )
        elif b.kind == "pre":
            body.append(f"<pre>{html.escape(b.text)}</pre>")
        if b.note and b.kind not in ("figure",):
            body.append(f"<p class='note'>{_inline_md(b.note)}</p>")
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{css}</style></head>\n"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
