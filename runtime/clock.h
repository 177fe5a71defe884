/* SPDX-License-Identifier: MIT */
/* The one clock of fdx: CLOCK_MONOTONIC in nanoseconds. */
#ifndef FDX_RUNTIME_CLOCK_H
#define FDX_RUNTIME_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t fdx__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif /* FDX_RUNTIME_CLOCK_H */
