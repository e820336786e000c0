"""MHub compliance of models/: schemas, Dockerfile rules, mhubio API rules; each check fails on a planted violation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from mhub_cpu_dev import compliance

SCHEMAS = REPO / "data" / "mhub-schemas"
MODELS = sorted(p for p in (REPO / "models").iterdir() if (p / "config").is_dir())
REFERENCE = REPO / "tests" / "mhub" / "mhub_reference"
DOCKERFILES = [m / "dockerfiles" / "Dockerfile" for m in MODELS] + [REPO / "Dockerfile.base"]


AUTO3DSEG_MODELS = [m for m in MODELS if (m / "utils" / "Auto3DSegOpenVINORunner.py").is_file()]


def test_the_model_folders_exist() -> None:
    assert [m.name for m in MODELS] == ["abdominal_openvino", "bpreg", "wholebody_openvino"]
    assert [m.name for m in AUTO3DSEG_MODELS] == ["abdominal_openvino", "wholebody_openvino"]


@pytest.mark.parametrize("model_dir", MODELS, ids=lambda p: p.name)
def test_model_folder_is_compliant(model_dir: Path) -> None:
    assert compliance.check_model(model_dir, SCHEMAS) == []


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A writable copy of models/abdominal_openvino to plant violations in."""
    return Path(shutil.copytree(REPO / "models" / "abdominal_openvino", tmp_path / "abdominal_openvino"))


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_meta_json_violations_are_caught(model_copy: Path) -> None:
    _edit_json(model_copy / "meta.json", lambda d: d["summary"]["model"].update(training="self-taught"))
    assert any("training" in e for e in compliance.check_model(model_copy, SCHEMAS))
    _edit_json(model_copy / "meta.json", lambda d: d.update(name="abdominal-openvino"))
    errors = compliance.check_meta_json(model_copy, SCHEMAS / "meta.schema.json")
    assert any("differs from the folder name" in e for e in errors) and any("does not match" in e for e in errors)
    _edit_json(model_copy / "meta.json", lambda d: d.pop("details"))
    assert any("'details' is a required property" in e for e in compliance.check_meta_json(model_copy, SCHEMAS / "meta.schema.json"))


def test_mhub_toml_violation_is_caught(model_copy: Path) -> None:
    (model_copy / "mhub.toml").write_text('[model.deployment]\ntest = "https://example.org/test.zip"\n')
    assert any("zenodo" in e for e in compliance.check_mhub_toml(model_copy, SCHEMAS / "mhubtoml.schema.json"))


def test_missing_files_are_caught(model_copy: Path) -> None:
    (model_copy / "config" / "default.yml").unlink()
    assert compliance.check_model(model_copy, SCHEMAS) == ["abdominal_openvino: missing config/default.yml"]


@pytest.mark.parametrize("model_dir", MODELS, ids=lambda p: p.name)
@pytest.mark.parametrize(
    ("plant", "expected"),
    [
        (lambda t: t.replace("FROM mhubai/base:latest", "FROM ubuntu:22.04"), "first line"),
        (lambda t: t.replace("ARG MHUB_MODELS_REPO\n", "COPY . /app\nARG MHUB_MODELS_REPO\n"), "COPY is not allowed"),
        (lambda t: t.replace("ARG MHUB_MODELS_REPO\n", "ADD weights.zip /app\nARG MHUB_MODELS_REPO\n"), "ADD is not allowed"),
        (lambda t: t.replace("ARG MHUB_MODELS_REPO\n", "WORKDIR /opt\nARG MHUB_MODELS_REPO\n"), "WORKDIR is not allowed"),
        (lambda t: t.replace("ARG MHUB_MODELS_REPO\n", "ARG MODELS_REPO\n"), "ARG MHUB_MODELS_REPO"),
        (lambda t: re.sub(r"import_mhub_model\.sh \w+", "import_mhub_model.sh other_model", t), "import_mhub_model.sh"),
        (lambda t: t.replace('ENTRYPOINT ["mhub.run"]', 'ENTRYPOINT ["python", "-m", "mhubio.run"]'), "ENTRYPOINT"),
        (lambda t: t.replace('CMD ["--workflow", "default"]', 'CMD ["--workflow", "fast"]'), "last instruction"),
        (lambda t: t + "\nFROM mhubai/base:latest\n", "only one FROM"),
    ],
)
def test_dockerfile_violations_are_caught(model_dir: Path, plant, expected: str) -> None:
    text = (model_dir / "dockerfiles" / "Dockerfile").read_text()
    assert compliance.check_dockerfile(text, model_dir.name) == []
    errors = compliance.check_dockerfile(plant(text), model_dir.name)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("@IO.Instance()", "@IO.Instance", "with parentheses"),
        (", the='CT series (DICOM folder) or CT volume (NIfTI)'", "", "needs a the= description"),
        ("data='in_data', the='label map", "data='ct_data', the='label map", "must be declared above it"),
        ("self.log('run:', ' '.join(command))", "self.log.debug('run:', ' '.join(command))", "not self.log.debug"),
        ("class Auto3DSegOpenVINORunner(Module):", "class Auto3DSegRunner(Module):", "file name must be the class name"),
    ],
)
def test_module_violations_are_caught(model_copy: Path, old: str, new: str, expected: str) -> None:
    path = model_copy / "utils" / "Auto3DSegOpenVINORunner.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    errors = compliance.check_module_source(path)
    assert any(expected in e for e in errors), errors


