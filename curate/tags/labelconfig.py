"""The labeling config: generated from params, or read from a user's XML, and what it allows.

Label Studio stores whatever result a client sends (it does not check results against the
config), so the pull has to: `TagSchema` says which control names carry the category, the crop
box, the keypoints and the note, and which values are legal. It is derived from the same XML
that annotators see, whether we generated it or the user wrote it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from curate.tags.config import TagsConfig

#: Control names of the generated config (the demo snapshot uses the same).
IMAGE, CATEGORY, CROP, KEYPOINTS, NOTE = "image", "category", "crop", "keypoints", "note"
CROP_LABEL = "crop"
_COLOURS = ("#e74c3c", "#27ae60", "#8e44ad", "#f39c12", "#16a085", "#d35400", "#2c3e50")


class LabelConfigError(ValueError):
    """A labeling config we cannot read tags from; the message says what is missing."""


@dataclass(frozen=True)
class TagSchema:
    """Which controls of a labeling config mean what, and the values they may hold."""

    image_key: str = IMAGE  # task data key of the image ($image)
    category: str | None = CATEGORY  # Choices control name
    choices: tuple[str, ...] = ()  # every legal choice, reject included
    reject: str | None = "reject"  # the choice that means "do not use this image"
    crop: str | None = CROP  # RectangleLabels control name
    keypoints: str | None = KEYPOINTS  # KeyPointLabels control name
    keypoint_labels: tuple[str, ...] = ()
    note: str | None = NOTE  # TextArea control name

    @property
    def categories(self) -> tuple[str, ...]:
        """The choices that are categories (everything but the reject choice)."""
        return tuple(c for c in self.choices if c != self.reject)

    @property
    def controls(self) -> dict[str, str]:
        """control name -> role, for the controls this schema knows."""
        roles = {self.category: "category", self.crop: "crop", self.keypoints: "keypoints",
                 self.note: "note"}
        return {name: role for name, role in roles.items() if name}


def generate(cfg: TagsConfig) -> str:
    """The XML annotators see: category (+ reject), crop box, named keypoints, a note."""
    choices = [*cfg.categories, cfg.reject_choice]
    lines = [
        "<View>",
        f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true" zoomControl="true"/>',
        '  <Header value="Category (reject: unusable for training)"/>',
        (f'  <Choices name="{CATEGORY}" toName="{IMAGE}" choice="single-radio" '
        'showInline="true" required="true">'),
        *(f"    <Choice value={quoteattr(c)}/>" for c in choices),
        "  </Choices>",
        '  <Header value="Crop box (may be rotated)"/>',
        f'  <RectangleLabels name="{CROP}" toName="{IMAGE}" canRotate="true">',
        f'    <Label value="{CROP_LABEL}" background="#2e86de"/>',
        "  </RectangleLabels>",
    ]
    if cfg.keypoints:
        lines += [
            '  <Header value="Alignment keypoints"/>',
            f'  <KeyPointLabels name="{KEYPOINTS}" toName="{IMAGE}" smart="false">',
            *(f"    <Label value={quoteattr(k)} background=\"{_COLOURS[i % len(_COLOURS)]}\"/>"
              for i, k in enumerate(cfg.keypoints)),
            "  </KeyPointLabels>",
        ]
    lines += [
        (f'  <TextArea name="{NOTE}" toName="{IMAGE}" placeholder="note (optional)" '
        'maxSubmissions="1" editable="true" rows="2"/>'),
        "</View>",
    ]
    return "\n".join(lines) + "\n"


def config_xml(cfg: TagsConfig) -> str:
    """The config to push: the user's file when params name one, else the generated one."""
    path = cfg.project.label_config
    if path is None:
        return generate(cfg)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelConfigError(
            f"tags.project.label_config: cannot read {path}: {exc.strerror or exc}") from exc


def _one(root: ET.Element, tags: tuple[str, ...], preferred: str) -> ET.Element | None:
    found = [el for el in root.iter() if el.tag in tags]
    if len(found) > 1:
        named = [el for el in found if el.get("name") == preferred]
        if len(named) != 1:
            names = ", ".join(repr(el.get("name")) for el in found)
            raise LabelConfigError(f"several <{tags[0]}> controls ({names}): name the one to use "
                                   f"{preferred!r}")
        return named[0]
    return found[0] if found else None


def parse(xml: str, reject_choice: str = "reject") -> TagSchema:
    """Read the roles of the controls from a labeling config (ours or the user's)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelConfigError(f"labeling config is not valid XML: {exc}") from exc
    image = _one(root, ("Image",), IMAGE)
    value = (image.get("value") or "") if image is not None else ""
    if not value.startswith("$"):
        raise LabelConfigError('labeling config needs an <Image name="image" value="$image"/> '
                               "tag: tasks carry the image URL in their data")
    category = _one(root, ("Choices",), CATEGORY)
    crop = _one(root, ("RectangleLabels", "Rectangle"), CROP)
    keypoints = _one(root, ("KeyPointLabels", "KeyPoint"), KEYPOINTS)
    note = _one(root, ("TextArea",), NOTE)
    choices = tuple(c.get("value") or c.get("alias") or ""
                    for c in (category.iter("Choice") if category is not None else ()))
    labels = tuple(lab.get("value") or "" for lab in
                   (keypoints.iter("Label") if keypoints is not None else ()))
    return TagSchema(
        image_key=value[1:],
        category=category.get("name") if category is not None else None,
        choices=choices,
        reject=reject_choice if reject_choice in choices else None,
        crop=crop.get("name") if crop is not None else None,
        keypoints=keypoints.get("name") if keypoints is not None else None,
        keypoint_labels=labels,
        note=note.get("name") if note is not None else None,
    )


def schema_for(cfg: TagsConfig) -> TagSchema:
    """The schema of the config params describe (used when there is no server to ask)."""
    return parse(config_xml(cfg), cfg.reject_choice)
