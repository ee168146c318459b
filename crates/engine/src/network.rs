//! A network on a backend: the layer plan (geometry of every layer for the architecture's
//! input size), its parameters with gradients and momentum, forward (keeping what backward and
//! the deconvnet need: inputs, switches, LRN scales, dropout masks), backward, and the §3
//! update (SGD with momentum, then filter RMS renormalisation).

use crate::arch::{Architecture, LayerSpec};
use crate::backend::{Backend, Gradients, Momentum};
use crate::geometry::{ConvGeometry, LinearGeometry, LrnGeometry, PoolGeometry};
use crate::lrn::LrnConfig;
use crate::rng::{purpose, rng_for, stream_key};

/// A layer with its geometry resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Conv {
        param: usize,
        geometry: ConvGeometry,
    },
    Relu,
    MaxPool {
        geometry: PoolGeometry,
    },
    Lrn {
        channels: usize,
        plane: usize,
    },
    Dropout {
        p: f64,
    },
    Linear {
        param: usize,
        n_in: usize,
        n_out: usize,
    },
}

/// A named weight tensor (and its bias) with gradient and momentum buffers.
pub struct Param<B: Backend> {
    pub name: String,
    /// Weight shape: [K, C, k, k] for conv, [out, in] for linear.
    pub shape: Vec<usize>,
    pub weight: B::Buffer,
    pub bias: B::Buffer,
    pub weight_grad: B::Buffer,
    pub bias_grad: B::Buffer,
    pub weight_velocity: B::Buffer,
    pub bias_velocity: B::Buffer,
}

impl<B: Backend> Param<B> {
    pub fn is_conv(&self) -> bool {
        self.shape.len() == 4
    }

    /// Weights per filter (conv) or per output unit (linear).
    pub fn filter_len(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

/// Everything a forward pass keeps for backward and for the deconvnet.
pub struct Activations<B: Backend> {
    pub batch: usize,
    /// `outputs[i]` is the output of op `i`; the input is kept separately. A conv or fc
    /// output followed by a ReLU is rectified in place and moved to the ReLU's slot, leaving
    /// an empty buffer in its own.
    pub input: B::Buffer,
    pub outputs: Vec<B::Buffer>,
    pub switches: Vec<Option<B::Switches>>,
    pub lrn_scales: Vec<Option<B::Buffer>>,
    pub dropout_masks: Vec<Option<B::Buffer>>,
}

impl<B: Backend> Activations<B> {
    /// The classifier's logits (N x C).
    pub fn logits(&self) -> &B::Buffer {
        self.outputs.last().expect("a network has layers")
    }
}

/// Whether dropout is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Dropout on, with masks from the stream keyed by this value.
    Train {
        dropout_stream: u64,
    },
    Eval,
}

/// A parameter's name and shape, before any value exists.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamShape {
    pub name: String,
    /// [K, C, k, k] for conv, [out, in] for linear.
    pub shape: Vec<usize>,
    pub bias_len: usize,
}

/// An architecture's layer plan: every op with its geometry, its output shape and the
/// parameters it owns, computed from the layer list alone (no buffer is allocated).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Per-op output shape (C, H, W); fc outputs are (units, 1, 1).
    pub shapes: Vec<(usize, usize, usize)>,
    pub params: Vec<ParamShape>,
}

impl Plan {
    pub fn of(architecture: &Architecture) -> Plan {
        let mut ops = Vec::new();
        let mut params = Vec::new();
        let mut shapes = Vec::new();
        let (mut c, mut h, mut w) = (3, architecture.input_size, architecture.input_size);
        let mut new_param = |name: &str, shape: Vec<usize>, bias_len: usize| {
            params.push(ParamShape {
                name: name.to_owned(),
                shape,
                bias_len,
            });
            params.len() - 1
        };
        for layer in &architecture.layers {
            let op = match layer {
                LayerSpec::Conv {
                    name,
                    filters,
                    kernel,
                    stride,
                    pad,
                } => {
                    let geometry = ConvGeometry {
                        in_channels: c,
                        in_h: h,
                        in_w: w,
                        out_channels: *filters,
                        kernel: *kernel,
                        stride: *stride,
                        pad: *pad,
                    };
                    let param = new_param(name, vec![*filters, c, *kernel, *kernel], *filters);
                    (c, h, w) = (*filters, geometry.out_h(), geometry.out_w());
                    Op::Conv { param, geometry }
                }
                LayerSpec::Relu => Op::Relu,
                LayerSpec::MaxPool { size, stride } => {
                    let geometry = PoolGeometry {
                        channels: c,
                        in_h: h,
                        in_w: w,
                        size: *size,
                        stride: *stride,
                    };
                    (h, w) = (geometry.out_h(), geometry.out_w());
                    Op::MaxPool { geometry }
                }
                LayerSpec::Lrn => Op::Lrn {
                    channels: c,
                    plane: h * w,
                },
                LayerSpec::Dropout { p } => Op::Dropout { p: *p },
                LayerSpec::Linear { name, units } => {
                    let n_in = c * h * w;
                    let param = new_param(name, vec![*units, n_in], *units);
                    (c, h, w) = (*units, 1, 1);
                    Op::Linear {
                        param,
                        n_in,
                        n_out: *units,
                    }
                }
            };
            ops.push(op);
            shapes.push((c, h, w));
        }
        Plan {
            ops,
            shapes,
            params,
        }
    }

