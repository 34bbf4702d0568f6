//! The few inner loops that dominate scoring and training, compiled twice:
//! once for any x86-64 (SSE2) and once for AVX2 + FMA, picked at run time.
//! The binary stays portable while machines that have AVX2 (nearly all
//! servers) run the loops about twice as fast. Results can differ in the
//! last bits between the two paths (FMA rounds once), never between runs on
//! one machine.

macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$m])*
        #[inline]
        #[allow(clippy::assign_op_pattern)]
        // The one place the workspace allows unsafe: a `target_feature`
        // function is unsafe to call, and is called only after the check.
        #[allow(unsafe_code)]
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    #[target_feature(enable = "avx2,fma")]
                    #[allow(clippy::assign_op_pattern)]
                    // SAFETY: the body is safe Rust; `unsafe` only marks that
                    // the caller must have checked the CPU features.
                    unsafe fn fast($($arg: $ty),*) {
                        #[allow(unused_macros)]
                        macro_rules! fma { ($a:expr, $b:expr, $c:expr) => { $a.mul_add($b, $c) } }
                        $body
                    }
                    // SAFETY: the CPU supports AVX2 and FMA (checked above).
                    return unsafe { fast($($arg),*) };
                }
            }
            #[allow(unused_macros)]
            macro_rules! fma { ($a:expr, $b:expr, $c:expr) => { $a * $b + $c } }
            $body
        }
    };
}

dispatch! {
    /// `y += a · x`.
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = fma!(a, x, *y);
        }
    }
}

dispatch! {
    /// `y = b·y + a·x`.
    pub fn scale_axpy(y: &mut [f32], b: f32, a: f32, x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = fma!(a, x, b * *y);
        }
    }
}

dispatch! {
    /// `y += Σ values[k] · w[indices[k]·n .. +n]`: a sparse vector times a
    /// row-major matrix with rows of `n`.
    pub fn sparse_rows_axpy(y: &mut [f32], indices: &[u32], values: &[f32], w: &[f32], n: usize) {
        for (&i, &v) in indices.iter().zip(values) {
            let row = &w[i as usize * n..(i as usize + 1) * n];
            for (y, &x) in y.iter_mut().zip(row) {
                *y = fma!(v, x, *y);
            }
        }
    }
}

dispatch! {
    /// `y += Σ_{i: z[i] > 0} z[i] · w[i·n .. +n]`: a ReLU layer's output
    /// times the next layer's row-major weights, skipping inactive units.
    pub fn relu_rows_axpy(y: &mut [f32], z: &[f32], w: &[f32], n: usize) {
        for (i, &zi) in z.iter().enumerate() {
            if zi > 0.0 {
                let row = &w[i * n..(i + 1) * n];
                for (y, &x) in y.iter_mut().zip(row) {
                    *y = fma!(zi, x, *y);
                }
            }
        }
    }
}

dispatch! {
    /// One Adam update with decoupled weight decay.
    #[allow(clippy::too_many_arguments)]
    pub fn adam(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], lr_t: f32, b1: f32, b2: f32, eps: f32, decay: f32) {
        let n = p.len().min(g.len()).min(m.len()).min(v.len());
        let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let gi = g[i];
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            p[i] -= lr_t * m[i] / (v[i].sqrt() + eps) + decay * p[i];
        }
    }
}

/// `Σ x²`, with eight independent partial sums so it vectorises (a plain
/// float sum must keep its order and cannot).
#[inline]
pub fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    sum_squares_into(x, &mut acc);
    acc.iter().sum()
}

dispatch! {
    fn sum_squares_into(x: &[f32], acc: &mut [f32; 8]) {
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            for k in 0..8 {
                acc[k] = fma!(c[k], c[k], acc[k]);
            }
        }
        for (k, &v) in chunks.remainder().iter().enumerate() {
            acc[k] = fma!(v, v, acc[k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_plain_loops() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 3.0).collect();
        let mut y = vec![1.0f32; 37];
        axpy(&mut y, 0.5, &x);
        for (i, v) in y.iter().enumerate() {
            assert!((v - (1.0 + 0.5 * x[i])).abs() < 1e-6);
        }
        let w: Vec<f32> = (0..4 * 5).map(|i| i as f32).collect();
        let mut y = vec![0f32; 5];
        sparse_rows_axpy(&mut y, &[1, 3], &[2.0, -1.0], &w, 5);
        assert_eq!(y, vec![10.0 - 15.0, 12.0 - 16.0, 14.0 - 17.0, 16.0 - 18.0, 18.0 - 19.0]);
        let mut y = vec![0f32; 5];
        relu_rows_axpy(&mut y, &[-1.0, 2.0, 0.0, 1.0], &w, 5);
        assert_eq!(y, vec![10.0 + 15.0, 12.0 + 16.0, 14.0 + 17.0, 16.0 + 18.0, 18.0 + 19.0]);
        let v: Vec<f32> = (0..21).map(|i| i as f32).collect();
        assert_eq!(sum_squares(&v), (0..21).map(|i| (i * i) as f32).sum::<f32>());
    }
}
