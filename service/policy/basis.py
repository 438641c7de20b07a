"""docs/clinical-basis.md: the clinical basis of every rule, generated from the pack.

Rule -> source -> section -> label / guideline / software default, with the citation registry
and the declared optional answers. Generated, so that it cannot drift from the rules:
``screening rules basis --check`` (and a test) fail when the file is not what the pack says.
"""
from __future__ import annotations

from schemas.intake import INDICATIONS, ROUTES
from service.policy.citations import SOFTWARE_DEFAULT, expand
from service.policy.model import Rule, RulePack

_KIND = {"label": "label", "guideline": "guideline", "consensus": "guideline (consensus statement)",
         "trial": "trial criteria", "programme": "REMS programme", SOFTWARE_DEFAULT: "**software default**"}
_ROUTE = {"iv_ketamine": "IV ketamine", "esketamine_nasal": "esketamine"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _applies(rule: Rule) -> str:
    routes = "both routes" if set(rule.routes) == set(ROUTES) else ", ".join(_ROUTE.get(r, r) for r in rule.routes)
    if set(rule.indications) != set(INDICATIONS):
        routes += " (" + ", ".join(i.replace("_", " ") for i in rule.indications) + ")"
    return routes


def _effect(rule: Rule) -> str:
    if rule.concludes:
        return f"finding `{rule.concludes}`"
    text = {"exclude": "exclude", "review": "review"}[rule.effect or "review"]
    if rule.priority == "urgent":
        text += " (urgent)"
    return f"{text}, {rule.severity}"


def render(pack: RulePack) -> str:
    lines = [
        f"# Clinical basis of the `{pack.name}` rule pack",
        "",
        f"Generated from `rules/{pack.name}/` (version {pack.version}) by `screening rules basis`; do not edit by",
        "hand. Every rule's citation, split into its sources: the section of the label or guideline it",
        "rests on, and whether that part is a label's words, a guideline's, or a **software default** (a",
        "threshold or an effect this pack chose, which a clinic's policy editors should review).",
        "Reference content for software, not medical advice.",
        "",
        "## Sources",
        "",
        "| code | reference | kind | checked |",
        "|---|---|---|---|",
    ]
    for code, source in sorted(pack.citations.items()):
        ref = _cell(source["reference"]) + (f" ({_cell(source['version'])})" if source.get("version") else "")
        lines.append(f"| {code} | [{ref}]({source['url']}) | {_KIND.get(source['kind'], source['kind'])} | {source['checked']} |")
    lines += ["", "## Rules", "",
              "| rule | applies to | effect | source | section and wording | basis |",
              "|---|---|---|---|---|---|"]
    for rule in pack.rules:
        parts = expand(rule.citation, pack.citations) or [{"code": None, "kind": None, "section": None, "text": ""}]
        for i, part in enumerate(parts):
            first = i == 0
            head = (f"`{rule.id}`<br>{_cell(rule.title)}", _applies(rule), _effect(rule)) if first else ("", "", "")
            code = part["code"] or ("—" if part["kind"] == SOFTWARE_DEFAULT else "?")
            section = _cell(part["section"] or "")
            basis = _KIND.get(part["kind"] or "", "unknown source")
            lines.append(f"| {head[0]} | {head[1]} | {head[2]} | {code} | {section} | {basis} |")
    lines += ["", "## Optional answers", ""]
    if pack.optional:
        lines += ["Absences the pack reads on purpose (`exists: false`). A decision that relies on one states it",
                  "as an assumption and requires physician review.", "",
                  "| field | absence is taken to mean | reason | source |", "|---|---|---|---|"]
        for o in pack.optional:
            lines.append(f"| `{o.path}` | {_cell(o.means)} | {_cell(o.reason)} | {_cell(o.citation)} |")
    else:
        lines.append("None: every answer a rule reads is asked when it is missing.")
    return "\n".join(lines) + "\n"
