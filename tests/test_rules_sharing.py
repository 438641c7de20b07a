"""One load for every process that screens: gunicorn workers take the ruleset their master loaded
before forking them (durable-rules' compiled state included), batch pool workers the parent's,
and a process that cannot (other files, a reload, a spawned worker) takes the rules cache."""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import time

import pytest
import requests

from service import batch as batch_module
from service import reload as reload_module
from service.config import Settings
from service.ruleset import default_rules_path, load_ruleset
from service.screening import screen
from tests.conftest import EXAMPLES, example, validated
from tests.servers import Gunicorn

NAMES = sorted(p.stem for p in EXAMPLES.glob("*.json"))[:8]
SHARED = "using the ruleset loaded before the fork"


def summary(decision: dict) -> tuple:
    return (decision["decision"], sorted(r["rule_id"] for r in decision["reasons"]), sorted(decision["missing"]),
            decision["ruleset"]["digest"])


def screen_until_answered(running: Gunicorn, ruleset, prefix: str, workers: int = 2) -> set[int]:
    """Screen the examples until ``workers`` workers have answered; every answer must be the
    decision this process makes with its own cold-loaded ruleset."""
    pids: set[int] = set()
    for round_ in range(25):
        ids = set()
        for name in NAMES:
            rid = f"{prefix}-{round_}-{name}"
            ids.add(rid)
            # a new connection per request: the kernel hands connections to either worker
            response = requests.post(running.url + "/v1/screenings", json=example(name), timeout=30,
                                     headers={**running.headers, "X-Request-ID": rid})
            assert response.status_code == 200, response.text
            expected = screen(validated(copy.deepcopy(example(name))), ruleset).to_dict()
            assert summary(response.json()) == summary(expected), name
        pids |= {r["pid"] for r in running.log_records() if r.get("request_id") in ids}
        if len(pids) >= workers:
            return pids
    pytest.fail(f"the test needs {workers} workers to answer")


def sharing_pids(running: Gunicorn) -> set[int]:
    return {r["pid"] for r in running.log_records() if str(r["message"]).startswith(SHARED)}


def test_workers_screen_with_the_ruleset_their_master_compiled(tmp_path, ruleset):
    with Gunicorn(tmp_path, workers=2) as running:
        running.headers = {"Authorization": f"Bearer {running.api_key('screen', 'read')}"}
        master = [r["pid"] for r in running.log_records() if "loaded before the fork" in str(r["message"])
                  and not str(r["message"]).startswith(SHARED)]
        assert len(master) == 1
        answered = screen_until_answered(running, ruleset, "shared")
        assert answered <= sharing_pids(running) and master[0] not in answered
        # A worker that dies is replaced by a fork of the same master: it shares the ruleset too.
        # Both are killed in turn, so every answer below comes from a replacement.
        for victim in sorted(answered):
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                live = sharing_pids(running) - answered
                if len(live) >= 1 + sorted(answered).index(victim) and requests.get(running.url + "/healthz", timeout=5).ok:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the replacement worker did not take the master's ruleset")
        replaced = screen_until_answered(running, ruleset, "after", 1)
        assert replaced and not replaced & answered and replaced <= sharing_pids(running)


def test_with_the_cache_off_every_worker_loads_its_own(tmp_path, ruleset):
    with Gunicorn(tmp_path, workers=2, env={"SCREENING_RULES_CACHE": "0"}) as running:
        running.headers = {"Authorization": f"Bearer {running.api_key('screen', 'read')}"}
        screen_until_answered(running, ruleset, "own")
        assert not sharing_pids(running)
        assert not (tmp_path / f"state-{running.port}" / "rules-cache").exists()


@pytest.fixture
def no_preload(monkeypatch):
    monkeypatch.setattr(reload_module, "_preloaded", None)


def test_a_worker_takes_the_preloaded_ruleset_only_for_the_same_files(tmp_path, no_preload):
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_path(), rules)
    cache = Settings(state_dir=tmp_path / "state").pack_cache()
    loaded = load_ruleset(rules, "durable", cache)
    assert reload_module.preload(loaded, rules, "durable")
    assert reload_module.load_or_fall_back(rules, "durable", tmp_path / "state", cache=cache)[0] is loaded
    assert reload_module.inherited(rules, "reference") is None
    assert reload_module.inherited(tmp_path / "elsewhere", "durable") is None
    # without the cache (SCREENING_RULES_CACHE=0) nothing is shared
    assert reload_module.load_or_fall_back(rules, "durable", tmp_path / "state")[0] is not loaded
    pack_yaml = rules / "pack.yaml"
    pack_yaml.write_text(pack_yaml.read_text().replace("version:", "# edited\nversion:", 1))
    assert reload_module.inherited(rules, "durable") is None
    fresh = reload_module.load_or_fall_back(rules, "durable", tmp_path / "state", cache=cache)[0]
    assert fresh is not loaded and fresh.pack.digest == loaded.pack.digest


def test_a_ruleset_not_read_through_the_cache_is_not_preloaded(no_preload, ruleset):
    assert ruleset.files is None
    assert not reload_module.preload(ruleset, default_rules_path(), "durable")


