/* SPDX-License-Identifier: MIT */
/*
 * The input gate: views of received buffers and events, records read in
 * place, credit handed back as views are released (Flink's exclusive and
 * floating credits), coalesced here and only here into one announcement per
 * channel (flush_credit()). Everything here runs on the gate's one consumer
 * thread, except fdx__gate_push() (the transport's threads) and the
 * statistics.
 *
 * Per channel, quota = exclusive + floating = outstanding + held: credit
 * announced and not yet used by a buffer, plus buffers received and not
 * released. A released buffer's slot is announced again, unless it was a
 * floating one the channel no longer needs (outstanding covers its backlog):
 * that one goes to the channel waiting longest for floating credit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <fdx/error.h>
#include <fdx/gate.h>

#include "clock.h"
#include "input_gate.h"
#include "local_buffer_pool.h"
#include "opts.h"
#include "record.h"

#define CHANNELS_MAX 65536u
#define REC_HDR FDX__REC_HDR
#define SPIN_NS 5000u /* poll this long before sleeping (a wake-up costs ~35 us) */
#define SPIN_ROUNDS 256u /* and at least this many times, reading no clock */
/*
 * Credit a waiting consumer still owes goes at once if a producer may run
 * short (the credit waiting here is as much as what it has left), else this
 * long after the consumer first waited with it (or when a batch fills): one
 * control message per quiet spell, not one per buffer, where the delay costs
 * nobody anything.
 */
#define CREDIT_DELAY_NS 100000u

static uint32_t credits_opt(uint32_t v, uint32_t def)
{
	return v == FDX_CREDITS_NONE ? 0 : v ? v : def;
}

/*
 * Credit goes back in batches of a quarter of what the gate's channels may
 * hold: their exclusive credit or, reading in place, their in-place credit,
 * and the floating credits while some channel can take them.
 */
static void update_quota(struct fdx_gate *g)
{
	uint64_t quota = (uint64_t)g->n * g->exclusive + g->inplace_sum, at;

	if (g->n_inplace < g->n)
		quota += g->floating;
	at = quota / 4;
	g->quota = quota;
	g->flush_at = at == 0 ? 1 : at > UINT32_MAX ? UINT32_MAX : (uint32_t)at;
}

FDX_API int fdx_gate_create(struct fdx_exchange *ex, struct fdx_lbp *pool,
			    const struct fdx_gate_opts *o, struct fdx_gate **out)
{
	struct fdx_gate_opts oo = {0};
	struct fdx_gate *g;
	uint64_t total;
	int err;

	if (out)
		*out = NULL;
	if (!ex || !out || fdx__opts_in(&oo, sizeof(oo), o, FDX_GATE_OPTS_SIZE_V1) < 0)
		return -EINVAL;
	o = &oo;
	if (o->n_channels == 0 || o->n_channels > CHANNELS_MAX ||
	    o->max_record > FDX_RECORD_MAX_LIMIT)
		return -EINVAL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->ex = ex;
	g->port = fdx__port_of(ex);
	g->log = g->port->log;
	g->pool = pool;
	g->id = o->gate;
	g->n = o->n_channels;
	g->exclusive = credits_opt(o->exclusive_credits, FDX_EXCLUSIVE_CREDITS_DEFAULT);
	g->floating = credits_opt(o->floating_credits, FDX_FLOATING_CREDITS_DEFAULT);
	g->floating_free = g->floating;
	g->inplace = credits_opt(o->inplace_credits, FDX_INPLACE_CREDITS_DEFAULT);
	/* A channel reading in place gets the difference on top of its exclusive credit. */
	g->inplace_extra = g->inplace > g->exclusive ? g->inplace - g->exclusive : 0;
	g->max_record = o->max_record ? o->max_record : FDX_RECORD_MAX_DEFAULT;
	total = (uint64_t)g->n * g->exclusive + g->floating;
	err = -EINVAL;
	if (total == 0 || total > UINT32_MAX || g->inplace > FDX_INPLACE_CREDITS_MAX)
		goto fail;
	/* What one channel may hold at once stays below 2^31: a buffer names its credit mod 2^32. */
	if ((uint64_t)g->exclusive + g->floating + g->inplace_extra >= (1u << 31))
		goto fail;
	if (pool && pool->max < total) {
		FDX_LOG_ERR(g->log,
			    "gate %u: its pool may hold %u segments, %llu needed for its credits",
			    g->id, pool->max, (unsigned long long)total);
		goto fail;
	}
	update_quota(g); /* in-place channels change it as they show their link */
	err = -ENOMEM;
	g->ch = calloc(g->n, sizeof(*g->ch));
	g->want = calloc(g->n, sizeof(*g->want));
	if (!g->ch || !g->want)
		goto fail;
	err = fdx__credit_key_init(&g->key);
	if (err < 0) {
		FDX_LOG_ERR(g->log, "gate %u: no random key for its credit's proofs: %s", g->id,
			    fdx_strerror(err));
		goto fail;
	}
	for (uint32_t i = 0; i < g->n; i++)
		fdx__outbox_init(&g->ch[i].outbox, &g->ch[i].granted_total, &g->key, g->id, i);
	fdx__mpsc_init(&g->q);
	fdx__mpsc_init(&g->prio);
	g->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g->efd < 0) {
		err = -errno;
		goto fail;
	}
	err = g->port->ops->gate_attach(g->port, g);
	if (err < 0) {
		close(g->efd);
		goto fail;
	}
	*out = g;
	return 0;
