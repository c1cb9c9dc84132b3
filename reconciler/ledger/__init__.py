"""The events ledger: one git commit per event on a ledger branch, and replay from it.

May import: pygit2, `reconciler.formats`, `reconciler.core`.
"""
