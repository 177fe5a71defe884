/* SPDX-License-Identifier: MIT */
/*
 * When partly filled buffers go: on fdx_partition_flush(), after the buffer
 * timeout, and after every record with a timeout of 0. A local link in one
 * process (the same loop and credit rules as the others). And the order in
 * which the gate takes what the loop and the cq thread push to it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "runtime/input_gate.h"
#include "runtime/result_partition.h"
#include "transport/data_wire.h"
#include "tests/helpers.h"

struct rig {
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct fdx_exchange *ex;
	struct fdx_gate *gate;
	struct fdx_partition *part;
};

/* A gate of one channel and a partition of one subpartition, connected locally. */
static void rig_open(struct rig *r, uint32_t flags, uint32_t timeout_ms)
{
	struct fdx_nbp_opts no = {
		.size = sizeof(no), .seg_count = 64, .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 32};
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .listen = "127.0.0.1:0"};
	struct fdx_gate_opts go = {
		.size = sizeof(go), .gate = 1, .n_channels = 1, .exclusive_credits = 8};
	struct fdx_partition_opts po = {.size = sizeof(po),
					.n_subpartitions = 1,
					.flags = flags,
					.buffer_timeout_ms = timeout_ms};

	memset(r, 0, sizeof(*r));
	assert_int_equal(fdx_nbp_create(&no, &r->nbp), 0);
	assert_int_equal(fdx_lbp_create(r->nbp, &lo, &r->lbp), 0);
	assert_int_equal(fdx_exchange_create(&eo, &r->ex), 0);
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &r->gate), 0);
	assert_int_equal(fdx_partition_create(r->ex, r->lbp, &po, &r->part), 0);
	assert_int_equal(fdx_partition_connect(r->part, 0, fdx_exchange_address(r->ex), 1, 0,
					       FDX_LINK_LOCAL, 5000),
			 0);
}

static void rig_close(struct rig *r)
{
	struct fdx_view v;
	int ended = 0;

	int rc = fdx_partition_finish(r->part, 0); /* sends the end, waits for nothing */

	assert_true(rc == 0 || rc == -ETIMEDOUT);
	for (int i = 0; i < 1000 && !ended; i++) {
		if (fdx_gate_next(r->gate, &v, 5000) != 0)
			break;
		ended = v.kind == FDX_VIEW_EVENT && v.event_type == FDX_EVENT_END_OF_PARTITION;
		assert_int_equal(fdx_gate_release(r->gate, &v), 0);
	}
	assert_true(ended);
	assert_int_equal(fdx_partition_finish(r->part, 5000), 0);
	fdx_partition_destroy(r->part);
	fdx_gate_destroy(r->gate);
	fdx_exchange_destroy(r->ex);
	fdx_lbp_destroy(r->lbp);
	assert_int_equal(fdx_nbp_destroy(r->nbp), 0);
}

/* The next view must be a buffer holding exactly the records want[0..n). */
static void expect_view(struct rig *r, const uint32_t *want, uint32_t n)
{
	struct fdx_view v;
	const void *rec;
	uint32_t len, got = 0;

	assert_int_equal(fdx_gate_next(r->gate, &v, 5000), 0);
	assert_int_equal(v.kind, FDX_VIEW_BUFFER);
	while (fdx_gate_next_record(r->gate, &v, &rec, &len) == 1) {
		uint32_t x;

		assert_true(got < n);
		assert_int_equal(len, sizeof(x));
		memcpy(&x, rec, sizeof(x));
		assert_int_equal(x, want[got]);
		got++;
	}
	assert_int_equal(got, n);
	assert_int_equal(fdx_gate_release(r->gate, &v), 0);
}

/* The records want[0..n) arrive, in order, in one view or more (the timeout may strike between). */
static void expect_records(struct rig *r, const uint32_t *want, uint32_t n)
{
	uint32_t got = 0;

	for (int views = 0; got < n && views < 16; views++) {
		struct fdx_view v;
		const void *rec;
		uint32_t len, x;

		assert_int_equal(fdx_gate_next(r->gate, &v, 5000), 0);
		assert_int_equal(v.kind, FDX_VIEW_BUFFER);
		while (fdx_gate_next_record(r->gate, &v, &rec, &len) == 1) {
			assert_true(got < n);
			assert_int_equal(len, sizeof(x));
			memcpy(&x, rec, sizeof(x));
			assert_int_equal(x, want[got]);
			got++;
		}
		assert_int_equal(fdx_gate_release(r->gate, &v), 0);
	}
	assert_int_equal(got, n);
}

