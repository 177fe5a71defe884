/* SPDX-License-Identifier: MIT */
/*
 * Multi-threaded stress of LocalBufferPools on one NetworkBufferPool: four
 * threads with a pool each and two threads sharing a fifth, all competing for
 * 256 segments. Each buffer is tagged by its holder and checked before it is
 * recycled, and a table of "held" flags checks directly that no segment is
 * ever lent to two holders at once. Thread 0 also moves its pool's maximum
 * up and down while the others run.
 *
 * Runs FDX_STRESS_SECONDS seconds (default 2; fractions allowed) and at most
 * MAX_ITERS iterations per thread; FDX_STRESS_SEED fixes the random seed.
 */
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <unistd.h>

#include <cmocka.h>

#define SEG_SIZE (4u * 1024)
#define SEG_COUNT 256u

#define N_PRIVATE 4 /* threads with a pool of their own */
#define N_SHARED 2 /* threads sharing one pool */
#define N_THREADS (N_PRIVATE + N_SHARED)
#define N_LBPS (N_PRIVATE + 1)
#define PRIVATE_MIN 8u
#define PRIVATE_MAX 96u
#define SHARED_MIN 4u
#define SHARED_MAX 64u
#define SET_MAX_BOUND 128u /* thread 0 moves its max within [PRIVATE_MIN, this] */
#define SET_MAX_EVERY 256u /* iterations between two set_max calls */

#define HOLD_MAX 64u /* buffers a thread of a private pool holds at most */
#define HOLD_SHARED 24u /* a thread of the shared pool: 2 x 24 < 64, a mostly hot path */
#define PHASE_ITERS 2048u /* iterations of a filling or a draining phase */
#define MIN_ITERS 4096u /* run at least this much, however short the time */
#define MAX_ITERS 500000000u
#define MAX_TIMEOUT_US 2000u /* longest blocking request */
#define TAIL_BYTES 32u /* tag-derived pattern at the end of each buffer */
#define DEFAULT_SECONDS 2.0
#define MAX_SECONDS 3600.0

/* 1 while a segment is held by some thread; indexed by offset / SEG_SIZE - 1. */
static atomic_int held[SEG_COUNT];

struct held_buf {
	uint64_t offset;
	uint64_t tag;
	uint8_t *p;
};

struct worker {
	pthread_t th;
	int id;
	struct fdx_lbp *lbp;
	uint8_t *base; /* the region's base, to check fdx_lbp_ptr() */
	int adjusts_max;
	uint32_t hold_max;
	uint64_t deadline_ns;
	uint64_t rng;

	/* results, read after join */
	uint64_t iters;
	uint64_t req_ok;
	uint64_t rec_ok;
	uint64_t eagain;
	uint64_t etimedout;
	uint64_t set_max;
	uint64_t corrupt; /* a tag or pattern changed while held */
	uint64_t double_hold; /* a segment lent while someone held it */
	uint64_t bad_buf; /* offset, capacity or pointer wrong */
	uint64_t bad_recycle; /* recycle did not return 0 */
	uint64_t unexpected; /* any other error code */
	char problem[192]; /* the first problem, for the failure message */
};

struct stress_fx {
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp[N_LBPS];
	struct worker w[N_THREADS];
};

