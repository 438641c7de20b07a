"""The intake and decision as JSON Schema (draft 2020-12) files for integrators.

Converted from the served OpenAPI 3.0 description (itself generated from the marshmallow schemas
in this package), never written by hand: ``screening schemas export`` writes ``schemas/json/``
and a test fails when the committed files differ from what ``/openapi.json`` describes.

OpenAPI 3.0 schemas are nearly JSON Schema; what differs is converted:
``nullable: true`` becomes a ``"null"`` type, ``example`` becomes ``examples``, component
references point into ``$defs``, and apispec's "nullable reference" branch
(``{type: object, nullable: true, enum: [null]}``) becomes ``{type: "null"}``.
Extension keywords (``x-unit``) are kept as annotations.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"
COMPONENT_REF = "#/components/schemas/"
JSON_DIR = Path(__file__).resolve().parent / "json"

# file name -> (component in the OpenAPI description, what the file is for)
FILES = {
    "intake.schema.json": ("Intake", "An intake sent to POST /v1/screenings to be screened for ketamine treatment."),
    "decision.schema.json": ("Decision", "The decision every entry point returns for one screening."),
}


def component_schema(openapi: dict, name: str, description: str | None = None) -> dict:
    """One component of an OpenAPI 3.0 description, with everything it references, as a
    self-contained JSON Schema document."""
    components = openapi["components"]["schemas"]
    needed = _referenced(components, name)
    root = _convert(components[name], name)
    doc: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": f"urn:ketamine-screening:schema:{name.lower()}:{openapi['info']['version']}",
        "title": name,
    }
    if description:
        doc["description"] = description
    doc.update(root)
    defs = {n: _convert(components[n], name) for n in sorted(needed - {name})}
    if defs:
        doc["$defs"] = defs
    return doc


def catalog_document(catalog) -> dict:
    """The intake JSON Schema a field catalog gives (for comparing a candidate catalog with the
    published one; the published file itself comes from the served description)."""
    from service.api.openapi import intake_components

    components = intake_components(catalog.intake_schema(), "intake", "catalog")
    openapi = {"info": {"version": "catalog"}, "components": {"schemas": components}}
    return component_schema(openapi, "Intake", FILES["intake.schema.json"][1])


def render(openapi: dict) -> dict[str, str]:
    """file name -> file text, exactly as committed under schemas/json/."""
    return {
        filename: json.dumps(component_schema(openapi, component, description), indent=2,
                             ensure_ascii=False) + "\n"
        for filename, (component, description) in FILES.items()
    }


def export(openapi: dict, out_dir: Path = JSON_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in render(openapi).items():
        path = out_dir / filename
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(openapi: dict, out_dir: Path = JSON_DIR) -> list[str]:
    """The files under out_dir that are missing or differ from what the description gives."""
    out = []
    for filename, text in render(openapi).items():
        path = out_dir / filename
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(filename)
    return out


def _referenced(components: dict, name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_refs(components[current]))
    return seen


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = []
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(COMPONENT_REF):
            out.append(ref[len(COMPONENT_REF):])
        for value in node.values():
            out.extend(_refs(value))
        return out
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def _convert(node: Any, root: str) -> Any:
    if isinstance(node, list):
        return [_convert(item, root) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("nullable") is True and node.get("enum") == [None]:
        return {"type": "null"}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith(COMPONENT_REF):
            target = value[len(COMPONENT_REF):]
            out["$ref"] = "#" if target == root else f"#/$defs/{target}"
        elif key == "nullable":
            continue
        elif key == "example":
            out["examples"] = [value]
        elif key in ("properties", "$defs", "patternProperties"):
            out[key] = {k: _convert(v, root) for k, v in value.items()}
        else:
            out[key] = _convert(value, root)
    if node.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out
