"""Which sequences a finished sequence triggers: shipyard `triggeredOn` selectors (spec 2.7)."""

from __future__ import annotations

from reconciler.formats.shipyard import Shipyard


def matching_triggers(
    shipyard: Shipyard, stage: str, sequence: str, result: str, last_task: str
) -> list[tuple[str, str]]:
    """Sequences whose `triggeredOn` fires for a finished `<stage>.<sequence>` (spec 2.7)."""
    event = f"{stage}.{sequence}.finished"
    fired: list[tuple[str, str]] = []
    for st in shipyard.spec.stages:
        for seq in st.sequences:
            for trig in seq.triggered_on or []:
                if trig.event != event:
                    continue
                match = trig.selector.match if trig.selector else None
                if match is None:
                    ok = result in ("pass", "warning")
                else:
                    ok = match.get("result") == result or match.get(f"{last_task}.result") == result
                if ok:
                    fired.append((st.name, seq.name))
                    break
    return fired
