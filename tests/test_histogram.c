/* SPDX-License-Identifier: MIT */
/* runtime/histogram.c: durations, log-linear, percentiles at most 1/8 above the truth. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "runtime/histogram.h"

static struct fdx__hist *hist_new(void)
{
	struct fdx__hist *h = calloc(1, sizeof(*h));

	assert_non_null(h);
	return h;
}

/* p is the true percentile's value v, or above it by at most v / 8. */
static void assert_within_an_eighth(uint64_t p, uint64_t v)
{
	assert_true(p >= v);
	assert_true(p <= v + v / 8);
}

static void test_hist_empty_reads_zero(void **state)
{
	struct fdx__hist *h = hist_new();

	(void)state;
	assert_int_equal(fdx__hist_percentile(h, 50), 0);
	assert_int_equal(fdx__hist_percentile(h, 99), 0);
	free(h);
}

static void test_hist_percentiles_are_at_most_an_eighth_above(void **state)
{
	struct fdx__hist *h = hist_new();

	(void)state;
	/* 1..1000 us: the true p50 is 500 us, p99 990 us. */
	for (uint64_t us = 1; us <= 1000; us++)
		fdx__hist_add(h, us * 1000);
	assert_int_equal(atomic_load(&h->count), 1000);
	assert_int_equal(atomic_load(&h->max), 1000000);
	assert_within_an_eighth(fdx__hist_percentile(h, 50), 500000);
	assert_within_an_eighth(fdx__hist_percentile(h, 99), 990000);
	/* Never above the largest sample. */
	assert_int_equal(fdx__hist_percentile(h, 100), 1000000);
	free(h);
}

static void test_hist_counts_the_extremes(void **state)
{
	struct fdx__hist *h = hist_new();

	(void)state;
	fdx__hist_add(h, 0); /* below 256 ns: the first bucket */
	fdx__hist_add(h, 100);
	assert_true(fdx__hist_percentile(h, 100) <= 255);
	fdx__hist_add(h, UINT64_MAX / 2); /* beyond 2^34 ns: the last bucket, reported as the max */
	assert_int_equal(fdx__hist_percentile(h, 100), UINT64_MAX / 2);
	assert_int_equal(atomic_load(&h->count), 3);
	free(h);
}

static void test_hist_halves_every_bucket_before_one_overflows(void **state)
{
	struct fdx__hist *h = hist_new();
	uint32_t a = 0;

	(void)state;
	fdx__hist_add(h, 1000); /* bucket a */
	while (atomic_load(&h->n[a]) == 0)
		a++;
	fdx__hist_add(h, 1000000); /* another bucket, 1 */
	assert_true(fdx__hist_percentile(h, 100) >= 1000000);
	/* As after 2^32 - 1 samples of 1 us: the next one halves every bucket first. */
	atomic_store(&h->n[a], UINT32_MAX);
	fdx__hist_add(h, 1000);
	assert_int_equal(atomic_load(&h->n[a]), UINT32_MAX / 2 + 1);
	/* The 1 ms sample halved away: every percentile is 1 us now. */
	assert_within_an_eighth(fdx__hist_percentile(h, 100), 1000);
	assert_int_equal(atomic_load(&h->count), 3);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hist_empty_reads_zero),
		cmocka_unit_test(test_hist_percentiles_are_at_most_an_eighth_above),
		cmocka_unit_test(test_hist_counts_the_extremes),
		cmocka_unit_test(test_hist_halves_every_bucket_before_one_overflows),
	};

	return cmocka_run_group_tests_name("histogram", tests, NULL, NULL);
}
