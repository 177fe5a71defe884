/* SPDX-License-Identifier: MIT */
/*
 * The result partition: records written by the producing task into the
 * segments of its LocalBufferPool (record.h's format), handed to the sender
 * (result_subpartition.c) as segments fill, flushes ask or events come; the
 * task blocks in a buffer request under backpressure, and that wait is the
 * backpressure time. See result_partition.h for who owns what.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fdx/error.h>
#include <fdx/partition.h>

#include "abi.h"
#include "clock.h"
#include "local_buffer_pool.h"
#include "network_buffer_pool.h"
#include "record.h"
#include "result_partition.h"
#include "opts.h"

#define SUBPARTITIONS_MAX 65536u
#define REC_HDR FDX__REC_HDR

/* Free p and what it allocated (any part may be missing). */
static void part_free(struct fdx_partition *p)
{
	if (p->seg_items)
		for (uint32_t i = 0; i < p->region->seg_count; i++)
			free(p->seg_items[i]);
	if (p->subs)
		for (uint32_t i = 0; i < p->n; i++) {
			fdx__ledger_fini(&p->subs[i].ledger);
			free(p->subs[i].timing);
		}
	free(p->seg_items);
	free(p->refs);
	free(p->subs);
	free(p->id);
	free(p);
}

FDX_API int fdx_partition_create(struct fdx_exchange *ex, struct fdx_lbp *pool,
				 const struct fdx_partition_opts *o, struct fdx_partition **out)
{
	static _Atomic uint32_t serial;
	static _Atomic uint64_t serial64;
	struct fdx_partition_opts oo;
	struct fdx_partition *p;
	uint32_t nseg;
	char idbuf[48];
	int err;

	if (out)
		*out = NULL;
	if (!ex || !pool || !out ||
	    fdx__opts_in(&oo, sizeof(oo), o, FDX_PARTITION_OPTS_SIZE_V1) < 0)
		return -EINVAL;
	o = &oo;
	if (o->n_subpartitions == 0 || o->n_subpartitions > SUBPARTITIONS_MAX ||
	    o->max_record > FDX_RECORD_MAX_LIMIT)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->ex = ex;
	p->port = fdx__port_of(ex);
	p->pool = pool;
	p->nbp = pool->nbp;
	p->serial = atomic_fetch_add(&serial64, 1) + 1;
	p->region = pool->region;
	p->log = p->port->log;
	p->n = o->n_subpartitions;
	p->seg_size = p->region->seg_size;
	p->max_record = o->max_record ? o->max_record : FDX_RECORD_MAX_DEFAULT;
	p->timeout_ms = (o->flags & FDX_PARTITION_BUFFER_TIMEOUT) ? o->buffer_timeout_ms
								  : FDX_BUFFER_TIMEOUT_DEFAULT_MS;
	p->flush_every = p->timeout_ms == 0;
	p->resv_sub = -1;
	if (o->partition_id) {
		p->id = strdup(o->partition_id);
	} else {
		snprintf(idbuf, sizeof(idbuf), "partition-%u", atomic_fetch_add(&serial, 1) + 1);
		p->id = strdup(idbuf);
	}
	nseg = p->region->seg_count;
	p->refs = calloc(nseg, sizeof(*p->refs));
	p->seg_items = calloc(nseg, sizeof(*p->seg_items));
	p->subs = aligned_alloc(FDX_CACHELINE, sizeof(*p->subs) * p->n);
	err = -ENOMEM;
	if (!p->id || !p->refs || !p->seg_items || !p->subs)
		goto fail;
	memset(p->subs, 0, sizeof(*p->subs) * p->n);
	for (uint32_t i = 0; i < nseg; i++) {
		p->seg_items[i] = calloc(1, sizeof(struct fdx__pitem));
		if (!p->seg_items[i])
			goto fail;
		p->seg_items[i]->kind = FDX__IT_SEG;
		p->seg_items[i]->seg = i;
		p->seg_items[i]->flush_seg = -1;
	}
	for (uint32_t i = 0; i < p->n; i++) {
		struct fdx__sub *s = &p->subs[i];

		s->cur = -1;
		s->open_seg = -1;
		s->index = i;
		s->part = p;
		fdx__ledger_init(&s->ledger, 0);
		fdx__mpsc_init(&s->q);
	}
	err = p->port->ops->partition_attach(p->port, p);
	if (err < 0)
		goto fail;
	*out = p;
	return 0;
fail:
	part_free(p);
	return err;
}

