"""In-process adapters: the embedded demo and the unit tests run on these."""
