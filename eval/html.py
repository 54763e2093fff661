"""The building blocks of the HTML and Markdown reports: one page frame (offline: styles and
the table-sorting script inline, images as data URIs), tables, figures, class legends and
number formats with units.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
from PIL import Image

CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;
padding:0 16px}table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;
padding:4px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}td.num{text-align:right;
font-variant-numeric:tabular-nums}table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" ⇅";color:#aaa;font-size:11px}h1{font-size:22px}
h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin-top:22px}.figs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0 0 12px}figure img{max-width:560px;border:1px solid #eee}
figcaption{font-size:12px;color:#555;max-width:560px}.samples{display:flex;flex-wrap:wrap;gap:12px}
.samples figure img{max-width:100%}
.small{color:#666;font-size:12px}.legend span{display:inline-block;margin:0 12px 4px 0;
font-size:13px}.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;
vertical-align:middle;border:1px solid #999}.ok{color:#1a7f37}.bad{color:#b42318}
nav a{margin-right:14px}"""

# click a header to sort its table (numbers numerically, "n/a" last); click again to reverse
SORT_JS = """<script>
document.querySelectorAll("table.sortable th").forEach((th, col) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const dir = th.dataset.dir === "asc" ? "desc" : "asc";
    th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.dir);
    th.dataset.dir = dir;
    const key = tr => {
      const t = tr.cells[col].textContent.trim();
      const n = parseFloat(t.replace(/[^0-9.eE+-]/g, ""));
      return t === "n/a" ? null : (isNaN(n) || /^[^0-9.+-]/.test(t) ? t : n);
    };
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === null) return 1; if (y === null) return -1;
      const num = typeof x === "number" && typeof y === "number";
      const c = num ? x - y : String(x).localeCompare(String(y));
      return dir === "asc" ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  });
});
</script>"""


def fmt(v, digits: int = 4, unit: str = "") -> str:
    """A number for a table: ``n/a`` when undefined, fixed digits, an optional unit."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    text = f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
    return f"{text} {unit}".rstrip()


def fmt_count(n: float, unit: str = "") -> str:
    """Large counts with a suffix: 2.97 M params, 0.58 G FLOPs, 3,571 objects."""
    if n is None:
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}".rstrip()
    return f"{int(n):,} {unit}".rstrip() if float(n).is_integer() else f"{n:.2f} {unit}"


def status_word(status: str) -> str:
    """A variant's status as words (with an icon that needs no emoji font)."""
    return "✓ ok" if status == "ok" else f"✗ {status}"


def png_data_uri(img: np.ndarray | bytes) -> str:
    """An image array, or PNG bytes, as a data URI."""
    if not isinstance(img, bytes):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG", optimize=True)
        img = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(img).decode()


def table(rows: list[list[str]], head: list[str], sortable: bool = False, numeric=()) -> str:
    """An HTML table; ``numeric``: the columns right-aligned."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if j in numeric else ''}>{html.escape(c)}</td>"
            for j, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def md_table(rows: list[list[str]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def figure(png: bytes, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(alt)}" src="{png_data_uri(png)}">{cap}</figure>'


def legend(names: list[str], colors: list) -> str:
    """Class names with their colour swatches (the colours the drawings use)."""
    spans = "".join(
        f'<span><i style="background:rgb({",".join(str(int(v)) for v in c)})"></i>'
        f"{html.escape(n)}</span>"
        for n, c in zip(names, colors, strict=True)
    )
    return f'<div class="legend">{spans}</div>'


def page(title: str, body: list[str]) -> str:
    """A whole self-contained page."""
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"{''.join(body)}{SORT_JS}</body></html>"
    )
