/* SPDX-License-Identifier: MIT */
/*
 * The tcp link: producer and consumer on different hosts (or asked for).
 * BUFFER frames carry the slice's bytes after the header, sent straight from
 * the producer's region and received straight into one of the gate's own
 * segments; EVENT and the other control frames are batched as on shm
 * (fdx__conn_control()).
 *
 * Locking: everything here runs with dp->lock held: on the loop thread, but
 * for the CLOSE frames batched by a thread removing a partition.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <fdx/error.h>
#include <fdx/gate.h>
#include <fdx/partition.h>

#include "../runtime/local_buffer_pool.h"
#include "dataplane_private.h"

/* ---- sending ------------------------------------------------------------- */

/* A BUFFER frame: its header and the slice's bytes, batched on the data connection. */
static int tcp_buffer(struct fdx__sub *s, uint32_t seg, uint64_t off, uint32_t len, uint32_t seq,
		      uint32_t backlog)
{
	struct fdx__conn *c = s->conn;
	struct txb *b = &c->b[c->fill];
	struct fdx__dhdr h;
	struct txpart *pt;

	fdx__dhdr_init(&h, s, FDX__DH_BUFFER);
	h.seq = htole32(seq);
	h.len = htole32(len);
	h.backlog = htole32(backlog);
	if (fdx__txb_hdr(b, &h) < 0)
		return -ENOMEM;
	pt = fdx__txb_part(b);
	if (!pt) {
		b->np--; /* the header goes too */
		b->nh--;
		return -ENOMEM;
	}
	pt->ptr = s->part->region->base + off;
	pt->len = len;
	pt->p = s->part;
	pt->s = s;
	pt->seg = seg;
	atomic_fetch_add_explicit(&s->part->bytes_copied, len, memory_order_relaxed);
	return 0;
}

const struct fdx__link_ops fdx__tcp_link = {FDX_LINK_TCP, 0, tcp_buffer, fdx__conn_control};

/* ---- receiving ----------------------------------------------------------- */

/* The tcp item being received goes nowhere: its segment back to its gate's pool. */
void fdx__tcp_item_drop(struct fdx__conn *c)
{
	if (c->it && c->it->kind == FDX__GI_BUFFER && c->it_gate && c->it_gate->pool)
		fdx_lbp_recycle(c->it_gate->pool, c->it->offset);
	free(c->it);
	c->it = NULL;
	c->it_gate = NULL;
}

/* tcp: a whole header came; take its payload straight into its place. */
void fdx__tcp_header(struct fdx__conn *c)
{
	struct fdx_gate *g = NULL;
	uint64_t opening = 0;
	char why[200];
	int ok, err;

	fdx__dhdr_decode(&c->hdr, c->rx);
	ok = fdx__dhdr_check(c, &c->hdr, &g, &opening, why, sizeof(why));
	if (ok < 0) {
		fdx__conn_kill(c, FDX_EPROTO, why);
		return;
	}
	c->it = NULL;
	if (ok > 0) {
		err = fdx__dhdr_item(c, g, &c->hdr, opening, &c->it);
		if (err == -ENOBUFS) {
			snprintf(
				why, sizeof(why),
				"gate %u has no segment free to receive into (sent beyond credit?)",
				g->id);
			fdx__conn_kill(c, FDX_EPROTO, why);
			return;
		}
		if (err < 0) {
			fdx__conn_kill(c, err, "out of memory");
			return;
		}
	}
	c->it_gate = c->it ? g : NULL;
	if ((c->hdr.type == FDX__DH_BUFFER || c->hdr.type == FDX__DH_EVENT) && c->hdr.len) {
		c->st = RX_PAYLOAD;
		c->rx_len = 0;
		c->need = c->hdr.len;
		/* A closed channel's frame (bounded by fdx__dhdr_check()): read and drop. */
		if (!c->it) {
			c->it = fdx__gitem_new(FDX__GI_ABORT, 0, c->hdr.len);
			if (!c->it) {
				fdx__conn_kill(c, -ENOMEM, "out of memory");
				return;
			}
			c->it->data = c->it->payload;
			c->it->sess = 0;
		}
		fdx__conn_post_recv(c, (uint8_t *)c->it->data, c->need);
		return;
	}
	if (c->it)
		fdx__gate_push(g, c->it);
	c->it = NULL;
	c->it_gate = NULL;
	c->rx_len = 0;
	c->need = HDR_LEN;
	fdx__conn_post_recv(c, c->rx, HDR_LEN);
}

void fdx__tcp_payload_done(struct fdx__conn *c)
{
	struct fdx_gate *g = c->it_gate;

	if (c->it->sess == 0 || !g) {
		fdx__tcp_item_drop(c);
	} else {
		fdx__gate_push(g, c->it);
		c->it = NULL;
		c->it_gate = NULL;
	}
	c->st = RX_HDR;
	c->rx_len = 0;
	c->need = HDR_LEN;
	fdx__conn_post_recv(c, c->rx, HDR_LEN);
}
