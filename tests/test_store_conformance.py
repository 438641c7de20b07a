"""Every store implementation against the interfaces in service.store.base (warehouse's
``verifyClass`` habit): each protocol method exists with a compatible signature, and each
implementation behaves as its protocol says, on SQLite and on PostgreSQL."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import time
import typing
from typing import Protocol

import pytest

import service.store
from service.decision import jsonable
from service.store import base
from service.store.base import (CounterStore, DecisionNotFound, DecisionStore, JtiStore, KeyStore,
                                Review, ReviewNotAllowed, Store, StoreUnavailable)
from service.store.factory import open_store
from service.store.keys import ApiKeyRecord, ApiKeyStore
from service.store.ratelimits import RateLimitStore
from service.store.signin_failures import SigninFailureStore
from service.store.sql import SqlStore
from service.store.web_sessions import WebSessionStore
from tests.conftest import save_example, validated

# Each protocol and the classes that implement it. A class in service/store that serves a
# protocol but is missing here fails test_every_store_class_is_held_to_a_protocol.
IMPLEMENTATIONS: dict[type, list[type]] = {
    Store: [SqlStore],
    DecisionStore: [SqlStore],
    JtiStore: [SqlStore],
    KeyStore: [ApiKeyStore],
    CounterStore: [RateLimitStore],
    base.SigninFailureLog: [SigninFailureStore],
    base.WebSessionStore: [WebSessionStore],
}
PROTOCOL_ATTRIBUTES = {Store: {"keys": KeyStore, "counters": CounterStore,
                               "signin_failures": base.SigninFailureLog, "web_sessions": base.WebSessionStore}}


def _protocol_methods(protocol: type) -> dict[str, typing.Callable]:
    methods = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object, typing.Protocol, typing.Generic) or not getattr(klass, "_is_protocol", False):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property)):
                methods[name] = value
    return methods


def _compatible(protocol_fn, impl_fn) -> list[str]:
    """Why ``impl_fn`` cannot stand in for ``protocol_fn`` (empty: it can)."""
    want, have = inspect.signature(protocol_fn), inspect.signature(impl_fn)
    problems = []
    for name, param in want.parameters.items():
        if name == "self":
            continue
        got = have.parameters.get(name)
        if got is None:
            problems.append(f"no parameter {name!r}")
            continue
        if got.kind != param.kind and not (param.kind is param.KEYWORD_ONLY and got.kind is got.POSITIONAL_OR_KEYWORD):
            problems.append(f"{name!r} is {got.kind.description}, the protocol says {param.kind.description}")
        if param.default is not param.empty and got.default != param.default:
            problems.append(f"{name!r} defaults to {got.default!r}, the protocol says {param.default!r}")
    for name, got in have.parameters.items():
        if name not in want.parameters and got.default is got.empty and got.kind not in (got.VAR_POSITIONAL, got.VAR_KEYWORD):
            problems.append(f"extra required parameter {name!r}")
    if want.return_annotation is not want.empty and str(have.return_annotation) != str(want.return_annotation):
        problems.append(f"returns {have.return_annotation}, the protocol says {want.return_annotation}")
    return problems


@pytest.mark.parametrize("protocol,implementation",
                         [(p, i) for p, impls in IMPLEMENTATIONS.items() for i in impls],
                         ids=lambda x: x.__name__)
def test_every_protocol_method_exists_with_a_compatible_signature(protocol, implementation):
    problems = []
    for name, expected in _protocol_methods(protocol).items():
        actual = getattr(implementation, name, None)
        if actual is None:
            problems.append(f"{name}: missing")
        elif isinstance(expected, property):
            if not isinstance(actual, property):
                problems.append(f"{name}: should be a property")
        else:
            problems += [f"{name}: {p}" for p in _compatible(expected, actual)]
    assert problems == [], f"{implementation.__name__} does not implement {protocol.__name__}"


def test_the_signature_check_catches_a_drifted_method():
    class Expected(Protocol):
        def add_review(self, decision_id: str, *, reviewer: str, outcome: str, note: str,
                       client: str = "") -> Review: ...

    class Drifted:
        def add_review(self, decision_id: str, reviewer: str, *, outcome: str, client: str = "x",
                       audit: bool) -> Review: ...

    assert _compatible(Expected.add_review, Drifted.add_review) == [
        "no parameter 'note'", "'client' defaults to 'x', the protocol says ''",
        "extra required parameter 'audit'"]

    def get(self, key_id: str) -> ApiKeyRecord: ...
    assert _compatible(KeyStore.get, get) == ["returns ApiKeyRecord, the protocol says ApiKeyRecord | None"]


def test_every_store_class_is_held_to_a_protocol():
    known = {impl for impls in IMPLEMENTATIONS.values() for impl in impls}
    for info in pkgutil.iter_modules(service.store.__path__):
        module = importlib.import_module(f"service.store.{info.name}")
        for name, klass in vars(module).items():
            if (inspect.isclass(klass) and klass.__module__ == module.__name__ and name.endswith("Store")
                    and not getattr(klass, "_is_protocol", False)):
                assert klass in known, f"{module.__name__}.{name} is not in IMPLEMENTATIONS"


def test_open_store_refuses_a_database_it_does_not_serve():
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        open_store("mysql://db/log")


def test_open_store_required_raises_when_the_database_is_down(tmp_path):
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1"
    with pytest.raises(StoreUnavailable):
        open_store(unreachable, required=True)
    store = open_store(unreachable)  # the service starts anyway, and answers 503 until it is back
    with pytest.raises(StoreUnavailable):
        store.ping()
    store.close()


# -- behaviour, on every database ---------------------------------------------------------------

@pytest.fixture
def store(db_store):
    """The decision log on every database (tests/dbfixtures.py), by the name the protocols use."""
    return db_store


def test_the_opened_store_and_its_parts_satisfy_their_protocols(store):
    for protocol, impls in IMPLEMENTATIONS.items():
        if SqlStore in impls:
            assert isinstance(store, protocol)
    for name, protocol in PROTOCOL_ATTRIBUTES[Store].items():
        part = getattr(store, name)
        assert isinstance(part, protocol) and type(part) in IMPLEMENTATIONS[protocol]
    assert store.backend in ("sqlite", "postgresql")
    store.ensure_schema()  # idempotent
    store.ping()


def test_decision_log_behaviour(store, ruleset):
    clean, clean_raw = save_example(store, ruleset, "eligible-iv")
    clean_intake = validated(clean_raw)
    review, _ = save_example(store, ruleset, "review-substance-history", client="k2")
    assert store.count_decisions() == 2
    got = store.get_decision(clean.decision_id)
    assert got.body == clean.to_dict() and got.intake == jsonable(clean_intake) and got.client == "k1"
    assert store.get_decision("no-such-id") is None
    items, cursor = store.list_decisions(limit=1)
    assert [s.decision_id for s in items] == [review.decision_id] and cursor
    items, cursor = store.list_decisions(cursor=cursor)
    assert [s.decision_id for s in items] == [clean.decision_id] and cursor is None
    with pytest.raises(ReviewNotAllowed):
        store.add_review(clean.decision_id, reviewer="dr-x", outcome="approve", note="")
    with pytest.raises(DecisionNotFound):
        store.add_review("no-such-id", reviewer="dr-x", outcome="approve", note="")
    signed = store.add_review(review.decision_id, reviewer="dr-x", outcome="approve", note="ok", client="web")
    assert store.get_decision(review.decision_id).reviews == (signed,)
    assert [d for d, _ in store.iter_intakes()] == [clean.decision_id, review.decision_id]
    assert list(store.iter_intakes(limit=1)) == [(clean.decision_id, jsonable(clean_intake))]
    entry = {"decision_id": review.decision_id, "service": "s", "client": "cds-hooks:x", "outcome": "accepted"}
    store.save_feedback(entry)
    assert store.feedback_for(review.decision_id) == [entry]
    assert store.feedback_for(clean.decision_id) == []


def test_key_store_behaviour(store):
    keys = store.keys
    assert keys.list() == [] and keys.get("k1") is None
    first = keys.add_if_none(key_id="k1", name="first", scopes=("admin",), token_sha256="a" * 64)
    assert first is not None and first.active
    assert keys.add_if_none(key_id="k2", name="second", scopes=("admin",), token_sha256="b" * 64) is None
    second = keys.add(key_id="k2", name="second", scopes=("read", "screen"), token_sha256="b" * 64)
    assert keys.get("k2") == second and [r.id for r in keys.list()] == ["k1", "k2"]
    revoked = keys.revoke("k2")
    assert not revoked.active and keys.revoke("k2").revoked_at == revoked.revoked_at
    assert keys.revoke("no-such-key") is None


def test_counter_store_behaviour(store):
    counters = store.counters
    # A new bucket is full; a take is all or nothing; it refills at the rate given.
    assert [counters.take("k1", 2, 5, 1.0, 1000.0).granted for _ in range(3)] == [2, 2, 0]
    assert counters.take("k1", 1, 5, 1.0, 1000.0).granted == 1
    assert counters.take("k1", 1, 5, 1.0, 1000.0).granted == 0
    assert counters.take("k1", 2, 5, 1.0, 1002.0).granted == 2
    assert counters.take("k2", 5, 5, 1.0, 1000.0).granted == 5


def test_jti_store_behaviour(store):
    now = time.time()
    assert store.use_jti_once("iss|jti-1", now + 60, now) is True
    assert store.use_jti_once("iss|jti-1", now + 60, now) is False  # a replay
    assert store.use_jti_once("iss|jti-2", now + 60, now) is True
    assert store.use_jti_once("iss|jti-old", now - 1, now - 2) is True
    assert store.use_jti_once("iss|jti-old", now + 60, now) is True  # expired, then forgotten


def test_only_the_factory_names_an_implementation():
    """The app, the CLI and the rest code against the protocols; ``open_store`` picks the class."""
    import ast
    from pathlib import Path

    root = Path(service.store.__file__).parent.parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.parent.name == "store" and path.parent.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "service.store.sql":
                offenders.append(str(path.relative_to(root.parent)))
    assert offenders == []


def test_signin_failure_log_behaviour(store):
    log = store.signin_failures
    first, count, oldest = log.reserve("n1", 1000.0, 60.0)
    assert count == 1 and oldest == 1000.0
    second, count, _ = log.reserve("n1", 1010.0, 60.0)
    assert count == 2 and log.reserve("n2", 1010.0, 60.0)[1] == 1
    log.release(second)
    assert log.reserve("n1", 1020.0, 60.0)[1] == 2
    # Past the window every older row goes, whatever its name.
    log.reserve("n3", 2000.0, 60.0)
    assert log.count_rows() == 1


def test_web_session_behaviour(store):
    sessions = store.web_sessions
    sid = sessions.start("dr.ada", 3600)
    other = sessions.start("dr.ada", 3600)
    assert sessions.user_of(sid) == "dr.ada" and sessions.user_of("x" * 40) is None
    sessions.end(sid)
    assert sessions.user_of(sid) is None and sessions.user_of(other) == "dr.ada"
    assert sessions.end_all_of("dr.ada") == 1 and sessions.user_of(other) is None
