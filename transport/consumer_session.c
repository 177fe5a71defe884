/* SPDX-License-Identifier: MIT */
/*
 * The consumer side of the control plane: a stream a producer opened to us
 * (a session), the input channels it opens on our gates, and the control
 * plane's registry of those gates (struct fdx__ctl_gate). A session greets,
 * opens, closes and announces backlogs; credit released by the owner or the
 * data plane is coalesced per channel and sent as one CreditUpdate when the
 * stream is idle; statistics are answered from a snapshot.
 *
 * Locking: everything here is under ex->lock. The cq thread holds it when it
 * hands a completion over (fdx__session_event()); the public functions and
 * the data plane's calls take it themselves. Gate hooks run with it held and
 * must not call back into the exchange. fdx__session_stats_answer() is the
 * one exception: the cq thread calls it without ex->lock, which it takes
 * only once its snapshot is made (the data plane's lock comes first).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>

#include <fdx/error.h>
#include <fdx/exchange.h>

#include "../runtime/clock.h"
#include "../runtime/idmap.h"
#include "../runtime/log.h"
#include "control_codec.h"
#include "control_limits.h"
#include "exchange.pb-c.h"
#include "exchange_private.h"

#define GATE_CHANNELS_MAX 65536u

/* ---- consumer side: gates and input channels ------------------------------ */

static struct fdx__ctl_gate *ctl_gate_find(struct fdx_exchange *ex, uint32_t id)
{
	for (struct fdx__ctl_gate *g = ex->gates; g; g = g->next)
		if (g->id == id)
			return g;
	return NULL;
}

static struct fdx__in_chan *session_chan(const struct fdx__session *s, uint32_t id)
{
	return fdx__idmap_get(&s->ids, id);
}

static int session_chan_insert(struct fdx__session *s, struct fdx__in_chan *c)
{
	if (fdx__idmap_reserve(&s->ids) < 0)
		return -ENOMEM;
	fdx__idmap_put(&s->ids, c->id, c);
	return 0;
}

/* Remove c from s's table and its list of channels owing credit. */
static void session_chan_remove(struct fdx__session *s, struct fdx__in_chan *c)
{
	fdx__idmap_del(&s->ids, c->id);
	if (c->dirty) {
		struct fdx__in_chan **pp = &s->dirty_head, *prev = NULL;

		while (*pp != c) {
			prev = *pp;
			pp = &(*pp)->next_dirty;
		}
		*pp = c->next_dirty;
		if (s->dirty_tail == c)
			s->dirty_tail = prev;
	}
}

/* With ex->lock held: close every input channel of s and tell the owner why. */
static void session_drop_channels(struct fdx__session *s, int err, const char *why)
{
	struct fdx_exchange *ex = s->ex;
	char msg[192];

	for (uint32_t i = 0; i < s->ids.cap; i++) {
		struct fdx__in_chan *c = s->ids.e[i].p;
		struct fdx__ctl_gate *g;

		if (!c)
			continue;
		g = ctl_gate_find(ex, c->gate);
		if (g && c->gate_channel < g->n_channels && g->chans[c->gate_channel] == c)
			g->chans[c->gate_channel] = NULL;
		snprintf(msg, sizeof(msg), "TaskManager %s: %s", s->peer_tm, why);
		if (c->gone) /* its gate went already: nobody to tell */
			g = NULL;
		else if (g && g->hooks)
			g->hooks->failed(g->hook_ud, c->gate_channel, s->serial, err, msg);
		else
			fdx__exchange_ev_channel_failed_locked(ex, 0, c->gate, c->gate_channel, err,
							       s->peer_tm, msg);
		fdx__outbox_fini(&c->own);
		free(c);
		s->ids.e[i].p = NULL;
	}
	s->ids.n = 0;
	s->dirty_head = s->dirty_tail = NULL;
}

/* ---- server side: sessions ----------------------------------------------- */

static void session_send_status(struct fdx__session *s)
{
	grpc_slice details;
	grpc_op op;

	if (s->status_sent || s->q.busy)
		return;
	details = grpc_slice_from_copied_string(s->final_msg);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	op.data.send_status_from_server.status = s->final_code;
	op.data.send_status_from_server.status_details = &details;
	fdx__ctl_start_batch(s->call, &op, 1, &s->t_status, &s->pending);
	grpc_slice_unref(details);
	s->status_sent = 1;
}

