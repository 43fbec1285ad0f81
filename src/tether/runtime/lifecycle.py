"""Plugin lifecycle states and the record the host keeps per plugin."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tether.contract.capabilities import root_equivalent_sets
from tether.contract.errors import RefusalReason
from tether.contract.policy import Resolution
from tether.runtime.discovery import Candidate

if TYPE_CHECKING:
    from tether.authoring import Plugin
    from tether.runtime.context import Context


class State(StrEnum):
    """unloaded → loading → active ⇄ disabled; any → error."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    ACTIVE = "active"
    DISABLED = "disabled"
    ERROR = "error"


ALLOWED: dict[State, frozenset[State]] = {
    State.UNLOADED: frozenset({State.LOADING, State.DISABLED, State.ERROR}),
    State.LOADING: frozenset({State.ACTIVE, State.ERROR, State.UNLOADED}),
    State.ACTIVE: frozenset({State.DISABLED, State.UNLOADED, State.ERROR}),
    State.DISABLED: frozenset({State.LOADING, State.UNLOADED, State.ERROR}),
    State.ERROR: frozenset({State.LOADING, State.UNLOADED, State.DISABLED}),
}


@dataclass(slots=True)
class PluginRecord:
    """Everything the host knows about one plugin, whatever its state."""

    candidate: Candidate
    state: State = State.UNLOADED
    resolution: Resolution | None = None
    rank: int = 0
    reason: RefusalReason | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    plugin: Plugin | None = None
    context: Context | None = None

    @property
    def id(self) -> str:
        return self.candidate.id or self.candidate.where

    def to_json(self, registered: dict[str, list[str]] | None = None) -> dict[str, Any]:
        m = self.candidate.manifest
        res = self.resolution
        return {
            "id": self.id,
            "name": m.name if m else None,
            "version": m.version if m else None,
            "tier": res.tier if res else (m.tier if m else None),
            "state": self.state.value,
            "source": self.candidate.source,
            "where": self.candidate.where,
            "granted": sorted(res.granted) if res else [],
            "denied": sorted(res.denied) if res else (sorted(m.capabilities) if m else []),
            "reason": self.reason.value if self.reason else None,
            "error": self.error,
            "warnings": list(self.warnings),
            "digest": self.candidate.digest,
            # What a stricter tier confines (the subprocess tier's worker reports it).
            "confinement": list(
                getattr(getattr(self.plugin, "_tether_worker", None), "confinement", [])
            ),
            "root_equivalent": [
                f"{' + '.join(sorted(combo))}: {why}"
                for combo, why in (root_equivalent_sets(res.granted) if res else [])
            ],
            **(registered or {}),
        }
