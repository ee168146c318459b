// NVRTC kernels of the CUDA backend: everything the ZF net needs besides convolutions (cuDNN)
// and fully connected products (cuBLAS). Each mirrors the CPU reference in crates/engine/src/cpu
// (same formulas, same switch rule: first maximum in row-major order, NaN wins), so the parity
// check compares like with like. Layouts are NCHW; `plane` = H * W.

// NVRTC compiles without the C headers that define these.
#define ZF_INFINITY __int_as_float(0x7f800000)
#define ZF_NAN __int_as_float(0x7fffffff)

// y[n, k, p] += b[k]
extern "C" __global__ void add_channel_bias(float* y, const float* b, int total, int channels, int plane) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        y[i] += b[(i / plane) % channels];
    }
}

// y[n, k, p] = relu(y[n, k, p] + b[k]) in one pass (a NaN stays NaN, as on the CPU): the
// epilogue of conv_forward_relu where cuDNN's fused call is not used.
extern "C" __global__ void add_channel_bias_relu(float* y, const float* b, int total, int channels,
                                                 int plane) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        float v = y[i] + b[(i / plane) % channels];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

// db[k] = sum over n, p of dy[n, k, p]; one block per channel, a fixed reduction order.
extern "C" __global__ void channel_sums(float* db, const float* dy, int n, int channels, int plane) {
    __shared__ float partial[256];
    int k = blockIdx.x;
    float sum = 0.0f;
    int per_channel = n * plane;
    for (int j = threadIdx.x; j < per_channel; j += blockDim.x) {
        int image = j / plane;
        int p = j % plane;
        sum += dy[((long)image * channels + k) * plane + p];
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            partial[threadIdx.x] += partial[threadIdx.x + stride];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        db[k] = partial[0];
    }
}

// Max pooling in ceil mode (partial last windows kept), recording each window's argmax as a
// flat index into its input plane.
extern "C" __global__ void max_pool(const float* x, float* y, unsigned int* switches, int planes,
                                    int h, int w, int oh, int ow, int size, int stride) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= planes * oh * ow) {
        return;
    }
    int plane = i / (oh * ow);
    int oy = (i / ow) % oh;
    int ox = i % ow;
    int y0 = oy * stride, x0 = ox * stride;
    int y1 = min(y0 + size, h), x1 = min(x0 + size, w);
    const float* xp = x + (long)plane * h * w;
    int best = y0 * w + x0;
    float best_value = xp[best];
    for (int iy = y0; iy < y1; ++iy) {
        for (int ix = x0; ix < x1; ++ix) {
            int at = iy * w + ix;
            float v = xp[at];
            if (v > best_value || isnan(v)) {
                best_value = v;
                best = at;
            }
        }
    }
    y[i] = best_value;
    switches[i] = (unsigned int)best;
}

// Max-pool backward and the deconvnet's unpooling, as a gather: each input pixel sums the
// outputs of the (overlapping) windows whose switch points at it. No atomics, so the result
// is deterministic.
extern "C" __global__ void unpool(const float* y, const unsigned int* switches, float* x, int planes,
                                  int h, int w, int oh, int ow, int size, int stride) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= planes * h * w) {
        return;
    }
    int plane = i / (h * w);
    int iy = (i / w) % h;
    int ix = i % w;
    int at = iy * w + ix;
    // Windows oy with oy*stride <= iy < oy*stride + size.
    int oy_lo = iy >= size ? (iy - size) / stride + 1 : 0;
    int oy_hi = min(iy / stride, oh - 1);
    int ox_lo = ix >= size ? (ix - size) / stride + 1 : 0;
    int ox_hi = min(ix / stride, ow - 1);
    const float* yp = y + (long)plane * oh * ow;
    const unsigned int* sp = switches + (long)plane * oh * ow;
    float sum = 0.0f;
    for (int oy = oy_lo; oy <= oy_hi; ++oy) {
        for (int ox = ox_lo; ox <= ox_hi; ++ox) {
            if (sp[oy * ow + ox] == (unsigned int)at) {
                sum += yp[oy * ow + ox];
            }
        }
    }
    x[i] = sum;
}

