//! One `Backend` trait with only the ops the ZF net, its training and its analyses need.
//! The CPU backend is the reference; the CUDA backend (issue #5) implements the same trait.
//!
//! Buffers are flat f32 arrays in NCHW order (for fc layers, N x features); the network keeps
//! shapes. Every op writes into a buffer the caller allocated with [`Backend::zeros`].

use imaging::crops::{Crop, write_crop_chw};
use rayon::prelude::*;

use crate::cpu;
use crate::geometry::{ConvGeometry, LinearGeometry, LrnGeometry, PoolGeometry};

/// The gradients a layer's backward pass writes: the input's (`None` for the first layer,
/// whose input needs none), the weights' and the bias's.
pub struct Gradients<'a, T> {
    pub input: Option<&'a mut T>,
    pub weight: &'a mut T,
    pub bias: &'a mut T,
}

/// One SGD-with-momentum update's settings (§3): `v = momentum v - learning_rate (g +
/// weight_decay w)`, `w += v`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Momentum {
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// Backends are cheap handles (`Clone` shares the device): several networks can share one.
pub trait Backend: Send + Sync + Clone {
    /// A device buffer of f32.
    type Buffer: Send + Sync;
    /// Max-pool switches (argmax locations, §2.1).
    type Switches: Send + Sync;
    /// A batch's loss, possibly still being computed (see [`Backend::read_loss`]).
    type Loss: Send;
    /// A count kept where the backend computes (filters renormalised), read only when
    /// wanted, so that an update step needs no round trip to the host.
    type Counter: Send + Sync;

