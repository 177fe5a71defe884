/* SPDX-License-Identifier: MIT */
/*
 * The local link: a producer and a consumer in this process. A buffer goes
 * to the gate as an item pointing into the partition's region (nothing is
 * copied, no socket); the consumer's credit comes back to the loop through a
 * queue (consumer threads never take dp->lock) and is applied there, to a
 * partition that still exists.
 *
 * Locking: the link ops run with dp->lock held (the loop pumping);
 * fdx__local_connect() takes dp->lock; fdx__local_credit_push() runs on any
 * thread without it; fdx__local_credit_apply() on the loop with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fdx/error.h>
#include <fdx/gate.h>
#include <fdx/partition.h>

#include "dataplane_private.h"

/* Local credit, from a consumer thread to the loop. */
struct lcredit {
	struct fdx__mpsc_node link;
	struct fdx_partition *p;
	struct fdx__sub *s;
	uint32_t added, n;
	uint64_t offs[];
};

/* ---- the sending half (runtime/port.h: struct fdx__link_ops) ------------- */

/* local: the slice goes to the gate of this process as an item; nothing is copied. */
static int local_buffer(struct fdx__sub *s, uint32_t seg, uint64_t off, uint32_t len, uint32_t seq,
			uint32_t backlog)
{
	struct fdx__gitem *it = fdx__gitem_new(FDX__GI_BUFFER, s->gate_channel, 0);

	(void)seg;
	if (!it)
		return -ENOMEM;
	it->link_type = FDX_LINK_LOCAL;
	it->seq = seq;
	it->len = len;
	it->backlog = backlog;
	it->data = s->part->region->base + off;
	it->offset = off;
	it->lpart = s->part;
	it->lsub = s;
	it->sess = FDX__SESS_LOCAL;
	it->opening = s->opening;
	fdx__gate_push(s->lgate, it);
	return 0;
}

static int local_control(struct fdx__sub *s, uint32_t kind, struct fdx__pitem *ev, uint32_t seq,
			 uint32_t backlog)
{
	uint32_t gk = kind == FDX__SEND_EVENT	? FDX__GI_EVENT
		      : kind == FDX__SEND_ABORT ? FDX__GI_ABORT
						: FDX__GI_BACKLOG;
	struct fdx__gitem *gi;

	if (kind == FDX__SEND_CLOSE)
		return 0; /* a local channel closes when its partition goes */
	gi = fdx__gitem_new(gk, s->gate_channel, ev ? ev->len : 0);
	if (!gi) {
		free(ev);
		return -ENOMEM;
	}
	gi->link_type = FDX_LINK_LOCAL;
	gi->sess = FDX__SESS_LOCAL;
	gi->opening = s->opening;
	gi->backlog = backlog;
	gi->seq = seq;
	if (ev) {
		gi->event_type = ev->event_type;
		if (ev->event_type == FDX_EVENT_END_OF_PARTITION)
			fdx__ichan_mark_ended(s->lgate, s->gate_channel);
		gi->flags = ev->flags & FDX_EVENT_PRIORITY;
		gi->len = ev->len;
		memcpy(gi->payload, ev->payload, ev->len);
		gi->data = gi->payload;
		free(ev);
	}
	fdx__gate_push(s->lgate, gi);
	return 0;
}

static const struct fdx__link_ops local_link = {FDX_LINK_LOCAL, 1, local_buffer, local_control};

/* ---- connecting ---------------------------------------------------------- */

/* fdx_partition_connect() to a gate of this process (runtime/port.h). */
int fdx__local_connect(struct fdx__dp *dp, struct fdx_partition *p, struct fdx__sub *s,
		       uint32_t gate, uint32_t gate_channel)
{
	struct fdx_gate *g;
	uint64_t opening;
	int err;

	pthread_mutex_lock(&dp->lock);
	g = fdx__dp_gate_find(dp, gate);
	err = !g || gate_channel >= g->n ? -ENOENT : 0;
	if (!err) {
		/* Its fields first: the consumer's credit reaches s through them. */
		s->lgate = g;
		s->gate = gate;
		s->gate_channel = gate_channel;
		err = fdx__ichan_open(g, gate_channel, FDX__SESS_LOCAL, FDX_LINK_LOCAL, p, s,
				      &opening);
	}
	if (!err) {
		s->opening = opening; /* its items name it */
		fdx__sub_attach(s, &local_link, g->exclusive);
	} else
		s->lgate = NULL;
	pthread_mutex_unlock(&dp->lock);
	if (err)
		return err;
	fdx__dp_ready(dp, s); /* what was emitted before may go now */
	fdx__dp_kick(dp);
	return 0;
}

/* ---- credit from consumer threads ---------------------------------------- */

/* Local credit: applied only to a partition that still exists. */
int fdx__local_credit_apply(struct fdx__dp *dp)
{
	struct fdx__mpsc_node *n;
	int did = 0;

	while ((n = fdx__mpsc_pop_wait(&dp->lcredit))) {
		struct lcredit *lc = (struct lcredit *)n;

		for (struct fdx_partition *p = dp->parts; p; p = p->next)
			if (p == lc->p) {
				uint32_t bad = 0;

				if (fdx__sub_credit(lc->s, lc->added, lc->offs, lc->n, &bad) < 0)
					FDX_LOG_ERR(
						dp->log,
						"partition %s: local credit refused (offset %u)",
						p->id, bad);
				break;
			}
		free(lc);
		did = 1;
	}
	return did;
}

int fdx__local_credit_push(struct fdx__dp *dp, struct fdx_partition *p, struct fdx__sub *s,
			   uint32_t added, const uint64_t *offs, uint32_t n)
{
	struct lcredit *lc = malloc(sizeof(*lc) + (size_t)n * sizeof(uint64_t));

	if (!lc)
		return -ENOMEM;
	lc->p = p;
	lc->s = s;
	lc->added = added;
	lc->n = n;
	if (n)
		memcpy(lc->offs, offs, (size_t)n * sizeof(uint64_t));
	fdx__mpsc_push(&dp->lcredit, &lc->link);
	fdx__dp_kick(dp);
	return 0;
}
