/* SPDX-License-Identifier: MIT */
/*
 * The sender's view of a subpartition (Flink's credit-based subpartition
 * view): what the task queued goes to the link in order, one credit per
 * buffer, events without credit, priority events ahead of queued data, the
 * open segment sliced on a flush or the buffer timeout, and the backlog
 * announced with each buffer (or alone when credit ran out, so that the
 * consumer can lend floating credit). fdx__sub_pump() is "send only with
 * credit", top to bottom. See result_partition.h for who owns which field.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <fdx/error.h>
#include <fdx/partition.h>

#include "clock.h"
#include "result_partition.h"

#define TAKE_BACK_BATCH 64u

void fdx__sub_prepare(struct fdx__sub *s, const struct fdx__link_ops *lops)
{
	/* Each buffer's credit round trip, where its offset comes back (out of memory: not measured). */
	if (lops->offsets_come_back && !s->timing) {
		s->timing = calloc(1, sizeof(*s->timing));
		if (!s->timing || fdx__ledger_measure(&s->ledger) < 0)
			FDX_LOG_WARN(s->part->log,
				     "partition %s: subpartition %u: round trips not measured",
				     s->part->id, s->index);
	}
}

void fdx__sub_attach(struct fdx__sub *s, const struct fdx__link_ops *lops, uint32_t initial)
{
	uint64_t credit;

	s->lops = lops;
	s->link = lops->link;
	/* Added: credit may have come through the ledger already (a remote channel's answer). */
	atomic_fetch_add_explicit(&s->ledger.granted, initial, memory_order_release);
	credit = fdx__ledger_available(&s->ledger);
	/* Full buffers between wake-ups: a quarter of the initial credit, 1..16. */
	s->kick_batch = credit >= 64 ? 16 : credit >= 8 ? (uint32_t)(credit / 4) : 1;
	/* P2: the sender sees lops and the credit once it sees connected; pairs with A2 below. */
	atomic_store_explicit(&s->connected, 1, memory_order_release);
}

static void ready(struct fdx__sub *s)
{
	struct fdx__port *pt = s->part->port;

	/* Its partition being destroyed sends nothing more: the loop only looks at its channels. */
	if (!atomic_load_explicit(&s->part->closing, memory_order_acquire))
		pt->ops->ready(pt, s);
	pt->ops->kick(pt);
}

/* Slices handed back: their references go, their credit slot came back. */
static void slices_back(struct fdx__sub *s, const uint64_t *offs, uint32_t n)
{
	struct fdx_partition *p = s->part;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t rel = offs[i] - p->region->data_offset;

		fdx__part_unref(p, (uint32_t)(rel >> p->region->seg_shift));
	}
	if (n)
		atomic_fetch_sub_explicit(&p->in_flight, n, memory_order_relaxed);
}

int fdx__sub_credit(struct fdx__sub *s, uint32_t added, const uint64_t *offs, uint32_t n,
		    uint64_t written_ns, const struct fdx__credit_stamp *st, uint32_t *bad)
{
	int starved = added && fdx__ledger_available(&s->ledger) == 0 &&
		      atomic_load_explicit(&s->backlog, memory_order_relaxed) > 0;
	int err = fdx__ledger_grant(&s->ledger, added, offs, n, st, bad);
	uint64_t now;

	if (err)
		return err;
	slices_back(s, offs, n);
	if (s->timing && (written_ns || starved)) {
		now = fdx__now_ns();
		/* The credit side is one thread per channel: the hist's one writer. */
		if (written_ns && now > written_ns)
			fdx__hist_add(&s->timing->wire, now - written_ns);
		/* The sender waited for this: from now to its next buffer out. */
		if (starved)
			atomic_store_explicit(&s->timing->credit_at, now, memory_order_release);
	}
	ready(s);
	return 0;
}

void fdx__sub_written(struct fdx__sub *s, uint32_t seg)
{
	atomic_fetch_add_explicit(&s->ledger.returned, 1, memory_order_release);
	atomic_fetch_sub_explicit(&s->part->in_flight, 1, memory_order_relaxed);
	fdx__part_unref(s->part, seg);
}

