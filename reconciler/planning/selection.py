"""Whether a catalogued study is selected by a policy's ``select`` block. Pure."""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache

from reconciler.config.selectors import Match, StudySelector, TextMatch
from reconciler.model.catalog import CatalogStudy


def study_date(study: CatalogStudy) -> date | None:
    return _parsed_date(study.labels.study_date[:8])


@lru_cache(maxsize=4096)  # a plan asks for the same few thousand dates again and again
def _parsed_date(text: str) -> date | None:
    try:
        return datetime.strptime(text, "%Y%m%d").date() if text else None
    except ValueError:
        return None


def selects(selector: StudySelector, study: CatalogStudy, now: datetime) -> bool:
    if selector.modality and not {m.upper() for m in selector.modality} & {
        m.upper() for m in study.modalities
    }:
        return False
    if not _date_matches(selector, study_date(study), now):
        return False
    texts = {
        "StudyInstanceUID": selector.study_uid,
        "StudyDescription": selector.study_description,
        "PatientID": selector.patient_id,
        "AccessionNumber": selector.accession_number,
        **selector.tags,
    }
    return all(
        match is None or text_matches(match, study.attribute(keyword))
        for keyword, match in texts.items()
    )


def _date_matches(selector: StudySelector, when: date | None, now: datetime) -> bool:
    constrained = selector.study_date or selector.older_than or selector.newer_than
    if not constrained:
        return True
    if when is None:
        return False  # a study without a date cannot be placed in time: date rules skip it
    if selector.study_date:
        if selector.study_date.since and when < selector.study_date.since:
            return False
        if selector.study_date.until and when > selector.study_date.until:
            return False
    today = now.date()
    if selector.older_than is not None and not when < today - selector.older_than:
        return False
    return selector.newer_than is None or when > today - selector.newer_than


def text_matches(match: Match, value: str) -> bool:
    if isinstance(match, str):
        return value == match
    if isinstance(match, list):
        return value in match
    return _text_match(match, value)


def _text_match(match: TextMatch, value: str) -> bool:
    if match.equals is not None:
        return value == match.equals
    if match.contains is not None:
        return match.contains.casefold() in value.casefold()
    return re.search(match.regex or "", value) is not None
