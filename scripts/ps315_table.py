"""Regenerate reconciler/transforms/ps3.15-e1-1.json: PS3.15 Table E.1-1 as data.

The table (Application Level Confidentiality Profile Attributes) says, for every attribute
that may identify someone, what the Basic Profile and each option do with it. Reading it from
the standard beats typing hundreds of tags by hand and lets a new edition be picked up with one
command. Two inputs give the same output:

    # the standard itself (DocBook), from https://dicom.nema.org/medical/dicom/current/source/docbook/part15/part15.xml
    python scripts/ps315_table.py --docbook part15.xml --edition 2025b

    # innolitics' parse of the standard, as their `dicom-standard` package ships it
    python scripts/ps315_table.py --innolitics confidentiality_profile_attributes.json \
        --edition "2020 (innolitics dicom-standard 0.1.0)"

The private attributes row ("(gggg,eeee) where gggg is odd") is left out: the module handles
private attributes itself (removed unless Retain Safe Private keeps listed ones).
"""

from __future__ import annotations

import argparse
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "reconciler" / "transforms" / "ps3.15-e1-1.json"
DOCBOOK = "{http://docbook.org/ns/docbook}"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"

# Option columns: (our name, the DocBook header's prefix, innolitics' key).
OPTIONS = (
    ("retain_safe_private", "Rtn. Safe Priv.", "rtnSafePrivOpt"),
    ("retain_uids", "Rtn. UIDs", "rtnUIDsOpt"),
    ("retain_device_identity", "Rtn. Dev. Id.", "rtnDevIdOpt"),
    ("retain_institution_identity", "Rtn. Inst. Id.", "rtnInstIdOpt"),
    ("retain_patient_characteristics", "Rtn. Pat. Chars.", "rtnPatCharsOpt"),
    ("retain_full_dates", "Rtn. Long. Full Dates", "rtnLongFullDatesOpt"),
    ("retain_modified_dates", "Rtn. Long. Modif. Dates", "rtnLongModifDatesOpt"),
    ("clean_descriptors", "Clean Desc.", "cleanDescOpt"),
    ("clean_structured_content", "Clean Struct. Cont.", "cleanStructContOpt"),
    ("clean_graphics", "Clean Graph.", "cleanGraphOpt"),
)
_TAG = re.compile(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)")
_ACTION = re.compile(r"^[DZXKCU](/[DZXKCU]\*?)*$")


def _text(element: ET.Element) -> str:
    # The standard's cells hold zero-width spaces and line breaks inside names.
    return " ".join("".join(element.itertext()).replace("\u200b", "").split())


def _row(name: str, tag: str, basic: str, options: dict[str, str]) -> dict[str, object] | None:
    """One attribute in the output's form, or None for the private attributes row."""
    match = _TAG.fullmatch(tag.strip().upper())
    if match is None:
        if "ODD" in tag.upper():
            return None
        raise ValueError(f"unexpected tag {tag!r} for {name!r}")
    actions = {"basic": basic.strip(), **{k: v.strip() for k, v in options.items() if v.strip()}}
    for action in actions.values():
        if not _ACTION.match(action):
            raise ValueError(f"unexpected action {action!r} for {name!r}")
    # "x" marks a repeating group's free digits, e.g. 60xx3000 (Overlay Data).
    return {"tag": (match[1] + match[2]).lower(), "name": name.strip(), **actions}


def from_docbook(path: Path) -> list[dict[str, object]]:
    root = ET.parse(path).getroot()
    table = next(t for t in root.iter(f"{DOCBOOK}table") if t.get(XML_ID) == "table_E.1-1")
    headers = [_text(th) for th in table.iter(f"{DOCBOOK}th")]
    column = {
        name: next(i for i, h in enumerate(headers) if h.startswith(prefix))
        for name, prefix, _ in OPTIONS
    }
    basic = next(i for i, h in enumerate(headers) if h.startswith("Basic Prof"))
    rows = []
    for tr in table.find(f"{DOCBOOK}tbody") or ():
        cells = [_text(td) for td in tr.findall(f"{DOCBOOK}td")]
        options = {name: cells[i] for name, i in column.items()}
        row = _row(cells[0], cells[1], cells[basic], options)
        if row is not None:
            rows.append(row)
    return rows


def from_innolitics(path: Path) -> list[dict[str, object]]:
    rows = []
    for entry in json.loads(path.read_text(encoding="utf-8")):
        options = {name: entry.get(key, "") for name, _, key in OPTIONS}
        row = _row(entry["name"], entry["tag"], entry["basicProfile"], options)
        if row is not None:
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--docbook", type=Path, metavar="PART15_XML")
    source.add_argument("--innolitics", type=Path, metavar="JSON")
    parser.add_argument("--edition", required=True, help="edition of the standard, e.g. 2025b")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    rows = from_docbook(args.docbook) if args.docbook else from_innolitics(args.innolitics)
    rows.sort(key=lambda row: str(row["tag"]))
    header = {
        "table": "DICOM PS3.15 Table E.1-1",
        "edition": args.edition,
        "generated_by": "scripts/ps315_table.py",
        "options": [name for name, _, _ in OPTIONS],
    }
    # One attribute a line: diffs between editions stay readable.
    lines = ",\n".join(json.dumps(row, ensure_ascii=False) for row in rows)
    text = json.dumps(header, ensure_ascii=False)[:-1] + ', "attributes": [\n' + lines + "\n]}\n"
    args.output.write_text(text, encoding="utf-8")
    print(f"{len(rows)} attributes written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
