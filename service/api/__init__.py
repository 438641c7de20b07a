"""HTTP: blueprints per concern, JSON errors, request parsing. Calls screen(); knows no engine."""
