"""Local stand-ins for what the tutorial runs in a cluster, so the demo runs on one machine.

- `helloservice`: a small HTTP service playing podtatoserver (version-dependent latency,
  the metric families the tutorial's SLIs read).
- `localhelm`: a stand-in for the `helm` binary that runs the chart's Deployment as local
  helloservice processes behind a per-release round-robin "Service" port, and writes
  Prometheus file_sd targets labelled like the tutorial's scrape jobs.
- `chartpack`: reproducible packaging (and minimal rendering) of the example Helm chart.

Nothing in the reconciler proper imports this package; the `reconciler demo` command and
the tests do. May import: stdlib, PyYAML, pydantic, prometheus_client, psutil and
`reconciler.formats` / `reconciler.formats.gotime`.
"""
