/* SPDX-License-Identifier: MIT */
#include "helpers.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/local_buffer_pool.h"

#define SEG 4096u

struct fixture {
	struct fdx_nbp *nbp;
	struct test_log log;
};

static int setup_n(void **state, uint32_t count, uint32_t batch)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct fdx_nbp_opts o;

	if (!f)
		return -1;
	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.seg_size = SEG;
	o.seg_count = count;
	o.batch = batch;
	o.log_fn = test_log_fn;
	o.log_ud = &f->log;
	if (fdx_nbp_create(&o, &f->nbp) < 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_n(state, 32, 4);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	struct fdx_nbp_stats st = {.size = sizeof(st)};

	/* Every test ends with every segment back in the nbp. */
	if (fdx_nbp_stats(f->nbp, &st) < 0 || st.free != st.seg_count || st.lbp_count != 0)
		return -1;
	if (fdx_nbp_destroy(f->nbp) < 0)
		return -1;
	free(f);
	return 0;
}

static struct fdx_lbp *lbp_new(struct fixture *f, uint32_t min, uint32_t max)
{
	struct fdx_lbp_opts o;
	struct fdx_lbp *lbp;

	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.min = min;
	o.max = max;
	assert_int_equal(fdx_lbp_create(f->nbp, &o, &lbp), 0);
	return lbp;
}

static struct fdx_lbp_stats lbp_stats(struct fdx_lbp *lbp)
{
	struct fdx_lbp_stats st;

	memset(&st, 0, sizeof(st));
	st.size = sizeof(st);
	assert_int_equal(fdx_lbp_stats(lbp, &st), 0);
	return st;
}

static uint32_t nbp_free(struct fixture *f)
{
	struct fdx_nbp_stats st = {.size = sizeof(st)};

	assert_int_equal(fdx_nbp_stats(f->nbp, &st), 0);
	return st.free;
}

static int readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void test_lbp_create_rejects_bad_options(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp_opts o = {.size = sizeof(o), .min = 1, .max = 2};
	struct fdx_lbp *lbp = (void *)1;

	assert_int_equal(fdx_lbp_create(NULL, &o, &lbp), -EINVAL);
	assert_int_equal(fdx_lbp_create(f->nbp, NULL, &lbp), -EINVAL);
	assert_int_equal(fdx_lbp_create(f->nbp, &o, NULL), -EINVAL);
	o.max = 0;
	assert_int_equal(fdx_lbp_create(f->nbp, &o, &lbp), -EINVAL);
	o.min = 3;
	o.max = 2;
	assert_int_equal(fdx_lbp_create(f->nbp, &o, &lbp), -EINVAL);
	o.min = 0;
	o.max = 33; /* more than the nbp has */
	assert_int_equal(fdx_lbp_create(f->nbp, &o, &lbp), -EINVAL);
	o.max = 2;
	o.size = 4;
	assert_int_equal(fdx_lbp_create(f->nbp, &o, &lbp), -EINVAL);
	assert_null(lbp);
}

static void test_lbp_request_hands_out_distinct_segments_by_offset(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 4, 4);
	const struct fdx_region *r = fdx_nbp_region(f->nbp);
	struct fdx_buf b[4];

	for (int i = 0; i < 4; i++) {
		assert_int_equal(fdx_lbp_request(lbp, -1, &b[i]), 0);
		assert_int_equal(b[i].capacity, SEG);
		assert_int_equal(b[i].offset % SEG, 0);
		assert_true(b[i].offset >= SEG); /* slot 0 is the region header */
		assert_true(b[i].offset + SEG <= fdx_region_size(r));
		for (int j = 0; j < i; j++)
			assert_int_not_equal(b[i].offset, b[j].offset);
		/* A pointer only on request, derived from the region base. */
		uint8_t *p = fdx_lbp_ptr(lbp, b[i].offset);
		assert_ptr_equal(p, fdx_region_ptr(r, b[i].offset, SEG));
		memset(p, i, SEG);
	}
	for (int i = 0; i < 4; i++) {
		uint8_t *p = fdx_lbp_ptr(lbp, b[i].offset);

		assert_int_equal(p[0], i);
		assert_int_equal(p[SEG - 1], i);
		assert_int_equal(fdx_lbp_recycle(lbp, b[i].offset), 0);
	}
	assert_null(fdx_lbp_ptr(lbp, 0));
	assert_null(fdx_lbp_ptr(lbp, SEG + 1));
	assert_null(fdx_lbp_ptr(NULL, SEG));
	fdx_lbp_destroy(lbp);
}

