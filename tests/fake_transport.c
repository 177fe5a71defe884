/* SPDX-License-Identifier: MIT */
/* A fake transport for runtime/'s credit protocol: see fake_transport.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fdx/error.h>
#include <fdx/partition.h>

#include "runtime/clock.h"
#include "tests/fake_transport.h"

static void die(const char *what)
{
	fprintf(stderr, "fake transport: %s\n", what);
	abort();
}

static void log_capture(void *ud, enum fdx_log_level lvl, const char *func, int line,
			const char *msg)
{
	struct fdx_exchange *ex = ud;

	(void)func;
	(void)line;
	if (lvl == FDX_LOG_ERR)
		ex->log_errors++;
	if (lvl == FDX_LOG_WARN)
		ex->log_warnings++;
	snprintf(ex->log_last, sizeof(ex->log_last), "%s", msg);
}

static struct fake_frame *frame_add(struct fdx_exchange *ex, const struct fake_frame *f)
{
	if (ex->n_frames == FAKE_MAX_FRAMES)
		die("too many frames");
	ex->frames[ex->n_frames] = *f;
	return &ex->frames[ex->n_frames++];
}

static struct fake_ctl *ctl_add(struct fdx_exchange *ex, uint32_t kind, uint32_t n)
{
	struct fake_ctl *c;

	if (ex->n_ctl == FAKE_MAX_CTL)
		die("too many control messages");
	if (n > FAKE_MAX_OFFS)
		die("too many offsets in one control message");
	c = &ex->ctl[ex->n_ctl++];
	memset(c, 0, sizeof(*c));
	c->kind = kind;
	c->n = n;
	c->written_ns = fdx__now_ns(); /* as a session stamps its CreditUpdate */
	return c;
}

static struct fdx_gate *gate_find(struct fdx_exchange *ex, uint32_t id)
{
	for (uint32_t i = 0; i < ex->n_gates; i++)
		if (ex->gates[i]->id == id)
			return ex->gates[i];
	return NULL;
}

static int part_alive(struct fdx_exchange *ex, const struct fdx_partition *p)
{
	for (uint32_t i = 0; i < ex->n_parts; i++)
		if (ex->parts[i] == p)
			return 1;
	return 0;
}

/* The live link of channel ch of gate in session sess (and opening, unless UINT64_MAX). */
static struct fake_link *link_find(struct fdx_exchange *ex, uint32_t gate, uint32_t ch,
				   uint64_t sess, uint64_t opening)
{
	for (uint32_t i = 0; i < ex->n_links; i++) {
		struct fake_link *lk = &ex->links[i];

		if (!lk->gone && lk->g->id == gate && lk->ch == ch && lk->sess == sess &&
		    (opening == UINT64_MAX || lk->opening == opening))
			return lk;
	}
	return NULL;
}

struct fake_link *fake_link_of(struct fdx_exchange *ex, struct fdx_partition *p, uint32_t sub)
{
	for (uint32_t i = ex->n_links; i-- > 0;)
		if (ex->links[i].p == p && ex->links[i].s == &p->subs[sub])
			return &ex->links[i];
	return NULL;
}

/* ---- frames: the shm link's checks, then an item for the gate -------------- */

/*
 * Frame f of link lk reaches the gate as a remote shm frame does: checked by
 * fdx__ichan_accept(), then pushed (data: a buffer's bytes, an event's
 * payload). A refused frame kills the link (see kill_links()).
 */
static int frame_in(struct fdx_exchange *ex, struct fake_link *lk, struct fdx_gate *g,
		    struct fake_frame *f, const void *data)
{
	struct fdx__gitem *it;
	uint64_t opening = 0;