void fdx__sub_take_back(struct fdx__sub *s)
{
	uint64_t offs[TAKE_BACK_BATCH];
	uint32_t n;

	while ((n = fdx__ledger_take_back(&s->ledger, offs, TAKE_BACK_BATCH)) > 0) {
		atomic_fetch_add_explicit(&s->lost, n, memory_order_relaxed);
		slices_back(s, offs, n);
	}
}

void fdx__sub_fail(struct fdx__sub *s, int err, const char *msg, int take_back)
{
	struct fdx_partition *p = s->part;
	int32_t none = 0;

	if (atomic_compare_exchange_strong(&s->error, &none, err))
		FDX_LOG_WARN(p->log, "partition %s: subpartition %u: channel failed: %s", p->id,
			     s->index, msg);
	if (take_back)
		fdx__sub_take_back(s);
	ready(s);
}

/* ---- sending ------------------------------------------------------------- */

static void sub_append(struct fdx__sub *s, struct fdx__pitem *it)
{
	it->next = NULL;
	if (s->tail)
		s->tail->next = it;
	else
		s->head = it;
	s->tail = it;
}

void fdx__sub_discard(struct fdx__sub *s)
{
	struct fdx_partition *p = s->part;
	struct fdx__mpsc_node *n;

	while ((n = fdx__mpsc_pop(&s->q)))
		sub_append(s, (struct fdx__pitem *)n);
	while (s->head) {
		struct fdx__pitem *it = s->head;

		s->head = it->next;
		if (it->kind == FDX__IT_SEG)
			fdx__part_unref(p, it->seg);
		else
			free(it);
		atomic_fetch_sub_explicit(&p->queued, 1, memory_order_relaxed);
	}
	s->tail = NULL;
	s->n_segs = 0;
}

static uint32_t backlog_of(const struct fdx__sub *s)
{
	return s->n_segs + (s->flush_pending ? 1u : 0u);
}

/*
 * Out of memory while sending: the channel cannot go on without a gap in its
 * sequence, so it fails here (emits get -EPIPE; what is queued is dropped).
 * What is in flight is not taken back: the consumer may still be reading it,
 * and its credit still brings it home.
 */
static void send_failed(struct fdx__sub *s, const char *what)
{
	fdx__sub_fail(s, -ENOMEM, what, 0);
}

/* Send [start, start + len) of segment seg: one credit. */
static void send_slice(struct fdx__sub *s, uint32_t seg, uint32_t start, uint32_t len,
		       uint32_t backlog)
{
	struct fdx_partition *p = s->part;
	uint64_t off = fdx__region_seg_offset(p->region, seg) + start;
	uint64_t rec = s->lops->offsets_come_back ? off : 0;
	uint64_t sent, ret;
	uint32_t inflight;
	int err;

	if (atomic_load_explicit(&s->error, memory_order_relaxed))
		return; /* failed in this round: nothing more goes */
	if (s->timing && atomic_load_explicit(&s->timing->credit_at, memory_order_relaxed)) {
		/* A2: pairs with the release in fdx__sub_credit(). */
		uint64_t t =
			atomic_exchange_explicit(&s->timing->credit_at, 0, memory_order_acquire);
		uint64_t now = fdx__now_ns();

		if (t && now > t)
			fdx__hist_add(&s->timing->resume, now - t);
	}
	/* Recorded before it can come back: a local consumer may hand it back at once. */
	/* One clock read a buffer, timed links only: the ledger's and the link's send time. */
	s->sent_ns = s->timing ? fdx__now_ns() : 0;
	err = fdx__ledger_spend(&s->ledger, rec, s->sent_ns);
	s->stamp = fdx__ledger_stamp(&s->ledger); /* after the credit it spends was seen */
	if (err < 0) {
		send_failed(s, "out of memory recording a buffer in flight");
		return;
	}
	atomic_fetch_add_explicit(&p->refs[seg], 1, memory_order_relaxed); /* the slice's */
	if (err == 1) {
		/* Its channel failed and took back what was in flight: this one comes back now. */
		fdx__part_unref(p, seg);
		s->seq++;
		return;
	}
	atomic_fetch_add_explicit(&p->in_flight, 1, memory_order_relaxed);
	if (s->lops->buffer(s, seg, off, len, s->seq, backlog) < 0) {
		fdx__ledger_unspend(&s->ledger, rec);
		atomic_fetch_sub_explicit(&p->in_flight, 1, memory_order_relaxed);
		fdx__part_unref(p, seg);
		send_failed(s, "out of memory sending a buffer");
		return;
	}
	s->seq++;
	atomic_fetch_add_explicit(&s->bytes_sent, len, memory_order_relaxed);
	sent = atomic_fetch_add_explicit(&s->buffers_sent, 1, memory_order_release) + 1;
	ret = atomic_load_explicit(&s->ledger.returned, memory_order_relaxed);
	inflight = (uint32_t)(sent - ret);
	if (sent > ret && inflight > atomic_load_explicit(&s->max_in_flight, memory_order_relaxed))
		atomic_store_explicit(&s->max_in_flight, inflight, memory_order_relaxed);
}

