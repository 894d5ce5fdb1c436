//! TransformerLens state dicts: parameter names and shapes implied by a config, and reading them into
//! [`TransformerWeights`].

use burn_tensor::{Tensor, TensorData, backend::Backend};
use tlens_cache_core::{
    AttentionWeights, BlockWeights, HookedTransformerConfig, MlpKind, MlpWeights, NormWeights,
    NormalizationType, TransformerWeights,
};

use crate::error::{ModelError, Result};
use crate::safetensors_file::TensorFile;

/// Buffers TransformerLens keeps in its state dict that are not parameters (ignored on load).
const BUFFER_SUFFIXES: [&str; 2] = [".attn.IGNORE", ".attn.mask"];

/// Builds [`TransformerWeights`] from a TransformerLens state dict, checking every name and shape against `cfg`.
pub fn weights_from_state_dict<B: Backend>(
    cfg: &HookedTransformerConfig,
    mut file: TensorFile,
    device: &burn_tensor::Device<B>,
) -> Result<TransformerWeights<B>> {
    let (d, h, kv, dh, m) = (
        cfg.d_model,
        cfg.n_heads,
        cfg.kv_heads(),
        cfg.d_head,
        cfg.d_mlp,
    );
    // Under grouped-query attention TransformerLens stores the key/value parameters as `_W_K`, `_b_K`, ...
    let gqa = if cfg.n_key_value_heads.is_some() {
        "_"
    } else {
        ""
    };
    let path = file.path.clone();
    let mut take = |name: &str, shape: &[usize]| {
        let data = file.take(name, shape)?;
        let count = data
            .as_slice::<f32>()
            .map_or(0, |v| v.iter().filter(|x| !x.is_finite()).count());
        if count > 0 {
            return Err(ModelError::NonFiniteWeight {
                name: name.to_string(),
                path: path.clone(),
                count,
            });
        }
        Ok(data)
    };
    // Not sized by `n_layers`: that count is the config's word until each layer's weights are found.
    let mut blocks = Vec::new();
    for l in 0..cfg.n_layers {
        let p = |s: &str| format!("blocks.{l}.{s}");
        let kv_param = |s: &str| p(&format!("attn.{gqa}{s}"));
        let ln1 = read_norm(&mut take, cfg.normalization_type, &p("ln1"), d, device)?;
        // The norms after each sublayer (Gemma 2) and Qwen 3's query/key norms are RMS norms with weights that
        // fold_ln leaves in place.
        let post = cfg
            .use_normalization_before_and_after
            .then_some(NormalizationType::RMS);
        let qk_norm = cfg.use_qk_norm.then_some(NormalizationType::RMS);
        let attn = AttentionWeights {
            W_Q: tensor(take(&p("attn.W_Q"), &[h, d, dh])?, device),
            W_K: tensor(take(&kv_param("W_K"), &[kv, d, dh])?, device),
            W_V: tensor(take(&kv_param("W_V"), &[kv, d, dh])?, device),
            W_O: tensor(take(&p("attn.W_O"), &[h, dh, d])?, device),
            b_Q: tensor(take(&p("attn.b_Q"), &[h, dh])?, device),
            b_K: tensor(take(&kv_param("b_K"), &[kv, dh])?, device),
            b_V: tensor(take(&kv_param("b_V"), &[kv, dh])?, device),
            b_O: tensor(take(&p("attn.b_O"), &[d])?, device),
            q_norm: read_norm(&mut take, qk_norm, &p("attn.q_norm"), dh, device)?,
            k_norm: read_norm(&mut take, qk_norm, &p("attn.k_norm"), dh, device)?,
        };
        let ln1_post = read_norm(&mut take, post, &p("ln1_post"), d, device)?;
        let (ln2, mlp, ln2_post) = if let Some(kind) = cfg.mlp_kind() {
            let ln2 = read_norm(&mut take, cfg.normalization_type, &p("ln2"), d, device)?;
            let solu_ln = if kind == MlpKind::Solu {
                // TransformerLens gives SoLU's inner norm weights only when the model's norm is LN.
                let kind = if cfg.normalization_type == Some(NormalizationType::LN) {
                    NormalizationType::LN
                } else {
                    NormalizationType::LNPre
                };
                read_norm(&mut take, Some(kind), &p("mlp.ln"), m, device)?
            } else {
                None
            };
            let mlp = MlpWeights {
                W_in: tensor(take(&p("mlp.W_in"), &[d, m])?, device),
                b_in: tensor(take(&p("mlp.b_in"), &[m])?, device),
                W_gate: matches!(kind, MlpKind::Gated(_))
                    .then(|| take(&p("mlp.W_gate"), &[d, m]))
                    .transpose()?
                    .map(|t| tensor(t, device)),
                W_out: tensor(take(&p("mlp.W_out"), &[m, d])?, device),
                b_out: tensor(take(&p("mlp.b_out"), &[d])?, device),
                ln: solu_ln,
            };
            let ln2_post = read_norm(&mut take, post, &p("ln2_post"), d, device)?;
            (ln2, Some(mlp), ln2_post)
        } else {
            (None, None, None)
        };
        blocks.push(BlockWeights {
            ln1,
            attn,
            ln1_post,
            ln2,
            mlp,
            ln2_post,
        });
    }
    let weights = TransformerWeights {
        W_E: tensor(take("embed.W_E", &[cfg.d_vocab, d])?, device),
        W_pos: cfg
            .has_pos_embed()
            .then(|| take("pos_embed.W_pos", &[cfg.n_ctx, d]))
            .transpose()?
            .map(|t| tensor(t, device)),
        blocks,
        ln_final: read_norm(&mut take, cfg.normalization_type, "ln_final", d, device)?,
        W_U: tensor(take("unembed.W_U", &[d, cfg.d_vocab_out])?, device),
        b_U: tensor(take("unembed.b_U", &[cfg.d_vocab_out])?, device),
    };
    file.retain(|name| !BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s)));
    file.finish()?;
    Ok(weights)
}

fn read_norm<B: Backend>(
    take: &mut impl FnMut(&str, &[usize]) -> Result<TensorData>,
    kind: Option<NormalizationType>,
    prefix: &str,
    width: usize,
    device: &burn_tensor::Device<B>,
) -> Result<Option<NormWeights<B>>> {
    let Some(kind) = kind else { return Ok(None) };
    let w = kind
        .has_weights()
        .then(|| take(&format!("{prefix}.w"), &[width]))
        .transpose()?;
    let b = kind
        .centers()
        .then_some(())
        .filter(|_| kind.has_weights())
        .map(|_| take(&format!("{prefix}.b"), &[width]))
        .transpose()?;
    Ok(Some(NormWeights {
        kind,
        w: w.map(|t| tensor(t, device)),
        b: b.map(|t| tensor(t, device)),
    }))
}

/// A float tensor of known rank from data whose shape was already checked.
pub(crate) fn tensor<B: Backend, const D: usize>(
    data: TensorData,
    device: &burn_tensor::Device<B>,
) -> Tensor<B, D> {
    Tensor::from_data(data, device)
}