static void emit_u32(struct rig *r, uint32_t x)
{
	assert_int_equal(fdx_partition_emit(r->part, 0, &x, sizeof(x), 1000), 0);
}

/* Timeout 0: every record goes at once, each in a view of its own. */
static void test_timeout_zero_sends_every_record_at_once(void **state)
{
	struct rig r;

	(void)state;
	rig_open(&r, FDX_PARTITION_BUFFER_TIMEOUT, 0);
	for (uint32_t i = 0; i < 5; i++) {
		emit_u32(&r, i);
		expect_view(&r, &i, 1); /* nothing else made it go */
	}
	rig_close(&r);
}

/* No flush, a buffer far from full: the buffer timeout sends it. */
static void test_buffer_timeout_sends_a_partly_filled_buffer(void **state)
{
	uint32_t want[3] = {7, 8, 9};
	struct rig r;

	(void)state;
	rig_open(&r, FDX_PARTITION_BUFFER_TIMEOUT, 20);
	for (uint32_t i = 0; i < 3; i++)
		emit_u32(&r, want[i]);
	expect_records(&r, want, 3);
	rig_close(&r);
}

/*
 * A timeout of a minute: records go when flushed (a flush sends what was
 * written so far; the buffer keeps being filled after it).
 */
static void test_flush_sends_what_was_written_so_far(void **state)
{
	struct rig r;

	(void)state;
	rig_open(&r, FDX_PARTITION_BUFFER_TIMEOUT, 60000);
	for (uint32_t i = 0; i < 4; i++) {
		uint32_t want[2] = {2 * i, 2 * i + 1};

		emit_u32(&r, want[0]);
		emit_u32(&r, want[1]);
		assert_int_equal(fdx_partition_flush(r.part, 0), 0);
		expect_view(&r, want, 2);
	}
	rig_close(&r);
}

/* finish() with a reservation open refuses (-EBUSY) and sends nothing; after the commit it ends. */
static void test_finish_refuses_while_a_reservation_is_open(void **state)
{
	struct fdx_partition_stats ps = {.size = sizeof(ps)};
	struct rig r;
	uint32_t want = 7;
	void *where;

	(void)state;
	rig_open(&r, FDX_PARTITION_BUFFER_TIMEOUT, 60000);
	assert_int_equal(fdx_partition_reserve(r.part, 0, sizeof(want), &where, 1000), 0);
	assert_int_equal(fdx_partition_finish(r.part, 1000), -EBUSY);
	assert_int_equal(fdx_partition_stats(r.part, &ps), 0);
	assert_int_equal(ps.events_sent, 0);
	memcpy(where, &want, sizeof(want));
	assert_int_equal(fdx_partition_commit(r.part, 0, sizeof(want)), 0);
	assert_int_equal(fdx_partition_flush(r.part, 0), 0);
	expect_view(&r, &want, 1);
	rig_close(&r);
}