/* End the stream with a status (after what is queued); the first reason wins. */
void fdx__session_finish(struct fdx__session *s, grpc_status_code code, const char *msg)
{
	if (!s->finishing) {
		s->finishing = 1;
		s->final_code = code;
		snprintf(s->final_msg, sizeof(s->final_msg), "%s", msg);
		session_drop_channels(s,
				      code == GRPC_STATUS_INVALID_ARGUMENT ||
						      code == GRPC_STATUS_FAILED_PRECONDITION
					      ? FDX_EPROTO
					      : FDX_EPEERGONE,
				      msg[0] ? msg : "closed its stream");
	}
	if (!s->q.busy && !s->q.head)
		session_send_status(s);
}

static void session_send(struct fdx__session *s, const Fdx__ControlFrame *f)
{
	struct fdx_exchange *ex = s->ex;

	if (s->q.len >= FDX__CTL_SENDQ_MAX) {
		/* It asks and never reads: cut it off rather than queue without bound. */
		FDX_LOG_WARN(&ex->log,
			     "exchange %s: TaskManager %s does not read its stream; stream failed",
			     ex->tm_id, s->peer_tm);
		ex->st.bad_frames++;
		fdx__ctl_sendq_clear(&s->q);
		fdx__session_finish(s, GRPC_STATUS_RESOURCE_EXHAUSTED,
				    "peer does not read its stream");
		grpc_call_cancel_with_status(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
					     "peer does not read its stream", NULL);
		return;
	}
	fdx__ctl_sendq_push(&s->q, fdx__ctl_pack(f));
	fdx__ctl_send_next(s->call, &s->q, &s->t_send, &s->pending);
	ex->st.frames_out++;
}

/*
 * With ex->lock held: when nothing is being sent on s, send every credit and
 * returned offset that accumulated, as one CreditUpdate (at most
 * FDX__CREDIT_MSG_OFFSETS_MAX offsets; the rest go in the next one).
 */
static void session_flush_credits(struct fdx__session *s)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__CreditUpdate cu = FDX__CREDIT_UPDATE__INIT;
	uint32_t n = 0, used = 0;
	struct fdx_exchange *ex = s->ex;
	Fdx__Credit *cr, **crp;
	struct fdx__in_chan *c;

	if (s->q.busy || s->q.head || !s->dirty_head || s->finishing)
		return;
	for (c = s->dirty_head; c; c = c->next_dirty)
		n++;
	if (!ex->credit_scratch)
		ex->credit_scratch = malloc(FDX__CREDIT_MSG_OFFSETS_MAX * sizeof(uint64_t));
	cr = calloc(n, sizeof(*cr));
	crp = calloc(n, sizeof(*crp));
	if (!cr || !crp || !ex->credit_scratch) {
		free(cr);
		free(crp);
		return; /* tried again after the next send or credit */
	}
	/*
	 * Everything each channel's outbox holds, in the order they asked; a
	 * channel whose offsets do not all fit stays first for the next one.
	 */
	n = 0;
	c = s->dirty_head;
	while (c && used < FDX__CREDIT_MSG_OFFSETS_MAX && n < FDX__CREDIT_MSG_CHANNELS_MAX) {
		struct fdx__in_chan *next = c->next_dirty;
		uint32_t added = 0, k = 0, proof = 0;
		uint64_t total = 0;
		int more = 0;

		if (c->ob)
			k = fdx__outbox_take(
				c->ob, c->ob_opening, &added, ex->credit_scratch + used,
				FDX__CREDIT_MSG_OFFSETS_MAX - used, &more, &total, &proof);
		if (k || added) {
			fdx__credit__init(&cr[n]);
			cr[n].channel = c->id;
			cr[n].added = added;
			cr[n].granted = total;
			cr[n].proof = proof;
			cr[n].n_returned_offsets = k;
			cr[n].returned_offsets = ex->credit_scratch + used;
			crp[n] = &cr[n];
			ex->st.credits_out += added;
			used += k;
			n++;
		}
		if (more)
			break; /* the budget ran out within this channel */
		c->dirty = 0;
		c->next_dirty = NULL;
		c = next;
	}
	s->dirty_head = c;
	if (!c)
		s->dirty_tail = NULL;
	if (!n) {
		free(cr);
		free(crp);
		return;
	}
	cu.n_credits = n;
	cu.written_ns = fdx__now_ns();
	cu.credits = crp;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CREDIT;
	f.credit = &cu;
	fdx__ctl_sendq_push(&s->q, fdx__ctl_pack(&f));
	ex->st.credit_msgs_out++;
	ex->st.frames_out++;
	free(cr);
	free(crp);
	fdx__ctl_send_next(s->call, &s->q, &s->t_send, &s->pending);
}

static void session_error(struct fdx__session *s, int code, uint32_t chan, const char *msg)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Error e = FDX__ERROR__INIT;

	e.code = code;
	e.message = (char *)msg;
	e.channel = chan;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_ERROR;
	f.error = &e;
	session_send(s, &f);
}