// Contrast normalisation across maps: s = k + alpha * sum over the window of x^2,
// y = x * s^-beta.
extern "C" __global__ void lrn_forward(const float* x, float* y, float* scale, int n, int channels,
                                       int plane, int size, float k, float alpha, float beta) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * channels * plane) {
        return;
    }
    int p = i % plane;
    int c = (i / plane) % channels;
    int image = i / (plane * channels);
    int half = size / 2;
    int lo = max(c - half, 0), hi = min(c + half, channels - 1);
    const float* xi = x + (long)image * channels * plane + p;
    float sum = 0.0f;
    for (int j = lo; j <= hi; ++j) {
        float a = xi[(long)j * plane];
        sum += a * a;
    }
    float s = k + alpha * sum;
    scale[i] = s;
    y[i] = x[i] * powf(s, -beta);
}

// dx[j] = dy[j] s[j]^-beta - 2 alpha beta x[j] sum over maps c whose window holds j of
// dy[c] y[c] / s[c].
extern "C" __global__ void lrn_backward(const float* x, const float* y, const float* scale,
                                        const float* dy, float* dx, int n, int channels, int plane,
                                        int size, float alpha, float beta) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * channels * plane) {
        return;
    }
    int p = i % plane;
    int c = (i / plane) % channels;
    int image = i / (plane * channels);
    int half = size / 2;
    int lo = max(c - half, 0), hi = min(c + half, channels - 1);
    long base = (long)image * channels * plane + p;
    float cross = 0.0f;
    for (int j = lo; j <= hi; ++j) {
        long at = base + (long)j * plane;
        cross += dy[at] * y[at] / scale[at];
    }
    dx[i] = dy[i] * powf(scale[i], -beta) - 2.0f * alpha * beta * x[i] * cross;
}

extern "C" __global__ void relu(float* x, int len) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len && x[i] < 0.0f) {
        x[i] = 0.0f;
    }
}

extern "C" __global__ void relu_backward(const float* y, float* dy, int len) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len && y[i] <= 0.0f) {
        dy[i] = 0.0f;
    }
}

// --- Dropout on the device, drawing the CPU backend's stream -------------------------------
// The CPU backend keeps unit i when the i-th draw of `ChaCha8Rng::seed_from_u64(seed)` (rand's
// f64: the top 53 bits of next_u64 over 2^53) is >= p. ChaCha is a counter-mode generator:
// block b of the stream is a pure function of (key, b), and next_u64 number i is words 2i and
// 2i+1 of the stream (low word first). So each thread computes one 16-word block on its own
// and decides 8 units, and the mask equals the CPU's bit for bit (tests/kernels_on_cpu.rs).

// The 256-bit key that `seed_from_u64` expands a seed into (computed on the host).
struct ChaChaKey {
    unsigned int words[8];
};

__device__ __forceinline__ unsigned int zf_rotl(unsigned int v, int c) {
    return (v << c) | (v >> (32 - c));
}

#define ZF_QUARTER(a, b, c, d)                                                                   \
    a += b; d ^= a; d = zf_rotl(d, 16);                                                          \
    c += d; b ^= c; b = zf_rotl(b, 12);                                                          \
    a += b; d ^= a; d = zf_rotl(d, 8);                                                           \
    c += d; b ^= c; b = zf_rotl(b, 7);

// Block `counter` of ChaCha with 8 rounds, a 64-bit block counter (words 12-13) and stream 0
// (words 14-15): rand_chacha's ChaCha8Rng.
__device__ void chacha8_block(const ChaChaKey& key, unsigned long long counter, unsigned int out[16]) {
    unsigned int start[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u,
                              key.words[0], key.words[1], key.words[2], key.words[3],
                              key.words[4], key.words[5], key.words[6], key.words[7],
                              (unsigned int)counter, (unsigned int)(counter >> 32), 0u, 0u};
    unsigned int x[16];
    for (int i = 0; i < 16; ++i) {
        x[i] = start[i];
    }
    for (int double_round = 0; double_round < 4; ++double_round) {
        ZF_QUARTER(x[0], x[4], x[8], x[12]);
        ZF_QUARTER(x[1], x[5], x[9], x[13]);
        ZF_QUARTER(x[2], x[6], x[10], x[14]);
        ZF_QUARTER(x[3], x[7], x[11], x[15]);
        ZF_QUARTER(x[0], x[5], x[10], x[15]);
        ZF_QUARTER(x[1], x[6], x[11], x[12]);
        ZF_QUARTER(x[2], x[7], x[8], x[13]);
        ZF_QUARTER(x[3], x[4], x[9], x[14]);
    }
    for (int i = 0; i < 16; ++i) {
        out[i] = x[i] + start[i];
    }
}

