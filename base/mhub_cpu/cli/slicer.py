"""``mhub-cpu slicer-inference`` (3D Slicer's MONAIAuto3DSeg inference script, on OpenVINO) and ``mhub-cpu slicer-shim``.

The Slicer script is a python-fire command: its options are spelled with dashes or underscores
(``--model-file``, ``--model_file``), given as ``--name value`` or ``--name=value``, and options it
does not name land in ``**kwargs`` and are ignored. An argparse subcommand refuses unknown
options, so ``slicer-inference`` takes its arguments verbatim (its parser's option prefix is ``+``)
and sorts them here: the script's own and ours go to :func:`_script_parser`, the rest are logged
and ignored, as the script ignores them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mhub_cpu.cli.options import choices
from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import log
from mhub_cpu.runtime.precision import Precision


def _script_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mhub-cpu slicer-inference", allow_abbrev=False,
        description="Run a MONAIAuto3DSeg model as 3D Slicer's auto3dseg_segresnet_inference.py does, on OpenVINO: "
        "same arguments (dashes or underscores; unknown options are ignored, as the script ignores them), NRRD in, "
        "NRRD label map out with the input's header. Uses model.xml beside model.pt when `mhub-cpu convert "
        "--model-file` wrote it, else the cached conversion.",
    )

    def script_option(name: str, **kwargs: object) -> None:
        parser.add_argument(f"--{name}", f"--{name.replace('-', '_')}", dest=name.replace("-", "_"), **kwargs)  # type: ignore[arg-type]

    script_option("model-file", type=Path, required=True, help="model.pt in the extension's model folder (labels.csv beside it)")
    script_option("image-file", type=Path, required=True, help="input volume, NRRD (as the extension writes it)")
    script_option("result-file", type=Path, required=True, help="label map to write, .nrrd (the input's header, labels as data)")
    script_option("save-mode", default=None, help="the script's output mode; 'brats' (multi-input MR) is refused, other values are ignored as there")
    for number in (2, 3, 4):
        script_option(f"image-file-{number}", type=Path, default=None, help=f"input volume {number} of a multi-input model: refused for now")
    parser.add_argument("--precision", choices=choices(Precision), default=Precision.F32.value,
                        help="mhub-cpu's: OpenVINO precision as for `mhub-cpu segment` (default f32)")
    parser.add_argument("--threads", type=int, default=None, help="mhub-cpu's: CPU threads for OpenVINO (default: all cores)")
    parser.add_argument("--trust-model", action="store_true", help="mhub-cpu's: unpickle model.pt with the full unpickler (see `segment --help`)")
    return parser


def split_arguments(arguments: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """``(known, ignored)``: the tokens of options ``parser`` knows, and those of options it does not
    (each ``--name[=value]`` with the value token that follows it, as python-fire reads them).

    Raises:
        InputError: a bare word that belongs to no option (the extension passes none).
    """
    takes_value = {s: action.nargs != 0 for action in parser._actions for s in action.option_strings}
    known: list[str] = []
    ignored: list[str] = []
    index = 0
    while index < len(arguments):
        token = arguments[index]
        name, equals, _ = token.partition("=")
        if not token.startswith("-") or token == "--":
            raise InputError(f"unexpected argument {token!r}: slicer-inference takes --model-file, --image-file and --result-file")
        if name in takes_value:
            consumed = 2 if takes_value[name] and not equals and index + 1 < len(arguments) else 1
            known += arguments[index:index + consumed]
        else:
            follows = index + 1 < len(arguments) and not arguments[index + 1].startswith("--")
            consumed = 2 if follows and not equals else 1
            ignored.append(" ".join(arguments[index:index + consumed]))
        index += consumed
    return known, ignored


def _run_inference(args: argparse.Namespace) -> int:
    from mhub_cpu.slicer.inference import SlicerRequest, run_slicer_inference

    parser = _script_parser()
    known, ignored = split_arguments(args.arguments, parser)
    options = parser.parse_args(known)
    for option in ignored:
        log(f"ignoring {option}: an option the Slicer script does not use either (it ends in its **kwargs)")
    extra = tuple((f"--image-file-{n}", getattr(options, f"image_file_{n}")) for n in (2, 3, 4) if getattr(options, f"image_file_{n}") is not None)
    request = SlicerRequest(
        model_file=options.model_file, image_file=options.image_file, result_file=options.result_file, extra_image_files=extra,
        save_mode=options.save_mode, precision=Precision(options.precision), threads=options.threads, trust_model=options.trust_model,
    )
    summary = run_slicer_inference(request)
    print(summary["result_file"])
    return 0


def _run_shim(args: argparse.Namespace) -> int:
    from mhub_cpu.slicer.shim import shim_script

    print(shim_script(), end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``slicer-inference`` and ``slicer-shim`` subcommands."""
    inference = subparsers.add_parser(
        "slicer-inference", prefix_chars="+", add_help=False,  # arguments taken verbatim: see the module docstring
        help="3D Slicer's MONAIAuto3DSeg inference script on OpenVINO: --model-file DIR/model.pt --image-file IN.nrrd "
        "--result-file OUT.nrrd (see slicer-inference --help)",
    )
    inference.add_argument("arguments", nargs="*", help=argparse.SUPPRESS)
    inference.set_defaults(func=_run_inference)
    shim = subparsers.add_parser(
        "slicer-shim",
        help="print a stand-in for the extension's auto3dseg_segresnet_inference.py that runs slicer-inference",
        description="Print a Python script to put in place of MONAIAuto3DSeg's Scripts/auto3dseg_segresnet_inference.py: "
        "run by Slicer's Python, it runs `mhub-cpu slicer-inference` of this installation with the same arguments, "
        "without Slicer's PYTHONHOME, PYTHONPATH and LD_LIBRARY_PATH.",
    )
    shim.set_defaults(func=_run_shim)
