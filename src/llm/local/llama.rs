//! The llama-architecture network the local provider runs, built on candle's tensor operations.
//!
//! Why not candle's own `quantized_llama`: on CPU it multiplies SmolLM2's 4-bit (Q4_1) weights
//! with scalar code, and a single weight format cannot be fast at both halves of a reply. Reading
//! a prompt multiplies hundreds of tokens at once, which SIMD matrix code does best on f32
//! weights; writing a reply multiplies one token at a time, which is bound by how many bytes of
//! weights are read per token, so 8-bit weights (a quarter of f32's bytes) win. This network holds
//! each projection in both forms when the model is small enough (SmolLM2-135M: about 540 MB of
//! f32 plus 145 MB of 8-bit) and picks one per call. Larger models keep only the compact form.
//!
//! The attention cache belongs to the caller ([`Cache`]), one per reply, so the shared weights
//! are never written while a reply is being made.

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, IndexOp, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;

/// Weight formats candle multiplies with plain scalar code on CPU (no SIMD kernel); they are
/// requantized to Q8_0 for writing.
const SLOW_ON_CPU: [GgmlDType; 3] = [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];

/// The most f32 weight bytes kept for reading prompts: up to about 500M parameters.
const WIDE_BUDGET_BYTES: usize = 2 << 30;

/// The rotary position table covers this many positions at most.
const MAX_POSITIONS: usize = 8192;

/// One weight matrix, in the form for many tokens at once (`wide`, f32) and for one token
/// (`quick`: 8-bit or the file's own fast format).
#[derive(Debug)]
struct Proj {
    wide: Option<QMatMul>,
    quick: QMatMul,
}

impl Proj {
    fn forward(&self, x: &Tensor, many: bool) -> Result<Tensor> {
        match &self.wide {
            Some(w) if many => w.forward(x),
            _ => self.quick.forward(x),
        }
    }
}

#[derive(Debug)]
struct Layer {
    attn_norm: Tensor,
    wq: Proj,
    wk: Proj,
    wv: Proj,
    wo: Proj,
    ffn_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
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
    /// RMS norm epsilon.
    pub eps: f32,
    /// Rotary embedding base.
    pub rope_base: f32,
}

impl Shape {
    fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
}

/// A llama-architecture network's weights, read-only once loaded.
#[derive(Debug)]
pub struct Llama {
    shape: Shape,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Proj,
    cos: Tensor,
    sin: Tensor,
    wide: bool,
}

/// One reply's attention cache: the keys and values of every position read so far.
#[derive(Debug)]
pub struct Cache {
    layers: Vec<KvCache>,
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
}

