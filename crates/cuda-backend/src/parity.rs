//! Parity of a backend with the float64 reference ([`engine::F64Backend`]): the check that
//! `zfnet-device-check parity` runs on a GPU, written over any [`Backend`] so that it is
//! tested here, on the CPU backend (which must pass at fp32's tolerances) and on deliberately
//! broken backends (which must fail the row that names their fault): see `tests/parity.rs`.
//!
//! What each row measures, and why it is fair:
//! - **Values** (every op's output, the loss, every gradient, each parameter's change over
//!   two SGD steps, filter renormalisation, a deconvnet projection) by the norm-wise relative error ‖tested − ref‖₂ / ‖ref‖₂
//!   against the float64 reference: the error of the tested backend alone (the reference's
//!   own is ~2^-29 times smaller), in one number that a single outlier cannot hide in and a
//!   tiny-valued map cannot inflate. A NaN or an infinity in either side makes the error
//!   infinite: it never passes (nor does a buffer left unwritten: the GPU side allocates its
//!   outputs filled with NaN for this check, see `CudaBackend::poison_outputs`).
//! - **Pooling switches**, twice. (a) The tested backend's switches must be exactly the argmax
//!   of its *own* pool input: pooling compares and does not round, so any difference is a
//!   bug. (b) The fraction that differs from the reference's own argmax is allowed to grow
//!   with the precision: a rounding error upstream flips near-ties, and bf16 flips many.
//! - **Backward and the deconvnet follow the tested backend's switches**: they are copied into
//!   the reference's activations before its backward pass and its projection. Otherwise one
//!   flipped argmax routes a whole gradient (or projected value) to another pixel on one side
//!   only, and a row fails with no bug anywhere.
//! - **Random choices** (dropout's keep decisions) must be identical: every backend draws the
//!   same ChaCha stream.
//! - The inputs are fresh for every run (the caller passes a seed, printed with the result), so
//!   the tolerances are not tuned to one input.

use engine::deconv::{feature_op, project};
use engine::{Backend, F64Backend, Mode, Network, Op, UpdateConfig};

use crate::Precision;

/// The limits a backend is held to, per quantity, as norm-wise relative errors (fractions
/// for the switches).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Forward values: every op's output, the loss, the weights after a step, a projection.
    pub values: f64,
    /// Gradients: products of two error-bearing quantities, summed over the batch.
    pub gradients: f64,
    /// The fraction of pooling switches allowed to differ from the reference's own argmax.
    pub switches: f64,
}

impl Tolerance {
    /// The limits for a GPU precision. fp32 rounds each product to 2^-24 and accumulates
    /// in f32; TF32 rounds the operands to 2^-11 and bf16 to 2^-9 (accumulating in f32), which
    /// over eight layers of random (uncorrelated) rounding gives errors of ~1e-3 and ~1e-2.
    pub fn of(precision: Precision) -> Tolerance {
        match precision {
            Precision::Fp32 => Tolerance {
                values: 1e-4,
                gradients: 1e-3,
                switches: 1e-3,
            },
            Precision::Tf32 => Tolerance {
                values: 1e-2,
                gradients: 3e-2,
                switches: 2e-2,
            },
            Precision::Bf16 => Tolerance {
                values: 4e-2,
                gradients: 1e-1,
                switches: 1e-1,
            },
        }
    }
}

/// ‖tested − reference‖₂ / ‖reference‖₂, in f64; ‖tested‖₂ when the reference is all zeros;
/// infinite when either holds a NaN or an infinity, or when the lengths differ.
pub fn relative_error(reference: &[f64], tested: &[f32]) -> f64 {
    let tested: Vec<f64> = tested.iter().map(|&t| f64::from(t)).collect();
    relative_error_f64(reference, &tested)
}

/// [`relative_error`] of values already in f64 (differences of f32 values, say).
pub fn relative_error_f64(reference: &[f64], tested: &[f64]) -> f64 {
    if reference.len() != tested.len() {
        return f64::INFINITY;
    }
    let (mut difference, mut norm) = (0.0f64, 0.0f64);
    for (&r, &t) in reference.iter().zip(tested) {
        if !r.is_finite() || !t.is_finite() {
            return f64::INFINITY;
        }
        difference += (t - r) * (t - r);
        norm += r * r;
    }
    if norm == 0.0 {
        difference.sqrt()
    } else {
        (difference / norm).sqrt()
    }
}

/// One line of the parity table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub what: String,
    pub error: f64,
    pub tolerance: f64,
}

impl Row {
    /// Within its tolerance, and finite (a NaN compares false with everything, so this is
    /// written to fail on it).
    pub fn passes(&self) -> bool {
        self.error.is_finite() && self.error <= self.tolerance
    }

