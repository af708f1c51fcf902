"""Self-contained HTML report of quality checks (reports/outliers.html), for data engineers.

What the page answers: how many images each check flagged and with which threshold, what the
distribution of each measurement looks like around its threshold (histograms), what the worst
images of each kind look like (galleries sorted by severity), whether the threshold is right
(borderline images on both sides), and why one given image was flagged (detail view with all
its measurements, source URI and Label Studio task link). Filtering by reason and searching
by image id or source are plain JavaScript; the file opens from disk with no server and loads
nothing from the network.

Safety: every string that comes from data (file names, URIs, notes) reaches the page either
through Jinja2's autoescaping or inside a JSON data island whose `<`, `>`, `&` and line
separators are \\u-escaped, and the script writes them with `textContent`, never `innerHTML`.
Links are only set when they start with http:// or https://.

The builder is generic over checks (it takes `CheckResult`s), so the matte stage reuses it for
its separation checks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from core import atomic
from curate.quality.checks import CheckResult

TEMPLATES = Path(__file__).parent / "templates"
HIST_W, HIST_H, HIST_BINS = 300, 90, 40


@dataclass
class ExtraReason:
    """A reason that is not a thresholded check (annotator reject, unreadable file)."""

    name: str
    title: str
    description: str
    ids: list[str]


@dataclass
class ReportInput:
    """Everything the report shows; `frame` is indexed by image id."""

    title: str
    frame: pd.DataFrame                 # source_uri, source_uris, status, raw metric columns
    results: Mapping[str, CheckResult]  # thresholded checks, indexed like frame
    reasons: pd.Series                  # list of reason names per image id
    thumbs: Mapping[str, str]           # image id -> data: URI
    judged: pd.Series                   # bool per image id: the set checks were applied to
    extra_reasons: Sequence[ExtraReason] = ()
    metric_columns: Sequence[str] = ()  # raw columns listed in the detail view
    totals: Sequence[tuple[str, int]] = ()
    task_ids: Mapping[str, int] = field(default_factory=dict)
    task_url: str = ""
    gallery: int = 60
    borderline: int = 8
    notes: Sequence[str] = ()


def _fmt(value: Any) -> str:
    """Numbers with 3 significant digits; NaN/None as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(value)


def _threshold_text(result: CheckResult) -> str:
    t, check = result.threshold, result.check
    if t.mode == "disabled" or result.cutoff is None:
        return "disabled"
    side = "<" if check.bad == "low" else ">"
    unit = f" {check.unit}" if check.unit else ""
    if t.mode == "percentile":
        return f"worst {_fmt(t.value)}% ({side} {_fmt(result.cutoff)}{unit})"
    if t.spread is not None and result.cutoff != t.value:
        sign = "-" if check.bad == "low" else "+"
        return f"{side} {_fmt(result.cutoff)}{unit} (median {sign} {_fmt(t.spread)} robust SD)"
    return f"{side} {_fmt(result.cutoff)}{unit}"


def _histogram(result: CheckResult, judged: pd.Series) -> dict[str, Any] | None:
    """Bar geometry of one check's values (judged images), with the cut-off's x position."""
    values = result.values[judged].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    log = result.check.log_scale and bool((values > 0).all())
    transform = np.log10 if log else (lambda a: a)
    data = transform(values)
    lo, hi = float(data.min()), float(data.max())
    data_lo, data_hi = lo, hi
    cut = None
    if result.cutoff is not None and (not log or result.cutoff > 0):
        cut = float(transform(np.array([result.cutoff]))[0])
        lo, hi = min(lo, cut), max(hi, cut)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.02
    lo, hi = lo - pad, hi + pad
    counts, edges = np.histogram(data, bins=HIST_BINS, range=(lo, hi))
    top = max(int(counts.max()), 1)
    bar_w = HIST_W / HIST_BINS
    bars = []
    for i, n in enumerate(counts):
        if n == 0:
            continue
        h = max(1.5, HIST_H * math.sqrt(n / top))  # sqrt: small tails stay visible
        centre = (edges[i] + edges[i + 1]) / 2
        bad = cut is not None and ((centre < cut) if result.check.bad == "low" else (centre > cut))
        bars.append({"x": round(i * bar_w, 2), "y": round(HIST_H - h, 2),
                     "w": round(bar_w - 0.6, 2), "h": round(h, 2), "bad": bad, "n": int(n),
                     "range": f"{_fmt(_back(edges[i], log))} – {_fmt(_back(edges[i + 1], log))}"})
    cut_x = None if cut is None else round((cut - lo) / (hi - lo) * HIST_W, 2)
    return {"w": HIST_W, "h": HIST_H, "bars": bars, "cut_x": cut_x,
            "lo": _fmt(_back(data_lo, log)), "hi": _fmt(_back(data_hi, log)), "log": log,
            "n": int(values.size)}


def _back(v: float, log: bool) -> float:
    return float(10 ** v) if log else float(v)


def _short(image_id: str) -> str:
    return image_id[:10]


def _name(uri: Any) -> str:
    text = str(uri or "")
    return text.rsplit("/", 1)[-1].rsplit("!", 1)[-1] or text


