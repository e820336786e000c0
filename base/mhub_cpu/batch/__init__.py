"""Batch runs: many series from one or more input roots, one outcome row per series, collection reports."""
