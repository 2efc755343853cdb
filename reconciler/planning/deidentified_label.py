"""How plans and logs name a study at a destination that de-identifies it.

The local StudyDescription may hold the patient's name, and the local UIDs and date identify
the study: lines about a de-identified copy show its new Study UID (the one the destination
holds, the same HMAC the copy is made with) and its modalities, nothing else.
"""

from __future__ import annotations

from reconciler.config.destinations import DestinationConfig
from reconciler.model.plan import StudyLabel


def label_at(destination: DestinationConfig, study_uid: str, label: StudyLabel) -> StudyLabel:
    """``label`` as lines about ``study_uid`` at ``destination`` may show it."""
    if destination.anonymize is None:
        return label
    # Imported here: pydicom takes a while to import, and most sites de-identify nothing.
    from reconciler.transforms.pseudonyms import new_uid

    return StudyLabel(
        modalities=label.modalities,
        study_date="",
        description="",
        deidentified_uid=new_uid(destination.anonymize.key(), study_uid),
    )
