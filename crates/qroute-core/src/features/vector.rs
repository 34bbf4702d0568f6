//! The feature vector type shared by the policy, the store and training.

use serde::{Deserialize, Serialize};

/// A fixed-size f32 vector of dimension `dim`, stored sparsely: most of its
/// entries are hashed n-gram buckets that are zero for any one prompt.
/// `indices` are strictly increasing and every one is `< dim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub dim: u32,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Features {
    /// Number of stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The dense form, for inspection and tests.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.dim as usize];
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            dense[i as usize] = v;
        }
        dense
    }

    /// Iterates `(index, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (usize, f32)> + '_ {
        self.indices.iter().zip(&self.values).map(|(&i, &v)| (i as usize, v))
    }
}
