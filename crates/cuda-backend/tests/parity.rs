//! The GPU parity check (`cuda_backend::parity`) run here, on CPU backends: the CPU backend
//! passes it at fp32's tolerances, and backends broken on purpose, one fault each, fail the
//! row that names the fault — so the check a GPU run relies on can fail, and fails where it
//! should. The network is `zf_56`: zf's strided conv1 and conv2 (the strided transposes the
//! full net needs), small enough for a test.

use std::borrow::Cow;

use cuda_backend::Precision;
use cuda_backend::parity::{self, Parity, Tolerance};
use engine::geometry::{ConvGeometry, LinearGeometry, LrnGeometry, PoolGeometry};
use engine::{Architecture, Backend, CpuBackend, Gradients, Momentum, Network};

/// One thing a broken backend gets wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// conv1's output (fused with its ReLU) has one NaN, as an unwritten (poisoned) element.
    NanInFirstConv,
    /// Each pool picks the second-largest element of its first window.
    WrongSwitch,
    /// Dropout keeps one unit it should drop.
    DropoutDecision,
    /// The deconvnet's transposed filtering is 1% too large.
    TransposeScaled,
    /// The fc layers' weight gradient is 1% too large.
    LinearGradientScaled,
    /// The SGD update's learning rate is 1% too large.
    SgdScaled,
    /// Renormalisation rescales nothing (and counts nothing).
    NoRenormalisation,
}

/// The CPU backend with `fault`.
#[derive(Clone, Copy)]
struct Broken {
    fault: Fault,
}

const CPU: CpuBackend = CpuBackend;

impl Backend for Broken {
    type Buffer = Vec<f32>;
    type Switches = Vec<u32>;
    type Counter = u64;
    type Loss = f32;

