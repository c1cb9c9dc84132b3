"""The git upstream: mirror, poll/watch loop and validated config snapshots.

May import: pygit2, watchdog, APScheduler, `reconciler.formats`, `reconciler.core`.
"""
