/* SPDX-License-Identifier: MIT */
/*
 * The data wire: every frame of a data socket starts with this fixed
 * 40-byte little-endian header; never protobuf. A data socket opens with
 * HELLO + the token the control stream gave (+ on shm, the region's
 * announcement with its memfd). Then shm BUFFER frames are descriptors
 * {offset, len} of a slice of the sender's region; tcp BUFFER frames carry
 * the payload; EVENT frames carry their payload on both.
 */
#ifndef FDX_TRANSPORT_DATA_WIRE_H
#define FDX_TRANSPORT_DATA_WIRE_H

#include <stdint.h>

#define FDX__DH_MAGIC 0x44584446u /* "FDXD" */
#define FDX__DH_VERSION 1u
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
	uint32_t event_type; /* EVENT: enum fdx_event_type; HELLO: the link */
};

_Static_assert(sizeof(struct fdx__dhdr) == 40, "data header is wire format");

#endif /* FDX_TRANSPORT_DATA_WIRE_H */
