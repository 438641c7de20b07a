"""What the editor's tools and the reload watcher leave behind: `rules diff --against` and
`rules lint` remove the pack they check out of git, and the reload report markers in the state
directory do not pile up."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from service import reload as reload_module
from service.cli import main
from service.policy.impact import checked_out
from service.reload import REPORT_MARKERS, first_report
from tests.test_policy_workflow import committed_pack


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """The process's temporary directory, made empty and private to the test."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.mark.parametrize("args", [
    ["rules", "diff", "--against", "HEAD"],
    ["rules", "diff"],  # against HEAD by default
    ["rules", "lint"],  # compares with HEAD
], ids=["diff-against", "diff", "lint"])
def test_the_checked_out_revision_is_removed(tmp_path, private_tmp, args):
    pack_dir = committed_pack(tmp_path / "repo")
    result = CliRunner().invoke(main, [*args, str(pack_dir)])
    assert result.exit_code == 0, result.output
    assert list(private_tmp.iterdir()) == []


def test_a_checkout_is_removed_when_its_use_fails(tmp_path, private_tmp):
    pack_dir = committed_pack(tmp_path / "repo")
    with pytest.raises(RuntimeError), checked_out("HEAD", pack_dir) as old:
        assert (old / "pack.yaml").is_file()
        raise RuntimeError("the comparison failed")
    assert list(private_tmp.iterdir()) == []
    with pytest.raises(ValueError), checked_out("no-such-revision", pack_dir):
        pass
    assert list(private_tmp.iterdir()) == []


def test_old_reload_report_markers_are_pruned(tmp_path):
    """Each reload outcome leaves a marker so that the workers count it once; markers older than
    any reload can take are removed when a new one is written, and a fresh one still counts."""
    marks = tmp_path / REPORT_MARKERS
    assert first_report(tmp_path, "refused", "a" * 32)
    assert not first_report(tmp_path, "refused", "a" * 32)  # another worker: already counted
    old = time.time() - reload_module.REPORT_MARKER_SECONDS - 60
    for i in range(50):
        stale = marks / f"refused-{i:032d}"
        stale.touch()
        os.utime(stale, (old, old))
    assert first_report(tmp_path, "loaded", "b" * 32)
    assert sorted(p.name for p in marks.iterdir()) == ["loaded-" + "b" * 32, "refused-" + "a" * 32]
    assert not first_report(tmp_path, "refused", "a" * 32)


def test_markers_of_many_reloads_stay_bounded(tmp_path):
    """A service reloaded for weeks keeps only the markers of the last REPORT_MARKER_SECONDS:
    200 refused edits ten minutes apart (each marker dated when its edit was checked)."""
    now = time.time()
    for i in range(200):
        assert first_report(tmp_path, "refused", f"{i:032x}")
        when = now - (199 - i) * 600
        os.utime(tmp_path / REPORT_MARKERS / f"refused-{i:032x}", (when, when))
    kept = sorted(p.name for p in (tmp_path / REPORT_MARKERS).iterdir())
    assert len(kept) <= reload_module.REPORT_MARKER_SECONDS // 600 + 1
    assert f"refused-{199:032x}" in kept


def test_a_failed_copy_of_the_last_good_pack_leaves_no_half_copy(tmp_path, monkeypatch):
    from service.reload import LAST_GOOD, save_last_good
    from service.ruleset import default_rules_path

    state = tmp_path / "state"
    save_last_good(default_rules_path(), state)
    kept = sorted(p.name for p in (state / LAST_GOOD).iterdir())

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reload_module.shutil, "copy2", full_disk)
    with pytest.raises(OSError):
        save_last_good(default_rules_path(), state)
    assert sorted(p.name for p in state.iterdir()) == [LAST_GOOD]
    assert sorted(p.name for p in (state / LAST_GOOD).iterdir()) == kept  # the last good one stands
