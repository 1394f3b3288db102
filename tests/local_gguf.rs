//! Any llama-architecture GGUF file through `llm.local.model_path` (issue 14.3), not only the
//! SmolLM2-135M file troupe fetches: the test writes a tiny model of its own (random weights
//! with another shape than SmolLM2's: grouped-query attention, an untied output head, a
//! different vocabulary), loads it the way a user's file is loaded, checks the network against
//! candle's reference llama, and writes a few tokens with it. Needs no cached model.

#![cfg(feature = "local-model")]

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use troupe_sim::config::{ProviderKind, SimulationConfig};
use troupe_sim::llm::local::llama::Llama;
use troupe_sim::llm::local::sampler::SamplingParams;
use troupe_sim::llm::local::tokenizer::byte_alphabet;
use troupe_sim::llm::local::{GenerateParams, LocalModel};
use troupe_sim::llm::{CallContext, ChatMessage, ChatRequest, FinishReason, Role, provider_from_config};
use troupe_sim::rng::SplitMix64;

const DIM: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 96;
const LAYERS: usize = 2;

/// The ChatML template as SmolLM2 and many other files carry it.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The vocabulary: the 256 byte characters, a few merges, then three control tokens.
fn vocabulary() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = byte_alphabet().iter().map(|c| c.to_string()).collect();
    let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"].iter().map(|s| s.to_string()).collect();
    tokens.extend(["Ġt", "he", "Ġthe", "in", "Ġa"].map(String::from));
    let mut types = vec![1i32; tokens.len()];
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(special.into());
        types.push(3);
    }
    (tokens, merges, types)
}

