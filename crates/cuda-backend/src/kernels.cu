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
extern "C" __global__ void renormalise_filters(float* w, int filter_len, double radius, int* rescaled) {
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
            atomicAdd(rescaled, 1);
        }
    }
}
