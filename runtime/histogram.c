/* SPDX-License-Identifier: MIT */
/* Durations, log-linear: see histogram.h. */
#include "histogram.h"

static uint32_t bucket_of(uint64_t ns)
{
	uint32_t msb, sub;

	if (ns < (1ull << FDX__HIST_MIN_BITS))
		return 0;
	msb = 63u - (uint32_t)__builtin_clzll(ns);
	if (msb >= FDX__HIST_MAX_BITS)
		return FDX__HIST_BUCKETS - 1;
	sub = (uint32_t)(ns >> (msb - FDX__HIST_SUB_BITS)) & ((1u << FDX__HIST_SUB_BITS) - 1);
	return ((msb - FDX__HIST_MIN_BITS) << FDX__HIST_SUB_BITS) + sub;
}

/* The largest duration bucket b counts. */
static uint64_t bucket_top(uint32_t b)
{
	uint32_t msb = FDX__HIST_MIN_BITS + (b >> FDX__HIST_SUB_BITS);
	uint64_t sub = b & ((1u << FDX__HIST_SUB_BITS) - 1);

	if (b >= FDX__HIST_BUCKETS - 1)
		return UINT64_MAX;
	return (1ull << msb) + ((sub + 1) << (msb - FDX__HIST_SUB_BITS)) - 1;
}

void fdx__hist_add(struct fdx__hist *h, uint64_t ns)
{
	uint32_t b = bucket_of(ns);
	/* One writer: plain read-modify-write through relaxed atomics (readers only load). */
	uint32_t v = atomic_load_explicit(&h->n[b], memory_order_relaxed);

	if (v == UINT32_MAX) {
		for (uint32_t i = 0; i < FDX__HIST_BUCKETS; i++)
			atomic_store_explicit(
				&h->n[i], atomic_load_explicit(&h->n[i], memory_order_relaxed) / 2,
				memory_order_relaxed);
		v = atomic_load_explicit(&h->n[b], memory_order_relaxed);
	}
	atomic_store_explicit(&h->n[b], v + 1, memory_order_relaxed);
	atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	if (ns > atomic_load_explicit(&h->max, memory_order_relaxed))
		atomic_store_explicit(&h->max, ns, memory_order_relaxed);
}

uint64_t fdx__hist_percentile(const struct fdx__hist *h, double q)
{
	uint32_t n[FDX__HIST_BUCKETS];
	uint64_t total = 0, want, seen = 0;

	for (uint32_t i = 0; i < FDX__HIST_BUCKETS; i++) {
		n[i] = atomic_load_explicit(&h->n[i], memory_order_relaxed);
		total += n[i];
	}
	if (!total)
		return 0;
	want = (uint64_t)(q / 100.0 * (double)total + 0.5);
	if (want == 0)
		want = 1;
	for (uint32_t i = 0; i < FDX__HIST_BUCKETS; i++) {
		seen += n[i];
		if (seen >= want) {
			uint64_t top = bucket_top(i), max;

			/* Never above the largest sample seen. */
			max = atomic_load_explicit(&h->max, memory_order_relaxed);
			return top < max ? top : max;
		}
	}
	return atomic_load_explicit(&h->max, memory_order_relaxed);
}
