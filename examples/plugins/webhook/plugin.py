"""The `webhook` notification channel: each notification is POSTed as JSON to the URL in
the plugin's config (`[plugins.webhook] config = { url = "https://..." }`), through the
host's audited `ctx.http` (so the URL's host must be in the effective outbound allowlist).

Nothing is contacted at load; each send is one POST. A 2xx answer is success; 408, 425,
429, 5xx, timeouts and connection errors are retryable (the notification bus retries them
and opens its circuit breaker when they persist); any other status, and a request the
egress rules refuse, is a permanent error.
"""

from __future__ import annotations

from tether import (
    EgressBlockedError,
    NotificationRequest,
    NotificationResult,
    Plugin,
    TetherError,
)

plugin = Plugin()

RETRYABLE_STATUS = frozenset({408, 425, 429})


@plugin.channel("webhook")
async def deliver(req: NotificationRequest) -> NotificationResult:
    """Deliver one notification to the configured webhook."""
    ctx = plugin.context
    url = str(ctx.config["url"])
    body = {
        "kind": req.kind,
        "recipient": req.recipient,
        "text": req.text,
        "metadata": req.metadata,
        "sender": req.sender,
    }
    timeout_ms = int(float(ctx.config.get("timeout_seconds", 10)) * 1000)
    try:
        response = await ctx.http.post(url, json=body, timeout_ms=timeout_ms)
    except EgressBlockedError as exc:  # the operator's rules refuse it: retrying cannot help
        return NotificationResult.error(f"webhook {url}: {exc}", retryable=False)
    except TetherError as exc:  # timeout, refused connection, TLS failure...
        return NotificationResult.error(
            f"webhook {url}: {type(exc).__name__}: {exc}", retryable=True
        )
    status = response.status
    if 200 <= status < 300:
        return NotificationResult.success(f"webhook answered {status}", data={"status": status})
    retryable = status >= 500 or status in RETRYABLE_STATUS
    return NotificationResult.error(f"webhook {url} answered {status}", retryable=retryable)