    /// The row as a line of a Markdown table.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {:.2e} | {:.0e} | {} |",
            self.what,
            self.error,
            self.tolerance,
            if self.passes() { "ok" } else { "FAIL" }
        )
    }
}

/// The rows of one parity check, handed to `on_row` as each is measured (so that a fault
/// later in the check does not lose the earlier ones).
pub struct Parity<'a> {
    pub rows: Vec<Row>,
    on_row: Box<dyn FnMut(&Row) + 'a>,
}

impl<'a> Parity<'a> {
    pub fn new(on_row: impl FnMut(&Row) + 'a) -> Self {
        Parity {
            rows: Vec::new(),
            on_row: Box::new(on_row),
        }
    }

    pub fn push(&mut self, what: impl Into<String>, error: f64, tolerance: f64) {
        let row = Row {
            what: what.into(),
            error,
            tolerance,
        };
        (self.on_row)(&row);
        self.rows.push(row);
    }

    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|row| !row.passes()).count()
    }

    /// The row named `what`.
    pub fn row(&self, what: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.what == what)
    }
}

/// The header of the parity table.
pub const TABLE_HEADER: &str =
    "| quantity | error (norm-wise relative, or fraction) | tolerance | |\n|---|---|---|---|";

/// An op's name in the table.
pub fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Conv { .. } => "conv",
        Op::Relu => "relu",
        Op::MaxPool { .. } => "max pool",
        Op::Lrn { .. } => "lrn",
        Op::Dropout { .. } => "dropout",
        Op::Linear { .. } => "linear",
    }
}

/// Uniform in [-1, 1), `len` values of the ChaCha stream `seed`.
pub fn uniform_input(len: usize, seed: u64) -> Vec<f32> {
    engine::rng::uniform_stream(seed, len)
        .into_iter()
        .map(|u| (2.0 * u - 1.0) as f32)
        .collect()
}

/// The update of the check's two SGD steps (the second uses the momentum of the first). The
/// learning rate is 1, not §3's 0.01, so that a step is large against the f32 rounding of
/// the weights it changes (at 0.01 a weight's change can be smaller than the rounding of the
/// weight, and the change could not be compared); the radius is out of reach, so that no
/// filter is renormalised in the step: renormalisation is checked on its own.
pub const UPDATE: UpdateConfig = UpdateConfig {
    learning_rate: 1.0,
    momentum: 0.9,
    weight_decay: 5e-4,
    filter_rms_radius: 1e30,
};

