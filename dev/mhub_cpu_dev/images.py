"""Build and run the images with podman (or docker where a daemon runs): ``make images``.

Four images: the standalone engine (``Dockerfile.base``) and the three MHub model images
(``models/*/dockerfiles/Dockerfile``, test builds with stand-in models) on a local approximation of ``mhubai/base:latest``
(``dev/images/mhub-base.Dockerfile``, from ``vendor/mhub/mhub-base``). Where no registry is
reachable the first base is a Debian bookworm made with mmdebstrap from the host's apt sources.

podman keeps all its state under ``output/images/podman/`` with one storage configuration; runc
(crun fails on cgroups v1 hybrid mode) with rlimits this sandbox lets a container set. Builds reach
the package registries with ``--network host`` and read the host's pip configuration, local wheel
folders and CA bundle through read-only mounts; nothing of it is baked into an image. Model images
are built from throwaway git repositories: the engine at HEAD, and a models repository holding only
``models/<name>`` (``import_mhub_model.sh`` would otherwise leave this repository's pyproject.toml
in ``/app``, which ``uv run`` inside ``mhub.run`` then tries to sync, offline).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mhub_cpu.core.progress import log

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "output" / "images"
VENDOR = REPO / "vendor" / "mhub"
BASE = "localhost/mhub-cpu-base:bookworm"
ENGINE = "localhost/mhub-cpu:latest"
MHUB_BASE = "docker.io/mhubai/base:latest"
MODEL_IMAGES = {
    "abdominal_openvino": "localhost/mhub-cpu-abdominal_openvino:test",
    "bpreg": "localhost/mhub-cpu-bpreg:test",
    "wholebody_openvino": "localhost/mhub-cpu-wholebody_openvino:test",
}
#: The whole-body stand-in the test image converts (random weights of the 3 mm model's architecture;
#: the full-resolution model's stand-in is the same network at 1.5 mm, tested outside the image).
WHOLEBODY_STANDIN = "whole-body-3mm-standin.zip"
#: rlimits a container may set here (podman's defaults are refused: no CAP_SYS_RESOURCE).
ULIMITS = ("nofile=16384:16384", "nproc=32768:32768")
#: Debian packages of the first base: Python 3.11 with venv, git for the model Dockerfiles.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "git")


def engine() -> list[str]:
    """``podman`` with this project's configuration, or ``docker`` where a daemon answers."""
    if shutil.which("podman"):
        return ["podman"]
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return ["docker"]
    raise SystemExit("neither podman nor a running docker daemon: apt-get install podman runc mmdebstrap")


def configure() -> None:
    """Environment for podman: its configuration and storage in ``output/images/podman``
    (``$MHUB_CPU_PODMAN_STATE`` names another folder)."""
    state = Path(os.environ.get("MHUB_CPU_PODMAN_STATE") or OUT / "podman")
    state.mkdir(parents=True, exist_ok=True)
    (state / "containers.conf").write_text(
        "[containers]\n"
        f"default_ulimits = {json.dumps(list(ULIMITS))}\n"
        "[engine]\n"
        'runtime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
    )
    (state / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{state / "storage"}"\nrunroot = "{state / "run"}"\n'
    )
    os.environ.update(CONTAINERS_CONF=str(state / "containers.conf"), CONTAINERS_STORAGE_CONF=str(state / "storage.conf"))


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    """Run a command, logging it; raise with its output's tail when it fails."""
    log("$ " + " ".join(command))
    result = subprocess.run(command, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise SystemExit(f"failed (exit {result.returncode}): {' '.join(command[:4])} ...")
    return result


def build_mounts() -> list[str]:
    """Read-only mounts of the host's pip configuration files, the folders they name and the CA bundle."""
    paths = {Path("/etc/ssl/certs/ca-certificates.crt")}
    debug = subprocess.run([sys.executable, "-m", "pip", "config", "debug"], capture_output=True, text=True).stdout
    for line in debug.splitlines():  # "  /root/.config/pip/pip.conf, exists: True"
        if line.strip().endswith("exists: True"):
            paths.add(Path(line.strip().split(",", 1)[0]))
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        for value in line.split("=", 1)[-1].strip("'\" ").split():
            value = value.removeprefix("file://")
            if value.startswith("/") and Path(value).exists():
                paths.add(Path(value).parent if value.endswith("/simple") else Path(value))
    mounts = []
    for path in sorted(p for p in paths if p.exists()):
        mounts += ["-v", f"{path}:{path}:ro"]
    uv_config = OUT / "uv.toml"  # uv reads no pip.conf: the same local wheel folders, for torch's CPU build
    links = [str(p) for p in paths if p.is_dir() and any(p.glob("*.whl"))]
    uv_config.write_text(f"find-links = {json.dumps(sorted(links))}\n")
    return mounts + ["-v", f"{uv_config}:/etc/xdg/uv/uv.toml:ro", "-v", f"{uv_config}:/etc/uv/uv.toml:ro"]


def _build(tag: str, dockerfile: Path, context: Path, *extra: str) -> float:
    start = time.perf_counter()
    limits = [f"--ulimit={u}" for u in ULIMITS]
    run([*engine(), "build", "--network", "host", *limits, *build_mounts(), "-f", str(dockerfile), "-t", tag, *extra, str(context)])
    return time.perf_counter() - start


def image_exists(tag: str) -> bool:
    return subprocess.run([*engine(), "image", "exists", tag], capture_output=True).returncode == 0


def build_base() -> float:
    """The first base: Debian bookworm from the host's apt sources (mmdebstrap), imported."""
    if image_exists(BASE):
        return 0.0
    start = time.perf_counter()
    tarball = OUT / "bookworm.tar"
    run(["mmdebstrap", "--variant=apt", f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(tarball)])
    run([*engine(), "import", str(tarball), BASE])
    tarball.unlink()
    return time.perf_counter() - start


def _throwaway_repos() -> tuple[Path, str, Path, str]:
    """The engine at HEAD and a models repository with only ``models/``, each with a branch named after
    its commit: the branch names are build arguments of the clone and import steps, so a new commit
    rebuilds those layers instead of reusing a cached one (the repositories are mounts, which the
    build cache does not see)."""
    engine_repo, models_repo = OUT / "engine.git", OUT / "models.git"
    for path in (engine_repo, models_repo):
        shutil.rmtree(path, ignore_errors=True)
    run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(engine_repo)])
    engine_ref = "image-" + _head(engine_repo)
    run(["git", "-C", str(engine_repo), "checkout", "-q", "-B", engine_ref])
    shutil.copytree(REPO / "models", models_repo / "models", ignore=shutil.ignore_patterns("__pycache__"))
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=mhub-cpu", "-c", "user.email=mhub-cpu@localhost", "commit", "-q", "-m", "models"]):
        run(["git", "-C", str(models_repo), *command])
    models_ref = "models-" + _head(models_repo)
    run(["git", "-C", str(models_repo), "branch", "-q", models_ref])
    return engine_repo, engine_ref, models_repo, models_ref


