"""The dataset card's sample grid: the first thing a person checks of an exported dataset."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

CAPTION_HEIGHT = 28  # pixels of the sample grid's caption strip
MARK_COLOUR = (255, 140, 0)  # corner of a sample-grid tile whose matte lost clutter


def sample_grid(pngs: list[bytes], cols: int = 8, cell: int = 128,
                marked: Sequence[bool] = (), caption: str = "") -> bytes:
    """A PNG grid of the first images, for the dataset card (what a human checks first).

    Tiles whose `marked` is true get an orange corner (the card says what it means); a
    `caption` is written in a strip under the tiles.
    """
    rows = max(1, (len(pngs) + cols - 1) // cols)
    strip = CAPTION_HEIGHT if caption else 0
    grid = Image.new("RGB", (cols * cell, rows * cell + strip), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    corner = cell // 6
    for k, data in enumerate(pngs):
        img = Image.open(io.BytesIO(data)).convert("RGB").resize((cell, cell), Image.LANCZOS)
        r, c = divmod(k, cols)
        x, y = c * cell, r * cell
        grid.paste(img, (x, y))
        if k < len(marked) and marked[k]:
            draw.polygon([(x, y), (x + corner, y), (x, y + corner)], fill=MARK_COLOUR)
    if caption:
        font = ImageFont.load_default(size=CAPTION_HEIGHT // 2)
        draw.text((8, rows * cell + CAPTION_HEIGHT // 4), caption, fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    grid.save(buf, "PNG")
    return buf.getvalue()