static uint64_t next_rand(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static void problem(struct worker *w, uint64_t *counter, const char *what, uint64_t offset, int err)
{
	(*counter)++;
	if (!w->problem[0])
		snprintf(w->problem, sizeof(w->problem),
			 "thread %d, iteration %llu: %s (offset %llu, code %d: %s)", w->id,
			 (unsigned long long)w->iters, what, (unsigned long long)offset, err,
			 fdx_strerror(err));
}

static uint8_t tail_byte(uint64_t tag, uint32_t k)
{
	return (uint8_t)((tag >> ((k & 7) * 8)) ^ (k * 0x35u) ^ 0x5a);
}

/* The whole first 16 bytes: the tag and its complement; the last TAIL_BYTES: derived. */
static void write_tag(uint8_t *p, uint64_t tag)
{
	uint64_t inv = ~tag;

	memcpy(p, &tag, sizeof(tag));
	memcpy(p + 8, &inv, sizeof(inv));
	for (uint32_t k = 0; k < TAIL_BYTES; k++)
		p[SEG_SIZE - TAIL_BYTES + k] = tail_byte(tag, k);
}

static int tag_intact(const uint8_t *p, uint64_t tag)
{
	uint64_t a, b;

	memcpy(&a, p, sizeof(a));
	memcpy(&b, p + 8, sizeof(b));
	if (a != tag || b != ~tag)
		return 0;
	for (uint32_t k = 0; k < TAIL_BYTES; k++)
		if (p[SEG_SIZE - TAIL_BYTES + k] != tail_byte(tag, k))
			return 0;
	return 1;
}

static void take(struct worker *w, struct held_buf *hb, uint32_t *nheld, const struct fdx_buf *b)
{
	uint64_t idx;
	uint8_t *p;

	if (b->capacity != SEG_SIZE || b->offset % SEG_SIZE != 0 || b->offset < SEG_SIZE ||
	    b->offset / SEG_SIZE > SEG_COUNT) {
		/* Not a segment: keep nothing; the lbp's in_use count will show it. */
		problem(w, &w->bad_buf, "request returned a buffer that is not a segment",
			b->offset, 0);
		return;
	}
	idx = b->offset / SEG_SIZE - 1;
	p = fdx_lbp_ptr(w->lbp, b->offset);
	if (p != w->base + b->offset)
		problem(w, &w->bad_buf, "fdx_lbp_ptr disagrees with the region's base", b->offset,
			0);
	if (atomic_exchange(&held[idx], 1) != 0)
		problem(w, &w->double_hold, "segment lent while another holder has it", b->offset,
			0);
	hb[*nheld].offset = b->offset;
	hb[*nheld].tag = ((uint64_t)(w->id + 1) << 48) | w->req_ok;
	hb[*nheld].p = w->base + b->offset;
	write_tag(hb[*nheld].p, hb[*nheld].tag);
	(*nheld)++;
}

/* Recycle the held buffer i (swap-removed), after checking its tag and its flag. */
static void give(struct worker *w, struct held_buf *hb, uint32_t *nheld, uint32_t i)
{
	struct held_buf b = hb[i];
	int err;

	hb[i] = hb[--(*nheld)];
	if (!tag_intact(b.p, b.tag))
		problem(w, &w->corrupt, "tag overwritten while held", b.offset, 0);
	/* Cleared before the recycle: once recycled, another thread may take it at once. */
	if (atomic_exchange(&held[b.offset / SEG_SIZE - 1], 0) != 1)
		problem(w, &w->double_hold, "held flag was cleared by someone else", b.offset, 0);
	err = fdx_lbp_recycle(w->lbp, b.offset);
	if (err != 0)
		problem(w, &w->bad_recycle, "recycle failed", b.offset, err);
	else
		w->rec_ok++;
}

static void request_one(struct worker *w, struct held_buf *hb, uint32_t *nheld)
{
	struct fdx_buf b;
	int64_t timeout = -1;
	int err;

	memset(&b, 0, sizeof(b));
	if (next_rand(&w->rng) & 1) {
		err = fdx_lbp_try_request(w->lbp, &b);
	} else {
		timeout = (int64_t)(next_rand(&w->rng) % MAX_TIMEOUT_US);
		err = fdx_lbp_request(w->lbp, timeout, &b);
	}
	if (err == 0) {
		w->req_ok++;
		take(w, hb, nheld, &b);
	} else if (err == -EAGAIN && timeout <= 0) {
		w->eagain++;
	} else if (err == -ETIMEDOUT && timeout > 0) {
		w->etimedout++;
	} else {
		problem(w, &w->unexpected, "request failed unexpectedly", 0, err);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct held_buf hb[HOLD_MAX];
	uint32_t nheld = 0;

	for (w->iters = 0; w->iters < MAX_ITERS; w->iters++) {
		/* Alternate filling (70% requests) and draining (30%) phases. */
		uint32_t req_pct = (w->iters / PHASE_ITERS) % 2 ? 30 : 70;
		uint32_t r = (uint32_t)(next_rand(&w->rng) % 100);

		if (w->iters >= MIN_ITERS && w->iters % 64 == 0 && test_now_ns() >= w->deadline_ns)
			break;
		if (w->adjusts_max && w->iters % SET_MAX_EVERY == SET_MAX_EVERY - 1) {
			uint32_t max = PRIVATE_MIN + (uint32_t)(next_rand(&w->rng) %
								(SET_MAX_BOUND - PRIVATE_MIN + 1));
			int err = fdx_lbp_set_max(w->lbp, max);

			if (err != 0)
				problem(w, &w->unexpected, "set_max failed", max, err);
			w->set_max++;
		}
		if (nheld < w->hold_max && (nheld == 0 || r < req_pct))
			request_one(w, hb, &nheld);
		else
			give(w, hb, &nheld, (uint32_t)(next_rand(&w->rng) % nheld));
	}
	while (nheld)
		give(w, hb, &nheld, (uint32_t)(next_rand(&w->rng) % nheld));
	return NULL;
}

static double stress_seconds(void)
{
	const char *e = getenv("FDX_STRESS_SECONDS");
	double s = DEFAULT_SECONDS;
	char *end = NULL;

	if (e && *e) {
		s = strtod(e, &end);
		if (end == e || s < 0)
			s = DEFAULT_SECONDS;
	}
	return s > MAX_SECONDS ? MAX_SECONDS : s;
}

static uint64_t stress_seed(void)
{
	const char *e = getenv("FDX_STRESS_SEED");

	if (e && *e)
		return strtoull(e, NULL, 0);
	return test_now_ns() ^ ((uint64_t)getpid() << 32);
}

static int teardown(void **state);

static int setup(void **state)
{
	struct stress_fx *fx = calloc(1, sizeof(*fx));
	struct fdx_nbp_opts no;
	struct fdx_lbp_opts lo;

	if (!fx)
		return -1;
	*state = fx;
	memset(&no, 0, sizeof(no));
	no.size = sizeof(no);
	no.seg_size = SEG_SIZE;
	no.seg_count = SEG_COUNT;
	no.hugepages = FDX_HUGEPAGE_NEVER;
	if (fdx_nbp_create(&no, &fx->nbp) != 0) {
		teardown(state);
		return -1;
	}
	memset(&lo, 0, sizeof(lo));
	lo.size = sizeof(lo);
	for (int i = 0; i < N_LBPS; i++) {
		lo.min = i < N_PRIVATE ? PRIVATE_MIN : SHARED_MIN;
		lo.max = i < N_PRIVATE ? PRIVATE_MAX : SHARED_MAX;
		if (fdx_lbp_create(fx->nbp, &lo, &fx->lbp[i]) != 0) {
			teardown(state);
			return -1;
		}
	}
	for (uint32_t i = 0; i < SEG_COUNT; i++)
		atomic_init(&held[i], 0);
	return 0;
}

static int teardown(void **state)
{
	struct stress_fx *fx = *state;
	int err;

	if (!fx)
		return 0;
	for (int i = 0; i < N_LBPS; i++)
		fdx_lbp_destroy(fx->lbp[i]);
	err = fdx_nbp_destroy(fx->nbp);
	free(fx);
	return err;
}

static void test_lbp_concurrent_use_never_lends_a_segment_twice(void **state)
{
	struct stress_fx *fx = *state;
	uint64_t seed = stress_seed(), start, req[N_LBPS] = {0}, rec[N_LBPS] = {0};
	uint64_t busy[N_LBPS] = {0}, backpressure = 0;
	double seconds = stress_seconds();
	struct fdx_region *region = fdx_nbp_region(fx->nbp);
	struct fdx_nbp_stats ns;
	uint32_t owned = 0;
	uint8_t *base;
	int err;

	/* Offset 0 is the header slot: its address is the region's base. */
	base = fdx_region_ptr(region, 0, 1);
	assert_non_null(base);
	start = test_now_ns();
	for (int t = 0; t < N_THREADS; t++) {
		struct worker *w = &fx->w[t];

		w->id = t;
		w->lbp = fx->lbp[t < N_PRIVATE ? t : N_PRIVATE];
		w->base = base;
		w->adjusts_max = t == 0;
		w->hold_max = t < N_PRIVATE ? HOLD_MAX : HOLD_SHARED;
		w->deadline_ns = start + (uint64_t)(seconds * 1e9);
		w->rng = (seed + 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1)) | 1;
		err = pthread_create(&w->th, NULL, worker_main, w);
		if (err != 0) {
			/* The started ones stop at their deadline; never leave them running. */
			for (int j = 0; j < t; j++)
				pthread_join(fx->w[j].th, NULL);
			fail_msg("pthread_create: %s", strerror(err));
		}
	}
	for (int t = 0; t < N_THREADS; t++)
		assert_int_equal(pthread_join(fx->w[t].th, NULL), 0);

	fprintf(stderr, "lbp_stress: %.2f s, seed %#llx, per thread req/rec/eagain/etimedout:",
		(double)(test_now_ns() - start) / 1e9, (unsigned long long)seed);
	for (int t = 0; t < N_THREADS; t++) {
		const struct worker *w = &fx->w[t];

		fprintf(stderr, " t%d=%llu/%llu/%llu/%llu", t, (unsigned long long)w->req_ok,
			(unsigned long long)w->rec_ok, (unsigned long long)w->eagain,
			(unsigned long long)w->etimedout);
	}
	fprintf(stderr, ", set_max %llu\n", (unsigned long long)fx->w[0].set_max);

	for (int t = 0; t < N_THREADS; t++) {
		const struct worker *w = &fx->w[t];
		int l = t < N_PRIVATE ? t : N_PRIVATE;

		if (w->corrupt || w->double_hold || w->bad_buf || w->bad_recycle || w->unexpected)
			fail_msg("corrupt %llu, double_hold %llu, bad_buf %llu, bad_recycle %llu, "
				 "unexpected %llu; first: %s",
				 (unsigned long long)w->corrupt, (unsigned long long)w->double_hold,
				 (unsigned long long)w->bad_buf, (unsigned long long)w->bad_recycle,
				 (unsigned long long)w->unexpected, w->problem);
		/* Every thread got buffers, and gave every one of them back. */
		assert_true(w->req_ok > 0);
		assert_int_equal(w->rec_ok, w->req_ok);
		assert_true(w->iters >= MIN_ITERS);
		req[l] += w->req_ok;
		rec[l] += w->rec_ok;
		busy[l] += w->eagain + w->etimedout;
		backpressure += w->eagain + w->etimedout;
	}
	/* 4 x 64 + 2 x 24 buffers wanted from 256 segments, and thread 0's max shrinking
	 * below what it holds: some requests must have been refused. */
	assert_true(backpressure > 0);
	for (uint32_t i = 0; i < SEG_COUNT; i++)
		assert_int_equal(atomic_load(&held[i]), 0);

	for (int l = 0; l < N_LBPS; l++) {
		struct fdx_lbp_stats st;

		memset(&st, 0, sizeof(st));
		st.size = sizeof(st);
		assert_int_equal(fdx_lbp_stats(fx->lbp[l], &st), 0);
		assert_int_equal(st.requests, req[l]);
		assert_int_equal(st.recycles, rec[l]);
		assert_int_equal(st.requests, st.recycles);
		assert_int_equal(st.in_use, 0);
		assert_int_equal(st.waiting, 0);
		assert_int_equal(st.owned, st.cached);
		assert_true(st.owned >= st.min);
		/* Each failed request found the pool empty, and was counted so. */
		assert_true(st.empty_requests >= busy[l]);
		owned += st.owned;
	}
	/* No segment lost or duplicated: the nbp's free ones and the pools' add up. */
	memset(&ns, 0, sizeof(ns));
	ns.size = sizeof(ns);
	assert_int_equal(fdx_nbp_stats(fx->nbp, &ns), 0);
	assert_int_equal(ns.lbp_count, N_LBPS);
	assert_int_equal(ns.reserved, N_PRIVATE * PRIVATE_MIN + SHARED_MIN);
	assert_int_equal(ns.free + owned, SEG_COUNT);

	for (int l = 0; l < N_LBPS; l++) {
		fdx_lbp_destroy(fx->lbp[l]);
		fx->lbp[l] = NULL;
	}
	assert_int_equal(fdx_nbp_stats(fx->nbp, &ns), 0);
	assert_int_equal(ns.free, ns.seg_count);
	assert_int_equal(ns.seg_count, SEG_COUNT);
	assert_int_equal(ns.lbp_count, 0);
	assert_int_equal(ns.reserved, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lbp_concurrent_use_never_lends_a_segment_twice,
						setup, teardown),
	};

	return cmocka_run_group_tests_name("lbp_stress", tests, NULL, NULL);
}
