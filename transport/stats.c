/* SPDX-License-Identifier: MIT */
/*
 * The TaskManager's statistics as one StatsReply: every partition with its
 * subpartitions, every gate with its input channels. Read through the public
 * counters (fdx_partition_stats() and friends: atomics, any thread) while the
 * data plane's lock keeps them all alive.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fdx/gate.h>
#include <fdx/local_buffer_pool.h>
#include <fdx/partition.h>

#include "../runtime/clock.h"
#include "../runtime/input_gate.h"
#include "../runtime/result_partition.h"
#include "exchange.pb-c.h"
#include "exchange_internal.h"

struct collect {
	Fdx__StatsReply *r;
	int err;
};

static Fdx__Link link_of(uint32_t link)
{
	switch (link) {
	case FDX_LINK_LOCAL:
		return FDX__LINK__LINK_LOCAL;
	case FDX_LINK_SHM:
		return FDX__LINK__LINK_SHM;
	case FDX_LINK_TCP:
		return FDX__LINK__LINK_TCP;
	default:
		return FDX__LINK__LINK_UNSPECIFIED;
	}
}

/* A zeroed entry of size bytes appended to *arr (n entries): it, or NULL with c->err set. */
static void *push_new(struct collect *c, void ***arr, size_t *n, size_t size)
{
	void **a;
	void *m;

	if (c->err)
		return NULL;
	m = calloc(1, size);
	a = m ? realloc(*arr, (*n + 1) * sizeof(*a)) : NULL;
	if (!a) {
		free(m);
		c->err = -ENOMEM;
		return NULL;
	}
	*arr = a;
	a[(*n)++] = m;
	return m;
}

static void pool_usage(struct fdx_lbp *pool, uint32_t *in_use, uint32_t *max)
{
	struct fdx_lbp_stats ls = {.size = sizeof(ls)};

	if (pool && fdx_lbp_stats(pool, &ls) == 0) {
		*in_use = ls.in_use;
		*max = ls.max;
	}
}

static void on_part(void *ud, struct fdx_partition *p)
{
	struct collect *c = ud;
	struct fdx_partition_stats ps = {.size = sizeof(ps)};
	Fdx__PartitionStats *m =
		push_new(c, (void ***)&c->r->partitions, &c->r->n_partitions, sizeof(*m));

	if (!m)
		return;
	fdx__partition_stats__init(m);
	fdx_partition_stats(p, &ps);
	m->id = strdup(p->id ? p->id : "");
	m->records = ps.records;
	m->bytes = ps.bytes;
	m->buffers = ps.buffers_sent;
	m->backpressured_ns = ps.backpressured_ns;
	m->bytes_copied = ps.bytes_copied;
	m->in_flight = ps.in_flight;
	pool_usage(p->pool, &m->pool_in_use, &m->pool_max);
	m->subpartitions = calloc(p->n ? p->n : 1, sizeof(*m->subpartitions));
	if (!m->id || !m->subpartitions) {
		c->err = -ENOMEM;
		return;
	}
	for (uint32_t i = 0; i < p->n; i++) {
		struct fdx_channel_stats cs = {.size = sizeof(cs)};
		Fdx__SubpartitionStats *x = calloc(1, sizeof(*x));

		if (!x) {
			c->err = -ENOMEM;
			return;
		}
		fdx__subpartition_stats__init(x);
		m->subpartitions[m->n_subpartitions++] = x;
		fdx_partition_channel_stats(p, i, &cs);
		x->index = i;
		x->link = link_of(cs.link);
		x->credit = cs.credit;
		x->backlog = cs.backlog;
		x->in_flight = cs.in_flight;
		x->buffers = cs.buffers_sent;
		x->bytes = cs.bytes_sent;
		x->records = cs.records;
		x->error = cs.error;
		x->rtt_count = cs.rtt_count;
		x->rtt_p50_ns = cs.rtt_p50_ns;
		x->rtt_p99_ns = cs.rtt_p99_ns;
		x->rtt_max_ns = cs.rtt_max_ns;
		x->credit_wire_p50_ns = cs.credit_wire_p50_ns;
		x->credit_wire_p99_ns = cs.credit_wire_p99_ns;
		x->resume_p50_ns = cs.resume_p50_ns;
		x->resume_p99_ns = cs.resume_p99_ns;
	}
}

