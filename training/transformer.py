"""Transformers from scratch (pre-LayerNorm, learned positions): encoder-only classifier, encoder-decoder
and decoder-only language model. Written out rather than nn.Transformer so that every op exports to
ONNX with dynamic batch and sequence axes (no fused fast paths)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

NEG = -1e9  # additive mask value: exp underflows to exactly 0 without inf - inf = NaN


@dataclass
class TransformerConfig:
    d_model: int = 64
    heads: int = 4
    layers: int = 2  # per stack (encoder and decoder each, for seq2seq)
    d_ff: int = 128
    dropout: float = 0.1
    max_len: int = 64  # positional table size = the longest sequence the graph takes
    vocab: int = 0  # text models
    n_inputs: int = 8  # classifier: features per step
    n_classes: int = 10  # classifier
    max_target_len: int = 16  # seq2seq decoder positions
    pad_id: int = 0  # seq2seq source padding


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, t, c = x.shape  # [B, T, C]
        src = x if memory is None else memory  # [B, S, C]
        s = src.shape[1]
        q = self.q(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)  # [B, h, T, hd]
        k, v = self.kv(src).split(c, dim=2)
        k = k.view(b, s, self.heads, c // self.heads).transpose(1, 2)  # [B, h, S, hd]
        v = v.view(b, s, self.heads, c // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / (c // self.heads) ** 0.5)  # [B, h, T, S]
        if mask is not None:
            att = att + mask  # additive, broadcast from [B|1, 1, T|1, S]
        att = self.drop(functional.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, c)  # [B, T, C]
        return self.proj(y)


class Block(nn.Module):
    """Pre-LN block: self-attention, optional cross-attention, feed-forward; residual around each."""

    def __init__(self, cfg: TransformerConfig, cross: bool = False) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.cross = Attention(cfg) if cross else None
        self.ln_cross = nn.LayerNorm(cfg.d_model) if cross else None
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff),
            nn.GELU(),
            nn.Linear(cfg.d_ff, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask=mask))  # [B, T, C]
        if self.cross is not None and self.ln_cross is not None:
            x = x + self.drop(self.cross(self.ln_cross(x), memory=memory, mask=memory_mask))
        return x + self.ff(self.ln2(x))


def causal_mask(t: int, device: torch.device) -> torch.Tensor:
    """[1, 1, T, T] additive mask: position i sees positions <= i."""
    pos = torch.arange(t, device=device)
    keep = pos[None, :] <= pos[:, None]
    return torch.where(keep, 0.0, NEG)[None, None]


def init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases. PyTorch's default N(0, 1) embedding,
    tied to the output head, would start with huge logits and learn very slowly."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


class TransformerClassifier(nn.Module):
    """Encoder-only: each step (a row of 8 pixels) is a token; mean-pool, then a linear head."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.n_inputs, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.embed(x) + self.pos[:t]  # [B, T, 8] -> [B, T, C]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h).mean(dim=1))  # [B, C] -> [B, classes]


