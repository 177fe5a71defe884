/* SPDX-License-Identifier: MIT */
/*
 * The producer side of the control plane: our streams to peer TaskManagers
 * (one per address: handshake, failure, end) and the channels we open on
 * them to remote gates (struct fdx__out_chan): open and close, credit and
 * the offsets in flight it hands back, coalesced backlogs. The data plane's
 * calls on a channel (its hooks, its data socket's details) are in
 * out_chan_hooks.c.
 *
 * Locking: everything about a peer and its channels, its operation count
 * included, is under ex->lock (once per control message, never per credit).
 * The cq thread holds it when it hands a completion over (fdx__peer_event());
 * the owner's calls take it and wait on ex->cond for a handshake or an
 * answer. Channel hooks run with it held and must not call back into the
 * exchange. A peer is freed only after ex->lock is released.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <fdx/error.h>
#include <fdx/exchange.h>
#include <fdx/partition.h>

#include "../runtime/clock.h"
#include "../runtime/idmap.h"
#include "../runtime/log.h"
#include "control_codec.h"
#include "control_limits.h"
#include "exchange.pb-c.h"
#include "exchange_private.h"

#define CONNECT_TIMEOUT_DEFAULT_MS 5000

static const Fdx__Link all_links[] = {FDX__LINK__LINK_LOCAL, FDX__LINK__LINK_SHM,
				      FDX__LINK__LINK_TCP};

static const char *link_name(uint32_t link)
{
	switch (link) {
	case FDX__LINK__LINK_LOCAL:
		return "local";
	case FDX__LINK__LINK_SHM:
		return "shm";
	case FDX__LINK__LINK_TCP:
		return "tcp";
	default:
		return "none";
	}
}

/* ---- client side: peers ---------------------------------------------------- */

/*
 * Peers are set up by the owner and served by the cq thread: everything about
 * a peer, its operation count included, is under ex->lock (once per control
 * message, never per credit).
 */
static void peer_set_state_locked(struct fdx__peer *p, enum fdx__peer_state st, int result)
{
	struct fdx_exchange *ex = p->ex;

	if (p->state == FDX__PEER_UP && st != FDX__PEER_UP)
		ex->peers_up--;
	if (p->state != FDX__PEER_UP && st == FDX__PEER_UP)
		ex->peers_up++;
	p->state = st;
	p->result = result;
	pthread_cond_broadcast(&ex->cond);
}

static void peer_post_recv(struct fdx__peer *p)
{
	grpc_op ops[2];
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	if (!p->got_initial_md) {
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n].data.recv_initial_metadata.recv_initial_metadata = &p->initial_md;
		n++;
		p->got_initial_md = 1;
	}
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n].data.recv_message.recv_message = &p->recv_bb;
	n++;
	fdx__ctl_start_batch(p->call, ops, n, &p->t_recv, &p->pending);
}

/* ---- our channels by id --------------------------------------------------- */

/* With ex->lock held: the channel with that id, or NULL. */
struct fdx__out_chan *fdx__out_chan_get(const struct fdx_exchange *ex, uint32_t id)
{
	return id ? fdx__idmap_get(&ex->cchans, id) : NULL;
}

/* With ex->lock held and room reserved: the next id no channel has (never 0). */
static uint32_t chan_new_id(struct fdx_exchange *ex)
{
	do {
		if (++ex->next_id == 0)
			ex->next_id = 1;
	} while (fdx__out_chan_get(ex, ex->next_id));
	return ex->next_id;
}

struct fdx__out_chan *fdx__peer_chan(struct fdx__peer *p, uint32_t id)
{
	struct fdx__out_chan *c = fdx__out_chan_get(p->ex, id);

	return c && c->p == p ? c : NULL;
}

/* With ex->lock held: queue a frame on p's stream. */

static int peer_backlog_frame(struct fdx__peer *p);

/*
 * With ex->lock held: queue a frame on p's stream. Backlogs waiting for an
 * idle stream go first: frames keep the order of the calls that made them
 * (a later open or close never overtakes an earlier backlog).
 */
static void peer_send_locked(struct fdx__peer *p, const Fdx__ControlFrame *f)
{
	while (f->frame_case != FDX__CONTROL_FRAME__FRAME_BACKLOG && p->bl_dirty &&
	       peer_backlog_frame(p))
		;
	fdx__ctl_sendq_push(&p->q, fdx__ctl_pack(f));
	fdx__ctl_send_next(p->call, &p->q, &p->t_send, &p->pending);
	p->ex->st.frames_out++;
}

