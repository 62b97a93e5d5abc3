"""The evaluation report's look and the helpers its sections share: the inline CSS, the colours of a delta's reading
and of a drift verdict, which slices and rows a section shows (overall first; a row under the minimum support is
greyed, never dropped), the folding of long or ungated parts under a <details> title (no script: a click opens
it) and the class that marks a slice table for report_script. The backtest report reuses CSS and READING_COLOURS,
so its page looks the same.
"""
from __future__ import annotations

from engine.evaluation.svg import MUTED, esc, finite

COUNT_METRICS = frozenset({"support", "positives"})  # shown in the support table, not charted
POSITIVE, NEGATIVE = "#c62828", "#1f77b4"
READING_COLOURS = {"better": "#1a7f37", "worse": "#c62828", "changed": "#1f5fbf", "no clear difference": "#8a8a8a",
                   "undefined": "#8a8a8a"}
STATUS_CLASSES = {"ok": "good", "stable": "good", "warn": "warn", "warning": "warn", "moderate": "warn",
                  "drift": "bad", "alert": "bad", "fail": "bad", "high": "bad"}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:0 auto;max-width:1180px;
padding:0 24px 48px;line-height:1.4}
h1{margin:24px 0 8px}h2{margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{margin:18px 0 6px}
nav a{margin-right:14px}code{background:#f4f4f4;padding:0 3px}
.verdict{font-size:1.6em;font-weight:700;padding:12px 18px;border-radius:6px;margin:12px 0;color:#fff}
.verdict-pass{background:#1a7f37}.verdict-fail{background:#c62828}.verdict-other{background:#6d6d6d}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:8px 0}dl.facts dt{color:#555}
dl.facts dd{margin:0}
table{border-collapse:collapse;margin:6px 0 12px;font-size:0.92em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:middle}th{background:#f6f6f6}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.fail td{background:#fdecea}tr.muted td{color:#9e9e9e}
.good{color:#1a7f37}.warn{color:#b26a00}.bad{color:#c62828;font-weight:600}
.note{color:#555;font-size:0.92em}.swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
figure{margin:10px 0 18px}figcaption{font-weight:600;margin-bottom:4px}.row{display:flex;flex-wrap:wrap;gap:24px}
.promo{font-weight:600;margin:4px 0 10px}.callout{border-left:5px solid #c62828;background:#fdecea;padding:8px 12px;
margin:10px 0}.callout ul{margin:4px 0 0;padding-left:20px}.nw{white-space:nowrap}details{margin:6px 0}details>summary{cursor:pointer;font-weight:600;padding:2px 0}
"""

LONG = 12  # a table with more rows than this is folded under a title that says what it holds


def under_support(row: dict, min_support) -> bool:
    """Greyed: flagged under support, or an undefined metric on a slice below the minimum support."""
    return row["status"] == "under_support" or (finite(min_support) and row["support"] < min_support)


def slice_order(metrics: list[dict]) -> list[str]:
    """The slices in the dict's order, overall first."""
    seen = list(dict.fromkeys(r["slice"] for r in metrics))
    return (["overall"] if "overall" in seen else []) + [s for s in seen if s != "overall"]


def slice_table(n_rows: int) -> str:
    """The class of a table with one row per slice: "slices" (sortable by report_script), plus "long" (a filter box)
    past LONG rows."""
    return "slices long" if n_rows > LONG else "slices"


def fold(title: str, body: str) -> str:
    """`body` folded in a <details> under `title` (the page stays complete: a click opens it, no script)."""
    return f"<details><summary>{esc(title)}</summary>{body}</details>"


def legend(models: list[str], colours: dict[str, str]) -> str:
    """The models' colour swatches and the grey of a slice under the minimum support."""
    items = "".join(f'<span class="swatch" style="background:{colours[m]}"></span>{esc(m)}' for m in models)
    return (f'<p class="note">{items}<span class="swatch" style="background:{MUTED}"></span>'
            f"under minimum support (greyed, still reported)</p>")