/* An event (it, the link's from now on), an abort or a backlog: no credit. */
static void send_control(struct fdx__sub *s, uint32_t kind, struct fdx__pitem *it, uint32_t backlog)
{
	uint32_t end = it && it->event_type == FDX_EVENT_END_OF_PARTITION;

	if (atomic_load_explicit(&s->error, memory_order_relaxed)) {
		free(it); /* failed in this round: nothing more goes */
		return;
	}
	if (s->lops->control(s, kind, it, kind == FDX__SEND_BACKLOG ? 0 : s->seq, backlog) < 0) {
		/* A backlog is a hint (the next one says it again); the rest have a sequence. */
		if (kind != FDX__SEND_BACKLOG)
			send_failed(s, "out of memory sending an event");
		return;
	}
	if (kind != FDX__SEND_BACKLOG)
		s->seq++;
	if (kind == FDX__SEND_EVENT) {
		atomic_fetch_add_explicit(&s->events_sent, 1, memory_order_relaxed);
		if (end)
			atomic_store_explicit(&s->end_sent, 1, memory_order_release);
	}
}

int fdx__sub_drained(struct fdx__sub *s)
{
	uint64_t sent = atomic_load_explicit(&s->buffers_sent, memory_order_acquire);
	uint64_t ret = atomic_load_explicit(&s->ledger.returned, memory_order_acquire);

	return !atomic_load_explicit(&s->connected, memory_order_acquire) || ret >= sent ||
	       atomic_load_explicit(&s->error, memory_order_relaxed) || s->link_gone;
}

void fdx__sub_link_gone(struct fdx__sub *s)
{
	s->link_gone = 1;
}

void fdx__sub_close(struct fdx__sub *s)
{
	s->lops->control(s, FDX__SEND_CLOSE, NULL, s->seq++, 0);
}

