/* SPDX-License-Identifier: MIT */
/*
 * An input gate's statistics (fdx_gate_channel_stats(), fdx_gate_stats()):
 * read on any thread from the counters input_gate.c keeps, atomics and the
 * channels' timing histograms (published with release where they first
 * opened).
 */
#include <errno.h>
#include <string.h>

#include <fdx/error.h>
#include <fdx/gate.h>

#include "abi.h"
#include "histogram.h"
#include "input_gate.h"

FDX_API int fdx_gate_channel_stats(struct fdx_gate *g, uint32_t ch,
				   struct fdx_input_channel_stats *st)
{
	struct fdx__gchan_timing *t;
	struct fdx_input_channel_stats s;
	struct fdx__gchan *c;

	if (!g || !st || st->size < 8 || ch >= g->n)
		return -EINVAL;
	c = &g->ch[ch];
	memset(&s, 0, sizeof(s));
	s.link = atomic_load_explicit(&c->sess, memory_order_relaxed)
			 ? atomic_load_explicit(&c->link, memory_order_relaxed)
			 : 0;
	s.exclusive = g->exclusive;
	s.floating = atomic_load_explicit(&c->st_floating, memory_order_relaxed);
	s.inplace = atomic_load_explicit(&c->st_inplace, memory_order_relaxed);
	s.backlog = atomic_load_explicit(&c->st_backlog, memory_order_relaxed);
	s.unannounced = atomic_load_explicit(&c->st_unannounced, memory_order_relaxed);
	s.held = atomic_load_explicit(&c->held, memory_order_relaxed);
	s.max_held = atomic_load_explicit(&c->max_held, memory_order_relaxed);
	s.credits_announced = atomic_load_explicit(&c->credits_announced, memory_order_relaxed);
	s.buffers_received = atomic_load_explicit(&c->buffers_received, memory_order_relaxed);
	s.events_received = atomic_load_explicit(&c->events_received, memory_order_relaxed);
	s.bytes_received = atomic_load_explicit(&c->bytes_received, memory_order_relaxed);
	s.error = atomic_load_explicit(&c->error, memory_order_relaxed);
	/* A2: pairs with R2 where the channel first opened. */
	t = atomic_load_explicit(&c->timing, memory_order_acquire);
	if (t) {
		s.one_way_p50_ns = fdx__hist_percentile(&t->one_way, 50);
		s.one_way_p99_ns = fdx__hist_percentile(&t->one_way, 99);
		s.hold_p50_ns = fdx__hist_percentile(&t->hold, 50);
		s.hold_p99_ns = fdx__hist_percentile(&t->hold, 99);
		s.credit_wait_p50_ns = fdx__hist_percentile(&t->wait, 50);
		s.credit_wait_p99_ns = fdx__hist_percentile(&t->wait, 99);
	}
	fdx__stats_copy(st, &s, sizeof(s));
	return 0;
}

FDX_API int fdx_gate_stats(struct fdx_gate *g, struct fdx_gate_stats *st)
{
	struct fdx_gate_stats s;

	if (!g || !st || st->size < 8)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	s.n_channels = g->n;
	s.channels_open = atomic_load_explicit(&g->channels_open, memory_order_relaxed);
	/* The consumer thread owns floating_free; the channels' counts are atomics. */
	s.floating_free = g->floating;
	for (uint32_t i = 0; i < g->n; i++) {
		uint32_t f = atomic_load_explicit(&g->ch[i].st_floating, memory_order_relaxed);

		s.floating_free = s.floating_free > f ? s.floating_free - f : 0;
	}
	s.buffers_received = atomic_load_explicit(&g->buffers_received, memory_order_relaxed);
	s.events_received = atomic_load_explicit(&g->events_received, memory_order_relaxed);
	s.bytes_received = atomic_load_explicit(&g->bytes_received, memory_order_relaxed);
	s.records = atomic_load_explicit(&g->records, memory_order_relaxed);
	s.bytes_copied = atomic_load_explicit(&g->bytes_copied, memory_order_relaxed);
	s.bytes_reassembled = atomic_load_explicit(&g->bytes_reassembled, memory_order_relaxed);
	s.held = atomic_load_explicit(&g->held, memory_order_relaxed);
	fdx__stats_copy(st, &s, sizeof(s));
	return 0;
}
