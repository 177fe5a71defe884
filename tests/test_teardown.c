/* SPDX-License-Identifier: MIT */
/*
 * Teardown while a consumer still reads: fdx_partition_destroy() with views
 * held (shm, local) must not let the producer's memory be written again
 * until the consumer released them or is gone, even when the caller then
 * destroys the partition's LocalBufferPool and another pool takes every
 * free segment and writes over it. The held views keep their bytes; the
 * segments come back to the nbp once released, once the consumer goes, or
 * once the producer's exchange is destroyed; fdx_nbp_destroy() refuses
 * while any is withheld. Run under ASan too (no use after free of the
 * destroyed partition, whose late credit still arrives).
 */
#include "helpers.h"

#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include <fdx/fdx.h>

#define SEG 4096u
#define NSEG 64u
#define RECS 4u /* records sent, one buffer each */
#define HELD 2u /* of them, views the consumer holds across the destroy */
#define STEP_MS 5000

struct rig {
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct fdx_exchange *pex, *cex; /* the same for local */
	struct fdx_gate *gate;
	struct fdx_partition *part;
	struct fdx_view v[RECS];
	uint32_t taken;
};

static uint8_t fill_of(uint32_t i)
{
	return (uint8_t)(0xa0 + i);
}

static struct fdx_nbp_stats nbp_stats(struct fdx_nbp *nbp)
{
	struct fdx_nbp_stats st = {.size = sizeof(st)};

	assert_int_equal(fdx_nbp_stats(nbp, &st), 0);
	return st;
}

/* The consumer's gate: one channel, credit for every record, nothing floating or in place. */
static const struct fdx_gate_opts gate_opts = {.size = sizeof(struct fdx_gate_opts),
					       .gate = 1,
					       .n_channels = 1,
					       .exclusive_credits = RECS,
					       .floating_credits = FDX_CREDITS_NONE,
					       .inplace_credits = FDX_CREDITS_NONE};

/* RECS records, each filling a segment with its 4-byte header: one buffer each. */
static void emit_records(struct fdx_partition *p)
{
	static uint8_t rec[SEG - 4];

	for (uint32_t i = 0; i < RECS; i++) {
		memset(rec, fill_of(i), sizeof(rec));
		assert_int_equal(fdx_partition_emit(p, 0, rec, sizeof(rec), STEP_MS), 0);
		assert_int_equal(fdx_partition_flush(p, 0), 0);
	}
}

/* Everything emitted went out (the consumer holds it or has it queued). */
static int all_sent(struct rig *r)
{
	struct fdx_channel_stats cs = {.size = sizeof(cs)};

	return fdx_partition_channel_stats(r->part, 0, &cs) == 0 && cs.buffers_sent == RECS;
}

/* The consumer looks (the channel's end is taken in fdx_gate_next()): is it closed now? */
static int closed_now(struct rig *r)
{
	struct fdx_gate_stats gs = {.size = sizeof(gs)};
	struct fdx_view v;

	assert_int_equal(fdx_gate_next(r->gate, &v, 10), -EAGAIN);
	assert_int_equal(fdx_gate_stats(r->gate, &gs), 0);
	return gs.channels_open == 0;
}

/* A producer of one subpartition connected over link to a gate of one channel; RECS records out. */
static void rig_up(struct rig *r, uint32_t link)
{
	struct fdx_nbp_opts no = {.size = sizeof(no),
				  .seg_size = SEG,
				  .seg_count = NSEG,
				  .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 16};
	struct fdx_exchange_opts eo = {.size = sizeof(eo)};
	struct fdx_partition_opts po = {.size = sizeof(po), .n_subpartitions = 1};

	memset(r, 0, sizeof(*r));
	assert_int_equal(fdx_nbp_create(&no, &r->nbp), 0);
	assert_int_equal(fdx_lbp_create(r->nbp, &lo, &r->lbp), 0);
	eo.tm_id = "consumer";
	assert_int_equal(fdx_exchange_create(&eo, &r->cex), 0);
	if (link == FDX_LINK_LOCAL) {
		r->pex = r->cex;
	} else {
		eo.tm_id = "producer";
		assert_int_equal(fdx_exchange_create(&eo, &r->pex), 0);
	}
	assert_int_equal(fdx_gate_create(r->cex, NULL, &gate_opts, &r->gate), 0);
	assert_int_equal(fdx_partition_create(r->pex, r->lbp, &po, &r->part), 0);
	assert_int_equal(fdx_partition_connect(r->part, 0, fdx_exchange_address(r->cex), 1, 0, link,
					       STEP_MS),
			 0);
	emit_records(r->part);
	TEST_WAIT_UNTIL(all_sent(r));
}