/* An event to every subpartition reaches the live ones past an ended one (and says so). */
static void test_event_to_all_skips_an_ended_subpartition(void **state)
{
	struct fdx_nbp_opts no = {
		.size = sizeof(no), .seg_count = 64, .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 32};
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .listen = "127.0.0.1:0"};
	struct fdx_gate_opts go = {.size = sizeof(go), .gate = 1, .n_channels = 3};
	struct fdx_partition_opts po = {.size = sizeof(po), .n_subpartitions = 3};
	uint32_t eop[3] = {0}, marks[3] = {0};
	struct fdx_partition *part;
	struct fdx_exchange *ex;
	struct fdx_gate *gate;
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct fdx_view v;
	uint64_t mark = 42;

	(void)state;
	assert_int_equal(fdx_nbp_create(&no, &nbp), 0);
	assert_int_equal(fdx_lbp_create(nbp, &lo, &lbp), 0);
	assert_int_equal(fdx_exchange_create(&eo, &ex), 0);
	assert_int_equal(fdx_gate_create(ex, NULL, &go, &gate), 0);
	assert_int_equal(fdx_partition_create(ex, lbp, &po, &part), 0);
	for (uint32_t i = 0; i < 3; i++)
		assert_int_equal(fdx_partition_connect(part, i, fdx_exchange_address(ex), 1, i,
						       FDX_LINK_LOCAL, 5000),
				 0);
	/* Subpartition 1 ends first: the watermark to all still reaches 0 and 2. */
	assert_int_equal(fdx_partition_event(part, 1, FDX_EVENT_END_OF_PARTITION, 0, NULL, 0), 0);
	assert_int_equal(fdx_partition_event(part, FDX_ALL_SUBPARTITIONS, FDX_EVENT_WATERMARK, 0,
					     &mark, sizeof(mark)),
			 FDX_ECLOSED);
	assert_int_equal(fdx_partition_event(part, FDX_ALL_SUBPARTITIONS,
					     FDX_EVENT_END_OF_PARTITION, 0, NULL, 0),
			 FDX_ECLOSED);
	for (int i = 0; i < 100 && eop[0] + eop[1] + eop[2] < 3; i++) {
		assert_int_equal(fdx_gate_next(gate, &v, 5000), 0);
		assert_int_equal(v.kind, FDX_VIEW_EVENT);
		if (v.event_type == FDX_EVENT_WATERMARK) {
			assert_int_equal(v.len, sizeof(mark));
			assert_memory_equal(v.data, &mark, sizeof(mark));
			marks[v.channel]++;
		} else {
			assert_int_equal(v.event_type, FDX_EVENT_END_OF_PARTITION);
			eop[v.channel]++;
		}
		assert_int_equal(fdx_gate_release(gate, &v), 0);
	}
	assert_int_equal(marks[0], 1);
	assert_int_equal(marks[1], 0);
	assert_int_equal(marks[2], 1);
	assert_int_equal(eop[0] + eop[1] + eop[2], 3);
	assert_int_equal(fdx_partition_finish(part, 5000), 0);
	fdx_partition_destroy(part);
	fdx_gate_destroy(gate);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(lbp);
	assert_int_equal(fdx_nbp_destroy(nbp), 0);
}

/*
 * A shm producer whose record is above the gate's max_record (its own limit
 * is larger): next_record refuses it, the channel fails as for a bad frame,
 * and the producer learns it on its control stream.
 */
static void test_record_above_gate_max_fails_a_remote_channel(void **state)
{
	struct fdx_nbp_opts no = {
		.size = sizeof(no), .seg_count = 64, .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 32};
	struct fdx_exchange_opts eo = {.size = sizeof(eo)};
	struct fdx_gate_opts go = {
		.size = sizeof(go), .gate = 1, .n_channels = 1, .max_record = 1000};
	struct fdx_partition_opts po = {.size = sizeof(po), .n_subpartitions = 1};
	struct fdx_channel_stats cs = {.size = sizeof(cs)};
	struct fdx_exchange *pex, *cex;
	struct fdx_partition *part;
	struct fdx_gate *gate;
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct fdx_view v;
	static uint8_t rec[2000];
	const void *r;
	uint32_t len;
	int i;

	(void)state;
	assert_int_equal(fdx_nbp_create(&no, &nbp), 0);
	assert_int_equal(fdx_lbp_create(nbp, &lo, &lbp), 0);
	eo.tm_id = "consumer";
	assert_int_equal(fdx_exchange_create(&eo, &cex), 0);
	eo.tm_id = "producer";
	assert_int_equal(fdx_exchange_create(&eo, &pex), 0);
	assert_int_equal(fdx_gate_create(cex, NULL, &go, &gate), 0);
	assert_int_equal(fdx_partition_create(pex, lbp, &po, &part), 0);
	assert_int_equal(
		fdx_partition_connect(part, 0, fdx_exchange_address(cex), 1, 0, FDX_LINK_SHM, 5000),
		0);
	assert_int_equal(fdx_partition_emit(part, 0, rec, sizeof(rec), 5000), 0);
	assert_int_equal(fdx_partition_flush(part, 0), 0);
	assert_int_equal(fdx_gate_next(gate, &v, 5000), 0);
	assert_int_equal(v.kind, FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_next_record(gate, &v, &r, &len), FDX_EPROTO);
	assert_int_equal(fdx_gate_next_record(gate, &v, &r, &len), 0); /* the rest skipped */
	assert_int_equal(fdx_gate_release(gate, &v), 0);
	/* What the producer sends after (if it has not heard yet) is dropped unread. */
	i = fdx_partition_emit(part, 0, rec, 10, 5000);
	assert_true(i == 0 || i == -EPIPE);
	assert_int_equal(fdx_partition_flush(part, 0), 0);
	assert_int_equal(fdx_gate_next(gate, &v, 5000), 0);
	assert_int_equal(v.kind, FDX_VIEW_FAILED);
	assert_int_equal(v.error, FDX_EPROTO);
	assert_non_null(strstr(v.message, "a record of 2000 bytes, above the 1000 allowed"));
	assert_int_equal(fdx_gate_release(gate, &v), 0);
	/* The producer is told: its channel fails, emit says so (bounded wait). */
	for (i = 0; i < 500; i++) {
		assert_int_equal(fdx_partition_channel_stats(part, 0, &cs), 0);
		if (cs.error)
			break;
		test_sleep_us(10000);
	}
	assert_true(cs.error == FDX_EPROTO || cs.error == FDX_EPEERGONE);
	assert_int_equal(fdx_partition_emit(part, 0, rec, 10, 100), -EPIPE);
	/*
	 * Both sides forget the channel while the stream lives: the producer
	 * closes it on the consumer's Error, the consumer confirms.
	 */
	for (i = 0; i < 500; i++) {
		struct fdx_exchange_stats ps = {.size = sizeof(ps)}, css = {.size = sizeof(css)};

		assert_int_equal(fdx_exchange_stats(pex, &ps), 0);
		assert_int_equal(fdx_exchange_stats(cex, &css), 0);
		if (ps.channels_closing == 0 && ps.channels_out == 0 && css.channels_in == 0)
			break;
		test_sleep_us(10000);
	}
	assert_true(i < 500);
	fdx_partition_destroy(part);
	fdx_gate_destroy(gate);
	fdx_exchange_destroy(pex);
	fdx_exchange_destroy(cex);
	fdx_lbp_destroy(lbp);
	assert_int_equal(fdx_nbp_destroy(nbp), 0);
}