    fn name(&self) -> &'static str;
    fn zeros(&self, len: usize) -> Self::Buffer;
    /// A buffer for an op to overwrite completely (every op's output): zeros by default, as
    /// some CPU kernels accumulate into their output; a GPU backend, whose kernels all write
    /// every element, skips the memset.
    fn output(&self, len: usize) -> Self::Buffer {
        self.zeros(len)
    }
    fn upload(&self, data: &[f32]) -> Self::Buffer;
    fn download(&self, buffer: &Self::Buffer) -> Vec<f32>;
    /// `data` as a buffer, taking ownership: no copy where host memory is the device's (CPU).
    fn upload_owned(&self, data: Vec<f32>) -> Self::Buffer {
        self.upload(&data)
    }
    /// A buffer's values on the host: borrowed where they already are (CPU), else copied.
    fn read<'a>(&self, buffer: &'a Self::Buffer) -> std::borrow::Cow<'a, [f32]> {
        std::borrow::Cow::Owned(self.download(buffer))
    }
    fn copy(&self, buffer: &Self::Buffer) -> Self::Buffer;
    fn len(&self, buffer: &Self::Buffer) -> usize;
    fn switches(&self, len: usize) -> Self::Switches;
    fn download_switches(&self, switches: &Self::Switches) -> Vec<u32>;
    /// A counter at zero.
    fn counter(&self) -> Self::Counter;
    /// The counter's value, which is reset to zero.
    fn take_count(&self, counter: &mut Self::Counter) -> u64;

    /// The network's input for a batch (§3): crop `crops[i]` of image i (square HWC u8
    /// images of side `image_size`), minus the per-pixel `mean` (HWC, image-sized), as CHW
    /// f32. The default crops on the host's threads and uploads the floats; a GPU uploads the
    /// bytes (a quarter as many) and crops on the device.
    fn crop_batch(
        &self,
        images: &[&[u8]],
        image_size: usize,
        crops: &[Crop],
        crop_size: usize,
        mean: &[f32],
    ) -> Self::Buffer {
        self.upload_owned(crop_batch_on_host(
            images, image_size, crops, crop_size, mean,
        ))
    }

    fn conv_forward(
        &self,
        x: &Self::Buffer,
        w: &Self::Buffer,
        b: &Self::Buffer,
        g: &ConvGeometry,
        y: &mut Self::Buffer,
    );
    /// `conv_forward` followed by ReLU in place: the conv-then-rectify pair of every ZF
    /// layer, which a backend may fuse (the CPU backend rectifies in the GEMM's epilogue).
    fn conv_forward_relu(
        &self,
        x: &Self::Buffer,
        w: &Self::Buffer,
        b: &Self::Buffer,
        g: &ConvGeometry,
        y: &mut Self::Buffer,
    ) {
        self.conv_forward(x, w, b, g, y);
        self.relu(y);
    }
    fn conv_backward(
        &self,
        x: &Self::Buffer,
        w: &Self::Buffer,
        dy: &Self::Buffer,
        g: &ConvGeometry,
        grads: Gradients<'_, Self::Buffer>,
    );
    /// The deconvnet's filtering: output space -> input space with transposed filters.
    fn conv_transpose(
        &self,
        y: &Self::Buffer,
        w: &Self::Buffer,
        g: &ConvGeometry,
        x: &mut Self::Buffer,
    );
    fn max_pool(
        &self,
        x: &Self::Buffer,
        g: &PoolGeometry,
        y: &mut Self::Buffer,
        switches: &mut Self::Switches,
    );
    /// Max-pool backward, and the deconvnet's unpooling.
    fn unpool(
        &self,
        y: &Self::Buffer,
        switches: &Self::Switches,
        g: &PoolGeometry,
        x: &mut Self::Buffer,
    );
    fn lrn_forward(
        &self,
        x: &Self::Buffer,
        g: &LrnGeometry,
        y: &mut Self::Buffer,
        scale: &mut Self::Buffer,
    );
    fn lrn_backward(
        &self,
        x: &Self::Buffer,
        y: &Self::Buffer,
        scale: &Self::Buffer,
        dy: &Self::Buffer,
        g: &LrnGeometry,
        dx: &mut Self::Buffer,
    );
    fn relu(&self, x: &mut Self::Buffer);
    fn relu_backward(&self, y: &Self::Buffer, dy: &mut Self::Buffer);
    /// Inverted dropout with probability `p`; the keep-mask comes from a ChaCha stream seeded
    /// with `seed`, so a run is reproducible on any backend that draws the same stream.
    fn dropout(&self, x: &mut Self::Buffer, p: f64, seed: u64, mask: &mut Self::Buffer);
    fn apply_mask(&self, dy: &mut Self::Buffer, mask: &Self::Buffer);
    fn linear_forward(
        &self,
        x: &Self::Buffer,
        w: &Self::Buffer,
        b: &Self::Buffer,
        g: &LinearGeometry,
        y: &mut Self::Buffer,
    );
    fn linear_backward(
        &self,
        x: &Self::Buffer,
        w: &Self::Buffer,
        dy: &Self::Buffer,
        g: &LinearGeometry,
        grads: Gradients<'_, Self::Buffer>,
    );
    /// Mean cross-entropy of N x C logits; writes dL/dlogits. The loss is read with
    /// [`Backend::read_loss`], which a GPU backend defers until the caller needs the number.
    fn softmax_cross_entropy(
        &self,
        logits: &Self::Buffer,
        labels: &[usize],
        classes: usize,
        dlogits: &mut Self::Buffer,
    ) -> Self::Loss;
    /// The mean loss (waits for it on a GPU).
    fn read_loss(&self, loss: Self::Loss) -> f32;
    /// Row-wise softmax probabilities, downloaded.
    fn softmax(&self, logits: &Self::Buffer, classes: usize) -> Vec<f32>;
    fn sgd_momentum(
        &self,
        w: &mut Self::Buffer,
        g: &Self::Buffer,
        v: &mut Self::Buffer,
        settings: &Momentum,
    );
    /// For each image and each of the feature maps `maps` of `x` (N x `channels` x `plane`):
    /// the map's largest value and its first position in the plane, as `[image][map]` — the
    /// deconvnet scan's per-image maximum (Fig. 2). NaNs never win; a plane with nothing above
    /// -inf gives (-inf, 0). A GPU reduces on the device and sends back two numbers per pair.
    fn map_maxima(
        &self,
        x: &Self::Buffer,
        channels: usize,
        plane: usize,
        maps: &[usize],
    ) -> Vec<(f32, u32)> {
        map_maxima_on_host(&self.read(x), channels, plane, maps)
    }
    /// §3 filter renormalisation; adds how many filters were rescaled to `rescaled`.
    fn renormalise_filters(
        &self,
        w: &mut Self::Buffer,
        filter_len: usize,
        radius: f64,
        rescaled: &mut Self::Counter,
    );
}

