"""A corpus of bad requests for POST /v1/screenings, shared by the Flask test client and the
real gunicorn server (tests/test_hostile_input.py).

Each case is the bytes an attacker or a broken intake system might send, the status it must
get, and (where a field is at fault) the path the error must name. Built from the shipped
example so that only the hostile part differs from a request that succeeds.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.conftest import example

ENDPOINT = "/v1/screenings"
JSON = "application/json"
# SCREENING_MAX_BODY_BYTES under which both the app fixture and the server run (the default).
MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes | None = None
    status: int = 422
    path: str | None = None            # a field path the error must name
    content_type: str | None = JSON
    method: str = "POST"
    query: str = ""
    headers: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def good() -> dict:
    return copy.deepcopy(example("eligible-iv"))


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def edited(edit: Callable[[dict], Any]) -> bytes:
    body = good()
    edit(body)
    return dumps(body)


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Set a dotted path; ``medications.0.name`` indexes a list."""
    def edit(body: dict) -> None:
        *parents, leaf = path.split(".")
        holder: Any = body
        for part in parents:
            holder = holder[int(part)] if isinstance(holder, list) else holder.setdefault(part, {})
        if isinstance(holder, list):
            holder[int(leaf)] = value
        else:
            holder[leaf] = value
    return edit


def case(name: str, path: str, value: Any, status: int = 422, error_path: str | None = "") -> Case:
    """The good intake with ``path`` set to ``value``; the error names ``path`` by default."""
    shown = error_path if error_path != "" else _dotted(path)
    return Case(name, edited(_set(path, value)), status, shown)


def _dotted(path: str) -> str:
    out = ""
    for part in path.split("."):
        out += f"[{part}]" if part.isdigit() else ("." if out else "") + part
    return out


def _raw_field(path: str, literal: str) -> bytes:
    """The good intake with a leaf replaced by text json.dumps would never write (NaN, 1e400)."""
    marker = "__HOSTILE__"
    return edited(_set(path, marker)).replace(f'"{marker}"'.encode(), literal.encode())


def _deep(levels: int, open_: str, close: str, leaf: str = "1") -> bytes:
    return (open_ * levels + leaf + close * levels).encode()