	if (lk && (lk->gone || lk->killed)) {
		f->accepted = 0; /* the connection is gone: nothing arrives */
		frame_add(ex, f);
		return 0;
	}
	f->accepted = fdx__ichan_accept(g, f->ch, f->sess, FDX_LINK_SHM, f->kind, f->seq,
					f->kind == FDX__GI_EVENT &&
						f->event_type == FDX_EVENT_END_OF_PARTITION,
					f->st, &opening, f->why, sizeof(f->why));
	frame_add(ex, f);
	if (f->accepted < 0) {
		if (lk) {
			lk->killed = 1;
			snprintf(lk->why, sizeof(lk->why), "%s", f->why);
		}
		return -1;
	}
	if (f->accepted == 0)
		return 0;
	if (f->kind == FDX__GI_CLOSED) {
		if (lk)
			lk->gone = 1; /* accept closed the channel: its CLOSED is queued */
		return 1;
	}
	it = fdx__gitem_new(f->kind, f->ch, f->kind == FDX__GI_EVENT ? f->len : 0);
	if (!it)
		die("out of memory");
	it->link_type = FDX_LINK_SHM;
	it->sess = f->sess;
	it->opening = opening;
	it->seq = f->seq;
	it->backlog = f->backlog;
	if (f->kind == FDX__GI_BUFFER) {
		it->len = f->len;
		it->data = data;
		it->offset = f->off;
	} else if (f->kind == FDX__GI_EVENT) {
		it->len = f->len;
		it->event_type = f->event_type;
		it->flags = f->flags & FDX_EVENT_PRIORITY;
		if (f->len)
			memcpy(it->payload, data, f->len);
		it->data = it->payload;
	}
	fdx__gate_push(g, it);
	return 1;
}

static struct fake_link *link_of_sub(struct fdx__sub *s)
{
	return &s->part->ex->links[s->chan];
}

static int shm_buffer(struct fdx__sub *s, uint32_t seg, uint64_t off, uint32_t len, uint32_t seq,
		      uint32_t backlog)
{
	struct fake_link *lk = link_of_sub(s);
	struct fake_frame f = {.kind = FDX__GI_BUFFER,
			       .link = FDX_LINK_SHM,
			       .gate = s->gate,
			       .ch = s->gate_channel,
			       .sess = lk->sess,
			       .seq = seq,
			       .backlog = backlog,
			       .off = off,
			       .len = len,
			       .st = s->stamp};

	(void)seg; /* its reference comes back with the offset, through the credit */
	if (s->part->ex->fail_buffer_in && --s->part->ex->fail_buffer_in == 0)
		return -ENOMEM; /* as a link out of memory: nothing went */
	frame_in(s->part->ex, lk, lk->g, &f, s->part->region->base + off);
	return 0;
}

static uint32_t gi_kind_of(uint32_t send_kind)
{
	return send_kind == FDX__SEND_EVENT   ? FDX__GI_EVENT
	       : send_kind == FDX__SEND_ABORT ? FDX__GI_ABORT
	       : send_kind == FDX__SEND_CLOSE ? FDX__GI_CLOSED
					      : FDX__GI_BACKLOG;
}

static int shm_control(struct fdx__sub *s, uint32_t kind, struct fdx__pitem *ev, uint32_t seq,
		       uint32_t backlog)
{
	struct fake_link *lk = link_of_sub(s);
	struct fake_frame f = {.kind = gi_kind_of(kind),
			       .link = FDX_LINK_SHM,
			       .gate = s->gate,
			       .ch = s->gate_channel,
			       .sess = lk->sess,
			       .seq = seq,
			       .backlog = backlog};

	if (ev) {
		f.len = ev->len;
		f.event_type = ev->event_type;
		f.flags = ev->flags;
	}
	frame_in(s->part->ex, lk, lk->g, &f, ev ? ev->payload : NULL);
	free(ev); /* the link's */
	return 0;
}

/* local: the real local link (runtime/local_link.c), each frame recorded first. */
static int local_buffer(struct fdx__sub *s, uint32_t seg, uint64_t off, uint32_t len, uint32_t seq,
			uint32_t backlog)
{
	struct fake_frame f = {.kind = FDX__GI_BUFFER,
			       .link = FDX_LINK_LOCAL,
			       .gate = s->gate,
			       .ch = s->gate_channel,
			       .sess = FDX__SESS_LOCAL,
			       .seq = seq,
			       .backlog = backlog,
			       .off = off,
			       .len = len,
			       .accepted = 1};
	int err = fdx__local_link.buffer(s, seg, off, len, seq, backlog);

	if (!err)
		frame_add(s->part->ex, &f);
	return err;
}

