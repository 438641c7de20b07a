"""The ``screening`` command line (``service.cli:main``), one module per command group:
serve, evaluate, rules, batch, keys, users, schemas; common.py holds what they share."""
from service.cli.evaluate import exit_code
from service.cli.main import main

__all__ = ["exit_code", "main"]
