"""Key-value scopes: user management, configuration, a cache with TTL (``examples.kv.app``)."""
