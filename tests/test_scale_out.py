"""Scaling out on loopback: two instances (real gunicorn, two workers each) on two ports sharing
one real PostgreSQL decision log and one rules directory. Decisions from both land in one log,
and a rule change reaches every worker of both, each reporting the digest it serves."""
from __future__ import annotations

import shutil
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from service.ruleset import default_rules_path
from service.store.sql import SqlStore
from tests.conftest import example
from tests.servers import Gunicorn, make_api_key
from tests.test_observability import change_rule_message

pytestmark = pytest.mark.postgres


def served_digests(instance: Gunicorn) -> dict[str, float]:
    """screening_ruleset_info by digest: 1 while any live worker of the instance serves it."""
    text = requests.get(instance.url + "/metrics", timeout=10).text
    return {s.labels["digest"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "screening_ruleset_info"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_instances_share_one_log_and_every_worker_gets_a_rule_change(database_url, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_path(), rules)
    token = make_api_key(database_url, ("screen", "read"))  # migrates the schema, as an operator would
    headers = {"Authorization": f"Bearer {token}"}
    env = {"DATABASE_URL": database_url, "SCREENING_RULES_DIR": str(rules), "SCREENING_RELOAD_INTERVAL": "1"}
    minor = example("eligible-iv")
    minor["patient"]["age_years"] = 16  # minor_iv: a review reason whose message we will change

    with Gunicorn(tmp_path, env=env) as a, Gunicorn(tmp_path, env=env) as b:
        before = {}
        for name, instance in (("a", a), ("b", b)):
            response = requests.post(instance.url + "/v1/screenings", json=minor, headers=headers, timeout=30)
            assert response.status_code == 200, response.text
            before[name] = response.json()
        old_digest = before["a"]["ruleset"]["digest"]
        assert before["b"]["ruleset"]["digest"] == old_digest

        # One log: each instance's decision is in the shared database, and readable through the other.
        store = SqlStore(database_url)
        try:
            for decision in before.values():
                stored = store.get_decision(decision["decision_id"])
                assert stored is not None and stored.ruleset_digest == old_digest
        finally:
            store.close()
        for reader, decision in ((a, before["b"]), (b, before["a"])):
            got = requests.get(f"{reader.url}/v1/decisions/{decision['decision_id']}", headers=headers, timeout=10)
            assert got.status_code == 200 and got.json()["decision_id"] == decision["decision_id"]

        change_rule_message(rules, "2026.11.99")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            views = [served_digests(a), served_digests(b)]
            # Every live worker swapped: the old digest is 0 on both instances, a new one is 1.
            if all(v.get(old_digest, 0) == 0 and any(val == 1 for val in v.values()) for v in views):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the rule change did not reach every worker: {views}")
        [new_digest] = [d for d, v in views[0].items() if v == 1]
        assert views[1].get(new_digest) == 1

        for instance in (a, b):
            ready = requests.get(instance.url + "/readyz", timeout=10).json()
            assert ready["ruleset"]["version"] == "2026.11.99" and ready["ruleset"]["digest"] == new_digest
            for _ in range(4):  # new connections: either worker may answer
                decision = requests.post(instance.url + "/v1/screenings", json=minor, headers=headers,
                                         timeout=30).json()
                assert decision["ruleset"]["digest"] == new_digest
                [reason] = [r for r in decision["reasons"] if r["rule_id"] == "minor_iv"]
                assert "(rev. B)" in reason["message"]
