/* SPDX-License-Identifier: MIT */
#include "helpers.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

static struct fdx_nbp_opts nbp_opts(uint32_t seg_size, uint32_t count, struct test_log *lg)
{
	struct fdx_nbp_opts o;

	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.seg_size = seg_size;
	o.seg_count = count;
	o.log_fn = lg ? test_log_fn : NULL;
	o.log_ud = lg;
	return o;
}

static struct fdx_lbp_opts lbp_opts(uint32_t min, uint32_t max)
{
	struct fdx_lbp_opts o;

	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.min = min;
	o.max = max;
	return o;
}

static void nbp_stats(struct fdx_nbp *nbp, struct fdx_nbp_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->size = sizeof(*st);
	assert_int_equal(fdx_nbp_stats(nbp, st), 0);
}

static void test_nbp_create_uses_documented_defaults(void **state)
{
	struct fdx_nbp_opts o;
	struct fdx_nbp_stats st;
	struct fdx_nbp *nbp;

	(void)state;
	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.hugepages = FDX_HUGEPAGE_NEVER; /* 64 MiB: keep the hugepage pass's pages for others */
	assert_int_equal(fdx_nbp_create(&o, &nbp), 0);
	nbp_stats(nbp, &st);
	assert_int_equal(st.seg_size, FDX_SEG_SIZE_DEFAULT);
	assert_int_equal(st.seg_size, 32 * 1024);
	assert_int_equal(st.seg_count, FDX_NBP_SEG_COUNT_DEFAULT);
	assert_int_equal(st.free, st.seg_count);
	assert_int_equal(st.lbp_count, 0);
	assert_int_equal(st.reserved, 0);
	assert_int_equal(st.hugetlb, 0);
	assert_int_equal(st.page_size, fdx_region_page_size(fdx_nbp_region(nbp)));
	assert_int_equal(fdx_nbp_destroy(nbp), 0);
}

static void test_nbp_create_rejects_bad_options(void **state)
{
	static const uint32_t bad_sizes[] = {2048, 3000, 5000, 2u << 20};
	struct fdx_nbp *nbp = (void *)1;
	struct fdx_nbp_opts o = nbp_opts(4096, 8, NULL);

	(void)state;
	assert_int_equal(fdx_nbp_create(NULL, &nbp), -EINVAL);
	assert_int_equal(fdx_nbp_create(&o, NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		o = nbp_opts(bad_sizes[i], 8, NULL);
		nbp = (void *)1;
		assert_int_equal(fdx_nbp_create(&o, &nbp), -EINVAL);
		assert_null(nbp);
	}
	o = nbp_opts(4096, 8, NULL);
	o.total_bytes = 65536; /* both a count and a size */
	assert_int_equal(fdx_nbp_create(&o, &nbp), -EINVAL);
	o = nbp_opts(4096, FDX_SEG_COUNT_MAX + 1, NULL);
	assert_int_equal(fdx_nbp_create(&o, &nbp), -EINVAL);
	o = nbp_opts(4096, 8, NULL);
	o.batch = FDX_SEG_COUNT_MAX + 1;
	assert_int_equal(fdx_nbp_create(&o, &nbp), -EINVAL);
	o = nbp_opts(4096, 8, NULL);
	o.hugepages = 7;
	assert_int_equal(fdx_nbp_create(&o, &nbp), -EINVAL);
	o = nbp_opts(4096, 8, NULL);
	o.size = 4;
	assert_int_equal(fdx_nbp_create(&o, &nbp), -EINVAL);
	assert_null(nbp);
}

static void test_nbp_sizes_by_total_bytes_and_segment_size(void **state)
{
	static const uint32_t sizes[] = {4096, 8192, 32768, 65536, 1u << 20};
	struct fdx_nbp_stats st;
	struct fdx_nbp *nbp;

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct fdx_nbp_opts o = nbp_opts(sizes[i], 0, NULL);

		o.total_bytes = 3 * (uint64_t)sizes[i] + 1; /* rounds up to 4 segments */
		assert_int_equal(fdx_nbp_create(&o, &nbp), 0);
		nbp_stats(nbp, &st);
		assert_int_equal(st.seg_size, sizes[i]);
		assert_int_equal(st.seg_count, 4);
		assert_int_equal(fdx_region_seg_count(fdx_nbp_region(nbp)), 4);
		assert_int_equal(fdx_nbp_destroy(nbp), 0);
	}
}