static int local_control(struct fdx__sub *s, uint32_t kind, struct fdx__pitem *ev, uint32_t seq,
			 uint32_t backlog)
{
	struct fake_frame f = {.kind = gi_kind_of(kind),
			       .link = FDX_LINK_LOCAL,
			       .gate = s->gate,
			       .ch = s->gate_channel,
			       .sess = FDX__SESS_LOCAL,
			       .seq = seq,
			       .backlog = backlog,
			       .accepted = 1};
	int err;

	if (ev) { /* the link frees it */
		f.len = ev->len;
		f.event_type = ev->event_type;
		f.flags = ev->flags;
	}
	err = fdx__local_link.control(s, kind, ev, seq, backlog);
	if (!err && kind != FDX__SEND_CLOSE)
		frame_add(s->part->ex, &f);
	return err;
}

static const struct fdx__link_ops fake_shm_link = {FDX_LINK_SHM, 1, shm_buffer, shm_control};
static const struct fdx__link_ops fake_local_link = {FDX_LINK_LOCAL, 1, local_buffer,
						     local_control};

/* ---- the port ------------------------------------------------------------- */

static void port_ready(struct fdx__port *pt, struct fdx__sub *s)
{
	struct fdx_exchange *ex = pt->ctx;

	ex->n_ready++;
	if (atomic_exchange_explicit(&s->ready, 1, memory_order_relaxed))
		return; /* queued already */
	if (ex->n_readyq == FAKE_MAX_READY)
		die("ready queue full");
	ex->readyq[ex->n_readyq++] = s;
}

static void port_kick(struct fdx__port *pt)
{
	struct fdx_exchange *ex = pt->ctx;

	ex->n_kicks++;
}

static int port_partition_attach(struct fdx__port *pt, struct fdx_partition *p)
{
	struct fdx_exchange *ex = pt->ctx;

	if (ex->n_parts == FAKE_MAX_PARTS)
		return -ENOMEM;
	ex->parts[ex->n_parts++] = p;
	ex->n_attach++;
	return 0;
}

/* The fake keeps nothing: every channel closes now (what is in flight comes back at once). */
static int port_partition_detach(struct fdx__port *pt, struct fdx_partition *p)
{
	struct fdx_exchange *ex = pt->ctx;
	uint32_t i, k;

	ex->n_detach++;
	for (i = 0; i < ex->n_parts; i++)
		if (ex->parts[i] == p) {
			ex->parts[i] = ex->parts[--ex->n_parts];
			break;
		}
	/* Its channels close, each after its data (what is still queued is the caller's). */
	for (i = 0; i < ex->n_links; i++) {
		struct fake_link *lk = &ex->links[i];

		if (lk->p != p || lk->gone)
			continue;
		if (lk->link == FDX_LINK_LOCAL) {
			fdx__ichan_close(lk->g, lk->ch, FDX__SESS_LOCAL);
		} else if (!lk->killed && !atomic_load(&lk->s->error)) {
			fdx__sub_close(lk->s); /* CLOSE through the link: accept closes it */
		} else {
			fdx__ichan_close(lk->g, lk->ch, lk->sess); /* the control stream's close */
		}
		lk->gone = 1;
	}
	for (i = 0, k = 0; i < ex->n_readyq; i++)
		if (ex->readyq[i]->part != p)
			ex->readyq[k++] = ex->readyq[i];
	ex->n_readyq = k;
	return 0;
}

static int port_connect(struct fdx__port *pt, struct fdx_partition *p, uint32_t sub,
			const char *addr, uint32_t gate, uint32_t gate_channel, uint32_t link,
			int timeout_ms)
{
	struct fdx_exchange *ex = pt->ctx;
	struct fdx__sub *s = &p->subs[sub];
	struct fdx_gate *g = gate_find(ex, gate);
	struct fake_link *lk;
	uint64_t opening = 0;
	uint32_t bad = 0;
	int err;

	(void)timeout_ms;
	if (strcmp(addr, ex->port.address) != 0 || !g || gate_channel >= g->n)
		return -ENOENT;
	if (link == FDX_LINK_AUTO)
		link = FDX_LINK_SHM;
	if (link == FDX_LINK_TCP)
		return -EOPNOTSUPP;
	if (ex->n_links == FAKE_MAX_LINKS)
		return -ENOMEM;
	/* The subpartition's link fields first: the consumer's credit reaches s through them. */
	s->gate = gate;
	s->gate_channel = gate_channel;
	s->chan = ex->n_links;
	if (link == FDX_LINK_LOCAL) {
		s->lgate = g;
		err = fdx__ichan_open(g, gate_channel, FDX__SESS_LOCAL, FDX_LINK_LOCAL, p, s,
				      &opening);
	} else {
		err = fdx__ichan_open(g, gate_channel, ex->sess, FDX_LINK_SHM, NULL, NULL,
				      &opening);
	}
	if (err) {
		s->lgate = NULL;
		return err;
	}
	lk = &ex->links[ex->n_links++];
	memset(lk, 0, sizeof(*lk));
	lk->p = p;
	lk->s = s;
	lk->g = g;
	lk->ch = gate_channel;
	lk->link = link;
	lk->sess = link == FDX_LINK_LOCAL ? FDX__SESS_LOCAL : ex->sess;
	lk->opening = opening;
	if (link == FDX_LINK_LOCAL) {
		s->opening = opening; /* its items name it */
		fdx__sub_prepare(s, &fake_local_link);
		fdx__sub_attach(s, &fake_local_link, g->exclusive);
	} else {
		fdx__sub_prepare(s, &fake_shm_link);
		/* The answer to the open carries the exclusive credit: into the ledger first. */
		struct fdx__credit_stamp st = {g->exclusive, 0};

		if (fdx__sub_credit(s, g->exclusive, NULL, 0, 0, &st, &bad) < 0)
			die("initial credit refused");
		fdx__sub_attach(s, &fake_shm_link, 0);
	}
	port_ready(pt, s); /* what was emitted before may go now */
	port_kick(pt);
	return 0;
}