    fn name(&self) -> &'static str {
        "broken"
    }
    fn zeros(&self, len: usize) -> Vec<f32> {
        CPU.zeros(len)
    }
    fn upload(&self, data: &[f32]) -> Vec<f32> {
        CPU.upload(data)
    }
    fn download(&self, buffer: &Vec<f32>) -> Vec<f32> {
        CPU.download(buffer)
    }
    fn read<'a>(&self, buffer: &'a Vec<f32>) -> Cow<'a, [f32]> {
        CPU.read(buffer)
    }
    fn copy(&self, buffer: &Vec<f32>) -> Vec<f32> {
        CPU.copy(buffer)
    }
    fn len(&self, buffer: &Vec<f32>) -> usize {
        buffer.len()
    }
    fn switches(&self, len: usize) -> Vec<u32> {
        CPU.switches(len)
    }
    fn download_switches(&self, switches: &Vec<u32>) -> Vec<u32> {
        switches.clone()
    }
    fn counter(&self) -> u64 {
        0
    }
    fn take_count(&self, counter: &mut u64) -> u64 {
        CPU.take_count(counter)
    }
    fn conv_forward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        g: &ConvGeometry,
        y: &mut Vec<f32>,
    ) {
        CPU.conv_forward(x, w, b, g, y);
    }
    fn conv_forward_relu(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        g: &ConvGeometry,
        y: &mut Vec<f32>,
    ) {
        CPU.conv_forward_relu(x, w, b, g, y);
        if self.fault == Fault::NanInFirstConv && g.in_channels == 3 {
            let middle = y.len() / 2;
            y[middle] = f32::NAN;
        }
    }
    fn conv_backward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        g: &ConvGeometry,
        grads: Gradients<'_, Vec<f32>>,
    ) {
        CPU.conv_backward(x, w, dy, g, grads);
    }
    fn conv_transpose(&self, y: &Vec<f32>, w: &Vec<f32>, g: &ConvGeometry, x: &mut Vec<f32>) {
        CPU.conv_transpose(y, w, g, x);
        if self.fault == Fault::TransposeScaled {
            x.iter_mut().for_each(|v| *v *= 1.01);
        }
    }
    fn max_pool(&self, x: &Vec<f32>, g: &PoolGeometry, y: &mut Vec<f32>, switches: &mut Vec<u32>) {
        CPU.max_pool(x, g, y, switches);
        if self.fault == Fault::WrongSwitch {
            // The first window's runner-up, and its value.
            let window: Vec<usize> = (0..g.size)
                .flat_map(|r| (0..g.size).map(move |c| r * g.in_w + c))
                .collect();
            let mut order = window.clone();
            order.sort_by(|&a, &b| x[b].total_cmp(&x[a]));
            switches[0] = order[1] as u32;
            y[0] = x[order[1]];
        }
    }
    fn unpool(&self, y: &Vec<f32>, switches: &Vec<u32>, g: &PoolGeometry, x: &mut Vec<f32>) {
        CPU.unpool(y, switches, g, x);
    }
    fn lrn_forward(&self, x: &Vec<f32>, g: &LrnGeometry, y: &mut Vec<f32>, scale: &mut Vec<f32>) {
        CPU.lrn_forward(x, g, y, scale);
    }
    fn lrn_backward(
        &self,
        x: &Vec<f32>,
        y: &Vec<f32>,
        scale: &Vec<f32>,
        dy: &Vec<f32>,
        g: &LrnGeometry,
        dx: &mut Vec<f32>,
    ) {
        CPU.lrn_backward(x, y, scale, dy, g, dx);
    }
    fn relu(&self, x: &mut Vec<f32>) {
        CPU.relu(x);
    }
    fn relu_backward(&self, y: &Vec<f32>, dy: &mut Vec<f32>) {
        CPU.relu_backward(y, dy);
    }
    fn dropout(&self, x: &mut Vec<f32>, p: f64, seed: u64, mask: &mut Vec<f32>) {
        CPU.dropout(x, p, seed, mask);
        if self.fault == Fault::DropoutDecision {
            let dropped = mask.iter().position(|&m| m == 0.0).expect("a unit dropped");
            mask[dropped] = 2.0;
        }
    }
    fn apply_mask(&self, dy: &mut Vec<f32>, mask: &Vec<f32>) {
        CPU.apply_mask(dy, mask);
    }
    fn linear_forward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        g: &LinearGeometry,
        y: &mut Vec<f32>,
    ) {
        CPU.linear_forward(x, w, b, g, y);
    }
    fn linear_backward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        g: &LinearGeometry,
        grads: Gradients<'_, Vec<f32>>,
    ) {
        let Gradients {
            input,
            weight,
            bias,
        } = grads;
        CPU.linear_backward(
            x,
            w,
            dy,
            g,
            Gradients {
                input,
                weight: &mut *weight,
                bias,
            },
        );
        if self.fault == Fault::LinearGradientScaled {
            weight.iter_mut().for_each(|v| *v *= 1.01);
        }
    }
    fn softmax_cross_entropy(
        &self,
        logits: &Vec<f32>,
        labels: &[usize],
        classes: usize,
        dlogits: &mut Vec<f32>,
    ) -> f32 {
        CPU.softmax_cross_entropy(logits, labels, classes, dlogits)
    }
    fn read_loss(&self, loss: f32) -> f32 {
        loss
    }
    fn softmax(&self, logits: &Vec<f32>, classes: usize) -> Vec<f32> {
        CPU.softmax(logits, classes)
    }
    fn sgd_momentum(&self, w: &mut Vec<f32>, g: &Vec<f32>, v: &mut Vec<f32>, settings: &Momentum) {
        let mut settings = *settings;
        if self.fault == Fault::SgdScaled {
            settings.learning_rate *= 1.01;
        }
        CPU.sgd_momentum(w, g, v, &settings);
    }
    fn renormalise_filters(
        &self,
        w: &mut Vec<f32>,
        filter_len: usize,
        radius: f64,
        rescaled: &mut u64,
    ) {
        if self.fault != Fault::NoRenormalisation {
            CPU.renormalise_filters(w, filter_len, radius, rescaled);
        }
    }
}

