// The snapshot format: see docs/snapshot-format.md.
