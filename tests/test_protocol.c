/* SPDX-License-Identifier: MIT */
/*
 * The credit-based protocol of runtime/ alone, on a fake transport
 * (tests/fake_transport.h): no socket, no gRPC, no io_uring, no thread. The
 * test is the sender (fake_pump()), the control stream (fake_deliver_credit())
 * and the consumer (fdx_gate_next() with timeout 0), so every interleaving is
 * chosen and every run is the same.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <fdx/error.h>
#include <fdx/gate.h>
#include <fdx/local_buffer_pool.h>
#include <fdx/network_buffer_pool.h>
#include <fdx/partition.h>

#include "runtime/credit_ledger.h"
#include "runtime/input_gate.h"
#include "runtime/local_buffer_pool.h"
#include "runtime/result_partition.h"
#include "tests/fake_transport.h"

#define SEG 4096u
#define REC_FULL (SEG - 4u) /* a record that fills a segment exactly */
#define GATE 1u
#define MAX_PARTS 4

struct rig {
	struct fdx_nbp *nbp;
	struct fdx_exchange *ex;
	struct fdx_partition *part[MAX_PARTS];
	struct fdx_lbp *lbp[MAX_PARTS];
	struct fdx_gate *gate;
	uint32_t inplace; /* rig_gate()'s in-place credit; 0: none (the tests of tcp-like credit) */
};

static int rig_setup(void **state)
{
	struct fdx_nbp_opts no = {.size = sizeof(no),
				  .seg_size = SEG,
				  .seg_count = 64,
				  .hugepages = FDX_HUGEPAGE_NEVER};
	struct rig *r = calloc(1, sizeof(*r));

	if (!r || fdx_nbp_create(&no, &r->nbp) != 0)
		return -1;
	r->ex = fake_exchange_create();
	if (!r->ex)
		return -1;
	*state = r;
	return 0;
}

static void rig_drop_part(struct rig *r, uint32_t i)
{
	fdx_partition_destroy(r->part[i]);
	fdx_lbp_destroy(r->lbp[i]);
	r->part[i] = NULL;
	r->lbp[i] = NULL;
}

static int rig_teardown(void **state)
{
	struct rig *r = *state;

	for (uint32_t i = 0; i < MAX_PARTS; i++)
		if (r->part[i])
			rig_drop_part(r, i);
	fdx_gate_destroy(r->gate);
	fake_exchange_destroy(r->ex);
	if (fdx_nbp_destroy(r->nbp) != 0)
		return -1;
	free(r);
	return 0;
}

/*
 * The gate (id GATE): n channels, excl and floating credits as fdx_gate_opts
 * takes them; r->inplace in-place credits (0: none).
 */
static struct fdx_gate *rig_gate(struct rig *r, uint32_t n, uint32_t excl, uint32_t floating,
				 uint32_t max_record)
{
	struct fdx_gate_opts go = {.size = sizeof(go),
				   .gate = GATE,
				   .n_channels = n,
				   .exclusive_credits = excl,
				   .floating_credits = floating,
				   .max_record = max_record,
				   .inplace_credits = r->inplace ? r->inplace : FDX_CREDITS_NONE};

	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &r->gate), 0);
	return r->gate;
}

/* Partition i of n subpartitions, on a pool of its own of at most lbp_max segments. */
static struct fdx_partition *rig_part(struct rig *r, uint32_t i, uint32_t n, uint32_t lbp_max,
				      uint32_t flags, uint32_t timeout_ms)
{
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = lbp_max};
	struct fdx_partition_opts po = {.size = sizeof(po),
					.n_subpartitions = n,
					.flags = flags,
					.buffer_timeout_ms = timeout_ms};

	assert_int_equal(fdx_lbp_create(r->nbp, &lo, &r->lbp[i]), 0);
	assert_int_equal(fdx_partition_create(r->ex, r->lbp[i], &po, &r->part[i]), 0);
	return r->part[i];
}

static void rig_connect(struct rig *r, struct fdx_partition *p, uint32_t sub, uint32_t ch,
			uint32_t link)
{
	assert_int_equal(fdx_partition_connect(p, sub, r->ex->port.address, GATE, ch, link, 0), 0);
}

/* n records that fill a segment each: n full buffers queued on sub. */
static void emit_full(struct fdx_partition *p, uint32_t sub, uint32_t n)
{
	static uint8_t rec[REC_FULL];

	for (uint32_t i = 0; i < n; i++) {
		memset(rec, (int)(0x40 + i), sizeof(rec));
		assert_int_equal(fdx_partition_emit(p, sub, rec, sizeof(rec), 0), 0);
	}
}

static void emit_str(struct fdx_partition *p, uint32_t sub, const char *s)
{
	assert_int_equal(fdx_partition_emit(p, sub, s, (uint32_t)strlen(s), 0), 0);
}

static void take(struct fdx_gate *g, struct fdx_view *v, uint32_t kind)
{
	assert_int_equal(fdx_gate_next(g, v, 0), 0);
	assert_int_equal(v->kind, kind);
}

static void release(struct fdx_gate *g, struct fdx_view *v)
{
	assert_int_equal(fdx_gate_release(g, v), 0);
}

/* Nothing for the caller: takes what is internal (OPENED, CLOSED, BACKLOG) and flushes credit. */
static void take_nothing(struct fdx_gate *g)
{
	struct fdx_view v;

	assert_int_equal(fdx_gate_next(g, &v, 0), -EAGAIN);
}

static uint32_t lbp_in_use(struct fdx_lbp *lbp)
{
	struct fdx_lbp_stats st = {.size = sizeof(st)};

	assert_int_equal(fdx_lbp_stats(lbp, &st), 0);
	return st.in_use;
}

static struct fdx_input_channel_stats chan_stats(struct fdx_gate *g, uint32_t ch)
{
	struct fdx_input_channel_stats st = {.size = sizeof(st)};

	assert_int_equal(fdx_gate_channel_stats(g, ch, &st), 0);
	return st;
}

static struct fdx_gate_stats gate_stats(struct fdx_gate *g)
{
	struct fdx_gate_stats st = {.size = sizeof(st)};

	assert_int_equal(fdx_gate_stats(g, &st), 0);
	return st;
}

static struct fdx_channel_stats sub_stats(struct fdx_partition *p, uint32_t sub)
{
	struct fdx_channel_stats st = {.size = sizeof(st)};

	assert_int_equal(fdx_partition_channel_stats(p, sub, &st), 0);
	return st;
}

static uint64_t credit_of(struct fdx_partition *p, uint32_t sub)
{
	return fdx__ledger_available(&p->subs[sub].ledger);
}

/*
 * Per channel: exclusive + floating = outstanding + held. A buffer still
 * queued for the consumer is held and used its credit, but the consumer
 * counts that only once it takes it (outstanding--): count it once.
 */
static void assert_quota(struct fdx_gate *g, uint32_t ch)
{
	struct fdx__gchan *c = &g->ch[ch];

	assert_int_equal(g->exclusive + c->floating + c->inplace,
			 c->outstanding + atomic_load(&c->held) - atomic_load(&c->queued));
}

static void assert_contains(const char *s, const char *part)
{
	if (!strstr(s, part))
		fail_msg("\"%s\" does not say \"%s\"", s, part);
}

/* ---- credit at open, exclusive and floating ---------------------------------- */

static void test_gate_grants_exclusive_credit_at_open(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 2, 3, 5, 0);
	struct fdx_partition *p = rig_part(r, 0, 2, 8, 0, 0);
	struct fdx_input_channel_stats cs;

	rig_connect(r, p, 0, 1, FDX_LINK_SHM);
	/* The initial credit travels in the answer to the open: no announcement. */
	assert_int_equal(credit_of(p, 0), 3);
	assert_int_equal(sub_stats(p, 0).credits_granted, 3);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 1, FAKE_CTL_CREDIT), 0);
	/* And it bounds what the producer may send (the loop's check). */
	assert_int_equal(atomic_load(&g->ch[1].granted_total), 3);
	assert_true(fdx__ichan_busy(g, 1));
	assert_false(fdx__ichan_busy(g, 0));

	take_nothing(g); /* OPENED */
	cs = chan_stats(g, 1);
	assert_int_equal(cs.link, FDX_LINK_SHM);
	assert_int_equal(cs.exclusive, 3);
	assert_int_equal(cs.floating, 0);
	assert_int_equal(cs.credits_announced, 3);
	assert_int_equal(g->ch[1].outstanding, 3);
	assert_int_equal(gate_stats(g).channels_open, 1);
	assert_int_equal(gate_stats(g).floating_free, 5);
	assert_quota(g, 1);

	/* A local link gets the same exclusive credit, straight into its ledger. */
	rig_connect(r, p, 1, 0, FDX_LINK_LOCAL);
	assert_int_equal(credit_of(p, 1), 3);
	take_nothing(g);
	assert_int_equal(chan_stats(g, 0).link, FDX_LINK_LOCAL);
	assert_int_equal(g->ch[0].outstanding, 3);
	/* A second producer finds the channel busy. */
	assert_int_equal(fdx_partition_connect(rig_part(r, 1, 1, 4, 0, 0), 0, r->ex->port.address,
					       GATE, 1, FDX_LINK_SHM, 0),
			 -EBUSY);
}

static void test_gate_splits_exclusive_and_floating_credit(void **state)
{
	struct rig *r = *state;
	struct fdx_gate_opts go = {.size = sizeof(go), .gate = 9, .n_channels = 3};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 10};
	struct fdx_gate *g2 = NULL;
	struct fdx_lbp *small;
	struct fdx_gate *g;

	/* Defaults: 2 per channel, 8 per gate; batches of a quarter of the total. */
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g2), 0);
	assert_int_equal(g2->exclusive, FDX_EXCLUSIVE_CREDITS_DEFAULT);
	assert_int_equal(g2->floating, FDX_FLOATING_CREDITS_DEFAULT);
	assert_int_equal(g2->flush_at, (3 * 2 + 8) / 4);
	assert_int_equal(gate_stats(g2).floating_free, 8);
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g), -EEXIST); /* the id is taken */
	/* The pool of a tcp gate must hold every credit: 3 * 2 + 8 = 14 > 10. */
	assert_int_equal(fdx_lbp_create(r->nbp, &lo, &small), 0);
	go.gate = 10;
	assert_int_equal(fdx_gate_create(r->ex, small, &go, &g), -EINVAL);
	fdx_lbp_destroy(small);
	fdx_gate_destroy(g2);

	/* FDX_CREDITS_NONE: none of that kind; none of either is refused. */
	go.exclusive_credits = FDX_CREDITS_NONE;
	go.floating_credits = FDX_CREDITS_NONE;
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g), -EINVAL);

	g = rig_gate(r, 3, 4, FDX_CREDITS_NONE, 0);
	assert_int_equal(g->exclusive, 4);
	assert_int_equal(g->floating, 0);
	assert_int_equal(g->flush_at, 3);
	assert_int_equal(chan_stats(g, 2).exclusive, 4);
	assert_int_equal(gate_stats(g).floating_free, 0);
	assert_int_equal(r->ex->n_gate_attach, 2);
}

