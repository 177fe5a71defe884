/* SPDX-License-Identifier: MIT */
/*
 * What the credit-based protocol (this directory) needs from a transport,
 * and nothing more: the protocol calls down through these tables and never
 * names a transport function; the transport layer fills them in (its io_uring
 * loop), and a test fills them with a fake (tests/fake_transport.c) so that
 * the protocol runs without sockets, gRPC or io_uring.
 *
 * Every struct fdx_exchange starts with a struct fdx__port (the transport
 * asserts it): a partition or gate created on an exchange reaches its
 * transport through fdx__port_of().
 */
#ifndef FDX_RUNTIME_PORT_H
#define FDX_RUNTIME_PORT_H

#include <stdint.h>

#include "log.h"

struct fdx_exchange;
struct fdx_gate;
struct fdx_partition;
struct fdx__port;
struct fdx__pitem;
struct fdx__sub;

struct fdx__port_ops {
	/* ---- producer side ---- */
	/* The sender may look at p's subpartitions from now on: 0 or -errno. */
	int (*partition_attach)(struct fdx__port *pt, struct fdx_partition *p);
	/*
	 * The sender lets go of p (p->closing is set): what is still queued on
	 * its subpartitions is the caller's. Each channel with nothing in flight
	 * (fdx__sub_drained()) is closed now (a CLOSE after its data). 0: all
	 * were, nothing of p is touched after this returns. 1: the transport
	 * keeps p: the other channels stay open, so that their consumers hand
	 * back what they hold; each is closed once drained, and once p is
	 * abandoned and all are closed the transport frees p with
	 * fdx__part_release().
	 */
	int (*partition_detach)(struct fdx__port *pt, struct fdx_partition *p);
	/* fdx_partition_connect() below the protocol: find the gate, open the channel, attach the link. */
	int (*connect)(struct fdx__port *pt, struct fdx_partition *p, uint32_t sub,
		       const char *addr, uint32_t gate, uint32_t gate_channel, uint32_t link,
		       int timeout_ms);
	/* s has something for the sender (items, a flush, credit, a failure). Any thread. */
	void (*ready)(struct fdx__port *pt, struct fdx__sub *s);
	/* Have the sender look at what is ready soon (it may sleep). Any thread. */
	void (*kick)(struct fdx__port *pt);

	/* ---- consumer side ---- */
	/* Producers may open g's channels from now on: 0, -EEXIST (id taken) or -errno. */
	int (*gate_attach)(struct fdx__port *pt, struct fdx_gate *g);
	/* No producer reaches g after this returns; its open channels fail at their producers. */
	void (*gate_detach)(struct fdx__port *pt, struct fdx_gate *g);
	/*
	 * Channel ch of g, in its opening (sess, opening), has credit in its
	 * outbox (credit_outbox.h): the transport takes it with
	 * fdx__outbox_take() and sends it to the producer as soon as its
	 * control stream can. 0; -ENOENT if that opening is over; -ENOMEM
	 * (call again later).
	 */
	int (*announce)(struct fdx__port *pt, struct fdx_gate *g, uint32_t ch, uint64_t sess,
			uint64_t opening);
	/*
	 * The same for a producer in this process (a local link): applied by
	 * the sender, and only if p still exists (p, and its serial: another
	 * partition may live at p's address since). 0 or -ENOMEM.
	 */
	int (*local_credit)(struct fdx__port *pt, struct fdx_partition *p, uint64_t serial,
			    struct fdx__sub *s, uint32_t added, const uint64_t *offs, uint32_t n);
	/* Channel ch of g ends here (if sess still has it open); its producer is told code and msg. */
	void (*drop_input)(struct fdx__port *pt, struct fdx_gate *g, uint32_t ch, uint64_t sess,
			   int code, const char *msg);
};

struct fdx__port {
	const struct fdx__port_ops *ops;
	void *ctx; /* the transport's */
	struct fdx__log *log;
	const char *address; /* the exchange's own address (a local peer's) */
};

static inline struct fdx__port *fdx__port_of(struct fdx_exchange *ex)
{
	return (struct fdx__port *)(void *)ex;
}

/*
 * The sending half of a link (local, shm, tcp), filled in by the transport.
 * fdx__sub_pump() calls it on the sender's thread, in the channel's order,
 * only as the channel's credit allows.
 */
enum fdx__send_kind {
	FDX__SEND_EVENT = 1, /* ev: an event item, the link's from now on (free() it) */
	FDX__SEND_ABORT = 2, /* the record being spanned is withdrawn */
	FDX__SEND_BACKLOG = 3, /* the backlog only: the sender has no credit */
	FDX__SEND_CLOSE = 4, /* the channel's last frame: the producer closed it */
};

struct fdx__link_ops {
	uint32_t link; /* enum fdx_link */
	/* The slice's offset travels back with its credit (shm, local): the ledger records it. */
	int offsets_come_back;
	/*
	 * A slice [off, off + len) of the partition's region, sequence seq: it
	 * holds one reference on segment seg, the link's to drop
	 * (fdx__part_unref()) once the bytes need not stay (tcp: written; shm,
	 * local: handed back). 0, or -ENOMEM: the channel fails.
	 */
	int (*buffer)(struct fdx__sub *s, uint32_t seg, uint64_t off, uint32_t len, uint32_t seq,
		      uint32_t backlog);
	/* kind is one of enum fdx__send_kind; seq is meaningless for BACKLOG. */
	int (*control)(struct fdx__sub *s, uint32_t kind, struct fdx__pitem *ev, uint32_t seq,
		       uint32_t backlog);
};

#endif /* FDX_RUNTIME_PORT_H */