/*
 * View v holds record i, every byte as written: its 4-byte length, then its
 * fill. 0, or -1 with why set.
 */
static int view_intact(const struct fdx_view *v, uint32_t i, char *why, size_t n)
{
	const uint8_t *d = v->data;
	uint32_t len;

	if (v->kind != FDX_VIEW_BUFFER || v->len != SEG) {
		snprintf(why, n, "view %u: kind %u, %u bytes", i, v->kind, v->len);
		return -1;
	}
	memcpy(&len, d, 4);
	if (le32toh(len) != SEG - 4) {
		snprintf(
			why, n,
			"view %u: its record length reads %#x, written %#x: its segment was reused",
			i, le32toh(len), SEG - 4);
		return -1;
	}
	for (uint32_t k = 4; k < SEG; k++)
		if (d[k] != fill_of(i)) {
			snprintf(why, n,
				 "view %u: byte %u is %#x, written %#x: its segment was reused", i,
				 k, d[k], fill_of(i));
			return -1;
		}
	return 0;
}

static void check_view(struct rig *r, uint32_t i)
{
	char why[160];

	if (view_intact(&r->v[i], i, why, sizeof(why)) < 0)
		fail_msg("%s", why);
}

static void take(struct rig *r, uint32_t n)
{
	for (; r->taken < n; r->taken++) {
		assert_int_equal(fdx_gate_next(r->gate, &r->v[r->taken], STEP_MS), 0);
		assert_int_equal(r->v[r->taken].kind, FDX_VIEW_BUFFER);
		check_view(r, r->taken);
	}
}

/* HELD views taken, then the partition destroyed and its pool too, as a task that ended does. */
static void destroy_holding_views(struct rig *r, uint32_t link)
{
	rig_up(r, link);
	take(r, HELD);
	fdx_partition_destroy(r->part);
	r->part = NULL;
	fdx_lbp_destroy(r->lbp);
	r->lbp = NULL;
}

/*
 * Another pool takes every segment the nbp has free and writes over it: had
 * the destroyed partition's segments gone back, the held views would see it.
 */
static struct fdx_lbp *scribble_everything(struct rig *r)
{
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = NSEG};
	struct fdx_lbp *other;
	struct fdx_buf b;
	uint32_t got = 0;

	assert_int_equal(fdx_lbp_create(r->nbp, &lo, &other), 0);
	while (got < NSEG && fdx_lbp_try_request(other, &b) == 0) {
		memset(fdx_lbp_ptr(other, b.offset), 0xee, SEG);
		got++;
	}
	assert_true(got > 0);
	return other;
}

static void teardown_rig(struct rig *r)
{
	if (r->gate)
		fdx_gate_destroy(r->gate);
	if (r->pex != r->cex)
		assert_int_equal(fdx_exchange_destroy(r->pex), 0);
	assert_int_equal(fdx_exchange_destroy(r->cex), 0);
	assert_int_equal(nbp_stats(r->nbp).withheld, 0);
	assert_int_equal(fdx_nbp_destroy(r->nbp), 0);
}

/* Views held across the destroy keep their bytes; their segments come back once released. */
static void destroy_with_views_held(uint32_t link)
{
	struct rig r;
	struct fdx_lbp *other;

	destroy_holding_views(&r, link);
	other = scribble_everything(&r);
	for (uint32_t i = 0; i < HELD; i++)
		check_view(&r, i);
	/* The buffers the consumer holds or has queued stay out of every pool. */
	assert_true(nbp_stats(r.nbp).withheld >= HELD);
	/* The rest still arrives intact, then the channel ends once all is back. */
	take(&r, RECS);
	assert_int_equal(fdx_nbp_destroy(r.nbp), -EBUSY);
	for (uint32_t i = 0; i < RECS; i++)
		assert_int_equal(fdx_gate_release(r.gate, &r.v[i]), 0);
	TEST_WAIT_UNTIL(nbp_stats(r.nbp).withheld == 0);
	TEST_WAIT_UNTIL(closed_now(&r));
	fdx_lbp_destroy(other);
	assert_int_equal(nbp_stats(r.nbp).free, NSEG);
	teardown_rig(&r);
}