class _Cards:
    """Builds card dicts and remembers which images the page shows (their records go in JSON)."""

    def __init__(self, inp: ReportInput) -> None:
        self.inp = inp
        self.shown: set[str] = set()

    def card(self, image_id: str, label: str) -> dict[str, Any]:
        self.shown.add(image_id)
        row = self.inp.frame.loc[image_id]
        reasons = self.inp.reasons.get(image_id, [])
        return {"id": image_id, "short": _short(image_id), "label": label,
                "name": _name(row.get("source_uri")), "reasons": " ".join(reasons)}


def _galleries(inp: ReportInput, cards: _Cards) -> list[dict[str, Any]]:
    out = []
    for name, result in inp.results.items():
        flagged = result.flags[result.flags].index
        if len(flagged) == 0:
            continue
        order = result.scores.loc[flagged].sort_values(ascending=False, kind="stable")
        chosen = order.index[: inp.gallery]
        out.append({"name": name, "title": result.check.title, "total": len(flagged),
                    "cards": [cards.card(i, _fmt(result.values.loc[i])) for i in chosen]})
    for extra in inp.extra_reasons:
        if extra.ids:
            chosen = sorted(extra.ids)[: inp.gallery]
            out.append({"name": extra.name, "title": extra.title, "total": len(extra.ids),
                        "cards": [cards.card(i, extra.name) for i in chosen]})
    return out


def _borderline(inp: ReportInput, cards: _Cards) -> list[dict[str, Any]]:
    """Per check, the images nearest the cut-off on the flagged and on the kept side."""
    out = []
    if inp.borderline <= 0:
        return out
    for name, result in inp.results.items():
        if result.cutoff is None:
            continue
        vals = result.values[inp.judged].dropna()
        if vals.empty:
            continue
        dist = (vals - result.cutoff).abs()
        is_flagged = result.flags.reindex(vals.index, fill_value=False)
        flagged = dist[is_flagged].sort_values(kind="stable").index[: inp.borderline]
        kept = dist[~is_flagged].sort_values(kind="stable").index[: inp.borderline]
        out.append({"name": name, "title": result.check.title,
                    "threshold": _threshold_text(result),
                    "flagged": [cards.card(i, _fmt(result.values.loc[i])) for i in flagged],
                    "kept": [cards.card(i, _fmt(result.values.loc[i])) for i in kept]})
    return out


def _safe_link(url: str) -> str | None:
    return url if url.startswith(("http://", "https://")) else None


def _record(inp: ReportInput, image_id: str) -> dict[str, Any]:
    """Everything the detail view shows for one image (plain JSON types only)."""
    row = inp.frame.loc[image_id]
    checks = []
    for result in inp.results.values():
        checks.append([result.check.title, _fmt(result.values.get(image_id)),
                       _threshold_text(result), bool(result.flags.get(image_id, False))])
    metrics = [[c, _fmt(row.get(c))] for c in inp.metric_columns if c in row.index]
    uris = row.get("source_uris")
    uris = [str(u) for u in uris] if isinstance(uris, (list, tuple, np.ndarray)) else []
    task_id = inp.task_ids.get(image_id)
    link = None
    if task_id is not None and inp.task_url:
        link = _safe_link(inp.task_url.replace("{task_id}", str(int(task_id))))
    return {"id": image_id, "uri": str(row.get("source_uri") or ""), "uris": uris,
            "status": str(row.get("status") or ""), "reasons": list(inp.reasons.get(image_id, [])),
            "size": f"{_fmt(row.get('width'))} × {_fmt(row.get('height'))}",
            "checks": checks, "metrics": metrics,
            "task": None if task_id is None else int(task_id), "task_url": link,
            "thumb": inp.thumbs.get(image_id)}


def json_island(obj: Any) -> Markup:
    """JSON safe to place inside <script type="application/json"> (no tag can close it)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return Markup(text)


def render(inp: ReportInput) -> str:
    """The report as one HTML string."""
    cards = _Cards(inp)
    reasons = [{"name": n, "title": r.check.title, "description": r.check.description,
                "count": int(r.flags.sum()), "threshold": _threshold_text(r)}
               for n, r in inp.results.items()]
    reasons += [{"name": e.name, "title": e.title, "description": e.description,
                 "count": len(e.ids), "threshold": "—"} for e in inp.extra_reasons]
    histograms = []
    for name, result in inp.results.items():
        hist = _histogram(result, inp.judged)
        if hist is not None:
            histograms.append({"name": name, "title": result.check.title,
                               "description": result.check.description,
                               "threshold": _threshold_text(result), **hist})
    galleries = _galleries(inp, cards)
    borderline = _borderline(inp, cards)
    records = {i: _record(inp, i) for i in sorted(cards.shown)}
    env = Environment(loader=FileSystemLoader(TEMPLATES),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True)
    n_flagged = int(sum(1 for r in inp.reasons if r))
    return env.get_template("outliers.html.j2").render(
        title=inp.title, totals=list(inp.totals), n_flagged=n_flagged, reasons=reasons,
        histograms=histograms, galleries=galleries, borderline=borderline,
        notes=list(inp.notes), data=json_island({"records": records}))


def write_report(inp: ReportInput, path: Path) -> Path:
    """Render and write atomically; returns the path."""
    atomic.write_text(Path(path), render(inp))
    return Path(path)