static void test_lbp_try_request_returns_eagain_when_empty(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 2, 2);
	struct fdx_buf a, b, c = {.offset = 77};
	struct fdx_lbp_stats st;

	assert_int_equal(fdx_lbp_try_request(lbp, &a), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &b), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &c), -EAGAIN);
	assert_int_equal(c.offset, 77); /* untouched on failure */
	assert_int_equal(fdx_lbp_request(lbp, 0, &c), -EAGAIN);
	st = lbp_stats(lbp);
	assert_int_equal(st.in_use, 2);
	assert_int_equal(st.available, 0);
	assert_int_equal(st.empty_requests, 2);
	assert_int_equal(st.requests, 2);
	assert_int_equal(fdx_lbp_recycle(lbp, a.offset), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &c), 0);
	assert_int_equal(c.offset, a.offset);
	assert_int_equal(fdx_lbp_recycle(lbp, b.offset), 0);
	assert_int_equal(fdx_lbp_recycle(lbp, c.offset), 0);
	fdx_lbp_destroy(lbp);
}

static void test_lbp_request_times_out_and_counts_blocked_time(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 1, 1);
	struct fdx_buf a, b;
	struct fdx_lbp_stats st;
	uint64_t t0;

	assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
	t0 = test_now_ns();
	assert_int_equal(fdx_lbp_request(lbp, 20000, &b), -ETIMEDOUT);
	assert_true(test_now_ns() - t0 >= 20000000ull);
	st = lbp_stats(lbp);
	assert_true(st.blocked_ns >= 20000000ull);
	assert_int_equal(st.waiting, 0);
	assert_int_equal(fdx_lbp_recycle(lbp, a.offset), 0);
	fdx_lbp_destroy(lbp);
}

static void test_lbp_recycle_rejects_foreign_and_double_free(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *a = lbp_new(f, 2, 4), *b = lbp_new(f, 2, 4);
	struct fdx_buf ba, bb;
	struct fdx_lbp_stats before, after;

	assert_int_equal(fdx_lbp_request(a, -1, &ba), 0);
	assert_int_equal(fdx_lbp_request(b, -1, &bb), 0);
	before = lbp_stats(a);
	assert_int_equal(fdx_lbp_recycle(a, bb.offset), FDX_ENOTOWNED); /* b's buffer */
	assert_int_equal(fdx_lbp_recycle(a, 0), FDX_ENOTOWNED); /* the header */
	assert_int_equal(fdx_lbp_recycle(a, ba.offset + 1), FDX_ENOTOWNED); /* misaligned */
	assert_int_equal(fdx_lbp_recycle(a, 1000 * (uint64_t)SEG), FDX_ENOTOWNED); /* outside */
	assert_int_equal(fdx_lbp_recycle(a, UINT64_MAX), FDX_ENOTOWNED);
	/* A segment still free in the nbp belongs to nobody. */
	assert_int_equal(fdx_lbp_recycle(a, 32 * (uint64_t)SEG), FDX_ENOTOWNED);
	assert_int_equal(fdx_lbp_recycle(NULL, ba.offset), -EINVAL);
	after = lbp_stats(a);
	assert_memory_equal(&before, &after, sizeof(before)); /* nothing changed */

	assert_int_equal(fdx_lbp_recycle(a, ba.offset), 0);
	assert_int_equal(fdx_lbp_recycle(a, ba.offset), FDX_EALREADYFREE);
	after = lbp_stats(a);
	assert_int_equal(after.in_use, 0);
	assert_int_equal(after.recycles, 1);
	assert_int_equal(after.cached, 2);
	/* b's buffer was not disturbed by a's refusals. */
	assert_int_equal(fdx_lbp_recycle(b, bb.offset), 0);
	fdx_lbp_destroy(a);
	fdx_lbp_destroy(b);
}

