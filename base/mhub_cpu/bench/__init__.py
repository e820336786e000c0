"""``mhub-cpu bench``: the reference pipeline and our modes side by side on fixed workloads."""