int fdx__sub_pump(struct fdx__sub *s)
{
	struct fdx_partition *p = s->part;
	struct fdx__mpsc_node *n;
	uint64_t avail, pub;
	uint32_t backlog;
	int did = 0;

	/* A2: lops and the initial credit; pairs with P2 in fdx__sub_attach(). */
	if (!atomic_load_explicit(&s->connected, memory_order_acquire))
		return 0;
	/* A failed channel (or one whose link is gone): nothing can go any more. */
	if (atomic_load_explicit(&s->error, memory_order_relaxed) || s->link_gone) {
		if (s->head || fdx__mpsc_pop_peek(&s->q)) {
			fdx__sub_discard(s);
			did = 1;
		}
		return did;
	}
	while ((n = fdx__mpsc_pop(&s->q))) {
		struct fdx__pitem *it = (struct fdx__pitem *)n;

		s->drained++;
		did = 1;
		if (it->kind == FDX__IT_EVENT && (it->flags & FDX_EVENT_PRIORITY)) {
			/* Overtakes everything queued: needs no credit. */
			send_control(s, FDX__SEND_EVENT, it, backlog_of(s));
			atomic_fetch_sub_explicit(&p->queued, 1, memory_order_relaxed);
			continue;
		}
		sub_append(s, it);
		/* A buffer to send: a segment, or what an event sends first (its flush). */
		if (it->kind == FDX__IT_SEG || it->flush_seg >= 0)
			s->n_segs++;
	}
	if (atomic_exchange_explicit(&s->flush_req, 0, memory_order_acquire))
		s->flush_pending = 1;
	/* Send only with credit: every buffer below spends one; events and aborts none. */
	avail = fdx__ledger_available(&s->ledger);
	while (s->head) {
		struct fdx__pitem *it = s->head;
		uint32_t start;

		if (it->kind == FDX__IT_SEG) {
			start = s->open_seg == (int64_t)it->seg ? s->open_pos : 0;
			if (it->end > start) {
				if (!avail)
					break;
				send_slice(s, it->seg, start, it->end - start, s->n_segs - 1);
				avail--;
			}
			s->open_seg = -1;
			s->n_segs--;
			s->head = it->next;
			fdx__part_unref(p, it->seg); /* the writer's reference */
		} else {
			if (it->flush_seg >= 0) {
				/* In order: what was written before the event goes first. */
				start = s->open_seg == it->flush_seg ? s->open_pos : 0;
				if (it->flush_end > start) {
					if (!avail)
						break;
					send_slice(s, (uint32_t)it->flush_seg, start,
						   it->flush_end - start, s->n_segs - 1);
					avail--;
				}
				s->open_seg = it->flush_seg;
				s->open_pos = it->flush_end;
				it->flush_seg = -1;
				s->n_segs--;
			}
			s->head = it->next;
			if (it->kind == FDX__IT_ABORT) {
				free(it);
				send_control(s, FDX__SEND_ABORT, NULL, s->n_segs);
			} else {
				send_control(s, FDX__SEND_EVENT, it, s->n_segs);
			}
		}
		if (!s->head)
			s->tail = NULL;
		atomic_fetch_sub_explicit(&p->queued, 1, memory_order_relaxed);
		did = 1;
	}
	/*
	 * A flush or the buffer timeout: send what was written of the current
	 * segment, once everything queued before it went. The task may have
	 * queued more since the drain (P1: seen through pushed): then next round.
	 */
	if (!s->head && s->flush_pending) {
		pub = atomic_load_explicit(&s->pub, memory_order_acquire);
		if (atomic_load_explicit(&s->pushed, memory_order_relaxed) != s->drained) {
			p->port->ops->ready(p->port, s); /* an item is on its way: next round */
			did = 1;
		} else if (!pub) {
			s->flush_pending = 0;
		} else {
			int64_t seg = (int64_t)(pub >> 32) - 1;
			uint32_t pos = (uint32_t)pub;

			if (s->open_seg != seg) {
				s->open_seg = seg;
				s->open_pos = 0;
			}
			if (pos <= s->open_pos) {
				s->flush_pending = 0;
			} else if (avail) {
				send_slice(s, (uint32_t)seg, s->open_pos, pos - s->open_pos, 0);
				s->open_pos = pos;
				s->flush_pending = 0;
				avail--;
				did = 1;
			}
		}
	}
	backlog = backlog_of(s);
	atomic_store_explicit(&s->backlog, backlog, memory_order_relaxed);
	/* Without credit, the consumer learns the backlog by itself: it may float us credit. */
	if (!avail && backlog && backlog != s->last_backlog) {
		send_control(s, FDX__SEND_BACKLOG, NULL, backlog);
		did = 1;
	}
	s->last_backlog = avail ? 0 : backlog;
	return did;
}