def malformed() -> list[Case]:
    text = dumps(good())
    return [
        Case("truncated JSON", text[: len(text) // 2], 400),
        Case("truncated after a key", b'{"subject_id": ', 400),
        Case("unquoted keys", b"{subject_id: 1}", 400),
        Case("single quotes", b"{'subject_id': 'a'}", 400),
        Case("trailing comma", text[:-1] + b",}", 400),
        Case("extra closing brace", text + b"}", 400),
        Case("two documents", text + text, 400),
        Case("trailing garbage", text + b" x", 400),
        Case("comment", b"// hi\n" + text, 400),
        Case("empty body", b"", 400),
        Case("whitespace body", b"  \n\t ", 400),
        Case("NUL byte", b"\x00", 400),
        Case("JSON array", b"[]", 422, "$"),
        Case("array of the intake", b"[" + text + b"]", 422, "$"),
        Case("JSON string", b'"intake"', 422, "$"),
        Case("JSON number", b"42", 422, "$"),
        Case("JSON true", b"true", 422, "$"),
        Case("JSON null", b"null", 422, "$"),
        Case("10,000 nested arrays", _deep(10_000, "[", "]"), 400),
        Case("10,000 nested objects", _deep(10_000, '{"a":', "}"), 400),
        Case("nesting over the limit inside a field", text[:-1] + b', "x": ' + _deep(40, "[", "]") + b"}", 400),
        Case("nesting within the limit inside a field", edited(_set("vitals", json.loads(_deep(20, "[", "]")))), 422, "vitals"),
        Case("NaN", _raw_field("vitals.systolic_bp", "NaN"), 400),
        Case("Infinity", _raw_field("vitals.systolic_bp", "Infinity"), 400),
        Case("-Infinity", _raw_field("vitals.diastolic_bp", "-Infinity"), 400),
        Case("1e400", _raw_field("vitals.systolic_bp", "1e400"), 400),
        Case("-1e400", _raw_field("patient.age_years", "-1e400"), 400),
        # Past Python's 4,300-digit limit for int(): refused while parsing, not a crash.
        Case("10**5000", _raw_field("vitals.systolic_bp", "1" + "0" * 5000), 400),
        Case("10**4000 (parses, out of range)", _raw_field("vitals.systolic_bp", "1" + "0" * 4000), 422, "vitals.systolic_bp"),
        Case("invalid UTF-8", text.replace(b'"pt-0001"', b'"pt-\xff\xfe"'), 400),
        Case("overlong UTF-8", text.replace(b'"pt-0001"', b'"pt-\xc0\xaf"'), 400),
        Case("UTF-16 with BOM", json.dumps(good()).encode("utf-16"), 400),
        Case("UTF-16LE without BOM", json.dumps(good()).encode("utf-16-le"), 400),
        Case("UTF-8 with BOM", b"\xef\xbb\xbf" + text, 400),
        Case("lone surrogate escape in a name", _raw_field("medications.0.name", '"\\ud800"'), 400, "medications[0].name"),
        Case("lone surrogate escape in subject_id", _raw_field("subject_id", '"pt-\\udfff"'), 400, "subject_id"),
        Case("lone surrogate escape in a key", text[:-1] + b', "\\udc00": 1}', 400, "$"),
        Case("duplicate top-level key", text[:-1] + b', "subject_id": "pt-0002"}', 400),
        Case("duplicate nested key", text.replace(b'"systolic_bp": 128', b'"systolic_bp": 128, "systolic_bp": 200'), 400),
    ]


def transport() -> list[Case]:
    text = dumps(good())
    return [
        Case("no content type", text, 415, content_type=None),
        Case("text/plain", text, 415, content_type="text/plain"),
        Case("form encoded", b"subject_id=pt-0001", 415, content_type="application/x-www-form-urlencoded"),
        Case("multipart", b"--x\r\n\r\n--x--", 415, content_type="multipart/form-data; boundary=x"),
        Case("application/javascript", text, 415, content_type="application/javascript"),
        Case("charset=utf-16 declared (JSON is UTF-8)", json.dumps(good()).encode("utf-16"), 400,
             content_type="application/json; charset=utf-16"),
        Case("oversized body", text[:-1] + b', "x": "' + b"a" * MAX_BODY + b'"}', 413),
        Case("oversized array", dumps({**good(), "medications": [{"name": "x", "class": "ssri"}] * 20_000}), 413),
        Case("GET", None, 405, method="GET", content_type=None),
        Case("PUT", text, 405, method="PUT"),
        Case("DELETE", None, 405, method="DELETE", content_type=None),
        Case("PATCH", text, 405, method="PATCH"),
        Case("explain=maybe", text, 422, "query.explain", query="?explain=maybe"),
    ]


def contract() -> list[Case]:
    long = "a" * 200_000
    return [
        # unknown fields at every level
        case("unknown top-level field", "diagnosis_name", "x"),
        case("unknown field in treatment", "treatment.dose_mg", 50),
        case("unknown field in patient", "patient.name", "Jane Doe"),
        case("unknown field in vitals", "vitals.spo2", 98),
        case("unknown field in psychiatric_history", "psychiatric_history.notes", "x"),
        case("unknown field in medical_history", "medical_history.asthma", True),
        case("unknown field in a medication", "medications.0.dose", "50 mg"),
        case("unknown field in allergies", "allergies.latex", True),
        Case("unknown field in a substance-use entry",
             edited(_set("substance_use", [{"substance": "alcohol", "disorder": True, "route": "oral"}])), 422,
             "substance_use[0].route"),
        case("unknown field in prior_ketamine", "prior_ketamine.sessions", 3),
        case("__proto__ key", "__proto__", {"admin": True}),
        # nulls where a value is required
        case("null subject_id", "subject_id", None),
        case("null treatment", "treatment", None),
        case("null route", "treatment.route", None),
        case("null indication", "treatment.indication", None),
        case("null medication", "medications.0", None),
        case("null medication name", "medications.0.name", None),
        case("null medication class", "medications.0.class", None),
        Case("null substance-use entry", edited(_set("substance_use", [None])), 422, "substance_use[0]"),
        Case("null adverse event", edited(_set("prior_ketamine", {"adverse_events": [None]})), 422,
             "prior_ketamine.adverse_events[0]"),
        Case("missing subject_id", edited(lambda b: b.pop("subject_id")), 422, "subject_id"),
        Case("missing treatment", edited(lambda b: b.pop("treatment")), 422, "treatment"),
        Case("empty object", b"{}", 422, "subject_id"),
        # wrong types
        case("string for a number", "vitals.systolic_bp", "150"),
        case("float for an integer", "vitals.systolic_bp", 150.5),
        case("integral float for an integer", "patient.age_years", 42.0),
        case("true for a number", "vitals.heart_rate", True),
        case("1 for true", "patient.pregnant", 1),
        case("0 for false", "allergies.ketamine", 0),
        case('"true" for true', "psychiatric_history.schizophrenia", "true"),
        case('"yes" for true', "medical_history.aneurysmal_vascular_disease", "yes"),
        case("number for subject_id", "subject_id", 1234),
        case("object for subject_id", "subject_id", {"id": 1}),
        case("string for treatment", "treatment", "iv_ketamine"),
        case("list for patient", "patient", [42]),
        case("object for medications", "medications", {"name": "x", "class": "ssri"}),
        case("string for substance_use", "substance_use", "alcohol"),
        case("number for measured_at", "vitals.measured_at", 1732000000),
        case("true for a date", "psychiatric_history.last_suicide_attempt", True),
        case("string for adverse_events", "prior_ketamine.adverse_events", "cystitis"),
        case("list for an enum", "treatment.route", ["iv_ketamine"]),
        # impossible and out-of-contract values
        case("systolic 900", "vitals.systolic_bp", 900),
        case("systolic -1", "vitals.systolic_bp", -1),
        case("diastolic equal to systolic", "vitals.diastolic_bp", 128),
        case("diastolic above systolic", "vitals.diastolic_bp", 190),
        case("age -3", "patient.age_years", -3),
        case("age 1000", "patient.age_years", 1000),
        case("heart rate 0", "vitals.heart_rate", 0),
        case("unknown route", "treatment.route", "oral"),
        case("unknown indication", "treatment.indication", "anything"),
        case("unknown medication class", "medications.0.class", "herbal"),
        case("unknown sex", "patient.sex_at_birth", "F"),
        case("measurement in the future", "vitals.measured_at", "2999-01-01T00:00:00Z"),
        case("naive datetime", "vitals.measured_at", "2026-11-20T09:30:00"),
        case("date for a datetime", "vitals.measured_at", "2026-11-20"),
        case("impossible date", "psychiatric_history.last_suicide_attempt", "2026-02-30"),
        case("suicide attempt in the future", "psychiatric_history.last_suicide_attempt", "2999-12-31"),
        Case("last use in the future",
             edited(_set("substance_use", [{"substance": "alcohol", "disorder": True, "last_use": "2999-01-01"}])),
             422, "substance_use[0].last_use"),
        case("date with a time zone name", "psychiatric_history.last_suicide_attempt", "2020-01-01 EST"),
        case("subject_id with spaces (a name)", "subject_id", "Jane Doe"),
        case("subject_id with markup", "subject_id", "<script>alert(1)</script>"),
        case("subject_id with SQL", "subject_id", "1' OR '1'='1"),
        case("empty subject_id", "subject_id", ""),
        case("200,000-character subject_id", "subject_id", long[:100_000]),
        case("empty medication name", "medications.0.name", ""),
        case("201-character medication name", "medications.0.name", "a" * 201),
        case("101 medications (contract limit 100)", "medications", [{"name": "x", "class": "ssri"}] * 101),
        case("5,000 numbers for substance_use", "substance_use", list(range(5000)), error_path="substance_use[0]"),
        case("duplicate-free but too many adverse events", "prior_ketamine.adverse_events",
             ["cystitis", "psychosis", "liver_injury", "severe_blood_pressure_rise", "cystitis"]),
    ]


def corpus() -> list[Case]:
    return malformed() + transport() + contract()