/* With ex->lock held: take c off its peer's lists (it stays in ex->cchans). */
static void chan_detach_locked(struct fdx__out_chan *c)
{
	struct fdx__peer *p = c->p;
	struct fdx__out_chan **pp;

	if (!p)
		return;
	for (pp = &p->chans; *pp; pp = &(*pp)->pnext)
		if (*pp == c) {
			*pp = c->pnext;
			break;
		}
	if (c->bl_dirty)
		for (pp = &p->bl_dirty; *pp; pp = &(*pp)->bl_next)
			if (*pp == c) {
				*pp = c->bl_next;
				break;
			}
	c->bl_dirty = 0;
	c->p = NULL;
}

/* With ex->lock held: forget c entirely. */
static void chan_free_locked(struct fdx_exchange *ex, struct fdx__out_chan *c)
{
	chan_detach_locked(c);
	fdx__idmap_del(&ex->cchans, c->id);
	if (c->state == FDX__OUT_OPEN)
		ex->open_out--;
	fdx__ledger_fini(&c->own);
	free(c);
}

void fdx__peer_send_close_locked(struct fdx__peer *p, struct fdx__out_chan *c, int data_close)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__CloseChannel cl = FDX__CLOSE_CHANNEL__INIT;

	if (c->bl_dirty) {
		struct fdx__out_chan **pp = &p->bl_dirty;

		while (*pp && *pp != c)
			pp = &(*pp)->bl_next;
		if (*pp)
			*pp = c->bl_next;
		c->bl_dirty = 0;
	}
	cl.channel = c->id;
	cl.data_close = data_close;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CLOSE;
	f.close = &cl;
	peer_send_locked(p, &f);
}

/*
 * With ex->lock held: the changed backlogs, coalesced, as one frame on p's
 * stream (at most FDX__BACKLOG_FRAME_CHANNELS_MAX of them); 1 if it went.
 */
static int peer_backlog_frame(struct fdx__peer *p)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Backlog b = FDX__BACKLOG__INIT;
	uint32_t n = 0, *ids, *bls;
	struct fdx__out_chan *c;
	int sent = 0;

	for (c = p->bl_dirty; c && n < FDX__BACKLOG_FRAME_CHANNELS_MAX; c = c->bl_next)
		n++;
	ids = calloc(n, sizeof(*ids));
	bls = calloc(n, sizeof(*bls));
	if (ids && bls) {
		n = 0;
		/* At most FDX__BACKLOG_FRAME_CHANNELS_MAX: the rest go in the next frame. */
		for (c = p->bl_dirty; c && n < FDX__BACKLOG_FRAME_CHANNELS_MAX; c = c->bl_next) {
			ids[n] = c->id;
			bls[n++] = c->backlog;
			c->bl_dirty = 0;
		}
		p->bl_dirty = c;
		b.n_channels = b.n_backlogs = n;
		b.channels = ids;
		b.backlogs = bls;
		f.frame_case = FDX__CONTROL_FRAME__FRAME_BACKLOG;
		f.backlog = &b;
		peer_send_locked(p, &f);
		sent = 1;
	}
	free(ids);
	free(bls);
	return sent; /* 0: out of memory, the backlogs wait for the next frame */
}

/* With ex->lock held: send the changed backlogs together, when p's stream is idle. */
static void peer_flush_backlog(struct fdx__peer *p)
{
	if (p->q.busy || p->q.head || !p->bl_dirty)
		return;
	peer_backlog_frame(p);
}

/*
 * A consumer broke the protocol: tell it why in an Error frame, then cancel
 * the stream once that is sent (a consumer that does not read is cut off all
 * the same: see FDX__CTL_TAG_PEER_SEND). The stream's status fails the channels.
 */
static void peer_fail(struct fdx__peer *p, const char *msg)
{
	struct fdx_exchange *ex = p->ex;
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Error e = FDX__ERROR__INIT;

	if (p->failing)
		return;
	p->failing = 1;
	snprintf(p->fail_msg, sizeof(p->fail_msg), "%s", msg);
	ex->st.bad_frames++;
	FDX_LOG_ERR(&ex->log, "exchange %s: TaskManager %s at %s: %s; stream failed", ex->tm_id,
		    p->remote_tm[0] ? p->remote_tm : "?", p->addr, msg);
	e.code = FDX_EPROTO;
	e.message = p->fail_msg;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_ERROR;
	f.error = &e;
	fdx__ctl_sendq_clear(&p->q); /* nothing else needs to reach a peer at fault */
	if (p->q.busy) {
		/* A send is in flight and may never complete (a peer that does not read): no wait. */
		grpc_call_cancel_with_status(p->call, GRPC_STATUS_INVALID_ARGUMENT, p->fail_msg,
					     NULL);
		return;
	}
	fdx__ctl_sendq_push(&p->q, fdx__ctl_pack(&f));
	if (!fdx__ctl_send_next(p->call, &p->q, &p->t_send, &p->pending))
		grpc_call_cancel_with_status(p->call, GRPC_STATUS_INVALID_ARGUMENT, p->fail_msg,
					     NULL);
}

