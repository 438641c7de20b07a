"""The read and linted rule pack kept as data, by the digest of its files, so that a worker, a
restart, a batch worker or a reload does not parse and lint the same files again.

What is kept: the RulePack (rules, conditions, positions for messages, tests, fixtures, catalog,
digest) and lint's warnings, as JSON (never pickle: unpickling a file is running its code). What
is not: the compiled durable-rules state, which lives in the engine's C memory (it is shared by
forking instead, see service.reload.preload).

Why a cache entry is trusted only when all of this holds (else it is ignored, logged, and the
pack is read from its files as if there were no cache):
- the file is owned by this user and readable by it only (0600), like the key beside it;
- its HMAC-SHA256, under a key kept in the cache directory (made on first use, 0600), matches:
  nobody without that key can write an entry we accept;
- inside the authenticated body, the digest of the files is that of the ``*.yaml`` files in the
  directory now (a copy of another pack's entry under this name is refused), and the code
  fingerprint is that of the loader, lint and contract code running now (an upgrade recomputes).
Then the decoded pack's own digest is recomputed from its rules and compared.

File names in locations are kept relative to the pack directory and resolved on reading as a cold
load would name them (a reload's snapshot names the watched directory; the last-good copy its own).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any, Callable

from schemas.catalog import Catalog
from schemas.catalog import parse as parse_catalog
from service.policy import conditions as C
from service.policy import loader
from service.policy.model import Location, OptionalAnswer, Rule, RulePack, TestCase
from service.policy.problems import Problem
from service.statefiles import create_once

log = logging.getLogger("screening.rules_cache")

FORMAT = 1
KEY_FILE = "key"
# Entries kept (newest first): the pack served, the one before it, a few candidates. A
# 5,000-rule pack's entry is a few MB.
MAX_ENTRIES = 6
_SUFFIX = ".json"
_COMPILED = ".compiled"
_DATACLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    C.Leaf, C.AllOf, C.AnyOf, C.Not, C.Finding, Rule, TestCase, OptionalAnswer, Problem)}


class Uncacheable(TypeError):
    """A value the codec does not know: the pack is served, just not kept."""


def files_digest(root: Path) -> str:
    """sha256 over the name and bytes of every ``*.yaml`` file in the pack directory: every file
    the loader may read (pack.yaml may name a catalog only inside the directory)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).glob("*.yaml") if p.is_file()):
        digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """What a cold load's result depends on besides the files: the reading, lint and contract
    code, the libraries that parse, the installation's catalog."""
    from importlib.metadata import version

    import yaml

    from schemas.intake import SHIPPED

    here = Path(__file__).resolve().parent
    # the engine's code too: a mark that a pack compiles (``compiled``) is about that code
    sources = (sorted(here.glob("*.py")) + sorted((here.parent.parent / "schemas").glob("*.py"))
               + sorted((here.parent / "engine").glob("*.py")))
    digest = hashlib.sha256(f"{FORMAT} {sys.version_info[:2]} durable-rules {version('durable-rules')} "
                            f"PyYAML {version('PyYAML')} "
                            f"{getattr(yaml, 'CSafeLoader', None) is not None} marshmallow "
                            f"{version('marshmallow')} shipped {SHIPPED.digest}".encode())
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# --- the codec: the pack's object graph as JSON with tagged values ------------------------------

