"""Which top-level directories of a stage branch are services: one rule for every reader.

Validation, commit-to-deploy, the poll's change list and the ingress's view of the
upstream all ask "is this directory a service?". They used to answer differently:
`validate` warned that a directory named `--set=image=evil` or `-rf` was not a valid
service name and ignored it, while commit-to-deploy still started a delivery for its
`values.yaml`, whose job argv then carried the name (`$(KEPTN_SERVICE)`). Now a
directory is a service only when it is neither hidden (`.`/`_`) nor a stage-level
resource (`job/`, `prometheus/`, `webhook/`) and its name is a valid service name: a lower-case
letter, then lower-case letters, digits and `-` (Keptn's rule for project and service
names; it can never start like an option or hold a path, a space or a `$`).

May import: stdlib only.
"""

from __future__ import annotations

import re

STAGE_RESOURCE_DIRS = frozenset({"job", "prometheus", "webhook"})
"""Top-level directories of a stage branch that hold stage-level resources, not services."""
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
SERVICE_NAME_RULE = "a lower-case letter, then [a-z0-9-]"


def not_a_service_dir(name: str) -> bool:
    """Hidden and stage-level directories: never services, and not worth a word."""
    return name in STAGE_RESOURCE_DIRS or name.startswith((".", "_"))


def is_service(name: str) -> bool:
    """Whether a top-level directory of a stage branch is a service (the one rule)."""
    return not not_a_service_dir(name) and SERVICE_NAME.fullmatch(name) is not None


def service_of(path: str) -> str | None:
    """The service a stage-branch path belongs to (`helloservice/slo.yaml` -> `helloservice`), or None."""
    head, sep, _ = path.partition("/")
    return head if sep and is_service(head) else None