static void peer_on_credit(struct fdx__peer *p, const Fdx__CreditUpdate *cu)
{
	struct fdx_exchange *ex = p->ex;
	struct fdx_exchange_event ev;
	char msg[160];
	/* The consumer's clock is ours on one host (shm): its write time dates the control hop. */
	uint64_t written_ns = p->link == FDX__LINK__LINK_SHM ? cu->written_ns : 0;
	struct fdx__credit_stamp st, *stp;
	uint32_t bad;
	size_t i;
	int err;

	for (i = 0; i < cu->n_credits; i++) {
		const Fdx__Credit *cr = cu->credits[i];
		struct fdx__out_chan *c = fdx__peer_chan(p, cr->channel);

		if (!c || c->state == FDX__OUT_OPENING || c->state == FDX__OUT_FAILED) {
			snprintf(msg, sizeof(msg), "credit for unknown channel %u", cr->channel);
			peer_fail(p, msg);
			break;
		}
		if (c->marked) {
			/* Our consumers coalesce per channel: a repeat only costs us memory. */
			snprintf(msg, sizeof(msg), "channel %u named twice in one credit update",
				 cr->channel);
			peer_fail(p, msg);
			break;
		}
		c->marked = 1;
		if (c->state == FDX__OUT_ABANDONED || c->unhooked)
			continue; /* its late answer is being closed again, or its partition went */
		if (cr->n_returned_offsets > UINT32_MAX) {
			peer_fail(p, "too many returned offsets");
			break;
		}
		/*
		 * The channel's ledger checks it (runtime/credit_ledger.h): a
		 * partition's own, or the plain channel's. A refused credit changes
		 * nothing, and the stream fails.
		 */
		/* The granted total and its proof, if it names one: our buffers go with them. */
		st.total = (uint32_t)cr->granted;
		st.proof = cr->proof;
		stp = cr->granted ? &st : NULL;
		bad = 0;
		err = c->hooks ? c->hooks->credit(c->hook_ud, cr->added, cr->returned_offsets,
						  (uint32_t)cr->n_returned_offsets, written_ns, stp,
						  &bad)
			       : fdx__ledger_grant(&c->own, cr->added, cr->returned_offsets,
						   (uint32_t)cr->n_returned_offsets, stp, &bad);
		if (err == -EOVERFLOW) {
			snprintf(
				msg, sizeof(msg),
				"credit on channel %u would overflow: %u more than 2^32 - 1 unused",
				cr->channel, cr->added);
			peer_fail(p, msg);
			break;
		}
		if (err == -ENOENT) {
			snprintf(msg, sizeof(msg),
				 "offset %#llx handed back on channel %u was never sent",
				 (unsigned long long)cr->returned_offsets[bad], cr->channel);
			peer_fail(p, msg);
			break;
		}
		if (err)
			continue; /* taken back: it was given up */
		/* Credit and offsets sent before the consumer saw our close still count. */
		ex->st.credits_in += cr->added;
		if (c->hooks)
			continue;
		memset(&ev, 0, sizeof(ev));
		ev.type = FDX_EV_CREDIT;
		ev.channel = c->id;
		ev.gate = c->gate;
		ev.gate_channel = c->gate_channel;
		ev.credits = cr->added;
		snprintf(ev.peer, sizeof(ev.peer), "%s", p->remote_tm);
		fdx__exchange_ev_push_locked(ex, &ev, cr->returned_offsets,
					     (uint32_t)cr->n_returned_offsets);
	}
	/* Unmark what this update named, up to and including where it stopped. */
	for (size_t j = 0; j <= i && j < cu->n_credits; j++) {
		struct fdx__out_chan *c = fdx__peer_chan(p, cu->credits[j]->channel);

		if (c)
			c->marked = 0;
	}
}

/* With ex->lock held: every offset in flight on c's partition channel comes back. */
void fdx__out_chan_return_inflight_locked(struct fdx__out_chan *c)
{
	if (c->hooks)
		c->hooks->take_back(c->hook_ud);
}

