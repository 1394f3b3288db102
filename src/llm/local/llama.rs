//! The llama-architecture network the local provider runs: weights loaded with candle, the
//! arithmetic in plain Rust on top of candle's kernels.
//!
//! Why not candle's own `quantized_llama`: on CPU it multiplies SmolLM2's 4-bit (Q4_1) weights
//! with scalar code, and a single weight format cannot be fast at both halves of a reply. Reading
//! a prompt multiplies many tokens at once, which SIMD matrix code does best on f32 weights
//! (candle's `Tensor::matmul`, i.e. the `gemm` crate); writing a reply multiplies one token per
//! sequence at a time, which is bound by how many bytes of weights are read per step, so 8-bit
//! Q8_0 weights (a quarter of f32's bytes) win, multiplied by our own kernel
//! (`troupe_kernels::q8`: candle's bits, tiles that share each weight row between the
//! sequences of a batch, VNNI where the CPU has it, and the weights fetched ahead of use).
//! This network holds each projection in both forms when the model is small enough
//! (SmolLM2-135M: about 540 MB of f32 plus 145 MB of 8-bit). Larger models keep only the 8-bit
//! form and read prompts with it too.
//!
//! Everything between the matrix products (norms, rotary embedding, attention, SiLU) is our own
//! code over plain `f32` slices rather than candle tensor ops (its inner loops live in the
//! `troupe-kernels` crate, which debug builds optimize too, so `cargo test` runs the model at
//! nearly release speed), for three reasons:
//! - **Threads are ours.** candle's element-wise ops and quantized products run on its global
//!   spin-waiting pool, sized once per process from `CANDLE_NUM_THREADS`; under a CPU hog every
//!   barrier of that pool waits for a preempted thread. Here the caller picks a rayon pool per
//!   step ([`super::runtime`] sizes it to the cores actually free) and `gemm` runs inside it.
//! - **Results do not depend on the thread count or the batch.** Every output element is
//!   computed by one thread with one fixed order of additions; work is split between threads
//!   by whole output elements only, so 1 or 8 threads give the same bits. `gemm`'s own split is
//!   pinned by candle to the machine's core count (`Parallelism::Rayon(n)` with a fixed `n`),
//!   whatever pool it runs in. A sequence decoded in a batch gets the same bits as alone: each
//!   row of a batched product is the same dot products as a single row.
//! - **Batched decoding.** [`Llama::decode`] advances several sequences by one token each with
//!   one pass over the weights: each weight row is multiplied with up to four sequences'
//!   activations while it is in registers, so four personas cost far less than four passes.
//!   Attention reads each key and value once for the query heads that share it.
//!
//! Prompts are read in chunks of [`CHUNK`] tokens at fixed positions (0..64, 64..128, ...), so a
//! prompt whose first chunks were read before (a prefix cache hit) repeats exactly the same
//! arithmetic as reading it whole: the cached keys and values are the bits a full read makes.
//!
//! The attention cache belongs to the caller ([`Cache`]), one per reply, so the shared weights
//! are never written while a reply is being made.

use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;
use troupe_kernels as kernels;
use troupe_kernels::q8::{self, Q8};

/// The most f32 weight bytes kept for reading prompts: up to about 500M parameters.
const WIDE_BUDGET_BYTES: usize = 2 << 30;

/// The rotary position table covers this many positions at most.
const MAX_POSITIONS: usize = 8192;

/// Prompts are read in chunks of this many tokens, starting at multiples of it: the unit of the
/// prefix cache. 64 rows keep `gemm` efficient and a chunk's attention scores small.
pub const CHUNK: usize = 64;

/// One weight matrix of `rows` outputs by `cols` inputs: 8-bit for one token per sequence
/// (`quick`), and f32 for prompts (`wide`, only when the model is small enough).
#[derive(Debug, Clone)]
struct Weight {
    rows: usize,
    cols: usize,
    quick: Quick,
    wide: Option<Tensor>,
}

/// The decode form of a weight: Q8_0 blocks, or f32 rows when the width is not a multiple of
/// the block (and in tests that compare with an f32 reference).
#[derive(Debug, Clone)]
enum Quick {
    Q8(Q8),
    F32(Vec<f32>),
}

#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value projections stacked (rows: dim + 2 * kv_dim): one pass for three.
    qkv: Weight,
    wo: Weight,
    ffn_norm: Vec<f32>,
    /// Gate and up projections stacked (rows: 2 * hidden).
    gate_up: Weight,
    down: Weight,
}

/// The network's shape, from the file's `llama.*` metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub dim: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Width of the feed-forward layer.
    pub hidden: usize,
    /// RMS norm epsilon.
    pub eps: f32,
    /// Rotary embedding base.
    pub rope_base: f32,
}

impl Shape {
    fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim()
    }
}

