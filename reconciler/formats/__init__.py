"""Typed models of every upstream file and every event: the single source of truth for formats.

May import: stdlib, pydantic, PyYAML, and the pure `reconciler.core.timeutil` (Go
durations), `reconciler.core.goregex` (Go's regular expressions) and
`reconciler.core.webhooktemplate` (Go's text/template, for webhook.yaml).
"""
