"""Content (perceptual) and texture (Gram/style) losses on frozen VGG19 features.

* :class:`PerceptualLoss`: distance between VGG19 feature maps of SR and GT (Johnson et al.,
  ECCV 2016; SRGAN, Ledig et al., CVPR 2017). ESRGAN (Wang et al., ECCV-W 2018) uses the
  features of ``conv5_4`` *before* the activation, which keeps more signal than after the ReLU.
  ESRGAN's generator objective is ``1.0 * perceptual(l1, conv5_4) + 0.005 * gan + 0.01 * l1``,
  i.e. ``loss=perceptual+gan+l1`` with ``l1.weight=0.01``.
* :class:`StyleLoss`: distance between Gram matrices of the feature maps (Gatys et al., CVPR
  2016), used as a texture loss by EnhanceNet (Sajjadi et al., ICCV 2017). ``patch_size``
  computes it per image tile, as EnhanceNet does, so textures are matched locally.

Layers are named after the VGG paper: ``convX_Y`` is the output of the Y-th convolution of block
X (before its ReLU), ``reluX_Y`` the same after the ReLU, ``poolX`` the max-pool closing block X.

The ImageNet weights come from torchvision's ``vgg19-dcbb9e9d.pth`` in the torch hub cache
(``torch.hub.get_dir()/checkpoints``). Nothing is ever downloaded: a missing file raises
:class:`~sr_cli.errors.WeightsUnavailableError` when the loss is built, before training starts.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import torch
import torchvision
from torch import Tensor, nn

from sr_cli.errors import CheckpointError, ConfigError, WeightsUnavailableError
from sr_cli.losses.base import LossInputs, LossTerm, check_same_shape
from sr_cli.losses.pixel import DISTANCES, check_distance

#: torchvision's ImageNet VGG19 (without batch norm).
VGG19_URL = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
VGG19_FILE = VGG19_URL.rsplit("/", 1)[-1]  # vgg19-dcbb9e9d.pth

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WEIGHTS = ("imagenet", "random")


def _vgg19_skeleton() -> nn.Sequential:
    """torchvision's VGG19 ``features`` on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return torchvision.models.vgg19(weights=None).features


def _layer_names(features: nn.Sequential) -> list[str]:
    names, block, conv = [], 1, 0
    for module in features:
        if isinstance(module, nn.Conv2d):
            conv += 1
            names.append(f"conv{block}_{conv}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{conv}")
        elif isinstance(module, nn.MaxPool2d):
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:  # pragma: no cover - torchvision's VGG has nothing else
            raise TypeError(f"unexpected VGG layer {module}")
    return names


#: Every layer name of VGG19, in order (``conv1_1``, ``relu1_1``, ..., ``relu5_4``, ``pool5``).
VGG19_LAYERS: tuple[str, ...] = tuple(_layer_names(_vgg19_skeleton()))