/// A llama-architecture network's weights, read-only once loaded.
#[derive(Debug)]
pub struct Llama {
    shape: Shape,
    embed: Vec<f32>,
    vocab: usize,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Weight,
    /// Rotary tables, `MAX_POSITIONS x head_dim / 2`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    wide: bool,
}

/// One reply's attention cache: the keys and values of every position read so far, per layer
/// laid out `[kv_head][position][head_dim]` so a head's keys are one contiguous matrix.
#[derive(Debug, Clone)]
pub struct Cache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    kv_heads: usize,
    head_dim: usize,
    cap: usize,
    len: usize,
}

impl Cache {
    /// Positions already read.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held for the positions read (what a prefix cache entry costs).
    pub fn bytes(&self) -> usize {
        self.k.len() * 2 * self.kv_heads * self.len * self.head_dim * 4
    }

    /// A copy of the first `len` positions with room for `room` in all: the start of a new
    /// reply whose prompt begins with the same tokens.
    pub fn prefix(&self, len: usize, room: usize) -> Cache {
        let len = len.min(self.len);
        let mut c = Cache {
            k: Vec::new(),
            v: Vec::new(),
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            cap: room.max(len).clamp(1, MAX_POSITIONS),
            len,
        };
        let copy = |src: &Vec<f32>| {
            let mut dst = vec![0f32; self.kv_heads * c.cap * self.head_dim];
            for h in 0..self.kv_heads {
                let from = h * self.cap * self.head_dim;
                let to = h * c.cap * self.head_dim;
                dst[to..to + len * self.head_dim].copy_from_slice(&src[from..from + len * self.head_dim]);
            }
            dst
        };
        c.k = self.k.iter().map(copy).collect();
        c.v = self.v.iter().map(copy).collect();
        c
    }

    /// Makes room for `extra` more positions, growing by doubling (up to [`MAX_POSITIONS`]).
    fn reserve(&mut self, extra: usize) {
        let need = self.len + extra;
        if need <= self.cap {
            return;
        }
        let cap = need.max(self.cap * 2).min(MAX_POSITIONS).max(need);
        let grown = self.prefix(self.len, cap);
        *self = grown;
    }

    /// Keys (or values) of kv head `h` in `layer` for the first `len` positions.
    fn head<'a>(&self, store: &'a [Vec<f32>], layer: usize, h: usize, len: usize) -> &'a [f32] {
        let at = h * self.cap * self.head_dim;
        &store[layer][at..at + len * self.head_dim]
    }

    /// Writes the keys and values of `n` new positions (rows of `kv_dim`) at `self.len`.
    fn append(&mut self, layer: usize, k: &[f32], v: &[f32], n: usize) {
        let (hd, pos) = (self.head_dim, self.len);
        for i in 0..n {
            for h in 0..self.kv_heads {
                let src = i * self.kv_heads * hd + h * hd;
                let dst = h * self.cap * hd + (pos + i) * hd;
                self.k[layer][dst..dst + hd].copy_from_slice(&k[src..src + hd]);
                self.v[layer][dst..dst + hd].copy_from_slice(&v[src..src + hd]);
            }
        }
    }
}

