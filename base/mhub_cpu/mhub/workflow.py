"""Run an MHub model folder's workflow through mhubio, the way ``mhub.run`` does inside the image.

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
import shlex
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from mhub_cpu.core.errors import InputError, ProcessingError
from mhub_cpu.core.progress import log
from mhub_cpu.core.resources import models_root

# The mhubio modules our workflows use; the module paths are the same in mhubio 0.0.2 and its GitHub head.
MHUBIO_MODULES = {
    "FileStructureImporter": "mhubio.modules.importer.FileStructureImporter",
    "DataOrganizer": "mhubio.modules.organizer.DataOrganizer",
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


def _record_errors(module: Any, errors: list[str]) -> None:
    """Make ``module`` append the messages it logs at level ERROR (mhubio's per-instance failures) to ``errors``."""
    log_method = module.log

    def log_and_record(*args, level="NOTICE"):
        if str(getattr(level, "name", level)).upper() == "ERROR":
            errors.append(" ".join(str(a) for a in args).split(" in Traceback")[0].strip())
        log_method(*args, level=level)

    module.log = log_and_record


def run_workflow(model: str, workflow: str, input_dir: Path, output_dir: Path, overrides: tuple[str, ...] = ()) -> list[Path]:
    """Run ``models/<model>/config/<workflow>.yml`` on ``input_dir``; return the files written to ``output_dir``.

    Args:
        overrides: ``key.path=value`` settings applied like mhub.run's ``--config:key.path=value``.

    Raises:
        InputError: unknown model/workflow/module or missing input.
        ProcessingError: a module failed on an instance (mhubio logs it and carries on; we do not),
            no instance was imported, or an instance produced none of the DataOrganizer targets.
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
        errors: list[str] = []
        with contextlib.redirect_stdout(sys.stderr):  # mhubio prints its log; stdout is for our result paths
            for name, settings in steps:
                cls = _load_module_class(name, config_file.parents[1])
                extra = {"set_file_permissions": False} if name == "DataOrganizer" else {}
                module = cls(config=config, local_config=settings, **extra)
                _record_errors(module, errors)
                module.execute()
                if name == "DataOrganizer":
                    defaults = (config._config.get("modules") or {}).get(name) or {}
                    targets += settings.get("targets", defaults.get("targets", []))
        if not config.data.instances:
            raise ProcessingError(f"workflow {model}/{workflow} imported no instance from {input_dir}")
        empty = _instances_without_output(config, targets)
    if errors:
        raise ProcessingError(f"workflow {model}/{workflow} failed: {' | '.join(errors)}")
    if empty:
        raise ProcessingError(f"workflow {model}/{workflow} wrote nothing for instance(s) {', '.join(empty)} (see the module log above)")
    return sorted(p for p in set(output_dir.rglob("*")) - before if p.is_file())


def use_this_engine() -> None:
    """Point the model modules at this installation's ``mhub-cpu`` unless $MHUB_CPU_BIN says otherwise."""
    os.environ.setdefault("MHUB_CPU_BIN", f"{shlex.quote(sys.executable)} -m mhub_cpu.cli")