static void test_gate_quota_is_outstanding_plus_held(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, 4, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 16, 0, 0);
	struct fdx_view v[6];

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 6);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 2);
	take(g, &v[0], FDX_VIEW_BUFFER); /* OPENED first, then backlog 5: floating lent */
	take(g, &v[1], FDX_VIEW_BUFFER);
	take_nothing(g); /* the BACKLOG */
	assert_quota(g, 0);
	assert_int_equal(g->ch[0].floating, 4);

	fake_deliver_credit(r->ex);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 6);
	for (int i = 2; i < 6; i++) {
		take(g, &v[i], FDX_VIEW_BUFFER);
		assert_quota(g, 0);
	}
	assert_int_equal(g->ch[0].outstanding, 0);
	assert_int_equal(atomic_load(&g->ch[0].held), 6);
	for (int i = 0; i < 6; i++) {
		release(g, &v[i]);
		assert_quota(g, 0);
	}
	/* Nothing left to send: the floating credit went back to the gate's free pool. */
	assert_int_equal(g->ch[0].floating, 0);
	assert_int_equal(gate_stats(g).floating_free, 4);
	assert_int_equal(g->ch[0].outstanding, 2);
}

static void test_gate_lends_floating_credit_for_a_backlog_above_unused_credit(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 2, 3, 8, 0);
	struct fdx_partition *p = rig_part(r, 0, 2, 16, 0, 0);
	const struct fake_ctl *c;
	struct fdx_view v[5];

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	rig_connect(r, p, 1, 1, FDX_LINK_SHM);
	/* Channel 0: 6 buffers on 3 credits: sent with backlogs 5, 4 and 3. */
	emit_full(p, 0, 6);
	fake_pump(r->ex);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 0)->backlog, 5);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 2)->backlog, 3);
	take(g, &v[0], FDX_VIEW_BUFFER);
	/*
	 * Backlog 5, unused credit 0 (the two other buffers used theirs and
	 * wait in the queue): 5 floating credits lent, announced together.
	 */
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT);
	assert_non_null(c);
	assert_int_equal(c->added, 5);
	assert_int_equal(c->n, 0);
	assert_int_equal(chan_stats(g, 0).floating, 5);
	assert_int_equal(chan_stats(g, 0).backlog, 5);
	assert_int_equal(gate_stats(g).floating_free, 3);
	take(g, &v[1], FDX_VIEW_BUFFER); /* backlog 4 <= unused 5: no more */
	take(g, &v[2], FDX_VIEW_BUFFER);
	assert_int_equal(chan_stats(g, 0).floating, 5);
	assert_quota(g, 0);

	/* Channel 1: 2 buffers on 3 credits; backlog 1 with 1 unused credit: nothing lent. */
	emit_full(p, 1, 2);
	fake_pump(r->ex);
	take(g, &v[3], FDX_VIEW_BUFFER);
	assert_int_equal(v[3].channel, 1);
	assert_int_equal(chan_stats(g, 1).backlog, 1);
	assert_int_equal(chan_stats(g, 1).floating, 0);
	take(g, &v[4], FDX_VIEW_BUFFER);
	assert_int_equal(chan_stats(g, 1).floating, 0);
	assert_int_equal(gate_stats(g).floating_free, 3);
	assert_quota(g, 1);
	for (int i = 0; i < 5; i++)
		release(g, &v[i]);
}

static void test_gate_hands_floating_credit_to_the_channel_waiting_longest(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 3, 1, 1, 0);
	struct fdx_partition *p = rig_part(r, 0, 3, 16, 0, 0);
	const struct fake_ctl *c;
	struct fdx_view v0[2], v1[2], v2[2];
	uint32_t n;

	for (uint32_t i = 0; i < 3; i++)
		rig_connect(r, p, i, i, FDX_LINK_SHM);
	/* Each channel: 2 buffers on 1 credit, backlog 1. Channel 0 asks first. */
	emit_full(p, 0, 2);
	fake_pump(r->ex);
	take(g, &v0[0], FDX_VIEW_BUFFER);
	assert_int_equal(chan_stats(g, 0).floating, 1); /* the gate's only one */
	emit_full(p, 1, 2);
	emit_full(p, 2, 2);
	fake_pump(r->ex);
	take(g, &v1[0], FDX_VIEW_BUFFER);
	take(g, &v2[0], FDX_VIEW_BUFFER);
	assert_int_equal(v1[0].channel, 1);
	assert_int_equal(v2[0].channel, 2);
	take_nothing(g);
	assert_int_equal(chan_stats(g, 1).floating, 0); /* 1 and 2 wait, in that order */
	assert_int_equal(chan_stats(g, 2).floating, 0);

	fake_deliver_credit(r->ex);
	fake_pump(r->ex);
	take(g, &v0[1], FDX_VIEW_BUFFER);
	assert_int_equal(v0[1].channel, 0);
	assert_int_equal(chan_stats(g, 0).backlog, 0);
	/* Channel 0 needs it no more: its floating credit goes to channel 1, not 2. */
	n = r->ex->n_ctl;
	release(g, &v0[0]);
	assert_int_equal(chan_stats(g, 0).floating, 0);
	assert_int_equal(chan_stats(g, 1).floating, 1);
	assert_int_equal(chan_stats(g, 2).floating, 0);
	assert_int_equal(r->ex->n_ctl, n + 2); /* one flush: both channels */
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT);
	assert_int_equal(c->added, 0); /* no credit back, but the offset */
	assert_int_equal(c->n, 1);
	assert_int_equal(c->offs[0], fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 0)->off);
	c = fake_last_ctl(r->ex, GATE, 1, FAKE_CTL_CREDIT);
	assert_int_equal(c->added, 1);
	release(g, &v0[1]); /* an exclusive one: announced again */
	assert_int_equal(fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT)->added, 1);

	/* Channel 1 sends its last buffer; its floating credit goes on to channel 2. */
	fake_deliver_credit(r->ex);
	fake_pump(r->ex);
	take(g, &v1[1], FDX_VIEW_BUFFER);
	assert_int_equal(v1[1].channel, 1);
	release(g, &v1[0]);
	assert_int_equal(chan_stats(g, 1).floating, 0);
	assert_int_equal(chan_stats(g, 2).floating, 1);
	assert_int_equal(fake_last_ctl(r->ex, GATE, 2, FAKE_CTL_CREDIT)->added, 1);

	/* Nobody waits any more: channel 2's goes back to the gate's free pool. */
	fake_deliver_credit(r->ex);
	fake_pump(r->ex);
	take(g, &v2[1], FDX_VIEW_BUFFER);
	assert_int_equal(gate_stats(g).floating_free, 0);
	release(g, &v2[0]);
	assert_int_equal(chan_stats(g, 2).floating, 0);
	assert_int_equal(gate_stats(g).floating_free, 1);
	release(g, &v1[1]);
	release(g, &v2[1]);
	for (uint32_t i = 0; i < 3; i++)
		assert_quota(g, i);
}

/*
 * Floating credit a closing channel held is free again: a channel that
 * waits for it (with no exclusive credit, it can get nothing else) must get it.
 */
static void test_gate_hands_the_floating_credit_of_a_closed_channel_to_a_waiting_one(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 2, FDX_CREDITS_NONE, 1, 0);
	struct fdx_partition *p0 = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx_partition *p1 = rig_part(r, 1, 1, 8, 0, 0);
	struct fdx_view v;

	rig_connect(r, p0, 0, 0, FDX_LINK_SHM);
	rig_connect(r, p1, 0, 1, FDX_LINK_SHM);
	emit_full(p0, 0, 2);
	fake_pump(r->ex);
	take_nothing(g); /* channel 0's backlog: the only floating credit */
	assert_int_equal(chan_stats(g, 0).floating, 1);
	emit_full(p1, 0, 1);
	fake_pump(r->ex);
	take_nothing(g); /* channel 1's backlog: it waits */
	assert_int_equal(fake_count_frames(r->ex, GATE, 1, FDX__GI_BACKLOG), 1);
	assert_int_equal(chan_stats(g, 1).floating, 0);

	/* Channel 0's producer goes before it used the credit. */
	rig_drop_part(r, 0);
	take_nothing(g); /* its CLOSED */
	assert_int_equal(chan_stats(g, 0).floating, 0);
	assert_int_equal(chan_stats(g, 1).floating, 1);
	fake_deliver_credit(r->ex);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 1, FDX__GI_BUFFER), 1);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(v.channel, 1);
	release(g, &v);
}

/* ---- send only with credit ---------------------------------------------------- */

static void test_sub_pump_sends_a_backlog_and_no_buffer_without_credit(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, FDX_CREDITS_NONE, 4, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx__sub *s = &p->subs[0];
	const struct fake_frame *f;
	const struct fake_ctl *c;
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	assert_int_equal(credit_of(p, 0), 0);
	emit_full(p, 0, 2);
	assert_int_equal(fake_pump(r->ex), 1);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 0);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BACKLOG), 1);
	f = fake_nth_frame(r->ex, GATE, 0, FDX__GI_BACKLOG, 0);
	assert_int_equal(f->backlog, 2);
	assert_int_equal(f->accepted, 1);
	assert_int_equal(sub_stats(p, 0).backlog, 2);
	/* The same backlog is not announced twice. */
	assert_int_equal(fdx__sub_pump(s), 0);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, 0), 1);

	/* The gate lends floating credit for it: one announcement of 2. */
	take_nothing(g);
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT);
	assert_non_null(c);
	assert_int_equal(c->added, 2);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 0); /* not yet there */
	assert_int_equal(fake_deliver_credit(r->ex), 1);
	assert_int_equal(credit_of(p, 0), 2);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 2);
	assert_int_equal(credit_of(p, 0), 0);
	assert_int_equal(sub_stats(p, 0).buffers_sent, 2);
	assert_int_equal(sub_stats(p, 0).credits_granted, 2);
	for (int i = 0; i < 2; i++) {
		take(g, &v, FDX_VIEW_BUFFER);
		release(g, &v);
	}
}

