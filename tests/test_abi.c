/* SPDX-License-Identifier: MIT */
/*
 * Callers built against other versions of the headers: each options struct
 * as fdx 0.1 laid it out (before the fields added since), passed with its
 * own size, is taken with the defaults of the fields it lacks; a newer
 * caller's larger struct is taken if the fields this version does not know
 * are zero, refused if one is set; a size below the first version's is
 * refused. The old layouts are spelled out here, as an old caller's
 * compiler saw them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <fdx/fdx.h>

/* fdx 0.1's struct fdx_exchange_opts: no control-plane limits. */
struct exchange_opts_v1 {
	uint32_t size;
	uint32_t protocol_version;
	const char *listen;
	const char *tm_id;
	const uint32_t *allow_uids;
	uint32_t n_allow_uids;
	uint32_t log_level;
	fdx_log_fn log_fn;
	void *log_ud;
	uint32_t seg_size;
	uint32_t pad;
};

/* fdx 0.1's struct fdx_gate_opts: no inplace_credits. */
struct gate_opts_v1 {
	uint32_t size;
	uint32_t gate;
	uint32_t n_channels;
	uint32_t exclusive_credits;
	uint32_t floating_credits;
	uint32_t max_record;
};

/* A newer caller's: one field after ours. */
struct gate_opts_next {
	struct fdx_gate_opts now;
	uint32_t future;
	uint32_t pad;
};

static void test_an_fdx_0_1_caller_creates_an_exchange_and_a_gate(void **state)
{
	struct exchange_opts_v1 eo = {.size = sizeof(eo), .tm_id = "abi-v1"};
	struct gate_opts_v1 go = {.size = sizeof(go), .gate = 3, .n_channels = 2};
	struct fdx_input_channel_stats cs = {.size = sizeof(cs)};
	struct fdx_exchange *ex;
	struct fdx_gate *g;

	(void)state;
	assert_int_equal(sizeof(eo), FDX_EXCHANGE_OPTS_SIZE_V1);
	assert_int_equal(sizeof(go), FDX_GATE_OPTS_SIZE_V1);
	assert_int_equal(fdx_exchange_create((const struct fdx_exchange_opts *)(void *)&eo, &ex),
			 0);
	assert_int_equal(strncmp(fdx_exchange_address(ex), "unix:", 5), 0);
	assert_int_equal(fdx_gate_create(ex, NULL, (const struct fdx_gate_opts *)(void *)&go, &g),
			 0);
	assert_int_equal(fdx_gate_channel_stats(g, 1, &cs), 0);
	assert_int_equal(cs.exclusive, FDX_EXCLUSIVE_CREDITS_DEFAULT);
	fdx_gate_destroy(g);
	fdx_exchange_destroy(ex);
}

static void test_a_newer_callers_unknown_fields_must_be_zero(void **state)
{
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "abi-next"};
	struct gate_opts_next go = {.now = {.size = sizeof(go), .gate = 4, .n_channels = 1}};
	struct fdx_exchange *ex;
	struct fdx_gate *g = NULL;

	(void)state;
	assert_int_equal(fdx_exchange_create(&eo, &ex), 0);
	assert_int_equal(fdx_gate_create(ex, NULL, &go.now, &g), 0);
	fdx_gate_destroy(g);
	go.future = 5; /* a field this version cannot honour: refused, not ignored */
	assert_int_equal(fdx_gate_create(ex, NULL, &go.now, &g), -EINVAL);
	assert_null(g);
	fdx_exchange_destroy(ex);
}

static void test_sizes_below_the_first_version_are_refused(void **state)
{
	struct fdx_exchange_opts eo = {.size = FDX_EXCHANGE_OPTS_SIZE_V1 - 8};
	struct fdx_nbp_opts no = {.size = FDX_NBP_OPTS_SIZE_V1 - 8, .seg_count = 4};
	struct fdx_region_opts ro = {.size = FDX_REGION_OPTS_SIZE_V1 - 8, .seg_count = 4};
	struct fdx_exchange *ex = NULL;
	struct fdx_region *r = NULL;
	struct fdx_nbp *nbp = NULL;

	(void)state;
	assert_int_equal(fdx_exchange_create(&eo, &ex), -EINVAL);
	assert_null(ex);
	assert_int_equal(fdx_nbp_create(&no, &nbp), -EINVAL);
	assert_int_equal(fdx_region_create(&ro, &r), -EINVAL);
	/* Their own sizes work. */
	no.size = sizeof(no);
	no.hugepages = FDX_HUGEPAGE_NEVER;
	assert_int_equal(fdx_nbp_create(&no, &nbp), 0);
	{
		struct fdx_lbp_opts lo = {.size = FDX_LBP_OPTS_SIZE_V1 - 4, .max = 2};
		struct fdx_lbp *lbp = NULL;

		assert_int_equal(fdx_lbp_create(nbp, &lo, &lbp), -EINVAL);
		lo.size = sizeof(lo);
		assert_int_equal(fdx_lbp_create(nbp, &lo, &lbp), 0);
		fdx_lbp_destroy(lbp);
	}
	assert_int_equal(fdx_nbp_destroy(nbp), 0);
}