/* A record that fills its buffer to the last byte: the full buffer goes at once. */
static void test_full_buffer_goes_without_flush(void **state)
{
	static uint8_t big[FDX_SEG_SIZE_DEFAULT - 4];
	struct fdx_view v;
	const void *rec;
	uint32_t len;
	struct rig r;

	(void)state;
	rig_open(&r, FDX_PARTITION_BUFFER_TIMEOUT, 60000);
	memset(big, 0x5a, sizeof(big));
	assert_int_equal(fdx_partition_emit(r.part, 0, big, sizeof(big), 1000), 0);
	assert_int_equal(fdx_gate_next(r.gate, &v, 5000), 0);
	assert_int_equal(v.kind, FDX_VIEW_BUFFER);
	assert_int_equal(v.len, FDX_SEG_SIZE_DEFAULT);
	assert_int_equal(fdx_gate_next_record(r.gate, &v, &rec, &len), 1);
	assert_int_equal(len, sizeof(big));
	assert_memory_equal(rec, big, sizeof(big));
	assert_int_equal(fdx_gate_release(r.gate, &v), 0);
	rig_close(&r);
}

/* An event loop waits on the gate's descriptor: armed by an empty next(), readable on data. */
static void test_gate_event_fd_wakes_an_event_loop(void **state)
{
	struct fdx_view v;
	uint64_t junk;
	uint32_t x = 42;
	struct rig r;
	int fd;

	(void)state;
	rig_open(&r, FDX_PARTITION_BUFFER_TIMEOUT, 60000);
	fd = fdx_gate_event_fd(r.gate);
	assert_true(fd >= 0);
	assert_int_equal(fdx_gate_next(r.gate, &v, 0), -EAGAIN); /* arms it */
	struct pollfd pf = {.fd = fd, .events = POLLIN};

	assert_int_equal(poll(&pf, 1, 0), 0); /* nothing yet */
	emit_u32(&r, x);
	assert_int_equal(fdx_partition_flush(r.part, 0), 0);
	assert_int_equal(poll(&pf, 1, 5000), 1);
	assert_int_equal(read(fd, &junk, sizeof(junk)), (ssize_t)sizeof(junk));
	assert_int_equal(fdx_gate_next(r.gate, &v, 0), 0);
	assert_int_equal(v.kind, FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_release(r.gate, &v), 0);
	rig_close(&r);
}

/*
 * Data sent after a priority event never overtakes it. The producer sends
 * barrier i (priority), then record i, PO_PAIRS times; the consumer reads on
 * another thread: when record i arrives, barrier i must have come already.
 * (The gate took its priority queue, found it empty, then the normal one: a
 * barrier and the record after it pushed between the two looks made the
 * record overtake it, a few times in 100 000 pairs.)
 */