static void test_sub_pump_spends_one_credit_per_buffer(void **state)
{
	struct rig *r = *state;
	uint32_t kicks;
	struct fdx_gate *g = rig_gate(r, 1, 1, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx__sub *s = &p->subs[0];
	const struct fake_frame *f;
	const struct fake_ctl *c;
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 3);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 1);
	f = fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 0);
	assert_int_equal(f->seq, 0);
	assert_int_equal(f->len, SEG);
	assert_int_equal(f->backlog, 2);
	assert_int_equal(credit_of(p, 0), 0);
	assert_int_equal(atomic_load(&s->ledger.spent), 1);
	assert_int_equal(fdx__ledger_in_flight(&s->ledger), 1); /* its offset, until handed back */
	assert_int_equal(sub_stats(p, 0).in_flight, 1);
	assert_int_equal(fdx__sub_pump(s), 0); /* still none */

	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(v.len, SEG);
	release(g, &v);
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT);
	assert_int_equal(c->added, 1);
	assert_int_equal(c->n, 1);
	assert_int_equal(c->offs[0], f->off);
	kicks = r->ex->n_kicks;
	fake_deliver_credit(r->ex);
	assert_int_equal(c->result, 0);
	assert_int_equal(fdx__ledger_in_flight(&s->ledger), 0);
	/* Credit makes the subpartition ready and wakes the sender. */
	assert_int_equal(r->ex->n_readyq, 1);
	assert_ptr_equal(r->ex->readyq[0], s);
	assert_int_equal(r->ex->n_kicks, kicks + 1);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 2);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 1)->seq, 1);
	for (int i = 0; i < 2; i++) {
		take(g, &v, FDX_VIEW_BUFFER);
		release(g, &v);
		fake_deliver_credit(r->ex);
		fake_pump(r->ex);
	}
	assert_int_equal(sub_stats(p, 0).buffers_sent, 3);
	assert_int_equal(sub_stats(p, 0).credits_granted, 1 + 3);
}

static void test_sub_pump_sends_events_without_credit(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, FDX_CREDITS_NONE, 1, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	const struct fake_frame *f;
	uint64_t wm = 1234;
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	assert_int_equal(fdx_partition_event(p, 0, FDX_EVENT_WATERMARK, 0, &wm, sizeof(wm)), 0);
	fake_pump(r->ex);
	assert_int_equal(credit_of(p, 0), 0);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_EVENT), 1);
	f = fake_nth_frame(r->ex, GATE, 0, FDX__GI_EVENT, 0);
	assert_int_equal(f->seq, 0);
	assert_int_equal(f->event_type, FDX_EVENT_WATERMARK);
	assert_int_equal(f->accepted, 1);
	take(g, &v, FDX_VIEW_EVENT);
	assert_int_equal(v.event_type, FDX_EVENT_WATERMARK);
	assert_int_equal(v.len, sizeof(wm));
	assert_memory_equal(v.data, &wm, sizeof(wm));
	release(g, &v);
	assert_int_equal(sub_stats(p, 0).events_sent, 1);
	assert_int_equal(sub_stats(p, 0).buffers_sent, 0);
}

/*
 * An event goes after what was written before it: that slice needs credit,
 * and until it has some it is backlog the consumer must hear of, or a
 * producer without credit never gets any (with no exclusive credit, only a
 * backlog brings floating credit).
 */
static void test_sub_pump_announces_the_slice_an_event_waits_for(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, FDX_CREDITS_NONE, 2, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	const void *rec;
	struct fdx_view v;
	uint32_t len;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_str(p, 0, "before the barrier");
	assert_int_equal(fdx_partition_event(p, 0, FDX_EVENT_BARRIER, 0, NULL, 0), 0);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_EVENT), 0); /* in order */
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BACKLOG), 1);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BACKLOG, 0)->backlog, 1);
	take_nothing(g);
	fake_deliver_credit(r->ex);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 1);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_EVENT), 1);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_next_record(g, &v, &rec, &len), 1);
	assert_int_equal(len, strlen("before the barrier"));
	release(g, &v);
	take(g, &v, FDX_VIEW_EVENT);
	assert_int_equal(v.event_type, FDX_EVENT_BARRIER);
	release(g, &v);
}

/* ---- coalesced credit ------------------------------------------------------------ */

static void test_gate_coalesces_credit_in_batches_of_a_quarter(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 16, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 16, 0, 0);
	const struct fake_ctl *c;
	struct fdx_view v[4];

	assert_int_equal(g->flush_at, 4);
	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 4);
	fake_pump(r->ex);
	assert_int_equal(credit_of(p, 0), 12);
	for (int i = 0; i < 4; i++)
		take(g, &v[i], FDX_VIEW_BUFFER);
	for (int i = 3; i > 0; i--) {
		release(g, &v[i]);
		assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 0);
		assert_int_equal(chan_stats(g, 0).unannounced, 4 - i);
	}
	release(g, &v[0]); /* the fourth: one announcement with the sum and every offset */
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 1);
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT);
	assert_int_equal(c->added, 4);
	assert_int_equal(c->n, 4);
	for (int i = 0; i < 4; i++) /* in the order they were released */
		assert_int_equal(c->offs[i],
				 fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 3 - i)->off);
	assert_int_equal(chan_stats(g, 0).unannounced, 0);
	assert_int_equal(lbp_in_use(p->pool), 4);
	fake_deliver_credit(r->ex);
	assert_int_equal(c->result, 0);
	assert_int_equal(credit_of(p, 0), 16);
	assert_int_equal(lbp_in_use(p->pool), 0); /* each offset dropped its segment */
	assert_int_equal(sub_stats(p, 0).in_flight, 0);
}

static void test_gate_sends_credit_at_once_to_a_starving_producer(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 8, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 16, 0, 0);
	struct fdx_view v[8];

	assert_int_equal(g->flush_at, 2);
	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 9);
	fake_pump(r->ex);
	assert_int_equal(credit_of(p, 0), 0);
	for (int i = 0; i < 8; i++)
		take(g, &v[i], FDX_VIEW_BUFFER);
	assert_int_equal(chan_stats(g, 0).backlog, 1);
	/* No credit left and a backlog: the first credit goes at once, alone. */
	release(g, &v[0]);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 1);
	assert_int_equal(fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT)->added, 1);
	/* It has credit again: the rest waits for a batch. */
	release(g, &v[1]);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 1);
	release(g, &v[2]);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 2);
	assert_int_equal(fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT)->added, 2);
	for (int i = 3; i < 8; i++)
		release(g, &v[i]);
	take_nothing(g); /* the consumer is idle: what it owes goes */
	fake_deliver_credit(r->ex);
	assert_int_equal(credit_of(p, 0), 8);
	fake_pump(r->ex);
	take(g, &v[0], FDX_VIEW_BUFFER);
	release(g, &v[0]);
}

static void test_gate_sends_credit_at_once_after_the_end(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 16, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 16, 0, 0);
	struct fdx_view v[2], e;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 2);
	assert_int_equal(fdx_partition_finish(p, 0), -ETIMEDOUT);
	fake_pump(r->ex);
	take(g, &v[0], FDX_VIEW_BUFFER);
	take(g, &v[1], FDX_VIEW_BUFFER);
	take(g, &e, FDX_VIEW_EVENT);
	assert_int_equal(e.event_type, FDX_EVENT_END_OF_PARTITION);
	/* Its producer waits in finish: each release goes at once, batch or not. */
	release(g, &v[0]);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 1);
	release(g, &v[1]);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 2);
	release(g, &e);
	fake_deliver_credit(r->ex);
	assert_int_equal(fdx_partition_finish(p, 0), 0);
}

/* ---- a producer that lies ------------------------------------------------------- */

static void test_ichan_accept_refuses_a_buffer_beyond_credit(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	struct fake_frame f = {.kind = FDX__GI_BUFFER, .sess = 7, .off = SEG, .len = 8};
	uint8_t bytes[8] = {4, 0, 0, 0, 'a', 'b', 'c', 'd'};
	struct fdx_view v[2], fv;
	uint64_t opening;

	assert_int_equal(fake_open_raw(r->ex, g, 0, 7, &opening), 0);
	assert_int_equal(opening, 1);
	take_nothing(g);
	for (uint32_t i = 0; i < 2; i++) {
		f.seq = i;
		assert_int_equal(fake_inject(r->ex, g, &f, bytes), 1);
	}
	f.seq = 2;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), -1);
	assert_contains(f.why, "beyond its credit of 2");
	/* Credit announced raises the bound: the consumer's releases count before they leave. */
	take(g, &v[0], FDX_VIEW_BUFFER);
	take(g, &v[1], FDX_VIEW_BUFFER);
	release(g, &v[0]);
	assert_int_equal(atomic_load(&g->ch[0].granted_total), 3);
	release(g, &v[1]);
	/* The liar's connection dies: its channel fails, once. */
	fake_pump(r->ex);
	take(g, &fv, FDX_VIEW_FAILED);
	assert_int_equal(fv.error, FDX_EPROTO);
	assert_contains(fv.message, "beyond its credit");
	release(g, &fv);
	assert_int_equal(chan_stats(g, 0).error, FDX_EPROTO);
	assert_false(fdx__ichan_busy(g, 0));
}

/* A raw producer opens channel 0 of g (session 7) and spends its exclusive credit of 2. */
static uint64_t raw_spend_exclusive(struct rig *r, struct fdx_gate *g, struct fake_frame *f,
				    const uint8_t *bytes)
{
	uint64_t opening;

	assert_int_equal(fake_open_raw(r->ex, g, 0, 7, &opening), 0);
	take_nothing(g);
	for (f->seq = 0; f->seq < 2; f->seq++)
		assert_int_equal(fake_inject(r->ex, g, f, bytes), 1);
	return opening;
}

/*
 * Exact at the first offending buffer, whatever the timing of the re-grant:
 * a buffer sent before its producer had the new credit names the old one,
 * and is refused although the consumer has counted the new credit by the
 * time it arrives (the check of fdx 0.1 let it through).
 */
