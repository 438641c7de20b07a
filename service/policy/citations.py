"""A rule's citation, read against the pack's citation registry.

A citation is text an editor writes: parts separated by ";", each starting with a source code
from the registry in pack.yaml (``SPR Contraindications (...)``) or with "software default"
(a threshold or an effect that is this pack's choice, not a source's words). Decisions carry
each part expanded: the full reference, the section, the URL and the date the source was
checked, so that nobody has to know what "SPR" stands for.
"""
from __future__ import annotations

import re

SOFTWARE_DEFAULT = "software default"
_CODE = re.compile(r"^([A-Z][A-Z0-9_-]{0,31})(?=$|[\s:,(])")


def split(citation: str) -> list[str]:
    """The parts of a citation: ";" separates them, except inside parentheses."""
    parts, depth, current = [], 0, []
    for ch in citation:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == ";" and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def code_of(part: str) -> str | None:
    """The source code a citation part starts with; None for a software default or free text."""
    if part.lower().startswith(SOFTWARE_DEFAULT):
        return None
    m = _CODE.match(part)
    return m.group(1) if m else None


def problems(citation: str, registry: dict[str, dict]) -> list[str]:
    """What is wrong with a citation against the registry (nothing, for a pack without one)."""
    if not registry:
        return []
    out = []
    for part in split(citation):
        if part.lower().startswith(SOFTWARE_DEFAULT):
            continue
        code = code_of(part)
        if code is None:
            out.append(f"citation part '{part[:60]}' does not start with a source code ({', '.join(sorted(registry))}) "
                       f"or 'software default'")
        elif code not in registry:
            out.append(f"citation names unknown source '{code}'; the pack's sources: {', '.join(sorted(registry))}")
    return out


def expand(citation: str | None, registry: dict[str, dict]) -> list[dict]:
    """Each part of a citation with its source spelled out, for decisions and pages."""
    out = []
    for part in split(citation or ""):
        code = code_of(part)
        if part.lower().startswith(SOFTWARE_DEFAULT):
            out.append({"code": None, "kind": SOFTWARE_DEFAULT, "section": part[len(SOFTWARE_DEFAULT):].strip(" :()") or None,
                        "reference": "Software default: this pack's choice, not a source's words", "url": None,
                        "checked": None, "text": part})
            continue
        source = registry.get(code or "")
        if source is None:
            out.append({"code": code, "kind": None, "section": None, "reference": None, "url": None,
                        "checked": None, "text": part})
            continue
        section = part[len(code):].strip(" :") or None
        out.append({"code": code, "kind": source["kind"], "section": section, "reference": source["reference"],
                    "url": source["url"], "checked": source["checked"], "text": part})
    return out