/// [`Backend::map_maxima`] on the host.
pub fn map_maxima_on_host(
    x: &[f32],
    channels: usize,
    plane: usize,
    maps: &[usize],
) -> Vec<(f32, u32)> {
    let images = x.len() / (channels * plane).max(1);
    let mut maxima = Vec::with_capacity(images * maps.len());
    for image in 0..images {
        for &map in maps {
            let values = &x[(image * channels + map) * plane..][..plane];
            let (position, value) =
                values
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (at, &v)| {
                        if v > best.1 { (at, v) } else { best }
                    });
            maxima.push((value, position as u32));
        }
    }
    maxima
}

/// [`Backend::crop_batch`] on the host: one image per rayon task.
pub fn crop_batch_on_host(
    images: &[&[u8]],
    image_size: usize,
    crops: &[Crop],
    crop_size: usize,
    mean: &[f32],
) -> Vec<f32> {
    assert_eq!(images.len(), crops.len(), "one crop per image");
    let per_image = 3 * crop_size * crop_size;
    let mut batch = vec![0.0f32; images.len() * per_image];
    batch
        .par_chunks_mut(per_image)
        .zip(images.par_iter().zip(crops))
        .for_each(|(out, (image, &crop))| {
            write_crop_chw(
                image,
                image_size as u32,
                Some(mean),
                crop,
                crop_size as u32,
                out,
            );
        });
    batch
}