static void on_gate(void *ud, struct fdx_gate *g)
{
	struct collect *c = ud;
	struct fdx_gate_stats gs = {.size = sizeof(gs)};
	Fdx__GateStats *m = push_new(c, (void ***)&c->r->gates, &c->r->n_gates, sizeof(*m));

	if (!m)
		return;
	fdx__gate_stats__init(m);
	fdx_gate_stats(g, &gs);
	m->gate = g->id;
	m->channels_open = gs.channels_open;
	m->exclusive = g->exclusive;
	m->floating = g->floating;
	m->floating_free = gs.floating_free;
	m->held = gs.held;
	m->records = gs.records;
	m->buffers = gs.buffers_received;
	m->bytes = gs.bytes_received;
	m->bytes_copied = gs.bytes_copied;
	pool_usage(g->pool, &m->pool_in_use, &m->pool_max);
	m->channels = calloc(g->n ? g->n : 1, sizeof(*m->channels));
	if (!m->channels) {
		c->err = -ENOMEM;
		return;
	}
	for (uint32_t i = 0; i < g->n; i++) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};
		Fdx__InputChannelStats *x = calloc(1, sizeof(*x));

		if (!x) {
			c->err = -ENOMEM;
			return;
		}
		fdx__input_channel_stats__init(x);
		m->channels[m->n_channels++] = x;
		fdx_gate_channel_stats(g, i, &cs);
		x->index = i;
		x->link = link_of(cs.link);
		x->exclusive = cs.exclusive;
		x->inplace = cs.inplace;
		x->floating = cs.floating;
		x->backlog = cs.backlog;
		x->held = cs.held;
		x->unannounced = cs.unannounced;
		x->buffers = cs.buffers_received;
		x->bytes = cs.bytes_received;
		x->error = cs.error;
		x->hold_p50_ns = cs.hold_p50_ns;
		x->hold_p99_ns = cs.hold_p99_ns;
		x->credit_wait_p50_ns = cs.credit_wait_p50_ns;
		x->credit_wait_p99_ns = cs.credit_wait_p99_ns;
		x->one_way_p50_ns = cs.one_way_p50_ns;
		x->one_way_p99_ns = cs.one_way_p99_ns;
	}
}

int fdx__stats_fill(struct fdx_exchange *ex, Fdx__StatsReply *r)
{
	struct collect c = {.r = r};
	struct fdx__dp *dp = fdx__exchange_dp(ex);

	r->time_ns = fdx__now_ns();
	r->pid = (uint32_t)getpid();
	if (dp)
		fdx__dp_visit(dp, on_part, on_gate, &c);
	if (c.err)
		fdx__stats_clear(r);
	return c.err;
}

void fdx__stats_clear(Fdx__StatsReply *r)
{
	for (size_t i = 0; i < r->n_partitions; i++) {
		Fdx__PartitionStats *m = r->partitions[i];

		for (size_t k = 0; k < m->n_subpartitions; k++)
			free(m->subpartitions[k]);
		free(m->subpartitions);
		free(m->id);
		free(m);
	}
	free(r->partitions);
	r->partitions = NULL;
	r->n_partitions = 0;
	for (size_t i = 0; i < r->n_gates; i++) {
		Fdx__GateStats *m = r->gates[i];

		for (size_t k = 0; k < m->n_channels; k++)
			free(m->channels[k]);
		free(m->channels);
		free(m);
	}
	free(r->gates);
	r->gates = NULL;
	r->n_gates = 0;
}
