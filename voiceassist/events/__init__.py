"""Events of a call (started, a turn, a transfer, a message, ended) told to other systems: signed
webhooks, queued in a durable outbox so that a call never waits on a receiver."""