static void test_nbp_lbp_min_that_cannot_be_reserved_says_how_many(void **state)
{
	struct test_log lg = {0};
	struct fdx_nbp_opts o = nbp_opts(4096, 16, &lg);
	struct fdx_lbp_opts lo = lbp_opts(10, 12);
	struct fdx_lbp *a, *b = (void *)1;
	struct fdx_nbp_stats st;
	struct fdx_nbp *nbp;

	(void)state;
	assert_int_equal(fdx_nbp_create(&o, &nbp), 0);
	assert_int_equal(fdx_lbp_create(nbp, &lo, &a), 0);
	assert_int_equal(fdx_lbp_create(nbp, &lo, &b), FDX_ENOSEGMENTS);
	assert_null(b);
	assert_int_equal(lg.errors, 1);
	assert_non_null(strstr(lg.last, "10 segments needed, 6 free of 16"));
	nbp_stats(nbp, &st);
	assert_int_equal(st.free, 6); /* the failed create took nothing */
	assert_int_equal(st.reserved, 10);
	assert_int_equal(st.lbp_count, 1);
	fdx_lbp_destroy(a);
	nbp_stats(nbp, &st);
	assert_int_equal(st.free, 16);
	assert_int_equal(st.reserved, 0);
	assert_int_equal(fdx_nbp_destroy(nbp), 0);
}

static void test_nbp_destroy_refuses_while_lbps_live(void **state)
{
	struct test_log lg = {0};
	struct fdx_nbp_opts o = nbp_opts(4096, 8, &lg);
	struct fdx_lbp_opts lo = lbp_opts(1, 2);
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct fdx_buf b;

	(void)state;
	assert_int_equal(fdx_nbp_destroy(NULL), 0);
	assert_int_equal(fdx_nbp_create(&o, &nbp), 0);
	assert_int_equal(fdx_lbp_create(nbp, &lo, &lbp), 0);
	assert_int_equal(fdx_nbp_destroy(nbp), -EBUSY);
	assert_non_null(strstr(lg.last, "1 LocalBufferPools still alive"));
	/* Nothing changed: the pool still works. */
	assert_int_equal(fdx_lbp_try_request(lbp, &b), 0);
	assert_int_equal(fdx_lbp_recycle(lbp, b.offset), 0);
	fdx_lbp_destroy(lbp);
	assert_int_equal(fdx_nbp_destroy(nbp), 0);
}

static void test_nbp_lends_in_batches(void **state)
{
	struct fdx_nbp_opts o = nbp_opts(4096, 64, NULL);
	struct fdx_lbp_opts lo = lbp_opts(0, 40);
	struct fdx_nbp_stats st;
	struct fdx_lbp_stats ls;
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct fdx_buf b;

	(void)state;
	o.batch = 8;
	assert_int_equal(fdx_nbp_create(&o, &nbp), 0);
	assert_int_equal(fdx_lbp_create(nbp, &lo, &lbp), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &b), 0);
	nbp_stats(nbp, &st);
	assert_int_equal(st.free, 64 - 8); /* one request borrowed a whole batch */
	memset(&ls, 0, sizeof(ls));
	ls.size = sizeof(ls);
	assert_int_equal(fdx_lbp_stats(lbp, &ls), 0);
	assert_int_equal(ls.owned, 8);
	assert_int_equal(ls.cached, 7);
	assert_int_equal(ls.in_use, 1);
	assert_int_equal(fdx_lbp_recycle(lbp, b.offset), 0);
	fdx_lbp_destroy(lbp);
	assert_int_equal(fdx_nbp_destroy(nbp), 0);
}

static void test_nbp_stats_honours_the_callers_size(void **state)
{
	struct fdx_nbp_opts o = nbp_opts(4096, 8, NULL);
	struct fdx_nbp_stats st;
	struct fdx_nbp *nbp;

	(void)state;
	assert_int_equal(fdx_nbp_create(&o, &nbp), 0);
	memset(&st, 0xee, sizeof(st));
	st.size = 8; /* an older caller knowing only the first two fields */
	assert_int_equal(fdx_nbp_stats(nbp, &st), 0);
	assert_int_equal(st.seg_size, 4096);
	assert_int_equal(st.seg_count, 0xeeeeeeeeu); /* untouched */
	st.size = 4;
	assert_int_equal(fdx_nbp_stats(nbp, &st), -EINVAL);
	assert_int_equal(fdx_nbp_stats(NULL, &st), -EINVAL);
	assert_int_equal(fdx_nbp_stats(nbp, NULL), -EINVAL);
	assert_null(fdx_nbp_region(NULL));
	assert_int_equal(fdx_nbp_destroy(nbp), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nbp_create_uses_documented_defaults),
		cmocka_unit_test(test_nbp_create_rejects_bad_options),
		cmocka_unit_test(test_nbp_sizes_by_total_bytes_and_segment_size),
		cmocka_unit_test(test_nbp_lbp_min_that_cannot_be_reserved_says_how_many),
		cmocka_unit_test(test_nbp_destroy_refuses_while_lbps_live),
		cmocka_unit_test(test_nbp_lends_in_batches),
		cmocka_unit_test(test_nbp_stats_honours_the_callers_size),
	};
	return cmocka_run_group_tests_name("network_buffer_pool", tests, NULL, NULL);
}
