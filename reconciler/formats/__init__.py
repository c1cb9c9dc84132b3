"""Typed models of every upstream file and every event: the single source of truth for formats.

May import: stdlib, pydantic, PyYAML, and `reconciler.core.timeutil` (duration grammar).
"""