impl Llama {
    /// Reads the network from a GGUF file. Errors name what is missing or unsupported.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(content: &Content, file: &mut R) -> Result<Llama> {
        let md = |k: &str| content.metadata.get(k).ok_or_else(|| candle_core::Error::Msg(format!("it has no {k}")));
        let count = |k: &str| -> Result<usize> { Ok(md(k)?.to_u32()? as usize) };
        if content.metadata.get("llama.expert_count").and_then(|v| v.to_u32().ok()).unwrap_or(0) > 1 {
            candle_core::bail!("it is a mixture-of-experts model, which the local provider does not run");
        }
        let mut shape = Shape {
            layers: count("llama.block_count")?,
            dim: count("llama.embedding_length")?,
            heads: count("llama.attention.head_count")?,
            kv_heads: count("llama.attention.head_count_kv")?,
            hidden: 0,
            eps: md("llama.attention.layer_norm_rms_epsilon")?.to_f32()?,
            rope_base: content.metadata.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0),
        };
        if shape.heads == 0
            || shape.kv_heads == 0
            || !shape.heads.is_multiple_of(shape.kv_heads)
            || !shape.dim.is_multiple_of(shape.heads)
            || !shape.head_dim().is_multiple_of(2)
        {
            candle_core::bail!(
                "its attention shape is inconsistent ({} heads, {} key/value heads, width {})",
                shape.heads,
                shape.kv_heads,
                shape.dim
            );
        }
        let rope_dim = content.metadata.get("llama.rope.dimension_count").and_then(|v| v.to_u32().ok());
        if rope_dim.is_some_and(|d| d as usize != shape.head_dim()) {
            candle_core::bail!("it rotates only part of each attention head, which the local provider does not run");
        }
        let params: usize = content.tensor_infos.values().map(|t| t.shape.elem_count()).sum();
        let wide = params * 4 <= WIDE_BUDGET_BYTES;
        let cpu = Device::Cpu;
        let mut read = |name: &str| content.tensor(file, name, &cpu);
        let values = |q: QTensor| -> Result<Tensor> { q.dequantize(&cpu) };

        let embed_t = values(read("token_embd.weight")?)?;
        let (vocab, edim) = embed_t.dims2()?;
        if edim != shape.dim {
            candle_core::bail!("its embedding width {edim} differs from llama.embedding_length {}", shape.dim);
        }
        let output = match read("output.weight") {
            Ok(q) => weight(&[values(q)?], false)?,
            // Tied embeddings (SmolLM2): the output head is the embedding table. It only ever
            // reads one row per sequence, so it keeps the 8-bit form alone.
            Err(_) => weight(std::slice::from_ref(&embed_t), false)?,
        };
        let embed = embed_t.flatten_all()?.to_vec1::<f32>()?;
        let norm = values(read("output_norm.weight")?)?.to_vec1::<f32>()?;
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let mut w = |part: &str| -> Result<Tensor> { values(read(&format!("blk.{i}.{part}.weight"))?) };
            let (q, k, v) = (w("attn_q")?, w("attn_k")?, w("attn_v")?);
            let (gate, up) = (w("ffn_gate")?, w("ffn_up")?);
            shape.hidden = gate.dims2()?.0;
            let layer = Layer {
                attn_norm: w("attn_norm")?.to_vec1::<f32>()?,
                qkv: weight(&[q, k, v], wide)?,
                wo: weight(&[w("attn_output")?], wide)?,
                ffn_norm: w("ffn_norm")?.to_vec1::<f32>()?,
                gate_up: weight(&[gate, up], wide)?,
                down: weight(&[w("ffn_down")?], wide)?,
            };
            let expect = [
                (&layer.qkv, shape.dim + 2 * shape.kv_dim(), shape.dim),
                (&layer.wo, shape.dim, shape.dim),
                (&layer.gate_up, 2 * shape.hidden, shape.dim),
                (&layer.down, shape.dim, shape.hidden),
            ];
            if expect.iter().any(|(w, r, c)| w.rows != *r || w.cols != *c) {
                candle_core::bail!("the weights of block {i} do not match the shape its metadata gives");
            }
            layers.push(layer);
        }
        if output.cols != shape.dim || output.rows == 0 {
            candle_core::bail!("its output head does not match the model's width");
        }
        let (cos, sin) = rotary_tables(shape.head_dim(), shape.rope_base);
        Ok(Llama { shape, embed, vocab, layers, norm, output, cos, sin, wide })
    }

    /// The network's shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// True when f32 weights are kept for reading prompts.
    pub fn keeps_wide_weights(&self) -> bool {
        self.wide
    }

    /// The most positions a cache can hold.
    pub fn max_positions(&self) -> usize {
        MAX_POSITIONS
    }

    /// Logits per step (the vocabulary size).
    pub fn vocab(&self) -> usize {
        self.output.rows
    }

    /// An empty attention cache sized for `positions` tokens (it grows if needed).
    pub fn cache(&self, positions: usize) -> Cache {
        let (hd, kvh) = (self.shape.head_dim(), self.shape.kv_heads);
        let cap = positions.clamp(1, MAX_POSITIONS);
        let layer = || vec![0f32; kvh * cap * hd];
        Cache {
            k: (0..self.shape.layers).map(|_| layer()).collect(),
            v: (0..self.shape.layers).map(|_| layer()).collect(),
            kv_heads: kvh,
            head_dim: hd,
            cap,
            len: 0,
        }
    }

    /// Reads `tokens` at the cache's next positions and returns the logits that follow the last.
    /// The tokens are read in chunks that end at multiples of [`CHUNK`] positions; `stop` is
    /// asked between chunks (a caller that gave up stops a long prompt early: `Ok(None)`).
    pub fn prefill(&self, tokens: &[u32], cache: &mut Cache, stop: &dyn Fn() -> bool) -> Result<Option<Vec<f32>>> {
        if tokens.is_empty() {
            candle_core::bail!("no tokens to read");
        }
        self.check_room(cache.len, tokens.len())?;
        let mut rest = tokens;
        let mut last = Vec::new();
        while !rest.is_empty() {
            if stop() {
                return Ok(None);
            }
            let room = CHUNK - cache.len % CHUNK;
            let (chunk, tail) = rest.split_at(room.min(rest.len()));
            last = self.read_chunk(chunk, cache)?;
            rest = tail;
        }
        let mut logits = vec![0f32; self.vocab()];
        self.logits_of(&last, 1, &mut logits);
        Ok(Some(logits))
    }

    /// Reads one token for each sequence (`steps[i]` into `caches[i]`) with one pass over the
    /// weights, and returns each sequence's logits. Each sequence's logits are the same bits as
    /// when it is decoded alone.
    pub fn decode(&self, steps: &[u32], caches: &mut [&mut Cache]) -> Result<Vec<Vec<f32>>> {
        let s = self.shape;
        let b = steps.len();
        if b == 0 || caches.len() != b {
            candle_core::bail!("a decoding step needs one token per sequence");
        }
        for c in caches.iter() {
            self.check_room(c.len, 1)?;
        }
        for c in caches.iter_mut() {
            c.reserve(1);
        }
        let (hd, kvd, dim) = (s.head_dim(), s.kv_dim(), s.dim);
        let mut x = self.embed_rows(steps)?;
        let mut h = vec![0f32; b * dim];
        let mut qkv = vec![0f32; b * (dim + 2 * kvd)];
        let mut y = vec![0f32; b * dim];
        let mut o = vec![0f32; b * dim];
        let mut gu = vec![0f32; b * 2 * s.hidden];
        let mut g = vec![0f32; b * s.hidden];
        for (li, layer) in self.layers.iter().enumerate() {
            kernels::rms_norm_rows(&x, &layer.attn_norm, s.eps, &mut h);
            matmul_quick(&layer.qkv, &h, b, &mut qkv);
            for (i, c) in caches.iter_mut().enumerate() {
                let row = &mut qkv[i * (dim + 2 * kvd)..(i + 1) * (dim + 2 * kvd)];
                let (q, kv) = row.split_at_mut(dim);
                let (k, v) = kv.split_at_mut(kvd);
                self.rope(q, c.len);
                self.rope(k, c.len);
                c.append(li, k, v, 1);
            }
            let shared: Vec<&Cache> = caches.iter().map(|c| &**c).collect();
            let width = dim + 2 * kvd;
            let rep = s.heads / s.kv_heads;
            let scale = 1.0 / (hd as f32).sqrt();
            // One item per sequence and key/value head: the `rep` query heads that share it
            // are adjacent in the query row and in `y`, and read its keys and values once. Too
            // few items to keep every thread busy (one sequence): one item per query head.
            let threads = rayon::current_num_threads();
            let group = if b * s.kv_heads >= 2 * threads { rep } else { 1 };
            let attend = |item: usize, out: &mut [f32]| {
                let (seq, first) = (item * group / s.heads, item * group % s.heads);
                let c = shared[seq];
                let len = c.len + 1;
                let from = seq * width + first * hd;
                let keys = c.head(&c.k, li, first / rep, len);
                let vals = c.head(&c.v, li, first / rep, len);
                kernels::attend(&qkv[from..from + group * hd], keys, vals, hd, scale, out);
            };
            if threads > 1 {
                y.par_chunks_mut(group * hd).enumerate().for_each(|(i, out)| attend(i, out));
            } else {
                y.chunks_mut(group * hd).enumerate().for_each(|(i, out)| attend(i, out));
            }
            matmul_quick(&layer.wo, &y, b, &mut o);
            kernels::add_into(&mut x, &o);
            kernels::rms_norm_rows(&x, &layer.ffn_norm, s.eps, &mut h);
            matmul_quick(&layer.gate_up, &h, b, &mut gu);
            kernels::swiglu_rows(&gu, s.hidden, &mut g);
            matmul_quick(&layer.down, &g, b, &mut o);
            kernels::add_into(&mut x, &o);
        }
        for c in caches.iter_mut() {
            c.len += 1;
        }
        let mut logits = vec![0f32; b * self.vocab()];
        self.logits_of(&x, b, &mut logits);
        Ok(logits.chunks(self.vocab()).map(<[f32]>::to_vec).collect())
    }

    fn check_room(&self, pos: usize, n: usize) -> Result<()> {
        if pos + n > MAX_POSITIONS {
            candle_core::bail!("{} positions is more than the {MAX_POSITIONS} this network supports", pos + n);
        }
        Ok(())
    }

    fn embed_rows(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let dim = self.shape.dim;
        let mut x = Vec::with_capacity(tokens.len() * dim);
        for &t in tokens {
            let t = t as usize;
            if t >= self.vocab {
                candle_core::bail!("token {t} is outside the vocabulary of {}", self.vocab);
            }
            x.extend_from_slice(&self.embed[t * dim..(t + 1) * dim]);
        }
        Ok(x)
    }

    /// The final norm and the output head over `n` rows of the residual stream.
    fn logits_of(&self, x: &[f32], n: usize, logits: &mut [f32]) {
        let mut h = vec![0f32; x.len()];
        kernels::rms_norm_rows(x, &self.norm, self.shape.eps, &mut h);
        matmul_quick(&self.output, &h, n, logits);
    }

    /// Rotates every head of `row` for position `pos`.
    fn rope(&self, row: &mut [f32], pos: usize) {
        let half = self.shape.head_dim() / 2;
        kernels::rope(row, &self.cos[pos * half..(pos + 1) * half], &self.sin[pos * half..(pos + 1) * half]);
    }

    /// Reads up to one chunk of prompt tokens; returns the last token's residual stream.
    fn read_chunk(&self, tokens: &[u32], cache: &mut Cache) -> Result<Vec<f32>> {
        let s = self.shape;
        let (n, pos) = (tokens.len(), cache.len);
        cache.reserve(n);
        let (hd, kvd, dim) = (s.head_dim(), s.kv_dim(), s.dim);
        let width = dim + 2 * kvd;
        let rep = s.heads / s.kv_heads;
        let len = pos + n;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut x = self.embed_rows(tokens)?;
        let mut h = vec![0f32; n * dim];
        let mut y = vec![0f32; n * dim];
        let mut g = vec![0f32; n * s.hidden];
        for (li, layer) in self.layers.iter().enumerate() {
            kernels::rms_norm_rows(&x, &layer.attn_norm, s.eps, &mut h);
            let mut qkv = self.matmul_wide(&layer.qkv, &h, n)?;
            let mut keys = vec![0f32; n * kvd];
            let mut vals = vec![0f32; n * kvd];
            for i in 0..n {
                let row = &mut qkv[i * width..(i + 1) * width];
                let (q, kv) = row.split_at_mut(dim);
                let (k, v) = kv.split_at_mut(kvd);
                self.rope(q, pos + i);
                self.rope(k, pos + i);
                keys[i * kvd..(i + 1) * kvd].copy_from_slice(k);
                vals[i * kvd..(i + 1) * kvd].copy_from_slice(v);
            }
            cache.append(li, &keys, &vals, n);
            // Grouped-query attention: the `rep` query heads that share a key/value head are
            // the rows of one product with that head's keys, (rep * n, hd) x (hd, len).
            for kvh in 0..s.kv_heads {
                let mut qg = Vec::with_capacity(rep * n * hd);
                for r in 0..rep {
                    let head = kvh * rep + r;
                    for i in 0..n {
                        qg.extend_from_slice(&qkv[i * width + head * hd..i * width + (head + 1) * hd]);
                    }
                }
                let kt = Tensor::from_slice(cache.head(&cache.k, li, kvh, len), (len, hd), &Device::Cpu)?;
                let qt = Tensor::from_vec(qg, (rep * n, hd), &Device::Cpu)?;
                let mut att = qt.matmul(&kt.t()?)?.flatten_all()?.to_vec1::<f32>()?;
                for (ri, row) in att.chunks_exact_mut(len).enumerate() {
                    let visible = pos + ri % n + 1;
                    kernels::softmax_prefix(row, visible, scale);
                }
                let vt = Tensor::from_slice(cache.head(&cache.v, li, kvh, len), (len, hd), &Device::Cpu)?;
                let at = Tensor::from_vec(att, (rep * n, len), &Device::Cpu)?;
                let out = at.matmul(&vt)?.flatten_all()?.to_vec1::<f32>()?;
                for r in 0..rep {
                    let head = kvh * rep + r;
                    for i in 0..n {
                        y[i * dim + head * hd..i * dim + (head + 1) * hd]
                            .copy_from_slice(&out[(r * n + i) * hd..(r * n + i + 1) * hd]);
                    }
                }
            }
            let o = self.matmul_wide(&layer.wo, &y, n)?;
            kernels::add_into(&mut x, &o);
            kernels::rms_norm_rows(&x, &layer.ffn_norm, s.eps, &mut h);
            let gu = self.matmul_wide(&layer.gate_up, &h, n)?;
            kernels::swiglu_rows(&gu, s.hidden, &mut g);
            let o = self.matmul_wide(&layer.down, &g, n)?;
            kernels::add_into(&mut x, &o);
        }
        cache.len += n;
        Ok(x[(n - 1) * dim..].to_vec())
    }

    /// `n` rows times the weight's transpose, with the f32 weights when kept (`gemm`), else
    /// with the 8-bit ones.
    fn matmul_wide(&self, w: &Weight, x: &[f32], n: usize) -> Result<Vec<f32>> {
        match &w.wide {
            Some(wt) => {
                let xt = Tensor::from_slice(x, (n, w.cols), &Device::Cpu)?;
                xt.matmul(&wt.t()?)?.flatten_all()?.to_vec1::<f32>()
            }
            None => {
                let mut out = vec![0f32; n * w.rows];
                matmul_quick(w, x, n, &mut out);
                Ok(out)
            }
        }
    }
}