fail:
	free(g->ch);
	free(g->want);
	free(g);
	return err;
}

/* ---- how a released buffer goes home, by link ----------------------------- */

/*
 * shm: the buffer is a slice of the producer's region, read in place; its
 * offset travels back with the credit. tcp: it is a segment of our own
 * pool, which goes back to the pool before its credit leaves (a producer
 * that has the credit may send at once, and the loop must find a segment
 * free). local: the producer is in this process; the offset goes back with
 * the credit at once, as there is no control message to save.
 */
struct fdx__recycler {
	void (*release)(struct fdx_gate *g, struct fdx__gitem *it); /* the memory, first */
	int offsets_back;
	int eager;
	/* Channel ch's outbox has credit: have it sent. */
	int (*send)(struct fdx_gate *g, uint32_t ch, struct fdx__gchan *c);
};

static void tcp_release(struct fdx_gate *g, struct fdx__gitem *it)
{
	if (g->pool && !it->seg_back) {
		fdx_lbp_recycle(g->pool, it->offset);
		it->seg_back = 1;
	}
}

/* local: the consumer thread empties the outbox itself, straight to the producer's loop. */
static int local_send(struct fdx_gate *g, uint32_t ch, struct fdx__gchan *c)
{
	uint64_t offs[256];
	uint32_t added, n;
	int more, err = 0;

	(void)ch;
	do {
		n = fdx__outbox_take(&c->outbox, c->opening_seen, &added, offs, 256, &more, NULL,
				     NULL);
		if (n || added)
			err = g->port->ops->local_credit(g->port, c->lpart, c->lserial, c->lsub,
							 added, offs, n);
		if (err < 0) {
			/* Back where it was: tried again at the next flush. */
			fdx__outbox_add(&c->outbox, c->opening_seen, added, offs, n);
			return err;
		}
	} while (more);
	return 0;
}

/* shm, tcp: the transport takes the outbox when its control stream can send. */
static int remote_send(struct fdx_gate *g, uint32_t ch, struct fdx__gchan *c)
{
	int err;

	if (!c->open)
		return 0;
	err = g->port->ops->announce(g->port, g, ch, c->sess_seen, c->opening_seen);
	if (err == -ENOENT) /* that opening is over on the transport's side */
		fdx__outbox_reset(&c->outbox, c->opening_seen, 1);
	else if (err < 0 && err != -ENOMEM)
		FDX_LOG_ERR(g->log, "gate %u channel %u: credit not sent: %s", g->id, ch,
			    fdx_strerror(err));
	return err == -ENOMEM ? err : 0;
}

static const struct fdx__recycler local_home = {NULL, 1, 1, local_send};
static const struct fdx__recycler shm_home = {NULL, 1, 0, remote_send};
static const struct fdx__recycler tcp_home = {tcp_release, 0, 0, remote_send};

static const struct fdx__recycler *home_of(uint32_t link)
{
	return link == FDX_LINK_LOCAL ? &local_home : link == FDX_LINK_TCP ? &tcp_home : &shm_home;
}

void fdx__rmap_put(struct fdx__rmap *m)
{
	if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) {
		fdx_region_destroy(m->region);
		free(m);
	}
}

struct fdx__gitem *fdx__gitem_new(uint32_t kind, uint32_t ch, size_t payload)
{
	struct fdx__gitem *it = malloc(sizeof(*it) + payload);

	if (it) {
		memset(it, 0, sizeof(*it));
		it->kind = (uint8_t)kind;
		it->ch = ch;
	}
	return it;
}

static void item_free(struct fdx_gate *g, struct fdx__gitem *it)
{
	const struct fdx__recycler *h = home_of(it->link_type);

	if (it->kind == FDX__GI_BUFFER && h->release)
		h->release(g, it);
	if (it->map)
		fdx__rmap_put(it->map);
	free(it);
}