    /// Weights and biases.
    pub fn parameters(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.shape.iter().product::<usize>() + p.bias_len)
            .sum()
    }

    /// Bytes the network holds on its backend: every parameter's value, gradient and
    /// momentum in f32 (the legend's 12 P).
    pub fn model_bytes(&self) -> u64 {
        12 * self.parameters() as u64
    }

    /// Bytes one image takes in a training step, computed from the shapes (an estimate, not
    /// a measurement): what the forward pass keeps (the input, every op's output, a pooling
    /// switch per pooled output, the LRN scales, the dropout masks) plus the backward pass's
    /// two largest gradients alive at once, 4 bytes a value.
    pub fn training_bytes_per_image(&self) -> u64 {
        let input = self.ops.first().map_or(0, |op| match op {
            Op::Conv { geometry, .. } => geometry.in_channels * geometry.in_h * geometry.in_w,
            Op::Linear { n_in, .. } => *n_in,
            _ => 0,
        });
        let sizes: Vec<usize> = self.shapes.iter().map(|&(c, h, w)| c * h * w).collect();
        let kept: usize = self
            .ops
            .iter()
            .zip(&sizes)
            .map(|(op, &size)| match op {
                // The conv or fc output is rectified in place and moved to the ReLU's slot.
                Op::Relu => 0,
                Op::MaxPool { .. } | Op::Lrn { .. } | Op::Dropout { .. } => 2 * size,
                _ => size,
            })
            .sum();
        let mut largest = sizes.clone();
        largest.push(input);
        largest.sort_unstable_by(|a, b| b.cmp(a));
        let gradients: usize = largest.iter().take(2).sum();
        4 * (input + kept + gradients) as u64
    }
}

pub struct Network<B: Backend> {
    pub backend: B,
    pub architecture: Architecture,
    pub ops: Vec<Op>,
    pub params: Vec<Param<B>>,
    /// Per-op output shape (C, H, W); fc outputs are (units, 1, 1).
    pub shapes: Vec<(usize, usize, usize)>,
    pub lrn: LrnConfig,
    /// Filters renormalised by [`Network::update`] since the last
    /// [`Network::take_renormalised`].
    renormalised: B::Counter,
}