// Inverted dropout: mask[i] = scale (kept) or 0, x[i] *= mask[i]. One thread per ChaCha block,
// i.e. per 8 units.
extern "C" __global__ void dropout_chacha(float* x, float* mask, long long len, ChaChaKey key,
                                          double p, float scale) {
    long long block = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long first = block * 8;
    if (first >= len) {
        return;
    }
    unsigned int words[16];
    chacha8_block(key, (unsigned long long)block, words);
    for (int j = 0; j < 8 && first + j < len; ++j) {
        unsigned long long bits = ((unsigned long long)words[2 * j + 1] << 32) | words[2 * j];
        double u = (double)(bits >> 11) * (1.0 / 9007199254740992.0);
        float m = u >= p ? scale : 0.0f;
        mask[first + j] = m;
        x[first + j] *= m;
    }
}

// --- The input batch on the device (§3) -----------------------------------------------------
// out[n, c, y, x] = images[n][top + y][x'][c] - mean[top + y][x'][c] with x' = left + x, or
// left + crop - 1 - x when flipped: imaging::write_crop_chw for a whole batch. `images` holds
// the batch's square HWC u8 images back to back; `crops` is (top, left, flip) per image.
extern "C" __global__ void crop_batch(const unsigned char* images, const int* crops,
                                      const float* mean, float* out, int n, int image_size,
                                      int crop_size) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long plane = (long long)crop_size * crop_size;
    if (i >= n * 3 * plane) {
        return;
    }
    int x = (int)(i % crop_size);
    int y = (int)((i / crop_size) % crop_size);
    int channel = (int)((i / plane) % 3);
    long long image = i / (3 * plane);
    int top = crops[3 * image], left = crops[3 * image + 1], flip = crops[3 * image + 2];
    int source_x = flip ? left + crop_size - 1 - x : left + x;
    long long source = ((long long)(top + y) * image_size + source_x) * 3 + channel;
    long long image_len = (long long)image_size * image_size * 3;
    out[i] = (float)images[image * image_len + source] - mean[source];
}

// --- bf16 mixed precision ---------------------------------------------------------------------
// Under Precision::Bf16 buffers stay f32 (the master copy); each convolution and product casts
// its operands to bf16 (as PyTorch's autocast does), cuDNN and cuBLAS multiply in bf16 on the
// tensor cores with f32 accumulation, and results come back to f32. bf16 values travel as
// their 16 bits (unsigned short), so these kernels need no cuda_bf16.h.

// f32 -> bf16 bits, rounding to nearest even; a NaN stays a quiet NaN (half::bf16::from_f32).
__device__ __forceinline__ unsigned short zf_to_bf16(float f) {
    unsigned int bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((bits >> 16) | 0x40u);
    }
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (unsigned short)(bits >> 16);
}

__device__ __forceinline__ float zf_from_bf16(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

extern "C" __global__ void to_bf16(const float* x, unsigned short* y, long long len) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) {
        y[i] = zf_to_bf16(x[i]);
    }
}

extern "C" __global__ void from_bf16(const unsigned short* x, float* y, long long len) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) {
        y[i] = zf_from_bf16(x[i]);
    }
}

// A bf16 convolution's output back to f32 with its bias added and, when `relu`, rectified
// (a NaN stays NaN): the epilogue of conv_forward(_relu) under bf16.
extern "C" __global__ void from_bf16_bias(const unsigned short* x, const float* b, float* y,
                                          int total, int channels, int plane, int relu) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        float v = zf_from_bf16(x[i]) + b[(i / plane) % channels];
        y[i] = (relu && v < 0.0f) ? 0.0f : v;
    }
}

// --- The deconvnet's top-k scan (Fig. 2) ----------------------------------------------------
// For image n and chosen map i: the largest value of the map's plane and its first position
// (NaNs never win; nothing above -inf gives (-inf, 0)), engine::backend::map_maxima_on_host.
// One block of 256 threads per (image, chosen map), blockIdx.x = n * n_maps + i, so only two
// numbers per pair leave the device.
extern "C" __global__ void map_maxima(const float* x, const int* maps, float* values,
                                      unsigned int* positions, int channels, int plane,
                                      int n_maps) {
    __shared__ float best_value[256];
    __shared__ int best_at[256];
    const int none = 0x7fffffff;
    int pair = blockIdx.x;
    int image = pair / n_maps, i = pair % n_maps;
    const float* p = x + ((long long)image * channels + maps[i]) * plane;
    float best = -ZF_INFINITY;
    int at = none;
    for (int j = threadIdx.x; j < plane; j += blockDim.x) {
        float v = p[j];
        if (v > best) {  // a thread sees its positions in order: its first maximum stays
            best = v;
            at = j;
        }
    }
    best_value[threadIdx.x] = best;
    best_at[threadIdx.x] = at;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            float v = best_value[threadIdx.x + stride];
            int a = best_at[threadIdx.x + stride];
            if (v > best_value[threadIdx.x] || (v == best_value[threadIdx.x] && a < best_at[threadIdx.x])) {
                best_value[threadIdx.x] = v;
                best_at[threadIdx.x] = a;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        values[pair] = best_value[0];
        positions[pair] = best_at[0] == none ? 0u : (unsigned int)best_at[0];
    }
}

