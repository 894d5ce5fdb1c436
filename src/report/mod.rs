//! The HTML report: every analysis of [`crate::analysis`] on one model and prompt, in one self-contained file
//! (inline CSS, inline JavaScript that draws the charts from an inline JSON blob; no network access, viewable offline).
//!
//! Charts: the attention pattern of every head on the prompt (canvas heatmaps), the attention of the strongest
//! induction heads on repeated random tokens, the table of induction / previous-token / duplicate-token scores, the
//! logit-lens heatmap (SVG, target probability per layer and position, top token in each cell), and the direct logit
//! attribution bar charts of heads, sublayers and neurons, and activation-patching heatmaps (residual stream by layer and
//! position, heads) of an induction task. Each chart is an element with a `data-chart` attribute
//! that the script fills and marks `data-rendered="1"`.

use serde::Serialize;
use tlens_cache_core::RunOptions;
use tlens_model::Kernels;
use tlens_model::patching::LogitDiff;
use tlens_model::{LoadedModel, TokenBatch};

use crate::analysis::attribution::{Dla, DlaArgs, direct_logit_attribution};
use crate::analysis::heads::{HeadScores, HeadScoresArgs, attention_patterns, head_scores};
use crate::analysis::input::token_strings;
use crate::analysis::lens::{LensArgs, LensTable, logit_lens};
use crate::analysis::patching::{PatchReport, standard_sweeps};
use crate::error::Result;

const TEMPLATE: &str = include_str!("template.html");
const SCRIPT: &str = include_str!("report.js");
const STYLE: &str = include_str!("report.css");

/// What goes into a report besides the model.
#[derive(Clone, Debug)]
pub struct ReportArgs {
    /// The model's name as the report shows it.
    pub model_name: String,
    /// The prompt's token ids (one sequence).
    pub tokens: Vec<u32>,
    /// The token to explain at the last position (default: the model's top prediction).
    pub target: Option<u32>,
    /// A counterfactual token for the attribution (default: none).
    pub against: Option<u32>,
    /// How the induction scores are measured.
    pub scores: HeadScoresArgs,
    /// How many top tokens the logit lens keeps per cell.
    pub top_k: usize,
}

/// The steps [`build_report`] reports progress on, in order.
pub const STEPS: [&str; 5] = [
    "running the prompt",
    "scoring heads on repeated random tokens",
    "logit lens",
    "direct logit attribution",
    "activation patching",
];

/// Everything the report shows, as the page's JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The model's name.
    pub model_name: String,
    /// Its shape.
    pub model: ModelSummary,
    /// One line: the clearest induction head.
    pub headline: String,
    /// The prompt's tokens as text.
    pub prompt_tokens: Vec<String>,
    /// The prompt's token ids.
    pub prompt_ids: Vec<u32>,
    /// The model's top next-token predictions after the prompt, `(token, probability)`.
    pub predictions: Vec<(String, f32)>,
    /// Attention patterns on the prompt, `[layer][head]`, each `[q][k]` flattened.
    pub prompt_patterns: Vec<Vec<Vec<f32>>>,
    /// Per-head scores on repeated random tokens.
    pub scores: HeadScores,
    /// The repeated random tokens as text.
    pub score_tokens: Vec<String>,
    /// The logit lens of the prompt.
    pub lens: LensTable,
    /// Text of every token the lens table names, by id.
    pub lens_token_text: std::collections::BTreeMap<u32, String>,
    /// Direct logit attribution at the last position.
    pub dla: Dla,
    /// The attributed token as text.
    pub dla_target: String,
    /// The counterfactual token as text.
    pub dla_against: Option<String>,
    /// Activation patching on an induction task (see `induction_patching`).
    pub patching: PatchReport,
    /// The patching task's clean tokens as text.
    pub patching_tokens: Vec<String>,
    /// The position whose token the corrupted run changes.
    pub patching_changed: usize,
    /// The answer and the wrong answer of the patching metric, as text.
    pub patching_answers: (String, String),
}

/// The report's activation-patching task, built from the head scores' first repeated random sequence `[bos,] r, r`:
/// the clean run is `[bos,] r, r[..n-1]`, which should continue with `r[n-1]`; the corrupted run changes the first
/// `r[n-1]` to a token that is not in `r`, so induction now points at that one. The metric is
/// `logit(r[n-1]) − logit(other)` at the last position.
fn induction_patching(scores: &HeadScores, vocab: usize) -> (Vec<u32>, Vec<u32>, usize, LogitDiff) {
    let offset = usize::from(scores.bos.is_some());
    let n = (scores.tokens.len() - offset) / 2;
    let r = &scores.tokens[offset..offset + n];
    let answer = r[n - 1];
    let vocab = vocab as u32;
    let other = (1..vocab)
        .map(|d| (answer + d) % vocab)
        .find(|t| Some(*t) != scores.bos && !r.contains(t))
        .unwrap_or((answer + 1) % vocab);
    let clean: Vec<u32> = [&scores.tokens[..offset], r, &r[..n - 1]].concat();
    let mut corrupted = clean.clone();
    let changed = offset + n - 1;
    corrupted[changed] = other;
    let metric = LogitDiff {
        correct: answer,
        incorrect: other,
    };
    (clean, corrupted, changed, metric)
}

