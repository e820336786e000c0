"""MHub integration: run a model folder's mhubio workflow locally, as ``mhub.run`` does in an image."""
