"""payouts.* tasks: transfers run as outbox tasks (app.payouts.service.execute_transfer), retried
by the outbox with backoff; nothing else runs on a schedule here."""
