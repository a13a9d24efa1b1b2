"""Small helpers every floor may use: content digests, secret redaction, CPU threads, a task's place in a multi-node gang."""
