"""Run an MHub model folder's workflow through mhubio, the way ``mhub.run`` does inside the image.

This module runs in mhubio's own environment (production mhubio pins pydicom 2.4, which the engine
cannot use): ``mhub-cpu mhub-run`` starts it with that environment's Python
(:func:`mhub_cpu.core.resources.mhubio_python`), so it imports nothing of the engine but
``core.errors``, ``core.progress`` and ``core.resources`` (an import-linter contract says so).

Differences from the image: the model folders are read from the repository's ``models/`` (or
``$MHUB_CPU_MODELS``), the input and output folders are linked into a temporary ``data_base_dir``
instead of being mounted at ``/app/data``, and a workflow whose instances did not all produce
every organised output is an error (mhubio itself logs per-instance failures and carries on).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from mhub_cpu.core.errors import InputError, MhubCpuError, ProcessingError
from mhub_cpu.core.progress import log
from mhub_cpu.core.resources import models_root

# The mhubio modules our workflows use (JsonSegExporter: the tests' check of the roi metadata), by their
# module paths in production mhubio (0.0.3, its GitHub head).
MHUBIO_MODULES = {
    "FileStructureImporter": "mhubio.modules.importer.FileStructureImporter",
    "DataOrganizer": "mhubio.modules.organizer.DataOrganizer",
    "JsonSegExporter": "mhubio.modules.exporter.JsonSegExporter",
}


def workflow_file(model: str, workflow: str, root: Path | None = None) -> Path:
    """``<root>/<model>/config/<workflow>.yml``; raises InputError listing what exists."""
    root = root or models_root()
    model_dir = root / model
    if not (model_dir / "config").is_dir():
        found = sorted(p.name for p in root.iterdir() if (p / "config").is_dir()) if root.is_dir() else []
        raise InputError(f"no MHub model {model!r} in {root} (models: {', '.join(found) or 'none'})")
    path = model_dir / "config" / f"{workflow}.yml"
    if not path.is_file():
        found = sorted(p.stem for p in (model_dir / "config").glob("*.yml"))
        raise InputError(f"model {model} has no workflow {workflow!r} (workflows: {', '.join(found)})")
    return path


def _load_module_class(name: str, model_dir: Path) -> type:
    """The class ``name`` from ``<model>/utils/<name>.py`` (file name = class name), else from mhubio."""
    local = model_dir / "utils" / f"{name}.py"
    if local.is_file():
        spec = importlib.util.spec_from_file_location(f"mhub_models.{model_dir.name}.utils.{name}", local)
        assert spec is not None and spec.loader is not None
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    elif name in MHUBIO_MODULES:
        module = importlib.import_module(MHUBIO_MODULES[name])
    else:
        raise InputError(f"workflow module {name} is neither in {model_dir / 'utils'} nor one of {', '.join(MHUBIO_MODULES)}")
    return getattr(module, name)


def _steps(execute: list) -> list[tuple[str, dict]]:
    """``execute:`` entries (a name, or a mapping with ``module:`` and local settings) as (name, settings)."""
    return [(s, {}) if isinstance(s, str) else (s["module"], {k: v for k, v in s.items() if k != "module"}) for s in execute]


def _instances_without_output(config: Any, targets: list[str]) -> list[str]:
    """Instances (by ``sid``) that have confirmed data for none of the organiser targets."""
    from mhubio.core import DataTypeQuery

    queries = [DataTypeQuery(t.split("-->")[0]) for t in targets]
    return [
        str(instance.attr.get("sid", instance.abspath))
        for instance in config.data.instances
        if not any(instance.data.filter(q, confirmed_only=True) for q in queries)
    ]


def run_workflow(model: str, workflow: str, input_dir: Path, output_dir: Path, overrides: tuple[str, ...] = ()) -> list[Path]:
    """Run ``models/<model>/config/<workflow>.yml`` on ``input_dir``; return the files written to ``output_dir``.

    Args:
        overrides: ``key.path=value`` settings applied like mhub.run's ``--config:key.path=value``.

    Raises:
        InputError: unknown model/workflow/module or missing input.
        ProcessingError: a module failed on an instance (mhubio logs it and, unless told to stop on
            errors as here, carries on), no instance was imported, or an instance produced none of the
            DataOrganizer targets.
    """
    from mhubio.core import Config

    config_file = workflow_file(model, workflow)
    input_dir, output_dir = Path(input_dir).resolve(), Path(output_dir).resolve()
    if not input_dir.exists():
        raise InputError(f"input does not exist: {input_dir}")
    output_dir.mkdir(parents=True, exist_ok=True)
    before = set(output_dir.rglob("*"))
    with tempfile.TemporaryDirectory(prefix="mhub-run-") as base:
        data_dir = Path(base) / "data"
        data_dir.mkdir()
        (data_dir / "input_data").symlink_to(input_dir, target_is_directory=True)
        (data_dir / "output_data").symlink_to(output_dir, target_is_directory=True)
        config = Config(
            config_file=str(config_file),
            config={"general": {"data_base_dir": str(data_dir)}},
            args=[f"--config:{o}" for o in overrides],
        )
        steps = _steps(config._config.get("execute", []))
        log(f"workflow {model}/{workflow}: {' -> '.join(name for name, _ in steps)}")
        targets: list[str] = []
        os.environ["MLOG_STOP_ON_ERROR"] = "YES"  # mhub.run's --stop-on-error: a failing instance raises
        with contextlib.redirect_stdout(sys.stderr):  # mhubio prints its log; stdout is for our result paths
            for name, settings in steps:
                cls = _load_module_class(name, config_file.parents[1])
                extra = {"set_file_permissions": False} if name == "DataOrganizer" else {}
                module = cls(config=config, local_config=settings, **extra)
                try:
                    module.execute()
                except Exception as exc:  # noqa: BLE001 - a module's failure on an instance, re-raised by mhubio
                    raise ProcessingError(f"workflow {model}/{workflow} failed: {name}: {' '.join(str(exc).split())}") from exc
                if name == "DataOrganizer":
                    defaults = (config._config.get("modules") or {}).get(name) or {}
                    targets += settings.get("targets", defaults.get("targets", []))
        if not config.data.instances:
            raise ProcessingError(f"workflow {model}/{workflow} imported no instance from {input_dir}")
        empty = _instances_without_output(config, targets)
    if empty:
        raise ProcessingError(f"workflow {model}/{workflow} wrote nothing for instance(s) {', '.join(empty)} (see the module log above)")
    return sorted(p for p in set(output_dir.rglob("*")) - before if p.is_file())


def main(argv: list[str] | None = None) -> int:
    """``python -m mhub_cpu.mhub.workflow MODEL WORKFLOW INPUT OUTPUT [KEY=VALUE ...]`` in mhubio's environment:
    prints the files written, or one line ``mhub-cpu: error: ...`` and exits with the error's code."""
    model, workflow, input_dir, output_dir, *overrides = argv if argv is not None else sys.argv[1:]
    try:
        written = run_workflow(model, workflow, Path(input_dir), Path(output_dir), tuple(overrides))
    except MhubCpuError as exc:
        print(f"mhub-cpu: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