struct blocker {
	struct fdx_lbp *lbp;
	int64_t timeout_us;
	int wait_only;
	int ret;
	struct fdx_buf buf;
	_Atomic pid_t tid;
};

static void *blocker_main(void *arg)
{
	struct blocker *b = arg;

	atomic_store(&b->tid, gettid());
	if (b->wait_only)
		b->ret = fdx_lbp_wait(b->lbp, b->timeout_us);
	else
		b->ret = fdx_lbp_request(b->lbp, b->timeout_us, &b->buf);
	return NULL;
}

static uint32_t waiting(struct fdx_lbp *lbp)
{
	return lbp_stats(lbp).waiting;
}

static void test_lbp_request_blocks_until_a_recycle(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 1, 1);
	struct blocker bl = {.lbp = lbp, .timeout_us = -1};
	struct fdx_buf a;
	pthread_t t;

	assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
	assert_int_equal(pthread_create(&t, NULL, blocker_main, &bl), 0);
	TEST_WAIT_UNTIL(waiting(lbp) == 1);
	assert_int_equal(fdx_lbp_recycle(lbp, a.offset), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(bl.ret, 0);
	assert_int_equal(bl.buf.offset, a.offset);
	assert_true(lbp_stats(lbp).blocked_ns > 0);
	assert_int_equal(fdx_lbp_recycle(lbp, bl.buf.offset), 0);
	fdx_lbp_destroy(lbp);
}

static void test_lbp_destroy_wakes_blocked_requesters(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 2, 2);
	struct blocker bl[2] = {{.lbp = lbp, .timeout_us = -1},
				{.lbp = lbp, .timeout_us = -1, .wait_only = 1}};
	struct fdx_buf a, b;
	pthread_t t[2];

	assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
	assert_int_equal(fdx_lbp_request(lbp, -1, &b), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, blocker_main, &bl[i]), 0);
	TEST_WAIT_UNTIL(waiting(lbp) == 2);
	/* Destroy with two buffers still in use: they go back to the nbp too. */
	fdx_lbp_destroy(lbp);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(bl[i].ret, FDX_ECLOSED);
	}
	assert_non_null(strstr(f->log.last, "destroyed with 2 buffers still in use"));
	assert_int_equal(nbp_free(f), 32);
}

static void test_lbp_wait_reports_availability_without_taking(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 1, 1);
	struct blocker bl = {.lbp = lbp, .timeout_us = 5000000, .wait_only = 1};
	struct fdx_buf a;
	pthread_t t;

	assert_int_equal(fdx_lbp_wait(lbp, 0), 0);
	assert_int_equal(lbp_stats(lbp).cached, 1); /* nothing taken */
	assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
	assert_int_equal(fdx_lbp_wait(lbp, 0), -EAGAIN);
	assert_int_equal(fdx_lbp_wait(lbp, 1000), -ETIMEDOUT);
	assert_int_equal(fdx_lbp_wait(NULL, 0), -EINVAL);
	assert_int_equal(pthread_create(&t, NULL, blocker_main, &bl), 0);
	TEST_WAIT_UNTIL(waiting(lbp) == 1);
	assert_int_equal(fdx_lbp_recycle(lbp, a.offset), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(bl.ret, 0);
	assert_int_equal(lbp_stats(lbp).cached, 1);
	assert_int_equal(lbp_stats(lbp).blocked_ns, 0); /* a wait is not back-pressure */
	fdx_lbp_destroy(lbp);
}

