"""Text data: ingest -> clean -> split -> tokenize to a memory-mapped token array."""