static void peer_on_frame_locked(struct fdx__peer *p, grpc_byte_buffer *bb)
{
	struct fdx_exchange *ex = p->ex;
	Fdx__ControlFrame *f = fdx__ctl_unpack(bb);
	struct fdx__out_chan *c;
	char msg[160];

	if (!f) {
		peer_fail(p, "frame does not parse");
		return;
	}
	ex->st.frames_in++;
	if (p->failing) { /* what still comes from a peer at fault is dropped */
		fdx__control_frame__free_unpacked(f, NULL);
		return;
	}
	switch (f->frame_case) {
	case FDX__CONTROL_FRAME__FRAME_HELLO_ACK:
		snprintf(p->remote_tm, sizeof(p->remote_tm), "%s",
			 f->hello_ack->taskmanager_id ? f->hello_ack->taskmanager_id : "?");
		p->link = f->hello_ack->link;
		if (f->hello_ack->token.len == sizeof(p->token))
			memcpy(p->token, f->hello_ack->token.data, sizeof(p->token));
		snprintf(p->unix_ep, sizeof(p->unix_ep), "%s",
			 f->hello_ack->data_endpoint ? f->hello_ack->data_endpoint : "");
		snprintf(p->tcp_ep, sizeof(p->tcp_ep), "%s",
			 f->hello_ack->tcp_data_endpoint ? f->hello_ack->tcp_data_endpoint : "");
		FDX_LOG_INFO(&ex->log, "exchange %s: connected to TaskManager %s at %s (link %s)",
			     ex->tm_id, p->remote_tm, p->addr, link_name(p->link));
		peer_set_state_locked(p, FDX__PEER_UP, 0);
		break;
	case FDX__CONTROL_FRAME__FRAME_OPEN_ACK:
		c = fdx__peer_chan(p, f->open_ack->id);
		if (c && c->state == FDX__OUT_ABANDONED) {
			/* The opener gave up: close what the consumer opened meanwhile. */
			fdx__peer_send_close_locked(p, c, 0);
			c->state = FDX__OUT_CLOSED;
			break;
		}
		if (!c || c->state != FDX__OUT_OPENING) {
			snprintf(msg, sizeof(msg), "answer for unknown channel %u",
				 f->open_ack->id);
			peer_fail(p, msg);
			break;
		}
		c->state = FDX__OUT_OPEN;
		ex->open_out++;
		c->initial = f->open_ack->initial_credit;
		c->has_sock_token = f->open_ack->token.len == sizeof(c->sock_token);
		if (c->has_sock_token)
			memcpy(c->sock_token, f->open_ack->token.data, sizeof(c->sock_token));
		fdx__ledger_fini(&c->own);
		fdx__ledger_init(&c->own, c->initial);
		pthread_cond_broadcast(&ex->cond);
		break;
	case FDX__CONTROL_FRAME__FRAME_ERROR:
		c = fdx__peer_chan(p, f->error->channel);
		FDX_LOG_WARN(&ex->log, "exchange %s: TaskManager %s refused: %s", ex->tm_id,
			     p->remote_tm, f->error->message ? f->error->message : "");
		if (c && c->state == FDX__OUT_OPENING) {
			c->state = FDX__OUT_FAILED;
			c->result = f->error->code < 0 && f->error->code > -4096 ? f->error->code
										 : FDX_EREFUSED;
			chan_detach_locked(c); /* its opener frees it */
			pthread_cond_broadcast(&ex->cond);
		} else if (c && c->state == FDX__OUT_ABANDONED) {
			chan_free_locked(ex, c);
		} else if (c && c->state == FDX__OUT_OPEN) {
			/* The consumer dropped an open channel (its gate went): it is over. */
			snprintf(msg, sizeof(msg), "TaskManager %s: %s", p->remote_tm,
				 f->error->message ? f->error->message : "channel refused");
			c->state = FDX__OUT_CLOSED;
			ex->open_out--;
			if (c->opening) /* answered, dropped before its opener saw it: it says so */
				c->result = FDX_EPEERGONE;
			else if (c->hooks) {
				fdx__out_chan_return_inflight_locked(
					c); /* the consumer lets them go */
				c->hooks->failed(c->hook_ud, FDX_EPEERGONE, msg);
			} else
				fdx__exchange_ev_channel_failed_locked(
					ex, c->id, c->gate, c->gate_channel, FDX_EPEERGONE,
					p->remote_tm, msg);
			/* The consumer keeps it until our close; its answer frees it here. */
			fdx__peer_send_close_locked(p, c, 0);
		}
		break;
	case FDX__CONTROL_FRAME__FRAME_CLOSED:
		/* The consumer forgot a channel we closed: no frame names it any more. */
		c = fdx__peer_chan(p, f->closed->channel);
		if (!c || c->state != FDX__OUT_CLOSED || c->confirmed) {
			snprintf(msg, sizeof(msg), "close confirmed for channel %u, not closed",
				 f->closed->channel);
			peer_fail(p, msg);
			break;
		}
		c->confirmed = 1;
		/*
		 * Its opener, still to wake, frees it. What is still in flight on
		 * a data-plane channel is never handed back now; it stays the
		 * consumer's until the stream ends (it may still be read), so the
		 * channel stays until then too.
		 */
		if (!c->opening && !(c->hooks && c->hooks->in_flight(c->hook_ud)))
			chan_free_locked(ex, c);
		break;
	case FDX__CONTROL_FRAME__FRAME_CREDIT:
		peer_on_credit(p, f->credit);
		break;
	case FDX__CONTROL_FRAME__FRAME_STATS_REPLY:
		break; /* asked for by tools (fdx-stat), not by the exchange itself */
	default:
		snprintf(msg, sizeof(msg), "unexpected frame (case %d) from a consumer",
			 (int)f->frame_case);
		peer_fail(p, msg);
		break;
	}
	fdx__control_frame__free_unpacked(f, NULL);
}

