"""Writing DICOM Part 10 files: a new data set with its file meta, and its bytes."""

from __future__ import annotations

from io import BytesIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian


def new_dataset(sop_class: str, sop_uid: str) -> Dataset:
    """An empty data set of `sop_class` with its File Meta Information (Explicit VR Little Endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = sop_uid
    return dataset


def to_bytes(dataset: Dataset) -> bytes:
    """Part 10 bytes: preamble, 'DICM', file meta, data set."""
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