/// The check on `fault`, at fp32's tolerances: the rows that fail.
fn failing_rows(fault: Fault) -> Vec<String> {
    let architecture = Architecture::from_name("zf_56", 10).expect("zf_56");
    let mut network = Network::new(Broken { fault }, architecture, 0.05, 7);
    let mut parity = Parity::new(|row| eprintln!("{}", row.markdown()));
    parity::check(
        &mut network,
        Tolerance::of(Precision::Fp32),
        4,
        2026,
        &mut parity,
    );
    assert!(
        parity.rows.len() > 40,
        "every op, switch, gradient and weight has a row"
    );
    parity
        .rows
        .iter()
        .filter(|row| !row.passes())
        .map(|row| row.what.clone())
        .collect()
}

#[test]
fn the_cpu_backend_passes_parity_with_the_f64_reference_at_fp32_tolerances() {
    assert_eq!(failing_rows(Fault::None), Vec::<String>::new());
}

#[test]
fn an_unwritten_element_fails_its_op_and_everything_after_it() {
    let failing = failing_rows(Fault::NanInFirstConv);
    assert!(
        failing.contains(&"op 1 output (relu)".to_owned()),
        "{failing:?}"
    );
    assert!(
        failing.iter().any(|row| row.contains("weight gradient")),
        "{failing:?}"
    );
}

#[test]
fn a_switch_that_is_not_the_argmax_fails_the_exact_switch_row() {
    let failing = failing_rows(Fault::WrongSwitch);
    assert!(
        failing.contains(
            &"pooling switches that are not the argmax of the pool's own input (fraction)"
                .to_owned()
        ),
        "{failing:?}"
    );
}

#[test]
fn a_different_random_choice_fails_the_dropout_row() {
    let failing = failing_rows(Fault::DropoutDecision);
    assert!(
        failing.contains(&"dropout keep decisions that differ (fraction)".to_owned()),
        "{failing:?}"
    );
}

#[test]
fn a_wrong_transposed_filtering_fails_the_projection_row_alone() {
    let failing = failing_rows(Fault::TransposeScaled);
    assert_eq!(
        failing,
        vec!["deconvnet projection of layer 5, on the tested switches".to_owned()]
    );
}

#[test]
fn a_wrong_fc_weight_gradient_fails_the_fc_gradient_rows() {
    let failing = failing_rows(Fault::LinearGradientScaled);
    assert!(!failing.is_empty());
    assert!(
        failing.iter().all(|row| row.starts_with("fc")
            && (row.contains("weight gradient") || row.contains("weight change"))),
        "{failing:?}"
    );
    assert!(
        failing.iter().any(|row| row.contains("weight gradient")),
        "{failing:?}"
    );
}

#[test]
fn a_wrong_update_fails_the_change_rows_of_every_parameter() {
    let failing = failing_rows(Fault::SgdScaled);
    for name in ["conv1", "conv5", "fc6", "fc8"] {
        for what in ["weight", "bias"] {
            let row = format!("{name} {what} change over two SGD steps");
            assert!(failing.contains(&row), "{row}: {failing:?}");
        }
    }
    // Only those, and the projection, which runs on the stepped weights.
    assert!(
        failing
            .iter()
            .all(|row| row.contains("change over two SGD steps") || row.starts_with("deconvnet")),
        "{failing:?}"
    );
}

#[test]
fn a_renormalisation_that_does_nothing_fails_the_renormalisation_rows() {
    let failing = failing_rows(Fault::NoRenormalisation);
    assert!(
        failing.iter().all(|row| row.contains("renormalis")),
        "{failing:?}"
    );
    for name in ["conv1", "conv2", "conv3", "conv4", "conv5"] {
        assert!(
            failing
                .iter()
                .any(|row| row.starts_with(&format!("{name} filters renormalised"))),
            "{name}: {failing:?}"
        );
    }
}