/* Map the final status of a stream to an fdx code. */
static int status_to_err(grpc_status_code code, int was_up)
{
	switch (code) {
	case GRPC_STATUS_FAILED_PRECONDITION:
		return was_up ? FDX_EPEERGONE : FDX_EVERSION;
	case GRPC_STATUS_PERMISSION_DENIED:
	case GRPC_STATUS_UNAUTHENTICATED:
		return FDX_EREFUSED;
	case GRPC_STATUS_UNAVAILABLE:
		return was_up ? FDX_EPEERGONE : -ECONNREFUSED;
	case GRPC_STATUS_DEADLINE_EXCEEDED:
		return -ETIMEDOUT;
	default:
		return FDX_EPEERGONE;
	}
}

static void peer_on_status_locked(struct fdx__peer *p)
{
	struct fdx_exchange *ex = p->ex;
	char *details = grpc_slice_to_c_string(p->status_details);
	int was_up = p->state == FDX__PEER_UP, err;

	err = status_to_err(p->status, was_up);
	if (was_up || !ex->stopping) {
		/*
		 * An error, unless we are stopping ourselves (info) or the peer
		 * said it is (a warning: its channels still fail, the owner hears).
		 */
		uint32_t lvl = ex->stopping ? FDX_LOG_INFO
			       : details && strcmp(details, FDX__EXCHANGE_SHUTTING_DOWN) == 0
				       ? FDX_LOG_WARN
				       : FDX_LOG_ERR;

		FDX_LOG_AT(&ex->log, lvl,
			   "exchange %s: stream to TaskManager %s at %s ended: %s (%s)", ex->tm_id,
			   p->remote_tm[0] ? p->remote_tm : "?", p->addr,
			   details && details[0] ? details : "no details", fdx_strerror(err));
	}
	/* Every channel of the stream goes: the open ones tell the owner why. */
	while (p->chans) {
		struct fdx__out_chan *c = p->chans;
		char msg[192];

		/* A channel still being opened is reported by its opener, not by an event. */
		if (c->state == FDX__OUT_OPEN && !c->opening) {
			snprintf(msg, sizeof(msg), "TaskManager %s at %s went away: %s",
				 p->remote_tm[0] ? p->remote_tm : "?", p->addr,
				 details && details[0] ? details : fdx_strerror(err));
			if (c->hooks) {
				/* The consumer is gone: what it held is ours again. */
				fdx__out_chan_return_inflight_locked(c);
				c->hooks->failed(c->hook_ud, err, msg);
			} else {
				fdx__exchange_ev_channel_failed_locked(ex, c->id, c->gate,
								       c->gate_channel, err,
								       p->remote_tm, msg);
			}
		}
		if (c->opening) {
			if (c->state ==
			    FDX__OUT_OPEN) /* answered, but its opener has not seen it */
				ex->open_out--;
			c->state = FDX__OUT_FAILED;
			c->result = err;
			chan_detach_locked(c); /* its opener frees it */
		} else {
			chan_free_locked(ex, c);
		}
	}
	gpr_free(details);
	peer_set_state_locked(p, FDX__PEER_FAILED, err);
}

void fdx__peer_free(struct fdx__peer *p)
{
	fdx__ctl_sendq_clear(&p->q);
	if (p->call)
		grpc_call_unref(p->call);
	if (p->channel)
		grpc_channel_destroy(p->channel);
	grpc_metadata_array_destroy(&p->initial_md);
	grpc_metadata_array_destroy(&p->trailing_md);
	grpc_slice_unref(p->status_details);
	free(p->addr);
	free(p);
}

/* With ex->lock held: unlink p; the caller frees it after unlocking. */
static void peer_unlink_locked(struct fdx_exchange *ex, struct fdx__peer *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		ex->peers = p->next;
	if (p->next)
		p->next->prev = p->prev;
	ex->n_peers--;
	pthread_cond_broadcast(&ex->cond);
}

