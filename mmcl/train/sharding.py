"""Sharded training: parameters, gradients and optimizer state split over the processes (FSDP2,
``torch.distributed.fsdp.fully_shard``), turned on by ``train.sharding: fsdp``.

mmcl applies FSDP2 itself rather than through Accelerate's FSDP plugin: Accelerate only selects its
FSDP path on GPUs (``PartialState`` keeps ``MULTI_CPU`` for CPU processes, whatever the launch
config says), so the plugin cannot be tested without a GPU, while ``fully_shard`` runs on CPU with
gloo. One code path on CPU and GPU means the path the tests run is the path that trains on GPUs.
Accelerate still starts the processes and provides autocast, ``backward``, ``reduce`` and logging;
the model is not passed to ``accelerator.prepare`` (that would wrap it in DDP).

What is sharded (:func:`shard_units`): each tower's repeated blocks (a ViT's ``blocks``, a BERT's
``encoder.layer``, a ResNet's ``layerN`` stages, a ConvNeXt's ``stages``) as one FSDP unit each,
then each tower (its stem, embeddings and final norm), then the root (projection heads). The
logit scale and bias are scalars, which FSDP2 cannot shard: they stay whole on every process
(``ignored_params``) and their gradients are averaged over the processes by a hook, as DDP does.

Checkpoints (:mod:`.state`): the full weights are gathered to the main process (CPU) into
``model.safetensors``, so export and evaluation read a sharded run like any other; the optimizer
state is written by every process as its own shard with ``torch.distributed.checkpoint`` (DCP) into
``optimizer/``: no process ever holds the whole optimizer state (2x the parameters in fp32 for
AdamW), and DCP re-shards it on load for any number of processes, one included.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError

# containers whose children are a tower's repeated blocks (timm ViT/EVA ``blocks``, HF BERT/RoBERTa
# ``encoder.layer``, GPT-style ``h``/``layers``, timm ConvNeXt/Swin/... ``stages``)
_BLOCK_LISTS = {"blocks", "layer", "layers", "h", "stages", "resblocks"}  # resblocks: open_clip's transformers
_STAGE = re.compile(r"layer\d+$")  # timm ResNet stages: layer1 .. layer4


def sharding_on(recipe, num_processes: int) -> bool:
    """Whether this run shards: ``train.sharding: fsdp`` and more than one process."""
    return recipe.train.sharding == "fsdp" and num_processes > 1


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_units(tower: nn.Module) -> list[nn.Module]:
    """The modules of ``tower`` that become FSDP units of their own: its repeated blocks (children
    of a ``blocks``/``layer``/``layers``/``h``/``stages`` list) and ResNet stages (``layerN``). The
    outermost match wins (a ConvNeXt stage is one unit, not its blocks)."""
    units, taken = [], []
    for name, module in tower.named_modules():
        if any(name.startswith(prefix) for prefix in taken):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _BLOCK_LISTS and isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 0:
            units.extend(module)
            taken.append(name + ".")
        elif _STAGE.match(leaf) and isinstance(module, nn.Sequential):
            units.append(module)
            taken.append(name + ".")
    return units


def towers(model: nn.Module) -> list[nn.Module]:
    """The towers of a dual encoder (vision, text), an image encoder (vision, vision2), or a library's
    model (its wrapper's ``towers()``: open_clip's visual and text transformer, HF CLIP's models)."""
    if callable(getattr(model, "towers", None)):
        return list(model.towers())
    return [m for name in ("vision", "text", "vision2") if isinstance(m := getattr(model, name, None), nn.Module)]


def _broadcast_from_main(model: nn.Module) -> None:
    """Every process starts from the main process's weights and buffers (DDP does the same when it
    wraps a model; ``fully_shard`` keeps each process's own slice of its own copy)."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def _average_grad(world_size: int):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad / world_size
        dist.all_reduce(grad)
        return grad

    return hook


def shard_model(model: nn.Module, recipe, device: torch.device, num_processes: int) -> nn.Module:
    """Apply FSDP2 to ``model`` in place (see the module docstring) and return it."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    t = recipe.train
    # a tower's output may be a view (a ViT's class token); mmcl never changes one in place
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    model.to(device)
    _broadcast_from_main(model)
    mesh = init_device_mesh(device.type, (num_processes,))
    # bf16: the towers compute in bf16 from sharded fp32 weights; gradients are reduced in fp32
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if t.precision == "bf16" else None
    kwargs = {"mesh": mesh, **({"mp_policy": mp} if mp is not None else {})}
    for tower in towers(model):
        for unit in shard_units(tower):
            fully_shard(unit, reshard_after_forward=t.reshard_after_forward, **kwargs)
        fully_shard(tower, reshard_after_forward=t.reshard_after_forward, **kwargs)
    # scalars (logit scale and bias) cannot be sharded: whole on every process, gradients averaged
    scalars = {p for p in model.parameters() if p.ndim == 0}
    # the root (projection heads) is needed again as soon as backward starts: keep it gathered
    fully_shard(model, reshard_after_forward=False, ignored_params=scalars, **kwargs)
    for p in scalars:
        if p.requires_grad:
            p.register_hook(_average_grad(num_processes))
    return model


def split_param_groups(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer with each parameter group split into its sharded (DTensor) and whole
    parameters: the fused and foreach kernels take one kind of tensor per call."""
    from torch.distributed.tensor import DTensor

    groups = []
    for group in optimizer.param_groups:
        for sharded in (True, False):
            params = [p for p in group["params"] if isinstance(p, DTensor) == sharded]
            if params:
                groups.append({**group, "params": params})
    optimizer.param_groups = groups  # no state yet; every group already holds all its options
    return optimizer


# -- checkpoints ---------------------------------------------------------------------------------


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole weights of a sharded model on the main process's CPU (empty elsewhere); every
    process takes part. Gathered one parameter at a time, so no device holds a second copy."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # a parameter smaller than the processes (e.g. a ViT's (1, 1, D) class token) comes back as a view
    # of a padded buffer; safetensors writes only tensors that own their storage
    for name, t in state.items():
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            state[name] = t.clone()
    return state


def load_full_weights(model: nn.Module, path: Path, is_main: bool) -> None:
    """Load a whole-weights file into a sharded model: the main process reads it (a bad file is
    refused in one line) and sends each process its slices."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from ..weights import load_safetensors

    state = load_safetensors(path) if is_main else {}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True)
    set_model_state_dict(model, state, options=options)


def _optimizer(optimizer):
    """The torch optimizer inside Accelerate's wrapper, if any."""
    return getattr(optimizer, "optimizer", optimizer)


def save_sharded_optimizer(model: nn.Module, optimizer, folder: Path) -> None:
    """Every process writes its shard of the optimizer state (keyed by parameter name) into
    ``folder`` with torch.distributed.checkpoint; a collective call."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, _optimizer(optimizer))["state"]
    dcp.save({"state": state}, checkpoint_id=str(folder))


def load_sharded_optimizer(model: nn.Module, optimizer, folder: Path) -> None:
    """Load an ``optimizer/`` folder (:func:`save_sharded_optimizer`) into ``optimizer``, re-sharded
    for this run's processes, sharded or not. Only the per-parameter state is read: the groups'
    hyperparameters come from the recipe and the learning rate from the scheduler."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    opt = _optimizer(optimizer)
    current = get_optimizer_state_dict(model, opt)  # allocates the state to read into
    alone = not (dist.is_available() and dist.is_initialized())  # one process without a process group
    dcp.load({"state": current["state"]}, checkpoint_id=str(folder), no_dist=alone)
    set_optimizer_state_dict(model, opt, current)


def load_whole_optimizer(model: nn.Module, optimizer, saved: dict, names: list[str]) -> None:
    """Load the optimizer state of an unsharded run (``torch.optim`` keys state by position in
    its groups; ``names`` are the parameter names in that order) into a sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    opt = _optimizer(optimizer)
    order = [i for group in saved["param_groups"] for i in group["params"]]
    if len(order) != len(names):
        raise ConfigError(f"the checkpoint's optimizer holds {len(order)} parameters, this model trains {len(names)}")
    state = {names[k]: saved["state"][i] for k, i in enumerate(order) if i in saved["state"]}
    groups = get_optimizer_state_dict(model, opt)["param_groups"]
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, opt, {"state": state, "param_groups": groups}, options=options)


def fit_scheduler_state(state: dict, n_groups: int) -> dict:
    """A scheduler state saved with another number of parameter groups (a sharded run splits each
    group in two), for ``n_groups``; mmcl's groups share one base learning rate and schedule."""
    out = dict(state)
    for key, value in state.items():
        if isinstance(value, list) and value and len(value) != n_groups:
            if any(v != value[0] for v in value):
                raise ConfigError(f"cannot map the scheduler's {key} over {n_groups} parameter groups: {value}")
            out[key] = [value[0]] * n_groups
    return out


# -- evaluation ----------------------------------------------------------------------------------


def whole_copy(trainer) -> nn.Module | None:
    """A whole (unsharded) copy of a sharded model on the main process, for evaluation; None on
    the other processes and for an unsharded model. Every process takes part (the gather)."""
    if not is_sharded(trainer.model):
        return None
    import copy

    from ..models import create_model
    from .checkpoint import rng_state, set_rng_state

    state = full_state_dict(trainer.model)
    if not trainer.accelerator.is_main_process:
        return None
    cfg = copy.deepcopy(trainer.recipe.model)  # the weights come from the gather: read no file
    cfg.vision.weights, cfg.init_from = None, None
    rng = rng_state()  # building initialises weights: training's RNG streams must not move
    try:
        whole = create_model(cfg, text_config=trainer.text_config)
    finally:
        set_rng_state(rng)
    whole.load_state_dict(state, strict=True)
    # buffers that checkpoints do not hold (e.g. position ids) are whole in the sharded model
    persistent = set(state)
    with torch.no_grad():
        for name, buf in trainer.unwrapped.named_buffers():
            if name not in persistent:
                whole.get_buffer(name).copy_(buf)
    return whole.to(trainer.accelerator.device)
