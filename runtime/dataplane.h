/* SPDX-License-Identifier: MIT */
/*
 * Data-plane internals shared by the producer (runtime/partition.c), the
 * consumer (runtime/gate.c) and the exchange's io_uring loop
 * (transport/dataplane.c). No sockets here.
 *
 * Producer, per subpartition:
 * - The task thread owns the current segment (cur, wpos). After each whole
 *   record it publishes pub = (segment + 1) << 32 | committed bytes (P1), so
 *   that the loop can send what was written so far (a flush or the buffer
 *   timeout) while the task keeps filling the same segment. A full segment
 *   goes to the loop as an item (q), the writer's reference with it.
 * - The loop owns the items it took (head/tail), the open segment it sends
 *   slices of (open_seg, open_pos), credit spent and the sequence numbers.
 *   A slice [open_pos, end) of a segment costs one credit and holds one
 *   reference on the segment; the segment goes back to the pool when the
 *   writer's and every slice's reference are gone (refs).
 * - Credit arrives as granted (added by the cq thread, or by a local gate's
 *   consumer thread); available = granted - spent.
 *
 * Consumer, per gate: items (buffers, events, channel news) come from the loop
 * and the cq thread through lock-free queues (q, prio); the consumer thread
 * owns every credit decision and the reassembly of spanning records.
 */
#ifndef FDX_RUNTIME_DATAPLANE_H
#define FDX_RUNTIME_DATAPLANE_H

#include <stdalign.h>
#include <stdint.h>

#include <fdx/gate.h>
#include <fdx/partition.h>

#include "atomic.h"
#include "log.h"
#include "mpsc_queue.h"
#include "region.h"

/* ---- the data wire: fixed little-endian header, never protobuf --------- */

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

/* ---- producer ---------------------------------------------------------- */

struct fdx__dp;
struct fdx__conn;
struct fdx_gate;

enum fdx__pitem_kind { FDX__IT_SEG = 1, FDX__IT_EVENT = 2, FDX__IT_ABORT = 3 };

/* An item from the task thread to the loop. */
struct fdx__pitem {
	struct fdx__mpsc_node link;
	struct fdx__pitem *next; /* in the loop's list */
	uint8_t kind;
	uint8_t pad;
	uint16_t flags; /* FDX_EVENT_PRIORITY */
	uint32_t seg; /* SEG: segment index */
	uint32_t end; /* SEG: bytes written when finished */
	uint32_t event_type;
	uint32_t len; /* EVENT: payload length */
	/* EVENT (not priority): first send what was written of segment flush_seg, up to flush_end. */
	int64_t flush_seg;
	uint32_t flush_end;
	uint8_t payload[];
};

struct fdx__sub {
	/* Task thread. */
	alignas(FDX_CACHELINE) int64_t cur; /* current segment index, -1 if none */
	uint8_t *cur_ptr;
	uint32_t wpos;
	uint32_t reserved; /* reserve(): bytes reserved, 0 if none */
	int reserving;
	int ended; /* END_OF_PARTITION sent */
	uint64_t records, bytes;
	uint64_t n_pushed;
	uint32_t unkicked; /* full buffers queued since the loop was last woken */
	uint32_t kick_batch; /* wake the loop every so many (set at connect) */

	/* Shared. */
	alignas(FDX_CACHELINE) _Atomic uint64_t pub; /* P1: (seg + 1) << 32 | committed */
	_Atomic uint32_t flush_req;
	_Atomic uint32_t connected; /* set (release) once the loop may pump it */
	_Atomic uint64_t granted; /* credit granted in total, initial included */
	_Atomic uint64_t returned; /* buffers handed back (their credit slot came back) */
	_Atomic int32_t error; /* why the channel failed, 0 if it did not */
	_Atomic uint32_t end_sent; /* loop: its END_OF_PARTITION went to the link */
	_Atomic uint64_t lost; /* buffers taken back from a failed consumer, undelivered */
	_Atomic uint64_t buffers_sent, events_sent, bytes_sent;
	_Atomic uint32_t backlog; /* for the statistics */
	_Atomic uint32_t max_in_flight;
	_Atomic uint64_t records_pub, bytes_pub;
	_Atomic uint64_t pushed; /* items pushed on q so far (task: store; loop: load) */
	struct fdx__mpsc_node ready_node; /* in the loop's queue of subpartitions to pump */
	_Atomic uint32_t ready; /* 1 while in that queue */
	struct fdx__mpsc q; /* task -> loop */