def test_a_reload_in_another_worker_is_read_from_the_cache(tmp_path, monkeypatch):
    """The first worker to check a changed pack reads and lints it; every other worker, and the
    child that proves it compiles, take it from the cache."""
    from service.policy import loader
    from service.ruleset import RulesetHolder

    rules = tmp_path / "rules"
    shutil.copytree(default_rules_path(), rules)
    cache = Settings(state_dir=tmp_path / "state").pack_cache()
    first, second = (reload_module.Reloader(RulesetHolder(load_ruleset(rules, "durable", cache)), rules, "durable",
                                            tmp_path / "state", cache=cache) for _ in range(2))
    pack_yaml = rules / "pack.yaml"
    text = pack_yaml.read_text()
    version = next(line for line in text.splitlines() if line.startswith("version:"))
    pack_yaml.write_text(text.replace(version, version.rstrip().rstrip('"') + '-cache"' if version.rstrip().endswith('"')
                                      else version.rstrip() + "-cache"))
    children = []
    real_child = reload_module.compile_in_child
    monkeypatch.setattr(reload_module, "compile_in_child", lambda *a, **k: children.append(a) or real_child(*a, **k))
    assert first.reload().status == "loaded"
    assert len(children) == 1
    monkeypatch.setattr(loader, "read_pack", lambda *a, **k: pytest.fail("read again"))
    outcome = second.reload()
    assert len(children) == 1, "proven to compile by the first worker: no second child"
    assert outcome.status == "loaded", outcome.problems
    assert second.holder.current.pack.digest == first.holder.current.pack.digest
    assert second.holder.current.pack.rules[0].location.file == first.holder.current.pack.rules[0].location.file


def test_batch_pool_workers_screen_with_the_parents_ruleset(tmp_path, monkeypatch, ruleset):
    marks = tmp_path / "loads"
    marks.mkdir()

    def loading_in_a_worker(*_a, **_k):
        (marks / str(os.getpid())).touch()
        raise AssertionError("a pool worker loaded the pack")
    monkeypatch.setattr(batch_module, "load_ruleset", loading_in_a_worker)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(example(n)) + "\n" for n in NAMES * 5))
    out = tmp_path / "out.jsonl"
    summary = batch_module.run_batch(source, out, rules_dir=default_rules_path(), workers=2, chunk_lines=4,
                                     ruleset=ruleset, settings=Settings(state_dir=tmp_path / "state"))
    assert summary.lines == len(NAMES) * 5 and not summary.errors
    assert not list(marks.iterdir())
    assert batch_module._parent_ruleset is None  # not held after the run


def test_a_compile_proven_elsewhere_is_trusted_only_under_the_key(tmp_path, monkeypatch):
    from service.policy.packcache import files_digest

    rules = tmp_path / "rules"
    shutil.copytree(default_rules_path(), rules)
    cache = Settings(state_dir=tmp_path / "state").pack_cache()
    digest = files_digest(rules)
    assert not cache.compiled(digest, "durable")
    cache.mark_compiled(digest, "durable")
    assert cache.compiled(digest, "durable")
    assert not cache.compiled(digest, "reference")  # another backend is another proof
    mark = next(cache.directory.glob("*.compiled"))
    mark.write_bytes(b"0" * 64)  # forged
    assert not cache.compiled(digest, "durable")
    children = []
    monkeypatch.setattr(reload_module, "compile_in_child", lambda *a, **k: children.append(a))
    ruleset, problems = reload_module.validate_candidate(rules, "durable", 30.0, cache=cache)
    assert ruleset is not None and not problems and len(children) == 1


def test_commands_use_the_services_cache_and_never_make_one(tmp_path, monkeypatch):
    from service.cli import common
    from service.policy import loader
    from service.policy.packcache import PackCache

    rules = tmp_path / "rules"
    shutil.copytree(default_rules_path(), rules)
    monkeypatch.setenv("SCREENING_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("SCREENING_RULES_CACHE", raising=False)
    assert common.load_or_exit(rules).files is not None
    assert not (tmp_path / "state").exists()  # no cache made by a command
    PackCache.for_state_dir(tmp_path / "state").load(rules)  # the service's cache
    monkeypatch.setattr(loader, "read_pack", lambda *a, **k: pytest.fail("read again"))
    assert common.load_or_exit(rules).pack.digest


def test_screening_rules_cache_0_turns_it_off(monkeypatch, tmp_path):
    monkeypatch.setenv("SCREENING_RULES_CACHE", "0")
    assert Settings.from_env().pack_cache() is None
    monkeypatch.setenv("SCREENING_RULES_CACHE", "1")
    monkeypatch.setenv("SCREENING_STATE_DIR", str(tmp_path))
    assert Settings.from_env().pack_cache().directory == tmp_path / "rules-cache"
    monkeypatch.setenv("SCREENING_RULES_CACHE", "sometimes")
    with pytest.raises(SystemExit, match="SCREENING_RULES_CACHE"):
        Settings.from_env()
