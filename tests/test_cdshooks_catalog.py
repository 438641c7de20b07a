"""CDS Hooks follows the field catalog of the ruleset it serves, not the repository's: a field
added by a reload is filled from the record when the mapping can fill it, and asked for as "not
available from the EHR" when it cannot (never assumed)."""
from __future__ import annotations

import dataclasses
import logging

import pytest

from schemas.intake import SHIPPED
from service.cdshooks.blueprint import CdsHooksState
from service.cdshooks.cards import EXTENSION_KEY
from service.cdshooks.jwt_auth import Issuer, Verifier
from service.cdshooks.mapping import (
    MAPPING_PATH,
    answerable_paths,
    default_mapping,
    fhir_reference,
    load_mapping,
    not_from_ehr,
    questionnaire_fields,
    reference_mismatches,
)
from service.policy.loader import read_pack
from tests.cdshooks_support import SIGN, ISSUER, hook_request, ketamine_order, now, questionnaire_response, searchset, situation
from tests.test_cdshooks_corpus import CASES, load
from tests.test_cdshooks_corpus import _request as corpus_request
from tests.test_field_catalog import NEW_FIELD, add_new_fact, copy_pack

PHEO = "medical_history.pheochromocytoma"
QUESTION = "Does the patient have a pheochromocytoma (untreated)?"


