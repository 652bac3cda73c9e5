"""Pure DICOM logic: reading and validating uploads, metadata, pixel transforms. No Ray, no I/O.

pydicom's own value validation is off when reading: it would echo invalid values (a malformed
PatientBirthDate, a PatientName) into warnings and logs. Our validation table (`Rules`) checks what matters
and its messages never quote patient data.
"""

from pydicom import config as _pydicom_config

from qure_ray.dicom.instance import InstanceMetadata, ParsedInstance, read_instance
from qure_ray.dicom.uids import is_valid_uid
from qure_ray.dicom.validation import Rule, Rules

_pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE

__all__ = ["InstanceMetadata", "ParsedInstance", "Rule", "Rules", "is_valid_uid", "read_instance"]