def _head(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def _standin_bpreg_model() -> Path:
    """A bpreg model directory in the public layout with random weights (the real one is on Zenodo)."""
    from mhub_cpu_dev.standins.bodypart import random_state_dict, write_model_dir

    target = OUT / "bpreg-standin"
    if not (target / "inference-settings.json").exists():
        write_model_dir(target, random_state_dict(seed=0))
    return target


def _standin_wholebody_models() -> Path:
    """A folder with the whole-body stand-in zip (the catalogue's labels, random weights)."""
    from mhub_cpu_dev.standins.auto3dseg import write_random_model

    folder = OUT / "wholebody-standin"
    write_random_model(folder / WHOLEBODY_STANDIN, "whole-body-3mm-v2.0.0", [], 3.0)
    return folder


#: Free disk a build needs under the podman storage, in GB: podman writes each new layer twice while
#: committing it (the container's upper folder and the layer's tar), and the model builds hold torch
#: and the converters until their last step removes them.
DISK_NEEDED_GB = {"base": 1.0, "engine": 5.0, "mhub-base": 7.0, "model": 5.0}


def check_disk(what: str) -> None:
    """Refuse a build in one line, before podman starts, when the storage's filesystem is too full for it."""
    storage = Path(os.environ.get("MHUB_CPU_PODMAN_STATE") or OUT / "podman")
    free_gb = shutil.disk_usage(storage).free / 1e9
    needed = DISK_NEEDED_GB["model" if what in MODEL_IMAGES else what]
    log(f"disk: {free_gb:.1f} GB free under {storage} before building {what} (needs about {needed:.0f} GB)")
    if free_gb < needed:
        raise SystemExit(f"not enough disk to build {what}: {free_gb:.1f} GB free under {storage}, about {needed:.0f} GB needed")


def _model_build_args() -> list[str]:
    """Mounts and build arguments every model image shares: the throwaway engine and models repositories."""
    engine_repo, engine_ref, models_repo, models_ref = _throwaway_repos()
    return [
        "-v", f"{engine_repo}:/src/engine.git:ro", "-v", f"{models_repo}:/src/models.git:ro",
        "--build-arg=MHUB_CPU_REPO=/src/engine.git", f"--build-arg=MHUB_CPU_REF={engine_ref}",
        f"--build-arg=MHUB_MODELS_REPO=/src/models.git::{models_ref}", "--build-arg=TORCH_INDEX_URL=",
    ]


def _model_specific_args(name: str) -> list[str]:
    """What a test build passes where the real weights cannot be downloaded: stand-in models."""
    if name == "abdominal_openvino":
        return ["--build-arg=MHUB_CPU_MODELS=demo"]
    if name == "bpreg":
        standin = _standin_bpreg_model()
        return ["-v", f"{standin}:/src/bpreg-model:ro", "--build-arg=MHUB_CPU_BPREG_MODEL=/src/bpreg-model"]
    if name == "wholebody_openvino":
        folder = _standin_wholebody_models()
        # Random weights cannot pass `mhub-cpu verify` (near-uniform logits flip at the slightest
        # difference): the test build converts every IR format but verifies none (see the Dockerfile).
        return ["-v", f"{folder}:/src/wholebody-models:ro", f"--build-arg=MHUB_CPU_MODELS=/src/wholebody-models/{WHOLEBODY_STANDIN}",
                "--build-arg=MHUB_CPU_VERIFY="]
    raise ValueError(f"no test build arguments for {name}")


def build(names: list[str]) -> dict[str, float]:
    """Build the named images ("engine" and model folder names) and the bases they need; return the
    seconds each build took (0 where an image existed)."""
    OUT.mkdir(parents=True, exist_ok=True)
    configure()
    check_disk("base")
    seconds = {"base": build_base()}
    if "engine" in names:
        check_disk("engine")
        seconds["engine"] = _build(ENGINE, REPO / "Dockerfile.base", REPO, f"--build-arg=BASE_IMAGE={BASE}", "--build-arg=TORCH_INDEX_URL=")
    models = [name for name in names if name in MODEL_IMAGES]
    if models and not image_exists(MHUB_BASE):
        check_disk("mhub-base")
        seconds["mhub-base"] = _build(
            MHUB_BASE, REPO / "dev" / "images" / "mhub-base.Dockerfile", VENDOR / "mhub-base" / "base",
            f"--build-arg=BASE_IMAGE={BASE}", "-v", f"{VENDOR / 'wheels'}:/vendor:ro",
        )
    if models:
        common = _model_build_args()
        context = OUT / "context"  # the model Dockerfiles copy nothing: an empty build context
        context.mkdir(exist_ok=True)
        for name in models:
            check_disk(name)
            dockerfile = REPO / "models" / name / "dockerfiles" / "Dockerfile"
            seconds[name] = _build(MODEL_IMAGES[name], dockerfile, context, *common, *_model_specific_args(name))
    sizes = {tag: image_size(tag) for tag in (ENGINE, MHUB_BASE, *MODEL_IMAGES.values()) if image_exists(tag)}
    record = OUT / "build.json"
    previous = json.loads(record.read_text()) if record.exists() else {"seconds": {}, "sizes": {}}
    previous["seconds"].update(seconds)
    previous["sizes"].update(sizes)
    record.write_text(json.dumps(previous, indent=2) + "\n")
    log(f"built: {json.dumps({'seconds': {k: round(v) for k, v in seconds.items()}, 'sizes': sizes})}")
    return seconds


def remove(tag: str) -> None:
    """Remove an image and the layers only it used (the bases stay)."""
    run([*engine(), "rmi", "--force", tag], capture_output=True)
    subprocess.run([*engine(), "image", "prune", "--force"], capture_output=True)


#: The image tests of each image (``pytest -k``): their names say which image they run.
IMAGE_TESTS = {"engine": "engine_image", **{name: f"{name.split('_')[0]}_image" for name in MODEL_IMAGES}}


def test(names: list[str], keep: bool) -> int:
    """Per image: build it, run its tests, and (unless ``keep``) remove it before the next, so that the
    disk holds the bases and one image at a time. Returns pytest's worst exit code."""
    worst = 0
    for name in names:
        build([name])
        tag = ENGINE if name == "engine" else MODEL_IMAGES[name]
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "images", "-k", IMAGE_TESTS[name], str(REPO / "tests" / "images")]
        log("$ " + " ".join(command))
        worst = max(worst, subprocess.run(command, cwd=REPO).returncode)
        if not keep:
            remove(tag)
    return worst


def image_size(tag: str) -> str:
    result = subprocess.run([*engine(), "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True)
    return f"{int(result.stdout.strip()) / 1e9:.2f} GB" if result.returncode == 0 and result.stdout.strip().isdigit() else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mhub_cpu_dev.images", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "test"], help="build: build the images; test: per image, build it, run its tests, remove it")
    parser.add_argument("images", nargs="*", default=list(IMAGE_TESTS), help=f"images (default all: {' '.join(IMAGE_TESTS)})")
    parser.add_argument("--keep", action="store_true", help="test: keep each image after its tests (default: removed, to bound the disk used)")
    args = parser.parse_args(argv)
    unknown = set(args.images) - set(IMAGE_TESTS)
    if unknown:
        parser.error(f"unknown images {sorted(unknown)}; choose from {' '.join(IMAGE_TESTS)}")
    if args.command == "build":
        build(args.images)
        return 0
    return test(args.images, args.keep)


if __name__ == "__main__":
    sys.exit(main())
