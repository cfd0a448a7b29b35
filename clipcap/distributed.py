# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""What data-parallel training (DDP through accelerate) needs beyond what the `Trainer` does for it.

* `broadcast_buffers`: DDP keeps the *parameters* of every process equal (it averages the gradients), but not the
  BatchNorm running statistics: each process updates its own on its own batch in every training forward. DDP's
  `broadcast_buffers` copies rank 0's buffers to the others at the start of each forward, so the training itself is
  rank 0's; but after the last step every process holds different statistics, so an evaluation sharded over processes
  would caption each shard with a different model, none of them the one rank 0 saves. Broadcasting rank 0's buffers
  before every evaluation and save (as timm's `distribute_bn(..., reduce=False)` does) makes every process hold
  exactly the saved model.
* `match_gradient_layouts`: the encoder runs on channels-last (NHWC) images, so autograd returns the gradients of 1x1
  and depthwise convolution weights in channels-last strides. For those shapes NCHW and NHWC are the same memory (the
  strides differ only on dimensions of size 1), so autograd keeps them, but DDP compares the strides of each gradient
  with those of its bucket view (made from the parameter's) and warns "Grad strides do not match bucket view
  strides". Giving those parameters the channels-last strides their gradients come with moves no data and removes
  the warning; the real NCHW/NHWC mismatches, where the layouts differ in memory, autograd already resolves.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_buffers(model: nn.Module, src: int = 0) -> int:
    """Copy process `src`'s buffers (BatchNorm running statistics and counters) to every process, in place. Every
    process must call it. Returns the number of buffers sent (0 outside a process group of more than one)."""
    if world_size() == 1:
        return 0
    buffers = list(model.buffers())
    for buffer in buffers:
        dist.broadcast(buffer.data, src=src)
    return len(buffers)


def _channels_last_strides(shape: torch.Size) -> tuple[int, ...]:
    batch, channels, height, width = shape
    return (height * width * channels, 1, width * channels, channels)


def match_gradient_layouts(model: nn.Module) -> int:
    """Give each 4-D parameter whose NCHW and channels-last layouts are the same memory the channels-last strides
    (no data moves). Returns how many parameters were re-strided."""
    changed = 0
    for parameter in model.parameters():
        if parameter.ndim != 4 or not parameter.is_contiguous():
            continue
        strides = _channels_last_strides(parameter.shape)
        if parameter.stride() == strides:
            continue
        same_memory = all(size == 1 or a == b for size, a, b in zip(parameter.shape, parameter.stride(), strides))
        if same_memory:
            parameter.data = parameter.data.as_strided(parameter.shape, strides)
            changed += 1
    return changed
