"""Marshmallow schemas: the contracts of the intake, the decision and the rule files.

They validate what comes in and describe what goes out; the OpenAPI description and the
JSON Schema files for integrators are generated from them, never kept by hand.
"""