#define PO_PAIRS 100000u
#define PO_SPINS 1000000u /* empty polls before the consumer sleeps */

struct po_producer {
	struct rig *r;
	int err; /* the first failing call's error */
	const char *what;
};

static void *po_produce(void *arg)
{
	struct po_producer *pp = arg;

	for (uint32_t i = 0; i < PO_PAIRS && !pp->err; i++) {
		uint64_t id = i;
		int rc = fdx_partition_event(pp->r->part, 0, FDX_EVENT_BARRIER, FDX_EVENT_PRIORITY,
					     &id, sizeof(id));

		if (rc) {
			pp->err = rc;
			pp->what = "event";
			break;
		}
		rc = fdx_partition_emit(pp->r->part, 0, &i, sizeof(i), 5000);
		if (rc) {
			pp->err = rc;
			pp->what = "emit";
		}
	}
	return NULL;
}

static void test_data_after_a_priority_event_never_overtakes_it(void **state)
{
	struct po_producer pp = {0};
	uint64_t barriers = 0, records = 0;
	pthread_t th;
	struct rig r;

	(void)state;
	rig_open(&r, FDX_PARTITION_BUFFER_TIMEOUT, 0);
	pp.r = &r;
	assert_int_equal(pthread_create(&th, NULL, po_produce, &pp), 0);
	while (records < PO_PAIRS) {
		struct fdx_view v;
		const void *rec;
		uint32_t len, x;
		int rc;

		/* Spinning (a timeout of 0) meets the producer mid-push more often than sleeping. */
		for (uint64_t spins = 0;
		     (rc = fdx_gate_next(r.gate, &v, 0)) == -EAGAIN && spins < PO_SPINS; spins++)
			;
		if (rc == -EAGAIN)
			rc = fdx_gate_next(r.gate, &v, 10000);

		if (rc)
			fail_msg(
				"gate next: %s after %llu barriers, %llu records (producer: %s %s)",
				fdx_strerror(rc), (unsigned long long)barriers,
				(unsigned long long)records, pp.what ? pp.what : "-",
				pp.err ? fdx_strerror(pp.err) : "ok");
		if (v.kind == FDX_VIEW_EVENT) {
			uint64_t id;

			assert_int_equal(v.event_type, FDX_EVENT_BARRIER);
			assert_int_equal(v.len, sizeof(id));
			memcpy(&id, v.data, sizeof(id));
			assert_int_equal(id, barriers); /* barriers keep their own order */
			barriers++;
		} else {
			assert_int_equal(v.kind, FDX_VIEW_BUFFER);
			while (fdx_gate_next_record(r.gate, &v, &rec, &len) == 1) {
				assert_int_equal(len, sizeof(x));
				memcpy(&x, rec, sizeof(x));
				assert_int_equal(x, records);
				if (barriers <= x)
					fail_msg("record %u came before barrier %u, sent before it "
						 "(%llu barriers seen)",
						 x, x, (unsigned long long)barriers);
				records++;
			}
		}
		assert_int_equal(fdx_gate_release(r.gate, &v), 0);
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(pp.err, 0);
	assert_int_equal(barriers, PO_PAIRS);
	rig_close(&r);
}

/*
 * The same, made certain: a priority event and a normal one after it are
 * pushed exactly while the consumer is between its look at the priority queue
 * (empty) and its take from the normal queue.
 */
static int gap_pushed;

static struct fdx__gitem *event_item(uint32_t ch, uint64_t id, uint16_t flags)
{
	struct fdx__gitem *it = calloc(1, sizeof(*it) + sizeof(id));

	assert_non_null(it);
	it->kind = FDX__GI_EVENT;
	it->ch = ch;
	it->sess = FDX__SESS_LOCAL;
	it->event_type = FDX_EVENT_BARRIER;
	it->flags = flags;
	it->len = sizeof(id);
	memcpy(it->payload, &id, sizeof(id));
	it->data = it->payload;
	return it;
}

static void push_in_the_gap(struct fdx_gate *g)
{
	if (gap_pushed++)
		return;
	fdx__gate_push(g, event_item(0, 1, FDX_EVENT_PRIORITY)); /* first in the stream */
	fdx__gate_push(g, event_item(0, 2, 0)); /* after it */
}

static void test_an_item_pushed_after_a_priority_one_mid_take_does_not_overtake_it(void **state)
{
	struct fdx_view v;
	uint64_t id;
	struct rig r;

	(void)state;
	rig_open(&r, FDX_PARTITION_BUFFER_TIMEOUT, 60000);
	assert_int_equal(fdx_gate_next(r.gate, &v, 0), -EAGAIN); /* takes the channel's opening */
	gap_pushed = 0;
	fdx__seam_gate_between_pops = push_in_the_gap;
	for (uint64_t want = 1; want <= 2; want++) {
		assert_int_equal(fdx_gate_next(r.gate, &v, 5000), 0);
		assert_int_equal(v.kind, FDX_VIEW_EVENT);
		memcpy(&id, v.data, sizeof(id));
		if (id != want)
			fail_msg("event %llu came first, before the priority event sent before it",
				 (unsigned long long)id);
		assert_int_equal(v.event_flags, want == 1 ? FDX_EVENT_PRIORITY : 0);
		assert_int_equal(fdx_gate_release(r.gate, &v), 0);
	}
	fdx__seam_gate_between_pops = NULL;
	assert_true(gap_pushed > 0);
	rig_close(&r);
}

/*
 * A stream that closes a channel and opens it again at once: the loop's
 * CLOSED of the first opening may reach the gate after the cq thread's
 * OPENED of the second. It must not close the second (the producer then
 * waited for credit the gate no longer counted: finish hung).
 */
static struct fdx__gitem *open_close_item(uint32_t kind, uint64_t sess, uint64_t opening)
{
	struct fdx__gitem *it = calloc(1, sizeof(*it));

	assert_non_null(it);
	it->kind = (uint8_t)kind;
	it->sess = sess;
	it->opening = opening;
	return it;
}

static void test_a_late_close_of_an_earlier_opening_leaves_the_channel_open(void **state)
{
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .listen = "127.0.0.1:0"};
	struct fdx_gate_opts go = {
		.size = sizeof(go), .gate = 1, .n_channels = 1, .exclusive_credits = 2};
	struct fdx_gate_stats st = {.size = sizeof(st)};
	struct fdx_exchange *ex;
	struct fdx_gate *g;
	struct fdx_view v;

	(void)state;
	assert_int_equal(fdx_exchange_create(&eo, &ex), 0);
	assert_int_equal(fdx_gate_create(ex, NULL, &go, &g), 0);
	fdx__gate_push(g, open_close_item(FDX__GI_OPENED, 7, 1));
	fdx__gate_push(g, open_close_item(FDX__GI_OPENED, 7, 2)); /* reopened by session 7 */
	fdx__gate_push(g, open_close_item(FDX__GI_CLOSED, 7, 1)); /* the first opening's, late */
	assert_int_equal(fdx_gate_next(g, &v, 0), -EAGAIN);
	assert_int_equal(fdx_gate_stats(g, &st), 0);
	assert_int_equal(st.channels_open, 1);
	fdx__gate_push(g, open_close_item(FDX__GI_CLOSED, 7, 2)); /* the second's closes it */
	assert_int_equal(fdx_gate_next(g, &v, 0), -EAGAIN);
	assert_int_equal(fdx_gate_stats(g, &st), 0);
	assert_int_equal(st.channels_open, 0);
	fdx_gate_destroy(g);
	fdx_exchange_destroy(ex);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timeout_zero_sends_every_record_at_once),
		cmocka_unit_test(test_buffer_timeout_sends_a_partly_filled_buffer),
		cmocka_unit_test(test_flush_sends_what_was_written_so_far),
		cmocka_unit_test(test_full_buffer_goes_without_flush),
		cmocka_unit_test(test_finish_refuses_while_a_reservation_is_open),
		cmocka_unit_test(test_event_to_all_skips_an_ended_subpartition),
		cmocka_unit_test(test_record_above_gate_max_fails_a_remote_channel),
		cmocka_unit_test(test_gate_event_fd_wakes_an_event_loop),
		cmocka_unit_test(test_data_after_a_priority_event_never_overtakes_it),
		cmocka_unit_test(
			test_an_item_pushed_after_a_priority_one_mid_take_does_not_overtake_it),
		cmocka_unit_test(test_a_late_close_of_an_earlier_opening_leaves_the_channel_open),
	};
	const char *filter = getenv("FDX_TEST_FILTER");

	if (filter)
		cmocka_set_test_filter(filter);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