/// A weight from one or more matrices stacked by rows (all of the same width).
fn weight(parts: &[Tensor], wide: bool) -> Result<Weight> {
    let stacked = if parts.len() == 1 { parts[0].clone() } else { Tensor::cat(parts, 0)? };
    let (rows, cols) = stacked.dims2()?;
    let values = stacked.flatten_all()?.to_vec1::<f32>()?;
    let quick = if cols > 0 && cols.is_multiple_of(q8::BLOCK) {
        Quick::Q8(Q8::weights(&values, cols))
    } else {
        Quick::F32(values)
    };
    Ok(Weight { rows, cols, quick, wide: if wide { Some(stacked.contiguous()?) } else { None } })
}

/// `out (n x rows) = x (n x cols) * w^T` with the decode form of `w`. Threads split the weight
/// rows; every output element is one dot product in a fixed order, so the result is the same
/// for any thread count and any `n` (a batch row equals the same row alone).
fn matmul_quick(w: &Weight, x: &[f32], n: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows, w.cols);
    // Column-major scratch (`rows x n`) so each thread owns a contiguous range of weight rows.
    let mut t = vec![0f32; rows * n];
    match &w.quick {
        Quick::Q8(blocks) => {
            let xq = Q8::activations(x, cols);
            split_rows(rows, n, &mut t, &|first, dst| q8::q8_rows(blocks, &xq, first, dst));
        }
        Quick::F32(values) => {
            split_rows(rows, n, &mut t, &|first, dst| kernels::f32_rows(values, cols, x, n, first, dst));
        }
    }
    kernels::transpose_into(&t, rows, n, out);
}