static int port_gate_attach(struct fdx__port *pt, struct fdx_gate *g)
{
	struct fdx_exchange *ex = pt->ctx;

	if (gate_find(ex, g->id))
		return -EEXIST;
	if (ex->n_gates == FAKE_MAX_GATES)
		return -ENOMEM;
	ex->gates[ex->n_gates++] = g;
	ex->n_gate_attach++;
	return 0;
}

static void port_gate_detach(struct fdx__port *pt, struct fdx_gate *g)
{
	struct fdx_exchange *ex = pt->ctx;

	ex->n_gate_detach++;
	for (uint32_t i = 0; i < ex->n_gates; i++)
		if (ex->gates[i] == g) {
			ex->gates[i] = ex->gates[--ex->n_gates];
			break;
		}
	/* Its open channels fail at their producers, unless they ended. */
	for (uint32_t i = 0; i < ex->n_links; i++) {
		struct fake_link *lk = &ex->links[i];

		if (lk->g != g || lk->gone)
			continue;
		lk->gone = 1;
		if (!lk->s)
			continue;
		if (!fdx__ichan_ended(g, lk->ch))
			fdx__sub_fail(lk->s, FDX_EPEERGONE, "its gate is gone",
				      lk->link == FDX_LINK_SHM);
		if (lk->link == FDX_LINK_LOCAL) {
			atomic_store(&lk->s->connected, 0);
			fdx__sub_discard(lk->s);
			lk->s->lgate = NULL;
		} else {
			fdx__sub_link_gone(lk->s); /* nothing goes through it any more */
		}
	}
}

/*
 * As an idle control stream does: the channel's outbox is taken whole at
 * once (runtime/credit_outbox.h), as one credit record.
 */
static int port_announce(struct fdx__port *pt, struct fdx_gate *g, uint32_t ch, uint64_t sess,
			 uint64_t opening)
{
	struct fdx_exchange *ex = pt->ctx;
	struct fake_link *lk = link_find(ex, g->id, ch, sess, opening);
	uint64_t offs[4096];
	uint32_t added = 0, n = 0, proof = 0;
	uint64_t total = 0;
	struct fake_ctl *c;
	int more = 0;

	if (lk)
		n = fdx__outbox_take(&g->ch[ch].outbox, opening, &added, offs, 4096, &more, &total,
				     &proof);
	if (more) {
		fprintf(stderr, "fake_transport: more than 4096 offsets waiting\n");
		abort();
	}
	c = ctl_add(ex, FAKE_CTL_CREDIT, n);

	c->gate = g->id;
	c->ch = ch;
	c->sess = sess;
	c->opening = opening;
	c->added = added;
	c->total = total;
	c->proof = proof;
	if (n)
		memcpy(c->offs, offs, n * sizeof(*offs));
	if (lk) {
		c->p = lk->p;
		c->s = lk->s;
	}
	c->port_ret = lk ? 0 : -ENOENT; /* that opening is over: nothing is sent */
	return c->port_ret;
}

