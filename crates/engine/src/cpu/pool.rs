//! Max pooling that records its switches (§2.1): "the locations of the maxima within each
//! pooling region", which the deconvnet's unpooling needs.
//!
//! Switches are flat indices into each input plane (`y * W + x`). Ties go to the first maximum
//! in row-major scan order, so switches are deterministic; a NaN propagates (as in PyTorch). Backward and unpooling are the same
//! operation: each output value goes back to its switch location, everything else is zero.

use rayon::prelude::*;

use crate::geometry::PoolGeometry;
use crate::scalar::Scalar;

/// Forward: `y` and `switches` are N x C x OH x OW.
pub fn max_pool<S: Scalar>(x: &[S], g: &PoolGeometry, y: &mut [S], switches: &mut [u32]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let in_plane = g.in_h * g.in_w;
    let out_plane = oh * ow;
    // Parallel over whole images (one plane is too little work per task).
    y.par_chunks_mut(g.out_len())
        .zip(switches.par_chunks_mut(g.out_len()))
        .zip(x.par_chunks(g.in_len()))
        .flat_map_iter(|((y_image, s_image), x_image)| {
            y_image
                .chunks_mut(out_plane)
                .zip(s_image.chunks_mut(out_plane))
                .zip(x_image.chunks(in_plane))
        })
        .for_each(|((y_plane, s_plane), x_plane)| {
            for oy in 0..oh {
                let y0 = oy * g.stride;
                let y1 = (y0 + g.size).min(g.in_h);
                for ox in 0..ow {
                    let x0 = ox * g.stride;
                    let x1 = (x0 + g.size).min(g.in_w);
                    let mut best = y0 * g.in_w + x0;
                    let mut best_value = x_plane[best];
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            let at = iy * g.in_w + ix;
                            // NaN wins, so that a diverged network shows as NaN.
                            if x_plane[at] > best_value || x_plane[at].is_nan() {
                                best_value = x_plane[at];
                                best = at;
                            }
                        }
                    }
                    y_plane[oy * ow + ox] = best_value;
                    s_plane[oy * ow + ox] = best as u32;
                }
            }
        });
}

/// Places each value of `y` (N x C x OH x OW) at its switch in `x` (N x C x H x W, zeroed
/// first). This is both max-pool backward and the deconvnet's unpooling.
pub fn unpool<S: Scalar>(y: &[S], switches: &[u32], g: &PoolGeometry, x: &mut [S]) {
    let in_plane = g.in_h * g.in_w;
    let out_plane = g.out_h() * g.out_w();
    x.par_chunks_mut(g.in_len())
        .zip(y.par_chunks(g.out_len()))
        .zip(switches.par_chunks(g.out_len()))
        .flat_map_iter(|((x_image, y_image), s_image)| {
            x_image
                .chunks_mut(in_plane)
                .zip(y_image.chunks(out_plane))
                .zip(s_image.chunks(out_plane))
        })
        .for_each(|((x_plane, y_plane), s_plane)| {
            x_plane.fill(S::zero());
            for (value, &switch) in y_plane.iter().zip(s_plane) {
                // Overlapping windows (3x3 stride 2) can share a maximum: gradients add up.
                x_plane[switch as usize] = x_plane[switch as usize] + *value;
            }
        });
}