impl Llama {
    /// Reads the network from a GGUF file. Errors name what is missing or unsupported.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(content: &Content, file: &mut R) -> Result<Llama> {
        let md = |k: &str| content.metadata.get(k).ok_or_else(|| candle_core::Error::Msg(format!("it has no {k}")));
        let count = |k: &str| -> Result<usize> { Ok(md(k)?.to_u32()? as usize) };
        if content.metadata.get("llama.expert_count").and_then(|v| v.to_u32().ok()).unwrap_or(0) > 1 {
            candle_core::bail!("it is a mixture-of-experts model, which the local provider does not run");
        }
        let shape = Shape {
            layers: count("llama.block_count")?,
            dim: count("llama.embedding_length")?,
            heads: count("llama.attention.head_count")?,
            kv_heads: count("llama.attention.head_count_kv")?,
            eps: md("llama.attention.layer_norm_rms_epsilon")?.to_f32()?,
            rope_base: content.metadata.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0),
        };
        if shape.heads == 0
            || shape.kv_heads == 0
            || !shape.heads.is_multiple_of(shape.kv_heads)
            || !shape.dim.is_multiple_of(shape.heads)
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

        let embed_q = read("token_embd.weight")?;
        let embed = embed_q.dequantize(&cpu)?;
        let output = match read("output.weight") {
            Ok(q) => proj(q, wide)?,
            // Tied embeddings (SmolLM2): the output head is the embedding table.
            Err(_) => Proj { wide: None, quick: quick_form(embed_q, Some(&embed))? },
        };
        let norm = read("output_norm.weight")?.dequantize(&cpu)?;
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let mut w = |part: &str| read(&format!("blk.{i}.{part}.weight"));
            layers.push(Layer {
                attn_norm: w("attn_norm")?.dequantize(&cpu)?,
                wq: proj(w("attn_q")?, wide)?,
                wk: proj(w("attn_k")?, wide)?,
                wv: proj(w("attn_v")?, wide)?,
                wo: proj(w("attn_output")?, wide)?,
                ffn_norm: w("ffn_norm")?.dequantize(&cpu)?,
                gate: proj(w("ffn_gate")?, wide)?,
                up: proj(w("ffn_up")?, wide)?,
                down: proj(w("ffn_down")?, wide)?,
            });
        }
        let (cos, sin) = rotary_tables(shape.head_dim(), shape.rope_base)?;
        Ok(Llama { shape, embed, layers, norm, output, cos, sin, wide })
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

    /// An empty attention cache sized for `positions` tokens (it grows if needed).
    pub fn cache(&self, positions: usize) -> Cache {
        let capacity = positions.clamp(1, MAX_POSITIONS);
        Cache { layers: (0..self.shape.layers).map(|_| KvCache::new(2, capacity)).collect(), len: 0 }
    }

    /// Reads `tokens` at the cache's next positions and returns the logits that follow the last.
    pub fn forward(&self, tokens: &[u32], cache: &mut Cache) -> Result<Vec<f32>> {
        let s = self.shape;
        let (n, pos) = (tokens.len(), cache.len);
        if n == 0 {
            candle_core::bail!("no tokens to read");
        }
        if pos + n > MAX_POSITIONS {
            candle_core::bail!("{} positions is more than the {MAX_POSITIONS} this network supports", pos + n);
        }
        let (hd, rep) = (s.head_dim(), s.heads / s.kv_heads);
        let many = n > 1;
        let cpu = Device::Cpu;
        let mut x = self.embed.index_select(&Tensor::new(tokens, &cpu)?, 0)?.unsqueeze(0)?;
        let mask = if many { Some(causal_mask(n, pos)?) } else { None };
        let cos = self.cos.narrow(0, pos, n)?;
        let sin = self.sin.narrow(0, pos, n)?;
        let scale = 1.0 / (hd as f64).sqrt();
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, s.eps)?;
            let heads = |p: &Proj, count: usize| -> Result<Tensor> {
                p.forward(&h, many)?.reshape((1, n, count, hd))?.transpose(1, 2)?.contiguous()
            };
            let q = candle_nn::rotary_emb::rope_i(&heads(&layer.wq, s.heads)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&heads(&layer.wk, s.kv_heads)?, &cos, &sin)?;
            let v = heads(&layer.wv, s.kv_heads)?;
            let (k, v) = kv.append(&k, &v)?;
            let len = pos + n;
            // Grouped-query attention without copying keys: the `rep` query heads that share a
            // key/value head are stacked as extra rows of one matrix product.
            let q = q.reshape((1, s.kv_heads, rep * n, hd))?;
            let att = (q.matmul(&k.t()?)? * scale)?;
            let att = match &mask {
                Some(m) => {
                    att.reshape((1, s.heads, n, len))?.broadcast_add(m)?.reshape((1, s.kv_heads, rep * n, len))?
                }
                None => att,
            };
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y =
                att.matmul(&v.contiguous()?)?.reshape((1, s.heads, n, hd))?.transpose(1, 2)?.reshape((1, n, s.dim))?;
            x = (x + layer.wo.forward(&y, many)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, s.eps)?;
            let g = (candle_nn::ops::silu(&layer.gate.forward(&h, many)?)? * layer.up.forward(&h, many)?)?;
            x = (x + layer.down.forward(&g, many)?)?;
        }
        cache.len += n;
        let last = x.i((.., n - 1..n, ..))?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, s.eps)?;
        // One row: the compact form reads the fewest bytes.
        self.output.forward(&last, false)?.flatten_all()?.to_vec1::<f32>()
    }
}

/// Both forms of a weight matrix (the f32 one only when `wide`).
fn proj(q: QTensor, wide: bool) -> Result<Proj> {
    if !wide {
        return Ok(Proj { wide: None, quick: quick_form(q, None)? });
    }
    let full = q.dequantize(&Device::Cpu)?;
    let quick = quick_form(q, Some(&full))?;
    Ok(Proj { wide: Some(QMatMul::Tensor(full)), quick })
}