@pytest.fixture
def served(tmp_path, new_app, signer):
    """A CDS Hooks app serving a copy of the shipped pack: (app, pack_dir, post)."""
    pack_dir = copy_pack(tmp_path)
    app = new_app(rules_dir=pack_dir)
    jwks = signer.write_jwks(tmp_path)
    app.extensions["cds_hooks"] = CdsHooksState(
        verifier=Verifier(issuers={ISSUER: Issuer(ISSUER, jwks_file=str(jwks))}), base_url="http://localhost")
    client = app.test_client()

    def post(body: dict) -> dict:
        token = signer.token(f"http://localhost{SIGN}")
        response = client.post(SIGN, json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.get_json()
        [card] = response.get_json()["cards"]
        return card

    return app, pack_dir, post


def _request(pheochromocytoma: bool | None = None) -> dict:
    """The clean patient; the intake questionnaire answers pheochromocytoma when given."""
    prefetch, _ = situation("clean")
    [entry] = prefetch["intakeQuestionnaire"]["entry"]
    answers = {item["linkId"]: item["answer"][0] for item in entry["resource"]["item"][0]["item"]}
    qr_answers = {k: next(iter(v.values())) for k, v in answers.items()}
    qr_answers = {k: (v["code"] if isinstance(v, dict) else v) for k, v in qr_answers.items()}
    if pheochromocytoma is not None:
        qr_answers[PHEO] = pheochromocytoma
    prefetch["intakeQuestionnaire"] = searchset(questionnaire_response(qr_answers, now()))
    return hook_request("order-sign", [ketamine_order()], prefetch)


def _reload(app, pack_dir, **fact) -> None:
    add_new_fact(pack_dir, **fact)
    outcome = app.extensions["reloader"].reload()
    assert outcome.status == "loaded", outcome.problems


def test_a_field_the_reload_adds_is_filled_by_the_mapping_that_names_it(served, tmp_path):
    """The mapping may name a field ahead of the contract (here: the questionnaire lists
    pheochromocytoma). It was filtered by the repository's catalog, so after the reload that adds
    the field the answer was dropped and the patient asked again (incomplete) instead of excluded."""
    app, pack_dir, post = served
    mapping_file = tmp_path / "fhir_mapping.yaml"
    mapping_file.write_text(MAPPING_PATH.read_text().replace(
        "    - treatment.rems_enrolled\n", f"    - treatment.rems_enrolled\n    - {PHEO}\n"))
    state = app.extensions["cds_hooks"]
    app.extensions["cds_hooks"] = dataclasses.replace(state, mapping=load_mapping(mapping_file))
    before = post(_request(pheochromocytoma=True))["extension"][EXTENSION_KEY]
    assert before["decision"] == "eligible"  # not a field of the pack served yet: not read

    _reload(app, pack_dir)
    after = post(_request(pheochromocytoma=True))["extension"][EXTENSION_KEY]
    assert after["decision"] == "ineligible"
    assert [r["rule_id"] for r in after["reasons"]] == ["pheochromocytoma"]


def test_a_field_no_fhir_mapping_fills_is_asked_for_never_assumed(served, caplog):
    """docs/rules.md's new fact names the conditions section, which has no codes for it: a CDS
    request cannot answer it, so the card asks for it as not available from the EHR, and the
    log says so once for the catalog served."""
    app, pack_dir, post = served
    _reload(app, pack_dir)
    with caplog.at_level(logging.INFO, logger="service.cdshooks"):
        card = post(_request())
        post(_request())
    said = [r.getMessage() for r in caplog.records if "not available from the EHR" in r.getMessage()]
    assert len(said) == 1 and PHEO in said[0] and "prior_ketamine.adverse_events" in said[0]
    assert any(f"{PHEO}: its fhir reference names 'conditions', which does not fill it (no section answers it)"
               in r.getMessage() for r in caplog.records)
    decision = card["extension"][EXTENSION_KEY]
    assert (decision["decision"], decision["missing"]) == ("incomplete", [PHEO])
    assert PHEO not in decision.get("assumed", [])
    assert decision["not_from_ehr"] == [PHEO]
    assert "Not available from the EHR — ask" in card["detail"]
    assert f"`{PHEO}`: {QUESTION}" in card["detail"]
    assert "Missing from the record" not in card["detail"]


def test_a_field_whose_catalog_entry_names_the_questionnaire_is_read_from_it(served, monkeypatch):
    """The catalog's `fhir` reference drives the questionnaire: an editor who adds a field with
    `fhir: {resource: QuestionnaireResponse, mapping: questionnaire}` has it read from the intake
    questionnaire, without a mapping or code change; unanswered, it is missing from the record."""
    app, pack_dir, post = served
    monkeypatch.setattr("tests.test_field_catalog.NEW_FIELD", NEW_FIELD.replace(
        "{resource: Condition, mapping: conditions}", "{resource: QuestionnaireResponse, mapping: questionnaire}"))
    _reload(app, pack_dir)
    answered = post(_request(pheochromocytoma=True))["extension"][EXTENSION_KEY]
    assert answered["decision"] == "ineligible"
    assert [r["rule_id"] for r in answered["reasons"]] == ["pheochromocytoma"]
    assert post(_request(pheochromocytoma=False))["extension"][EXTENSION_KEY]["decision"] == "eligible"
    card = post(_request())
    unanswered = card["extension"][EXTENSION_KEY]
    assert (unanswered["decision"], unanswered["missing"]) == ("incomplete", [PHEO])
    assert "not_from_ehr" not in unanswered
    assert "Missing from the record" in card["detail"]


def test_every_field_the_mapping_fills_is_one_it_says_it_can_answer():
    """answerable_paths (what the card calls "from the EHR") covers every field the mapping
    filled for the conformance corpus, so a field it can fill is never asked as unavailable."""
    answerable = answerable_paths(default_mapping(), SHIPPED)
    filled = set()
    for case in CASES:
        filled.update(_paths(_mapped(case)))
    assert filled - answerable == {"subject_id"}
    assert len(filled) > 40
    # What no record can answer in the shipped pack: only the list of earlier adverse events.
    missing = [p for p, info in SHIPPED.flat.items() if info.kind != "object" and p not in answerable]
    assert missing == ["subject_id", "prior_ketamine.adverse_events"]
    assert not_from_ehr(["substance_use[0].status", PHEO, "prior_ketamine.adverse_events"], answerable) == [
        PHEO, "prior_ketamine.adverse_events"]


def test_the_questionnaire_reads_the_catalog_fields_that_name_it(tmp_path):
    pack_dir = copy_pack(tmp_path)
    (pack_dir / "fields.yaml").write_text((pack_dir / "fields.yaml").read_text().replace(
        "      # Optional additions used by the default pack.\n",
        NEW_FIELD.replace("{resource: Condition, mapping: conditions}",
                          "{resource: QuestionnaireResponse, mapping: questionnaire}").lstrip("\n")
        + "      # Optional additions used by the default pack.\n"))
    pack, problems = read_pack(pack_dir)
    assert pack is not None, problems
    assert PHEO in questionnaire_fields(default_mapping(), pack.catalog)
    assert PHEO not in questionnaire_fields(default_mapping(), SHIPPED)


def _mapped(path) -> dict:
    """The intake the mapping makes of one corpus patient (its full prefetch)."""
    import datetime as dt

    from service.cdshooks.fhir_fetch import FetchSettings, build_record, gather, parse_draft_orders
    from service.cdshooks.mapping import find_ketamine_orders, map_to_intake

    body = corpus_request(load(path), "order-sign")
    mapping = default_mapping()
    drafts, index = parse_draft_orders(body["context"])
    orders = find_ketamine_orders(drafts, mapping, index)
    record = build_record(gather(body, FetchSettings()), drafts, {id(o.resource) for o in orders}, index)
    mapped = map_to_intake(record, orders[0], mapping, as_of=dt.datetime.now(dt.timezone.utc),
                           subject_id="cds-x", catalog=SHIPPED)
    return mapped.raw if mapped is not None else {}


def _paths(raw: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in raw.items():
        if isinstance(value, dict):
            out.extend(_paths(value, prefix + key + "."))
        else:
            out.append(prefix + key)
    return out


def test_the_catalog_references_name_the_sections_that_fill_their_fields():
    """Each shipped field's `fhir` reference names a section that fills it: the date of the last
    suicide attempt is answered only by the questionnaire (no Condition carries that date as an
    answer), so its reference names the questionnaire, not `conditions`."""
    assert reference_mismatches(default_mapping(), SHIPPED) == []
    assert fhir_reference(SHIPPED, "psychiatric_history.last_suicide_attempt") == {
        "resource": "QuestionnaireResponse", "mapping": "questionnaire"}


def test_a_call_reads_the_served_ruleset_once(cds, monkeypatch):
    """The catalog that fills the intake, the rules that screen it and the cards' label come from
    one ruleset even when a reload swaps it during the call (the holder's contract)."""
    holder = cds.app.extensions["rulesets"]
    reads = []

    class Counting:
        @property
        def current(self):
            reads.append(1)
            return holder.current

    monkeypatch.setitem(cds.app.extensions, "rulesets", Counting())
    prefetch, _ = situation("clean")
    response = cds.post(SIGN, hook_request("order-sign", [ketamine_order()], prefetch))
    assert response.status_code == 200, response.get_json()
    assert len(reads) == 1