	/* Loop thread. */
	alignas(FDX_CACHELINE) struct fdx__pitem *head, *tail;
	uint32_t n_segs; /* SEG items in the list */
	int64_t open_seg; /* segment being sliced, -1 if none */
	uint32_t open_pos;
	uint64_t spent;
	uint32_t seq;
	uint32_t last_backlog;
	int flush_pending;
	uint64_t drained; /* items taken off q so far */
	uint32_t link; /* enum fdx_link */
	uint32_t chan; /* the exchange's channel id (shm, tcp) */
	uint32_t gate, gate_channel;
	struct fdx__conn *conn; /* shm, tcp */
	struct fdx_gate *lgate; /* local */
	uint32_t index;
	struct fdx_partition *part;
};

struct fdx_partition {
	struct fdx_exchange *ex;
	struct fdx__dp *dp;
	struct fdx_lbp *pool;
	const struct fdx_region *region;
	struct fdx__log *log;
	char *id;
	uint32_t n;
	uint32_t seg_size;
	uint32_t max_record;
	uint32_t timeout_ms;
	int flush_every; /* buffer timeout 0 */
	_Atomic uint32_t *refs; /* per segment of the region */
	struct fdx__pitem **seg_items; /* per segment: its preallocated SEG item */
	struct fdx__sub *subs;
	_Atomic uint64_t backpressured_ns;
	_Atomic uint64_t bytes_copied;
	_Atomic uint32_t in_flight; /* buffers sent, not handed back (tcp: not yet written) */
	_Atomic uint32_t queued; /* items pushed by the task, not yet done by the loop */
	_Atomic uint32_t closing;
	int64_t resv_sub; /* the subpartition with a reservation, -1 if none */
	uint64_t next_flush; /* loop: when the buffer timeout strikes next (ns; 0 = not set) */
	struct fdx_partition *next; /* in the dp's list, under its lock */
};

/* Drop one reference on segment seg; the last one recycles it. Any thread. */
void fdx__part_unref(struct fdx_partition *p, uint32_t seg);

/*
 * Credit for sub: added more, and (if off is not 0) the slice at off handed
 * back. From the cq thread (shm) or a local gate's consumer thread. Wakes the loop.
 */
void fdx__part_credit(struct fdx_partition *p, struct fdx__sub *s, uint32_t added,
		      const uint64_t *offs, uint32_t n);

/* The channel of sub failed: emits fail with -EPIPE from now on. */
void fdx__part_fail(struct fdx_partition *p, struct fdx__sub *s, int err, const char *msg);

/* ---- consumer ---------------------------------------------------------- */

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

/* An item from the loop or the cq thread to the gate's consumer. */
struct fdx__gitem {
	struct fdx__mpsc_node link;
	uint8_t kind;
	uint8_t link_type; /* enum fdx_link */
	uint16_t flags;
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
	struct fdx__sub *lsub;
	uint64_t sess;
	uint64_t opening; /* OPENED, CLOSED: which opening of the channel (0: local) */
	char msg[192];
	uint8_t payload[];
};

#define FDX__SESS_LOCAL 1u /* the session id of local channels; real ones start at 2 */
#define FDX__SESS_OPENING UINT64_MAX /* a channel's sess while a remote opening is set up */