/*
 * Priority items first. An item of q pushed after a priority item (data sent
 * after an unaligned barrier) must not overtake it: when the priority queue
 * was empty as we looked but is not once we took from q, the priority item
 * goes first and the one from q waits in g->stash.
 */
void (*fdx__seam_gate_between_pops)(struct fdx_gate *g);

static struct fdx__gitem *pop_item(struct fdx_gate *g)
{
	struct fdx__mpsc_node *n = fdx__mpsc_pop_wait(&g->prio), *p;

	if (n)
		return (struct fdx__gitem *)n;
	if (g->stash) {
		struct fdx__gitem *it = g->stash;

		g->stash = NULL;
		return it;
	}
	if (fdx__seam_gate_between_pops) /* a test seam: NULL in every real program */
		fdx__seam_gate_between_pops(g);
	n = fdx__mpsc_pop_wait(&g->q);
	if (n && (p = fdx__mpsc_pop_wait(&g->prio))) {
		g->stash = (struct fdx__gitem *)n;
		return (struct fdx__gitem *)p;
	}
	return (struct fdx__gitem *)n;
}

/* An item may be waiting (the consumer thread). */
static int items_waiting(struct fdx_gate *g)
{
	return g->stash || fdx__mpsc_pop_peek(&g->prio) || fdx__mpsc_pop_peek(&g->q);
}

FDX_API void fdx_gate_destroy(struct fdx_gate *g)
{
	struct fdx__gitem *it;

	if (!g)
		return;
	atomic_store(&g->closing, 1);
	g->port->ops->gate_detach(g->port, g); /* nothing is pushed after this */
	while ((it = pop_item(g))) {
		/* A local producer gets its buffers back (remote ones: with their stream). */
		if (it->kind == FDX__GI_BUFFER && it->lpart)
			g->port->ops->local_credit(g->port, it->lpart, it->lserial, it->lsub, 0,
						   &it->offset, 1);
		item_free(g, it);
	}
	for (uint32_t i = 0; i < g->n; i++) {
		fdx__outbox_fini(&g->ch[i].outbox);
		free(atomic_load(&g->ch[i].timing));
		free(g->ch[i].asm_buf);
	}
	close(g->efd);
	free(g->ch);
	free(g->want);
	free(g);
}