static void test_lbp_event_fd_fires_once_after_an_empty_request(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 1, 1);
	struct fdx_buf a, b;
	uint64_t v;
	int fd, fd2;

	assert_int_equal(fdx_lbp_event_fd(lbp, &fd), 0);
	assert_int_equal(fdx_lbp_event_fd(lbp, &fd2), 0);
	assert_int_equal(fd, fd2);
	assert_int_equal(fdx_lbp_event_fd(NULL, &fd2), -EINVAL);
	assert_int_equal(fdx_lbp_event_fd(lbp, NULL), -EINVAL);
	/* A recycle nobody waited for costs nothing and signals nothing. */
	assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
	assert_int_equal(fdx_lbp_recycle(lbp, a.offset), 0);
	assert_false(readable(fd));
	/* Empty, a failed request, then a recycle: readable. */
	assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &b), -EAGAIN);
	assert_false(readable(fd));
	assert_int_equal(fdx_lbp_recycle(lbp, a.offset), 0);
	assert_true(readable(fd));
	assert_int_equal(read(fd, &v, sizeof(v)), sizeof(v));
	assert_int_equal(v, 1);
	assert_false(readable(fd));
	/* Once only: a second recycle after a success does not fire again. */
	assert_int_equal(fdx_lbp_try_request(lbp, &b), 0);
	assert_int_equal(fdx_lbp_recycle(lbp, b.offset), 0);
	assert_false(readable(fd));
	fdx_lbp_destroy(lbp);
}

struct cb_count {
	int calls;
	struct fdx_lbp *last;
};

static void count_cb(void *ud, struct fdx_lbp *lbp)
{
	struct cb_count *c = ud;

	c->calls++;
	c->last = lbp;
}

static void test_lbp_callback_fires_when_a_segment_comes_back(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 1, 1);
	struct cb_count c = {0};
	struct fdx_buf a, b;

	assert_int_equal(fdx_lbp_set_avail_cb(lbp, count_cb, &c), 0);
	assert_int_equal(fdx_lbp_set_avail_cb(NULL, count_cb, &c), -EINVAL);
	assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &b), -EAGAIN);
	assert_int_equal(c.calls, 0);
	assert_int_equal(fdx_lbp_recycle(lbp, a.offset), 0);
	assert_int_equal(c.calls, 1);
	assert_ptr_equal(c.last, lbp);
	/* Removed: no more calls. */
	assert_int_equal(fdx_lbp_set_avail_cb(lbp, NULL, NULL), 0);
	assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &b), -EAGAIN);
	assert_int_equal(fdx_lbp_recycle(lbp, a.offset), 0);
	assert_int_equal(c.calls, 1);
	fdx_lbp_destroy(lbp);
}

