"""The dataset card: what a dataset holds, where it came from and what was left out, as JSON
(`NAME.json`) and Markdown (`NAME.md`), for one distribution or a class-labelled combination."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter

import pandas as pd

from core.stage import Status
from curate.config import Params
from curate.matte import subject
from curate.prepare.task import Settings


def distribution_card(name: str, dist_rows: pd.DataFrame, all_rows: pd.DataFrame,
                      table: pd.DataFrame, settings_hash: str, params: Params, resolution: int,
                      zip_name: str, settings: Settings, cleaned: set[str]) -> dict:
    """The dataset card: what is in the dataset, where it came from, and what was left out."""
    live = table[table.status == Status.OK]
    parents = dist_rows[dist_rows.image_id.isin(live.image_id)]
    others = all_rows[(all_rows.get("distribution") == name) & (all_rows.status != Status.OK)]
    return {
        "name": name, "file": zip_name, "images": len(live),
        "source_images": int(live.image_id.nunique()), "resolution": resolution,
        "settings_hash": settings_hash,
        "augmentation": dataclasses.asdict(params.prepare.augment),
        "per_source": dict(sorted(Counter(parents.source).items())),
        "per_alignment_method": dict(sorted(Counter(
            table[table.variant.fillna(0) == 0].method.dropna()).items())),
        "framing_matched_to_keypoints": {m: dataclasses.asdict(f) for m, f in settings.framing},
        "keypoint_angle_weights": (None if settings.keypoint_angle is None
                                   else dataclasses.asdict(settings.keypoint_angle)),
        "mask_up": "end nearer the top" if settings.mask_upright else "by shape",
        "matte_clutter_removed": len(cleaned & set(live.image_id)),
        "excluded_here": dict(sorted(Counter(table[table.status != Status.OK].reason).items())),
        "removed_upstream": dict(sorted(Counter(others.reason.fillna(others.status)).items())),
    }


def card_markdown(card: dict) -> str:
    labelled = "class-labelled " if "classes" in card else ""
    lines = [f"# Dataset `{card['name']}`", "",
             (f"`{card['file']}`: {card['images']} images at {card['resolution']}x"
              f"{card['resolution']} from {card['source_images']} source images "
              f"({labelled}StyleGAN2-ADA / StyleGAN3 / EDM2 zip format). Settings hash "
              f"`{card['settings_hash']}`."), "", f"![sample grid]({card['name']}_grid.png)", ""]
    lines += _classes_markdown(card.get("classes", []))
    for title, key in (("Per source", "per_source"), ("Alignment method", "per_alignment_method"),
                       ("Left out by prepare", "excluded_here"),
                       ("Removed by earlier stages", "removed_upstream")):
        lines += [f"## {title}", "", "| | count |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in card[key].items()] or ["| (none) | 0 |"]
        lines.append("")
    lines += ["## Framing", "", *_framing_lines(card), ""]
    lines += ["## Mattes", "", cleaned_text(card) + ".", ""]
    return "\n".join(lines)


def _classes_markdown(classes: list[dict]) -> list[str]:
    """The class table of a combined dataset (a trainer's class index -> what it holds)."""
    if not classes:
        return []
    return ["## Classes", "", ("`dataset.json` labels every image with the index of its "
                               "class: the distribution it comes from."), "",
            "| class index | name | images | source images |", "|---:|---|---:|---:|",
            *(f"| {c['index']} | {c['name']} | {c['images']} | {c['source_images']} |"
              for c in classes), ""]


def _framing_lines(card: dict) -> list[str]:
    """One line for a distribution's dataset; one per class for a combined one (each class is
    framed as its own distribution's dataset is)."""
    if "classes" not in card:
        up = ("Mask crops take the end nearer the image's top as up (it agreed with the "
              "tagged images' keypoints more often than the shape rule)."
              if card.get("mask_up") == "end nearer the top" else "")
        return [_framing_text(card["framing_matched_to_keypoints"]), "",
                _angle_text(card.get("keypoint_angle_weights")), *(["", up] if up else [])]
    return [f"- `{c['name']}`: {_framing_text(c['framing_matched_to_keypoints'])} "
            f"{_angle_text(c.get('keypoint_angle_weights'))}" for c in card["classes"]]


def _angle_text(weights: dict | None) -> str:
    """How keypoint angles were weighed against the mask's axis (curate.prepare.keypoint_angle)."""
    if weights is None:
        return ("Keypoint angles as the annotators' points give them (not weighed against the "
                "mask: too few images tagged twice, or with keypoints and a mask).")
    return (f"Keypoint angles weighed against the mask's axis: annotators' click error "
            f"{100 * weights['click'] ** 0.5:.2f}% of the longer side, mask axis offset "
            f"{weights['offset_deg']:+.1f} deg, mask error variance {weights['shape']:.2g} "
            "rad^2 per unit roundness.")


def combined_card(name: str, zip_name: str, cards: list[dict]) -> dict:
    """The card of a combined dataset from its classes' cards (index = position in `cards`).

    Counts are summed; what differs per class (settings hash, framing) stays with the class.
    """
    def summed(key: str) -> dict[str, int]:
        return dict(sorted(sum((Counter(c[key]) for c in cards), Counter()).items()))

    hashes = [c["settings_hash"] for c in cards]
    return {
        "name": name, "file": zip_name, "images": sum(c["images"] for c in cards),
        "source_images": sum(c["source_images"] for c in cards),
        "resolution": cards[0]["resolution"],
        "settings_hash": hashlib.sha256(json.dumps(hashes).encode()).hexdigest()[:16],
        "labels": "class index per image in dataset.json; see classes",
        "classes": [{"index": k, "name": c["name"], "images": c["images"],
                     "source_images": c["source_images"], "settings_hash": c["settings_hash"],
                     "framing_matched_to_keypoints": c["framing_matched_to_keypoints"],
                     "keypoint_angle_weights": c.get("keypoint_angle_weights")}
                    for k, c in enumerate(cards)],
        "augmentation": cards[0]["augmentation"],
        "per_source": summed("per_source"),
        "per_alignment_method": summed("per_alignment_method"),
        "matte_clutter_removed": sum(c["matte_clutter_removed"] for c in cards),
        "excluded_here": summed("excluded_here"),
        "removed_upstream": summed("removed_upstream"),
    }


def matte_cleaned(rows: pd.DataFrame) -> set[str]:
    """Images whose matte lost clutter to the matte stage's subject selection (none when the
    manifest has no subject columns: matting off, or cleaning disabled)."""
    if "m_parts_dropped" not in rows or "m_subject_removed" not in rows:
        return set()
    hit = subject.was_cleaned(rows["m_parts_dropped"].fillna(0),
                              rows["m_subject_removed"].fillna(0))
    return set(rows.loc[hit, "image_id"])


def cleaned_text(card: dict) -> str:
    return (f"{card['matte_clutter_removed']} of {card['source_images']} source images had "
            "clutter removed from their matte by subject selection")


def _framing_text(framing: dict[str, dict]) -> str:
    if not framing:
        return "Every crop as its method makes it (no keypoint framing to match)."
    return "Framed like the keypoint crops: " + "; ".join(
        f"{m} crops x{f['scale']:.2f}, centre moved ({f['dx']:+.2f}, {f['dy']:+.2f}) sides"
        for m, f in framing.items()) + "."




def contents_text(card: dict) -> str:
    """What the end-of-run line says the dataset holds: its classes, or how it was aligned."""
    if "classes" in card:
        return "classes " + ", ".join(f"{c['index']} {c['name']} ({c['images']})"
                                      for c in card["classes"])
    methods = ", ".join(f"{k} {v}" for k, v in card["per_alignment_method"].items())
    return f"aligned by {methods}. {_framing_text(card['framing_matched_to_keypoints'])}"