/* In refs[seg]: the segment was withheld from the pool (withhold()); its last reference frees it. */
#define REFS_WITHHELD (1u << 31)

void fdx__part_unref(struct fdx_partition *p, uint32_t seg)
{
	uint32_t was = atomic_fetch_sub_explicit(&p->refs[seg], 1, memory_order_acq_rel);
	uint64_t off = fdx__region_seg_offset(p->region, seg);

	if (was == (REFS_WITHHELD | 1)) {
		atomic_store_explicit(&p->refs[seg], 0, memory_order_relaxed);
		fdx__nbp_give_back(p->nbp, off);
	} else if (was == 1) {
		int err = fdx_lbp_recycle(p->pool, off);

		if (err < 0)
			FDX_LOG_ERR(p->log, "partition %s: recycling segment %u: %s", p->id, seg,
				    fdx_strerror(err));
	} else if (was == 0) {
		FDX_LOG_ERR(p->log, "partition %s: segment %u released twice", p->id, seg);
		atomic_fetch_add_explicit(&p->refs[seg], 1, memory_order_relaxed);
	}
}

uint64_t fdx__part_tick(struct fdx_partition *p, uint64_t now)
{
	/*
	 * Every timeout_ms, what the subpartitions wrote and did not send goes
	 * (a record waits at most about that long): Flink's output flusher.
	 */
	if (!p->timeout_ms)
		return UINT64_MAX;
	if (!p->next_flush) {
		p->next_flush = now + (uint64_t)p->timeout_ms * 1000000ull;
	} else if (now >= p->next_flush) {
		p->next_flush = now + (uint64_t)p->timeout_ms * 1000000ull;
		for (uint32_t i = 0; i < p->n; i++) {
			p->subs[i].flush_pending = 1;
			p->port->ops->ready(p->port, &p->subs[i]);
		}
	}
	return p->next_flush;
}

FDX_API int fdx_partition_connect(struct fdx_partition *p, uint32_t sub, const char *addr,
				  uint32_t gate, uint32_t gate_channel, uint32_t link,
				  int timeout_ms)
{
	if (!p || !addr || sub >= p->n || link > FDX_LINK_TCP)
		return -EINVAL;
	if (atomic_load(&p->subs[sub].connected))
		return -EISCONN;
	return p->port->ops->connect(p->port, p, sub, addr, gate, gate_channel, link, timeout_ms);
}

/* ---- writing records ----------------------------------------------------- */

static int sub_check(const struct fdx_partition *p, uint32_t sub)
{
	if (!p || sub >= p->n)
		return -EINVAL;
	if (atomic_load_explicit(&p->subs[sub].error, memory_order_relaxed))
		return -EPIPE;
	if (atomic_load_explicit(&p->closing, memory_order_relaxed))
		return FDX_ECLOSED;
	if (p->subs[sub].ended)
		return FDX_ECLOSED;
	return 0;
}

static void push_item(struct fdx_partition *p, struct fdx__sub *s, struct fdx__pitem *it)
{
	atomic_fetch_add_explicit(&p->queued, 1, memory_order_relaxed);
	/* Counted before pushed: a loop that sees the count may wait for the item, not miss it. */
	atomic_store_explicit(&s->pushed, ++s->n_pushed, memory_order_release);
	fdx__mpsc_push(&s->q, &it->link);
	p->port->ops->ready(p->port, s);
}

/* Hand the current segment, as written, to the loop with the writer's reference. */
static void finish_seg(struct fdx_partition *p, struct fdx__sub *s)
{
	struct fdx__pitem *it = p->seg_items[s->cur];

	it->end = s->wpos;
	it->next = NULL;
	/* Before the push: a loop that saw the item reads 0 or a newer segment (P1). */
	atomic_store_explicit(&s->pub, 0, memory_order_release);
	push_item(p, s, it);
	s->cur = -1;
	s->cur_ptr = NULL;
	/*
	 * The loop is woken once per kick_batch full buffers, not for each: one
	 * wake-up then sends them together. Whatever else needs the loop (a
	 * flush, an event, a wait for a buffer) wakes it at once.
	 */
	if (++s->unkicked >= s->kick_batch) {
		s->unkicked = 0;
		p->port->ops->kick(p->port);
	}
}

