"""The ingest API: authenticates write keys, validates events, queues batches. Thin by design:
all heavy work (identity resolution, storage) belongs to the workers."""
