"""The pool's HTTP API: stats read from Redis at intervals, served from memory."""
