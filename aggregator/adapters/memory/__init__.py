"""adapters/memory layer."""
