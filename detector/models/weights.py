"""Loading backbone weights: a local state-dict file, or a torchvision weights name.

Why not `torchvision.models.resnet18(weights=...)`: that downloads silently, and this
project must never download anything the user did not ask for. We always build with
`weights=None` and load the state dict ourselves, strictly, so a file for the wrong
architecture fails loudly with the keys that do not match instead of training on
half-random weights.
"""

from __future__ import annotations

import os

import torch
from torch import nn


def _unwrap(state: object, path: str) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or one wrapped as {"state_dict": ...} / {"model": ...}."""
    if isinstance(state, dict) and len(state) == 1:
        (key,) = state.keys()
        if key in ("state_dict", "model") and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"weights file {path!r} does not hold a state dict (a dict of tensors); got {type(state).__name__}"
        )
    return state


def _show(keys: list[str]) -> str:
    if not keys:
        return "none"
    return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")


def check_state_dict(reference: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise ValueError unless `state` has exactly `reference`'s keys and shapes.

    `reference` may live on the meta device (no memory, no init), which is how VGG16's
    120M-parameter classifier is checked without ever being built for real.
    """
    expected = reference.state_dict()
    # `num_batches_tracked` never counts: FrozenBatchNorm2d has none, and torchvision's
    # older checkpoints (resnet18-f37072fd.pth) predate it; BatchNorm fills it in itself.
    unexpected = [k for k in state if k not in expected and not k.endswith("num_batches_tracked")]
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"weights from {source} do not fit {type(reference).__name__}: missing keys: {_show(missing)}; "
            f"unexpected keys: {_show(unexpected)}; wrong shapes: {_show(wrong)}. Pass the state dict of the "
            "torchvision classification model of the same architecture (e.g. resnet18-f37072fd.pth for resnet18)."
        )


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(state)` after `check_state_dict`, so a mismatch lists its keys."""
    check_state_dict(model, state, source)
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()}, strict=True)


def read_backbone_state(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """The state dict `weights` names for torchvision's `arch` classification model:
    a local file path, or a torchvision weights name ("DEFAULT", "IMAGENET1K_V1", ...).

    A weights name downloads through torchvision's cache only because the user asked for
    it; any failure (no network, refused download) becomes a RuntimeError telling the
    user to pass a local state-dict file instead.
    """
    if os.path.isfile(weights):
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:  # corrupt file, pickled module instead of a state dict, ...
            raise ValueError(f"could not read weights file {weights!r} as a state dict: {err}") from err
        return _unwrap(state, weights)

    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    try:
        entry = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except KeyError:
        names = ["DEFAULT"] + [w.name for w in enum]
        raise ValueError(f"weights={weights!r} is neither an existing file nor one of {names} for {arch}") from None
    try:
        return entry.get_state_dict(progress=False)
    except Exception as err:  # URLError, HTTPError, OSError, SSL errors ...
        raise RuntimeError(
            f"could not download torchvision weights {arch} {entry.name} from {entry.url} ({type(err).__name__}: {err}). "
            f"This machine may have no network access: download the file elsewhere and pass its local path as "
            f"weights='/path/to/{os.path.basename(entry.url)}'."
        ) from err


def load_backbone_weights(model: nn.Module, arch: str, weights: str) -> None:
    """Load `weights` (see `read_backbone_state`) into torchvision's `arch` model `model`."""
    load_state_dict_strict(model, read_backbone_state(arch, weights), f"{arch} weights {weights!r}")