class _Encoder:
    def __init__(self, files: dict[str, str]):
        self.files = files  # a file as the cold load named it -> its name in the pack directory

    def file(self, shown: str) -> str:
        try:
            return self.files[shown]
        except KeyError:
            raise Uncacheable(f"a location outside the pack's files: {shown}") from None

    def __call__(self, v: Any) -> Any:
        kind = type(v)
        if kind in _PLAIN:
            return v
        if kind is list:
            return [self(x) for x in v]
        if kind is tuple:
            return {"$": "t", "v": [self(x) for x in v]}
        if kind is dict:
            rows = _position_rows(v)
            if rows is not None:
                return {"$": "P", "v": rows}
            if "$" not in v and all(type(k) is str for k in v):
                return {k: self(x) for k, x in v.items()}
            return {"$": "d", "v": [[self(k), self(x)] for k, x in v.items()]}
        if kind is dt.datetime:
            return {"$": "dt", "v": v.isoformat()}
        if kind is dt.date:
            return {"$": "da", "v": v.isoformat()}
        if kind is frozenset:
            return {"$": "fs", "v": [self(x) for x in sorted(v, key=repr)]}
        if kind is Location:
            return {"$": "L", "v": [self.file(v.file), v.line, v.column]}
        if kind is Catalog:
            from schemas.intake import SHIPPED
            if v is SHIPPED:
                return {"$": "shipped"}
            return {"$": "catalog", "v": {"raw": self(v.raw), "source": self.file(v.source),
                                          "positions": self(v.positions)}}
        name = kind.__name__
        if _DATACLASSES.get(name) is kind:
            return {"$": name, "v": {f.name: self(getattr(v, f.name)) for f in dataclasses.fields(v)}}
        raise Uncacheable(f"cannot keep a {kind.__qualname__}")


# Exactly these types (not subclasses: a str subclass or an IntEnum would come back as another type).
_PLAIN = frozenset({type(None), bool, int, float, str})


def _position_rows(v: dict) -> list | None:
    """A map from key paths to (line, column), the loader's positions, compactly; None for any
    other mapping."""
    # The parts are not checked one by one (the largest cost of writing an entry): a part JSON
    # cannot hold fails json.dumps (the pack is then not kept), and one it would turn into another
    # type (a tuple inside a key) fails the entry's reading back (then it is ignored).
    if not v or not all(type(key) is tuple for key in v) or not all(
            type(at) is tuple and len(at) == 2 for at in v.values()):
        return None
    return [[list(key), at[0], at[1]] for key, at in v.items()]


def _decoder(name_file: Callable[[str], str]) -> Callable[[dict], Any]:
    from schemas.intake import SHIPPED

    def catalog(v: dict) -> Catalog:
        built = parse_catalog(v["raw"])
        built.source = name_file(v["source"])
        built.positions = v["positions"]
        return built

    tags: dict[str, Callable[[Any], Any]] = {
        "t": tuple,
        "P": lambda v: {tuple(k): (line, column) for k, line, column in v},
        "d": lambda v: {_hashable(k): x for k, x in v},
        "dt": dt.datetime.fromisoformat,
        "da": dt.date.fromisoformat,
        "fs": frozenset,
        "L": lambda v: Location(name_file(v[0]), v[1], v[2]),
        "shipped": lambda _v: SHIPPED,
        "catalog": catalog,
    }
    for cls_name, cls in _DATACLASSES.items():
        tags[cls_name] = (lambda c: lambda v: c(**v))(cls)

    def hook(obj: dict) -> Any:
        tag = obj.get("$")
        if tag is None:
            return obj
        return tags[tag](obj.get("v"))

    return hook


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def _pack_fields(pack: RulePack) -> dict:
    return {f.name: getattr(pack, f.name) for f in dataclasses.fields(pack)
            if f.name not in ("source", "modified", "digest")}


# --- the cache ----------------------------------------------------------------------------------