static void test_shm_partition_destroyed_with_views_held_keeps_them(void **state)
{
	(void)state;
	destroy_with_views_held(FDX_LINK_SHM);
}

static void test_local_partition_destroyed_with_views_held_keeps_them(void **state)
{
	(void)state;
	destroy_with_views_held(FDX_LINK_LOCAL);
}

/* Local: the consumer's gate goes (what it had queued goes back with it): the segments come back. */
static void test_local_segments_come_back_when_the_gate_goes(void **state)
{
	struct rig r;

	(void)state;
	destroy_holding_views(&r, FDX_LINK_LOCAL);
	assert_true(nbp_stats(r.nbp).withheld >= HELD);
	for (uint32_t i = 0; i < HELD; i++) {
		check_view(&r, i);
		assert_int_equal(fdx_gate_release(r.gate, &r.v[i]), 0);
	}
	fdx_gate_destroy(r.gate);
	r.gate = NULL;
	TEST_WAIT_UNTIL(nbp_stats(r.nbp).withheld == 0);
	assert_int_equal(nbp_stats(r.nbp).free, NSEG);
	teardown_rig(&r);
}

/*
 * The consumer, another process ("consumer" below), holds views of a
 * destroyed partition: they stay intact however the producer's memory is
 * reused, until it is killed; then every segment comes back.
 */
static void test_shm_segments_come_back_when_the_consumer_dies(void **state)
{
	char *argv[] = {"test_teardown", "consumer", NULL};
	struct fdx_nbp_opts no = {.size = sizeof(no),
				  .seg_size = SEG,
				  .seg_count = NSEG,
				  .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 16};
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "producer"};
	struct fdx_partition_opts po = {.size = sizeof(po), .n_subpartitions = 1};
	struct rig r;
	char line[256];
	int to = -1, from = -1, st;
	struct fdx_lbp *other;
	pid_t pid;

	(void)state;
	memset(&r, 0, sizeof(r));
	pid = test_spawn_self(argv, &to, &from); /* before any exchange of ours */
	assert_true(pid > 0);
	assert_int_equal(test_read_fd_line(from, line, sizeof(line), STEP_MS), 0);
	assert_int_equal(strncmp(line, "addr ", 5), 0);
	assert_int_equal(fdx_nbp_create(&no, &r.nbp), 0);
	assert_int_equal(fdx_lbp_create(r.nbp, &lo, &r.lbp), 0);
	assert_int_equal(fdx_exchange_create(&eo, &r.pex), 0);
	assert_int_equal(fdx_partition_create(r.pex, r.lbp, &po, &r.part), 0);
	assert_int_equal(fdx_partition_connect(r.part, 0, line + 5, 1, 0, FDX_LINK_SHM, STEP_MS),
			 0);
	emit_records(r.part);
	TEST_WAIT_UNTIL(all_sent(&r));
	assert_int_equal(dprintf(to, "take\n") > 0, 1);
	assert_int_equal(test_read_fd_line(from, line, sizeof(line), STEP_MS), 0);
	assert_string_equal(line, "took");
	fdx_partition_destroy(r.part);
	fdx_lbp_destroy(r.lbp);
	other = scribble_everything(&r);
	assert_int_equal(dprintf(to, "check\n") > 0, 1);
	assert_int_equal(test_read_fd_line(from, line, sizeof(line), STEP_MS), 0);
	assert_string_equal(line, "intact");
	assert_int_equal(nbp_stats(r.nbp).withheld, RECS); /* held, or queued at the consumer */
	assert_int_equal(fdx_nbp_destroy(r.nbp), -EBUSY);
	/* It dies holding them: its streams end, every segment comes back. */
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	close(to);
	close(from);
	TEST_WAIT_UNTIL(nbp_stats(r.nbp).withheld == 0);
	fdx_lbp_destroy(other);
	assert_int_equal(nbp_stats(r.nbp).free, NSEG);
	assert_int_equal(fdx_exchange_destroy(r.pex), 0);
	assert_int_equal(fdx_nbp_destroy(r.nbp), 0);
}

