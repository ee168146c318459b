//! [`Backend`] for [`CudaBackend`]: every op of the engine, on the helpers of the sibling
//! modules and the NVRTC kernels.

use super::*;

impl Backend for CudaBackend {
    type Buffer = CudaSlice<f32>;
    type Switches = CudaSlice<u32>;
    type Counter = CudaSlice<u32>;
    /// Each row's loss, on the device until read.
    type Loss = CudaSlice<f32>;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn zeros(&self, len: usize) -> CudaSlice<f32> {
        if len == 0 {
            // Not a zero-byte allocation (see `scratch`).
            return self.scratch(0);
        }
        check(self.stream.alloc_zeros::<f32>(len), "allocating")
    }

    fn output(&self, len: usize) -> CudaSlice<f32> {
        // Every kernel and library call of this backend writes all of its output.
        if len == 0 {
            return self.zeros(0);
        }
        self.scratch(len)
    }

    fn upload(&self, data: &[f32]) -> CudaSlice<f32> {
        self.to_device(data, "uploading")
    }

    fn download(&self, buffer: &CudaSlice<f32>) -> Vec<f32> {
        self.to_host(buffer, "downloading")
    }

    fn copy(&self, buffer: &CudaSlice<f32>) -> CudaSlice<f32> {
        if buffer.is_empty() {
            return self.scratch(0);
        }
        check(self.stream.clone_dtod(buffer), "copying on the device")
    }

    fn len(&self, buffer: &CudaSlice<f32>) -> usize {
        buffer.len()
    }

    fn switches(&self, len: usize) -> CudaSlice<u32> {
        // Written in full by max_pool.
        self.scratch(len)
    }

    fn download_switches(&self, switches: &CudaSlice<u32>) -> Vec<u32> {
        self.to_host(switches, "downloading switches")
    }

    fn counter(&self) -> CudaSlice<u32> {
        check(self.stream.alloc_zeros::<u32>(1), "allocating a counter")
    }

    fn take_count(&self, counter: &mut CudaSlice<u32>) -> u64 {
        let value = self.to_host(counter, "downloading a counter")[0];
        check(self.stream.memset_zeros(counter), "resetting a counter");
        value as u64
    }

    fn crop_batch(
        &self,
        images: &[&[u8]],
        image_size: usize,
        crops: &[Crop],
        crop_size: usize,
        mean: &[f32],
    ) -> CudaSlice<f32> {
        assert_eq!(images.len(), crops.len(), "one crop per image");
        let image_len = image_size * image_size * 3;
        let total = images.len() * image_len;
        let mut staging = self.staging.lock().expect("staging lock");
        let staging = &mut *staging;
        // The host buffer is free once the previous copy out of it is done.
        if let Some(copied) = &staging.copied {
            check(copied.synchronize(), "waiting for the previous input copy");
        }
        if staging.host.as_ref().is_none_or(|h| h.len() < total) {
            // SAFETY: the buffer is written below before it is read.
            let host = unsafe { self.context.alloc_pinned::<u8>(total.max(1)) };
            staging.host = Some(check(host, "allocating page-locked input memory"));
            staging.device = Some(check(
                self.stream.alloc_zeros::<u8>(total.max(1)),
                "allocating the input bytes",
            ));
            staging.cropped = Some(check(
                self.stream.record_event(None),
                "recording the input allocation",
            ));
        }
        let host = staging.host.as_mut().expect("allocated above");
        let device = staging.device.as_mut().expect("allocated above");
        let host_bytes = check(host.as_mut_slice(), "opening the input buffer");
        host_bytes[..total]
            .par_chunks_mut(image_len)
            .zip(images)
            .for_each(|(out, image)| out.copy_from_slice(image));
        // The device buffer is free once the previous batch's crops were cut from it.
        if let Some(cropped) = &staging.cropped {
            check(self.copy_stream.wait(cropped), "ordering the input copy");
        }
        check(
            self.copy_stream.memcpy_htod(&*host, device),
            "uploading images",
        );
        let copied = check(
            self.copy_stream.record_event(None),
            "recording the input copy",
        );
        check(self.stream.wait(&copied), "waiting for the input copy");
        staging.copied = Some(copied);
        if staging
            .mean
            .as_ref()
            .is_none_or(|(cached, _)| cached != mean)
        {
            let on_device = self.to_device(mean, "uploading the mean image");
            staging.mean = Some((mean.to_vec(), on_device));
        }
        let (_, mean_device) = staging.mean.as_ref().expect("uploaded above");
        let table: Vec<i32> = crops
            .iter()
            .flat_map(|c| {
                let (top, left) = (c.top as usize, c.left as usize);
                [
                    int(top, "a crop's top"),
                    int(left, "a crop's left"),
                    i32::from(c.flip),
                ]
            })
            .collect();
        let table = self.to_device(&table, "uploading the crops");
        let mut out = self.output(images.len() * 3 * crop_size * crop_size);
        int(total, "a batch of input images");
        let (n, size, crop) = (
            int(images.len(), "a batch's images"),
            int(image_size, "an image's side"),
            int(crop_size, "a crop's side"),
        );
        launch!(
            self,
            "crop_batch",
            launch_1d(out.len()),
            &*device,
            &table,
            mean_device,
            &mut out,
            &n,
            &size,
            &crop
        );
        staging.cropped = Some(check(self.stream.record_event(None), "recording the crops"));
        out
    }

