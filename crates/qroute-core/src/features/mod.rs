//! Request → fixed-size sparse f32 vector.
//!
//! The layout of the vector is fixed by a [`FeatureSpec`] that travels with
//! every policy checkpoint, so a policy is always fed the features it was
//! trained on.

mod hashing;
pub use hashing::{hash_id, tag_hash};
mod text;
mod vector;

pub use text::{prompt_chars, FeatureSpec, Featurizer, RequestContext, DENSE_SLOTS};
pub use vector::Features;
