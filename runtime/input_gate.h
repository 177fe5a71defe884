/* SPDX-License-Identifier: MIT */
/*
 * The consumer side of the protocol: an input gate of input channels
 * (input_gate.c: next/release and the credit it hands back, exclusive and
 * floating; input_channel.c: a channel's openings, the check of what its
 * producer sends, and the reassembly of spanning records).
 *
 * Items (buffers, events, channel news) come from the transport's threads
 * (the loop, the completion-queue thread) through lock-free queues (q, prio);
 * the gate's one consumer thread owns every credit decision.
 */
#ifndef FDX_RUNTIME_INPUT_GATE_H
#define FDX_RUNTIME_INPUT_GATE_H

#include <stddef.h>
#include <stdint.h>

#include <fdx/gate.h>

#include "atomic.h"
#include "credit_outbox.h"
#include "log.h"
#include "mpsc_queue.h"
#include "port.h"
#include "region.h"

struct fdx_partition;
struct fdx__sub;

/* An input channel's part of the credit loop, timed. */
struct fdx__gchan_timing {
	struct fdx__hist one_way; /* a buffer sent by a producer on this host -> at the gate */
	struct fdx__hist hold; /* a buffer arrived at the gate -> released by the consumer */
	struct fdx__hist wait; /* released -> its credit written to the producer (the oldest) */
};

enum fdx__gi_kind {
	FDX__GI_BUFFER = 1,
	FDX__GI_EVENT = 2,
	FDX__GI_FAILED = 3,
	FDX__GI_OPENED = 4, /* internal: the channel opened (credit starts) */
	FDX__GI_ABORT = 5, /* internal: drop the record being reassembled */
	FDX__GI_CLOSED = 6, /* internal: the producer closed it */
	FDX__GI_BACKLOG = 7, /* internal: the producer's backlog (it has no credit) */
};

/* A shm peer's region, mapped read-only; freed with its last view. */
struct fdx__rmap {
	_Atomic uint32_t refs;
	struct fdx_region *region;
};

void fdx__rmap_put(struct fdx__rmap *m);

/* An item from the transport to the gate's consumer. */
struct fdx__gitem {
	struct fdx__mpsc_node link;
	uint8_t kind;
	uint8_t link_type; /* enum fdx_link */
	uint16_t flags; /* FDX_EVENT_PRIORITY */
	uint32_t ch;
	uint32_t seq;
	uint32_t len;
	uint32_t backlog;
	uint32_t event_type;
	int32_t error;
	uint16_t released;
	uint16_t seg_back; /* tcp: its segment went back to the gate's pool already */
	uint32_t abort_before; /* drop the channel's partial record before this buffer's bytes */
	const uint8_t *data;
	uint64_t
		offset; /* what to hand back: shm the sender's offset, tcp ours, local the slice's */
	struct fdx__rmap *map; /* shm */
	struct fdx_partition *lpart; /* local */
	uint64_t
		lserial; /* local: lpart's serial (it may be gone: its credit is matched by both) */
	struct fdx__sub *lsub;
	uint64_t sess;
	uint64_t opening; /* which opening of the channel it belongs to */
	uint64_t t_arrive; /* BUFFER: when it reached the gate (ns) */
	uint32_t sent_lo; /* BUFFER: the low 32 bits of when it was sent, if sent_set */
	uint32_t sent_set; /* a producer on this host said when it sent it */
	char msg[192];
	uint8_t payload[];
};

#define FDX__SESS_LOCAL 1u /* the session id of local channels; real ones start at 2 */
#define FDX__SESS_OPENING UINT64_MAX /* a channel's sess while an opening is set up */

struct fdx__gchan {
	/* Shared: set by the transport's threads, read by the loop. */
	_Atomic uint64_t sess; /* the session that opened it, 0 if not open */
	_Atomic uint32_t link;
	uint32_t expect_seq; /* loop: the next sequence number of session seq_sess */
	uint64_t seq_sess; /* loop */
	_Atomic uint64_t opening; /* bumped by each opening, before sess is stored (release) */
	uint64_t seq_open; /* loop: the opening seq_sess/expect_seq/rcvd belong to */
	uint64_t opening_seen; /* consumer: the opening of the last OPENED taken */
	uint64_t rcvd; /* loop: buffers received from session seq_sess */
	_Atomic uint32_t eop; /* its END_OF_PARTITION arrived (loop; reset at open) */
	/*
	 * Credit granted to the current opening: the exclusive credit at open
	 * (the cq thread), then what its outbox gave out (fdx__outbox_take()).
	 */
	_Atomic uint64_t granted_total;
	uint64_t claim_ok; /* loop: the last granted total a buffer named with its proof, checked */
	uint32_t abort_next; /* consumer: drop the partial record before the next buffer */
	/* Consumer thread. */
	int open;
	uint64_t sess_seen; /* the session of the current opening */
	uint64_t poisoned; /* a session that broke the record format: its items are dropped */
	uint32_t float_debt; /* tcp: floating credit held back until old views are released */
	uint32_t floating; /* floating credits held */
	uint32_t inplace; /* credit on top of exclusive: its link reads in place (learn_link()) */
	int link_known; /* the opening's first buffer or backlog came */
	uint32_t backlog; /* last announced */
	uint32_t outstanding; /* credit announced, not yet used by a buffer */
	uint32_t pend_added; /* credit added to the outbox since the last flush */
	int dirty, wanting;
	struct fdx__credit_outbox outbox; /* credit and offsets on their way (the only queue) */
	/* Its buffers' hold and its credit's wait, timed from its first opening on (release). */
	_Atomic(struct fdx__gchan_timing *) timing;
	int ended; /* END_OF_PARTITION taken */
	uint8_t *asm_buf; /* reassembly of a spanning record */
	uint32_t asm_len, asm_have, asm_cap;
	int asm_active;
	const struct fdx__recycler *home; /* how its released buffers go home (by link) */
	struct fdx_partition *lpart; /* local */
	uint64_t lserial;
	struct fdx__sub *lsub;
	_Atomic uint32_t queued; /* buffers pushed to the gate, not yet taken by next() */
	/* Statistics. */
	_Atomic uint32_t held, max_held, st_floating, st_backlog, st_unannounced, st_inplace;
	_Atomic uint64_t credits_announced, buffers_received, events_received, bytes_received;
	_Atomic int32_t error;
};

