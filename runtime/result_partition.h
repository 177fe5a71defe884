/* SPDX-License-Identifier: MIT */
/*
 * The producer side of the protocol: a result partition of subpartitions
 * (result_partition.c writes records, result_subpartition.c sends them as
 * credit allows).
 *
 * Per subpartition:
 * - The task thread owns the current segment (cur, wpos). After each whole
 *   record it publishes pub = (segment + 1) << 32 | committed bytes (P1), so
 *   that the sender can send what was written so far (a flush or the buffer
 *   timeout) while the task keeps filling the same segment. A full segment
 *   goes to the sender as an item (q), the writer's reference with it.
 * - The sender (the exchange's loop thread) owns the items it took
 *   (head/tail), the open segment it sends slices of (open_seg, open_pos),
 *   the sequence numbers, and spends the credit of the channel's ledger.
 *   A slice [open_pos, end) of a segment costs one credit and holds one
 *   reference on the segment; the segment goes back to the pool when the
 *   writer's and every slice's reference are gone (refs).
 * - Credit arrives in the ledger (the completion-queue thread, or the loop
 *   for a local consumer); fdx__sub_credit() applies it.
 */
#ifndef FDX_RUNTIME_RESULT_PARTITION_H
#define FDX_RUNTIME_RESULT_PARTITION_H

#include <stdalign.h>
#include <stdint.h>

#include <fdx/partition.h>

#include "atomic.h"
#include "credit_ledger.h"
#include "histogram.h"
#include "log.h"
#include "mpsc_queue.h"
#include "port.h"
#include "region.h"

struct fdx_gate;
struct fdx__conn;

/* A subpartition's credit loop, timed (shm and local links; NULL elsewhere). */
struct fdx__sub_timing {
	struct fdx__hist wire; /* a CreditUpdate written by the consumer -> applied here */
	struct fdx__hist resume; /* credit applied to a starved sender -> its next buffer out */
	_Atomic uint64_t credit_at; /* when credit reached it starved, 0 once a buffer went */
};

enum fdx__pitem_kind { FDX__IT_SEG = 1, FDX__IT_EVENT = 2, FDX__IT_ABORT = 3 };

/* An item from the task thread to the sender. */
struct fdx__pitem {
	struct fdx__mpsc_node link;
	struct fdx__pitem *next; /* in the sender's list */
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
	uint32_t unkicked; /* full buffers queued since the sender was last woken */
	uint32_t kick_batch; /* wake the sender every so many (set at connect) */

	/* Shared. */
	alignas(FDX_CACHELINE) _Atomic uint64_t pub; /* P1: (seg + 1) << 32 | committed */
	_Atomic uint32_t flush_req;
	_Atomic uint32_t connected; /* set (release) once the sender may pump it */
	struct fdx__credit_ledger ledger; /* the channel's credit: granted, spent, in flight */
	struct fdx__sub_timing *timing; /* set before connected (release), freed with p */
	_Atomic int32_t error; /* why the channel failed, 0 if it did not */
	_Atomic uint32_t end_sent; /* sender: its END_OF_PARTITION went to the link */
	_Atomic uint64_t lost; /* buffers taken back from a failed consumer, undelivered */
	_Atomic uint64_t buffers_sent, events_sent, bytes_sent;
	_Atomic uint32_t backlog; /* for the statistics */
	_Atomic uint32_t max_in_flight;
	_Atomic uint64_t records_pub, bytes_pub;
	_Atomic uint64_t pushed; /* items pushed on q so far (task: store; sender: load) */
	struct fdx__mpsc_node ready_node; /* in the sender's queue of subpartitions to pump */
	_Atomic uint32_t ready; /* 1 while in that queue */
	struct fdx__mpsc q; /* task -> sender */

	/* Sender thread. */
	alignas(FDX_CACHELINE) struct fdx__pitem *head, *tail;
	uint32_t n_segs; /* buffers in the list: SEG items, and events' flushes (flush_seg) */
	int64_t open_seg; /* segment being sliced, -1 if none */
	uint32_t open_pos;
	uint32_t seq;
	uint64_t sent_ns; /* when the buffer being sent went (timed links; 0 otherwise) */
	struct fdx__credit_stamp stamp; /* the credit it goes under (credit_proof.h) */
	uint32_t last_backlog;
	int flush_pending;
	uint64_t drained; /* items taken off q so far */
	/* Where it is connected (set by the transport before connected). */
	const struct fdx__link_ops *lops;
	uint32_t link; /* enum fdx_link */
	int link_gone; /* its link is gone (fdx__sub_link_gone()): nothing can go any more */
	uint32_t chan; /* the exchange's channel id (shm, tcp) */
	uint64_t opening; /* local: the opening of the gate's channel its items name */
	uint32_t gate, gate_channel;
	struct fdx__conn *conn; /* shm, tcp: the transport's own (opaque here) */
	int draining; /* the transport's: its partition went, its channel waits for its buffers */
	struct fdx_gate *lgate; /* local */
	uint32_t index;
	struct fdx_partition *part;
};

