"""Benchmarks: the reference pipeline and our modes side by side on fixed workloads (``python -m mhub_cpu_dev.bench``)."""
