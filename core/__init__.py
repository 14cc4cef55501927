"""Pure domain code: schemas, normalization, identity decisions, EMQ. No I/O here."""