/* struct fdx_view as FDX_VIEW_SIZE_V1 laid it out, spelled out as such a caller saw it. */
struct view_v1 {
	uint32_t kind;
	uint32_t channel;
	const void *data;
	uint32_t len;
	uint32_t event_type;
	uint32_t event_flags;
	int32_t error;
	uint64_t seq;
	const char *message;
	void *priv[2];
	uint32_t cursor;
	uint32_t pad;
};

/* A newer caller's view: a field after ours. */
struct view_next {
	struct view_v1 now;
	uint64_t future;
};

/*
 * Views of other layouts, through fdx_gate_next_view() with their own size
 * (what the fdx_gate_next() macro passes): the first sized layout is filled
 * and iterates; a newer caller's field this version does not know is zeroed;
 * a size below the first is refused with the view untouched; the plain
 * fdx_gate_next symbol (fdx 0.1 callers) takes a view of the first layout.
 */
static void test_views_of_older_and_newer_layouts(void **state)
{
	struct fdx_nbp_opts no = {
		.size = sizeof(no), .seg_count = 16, .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 8};
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "abi-view"};
	struct fdx_gate_opts go = {.size = sizeof(go), .gate = 1, .n_channels = 1};
	struct fdx_partition_opts po = {.size = sizeof(po), .n_subpartitions = 1};
	uint8_t small[FDX_VIEW_SIZE_V1 - 8];
	struct fdx_exchange *ex;
	struct fdx_partition *p;
	struct view_next vn;
	struct view_v1 v1;
	struct fdx_view v;
	struct fdx_gate *g;
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	const void *rec;
	uint32_t len;

	(void)state;
	assert_int_equal(sizeof(struct view_v1), FDX_VIEW_SIZE_V1);
	assert_int_equal(fdx_nbp_create(&no, &nbp), 0);
	assert_int_equal(fdx_lbp_create(nbp, &lo, &lbp), 0);
	assert_int_equal(fdx_exchange_create(&eo, &ex), 0);
	assert_int_equal(fdx_gate_create(ex, NULL, &go, &g), 0);
	assert_int_equal(fdx_partition_create(ex, lbp, &po, &p), 0);
	assert_int_equal(
		fdx_partition_connect(p, 0, fdx_exchange_address(ex), 1, 0, FDX_LINK_LOCAL, 5000),
		0);
	/* One record at a time, each taken before the next goes: a buffer each. */
	assert_int_equal(fdx_partition_emit(p, 0, "abcd", 4, 5000), 0);
	assert_int_equal(fdx_partition_flush(p, 0), 0);
	/* Too small: refused, untouched. */
	memset(small, 0x77, sizeof(small));
	assert_int_equal(fdx_gate_next_view(g, (struct fdx_view *)small, sizeof(small), 5000),
			 -EINVAL);
	for (size_t i = 0; i < sizeof(small); i++)
		assert_int_equal(small[i], 0x77);
	/* The first sized layout. */
	memset(&v1, 0x5a, sizeof(v1));
	assert_int_equal(fdx_gate_next_view(g, (struct fdx_view *)&v1, sizeof(v1), 5000), 0);
	assert_int_equal(v1.kind, FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_next_record(g, (struct fdx_view *)&v1, &rec, &len), 1);
	assert_int_equal(len, 4);
	assert_memory_equal(rec, "abcd", 4);
	assert_int_equal(fdx_gate_release(g, (struct fdx_view *)&v1), 0);
	assert_int_equal(fdx_partition_emit(p, 0, "abcd", 4, 5000), 0);
	assert_int_equal(fdx_partition_flush(p, 0), 0);
	/* A newer caller's: what it has past our fields comes back zero. */
	memset(&vn, 0x5a, sizeof(vn));
	assert_int_equal(fdx_gate_next_view(g, (struct fdx_view *)&vn, sizeof(vn), 5000), 0);
	assert_int_equal(vn.now.kind, FDX_VIEW_BUFFER);
	assert_true(vn.future == 0);
	assert_int_equal(fdx_gate_release(g, (struct fdx_view *)&vn), 0);
	assert_int_equal(fdx_partition_emit(p, 0, "abcd", 4, 5000), 0);
	assert_int_equal(fdx_partition_flush(p, 0), 0);
	/* The symbol an fdx 0.1 caller calls: the first layout's size. */
	assert_int_equal((fdx_gate_next)(g, &v, 5000), 0);
	assert_int_equal(v.kind, FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_release(g, &v), 0);
	fdx_partition_destroy(p);
	fdx_gate_destroy(g);
	assert_int_equal(fdx_exchange_destroy(ex), 0);
	fdx_lbp_destroy(lbp);
	assert_int_equal(fdx_nbp_destroy(nbp), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_an_fdx_0_1_caller_creates_an_exchange_and_a_gate),
		cmocka_unit_test(test_a_newer_callers_unknown_fields_must_be_zero),
		cmocka_unit_test(test_sizes_below_the_first_version_are_refused),
		cmocka_unit_test(test_views_of_older_and_newer_layouts),
	};

	return cmocka_run_group_tests_name("abi", tests, NULL, NULL);
}
