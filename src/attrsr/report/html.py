"""Self-contained HTML pages: headings, text, tables and PNG images embedded as data URIs.

Generic (no attrsr types): a report is built with :class:`HtmlPage` and written atomically; the
file needs nothing beside it, so it can be mailed or attached to a CI run as is.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrsr.fileio import write_text_atomic
from attrsr.report.tables import columns_of, format_value

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1200px;
     padding:0 1rem;color:#1d232a;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #dde3ea}
h3{font-size:1.05rem;margin-top:1.4rem}
.sub{color:#5b6773;margin-top:0}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d4dae1;padding:.25rem .6rem} th{background:#f1f4f7;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:top;text-align:left;color:#5b6773;padding-bottom:.3rem}
figure{margin:.6rem 0 1rem} figcaption{color:#5b6773;font-size:.88rem}
img{max-width:100%;height:auto;image-rendering:auto;border:1px solid #e3e7ec}
.gallery{display:flex;flex-wrap:wrap;gap:.8rem} .gallery figure{margin:0}
dl{display:grid;grid-template-columns:max-content auto;gap:.15rem 1rem} dt{color:#5b6773}
code{background:#f1f4f7;padding:0 .2rem;border-radius:3px}
"""


def png_data_uri(png: bytes | str | Path) -> str:
    """``data:image/png;base64,…`` for PNG bytes or a PNG file."""
    data = png if isinstance(png, (bytes, bytearray)) else Path(png).read_bytes()
    return "data:image/png;base64," + base64.b64encode(bytes(data)).decode("ascii")


class HtmlPage:
    """Build a page piece by piece; :meth:`render` → str, :meth:`write` → file (atomic)."""

    def __init__(self, title: str, subtitle: str | None = None) -> None:
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        if subtitle:
            self.parts.append(f'<p class="sub">{html.escape(subtitle)}</p>')

    def heading(self, text: str, level: int = 2) -> HtmlPage:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str) -> HtmlPage:
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def raw(self, markup: str) -> HtmlPage:
        """Trusted markup, inserted as is."""
        self.parts.append(markup)
        return self

    def link(self, href: str, text: str) -> HtmlPage:
        self.parts.append(f'<p><a href="{html.escape(href, quote=True)}">{html.escape(text)}</a></p>')
        return self

    def facts(self, items: dict[str, Any]) -> HtmlPage:
        """A two-column definition list of label → value."""
        rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(format_value(v))}</dd>" for k, v in items.items())
        self.parts.append(f"<dl>{rows}</dl>")
        return self

    def image(self, png: bytes | str | Path, caption: str | None = None, alt: str = "", width: int | None = None) -> HtmlPage:
        self.parts.append(_figure(png, caption, alt, width))
        return self

    def gallery(self, items: Sequence[tuple[bytes | str | Path, str]], width: int | None = 240) -> HtmlPage:
        """Images side by side (wrapping), each with a caption."""
        figs = "".join(_figure(png, cap, cap, width) for png, cap in items)
        self.parts.append(f'<div class="gallery">{figs}</div>')
        return self

    def table(
        self,
        rows: Sequence[dict[str, Any]],
        columns: Sequence[str] | None = None,
        caption: str | None = None,
        digits: int = 3,
    ) -> HtmlPage:
        cols = list(columns or columns_of(rows))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = []
        for r in rows:
            cells = []
            for c in cols:
                v = r.get(c)
                cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
                cells.append(f"<td{cls}>{html.escape(format_value(v, digits))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        return self

    def render(self) -> str:
        return (
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{html.escape(self.title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.render())


def _figure(png: bytes | str | Path, caption: str | None, alt: str, width: int | None) -> str:
    w = f' width="{int(width)}"' if width else ""
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(png)}" alt="{html.escape(alt or caption or "", quote=True)}"{w}>{cap}</figure>'
