/* SPDX-License-Identifier: MIT */
/*
 * A log-linear histogram of durations in nanoseconds: 8 buckets per power of
 * two from 256 ns to 2^34 ns (about 17 s), so a percentile read from it is at
 * most 1/8 above the true value. One writer at a time (its owner's lock),
 * readers any time (relaxed loads: a snapshot may be a few samples behind).
 * Counts are 32 bits: when one would overflow, every bucket is halved, so a
 * long-running channel's figures lean to recent samples.
 */
#ifndef FDX_RUNTIME_HISTOGRAM_H
#define FDX_RUNTIME_HISTOGRAM_H

#include <stdint.h>

#include "atomic.h"

#define FDX__HIST_SUB_BITS 3u
#define FDX__HIST_MIN_BITS 8u /* 256 ns: everything below counts there */
#define FDX__HIST_MAX_BITS 34u
#define FDX__HIST_BUCKETS (((FDX__HIST_MAX_BITS - FDX__HIST_MIN_BITS) << FDX__HIST_SUB_BITS) + 1u)

struct fdx__hist {
	_Atomic uint32_t n[FDX__HIST_BUCKETS];
	_Atomic uint64_t count; /* samples recorded (not halved) */
	_Atomic uint64_t max;
};

/* Record one duration (the writer). */
void fdx__hist_add(struct fdx__hist *h, uint64_t ns);

/* The q-th percentile (0 < q <= 100): a bucket's upper bound; 0 if empty. Any thread. */
uint64_t fdx__hist_percentile(const struct fdx__hist *h, double q);

#endif /* FDX_RUNTIME_HISTOGRAM_H */
