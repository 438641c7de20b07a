"""Batch screening: `screening batch INPUT.jsonl -o OUTPUT.jsonl` and service.batch.run_batch."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.batch import BatchError, run_batch
from service.cli import main
from service.ruleset import default_rules_path
from service.screening import screen
from tests.conftest import AS_OF, example, validated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from schemas.intake import IntakeSchema
from service.fastload import FastLoader
from tests.strategies import intakes as intake_strategy

EXAMPLES = ("eligible-iv", "ineligible-several", "incomplete-no-vitals", "review-substance-history")


def _intakes(n: int) -> list[str]:
    """n input lines cycling through the examples, each with its own subject id, and two bad lines."""
    lines = []
    for i in range(n):
        raw = copy.deepcopy(example(EXAMPLES[i % len(EXAMPLES)]))
        raw["subject_id"] = f"pt-{i + 1}"
        lines.append(json.dumps(raw))
    bad_value = copy.deepcopy(example("eligible-iv"))
    bad_value["vitals"]["systolic_bp"] = 900
    bad_value["medications"][0]["class"] = "potion"
    if n > 6:
        lines[4] = json.dumps(bad_value)
        lines[6] = '{"subject_id": "pt-7", '  # truncated JSON
    return lines


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(tmp_path: Path, lines: list[str], *args: str) -> tuple:
    src = _write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["batch", str(src), "-o", str(out), "--as-of", AS_OF.strftime("%Y-%m-%dT%H:%M:%S"),
                                       *args])
    return result, out


def test_one_output_line_per_input_line_in_order_with_the_same_decisions_as_screen(tmp_path, ruleset):
    lines = _intakes(12)
    result, out = _run(tmp_path, lines, "--workers", "1")
    records = _read(out)
    assert [r["line"] for r in records] == list(range(1, 13))
    for number, (line, record) in enumerate(zip(lines, records), 1):
        if number in (5, 7):
            assert "error" in record and "decision" not in record
            continue
        expected = screen(validated(json.loads(line)), ruleset, as_of=AS_OF).to_dict()
        got = record["decision"]
        assert got["subject_id"] == f"pt-{number}"
        for key in ("decision", "physician_review_required", "reasons", "missing", "findings", "ruleset", "evaluated_at"):
            assert got[key] == expected[key], (number, key)
    assert result.exit_code == 65, result.output  # complete output, but some lines were not valid


def test_a_value_with_unicode_line_separators_stays_on_its_one_output_line(tmp_path):
    """JSON leaves U+2028, U+2029 and U+0085 raw, and str.splitlines (and JavaScript) break lines
    at them: a medication named with one split its record in two (a generated property case)."""
    raw = copy.deepcopy(example("eligible-iv"))
    name = "Mida\u2028zo\x85la\u2029m"
    raw["medications"] = [{"name": name, "class": "benzodiazepine"}]
    _result, out = _run(tmp_path, [json.dumps(raw), json.dumps(example("eligible-iv"))], "--workers", "1")
    records = _read(out)  # splitlines: any line break a reader may know
    assert [r["line"] for r in records] == [1, 2]
    assert name in json.dumps(records[0], ensure_ascii=False)


def test_invalid_and_malformed_lines_are_reported_with_field_paths_without_stopping(tmp_path):
    result, out = _run(tmp_path, _intakes(8), "--workers", "1")
    records = _read(out)
    invalid = records[4]["error"]
    assert invalid["status"] == 422
    paths = {e["path"]: e["message"] for e in invalid["errors"]}
    assert "vitals.systolic_bp" in paths and "between" in paths["vitals.systolic_bp"]
    assert "medications[0].class" in paths
    malformed = records[6]["error"]
    assert malformed["status"] == 400 and malformed["code"] == "malformed_json"
    assert records[7]["decision"]["subject_id"] == "pt-8"  # the run went on


def test_summary_counts_by_decision_and_rule_on_stderr_and_in_a_file(tmp_path):
    lines = _intakes(16)
    summary_file = tmp_path / "summary.json"
    result, out = _run(tmp_path, lines, "--workers", "1", "--summary", str(summary_file))
    records = _read(out)
    summary = json.loads(summary_file.read_text())
    decisions = [r["decision"] for r in records if "decision" in r]
    assert summary["lines"] == 16
    assert summary["errors"] == {"total": 2, "by_status": {"400": 1, "422": 1}}
    expected = {}
    for d in decisions:
        expected[d["decision"]] = expected.get(d["decision"], 0) + 1
    assert summary["decisions"] == expected and sum(expected.values()) == 14
    assert set(expected) == {"eligible", "ineligible", "incomplete"}
    psychosis = sum("active_psychosis" in [r["rule_id"] for r in d["reasons"]] for d in decisions)
    assert psychosis > 0 and summary["rules"]["active_psychosis"] == psychosis
    assert summary["physician_review_required"] == sum(d["physician_review_required"] for d in decisions)
    assert "16 lines" in result.stderr and "active_psychosis" in result.stderr


def test_several_processes_keep_input_order(tmp_path):
    lines = _intakes(300)
    out = tmp_path / "out.jsonl"
    summary = run_batch(_write(tmp_path / "in.jsonl", lines), out, rules_dir=default_rules_path(),
                        as_of=AS_OF, workers=2, chunk_lines=7)
    records = _read(out)
    assert [r["line"] for r in records] == list(range(1, 301))
    assert [r["decision"]["subject_id"] for r in records if "decision" in r] == \
        [f"pt-{i}" for i in range(1, 301) if i not in (5, 7)]
    assert summary.lines == 300


def test_resume_after_an_interrupted_run_keeps_finished_lines_and_redoes_none(tmp_path):
    lines = _intakes(40)
    src = _write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    run_batch(src, out, rules_dir=default_rules_path(), as_of=AS_OF, workers=1)
    complete = out.read_bytes().splitlines(keepends=True)
    # Killed while writing line 24: 23 complete lines and half of the next.
    out.write_bytes(b"".join(complete[:23]) + complete[23][: len(complete[23]) // 2])
    kept_ids = [json.loads(x)["decision"]["decision_id"] for x in complete[:23] if b'"decision"' in x]

    result = CliRunner().invoke(main, ["batch", str(src), "-o", str(out), "--resume", "--workers", "2",
                                       "--as-of", AS_OF.strftime("%Y-%m-%d"), "--summary", str(tmp_path / "s.json")])
    records = _read(out)
    assert [r["line"] for r in records] == list(range(1, 41))
    # Finished lines were not redone: their decision ids (random per decision) are unchanged.
    assert [r["decision"]["decision_id"] for r in records[:23] if "decision" in r] == kept_ids
    assert records[23]["decision"]["subject_id"] == "pt-24"
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["resumed_from"] == 23 and summary["lines"] == 40
    assert summary["errors"]["total"] == 2  # counted from the earlier run's lines too
    assert result.exit_code == 65

    # Resuming a finished output does nothing more.
    again = CliRunner().invoke(main, ["batch", str(src), "-o", str(out), "--resume", "--workers", "1"])
    assert _read(out) == records and again.exit_code == 65


def test_without_resume_an_existing_output_is_replaced(tmp_path):
    lines = _intakes(10)
    _run(tmp_path, lines, "--workers", "1")
    result, out = _run(tmp_path, lines[:3], "--workers", "1")
    assert [r["line"] for r in _read(out)] == [1, 2, 3]
    assert result.exit_code == 0


def test_resume_refuses_an_output_written_under_another_ruleset(tmp_path):
    src = _write(tmp_path / "in.jsonl", _intakes(3))
    out = tmp_path / "out.jsonl"
    run_batch(src, out, rules_dir=default_rules_path(), as_of=AS_OF, workers=1)
    record = json.loads(out.read_text().splitlines()[0])
    record["decision"]["ruleset"]["digest"] = "sha256:" + "0" * 64
    out.write_text(json.dumps(record) + "\n")
    with pytest.raises(BatchError, match="not the loaded"):
        run_batch(src, out, rules_dir=default_rules_path(), as_of=AS_OF, workers=1, resume=True)
    assert len(out.read_text().splitlines()) == 1  # untouched


def test_resume_refuses_a_file_that_is_not_batch_output(tmp_path):
    src = _write(tmp_path / "in.jsonl", _intakes(3))
    out = tmp_path / "out.jsonl"
    out.write_text('{"hello": 1}\n')
    result = CliRunner().invoke(main, ["batch", str(src), "-o", str(out), "--resume", "--workers", "1"])
    assert result.exit_code == 1 and "not batch output" in result.stderr


def test_blank_and_non_object_lines_are_errors_not_skipped(tmp_path):
    good = json.dumps(example("eligible-iv"))
    result, out = _run(tmp_path, [good, "", "[1, 2]", good], "--workers", "1")
    records = _read(out)
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert records[1]["error"]["status"] == 400
    assert records[2]["error"]["status"] == 422 and records[2]["error"]["errors"][0]["path"] == "$"
    assert records[3]["decision"]["decision"] == "eligible"


def test_the_output_may_not_be_the_input(tmp_path):
    src = _write(tmp_path / "in.jsonl", _intakes(3))
    result = CliRunner().invoke(main, ["batch", str(src), "-o", str(src)])
    assert result.exit_code == 2 and len(src.read_text().splitlines()) == 3


# --- the fast validation path (service/fastload.py) agrees with the marshmallow contract --------


_SCHEMA = IntakeSchema()
_FAST = FastLoader(IntakeSchema())
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                     | st.text(max_size=12) | st.sampled_from(["none", "active", "iv_ketamine", "2026-01-01",
                                                                 "2026-01-01T00:00:00Z", "ssri", "\ud800"]),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=6)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@st.composite
def _mutated(draw):
    """A valid intake with one thing changed: a value replaced, a key removed, or one added."""
    raw = copy.deepcopy(draw(intake_strategy()))
    path = draw(st.sampled_from([p for p in _paths(raw) if p]))
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    how = draw(st.sampled_from(["replace", "remove", "add"]))
    if how == "replace":
        parent[path[-1]] = draw(_JSON)
    elif how == "remove" and isinstance(parent, dict):
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = draw(_JSON)
    return raw


def _outcome(load, raw):
    try:
        return "ok", load(copy.deepcopy(raw))
    except ValidationError as exc:
        return "error", exc.messages


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(intake_strategy(), _mutated()))
def test_the_fast_path_loads_exactly_what_marshmallow_loads(raw):
    assert _outcome(_FAST.load, raw) == _outcome(_SCHEMA.load, raw)


def test_the_fast_path_answers_valid_intakes_itself():
    fast = FastLoader(IntakeSchema())
    for name in EXAMPLES:
        assert fast.load(example(name)) == IntakeSchema().load(example(name))
    assert fast.fast_loads == len(EXAMPLES)


def test_a_schema_feature_it_does_not_model_goes_to_marshmallow():
    from marshmallow import Schema, fields, post_load

    class WithPostLoad(Schema):
        x = fields.Integer()

        @post_load
        def double(self, data, **_):
            return {"x": data["x"] * 2}

    fast = FastLoader(WithPostLoad())
    assert fast.load({"x": 2}) == {"x": 4} and fast.fast_loads == 0