/* Returns p when it is over and must be freed (after ex->lock is released). */
struct fdx__peer *fdx__peer_event(struct fdx__peer *p, enum fdx__ctl_tag_kind kind, int ok)
{
	struct fdx_exchange *ex = p->ex;

	p->pending--;
	switch (kind) {
	case FDX__CTL_TAG_PEER_RECV:
		if (ok && p->recv_bb) {
			peer_on_frame_locked(p, p->recv_bb);
			grpc_byte_buffer_destroy(p->recv_bb);
			p->recv_bb = NULL;
			peer_post_recv(p);
		}
		break;
	case FDX__CTL_TAG_PEER_SEND:
		p->q.busy = 0;
		if (!ok)
			fdx__ctl_sendq_clear(&p->q);
		else if (fdx__ctl_send_next(p->call, &p->q, &p->t_send, &p->pending))
			break;
		if (p->failing) /* our Error frame went (or cannot): now end it */
			grpc_call_cancel_with_status(p->call, GRPC_STATUS_INVALID_ARGUMENT,
						     p->fail_msg, NULL);
		else
			peer_flush_backlog(p);
		break;
	case FDX__CTL_TAG_PEER_STATUS:
		peer_on_status_locked(p);
		break;
	default:
		break;
	}
	if (p->pending)
		return NULL;
	/* Every operation has completed: the stream is over. Forget the peer. */
	p->over = 1;
	p->state = FDX__PEER_FAILED;
	if (p->waiters)
		return NULL; /* the last waiter frees it */
	peer_unlink_locked(ex, p);
	return p;
}

/* A peer for addr, with no channel or call yet; NULL if out of memory. */
struct fdx__peer *fdx__peer_new(struct fdx_exchange *ex, const char *addr)
{
	struct fdx__peer *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->addr = strdup(addr);
	if (!p->addr) {
		free(p);
		return NULL;
	}
	p->ex = ex;
	p->t_recv = (struct fdx__ctl_tag){FDX__CTL_TAG_PEER_RECV, p};
	p->t_send = (struct fdx__ctl_tag){FDX__CTL_TAG_PEER_SEND, p};
	p->t_status = (struct fdx__ctl_tag){FDX__CTL_TAG_PEER_STATUS, p};
	p->status_details = grpc_empty_slice();
	grpc_metadata_array_init(&p->initial_md);
	grpc_metadata_array_init(&p->trailing_md);
	return p;
}

/* With ex->lock held: send our hello on p's new call, start receiving, list p. */
void fdx__peer_begin_locked(struct fdx_exchange *ex, struct fdx__peer *p)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Hello h = FDX__HELLO__INIT;
	grpc_op ops[2];

	h.protocol_version = ex->version;
	h.taskmanager_id = ex->tm_id;
	h.uid = (uint32_t)geteuid();
	h.pid = (uint32_t)getpid();
	h.boot_id = ex->boot_id;
	h.segment_size = ex->seg_size;
	h.n_links = sizeof(all_links) / sizeof(all_links[0]);
	h.links = (Fdx__Link *)all_links;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_HELLO;
	f.hello = &h;

	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = fdx__ctl_pack(&f);
	p->q.busy = 1;
	if (!fdx__ctl_start_batch(p->call, ops, 2, &p->t_send, &p->pending))
		p->q.busy = 0;
	grpc_byte_buffer_destroy(ops[1].data.send_message.send_message);
	ex->st.frames_out++;
	peer_post_recv(p);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &p->trailing_md;
	ops[0].data.recv_status_on_client.status = &p->status;
	ops[0].data.recv_status_on_client.status_details = &p->status_details;
	fdx__ctl_start_batch(p->call, ops, 1, &p->t_status, &p->pending);

	p->state = FDX__PEER_CONNECTING;
	p->next = ex->peers;
	if (ex->peers)
		ex->peers->prev = p;
	ex->peers = p;
	ex->n_peers++;
}

