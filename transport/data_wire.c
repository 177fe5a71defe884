/* SPDX-License-Identifier: MIT */
/*
 * The data wire (data_wire.h): the 48-byte little-endian frame header
 * encoded and decoded, and a received header checked before anything is
 * used: the wire here (magic, version, type, lengths, the slice inside one
 * segment of the sender's region, a known gate and channel), the protocol
 * (channel of this peer, next sequence number) in runtime/'s
 * fdx__ichan_accept(). A checked frame becomes a gate item here too.
 *
 * Locking: called by the loop with dp->lock held (the gate list is read).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fdx/error.h>
#include <fdx/gate.h>

#include "../runtime/local_buffer_pool.h"
#include "../runtime/region.h"
#include "dataplane_private.h"

/* ---- encoding ---------------------------------------------------------------- */

void fdx__dhdr_init(struct fdx__dhdr *h, const struct fdx__sub *s, uint32_t type)
{
	memset(h, 0, sizeof(*h));
	h->magic = htole32(FDX__DH_MAGIC);
	h->version = FDX__DH_VERSION;
	h->type = (uint8_t)type;
	h->gate = htole32(s->gate);
	h->gate_channel = htole32(s->gate_channel);
	if (type == FDX__DH_BUFFER) {
		h->credit = htole32(s->stamp.total);
		h->credit_proof = htole32(s->stamp.proof);
	}
}

/* ---- decoding and checking ------------------------------------------------ */

void fdx__dhdr_decode(struct fdx__dhdr *h, const void *raw)
{
	memcpy(h, raw, sizeof(*h));
	h->magic = le32toh(h->magic);
	h->flags = le16toh(h->flags);
	h->gate = le32toh(h->gate);
	h->gate_channel = le32toh(h->gate_channel);
	h->seq = le32toh(h->seq);
	h->len = le32toh(h->len);
	h->offset = le64toh(h->offset);
	h->backlog = le32toh(h->backlog);
	h->event_type = le32toh(h->event_type);
	h->credit = le32toh(h->credit);
	h->credit_proof = le32toh(h->credit_proof);
}

/* The kind of gate item a frame of this type becomes. */
static uint32_t gi_kind(uint32_t type)
{
	return type == FDX__DH_BUFFER  ? FDX__GI_BUFFER
	       : type == FDX__DH_EVENT ? FDX__GI_EVENT
	       : type == FDX__DH_ABORT ? FDX__GI_ABORT
	       : type == FDX__DH_CLOSE ? FDX__GI_CLOSED
				       : FDX__GI_BACKLOG;
}

/*
 * Check a frame header before anything is used: the wire here (magic,
 * lengths, the slice inside the region), the protocol in fdx__ichan_accept().
 * 1 if it is fine (*gp and *opening set), 0 if it is to be dropped (for a
 * channel closed or a gate removed meanwhile: its length was checked all the
 * same; or a CLOSE frame, done), -1 with why set if it is bad.
 */