static void test_ichan_accept_refuses_a_buffer_sent_before_its_credit_came(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	struct fake_frame f = {.kind = FDX__GI_BUFFER, .sess = 7, .off = SEG, .len = 8};
	uint8_t bytes[8] = {4, 0, 0, 0, 'a', 'b', 'c', 'd'};
	const struct fake_ctl *c;
	struct fdx_view v[2];
	uint64_t opening;

	opening = raw_spend_exclusive(r, g, &f, bytes);
	take(g, &v[0], FDX_VIEW_BUFFER);
	release(g, &v[0]);
	/* The credit left counted and proven: a total of 3, not yet at the producer. */
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT);
	assert_non_null(c);
	assert_int_equal(c->added, 1);
	assert_int_equal(c->total, 3);
	assert_int_equal(c->proof, fdx__credit_proof(&g->key, g->id, 0, opening, 3));
	assert_int_equal(atomic_load(&g->ch[0].granted_total), 3);
	/* Buffer 3 goes with the producer's stamp: the credit of the open. */
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), -1);
	assert_int_equal(f.st.total, 2);
	assert_contains(f.why, "buffer 3 sent beyond its credit of 2 (3 granted by now)");
	take(g, &v[1], FDX_VIEW_BUFFER);
	release(g, &v[1]);
	fake_pump(r->ex);
	take(g, &v[0], FDX_VIEW_FAILED);
	assert_int_equal(v[0].error, FDX_EPROTO);
	release(g, &v[0]);
}

/*
 * Credit above the exclusive one counts only with its proof: the stamp the
 * Credit carried admits the buffers it covers; a total the consumer granted
 * but the producer never received, named with a made-up proof, is refused.
 */
static void test_ichan_accept_takes_credit_only_with_its_proof(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	struct fake_frame f = {.kind = FDX__GI_BUFFER, .sess = 7, .off = SEG, .len = 8};
	uint8_t bytes[8] = {4, 0, 0, 0, 'a', 'b', 'c', 'd'};
	const struct fake_ctl *c;
	struct fdx_view v;
	uint64_t opening;
	uint32_t proof4;

	opening = raw_spend_exclusive(r, g, &f, bytes);
	take(g, &v, FDX_VIEW_BUFFER);
	release(g, &v);
	assert_int_equal(fake_deliver_credit(r->ex), 1); /* total 3 reaches the producer */
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), 1);
	assert_int_equal(f.st.total, 3);
	f.seq++;
	take(g, &v, FDX_VIEW_BUFFER);
	release(g, &v); /* total 4 leaves; the producer has not got it */
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT);
	assert_int_equal(c->total, 4);
	proof4 = fdx__credit_proof(&g->key, g->id, 0, opening, 4);
	assert_int_equal(c->proof, proof4);
	/* Another opening's, or a guess: not the proof of this total. */
	assert_int_not_equal(fdx__credit_proof(&g->key, g->id, 0, opening + 1, 4), proof4);
	f.stamped = 1;
	f.st.total = 4;
	f.st.proof = proof4 ^ 1;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), -1);
	assert_contains(f.why, "buffer 4 names a credit of 4 it was never sent (no proof)");
	take(g, &v, FDX_VIEW_BUFFER);
	release(g, &v);
	fake_pump(r->ex);
	take(g, &v, FDX_VIEW_FAILED);
	release(g, &v);
}

/* A total above what the consumer granted is refused, proof or not. */
static void test_ichan_accept_refuses_a_credit_never_granted(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	struct fake_frame f = {.kind = FDX__GI_BUFFER, .sess = 7, .off = SEG, .len = 8};
	uint8_t bytes[8] = {4, 0, 0, 0, 'a', 'b', 'c', 'd'};
	struct fdx_view v;
	uint64_t opening;

	assert_int_equal(fake_open_raw(r->ex, g, 0, 7, &opening), 0);
	take_nothing(g);
	f.stamped = 1;
	f.st.total = 3;
	f.st.proof = fdx__credit_proof(&g->key, g->id, 0, opening, 3);
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), -1);
	assert_contains(f.why, "buffer 1 names a credit (low bits 3) never granted (2 granted)");
	/* Nothing of it reached the consumer; the channel fails. */
	fake_pump(r->ex);
	take(g, &v, FDX_VIEW_FAILED);
	assert_int_equal(v.error, FDX_EPROTO);
	release(g, &v);
}

/* The proofs' hash is SipHash-2-4: the reference vectors (key 00..0f, message 00 01 02 ...). */
static void test_credit_proof_is_siphash_2_4(void **state)
{
	struct fdx__credit_key key = {{0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull}};
	uint64_t m[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};

	(void)state;
	assert_true(fdx__siphash24_words(&key, m, 0) == 0x726fdb47dd0e0e31ull);
	assert_true(fdx__siphash24_words(&key, m, 1) == 0x93f5f5799a932462ull);
	assert_true(fdx__siphash24_words(&key, m, 2) == 0x3f2acc7f57c29bdbull);
}

/* A subpartition whose ledger says more than the gate granted: the link refuses it. */
static void test_ichan_accept_refuses_a_subpartition_sending_beyond_credit(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	atomic_fetch_add(&p->subs[0].ledger.granted, 1); /* a credit the gate never gave */
	emit_full(p, 0, 3);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 3);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 2)->accepted, -1);
	/* Both ends fail; every buffer in flight is back in the producer's pool. */
	assert_int_equal(sub_stats(p, 0).error, FDX_EPROTO);
	assert_int_equal(sub_stats(p, 0).in_flight, 0);
	assert_int_equal(lbp_in_use(p->pool), 0);
	assert_int_equal(fdx_partition_emit(p, 0, "x", 1, 0), -EPIPE);
	take(g, &v, FDX_VIEW_BUFFER);
	release(g, &v);
	take(g, &v, FDX_VIEW_BUFFER);
	release(g, &v);
	take(g, &v, FDX_VIEW_FAILED);
	assert_int_equal(v.error, FDX_EPROTO);
	release(g, &v);
	assert_int_equal(fdx_partition_finish(p, 0), -EPIPE);
}

static void test_ichan_accept_refuses_a_wrong_sequence(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 2, 4, FDX_CREDITS_NONE, 0);
	struct fake_frame f = {.kind = FDX__GI_BUFFER, .sess = 7, .off = SEG, .len = 8};
	uint8_t bytes[8] = {4, 0, 0, 0, 'a', 'b', 'c', 'd'};
	uint64_t opening;
	struct fdx_view v;

	assert_int_equal(fake_open_raw(r->ex, g, 0, 7, &opening), 0);
	f.seq = 0;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), 1);
	/* A backlog carries no sequence: any is fine, and it takes none. */
	f.kind = FDX__GI_BACKLOG;
	f.seq = 99;
	assert_int_equal(fake_inject(r->ex, g, &f, NULL), 1);
	f.kind = FDX__GI_BUFFER;
	f.seq = 2;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), -1);
	assert_contains(f.why, "sequence 2, expected 1");
	/* Another peer may not send on it; a channel nobody opened takes nothing. */
	f.sess = 8;
	f.seq = 1;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), -1);
	assert_contains(f.why, "not open to this peer");
	f.ch = 1;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), 0);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(v.seq, 0);
	release(g, &v);
	fake_pump(r->ex);
	take(g, &v, FDX_VIEW_FAILED);
	assert_contains(v.message, "sequence 2, expected 1");
	release(g, &v);
}

/* ---- the ledger ------------------------------------------------------------------- */

static void test_ledger_refuses_an_offset_never_sent(void **state)
{
	struct rig *r = *state;
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx__sub *s = &p->subs[0];
	uint64_t offs[2];
	uint32_t bad = 99;
	struct fdx_view v;

	rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 2);
	fake_pump(r->ex);
	offs[0] = fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 0)->off;
	offs[1] = offs[0] + 64; /* inside a segment sent, but never an offset sent */
	assert_int_equal(fdx__sub_credit(s, 1, offs, 2, 0, NULL, &bad), -ENOENT);
	assert_int_equal(bad, 1);
	/* Nothing of it applied: no credit, the good offset still in flight, its segment held. */
	assert_int_equal(credit_of(p, 0), 2);
	assert_int_equal(fdx__ledger_in_flight(&s->ledger), 2);
	assert_int_equal(atomic_load(&s->ledger.returned), 0);
	assert_int_equal(lbp_in_use(p->pool), 2);
	/* Offset 0 is never one. */
	offs[1] = 0;
	assert_int_equal(fdx__sub_credit(s, 0, &offs[1], 1, 0, NULL, &bad), -ENOENT);
	assert_int_equal(bad, 0);
	/* The good one alone is taken, once. */
	assert_int_equal(fdx__sub_credit(s, 1, offs, 1, 0, NULL, &bad), 0);
	assert_int_equal(credit_of(p, 0), 3);
	assert_int_equal(fdx__ledger_in_flight(&s->ledger), 1);
	assert_int_equal(lbp_in_use(p->pool), 1);
	assert_int_equal(fdx__sub_credit(s, 1, offs, 1, 0, NULL, &bad), -ENOENT);
	assert_int_equal(credit_of(p, 0), 3);
	assert_int_equal(r->ex->log_errors, 0);
	for (int i = 0; i < 2; i++) {
		take(r->gate, &v, FDX_VIEW_BUFFER);
		release(r->gate, &v);
	}
}

static void test_ledger_refuses_credit_overflow(void **state)
{
	struct rig *r = *state;
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx__sub *s = &p->subs[0];
	uint32_t bad;
	struct fdx_view v;

	rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	assert_int_equal(fdx__sub_credit(s, UINT32_MAX - 1, NULL, 0, 0, NULL, &bad), -EOVERFLOW);
	assert_int_equal(credit_of(p, 0), 2);
	assert_int_equal(fdx__sub_credit(s, UINT32_MAX - 2, NULL, 0, 0, NULL, &bad), 0);
	assert_int_equal(credit_of(p, 0), UINT32_MAX);
	assert_int_equal(fdx__sub_credit(s, 1, NULL, 0, 0, NULL, &bad), -EOVERFLOW);
	/* Spent credit is not unused: after a buffer, one more fits. */
	emit_full(p, 0, 1);
	fake_pump(r->ex);
	assert_int_equal(fdx__sub_credit(s, 1, NULL, 0, 0, NULL, &bad), 0);
	assert_int_equal(credit_of(p, 0), UINT32_MAX);
	take(r->gate, &v, FDX_VIEW_BUFFER);
	release(r->gate, &v);
}