static void kick_now(struct fdx_partition *p, struct fdx__sub *s)
{
	s->unkicked = 0;
	p->port->ops->kick(p->port);
}

/*
 * How long an emit may wait for buffers: the clock is read only once it has
 * to wait, never per record.
 */
struct wait {
	int timeout_ms;
	uint64_t deadline; /* ns; 0 until needed */
};

static uint64_t wait_deadline(struct wait *w)
{
	if (w->timeout_ms < 0)
		return UINT64_MAX;
	if (w->timeout_ms == 0)
		return 0;
	if (!w->deadline)
		w->deadline = fdx__now_ns() + (uint64_t)w->timeout_ms * 1000000ull;
	return w->deadline;
}

/* Take a new current segment, waiting as w allows. The wait is the backpressure time. */
static int take_seg(struct fdx_partition *p, struct fdx__sub *s, struct wait *w)
{
	struct fdx_buf b;
	int err = fdx_lbp_try_request(p->pool, &b);
	uint64_t deadline = err == -EAGAIN ? wait_deadline(w) : 0;

	if (err == -EAGAIN)
		kick_now(p, s); /* what is queued must go for buffers to come back */
	if (err == -EAGAIN && deadline) {
		uint64_t t0 = fdx__now_ns();
		int64_t us = deadline == UINT64_MAX ? -1
			     : deadline > t0	    ? (int64_t)((deadline - t0 + 999) / 1000)
						    : 0;

		err = us == 0 ? -ETIMEDOUT : fdx_lbp_request(p->pool, us, &b);
		atomic_fetch_add_explicit(&p->backpressured_ns, fdx__now_ns() - t0,
					  memory_order_relaxed);
	}
	if (err == -EAGAIN && deadline)
		err = -ETIMEDOUT;
	if (err < 0)
		return err; /* -EAGAIN: no wait was allowed */
	if (atomic_load_explicit(&s->error, memory_order_relaxed)) {
		fdx_lbp_recycle(p->pool, b.offset);
		return -EPIPE;
	}
	s->cur = fdx__region_seg_index(p->region, b.offset);
	s->cur_ptr = p->region->base + b.offset;
	s->wpos = 0;
	atomic_store_explicit(&p->refs[s->cur], 1, memory_order_relaxed); /* the writer's */
	atomic_store_explicit(&s->pub, (uint64_t)(s->cur + 1) << 32, memory_order_release);
	return 0;
}