def test_input_declared_below_its_output_is_caught(model_copy: Path) -> None:
    path = model_copy / "utils" / "Auto3DSegOpenVINORunner.py"
    lines = path.read_text().splitlines(keepends=True)
    input_line = next(i for i, line in enumerate(lines) if "@IO.Input(" in line)
    moved = lines[:input_line] + lines[input_line + 1:input_line + 4] + [lines[input_line]] + lines[input_line + 4:]
    path.write_text("".join(moved))
    assert any("must be declared above it" in e for e in compliance.check_module_source(path))


def test_workflow_with_unknown_module_is_caught(model_copy: Path) -> None:
    path = model_copy / "config" / "default.yml"
    path.write_text(path.read_text().replace("- Auto3DSegOpenVINORunner\n", "- TotalSegmentatorRunner\n", 1))
    assert any("TotalSegmentatorRunner" in e for e in compliance.check_workflows(model_copy))


def test_importer_copies_are_identical() -> None:
    """Each MHub folder must be self-contained, so the importer is duplicated; the copies must not drift."""
    copies = {m.name: (m / "utils" / "DicomSeriesImporter.py").read_text() for m in MODELS}
    assert len(set(copies.values())) == 1


def test_runner_copies_are_identical() -> None:
    """MHub loads utils/ per model folder, so the runner is duplicated; the copies must not drift."""
    copies = {m.name: (m / "utils" / "Auto3DSegOpenVINORunner.py").read_bytes() for m in AUTO3DSEG_MODELS}
    assert len(copies) == 2 and len(set(copies.values())) == 1


@pytest.mark.parametrize("model_dir", AUTO3DSEG_MODELS, ids=lambda p: p.name)
def test_segment_ids_agree_with_the_catalogue(model_dir: Path) -> None:
    """meta.json's classes are the catalogue's SegDB ids of the default workflow's model; the structures
    SegDB has no id for are named in meta.json's text instead."""
    catalogue = json.loads((REPO / "configs" / "auto3dseg_models.json").read_text())
    model_id = yaml.safe_load((model_dir / "config" / "default.yml").read_text())["modules"]["Auto3DSegOpenVINORunner"]["model"]
    model = next(m for m in catalogue["models"] if m["id"] == model_id)
    meta = json.loads((model_dir / "meta.json").read_text())
    assert sorted(meta["summary"]["outputs"][0]["classes"]) == sorted(s["mhub_segdb_id"] for s in model["segments"] if s["mhub_segdb_id"])
    for segment in model["segments"]:
        if not segment["mhub_segdb_id"]:
            assert segment["name"] in meta["info"]["limitations"]["text"], segment["name"]


def test_runner_defaults_to_the_abdominal_model() -> None:
    runner = (REPO / "models" / "abdominal_openvino" / "utils" / "Auto3DSegOpenVINORunner.py").read_text()
    assert "@IO.Config('model', str, 'abdominal-organs-v2.0.0'" in runner


def test_wholebody_workflows_run_the_catalogue_models_within_a_laptop_budget() -> None:
    """The quick 3 mm model by default (DICOM and NIfTI), the 1.5 mm model at full resolution; each under
    max_memory: at the model's window, 118 classes need an estimated 13-15 GB on a whole-body series."""
    config = {p.stem: yaml.safe_load(p.read_text())["modules"]["Auto3DSegOpenVINORunner"]
              for p in (REPO / "models" / "wholebody_openvino" / "config").glob("*.yml")}
    assert {w: c["model"] for w, c in config.items()} == {
        "default": "whole-body-3mm-v2.0.0", "nifti": "whole-body-3mm-v2.0.0", "fullres": "whole-body-v2.0.1"}
    assert all(0 < c["max_memory"] <= 8000 for c in config.values())


