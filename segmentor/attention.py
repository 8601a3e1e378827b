"""Attention processors of the batched implementation: Q/K recording and injection, output modulation.

One ``EmerDiffAttnProcessor`` sits in every attention layer of the U-Net and reads a shared
``InjectionState`` that the denoising loop updates before each U-Net call. Injected queries and keys
are stored once (batch 1) and broadcast over the batch. Attention goes through the fused
``scaled_dot_product_attention``, which recomputes the (identical) map of every run of a batch, unless
``shared_maps`` asks for each map to be computed once per batch and applied to every run's values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


@dataclass
class InjectionState:
    record: bool = False  # store this run's Q and K per (layer, step): the reference run
    inject: bool = False  # use the stored Q and K instead of computing them: the modulated runs
    step: int = 0
    stored: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    modulation_layer: str = ""
    # (batch, tokens, 1) added to the modulation layer's output; None outside the modulated step.
    offset: torch.Tensor | None = None
    # RMS of the modulation layer's output at the first step of the recorded run (its activation scale);
    # a 0-d tensor, so recording it never waits for the device.
    output_rms: torch.Tensor | None = None
    # Injected runs compute softmax(QK^T) once per batch instead of once per run (same result).
    shared_maps: bool = False


class EmerDiffAttnProcessor:
    def __init__(self, name: str, state: InjectionState) -> None:
        self.name = name
        self.state = state

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **_kwargs) -> torch.Tensor:
        state = self.state
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attention_mask is not None:
            context_length = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, context_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)

        value = _split_heads(attn.to_v(context), attn.heads)
        if state.inject:
            query, key = state.stored[(self.name, state.step)]
            query = query.expand(batch, -1, -1, -1)
            key = key.expand(batch, -1, -1, -1)
        else:
            query = _split_heads(attn.to_q(hidden_states), attn.heads)
            key = _split_heads(attn.to_k(context), attn.heads)
            if attn.norm_q is not None:
                query = attn.norm_q(query)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            if state.record:
                state.stored[(self.name, state.step)] = (query[:1], key[:1])

        if state.inject and state.shared_maps and attention_mask is None:
            out = _shared_map_attention(query[0], key[0], value)
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[3]).to(value.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if state.record and state.step == 0 and self.name == state.modulation_layer:
            state.output_rms = out.float().square().mean().sqrt()
        if state.offset is not None and self.name == state.modulation_layer:
            # The paper's modulation: after the output projection, before the block's residual add.
            out = out + state.offset.to(out.dtype)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _shared_map_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V with one (heads, N, M) map for every run: (B, heads, N, d_v).

    The runs' values are folded into one (heads, M, B * d_v) matrix so the map is read in one batched
    matmul and never copied per run.
    """
    weights = torch.softmax((query.float() @ key.float().transpose(-1, -2)) * query.shape[-1] ** -0.5, dim=-1)
    batch, heads, tokens, width = value.shape
    folded = value.permute(1, 2, 0, 3).reshape(heads, tokens, batch * width)
    out = weights.to(value.dtype) @ folded
    return out.view(heads, -1, batch, width).permute(2, 0, 1, 3)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, inner = x.shape
    return x.view(batch, tokens, heads, inner // heads).transpose(1, 2)


def install_state(layer_names: list[str], state: InjectionState) -> dict[str, EmerDiffAttnProcessor]:
    """Processors for ``unet.set_attn_processor``, one per attention layer, sharing ``state``."""
    return {f"{name}.processor": EmerDiffAttnProcessor(name, state) for name in layer_names}
