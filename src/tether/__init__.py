"""Tether: a plugin runtime for Python AI-agent hosts.

Plugins offer tools, hooks around every model and tool call, event handlers and more,
behind a manifest and an operator policy of capabilities. See docs/ for the guide.
"""

from tether.authoring import Plugin
from tether.contract.capabilities import CATALOGUE, Capability
from tether.contract.errors import (
    CapabilityViolationError,
    ManifestError,
    NameClashError,
    OutboundHostViolationError,
    PluginRefusedError,
    PolicyError,
    PolicyViolationError,
    Problem,
    RefusalReason,
    RegistrationError,
    SchemaError,
    TetherError,
    ToolError,
    ToolInputError,
    UnknownToolError,
)
from tether.contract.manifest import Manifest
from tether.contract.policy import Policy
from tether.contract.types import (
    Block,
    Caller,
    Event,
    Intercept,
    Message,
    RunEnd,
    RunEndReason,
    RunEndResult,
    RunStart,
    RunStartResult,
    ToolCall,
    ToolInfo,
    ToolResult,
    TurnResult,
)
from tether.contract.versions import API_VERSION, HOST_VERSION
from tether.runtime.context import Context
from tether.runtime.host import Host
from tether.runtime.lifecycle import State

__version__ = HOST_VERSION

__all__ = [
    "API_VERSION",
    "CATALOGUE",
    "Block",
    "Caller",
    "Capability",
    "CapabilityViolationError",
    "Context",
    "Event",
    "Host",
    "Intercept",
    "Manifest",
    "ManifestError",
    "Message",
    "NameClashError",
    "OutboundHostViolationError",
    "Plugin",
    "PluginRefusedError",
    "Policy",
    "PolicyError",
    "PolicyViolationError",
    "Problem",
    "RefusalReason",
    "RegistrationError",
    "RunEnd",
    "RunEndReason",
    "RunEndResult",
    "RunStart",
    "RunStartResult",
    "SchemaError",
    "State",
    "TetherError",
    "ToolCall",
    "ToolError",
    "ToolInfo",
    "ToolInputError",
    "ToolResult",
    "TurnResult",
    "UnknownToolError",
    "__version__",
]
