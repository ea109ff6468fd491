"""NetworkPolicy semantics as a model, connectivity truth tables, and what the engine must reach."""
