"""Model side of the engine: vocabulary and prompt strings, checkpoint layouts, loading, tiny random models."""
