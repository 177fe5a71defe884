/* SPDX-License-Identifier: MIT */
/*
 * The local link's sending half: producer and consumer in this process. A
 * buffer goes to the gate as an item pointing into the partition's region
 * (no socket, nothing copied); its credit and offset come back by the port's
 * local_credit (input_gate.c's local recycler). Called by fdx__sub_pump() on
 * the sender's thread; connecting a local channel is the transport's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fdx/gate.h>
#include <fdx/partition.h>

#include "input_gate.h"
#include "result_partition.h"

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
	it->lserial = s->part->serial;
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

const struct fdx__link_ops fdx__local_link = {FDX_LINK_LOCAL, 1, local_buffer, local_control};
