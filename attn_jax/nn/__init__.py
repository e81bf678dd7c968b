"""Flax NNX modules over the attn_jax primitives."""

from attn_jax.nn.attention import AdditiveAttention, LocalAttention, LuongAttention, masked_softmax
from attn_jax.nn.decoding import Decoded, beam_search, greedy_decode, sample_decode
from attn_jax.nn.flax_adapter import flax_attention_fn
from attn_jax.nn.generate import PromptedLM, generate
from attn_jax.nn.lstmn import LSTMN, LSTMNState
from attn_jax.nn.multi_head import MultiHeadAttention
from attn_jax.nn.ntm import NTM, LSTMBaseline, NTMState
from attn_jax.nn.pointer import PointerMemory, PointerNetwork, PositionSeq2Seq
from attn_jax.nn.recurrent import BiRNNEncoder
from attn_jax.nn.seq2seq import ATTENTIONS, BahdanauDecoder, LuongDecoder, Memory, Seq2Seq
from attn_jax.nn.transformer import KVCache, Transformer, TransformerAttention, TransformerConfig, TransformerLM

__all__ = [
    "ATTENTIONS", "NTM", "AdditiveAttention", "BahdanauDecoder", "BiRNNEncoder", "Decoded", "LSTMBaseline",
    "LSTMN", "LSTMNState",
    "LocalAttention", "LuongAttention", "LuongDecoder", "Memory", "NTMState", "PointerMemory", "PointerNetwork",
    "PositionSeq2Seq", "PromptedLM", "generate", "sample_decode",
    "KVCache", "MultiHeadAttention", "Seq2Seq", "Transformer", "TransformerAttention", "TransformerConfig",
    "TransformerLM", "beam_search",
    "flax_attention_fn", "greedy_decode", "masked_softmax",
]
