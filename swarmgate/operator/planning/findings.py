"""What a pass found about the routes, as data for `/v1/status` and `swarmgate status` (pure).

The same findings the live operator logs once per appearance (`reconcile._report_problems`) and
offline `swarmgate routes` prints: route notices (an overruled setting on a shared host, an unknown
or misspelt `com.docker.lb.*` label, a refused redirect, ...), per extension; the configuration's
own notices under the empty name; and every service that is not routed, with its reason (and,
given the snapshot, the hosts its label asks for: those answer 503 while it is set aside).
"""

from __future__ import annotations

from typing import Any

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.planning.desired import DesiredState
from swarmgate.operator.planning.route_rows import asked_hosts


def route_findings(desired: DesiredState, observed: ObservedState | None = None) -> dict[str, Any]:
    notices: dict[str, list[str]] = {e.name: list(e.route_table.notices) for e in desired.extensions}
    if desired.notices:
        notices[""] = sorted(desired.notices)
    set_aside: list[dict[str, Any]] = [{"extension": e.name, "service": a.service, "kind": a.kind,
                                        "reason": a.reason}
                                       for e in desired.extensions for a in e.route_table.set_aside]
    set_aside += [{"extension": "", "service": a.service, "kind": a.kind, "reason": a.reason}
                  for a in desired.unclaimed]
    if observed is not None:
        labels = {s.name: s.labels for s in observed.services}
        for aside in set_aside:
            aside["hosts"] = asked_hosts(labels.get(aside["service"], {}))
    return {"notices": notices, "set_aside": sorted(set_aside, key=lambda s: (s["extension"], s["service"]))}


def findings_text(findings: dict[str, Any]) -> list[str]:
    """The findings as lines for `swarmgate status`."""
    lines = []
    for name, notices in sorted(findings.get("notices", {}).items()):
        for notice in notices:
            lines.append(f"notice ({name or 'configuration'}): {notice}")
    for aside in findings.get("set_aside", []):
        lines.append(f"set aside ({aside['extension'] or 'no extension'}): {aside['service']}: {aside['reason']}")
    for host, cert in sorted(findings.get("acme", {}).get("hosts", {}).items()):
        served = (f"serves {cert['certificate']} until {cert['not_after']}, renews at {cert['renew_at']}"
                  if cert.get("certificate") else "no certificate yet (HTTP only)")
        failed = (f"; {cert['failures']} failed order(s) in a row, last: {cert['last_error']}; next try at "
                  f"{cert['retry_at']}" if cert.get("failures") else "")
        lines.append(f"acme ({host}): {served}{' ; ordering now' if cert.get('ordering') else ''}{failed}")
    return lines