static void test_lbp_borrows_and_is_woken_by_another_pools_return(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *hog = lbp_new(f, 0, 32), *other = lbp_new(f, 0, 4);
	struct blocker bl = {.lbp = other, .timeout_us = 5000000};
	struct cb_count c = {0};
	struct fdx_buf held[32], b;
	pthread_t t;
	int fd;

	for (int i = 0; i < 32; i++)
		assert_int_equal(fdx_lbp_try_request(hog, &held[i]), 0);
	assert_int_equal(nbp_free(f), 0);
	assert_int_equal(fdx_lbp_event_fd(other, &fd), 0);
	assert_int_equal(fdx_lbp_set_avail_cb(other, count_cb, &c), 0);
	assert_int_equal(fdx_lbp_try_request(other, &b), -EAGAIN);
	assert_int_equal(lbp_stats(other).available, 0);
	assert_int_equal(pthread_create(&t, NULL, blocker_main, &bl), 0);
	TEST_WAIT_UNTIL(waiting(other) == 1);
	/* The hog gives everything back; idle borrowed segments flow back to the nbp. */
	for (int i = 0; i < 32; i++)
		assert_int_equal(fdx_lbp_recycle(hog, held[i].offset), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(bl.ret, 0);
	assert_true(readable(fd));
	assert_int_equal(c.calls, 1);
	assert_true(lbp_stats(hog).owned < 32);
	assert_int_equal(fdx_lbp_recycle(other, bl.buf.offset), 0);
	fdx_lbp_destroy(hog);
	fdx_lbp_destroy(other);
}

static void test_lbp_set_max_shrinks_and_grows(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 2, 8);
	struct blocker bl = {.lbp = lbp, .timeout_us = 5000000};
	struct fdx_lbp_stats st;
	struct fdx_buf b[7], x;
	pthread_t t;

	for (int i = 0; i < 7; i++)
		assert_int_equal(fdx_lbp_try_request(lbp, &b[i]), 0);
	st = lbp_stats(lbp);
	assert_int_equal(st.owned, 8); /* min 2, then a batch of 4, then the 2 left to max */
	assert_int_equal(st.in_use, 7);
	assert_int_equal(st.cached, 1);

	assert_int_equal(fdx_lbp_set_max(lbp, 1), -EINVAL); /* below min */
	assert_int_equal(fdx_lbp_set_max(lbp, 0), -EINVAL);
	assert_int_equal(fdx_lbp_set_max(lbp, 33), -EINVAL);
	assert_int_equal(fdx_lbp_set_max(NULL, 4), -EINVAL);
	/* Shrink to 4: the one cached goes back now, the surplus in use as it is recycled. */
	assert_int_equal(fdx_lbp_set_max(lbp, 4), 0);
	st = lbp_stats(lbp);
	assert_int_equal(st.max, 4);
	assert_int_equal(st.owned, 7);
	assert_int_equal(st.cached, 0);
	assert_int_equal(nbp_free(f), 32 - 7);
	for (int i = 0; i < 7; i++)
		assert_int_equal(fdx_lbp_recycle(lbp, b[i].offset), 0);
	st = lbp_stats(lbp);
	assert_int_equal(st.owned, 4);
	assert_int_equal(nbp_free(f), 32 - 4);

	/* Shrink to the minimum, fill it, block, and grow: the blocked request succeeds. */
	assert_int_equal(fdx_lbp_set_max(lbp, 2), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &b[0]), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &b[1]), 0);
	assert_int_equal(fdx_lbp_try_request(lbp, &x), -EAGAIN);
	assert_int_equal(pthread_create(&t, NULL, blocker_main, &bl), 0);
	TEST_WAIT_UNTIL(waiting(lbp) == 1);
	assert_int_equal(fdx_lbp_set_max(lbp, 3), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(bl.ret, 0);
	st = lbp_stats(lbp);
	assert_int_equal(st.in_use, 3);
	assert_int_equal(st.owned, 3);
	assert_int_equal(fdx_lbp_recycle(lbp, b[0].offset), 0);
	assert_int_equal(fdx_lbp_recycle(lbp, b[1].offset), 0);
	assert_int_equal(fdx_lbp_recycle(lbp, bl.buf.offset), 0);
	fdx_lbp_destroy(lbp);
}

static void test_lbp_stats_and_null_arguments(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 3, 10);
	struct fdx_lbp_stats st;
	struct fdx_buf b;

	st = lbp_stats(lbp);
	assert_int_equal(st.min, 3);
	assert_int_equal(st.max, 10);
	assert_int_equal(st.owned, 3);
	assert_int_equal(st.cached, 3);
	assert_int_equal(st.in_use, 0);
	assert_int_equal(st.available, 10); /* 3 cached + 7 borrowable */
	assert_int_equal(fdx_lbp_request(NULL, 0, &b), -EINVAL);
	assert_int_equal(fdx_lbp_request(lbp, 0, NULL), -EINVAL);
	assert_int_equal(fdx_lbp_try_request(NULL, &b), -EINVAL);
	assert_int_equal(fdx_lbp_stats(NULL, &st), -EINVAL);
	assert_int_equal(fdx_lbp_stats(lbp, NULL), -EINVAL);
	st.size = 0;
	assert_int_equal(fdx_lbp_stats(lbp, &st), -EINVAL);
	fdx_lbp_destroy(NULL);
	fdx_lbp_destroy(lbp);
}