class GPT(nn.Module):
    """Decoder-only character language model; logits for the next token at every position."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * 0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        init_weights(self)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        h = self.drop(self.tok(input_ids) + self.pos[:t])  # [B, T] -> [B, T, C]
        mask = causal_mask(t, input_ids.device)
        for block in self.blocks:
            h = block(h, mask=mask)
        return self.head(self.ln(h))  # [B, T, vocab]


class Seq2Seq(nn.Module):
    """Encoder-decoder: the decoder attends causally to itself and fully to the (unpadded) source."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos_src = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * 0.02)
        self.pos_tgt = nn.Parameter(torch.randn(cfg.max_target_len, cfg.d_model) * 0.02)
        self.encoder = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.decoder = nn.ModuleList(Block(cfg, cross=True) for _ in range(cfg.layers))
        self.ln_enc, self.ln_dec = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.head.weight = self.tok.weight
        init_weights(self)

    def forward(self, encoder_input_ids: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.decode(decoder_input_ids, *self.encode(encoder_input_ids))  # [B, T, vocab]

    def encode(self, encoder_input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = encoder_input_ids.shape[1]
        src_mask = torch.where(encoder_input_ids == self.cfg.pad_id, NEG, 0.0)[:, None, None, :]  # [B,1,1,S]
        mem = self.tok(encoder_input_ids) + self.pos_src[:s]  # [B, S, C]
        for block in self.encoder:
            mem = block(mem, mask=src_mask)
        return self.ln_enc(mem), src_mask

    def decode(
        self, decoder_input_ids: torch.Tensor, mem: torch.Tensor, src_mask: torch.Tensor
    ) -> torch.Tensor:
        t = decoder_input_ids.shape[1]
        h = self.tok(decoder_input_ids) + self.pos_tgt[:t]  # [B, T, C]
        mask = causal_mask(t, decoder_input_ids.device)
        for block in self.decoder:
            h = block(h, mask=mask, memory=mem, memory_mask=src_mask)
        return self.head(self.ln_dec(h))  # [B, T, vocab]


# KV-cache decoding (decoder_with_past.onnx, encoder.onnx). These functions and wrappers reuse the
# modules above, so the weights are shared, but they leave Attention/Block/GPT/Seq2Seq.forward and every
# line above as they are: the exporter records forward()'s source lines (file, line number, text) in
# model.onnx, which so stays byte for byte what it was.


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.view(b, t, heads, c // heads).transpose(1, 2)  # [B, T, C] -> [B, h, T, hd]


def attend_with_past(
    attn: Attention, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention.forward's self-attention over the cached keys/values [B, h, P, hd] and the new ones;
    also returns the present keys/values [B, h, P + T, hd] (the past, then the new tokens')."""
    b, t, c = x.shape
    q = split_heads(attn.q(x), attn.heads)  # [B, h, T, hd]
    k_new, v_new = attn.kv(x).split(c, dim=2)
    k = torch.cat([past_k, split_heads(k_new, attn.heads)], dim=2)  # [B, h, P + T, hd]
    v = torch.cat([past_v, split_heads(v_new, attn.heads)], dim=2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / (c // attn.heads) ** 0.5) + mask  # [B, h, T, P + T]
    att = attn.drop(functional.softmax(att, dim=-1))
    y = (att @ v).transpose(1, 2).reshape(b, t, c)  # [B, T, C]
    return attn.proj(y), k, v


def past_mask(past_padding: torch.Tensor, past: int, t: int) -> torch.Tensor:
    """[B, 1, T, P + T] additive mask: row b's first past_padding[b] past columns are padding (left-padded
    rows of a batch); new token i sees the row's other past columns and the new tokens up to itself."""
    cols = torch.arange(past + t, device=past_padding.device)
    real = cols[None, :] >= past_padding[:, None]  # [B, P + T]
    causal = cols[None, :] <= past + torch.arange(t, device=past_padding.device)[:, None]  # [T, P + T]
    return torch.where(real[:, None, :] & causal[None], 0.0, NEG)[:, None]


def past_positions(past_padding: torch.Tensor, past: int, t: int) -> torch.Tensor:
    """[B, T] positions of the new tokens: a row's real past tokens hold positions 0, 1, ..."""
    return (past - past_padding)[:, None] + torch.arange(t, device=past_padding.device)[None, :]


def blocks_with_past(
    blocks: nn.ModuleList,
    h: torch.Tensor,
    mask: torch.Tensor,
    past: tuple[torch.Tensor, ...],
    *,
    memory: torch.Tensor | None = None,
    memory_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Block.forward for each block, self-attention through the cache; past and the returned present
    alternate key, value per layer."""
    present: list[torch.Tensor] = []
    for i, block in enumerate(blocks):
        assert isinstance(block, Block)  # a ModuleList yields plain Modules to the type checker
        a, k, v = attend_with_past(block.attn, block.ln1(h), past[2 * i], past[2 * i + 1], mask)
        h = h + block.drop(a)
        if block.cross is not None and block.ln_cross is not None:
            # Cross-attention K/V are recomputed from the memory each step: a few dozen source tokens.
            h = h + block.drop(block.cross(block.ln_cross(h), memory=memory, mask=memory_mask))
        h = h + block.ff(block.ln2(h))
        present += [k, v]
    return h, present


class GPTWithPast(nn.Module):
    """decoder_with_past.onnx of a GPT: logits of the new tokens and the grown cache."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(
        self, input_ids: torch.Tensor, past_padding: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        g = self.gpt
        p, t = past[0].shape[2], input_ids.shape[1]
        h = g.drop(g.tok(input_ids) + g.pos[past_positions(past_padding, p, t)])  # [B, T, C]
        h, present = blocks_with_past(g.blocks, h, past_mask(past_padding, p, t), past)
        return (g.head(g.ln(h)), *present)  # [B, T, vocab], then [B, h, P + T, hd] per layer


class Seq2SeqEncoder(nn.Module):
    """encoder.onnx: the memory Seq2Seq.decode attends to (the encoder stack after ln_enc)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, encoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode(encoder_input_ids)[0]  # [B, S, C]


class Seq2SeqDecoderWithPast(nn.Module):
    """decoder_with_past.onnx of a Seq2Seq; encoder_attention_mask is 1 for a real source token."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        decoder_input_ids: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        past_padding: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        m = self.model
        p, t = past[0].shape[2], decoder_input_ids.shape[1]
        h = m.tok(decoder_input_ids) + m.pos_tgt[past_positions(past_padding, p, t)]  # [B, T, C]
        memory_mask = torch.where(encoder_attention_mask == 0, NEG, 0.0)[:, None, None, :]  # [B, 1, 1, S]
        mask = past_mask(past_padding, p, t)
        h, present = blocks_with_past(
            m.decoder, h, mask, past, memory=encoder_hidden_states, memory_mask=memory_mask
        )
        return (m.head(m.ln_dec(h)), *present)