static void session_on_open(struct fdx__session *s, const Fdx__OpenChannel *o)
{
	struct fdx_exchange *ex = s->ex;
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__OpenChannelAck ack = FDX__OPEN_CHANNEL_ACK__INIT;
	struct fdx_exchange_event ev;
	struct fdx__ctl_gate *g = ctl_gate_find(ex, o->gate);
	struct fdx__sock_token *tok;
	struct fdx__in_chan *c;
	char msg[160];

	if (session_chan(s, o->id)) {
		snprintf(msg, sizeof(msg), "channel id %u opened twice", o->id);
		ex->st.bad_frames++;
		fdx__session_finish(s, GRPC_STATUS_INVALID_ARGUMENT, msg);
		return;
	}
	if (!g || o->gate_channel >= g->n_channels) {
		snprintf(msg, sizeof(msg), "TaskManager %s has no input channel %u of gate %u",
			 ex->tm_id, o->gate_channel, o->gate);
		session_error(s, -ENOENT, o->id, msg);
		return;
	}
	if (g->chans[o->gate_channel] ||
	    (g->hooks && g->hooks->busy && g->hooks->busy(g->hook_ud, o->gate_channel))) {
		snprintf(msg, sizeof(msg), "input channel %u of gate %u is open already",
			 o->gate_channel, o->gate);
		session_error(s, -EBUSY, o->id, msg);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c)
		c->id = o->id;
	if (!c || session_chan_insert(s, c) < 0) {
		free(c);
		session_error(s, -ENOMEM, o->id, "out of memory");
		return;
	}
	c->s = s;
	c->gate = o->gate;
	c->gate_channel = o->gate_channel;
	fdx__outbox_init(&c->own, NULL, NULL, 0, 0);
	c->ob = &c->own;
	g->chans[o->gate_channel] = c;
	/*
	 * The owner hears of the channel before the producer does: once answered,
	 * the producer may act on it (and tell our owner so by other means).
	 */
	if (g->hooks) {
		int err = g->hooks->opened(g->hook_ud, o->gate_channel, s->serial, s->peer_tm,
					   &c->opening);

		if (err < 0) {
			g->chans[o->gate_channel] = NULL;
			session_chan_remove(s, c);
			fdx__outbox_fini(&c->own);
			free(c);
			snprintf(msg, sizeof(msg), "input channel %u of gate %u: %s",
				 o->gate_channel, o->gate, fdx_strerror(err));
			session_error(s, err, o->id, msg);
			return;
		}
		c->ob = g->hooks->outbox(g->hook_ud, o->gate_channel);
		c->ob_opening = c->opening;
	} else {
		memset(&ev, 0, sizeof(ev));
		ev.type = FDX_EV_CHANNEL_OPENED;
		ev.gate = o->gate;
		ev.gate_channel = o->gate_channel;
		ev.subpartition = o->subpartition;
		snprintf(ev.peer, sizeof(ev.peer), "%s", s->peer_tm);
		fdx__exchange_ev_push_locked(ex, &ev, NULL, 0);
		fdx__exchange_events_flush_locked(ex);
	}
	/* The initial credit travels in the answer: nobody waits for a first record. */
	ack.id = o->id;
	ack.initial_credit = g->initial_credit;
	/* And a one-time token for the data socket its producer may dial (the oldest unused goes). */
	tok = &s->more[s->more_next++ % FDX__SESS_TOKENS];
	tok->live = getrandom(tok->t, sizeof(tok->t), 0) == (ssize_t)sizeof(tok->t);
	if (tok->live) {
		ack.token.data = tok->t;
		ack.token.len = sizeof(tok->t);
	}
	f.frame_case = FDX__CONTROL_FRAME__FRAME_OPEN_ACK;
	f.open_ack = &ack;
	session_send(s, &f);
}

