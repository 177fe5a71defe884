/* SPDX-License-Identifier: MIT */
/* The monotonic clock: now in nanoseconds, and deadlines for pthread_cond_timedwait(). */
#ifndef FDX_RUNTIME_CLOCK_H
#define FDX_RUNTIME_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC now, in nanoseconds. */
static inline uint64_t fdx__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * *ts = CLOCK_MONOTONIC now + ms milliseconds: a deadline for a condition
 * variable whose clock is CLOCK_MONOTONIC (pthread_condattr_setclock()).
 */
static inline void fdx__deadline_in(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

#endif /* FDX_RUNTIME_CLOCK_H */
