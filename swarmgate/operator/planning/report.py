"""What one reconcile pass did: its plan, what was applied, and the state it saw (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.planning.actions import Action, NoOp
from swarmgate.operator.planning.desired import DesiredState


@dataclass
class ApplyResult:
    done: list[Action] = field(default_factory=list)
    not_done: list[Action] = field(default_factory=list)
    error: str | None = None

@dataclass
class PassReport:
    reconcile_id: str
    actions: list[Action]
    applied: ApplyResult
    desired: DesiredState
    observed: ObservedState
    routes_digest: str

    @property
    def wrote(self) -> bool:
        return any(not isinstance(a, NoOp) for a in self.applied.done)
