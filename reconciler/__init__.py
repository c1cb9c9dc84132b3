"""reconciler: a GitOps delivery reconciler that runs Keptn shipyard sequences from a git upstream.

Layers, and what each may import:
- `formats`: pydantic models of every file and event; stdlib, pydantic and PyYAML only.
- `core`: pure decisions (sequencing, scoring, matching, escalation); `formats` only. No I/O, no clock.
- `upstream`, `ledger`, `adapters`: the edge (git, Kubernetes, Prometheus, processes); `formats`, `core`.
- `executors`: glue that turns task events into adapter calls and answers; everything above.
- `ingress`, `cli`, `app`: how events get in and how the pieces are wired.
"""

__version__ = "0.1.0"
