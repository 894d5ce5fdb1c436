//! A hooked GPT-2-style transformer on burn, generic over the backend: the forward pass with every TransformerLens
//! hook point, weight loading (Hugging Face GPT-2 folders and TransformerLens state dicts), TransformerLens's weight
//! processing, and the tokenizer helpers.

mod activation;
pub mod error;
pub mod gpt2;
pub mod hooked;
pub mod loading;
pub mod processing;
pub mod safetensors_file;
pub mod state_dict;
pub mod tokenizer;
pub mod tokens;

pub use error::{ModelError, Result};
pub use hooked::HookedTransformer;
pub use loading::{
    LoadedModel, load_folder, load_hf_gpt2, load_hf_gpt2_bytes, load_transformerlens,
    load_transformerlens_bytes,
};
pub use processing::Processing;
pub use tokenizer::Tokenizer;
pub use tokens::TokenBatch;