class PackCache:
    """Entries under ``directory`` (the service's state directory's ``rules-cache``)."""

    def __init__(self, directory: Path, create: bool = True):
        self.directory = Path(directory)
        self.create = create
        self._key: bytes | None = None
        self._disabled: str | None = None

    @classmethod
    def for_state_dir(cls, state_dir: Path, create: bool = True) -> "PackCache":
        return cls(Path(state_dir) / "rules-cache", create)

    # The key: made once, then only ever read; a key file anyone else could read or write is refused.
    def key(self) -> bytes | None:
        if self._key is not None or self._disabled:
            return self._key
        path = self.directory / KEY_FILE
        try:
            if not path.exists():
                if not self.create:
                    return None
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                create_once(path, secrets.token_hex(32) + "\n")  # every worker ends up with the first one's key
            data, problem = _read_private(path)
            if problem:
                return self._disable(f"{problem}; the rules cache is off until it is fixed "
                                     f"(chmod 600 {path}, or remove {self.directory})")
            text = data.decode("ascii").strip()
            if len(text) < 64:
                return self._disable(f"{path} does not hold a key; the rules cache is off (remove {self.directory})")
            self._key = text.encode("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            return self._disable(f"cannot use the rules cache key {path}: {exc}; the rules cache is off")
        return self._key

    def _disable(self, why: str) -> None:
        self._disabled = why
        log.error(why)
        return None

    def entry_path(self, digest: str) -> Path:
        return self.directory / f"{digest}{_SUFFIX}"

    def _mac(self, key: bytes, body: bytes) -> str:
        return hmac.new(key, body, hashlib.sha256).hexdigest()

    def get(self, root: Path, shown_as: Path | None, digest: str) -> tuple[RulePack, list[Problem]] | None:
        """The pack whose files have ``digest``, as a cold load of ``root`` would give it, or None."""
        path = self.entry_path(digest)
        if not path.exists():
            return None
        key = self.key()
        if key is None:
            return None
        try:
            data, problem = _read_private(path)
            if problem:
                log.warning("rules cache entry ignored: %s", problem)
                return None
        except OSError as exc:
            log.warning("rules cache entry %s ignored: cannot read it: %s", path, exc)
            return None
        mac, _, body = data.partition(b"\n")
        if not hmac.compare_digest(mac, self._mac(key, body).encode("ascii")):
            log.warning("rules cache entry %s ignored: it fails authentication (changed or not ours); "
                        "the pack is read from its files", path)
            return None
        col = loader._Collector(Path(root), shown_as)
        names = {name: col.rel(Path(root) / name) for name in _names(root)}
        try:
            head, _, rest = body.partition(b"\n")
            header = json.loads(head)
            if header.get("format") != FORMAT or header.get("files") != digest:
                log.warning("rules cache entry %s ignored: it was written for other files", path)
                return None
            if header.get("code") != code_fingerprint():
                log.info("rules cache entry %s ignored: written by another version of the service", path)
                return None
            payload = json.loads(rest, object_hook=_decoder(names.__getitem__))
            pack = RulePack(**payload["pack"], source=str(root),
                            modified={names[n]: loader._mtime(Path(root) / n) for n in payload["rule_files"]})
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("rules cache entry %s ignored: cannot be read back (%s)", path, exc)
            return None
        if pack.digest != header.get("digest"):
            log.warning("rules cache entry %s ignored: its rules do not give its digest", path)
            return None
        return pack, payload["warnings"]

    def put(self, root: Path, shown_as: Path | None, digest: str, pack: RulePack, warnings: list[Problem]) -> None:
        key = self.key()
        if key is None:
            return
        col = loader._Collector(Path(root), shown_as)
        files = {col.rel(Path(root) / name): name for name in _names(root)}
        rule_files, _ = loader.pack_files(Path(root))
        try:
            payload = _Encoder(files)({"pack": _pack_fields(pack), "warnings": list(warnings),
                                       "rule_files": [p.name for p in rule_files]})
        except Uncacheable as exc:
            log.info("rules not cached: %s", exc)
            return
        header = {"format": FORMAT, "files": digest, "code": code_fingerprint(), "digest": pack.digest}
        try:
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            log.info("rules not cached: %s", exc)
            return
        body = json.dumps(header).encode() + b"\n" + text.encode("utf-8")
        data = self._mac(key, body).encode("ascii") + b"\n" + body
        target = self.entry_path(digest)
        if _write_private(target, data, "the rules cache entry"):
            self._prune(keep=target)

    def _prune(self, keep: Path) -> None:
        try:
            entries = sorted(self.directory.glob(f"*{_SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in entries[MAX_ENTRIES:]:
                if old != keep:
                    old.unlink(missing_ok=True)
                    for mark in self.directory.glob(f"{old.name[:-len(_SUFFIX)]}.*{_COMPILED}"):
                        mark.unlink(missing_ok=True)
        except OSError:
            pass  # another worker pruned first

    # A reload proves in a child process that a candidate compiles in bounded time (durable-rules
    # hangs on some rule sets) before a serving worker compiles it. The compile is deterministic
    # in the rules, the backend and the code, so once any worker has proven it, the others (each
    # checks the same edit) need not start a child of their own: the mark says so, under the key.
    def _compiled_mark(self, digest: str, backend: str) -> tuple[Path, bytes] | None:
        key = self.key()
        if key is None or not backend.isidentifier():
            return None
        text = f"compiles\0{digest}\0{backend}\0{code_fingerprint()}".encode()
        return self.directory / f"{digest}.{backend}{_COMPILED}", self._mac(key, text).encode("ascii")

    def mark_compiled(self, digest: str, backend: str) -> None:
        mark = self._compiled_mark(digest, backend)
        if mark is None:
            return
        path, mac = mark
        _write_private(path, mac, "the compile mark")

    def compiled(self, digest: str, backend: str) -> bool:
        """True when a process of this service has proven that the pack with these files compiles
        with this backend and this code."""
        mark = self._compiled_mark(digest, backend)
        if mark is None:
            return False
        path, mac = mark
        try:
            if not path.exists():
                return False
            data, problem = _read_private(path)
            if problem:
                log.warning("rules cache mark ignored: %s", problem)
                return False
            good = hmac.compare_digest(data, mac)
        except OSError:
            return False
        if not good:
            log.warning("rules cache mark %s ignored: it fails authentication", path)
        return good

    def load(self, root: Path | str, shown_as: Path | None = None) -> tuple[RulePack, list[Problem], str | None]:
        """The pack at ``root`` and lint's warnings: from the cache when an entry is good, else
        read, linted and kept. Also the digest of the files it came from (None when they changed
        while being read: nothing is kept then). Raises RulePackError as ``load_pack`` does."""
        root = Path(root)
        try:
            before = files_digest(root)
        except OSError:
            before = None
        if before is not None:
            hit = self.get(root, shown_as, before)
            if hit is not None:
                return hit[0], hit[1], before
        pack, warnings = loader.load_pack_checked(root, shown_as)
        try:
            after = files_digest(root)
        except OSError:
            after = None
        if before is None or after != before:
            return pack, warnings, None  # changed while read: serve what was read, keep nothing
        self.put(root, shown_as, before, pack, warnings)
        return pack, warnings, before


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).glob("*.yaml") if p.is_file())


def _read_private(path: Path) -> tuple[bytes, str | None]:
    """The file's bytes, and why it may not be trusted (None: it may). What is checked is the
    file that was opened (not a symbolic link, not a path swapped after the check)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        problem = _private_file_problem(path, os.fstat(fh.fileno()))
        return (b"", problem) if problem else (fh.read(), None)


def _private_file_problem(path: Path, st: os.stat_result) -> str | None:
    """Why a file may not be trusted: owned by someone else, or open to group or others."""
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"{path} is owned by another user"
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} must be readable and writable by its owner only (it is {stat.filemode(st.st_mode)})"
    return None


def _write_private(target: Path, data: bytes, what: str) -> bool:
    """Write ``target`` whole or not at all (a temporary file renamed over it), readable by
    this user only; False, logged, when it cannot be written."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        log.warning("could not write %s %s: %s", what, target, exc)
        tmp.unlink(missing_ok=True)
        return False
    return True