/*
 * The consumer process: a gate of one channel; prints its address, then on
 * "take" takes HELD views and checks them ("took"), on "check" checks them
 * again ("intact", or what is wrong), until killed or its stdin ends.
 */
static int consumer_main(void)
{
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "consumer"};
	struct fdx_exchange *ex;
	struct fdx_gate *g;
	struct fdx_view v[HELD];
	char line[64], why[160];
	int rc = 1;

	if (fdx_exchange_create(&eo, &ex) != 0 || fdx_gate_create(ex, NULL, &gate_opts, &g) != 0)
		return 1;
	printf("addr %s\n", fdx_exchange_address(ex));
	fflush(stdout);
	while (test_read_fd_line(0, line, sizeof(line), 60000) == 0) {
		int bad = 0;

		for (uint32_t i = 0; i < HELD && !bad; i++) {
			if (strcmp(line, "take") == 0 && fdx_gate_next(g, &v[i], STEP_MS) != 0) {
				snprintf(why, sizeof(why), "no view %u", i);
				bad = 1;
			}
			if (!bad)
				bad = view_intact(&v[i], i, why, sizeof(why)) < 0;
		}
		printf("%s\n", bad ? why : strcmp(line, "take") == 0 ? "took" : "intact");
		fflush(stdout);
	}
	return rc;
}

/*
 * The producer's exchange is destroyed while a consumer still holds views of
 * a destroyed partition: it does not refuse (the partition is no longer the
 * caller's), it hangs up on that consumer and the segments come back.
 */
static void test_exchange_destroy_takes_back_a_draining_partition(void **state)
{
	struct rig r;

	(void)state;
	destroy_holding_views(&r, FDX_LINK_SHM);
	assert_true(nbp_stats(r.nbp).withheld >= HELD);
	assert_int_equal(fdx_exchange_destroy(r.pex), 0);
	assert_int_equal(nbp_stats(r.nbp).withheld, 0);
	assert_int_equal(nbp_stats(r.nbp).free, NSEG);
	/* The consumer's views stay readable: its mapping is its own. */
	for (uint32_t i = 0; i < HELD; i++) {
		assert_non_null(r.v[i].data);
		assert_int_equal(fdx_gate_release(r.gate, &r.v[i]), 0);
	}
	fdx_gate_destroy(r.gate);
	assert_int_equal(fdx_exchange_destroy(r.cex), 0);
	assert_int_equal(fdx_nbp_destroy(r.nbp), 0);
}

/* With nothing in flight, destroy gives everything back at once, as before. */
static void test_destroy_after_everything_came_back_withholds_nothing(void **state)
{
	struct rig r;

	(void)state;
	rig_up(&r, FDX_LINK_SHM);
	take(&r, RECS);
	for (uint32_t i = 0; i < RECS; i++)
		assert_int_equal(fdx_gate_release(r.gate, &r.v[i]), 0);
	assert_int_equal(fdx_partition_finish(r.part, STEP_MS), 0);
	fdx_partition_destroy(r.part);
	assert_int_equal(nbp_stats(r.nbp).withheld, 0);
	fdx_lbp_destroy(r.lbp);
	assert_int_equal(nbp_stats(r.nbp).free, NSEG);
	teardown_rig(&r);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "consumer") == 0)
		return consumer_main();

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shm_partition_destroyed_with_views_held_keeps_them),
		cmocka_unit_test(test_local_partition_destroyed_with_views_held_keeps_them),
		cmocka_unit_test(test_local_segments_come_back_when_the_gate_goes),
		cmocka_unit_test(test_shm_segments_come_back_when_the_consumer_dies),
		cmocka_unit_test(test_exchange_destroy_takes_back_a_draining_partition),
		cmocka_unit_test(test_destroy_after_everything_came_back_withholds_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