def vgg19_weights_path() -> str:
    """Where torchvision caches the VGG19 weights: ``<torch.hub.get_dir()>/checkpoints/vgg19-dcbb9e9d.pth``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", VGG19_FILE)


def load_vgg19_state_dict() -> dict[str, Tensor]:
    """The cached torchvision VGG19 state dict, without downloading anything.

    Raises:
        WeightsUnavailableError: the file is not in the hub cache (message says where to put it).
        CheckpointError: the file exists but cannot be read as a VGG19 state dict.
    """
    path = vgg19_weights_path()
    folder = os.path.dirname(path)
    if not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"The VGG19 weights for the perceptual/texture loss are not cached: {VGG19_FILE} was not "
            f"found in {folder}. sr-cli never downloads during training. Download {VGG19_URL} on a "
            f"machine with internet access and copy it to {path} (the folder is "
            "torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another cache), or pick a loss "
            "that needs no pretrained network."
        )
    try:
        try:  # memory-mapped: only the convolution weights are read from disk
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files in the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure means an unusable file
        raise CheckpointError(
            f"Cannot read the VGG19 weights {path}: {err}. Delete the file and copy a fresh one "
            f"from {VGG19_URL}."
        ) from err
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} is not a state dict; copy a fresh one from {VGG19_URL}.")
    return {k: v for k, v in state.items() if k.startswith("features.")}


def _drop_from_state_dict(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]


def _fill_missing_on_load(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    for name, tensor in module.features.state_dict().items():
        state_dict.setdefault(f"{prefix}features.{name}", tensor)


class VGGFeatureExtractor(nn.Module):
    """Frozen torchvision VGG19 returning the feature maps of named layers.

    Inputs in ``[0, 1]`` are normalized with the ImageNet mean and std. The network is cut after
    the deepest requested layer and its ReLUs are made out-of-place, so a ``convX_Y`` feature is
    truly taken before its activation. The weights come from the hub cache, so they are left out
    of ``state_dict()`` (a trainer checkpoint holding a perceptual term stays small; loading a
    checkpoint that does contain them still works, strict or not).

    Args:
        layers: names of the layers to return (see :data:`VGG19_LAYERS`).
        weights: ``imagenet`` (cached torchvision weights) or ``random`` (tests only: the features
            mean nothing, and a ``UserWarning`` says so).
        normalize: apply the ImageNet normalization (set False for inputs already normalized).

    Shape:
        ``(B, 3, H, W)`` (or ``(B, 1, H, W)``, repeated to RGB) -> ``{name: (B, C_l, H_l, W_l)}``.

    Example:
        >>> extractor = VGGFeatureExtractor(["relu2_2", "conv5_4"])  # doctest: +SKIP
        >>> extractor(torch.rand(1, 3, 64, 64))["conv5_4"].shape  # doctest: +SKIP
        torch.Size([1, 512, 4, 4])
    """

    def __init__(
        self, layers: list[str] | tuple[str, ...], weights: str = "imagenet", normalize: bool = True
    ) -> None:
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ConfigError("VGGFeatureExtractor needs at least one layer name, e.g. ['conv5_4']")
        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if unknown:
            raise ConfigError(
                f"unknown VGG19 layer(s) {unknown}; use names like conv5_4 (before the ReLU) or "
                f"relu5_4 (after). Valid: {', '.join(VGG19_LAYERS)}"
            )
        if weights not in WEIGHTS:
            raise ConfigError(f"VGG weights must be one of {WEIGHTS}, got {weights!r}")
        self.layers = layers
        self.weights = weights
        self.normalize = normalize
        self.indices = {name: VGG19_LAYERS.index(name) for name in layers}
        last = max(self.indices.values())
        # Number of 2x poolings before the deepest layer: inputs must survive them.
        self.num_pools = sum(name.startswith("pool") for name in VGG19_LAYERS[:last])

        state = load_vgg19_state_dict() if weights == "imagenet" else None
        features = _vgg19_skeleton()[: last + 1].to_empty(device="cpu")
        for module in features:
            if isinstance(module, nn.ReLU):
                module.inplace = False
        if state is None:
            warnings.warn(
                "VGGFeatureExtractor uses RANDOM weights: perceptual/texture losses computed with it "
                "are meaningless. weights='random' exists for tests only; use weights='imagenet'.",
                UserWarning,
                stacklevel=2,
            )
            for module in features:
                if isinstance(module, nn.Conv2d):  # torchvision's VGG init
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(module.bias)
        else:
            try:
                picked = {k: state[f"features.{k}"] for k in features.state_dict()}
                features.load_state_dict(picked, strict=True)
            except (KeyError, RuntimeError) as err:
                raise CheckpointError(
                    f"{vgg19_weights_path()} does not hold torchvision VGG19 weights ({err}). "
                    f"Replace it with {VGG19_URL}."
                ) from err
        self.features = features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_state_dict_post_hook(_drop_from_state_dict)
        self.register_load_state_dict_pre_hook(_fill_missing_on_load)

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        """Always stays in eval mode (it is frozen)."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"VGGFeatureExtractor expects (B, 3, H, W) images, got {tuple(x.shape)}"
            )
        min_side = 2**self.num_pools
        if min(x.shape[-2:]) < min_side:
            raise ValueError(
                f"VGGFeatureExtractor: layer(s) {self.layers} need images of at least "
                f"{min_side}x{min_side}, got {x.shape[-2]}x{x.shape[-1]}"
            )
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted = {index: name for name, index in self.indices.items()}
        out = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x
        return out

    def extra_repr(self) -> str:
        return f"layers={self.layers}, weights={self.weights}"