static uint64_t deadline_of(int timeout_ms)
{
	if (timeout_ms < 0)
		return UINT64_MAX;
	if (timeout_ms == 0)
		return 0;
	return fdx__now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

/* A record is complete: publish it (P1) and flush as configured. */
static void record_done(struct fdx_partition *p, struct fdx__sub *s, uint32_t len)
{
	/* Counters this thread alone writes: plain stores, no locked instruction per record. */
	s->records++;
	s->bytes += len;
	atomic_store_explicit(&s->records_pub, s->records, memory_order_relaxed);
	atomic_store_explicit(&s->bytes_pub, s->bytes, memory_order_relaxed);
	if (s->cur >= 0) {
		atomic_store_explicit(&s->pub, ((uint64_t)(s->cur + 1) << 32) | s->wpos,
				      memory_order_release);
		if (s->wpos + REC_HDR > p->seg_size) {
			finish_seg(p, s);
			return;
		}
	}
	if (p->flush_every) {
		atomic_store_explicit(&s->flush_req, 1, memory_order_release);
		p->port->ops->ready(p->port, s);
		kick_now(p, s);
	}
}

static int emit_locked(struct fdx_partition *p, struct fdx__sub *s, const uint8_t *rec,
		       uint32_t len, struct wait *w)
{
	uint32_t left = len, n;
	int err;

	if (s->cur >= 0 && s->wpos + REC_HDR > p->seg_size)
		finish_seg(p, s);
	if (s->cur < 0) {
		err = take_seg(p, s, w);
		if (err < 0)
			return err;
	}
	fdx__rec_hdr_put(s->cur_ptr + s->wpos, len);
	s->wpos += REC_HDR;
	for (;;) {
		n = p->seg_size - s->wpos;
		if (n > left)
			n = left;
		if (n)
			memcpy(s->cur_ptr + s->wpos, rec, n);
		s->wpos += n;
		rec += n;
		left -= n;
		if (!left)
			break;
		finish_seg(p, s);
		err = take_seg(p, s, w);
		if (err < 0) {
			/* Part of the record is with the loop: withdraw it, in order. */
			struct fdx__pitem *ab = calloc(1, sizeof(*ab));

			if (ab) {
				ab->kind = FDX__IT_ABORT;
				ab->flush_seg = -1;
				push_item(p, s, ab);
				kick_now(p, s);
			} else {
				FDX_LOG_ERR(p->log,
					    "partition %s: out of memory withdrawing a record",
					    p->id);
			}
			return err;
		}
	}
	record_done(p, s, len);
	return 0;
}

FDX_API int fdx_partition_emit(struct fdx_partition *p, uint32_t sub, const void *rec, uint32_t len,
			       int timeout_ms)
{
	int err = sub_check(p, sub);

	if (err < 0)
		return err;
	if (!rec && len)
		return -EINVAL;
	if (len > p->max_record)
		return -EMSGSIZE;
	if (p->resv_sub >= 0)
		return -EBUSY;
	struct wait w = {timeout_ms, 0};

	return emit_locked(p, &p->subs[sub], rec, len, &w);
}

FDX_API int fdx_partition_broadcast(struct fdx_partition *p, const void *rec, uint32_t len,
				    int timeout_ms, uint32_t *done)
{
	struct wait w = {timeout_ms, 0};
	uint32_t i;
	int err = 0;

	if (done)
		*done = 0;
	if (!p || (!rec && len))
		return -EINVAL;
	if (len > p->max_record)
		return -EMSGSIZE;
	for (i = 0; i < p->n; i++) {
		err = sub_check(p, i);
		if (!err)
			err = p->resv_sub >= 0 ? -EBUSY : emit_locked(p, &p->subs[i], rec, len, &w);
		if (err < 0)
			break;
		if (done)
			*done = i + 1;
	}
	return err;
}

FDX_API int fdx_partition_reserve(struct fdx_partition *p, uint32_t sub, uint32_t len, void **where,
				  int timeout_ms)
{
	struct fdx__sub *s;
	int err = sub_check(p, sub);

	if (err < 0)
		return err;
	if (!where)
		return -EINVAL;
	if (p->resv_sub >= 0)
		return -EBUSY;
	if ((uint64_t)len + REC_HDR > p->seg_size)
		return -EMSGSIZE;
	if (len > p->max_record)
		return -EMSGSIZE;
	s = &p->subs[sub];
	if (s->cur >= 0 && s->wpos + REC_HDR + len > p->seg_size)
		finish_seg(p, s);
	if (s->cur < 0) {
		struct wait w = {timeout_ms, 0};

		err = take_seg(p, s, &w);
		if (err < 0)
			return err;
	}
	*where = s->cur_ptr + s->wpos + REC_HDR;
	s->reserved = len;
	s->reserving = 1;
	p->resv_sub = sub;
	return 0;
}

FDX_API int fdx_partition_commit(struct fdx_partition *p, uint32_t sub, uint32_t len)
{
	struct fdx__sub *s;

	if (!p || sub >= p->n || p->resv_sub != (int64_t)sub)
		return -EINVAL;
	s = &p->subs[sub];
	if (!s->reserving || len > s->reserved)
		return -EINVAL;
	fdx__rec_hdr_put(s->cur_ptr + s->wpos, len);
	s->wpos += REC_HDR + len;
	s->reserving = 0;
	s->reserved = 0;
	p->resv_sub = -1;
	record_done(p, s, len);
	return 0;
}

static int event_one(struct fdx_partition *p, uint32_t sub, uint32_t type, uint32_t flags,
		     const void *payload, uint32_t len)
{
	struct fdx__sub *s = &p->subs[sub];
	struct fdx__pitem *it;
	int err = sub_check(p, sub);

	if (err < 0)
		return err;
	it = malloc(sizeof(*it) + len);
	if (!it)
		return -ENOMEM;
	memset(it, 0, sizeof(*it));
	it->kind = FDX__IT_EVENT;
	it->flags = (uint16_t)flags;
	it->event_type = type;
	it->len = len;
	it->flush_seg = -1;
	if (len)
		memcpy(it->payload, payload, len);
	if (type == FDX_EVENT_END_OF_PARTITION) {
		s->ended = 1;
		if (s->cur >= 0)
			finish_seg(p, s); /* nothing more will be written to it; it goes first */
	} else if (!(flags & FDX_EVENT_PRIORITY) && s->cur >= 0) {
		/* In order: what was written so far goes first. */
		it->flush_seg = s->cur;
		it->flush_end = s->wpos;
	}
	push_item(p, s, it);
	kick_now(p, s);
	return 0;
}

FDX_API int fdx_partition_event(struct fdx_partition *p, uint32_t sub, uint32_t type,
				uint32_t flags, const void *payload, uint32_t len)
{
	int err = 0;

	if (!p || (sub >= p->n && sub != FDX_ALL_SUBPARTITIONS) || (!payload && len) ||
	    type < FDX_EVENT_WATERMARK || type > FDX_EVENT_USER || (flags & ~FDX_EVENT_PRIORITY) ||
	    (type == FDX_EVENT_END_OF_PARTITION && (flags & FDX_EVENT_PRIORITY)))
		return -EINVAL; /* the end never overtakes the data */
	if (len > FDX_EVENT_PAYLOAD_MAX)
		return -EMSGSIZE;
	if (p->resv_sub >= 0)
		return -EBUSY;
	if (sub != FDX_ALL_SUBPARTITIONS)
		return event_one(p, sub, type, flags, payload, len);
	/* One failed or ended channel does not keep the event from the others. */
	for (uint32_t i = 0; i < p->n; i++) {
		int e = event_one(p, i, type, flags, payload, len);

		if (e == -ENOMEM)
			return e;
		if (e < 0 && !err)
			err = e;
	}
	return err;
}

FDX_API int fdx_partition_flush(struct fdx_partition *p, uint32_t sub)
{
	if (!p || (sub >= p->n && sub != FDX_ALL_SUBPARTITIONS))
		return -EINVAL;
	for (uint32_t i = 0; i < p->n; i++)
		if (sub == FDX_ALL_SUBPARTITIONS || i == sub) {
			atomic_store_explicit(&p->subs[i].flush_req, 1, memory_order_release);
			p->subs[i].unkicked = 0;
			p->port->ops->ready(p->port, &p->subs[i]);
		}
	p->port->ops->kick(p->port);
	return 0;
}

FDX_API int fdx_partition_finish(struct fdx_partition *p, int timeout_ms)
{
	uint64_t deadline;
	int failed = 0;

	if (!p)
		return -EINVAL;
	if (p->resv_sub >= 0)
		return -EBUSY; /* commit (or emit nothing more) first: the reservation's buffer is open */
	deadline = deadline_of(timeout_ms);
	for (uint32_t i = 0; i < p->n; i++)
		if (!p->subs[i].ended && !atomic_load(&p->subs[i].error) &&
		    event_one(p, i, FDX_EVENT_END_OF_PARTITION, 0, NULL, 0) == -ENOMEM)
			return -ENOMEM; /* the end did not go: call again */
	for (unsigned rounds = 0;; rounds++) {
		uint32_t busy = atomic_load_explicit(&p->queued, memory_order_acquire) +
				atomic_load_explicit(&p->in_flight, memory_order_acquire);
		struct timespec nap = {0, 200000};

		/*
		 * A channel failed if data was lost: buffers taken back undelivered,
		 * or its end never went. A consumer that went away after the end
		 * and after handing everything back is no failure.
		 */
		failed = 0;
		for (uint32_t i = 0; i < p->n; i++)
			if (atomic_load(&p->subs[i].error) &&
			    (atomic_load(&p->subs[i].lost) || !atomic_load(&p->subs[i].end_sent)))
				failed = 1;
		if (busy == 0)
			break;
		if (deadline != UINT64_MAX && fdx__now_ns() >= deadline)
			return -ETIMEDOUT;
		if (rounds < 100)
			sched_yield();
		else
			nanosleep(&nap, NULL);
	}
	return failed ? -EPIPE : 0;
}

/*
 * The segments consumers still hold leave the pool for the nbp, withheld
 * there until their last reference goes (the pool may be destroyed before).
 * W1: a reference of our own while we move it, so that its last one cannot
 * recycle it (and the pool lend it again) in between; the last one then
 * sees the mark and gives it to the nbp (fdx__part_unref()).
 */
static void withhold(struct fdx_partition *p)
{
	for (uint32_t i = 0; i < p->region->seg_count; i++) {
		uint32_t r = atomic_load_explicit(&p->refs[i], memory_order_acquire);

		while (r && !atomic_compare_exchange_weak_explicit(&p->refs[i], &r, r + 1,
								   memory_order_acq_rel,
								   memory_order_acquire))
			;
		if (!r)
			continue; /* back in the pool already */
		if (fdx__lbp_withhold(p->pool, fdx__region_seg_offset(p->region, i)) == 0)
			atomic_fetch_or_explicit(&p->refs[i], REFS_WITHHELD, memory_order_acq_rel);
		else
			FDX_LOG_ERR(p->log, "partition %s: segment %u in flight is not its pool's",
				    p->id, i);
		fdx__part_unref(p, i); /* ours */
	}
}

FDX_API void fdx_partition_destroy(struct fdx_partition *p)
{
	int kept;

	if (!p)
		return;
	atomic_store(&p->closing, 1);
	/* The sender lets go; channels with nothing in flight close, the others wait. */
	kept = p->port->ops->partition_detach(p->port, p);
	for (uint32_t i = 0; i < p->n; i++) {
		struct fdx__sub *s = &p->subs[i];
		struct fdx__mpsc_node *n;

		/* What is queued and not sent: its segments' writer references go. */
		while ((n = fdx__mpsc_pop_wait(&s->q))) {
			struct fdx__pitem *it = (struct fdx__pitem *)n;

			if (it->kind == FDX__IT_SEG)
				fdx__part_unref(p, it->seg);
			else
				free(it);
		}
		for (struct fdx__pitem *it = s->head, *nx; it; it = nx) {
			nx = it->next;
			if (it->kind == FDX__IT_SEG)
				fdx__part_unref(p, it->seg);
			else
				free(it);
		}
		s->head = s->tail = NULL;
		if (s->cur >= 0)
			fdx__part_unref(p, (uint32_t)s->cur); /* the one being written */
		s->cur = -1;
	}
	if (kept) {
		struct fdx__port *pt = p->port; /* p may be freed once abandoned */

		/* What consumers hold stays theirs until handed back or they are gone. */
		withhold(p);
		p->pool = NULL; /* the caller's to destroy now: nothing of p touches it */
		fdx__nbp_pin(p->nbp, 1); /* its region outlives p (fdx__part_release() unpins) */
		atomic_store_explicit(&p->abandoned, 1, memory_order_release);
		pt->ops->kick(pt);
		return;
	}
	/* Nothing in flight any more (or a transport that keeps nothing): back to the pool. */
	for (uint32_t i = 0; i < p->region->seg_count; i++)
		if (atomic_load(&p->refs[i]))
			fdx_lbp_recycle(p->pool, fdx__region_seg_offset(p->region, i));
	part_free(p);
}

void fdx__part_release(struct fdx_partition *p)
{
	struct fdx_nbp *nbp = p->nbp;

	for (uint32_t i = 0; i < p->n; i++)
		fdx__sub_take_back(&p->subs[i]);
	/* What a dead connection never wrote out: its consumer is gone with it. */
	for (uint32_t i = 0; i < p->region->seg_count; i++)
		if (atomic_load(&p->refs[i]) & REFS_WITHHELD)
			fdx__nbp_give_back(nbp, fdx__region_seg_offset(p->region, i));
	part_free(p);
	fdx__nbp_pin(nbp, -1);
}

/* ---- statistics ---------------------------------------------------------- */

FDX_API int fdx_partition_channel_stats(struct fdx_partition *p, uint32_t sub,
					struct fdx_channel_stats *st)
{
	struct fdx_channel_stats s;
	struct fdx__sub *x;
	uint64_t sent, granted, ret;

	if (!p || !st || st->size < 8 || sub >= p->n)
		return -EINVAL;
	x = &p->subs[sub];
	memset(&s, 0, sizeof(s));
	/* Sent before granted: a snapshot never shows more sent than granted. */
	sent = atomic_load_explicit(&x->buffers_sent, memory_order_acquire);
	ret = atomic_load_explicit(&x->ledger.returned, memory_order_acquire);
	granted = atomic_load_explicit(&x->ledger.granted, memory_order_acquire);
	s.link = atomic_load_explicit(&x->connected, memory_order_acquire) ? x->link : 0;
	s.credits_granted = granted;
	s.buffers_sent = sent;
	s.credit = granted > sent ? (uint32_t)(granted - sent) : 0;
	s.backlog = atomic_load_explicit(&x->backlog, memory_order_relaxed);
	s.in_flight = sent > ret ? (uint32_t)(sent - ret) : 0;
	s.max_in_flight = atomic_load_explicit(&x->max_in_flight, memory_order_relaxed);
	s.events_sent = atomic_load_explicit(&x->events_sent, memory_order_relaxed);
	s.records = atomic_load_explicit(&x->records_pub, memory_order_relaxed);
	s.bytes_sent = atomic_load_explicit(&x->bytes_sent, memory_order_relaxed);
	s.error = atomic_load_explicit(&x->error, memory_order_relaxed);
	/* A1: the histogram was set before connected (P2 in result_subpartition.c). */
	if (atomic_load_explicit(&x->connected, memory_order_acquire) && x->ledger.rtt) {
		const struct fdx__hist *h = x->ledger.rtt;

		s.rtt_count = atomic_load_explicit(&h->count, memory_order_relaxed);
		s.rtt_p50_ns = fdx__hist_percentile(h, 50);
		s.rtt_p99_ns = fdx__hist_percentile(h, 99);
		s.rtt_max_ns = atomic_load_explicit(&h->max, memory_order_relaxed);
	}
	if (atomic_load_explicit(&x->connected, memory_order_acquire) && x->timing) {
		s.credit_wire_p50_ns = fdx__hist_percentile(&x->timing->wire, 50);
		s.credit_wire_p99_ns = fdx__hist_percentile(&x->timing->wire, 99);
		s.resume_p50_ns = fdx__hist_percentile(&x->timing->resume, 50);
		s.resume_p99_ns = fdx__hist_percentile(&x->timing->resume, 99);
	}
	fdx__stats_copy(st, &s, sizeof(s));
	return 0;
}

FDX_API int fdx_partition_stats(struct fdx_partition *p, struct fdx_partition_stats *st)
{
	struct fdx_partition_stats s;
	struct fdx_lbp_stats ls;

	if (!p || !st || st->size < 8)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	s.n_subpartitions = p->n;
	for (uint32_t i = 0; i < p->n; i++) {
		s.records += atomic_load_explicit(&p->subs[i].records_pub, memory_order_relaxed);
		s.bytes += atomic_load_explicit(&p->subs[i].bytes_pub, memory_order_relaxed);
		s.buffers_sent +=
			atomic_load_explicit(&p->subs[i].buffers_sent, memory_order_relaxed);
		s.events_sent +=
			atomic_load_explicit(&p->subs[i].events_sent, memory_order_relaxed);
	}
	s.bytes_copied = atomic_load_explicit(&p->bytes_copied, memory_order_relaxed);
	s.backpressured_ns = atomic_load_explicit(&p->backpressured_ns, memory_order_relaxed);
	ls.size = sizeof(ls);
	if (fdx_lbp_stats(p->pool, &ls) == 0)
		s.buffers_in_use = ls.in_use;
	s.in_flight = atomic_load_explicit(&p->in_flight, memory_order_relaxed);
	fdx__stats_copy(st, &s, sizeof(s));
	return 0;
}