static void session_on_hello(struct fdx__session *s, const Fdx__Hello *h)
{
	struct fdx_exchange *ex = s->ex;
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__HelloAck ack = FDX__HELLO_ACK__INIT;
	char msg[256];

	snprintf(s->peer_tm, sizeof(s->peer_tm), "%s", h->taskmanager_id ? h->taskmanager_id : "?");
	if (h->protocol_version != ex->version) {
		snprintf(msg, sizeof(msg),
			 "protocol version %u not supported: TaskManager %s speaks version %u",
			 h->protocol_version, ex->tm_id, ex->version);
		FDX_LOG_WARN(&ex->log, "exchange %s: refused TaskManager %s (pid %u): %s",
			     ex->tm_id, s->peer_tm, h->pid, msg);
		ex->st.handshakes_refused++;
		fdx__session_finish(s, GRPC_STATUS_FAILED_PRECONDITION, msg);
		return;
	}
	s->greeted = 1;
	ack.protocol_version = ex->version;
	ack.taskmanager_id = ex->tm_id;
	/* Same host (same boot id) and the peer can map memory: shm; otherwise tcp. */
	ack.link = FDX__LINK__LINK_TCP;
	if (h->boot_id && strcmp(h->boot_id, ex->boot_id) == 0 && ex->boot_id[0])
		for (size_t i = 0; i < h->n_links; i++)
			if (h->links[i] == FDX__LINK__LINK_SHM)
				ack.link = FDX__LINK__LINK_SHM;
	/* A one-time token the data socket will have to present (data plane). */
	if (getrandom(s->token, sizeof(s->token), 0) != (ssize_t)sizeof(s->token)) {
		fdx__session_finish(s, GRPC_STATUS_UNAVAILABLE,
				    "no randomness for a data-socket token");
		return;
	}
	s->serial = ++ex->sess_serial + 1; /* data-plane session ids: 1 is local */
	ack.token.data = s->token;
	ack.token.len = sizeof(s->token);
	ack.data_endpoint = (char *)(ex->dp ? fdx__dp_unix_endpoint(ex->dp) : "");
	ack.tcp_data_endpoint = (char *)(ex->dp ? fdx__dp_tcp_endpoint(ex->dp) : "");
	f.frame_case = FDX__CONTROL_FRAME__FRAME_HELLO_ACK;
	f.hello_ack = &ack;
	/* Counted before the answer leaves: whoever got the answer sees the count. */
	ex->st.handshakes_served++;
	session_send(s, &f);
	FDX_LOG_INFO(&ex->log, "exchange %s: TaskManager %s (pid %u, uid %u) connected", ex->tm_id,
		     s->peer_tm, h->pid, h->uid);
}

/*
 * A statistics request: answered by the cq thread once it has dropped the
 * exchange's lock, since reading the partitions and gates takes the data
 * plane's lock, which comes first (fdx__session_stats_answer()).
 */
static void session_on_stats(struct fdx__session *s)
{
	s->stats_wanted = 1;
	s->ex->stats_wanted = 1;
}

/* Answer s's statistics request: its own input channels and the snapshot. */
static void session_send_stats(struct fdx__session *s, const Fdx__StatsReply *snap)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__StatsReply r = *snap;
	Fdx__ChannelStats *cs = calloc(s->ids.n ? s->ids.n : 1, sizeof(*cs));
	Fdx__ChannelStats **csp = calloc(s->ids.n ? s->ids.n : 1, sizeof(*csp));
	size_t n = 0;

	s->stats_wanted = 0;
	if (!cs || !csp) {
		free(cs);
		free(csp);
		session_error(s, -ENOMEM, 0, "out of memory");
		return;
	}
	for (uint32_t i = 0; i < s->ids.cap; i++) {
		struct fdx__in_chan *c = s->ids.e[i].p;

		if (!c)
			continue;
		fdx__channel_stats__init(&cs[n]);
		cs[n].channel = c->id;
		cs[n].credits = c->ob ? (uint32_t)fdx__outbox_waiting(c->ob) : 0;
		cs[n].backlog = c->backlog;
		csp[n] = &cs[n];
		n++;
	}
	r.n_channels = n;
	r.channels = csp;
	r.taskmanager_id = s->ex->tm_id;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_STATS_REPLY;
	f.stats_reply = &r;
	session_send(s, &f);
	free(cs);
	free(csp);
}

/*
 * The cq thread, without the exchange's lock: one snapshot of the
 * TaskManager, sent to every session that asked.
 */
void fdx__session_stats_answer(struct fdx_exchange *ex)
{
	Fdx__StatsReply snap = FDX__STATS_REPLY__INIT;
	int err = fdx__stats_fill(ex, &snap);

	pthread_mutex_lock(&ex->lock);
	for (struct fdx__session *s = ex->sessions; s; s = s->next) {
		if (!s->stats_wanted || s->finishing)
			continue;
		if (err) {
			s->stats_wanted = 0;
			session_error(s, err, 0, "statistics: out of memory");
		} else {
			session_send_stats(s, &snap);
		}
	}
	pthread_mutex_unlock(&ex->lock);
	fdx__stats_clear(&snap);
}

