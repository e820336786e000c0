"""Loading Auto3DSeg ``model.pt`` checkpoints without running arbitrary pickled code.

A ``model.pt`` is a pickle, and unpickling can call any function: whoever can change a model zip
(a replaced release asset, a file passed by a colleague, a cached copy swapped on a shared
machine) could run code as the user. So checkpoints are loaded with PyTorch's restricted
unpickler (``weights_only=True``, PyTorch's default since 2.6), which rebuilds tensors and plain
containers only, plus :data:`ALLOWED_GLOBALS`.

That allow-list is empty, from reading what is saved and read: the Auto3DSeg SegResNet trainer
(``segmenter.py``, ``Segmenter.checkpoint_save``) saves ``{"state_dict", "config", "epoch",
"best_metric"}`` with an ``OrderedDict`` of tensors, an ``int``, a ``float``, and a ``config``
parsed by ``yaml.safe_load`` with data statistics converted to ``float``/``int``/lists and paths
to strings; Slicer's inference script reads ``config``, ``state_dict``, ``epoch`` and
``best_metric``. Anything else in a file (a NumPy array, a class, a function) is refused with its
name; ``trust=True`` (``--trust-model``) loads a file the user trusts with the full unpickler.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from mhub_cpu.core.errors import ModelError
from mhub_cpu.core.progress import log

#: Globals beyond PyTorch's own ``weights_only`` set that an Auto3DSeg checkpoint needs: none.
ALLOWED_GLOBALS: tuple[Any, ...] = ()


def load_checkpoint(checkpoint_bytes: bytes, trust: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Unpickle ``model.pt`` safely and return ``(config, state_dict)``.

    Args:
        checkpoint_bytes: The file's content.
        trust: Load with PyTorch's full unpickler (may run code in the file): only for a file the
            user trusts.

    Raises:
        ModelError: the file holds a type outside the allow-list (named in the message), cannot
            be read by torch, or is not an Auto3DSeg checkpoint.
    """
    import torch

    if trust:
        log("warning: loading model.pt with the full unpickler (--trust-model): it may run code it contains")
        loader = lambda: torch.load(io.BytesIO(checkpoint_bytes), map_location="cpu", weights_only=False)  # noqa: E731
    else:
        def loader() -> Any:
            with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
                return torch.load(io.BytesIO(checkpoint_bytes), map_location="cpu", weights_only=True)

    try:
        checkpoint = loader()
    except pickle.UnpicklingError as exc:
        if trust:
            raise ModelError(f"model.pt cannot be unpickled: {exc}") from exc
        unsafe = _unsafe_globals(checkpoint_bytes)
        raise ModelError(
            f"model.pt holds {', '.join(unsafe) or 'a type'}, which an Auto3DSeg checkpoint does not need; unpickling "
            "it could run code from the file, so it is refused. If you trust this file, pass --trust-model"
        ) from exc
    except Exception as exc:  # torch raises zip, runtime and value errors alike
        raise ModelError(f"model.pt cannot be loaded by torch: {' '.join(str(exc).split())[:300]}") from exc
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "state_dict" not in checkpoint:
        raise ModelError("model.pt is not an Auto3DSeg SegResNet checkpoint (needs 'config' and 'state_dict')")
    return checkpoint["config"], checkpoint["state_dict"]


def _unsafe_globals(checkpoint_bytes: bytes) -> list[str]:
    """The types outside the allow-list that the pickle would construct (read, never executed)."""
    import torch

    allowed = {f"{g.__module__}.{g.__qualname__}" for g in ALLOWED_GLOBALS}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(checkpoint_bytes))
    except Exception:  # noqa: BLE001 - only for the message
        return []
    return [name for name in found if name not in allowed]