    fn conv_forward(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &ConvGeometry,
        y: &mut CudaSlice<f32>,
    ) {
        self.conv_bias(x, w, b, g, y, false);
    }

    fn conv_forward_relu(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &ConvGeometry,
        y: &mut CudaSlice<f32>,
    ) {
        // cuDNN's fused call (f32 and TF32); under bf16 the epilogue that widens the result
        // adds the bias and rectifies anyway.
        if self.cudnn_fusion() && !self.is_bf16() {
            match self.convolve_bias_relu(x, w, b, g, y) {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(
                        error,
                        "cuDNN refused the fused convolution-bias-ReLU call; using a \
                         convolution and a bias+ReLU kernel from now on"
                    );
                    self.set_cudnn_fusion(false);
                }
            }
        }
        self.conv_bias(x, w, b, g, y, true);
    }

    fn conv_backward(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        g: &ConvGeometry,
        grads: Gradients<'_, CudaSlice<f32>>,
    ) {
        let Gradients {
            input: dx,
            weight: dw,
            bias: db,
        } = grads;
        let n = x.len() / g.in_len();
        if self.is_bf16() {
            let (x16, dy16) = (self.to_bf16(x), self.to_bf16(dy));
            let mut dw16 = self.scratch::<bf16>(dw.len());
            self.conv_filter_backward_of(&x16, &dy16, g, &mut dw16);
            self.widen_bf16(&dw16, dw);
            if let Some(dx) = dx {
                let w16 = self.to_bf16(w);
                self.conv_data_backward_bf16(&dy16, &w16, g, dx);
            }
        } else {
            self.conv_filter_backward_of(x, dy, g, dw);
            if let Some(dx) = dx {
                self.conv_data_backward_of(dy, w, g, dx);
            }
        }
        // The bias gradient from the f32 dy in every precision.
        int(dy.len(), "a convolution's output gradient");
        let (n_images, channels, plane) = (
            int(n, "a batch's images"),
            int(g.out_channels, "a convolution's channels"),
            int(g.out_h() * g.out_w(), "an output plane"),
        );
        let config = launch_per_item(g.out_channels, "a convolution's channels");
        launch!(
            self,
            "channel_sums",
            config,
            db,
            dy,
            &n_images,
            &channels,
            &plane
        );
    }

    fn conv_transpose(
        &self,
        y: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        g: &ConvGeometry,
        x: &mut CudaSlice<f32>,
    ) {
        self.conv_data_backward(y, w, g, x);
    }

    fn max_pool(
        &self,
        x: &CudaSlice<f32>,
        g: &PoolGeometry,
        y: &mut CudaSlice<f32>,
        switches: &mut CudaSlice<u32>,
    ) {
        let (planes, dims) = pool_arguments(x.len(), g);
        launch!(
            self,
            "max_pool",
            launch_1d(y.len()),
            x,
            y,
            switches,
            &planes,
            &dims[0],
            &dims[1],
            &dims[2],
            &dims[3],
            &dims[4],
            &dims[5]
        );
    }

    fn unpool(
        &self,
        y: &CudaSlice<f32>,
        switches: &CudaSlice<u32>,
        g: &PoolGeometry,
        x: &mut CudaSlice<f32>,
    ) {
        let (planes, dims) = pool_arguments(x.len(), g);
        launch!(
            self,
            "unpool",
            launch_1d(x.len()),
            y,
            switches,
            x,
            &planes,
            &dims[0],
            &dims[1],
            &dims[2],
            &dims[3],
            &dims[4],
            &dims[5]
        );
    }

    fn lrn_forward(
        &self,
        x: &CudaSlice<f32>,
        g: &LrnGeometry,
        y: &mut CudaSlice<f32>,
        scale: &mut CudaSlice<f32>,
    ) {
        let config = &g.config;
        let (n, c, p, size) = lrn_arguments(x.len(), g);
        let (k, alpha, beta) = (config.k as f32, config.alpha as f32, config.beta as f32);
        launch!(
            self,
            "lrn_forward",
            launch_1d(x.len()),
            x,
            y,
            scale,
            &n,
            &c,
            &p,
            &size,
            &k,
            &alpha,
            &beta
        );
    }

    fn lrn_backward(
        &self,
        x: &CudaSlice<f32>,
        y: &CudaSlice<f32>,
        scale: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        g: &LrnGeometry,
        dx: &mut CudaSlice<f32>,
    ) {
        let config = &g.config;
        let (n, c, p, size) = lrn_arguments(x.len(), g);
        let (alpha, beta) = (config.alpha as f32, config.beta as f32);
        launch!(
            self,
            "lrn_backward",
            launch_1d(x.len()),
            x,
            y,
            scale,
            dy,
            dx,
            &n,
            &c,
            &p,
            &size,
            &alpha,
            &beta
        );
    }

    fn relu(&self, x: &mut CudaSlice<f32>) {
        let len = int(x.len(), "a ReLU's input");
        launch!(self, "relu", launch_1d(x.len()), x, &len);
    }

    fn relu_backward(&self, y: &CudaSlice<f32>, dy: &mut CudaSlice<f32>) {
        let len = int(y.len(), "a ReLU's gradient");
        launch!(self, "relu_backward", launch_1d(y.len()), y, dy, &len);
    }

    fn dropout(&self, x: &mut CudaSlice<f32>, p: f64, seed: u64, mask: &mut CudaSlice<f32>) {
        // The CPU backend's mask, drawn on the device from the same ChaCha stream: one thread
        // per 16-word block, i.e. per 8 units (see kernels.cu).
        let scale = (1.0 / (1.0 - p)) as f32;
        let key = ChaChaKey(engine::rng::chacha8_key(seed));
        let len = i64::from(int(x.len(), "a dropout layer's input"));
        launch!(
            self,
            "dropout_chacha",
            launch_1d(x.len().div_ceil(8)),
            x,
            mask,
            &len,
            &key,
            &p,
            &scale
        );
    }

    fn apply_mask(&self, dy: &mut CudaSlice<f32>, mask: &CudaSlice<f32>) {
        let len = int(dy.len(), "a dropout layer's gradient");
        launch!(self, "multiply", launch_1d(dy.len()), dy, mask, &len);
    }

    fn linear_forward(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &LinearGeometry,
        y: &mut CudaSlice<f32>,
    ) {
        let (n_in, n_out) = (g.n_in, g.n_out);
        let n = x.len() / n_in;
        // Row-major y (N x OUT) = x (N x IN) w^T; column-major: y^T = w x^T with w^T stored.
        let shape = ((true, false), (n_out, n, n_in));
        if self.is_bf16() {
            let (w16, x16) = (self.to_bf16(w), self.to_bf16(x));
            self.gemm(shape.0, shape.1, (&w16, n_in), (&x16, n_in), (y, n_out));
        } else {
            self.gemm(shape.0, shape.1, (w, n_in), (x, n_in), (y, n_out));
        }
        let (total, outputs) = (
            int(y.len(), "a fully connected layer's output"),
            int(n_out, "a fully connected layer's outputs"),
        );
        launch!(
            self,
            "add_row_bias",
            launch_1d(y.len()),
            y,
            b,
            &total,
            &outputs
        );
    }

    fn linear_backward(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        g: &LinearGeometry,
        grads: Gradients<'_, CudaSlice<f32>>,
    ) {
        let (n_in, n_out) = (g.n_in, g.n_out);
        let Gradients {
            input: dx,
            weight: dw,
            bias: db,
        } = grads;
        let n = x.len() / n_in;
        // dw (OUT x IN, row-major) = dy^T x; column-major: dw^T (IN x OUT) = x^T dy.
        let dw_shape = ((false, true), (n_in, n_out, n));
        // dx (N x IN) = dy w; column-major: dx^T (IN x N) = w^T dy^T.
        let dx_shape = ((false, false), (n_in, n, n_out));
        if self.is_bf16() {
            let (x16, dy16) = (self.to_bf16(x), self.to_bf16(dy));
            self.gemm(
                dw_shape.0,
                dw_shape.1,
                (&x16, n_in),
                (&dy16, n_out),
                (dw, n_in),
            );
            if let Some(dx) = dx {
                let w16 = self.to_bf16(w);
                self.gemm(
                    dx_shape.0,
                    dx_shape.1,
                    (&w16, n_in),
                    (&dy16, n_out),
                    (dx, n_in),
                );
            }
        } else {
            self.gemm(dw_shape.0, dw_shape.1, (x, n_in), (dy, n_out), (dw, n_in));
            if let Some(dx) = dx {
                self.gemm(dx_shape.0, dx_shape.1, (w, n_in), (dy, n_out), (dx, n_in));
            }
        }
        int(dy.len(), "a fully connected layer's output gradient");
        let (rows, outputs) = (
            int(n, "a batch's rows"),
            int(n_out, "a fully connected layer's outputs"),
        );
        launch!(
            self,
            "column_sums",
            launch_1d(n_out),
            db,
            dy,
            &rows,
            &outputs
        );
    }

    fn softmax_cross_entropy(
        &self,
        logits: &CudaSlice<f32>,
        labels: &[usize],
        classes: usize,
        dlogits: &mut CudaSlice<f32>,
    ) -> CudaSlice<f32> {
        let rows = labels.len();
        let labels_i32: Vec<i32> = labels.iter().map(|&l| int(l, "a label")).collect();
        let labels_device = self.to_device(&labels_i32, "uploading labels");
        let mut row_loss = self.scratch::<f32>(rows);
        int(logits.len(), "a batch's logits");
        let (rows_i, classes_i) = (int(rows, "a batch's rows"), int(classes, "the classes"));
        launch!(
            self,
            "softmax_xent",
            launch_1d(rows),
            logits,
            &labels_device,
            dlogits,
            &mut row_loss,
            &rows_i,
            &classes_i
        );
        row_loss
    }

    fn read_loss(&self, row_loss: CudaSlice<f32>) -> f32 {
        // Summed in row order on the host, like the CPU backend.
        let losses = self.to_host(&row_loss, "downloading losses");
        let total = losses.iter().fold(0.0f32, |sum, &l| sum + l);
        total * (1.0 / losses.len() as f32)
    }

    fn softmax(&self, logits: &CudaSlice<f32>, classes: usize) -> Vec<f32> {
        let rows = logits.len() / classes;
        let mut probs = self.zeros(logits.len());
        int(logits.len(), "a batch's logits");
        let (rows_i, classes_i) = (int(rows, "a batch's rows"), int(classes, "the classes"));
        launch!(
            self,
            "softmax_rows",
            launch_1d(rows),
            logits,
            &mut probs,
            &rows_i,
            &classes_i
        );
        self.to_host(&probs, "downloading probabilities")
    }

    fn sgd_momentum(
        &self,
        w: &mut CudaSlice<f32>,
        g: &CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        settings: &Momentum,
    ) {
        let Momentum {
            learning_rate: lr,
            momentum,
            weight_decay,
        } = *settings;
        let len = int(w.len(), "a parameter's length");
        let (lr, momentum, weight_decay) = (lr as f32, momentum as f32, weight_decay as f32);
        launch!(
            self,
            "sgd_momentum",
            launch_1d(w.len()),
            w,
            g,
            v,
            &len,
            &lr,
            &momentum,
            &weight_decay
        );
    }

    fn map_maxima(
        &self,
        x: &CudaSlice<f32>,
        channels: usize,
        plane: usize,
        maps: &[usize],
    ) -> Vec<(f32, u32)> {
        let pairs = x.len() / (channels * plane).max(1) * maps.len();
        if pairs == 0 {
            return Vec::new();
        }
        int(x.len(), "the maps being scanned");
        let maps_i32: Vec<i32> = maps.iter().map(|&m| int(m, "a map index")).collect();
        let maps_device = self.to_device(&maps_i32, "uploading map indices");
        let mut values = self.scratch::<f32>(pairs);
        let mut positions = self.scratch::<u32>(pairs);
        let (channels, plane, n_maps) = (
            int(channels, "a layer's channels"),
            int(plane, "a feature map's plane"),
            int(maps.len(), "the maps being scanned"),
        );
        let config = launch_per_item(pairs, "image-map pairs");
        launch!(
            self,
            "map_maxima",
            config,
            x,
            &maps_device,
            &mut values,
            &mut positions,
            &channels,
            &plane,
            &n_maps
        );
        let values = self.to_host(&values, "downloading maxima");
        let positions = self.to_host(&positions, "downloading positions");
        values.into_iter().zip(positions).collect()
    }

    fn renormalise_filters(
        &self,
        w: &mut CudaSlice<f32>,
        filter_len: usize,
        radius: f64,
        rescaled: &mut CudaSlice<u32>,
    ) {
        let filters = w.len() / filter_len;
        let len = int(filter_len, "a filter's length");
        let config = launch_per_item(filters, "filters");
        launch!(
            self,
            "renormalise_filters",
            config,
            w,
            &len,
            &radius,
            rescaled
        );
    }
}

/// max_pool's and unpool's counts for an input of `x_len` values: planes, then input height
/// and width, output height and width, window and stride (all checked).
fn pool_arguments(x_len: usize, g: &PoolGeometry) -> (i32, [i32; 6]) {
    int(x_len, "a pooling layer's input");
    let planes = int(x_len / (g.in_h * g.in_w), "a pooling layer's planes");
    let dims = [g.in_h, g.in_w, g.out_h(), g.out_w(), g.size, g.stride]
        .map(|d| int(d, "a pooling window's geometry"));
    (planes, dims)
}

/// The LRN kernels' counts for an input of `x_len` values: images, channels, plane, window.
fn lrn_arguments(x_len: usize, g: &LrnGeometry) -> (i32, i32, i32, i32) {
    int(x_len, "a normalisation layer's input");
    (
        int(x_len / (g.channels * g.plane), "a batch's images"),
        int(g.channels, "a normalisation layer's channels"),
        int(g.plane, "a normalisation layer's plane"),
        int(g.config.size, "a normalisation window"),
    )
}
