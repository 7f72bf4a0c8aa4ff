#!/usr/bin/env python3
"""Write a tiny random-weight llama-architecture GGUF for legacygpu's tests.

    python3 scripts/make_tiny_gguf.py --out DIR/tiny.gguf [--seed 7] [--layers 2] [--width 64]

The model is a real llama.cpp `llama` model (RMSNorm, rotary attention with
grouped KV heads, SwiGLU feed-forward) with random weights drawn from
`--seed`, so the same arguments always write the same bytes. Its text is
noise, but every code path of a real model runs: the tokenizer, the chat
template, the KV cache, sampling, and byte-fallback decoding.

Vocabulary: a SentencePiece-style (`llama`) vocabulary of `<unk>`, `<s>`,
`</s>`, the 256 byte-fallback tokens `<0x00>`..`<0xFF>`, the ChatML control
tokens `<|im_start|>` and `<|im_end|>` (the end of a turn and of a sequence), and a few
dozen plain pieces (the word-boundary mark, letters, punctuation). Anything
else is spelled in bytes, so generated text is not valid UTF-8 token by
token — which is what the executor's byte-level decoding must handle.

The output rows of the control and unknown tokens are zero, so that greedy
decoding of random weights (whose other logits are spread around zero)
practically never ends a generation early: tests decide where it stops.

The chat template is ChatML, which llama.cpp's built-in template engine
recognises.

Needs PyPI `gguf` and `numpy`.
"""

import argparse
import os

import numpy as np
import gguf

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Plain pieces besides the single letters: a few merges so that the SPM
# tokenizer has something to merge ("▁t" + "he" -> "▁the").
MERGES = ["▁t", "he", "▁the", "▁a", "in", "er", "on", "an", "ll", "▁h", "▁w", "or"]
PUNCTUATION = [".", ",", "!", "?", "'", "-", ":"]


def vocabulary():
    """(tokens, scores, types) of the vocabulary; returns also the ids of interest."""
    T = gguf.TokenType
    tokens = [("<unk>", 0.0, T.UNKNOWN), ("<s>", 0.0, T.CONTROL), ("</s>", 0.0, T.CONTROL)]
    tokens += [(f"<0x{b:02X}>", 0.0, T.BYTE) for b in range(256)]
    tokens += [("<|im_start|>", 0.0, T.CONTROL), ("<|im_end|>", 0.0, T.CONTROL)]
    plain = ["▁"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + PUNCTUATION + MERGES
    # Higher scores merge first; longer pieces score higher.
    tokens += [(p, -10.0 + len(p), T.NORMAL) for p in plain]
    ids = {text: i for i, (text, _, _) in enumerate(tokens)}
    return tokens, ids


def tensors(rng, n_vocab, width, layers, ff, heads, kv_heads, silent_rows):
    """The model's tensors, as (name, float32 array) in numpy (row-major) order."""
    head_dim = width // heads
    kv_width = head_dim * kv_heads

    def dense(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(width)).astype(np.float32)

    out = [("token_embd.weight", rng.standard_normal((n_vocab, width)).astype(np.float32))]
    for i in range(layers):
        out += [
            (f"blk.{i}.attn_norm.weight", norm()),
            (f"blk.{i}.attn_q.weight", dense(width, width)),
            (f"blk.{i}.attn_k.weight", dense(kv_width, width)),
            (f"blk.{i}.attn_v.weight", dense(kv_width, width)),
            (f"blk.{i}.attn_output.weight", dense(width, width)),
            (f"blk.{i}.ffn_norm.weight", norm()),
            (f"blk.{i}.ffn_gate.weight", dense(ff, width)),
            (f"blk.{i}.ffn_up.weight", dense(ff, width)),
            (f"blk.{i}.ffn_down.weight", dense(width, ff)),
        ]
    out.append(("output_norm.weight", norm()))
    output = 4.0 * dense(n_vocab, width)
    output[silent_rows, :] = 0.0
    out.append(("output.weight", output))
    return out


def write(path, seed, layers, width, ff, heads, kv_heads, context, f16):
    rng = np.random.default_rng(seed)
    tokens, ids = vocabulary()
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny-random-llama")
    w.add_context_length(context)
    w.add_embedding_length(width)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(width // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("llama")
    w.add_token_list([t for t, _, _ in tokens])
    w.add_token_scores([s for _, s, _ in tokens])
    w.add_token_types([int(k) for _, _, k in tokens])
    w.add_unk_token_id(ids["<unk>"])
    w.add_bos_token_id(ids["<s>"])
    # The end of a turn ends a generation, as in ChatML models (Qwen):
    # llama.cpp warns when the end-of-sequence token is not one it knows to
    # end generation (`</s>` is not on its list, `<|im_end|>` is).
    w.add_eos_token_id(ids["<|im_end|>"])
    w.add_eot_token_id(ids["<|im_end|>"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHATML)

    silent = [ids[t] for t in ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")]
    for name, data in tensors(rng, len(tokens), width, layers, ff, heads, kv_heads, silent):
        # Norms stay F32 (llama.cpp expects it); matrices are F16 when asked.
        w.add_tensor(name, data.astype(np.float16) if f16 and data.ndim == 2 else data)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the .gguf file to write")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--ff", type=int, default=0, help="feed-forward width (default 2 x width)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--context", type=int, default=512, help="trained context length")
    p.add_argument("--f16", action="store_true", help="F16 matrices (default F32)")
    a = p.parse_args()
    if a.width % a.heads or a.heads % a.kv_heads:
        p.error("--width must be a multiple of --heads, and --heads of --kv-heads")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    write(a.out, a.seed, a.layers, a.width, a.ff or 2 * a.width, a.heads, a.kv_heads,
          a.context, a.f16)


if __name__ == "__main__":
    main()