/* A producer named a channel it never opened: fail its stream. */
static void session_unknown_channel(struct fdx__session *s, uint32_t id)
{
	struct fdx_exchange *ex = s->ex;
	char msg[64];

	snprintf(msg, sizeof(msg), "unknown channel %u", id);
	ex->st.bad_frames++;
	FDX_LOG_WARN(&ex->log, "exchange %s: TaskManager %s named %s; stream failed", ex->tm_id,
		     s->peer_tm, msg);
	fdx__session_finish(s, GRPC_STATUS_INVALID_ARGUMENT, msg);
}

/* The latest backlog of some channels; an unknown one fails the stream. */
static void session_on_backlog(struct fdx__session *s, const Fdx__Backlog *b)
{
	struct fdx_exchange *ex = s->ex;
	struct fdx_exchange_event ev;

	if (b->n_channels != b->n_backlogs) {
		ex->st.bad_frames++;
		fdx__session_finish(s, GRPC_STATUS_INVALID_ARGUMENT,
				    "backlog lists differ in length");
		return;
	}
	for (size_t i = 0; i < b->n_channels; i++) {
		struct fdx__in_chan *c = session_chan(s, b->channels[i]);

		if (!c) {
			session_unknown_channel(s, b->channels[i]);
			return;
		}
		c->backlog = b->backlogs[i];
		c->marked = 1;
	}
	/*
	 * One event per channel named, with its latest value, however often named.
	 * None for a data-plane gate's channel (its backlog comes in its data
	 * frames, and nobody polls for it: a producer could grow our queue).
	 */
	for (size_t i = 0; i < b->n_channels; i++) {
		struct fdx__in_chan *c = session_chan(s, b->channels[i]);
		struct fdx__ctl_gate *g;

		if (!c->marked)
			continue;
		c->marked = 0;
		g = ctl_gate_find(ex, c->gate);
		if (c->gone || (g && g->hooks))
			continue;
		memset(&ev, 0, sizeof(ev));
		ev.type = FDX_EV_BACKLOG;
		ev.gate = c->gate;
		ev.gate_channel = c->gate_channel;
		ev.backlog = c->backlog;
		snprintf(ev.peer, sizeof(ev.peer), "%s", s->peer_tm);
		fdx__exchange_ev_push_locked(ex, &ev, NULL, 0);
	}
}

/* A frame after the handshake, from a producer. */
static void session_on_greeted_frame(struct fdx__session *s, const Fdx__ControlFrame *f)
{
	struct fdx_exchange *ex = s->ex;
	struct fdx_exchange_event ev;
	struct fdx__in_chan *c;
	uint32_t id = 0;
	int data_close = 0;
	char msg[160];

	switch (f->frame_case) {
	case FDX__CONTROL_FRAME__FRAME_OPEN:
		session_on_open(s, f->open);
		return;
	case FDX__CONTROL_FRAME__FRAME_STATS_REQUEST:
		session_on_stats(s);
		return;
	case FDX__CONTROL_FRAME__FRAME_ERROR:
		/* The producer found us at fault; it will cancel the stream. */
		snprintf(msg, sizeof(msg), "it failed the stream: %s",
			 f->error->message ? f->error->message : "");
		FDX_LOG_ERR(&ex->log, "exchange %s: TaskManager %s: %s", ex->tm_id, s->peer_tm,
			    msg);
		session_drop_channels(s, FDX_EPROTO, msg);
		fdx__session_finish(s, GRPC_STATUS_CANCELLED, msg);
		return;
	case FDX__CONTROL_FRAME__FRAME_BACKLOG:
		session_on_backlog(s, f->backlog);
		return;
	case FDX__CONTROL_FRAME__FRAME_CLOSE:
		id = f->close->channel;
		data_close = f->close->data_close;
		break;
	case FDX__CONTROL_FRAME__FRAME_CREDIT:
		ex->st.bad_frames++;
		fdx__session_finish(s, GRPC_STATUS_INVALID_ARGUMENT,
				    "credit flows from the consumer to the producer, not back");
		return;
	default:
		snprintf(msg, sizeof(msg), "unexpected frame (case %d) from a producer",
			 (int)f->frame_case);
		ex->st.bad_frames++;
		fdx__session_finish(s, GRPC_STATUS_INVALID_ARGUMENT, msg);
		return;
	}
	c = session_chan(s, id);
	if (!c) {
		session_unknown_channel(s, id);
		return;
	}
	/* We forget it now and name it no more: the producer may free it. */
	{
		Fdx__ControlFrame af = FDX__CONTROL_FRAME__INIT;
		Fdx__ChannelClosed cc = FDX__CHANNEL_CLOSED__INIT;

		cc.channel = id;
		af.frame_case = FDX__CONTROL_FRAME__FRAME_CLOSED;
		af.closed = &cc;
		session_send(s, &af);
	}
	if (c->gone) { /* it crossed our Error saying the gate went */
		session_chan_remove(s, c);
		fdx__outbox_fini(&c->own);
		free(c);
		return;
	}
	memset(&ev, 0, sizeof(ev));
	ev.type = FDX_EV_CHANNEL_CLOSED;
	ev.gate = c->gate;
	ev.gate_channel = c->gate_channel;
	snprintf(ev.peer, sizeof(ev.peer), "%s", s->peer_tm);
	struct fdx__ctl_gate *g = ctl_gate_find(ex, c->gate);

	session_chan_remove(s, c);
	if (g && c->gate_channel < g->n_channels && g->chans[c->gate_channel] == c)
		g->chans[c->gate_channel] = NULL;
	fdx__outbox_fini(&c->own);
	free(c);
	if (g && g->hooks)
		g->hooks->closed(g->hook_ud, ev.gate_channel, s->serial, data_close);
	else
		fdx__exchange_ev_push_locked(ex, &ev, NULL, 0);
}

