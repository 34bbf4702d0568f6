//! Request → fixed-size sparse f32 vector.

mod vector;

pub use vector::Features;