def _check_layer_weights(layer_weights: Mapping[str, float], owner: str) -> dict[str, float]:
    if not isinstance(layer_weights, Mapping) or not layer_weights:
        raise ConfigError(
            f"{owner}.layer_weights must be a non-empty mapping like {{conv5_4: 1.0}}"
        )
    return {str(k): float(v) for k, v in layer_weights.items()}


def perceptual_loss(
    pred_features: Mapping[str, Tensor],
    target_features: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    distance: str = "l1",
) -> Tensor:
    """``sum_l w_l * d(phi_l(pred), phi_l(target))`` over precomputed feature maps.

    Args:
        pred_features, target_features: ``{layer: feature map}`` (e.g. from
            :class:`VGGFeatureExtractor`); the target's should be detached.
        layer_weights: ``{layer: weight}``.
        distance: ``l1`` or ``l2`` (mean over elements).

    Example:
        >>> f = {"conv5_4": torch.ones(1, 2, 2, 2)}
        >>> perceptual_loss(f, {"conv5_4": torch.zeros(1, 2, 2, 2)}, {"conv5_4": 0.5})
        tensor(0.5000)
    """
    check_distance(distance, "perceptual_loss")
    dist = DISTANCES[distance]
    terms = []
    for name, w in layer_weights.items():
        if name not in pred_features or name not in target_features:
            raise ValueError(f"perceptual_loss: no features for layer {name!r}")
        terms.append(w * dist(pred_features[name], target_features[name]))
    return torch.stack(terms).sum()


class PerceptualLoss(LossTerm):
    """Feature (content) loss between SR and GT on frozen VGG19 features.

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm` (ESRGAN: weight 1.0).
        layer_weights: ``{layer: weight}``; ESRGAN uses ``{conv5_4: 1.0}`` (before the ReLU),
            SRGAN ``{relu5_4: 1.0}`` (after it, there with ``l2`` and a 1/12.75 rescale).
        distance: ``l1`` (ESRGAN) or ``l2``.
        weights: ``imagenet`` or ``random`` (tests only).

    Shape:
        ``inputs.sr``, ``inputs.gt``: ``(B, 3, H, W)`` in ``[0, 1]``.
    """

    def __init__(
        self,
        weight: float = 1.0,
        start_step: int = 0,
        layer_weights: Mapping[str, float] | None = None,
        distance: str = "l1",
        weights: str = "imagenet",
    ) -> None:
        super().__init__(weight, start_step)
        self.layer_weights = _check_layer_weights(
            {"conv5_4": 1.0} if layer_weights is None else layer_weights, "perceptual"
        )
        self.distance = check_distance(distance, "perceptual")
        self.vgg = VGGFeatureExtractor(list(self.layer_weights), weights=weights)

    def compute(self, inputs: LossInputs) -> Tensor:
        check_same_shape(inputs.sr, inputs.gt, "PerceptualLoss")
        pred = self.vgg(inputs.sr)
        with torch.no_grad():
            target = self.vgg(inputs.gt.detach())
        return perceptual_loss(pred, target, self.layer_weights, self.distance)

    def extra_repr(self) -> str:
        return (
            f"layer_weights={self.layer_weights}, distance={self.distance}, " + super().extra_repr()
        )