static void test_ledger_takes_back_every_buffer_on_failure(void **state)
{
	struct rig *r = *state;
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx__sub *s = &p->subs[0];
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fdx_view v[3];
	uint32_t start = lbp_in_use(p->pool);

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 3);
	fake_pump(r->ex);
	assert_int_equal(fdx__ledger_in_flight(&s->ledger), 3);
	assert_int_equal(lbp_in_use(p->pool), start + 3);
	for (int i = 0; i < 3; i++)
		take(g, &v[i], FDX_VIEW_BUFFER);

	fdx__sub_fail(s, FDX_EPEERGONE, "the consumer went away", 1);
	assert_int_equal(fdx__ledger_in_flight(&s->ledger), 0);
	assert_int_equal(atomic_load(&s->lost), 3);
	assert_int_equal(atomic_load(&p->in_flight), 0);
	assert_int_equal(lbp_in_use(p->pool), start);
	assert_int_equal(sub_stats(p, 0).error, FDX_EPEERGONE);
	assert_int_equal(fdx_partition_emit(p, 0, "x", 1, 0), -EPIPE);
	/* Late credit from the consumer is ignored: nothing is recycled twice. */
	for (int i = 0; i < 3; i++)
		release(g, &v[i]);
	take_nothing(g);
	assert_int_equal(fake_deliver_credit(r->ex), 3);
	for (uint32_t i = 0; i < r->ex->n_ctl; i++) {
		assert_int_equal(r->ex->ctl[i].reached, 1);
		assert_int_equal(r->ex->ctl[i].result, 1); /* taken back: ignored */
	}
	assert_int_equal(lbp_in_use(p->pool), start);
	assert_int_equal(r->ex->log_errors, 0);
	/* A channel that lost buffers fails its partition's finish. */
	assert_int_equal(fdx_partition_finish(p, 0), -EPIPE);
}

/* ---- priority events ----------------------------------------------------------------- */

static void test_sub_pump_sends_a_priority_event_ahead_of_queued_data(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 1, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	uint64_t id = 42;
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 3);
	fake_pump(r->ex); /* one buffer: two wait for credit */
	assert_int_equal(
		fdx_partition_event(p, 0, FDX_EVENT_BARRIER, FDX_EVENT_PRIORITY, &id, sizeof(id)),
		0);
	assert_int_equal(fdx_partition_event(p, 0, FDX_EVENT_WATERMARK, 0, &id, sizeof(id)), 0);
	fake_pump(r->ex);
	/* The priority event went past the two queued buffers; the normal one waits. */
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_EVENT), 1);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_EVENT, 0)->flags,
			 FDX_EVENT_PRIORITY);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_EVENT, 0)->seq, 1);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 1);
	/* At the gate too it comes before the buffer that arrived before it. */
	take(g, &v, FDX_VIEW_EVENT);
	assert_int_equal(v.event_type, FDX_EVENT_BARRIER);
	assert_int_equal(v.event_flags, FDX_EVENT_PRIORITY);
	release(g, &v);
	for (uint32_t i = 0; i < 3; i++) {
		take(g, &v, FDX_VIEW_BUFFER);
		release(g, &v);
		fake_deliver_credit(r->ex);
		fake_pump(r->ex);
	}
	take(g, &v, FDX_VIEW_EVENT);
	assert_int_equal(v.event_type, FDX_EVENT_WATERMARK);
	release(g, &v);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_EVENT, 1)->seq, 4);
}

static struct fdx_exchange *gap_ex;
static int gap_calls;

/* Between the gate's look at its priority queue and its take from the other one. */
static void pump_in_the_gap(struct fdx_gate *g)
{
	(void)g;
	if (gap_calls++ == 0)
		fake_pump(gap_ex);
}

static void test_gate_keeps_data_sent_after_a_priority_event_behind_it(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	take_nothing(g); /* OPENED */
	emit_full(p, 0, 1);
	assert_int_equal(fdx_partition_event(p, 0, FDX_EVENT_BARRIER, FDX_EVENT_PRIORITY, NULL, 0),
			 0);
	/* The sender sends the event, then the buffer, just as the consumer looks. */
	gap_ex = r->ex;
	gap_calls = 0;
	fdx__seam_gate_between_pops = pump_in_the_gap;
	assert_int_equal(fdx_gate_next(g, &v, 0), 0);
	fdx__seam_gate_between_pops = NULL;
	assert_true(gap_calls > 0);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, 0, 0)->kind, FDX__GI_EVENT);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, 0, 1)->kind, FDX__GI_BUFFER);
	if (v.kind != FDX_VIEW_EVENT)
		fail_msg("the buffer sent after the priority event overtook it");
	release(g, &v);
	take(g, &v, FDX_VIEW_BUFFER);
	release(g, &v);
}

/* ---- records across buffers ------------------------------------------------------------ */

static void test_gate_reassembles_a_record_spanning_buffers(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	static uint8_t big[10000];
	struct fdx_view v[3];
	const void *rec;
	uint32_t len;

	for (uint32_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + 1);
	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	assert_int_equal(fdx_partition_emit(p, 0, big, sizeof(big), 0), 0);
	emit_str(p, 0, "tail");
	assert_int_equal(fdx_partition_flush(p, 0), 0);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 3);
	for (int i = 0; i < 3; i++)
		take(g, &v[i], FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_next_record(g, &v[0], &rec, &len), 0); /* taken in */
	assert_int_equal(fdx_gate_next_record(g, &v[1], &rec, &len), 0);
	assert_int_equal(fdx_gate_next_record(g, &v[2], &rec, &len), 1);
	assert_int_equal(len, sizeof(big));
	assert_memory_equal(rec, big, sizeof(big));
	assert_int_equal(fdx_gate_next_record(g, &v[2], &rec, &len), 1);
	assert_int_equal(len, 4);
	assert_memory_equal(rec, "tail", 4);
	assert_int_equal(fdx_gate_next_record(g, &v[2], &rec, &len), 0);
	assert_int_equal(gate_stats(g).records, 2);
	assert_int_equal(gate_stats(g).bytes_reassembled, sizeof(big));
	for (int i = 0; i < 3; i++)
		release(g, &v[i]);
}

static void test_gate_drops_a_withdrawn_spanning_record(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 2, 0, 0); /* two segments only */
	static uint8_t big[10000];
	struct fdx_view v[3];
	const void *rec;
	uint32_t len;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	memset(big, 0xab, sizeof(big));
	/* Two segments written, the third cannot be had: the record is withdrawn. */
	assert_int_equal(fdx_partition_emit(p, 0, big, sizeof(big), 0), -EAGAIN);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 2);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_ABORT), 1);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_ABORT, 0)->seq, 2);
	take(g, &v[0], FDX_VIEW_BUFFER);
	take(g, &v[1], FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_next_record(g, &v[0], &rec, &len), 0);
	assert_int_equal(fdx_gate_next_record(g, &v[1], &rec, &len), 0);
	release(g, &v[0]);
	release(g, &v[1]);
	fake_deliver_credit(r->ex);
	assert_int_equal(lbp_in_use(p->pool), 0);
	emit_str(p, 0, "after");
	assert_int_equal(fdx_partition_flush(p, 0), 0);
	fake_pump(r->ex);
	take(g, &v[2], FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_next_record(g, &v[2], &rec, &len), 1);
	assert_int_equal(len, 5);
	assert_memory_equal(rec, "after", 5);
	assert_int_equal(fdx_gate_next_record(g, &v[2], &rec, &len), 0);
	assert_int_equal(gate_stats(g).records, 1);
	release(g, &v[2]);
}

/* ---- openings -------------------------------------------------------------------------- */

static void test_ichan_reopened_channel_gets_no_credit_of_the_old_opening(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p1 = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx_partition *p2;
	struct fdx_view old[2], v;
	const struct fake_ctl *c;

	rig_connect(r, p1, 0, 0, FDX_LINK_SHM);
	assert_int_equal(fake_link_of(r->ex, p1, 0)->opening, 1);
	emit_full(p1, 0, 2);
	fake_pump(r->ex);
	take(g, &old[0], FDX_VIEW_BUFFER);
	take(g, &old[1], FDX_VIEW_BUFFER);
	/* The producer closes (a CLOSE after its data); the same stream opens it again. */
	rig_drop_part(r, 0);
	assert_int_equal(r->ex->n_detach, 1);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_CLOSED, 0)->seq, 2);
	assert_false(fdx__ichan_busy(g, 0));
	p2 = rig_part(r, 1, 1, 8, 0, 0);
	rig_connect(r, p2, 0, 0, FDX_LINK_SHM);
	assert_int_equal(fake_link_of(r->ex, p2, 0)->opening, 2);
	take_nothing(g); /* CLOSED of opening 1, OPENED of opening 2 */
	assert_int_equal(g->ch[0].outstanding, 2);
	/* The old views' credit belongs to the old opening: none is announced. */
	release(g, &old[0]);
	release(g, &old[1]);
	take_nothing(g);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 0);
	assert_int_equal(g->ch[0].outstanding, 2);
	assert_int_equal(atomic_load(&g->ch[0].granted_total), 2);
	assert_quota(g, 0);
	/* The sequence starts again at 0. */
	emit_full(p2, 0, 1);
	fake_pump(r->ex);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 2)->seq, 0);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 2)->accepted, 1);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(v.seq, 0);
	release(g, &v);
	take_nothing(g);
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT);
	assert_non_null(c);
	assert_int_equal(c->opening, 2);
	fake_deliver_credit(r->ex);
	assert_int_equal(c->reached, 1);
	assert_int_equal(credit_of(p2, 0), 2);
}

static void test_ichan_sequence_restarts_with_each_opening(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fake_frame f = {.kind = FDX__GI_BUFFER, .sess = 5, .off = SEG, .len = 8};
	uint8_t bytes[8] = {4, 0, 0, 0, 'a', 'b', 'c', 'd'};
	uint64_t opening;
	struct fdx_view v;

	assert_int_equal(fake_open_raw(r->ex, g, 0, 5, &opening), 0);
	for (f.seq = 0; f.seq < 2; f.seq++)
		assert_int_equal(fake_inject(r->ex, g, &f, bytes), 1);
	f.kind = FDX__GI_CLOSED;
	assert_int_equal(fake_inject(r->ex, g, &f, NULL), 1);
	assert_false(fdx__ichan_busy(g, 0));
	/* What comes after the close is for a closed channel: dropped, no failure. */
	f.kind = FDX__GI_BUFFER;
	f.seq = 3;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), 0);
	assert_int_equal(fake_open_raw(r->ex, g, 0, 5, &opening), 0);
	assert_int_equal(opening, 2);
	f.seq = 3;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), -1);
	f.seq = 0;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), 0); /* the link died on the lie */
	/* Views of the old opening first, then the new one fails. */
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(v.seq, 0);
	release(g, &v);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(v.seq, 1);
	release(g, &v);
	fake_pump(r->ex);
	take(g, &v, FDX_VIEW_FAILED);
	release(g, &v);

	/* A third opening, honest this time: 0 is what it starts with. */
	assert_int_equal(fake_open_raw(r->ex, g, 0, 5, &opening), 0);
	assert_int_equal(opening, 3);
	f.seq = 0;
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), 1);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(v.seq, 0);
	release(g, &v);
}