/// The CPU reference backend: rayon over images, single-threaded GEMMs inside.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;
    type Switches = Vec<u32>;
    type Counter = u64;
    type Loss = f32;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn zeros(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn upload(&self, data: &[f32]) -> Vec<f32> {
        data.to_vec()
    }

    fn download(&self, buffer: &Vec<f32>) -> Vec<f32> {
        buffer.clone()
    }

    fn upload_owned(&self, data: Vec<f32>) -> Vec<f32> {
        data
    }

    fn read<'a>(&self, buffer: &'a Vec<f32>) -> std::borrow::Cow<'a, [f32]> {
        std::borrow::Cow::Borrowed(buffer)
    }

    fn copy(&self, buffer: &Vec<f32>) -> Vec<f32> {
        buffer.clone()
    }

    fn len(&self, buffer: &Vec<f32>) -> usize {
        buffer.len()
    }

    fn switches(&self, len: usize) -> Vec<u32> {
        vec![0; len]
    }

    fn download_switches(&self, switches: &Vec<u32>) -> Vec<u32> {
        switches.clone()
    }

    fn counter(&self) -> u64 {
        0
    }

    fn take_count(&self, counter: &mut u64) -> u64 {
        std::mem::take(counter)
    }

    fn conv_forward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        g: &ConvGeometry,
        y: &mut Vec<f32>,
    ) {
        cpu::conv_forward(x, w, b, g, false, y);
    }

    fn conv_forward_relu(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        g: &ConvGeometry,
        y: &mut Vec<f32>,
    ) {
        cpu::conv_forward(x, w, b, g, true, y);
    }

    fn conv_backward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        g: &ConvGeometry,
        grads: Gradients<'_, Vec<f32>>,
    ) {
        let Gradients {
            input: dx,
            weight: dw,
            bias: db,
        } = grads;
        cpu::conv_backward(x, w, dy, g, dx.map(|d| d.as_mut_slice()), dw, db);
    }

    fn conv_transpose(&self, y: &Vec<f32>, w: &Vec<f32>, g: &ConvGeometry, x: &mut Vec<f32>) {
        cpu::conv_transpose(y, w, g, x);
    }

    fn max_pool(&self, x: &Vec<f32>, g: &PoolGeometry, y: &mut Vec<f32>, switches: &mut Vec<u32>) {
        cpu::pool::max_pool_f32(x, g, y, switches);
    }

    fn unpool(&self, y: &Vec<f32>, switches: &Vec<u32>, g: &PoolGeometry, x: &mut Vec<f32>) {
        cpu::pool::unpool(y, switches, g, x);
    }

    fn lrn_forward(&self, x: &Vec<f32>, g: &LrnGeometry, y: &mut Vec<f32>, scale: &mut Vec<f32>) {
        let (channels, plane, config) = (g.channels, g.plane, &g.config);
        cpu::lrn::lrn_forward(x, channels, plane, config, y, scale);
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
        let (channels, plane, config) = (g.channels, g.plane, &g.config);
        cpu::lrn::lrn_backward(x, y, scale, dy, channels, plane, config, dx);
    }

    fn relu(&self, x: &mut Vec<f32>) {
        cpu::activation::relu(x);
    }

    fn relu_backward(&self, y: &Vec<f32>, dy: &mut Vec<f32>) {
        cpu::activation::relu_backward(y, dy);
    }

    fn dropout(&self, x: &mut Vec<f32>, p: f64, seed: u64, mask: &mut Vec<f32>) {
        let uniform = crate::rng::uniform_stream(seed, x.len());
        cpu::activation::dropout(x, p, &uniform, mask);
    }

    fn apply_mask(&self, dy: &mut Vec<f32>, mask: &Vec<f32>) {
        cpu::activation::apply_mask(dy, mask);
    }

    fn linear_forward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        g: &LinearGeometry,
        y: &mut Vec<f32>,
    ) {
        let (n_in, n_out) = (g.n_in, g.n_out);
        cpu::linear_forward(x, w, b, n_in, n_out, y);
    }

    fn linear_backward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        g: &LinearGeometry,
        grads: Gradients<'_, Vec<f32>>,
    ) {
        let (n_in, n_out) = (g.n_in, g.n_out);
        let Gradients {
            input: dx,
            weight: dw,
            bias: db,
        } = grads;
        cpu::linear_backward(x, w, dy, n_in, n_out, dx.map(|d| d.as_mut_slice()), dw, db);
    }

    fn softmax_cross_entropy(
        &self,
        logits: &Vec<f32>,
        labels: &[usize],
        classes: usize,
        dlogits: &mut Vec<f32>,
    ) -> f32 {
        cpu::softmax::softmax_cross_entropy(logits, labels, classes, dlogits)
    }

    fn read_loss(&self, loss: f32) -> f32 {
        loss
    }

    fn softmax(&self, logits: &Vec<f32>, classes: usize) -> Vec<f32> {
        let mut probs = vec![0.0; logits.len()];
        cpu::softmax::softmax(logits, classes, &mut probs);
        probs
    }

    fn sgd_momentum(&self, w: &mut Vec<f32>, g: &Vec<f32>, v: &mut Vec<f32>, settings: &Momentum) {
        let Momentum {
            learning_rate: lr,
            momentum,
            weight_decay,
        } = *settings;
        cpu::sgd::sgd_momentum(w, g, v, lr, momentum, weight_decay);
    }

    fn renormalise_filters(
        &self,
        w: &mut Vec<f32>,
        filter_len: usize,
        radius: f64,
        rescaled: &mut u64,
    ) {
        *rescaled += cpu::sgd::renormalise_filters(w, filter_len, radius) as u64;
    }
}
