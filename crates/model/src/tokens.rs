//! [`TokenBatch`]: a checked batch of token ids, and its conversion to a burn tensor.

use burn_tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::error::{ModelError, Result};

/// A non-empty batch of equal-length rows of token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    ids: Vec<u32>,
    batch: usize,
    positions: usize,
}

impl TokenBatch {
    /// Checks that the rows are non-empty and of equal length.
    pub fn new(rows: &[Vec<u32>]) -> Result<Self> {
        let first = rows
            .first()
            .ok_or_else(|| ModelError::EmptyInput("the batch has no rows".into()))?
            .len();
        if first == 0 {
            return Err(ModelError::EmptyInput(
                "the sequences have no tokens".into(),
            ));
        }
        if let Some((row, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != first) {
            return Err(ModelError::RaggedBatch {
                first,
                row,
                len: r.len(),
            });
        }
        Ok(Self {
            ids: rows.concat(),
            batch: rows.len(),
            positions: first,
        })
    }

    /// One sequence.
    pub fn single(row: Vec<u32>) -> Result<Self> {
        Self::new(&[row])
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Number of positions per row.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Row `b`.
    pub fn row(&self, b: usize) -> &[u32] {
        &self.ids[b * self.positions..(b + 1) * self.positions]
    }

    /// The rows.
    pub fn rows(&self) -> Vec<Vec<u32>> {
        self.ids
            .chunks(self.positions)
            .map(<[u32]>::to_vec)
            .collect()
    }

    /// Checks the ids against a vocabulary and the length against a context.
    pub fn check(&self, d_vocab: usize, n_ctx: usize) -> Result<()> {
        if self.positions > n_ctx {
            return Err(ModelError::SequenceTooLong {
                len: self.positions,
                n_ctx,
            });
        }
        if let Some(i) = self.ids.iter().position(|&t| t as usize >= d_vocab) {
            return Err(ModelError::TokenOutOfRange {
                token: self.ids[i],
                batch: i / self.positions,
                position: i % self.positions,
                d_vocab,
            });
        }
        Ok(())
    }

    /// The ids as a flat int tensor `[batch·positions]`.
    pub fn to_flat_tensor<B: Backend>(&self, device: &burn_tensor::Device<B>) -> Tensor<B, 1, Int> {
        let ids: Vec<i64> = self.ids.iter().map(|&t| t as i64).collect();
        Tensor::from_data(TensorData::new(ids, [self.ids.len()]), device)
    }
}
