"""Fully sharded data parallel training (FSDP2, ``[resources] strategy = "fsdp"``): sharding and full state dicts.

Under DDP every rank holds the whole model, its gradients and both AdamW moments; under FSDP each rank
holds 1/N of each, and a layer's full weights exist only while that layer runs (all-gathered before its
forward and again for its backward, then freed). The loop's math does not change: gradients are
SUMMED across ranks, because every micro-batch loss is already divided by the whole global step's
example count (``hps_core.train.loop``), so the applied update is the single-process one.

Layout (:func:`shard`): one FSDP group per decoder layer, then one root group over the module that runs
``loss_fn(model, micro_batch)`` (the loop's loss module). The root group holds everything outside the
layers: the embeddings, the final norm and the LM head. That matters twice:
- ``response_logps`` calls the backbone and the LM head directly, not the model's own forward, so no
  pre-forward hook of the model or its backbone would run; the loss module's forward wraps both calls, so
  its hook gathers the embeddings, norm and head for the whole loss computation (the layers gather
  themselves when the backbone calls them).
- a tied LM head is the embedding's tensor. Sharding the backbone as its own group would shard the
  embedding there and leave the head a second, untied copy in the root group; in one group FSDP keeps
  one sharded parameter under both names.

The final model is consolidated (:func:`full_model_state`): every rank takes part in the gather, rank 0
writes the usual Hugging Face directory. In-training checkpoints are sharded instead
(``hps_core.train.sharded_checkpoint``, ``torch.distributed.checkpoint``): each rank writes
its own shards of the weights and AdamW moments, so rank 0 never holds the whole state; such a checkpoint
resumes with any number of processes, under either strategy, and ``consolidate_checkpoint`` turns it
into a Hugging Face directory. A consolidated checkpoint (one process, DDP) resumes under FSDP through
:func:`load_full_optimizer_state`; :func:`full_optimizer_state` is its inverse (gathers on rank 0).
"""

from __future__ import annotations

import torch

from hps_core.train.lora import is_peft_model


def _decoder_layers(model) -> torch.nn.ModuleList:
    """The backbone's list of decoder layers (``model.layers`` of Llama, Qwen, Mistral, Gemma, ...)."""
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        raise TypeError(f"{type(model).__name__}: no decoder layers at <backbone>.layers to shard; "
                        "use [resources] strategy = \"ddp\" for this model")
    return layers


def shard(root: torch.nn.Module, model) -> torch.nn.Module:
    """Shard ``model`` (a submodule of ``root``, the loop's loss module) across the process group: each
    decoder layer, then ``root``. Returns ``root``, now an FSDP module whose calls gather what they need.

    On a bf16 GPU the gathered weights are bf16 and gradients are reduced in fp32 (the sharded master
    weights and AdamW state stay fp32, as under DDP); on CPU everything is fp32."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    from hps_core.train.model_setup import compute_dtype

    if is_peft_model(model):  # only the small adapters train: nothing worth sharding, and peft wraps the layers
        raise ValueError("[resources] strategy = \"fsdp\" shards full fine-tunes only; LoRA trains with \"ddp\"")
    bf16 = next(model.parameters()).device.type == "cuda" and compute_dtype(model) == torch.bfloat16
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    for layer in _decoder_layers(model):
        fully_shard(layer, mp_policy=policy)
    fully_shard(root, mp_policy=policy)
    for module in root.modules():
        if isinstance(module, FSDPModule):
            # SUM, not FSDP's default mean over ranks (see the module docstring). A divide factor of 1 alone
            # would use NCCL's PreMulSum, which gloo lacks; forcing sum reductions gives a plain SUM on both.
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return root


def set_gradient_sync(root, enabled: bool) -> None:
    """Reduce-scatter gradients after this backward (the last micro-batch of a step) or only accumulate
    them locally (the others): FSDP's counterpart of DDP's ``no_sync``."""
    root.set_requires_gradient_sync(enabled)


def is_sharded(model) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (a collective: every rank calls it), anything else as it is. The grad norm
    of sharded gradients comes back as a DTensor."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _without_tied_aliases(model, state: dict) -> dict:
    """Drop the second name of a tied tensor (``lm_head.weight`` of a tied head), as ``save_pretrained``
    does for a live model: the gathered copies no longer share storage, so it cannot see the tie itself."""
    first: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        first.setdefault(id(param), name)
    aliases = {name for name, param in model.named_parameters(remove_duplicate=False) if first[id(param)] != name}
    return {k: v for k, v in state.items() if k not in aliases}


def full_model_state(model) -> dict[str, torch.Tensor] | None:
    """The whole model's state dict, gathered on CPU on rank 0 (other ranks get ``{}``); every rank must
    call it. ``None`` when the model is not sharded (nothing to gather: save the live model)."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return _without_tied_aliases(model, state)


def _param_order(model, optimizer) -> list[str]:
    """Parameter names in the optimizer's order: what ``optimizer.state_dict()`` numbers 0, 1, 2, ..."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(model, optimizer) -> dict:
    """The optimizer's state gathered on CPU on rank 0 (other ranks get ``{}``), in the layout of a
    single process's ``optimizer.state_dict()`` (parameters numbered in the optimizer's order), so the
    trainer state a sharded run writes is the one an unsharded run writes. Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer,
                                       options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not by_name:
        return {}
    index = {name: i for i, name in enumerate(_param_order(model, optimizer))}
    return {
        "state": {index[name]: value for name, value in by_name["state"].items()},
        "param_groups": [{**g, "params": [index[name] for name in g["params"]]} for g in by_name["param_groups"]],
    }


def load_full_optimizer_state(model, optimizer, state: dict) -> None:
    """Load a single-process layout optimizer state (every rank passes the whole of it) into the
    optimizer of the sharded ``model``: each rank keeps its shard of every moment."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    order = _param_order(model, optimizer)
    by_name = {
        "state": {order[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [{**g, "params": [order[int(i)] for i in g["params"]]} for g in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, optim_state_dict=by_name, options=StateDictOptions(full_state_dict=True))
