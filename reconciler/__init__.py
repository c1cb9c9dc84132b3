"""reconciler: a GitOps delivery reconciler that runs Keptn shipyard sequences from a git upstream.

The layers and what each may import are the table in docs/architecture.md, which
tests/test_layers.py enforces: `base`, `formats`, `core` (pure), `settings`, the edges
(`upstream`, `ledger`, `adapters`), `executors`, `runtime`, the ways in (`ingress`,
`ui`, `api`), `controller`, `demo`, `cli`.
"""

__version__ = "0.1.0"