/// The form for one token at a time: formats without a fast kernel become Q8_0 (from the f32
/// values when they are at hand), fast formats stay as they are.
fn quick_form(q: QTensor, full: Option<&Tensor>) -> Result<QMatMul> {
    let slow =
        SLOW_ON_CPU.contains(&q.dtype()) || matches!(q.dtype(), GgmlDType::F16 | GgmlDType::BF16 | GgmlDType::F32);
    let fits_blocks = q.shape().dims().last().is_some_and(|d| d.is_multiple_of(GgmlDType::Q8_0.block_size()));
    if !slow {
        return QMatMul::from_qtensor(q);
    }
    let values = match full {
        Some(f) => f.clone(),
        None => q.dequantize(&Device::Cpu)?,
    };
    if fits_blocks {
        QMatMul::from_qtensor(QTensor::quantize(&values, GgmlDType::Q8_0)?)
    } else {
        Ok(QMatMul::Tensor(values))
    }
}

/// Rotary tables for interleaved pairs (llama.cpp's "normal" rope, which llama GGUF files use).
fn rotary_tables(head_dim: usize, base: f32) -> Result<(Tensor, Tensor)> {
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
    Ok((
        Tensor::from_vec(cos, (MAX_POSITIONS, half), &Device::Cpu)?,
        Tensor::from_vec(sin, (MAX_POSITIONS, half), &Device::Cpu)?,
    ))
}

/// Additive causal mask for `n` new positions after `pos` cached ones: `(n, pos + n)`.
fn causal_mask(n: usize, pos: usize) -> Result<Tensor> {
    let len = pos + n;
    let values: Vec<f32> =
        (0..n).flat_map(|i| (0..len).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(values, (n, len), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::BufReader;
    use std::path::PathBuf;

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

    /// Tokens of "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>" in
    /// SmolLM2's vocabulary, looked up by text so the test does not depend on our tokenizer.
    fn prompt(content: &Content) -> Vec<u32> {
        let vocab = content.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
        let id = |t: &str| {
            vocab.iter().position(|v| v.to_string().unwrap() == t).unwrap_or_else(|| panic!("no token {t:?}")) as u32
        };
        ["<|im_start|>", "user", "Ċ", "Name", "Ġthree", "Ġcolours", ".", "<|im_end|>", "Ċ", "<|im_start|>"]
            .iter()
            .map(|t| id(t))
            .collect()
    }

    fn argmax(v: &[f32]) -> usize {
        v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (norm(a) * norm(b))
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

    /// Every projection in f32 for one token too, so cached decoding can be compared exactly.
    fn f32_only(net: &mut Llama) {
        let widen = |p: &mut Proj| {
            if let Some(w) = &p.wide {
                p.quick = w.clone();
            }
        };
        for l in &mut net.layers {
            for p in [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.gate, &mut l.up, &mut l.down] {
                widen(p);
            }
        }
        net.output.quick = QMatMul::Tensor(net.embed.clone());
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
        let mine = ours.forward(&ids, &mut ours.cache(ids.len())).unwrap();

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
        let at_once = net.forward(&ids, &mut net.cache(ids.len())).unwrap();

        // As shipped, one token at a time uses the 8-bit weights: close, not equal.
        let one_by_one = |net: &Llama, room: usize| {
            let mut cache = net.cache(room);
            let mut logits = Vec::new();
            for t in &ids {
                logits = net.forward(&[*t], &mut cache).unwrap();
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
        let at_once = net.forward(&ids, &mut net.cache(ids.len())).unwrap();
        let exact = one_by_one(&net, 4);
        let d = max_diff(&at_once, &exact);
        assert!(d < 1e-2, "cached decoding differs from reading at once by up to {d}");

        // And a prompt read in two pieces (a cached prefix, then the rest) lands on the same.
        let mut split = net.cache(ids.len());
        net.forward(&ids[..5], &mut split).unwrap();
        let two_pieces = net.forward(&ids[5..], &mut split).unwrap();
        let d = max_diff(&at_once, &two_pieces);
        assert!(d < 1e-2, "a cached prefix changes the result by up to {d}");
    }

    #[test]
    fn an_empty_read_is_an_error_not_a_panic() {
        let Some(path) = model_file() else { return };
        let (content, mut file) = open(&path);
        let net = Llama::from_gguf(&content, &mut file).unwrap();
        assert!(net.forward(&[], &mut net.cache(1)).is_err());
    }
}
