"""RQ workers: normalize, resolve identities, persist events exactly once."""