/*
 * The consumer releases views of an opening that just ended, before it saw
 * the end, while the producer opens the channel again: that credit is for
 * the old opening (its announcement is refused). It must not raise the bound
 * the loop checks the new opening against.
 */
static void test_ichan_credit_of_an_old_opening_does_not_raise_the_new_ones_bound(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	struct fake_frame f = {.kind = FDX__GI_BUFFER, .sess = 5, .off = SEG, .len = 8};
	uint8_t bytes[8] = {4, 0, 0, 0, 'a', 'b', 'c', 'd'};
	struct fdx_view v[2];
	uint64_t opening;

	assert_int_equal(fake_open_raw(r->ex, g, 0, 5, &opening), 0);
	take_nothing(g);
	for (f.seq = 0; f.seq < 2; f.seq++)
		assert_int_equal(fake_inject(r->ex, g, &f, bytes), 1);
	take(g, &v[0], FDX_VIEW_BUFFER);
	take(g, &v[1], FDX_VIEW_BUFFER);
	f.kind = FDX__GI_CLOSED;
	assert_int_equal(fake_inject(r->ex, g, &f, NULL), 1);
	assert_int_equal(fake_open_raw(r->ex, g, 0, 5, &opening), 0);
	release(g, &v[0]);
	release(g, &v[1]);
	assert_int_equal(fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT)->port_ret, -ENOENT);
	assert_int_equal(fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT)->opening, 1);
	/* Opening 2 has its exclusive credit, 2, and no more. */
	f.kind = FDX__GI_BUFFER;
	for (f.seq = 0; f.seq < 2; f.seq++)
		assert_int_equal(fake_inject(r->ex, g, &f, bytes), 1);
	assert_int_equal(fake_inject(r->ex, g, &f, bytes), -1);
	assert_contains(f.why, "beyond its credit of 2");
	for (int i = 0; i < 2; i++) {
		take(g, &v[0], FDX_VIEW_BUFFER);
		release(g, &v[0]);
	}
	fake_pump(r->ex);
	take(g, &v[0], FDX_VIEW_FAILED);
	release(g, &v[0]);
}

/* ---- the end, the buffer timeout, the local link, a bad record ------------------------ */

static void test_partition_finish_returns_once_every_buffer_came_back(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx_view v[3], e;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 2);
	emit_str(p, 0, "last");
	assert_int_equal(fdx_partition_finish(p, 0), -ETIMEDOUT); /* the end queued */
	assert_int_equal(fdx_partition_emit(p, 0, "x", 1, 0), FDX_ECLOSED);
	assert_false(fdx__ichan_ended(g, 0));
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 3);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 2)->len, 8);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_EVENT, 0)->seq, 3);
	assert_true(fdx__ichan_ended(g, 0)); /* the loop saw it */
	assert_int_equal(atomic_load(&p->subs[0].end_sent), 1);
	for (int i = 0; i < 3; i++)
		take(g, &v[i], FDX_VIEW_BUFFER);
	take(g, &e, FDX_VIEW_EVENT);
	assert_int_equal(e.event_type, FDX_EVENT_END_OF_PARTITION);
	release(g, &e);
	assert_int_equal(fdx_partition_finish(p, 0), -ETIMEDOUT); /* three buffers out */
	for (int i = 0; i < 3; i++)
		release(g, &v[i]);
	fake_deliver_credit(r->ex);
	assert_int_equal(fdx_partition_finish(p, 0), 0);
	assert_int_equal(lbp_in_use(p->pool), 0);
}

static void test_part_tick_sends_a_partly_filled_buffer(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p =
		rig_part(r, 0, 1, 8, FDX_PARTITION_BUFFER_TIMEOUT, 50); /* 50 ms */
	const uint64_t t0 = 1000000000ull, ms = 1000000ull;
	const struct fake_frame *f;
	struct fdx_view v;
	const void *rec;
	uint32_t len;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_str(p, 0, "abc");
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 0);
	assert_int_equal(fdx__part_tick(p, t0), t0 + 50 * ms); /* the clock starts */
	assert_int_equal(fdx__part_tick(p, t0 + 49 * ms), t0 + 50 * ms);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 0);
	assert_int_equal(fdx__part_tick(p, t0 + 50 * ms), t0 + 100 * ms);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 1);
	f = fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 0);
	assert_int_equal(f->len, 4 + 3);
	assert_int_equal(f->backlog, 0);
	/* The task keeps filling the same segment; the next timeout sends the rest only. */
	emit_str(p, 0, "defg");
	fake_tick(r->ex, t0 + 100 * ms);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 2);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 1)->off, f->off + 7);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 1)->len, 8);
	/* Nothing new: the timeout sends nothing. */
	fake_tick(r->ex, t0 + 150 * ms);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 2);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_next_record(g, &v, &rec, &len), 1);
	assert_memory_equal(rec, "abc", 3);
	release(g, &v);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_next_record(g, &v, &rec, &len), 1);
	assert_memory_equal(rec, "defg", 4);
	release(g, &v);
	/* Its segment is still the writer's: one reference left, no more. */
	fake_deliver_credit(r->ex);
	assert_int_equal(lbp_in_use(p->pool), 1);
	assert_int_equal(atomic_load(&p->refs[p->subs[0].cur]), 1);
}

static void test_partition_with_timeout_zero_sends_every_record(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, FDX_PARTITION_BUFFER_TIMEOUT, 0);
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	assert_int_equal(fdx__part_tick(p, 1), UINT64_MAX); /* no timer: nothing waits */
	emit_str(p, 0, "one");
	fake_pump(r->ex);
	emit_str(p, 0, "two");
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 2);
	assert_int_equal(fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 1)->len, 7);
	for (int i = 0; i < 2; i++) {
		take(g, &v, FDX_VIEW_BUFFER);
		release(g, &v);
	}
}

static void test_local_link_hands_credit_back_at_once(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 16, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	const struct fake_ctl *c;
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_LOCAL);
	emit_full(p, 0, 1);
	fake_pump(r->ex);
	assert_int_equal(credit_of(p, 0), 15);
	take(g, &v, FDX_VIEW_BUFFER);
	release(g, &v);
	/* No control message to save: not batched. */
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_LOCAL_CREDIT);
	assert_non_null(c);
	assert_int_equal(c->added, 1);
	assert_int_equal(c->n, 1);
	assert_int_equal(c->offs[0], fake_nth_frame(r->ex, GATE, 0, FDX__GI_BUFFER, 0)->off);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 0);
	fake_deliver_credit(r->ex);
	assert_int_equal(c->result, 0);
	assert_int_equal(credit_of(p, 0), 16);
	assert_int_equal(lbp_in_use(p->pool), 0);
}

static void test_gate_fails_a_channel_whose_records_break_the_format(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 100);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	static uint8_t rec[200];
	const struct fake_ctl *c;
	struct fdx_view v;
	const void *out;
	uint32_t len;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	assert_int_equal(fdx_partition_emit(p, 0, rec, sizeof(rec), 0), 0); /* the gate takes 100 */
	assert_int_equal(fdx_partition_flush(p, 0), 0);
	fake_pump(r->ex);
	emit_str(p, 0, "more");
	assert_int_equal(fdx_partition_flush(p, 0), 0);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 2);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(fdx_gate_next_record(g, &v, &out, &len), FDX_EPROTO);
	/* Its producer is told, once: the channel ends here. */
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_DROP), 1);
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_DROP);
	assert_int_equal(c->code, FDX_EPROTO);
	assert_contains(c->msg, "above the 100 allowed");
	release(g, &v);
	/* What it sent after is dropped unread: the failure comes next. */
	take(g, &v, FDX_VIEW_FAILED);
	assert_int_equal(v.error, FDX_EPROTO);
	release(g, &v);
	take_nothing(g);
	fake_deliver_credit(r->ex);
	assert_int_equal(c->reached, 1);
	assert_int_equal(sub_stats(p, 0).error, FDX_EPROTO);
	assert_int_equal(sub_stats(p, 0).in_flight, 0);
	assert_int_equal(lbp_in_use(p->pool), 1); /* the writer's current segment alone */
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_DROP), 1);
}

/*
 * Local openings are numbered too: a view of a local producer that went gives
 * no credit (and no offset) to the next local producer of the channel.
 */
static void test_gate_gives_a_stale_local_view_nothing_of_the_next_opening(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p0 = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx_partition *p1;
	const struct fake_ctl *c;
	struct fdx_view v, w;
	uint32_t n_ctl;

	rig_connect(r, p0, 0, 0, FDX_LINK_LOCAL);
	emit_full(p0, 0, 1);
	fake_pump(r->ex);
	take(g, &v, FDX_VIEW_BUFFER);
	rig_drop_part(r, 0);
	p1 = rig_part(r, 1, 1, 8, 0, 0);
	rig_connect(r, p1, 0, 0, FDX_LINK_LOCAL);
	emit_full(p1, 0, 1);
	fake_pump(r->ex);
	take(g, &w, FDX_VIEW_BUFFER);
	assert_int_equal(fdx__ledger_in_flight(&p1->subs[0].ledger), 1);
	/* The old view: its opening is over, nothing goes to p1. */
	n_ctl = fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_LOCAL_CREDIT);
	release(g, &v);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_LOCAL_CREDIT), n_ctl);
	assert_int_equal(credit_of(p1, 0), 1);
	/* p1's own view: its credit and its offset reach it, and are taken. */
	release(g, &w);
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_LOCAL_CREDIT);
	assert_ptr_equal(c->p, p1);
	assert_int_equal(c->n, 1);
	fake_deliver_credit(r->ex);
	assert_int_equal(c->result, 0);
	assert_int_equal(credit_of(p1, 0), 2);
	assert_int_equal(fdx__ledger_in_flight(&p1->subs[0].ledger), 0);
	assert_int_equal(r->ex->log_errors, 0);
}

