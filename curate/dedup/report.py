"""reports/duplicates.html: one self-contained page a data engineer can open anywhere.

Clusters are rows of thumbnails, largest cluster first, the kept image first and marked,
every other image with the kind and distance of its link (a verified repost also with the
transform that maps it onto the kept image), whether it is a crop or adds framing or marks,
the criterion the kept image won on, its size, file size and source URIs; then the
byte-identical copies ingest merged, and images that could not be decoded.
Thumbnails are inline JPEG data URIs (cached per image), the CSS is inline, nothing is
fetched, and Jinja2's autoescaping escapes every string that came from the data (file
names and URLs are user-controlled).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from core import atomic
from core.cache import ResultCache, op_key
from core.imagemap import cached_map
from core.stage import Status
from curate.config import Params

KIND_LABEL = {"exact": "identical pixels", "hash": "perceptual hash",
              "verified": "verified repost", "embedding": "embedding"}
BECAUSE = {"framing": "framing (uncropped, no added border, caption or marks)",
           "resolution": "resolution", "sharpness": "sharpness", "bytes": "file size",
           "source_priority": "source priority", "image_id": "nothing (a tie: smaller id)"}
#: What a framing flag says about the copy that carries it.
FRAMING_TEXT = {"cropped": "a crop of another copy", "framed": "adds a border, caption or app UI",
                "marked": "has text or a logo laid over"}
MAX_URIS = 3


def thumbnail(item: tuple[str, str], px: int, background: tuple[int, int, int]) -> str:
    """An inline JPEG thumbnail (data URI) of one (image_id, path)."""
    from PIL import Image

    from core.imageio import decode

    img = decode(Path(item[1]), background=background, min_side=px)
    img.thumbnail((px, px), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnails(rows: pd.DataFrame, params: Params, cache: ResultCache, workers: int
               ) -> dict[str, str | None]:
    """Thumbnails of `rows` (image_id, store_path), from the cache or made in the pool; None
    for an image that cannot be decoded."""
    px = params.dedup.thumb_px
    bg = params.background
    op = op_key("dedup.thumb", 1, {"px": px, "background": list(bg)})
    paths = dict(zip(rows["image_id"], rows["store_path"]))
    items = [(i, str(Path(params.paths.store) / p)) for i, p in paths.items()]
    make = partial(thumbnail, px=px, background=(bg[0], bg[1], bg[2]))
    return {o.item[0]: o.value for o in cached_map(op, items, make, cache, key=itemgetter(0),
                                                    workers=workers, batch=32,
                                                    description="report thumbnails")}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _link_text(row: Any) -> str:
    if row.dup_kind == "exact":
        return "identical pixels"
    if row.dup_kind == "hash":
        return f"hash distance {int(row.distance)} bits"
    if row.dup_kind == "verified":
        return f"verified, {1.0 - float(row.distance):.0%} of patches agree"
    return f"cosine {1.0 - float(row.distance):.3f}"


def _card(row: Any, thumbs: dict[str, str | None], kept: bool) -> dict[str, Any]:
    uris = list(row.source_uris) if getattr(row, "source_uris", None) is not None else []
    uris = uris or [row.source_uri]
    card = {
        "id": row.image_id, "short": row.image_id[:12], "thumb": thumbs.get(row.image_id),
        "kept": kept, "dims": f"{row.width}×{row.height}", "bytes": _size(row.bytes),
        "format": row.format, "uris": uris[:MAX_URIS], "more": max(0, len(uris) - MAX_URIS),
        "kind": None, "link": None, "via": None, "to_kept": None, "because": None,
        "transform": None, "framing": FRAMING_TEXT.get(getattr(row, "framing", None) or ""),
    }
    if not kept:
        card["kind"] = row.dup_kind
        card["link"] = _link_text(row)
        if row.linked_to != row.duplicate_of:
            card["via"] = row.linked_to[:12]
        parts = []
        if not pd.isna(row.hash_distance):
            parts.append(f"{int(row.hash_distance)} bits")
        if not pd.isna(row.cosine):
            parts.append(f"cos {float(row.cosine):.3f}")
        card["to_kept"] = " · ".join(parts)
        card["because"] = BECAUSE.get(getattr(row, "kept_because", None) or "", None)
        transform = getattr(row, "transform", None)
        card["transform"] = transform if isinstance(transform, str) else None
    return card


def cluster_view(out: pd.DataFrame, limit: int) -> tuple[list[pd.DataFrame], int]:
    """Clusters to show (largest first, then by id), and how many there are in all."""
    members = out[out["cluster_id"].notna()]
    groups = [g for _, g in members.groupby("cluster_id", sort=True)]
    groups.sort(key=lambda g: (-len(g), g["cluster_id"].iloc[0]))
    return groups[:limit], len(groups)


def write_report(path: Path, out: pd.DataFrame, params: Params, cache: ResultCache,
                 workers: int, extra: dict[str, int]) -> None:
    """Render the report for the dedup manifest `out` to `path` (atomically)."""
    cfg = params.dedup
    shown, n_clusters = cluster_view(out, cfg.report_max_clusters)
    copies = out[out.get("n_sources", pd.Series(1, index=out.index)).fillna(1) > 1]
    copies = copies.sort_values(["n_sources", "image_id"], ascending=[False, True]).head(
        cfg.report_max_clusters)
    unreadable = out[out["status"] == Status.UNREADABLE]
    needed = pd.concat([*shown, copies]) if shown or len(copies) else out.head(0)
    thumbs = thumbnails(needed, params, cache, workers) if len(needed) else {}

    clusters = []
    for group in shown:
        kept_id = group["cluster_id"].iloc[0]
        rows = sorted(group.itertuples(), key=lambda r: (
            r.image_id != kept_id, _kind_rank(r.dup_kind), r.distance if r.distance == r.distance
            else 0.0, r.image_id))
        clusters.append({"id": kept_id[:12], "size": len(group),
                         "cards": [_card(r, thumbs, r.image_id == kept_id) for r in rows]})
    byte_copies = [{"card": _card(r, thumbs, True), "uris": list(r.source_uris)}
                   for r in copies.itertuples()]
    bits = 14 * cfg.hash_size if cfg.hash_method == "colorhash" else cfg.hash_size**2
    context = {
        "counts": _headline(out, extra, n_clusters),
        "params": {
            "hash": f"{cfg.hash_method} ({bits} bits), Hamming distance ≤ {cfg.hash_threshold}",
            "embedding": (f"{params.embeddings.model}, cosine ≥ {cfg.cosine_threshold}"
                          if cfg.embeddings else "off"),
            "verify": (f"{cfg.verify.candidates} nearest per image (cosine ≥ "
                       f"{cfg.verify.candidate_cosine}), ≥ {cfg.verify.min_inliers} SIFT inliers"
                       f", ≥ {cfg.verify.min_agreement:.0%} of patches agree"
                       if cfg.verify.enabled and cfg.embeddings else "off"),
            "keep": ", then ".join(cfg.keep),
        },
        "clusters": clusters, "n_clusters": n_clusters, "byte_copies": byte_copies,
        "n_byte_copies": int((out.get("n_sources", pd.Series(dtype=int)) > 1).sum()),
        "unreadable": [{"id": r.image_id, "uri": r.source_uri, "reason": r.reason}
                       for r in unreadable.itertuples()],
        "kind_label": KIND_LABEL,
    }
    html = _ENV.from_string(TEMPLATE).render(**context)
    atomic.write_text(Path(path), html)


def _kind_rank(kind: Any) -> int:
    return tuple(KIND_LABEL).index(kind) if kind in KIND_LABEL else -1


def _headline(out: pd.DataFrame, extra: dict[str, int], n_clusters: int
              ) -> list[tuple[str, str, bool]]:
    dups = out[out["status"] == Status.DUPLICATE]
    by_kind: Sequence[tuple[str, int]] = [
        (k, int((dups["dup_kind"] == k).sum())) for k in KIND_LABEL]
    return [
        ("images in", f"{len(out):,}", False),
        ("kept", f"{int((out['status'] == 'ok').sum()):,}", False),
        ("duplicates", f"{len(dups):,}", False),
        *[(f"by {KIND_LABEL[k]}", f"{n:,}", True) for k, n in by_kind],
        ("clusters", f"{n_clusters:,}", False),
        ("byte-identical copies merged at ingest",
         f"{extra.get('ingest_byte_copies', 0):,}", False),
        ("blank images (compared by exact pixels only)", f"{extra.get('blank_images', 0):,}",
         False),
        ("hash or embedding links dropped: no features in common",
         f"{extra.get('links_contradicted', 0):,}", False),
        ("unreadable", f"{int((out['status'] == Status.UNREADABLE).sum()):,}", False),
    ]


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Duplicates report</title>
<style>
  :root { --kept: #1a7f37; --exact: #8250df; --hash: #0969da; --embedding: #bc4c00;
          --verified: #9a6700;
          --muted: #57606a; --line: #d0d7de; }
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
         color: #1f2328; background: #f6f8fa; }
  h1 { margin: 0 0 4px; font-size: 22px; }
  h2 { margin: 32px 0 8px; font-size: 18px; }
  .sub { color: var(--muted); margin-bottom: 16px; }
  .panel { background: #fff; border: 1px solid var(--line); border-radius: 8px;
           padding: 12px 16px; }
  .summary { display: flex; gap: 32px; flex-wrap: wrap; }
  table.counts td { padding: 1px 12px 1px 0; }
  table.counts td.n { text-align: right; font-variant-numeric: tabular-nums; font-weight: 600; }
  table.counts tr.sub td:first-child { padding-left: 16px; color: var(--muted); }
  .legend span { display: inline-block; margin-right: 12px; }
  .dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
         margin-right: 4px; vertical-align: -1px; }
  .clusters { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
  .cluster { background: #fff; border: 1px solid var(--line); border-radius: 8px;
             padding: 10px 12px; max-width: 100%; box-sizing: border-box; }
  .cluster h3 { margin: 0 0 8px; font-size: 14px; font-weight: 600; }
  .cluster h3 .muted { font-weight: 400; }
  .row { display: flex; gap: 10px; flex-wrap: wrap; align-items: flex-start; }
  .card { width: 184px; border: 2px solid var(--line); border-radius: 6px; padding: 6px;
          background: #fff; font-size: 12px; overflow-wrap: anywhere; }
  .card.kept { border-color: var(--kept); background: #f0fff4; }
  .card.exact { border-color: var(--exact); } .card.hash { border-color: var(--hash); }
  .card.embedding { border-color: var(--embedding); }
  .card.verified { border-color: var(--verified); }
  .thumb { width: 168px; height: 168px; display: flex; align-items: center;
           justify-content: center; background: #eef1f4; border-radius: 4px; margin-bottom: 4px; }
  .thumb img { max-width: 168px; max-height: 168px; }
  .thumb.missing { color: var(--muted); }
  .badge { display: inline-block; color: #fff; border-radius: 10px; padding: 0 8px;
           font-size: 11px; font-weight: 600; margin-bottom: 2px; }
  .badge.kept { background: var(--kept); } .badge.exact { background: var(--exact); }
  .badge.hash { background: var(--hash); } .badge.embedding { background: var(--embedding); }
  .badge.verified { background: var(--verified); }
  .muted { color: var(--muted); }
  .warn { color: #9a3412; }
  .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 11px; }
  ul.uris { margin: 2px 0 0; padding-left: 14px; }
  ul.uris li { margin: 0; }
  .copies td { vertical-align: top; padding: 6px 10px 6px 0; border-top: 1px solid var(--line); }
  .note { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<h1>Duplicates</h1>
<div class="sub">Near-duplicate clusters found by the dedup stage. In each cluster the kept
image comes first (green); the others have <code>status = duplicate</code> in
<code>data/dedup/manifest.parquet</code>, with the kind and distance of their link.</div>

<div class="panel summary">
  <table class="counts">
  {% for label, n, sub in counts %}
    <tr{% if sub %} class="sub"{% endif %}><td>{{ label }}</td><td class="n">{{ n }}</td></tr>
  {% endfor %}
  </table>
  <table class="counts">
    <tr><td>hash</td><td>{{ params.hash }}</td></tr>
    <tr><td>embedding</td><td>{{ params.embedding }}</td></tr>
    <tr><td>repost verification</td><td>{{ params.verify }}</td></tr>
    <tr><td>kept image</td><td>best {{ params.keep }}</td></tr>
  </table>
  <div class="legend">
    <span><span class="dot" style="background:var(--kept)"></span>kept</span>
    {% for kind, label in kind_label.items() %}
    <span><span class="dot" style="background:var(--{{ kind }})"></span>{{ label }}</span>
    {% endfor %}
  </div>
</div>

<h2>Clusters ({{ n_clusters }})</h2>
{% if not clusters %}<p class="note">No near-duplicates found.</p>{% endif %}
{% if n_clusters > clusters|length %}
<p class="note">Showing the {{ clusters|length }} largest of {{ n_clusters }} clusters
(raise dedup.report_max_clusters to see more; all are in the manifest).</p>
{% endif %}
<div class="clusters">
{% for c in clusters %}
<div class="cluster">
  <h3>{{ c.size }} images <span class="muted mono">cluster {{ c.id }}</span></h3>
  <div class="row">
  {% for card in c.cards %}
    <div class="card {{ 'kept' if card.kept else card.kind }}" title="{{ card.id }}">
      {% if card.thumb %}
      <div class="thumb"><img src="{{ card.thumb }}" alt="{{ card.short }}"></div>
      {% else %}
      <div class="thumb missing">no preview</div>
      {% endif %}
      {% if card.kept %}<span class="badge kept">kept</span>
      {% else %}<span class="badge {{ card.kind }}">{{ card.link }}</span>{% endif %}
      <div><b>{{ card.dims }}</b> · {{ card.bytes }} · {{ card.format }}</div>
      {% if card.to_kept %}<div class="muted">to kept: {{ card.to_kept }}</div>{% endif %}
      {% if card.transform %}
      <div>vs {{ 'kept' if not card.via else 'linked' }}: {{ card.transform }}</div>
      {% endif %}
      {% if card.framing %}<div class="warn">{{ card.framing }}</div>{% endif %}
      {% if card.because %}<div class="muted">kept one wins on {{ card.because }}</div>{% endif %}
      {% if card.via %}<div class="muted">linked via <span class="mono">{{ card.via }}</span></div>{% endif %}
      <div class="mono muted">{{ card.short }}</div>
      <ul class="uris">
        {% for u in card.uris %}<li>{{ u }}</li>{% endfor %}
        {% if card.more %}<li class="muted">and {{ card.more }} more</li>{% endif %}
      </ul>
    </div>
  {% endfor %}
  </div>
</div>
{% endfor %}
</div>

<h2>Byte-identical copies merged at ingest ({{ n_byte_copies }})</h2>
{% if byte_copies %}
<p class="sub">The same file found under several names or URLs is stored once; all its sources are listed.</p>
<table class="copies panel">
{% for b in byte_copies %}
  <tr>
    <td>{% if b.card.thumb %}<img src="{{ b.card.thumb }}" alt="{{ b.card.short }}" style="max-width:96px;max-height:96px">{% endif %}</td>
    <td><b>{{ b.card.dims }}</b> · {{ b.card.bytes }} · <span class="mono">{{ b.card.short }}</span>
      <ul class="uris">{% for u in b.uris %}<li>{{ u }}</li>{% endfor %}</ul></td>
  </tr>
{% endfor %}
</table>
{% else %}<p class="note">None.</p>{% endif %}

{% if unreadable %}
<h2>Could not be decoded ({{ unreadable|length }})</h2>
<table class="copies panel">
{% for u in unreadable %}
  <tr><td class="mono">{{ u.id[:12] }}</td><td>{{ u.uri }}</td><td>{{ u.reason }}</td></tr>
{% endfor %}
</table>
{% endif %}
</body>
</html>
"""
