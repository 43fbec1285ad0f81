"""Tether: a plugin runtime for Python AI-agent hosts.

Plugins offer tools, hooks around every model and tool call, event handlers and more,
behind a manifest and an operator policy of capabilities. See docs/ for the guide.
"""

from tether.authoring import Plugin
from tether.contract.capabilities import CATALOGUE, Capability
from tether.contract.errors import (
    CapabilityViolationError,
    DbScopeViolationError,
    EgressBlockedError,
    ManifestError,
    NameClashError,
    OutboundHostViolationError,
    PluginRefusedError,
    PolicyError,
    PolicyViolationError,
    Problem,
    QuotaExceededError,
    RateLimitedError,
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
    NotificationRequest,
    NotificationResult,
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
from tether.services.clock import ManualClock
from tether.services.config_keys import ConfigKeyError
from tether.services.memory import Memory
from tether.services.migrations import MigrationError
from tether.services.secrets import SecretError
from tether.services.users import User

__version__ = HOST_VERSION

__all__ = [
    "API_VERSION",
    "CATALOGUE",
    "Block",
    "Caller",
    "Capability",
    "CapabilityViolationError",
    "ConfigKeyError",
    "Context",
    "DbScopeViolationError",
    "EgressBlockedError",
    "Event",
    "Host",
    "Intercept",
    "Manifest",
    "ManifestError",
    "ManualClock",
    "Memory",
    "Message",
    "MigrationError",
    "NameClashError",
    "NotificationRequest",
    "NotificationResult",
    "OutboundHostViolationError",
    "Plugin",
    "PluginRefusedError",
    "Policy",
    "PolicyError",
    "PolicyViolationError",
    "Problem",
    "QuotaExceededError",
    "RateLimitedError",
    "RefusalReason",
    "RegistrationError",
    "RunEnd",
    "RunEndReason",
    "RunEndResult",
    "RunStart",
    "RunStartResult",
    "SchemaError",
    "SecretError",
    "State",
    "TetherError",
    "ToolCall",
    "ToolError",
    "ToolInfo",
    "ToolInputError",
    "ToolResult",
    "TurnResult",
    "UnknownToolError",
    "User",
    "__version__",
]
