"""The picture radiologists see: the original, windowed, with heatmaps of positive findings and a legend."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from qure_ray.dicom.pixels import DATASET_WINDOW, Windowing, displayed
from qure_ray.outputs.content import ReportContent

# One colour per positive finding, in legend order (red, yellow, cyan, magenta, green, orange).
PALETTE = [(255, 40, 40), (255, 220, 0), (0, 220, 255), (255, 0, 220), (60, 255, 60), (255, 140, 0)]
HEAT_FLOOR = 0.4
"""Heat below this fraction of a map's peak is not drawn (keeps the image readable)."""
LEGEND_MIN_PX = 10


def display_image(dataset: Dataset, windowing: Windowing = DATASET_WINDOW, frame: int | None = None) -> np.ndarray:
    """A frame (from 1; None: the first) as 8-bit grayscale, windowed as the data set says (or by percentiles), or
    as given."""
    return (displayed(dataset, windowing=windowing, frame=(frame or 1) - 1) * 255).astype(np.uint8)


def overlay(dataset: Dataset, content: ReportContent, frame: int | None = None) -> np.ndarray:
    """RGB uint8 (rows, columns, 3): the image (the frame read, in a multi-frame object), heat of each positive
    finding in its colour, a legend."""
    gray = display_image(dataset, content.windowing, frame).astype(np.float32)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rows, columns = gray.shape
    positives = [i for i, finding in enumerate(content.findings) if finding.positive]
    if content.heatmaps is not None:
        for colour_index, label_index in enumerate(positives):
            heat = _upsample(content.heatmaps[label_index].astype(np.float32), rows, columns)
            alpha = np.clip((heat - HEAT_FLOOR) / (1 - HEAT_FLOOR), 0, 1)[..., None] * 0.55
            colour = np.array(PALETTE[colour_index % len(PALETTE)], dtype=np.float32)
            rgb = (rgb * (1 - alpha) + colour * alpha).astype(np.float32)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    _legend(image, content, positives)
    return np.asarray(image)


def _upsample(heat: np.ndarray, rows: int, columns: int) -> np.ndarray:
    return np.asarray(Image.fromarray(heat, mode="F").resize((columns, rows), Image.Resampling.BILINEAR))


def _legend(image: Image.Image, content: ReportContent, positives: list[int]) -> None:
    lines: list[tuple[str, tuple[int, int, int]]] = [
        (f"qure_ray {content.model.name} {content.model.version}", (255, 255, 255))
    ]
    if content.not_for_clinical_use:
        lines.append(("NOT FOR CLINICAL USE", (255, 80, 80)))
    if content.unusable_reason:
        words, line = f"UNUSABLE FOR AI: {content.unusable_reason}".split(), ""
        for word in words:  # wrap at about 48 characters
            if len(line) + len(word) > 48:
                lines.append((line, (255, 200, 0)))
                line = ""
            line = f"{line} {word}".strip()
        lines.append((line, (255, 200, 0)))
    elif not positives:
        lines.append(("No abnormality detected", (200, 255, 200)))
    for colour_index, label_index in enumerate(positives):
        finding = content.findings[label_index]
        lines.append((f"{finding.display}: {finding.score:.2f}", PALETTE[colour_index % len(PALETTE)]))
    draw = ImageDraw.Draw(image)
    # sized by the shorter side, then smaller until the widest line fits: by the height alone, a tall narrow
    # image cut the legend off at its right edge
    size = max(LEGEND_MIN_PX, min(image.height, image.width) // 40)
    font = ImageFont.load_default(size=size)
    while size > LEGEND_MIN_PX and _legend_width(draw, lines, font, size) > image.width:
        size -= 1
        font = ImageFont.load_default(size=size)
    margin, step = size // 2, int(size * 1.3)
    width = _legend_width(draw, lines, font, size)
    draw.rectangle((0, 0, width, step * len(lines) + 2 * margin), fill=(0, 0, 0))
    for i, (text, colour) in enumerate(lines):
        draw.text((margin, margin + i * step), text, fill=colour, font=font)


def _legend_width(
    draw: ImageDraw.ImageDraw,
    lines: list[tuple[str, tuple[int, int, int]]],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: int,
) -> int:
    return max(int(draw.textlength(text, font=font)) for text, _ in lines) + 2 * (size // 2)
