//! Upstream HTTP/1.1 client: per-shard keep-alive pools to one provider each.
