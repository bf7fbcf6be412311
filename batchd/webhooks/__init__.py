"""Result webhooks: the outbox in Redis, the sender that drains it, and the receiver's check.

Receivers need only `verify_webhook`; the daemon runs `sender.WebhookSender`.
"""

from batchd.webhooks.verify import verify_webhook

__all__ = ["verify_webhook"]