/*
 * A local producer's credit is never counted in the bound the loop checks a
 * remote producer against: released after a remote one opened the channel,
 * it leaves that opening's bound at its exclusive credit.
 */
static void test_ichan_local_credit_does_not_raise_a_remote_openings_bound(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p0 = rig_part(r, 0, 1, 8, 0, 0);
	uint64_t opening;
	struct fdx_view v;

	rig_connect(r, p0, 0, 0, FDX_LINK_LOCAL);
	emit_full(p0, 0, 1);
	fake_pump(r->ex);
	take(g, &v, FDX_VIEW_BUFFER);
	/* The local producer goes; a remote one opens before the consumer looks again. */
	fdx__ichan_close(g, 0, FDX__SESS_LOCAL);
	assert_int_equal(fake_open_raw(r->ex, g, 0, 5, &opening), 0);
	assert_int_equal(atomic_load(&g->ch[0].granted_total), 2);
	release(g, &v); /* the consumer is still in the local opening */
	assert_int_equal(atomic_load(&g->ch[0].granted_total), 2);
	take_nothing(g);
	assert_int_equal(atomic_load(&g->ch[0].granted_total), 2);
}

/*
 * A link out of memory fails its channel at the producer (emits -EPIPE, the
 * rest dropped) without taking back what is in flight: the consumer still
 * reads it, and its credit brings it home.
 */
static void test_sub_link_out_of_memory_fails_the_channel_and_keeps_what_is_in_flight(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct fdx__sub *s = &p->subs[0];
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	take_nothing(g); /* OPENED */
	emit_full(p, 0, 3);
	r->ex->fail_buffer_in = 2;
	fake_pump(r->ex); /* the first goes, the second fails, the third is dropped */
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 1);
	assert_int_equal(atomic_load(&s->error), -ENOMEM);
	assert_int_equal(fdx_partition_emit(p, 0, "x", 1, 0), -EPIPE);
	assert_int_equal(fdx__ledger_in_flight(&s->ledger), 1); /* not taken back */
	assert_int_equal(atomic_load(&s->lost), 0);
	assert_int_equal(sub_stats(p, 0).buffers_sent, 1);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 1);
	assert_int_equal(lbp_in_use(p->pool), 1); /* the one in flight; the rest went home */
	/* The consumer reads it whole and hands it back: its segment goes home too. */
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(((const uint8_t *)v.data)[8], 0x40);
	release(g, &v);
	take_nothing(g);
	fake_deliver_credit(r->ex);
	assert_int_equal(fdx__ledger_in_flight(&s->ledger), 0);
	assert_int_equal(lbp_in_use(p->pool), 0);
	assert_int_equal(fdx_partition_finish(p, 0), -EPIPE); /* its end never went */
}

/* Spending an offset that is in flight already spends nothing; an undone spend gives it back. */
static void test_ledger_spends_nothing_twice_and_undoes_a_spend(void **state)
{
	struct fdx__credit_ledger l;

	(void)state;
	fdx__ledger_init(&l, 2);
	assert_int_equal(fdx__ledger_spend(&l, 4096, 0), 0);
	assert_int_equal(fdx__ledger_available(&l), 1);
	assert_int_equal(fdx__ledger_spend(&l, 4096, 0), -EEXIST);
	assert_int_equal(fdx__ledger_available(&l), 1);
	assert_true(fdx__ledger_holds(&l, 4096));
	fdx__ledger_unspend(&l, 4096);
	assert_int_equal(fdx__ledger_available(&l), 2);
	assert_false(fdx__ledger_holds(&l, 4096));
	assert_int_equal(fdx__ledger_in_flight(&l), 0);
	fdx__ledger_fini(&l);
}

/*
 * The credit round trip of each buffer (sent -> its offset handed back and
 * applied) is counted per channel; a buffer held 2 ms before its credit
 * comes back takes at least that long (a lower bound: it holds whatever the
 * scheduler does).
 */
/* ---- in-place credit: shm and local read the producer's segments ------------- */

/*
 * A shm channel starts on its exclusive credit (the answer to the open); its
 * first buffer shows the link, and the rest of the in-place budget goes at
 * once, as one update. It takes no floating credit however long its backlog.
 */
static void test_gate_gives_an_in_place_channel_its_budget(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g;
	struct fdx_partition *p = rig_part(r, 0, 1, 16, 0, 0);
	const struct fake_ctl *c;
	struct fdx_view v[8];

	r->inplace = 6;
	g = rig_gate(r, 1, 2, 8, 0);
	assert_int_equal(g->flush_at, (2 + 8) / 4);
	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	assert_int_equal(credit_of(p, 0), 2);
	emit_full(p, 0, 8);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 2);
	take(g, &v[0], FDX_VIEW_BUFFER);
	/*
	 * Its link known: 6 - 2 more, in one update, and the batch follows its
	 * quota (the floating credits no longer count: no channel can take them).
	 */
	assert_int_equal(g->ch[0].inplace, 4);
	assert_int_equal(g->quota, 2 + 4);
	assert_int_equal(g->flush_at, (2 + 4) / 4);
	take(g, &v[1], FDX_VIEW_BUFFER);
	take_nothing(g); /* the BACKLOG: 6 waiting, and still no floating credit */
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 1);
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT);
	assert_int_equal(c->added, 4);
	assert_int_equal(c->n, 0);
	assert_int_equal(g->ch[0].floating, 0);
	assert_int_equal(gate_stats(g).floating_free, 8);
	assert_int_equal(chan_stats(g, 0).inplace, 6);
	assert_int_equal(chan_stats(g, 0).floating, 0);
	assert_quota(g, 0);

	fake_deliver_credit(r->ex);
	assert_int_equal(c->reached, 1);
	fake_pump(r->ex);
	assert_int_equal(fake_count_frames(r->ex, GATE, 0, FDX__GI_BUFFER), 6);
	for (int i = 2; i < 6; i++) {
		take(g, &v[i], FDX_VIEW_BUFFER);
		assert_quota(g, 0);
	}
	/* Six held, none outstanding: the producer waits for a release. */
	assert_int_equal(atomic_load(&g->ch[0].held), 6);
	assert_int_equal(g->ch[0].outstanding, 0);
	assert_int_equal(credit_of(p, 0), 0);
	/* Each release gives one back, with its offset: quota stays 6. */
	for (int i = 0; i < 6; i++) {
		release(g, &v[i]);
		assert_quota(g, 0);
	}
	take_nothing(g);
	fake_deliver_credit(r->ex);
	assert_int_equal(credit_of(p, 0), 6);
	assert_int_equal(lbp_in_use(r->lbp[0]), 2); /* the two still queued, no more */
}

/* Not above the exclusive credit: an in-place channel is credited as a tcp one. */
static void test_gate_in_place_credit_not_above_exclusive_changes_nothing(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g;
	struct fdx_partition *p = rig_part(r, 0, 1, 16, 0, 0);
	struct fdx_view v[2];

	r->inplace = 2;
	g = rig_gate(r, 1, 2, 4, 0);
	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 6);
	fake_pump(r->ex);
	take(g, &v[0], FDX_VIEW_BUFFER);
	take(g, &v[1], FDX_VIEW_BUFFER);
	take_nothing(g); /* the BACKLOG: floating lent, as without in-place credit */
	assert_int_equal(g->ch[0].inplace, 0);
	assert_int_equal(chan_stats(g, 0).inplace, 0);
	assert_int_equal(g->ch[0].floating, 4);
	assert_quota(g, 0);
	release(g, &v[0]);
	release(g, &v[1]);
}

/* A local channel's budget comes at once too, straight to its producer's ledger. */
static void test_gate_gives_a_local_channel_its_in_place_budget(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g;
	struct fdx_partition *p = rig_part(r, 0, 1, 16, 0, 0);
	const struct fake_ctl *c;
	struct fdx_view v;

	r->inplace = 5;
	g = rig_gate(r, 1, 2, 8, 0);
	rig_connect(r, p, 0, 0, FDX_LINK_LOCAL);
	assert_int_equal(credit_of(p, 0), 2);
	emit_full(p, 0, 3);
	fake_pump(r->ex);
	take(g, &v, FDX_VIEW_BUFFER);
	c = fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_LOCAL_CREDIT);
	assert_non_null(c);
	assert_int_equal(c->added, 3);
	fake_deliver_credit(r->ex);
	/* 2 at open, 2 spent, 3 more. */
	assert_int_equal(credit_of(p, 0), 3);
	assert_int_equal(chan_stats(g, 0).inplace, 5);
	assert_quota(g, 0);
	release(g, &v);
	take(g, &v, FDX_VIEW_BUFFER); /* the second, sent on the exclusive credit */
	release(g, &v);
	assert_quota(g, 0);
}

/*
 * A new opening starts again on its exclusive credit: the old one's in-place
 * credit neither carries over nor stays in the gate's batch size.
 */
static void test_gate_in_place_credit_ends_with_its_opening(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g;
	struct fdx_partition *p1 = rig_part(r, 0, 1, 8, 0, 0), *p2;
	struct fdx_view v;

	r->inplace = 6;
	g = rig_gate(r, 1, 2, FDX_CREDITS_NONE, 0);
	rig_connect(r, p1, 0, 0, FDX_LINK_SHM);
	emit_full(p1, 0, 1);
	fake_pump(r->ex);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(g->ch[0].inplace, 4);
	assert_int_equal(g->quota, 6);
	release(g, &v);
	rig_drop_part(r, 0);
	p2 = rig_part(r, 1, 1, 8, 0, 0);
	rig_connect(r, p2, 0, 0, FDX_LINK_SHM);
	take_nothing(g); /* CLOSED of opening 1, OPENED of opening 2 */
	assert_int_equal(g->ch[0].inplace, 0);
	assert_int_equal(chan_stats(g, 0).inplace, 0);
	assert_int_equal(g->quota, 2);
	assert_int_equal(g->flush_at, 1);
	assert_int_equal(atomic_load(&g->ch[0].granted_total), 2);
	assert_int_equal(credit_of(p2, 0), 2);
	assert_quota(g, 0);
	emit_full(p2, 0, 1);
	fake_pump(r->ex);
	take(g, &v, FDX_VIEW_BUFFER);
	assert_int_equal(g->ch[0].inplace, 4);
	assert_int_equal(fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT)->opening, 2);
	release(g, &v);
}

/*
 * The options: the library's default in-place credit; an older caller's
 * struct (without inplace_credits) is taken with the default; sizes below it
 * and budgets above the limit are refused.
 */
