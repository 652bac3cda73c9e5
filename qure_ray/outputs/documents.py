"""Human-readable outputs: the PDF report (reportlab) and PNG renderings of the overlay."""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
from io import BytesIO
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Image as PdfImage
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from qure_ray.outputs.content import ReportContent

rl_config.useA85 = 0  # binary image streams: ASCII85 (pure Python without reportlab's C accelerator) took ~1 s a page

THUMBNAIL_PX = 256


def png(rgb: np.ndarray, *, max_side: int | None = None) -> bytes:
    image = Image.fromarray(rgb, mode="RGB")
    if max_side is not None:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = BytesIO()
    # zlib level 1: about 5x faster than the default 6 on overlays, files ~12% larger; `optimize` is slower still
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


UNPRINTABLE = "not shown: characters outside this report's font (see the DICOM header)"
PATIENT_SEXES = {"M": "male", "F": "female", "O": "other"}
"""DICOM's PatientSex codes (an empty value aside), as a report prints them."""
UNICODE_FONT_FILE = Path(__file__).parent / "fonts" / "DejaVuSans.ttf"
"""For a header whose values (names, descriptions: what the source wrote) the PDF's built-in Helvetica cannot
draw (it has Windows-1252's glyphs): DejaVu Sans 2.37 (matplotlib's copy; its licence beside it), embedded as the
subset the report uses (about 20 KB more). It draws Latin with every accent (Polish, Czech, Turkish,
Vietnamese), Greek and Cyrillic. Not CJK: a CJK font is 10-20 MB, and a non-embedded one draws nothing in a
viewer without language packs."""


@functools.cache
def _unicode_font() -> TTFont:
    font = TTFont("DejaVuSans", str(UNICODE_FONT_FILE))
    pdfmetrics.registerFont(font)
    return font


def _in_helvetica(text: str) -> bool:
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


_NEEDS_SHAPING = frozenset({"R", "AL", "AN", "NSM"})
"""Bidirectional classes reportlab cannot lay out without a shaping engine: right-to-left letters and digits
(Hebrew and Arabic came out reversed and unjoined) and combining marks it cannot place."""


def printable(text: str) -> bool:
    """Whether the report draws `text` (NFC, as it is drawn): in Helvetica, else in the embedded Unicode font,
    left to right, a glyph per character."""
    text = unicodedata.normalize("NFC", text)
    if _in_helvetica(text):
        return True
    glyphs = _unicode_font().face.charToGlyph
    return all(ord(c) in glyphs and unicodedata.bidirectional(c) not in _NEEDS_SHAPING for c in text)


def readable_name(name: object) -> str:
    """A DICOM person name (PN) as a report prints it, `FAMILY, Prefix Given Middle, Suffix`, from its first
    component group that is not empty: alphabetic, else ideographic, else phonetic
    (`Adams^John Robert^^Rev.^B.A.` → `Adams, Rev. John Robert, B.A.`)."""
    group = next((group.strip() for group in str(name or "").split("=") if group.strip("^ ")), "")
    family, given, middle, prefix, suffix = [part.strip() for part in (group.split("^") + [""] * 5)[:5]]
    rest = " ".join(part for part in (prefix, given, middle) if part)
    return ", ".join(part for part in (family, rest, suffix) if part)


def readable_date(value: object) -> str:
    """A DA value (`YYYYMMDD`) as ISO 8601 (`YYYY-MM-DD`): no reader mistakes its day for its month."""
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def readable_sex(value: object) -> str:
    return PATIENT_SEXES.get(str(value or ""), "")


def pdf_report(*, study: dict[str, str], content: ReportContent, overlay: np.ndarray) -> bytes:
    """A one-page report: study header, findings table, the overlay (RGB uint8), the model, and its limits.

    `study` holds header fields (patient, accession, study date, modality, ...); the caller decides what a
    report may show. A value the report's font cannot draw is replaced by a note that says so.
    """
    styles = getSampleStyleSheet()
    buffer = BytesIO()
    document = SimpleDocTemplate(
        buffer, pagesize=A4, title="AI findings report", author="qure_ray", leftMargin=15 * mm, rightMargin=15 * mm
    )
    story: list[object] = [Paragraph("AI findings report", styles["Title"])]
    if content.not_for_clinical_use:
        story.append(
            Paragraph(
                f'<font color="red"><b>NOT FOR CLINICAL USE</b></font> — model trained on: {content.trained_on}',
                styles["Normal"],
            )
        )
    values = {name: unicodedata.normalize("NFC", value) for name, value in study.items()}  # é as one character
    header = [[name, value if printable(value) else UNPRINTABLE] for name, value in values.items()]
    # an image the model could not read has no triage: "Routine" could deprioritise it on a worklist
    header.append(["Triage", "not assessed" if content.unusable_reason else content.triage.value])
    table = _table(header, header_row=False)
    if not all(_in_helvetica(value) for _, value in header):
        table.setStyle(TableStyle([("FONTNAME", (1, 0), (1, -1), _unicode_font().fontName)]))
    story += [Spacer(1, 4 * mm), table, Spacer(1, 4 * mm)]
    story.append(Paragraph(f"<b>Impression:</b> {escape(content.summary)}", styles["Normal"]))
    if content.findings:
        rows = [["Finding", "Score", "Threshold", "Decision"]] + [
            [f.display, f"{f.score:.3f}", f"{f.threshold:.2f}", "present" if f.positive else "absent"]
            for f in content.findings
        ]
        story += [Spacer(1, 4 * mm), _table(rows, header_row=True)]
    story.append(Spacer(1, 4 * mm))
    image = PdfImage(BytesIO(_jpeg(overlay)))
    scale = min(120 * mm / image.imageWidth, 120 * mm / image.imageHeight)
    image.drawWidth, image.drawHeight = image.imageWidth * scale, image.imageHeight * scale
    story.append(image)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    story.append(
        Paragraph(f"Model {content.model.name} {content.model.version} — generated {generated}", styles["Italic"])
    )
    document.build(story)
    return buffer.getvalue()


PDF_IMAGE_PX = 1500
"""The overlay's longest side in the PDF: drawn 120 mm wide, that is over 300 dpi. A 3000 px radiograph at full
size made a 2.3 MB report (twice per image, with its Encapsulated PDF)."""


def _jpeg(rgb: np.ndarray) -> bytes:
    """The overlay for the PDF. reportlab embeds a JPEG as it is (DCTDecode); a PNG it decodes and deflates
    again: 5x the CPU of the whole report and a PDF 8x larger. Full-resolution chroma keeps the legend sharp."""
    image = Image.fromarray(rgb, mode="RGB")
    image.thumbnail((PDF_IMAGE_PX, PDF_IMAGE_PX), Image.Resampling.LANCZOS)
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=92, subsampling=0)
    return buffer.getvalue()


def _table(rows: list[list[str]], *, header_row: bool) -> Table:
    table = Table(rows, hAlign="LEFT")
    style = [("GRID", (0, 0), (-1, -1), 0.4, colors.grey), ("FONTSIZE", (0, 0), (-1, -1), 9)]
    if header_row:
        style.append(("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey))
    table.setStyle(TableStyle(style))
    return table