// x[i] *= m[i] (dropout with a precomputed mask, and its backward).
extern "C" __global__ void multiply(float* x, const float* m, int len) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) {
        x[i] *= m[i];
    }
}

// y[n, o] += b[o]
extern "C" __global__ void add_row_bias(float* y, const float* b, int total, int outputs) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) {
        y[i] += b[i % outputs];
    }
}

// db[o] = sum over rows n of dy[n, o]; one thread per column, rows in order.
extern "C" __global__ void column_sums(float* db, const float* dy, int rows, int outputs) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o < outputs) {
        float sum = 0.0f;
        for (int r = 0; r < rows; ++r) {
            sum += dy[(long)r * outputs + o];
        }
        db[o] = sum;
    }
}

// Row-wise softmax; one thread per row (the class count is small).
extern "C" __global__ void softmax_rows(const float* logits, float* probs, int rows, int classes) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) {
        return;
    }
    const float* l = logits + (long)r * classes;
    float* p = probs + (long)r * classes;
    float m = -ZF_INFINITY;
    for (int c = 0; c < classes; ++c) {
        m = fmaxf(m, l[c]);
    }
    float total = 0.0f;
    for (int c = 0; c < classes; ++c) {
        p[c] = expf(l[c] - m);
        total += p[c];
    }
    for (int c = 0; c < classes; ++c) {
        p[c] /= total;
    }
}

// Softmax cross-entropy: dlogits = (softmax - onehot) / rows, and each row's loss
// -log softmax[label] (summed on the host in row order).
extern "C" __global__ void softmax_xent(const float* logits, const int* labels, float* dlogits,
                                        float* row_loss, int rows, int classes) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) {
        return;
    }
    const float* l = logits + (long)r * classes;
    float* d = dlogits + (long)r * classes;
    float m = -ZF_INFINITY;
    bool nan = false;
    for (int c = 0; c < classes; ++c) {
        nan = nan || isnan(l[c]);
        m = fmaxf(m, l[c]);
    }
    float total = 0.0f;
    for (int c = 0; c < classes; ++c) {
        d[c] = expf(l[c] - m);
        total += d[c];
    }
    float inv_rows = 1.0f / (float)rows;
    for (int c = 0; c < classes; ++c) {
        d[c] = (d[c] / total - (c == labels[r] ? 1.0f : 0.0f)) * inv_rows;
    }
    row_loss[r] = nan ? ZF_NAN : -(l[labels[r]] - m - logf(total));
}

// SGD with momentum and weight decay: v = momentum v - lr (g + wd w); w += v.
extern "C" __global__ void sgd_momentum(float* w, const float* g, float* v, int len, float lr,
                                        float momentum, float weight_decay) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < len) {
        float vi = momentum * v[i] - lr * (g[i] + weight_decay * w[i]);
        v[i] = vi;
        w[i] = w[i] + vi;
    }
}

// Filter RMS renormalisation: one block per filter; the mean square in double, as on the CPU.
// `rescaled` accumulates across calls (read once per epoch, so the update needs no host sync).
extern "C" __global__ void renormalise_filters(float* w, int filter_len, double radius,
                                               unsigned int* rescaled) {
    __shared__ double partial[256];
    float* f = w + (long)blockIdx.x * filter_len;
    double sum = 0.0;
    for (int j = threadIdx.x; j < filter_len; j += blockDim.x) {
        double v = (double)f[j];
        sum += v * v;
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            partial[threadIdx.x] += partial[threadIdx.x + stride];
        }
        __syncthreads();
    }
    double rms = sqrt(partial[0] / (double)filter_len);
    if (rms > radius) {
        float factor = (float)(radius / rms);
        for (int j = threadIdx.x; j < filter_len; j += blockDim.x) {
            f[j] *= factor;
        }
        if (threadIdx.x == 0) {
            atomicAdd(rescaled, 1u);
        }
    }
}