static void session_on_frame(struct fdx__session *s, grpc_byte_buffer *bb)
{
	struct fdx_exchange *ex = s->ex;
	Fdx__ControlFrame *f = fdx__ctl_unpack(bb);

	if (!f) {
		ex->st.bad_frames++;
		FDX_LOG_WARN(&ex->log, "exchange %s: a frame from %s does not parse; stream failed",
			     ex->tm_id, s->greeted ? s->peer_tm : "an unknown peer");
		fdx__session_finish(s, GRPC_STATUS_INVALID_ARGUMENT, "frame does not parse");
		return;
	}
	ex->st.frames_in++;
	if (f->frame_case == FDX__CONTROL_FRAME__FRAME_HELLO && !s->greeted)
		session_on_hello(s, f->hello);
	else if (!s->greeted)
		fdx__session_finish(s, GRPC_STATUS_FAILED_PRECONDITION,
				    "the first frame must be a hello");
	else
		session_on_greeted_frame(s, f);
	fdx__control_frame__free_unpacked(f, NULL);
}

static void session_post_recv(struct fdx__session *s)
{
	grpc_op op;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &s->recv_bb;
	fdx__ctl_start_batch(s->call, &op, 1, &s->t_recv, &s->pending);
}

void fdx__session_start(struct fdx_exchange *ex, grpc_call *call)
{
	struct fdx__session *s = calloc(1, sizeof(*s));
	grpc_op op;

	if (!s) {
		grpc_call_cancel_with_status(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory",
					     NULL);
		grpc_call_unref(call);
		return;
	}
	s->ex = ex;
	s->call = call;
	s->t_start = fdx__now_ns();
	s->t_recv = (struct fdx__ctl_tag){FDX__CTL_TAG_SESSION_RECV, s};
	s->t_send = (struct fdx__ctl_tag){FDX__CTL_TAG_SESSION_SEND, s};
	s->t_close = (struct fdx__ctl_tag){FDX__CTL_TAG_SESSION_CLOSE, s};
	s->t_status = (struct fdx__ctl_tag){FDX__CTL_TAG_SESSION_STATUS, s};
	s->next = ex->sessions;
	if (ex->sessions)
		ex->sessions->prev = s;
	ex->sessions = s;
	ex->n_sessions++;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_INITIAL_METADATA;
	s->q.busy = fdx__ctl_start_batch(call, &op, 1, &s->t_send, &s->pending);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &s->cancelled;
	fdx__ctl_start_batch(call, &op, 1, &s->t_close, &s->pending);
	session_post_recv(s);
}

static void session_maybe_free(struct fdx__session *s)
{
	struct fdx_exchange *ex = s->ex;

	if (s->pending)
		return;
	if (s->prev)
		s->prev->next = s->next;
	else
		ex->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	fdx__ctl_sendq_clear(&s->q);
	grpc_call_unref(s->call);
	fdx__idmap_free(&s->ids);
	free(s);
	ex->n_sessions--;
	pthread_cond_broadcast(&ex->cond);
}

