"""The report as a page: one self-contained HTML file (PNGs inlined) and a markdown twin."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Plot:
    title: str
    path: Path  # a PNG in the report folder
    caption: str = ""


@dataclass
class Page:
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)  # the header: (label, value)
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; font-family: ui-monospace, monospace; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.notes li { color: #8a5a00; }
"""


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").removesuffix("%"))
    except ValueError:
        return False
    return True


def render_html(page: Page) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(page.title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(page.title)}</h1>",
    ]
    if page.facts:
        out.append('<dl class="facts">')
        out += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in page.facts]
        out.append("</dl>")
    for table in page.tables:
        out.append(f"<h2>{e(table.title)}</h2><table><thead><tr>")
        out += [f"<th>{e(h)}</th>" for h in table.headers]
        out.append("</tr></thead><tbody>")
        for row in table.rows:
            cells = "".join(f'<td class="num">{e(c)}</td>' if _is_number(c) else f"<td>{e(c)}</td>" for c in row)
            out.append(f"<tr>{cells}</tr>")
        out.append("</tbody></table>")
    if page.plots:
        out.append("<h2>Plots</h2>")
    for plot in page.plots:
        data = base64.b64encode(plot.path.read_bytes()).decode("ascii")
        caption = e(plot.caption) + (" " if plot.caption else "") + f"({e(plot.path.name)})"
        out.append(
            f'<figure id="{e(plot.path.stem)}"><h3>{e(plot.title)}</h3>'
            f'<img alt="{e(plot.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    if page.notes:
        out.append('<h2>Notes</h2><ul class="notes">')
        out += [f"<li>{e(n)}</li>" for n in page.notes]
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(page: Page) -> str:
    out = [f"# {page.title}", ""]
    if page.facts:
        out += [f"- **{k}:** {_md_cell(v)}" for k, v in page.facts]
        out.append("")
    for table in page.tables:
        out += [f"## {table.title}", ""]
        out.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
        out.append("|" + "---|" * len(table.headers))
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
        out.append("")
    if page.plots:
        out += ["## Plots", ""]
    for plot in page.plots:
        out += [f"### {plot.title}", "", f"![{plot.title}]({plot.path.name})", ""]
        if plot.caption:
            out += [plot.caption, ""]
    if page.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in page.notes] + [""]
    return "\n".join(out)
