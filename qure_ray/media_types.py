"""Media types of what the platform stores and serves, shared by the server and the client."""

from __future__ import annotations

DICOM_MEDIA_TYPE = "application/dicom"
MEDIA_TYPES = {".dcm": DICOM_MEDIA_TYPE, ".png": "image/png", ".pdf": "application/pdf"}
"""Originals and assets by file extension."""