/*
 * Idle borrowed segments held by one pool come back when another starves:
 * at once for a request, and through the next recycle for a blocked one.
 */
static void test_lbp_reclaims_idle_segments_another_pool_hoards(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *hoarder = lbp_new(f, 0, 32), *starved = lbp_new(f, 0, 8), *late;
	struct blocker bl = {.lbp = starved, .timeout_us = 5000000};
	struct fdx_lbp_opts o = {.size = sizeof(o), .min = 4, .max = 4};
	struct fdx_buf held[32], b;
	pthread_t t;

	/* The hoarder borrows everything, then leaves it all idle in its cache. */
	for (int i = 0; i < 32; i++)
		assert_int_equal(fdx_lbp_try_request(hoarder, &held[i]), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(fdx_lbp_recycle(hoarder, held[i].offset), 0);
	assert_int_equal(nbp_free(f), 0);
	assert_int_equal(lbp_stats(hoarder).cached, 8);
	/* A request of another pool takes them back instead of failing. */
	assert_int_equal(fdx_lbp_try_request(starved, &b), 0);
	assert_int_equal(lbp_stats(hoarder).cached, 0);
	assert_int_equal(fdx_lbp_recycle(starved, b.offset), 0);

	/* Now with nothing idle: the starved pool blocks... */
	fdx_lbp_destroy(starved);
	starved = lbp_new(f, 0, 8);
	bl.lbp = starved;
	for (int i = 0; i < 8; i++)
		assert_int_equal(fdx_lbp_try_request(hoarder, &held[i]), 0);
	assert_int_equal(nbp_free(f), 0);
	assert_int_equal(pthread_create(&t, NULL, blocker_main, &bl), 0);
	TEST_WAIT_UNTIL(waiting(starved) == 1);
	/* ...and one recycle of the hoarder, far below its keep, wakes it. */
	assert_int_equal(fdx_lbp_recycle(hoarder, held[0].offset), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(bl.ret, 0);
	assert_int_equal(fdx_lbp_recycle(starved, bl.buf.offset), 0);

	/* A new pool's minimum is met from idle segments too. */
	for (int i = 1; i < 32; i++)
		assert_int_equal(fdx_lbp_recycle(hoarder, held[i].offset), 0);
	assert_int_equal(fdx_lbp_create(f->nbp, &o, &late), 0);
	fdx_lbp_destroy(late);
	fdx_lbp_destroy(hoarder);
	fdx_lbp_destroy(starved);
}

/* A timeout too large for the clock means no bound, not an instant timeout. */
static void test_lbp_huge_timeout_waits(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 1, 1);
	struct blocker bl = {.lbp = lbp, .timeout_us = INT64_MAX};
	struct fdx_buf a;
	pthread_t t;

	assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
	assert_int_equal(pthread_create(&t, NULL, blocker_main, &bl), 0);
	TEST_WAIT_UNTIL(waiting(lbp) == 1 || bl.ret != 0);
	assert_int_equal(fdx_lbp_recycle(lbp, a.offset), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(bl.ret, 0);
	assert_int_equal(fdx_lbp_recycle(lbp, bl.buf.offset), 0);
	fdx_lbp_destroy(lbp);
}

/* Growing max beyond the size at creation grows the pool's cache. */
static void test_lbp_set_max_grows_beyond_the_creation_max(void **state)
{
	struct fixture *f = *state;
	struct fdx_lbp *lbp = lbp_new(f, 0, 2);
	struct fdx_buf b[24];

	assert_int_equal(fdx_lbp_set_max(lbp, 24), 0);
	for (int i = 0; i < 24; i++)
		assert_int_equal(fdx_lbp_try_request(lbp, &b[i]), 0);
	for (int i = 0; i < 24; i++)
		assert_int_equal(fdx_lbp_recycle(lbp, b[i].offset), 0);
	assert_int_equal(lbp_stats(lbp).owned + nbp_free(f), 32);
	fdx_lbp_destroy(lbp);
}

struct destroyer {
	struct fdx_lbp *lbp;
	_Atomic pid_t tid;
};

static void *destroy_main(void *arg)
{
	struct destroyer *d = arg;

	atomic_store(&d->tid, gettid());
	fdx_lbp_destroy(d->lbp);
	return NULL;
}

/* Is thread tid of this process asleep (state S: here, queued on a mutex)? */
static int thread_sleeping(pid_t tid)
{
	char path[64], buf[256], *p;
	FILE *fp;
	size_t n;

	if (tid == 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	fp = fopen(path, "re");
	if (!fp)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

/*
 * Destroy while a requester has missed the fast path but not yet reached the
 * nbp lock: destroy must wait for that thread, which then returns FDX_ECLOSED.
 * The test holds the nbp lock and queues the destroyer on it before the
 * requester, so the destroyer runs first; a use after free would crash or be
 * reported by ASan.
 */
static void test_lbp_destroy_waits_for_a_requester_entering_the_slow_path(void **state)
{
	struct fixture *f = *state;

	for (int round = 0; round < 20; round++) {
		struct fdx_lbp *lbp = lbp_new(f, 1, 1);
		struct blocker bl = {.lbp = lbp, .timeout_us = -1};
		struct destroyer d = {.lbp = lbp};
		struct fdx_buf a;
		pthread_t t, dt;

		assert_int_equal(fdx_lbp_request(lbp, -1, &a), 0);
		pthread_mutex_lock(&f->nbp->lock);
		assert_int_equal(pthread_create(&dt, NULL, destroy_main, &d), 0);
		TEST_WAIT_UNTIL(thread_sleeping(atomic_load(&d.tid)));
		assert_int_equal(pthread_create(&t, NULL, blocker_main, &bl), 0);
		TEST_WAIT_UNTIL(thread_sleeping(atomic_load(&bl.tid)));
		fdx__spin_lock(&lbp->spin);
		assert_int_equal(lbp->busy, 1); /* past the fast path, queued on the nbp lock */
		fdx__spin_unlock(&lbp->spin);
		pthread_mutex_unlock(&f->nbp->lock);
		assert_int_equal(pthread_join(dt, NULL), 0);
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_int_equal(bl.ret, FDX_ECLOSED);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_lbp_create_rejects_bad_options),
		T(test_lbp_request_hands_out_distinct_segments_by_offset),
		T(test_lbp_try_request_returns_eagain_when_empty),
		T(test_lbp_request_times_out_and_counts_blocked_time),
		T(test_lbp_recycle_rejects_foreign_and_double_free),
		T(test_lbp_request_blocks_until_a_recycle),
		T(test_lbp_destroy_wakes_blocked_requesters),
		T(test_lbp_wait_reports_availability_without_taking),
		T(test_lbp_event_fd_fires_once_after_an_empty_request),
		T(test_lbp_callback_fires_when_a_segment_comes_back),
		T(test_lbp_borrows_and_is_woken_by_another_pools_return),
		T(test_lbp_set_max_shrinks_and_grows),
		T(test_lbp_stats_and_null_arguments),
		T(test_lbp_reclaims_idle_segments_another_pool_hoards),
		T(test_lbp_huge_timeout_waits),
		T(test_lbp_set_max_grows_beyond_the_creation_max),
		T(test_lbp_destroy_waits_for_a_requester_entering_the_slow_path),
#undef T
	};
	return cmocka_run_group_tests_name("local_buffer_pool", tests, NULL, NULL);
}
