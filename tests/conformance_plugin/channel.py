"""A notification channel, kept apart from plugin.py because a tier that cannot offer
channels refuses the whole plugin that declares one."""

from tether import Plugin
from tether.contract.types import NotificationRequest, NotificationResult

plugin = Plugin()


@plugin.channel("conformance")
async def deliver(request: NotificationRequest) -> NotificationResult:
    return NotificationResult.success(f"delivered to {request.recipient}: {request.text}")
