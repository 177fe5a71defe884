/* SPDX-License-Identifier: MIT */
/*
 * The local link: a producer and a consumer in this process. Its sending half
 * is runtime/local_link.c (a buffer goes to the gate as an item pointing into
 * the partition's region: no socket, nothing copied); here, connecting, and
 * the consumer's credit coming back to the loop through a queue (consumer
 * threads never take dp->lock), applied there to a partition that still
 * exists.
 *
 * Locking: fdx__local_connect() takes dp->lock; fdx__local_credit_push() runs on any
 * thread without it; fdx__local_credit_apply() on the loop with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fdx/error.h>
#include <fdx/gate.h>
#include <fdx/partition.h>

#include "../runtime/clock.h"
#include "dataplane_private.h"

/* Local credit, from a consumer thread to the loop. */
struct lcredit {
	struct fdx__mpsc_node link;
	struct fdx_partition *p;
	uint64_t serial; /* p's: p may be gone, and another live at its address */
	struct fdx__sub *s;
	uint32_t added, n;
	uint64_t sent_ns; /* when the consumer handed it over */
	uint64_t offs[];
};

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
		fdx__sub_prepare(s, &fdx__local_link);
		err = fdx__ichan_open(g, gate_channel, FDX__SESS_LOCAL, FDX_LINK_LOCAL, p, s,
				      &opening);
	}
	if (!err) {
		s->opening = opening; /* its items name it */
		fdx__sub_attach(s, &fdx__local_link, g->exclusive);
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
			if (p == lc->p && p->serial == lc->serial) {
				uint32_t bad = 0;

				if (fdx__sub_credit(lc->s, lc->added, lc->offs, lc->n, lc->sent_ns,
						    NULL, &bad) < 0)
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

int fdx__local_credit_push(struct fdx__dp *dp, struct fdx_partition *p, uint64_t serial,
			   struct fdx__sub *s, uint32_t added, const uint64_t *offs, uint32_t n)
{
	struct lcredit *lc = malloc(sizeof(*lc) + (size_t)n * sizeof(uint64_t));

	if (!lc)
		return -ENOMEM;
	lc->p = p;
	lc->serial = serial;
	lc->s = s;
	lc->added = added;
	lc->n = n;
	lc->sent_ns = fdx__now_ns();
	if (n)
		memcpy(lc->offs, offs, (size_t)n * sizeof(uint64_t));
	fdx__mpsc_push(&dp->lcredit, &lc->link);
	fdx__dp_kick(dp);
	return 0;
}