int fdx__dhdr_check(struct fdx__conn *c, const struct fdx__dhdr *h, struct fdx_gate **gp,
		    uint64_t *opening, char *why, size_t n)
{
	struct fdx_gate *g;
	int ok;

	if (h->magic != FDX__DH_MAGIC || h->version != FDX__DH_VERSION) {
		snprintf(why, n, "not a data frame (magic %#x, version %u)", h->magic, h->version);
		return -1;
	}
	if (h->type < FDX__DH_BUFFER || h->type > FDX__DH_CLOSE) {
		snprintf(why, n, "unknown frame type %u", h->type);
		return -1;
	}
	/* Lengths first: even a frame that will be dropped is read no further than this. */
	if (h->type == FDX__DH_EVENT &&
	    (h->len > FDX_EVENT_PAYLOAD_MAX || h->event_type < FDX_EVENT_WATERMARK ||
	     h->event_type > FDX_EVENT_USER)) {
		snprintf(why, n, "bad event (type %u, %u bytes)", h->event_type, h->len);
		return -1;
	}
	if (h->type != FDX__DH_BUFFER && h->type != FDX__DH_EVENT && h->len) {
		snprintf(why, n, "frame type %u with %u bytes of payload", h->type, h->len);
		return -1;
	}
	if (h->type == FDX__DH_BUFFER && c->link == FDX_LINK_SHM) {
		const struct fdx_region *r = c->map->region;
		uint64_t off = h->offset;
		uint64_t end = r->data_offset + ((uint64_t)r->seg_count << r->seg_shift);

		if (h->len == 0 || off < r->data_offset || off >= end ||
		    (off & (r->seg_size - 1)) + h->len > r->seg_size) {
			snprintf(why, n,
				 "buffer [%#llx, +%u) is not inside one segment of the region",
				 (unsigned long long)off, h->len);
			return -1;
		}
	}
	if (h->type == FDX__DH_BUFFER && c->link == FDX_LINK_TCP &&
	    (h->len == 0 || h->len > FDX_SEG_SIZE_MAX)) {
		snprintf(why, n, "buffer of %u bytes", h->len);
		return -1;
	}
	g = fdx__dp_gate_find(c->dp, h->gate);
	if (!g) {
		for (uint32_t i = 0; i < GONE_GATES; i++)
			if (c->dp->gone_gates[i] == (uint64_t)h->gate + 1)
				return 0; /* removed meanwhile */
	}
	if (!g || h->gate_channel >= g->n) {
		snprintf(why, n, "unknown channel %u of gate %u", h->gate_channel, h->gate);
		return -1;
	}
	if (h->type == FDX__DH_BUFFER && c->link == FDX_LINK_TCP &&
	    (!g->pool || h->len > g->pool->region->seg_size)) {
		snprintf(why, n, "buffer of %u bytes does not fit a segment of gate %u", h->len,
			 g->id);
		return -1;
	}
	ok = fdx__ichan_accept(
		g, h->gate_channel, c->sess, c->link, gi_kind(h->type), h->seq,
		h->type == FDX__DH_EVENT && h->event_type == FDX_EVENT_END_OF_PARTITION,
		(struct fdx__credit_stamp){h->credit, h->credit_proof}, opening, why, n);
	if (ok > 0 && h->type != FDX__DH_CLOSE)
		*gp = g;
	return ok > 0 && h->type == FDX__DH_CLOSE ? 0 : ok;
}

/* A checked frame becomes an item (payload: the event's bytes, or NULL). */
int fdx__dhdr_item(struct fdx__conn *c, struct fdx_gate *g, const struct fdx__dhdr *h,
		   uint64_t opening, struct fdx__gitem **out)
{
	uint32_t kind = gi_kind(h->type);
	struct fdx__gitem *it =
		fdx__gitem_new(kind, h->gate_channel, h->type == FDX__DH_EVENT ? h->len : 0);

	if (!it)
		return -ENOMEM;
	it->link_type = (uint8_t)c->link;
	it->sess = c->sess;
	it->opening = opening;
	it->seq = h->seq;
	it->len = h->len;
	it->backlog = h->backlog;
	it->event_type = h->event_type;
	it->flags = (h->flags & FDX__DH_PRIORITY) ? FDX_EVENT_PRIORITY : 0;
	if (kind == FDX__GI_EVENT)
		it->data = it->payload;
	if (kind == FDX__GI_BUFFER && c->link == FDX_LINK_SHM) {
		it->data = c->map->region->base + h->offset;
		it->offset = h->offset;
		it->map = c->map;
		it->sent_lo = h->event_type; /* the sender's clock, low 32 bits: one host */
		it->sent_set = h->event_type != 0; /* 0: an older sender, no time */
		atomic_fetch_add_explicit(&c->map->refs, 1, memory_order_relaxed);
	} else if (kind == FDX__GI_BUFFER) {
		struct fdx_buf b;

		if (fdx_lbp_try_request(g->pool, &b) < 0) {
			free(it);
			return -ENOBUFS;
		}
		it->offset = b.offset;
		it->data = g->pool->region->base + b.offset;
	}
	*out = it;
	return 0;
}
