"""MHub's model compliance rules, as its ``.github/scripts`` apply them, plus our mhubio API rules.

Every check returns a list of error messages (empty when compliant), so a test can plant a
violation and see it reported.
"""

from __future__ import annotations

import ast
import json
import tomllib
from pathlib import Path

import jsonschema
import yaml

REQUIRED_FILES = ("dockerfiles/Dockerfile", "config/default.yml", "meta.json", "mhub.toml")
IO_DECLARATIONS = {"Instance", "Input", "Inputs", "Output", "Outputs", "OutputData", "Config", "ConfigInput", "Bundle"}
# mhubio modules available in both mhubio 0.0.2 and its GitHub head under the same name.
MHUBIO_MODULES = {
    "DicomImporter", "FileStructureImporter", "NrrdImporter", "NiftiConverter", "NrrdConverter", "DsegConverter",
    "MhaConverter", "TiffConverter", "RTStructConverter", "DataOrganizer", "JsonSegExporter", "ReportExporter",
}


def _schema_errors(instance: object, schema_path: Path, label: str) -> list[str]:
    schema = json.loads(Path(schema_path).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    return [f"{label}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(instance)]


def check_folder(model_dir: Path) -> list[str]:
    """The files MHub requires in ``models/<name>/``."""
    return [f"{model_dir.name}: missing {name}" for name in REQUIRED_FILES if not (model_dir / name).is_file()]


def check_meta_json(model_dir: Path, schema_path: Path) -> list[str]:
    """meta.json against MHub's schema, and its ``name`` equal to the folder name."""
    path = model_dir / "meta.json"
    meta = json.loads(path.read_text())
    errors = _schema_errors(meta, schema_path, str(path))
    if meta.get("name") != model_dir.name:
        errors.append(f"{path}: name {meta.get('name')!r} differs from the folder name {model_dir.name!r}")
    return errors


def check_mhub_toml(model_dir: Path, schema_path: Path) -> list[str]:
    """mhub.toml against MHub's schema (a Zenodo URL of the test data under [model.deployment])."""
    path = model_dir / "mhub.toml"
    return _schema_errors(tomllib.loads(path.read_text()), schema_path, str(path))


def check_test_definition(path: Path, schema_path: Path) -> list[str]:
    """A test request (YAML, as posted with /test on the pull request) against MHub's schema."""
    return _schema_errors(yaml.safe_load(Path(path).read_text()), schema_path, str(path))


def check_dockerfile(text: str, model_name: str) -> list[str]:
    """MHub's Dockerfile rules: base image, model import, no ADD/COPY/WORKDIR, entrypoint and default CMD."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return ["Dockerfile is empty"]
    errors = []
    if lines[0] != "FROM mhubai/base:latest":
        errors.append(f"first line must be 'FROM mhubai/base:latest', not {lines[0]!r}")
    for i, line in enumerate(lines):
        keyword = line.split(maxsplit=1)[0].upper()
        if keyword in ("ADD", "COPY", "WORKDIR"):
            errors.append(f"{keyword} is not allowed: {line!r}")
        if keyword == "FROM" and i > 0:
            errors.append(f"only one FROM, at the top: {line!r}")
    if "ARG MHUB_MODELS_REPO" not in lines:
        errors.append("missing 'ARG MHUB_MODELS_REPO'")
    import_line = f"RUN buildutils/import_mhub_model.sh {model_name} ${{MHUB_MODELS_REPO}}"
    if import_line not in lines:
        errors.append(f"missing {import_line!r}")
    if len(lines) < 2 or lines[-2] != 'ENTRYPOINT ["mhub.run"]':
        errors.append("the second-to-last instruction must be ENTRYPOINT [\"mhub.run\"]")
    allowed_cmd = ('CMD ["--workflow", "default"]', f'CMD ["--config", "/app/models/{model_name}/config/default.yml"]')
    if lines[-1] not in allowed_cmd:
        errors.append(f"the last instruction must be {allowed_cmd[0]}, not {lines[-1]!r}")
    return errors


def _io_call(decorator: ast.expr) -> tuple[str, ast.Call | None] | None:
    """('Input', call) for ``@IO.Input(...)``, ('Instance', None) for a bare ``@IO.Instance``."""
    node = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "IO" and node.attr in IO_DECLARATIONS:
        return node.attr, decorator if isinstance(decorator, ast.Call) else None
    return None


def _keyword(call: ast.Call, name: str) -> str | None:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return str(kw.value.value)
    return None


def check_module_source(path: Path) -> list[str]:
    """Our mhubio API rules for a ``utils/*.py`` module (the subset mhubio 0.0.2 and its head share)."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    errors = []
    if not any(isinstance(n, ast.ClassDef) and n.name == path.stem for n in tree.body):
        errors.append(f"{path}: defines no class {path.stem} (the file name must be the class name)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "log" \
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self":
            errors.append(f"{path}:{node.lineno}: use self.log(...), not self.log.{node.attr}(...)")
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        declared_inputs: set[str] = set()
        for decorator in node.decorator_list:  # top to bottom
            found = _io_call(decorator)
            if found is None:
                continue
            kind, call = found
            if call is None:
                errors.append(f"{path}:{decorator.lineno}: write @IO.{kind}() with parentheses")
                continue
            if kind != "Instance" and _keyword(call, "the") is None:
                errors.append(f"{path}:{decorator.lineno}: @IO.{kind} needs a the= description")
            name = call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else None
            if kind in ("Input", "Inputs") and name:
                declared_inputs.add(str(name))
            reference = _keyword(call, "data")
            if kind.startswith("Output") and reference and reference not in declared_inputs:
                errors.append(f"{path}:{decorator.lineno}: output references input {reference!r}, which must be declared above it")
    return sorted(set(errors))


def check_workflows(model_dir: Path) -> list[str]:
    """Every workflow names only modules from ``utils/`` or mhubio, and carries a description."""
    local = {p.stem for p in (model_dir / "utils").glob("*.py")}
    errors = []
    for path in sorted((model_dir / "config").glob("*.yml")):
        config = yaml.safe_load(path.read_text()) or {}
        if not (config.get("general") or {}).get("description"):
            errors.append(f"{path}: general.description is missing")
        for step in config.get("execute") or []:
            name = step if isinstance(step, str) else step.get("module")
            if name not in local and name not in MHUBIO_MODULES:
                errors.append(f"{path}: module {name!r} is neither in utils/ nor an mhubio module")
    return errors


def check_model(model_dir: Path, schemas_dir: Path) -> list[str]:
    """All checks for one model folder (as MHub's compliance job runs them, plus ours)."""
    errors = check_folder(model_dir)
    if errors:
        return errors
    errors += check_meta_json(model_dir, schemas_dir / "meta.schema.json")
    errors += check_mhub_toml(model_dir, schemas_dir / "mhubtoml.schema.json")
    errors += [f"{model_dir.name}/dockerfiles/Dockerfile: {e}" for e in check_dockerfile((model_dir / "dockerfiles" / "Dockerfile").read_text(), model_dir.name)]
    errors += check_workflows(model_dir)
    for module in sorted((model_dir / "utils").glob("*.py")):
        if module.name != "__init__.py":
            errors += check_module_source(module)
    return errors