void fdx__gate_push(struct fdx_gate *g, struct fdx__gitem *it)
{
	uint64_t one = 1;

	if (it->kind == FDX__GI_BUFFER) {
		/* Held from arrival to release: queued or in a view. */
		struct fdx__gchan *c = &g->ch[it->ch];
		uint32_t held = atomic_fetch_add_explicit(&c->held, 1, memory_order_relaxed) + 1;

		/* A1: pairs with R2 where the channel first opened. */
		struct fdx__gchan_timing *t =
			atomic_load_explicit(&c->timing, memory_order_acquire);

		/* Timed channels only: one clock read per buffer, on the loop. */
		it->t_arrive = t ? fdx__now_ns() : 0;
		if (t && it->sent_set) {
			/* Modulo 2^32 ns (4.3 s): a way that long is not a latency anyway. */
			uint32_t way = (uint32_t)it->t_arrive - it->sent_lo;

			/* The loop is the one writer of one_way. */
			if (way < (1u << 31))
				fdx__hist_add(&t->one_way, way);
		}
		atomic_fetch_add_explicit(&c->queued, 1, memory_order_relaxed);

		if (held > atomic_load_explicit(&c->max_held, memory_order_relaxed))
			atomic_store_explicit(&c->max_held, held, memory_order_relaxed);
		atomic_fetch_add_explicit(&g->held, 1, memory_order_relaxed);
	}
	fdx__mpsc_push(it->kind == FDX__GI_EVENT && (it->flags & FDX_EVENT_PRIORITY) ? &g->prio
										     : &g->q,
		       &it->link);
	/* W1: the push, then the flag; pairs with W2 in wait_for_items(). */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&g->waiting, memory_order_relaxed) &&
	    atomic_exchange_explicit(&g->waiting, 0, memory_order_relaxed))
		if (write(g->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			FDX_LOG_ERR(g->log, "gate %u: eventfd: %s", g->id, fdx_strerror(-errno));
}

/* ---- credit -------------------------------------------------------------- */

static void mark_dirty(struct fdx_gate *g, struct fdx__gchan *c)
{
	(void)g;
	c->dirty = 1;
}

/* The offset of a released buffer goes back with the channel's next credit. */
static int pend_offset(struct fdx__gchan *c, uint64_t off)
{
	return fdx__outbox_add(&c->outbox, c->opening_seen, 0, &off, 1);
}

/* Nothing of c's waits to be announced any more (sent, or its opening ended). */
static void clear_pending(struct fdx__gchan *c)
{
	c->pend_added = 0;
	c->dirty = 0;
	atomic_store_explicit(&c->st_unannounced, 0, memory_order_relaxed);
}

/*
 * Have every channel's outbox sent (its credit and offsets accumulated since
 * the last flush): the gate's batching decides when, the outbox is what goes.
 */
static void flush_credit(struct fdx_gate *g)
{
	g->pend_since = 0;
	if (!g->pend_total)
		return;
	for (uint32_t i = 0; i < g->n; i++) {
		struct fdx__gchan *c = &g->ch[i];
		int err = 0;

		if (!c->dirty)
			continue;
		if (c->home)
			err = c->home->send(g, i, c);
		if (err != -ENOMEM) {
			atomic_fetch_add_explicit(&c->credits_announced, c->pend_added,
						  memory_order_relaxed);
			clear_pending(c);
		}
	}
	g->pend_total = 0;
	g->starving = 0;
	g->short_credit = 0;
}

static uint32_t unused_credit(const struct fdx__gchan *c);

static void announce(struct fdx_gate *g, struct fdx__gchan *c, uint32_t n)
{
	uint32_t sent;

	/* A producer with a backlog and no credit left waits for this. */
	if (c->backlog && c->outstanding == 0)
		g->starving = 1;
	c->outstanding += n;
	c->pend_added += n;
	/*
	 * Credit it has and has not used yet, of what went: no more than what
	 * waits here, and it may run short before a delayed update would come.
	 */
	sent = unused_credit(c);
	sent = sent > c->pend_added ? sent - c->pend_added : 0;
	if (sent <= c->pend_added)
		g->short_credit = 1;
	if (fdx__outbox_add(&c->outbox, c->opening_seen, n, NULL, 0) < 0)
		FDX_LOG_ERR(g->log, "gate %u: %u credits lost (over 2^32 waiting)", g->id, n);
	atomic_store_explicit(&c->st_unannounced, c->pend_added, memory_order_relaxed);
	g->pend_total += n;
	mark_dirty(g, c);
}

/*
 * Credit the producer has not used yet: outstanding, less the buffers that
 * came and wait in the queue for the consumer (they used theirs). A consumer
 * behind its own queue thus still lends floating credit for the backlog, as
 * Flink's input channels do for the buffers they hold.
 */
static uint32_t unused_credit(const struct fdx__gchan *c)
{
	uint32_t q = atomic_load_explicit(&c->queued, memory_order_relaxed);

	return c->outstanding > q ? c->outstanding - q : 0;
}

/* Floating credit for channels whose backlog exceeds their unused credit. */
static void want_floating(struct fdx_gate *g, uint32_t ch)
{
	struct fdx__gchan *c = &g->ch[ch];

	if (c->inplace)
		return; /* its budget is its own: floating credits are segments of the pool */
	while (c->open && unused_credit(c) < c->backlog && g->floating_free > 0) {
		g->floating_free--;
		c->floating++;
		announce(g, c, 1);
	}
	if (c->open && unused_credit(c) < c->backlog && !c->wanting) {
		c->wanting = 1;
		g->want[(g->want_head + g->want_len++) % g->n] = ch;
	}
	atomic_store_explicit(&c->st_floating, c->floating, memory_order_relaxed);
}

/*
 * The first buffer or backlog of an opening names its link: one that reads
 * the producer's segments in place (shm, local) gets the rest of its in-place
 * budget at once, as one credit update, and takes no floating credit from
 * then on (what it holds goes back).
 */
static void learn_link(struct fdx_gate *g, struct fdx__gchan *c, const struct fdx__gitem *it)
{
	if (c->link_known || !it->link_type)
		return; /* known, or not said (a backlog on the control stream) */
	c->link_known = 1;
	if (!g->inplace_extra || (it->link_type != FDX_LINK_SHM && it->link_type != FDX_LINK_LOCAL))
		return;
	c->inplace = g->inplace_extra;
	g->inplace_sum += c->inplace;
	g->n_inplace++;
	update_quota(g);
	atomic_store_explicit(&c->st_inplace, g->inplace, memory_order_relaxed);
	announce(g, c, c->inplace);
	g->starving = 1; /* it goes out now: the producer runs on its exclusive credit */
}

static void give_floating(struct fdx_gate *g)
{
	while (g->want_len) {
		uint32_t ch = g->want[g->want_head];
		struct fdx__gchan *c = &g->ch[ch];

		g->want_head = (g->want_head + 1) % g->n;
		g->want_len--;
		c->wanting = 0;
		if (c->open && unused_credit(c) < c->backlog) {
			c->floating++;
			announce(g, c, 1);
			atomic_store_explicit(&c->st_floating, c->floating, memory_order_relaxed);
			if (unused_credit(c) < c->backlog) {
				c->wanting = 1;
				g->want[(g->want_head + g->want_len++) % g->n] = ch;
			}
			return;
		}
	}
	g->floating_free++;
}

static void channel_reset(struct fdx_gate *g, struct fdx__gchan *c)
{
	uint32_t freed;

	if (g->pool) {
		/*
		 * tcp: views the consumer still holds keep their segments of our
		 * pool. The floating credit behind them comes back only with
		 * them, or another channel could be lent credit for a segment
		 * that is not free.
		 */
		uint32_t held = atomic_load_explicit(&c->held, memory_order_relaxed);
		uint32_t debt = held > g->exclusive ? held - g->exclusive : 0;

		if (debt > c->floating)
			debt = c->floating;
		c->float_debt += debt;
		c->floating -= debt;
	}
	freed = c->floating;
	c->floating = 0;
	if (c->inplace) {
		g->inplace_sum -= c->inplace;
		g->n_inplace--;
		update_quota(g);
	}
	c->inplace = 0;
	c->link_known = 0;
	atomic_store_explicit(&c->st_inplace, 0, memory_order_relaxed);
	c->outstanding = 0;
	c->backlog = 0;
	/* Its outbox keeps what it holds for that opening: it may still go. */
	clear_pending(c);
	c->asm_active = 0;
	c->abort_next = 0;
	if (c->open)
		atomic_fetch_sub_explicit(&g->channels_open, 1, memory_order_relaxed);
	c->open = 0;
	c->home = NULL;
	c->lpart = NULL;
	c->lsub = NULL;
	atomic_store_explicit(&c->st_floating, 0, memory_order_relaxed);
	/*
	 * Its floating credit goes to the channels waiting longest for some (c
	 * is closed: not to c), as a released one does: a waiting channel with
	 * no exclusive credit has nothing else that would ask for it again.
	 */
	while (freed--)
		give_floating(g);
}

/* ---- taking views -------------------------------------------------------- */

/* it belongs to the opening of its channel the consumer has open now. */
static int of_opening(const struct fdx__gchan *c, const struct fdx__gitem *it)
{
	return c->open && c->sess_seen == it->sess && c->opening_seen == it->opening;
}

/* An internal item: act on it; 1 if it is for the caller (a view). */
static int take_item(struct fdx_gate *g, struct fdx__gitem *it)
{
	struct fdx__gchan *c = &g->ch[it->ch];

	if (c->poisoned && it->sess == c->poisoned &&
	    (it->kind == FDX__GI_BUFFER || it->kind == FDX__GI_EVENT)) {
		/* What a producer sent after breaking the record format: never read. */
		if (it->kind == FDX__GI_BUFFER) {
			atomic_fetch_sub_explicit(&c->queued, 1, memory_order_relaxed);
			atomic_fetch_sub_explicit(&c->held, 1, memory_order_relaxed);
			atomic_fetch_sub_explicit(&g->held, 1, memory_order_relaxed);
		}
		item_free(g, it);
		return 0;
	}
	switch (it->kind) {
	case FDX__GI_OPENED:
		if (c->open)
			channel_reset(g, c);
		c->open = 1;
		c->ended = 0;
		c->sess_seen = it->sess;
		c->opening_seen = it->opening;
		c->outstanding = g->exclusive; /* announced in the answer to the open */
		if (!atomic_load_explicit(&c->timing, memory_order_relaxed)) {
			struct fdx__gchan_timing *t = calloc(1, sizeof(*t));

			/* Out of memory: not timed. R2: pairs with A2 in the statistics. */
			if (t) {
				fdx__outbox_time(&c->outbox, &t->wait);
				atomic_store_explicit(&c->timing, t, memory_order_release);
			}
		}
		c->lpart = it->lpart;
		c->lserial = it->lserial;
		c->lsub = it->lsub;
		c->home = it->lpart ? &local_home : &shm_home; /* how its credit travels */
		fdx__outbox_reset(&c->outbox, it->opening, !it->lpart);
		c->backlog = 0;
		c->poisoned = 0;
		atomic_store_explicit(&c->error, 0, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->credits_announced, g->exclusive,
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&g->channels_open, 1, memory_order_relaxed);
		free(it);
		return 0;
	case FDX__GI_CLOSED:
		/* The same stream may have opened the channel again before this came. */
		if (of_opening(c, it))
			channel_reset(g, c);
		free(it);
		return 0;
	case FDX__GI_ABORT:
		/* At its place in the stream: before the next buffer's bytes, not now. */
		c->abort_next = 1;
		free(it);
		return 0;
	case FDX__GI_BACKLOG:
		if (of_opening(c, it)) {
			learn_link(g, c, it);
			c->backlog = it->backlog;
			atomic_store_explicit(&c->st_backlog, it->backlog, memory_order_relaxed);
			want_floating(g, it->ch);
		}
		free(it);
		return 0;
	case FDX__GI_FAILED:
		if ((c->sess_seen != it->sess && it->sess) ||
		    (it->opening && c->opening_seen != it->opening)) {
			free(it); /* about an earlier producer or opening of this channel */
			return 0;
		}
		atomic_store_explicit(&c->error, it->error, memory_order_relaxed);
		channel_reset(g, c);
		return 1;
	case FDX__GI_EVENT:
		if (it->event_type == FDX_EVENT_END_OF_PARTITION && of_opening(c, it)) {
			c->ended = 1;
			flush_credit(g);
		}
		atomic_fetch_add_explicit(&c->events_received, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&g->events_received, 1, memory_order_relaxed);
		return 1;
	case FDX__GI_BUFFER:
		it->abort_before = c->abort_next;
		c->abort_next = 0;
		atomic_fetch_sub_explicit(&c->queued, 1, memory_order_relaxed);
		if (of_opening(c, it)) {
			if (c->outstanding)
				c->outstanding--;
			learn_link(g, c, it);
			c->backlog = it->backlog;
			atomic_store_explicit(&c->st_backlog, it->backlog, memory_order_relaxed);
			want_floating(g, it->ch);
		}
		atomic_fetch_add_explicit(&c->buffers_received, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->bytes_received, it->len, memory_order_relaxed);
		atomic_fetch_add_explicit(&g->buffers_received, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&g->bytes_received, it->len, memory_order_relaxed);
		if (it->link_type == FDX_LINK_TCP)
			atomic_fetch_add_explicit(&g->bytes_copied, it->len, memory_order_relaxed);
		return 1;
	default:
		free(it);
		return 0;
	}
}

_Static_assert(sizeof(struct fdx_view) == FDX_VIEW_SIZE_V1,
	       "struct fdx_view grew: append fields, and fill them only when view_size has them");

/* size: the caller's view size (>= FDX_VIEW_SIZE_V1); what lies past our fields is zeroed. */
static void fill_view(struct fdx_gate *g, struct fdx__gitem *it, struct fdx_view *v, size_t size)
{
	memset(v, 0, size);
	v->channel = it->ch;
	v->seq = it->seq;
	v->priv[0] = it;
	v->priv[1] = g;
	switch (it->kind) {
	case FDX__GI_BUFFER:
		v->kind = FDX_VIEW_BUFFER;
		v->data = it->data;
		v->len = it->len;
		break;
	case FDX__GI_EVENT:
		v->kind = FDX_VIEW_EVENT;
		v->data = it->data;
		v->len = it->len;
		v->event_type = it->event_type;
		v->event_flags = it->flags & FDX_EVENT_PRIORITY;
		break;
	default:
		v->kind = FDX_VIEW_FAILED;
		v->error = it->error;
		v->message = it->msg;
		break;
	}
}

/* Sleep on the event fd until an item may be there or the deadline passes. */
static void wait_for_items(struct fdx_gate *g, uint64_t deadline)
{
	struct pollfd pfd = {.fd = g->efd, .events = POLLIN};
	uint64_t now = fdx__now_ns(), junk, left;
	struct timespec ts;

	atomic_store_explicit(&g->waiting, 1, memory_order_relaxed);
	/* W2: the flag, then the queues; pairs with W1 in fdx__gate_push(). */
	atomic_thread_fence(memory_order_seq_cst);
	if (items_waiting(g))
		return;
	left = deadline > now ? deadline - now : 0;
	ts.tv_sec = (time_t)(left / 1000000000ull);
	ts.tv_nsec = (long)(left % 1000000000ull);
	if (ppoll(&pfd, 1, deadline == UINT64_MAX ? NULL : &ts, NULL) > 0)
		if (read(g->efd, &junk, sizeof(junk)) < 0 && errno != EAGAIN)
			FDX_LOG_ERR(g->log, "gate %u: eventfd: %s", g->id, fdx_strerror(-errno));
}

FDX_API int(fdx_gate_next)(struct fdx_gate *g, struct fdx_view *v, int timeout_ms)
{
	return fdx_gate_next_view(g, v, FDX_VIEW_SIZE_V1, timeout_ms);
}

FDX_API int fdx_gate_next_view(struct fdx_gate *g, struct fdx_view *v, size_t view_size,
			       int timeout_ms)
{
	uint64_t start = 0, deadline = 0, now, wake;
	struct fdx__gitem *it;
	uint32_t spins = 0;

	if (!g || !v || view_size < FDX_VIEW_SIZE_V1)
		return -EINVAL;
	for (;;) {
		if (atomic_load_explicit(&g->closing, memory_order_relaxed))
			return FDX_ECLOSED;
		while ((it = pop_item(g))) {
			if (take_item(g, it)) {
				fill_view(g, it, v, view_size);
				if (g->pend_total >= g->flush_at)
					flush_credit(g);
				return 0;
			}
		}
		/*
		 * Nothing to read. Credit a producer is starving for goes now; the
		 * rest waits until we are about to sleep, so that a consumer that is
		 * briefly ahead does not send a control message per buffer.
		 */
		if (g->starving)
			flush_credit(g);
		if (timeout_ms == 0) {
			flush_credit(g);
			atomic_store_explicit(&g->waiting, 1, memory_order_relaxed);
			atomic_thread_fence(memory_order_seq_cst); /* W2 */
			if (items_waiting(g))
				continue;
			return -EAGAIN;
		}
		if (!start) {
			start = fdx__now_ns();
			deadline = timeout_ms < 0 ? UINT64_MAX
						  : start + (uint64_t)timeout_ms * 1000000ull;
		}
		if (++spins < SPIN_ROUNDS || (spins % 64 && spins < (1u << 24)) ||
		    fdx__now_ns() - start < SPIN_NS) {
			fdx_cpu_relax();
			continue;
		}
		now = fdx__now_ns();
		if (deadline != UINT64_MAX && now >= deadline) {
			flush_credit(g);
			return -EAGAIN;
		}
		wake = deadline;
		if (g->pend_total) {
			if (!g->pend_since)
				g->pend_since = now;
			if (g->short_credit || now - g->pend_since >= CREDIT_DELAY_NS)
				flush_credit(g);
			else if (g->pend_since + CREDIT_DELAY_NS < wake)
				wake = g->pend_since + CREDIT_DELAY_NS;
		}
		wait_for_items(g, wake);
	}
}

static int view_item(struct fdx_gate *g, struct fdx_view *v, struct fdx__gitem **out)
{
	struct fdx__gitem *it;

	if (!g || !v || v->priv[1] != g || !v->priv[0])
		return -EINVAL;
	it = v->priv[0];
	if (it->released)
		return -EINVAL;
	*out = it;
	return 0;
}

/*
 * A remote producer's buffer breaks the record format (a record above our
 * max_record, a header cut short): its channel fails as for a bad frame. The
 * producer is told on its control stream, what it sent after is dropped
 * unread, and a FAILED view follows. A local producer is this process: the
 * buffer is skipped and the error returned, as before.
 */
static void fail_bad_records(struct fdx_gate *g, const struct fdx__gitem *it, const char *why)
{
	struct fdx__gchan *c = &g->ch[it->ch];

	if (c->lpart || !of_opening(c, it))
		return; /* local, or closed or failed already */
	if (!fdx__ichan_fail(g, it->ch, it->sess, FDX_EPROTO, why))
		return; /* one FAILED view per opening */
	c->poisoned = it->sess;
	g->port->ops->drop_input(g->port, g, it->ch, it->sess, FDX_EPROTO, why);
}

FDX_API int fdx_gate_next_record(struct fdx_gate *g, struct fdx_view *v, const void **rec,
				 uint32_t *len)
{
	struct fdx__gitem *it;
	struct fdx__gchan *c;
	const uint8_t *d;
	uint32_t left, L;
	char why[192];

	if (!rec || !len || view_item(g, v, &it) < 0 || it->kind != FDX__GI_BUFFER)
		return -EINVAL;
	c = &g->ch[it->ch];
	d = it->data;
	if (v->cursor > it->len)
		return -EINVAL;
	if (it->abort_before) { /* the record being reassembled was withdrawn */
		c->asm_active = 0;
		it->abort_before = 0;
	}
	left = it->len - v->cursor;
	if (c->asm_active) {
		uint32_t take = c->asm_len - c->asm_have;

		if (take > left)
			take = left;
		memcpy(c->asm_buf + c->asm_have, d + v->cursor, take);
		c->asm_have += take;
		v->cursor += take;
		atomic_fetch_add_explicit(&g->bytes_reassembled, take, memory_order_relaxed);
		if (c->asm_have < c->asm_len)
			return 0;
		c->asm_active = 0;
		*rec = c->asm_buf;
		*len = c->asm_len;
		atomic_fetch_add_explicit(&g->records, 1, memory_order_relaxed);
		return 1;
	}
	if (left == 0)
		return 0;
	if (left < REC_HDR) {
		snprintf(why, sizeof(why),
			 "gate %u channel %u: buffer %u ends inside a record header", g->id, it->ch,
			 it->seq);
		FDX_LOG_ERR(g->log, "%s", why);
		v->cursor = it->len;
		fail_bad_records(g, it, why);
		return FDX_EPROTO;
	}
	L = fdx__rec_hdr_get(d + v->cursor);
	v->cursor += REC_HDR;
	left -= REC_HDR;
	if (L > g->max_record) {
		snprintf(why, sizeof(why),
			 "gate %u channel %u: a record of %u bytes, above the %u allowed", g->id,
			 it->ch, L, g->max_record);
		FDX_LOG_ERR(g->log, "%s", why);
		v->cursor = it->len;
		fail_bad_records(g, it, why);
		return FDX_EPROTO;
	}
	if (L <= left) {
		*rec = d + v->cursor;
		*len = L;
		v->cursor += L;
		atomic_fetch_add_explicit(&g->records, 1, memory_order_relaxed);
		return 1;
	}
	/* It continues in the next buffer of this channel. */
	if (L > c->asm_cap) {
		uint32_t cap = c->asm_cap ? c->asm_cap : 65536;
		uint8_t *b;

		while (cap < L)
			cap = cap > UINT32_MAX / 2 ? L : 2 * cap;
		b = realloc(c->asm_buf, cap);
		if (!b) {
			v->cursor -= REC_HDR;
			return -ENOMEM;
		}
		c->asm_buf = b;
		c->asm_cap = cap;
	}
	memcpy(c->asm_buf, d + v->cursor, left);
	atomic_fetch_add_explicit(&g->bytes_reassembled, left, memory_order_relaxed);
	c->asm_len = L;
	c->asm_have = left;
	c->asm_active = 1;
	v->cursor = it->len;
	return 0;
}

FDX_API int fdx_gate_release(struct fdx_gate *g, struct fdx_view *v)
{
	const struct fdx__recycler *h;
	struct fdx__gitem *it;
	struct fdx__gchan *c;

	if (view_item(g, v, &it) < 0)
		return -EINVAL;
	it->released = 1;
	v->priv[0] = NULL;
	c = &g->ch[it->ch];
	h = home_of(it->link_type);
	if (it->kind == FDX__GI_BUFFER && h->release)
		h->release(g, it); /* its memory first, its credit after */
	if (it->kind == FDX__GI_BUFFER) {
		struct fdx__gchan_timing *t =
			atomic_load_explicit(&c->timing, memory_order_relaxed);

		/* The consumer thread: the hold histogram's one writer. */
		if (t && it->t_arrive) {
			uint64_t now = fdx__now_ns();

			fdx__hist_add(&t->hold, now > it->t_arrive ? now - it->t_arrive : 0);
		}
		atomic_fetch_sub_explicit(&c->held, 1, memory_order_relaxed);
		atomic_fetch_sub_explicit(&g->held, 1, memory_order_relaxed);
		/* Credit only to the opening the buffer came from (the same stream may reopen). */
		if (of_opening(c, it)) {
			if (h->offsets_back && pend_offset(c, it->offset) < 0)
				FDX_LOG_ERR(g->log,
					    "gate %u channel %u: out of memory: an offset is lost",
					    g->id, it->ch);
			if (c->floating > 0 && unused_credit(c) >= c->backlog) {
				c->floating--;
				atomic_store_explicit(&c->st_floating, c->floating,
						      memory_order_relaxed);
				give_floating(g);
				g->pend_total++; /* the offset still goes back */
			} else {
				announce(g, c, 1);
			}
			mark_dirty(g, c);
			/*
			 * Credit goes in batches, and whenever next() waits; at once
			 * for a local channel, for a producer that has none left, and
			 * after the end of the channel (its producer waits in finish).
			 */
			if (h->eager || c->ended || g->starving || g->pend_total >= g->flush_at)
				flush_credit(g);
		} else if (c->float_debt) {
			/* A view of an ended opening: its floating credit is free again. */
			c->float_debt--;
			give_floating(g);
		}
	}
	item_free(g, it);
	return 0;
}

FDX_API int fdx_gate_event_fd(const struct fdx_gate *g)
{
	return g ? g->efd : -EINVAL;
}
