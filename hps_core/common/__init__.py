"""Small helpers every floor may use: content digests, secret redaction, CPU threads."""
