"""MHub integration: run a model folder's mhubio workflow locally, and MHub's compliance rules."""