def _workflows() -> list[tuple[str, str]]:
    return [(m.name, p.stem) for m in MODELS for p in sorted((m / "config").glob("*.yml"))]


@pytest.mark.parametrize(("model", "workflow"), _workflows())
def test_every_workflow_has_a_valid_test_definition(model: str, workflow: str) -> None:
    path = REFERENCE / model / f"{workflow}.test.yml"
    assert compliance.check_test_definition(path, SCHEMAS / "testmodel.schema.json") == []
    assert yaml.safe_load(path.read_text())["output"]


def test_test_definition_violation_is_caught(tmp_path: Path) -> None:
    text = (REFERENCE / "abdominal_openvino" / "default.test.yml").read_text()
    bad = tmp_path / "bad.test.yml"
    bad.write_text(text.replace("s3://idc-open-data/b28448ba-0dee-49e6-94f1-5c3877a63186/*", "https://idc/b28448ba"))
    assert compliance.check_test_definition(bad, SCHEMAS / "testmodel.schema.json") != []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfiles_parse_with_dockers_parser(path: Path) -> None:
    import dockerfile  # a test dependency: missing is a failure, not a skip
    commands = dockerfile.parse_file(str(path))
    assert {c.cmd for c in commands} <= {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "ENTRYPOINT", "CMD"}
    assert commands[-2].cmd == "ENTRYPOINT" and commands[-2].json


def _torch_pin(text: str) -> set[str]:
    return set(re.findall(r"torch==([\w.+]+)", text))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfiles_install_the_engine_as_make_does(path: Path) -> None:
    """torch pinned as in the Makefile and pyproject, installed first, then the package editable with [convert], in its own venv."""
    makefile = (REPO / "Makefile").read_text()
    text = path.read_text()
    assert _torch_pin(text) == _torch_pin(makefile) == _torch_pin((REPO / "pyproject.toml").read_text())
    assert "-e '.[convert,test]'" in makefile
    torch_at = text.index("torch==")
    engine_at = text.index('-e "/opt/mhub-cpu/src[convert]"') if "Dockerfile.base" in path.name else text.index('-e "${MHUB_CPU_HOME}/src[convert]"')
    assert torch_at < engine_at
    assert "/opt/mhub-cpu/venv" in text  # never mhubio's environment


@pytest.mark.parametrize("model_dir", MODELS, ids=lambda p: p.name)
def test_model_images_convert_weights_at_build_time_and_drop_torch(model_dir: Path) -> None:
    text = (model_dir / "dockerfiles" / "Dockerfile").read_text()
    assert "ENV MHUB_CPU_BIN=/opt/mhub-cpu/venv/bin/mhub-cpu" in text
    assert "uv pip uninstall torch" in text
    assert "python -c" not in text, "conversion through public commands only"
    if model_dir in AUTO3DSEG_MODELS:
        default_models = text.split('ARG MHUB_CPU_MODELS="', 1)[1].split('"', 1)[0].split()
        for workflow in model_dir.glob("config/*.yml"):
            model = yaml.safe_load(workflow.read_text())["modules"]["Auto3DSegOpenVINORunner"]["model"]
            assert model in default_models, (workflow.name, model)
        for precision in ("f32", "fp16", "int8"):  # every IR format a workflow may ask for, made at build time
            assert precision in text.split("for precision in", 1)[1].split(";", 1)[0]
        verified = "f32 bf16 fp16 int8"
        if "--precision ${MHUB_CPU_VERIFY}" in text:  # a stand-in build may skip verify; real weights are verified
            assert f'ARG MHUB_CPU_VERIFY="{verified}"' in text
            verified = "${MHUB_CPU_VERIFY}"
        assert f"${{MHUB_CPU_BIN}} verify --model $model --precision {verified}" in text
    else:
        assert "ARG MHUB_CPU_BPREG_MODEL=\n" in text  # empty: the public Zenodo model of mhub_cpu.bodypart.modelfiles
        assert "bodypart-convert \"$@\" --precision f32" in text and "bodypart-convert \"$@\" --precision int8" in text