/// A radius that splits `weights`' filters (of `filter_len` values) at the widest gap between
/// neighbouring RMS values in their middle half: between a quarter and three quarters of the
/// filters are renormalised, and none sits so close to the radius that rounding could decide
/// it.
/// `None` with fewer than two filters or no gap.
pub fn median_gap_radius(weights: &[f32], filter_len: usize) -> Option<f64> {
    let mut rms = engine::cpu::sgd::filter_rms(weights, filter_len);
    rms.sort_by(f64::total_cmp);
    let n = rms.len();
    if n < 2 {
        return None;
    }
    let (first, last) = if n >= 4 {
        (n / 4, 3 * n / 4)
    } else {
        (0, n - 1)
    };
    (first..last)
        .map(|i| (rms[i + 1] - rms[i], i))
        .filter(|(gap, _)| *gap > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, i)| (rms[i] + rms[i + 1]) / 2.0)
}
/// Runs `tested` (its weights as they are) beside a float64 copy of it on `batch` random
/// images drawn from `seed`: a training forward pass, the pooling switches, dropout's
/// decisions, backward, two SGD steps, filter renormalisation and, after them, an evaluation
/// forward pass and a deconvnet projection from the last convolutional layer. Every
/// comparison is pushed to `parity`.
pub fn check<B: Backend>(
    tested: &mut Network<B>,
    tolerance: Tolerance,
    batch: usize,
    seed: u64,
    parity: &mut Parity<'_>,
) {
    let backend = tested.backend.clone();
    let mut reference = Network::new(F64Backend, tested.architecture.clone(), 0.01, 0);
    reference.lrn = tested.lrn;
    for (r, t) in reference.params.iter_mut().zip(&tested.params) {
        r.weight = F64Backend.upload(&backend.download(&t.weight));
        r.bias = F64Backend.upload(&backend.download(&t.bias));
    }
    let input = uniform_input(batch * tested.input_len(), seed);
    let classes = tested.classes();
    let labels: Vec<usize> = (0..batch)
        .map(|i| (seed as usize).wrapping_add(i * 3) % classes)
        .collect();
    let mode = Mode::Train {
        dropout_stream: seed,
    };
    let acts = tested.forward(backend.upload(&input), mode);
    let mut ref_acts = reference.forward(F64Backend.upload(&input), mode);

    for (i, (t, r)) in acts.outputs.iter().zip(&ref_acts.outputs).enumerate() {
        if r.is_empty() {
            continue; // a conv's output, rectified in place by the ReLU after it
        }
        let what = format!("op {i} output ({})", op_name(&tested.ops[i]));
        parity.push(
            what,
            relative_error(r, &backend.download(t)),
            tolerance.values,
        );
    }

    let (mut not_argmax, mut off_reference, mut total) = (0usize, 0usize, 0usize);
    let mut tested_switches = Vec::with_capacity(acts.switches.len());
    for (i, switches) in acts.switches.iter().enumerate() {
        let Some(switches) = switches else {
            tested_switches.push(None);
            continue;
        };
        let Op::MaxPool { geometry } = &tested.ops[i] else {
            unreachable!("only pools keep switches")
        };
        let switches = backend.download_switches(switches);
        let pool_input = backend.download(if i == 0 {
            &acts.input
        } else {
            &acts.outputs[i - 1]
        });
        let mut pooled = vec![0.0f32; switches.len()];
        let mut argmax = vec![0u32; switches.len()];
        engine::cpu::pool::max_pool(&pool_input, geometry, &mut pooled, &mut argmax);
        let own = ref_acts.switches[i]
            .as_ref()
            .expect("the reference pooled here");
        not_argmax += switches.iter().zip(&argmax).filter(|(a, b)| a != b).count();
        off_reference += switches.iter().zip(own).filter(|(a, b)| a != b).count();
        total += switches.len();
        tested_switches.push(Some(switches));
    }
    let total = total.max(1) as f64;
    parity.push(
        "pooling switches that are not the argmax of the pool's own input (fraction)",
        not_argmax as f64 / total,
        0.0,
    );
    parity.push(
        "pooling switches that differ from the f64 reference's (fraction)",
        off_reference as f64 / total,
        tolerance.switches,
    );

    let (mut differ, mut units) = (0usize, 0usize);
    for (t, r) in acts.dropout_masks.iter().zip(&ref_acts.dropout_masks) {
        if let (Some(t), Some(r)) = (t, r) {
            let t = backend.download(t);
            differ += t
                .iter()
                .zip(r)
                .filter(|(a, b)| (**a != 0.0) != (**b != 0.0))
                .count();
            units += t.len();
        }
    }
    parity.push(
        "dropout keep decisions that differ (fraction)",
        differ as f64 / units.max(1) as f64,
        0.0,
    );

    // Backward through the tested backend's own routing.
    for (r, t) in ref_acts.switches.iter_mut().zip(&tested_switches) {
        if let Some(t) = t {
            *r = Some(t.clone());
        }
    }
    let loss = tested.backward(&acts, &labels);
    let ref_loss = reference.backward(&ref_acts, &labels);
    parity.push(
        "loss",
        relative_error(&[f64::from(ref_loss)], &[loss]),
        tolerance.values,
    );
    for (t, r) in tested.params.iter().zip(&reference.params) {
        parity.push(
            format!("{} weight gradient", t.name),
            relative_error(&r.weight_grad, &backend.download(&t.weight_grad)),
            tolerance.gradients,
        );
        parity.push(
            format!("{} bias gradient", t.name),
            relative_error(&r.bias_grad, &backend.download(&t.bias_grad)),
            tolerance.gradients,
        );
    }

    // Two SGD steps with momentum; what is compared is each parameter's change, so that a
    // wrong update shows however small the step is against the weights.
    let before: Vec<(Vec<f32>, Vec<f32>)> = tested
        .params
        .iter()
        .map(|p| (backend.download(&p.weight), backend.download(&p.bias)))
        .collect();
    let ref_before: Vec<(Vec<f64>, Vec<f64>)> = reference
        .params
        .iter()
        .map(|p| (p.weight.clone(), p.bias.clone()))
        .collect();
    for _ in 0..2 {
        tested.update(&UPDATE);
        reference.update(&UPDATE);
    }
    let change = |after: &[f32], before: &[f32]| -> Vec<f64> {
        after
            .iter()
            .zip(before)
            .map(|(&a, &b)| f64::from(a) - f64::from(b))
            .collect()
    };
    let ref_change = |after: &[f64], before: &[f64]| -> Vec<f64> {
        after.iter().zip(before).map(|(a, b)| a - b).collect()
    };
    for (((t, r), (w0, b0)), (rw0, rb0)) in tested
        .params
        .iter()
        .zip(&reference.params)
        .zip(&before)
        .zip(&ref_before)
    {
        parity.push(
            format!("{} weight change over two SGD steps", t.name),
            relative_error_f64(
                &ref_change(&r.weight, rw0),
                &change(&backend.download(&t.weight), w0),
            ),
            tolerance.gradients,
        );
        parity.push(
            format!("{} bias change over two SGD steps", t.name),
            relative_error_f64(
                &ref_change(&r.bias, rb0),
                &change(&backend.download(&t.bias), b0),
            ),
            tolerance.gradients,
        );
    }

    // Renormalisation on its own: each conv layer's weights, the same values on both sides,
    // at a radius that about half of its filters exceed.
    for t in tested.params.iter().filter(|p| p.is_conv()) {
        let weights = backend.download(&t.weight);
        let filter_len = t.filter_len();
        let Some(radius) = median_gap_radius(&weights, filter_len) else {
            continue;
        };
        let (mut w, mut counter) = (backend.upload(&weights), backend.counter());
        backend.renormalise_filters(&mut w, filter_len, radius, &mut counter);
        let count = backend.take_count(&mut counter);
        let (mut ref_w, mut ref_count) = (F64Backend.upload(&weights), 0u64);
        F64Backend.renormalise_filters(&mut ref_w, filter_len, radius, &mut ref_count);
        let filters = weights.len() / filter_len;
        parity.push(
            format!(
                "{} filters renormalised at radius {radius:.3e} ({ref_count} of {filters} in f64; count difference)",
                t.name
            ),
            (count as f64 - ref_count as f64).abs(),
            0.0,
        );
        parity.push(
            format!("{} weight after renormalisation", t.name),
            relative_error(&ref_w, &backend.download(&w)),
            tolerance.values,
        );
    }

    // The deconvnet from the last convolutional layer, on the tested backend's switches, the
    // same signal on both sides: the projection alone is compared.
    let acts = tested.forward(backend.upload(&input), Mode::Eval);
    let mut ref_acts = reference.forward(F64Backend.upload(&input), Mode::Eval);
    for (r, t) in ref_acts.switches.iter_mut().zip(&acts.switches) {
        if let Some(t) = t {
            *r = Some(backend.download_switches(t));
        }
    }
    let layers = tested.params.iter().filter(|p| p.is_conv()).count();
    let op = feature_op(tested, layers).expect("the network has convolutional layers");
    let signal = backend.download(&acts.outputs[op]);
    let projected = project(tested, &acts, op, backend.upload(&signal));
    let ref_projected = project(&reference, &ref_acts, op, F64Backend.upload(&signal));
    parity.push(
        format!("deconvnet projection of layer {layers}, on the tested switches"),
        relative_error(&ref_projected, &backend.download(&projected)),
        tolerance.values,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_is_norm_wise_and_nan_or_infinity_never_passes() {
        assert_eq!(relative_error(&[3.0, 4.0], &[3.0, 4.0]), 0.0);
        // ‖(0.3, 0.4)‖ / ‖(3, 4)‖ = 0.1
        let error = relative_error(&[3.0, 4.0], &[3.3, 4.4]);
        assert!((error - 0.1).abs() < 1e-6, "{error}");
        assert_eq!(relative_error(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
        assert_eq!(relative_error(&[1.0, 2.0], &[1.0, f32::NAN]), f64::INFINITY);
        assert_eq!(
            relative_error(&[1.0, 2.0], &[f32::INFINITY, 2.0]),
            f64::INFINITY
        );
        assert_eq!(relative_error(&[f64::NAN, 2.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(relative_error(&[1.0], &[1.0, 2.0]), f64::INFINITY);
        let nan = Row {
            what: "x".into(),
            error: f64::NAN,
            tolerance: 1.0,
        };
        assert!(!nan.passes());
        assert!(nan.markdown().ends_with("FAIL |"));
    }

    #[test]
    fn the_renormalisation_radius_splits_the_filters_at_their_widest_middle_gap() {
        // Filters of one value each: RMS 1, 2, 3, 7, 8, 9 (|w|); the middle half is 2..8 and
        // its widest gap 3 -> 7.
        let weights = [1.0, -2.0, 3.0, 7.0, -8.0, 9.0];
        assert_eq!(median_gap_radius(&weights, 1), Some(5.0));
        assert_eq!(median_gap_radius(&[1.0], 1), None);
        assert_eq!(median_gap_radius(&[2.0, 2.0, -2.0, 2.0], 1), None);
    }

    #[test]
    fn the_tolerances_grow_with_coarser_arithmetic() {
        let [fp32, tf32, bf16] =
            [Precision::Fp32, Precision::Tf32, Precision::Bf16].map(Tolerance::of);
        for (finer, coarser) in [(fp32, tf32), (tf32, bf16)] {
            assert!(finer.values < coarser.values);
            assert!(finer.gradients < coarser.gradients);
            assert!(finer.switches < coarser.switches);
        }
    }
}