def gram_matrix(features: Tensor) -> Tensor:
    """Normalized Gram matrix ``F F^T / (C H W)`` of each feature map.

    Shape:
        ``(B, C, H, W) -> (B, C, C)``.

    Example:
        >>> gram_matrix(torch.ones(1, 2, 2, 2))
        tensor([[[0.5000, 0.5000],
                 [0.5000, 0.5000]]])
    """
    if features.dim() != 4:
        raise ValueError(f"gram_matrix expects (B, C, H, W), got {tuple(features.shape)}")
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(
    pred_features: Mapping[str, Tensor],
    target_features: Mapping[str, Tensor],
    layer_weights: Mapping[str, float],
    distance: str = "l2",
) -> Tensor:
    """``sum_l w_l * d(G(phi_l(pred)), G(phi_l(target)))`` with ``G`` the :func:`gram_matrix`.

    Example:
        >>> f = {"relu1_1": torch.ones(1, 2, 2, 2)}
        >>> style_loss(f, {"relu1_1": torch.zeros(1, 2, 2, 2)}, {"relu1_1": 1.0})
        tensor(0.2500)
    """
    check_distance(distance, "style_loss")
    dist = DISTANCES[distance]
    terms = []
    for name, w in layer_weights.items():
        if name not in pred_features or name not in target_features:
            raise ValueError(f"style_loss: no features for layer {name!r}")
        gram_pred = gram_matrix(pred_features[name])
        gram_target = gram_matrix(target_features[name])
        terms.append(w * dist(gram_pred, gram_target))
    return torch.stack(terms).sum()


def _to_patches(x: Tensor, patch_size: int) -> Tensor:
    """Non-overlapping ``patch_size`` tiles as a batch (a remainder at the border is dropped)."""
    b, c, h, w = x.shape
    if h < patch_size or w < patch_size:
        raise ValueError(f"texture patch_size {patch_size} exceeds the image size {h}x{w}")
    tiles = x.unfold(2, patch_size, patch_size).unfold(3, patch_size, patch_size)
    return tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, patch_size, patch_size)


class StyleLoss(LossTerm):
    """Texture (Gram-matrix) loss between SR and GT on frozen VGG19 features.

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm`.
        layer_weights: ``{layer: weight}``; Gatys et al. use ``relu1_1 ... relu5_1``, EnhanceNet
            the first convolutions of blocks 1-3.
        distance: ``l2`` (Gatys) or ``l1``.
        patch_size: if set, compare the textures of non-overlapping image tiles of this size
            (EnhanceNet: 16) instead of whole images.
        weights: ``imagenet`` or ``random`` (tests only).

    Shape:
        ``inputs.sr``, ``inputs.gt``: ``(B, 3, H, W)`` in ``[0, 1]``.
    """

    def __init__(
        self,
        weight: float = 1.0,
        start_step: int = 0,
        layer_weights: Mapping[str, float] | None = None,
        distance: str = "l2",
        patch_size: int | None = None,
        weights: str = "imagenet",
    ) -> None:
        super().__init__(weight, start_step)
        default = {f"relu{i}_1": 1.0 for i in range(1, 6)}
        self.layer_weights = _check_layer_weights(
            default if layer_weights is None else layer_weights, "texture"
        )
        self.distance = check_distance(distance, "texture")
        if patch_size is not None and patch_size < 1:
            raise ConfigError(
                f"texture.patch_size must be a positive integer or null, got {patch_size}"
            )
        self.patch_size = patch_size
        self.vgg = VGGFeatureExtractor(list(self.layer_weights), weights=weights)

    def compute(self, inputs: LossInputs) -> Tensor:
        check_same_shape(inputs.sr, inputs.gt, "StyleLoss")
        sr, gt = inputs.sr, inputs.gt.detach()
        if self.patch_size is not None:
            sr, gt = _to_patches(sr, self.patch_size), _to_patches(gt, self.patch_size)
        pred = self.vgg(sr)
        with torch.no_grad():
            target = self.vgg(gt)
        return style_loss(pred, target, self.layer_weights, self.distance)

    def extra_repr(self) -> str:
        return (
            f"layer_weights={self.layer_weights}, distance={self.distance}, "
            f"patch_size={self.patch_size}, " + super().extra_repr()
        )