/* With ex->lock held: create the stream to addr and send our hello. */
static int peer_start_locked(struct fdx_exchange *ex, const char *addr, struct fdx__peer **out)
{
	grpc_channel_credentials *creds;
	grpc_slice method;
	struct fdx__peer *p = fdx__peer_new(ex, addr);

	if (!p)
		return -ENOMEM;
	creds = grpc_insecure_credentials_create();
	{
		grpc_arg a[10];
		grpc_channel_args ca = {fdx__exchange_grpc_args(ex, a, 0), a};

		p->channel = grpc_channel_create(addr, creds, &ca);
	}
	grpc_channel_credentials_release(creds);
	method = grpc_slice_from_static_string(FDX__CTL_METHOD);
	p->call = grpc_channel_create_call(p->channel, NULL, GRPC_PROPAGATE_DEFAULTS, ex->cq,
					   method, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (!p->call) {
		fdx__peer_free(p);
		return -ENOMEM;
	}
	fdx__peer_begin_locked(ex, p);
	*out = p;
	return 0;
}

/*
 * With ex->lock held: the peer at addr once its handshake is done, started if
 * needed. On success *out is the peer (up); on failure the error.
 */
static int connect_locked(struct fdx_exchange *ex, const char *addr,
			  const struct timespec *deadline, int timeout_ms, struct fdx__peer **out)
{
	struct fdx__peer *p, *dead = NULL;
	int err = 0;

	for (p = ex->peers; p; p = p->next)
		if (p->state != FDX__PEER_FAILED && !p->over && strcmp(p->addr, addr) == 0)
			break;
	if (!p)
		err = peer_start_locked(ex, addr, &p);
	if (err)
		return err;
	p->waiters++;
	while (!err && p->state == FDX__PEER_CONNECTING) {
		if (pthread_cond_timedwait(&ex->cond, &ex->lock, deadline) == ETIMEDOUT &&
		    p->state == FDX__PEER_CONNECTING) {
			err = -ETIMEDOUT;
			grpc_call_cancel(p->call, NULL);
		}
	}
	if (!err && p->state == FDX__PEER_FAILED)
		err = p->result;
	if (--p->waiters == 0 && p->over) {
		peer_unlink_locked(ex, p);
		dead = p;
	}
	if (dead) {
		/* Freeing needs no lock, but keeps it short: the peer is unlinked. */
		pthread_mutex_unlock(&ex->lock);
		fdx__peer_free(dead);
		pthread_mutex_lock(&ex->lock);
	}
	if (err == -ETIMEDOUT)
		FDX_LOG_ERR(&ex->log, "exchange %s: no handshake from %s within %d ms", ex->tm_id,
			    addr, timeout_ms);
	*out = err ? NULL : p;
	return err;
}

FDX_API int fdx_exchange_connect(struct fdx_exchange *ex, const char *addr, int timeout_ms)
{
	struct timespec deadline;
	struct fdx__peer *p;
	int err;

	if (!ex || !addr)
		return -EINVAL;
	if (timeout_ms <= 0)
		timeout_ms = CONNECT_TIMEOUT_DEFAULT_MS;
	fdx__deadline_in(&deadline, timeout_ms);
	pthread_mutex_lock(&ex->lock);
	err = connect_locked(ex, addr, &deadline, timeout_ms, &p);
	pthread_mutex_unlock(&ex->lock);
	return err;
}

/* ---- opening and using our channels: the owner's and the data plane's calls -- */

/*
 * With ex->lock held: open a channel on p's stream (its opener waits for the
 * answer, then calls fdx__out_chan_open_end_locked()). 0 with *out set, or -ENOMEM.
 */
int fdx__out_chan_open_begin_locked(struct fdx_exchange *ex, struct fdx__peer *p,
				    const char *partition_id, uint32_t subpartition, uint32_t gate,
				    uint32_t gate_channel, struct fdx__out_chan **out)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__OpenChannel o = FDX__OPEN_CHANNEL__INIT;
	struct fdx__out_chan *c;
	uint32_t id;

	if (fdx__idmap_reserve(&ex->cchans) < 0)
		return -ENOMEM;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	id = chan_new_id(ex);
	c->id = id;
	fdx__ledger_init(&c->own, 0);
	fdx__idmap_put(&ex->cchans, id, c);
	c->p = p;
	c->pnext = p->chans;
	p->chans = c;
	c->opening = 1;
	c->gate = gate;
	c->gate_channel = gate_channel;
	c->subpartition = subpartition;
	c->state = FDX__OUT_OPENING;
	o.id = id;
	o.partition_id = (char *)partition_id;
	o.subpartition = subpartition;
	o.gate = gate;
	o.gate_channel = gate_channel;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_OPEN;
	f.open = &o;
	peer_send_locked(p, &f);
	*out = c;
	return 0;
}

/*
 * With ex->lock held: c's opener stops waiting, answered or (timed_out) not.
 * 0 with *chan and *initial_credit (if not NULL) set, or why the open failed.
 */
