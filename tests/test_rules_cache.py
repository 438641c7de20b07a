"""The rules cache (service.policy.packcache): a hit gives exactly what a cold load gives, and an
entry is trusted only when it is ours, private, authentic and written for these very files."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.packs import write_pack
from schemas.catalog import Catalog
from service.policy import loader, packcache
from service.policy.loader import load_pack, load_pack_checked
from service.policy.packcache import PackCache, files_digest
from service.ruleset import default_rules_path, load_ruleset

SHIPPED_PACK = default_rules_path()


def differences(a, b, path: str = "pack") -> str | None:
    """The first place two packs differ, every field compared (also those a dataclass's == skips:
    locations, positions, the canonical form) and every type exact (a tuple is not a list)."""
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, Catalog):
        for attr in ("raw", "source", "positions", "digest"):
            found = differences(getattr(a, attr), getattr(b, attr), f"{path}.{attr}")
            if found:
                return found
        return differences(a.flat, b.flat, f"{path}.flat")
    if hasattr(type(a), "__slots__") and not isinstance(a, (tuple, str, int, float)):  # FieldInfo
        for name in type(a).__slots__:
            found = differences(getattr(a, name), getattr(b, name), f"{path}.{name}")
            if found:
                return found
        return None
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            found = differences(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
            if found:
                return found
        return None
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path}: keys differ"
        for key in a:
            found = differences(a[key], b[key], f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            found = differences(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def assert_same(cold, cached) -> None:
    (pack_a, warnings_a), (pack_b, warnings_b) = cold, cached
    assert differences(pack_a, pack_b) is None
    assert differences(warnings_a, warnings_b, "warnings") is None
    assert pack_a.digest == pack_b.digest


def from_cache(cache: PackCache, root: Path, shown_as: Path | None = None):
    """Load through the cache and insist it was a hit (the files are not parsed)."""
    digest = files_digest(root)
    hit = cache.get(root, shown_as, digest)
    assert hit is not None, "expected a cache hit"
    return hit


@pytest.fixture
def cache(tmp_path) -> PackCache:
    return PackCache.for_state_dir(tmp_path / "state")


@pytest.fixture
def no_reading(monkeypatch):
    """Reading a pack from its files fails: what loads must come from the cache."""
    def refuse(*_a, **_k):
        raise AssertionError("the pack was read from its files")
    monkeypatch.setattr(loader, "read_pack", refuse)


def test_a_hit_is_the_cold_load_of_the_shipped_pack(cache, monkeypatch):
    cold = load_pack_checked(SHIPPED_PACK)
    pack, warnings, digest = cache.load(SHIPPED_PACK)
    assert digest == files_digest(SHIPPED_PACK)
    assert_same(cold, (pack, warnings))
    assert_same(cold, from_cache(cache, SHIPPED_PACK))


@pytest.mark.parametrize("size", [1, 37, 600])
def test_a_hit_is_the_cold_load_of_generated_packs(cache, tmp_path, size):
    root = write_pack(tmp_path / f"pack-{size}", size)
    cold = load_pack_checked(root)
    cache.load(root)
    assert_same(cold, from_cache(cache, root))


def test_a_copy_of_the_pack_hits_and_names_its_own_files(cache, tmp_path, monkeypatch):
    """The last-good copy and a reload's snapshot have the same files elsewhere: one entry serves
    them, and every location names the file as a cold load of that directory would (a snapshot
    names the directory it was taken from)."""
    watched = tmp_path / "watched" / "pack"
    shutil.copytree(SHIPPED_PACK, watched)
    cache.load(watched)
    snapshot = tmp_path / "snapshot" / "pack"
    shutil.copytree(watched, snapshot)
    assert_same(load_pack_checked(snapshot, watched), from_cache(cache, snapshot, watched))
    assert_same(load_pack_checked(snapshot), from_cache(cache, snapshot))
    monkeypatch.chdir(tmp_path)
    assert_same(load_pack_checked(snapshot), from_cache(cache, snapshot))
    assert from_cache(cache, snapshot)[0].rules[0].location.file.startswith("snapshot/pack/")


def test_a_load_through_the_cache_reads_the_files_once(cache, tmp_path, monkeypatch):
    root = write_pack(tmp_path / "pack", 20)
    first = load_ruleset(root, "durable", cache)
    assert first.files == files_digest(root)
    monkeypatch.setattr(loader, "read_pack", lambda *a, **k: pytest.fail("read again"))
    again = load_ruleset(root, "durable", cache)
    assert again.pack.digest == first.pack.digest and again.files == first.files


def test_the_cache_keeps_nothing_but_private_files(cache, tmp_path):
    cache.load(SHIPPED_PACK)
    assert (cache.directory.stat().st_mode & 0o777) == 0o700
    for path in cache.directory.iterdir():
        assert (path.stat().st_mode & 0o777) == 0o600, path


def _entry(cache: PackCache, root: Path) -> Path:
    return cache.entry_path(files_digest(root))


def _cold_reads(monkeypatch) -> list:
    calls = []
    real = loader.read_pack

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)
    monkeypatch.setattr(loader, "read_pack", counting)
    return calls


def test_a_tampered_entry_is_ignored_logged_and_replaced(cache, tmp_path, monkeypatch, caplog):
    root = write_pack(tmp_path / "pack", 30)
    cold = load_pack_checked(root)
    cache.load(root)
    entry = _entry(cache, root)
    data = entry.read_bytes()
    # a rule's threshold changed inside the authenticated body, the MAC left as it was
    forged = data.replace(b'"gt":140', b'"gt":145', 1)
    assert forged != data
    entry.write_bytes(forged)
    reads = _cold_reads(monkeypatch)
    with caplog.at_level(logging.WARNING, "screening.rules_cache"):
        pack, warnings, _ = cache.load(root)
    assert reads, "a tampered entry must not be used"
    assert "fails authentication" in caplog.text
    assert_same(cold, (pack, warnings))
    assert_same(cold, from_cache(cache, root))  # written again, good this time


def test_an_entry_signed_with_another_key_is_ignored(cache, tmp_path, monkeypatch, caplog):
    root = write_pack(tmp_path / "pack", 5)
    cache.load(root)
    other = PackCache.for_state_dir(tmp_path / "other-state")
    other.load(root)
    shutil.copy(_entry(other, root), _entry(cache, root))
    os.chmod(_entry(cache, root), 0o600)
    reads = _cold_reads(monkeypatch)
    with caplog.at_level(logging.WARNING, "screening.rules_cache"):
        cache.load(root)
    assert reads and "fails authentication" in caplog.text


def test_an_authentic_entry_for_other_files_is_ignored(cache, tmp_path, monkeypatch, caplog):
    """A good entry copied under the name of another pack's digest (a replay) is refused: the
    digest of the files is inside what the MAC covers."""
    one, two = write_pack(tmp_path / "one", 5), write_pack(tmp_path / "two", 6)
    cache.load(one)
    shutil.copy(_entry(cache, one), _entry(cache, two))
    reads = _cold_reads(monkeypatch)
    with caplog.at_level(logging.WARNING, "screening.rules_cache"):
        pack, _, _ = cache.load(two)
    assert reads and "written for other files" in caplog.text
    assert len(pack.rules) == 6


def test_a_changed_file_is_a_new_entry_never_the_old_one(cache, tmp_path):
    root = write_pack(tmp_path / "pack", 10)
    before, _, _ = cache.load(root)
    rule_file = next(p for p in sorted(root.glob("*.yaml")) if p.name != "pack.yaml")
    rule_file.write_text(rule_file.read_text().replace("Generated rule 1", "Generated rule one", 1))
    after, _, _ = cache.load(root)
    assert after.digest != before.digest
    assert [r.title for r in after.rules] == [r.title for r in load_pack(root).rules]


def test_an_entry_from_another_version_of_the_code_is_ignored(cache, tmp_path, monkeypatch, caplog):
    root = write_pack(tmp_path / "pack", 5)
    cache.load(root)
    monkeypatch.setattr(packcache, "code_fingerprint", lambda: "another version")
    reads = _cold_reads(monkeypatch)
    with caplog.at_level(logging.INFO, "screening.rules_cache"):
        cache.load(root)
    assert reads and "another version of the service" in caplog.text


def test_a_group_or_world_readable_entry_is_refused(cache, tmp_path, monkeypatch, caplog):
    root = write_pack(tmp_path / "pack", 5)
    cache.load(root)
    os.chmod(_entry(cache, root), 0o644)
    reads = _cold_reads(monkeypatch)
    with caplog.at_level(logging.WARNING, "screening.rules_cache"):
        cache.load(root)
    assert reads and "owner only" in caplog.text


@pytest.mark.parametrize("damage", ["permissive", "symlink"])
def test_a_key_that_may_not_be_ours_turns_the_cache_off(tmp_path, monkeypatch, caplog, damage):
    root = write_pack(tmp_path / "pack", 5)
    PackCache.for_state_dir(tmp_path / "state").load(root)
    key = tmp_path / "state" / "rules-cache" / "key"
    if damage == "permissive":
        os.chmod(key, 0o640)
    else:
        key.rename(tmp_path / "a-key")
        key.symlink_to(tmp_path / "a-key")
    cache = PackCache.for_state_dir(tmp_path / "state")
    reads = _cold_reads(monkeypatch)
    with caplog.at_level(logging.ERROR, "screening.rules_cache"):
        pack, _, _ = cache.load(root)
    assert reads and "rules cache is off" in caplog.text
    assert "chmod 600" in caplog.text or damage == "symlink"
    assert len(pack.rules) == 5


@pytest.mark.parametrize("damage", ["garbage", "empty", "directory", "truncated", "symlink"])
def test_an_unreadable_entry_is_ignored(cache, tmp_path, monkeypatch, damage):
    root = write_pack(tmp_path / "pack", 5)
    cache.load(root)
    entry = _entry(cache, root)
    if damage == "symlink":  # even to a good entry of ours: only the file itself is read
        entry.rename(tmp_path / "elsewhere.json")
        entry.symlink_to(tmp_path / "elsewhere.json")
    elif damage == "directory":
        entry.unlink()
        entry.mkdir(mode=0o700)
    elif damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:-100])
    else:
        entry.write_bytes(b"" if damage == "empty" else b"\x00not json\n{")
    reads = _cold_reads(monkeypatch)
    pack, _, _ = cache.load(root)
    assert reads and len(pack.rules) == 5


def test_a_broken_pack_is_never_kept(cache, tmp_path):
    root = write_pack(tmp_path / "pack", 5)
    (root / "000-generated.yaml").write_text("rules: [{id: broken}]\n")
    with pytest.raises(loader.RulePackError):
        cache.load(root)
    assert not list(cache.directory.glob("*.json"))


def test_old_entries_are_pruned(cache, tmp_path):
    for size in range(1, packcache.MAX_ENTRIES + 3):
        cache.load(write_pack(tmp_path / f"pack-{size}", size))
    assert len(list(cache.directory.glob("*.json"))) == packcache.MAX_ENTRIES


def test_without_create_a_missing_cache_is_not_made(tmp_path):
    cache = PackCache.for_state_dir(tmp_path / "state", create=False)
    pack, _, _ = cache.load(SHIPPED_PACK)
    assert pack.digest and not (tmp_path / "state").exists()


# --- the codec, on any YAML data a pack can hold -------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text(max_size=8)
            | st.floats(allow_nan=False) | st.dates()
            | st.datetimes(timezones=st.just(dt.timezone.utc)) | st.datetimes())
_keys = st.text(max_size=6) | st.sampled_from(["$", "v", "$t"]) | st.integers(-5, 5) | st.booleans() | st.dates() | st.none()
_positions = st.dictionaries(st.lists(st.text(max_size=4) | st.integers(0, 9), max_size=4).map(tuple),
                             st.tuples(st.integers(1, 10**6), st.integers(1, 999)), max_size=5)
_yaml_data = st.recursive(_scalars | _positions, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(_keys, inner, max_size=4)
                          | st.lists(inner, max_size=3).map(tuple), max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_yaml_data)
def test_the_codec_gives_back_any_data_with_its_types(value):
    encoded = json.dumps(packcache._Encoder({})(value))
    decoded = json.loads(encoded, object_hook=packcache._decoder(lambda name: name))
    assert differences(value, decoded, "value") is None
