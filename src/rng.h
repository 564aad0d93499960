/* Counter-based random numbers: the value for (seed, index) is a pure function, so the
 * CPU and the CUDA backend (and a checkpointed run resumed later) draw the same numbers
 * without sharing a generator's state. SplitMix64's finaliser is the mixing function. */
#ifndef GPURNN_RNG_H
#define GPURNN_RNG_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define GPURNN_HD __host__ __device__ __forceinline__
#else
#define GPURNN_HD static inline
#endif

GPURNN_HD uint64_t gpurnn_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

GPURNN_HD uint64_t gpurnn_random_bits(uint64_t seed, uint64_t stream, uint64_t index)
{
    return gpurnn_mix64(gpurnn_mix64(seed ^ (stream * 0x9e3779b97f4a7c15ULL)) + index * 0x9e3779b97f4a7c15ULL);
}

/* Uniform in [0, 1) with 53 random bits. */
GPURNN_HD double gpurnn_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return (double)(gpurnn_random_bits(seed, stream, index) >> 11) * 0x1.0p-53;
}

/* Standard normal by Box-Muller from two uniforms; 1 - u keeps the log argument in (0, 1]. */
GPURNN_HD double gpurnn_normal(uint64_t seed, uint64_t stream, uint64_t index)
{
    double u1 = 1.0 - gpurnn_uniform(seed, stream, 2 * index);
    double u2 = gpurnn_uniform(seed, stream, 2 * index + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

/* Streams keep draws for different purposes independent under one seed. */
enum { GPURNN_STREAM_INIT = 1, GPURNN_STREAM_SAMPLE = 2, GPURNN_STREAM_GRADCHECK = 3 };

/* The index of draw k (k < 2^31: n is an int) of sequence b within GPURNN_STREAM_SAMPLE:
 * sequence 0's draws keep the indices gpurnn_sample has always used (k), and every
 * (sequence, draw) pair has its own number, independent of the batch size. */
GPURNN_HD uint64_t gpurnn_sample_draw_index(uint64_t b, uint64_t k) { return (b << 32) | k; }

#endif
