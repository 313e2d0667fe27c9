"""The run machinery between a config and the engine: CLI, validation, building, the training loop,
recording, data loading for a run, and dispatching jobs to workers (see docs/ARCHITECTURE.md)."""
