"""Pieces every layer shares: errors, progress and timing, atomic files, the download cache, resources."""
