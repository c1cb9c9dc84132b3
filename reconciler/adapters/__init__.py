"""Thin adapters to the outside world: Prometheus, Kubernetes, local processes.

May import: their client libraries, `reconciler.formats`, `reconciler.core`.
"""
