"""The rules engine behind a small interface of our own.

``compile_rules(rules)`` returns a ``CompiledRules`` whose ``match(intake, as_of)`` says which
rules fire and which findings were concluded. The engine knows rules and facts, nothing of
HTTP, storage or decisions. The production backend is durable-rules (``durable``); a plain
Python backend (``reference``) gives the same answers and is what the tests compare it with,
so that the unmaintained C extension can be replaced without changing a decision.
"""
from service.engine.base import CompiledRules, EngineError, Match
from service.engine.durable import DurableRules
from service.engine.reference import ReferenceRules

BACKENDS = {"durable": DurableRules, "reference": ReferenceRules}


def compile_rules(rules, backend: str = "durable") -> CompiledRules:
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise EngineError(f"unknown engine backend '{backend}'; choose one of {', '.join(BACKENDS)}") from None
    return factory(rules)


__all__ = ["CompiledRules", "EngineError", "Match", "compile_rules", "BACKENDS"]