fn random(rng: &mut SplitMix64, shape: &[usize], scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Writes a tiny llama GGUF file with random weights; `dtype` for the projections.
fn write_tiny_llama(path: &Path, dtype: GgmlDType) {
    let (tokens, merges, types) = vocabulary();
    let vocab = tokens.len();
    let mut rng = SplitMix64::new(14);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut add = |name: String, t: Tensor, dtype: GgmlDType| {
        tensors.push((name, QTensor::quantize(&t, dtype).unwrap()));
    };
    // Control tokens get a zero embedding row: with an output head that cannot favour them,
    // greedy decoding never stops early, so "a few tokens" are always written.
    let mut embed = random(&mut rng, &[vocab, DIM], 0.5).to_vec2::<f32>().unwrap();
    for row in embed.iter_mut().skip(vocab - 3) {
        row.iter_mut().for_each(|x| *x = 0.0);
    }
    let embed = Tensor::new(embed, &Device::Cpu).unwrap();
    add("token_embd.weight".into(), embed.clone(), GgmlDType::F32);
    // An untied output head whose rows for the control tokens are zero too.
    let mut out = random(&mut rng, &[vocab, DIM], 0.3).to_vec2::<f32>().unwrap();
    for row in out.iter_mut().skip(vocab - 3) {
        row.iter_mut().for_each(|x| *x = 0.0);
    }
    add("output.weight".into(), Tensor::new(out, &Device::Cpu).unwrap(), GgmlDType::F32);
    add("output_norm.weight".into(), Tensor::ones(DIM, candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32);
    let kv = DIM / HEADS * KV_HEADS;
    for i in 0..LAYERS {
        let norm = (random(&mut rng, &[DIM], 0.1) + 1.0).unwrap();
        add(format!("blk.{i}.attn_norm.weight"), norm.clone(), GgmlDType::F32);
        add(format!("blk.{i}.ffn_norm.weight"), norm, GgmlDType::F32);
        for (part, shape) in [
            ("attn_q", [DIM, DIM]),
            ("attn_k", [kv, DIM]),
            ("attn_v", [kv, DIM]),
            ("attn_output", [DIM, DIM]),
            ("ffn_gate", [FFN, DIM]),
            ("ffn_up", [FFN, DIM]),
            ("ffn_down", [DIM, FFN]),
        ] {
            add(format!("blk.{i}.{part}.weight"), random(&mut rng, &shape, 0.2), dtype);
        }
    }
    let text = |s: &str| Value::String(s.into());
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", text("llama")),
        ("general.name", text("tiny-llama")),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.embedding_length", Value::U32(DIM as u32)),
        ("llama.feed_forward_length", Value::U32(FFN as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.rope.dimension_count", Value::U32((DIM / HEADS) as u32)),
        ("llama.context_length", Value::U32(256)),
        ("tokenizer.ggml.model", text("gpt2")),
        ("tokenizer.ggml.pre", text("gpt2")),
        ("tokenizer.ggml.tokens", Value::Array(tokens.iter().map(|t| text(t)).collect())),
        ("tokenizer.ggml.merges", Value::Array(merges.iter().map(|m| text(m)).collect())),
        ("tokenizer.ggml.token_type", Value::Array(types.iter().map(|t| Value::I32(*t)).collect())),
        ("tokenizer.ggml.eos_token_id", Value::U32(vocab as u32 - 1)),
        ("tokenizer.chat_template", text(CHATML)),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &md, &ts).unwrap();
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams { temperature: 0.0, top_p: 1.0, repeat_penalty: 1.0, repeat_last_n: 64, seed: 0 },
        ..GenerateParams::default()
    }
}

const NEVER: &(dyn Fn() -> bool + Sync) = &|| false;

#[test]
fn a_tiny_llama_file_of_another_shape_loads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-llama.gguf");
    write_tiny_llama(&path, GgmlDType::F32);
    let m = LocalModel::load(&path).expect("a valid llama GGUF file loads");
    assert_eq!(m.name(), "tiny-llama");
    assert_eq!(m.max_context(), 256, "the file's own context length");
    assert_eq!(m.tokenizer().vocab_size(), vocabulary().0.len());
    assert_eq!(m.tokenizer().encode(" the"), [m.tokenizer().token_id("Ġthe").unwrap()], "its merges are used");

    let prompt = m.prompt_ids(&[ChatMessage::new(Role::User, "Say the thing.")]);
    assert_eq!(prompt[0], m.tokenizer().token_id("<|im_start|>").unwrap(), "ChatML from the file's template");
    let a = m.generate(&prompt, &greedy(6), NEVER).unwrap();
    assert_eq!((a.ids.len(), a.finish), (6, FinishReason::Length), "{a:?}");
    assert!(a.ids.iter().all(|&t| (t as usize) < m.tokenizer().vocab_size() && !m.tokenizer().is_special(t)));
    let b = m.generate(&prompt, &greedy(6), NEVER).unwrap();
    assert_eq!(a.ids, b.ids, "greedy decoding is deterministic");
    // A prompt longer than the file's context is refused with how to fix it, not run.
    let long = vec![prompt[1]; 300];
    let err = m.generate(&long, &greedy(4), NEVER).unwrap_err();
    assert!(err.to_string().contains("lower llm.max_tokens"), "{err}");
}

#[test]
fn the_network_agrees_with_candles_reference_llama_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-llama.gguf");
    write_tiny_llama(&path, GgmlDType::F32);
    let m = LocalModel::load(&path).unwrap();
    let prompt = m.prompt_ids(&[ChatMessage::new(Role::User, "Hello there, in the tin.")]);

    let read = || {
        let mut file = std::fs::File::open(&path).unwrap();
        (gguf_file::Content::read(&mut file).unwrap(), file)
    };
    let (content, mut file) = read();
    let ours = Llama::from_gguf(&content, &mut file).unwrap();
    let mine = ours.prefill(&prompt, &mut ours.cache(prompt.len()), &|| false).unwrap().expect("not stopped");
    let (content, mut file) = read();
    let mut reference =
        candle_transformers::models::quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
            .unwrap();
    let x = Tensor::new(prompt.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let theirs: Vec<f32> = reference.forward(&x, 0).unwrap().flatten_all().unwrap().to_vec1().unwrap();

    assert_eq!(mine.len(), theirs.len());
    // Ours reads the output head in 8-bit (one row at a time is bound by bytes read), candle
    // in f32: close, not equal.
    let dot: f64 = mine.iter().zip(&theirs).map(|(a, b)| *a as f64 * *b as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cosine = dot / (norm(&mine) * norm(&theirs));
    assert!(cosine > 0.999, "logits differ from candle's llama: cosine {cosine}");
    let best = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    let mut order: Vec<usize> = (0..mine.len()).collect();
    order.sort_by(|a, b| mine[*b].total_cmp(&mine[*a]));
    assert!(order[..3].contains(&best(&theirs)), "candle's most likely token is not among ours' first three");
}

#[test]
fn llm_local_model_path_runs_it_as_the_local_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my-llama-q8.gguf");
    // Projections in Q8_0, as a downloaded file often has them.
    write_tiny_llama(&path, GgmlDType::Q8_0);
    let mut cfg = SimulationConfig::default();
    cfg.llm.provider = ProviderKind::Local;
    cfg.llm.local.model_path = Some(path.clone());
    let (provider, _) = provider_from_config(&cfg).expect("a model_path to a llama GGUF file is a local provider");
    assert_eq!(provider.name(), "local");
    assert_eq!(provider.context_window("any"), Some(256));
    let req = ChatRequest {
        model: "ignored".into(),
        messages: vec![ChatMessage::new(Role::User, "Say the thing.")],
        temperature: Some(0.0),
        top_p: None,
        max_tokens: Some(5),
        seed: Some(1),
        stop: Vec::new(),
        response_format: troupe_sim::llm::ResponseFormat::Text,
        meta: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let r = rt.block_on(provider.chat(Arc::new(req), CallContext::default())).unwrap();
    assert_eq!(r.model, "my-llama-q8");
    assert_eq!(r.usage.completion_tokens, 5);
    assert!(r.usage.prompt_tokens > 5, "{:?}", r.usage);
}
