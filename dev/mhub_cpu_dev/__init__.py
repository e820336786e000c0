"""Development tools of mhub-cpu, never imported by the engine and not shipped in images.

Benchmarks (``bench``), the reference pipelines our results are compared with (``reference``:
MONAI + PyTorch as 3D Slicer runs it, bpreg 1.1.0 itself), stand-in models in the production
file formats (``standins``: real weights cannot be downloaded here) and MHub's compliance rules
(``compliance``). They read the project's shared sample data beside the repository (``shared``).
"""