void fdx__session_event(struct fdx__session *s, enum fdx__ctl_tag_kind kind, int ok)
{
	s->pending--;
	switch (kind) {
	case FDX__CTL_TAG_SESSION_RECV:
		if (!ok || !s->recv_bb) {
			/* Half-close or a dead call: nothing more will come. */
			fdx__session_finish(s, GRPC_STATUS_OK, "");
			break;
		}
		/* Once the stream is ending, what still comes is dropped unread. */
		if (!s->finishing)
			session_on_frame(s, s->recv_bb);
		grpc_byte_buffer_destroy(s->recv_bb);
		s->recv_bb = NULL;
		if (!s->finishing)
			session_post_recv(s);
		break;
	case FDX__CTL_TAG_SESSION_SEND:
		s->q.busy = 0;
		if (!ok) {
			fdx__ctl_sendq_clear(&s->q);
			fdx__session_finish(s, GRPC_STATUS_CANCELLED, "send failed");
		} else if (!fdx__ctl_send_next(s->call, &s->q, &s->t_send, &s->pending)) {
			if (s->finishing)
				session_send_status(s);
			else
				session_flush_credits(s);
		}
		break;
	case FDX__CTL_TAG_SESSION_CLOSE:
		/* The client is gone or cancelled: end our side too. */
		fdx__session_finish(s, GRPC_STATUS_CANCELLED, "peer closed the stream");
		break;
	case FDX__CTL_TAG_SESSION_STATUS:
		s->status_done = 1;
		break;
	default:
		break;
	}
	session_maybe_free(s);
}

/* ---- gates and credit: the owner's and the data plane's calls -------------- */

/* A gate with its hooks (NULL: a plain gate), in the list under one lock. */
static int add_gate(struct fdx_exchange *ex, uint32_t gate, uint32_t n_channels,
		    uint32_t initial_credit, const struct fdx__gate_hooks *h, void *ud)
{
	struct fdx__ctl_gate *g;
	int err = 0;

	if (!ex || n_channels == 0 || n_channels > GATE_CHANNELS_MAX)
		return -EINVAL;
	g = calloc(1, sizeof(*g));
	if (g)
		g->chans = calloc(n_channels, sizeof(*g->chans));
	if (!g || !g->chans) {
		if (g)
			free(g->chans);
		free(g);
		return -ENOMEM;
	}
	g->id = gate;
	g->n_channels = n_channels;
	g->initial_credit = initial_credit;
	/* Hooked before any open can see it: an open must not be taken for a plain gate's. */
	g->hooks = h;
	g->hook_ud = ud;
	pthread_mutex_lock(&ex->lock);
	if (ctl_gate_find(ex, gate)) {
		err = -EEXIST;
	} else {
		g->next = ex->gates;
		ex->gates = g;
	}
	pthread_mutex_unlock(&ex->lock);
	if (err) {
		free(g->chans);
		free(g);
	}
	return err;
}

FDX_API int fdx_exchange_add_gate(struct fdx_exchange *ex, uint32_t gate, uint32_t n_channels,
				  uint32_t initial_credit)
{
	return add_gate(ex, gate, n_channels, initial_credit, NULL, NULL);
}

/* With ex->lock held: c's outbox has credit; it goes when the stream can send. */
static void in_chan_credit_waits(struct fdx__in_chan *c)
{
	struct fdx__session *s = c->s;

	if (!c->dirty) {
		c->dirty = 1;
		c->next_dirty = NULL;
		if (s->dirty_tail)
			s->dirty_tail->next_dirty = c;
		else
			s->dirty_head = c;
		s->dirty_tail = c;
	}
	session_flush_credits(s);
}

/* With ex->lock held: queue credit and offsets for c's producer (a plain gate's channel). */
static int credit_locked(struct fdx__in_chan *c, uint32_t added, const uint64_t *offsets,
			 uint32_t n_offsets)
{
	int err;

	if (!c->ob)
		return -ENOENT;
	err = fdx__outbox_add(c->ob, c->ob_opening, added, offsets, n_offsets);
	if (!err)
		in_chan_credit_waits(c);
	return err;
}

/*
 * With ex->lock held: c no longer takes credit from its gate's outbox (the
 * gate is going); what it holds there moves to c's own, or is dropped.
 */
static void in_chan_own_outbox(struct fdx__in_chan *c, int keep)
{
	uint64_t offs[256];
	uint32_t added, k;
	int more = 1, moved = 0;

	if (c->ob == &c->own || !c->ob)
		return;
	while (keep && more) {
		k = fdx__outbox_take(c->ob, c->ob_opening, &added, offs, 256, &more, NULL, NULL);
		if (fdx__outbox_add(&c->own, 0, added, offs, k) < 0)
			break; /* out of memory: the rest is lost with the gate */
		moved |= k || added;
	}
	c->ob = &c->own;
	c->ob_opening = 0;
	if (moved)
		in_chan_credit_waits(c); /* it still goes */
}

FDX_API int fdx_exchange_credit(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
				uint32_t added, const uint64_t *offsets, uint32_t n_offsets)
{
	struct fdx__in_chan *c;
	struct fdx__ctl_gate *g;
	int err;

	if (!ex || (n_offsets && !offsets))
		return -EINVAL;
	pthread_mutex_lock(&ex->lock);
	g = ctl_gate_find(ex, gate);
	c = g && gate_channel < g->n_channels ? g->chans[gate_channel] : NULL;
	err = c ? credit_locked(c, added, offsets, n_offsets) : -ENOENT;
	pthread_mutex_unlock(&ex->lock);
	return err;
}