impl<B: Backend> Network<B> {
    /// Builds the plan and initialises weights as in §3: N(0, init_std^2) weights ("all
    /// weights initialised to 1e-2"), zero biases. `seed` keys the initialisation stream.
    pub fn new(backend: B, architecture: Architecture, init_std: f64, seed: u64) -> Self {
        use rand_distr::{Distribution, Normal};
        let Plan {
            ops,
            shapes,
            params: specs,
        } = Plan::of(&architecture);
        let normal = Normal::new(0.0, init_std).expect("finite std");
        let params = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                let len: usize = spec.shape.iter().product();
                let mut rng = rng_for(&[seed, purpose::INIT, index as u64]);
                let values: Vec<f32> = (0..len).map(|_| normal.sample(&mut rng) as f32).collect();
                Param {
                    name: spec.name,
                    shape: spec.shape,
                    weight: backend.upload(&values),
                    bias: backend.zeros(spec.bias_len),
                    weight_grad: backend.zeros(len),
                    bias_grad: backend.zeros(spec.bias_len),
                    weight_velocity: backend.zeros(len),
                    bias_velocity: backend.zeros(spec.bias_len),
                }
            })
            .collect();
        Network {
            renormalised: backend.counter(),
            backend,
            architecture,
            ops,
            params,
            shapes,
            lrn: LrnConfig::default(),
        }
    }

    pub fn classes(&self) -> usize {
        self.architecture.classes
    }

    /// Values per image at the input.
    pub fn input_len(&self) -> usize {
        3 * self.architecture.input_size * self.architecture.input_size
    }

    pub fn param(&self, name: &str) -> Option<&Param<B>> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Forward pass of a batch (`input` is N x 3 x S x S).
    pub fn forward(&self, input: B::Buffer, mode: Mode) -> Activations<B> {
        self.forward_observed(input, mode, &mut |_, _| {})
    }

    /// [`Network::forward`], calling `observe(op index, time the op took)` after each op (the
    /// per-op profile of `crates/bench/examples/op_times.rs`). A backend that queues work
    /// (CUDA) reports the time to queue it, not to run it.
    pub fn forward_observed(
        &self,
        input: B::Buffer,
        mode: Mode,
        observe: &mut dyn FnMut(usize, std::time::Duration),
    ) -> Activations<B> {
        let b = &self.backend;
        let batch = b.len(&input) / self.input_len();
        let mut acts = Activations {
            batch,
            input,
            outputs: Vec::with_capacity(self.ops.len()),
            switches: Vec::with_capacity(self.ops.len()),
            lrn_scales: Vec::with_capacity(self.ops.len()),
            dropout_masks: Vec::with_capacity(self.ops.len()),
        };
        for (i, op) in self.ops.iter().enumerate() {
            let started = std::time::Instant::now();
            let (c, h, w) = self.shapes[i];
            let out_len = batch * c * h * w;
            let (mut switches, mut scale, mut mask) = (None, None, None);
            // ReLU rectifies its input in place: the pre-activation is never needed again
            // (backward uses the rectified output, the deconvnet the rectified maps).
            // A conv followed by a ReLU was rectified by the conv itself (fused).
            if matches!(op, Op::Relu) && i > 0 {
                let mut y = std::mem::replace(&mut acts.outputs[i - 1], b.zeros(0));
                if !matches!(self.ops[i - 1], Op::Conv { .. }) {
                    b.relu(&mut y);
                }
                acts.outputs.push(y);
                acts.switches.push(None);
                acts.lrn_scales.push(None);
                acts.dropout_masks.push(None);
                observe(i, started.elapsed());
                continue;
            }
            let x = if i == 0 {
                &acts.input
            } else {
                &acts.outputs[i - 1]
            };
            let y = match op {
                Op::Conv { param, geometry } => {
                    let p = &self.params[*param];
                    let mut y = b.output(out_len);
                    if matches!(self.ops.get(i + 1), Some(Op::Relu)) {
                        b.conv_forward_relu(x, &p.weight, &p.bias, geometry, &mut y);
                    } else {
                        b.conv_forward(x, &p.weight, &p.bias, geometry, &mut y);
                    }
                    y
                }
                Op::Relu => {
                    let mut y = b.copy(x);
                    b.relu(&mut y);
                    y
                }
                Op::MaxPool { geometry } => {
                    let mut y = b.output(out_len);
                    let mut s = b.switches(out_len);
                    b.max_pool(x, geometry, &mut y, &mut s);
                    switches = Some(s);
                    y
                }
                Op::Lrn { channels, plane } => {
                    let mut y = b.output(out_len);
                    let mut s = b.output(out_len);
                    let g = LrnGeometry {
                        channels: *channels,
                        plane: *plane,
                        config: self.lrn,
                    };
                    b.lrn_forward(x, &g, &mut y, &mut s);
                    scale = Some(s);
                    y
                }
                Op::Dropout { p } => {
                    let mut y = b.copy(x);
                    if let Mode::Train { dropout_stream } = mode {
                        let mut m = b.output(out_len);
                        let seed = stream_key(&[dropout_stream, purpose::DROPOUT, i as u64]);
                        b.dropout(&mut y, *p, seed, &mut m);
                        mask = Some(m);
                    }
                    y
                }
                Op::Linear { param, n_in, n_out } => {
                    let p = &self.params[*param];
                    let mut y = b.output(out_len);
                    let g = LinearGeometry {
                        n_in: *n_in,
                        n_out: *n_out,
                    };
                    b.linear_forward(x, &p.weight, &p.bias, &g, &mut y);
                    y
                }
            };
            acts.outputs.push(y);
            acts.switches.push(switches);
            acts.lrn_scales.push(scale);
            acts.dropout_masks.push(mask);
            observe(i, started.elapsed());
        }
        acts
    }

    /// Backward from the softmax cross-entropy of `labels`; fills every parameter gradient
    /// and returns the loss (read once the whole backward pass is queued, so a GPU is not
    /// left idle waiting for it).
    pub fn backward(&mut self, acts: &Activations<B>, labels: &[usize]) -> f32 {
        let loss = self.backward_queued(acts, labels);
        self.backend.read_loss(loss)
    }

    /// [`Network::backward`] without reading the loss: on a GPU the pass is queued and the
    /// host goes on (read the loss with [`Backend::read_loss`] when it is wanted).
    pub fn backward_queued(&mut self, acts: &Activations<B>, labels: &[usize]) -> B::Loss {
        let b = &self.backend;
        let classes = self.classes();
        let mut grad = b.output(acts.batch * classes);
        let pending_loss = b.softmax_cross_entropy(acts.logits(), labels, classes, &mut grad);
        for i in (0..self.ops.len()).rev() {
            let x = if i == 0 {
                &acts.input
            } else {
                &acts.outputs[i - 1]
            };
            let need_dx = i > 0;
            let x_len = b.len(x);
            grad = match &self.ops[i] {
                Op::Conv { param, geometry } => {
                    let p = &mut self.params[*param];
                    let mut dx = need_dx.then(|| b.output(x_len));
                    let grads = Gradients {
                        input: dx.as_mut(),
                        weight: &mut p.weight_grad,
                        bias: &mut p.bias_grad,
                    };
                    b.conv_backward(x, &p.weight, &grad, geometry, grads);
                    match dx {
                        Some(dx) => dx,
                        None => break,
                    }
                }
                Op::Relu => {
                    b.relu_backward(&acts.outputs[i], &mut grad);
                    grad
                }
                Op::MaxPool { geometry } => {
                    let mut dx = b.output(x_len);
                    let switches = acts.switches[i].as_ref().expect("pool keeps switches");
                    b.unpool(&grad, switches, geometry, &mut dx);
                    dx
                }
                Op::Lrn { channels, plane } => {
                    let mut dx = b.output(x_len);
                    let scale = acts.lrn_scales[i].as_ref().expect("lrn keeps scales");
                    let g = LrnGeometry {
                        channels: *channels,
                        plane: *plane,
                        config: self.lrn,
                    };
                    b.lrn_backward(x, &acts.outputs[i], scale, &grad, &g, &mut dx);
                    dx
                }
                Op::Dropout { .. } => {
                    if let Some(mask) = &acts.dropout_masks[i] {
                        b.apply_mask(&mut grad, mask);
                    }
                    grad
                }
                Op::Linear { param, n_in, n_out } => {
                    let p = &mut self.params[*param];
                    let mut dx = need_dx.then(|| b.output(x_len));
                    let g = LinearGeometry {
                        n_in: *n_in,
                        n_out: *n_out,
                    };
                    let grads = Gradients {
                        input: dx.as_mut(),
                        weight: &mut p.weight_grad,
                        bias: &mut p.bias_grad,
                    };
                    b.linear_backward(x, &p.weight, &grad, &g, grads);
                    match dx {
                        Some(dx) => dx,
                        None => break,
                    }
                }
            };
        }
        pending_loss
    }

    /// §3 update: SGD with momentum on every parameter, then every conv filter whose RMS
    /// exceeds `filter_rms_radius` (if > 0) is rescaled to it (counted on the backend; see
    /// [`Network::take_renormalised`]).
    pub fn update(&mut self, config: &UpdateConfig) {
        let b = &self.backend;
        for p in &mut self.params {
            let weights = Momentum {
                learning_rate: config.learning_rate,
                momentum: config.momentum,
                weight_decay: config.weight_decay,
            };
            b.sgd_momentum(
                &mut p.weight,
                &p.weight_grad,
                &mut p.weight_velocity,
                &weights,
            );
            // Biases are not decayed.
            let biases = Momentum {
                weight_decay: 0.0,
                ..weights
            };
            b.sgd_momentum(&mut p.bias, &p.bias_grad, &mut p.bias_velocity, &biases);
            if p.is_conv() && config.filter_rms_radius > 0.0 {
                let filter_len = p.filter_len();
                b.renormalise_filters(
                    &mut p.weight,
                    filter_len,
                    config.filter_rms_radius,
                    &mut self.renormalised,
                );
            }
        }
    }

    /// Conv filters renormalised by the updates since the last call (a read from the device
    /// on a GPU, so callers read it once per epoch rather than per step).
    pub fn take_renormalised(&mut self) -> u64 {
        self.backend.take_count(&mut self.renormalised)
    }
}

/// The knobs of one SGD update (§3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateConfig {
    /// Paper: 1e-2, annealed.
    pub learning_rate: f64,
    /// Paper: 0.9.
    pub momentum: f64,
    /// Not stated in the paper; Krizhevsky et al. used 5e-4.
    pub weight_decay: f64,
    /// Paper: 1e-1; 0 switches renormalisation off (Fig. 6(a)).
    pub filter_rms_radius: f64,
}
