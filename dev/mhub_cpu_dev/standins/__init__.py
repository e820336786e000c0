"""Stand-in models in the exact production formats, for tests and benchmarks (real weights cannot be downloaded here)."""
