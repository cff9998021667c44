"""A single self-contained HTML page: inline CSS, figures as inline SVG (per-trial hover
titles) or base64 PNG ``data:`` URIs, no scripts.

Why one file with nothing external: the report is mailed around, attached to MLflow runs and
opened on machines without network access; a page that fetches fonts, scripts or images from
elsewhere would break in all three. Why no script either: an SVG ``<title>`` is shown by every
browser on hover, which is all it takes to tell which trial a line or point is. Every piece of
text is escaped here, so study names, trial ids or config values can never inject markup (the
SVG comes from matplotlib, its titles escaped by ``dashboards.plots.to_svg``).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = ["Section", "RawHTML", "esc", "table", "kv_table", "image", "svg_figure", "note", "page", "fmt"]

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1180px;margin:0 auto;padding:12px 24px 48px}
h1{font-size:1.6em;margin:.6em 0 .1em}
h2{font-size:1.25em;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:1px solid #d0d7de}
h3{font-size:1.05em;margin:1.1em 0 .4em}
.sub{color:#57606a;margin:0 0 1em}
nav{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:6px 12px;font-size:.9em}
nav a{margin-right:14px;color:#0969da;text-decoration:none;white-space:nowrap}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}
table.kv td{overflow-wrap:anywhere}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv td,table.kv td.num{text-align:left}
.scroll{overflow-x:auto;max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.grid>div{flex:1 1 340px;min-width:0}
.grid>div.wide{flex:1.6 1 480px}
figure{margin:.5em 0 1em}
figure img,figure svg.figure{max-width:100%;height:auto;border:1px solid #eaeef2;display:block}
svg.figure g.hover{cursor:crosshair}
svg.figure g.hover:hover path,svg.figure g.hover:hover use{stroke-width:3.5px !important;opacity:1 !important;stroke-opacity:1 !important}
figcaption{color:#57606a;font-size:.85em}
.note{color:#57606a;font-size:.9em}
.banner{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:10px 14px;margin:12px 0;font-weight:600}
.banner.ok{background:#dafbe1;border-color:#4ac26b;font-weight:normal}
.best{background:#dafbe1}
.state-pruned{color:#57606a}
.state-failed{color:#cf222e}
.state-unfinished{color:#9a6700}
code{background:#f6f8fa;padding:0 3px;border-radius:3px}
"""


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def fmt(v: Any, digits: int = 4) -> str:
    """Compact display of a config value or metric (floats to ``digits`` significant places)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _cell(v: Any, header: bool = False) -> str:
    tag = "th" if header else "td"
    if isinstance(v, RawHTML):
        return f"<{tag}>{v.html}</{tag}>"
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    text = fmt(v) if num else esc(v if v is not None else "–")
    return f'<{tag} class="num">{text}</{tag}>' if num else f"<{tag}>{text}</{tag}>"


@dataclass(frozen=True)
class RawHTML:
    """Trusted markup for a table cell (built from escaped parts by this module's callers)."""

    html: str


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], id: str | None = None,
          row_classes: Sequence[str | None] | None = None) -> str:
    rows = list(rows)
    classes = list(row_classes or [None] * len(rows))
    head = "".join(f"<th>{esc(h).replace('.', '.<wbr>').replace('_', '_<wbr>')}</th>" for h in headers)  # dotted keys may wrap
    body = "".join(
        (f'<tr class="{esc(c)}">' if c else "<tr>") + "".join(_cell(v) for v in r) + "</tr>" for r, c in zip(rows, classes)
    )
    ident = f' id="{esc(id)}"' if id else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def kv_table(pairs: Iterable[tuple[str, Any]], id: str | None = None) -> str:
    """Two-column key/value table (rows get ``data-key`` so tests and scrapers can find values)."""
    ident = f' id="{esc(id)}"' if id else ""
    body = "".join(f'<tr data-key="{esc(k)}"><th>{esc(k)}</th>{_cell(v)}</tr>' for k, v in pairs)
    return f'<table class="kv"{ident}><tbody>{body}</tbody></table>'


def image(png: bytes, alt: str, caption: str | None = None, name: str | None = None) -> str:
    """An embedded PNG (base64 ``data:`` URI) with an optional caption naming the file beside it."""
    b64 = base64.b64encode(png).decode("ascii")
    cap = esc(caption or "") + (f' <code>{esc(name)}</code>' if name else "")
    return (f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{b64}">'
            + (f"<figcaption>{cap}</figcaption>" if cap else "") + "</figure>")


def svg_figure(svg: str, alt: str, caption: str | None = None, name: str | None = None) -> str:
    """An inline SVG figure (``dashboards.plots.to_svg``) whose per-trial artists show hover
    titles; ``name`` is the static PNG of the same figure written beside the page."""
    svg = svg.replace("<svg", f'<svg role="img" aria-label="{esc(alt)}"', 1)
    cap = esc(caption or "") + (f' Hover a line or point for its trial. Static copy: <code>{esc(name)}</code>' if name else "")
    return (f'<figure data-png="{esc(name or "")}">{svg}' + (f"<figcaption>{cap}</figcaption>" if cap else "") + "</figure>")


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


@dataclass
class Section:
    """One ``<section id=…>`` with an ``<h2>``; ``body`` is markup built with this module."""

    id: str
    title: str
    body: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> "Section":
        self.body.extend(parts)
        return self

    def render(self) -> str:
        return f'<section id="{esc(self.id)}"><h2>{esc(self.title)}</h2>\n' + "\n".join(self.body) + "\n</section>"


def page(title: str, subtitle: str, sections: Sequence[Section], banner: str | None = None, banner_ok: bool = False) -> str:
    """The whole document. ``banner`` (plain text) is shown above the table of contents."""
    nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    ban = (f'<div class="banner{" ok" if banner_ok else ""}" id="status-banner">{esc(banner)}</div>' if banner else "")
    body = "\n".join(s.render() for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{_CSS}</style></head><body><main>\n<h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}</p>\n"
        f"{ban}<nav>{nav}</nav>\n{body}\n</main></body></html>\n"
    )
