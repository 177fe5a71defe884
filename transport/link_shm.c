/* SPDX-License-Identifier: MIT */
/*
 * The shm link: producer and consumer on one host. The consumer maps the
 * producer's region (announced in the hello, its memfd passed with it);
 * BUFFER frames on the data socket are then descriptors {offset, len} of a
 * slice of it, nothing else moves. EVENT and the other control frames are
 * batched as on tcp (fdx__conn_control()).
 *
 * Locking: everything here runs with dp->lock held: on the loop thread, but
 * for the CLOSE frames batched by a thread removing a partition.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fdx/error.h>
#include <fdx/gate.h>

#include "../runtime/region.h"
#include "dataplane_private.h"
#include "region_share.h"

/* ---- sending ------------------------------------------------------------- */

/* A BUFFER frame: the descriptor {offset, len} of the slice, batched on the data connection. */
static int shm_buffer(struct fdx__sub *s, uint32_t seg, uint64_t off, uint32_t len, uint32_t seq,
		      uint32_t backlog)
{
	struct fdx__conn *c = s->conn;
	struct txb *b = &c->b[c->fill];
	struct fdx__dhdr h;

	(void)seg;
	fdx__dhdr_init(&h, s, FDX__DH_BUFFER);
	h.seq = htole32(seq);
	h.len = htole32(len);
	h.backlog = htole32(backlog);
	h.offset = htole64(off);
	/* Odd: never 0, what an older sender leaves there (then the way is not timed). */
	h.event_type = htole32(s->sent_ns ? (uint32_t)s->sent_ns | 1u : 0);
	if (fdx__txb_hdr(b, &h) < 0)
		return -ENOMEM;
	return 0;
}

const struct fdx__link_ops fdx__shm_link = {FDX_LINK_SHM, 1, shm_buffer, fdx__conn_control};

/* ---- receiving ----------------------------------------------------------- */

/*
 * The rest of an shm hello: the region's announcement came (its memfd in
 * c->hello_fd). The region is mapped and frames may come.
 */
void fdx__shm_map_region(struct fdx__conn *c)
{
	struct fdx__dp *dp = c->dp;
	struct fdx__rmap *m = calloc(1, sizeof(*m));
	int err;

	if (!m) {
		fdx__conn_kill(c, -ENOMEM, "out of memory");
		return;
	}
	err = fdx__region_attach_announced(c->hello_fd, c->rx + HELLO_LEN, dp->log, &m->region);
	close(c->hello_fd);
	c->hello_fd = -1;
	if (err < 0) {
		free(m);
		fdx__conn_kill(c, err, "its region was refused");
		return;
	}
	atomic_init(&m->refs, 1);
	c->map = m;
	c->st = RX_SHM;
	c->hello_by = 0;
	c->rx_len = 0;
	c->op_recv.kind = OP_RECV;
	FDX_LOG_INFO(dp->log, "exchange %s: %s: shm data socket up, region of %llu bytes mapped",
		     fdx__exchange_tm_id(dp->ex), c->name,
		     (unsigned long long)fdx_region_size(m->region));
	fdx__conn_post_recv(c, c->rx, RX_CAP);
}

/* shm: every whole frame in rx. */
void fdx__shm_parse(struct fdx__conn *c)
{
	uint32_t pos = 0;
	char why[200];

	while (!c->dead && c->rx_len - pos >= HDR_LEN) {
		struct fdx__dhdr h;
		struct fdx_gate *g = NULL;
		struct fdx__gitem *it;
		uint64_t opening = 0;
		uint32_t need;
		int ok;

		fdx__dhdr_decode(&h, c->rx + pos);
		need = HDR_LEN +
		       (h.type == FDX__DH_EVENT && h.len <= FDX_EVENT_PAYLOAD_MAX ? h.len : 0);
		if (c->rx_len - pos < need)
			break;
		ok = fdx__dhdr_check(c, &h, &g, &opening, why, sizeof(why));
		if (ok < 0) {
			fdx__conn_kill(c, FDX_EPROTO, why);
			return;
		}
		if (ok > 0) {
			if (fdx__dhdr_item(c, g, &h, opening, &it) < 0) {
				fdx__conn_kill(c, -ENOMEM, "out of memory");
				return;
			}
			if (h.type == FDX__DH_EVENT)
				memcpy(it->payload, c->rx + pos + HDR_LEN, h.len);
			fdx__gate_push(g, it);
		}
		pos += need;
	}
	memmove(c->rx, c->rx + pos, c->rx_len - pos);
	c->rx_len -= pos;
	if (!c->dead)
		fdx__conn_post_recv(c, c->rx + c->rx_len, RX_CAP - c->rx_len);
}