struct fdx_partition {
	struct fdx_exchange *ex;
	struct fdx__port *port;
	struct fdx_lbp *pool;
	struct fdx_nbp *nbp; /* the pool's: where withheld segments go back */
	uint64_t serial; /* unique in this process: a local credit names it with the pointer */
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
	_Atomic uint32_t queued; /* items pushed by the task, not yet done by the sender */
	_Atomic uint32_t closing;
	/* fdx_partition_destroy() returned: p is the transport's until it frees it (release). */
	_Atomic uint32_t abandoned;
	int64_t resv_sub; /* the subpartition with a reservation, -1 if none */
	uint64_t next_flush; /* sender: when the buffer timeout strikes next (ns; 0 = not set) */
	struct fdx_partition *next; /* in the transport's list, under its lock */
};

/* ---- result_partition.c ---- */

/*
 * Drop one reference on segment seg; the last one recycles it (to the pool,
 * or, once the partition was destroyed, to the nbp: the segment was withheld
 * from the pool). Any thread.
 */
void fdx__part_unref(struct fdx_partition *p, uint32_t seg);

/*
 * The transport, for a partition it kept after fdx_partition_destroy()
 * (abandoned): once every channel of p was ended, what is still in flight
 * is taken back (its consumers are gone), every segment goes back to the
 * nbp, and p is freed.
 */
void fdx__part_release(struct fdx_partition *p);

/*
 * The sender, each round: the buffer timeout of p. Subpartitions whose
 * timeout struck are made ready; returns when it strikes next (ns), or
 * UINT64_MAX if p has none.
 */
uint64_t fdx__part_tick(struct fdx_partition *p, uint64_t now);

/* ---- result_subpartition.c ---- */

/*
 * Before its link can bring s any credit (before its hook is set, or its
 * local channel opened): what s measures on that link is set up (its
 * timing, where offsets come back). The credit side then sees it through
 * the lock or the queue that brings it the credit.
 */
void fdx__sub_prepare(struct fdx__sub *s, const struct fdx__link_ops *lops);

/*
 * The transport connected s (its link fields set): the sender may pump it
 * from now on. initial: credit granted with it (a local gate's exclusive
 * credit; a remote channel's came through fdx__sub_credit() already).
 */
void fdx__sub_attach(struct fdx__sub *s, const struct fdx__link_ops *lops, uint32_t initial);

/*
 * Credit for s: added more, and the n slices at offs handed back (their
 * segment references dropped); written_ns: when the consumer wrote it, on
 * this host's monotonic clock (0: unknown); st: the granted total and proof
 * that came with it (a remote consumer's; NULL: none). From the credit
 * side's thread. 0, or as fdx__ledger_grant() refuses it (nothing applied):
 * -ENOENT with *bad set, -EOVERFLOW. 1: the channel was taken back (ignored).
 */
int fdx__sub_credit(struct fdx__sub *s, uint32_t added, const uint64_t *offs, uint32_t n,
		    uint64_t written_ns, const struct fdx__credit_stamp *st, uint32_t *bad);

/* A slice of segment seg (tcp) need not stay any more: written to the socket. The sender. */
void fdx__sub_written(struct fdx__sub *s, uint32_t seg);

/*
 * Whether the channel of s (its partition being destroyed) may end now:
 * nothing it sent is still held by its consumer (or being written), or it
 * failed, or its link is gone. Any thread; the transport asks.
 */
int fdx__sub_drained(struct fdx__sub *s);

/*
 * The consumer of s let go of what it held (it failed or went): every buffer
 * in flight comes back (counted as lost); what is handed back later is
 * ignored, and what is sent later comes back at once. Any thread.
 */
void fdx__sub_take_back(struct fdx__sub *s);

/*
 * The channel of s failed: emits fail with -EPIPE from now on. With
 * take_back, fdx__sub_take_back() too. Any thread.
 */
void fdx__sub_fail(struct fdx__sub *s, int err, const char *msg, int take_back);

/* The sender: send what s's credit allows through its link; 1 if anything was done. */
int fdx__sub_pump(struct fdx__sub *s);

/* local_link.c: the local link's sending half (the transport connects it). */
extern const struct fdx__link_ops fdx__local_link;

/* The sender: the link of s is gone (its socket closed); what is queued is dropped. */
void fdx__sub_link_gone(struct fdx__sub *s);

/* The sender: the channel's close goes after its data (CLOSE through the link). */
void fdx__sub_close(struct fdx__sub *s);

/* The sender: drop everything queued on a failed or abandoned subpartition. */
void fdx__sub_discard(struct fdx__sub *s);

#endif /* FDX_RUNTIME_RESULT_PARTITION_H */
