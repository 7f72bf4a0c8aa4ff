//! A model file's vocabulary and shape, read without its weights.
//!
//! Two things here go past what `llama-cpp-2` 0.1.130 offers, so this is the
//! crate's one module that calls llama.cpp's C API directly:
//!
//! - a token's bytes: the wrapper's `token_to_bytes` returns nothing for
//!   byte-fallback tokens (`<0xE2>`), which would drop every character a
//!   SentencePiece model spells in bytes; `llama_token_to_piece` gives them.
//! - the model's shape (layers, width, heads) before its weights load, to
//!   decide how many layers fit on the GPU.
//!
//! Both come from a vocabulary-only load of the file (llama.cpp's
//! `vocab_only`: metadata and tokenizer, no tensors), which is also the first
//! check that the file is a model llama.cpp can read.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;

use llama_cpp_2::token::LlamaToken;
use llama_cpp_sys_2 as sys;

/// A vocabulary-only llama.cpp model: the tokenizer and hyperparameters.
pub(crate) struct Vocab {
    model: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
}

// SAFETY: after loading, llama.cpp never mutates a vocabulary-only model;
// the functions called here only read it (the piece cache is built at load
// time), so sharing it between threads is sound.
unsafe impl Send for Vocab {}
// SAFETY: as above; every method takes `&self` and only reads.
unsafe impl Sync for Vocab {}

/// The shape of a model, as its metadata gives it (0 where it does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ctx_train: u32,
}

impl Vocab {
    /// Loads the vocabulary of the GGUF file at `path`; `None` when llama.cpp
    /// cannot read it (its log says why). The llama.cpp backend must be
    /// initialised.
    pub fn load(path: &Path) -> Option<Vocab> {
        let path = CString::new(path.to_str()?).ok()?;
        // SAFETY: a plain C function returning a struct by value.
        let mut params = unsafe { sys::llama_model_default_params() };
        params.vocab_only = true;
        params.n_gpu_layers = 0;
        // SAFETY: `path` is a valid NUL-terminated string that outlives the
        // call; llama.cpp returns NULL (never throws) when loading fails.
        let model =
            NonNull::new(unsafe { sys::llama_model_load_from_file(path.as_ptr(), params) })?;
        // SAFETY: `model` is a live model; its vocabulary lives as long as it.
        let vocab = unsafe { sys::llama_model_get_vocab(model.as_ptr()) };
        match NonNull::new(vocab.cast_mut()) {
            Some(vocab) => Some(Vocab { model, vocab }),
            None => {
                // SAFETY: `model` came from llama_model_load_from_file and is
                // freed once, here.
                unsafe { sys::llama_model_free(model.as_ptr()) };
                None
            }
        }
    }

    /// The model's shape, from its metadata (a vocabulary-only load reads
    /// the metadata but not llama.cpp's hyperparameters). A missing key reads
    /// as 0; per-layer head counts (arrays) read as 0 too, which only makes
    /// the GPU-layer estimate more careful.
    pub fn shape(&self) -> Shape {
        let arch = self.meta("general.architecture").unwrap_or_default();
        let number = |key: &str| {
            self.meta(&format!("{arch}.{key}")).and_then(|v| v.trim().parse::<u32>().ok())
        };
        let n_head = number("attention.head_count").unwrap_or(0);
        Shape {
            n_layer: number("block_count").unwrap_or(0),
            n_embd: number("embedding_length").unwrap_or(0),
            n_head,
            n_head_kv: number("attention.head_count_kv").unwrap_or(n_head),
            n_ctx_train: number("context_length").unwrap_or(0),
        }
    }

    /// A metadata value as text (llama.cpp's rendering); `None` when absent.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 128];
        loop {
            // SAFETY: `model` is live, `key` is NUL-terminated, and llama.cpp
            // writes at most `buf.len()` bytes, NUL included, returning the
            // full length (or -1 when the key is absent).
            let n = unsafe {
                sys::llama_model_meta_val_str(
                    self.model.as_ptr(),
                    key.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            let n = usize::try_from(n).ok()?;
            if n < buf.len() {
                buf.truncate(n);
                return String::from_utf8(buf).ok();
            }
            buf.resize(n + 1, 0);
        }
    }

    /// The number of tokens in the vocabulary.
    pub fn n_tokens(&self) -> i32 {
        // SAFETY: `vocab` is live as long as `self`.
        unsafe { sys::llama_vocab_n_tokens(self.vocab.as_ptr()) }
    }

    /// Appends the bytes of `token` as generated text (control tokens such as
    /// end-of-turn give none). Tokens outside the vocabulary give none.
    pub fn piece(&self, token: LlamaToken, out: &mut Vec<u8>) {
        if token.0 < 0 || token.0 >= self.n_tokens() {
            return;
        }
        let mut buf = [0u8; 64];
        let n = self.piece_into(token, &mut buf);
        if let Ok(n) = usize::try_from(n) {
            out.extend_from_slice(&buf[..n.min(buf.len())]);
        } else {
            // A longer piece: llama.cpp said how many bytes it needs.
            let mut big = vec![0u8; n.unsigned_abs() as usize];
            let n = self.piece_into(token, &mut big);
            if let Ok(n) = usize::try_from(n) {
                out.extend_from_slice(&big[..n.min(big.len())]);
            }
        }
    }

    fn piece_into(&self, token: LlamaToken, buf: &mut [u8]) -> i32 {
        let len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        // SAFETY: `token` is inside the vocabulary (checked by the caller),
        // `buf` is writable for `len` bytes, and llama.cpp writes at most
        // `len` bytes (returning minus the size needed when it is short).
        unsafe {
            sys::llama_token_to_piece(
                self.vocab.as_ptr(),
                token.0,
                buf.as_mut_ptr().cast(),
                len,
                0,
                false,
            )
        }
    }
}

impl Drop for Vocab {
    fn drop(&mut self) {
        // SAFETY: the model came from llama_model_load_from_file and is freed
        // once; `vocab` points into it and is not used after this.
        unsafe { sys::llama_model_free(self.model.as_ptr()) }
    }
}
