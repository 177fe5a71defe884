/* SPDX-License-Identifier: MIT */
/*
 * The data wire: every frame of a data socket starts with this fixed
 * 48-byte little-endian header; never protobuf. A data socket opens with
 * HELLO + the token the control stream gave (+ on shm, the region's
 * announcement with its memfd). Then shm BUFFER frames are descriptors
 * {offset, len} of a slice of the sender's region; tcp BUFFER frames carry
 * the payload; EVENT frames carry their payload on both.
 */
#ifndef FDX_TRANSPORT_DATA_WIRE_H
#define FDX_TRANSPORT_DATA_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define FDX__DH_MAGIC 0x44584446u /* "FDXD" */
#define FDX__DH_VERSION 2u /* 2: BUFFER frames carry their credit's stamp */
#define FDX__TOKEN_LEN 16u

enum fdx__dh_type {
	FDX__DH_HELLO = 1, /* first frame of a data socket: token (+ region on shm) */
	FDX__DH_BUFFER = 2, /* shm: a slice of the sender's region; tcp: payload follows */
	FDX__DH_EVENT = 3, /* payload follows */
	FDX__DH_BACKLOG = 4, /* the backlog only (the sender has no credit) */
	FDX__DH_ABORT = 5, /* the record being spanned is withdrawn */
	FDX__DH_CLOSE = 6, /* the channel's last frame: the producer closed it */
};

#define FDX__DH_PRIORITY 0x1u

struct fdx__dhdr {
	uint32_t magic;
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t gate;
	uint32_t gate_channel;
	uint32_t seq; /* per channel, every item but BACKLOG */
	uint32_t len; /* slice or payload length */
	uint64_t offset; /* shm: the slice's offset in the sender's region */
	uint32_t backlog; /* buffers queued at the sender after this one */
	/*
	 * EVENT: enum fdx_event_type; HELLO: the link; shm BUFFER: the low 32
	 * bits of the sender's CLOCK_MONOTONIC in ns as it sent it, odd (0: not
	 * given; one host, one clock: the receiver times the descriptor's way;
	 * a statistic only).
	 */
	uint32_t event_type;
	/*
	 * BUFFER: the credit it was sent under (runtime/credit_proof.h): the low
	 * 32 bits of the granted total the consumer last sent, and its proof.
	 */
	uint32_t credit;
	uint32_t credit_proof;
};

_Static_assert(sizeof(struct fdx__dhdr) == 48, "data header is wire format");

/* ---- data_wire.c: the header encoded, decoded, checked (on the loop, dp->lock held) --- */

struct fdx__conn;
struct fdx__sub;
struct fdx__gitem;
struct fdx_gate;

/* h: a header of type (one of enum fdx__dh_type) on s's channel, little-endian, the rest 0. */
void fdx__dhdr_init(struct fdx__dhdr *h, const struct fdx__sub *s, uint32_t type);
/* h: the header at raw (any alignment) in host order; nothing is checked. */
void fdx__dhdr_decode(struct fdx__dhdr *h, const void *raw);
/*
 * Check a frame header received on c before anything is used: the wire here
 * (magic, lengths, the slice inside the region), the protocol in
 * fdx__ichan_accept(). 1 if it is fine (*gp and *opening set), 0 if it is to
 * be dropped (for a channel closed or a gate removed meanwhile: its length was
 * checked all the same; or a CLOSE frame, done), -1 with why set if it is bad.
 */
int fdx__dhdr_check(struct fdx__conn *c, const struct fdx__dhdr *h, struct fdx_gate **gp,
		    uint64_t *opening, char *why, size_t n);
/*
 * A checked frame becomes an item for g (its payload: the event's bytes, to be
 * filled, or for a tcp buffer a segment of g's pool): 0, -ENOMEM, or -ENOBUFS
 * if g's pool has no segment free.
 */
int fdx__dhdr_item(struct fdx__conn *c, struct fdx_gate *g, const struct fdx__dhdr *h,
		   uint64_t opening, struct fdx__gitem **out);

#endif /* FDX_TRANSPORT_DATA_WIRE_H */
