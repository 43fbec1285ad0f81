"""The tier seam: how the host gets a plugin's `Plugin` object and lets it go again.

Every tier returns an object with the same declarations; the host activates it through
the same capability membrane whatever the tier. `inprocess` imports the code into the
host's interpreter; `subprocess` starts a worker process and returns a proxy whose
callables are RPCs into it. A tier not in `available_tiers()` is refused at resolution.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

from tether.authoring import Plugin
from tether.contract.policy import Resolution
from tether.runtime import inprocess
from tether.runtime.discovery import Candidate
from tether.runtime.inprocess import PluginImportError

if TYPE_CHECKING:
    from tether.runtime.host import Host
    from tether.runtime.lifecycle import PluginRecord

__all__ = ["PluginImportError", "available_tiers", "load_plugin", "unload_plugin"]


def granted_env(cand: Candidate, res: Resolution) -> dict[str, str]:
    """The variables the manifest declares (`env`) with their values from the host's
    environment, when the operator granted `env.inject`; otherwise nothing. An isolated
    tier (worker process, wasm guest) sees these and never the host's other variables."""
    out: dict[str, str] = {}
    if cand.manifest is not None and "env.inject" in res.granted:
        for var in cand.manifest.env:
            value = os.environ.get(var.from_)
            if value is not None:
                out[var.target] = value
    return out


def available_tiers() -> set[str]:
    """The tiers this build can run."""
    tiers = {"inprocess", "subprocess"}
    if importlib.util.find_spec("wasmtime") is not None:
        tiers.add("wasm")
    return tiers


async def load_plugin(cand: Candidate, res: Resolution, host: Host) -> Plugin:
    """The candidate's `Plugin` object at its resolved tier.

    Raises `PluginImportError` (with a message naming the problem) when the code cannot be
    imported or its tier cannot start it.
    """
    if res.tier == "inprocess":
        return inprocess.import_plugin(cand)
    if res.tier == "subprocess":
        from tether.runtime import subprocess_tier

        return await subprocess_tier.start(cand, res, host)
    if res.tier == "wasm":
        from tether.runtime import wasm_tier

        return await wasm_tier.load(cand, res, host)
    raise PluginImportError(f"tier {res.tier!r} is not available in this build")


async def unload_plugin(rec: PluginRecord) -> None:
    """Release what the tier holds for a plugin (modules, a worker process); never fails."""
    tier = rec.resolution.tier if rec.resolution is not None else "inprocess"
    if tier == "subprocess":
        from tether.runtime import subprocess_tier

        await subprocess_tier.stop(rec.plugin)
        return
    if tier == "wasm":
        from tether.runtime import wasm_tier

        await wasm_tier.unload(rec.plugin)
        return
    inprocess.forget(rec.id, rec.candidate.module)