int fdx__exchange_add_gate_hooked(struct fdx_exchange *ex, uint32_t gate, uint32_t n_channels,
				  uint32_t initial_credit, const struct fdx__gate_hooks *h,
				  void *ud)
{
	return add_gate(ex, gate, n_channels, initial_credit, h, ud);
}

/*
 * With ex->lock held: the input channel c ends on our side. Its producer is
 * told (an Error frame naming it); c stays in its session, marked, until the
 * producer's close, which may cross our Error.
 */
static void in_chan_drop_locked(struct fdx__ctl_gate *g, struct fdx__in_chan *c, int code,
				const char *msg)
{
	if (g->chans[c->gate_channel] == c)
		g->chans[c->gate_channel] = NULL;
	c->gone = 1;
	/*
	 * A channel its producer ended has nothing left to fail: the credit and
	 * offsets released last still go, and its close is awaited quietly.
	 */
	if (g->hooks && g->hooks->ended && g->hooks->ended(g->hook_ud, c->gate_channel)) {
		in_chan_own_outbox(c, 1);
		return;
	}
	session_error(c->s, code, c->id, msg);
	in_chan_own_outbox(c, 0);
	fdx__outbox_reset(&c->own, 1, 0); /* nothing more goes: it holds no opening's credit */
}

void fdx__exchange_drop_input(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
			      uint64_t sess, int code, const char *msg)
{
	struct fdx__in_chan *c;
	struct fdx__ctl_gate *g;

	pthread_mutex_lock(&ex->lock);
	g = ctl_gate_find(ex, gate);
	c = g && gate_channel < g->n_channels ? g->chans[gate_channel] : NULL;
	if (c && c->s->serial == sess)
		in_chan_drop_locked(g, c, code, msg);
	pthread_mutex_unlock(&ex->lock);
}

void fdx__exchange_remove_gate(struct fdx_exchange *ex, uint32_t gate)
{
	struct fdx__ctl_gate **pp, *g = NULL;

	pthread_mutex_lock(&ex->lock);
	for (pp = &ex->gates; *pp; pp = &(*pp)->next)
		if ((*pp)->id == gate) {
			g = *pp;
			*pp = g->next;
			break;
		}
	if (g) {
		/* Its open channels end: their producers are told, their streams go on. */
		for (uint32_t i = 0; i < g->n_channels; i++) {
			struct fdx__in_chan *c = g->chans[i];
			char msg[160];

			if (!c)
				continue;
			snprintf(msg, sizeof(msg), "gate %u of TaskManager %s is gone", gate,
				 ex->tm_id);
			in_chan_drop_locked(g, c, -ENOENT, msg);
		}
		free(g->chans);
		free(g);
	}
	pthread_mutex_unlock(&ex->lock);
}

int fdx__exchange_credit_sess(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
			      uint64_t sess, uint64_t opening)
{
	struct fdx__in_chan *c;
	struct fdx__ctl_gate *g;
	int err;

	/*
	 * Only to the opening the credit is for: the same session may have
	 * closed the channel and opened it again.
	 */
	pthread_mutex_lock(&ex->lock);
	g = ctl_gate_find(ex, gate);
	c = g && gate_channel < g->n_channels ? g->chans[gate_channel] : NULL;
	if (c && c->s->serial == sess && c->opening == opening && c->ob) {
		in_chan_credit_waits(c);
		err = 0;
	} else {
		err = -ENOENT;
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

void fdx__sessions_end_silent(struct fdx_exchange *ex)
{
	uint64_t now = fdx__now_ns(), due = (uint64_t)ex->hello_ms * 1000000u;
	char msg[96];

	snprintf(msg, sizeof(msg), "no hello within %u ms", ex->hello_ms);
	pthread_mutex_lock(&ex->lock);
	for (struct fdx__session *s = ex->sessions; s; s = s->next)
		if (!s->greeted && !s->finishing && now - s->t_start >= due) {
			FDX_LOG_WARN(&ex->log,
				     "exchange %s: a control stream said no hello within %u "
				     "ms; ended",
				     ex->tm_id, ex->hello_ms);
			ex->st.bad_frames++;
			fdx__session_finish(s, GRPC_STATUS_DEADLINE_EXCEEDED, msg);
			grpc_call_cancel_with_status(s->call, GRPC_STATUS_DEADLINE_EXCEEDED, msg,
						     NULL);
		}
	pthread_mutex_unlock(&ex->lock);
}
