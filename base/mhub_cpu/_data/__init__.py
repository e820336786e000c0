"""The engine's data as package files, so a wheel installed anywhere finds them (see ``core.resources``).

``sample/`` holds the sample CT series; ``configs``, ``demo`` are the repository's top-level
folders of the same names, mapped here by ``[tool.setuptools] package-dir`` in pyproject.toml.
"""
