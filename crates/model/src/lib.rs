//! A hooked transformer on burn, generic over the backend: the forward pass with every TransformerLens hook point
//! (learned or rotary positions, grouped-query attention, standard or gated MLPs, sequential or parallel blocks),
//! weight loading (Hugging Face checkpoints of GPT-2, GPT-NeoX, GPT-J, OPT, Llama, Mistral, Qwen 2/3, Phi-3 and Gemma 1/2, and
//! TransformerLens state dicts), TransformerLens's weight processing, and the tokenizer helpers.

mod activation;
mod attention;
pub mod error;
pub mod gpt2;
pub mod gradients;
pub mod hf;
pub mod hooked;
pub mod intervention;
pub mod kernels;
mod linear;
pub mod loading;
mod mlp;
pub mod patching;
pub mod processing;
mod rotary;
pub mod safetensors_file;
pub mod state_dict;
pub mod text_file;
pub mod tokenizer;
pub mod tokens;

pub use error::{ModelError, Result};
pub use hooked::HookedTransformer;
pub use intervention::{Intervention, Op, Selector};
pub use kernels::{Kernels, TanhGelu};
pub use loading::{
    LoadedModel, load_folder, load_hf, load_hf_bytes, load_transformerlens,
    load_transformerlens_bytes,
};
pub use processing::Processing;
pub use tokenizer::Tokenizer;
pub use tokens::TokenBatch;