static void test_gate_opts_in_place_defaults_and_older_struct(void **state)
{
	struct rig *r = *state;
	struct fdx_gate_opts go = {.size = sizeof(go), .gate = 5, .n_channels = 2};
	struct fdx_gate *g = NULL;

	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g), 0);
	assert_int_equal(g->inplace, FDX_INPLACE_CREDITS_DEFAULT);
	assert_int_equal(g->inplace_extra,
			 FDX_INPLACE_CREDITS_DEFAULT - FDX_EXCLUSIVE_CREDITS_DEFAULT);
	fdx_gate_destroy(g);

	/* An fdx 0.1 caller: its struct ends before inplace_credits, whatever follows. */
	go.inplace_credits = 7;
	go.size = FDX_GATE_OPTS_SIZE_V1;
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g), 0);
	assert_int_equal(g->inplace, FDX_INPLACE_CREDITS_DEFAULT);
	fdx_gate_destroy(g);

	go.size = FDX_GATE_OPTS_SIZE_V1 - 4;
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g), -EINVAL);
	assert_null(g);
	go.size = sizeof(go);
	go.inplace_credits = FDX_INPLACE_CREDITS_MAX + 1;
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g), -EINVAL);
	go.inplace_credits = FDX_CREDITS_NONE;
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g), 0);
	assert_int_equal(g->inplace, 0);
	assert_int_equal(g->inplace_extra, 0);
	fdx_gate_destroy(g);
	/* One channel may not hold 2^31 credits: a buffer names its credit modulo 2^32. */
	go.n_channels = 1;
	go.exclusive_credits = 1u << 30;
	go.floating_credits = 1u << 30;
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g), -EINVAL);
	go.floating_credits = (1u << 30) - 1;
	assert_int_equal(fdx_gate_create(r->ex, NULL, &go, &g), 0);
	fdx_gate_destroy(g);
}

/*
 * A consumer about to wait owing credit keeps it a while (one update per
 * quiet spell) only while its producer has more left than waits here; once
 * what waits is as much as the producer has, it goes at once.
 */
static void test_gate_owed_credit_goes_at_once_when_the_producer_runs_short(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 8, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 16, 0, 0);
	struct fdx_view v[6];

	g->flush_at = 100; /* no batch fills here: only the waiting rule decides */
	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	emit_full(p, 0, 2);
	fake_pump(r->ex);
	take(g, &v[0], FDX_VIEW_BUFFER);
	take(g, &v[1], FDX_VIEW_BUFFER);
	release(g, &v[0]);
	release(g, &v[1]);
	/* 2 owed, 6 left to the producer: it may wait. */
	assert_int_equal(g->pend_total, 2);
	assert_false(g->short_credit);
	assert_int_equal(fake_count_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT), 0);
	take_nothing(g); /* a consumer that does not wait sends it */
	fake_deliver_credit(r->ex);
	assert_int_equal(credit_of(p, 0), 8);

	emit_full(p, 0, 6);
	fake_pump(r->ex);
	for (int i = 0; i < 6; i++)
		take(g, &v[i], FDX_VIEW_BUFFER);
	for (int i = 0; i < 3; i++)
		release(g, &v[i]);
	/* 3 owed, 2 left to the producer: it goes as soon as the consumer would wait. */
	assert_int_equal(g->pend_total, 3);
	assert_true(g->short_credit);
	for (int i = 3; i < 6; i++)
		release(g, &v[i]);
	take_nothing(g);
	assert_false(g->short_credit);
	assert_int_equal(fake_last_ctl(r->ex, GATE, 0, FAKE_CTL_CREDIT)->added, 6);
}

static void test_sub_measures_each_buffers_credit_round_trip(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 4, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct timespec hold = {0, 2000000};
	struct fdx_channel_stats st;
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	take_nothing(g); /* OPENED */
	assert_int_equal(sub_stats(p, 0).rtt_count, 0);
	emit_full(p, 0, 4);
	fake_pump(r->ex);
	nanosleep(&hold, NULL);
	for (int i = 0; i < 4; i++) {
		take(g, &v, FDX_VIEW_BUFFER);
		release(g, &v); /* 4 credits: a batch is 1, each release announces */
	}
	fake_deliver_credit(r->ex);
	st = sub_stats(p, 0);
	assert_int_equal(st.rtt_count, 4);
	assert_true(st.rtt_p50_ns >= 2000000);
	assert_true(st.rtt_p50_ns <= st.rtt_p99_ns);
	assert_true(st.rtt_p99_ns <= st.rtt_max_ns);
	/* An older caller's smaller struct gets what fits, nothing past it. */
	memset(&st, 0xab, sizeof(st));
	st.size = offsetof(struct fdx_channel_stats, rtt_count);
	assert_int_equal(fdx_partition_channel_stats(p, 0, &st), 0);
	assert_int_equal(st.buffers_sent, 4);
	assert_int_equal(st.rtt_count, 0xababababababababull);
}

/*
 * The parts of the loop, each timed where it happens: a buffer held 2 ms by
 * the consumer (hold), a credit update 2 ms on its way (credit_wire), a
 * starved sender 2 ms between its credit and its next buffer (resume): each
 * at least 2 ms (lower bounds: they hold whatever the scheduler does); the
 * wait of credit in the outbox is timed too.
 */
static void test_loop_parts_are_timed_where_they_happen(void **state)
{
	struct rig *r = *state;
	struct fdx_gate *g = rig_gate(r, 1, 1, FDX_CREDITS_NONE, 0);
	struct fdx_partition *p = rig_part(r, 0, 1, 8, 0, 0);
	struct timespec hold = {0, 2000000};
	struct fdx_input_channel_stats ci = {.size = sizeof(ci)};
	struct fdx_channel_stats st;
	struct fdx_view v;

	rig_connect(r, p, 0, 0, FDX_LINK_SHM);
	take_nothing(g); /* OPENED */
	emit_full(p, 0, 2);
	fake_pump(r->ex); /* one credit: one buffer goes, one waits */
	take(g, &v, FDX_VIEW_BUFFER);
	nanosleep(&hold, NULL);
	release(g, &v); /* its credit is written (announced) now */
	nanosleep(&hold, NULL);
	fake_deliver_credit(r->ex); /* applied 2 ms after it was written, to a starved sender */
	nanosleep(&hold, NULL);
	fake_pump(r->ex); /* its next buffer goes 2 ms after the credit came */
	assert_int_equal(fdx_gate_channel_stats(g, 0, &ci), 0);
	assert_true(ci.hold_p50_ns >= 2000000);
	assert_true(ci.hold_p50_ns <= ci.hold_p99_ns);
	assert_true(ci.credit_wait_p50_ns <= ci.credit_wait_p99_ns);
	st = sub_stats(p, 0);
	assert_true(st.credit_wire_p50_ns >= 2000000);
	assert_true(st.resume_p50_ns >= 2000000);
	assert_true(st.rtt_p50_ns >= 2 * 2000000); /* its hold and its credit's way back */
	take(g, &v, FDX_VIEW_BUFFER);
	release(g, &v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, rig_setup, rig_teardown)
		T(test_gate_grants_exclusive_credit_at_open),
		T(test_gate_splits_exclusive_and_floating_credit),
		T(test_gate_quota_is_outstanding_plus_held),
		T(test_gate_lends_floating_credit_for_a_backlog_above_unused_credit),
		T(test_gate_hands_floating_credit_to_the_channel_waiting_longest),
		T(test_gate_hands_the_floating_credit_of_a_closed_channel_to_a_waiting_one),
		T(test_sub_pump_sends_a_backlog_and_no_buffer_without_credit),
		T(test_sub_pump_spends_one_credit_per_buffer),
		T(test_sub_pump_sends_events_without_credit),
		T(test_sub_pump_announces_the_slice_an_event_waits_for),
		T(test_gate_coalesces_credit_in_batches_of_a_quarter),
		T(test_gate_sends_credit_at_once_to_a_starving_producer),
		T(test_gate_sends_credit_at_once_after_the_end),
		T(test_ichan_accept_refuses_a_buffer_beyond_credit),
		T(test_ichan_accept_refuses_a_buffer_sent_before_its_credit_came),
		T(test_ichan_accept_takes_credit_only_with_its_proof),
		T(test_ichan_accept_refuses_a_credit_never_granted),
		cmocka_unit_test(test_credit_proof_is_siphash_2_4),
		T(test_ichan_accept_refuses_a_subpartition_sending_beyond_credit),
		T(test_ichan_accept_refuses_a_wrong_sequence),
		T(test_ledger_refuses_an_offset_never_sent),
		T(test_ledger_refuses_credit_overflow),
		T(test_ledger_takes_back_every_buffer_on_failure),
		T(test_sub_pump_sends_a_priority_event_ahead_of_queued_data),
		T(test_gate_keeps_data_sent_after_a_priority_event_behind_it),
		T(test_gate_reassembles_a_record_spanning_buffers),
		T(test_gate_drops_a_withdrawn_spanning_record),
		T(test_ichan_reopened_channel_gets_no_credit_of_the_old_opening),
		T(test_ichan_sequence_restarts_with_each_opening),
		T(test_ichan_credit_of_an_old_opening_does_not_raise_the_new_ones_bound),
		T(test_partition_finish_returns_once_every_buffer_came_back),
		T(test_part_tick_sends_a_partly_filled_buffer),
		T(test_partition_with_timeout_zero_sends_every_record),
		T(test_local_link_hands_credit_back_at_once),
		T(test_gate_fails_a_channel_whose_records_break_the_format),
		T(test_gate_gives_a_stale_local_view_nothing_of_the_next_opening),
		T(test_ichan_local_credit_does_not_raise_a_remote_openings_bound),
		T(test_sub_link_out_of_memory_fails_the_channel_and_keeps_what_is_in_flight),
		T(test_ledger_spends_nothing_twice_and_undoes_a_spend),
		T(test_sub_measures_each_buffers_credit_round_trip),
		T(test_loop_parts_are_timed_where_they_happen),
		T(test_gate_gives_an_in_place_channel_its_budget),
		T(test_gate_in_place_credit_not_above_exclusive_changes_nothing),
		T(test_gate_gives_a_local_channel_its_in_place_budget),
		T(test_gate_in_place_credit_ends_with_its_opening),
		T(test_gate_opts_in_place_defaults_and_older_struct),
		T(test_gate_owed_credit_goes_at_once_when_the_producer_runs_short),
#undef T
	};

	return cmocka_run_group_tests_name("protocol", tests, NULL, NULL);
}