struct fdx__gchan {
	/* Shared: set by the cq thread (or a local connect), read by the loop. */
	_Atomic uint64_t sess; /* the session that opened it, 0 if not open */
	_Atomic uint32_t link;
	uint32_t expect_seq; /* loop: the next sequence number of session seq_sess */
	uint64_t seq_sess; /* loop */
	_Atomic uint64_t opening; /* bumped by each opening, before sess is stored (release) */
	uint64_t seq_open; /* loop: the opening seq_sess/expect_seq/rcvd belong to */
	uint64_t opening_seen; /* consumer: the opening of the last OPENED taken */
	uint64_t rcvd; /* loop: buffers received from session seq_sess */
	_Atomic uint32_t eop; /* its END_OF_PARTITION arrived (loop; reset at open) */
	/* Credit granted to the current opening (the cq thread at open, then the consumer). */
	_Atomic uint64_t granted_total;
	uint32_t abort_next; /* consumer: drop the partial record before the next buffer */
	/* Consumer thread. */
	int open;
	uint64_t sess_seen; /* the session of the current opening */
	uint64_t poisoned; /* a session that broke the record format: its items are dropped */
	uint32_t float_debt; /* tcp: floating credit held back until old views are released */
	uint32_t floating; /* floating credits held */
	uint32_t backlog; /* last announced */
	uint32_t outstanding; /* credit announced, not yet used by a buffer */
	uint32_t pend_added; /* credit not yet sent */
	uint64_t *pend_offs; /* offsets not yet handed back */
	uint32_t n_pend, cap_pend;
	int dirty, wanting;
	int ended; /* END_OF_PARTITION taken */
	uint8_t *asm_buf; /* reassembly of a spanning record */
	uint32_t asm_len, asm_have, asm_cap;
	int asm_active;
	struct fdx_partition *lpart; /* local */
	struct fdx__sub *lsub;
	_Atomic uint32_t queued; /* buffers pushed to the gate, not yet taken by next() */
	/* Statistics. */
	_Atomic uint32_t held, max_held, st_floating, st_backlog, st_unannounced;
	_Atomic uint64_t credits_announced, buffers_received, events_received, bytes_received;
	_Atomic int32_t error;
};

struct fdx_gate {
	struct fdx_exchange *ex;
	struct fdx__dp *dp;
	struct fdx_lbp *pool;
	struct fdx__log *log;
	uint32_t id;
	uint32_t n;
	uint32_t exclusive;
	uint32_t floating;
	uint32_t floating_free;
	uint32_t max_record;
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
	uint32_t flush_at;
	_Atomic uint64_t buffers_received, events_received, bytes_received, records;
	_Atomic uint64_t bytes_copied, bytes_reassembled;
	_Atomic uint32_t held, channels_open;
	struct fdx_gate *next; /* in the dp's list */
};

/* Hand an item to the gate's consumer (loop or cq thread). */
void fdx__gate_push(struct fdx_gate *g, struct fdx__gitem *it);
/* Tests only (NULL otherwise): called by the consumer between its look at the
 * priority queue and its take from the normal one, to push items in that gap. */
extern void (*fdx__gate_test_between_pops)(struct fdx_gate *g);

/* ---- implemented by transport/dataplane.c ------------------------------ */

struct fdx__dp *fdx__exchange_dp(struct fdx_exchange *ex);
/*
 * fdx_exchange_credit() if session sess still has the input channel open in
 * that opening (a channel may have been closed and opened again by the same
 * session); -ENOENT if not (transport/exchange.c).
 */
int fdx__exchange_credit_sess(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
			      uint64_t sess, uint64_t opening, uint32_t added,
			      const uint64_t *offsets, uint32_t n_offsets);
struct fdx__log *fdx__exchange_log(struct fdx_exchange *ex);
/* The input channel ends here and its producer is told (as in exchange_internal.h). */
void fdx__exchange_drop_input(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
			      uint64_t sess, int code, const char *msg);
/*
 * Local credit for sub s of p, handed to the loop, which applies it only if
 * p still exists. A local gate's consumer thread.
 */
int fdx__dp_local_credit(struct fdx__dp *dp, struct fdx_partition *p, struct fdx__sub *s,
			 uint32_t added, const uint64_t *offs, uint32_t n);
/*
 * Sub s has something for the loop (items, a flush, credit, a failure): it
 * is pumped in the loop's next round. Call fdx__dp_kick() to have that round
 * soon. Any thread.
 */
void fdx__dp_ready(struct fdx__dp *dp, struct fdx__sub *s);
/* Wake the loop if it sleeps. Any thread. */
void fdx__dp_kick(struct fdx__dp *dp);
int fdx__dp_add_partition(struct fdx__dp *dp, struct fdx_partition *p);
void fdx__dp_remove_partition(struct fdx__dp *dp, struct fdx_partition *p);
int fdx__dp_add_gate(struct fdx__dp *dp, struct fdx_gate *g);
void fdx__dp_remove_gate(struct fdx__dp *dp, struct fdx_gate *g);

#endif /* FDX_RUNTIME_DATAPLANE_H */