static int port_local_credit(struct fdx__port *pt, struct fdx_partition *p, uint64_t serial,
			     struct fdx__sub *s, uint32_t added, const uint64_t *offs, uint32_t n)
{
	struct fdx_exchange *ex = pt->ctx;
	struct fake_ctl *c = ctl_add(ex, FAKE_CTL_LOCAL_CREDIT, n);

	c->p = p;
	c->serial = serial;
	c->s = s;
	if (part_alive(ex, p) && p->serial == serial) { /* else s is gone with it */
		c->gate = s->gate;
		c->ch = s->gate_channel;
	}
	c->sess = FDX__SESS_LOCAL;
	c->added = added;
	if (n)
		memcpy(c->offs, offs, n * sizeof(*offs));
	return 0;
}

static void port_drop_input(struct fdx__port *pt, struct fdx_gate *g, uint32_t ch, uint64_t sess,
			    int code, const char *msg)
{
	struct fdx_exchange *ex = pt->ctx;
	struct fake_ctl *c = ctl_add(ex, FAKE_CTL_DROP, 0);
	struct fake_link *lk = link_find(ex, g->id, ch, sess, UINT64_MAX);

	c->gate = g->id;
	c->ch = ch;
	c->sess = sess;
	c->code = code;
	snprintf(c->msg, sizeof(c->msg), "%s", msg);
	if (lk) {
		c->p = lk->p;
		c->s = lk->s;
		c->opening = lk->opening;
		lk->gone = 1; /* the channel ends here: its credit is refused from now on */
	}
}

static const struct fdx__port_ops fake_port_ops = {
	.partition_attach = port_partition_attach,
	.partition_detach = port_partition_detach,
	.connect = port_connect,
	.ready = port_ready,
	.kick = port_kick,
	.gate_attach = port_gate_attach,
	.gate_detach = port_gate_detach,
	.announce = port_announce,
	.local_credit = port_local_credit,
	.drop_input = port_drop_input,
};

/* ---- what the test drives ------------------------------------------------- */

struct fdx_exchange *fake_exchange_create(void)
{
	struct fdx_exchange *ex = calloc(1, sizeof(*ex));

	if (!ex)
		return NULL;
	fdx__log_init(&ex->log, log_capture, ex, FDX_LOG_DEBUG);
	ex->port.ops = &fake_port_ops;
	ex->port.ctx = ex;
	ex->port.log = &ex->log;
	ex->port.address = "fake:0";
	ex->sess = 2;
	return ex;
}

void fake_exchange_destroy(struct fdx_exchange *ex)
{
	if (ex && (ex->n_parts || ex->n_gates))
		die("destroyed with partitions or gates attached");
	free(ex);
}

/* A refused frame: the connection dies, failing the channel at both ends. */
static int kill_links(struct fdx_exchange *ex)
{
	int n = 0;

	for (uint32_t i = 0; i < ex->n_links; i++) {
		struct fake_link *lk = &ex->links[i];

		if (!lk->killed || lk->gone)
			continue;
		lk->gone = 1;
		fdx__ichan_fail(lk->g, lk->ch, lk->sess, FDX_EPROTO, lk->why);
		if (lk->s) {
			fdx__sub_link_gone(lk->s);
			fdx__sub_fail(lk->s, FDX_EPROTO, lk->why, 1);
		}
		n++;
	}
	return n;
}

int fake_pump(struct fdx_exchange *ex)
{
	int did = 0;

	for (uint32_t rounds = 0;; rounds++) {
		if (rounds > 100000)
			die("the sender never settles");
		if (ex->n_readyq) {
			struct fdx__sub *s = ex->readyq[0];

			memmove(ex->readyq, ex->readyq + 1, --ex->n_readyq * sizeof(*ex->readyq));
			/* Out of the queue before it is pumped: what comes meanwhile queues it again. */
			atomic_store(&s->ready, 0);
			if (fdx__sub_pump(s))
				did++;
			continue;
		}
		if (!kill_links(ex))
			break;
	}
	return did;
}

void fake_tick(struct fdx_exchange *ex, uint64_t now)
{
	for (uint32_t i = 0; i < ex->n_parts; i++)
		fdx__part_tick(ex->parts[i], now);
}

