// Runs kernels.cu on the CPU, for tests on machines without a GPU (tests/kernels_on_cpu.rs).
// g++ compiles kernels.cu with this header forced in front (-include): each launch runs the
// blocks one after another, each block's threads as real threads, so __syncthreads (a
// barrier) and __shared__ memory (function statics: one block lives at a time) behave as on
// the GPU. What differs from the GPU is floating point: g++ does not contract a*b+c into an
// FMA and glibc's powf/expf are not CUDA's, so float results are compared with tolerances;
// integer work (switches, counters, the ChaCha stream) must match bit for bit.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct zf_dim3 {
    unsigned int x, y, z;
};
inline thread_local zf_dim3 threadIdx{0, 0, 0};
inline thread_local zf_dim3 blockIdx{0, 0, 0};
inline zf_dim3 blockDim{1, 1, 1};
inline zf_dim3 gridDim{1, 1, 1};
inline std::barrier<>* zf_block_barrier = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__

inline void __syncthreads() { zf_block_barrier->arrive_and_wait(); }

inline float __int_as_float(int bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
inline int __float_as_int(float f) {
    int bits;
    std::memcpy(&bits, &f, sizeof bits);
    return bits;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int bits;
    std::memcpy(&bits, &f, sizeof bits);
    return bits;
}
inline float __uint_as_float(unsigned int bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
inline double __longlong_as_double(long long bits) {
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
}
inline int atomicAdd(int* address, int value) {
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}
using std::isnan;
using std::max;
using std::min;

// Launches `kernel` (a Rust closure calling one kernel with its arguments) over a 1-D grid.
extern "C" void zf_launch(unsigned int grid, unsigned int block, void (*kernel)(const void*),
                          const void* context) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    std::barrier<> sync_barrier(block);
    std::barrier<> block_end(block);
    zf_block_barrier = &sync_barrier;
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned int t = 0; t < block; ++t) {
        threads.emplace_back([=, &block_end] {
            threadIdx = {t, 0, 0};
            for (unsigned int b = 0; b < grid; ++b) {
                blockIdx = {b, 0, 0};
                kernel(context);
                block_end.arrive_and_wait();
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    zf_block_barrier = nullptr;
}
