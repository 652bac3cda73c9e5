"""Pure DICOM logic: reading and validating uploads, metadata, pixel transforms. No Ray, no I/O."""

from qure_ray.dicom.instance import InstanceMetadata, ParsedInstance, read_instance
from qure_ray.dicom.uids import is_valid_uid
from qure_ray.dicom.validation import Rule, Rules

__all__ = ["InstanceMetadata", "ParsedInstance", "Rule", "Rules", "is_valid_uid", "read_instance"]