int fdx__out_chan_open_end_locked(struct fdx_exchange *ex, struct fdx__out_chan *c, int timed_out,
				  const char *addr, uint32_t *chan, uint32_t *initial_credit)
{
	uint32_t gate = c->gate, gate_channel = c->gate_channel;
	int err = 0;

	if (timed_out && c->state == FDX__OUT_OPENING) {
		/* Too late: a late answer is closed again (see peer_on_frame_locked). */
		c->state = FDX__OUT_ABANDONED;
		err = -ETIMEDOUT;
	}
	c->opening = 0;
	if (c->state == FDX__OUT_FAILED || (c->state == FDX__OUT_CLOSED && !err))
		err = c->result ? c->result : FDX_EPEERGONE; /* closed: answered, then dropped */
	if (err) {
		/* Closed: freed here once confirmed, else when the confirmation comes. */
		if (c->state == FDX__OUT_FAILED || (c->state == FDX__OUT_CLOSED && c->confirmed))
			chan_free_locked(ex, c);
		/* A warning: the opener has the error to act on. */
		FDX_LOG_WARN(&ex->log,
			     "exchange %s: cannot open input channel %u of gate %u at %s: %s",
			     ex->tm_id, gate_channel, gate, addr, fdx_strerror(err));
		return err;
	}
	*chan = c->id;
	if (initial_credit)
		*initial_credit = c->initial;
	return 0;
}

FDX_API int fdx_exchange_open_channel(struct fdx_exchange *ex, const char *addr,
				      const char *partition_id, uint32_t subpartition,
				      uint32_t gate, uint32_t gate_channel, int timeout_ms,
				      uint32_t *chan, uint32_t *initial_credit)
{
	struct timespec deadline;
	struct fdx__out_chan *c;
	struct fdx__peer *p;
	int err, timed_out = 0;

	if (!ex || !addr || !partition_id || !chan)
		return -EINVAL;
	if (timeout_ms <= 0)
		timeout_ms = CONNECT_TIMEOUT_DEFAULT_MS;
	fdx__deadline_in(&deadline, timeout_ms);
	pthread_mutex_lock(&ex->lock);
	err = connect_locked(ex, addr, &deadline, timeout_ms, &p);
	if (!err)
		err = fdx__out_chan_open_begin_locked(ex, p, partition_id, subpartition, gate,
						      gate_channel, &c);
	if (!err) {
		while (c->state == FDX__OUT_OPENING && !timed_out)
			if (pthread_cond_timedwait(&ex->cond, &ex->lock, &deadline) == ETIMEDOUT)
				timed_out = 1;
		err = fdx__out_chan_open_end_locked(ex, c, timed_out, addr, chan, initial_credit);
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

struct fdx__out_chan *fdx__out_chan_open_locked(struct fdx_exchange *ex, uint32_t id)
{
	struct fdx__out_chan *c = fdx__out_chan_get(ex, id);

	return c && c->state == FDX__OUT_OPEN ? c : NULL;
}

FDX_API int fdx_exchange_sent(struct fdx_exchange *ex, uint32_t channel, uint64_t offset)
{
	struct fdx__out_chan *c;
	int err;

	if (!ex || offset == 0)
		return -EINVAL;
	pthread_mutex_lock(&ex->lock);
	c = fdx__out_chan_open_locked(ex, channel);
	if (!c) {
		err = -ENOENT;
	} else if (c->hooks || c->unhooked) {
		err = -EINVAL; /* a partition's channel: its loop sends on it */
	} else if (fdx__ledger_holds(&c->own, offset)) {
		err = -EEXIST;
	} else if (fdx__ledger_available(&c->own) == 0) {
		err = -EAGAIN;
	} else {
		err = fdx__ledger_spend(&c->own, offset, 0);
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

FDX_API int fdx_exchange_backlog(struct fdx_exchange *ex, uint32_t channel, uint32_t backlog)
{
	struct fdx__out_chan *c;
	int err = 0;

	if (!ex)
		return -EINVAL;
	pthread_mutex_lock(&ex->lock);
	c = fdx__out_chan_open_locked(ex, channel);
	if (!c) {
		err = -ENOENT;
	} else {
		/* Coalesced: only the latest value of each channel goes, in the next message. */
		c->backlog = backlog;
		if (!c->bl_dirty) {
			c->bl_dirty = 1;
			c->bl_next = c->p->bl_dirty;
			c->p->bl_dirty = c;
		}
		peer_flush_backlog(c->p);
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

static int close_channel(struct fdx_exchange *ex, uint32_t channel, int data_close)
{
	struct fdx__out_chan *c;
	int err = 0;

	if (!ex)
		return -EINVAL;
	pthread_mutex_lock(&ex->lock);
	c = fdx__out_chan_open_locked(ex, channel);
	if (!c) {
		err = -ENOENT;
	} else {
		fdx__peer_send_close_locked(c->p, c, data_close);
		/* Kept until the consumer confirms: credit sent before the close still arrives. */
		c->state = FDX__OUT_CLOSED;
		ex->open_out--;
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

FDX_API int fdx_exchange_close_channel(struct fdx_exchange *ex, uint32_t channel)
{
	return close_channel(ex, channel, 0);
}

int fdx__exchange_close_channel_data(struct fdx_exchange *ex, uint32_t channel)
{
	return close_channel(ex, channel, 1);
}
