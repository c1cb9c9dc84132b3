"""One rule: a directory whose name is not a valid service name is never a service.

Found in issue 20: a stage-branch directory named `--set=image=evil` (or `-rf`) was
"ignored" by validate, yet its `values.yaml` started a delivery whose job argv carried
the name (`$(KEPTN_SERVICE)`). Validation, commit-to-deploy, the poll's change list and
the ingress's view of the upstream now ask the same predicate (`formats.layout`).
"""

from __future__ import annotations

import pytest

from reconciler.core.deploytrigger import service_of_values
from reconciler.formats.layout import is_service, service_of
from reconciler.upstream.snapshot import snapshot_of
from tests.support.upstreamsync import UpstreamSync

IMAGE = "ghcr.io/podtato-head/podtatoserver"
NOT_SERVICES = ["--set=image=evil", "-rf", "Docs", "$(DB_PASSWORD)", "a b", "9lives", "web\n"]


@pytest.mark.parametrize("name", NOT_SERVICES)
def test_names_that_are_not_service_names_are_not_services_anywhere(name: str) -> None:
    assert not is_service(name)
    assert service_of(f"{name}/slo.yaml") is None
    assert service_of_values(f"{name}/values.yaml") is None


def test_valid_names_are_services() -> None:
    for name in ("helloservice", "carts-db", "a1"):
        assert is_service(name) and service_of_values(f"{name}/values.yaml") == name
    for name in ("job", "prometheus", ".github", "_local"):
        assert not is_service(name)


def test_a_directory_named_like_an_option_never_starts_a_delivery(upstream_sync: UpstreamSync) -> None:
    up = upstream_sync.upstream
    hostile = {f"{name}/values.yaml": f"image: {IMAGE}:evil\n" for name in NOT_SERVICES if "\n" not in name}
    up.commit(
        "qa",
        {**hostile, "helloservice/values.yaml": f"image: {IMAGE}:v0.1.2\n"},
        "a delivery and hostile dirs",
    )

    recorded = upstream_sync.poll()

    triggers = [e for e in recorded if e.type == "sh.keptn.event.qa.delivery.triggered"]
    assert [t.data["service"] for t in triggers] == ["helloservice"]
    [accepted] = [e for e in recorded if e.type == "reconciler.upstream.accepted"]
    assert accepted.data["services"] == ["helloservice"]
    warned = {w.file.rstrip("/") for w in upstream_sync.store.current().warnings if w.branch == "qa"}
    assert warned == {name for name in NOT_SERVICES if "\n" not in name}  # validate names every one

    view = snapshot_of(upstream_sync.mirror.files(), "main", pins=upstream_sync.store.current().accepted)
    assert view.services("qa") == frozenset({"helloservice"})
