"""Media types of what the platform stores and serves, shared by the server and the client."""

from __future__ import annotations

DICOM_MEDIA_TYPE = "application/dicom"
MEDIA_TYPES = {".dcm": DICOM_MEDIA_TYPE, ".png": "image/png", ".pdf": "application/pdf"}
"""Originals and assets by file extension."""
DICOM_JSON_MEDIA_TYPE = "application/dicom+json"


def accepts(accept_header: str, *offered: str) -> bool:
    """Whether an `Accept` header admits one of the `offered` media types (no header admits all).

    Media ranges match by type and subtype (`*/*`, `application/*`); a `multipart/related` range with a `type`
    parameter matches only an offered `multipart/related; type=...` with the same one. Quality values are
    ignored but for `q=0`, which refuses."""
    if not accept_header.strip():
        return True
    for name, params in media_ranges(accept_header):
        for media_type in offered:
            offered_name, _, offered_type = media_type.lower().partition('; type="')
            if name not in ("*/*", f"{offered_name.split('/')[0]}/*", offered_name):
                continue
            if "type" in params and params["type"] != offered_type.rstrip('"'):
                continue
            return True
    return False


def media_ranges(accept_header: str) -> list[tuple[str, dict[str, str]]]:
    """The media ranges of an `Accept` header, most preferred first (by quality value, then in the header's
    order), each with its parameters (names and values in lower case, quotes removed); not those with `q=0`,
    which refuse (`refused_media_types`)."""
    ranges = [(quality, name, params) for quality, name, params in _parsed(accept_header) if quality > 0]
    ranges.sort(key=lambda r: -r[0])  # stable: equal preference keeps the header's order
    return [(name, params) for _, name, params in ranges]


def refused_media_types(accept_header: str) -> set[str]:
    """The media types an `Accept` header refuses with `q=0` (of `multipart/related`, its `type`): a wildcard
    range elsewhere in the header does not admit them (RFC 9110 §12.5.1)."""
    return {
        params.get("type", name) if name == "multipart/related" else name
        for quality, name, params in _parsed(accept_header)
        if quality == 0
    }


def _parsed(accept_header: str) -> list[tuple[float, str, dict[str, str]]]:
    ranges = []
    for media_range in accept_header.split(","):
        name, _, parameters = media_range.partition(";")
        params = {
            k.strip().lower(): v.strip().strip('"').lower()
            for k, _, v in (p.partition("=") for p in parameters.split(";"))
            if k.strip()
        }
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 1.0  # malformed: not a refusal
        ranges.append((quality, name.strip().lower(), params))
    return ranges