/// Runs `work(first_row, rows_of_scratch)` over `rows` weight rows, on the current rayon pool's
/// threads when it has more than one.
fn split_rows(rows: usize, n: usize, t: &mut [f32], work: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    let threads = rayon::current_num_threads();
    if threads <= 1 {
        work(0, t);
        return;
    }
    // About eight pieces per thread: a thread slowed by another process leaves its share to
    // the others instead of holding everyone at the end of the product.
    let per = rows.div_ceil(threads * 8).max(16);
    t.par_chunks_mut(per * n).enumerate().for_each(|(i, dst)| work(i * per, dst));
}

/// Rotary tables for interleaved pairs, `MAX_POSITIONS x head_dim / 2`.
fn rotary_tables(head_dim: usize, base: f32) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(MAX_POSITIONS * half);
    let mut sin = Vec::with_capacity(MAX_POSITIONS * half);
    for p in 0..MAX_POSITIONS {
        for i in 0..half {
            let theta = p as f32 / base.powf((2 * i) as f32 / head_dim as f32);
            cos.push(theta.cos());
            sin.push(theta.sin());
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::BufReader;
    use std::path::PathBuf;

    use candle_core::quantized::GgmlDType;

    use super::*;
    use crate::model::{DEFAULT_MODEL, cache_dir};

    /// The cached model, or `None` (a skip) unless `TROUPE_REQUIRE_MODEL` makes it a failure.
    fn model_file() -> Option<PathBuf> {
        let path = cache_dir(None).ok()?.join(DEFAULT_MODEL.file_name);
        if path.is_file() {
            return Some(path);
        }
        let required = std::env::var("TROUPE_REQUIRE_MODEL").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(!required, "TROUPE_REQUIRE_MODEL is set but there is no model at {}", path.display());
        eprintln!("note: skipped: no model at {} (run `troupe model fetch`)", path.display());
        None
    }

    fn open(path: &PathBuf) -> (Content, BufReader<File>) {
        let mut file = BufReader::new(File::open(path).unwrap());
        (Content::read(&mut file).unwrap(), file)
    }

    /// The network, loaded once for the tests of this module.
    fn net() -> Option<&'static Llama> {
        static NET: std::sync::OnceLock<Option<Llama>> = std::sync::OnceLock::new();
        NET.get_or_init(|| {
            let path = model_file()?;
            let (content, mut file) = open(&path);
            Some(Llama::from_gguf(&content, &mut file).unwrap())
        })
        .as_ref()
    }

    fn vocab_id(content: &Content, t: &str) -> u32 {
        let vocab = content.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
        vocab.iter().position(|v| v.to_string().unwrap() == t).unwrap_or_else(|| panic!("no token {t:?}")) as u32
    }

    /// Tokens of "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>" in
    /// SmolLM2's vocabulary, looked up by text so the test does not depend on our tokenizer.
    fn prompt(content: &Content) -> Vec<u32> {
        ["<|im_start|>", "user", "Ċ", "Name", "Ġthree", "Ġcolours", ".", "<|im_end|>", "Ċ", "<|im_start|>"]
            .iter()
            .map(|t| vocab_id(content, t))
            .collect()
    }

    /// A prompt of `n` tokens spanning several chunks (ordinary word tokens, varied).
    fn long_prompt(n: usize) -> Vec<u32> {
        (0..n as u32).map(|i| 1000 + (i * 7919) % 20000).collect()
    }

    fn argmax(v: &[f32]) -> usize {
        v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (norm(a) * norm(b))
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    const GO: &dyn Fn() -> bool = &|| false;

    fn read(net: &Llama, ids: &[u32], cache: &mut Cache) -> Vec<f32> {
        net.prefill(ids, cache, GO).unwrap().unwrap()
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// The model file rewritten in memory with every weight as f32, so candle's reference
    /// network and ours do the same arithmetic.
    fn as_f32(path: &PathBuf) -> std::io::Cursor<Vec<u8>> {
        let (content, mut file) = open(path);
        let mut names: Vec<&String> = content.tensor_infos.keys().collect();
        names.sort();
        let tensors: Vec<(&str, QTensor)> = names
            .iter()
            .map(|n| {
                let t = content.tensor(&mut file, n, &Device::Cpu).unwrap();
                (n.as_str(), QTensor::quantize(&t.dequantize(&Device::Cpu).unwrap(), GgmlDType::F32).unwrap())
            })
            .collect();
        let metadata: Vec<(&str, &candle_core::quantized::gguf_file::Value)> =
            content.metadata.iter().filter(|(k, _)| *k != "general.alignment").map(|(k, v)| (k.as_str(), v)).collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        let mut out = std::io::Cursor::new(Vec::new());
        candle_core::quantized::gguf_file::write(&mut out, &metadata, &refs).unwrap();
        out.set_position(0);
        out
    }

    /// Every projection and the output head in f32 for one token too, so decoding can be
    /// compared with reading at once.
    fn f32_only(net: &mut Llama) {
        let widen = |w: &mut Weight| {
            if let Some(t) = &w.wide {
                w.quick = Quick::F32(t.flatten_all().unwrap().to_vec1().unwrap());
            }
        };
        for l in &mut net.layers {
            for w in [&mut l.qkv, &mut l.wo, &mut l.gate_up, &mut l.down] {
                widen(w);
            }
        }
        net.output.quick = Quick::F32(net.embed.clone());
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn agrees_with_candles_reference_network() {
        let Some(path) = model_file() else { return };
        let ids = prompt(&open(&path).0);
        let mut file = as_f32(&path);
        let content = Content::read(&mut file).unwrap();
        let mut ours = Llama::from_gguf(&content, &mut file).unwrap();
        // The output head reads one row, so it uses the 8-bit form even for prompts; compare
        // with f32 throughout.
        f32_only(&mut ours);
        let mine = read(&ours, &ids, &mut ours.cache(ids.len()));

        let mut file = as_f32(&path);
        let content = Content::read(&mut file).unwrap();
        let mut reference =
            candle_transformers::models::quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
                .unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let theirs: Vec<f32> = reference.forward(&input, 0).unwrap().flatten_all().unwrap().to_vec1().unwrap();

        assert_eq!(mine.len(), theirs.len());
        assert_eq!(argmax(&mine), argmax(&theirs), "the most likely next token differs");
        // Same weights, same f32 arithmetic: only summation order differs.
        let d = max_diff(&mine, &theirs);
        assert!(d < 1e-2, "logits differ from candle's llama by up to {d}");
        assert!(cosine(&mine, &theirs) > 0.99999);
    }

    #[test]
    fn reading_at_once_matches_reading_one_token_at_a_time() {
        let Some(path) = model_file() else { return };
        let (content, mut file) = open(&path);
        let ids = prompt(&content);
        let mut net = Llama::from_gguf(&content, &mut file).unwrap();
        assert!(net.keeps_wide_weights(), "a 135M model keeps f32 weights for prompts");
        let at_once = read(&net, &ids, &mut net.cache(ids.len()));

        // As shipped, one token at a time uses the 8-bit weights: close, not equal.
        let one_by_one = |net: &Llama, room: usize| {
            let mut cache = net.cache(room);
            let mut logits = read(net, &ids[..1], &mut cache);
            for t in &ids[1..] {
                logits = net.decode(&[*t], &mut [&mut cache]).unwrap().remove(0);
            }
            assert_eq!(cache.len(), ids.len());
            logits
        };
        let quick = one_by_one(&net, ids.len());
        assert_eq!(argmax(&at_once), argmax(&quick));
        let c = cosine(&at_once, &quick);
        assert!(c > 0.995, "8-bit decoding drifts too far from f32: cosine {c}");

        // With the same weights both ways, the cache (given room for only 4 positions, so it
        // must also grow) reproduces reading at once.
        f32_only(&mut net);
        let at_once = read(&net, &ids, &mut net.cache(ids.len()));
        let exact = one_by_one(&net, 4);
        let d = max_diff(&at_once, &exact);
        assert!(d < 1e-2, "cached decoding differs from reading at once by up to {d}");
    }

    #[test]
    fn a_cached_prefix_gives_the_same_bits_as_reading_the_whole_prompt() {
        let Some(net) = net() else { return };
        let ids = long_prompt(3 * CHUNK + 17);
        let mut whole = net.cache(ids.len() + 8);
        let full = read(net, &ids, &mut whole);
        // Another prompt that shares the first two chunks and then differs.
        let mut other = ids[..2 * CHUNK + 5].to_vec();
        other.extend(long_prompt(40).iter().map(|t| t + 1));
        let mut first = net.cache(other.len());
        read(net, &other, &mut first);
        // Its cache, cut to the shared chunks, then the rest of the first prompt.
        let mut hit = first.prefix(2 * CHUNK, ids.len() + 8);
        let resumed = read(net, &ids[2 * CHUNK..], &mut hit);
        assert_eq!(bits(&resumed), bits(&full), "a prefix cache hit changes the logits");
        assert_eq!(hit.len(), whole.len());
        // And the reply decoded after it is the same too.
        let a = net.decode(&[42], &mut [&mut whole]).unwrap();
        let b = net.decode(&[42], &mut [&mut hit]).unwrap();
        assert_eq!(bits(&a[0]), bits(&b[0]));
    }

    #[test]
    fn a_sequence_decoded_in_a_batch_gets_the_same_bits_as_alone() {
        let Some(net) = net() else { return };
        let prompts: Vec<Vec<u32>> = [11usize, 70, 150, 3].iter().map(|&n| long_prompt(n)).collect();
        let start = |p: &Vec<u32>| {
            let mut c = net.cache(p.len() + 8);
            let l = read(net, p, &mut c);
            (c, argmax(&l) as u32)
        };
        // Alone: three greedy steps each.
        let mut alone = Vec::new();
        for p in &prompts {
            let (mut c, mut t) = start(p);
            let mut steps = Vec::new();
            for _ in 0..3 {
                let l = net.decode(&[t], &mut [&mut c]).unwrap().remove(0);
                t = argmax(&l) as u32;
                steps.push(bits(&l));
            }
            alone.push(steps);
        }
        // Together, with the second sequence joining one step late and the last leaving early.
        let mut seqs: Vec<(Cache, u32)> = prompts.iter().map(start).collect();
        let mut together: Vec<Vec<Vec<u32>>> = vec![Vec::new(); prompts.len()];
        for step in 0..4 {
            let active: Vec<usize> = (0..prompts.len())
                .filter(|&i| together[i].len() < 3 && !(i == 1 && step == 0))
                .filter(|&i| !(i == 3 && step >= 2))
                .collect();
            let tokens: Vec<u32> = active.iter().map(|&i| seqs[i].1).collect();
            let mut caches: Vec<&mut Cache> = Vec::new();
            for (i, (c, _)) in seqs.iter_mut().enumerate() {
                if active.contains(&i) {
                    caches.push(c);
                }
            }
            let out = net.decode(&tokens, &mut caches).unwrap();
            for (&i, l) in active.iter().zip(out) {
                seqs[i].1 = argmax(&l) as u32;
                together[i].push(bits(&l));
            }
        }
        for i in 0..prompts.len() {
            let n = together[i].len();
            assert_eq!(together[i], alone[i][..n], "sequence {i} decoded in a batch differs from alone");
        }
        assert_eq!(together[3].len(), 2, "the last sequence left the batch early");
    }

    #[test]
    fn the_thread_count_does_not_change_the_bits() {
        let Some(net) = net() else { return };
        let ids = long_prompt(CHUNK + 30);
        let run = |threads: usize| {
            pool(threads).install(|| {
                let mut a = net.cache(ids.len() + 4);
                let mut b = net.cache(20);
                let la = read(net, &ids, &mut a);
                let lb = read(net, &ids[..9], &mut b);
                let step = net.decode(&[argmax(&la) as u32, argmax(&lb) as u32], &mut [&mut a, &mut b]).unwrap();
                (bits(&la), bits(&lb), bits(&step[0]), bits(&step[1]))
            })
        };
        let one = run(1);
        assert_eq!(run(2), one, "2 threads give other bits than 1");
        assert_eq!(run(3), one, "3 threads give other bits than 1");
    }

    #[test]
    fn an_empty_read_is_an_error_not_a_panic() {
        let Some(net) = net() else { return };
        assert!(net.prefill(&[], &mut net.cache(1), GO).is_err());
        assert!(net.decode(&[], &mut []).is_err());
        assert!(net.prefill(&[u32::MAX], &mut net.cache(1), GO).is_err(), "a token outside the vocabulary");
    }
}