/// The model's shape, for the report's header.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    /// Layers.
    pub n_layers: usize,
    /// Heads per layer.
    pub n_heads: usize,
    /// Residual width.
    pub d_model: usize,
    /// Vocabulary.
    pub d_vocab: usize,
    /// Context length.
    pub n_ctx: usize,
    /// Whether the blocks have no MLP.
    pub attn_only: bool,
    /// The normalisation, if any.
    pub normalization: Option<String>,
}

/// Runs every analysis for the report; `progress(i)` is called before step `STEPS[i]`.
pub fn build_report<B: Kernels>(
    loaded: &LoadedModel<B>,
    args: &ReportArgs,
    progress: &mut dyn FnMut(usize),
) -> Result<Report> {
    let model = &loaded.model;
    let tokenizer = loaded.tokenizer.as_ref();
    let cfg = model.cfg();
    let text = |ids: &[u32]| token_strings(ids, tokenizer);

    progress(0);
    let tokens = TokenBatch::single(args.tokens.clone())?;
    let (logits, cache) = model.run_with_cache(&tokens, RunOptions::default())?;
    let prompt_patterns = attention_patterns(&cache, 0)?;

    progress(1);
    let bos = tokenizer.and_then(|t| t.bos_token_id());
    let scores = head_scores(model, &args.scores, bos, &mut |_| {})?;

    progress(2);
    let lens = logit_lens(
        &cache,
        tokens.row(0),
        &LensArgs {
            top_k: args.top_k,
            ..Default::default()
        },
    )?;
    let final_top = &lens.top[lens.final_row()][tokens.positions() - 1];
    let predictions = final_top
        .iter()
        .map(|t| (text(&[t.id]).concat(), t.prob))
        .collect();
    let mut lens_token_text = std::collections::BTreeMap::new();
    for id in lens
        .top
        .iter()
        .flatten()
        .flatten()
        .map(|t| t.id)
        .chain(lens.targets.iter().copied())
    {
        lens_token_text
            .entry(id)
            .or_insert_with(|| text(&[id]).concat());
    }

    progress(3);
    let target = args.target.unwrap_or(final_top[0].id);
    let dla = direct_logit_attribution(
        &cache,
        &logits,
        &DlaArgs {
            against: args.against,
            ..DlaArgs::new(target)
        },
    )?;

    progress(4);
    let (clean, corrupted, changed, metric) =
        induction_patching(&scores, cfg.d_vocab.min(cfg.d_vocab_out));
    let patching_tokens = text(&clean);
    let labels: Vec<String> = patching_tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{i}:{t}"))
        .collect();
    let patching = standard_sweeps(
        model,
        &TokenBatch::single(clean)?,
        &TokenBatch::single(corrupted)?,
        metric,
        &labels,
        false,
    )?;

    Ok(Report {
        model_name: args.model_name.clone(),
        model: ModelSummary {
            n_layers: cfg.n_layers,
            n_heads: cfg.n_heads,
            d_model: cfg.d_model,
            d_vocab: cfg.d_vocab,
            n_ctx: cfg.n_ctx,
            attn_only: !cfg.has_mlp(),
            normalization: cfg.normalization_type.map(|n| format!("{n:?}")),
        },
        headline: scores.headline(),
        prompt_tokens: text(tokens.row(0)),
        prompt_ids: tokens.row(0).to_vec(),
        predictions,
        prompt_patterns,
        score_tokens: text(&scores.tokens),
        scores,
        lens,
        lens_token_text,
        dla_target: text(&[target]).concat(),
        dla_against: args.against.map(|a| text(&[a]).concat()),
        dla,
        patching,
        patching_tokens,
        patching_changed: changed,
        patching_answers: (
            text(&[metric.correct]).concat(),
            text(&[metric.incorrect]).concat(),
        ),
    })
}

impl Report {
    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        let json = serde_json::to_string(self)
            .expect("a report always serialises")
            // Keep the JSON from closing its <script> element or opening a comment.
            .replace("</", "<\\/")
            .replace("<!--", "<\\u0021--");
        let title = escape_html(&format!("tlens report: {}", self.model_name));
        let headline = escape_html(&self.headline);
        let expected = self.chart_count().to_string();
        fill(TEMPLATE, |name| match name {
            "TITLE" => Some(&title),
            "HEADLINE" => Some(&headline),
            "EXPECTED" => Some(&expected),
            "STYLE" => Some(STYLE),
            "DATA" => Some(&json),
            "SCRIPT" => Some(SCRIPT),
            _ => None,
        })
    }

    /// How many charts the page's script draws (the browser test checks this many are rendered).
    pub fn chart_count(&self) -> usize {
        let heads = self.model.n_layers * self.model.n_heads;
        // prompt attention per head + induction-sequence attention for the top heads + scores table + lens + DLA
        // charts (heads, layers, and neurons when the model has MLPs).
        // charts (heads, layers, and neurons when the model has MLPs) + the two patching heatmaps.
        heads
            + INDUCTION_PATTERNS.min(heads)
            + 1
            + 1
            + 2
            + usize::from(self.dla.neurons.is_some())
            + 2
    }
}

/// How many heads' patterns on the repeated random tokens the report draws (highest induction scores first).
pub const INDUCTION_PATTERNS: usize = 3;

/// Replaces each `{{NAME}}` of `template` in one pass (values are never scanned for placeholders).
fn fill<'a>(template: &str, value: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        match value(name) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 4 + len]),
        }
        rest = &rest[start + 4 + len..];
    }
    out.push_str(rest);
    out
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