int fake_deliver_credit(struct fdx_exchange *ex)
{
	int n = 0;

	for (; ex->ctl_next < ex->n_ctl; ex->ctl_next++, n++) {
		struct fake_ctl *c = &ex->ctl[ex->ctl_next];
		struct fake_link *lk;
		uint32_t bad = 0;

		c->delivered = 1;
		switch (c->kind) {
		case FAKE_CTL_LOCAL_CREDIT:
			/* Applied only to a partition that still exists. */
			if (part_alive(ex, c->p) && c->p->serial == c->serial) {
				c->reached = 1;
				c->result = fdx__sub_credit(c->s, c->added, c->offs, c->n,
							    c->written_ns, NULL, &bad);
			}
			break;
		case FAKE_CTL_CREDIT:
			if (c->port_ret < 0)
				break; /* never sent */
			lk = link_find(ex, c->gate, c->ch, c->sess, c->opening);
			if (lk && c->total) /* what a raw producer's next buffers go with */
				lk->st = (struct fdx__credit_stamp){(uint32_t)c->total, c->proof};
			if (lk && lk->s && part_alive(ex, lk->p)) {
				struct fdx__credit_stamp st = {(uint32_t)c->total, c->proof};

				c->reached = 1;
				c->result =
					fdx__sub_credit(lk->s, c->added, c->offs, c->n,
							c->written_ns, c->total ? &st : NULL, &bad);
			}
			break;
		case FAKE_CTL_DROP:
			if (c->s && part_alive(ex, c->p)) {
				c->reached = 1;
				fdx__sub_link_gone(c->s);
				fdx__sub_fail(c->s, c->code, c->msg, 1);
			}
			break;
		default:
			break;
		}
	}
	return n;
}

int fake_open_raw(struct fdx_exchange *ex, struct fdx_gate *g, uint32_t ch, uint64_t sess,
		  uint64_t *opening)
{
	struct fake_link *lk;
	int err;

	if (ex->n_links == FAKE_MAX_LINKS)
		return -ENOMEM;
	err = fdx__ichan_open(g, ch, sess, FDX_LINK_SHM, NULL, NULL, opening);
	if (err)
		return err;
	lk = &ex->links[ex->n_links++];
	memset(lk, 0, sizeof(*lk));
	lk->g = g;
	lk->ch = ch;
	lk->link = FDX_LINK_SHM;
	lk->sess = sess;
	lk->opening = *opening;
	lk->st.total = g->exclusive; /* the answer's credit, unproven */
	return 0;
}

int fake_inject(struct fdx_exchange *ex, struct fdx_gate *g, struct fake_frame *f, const void *data)
{
	struct fake_link *lk = link_find(ex, g->id, f->ch, f->sess, UINT64_MAX);

	f->link = FDX_LINK_SHM;
	f->gate = g->id;
	if (f->kind == FDX__GI_BUFFER && !f->stamped && lk)
		f->st = lk->st;
	memset(f->why, 0, sizeof(f->why));
	return frame_in(ex, lk, g, f, data);
}

uint32_t fake_count_frames(const struct fdx_exchange *ex, uint32_t gate, uint32_t ch, uint32_t kind)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < ex->n_frames; i++)
		if (ex->frames[i].gate == gate && ex->frames[i].ch == ch &&
		    (!kind || ex->frames[i].kind == kind))
			n++;
	return n;
}

const struct fake_frame *fake_nth_frame(const struct fdx_exchange *ex, uint32_t gate, uint32_t ch,
					uint32_t kind, uint32_t i)
{
	for (uint32_t k = 0; k < ex->n_frames; k++)
		if (ex->frames[k].gate == gate && ex->frames[k].ch == ch &&
		    (!kind || ex->frames[k].kind == kind) && i-- == 0)
			return &ex->frames[k];
	return NULL;
}

uint32_t fake_count_ctl(const struct fdx_exchange *ex, uint32_t gate, uint32_t ch, uint32_t kind)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < ex->n_ctl; i++)
		if (ex->ctl[i].gate == gate && ex->ctl[i].ch == ch && ex->ctl[i].kind == kind)
			n++;
	return n;
}

const struct fake_ctl *fake_last_ctl(const struct fdx_exchange *ex, uint32_t gate, uint32_t ch,
				     uint32_t kind)
{
	for (uint32_t i = ex->n_ctl; i-- > 0;)
		if (ex->ctl[i].gate == gate && ex->ctl[i].ch == ch && ex->ctl[i].kind == kind)
			return &ex->ctl[i];
	return NULL;
}