struct fdx_gate {
	struct fdx_exchange *ex;
	struct fdx__port *port;
	struct fdx_lbp *pool;
	struct fdx__log *log;
	uint32_t id;
	uint32_t n;
	uint32_t exclusive;
	uint32_t floating;
	uint32_t floating_free;
	uint32_t inplace; /* per-channel credit of in-place links (0: none) */
	uint32_t inplace_extra; /* inplace - exclusive, or 0 */
	uint32_t max_record;
	struct fdx__credit_key key; /* proves the credit it grants remote producers */
	struct fdx__gchan *ch;
	uint32_t *want; /* FIFO of channels wanting floating credit */
	uint32_t want_head, want_len;
	struct fdx__mpsc q, prio;
	struct fdx__gitem *stash; /* consumer: taken from q, after a priority item */
	int efd;
	_Atomic uint32_t waiting; /* the consumer is about to sleep or armed the fd */
	_Atomic uint32_t closing;
	uint32_t n_dirty;
	uint32_t pend_total;
	uint64_t pend_since; /* when next() first waited owing credit (0: not waiting) */
	int starving; /* credit waits that a producer has none without */
	int short_credit; /* credit waits that is as much as a producer has left */
	uint32_t flush_at; /* quota / 4: credit waiting that goes at once */
	uint64_t quota; /* credit the channels may hold: exclusive, floating, in place */
	uint64_t inplace_sum; /* the in-place credit of the channels that have it */
	uint32_t n_inplace; /* channels that have it */
	_Atomic uint64_t buffers_received, events_received, bytes_received, records;
	_Atomic uint64_t bytes_copied, bytes_reassembled;
	_Atomic uint32_t held, channels_open;
	struct fdx_gate *next; /* in the transport's list */
};

/* ---- input_gate.c ---- */

/* A new item (kind, channel ch, room for payload bytes), zeroed; NULL if out of memory. */
struct fdx__gitem *fdx__gitem_new(uint32_t kind, uint32_t ch, size_t payload);

/* Hand an item to the gate's consumer (any transport thread). */
void fdx__gate_push(struct fdx_gate *g, struct fdx__gitem *it);

/* ---- input_channel.c: a channel's openings, from the transport's threads ---- */

/*
 * A producer opens channel ch: session sess (FDX__SESS_LOCAL with lpart and
 * lsub for one in this process) over link. The channel is taken (a second
 * opener finds it busy), numbered, its OPENED queued, and only then does the
 * loop see the session: nothing of this opening can reach the consumer before
 * its OPENED. 0 with *opening set (a local producer's items name it too),
 * -EBUSY or -ENOMEM.
 */
int fdx__ichan_open(struct fdx_gate *g, uint32_t ch, uint64_t sess, uint32_t link,
		    struct fdx_partition *lpart, struct fdx__sub *lsub, uint64_t *opening);
/* The producer closed it (if sess still has it open): CLOSED follows its last item. */
void fdx__ichan_close(struct fdx_gate *g, uint32_t ch, uint64_t sess);
/*
 * The channel failed (if sess still has it open): one FAILED view per
 * opening. 1 if this call ended the opening, 0 if it was over already.
 */
int fdx__ichan_fail(struct fdx_gate *g, uint32_t ch, uint64_t sess, int err, const char *msg);
/* Whether a producer has it open, or is opening it. */
int fdx__ichan_busy(struct fdx_gate *g, uint32_t ch);
/* Whether its producer ended it (all its data came). */
int fdx__ichan_ended(struct fdx_gate *g, uint32_t ch);
/* A local producer's END_OF_PARTITION went to the gate (a remote one's: fdx__ichan_accept()). */
void fdx__ichan_mark_ended(struct fdx_gate *g, uint32_t ch);

/*
 * The loop: an item of kind (FDX__GI_BUFFER, _EVENT, _ABORT, _BACKLOG or
 * _CLOSED) with sequence seq arrived from session sess over link for channel
 * ch. The protocol's check: the channel is open to that session, the
 * sequence is the next one of this opening (not for a backlog), a buffer is
 * within the credit it was sent under (st, its stamp: within that total,
 * a total granted, proven above the exclusive credit; credit_proof.h). 1 if
 * it is to be taken (*opening set), 0 if it is for a channel closed
 * meanwhile (drop it), -1 with why set if the producer broke the protocol.
 * A CLOSED that passes closes the channel.
 */
int fdx__ichan_accept(struct fdx_gate *g, uint32_t ch, uint64_t sess, uint32_t link, uint32_t kind,
		      uint32_t seq, int is_end, struct fdx__credit_stamp st, uint64_t *opening,
		      char *why, size_t n);

/* Tests only (NULL otherwise): see input_gate.c's pop_item(). A clearly marked seam. */
extern void (*fdx__seam_gate_between_pops)(struct fdx_gate *g);

#endif /* FDX_RUNTIME_INPUT_GATE_H */
