"""YAML that remembers where each value stood, so that problems name file, line and column."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# A rule file is small; a document this large is a mistake or an attack (alias bombs).
MAX_NODES = 200_000
MAX_BYTES = 2 * 1024 * 1024
# Deeper than any real rule (a condition a dozen levels down); far below Python's recursion limit,
# which the YAML composer and the condition parser would otherwise hit with a traceback.
MAX_DEPTH = 100
# Plain data only. Other tags (!!python/object, !!binary, !!set, local !tags) are refused by name
# rather than silently read as the list or mapping underneath; nothing is ever constructed from them.
_ALLOWED_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp"))

Positions = dict[tuple, tuple[int, int]]

# libyaml's parser when PyYAML was built with it (the wheels are): the same nodes with the same
# line and column marks, several times faster than the pure-Python scanner on large packs. It
# refuses nesting past 1,000 levels itself, before any recursion could run deep.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_LIBYAML_TOO_DEEP = "exceeded maximum nesting depth"


class SourceError(ValueError):
    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line = line
        self.column = column


class _Constructor(yaml.constructor.SafeConstructor):
    pass


def load(path: Path) -> tuple[Any, Positions]:
    """Parse one YAML file into plain data and a map from key paths to (line, column)."""
    raw = path.read_bytes()
    if len(raw) > MAX_BYTES:
        raise SourceError(f"file is larger than {MAX_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return loads(text)


def loads(text: str) -> tuple[Any, Positions]:
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if _LIBYAML_TOO_DEEP in str(exc.problem):
            line, column = _too_deep_at(text)
            raise SourceError(f"nested too deeply (more than {MAX_DEPTH} levels)", line, column) from None
        raise SourceError(
            f"not valid YAML: {exc.problem or exc.context}",
            mark.line + 1 if mark else None,
            mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise SourceError(f"not valid YAML: {exc}") from None
    except RecursionError:  # the composer recurses; the event stream does not, and has the line
        line, column = _too_deep_at(text)
        raise SourceError(f"nested too deeply (more than {MAX_DEPTH} levels)", line, column) from None
    positions: Positions = {}
    if node is None:
        return None, positions
    constructor = _Constructor()
    budget = [MAX_NODES]
    return _build(node, (), positions, constructor, budget), positions


def _too_deep_at(text: str) -> tuple[int | None, int | None]:
    depth = 0
    # The pure-Python parser: libyaml's scanner reads ahead and stops at its own limit first.
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return event.start_mark.line + 1, event.start_mark.column + 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None, None


def _check_tag(node: yaml.Node) -> None:
    if node.tag not in _ALLOWED_TAGS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise SourceError(f"YAML tag '{tag}' is not allowed in rule files: only plain values, lists and mappings",
                          node.start_mark.line + 1, node.start_mark.column + 1)


def _build(node: yaml.Node, path: tuple, positions: Positions, constructor: _Constructor, budget: list) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise SourceError("document too large (too many values; anchors and aliases are expanded)")
    if len(path) > MAX_DEPTH:
        raise SourceError(f"nested too deeply (more than {MAX_DEPTH} levels)", node.start_mark.line + 1,
                          node.start_mark.column + 1)
    _check_tag(node)
    positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise SourceError("mapping keys must be plain text", key_node.start_mark.line + 1,
                                  key_node.start_mark.column + 1)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SourceError("merge keys (<<) are not supported in rule files",
                                  key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _check_tag(key_node)
            key = constructor.construct_object(key_node)
            if not isinstance(key, (str, int, bool)) or key is None:
                key = str(key)
            if key in out:
                raise SourceError(f"duplicate key '{key}'", key_node.start_mark.line + 1,
                                  key_node.start_mark.column + 1)
            out[key] = _build(value_node, path + (key,), positions, constructor, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, path + (i,), positions, constructor, budget) for i, v in enumerate(node.value)]
    try:
        return constructor.construct_object(node)
    except yaml.constructor.ConstructorError as exc:
        raise SourceError(f"cannot read value: {exc.problem}", node.start_mark.line + 1,
                          node.start_mark.column + 1) from None


def position(positions: Positions, path: tuple) -> tuple[int | None, int | None]:
    """The position of ``path`` or of its nearest ancestor that has one."""
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return positions.get((), (None, None))
