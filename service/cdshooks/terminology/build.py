"""Rebuild the published value-set data files from a checkout of an eCQM content repository.

    python -m service.cdshooks.terminology.build /path/to/ecqm-content-qicore-2024 <commit>

Reads ``input/vocabulary/valueset/external/valueset-<OID>.json`` (VSAC expansions as the
cqframework eCQM content repositories publish them) for the OIDs named in ``SETS`` and writes one
compact JSON file per set under ``vsac/``: the set's identity (OID, canonical URL, version, the
expansion's identifier) and its codes by system, with the display of each code (so a reviewer
can read what is in it). Nothing else is kept. Subsets that we derive from a published set
(``DERIVED``) are written the same way, with the rule that derived them.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "vsac"
SOURCE_REPO = "github.com/cqframework/ecqm-content-qicore-2024"

SETS = {
    "2.16.840.1.113883.3.464.1003.105.12.1104": "Schizophrenia or Psychotic Disorder",
    "2.16.840.1.113883.3.464.1003.105.12.1205": "Schizophrenia",
    "2.16.840.1.113883.3.67.1.101.1.128": "Bipolar Disorder",
    "2.16.840.113883.3.67.1.101.3.2444": "Major Depression Including Remission",
    "2.16.840.1.113883.3.526.3.1491": "Major Depressive Disorder Active",
    "2.16.840.1.113762.1.4.1248.130": "Suicide Attempt",
    "2.16.840.1.113762.1.4.1029.219": "Aortic Aneurysm",
    "2.16.840.1.113883.3.117.1.7.1.212": "Hemorrhagic Stroke",
    "2.16.840.1.113762.1.4.1047.44": "Cerebrovascular Disease Stroke or TIA",
    "2.16.840.1.113883.3.666.5.623": "Acute Myocardial Infarction",
    "2.16.840.1.113762.1.4.1029.233": "Acute Heart Failure",
    "2.16.840.1.113883.3.526.3.1423": "Glaucoma",
    "2.16.840.1.113762.1.4.1248.137": "Liver Disease Moderate to Severe",
    "2.16.840.1.113883.3.526.3.378": "Pregnancy",
    "2.16.840.1.113883.3.3157.4055": "Pregnant State",
    "2.16.840.1.113762.1.4.1047.73": "Breastfeeding",
    "2.16.840.1.113883.3.464.1003.111.12.1011": "Pregnancy Test",
    "2.16.840.1.113883.3.464.1003.106.12.1001": "Substance Use Disorder",
    "2.16.840.1.113762.1.4.1111.171": "Opioid Use Disorder",
    "2.16.840.1.113762.1.4.1045.163": "Systolic Blood Pressure",
    "2.16.840.1.113762.1.4.1125.1": "Schedule IV Benzodiazepines",
    "2.16.840.1.113762.1.4.1196.226": "Opioids, All",
    "2.16.840.1.113883.3.464.1003.196.12.1213": "Antidepressant Medication",
    "2.16.840.1.113883.3.464.1003.196.12.1523": "Potentially Harmful Antipsychotics for Older Adults",
    "2.16.840.1.113883.3.464.1003.196.12.1480": "Potentially Harmful Nonbenzodiazepine Hypnotics for Older Adults",
    "2.16.840.1.113883.3.464.1003.1173": "Dextroamphetamine",
}

# Subsets of a published set, selected by a rule over the published displays: the rule is kept
# with the data. (id, parent OID, title, include regex, exclude regex)
DERIVED = [
    ("derived.schizoaffective", "2.16.840.1.113883.3.464.1003.105.12.1104", "Schizoaffective disorder",
     r"schizoaffective", None),
    ("derived.current-mania", "2.16.840.1.113883.3.67.1.101.1.128",
     "Manic or hypomanic episode, current", r"manic|hypomanic|mania\b", r"remission|depress|mixed|single manic"),
    ("derived.pregnancy-not-puerperal", "2.16.840.1.113883.3.526.3.378", "Pregnancy, without puerperium and lactation codes",
     r".", r"puerper|lactation|postpartum|nipple|breast"),
]


def _load(src: Path, oid: str) -> dict:
    path = src / "input/vocabulary/valueset/external" / f"valueset-{oid}.json"
    if not path.exists():
        path = src / "input/vocabulary/valueset/external" / f"ValueSet-{oid}.json"
    return json.loads(path.read_text())


def _compact(vs: dict, commit: str, path: str) -> dict:
    codes: dict[str, dict[str, str]] = {}
    for c in vs["expansion"]["contains"]:
        codes.setdefault(c["system"], {})[c["code"]] = c.get("display", "")
    return {
        "id": vs["id"], "title": vs.get("title") or vs.get("name"), "url": vs["url"],
        "version": vs.get("version"), "expansion": vs["expansion"].get("identifier"),
        "source": {"repository": SOURCE_REPO, "commit": commit, "path": path},
        "codes": {s: dict(sorted(v.items())) for s, v in sorted(codes.items())},
    }


def main(src: str, commit: str) -> None:
    root = Path(src)
    OUT.mkdir(exist_ok=True)
    built = {}
    for oid in SETS:
        vs = _load(root, oid)
        built[oid] = _compact(vs, commit, f"input/vocabulary/valueset/external/valueset-{oid}.json")
        (OUT / f"{oid}.json").write_text(json.dumps(built[oid], indent=1, ensure_ascii=False) + "\n")
    for vid, parent, title, include, exclude in DERIVED:
        base = built[parent]
        inc, exc = re.compile(include, re.IGNORECASE), re.compile(exclude, re.IGNORECASE) if exclude else None
        codes = {s: {c: d for c, d in v.items() if inc.search(d) and not (exc and exc.search(d))}
                 for s, v in base["codes"].items()}
        out = {"id": vid, "title": title, "derived_from": parent,
               "rule": f"codes of {parent} whose display matches /{include}/i"
                       + (f" and not /{exclude}/i" if exclude else ""),
               "version": base["version"], "expansion": base["expansion"], "source": base["source"],
               "codes": {s: v for s, v in codes.items() if v}}
        (OUT / f"{vid}.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
