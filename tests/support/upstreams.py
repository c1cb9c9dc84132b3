"""Small upstreams built from inline files, as directories or as real git repositories.

`BASE` is a complete, valid two-stage upstream (project `shop`, service `web`) that
exercises every link `reconciler validate` checks: stage branches, a chained and a
selector-triggered sequence, SLOs against merged SLIs, job actions for every custom
task (one behind a jsonpath condition), files entries, remediation actions. Tests
break it one file at a time with `build_upstream(root, changes)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from reconciler.upstream.init import init_upstream

Files = Mapping[str, Mapping[str, str | bytes]]

SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata:
  name: shipyard-shop
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks:
            - name: deployment
              properties:
                deploymentstrategy: direct
            - name: test
            - name: evaluation
              properties:
                timeframe: 5m
    - name: production
      sequences:
        - name: delivery
          triggeredOn:
            - event: qa.delivery.finished
          tasks:
            - name: approval
              properties:
                pass: automatic
                warning: manual
            - name: deployment
            - name: release
        - name: remediation
          triggeredOn:
            - event: production.remediation.finished
              selector:
                match:
                  evaluation.result: fail
          tasks:
            - name: get-action
            - name: action
            - name: evaluation
              triggeredAfter: 1m
"""

JOB_CONFIG = """\
apiVersion: v2
actions:
  - name: deploy
    events:
      - name: sh.keptn.event.deployment.triggered
    tasks:
      - name: helm upgrade
        image: alpine/helm:3.9.0
        files:
          - charts
        cmd: [helm]
        args: [upgrade, --install, $(KEPTN_SERVICE), /keptn/charts/$(KEPTN_SERVICE).tgz]
  - name: load test
    events:
      - name: sh.keptn.event.test.triggered
    tasks:
      - name: locust
        image: locustio/locust:2.8.6
        files:
          - /locust/basic.py
        cmd: [locust]
  - name: release
    events:
      - name: sh.keptn.event.release.triggered
    tasks:
      - name: noop
        image: alpine:3.19
        cmd: ["true"]
  - name: scale
    events:
      - name: sh.keptn.event.action.triggered
        jsonpath:
          property: $.data.action.action
          match: scale
    tasks:
      - name: helm scale
        image: alpine/helm:3.9.0
        files: [charts/web.tgz]
        env:
          - name: REPLICAS
            value: $.data.action.value
            valueFrom: event
        cmd: [helm]
"""

SLI = """\
spec_version: "1.0"
indicators:
  response_time: avg(rate(http_duration_seconds_sum{job="$SERVICE-$PROJECT-$STAGE"}[$DURATION_SECONDS]))
"""

SLO = """\
spec_version: "1.0"
comparison:
  compare_with: single_result
  include_result_with_score: pass
  aggregate_function: avg
objectives:
  - sli: response_time
    displayName: Response time
    pass:
      - criteria:
          - "<=+10%"
          - "<0.5"
    warning:
      - criteria:
          - "<=0.8"
  - sli: throughput
    pass:
      - criteria:
          - ">=-20%"
total_score:
  pass: "90%"
  warning: "75%"
"""

REMEDIATION = """\
apiVersion: spec.keptn.sh/0.1.4
kind: Remediation
metadata:
  name: web-remediation
spec:
  remediations:
    - problemType: Response time degradation
      actionsOnOpen:
        - name: Scale up
          action: scale
          description: More replicas
          value: "3"
"""

SERVICE = {
    "web/slo.yaml": SLO,
    "web/job/config.yaml": JOB_CONFIG,
    "web/locust/basic.py": "from locust import HttpUser, task\n",
    "web/charts/web.tgz": b"\x1f\x8b\x08\x00not really a chart",
}

BASE: dict[str, dict[str, str | bytes]] = {
    "main": {"shipyard.yaml": SHIPYARD, "metadata.yaml": "projectName: shop\n", "prometheus/sli.yaml": SLI},
    "qa": dict(SERVICE),
    "production": {**SERVICE, "web/remediation.yaml": REMEDIATION},
}

DELETE = None


def apply(changes: Mapping[str, str | bytes | None]) -> dict[str, dict[str, str | bytes]]:
    """BASE with `changes` applied: keys 'branch:path' (None deletes) or 'branch:' (None drops the branch)."""
    out = {branch: dict(files) for branch, files in BASE.items()}
    for key, value in changes.items():
        branch, _, path = key.partition(":")
        if not path:
            if value is None:
                out.pop(branch, None)
            else:
                out.setdefault(branch, {})
            continue
        if value is None:
            out.get(branch, {}).pop(path, None)
        else:
            out.setdefault(branch, {})[path] = value
    return out


def write_tree(root: Path, files: Files) -> Path:
    for branch, content in files.items():
        (root / branch).mkdir(parents=True, exist_ok=True)
        for path, data in content.items():
            target = root / branch / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def build_upstream(
    root: Path, changes: Mapping[str, str | bytes | None] | None = None, *, kind: str = "dir"
) -> Path:
    """Write BASE+changes as a branch directory tree, or (`kind="git"`) as a git repository."""
    files = apply(changes or {})
    tree = write_tree(root / "tree", files)
    if kind == "dir":
        return tree
    main = "main" if "main" in files else sorted(files)[0]  # a repository without main is a test case too
    return init_upstream(tree, root / "repo.git", bare=True, main_branch=main).path


def line_of(text: str | bytes, needle: str, occurrence: int = 1) -> int:
    """1-based line of the `occurrence`-th line containing `needle` (expected locations come from the input)."""
    lines = (text.decode() if isinstance(text, bytes) else text).splitlines()
    seen = 0
    for number, line in enumerate(lines, start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in text")
