/* SPDX-License-Identifier: MIT */
/*
 * The exchange's control plane on gRPC C core.
 *
 * Threads and ownership:
 * - The completion-queue thread (cq_main) reacts to every completion, with
 *   ex->lock held (once per control message, never per credit), and frees a
 *   session or a peer once none of its operations is outstanding.
 * - The owner thread calls the public functions, which take ex->lock too:
 *   open streams and channels, queue credits. Events travel the other way,
 *   from the cq thread to the owner, through a lock-free queue and an
 *   eventfd: fdx_exchange_poll() takes no lock.
 * - For a Unix socket, accept_main accepts connections, checks SO_PEERCRED
 *   against the allowed uids, and only then hands the socket to gRPC.
 *
 * gRPC C core allows one send and one receive in flight per call: each call
 * object keeps its own queue of packed frames, sent one after the other.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <fdx/error.h>
#include <fdx/exchange.h>
#include <fdx/partition.h>
#include <fdx/region.h>

#include "../runtime/abi.h"
#include "../runtime/idmap.h"
#include "../runtime/log.h"
#include "exchange.pb-c.h"
#include "../runtime/mpsc_queue.h"
#include "../runtime/port.h"
#include "exchange_internal.h"

#define METHOD "/fdx.DataExchange/ExchangeData"
#define DESTROY_BUDGET_MS 900
#define CONNECT_TIMEOUT_DEFAULT_MS 5000
#define GATE_CHANNELS_MAX 65536u
/* Most returned offsets in one CreditUpdate (about 80 KiB on the wire). */
#define CREDIT_MSG_OFFSETS_MAX 8192u

enum tag_kind {
	TAG_REQUEST_CALL,
	TAG_SERVER_SHUTDOWN,
	TAG_SESSION_RECV,
	TAG_SESSION_SEND,
	TAG_SESSION_CLOSE,
	TAG_SESSION_STATUS,
	TAG_PEER_RECV,
	TAG_PEER_SEND,
	TAG_PEER_STATUS,
};

struct tag {
	enum tag_kind kind;
	void *obj;
};

/* A packed frame waiting for its turn to be sent on a call. */
struct outframe {
	grpc_byte_buffer *bb;
	struct outframe *next;
};

struct sendq {
	struct outframe *head, *tail;
	uint32_t len; /* frames queued, not counting the one in flight */
	int busy; /* a SEND_MESSAGE (or the initial metadata) is in flight */
};

/*
 * Most frames queued on one stream. Our own frames are coalesced or bounded
 * by what the owner asks; only a peer that does not read its stream while it
 * keeps asking for answers can reach this, and it is cut off.
 */
#define SENDQ_MAX 1024u

struct session;
struct peer;

/* Consumer side: an input channel a producer opened on a session. */
struct srv_chan {
	struct session *s;
	uint32_t id; /* the producer's OpenChannel.id */
	uint32_t gate, gate_channel;
	uint32_t backlog; /* the last one announced */
	int marked; /* named in the frame being handled */
	/* Credit and offsets not yet sent, coalesced until the next send. */
	uint64_t pending_added;
	uint64_t *offs;
	uint32_t n_offs, cap_offs;
	int dirty;
	int gone; /* its gate was removed: only the producer's close is still expected */
	uint64_t opening; /* a data-plane gate's number for this opening (0: plain gate) */
	struct srv_chan *next_dirty;
};

struct gate {
	uint32_t id, n_channels, initial_credit;
	struct srv_chan **chans; /* by gate channel; NULL when not open */
	const struct fdx__gate_hooks *hooks; /* a data-plane gate: news go there, not to events */
	void *hook_ud;
	struct gate *next;
};

/*
 * Producer-side channel states. CLOSED: closed by us, credit and returned
 * offsets sent before the consumer saw the close still arrive. ABANDONED: the
 * open timed out; a late answer is closed again. FAILED: refused or the
 * stream ended; freed once its opener has read why.
 */
/* The status details of a stream we end because we are being destroyed. */
#define SHUTTING_DOWN "the TaskManager is shutting down"

enum chan_state { CHAN_OPENING, CHAN_OPEN, CHAN_CLOSED, CHAN_ABANDONED, CHAN_FAILED };

/* Producer side: a channel opened on the stream to a peer. */
struct cli_chan {
	struct peer *p; /* NULL once failed */
	struct cli_chan *pnext; /* in p->chans */
	uint32_t id, gate, gate_channel, subpartition;
	enum chan_state state;
	int result;
	int opening; /* its opener waits on it: it frees it */
	int marked; /* named in the credit update being handled */
	uint32_t initial;
	uint64_t available; /* credit: initial + granted - spent by fdx_exchange_sent() */
	uint64_t *inflight; /* offsets sent, not yet handed back: open addressing, 0 = empty */
	uint32_t n_inflight, cap_inflight;
	uint32_t backlog; /* the latest, not yet sent if bl_dirty */
	int bl_dirty;
	struct cli_chan *bl_next;
	const struct fdx__chan_hooks *hooks; /* a data-plane channel: credit goes there */
	void *hook_ud;
	int took_back; /* its in-flight offsets were taken back: late returns are ignored */
	int confirmed; /* CLOSED, and the consumer confirmed it (ChannelClosed) */
};

/* An event on its way to the owner, with its offsets. */
struct evnode {
	struct fdx__mpsc_node link;
	struct evnode *retired_next;
	struct fdx_exchange_event ev;
	uint64_t offsets[];
};

/* An incoming stream. */
struct session {
	struct fdx_exchange *ex;
	grpc_call *call;
	struct tag t_recv, t_send, t_close, t_status;
	grpc_byte_buffer *recv_bb;
	struct sendq q;
	int pending; /* operations in flight */
	int cancelled; /* set by RECV_CLOSE_ON_SERVER */
	int greeted; /* a valid hello came */
	int finishing; /* a final status is wanted */
	int status_sent; /* SEND_STATUS_FROM_SERVER started */
	int status_done; /* ... and completed */
	int stats_wanted; /* a StatsRequest waits for its answer (built outside ex->lock) */
	grpc_status_code final_code;
	char final_msg[256];
	char peer_tm[64];
	uint64_t serial; /* names the session to the data plane */
	uint8_t token[16]; /* its data sockets present it */
	struct fdx__idmap ids; /* its channels by the producer's id */
	struct srv_chan *dirty_head, *dirty_tail;
	struct session *prev, *next;
};

enum peer_state { PEER_CONNECTING, PEER_UP, PEER_FAILED };

/* An outgoing stream to one peer TaskManager. */
struct peer {
	struct fdx_exchange *ex;
	char *addr;
	grpc_channel *channel;
	grpc_call *call;
	struct tag t_recv, t_send, t_status;
	grpc_byte_buffer *recv_bb;
	grpc_metadata_array initial_md, trailing_md;
	grpc_status_code status;
	grpc_slice status_details;
	struct sendq q;
	int pending;
	struct cli_chan *chans; /* every channel opened on this stream */
	struct cli_chan *bl_dirty; /* channels whose backlog changed */
	enum peer_state state; /* under ex->lock */
	int result; /* why it failed, under ex->lock */
	int got_initial_md;
	int failing; /* we found the consumer at fault: Error frame, then cancel */
	char fail_msg[160];
	int waiters; /* owner threads in fdx_exchange_connect() on it; under ex->lock */
	int over; /* every operation completed; under ex->lock */
	char remote_tm[64];
	uint32_t link; /* chosen by the consumer: one of Fdx__Link */
	uint8_t token[16]; /* for the data socket (data plane) */
	char unix_ep[128], tcp_ep[128]; /* the consumer's data sockets */
	struct peer *prev, *next;
};

struct fdx_exchange {
	struct fdx__port port; /* first: runtime/ reaches the data plane through it (port.h) */
	struct fdx__log log;
	uint32_t version;
	uint32_t seg_size;
	char boot_id[40]; /* /proc/sys/kernel/random/boot_id: same host, same id */
	char *tm_id;
	char *address; /* as peers dial it */
	int stats_wanted; /* some session has stats_wanted set */
	char *sock_path; /* Unix socket file we created, or NULL */
	uint32_t allow_uids[FDX_EXCHANGE_MAX_UIDS];
	uint32_t n_allow_uids;

	grpc_completion_queue *cq;
	grpc_server *server;
	int grpc_up; /* grpc_init() called */
	int server_started; /* grpc_server_start() called */
	int cq_running; /* cq_thread started */
	pthread_t cq_thread;
	int listen_fd;
	pthread_t accept_thread;
	int accepting;

	/* The pending grpc_server_request_call. */
	grpc_call *new_call;
	grpc_call_details details;
	grpc_metadata_array request_md;
	struct tag t_request, t_shutdown;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* peer and channel state changes, teardown progress */
	struct peer *peers;
	struct session *sessions;
	struct gate *gates;
	/*
	 * Our channels by id: open addressing (a power of two, at most half
	 * full). Ids count up from 1 and are not reused before they wrap (2^32
	 * openings), so a stale id names no channel; a channel is freed when its
	 * consumer confirmed the close (ChannelClosed) or its stream ended.
	 */
	struct fdx__idmap cchans;
	uint32_t next_id;
	uint32_t open_out; /* channels in state CHAN_OPEN */

	/* cq thread -> owner */
	struct fdx__mpsc events;
	struct evnode *retired; /* returned by the last poll; owner only */
	int efd;
	int events_pushed; /* since the last eventfd write; under lock */
	int stopping;
	int server_down;
	uint32_t n_peers, n_sessions, peers_up;
	uint64_t sess_serial;
	struct fdx__dp *dp;
	struct fdx_exchange_stats st;
};

_Static_assert(offsetof(struct fdx_exchange, port) == 0, "runtime/port.h: the port comes first");

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

static void deadline_in(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* ---- frames -------------------------------------------------------------- */

static grpc_byte_buffer *pack_frame(const Fdx__ControlFrame *f)
{
	size_t n = fdx__control_frame__get_packed_size(f);
	grpc_slice s = grpc_slice_malloc(n);
	grpc_byte_buffer *bb;

	fdx__control_frame__pack(f, GRPC_SLICE_START_PTR(s));
	bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

/* Unpack a received message; NULL if it is not a ControlFrame. */
static Fdx__ControlFrame *unpack_frame(grpc_byte_buffer *bb)
{
	grpc_byte_buffer_reader r;
	Fdx__ControlFrame *f;
	grpc_slice s;

	if (!grpc_byte_buffer_reader_init(&r, bb))
		return NULL;
	s = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	f = fdx__control_frame__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
	grpc_slice_unref(s);
	return f;
}

/*
 * Start a batch, counting it in *pending first: the completion may be
 * processed by the cq thread before grpc_call_start_batch() even returns.
 * Everything written before the call happens-before its completion event.
 */
static int start_batch(grpc_call *call, const grpc_op *ops, size_t n, struct tag *t, int *pending)
{
	(*pending)++;
	if (grpc_call_start_batch(call, ops, n, t, NULL) == GRPC_CALL_OK)
		return 1;
	(*pending)--;
	return 0;
}

static void sendq_push(struct sendq *q, grpc_byte_buffer *bb)
{
	struct outframe *o = calloc(1, sizeof(*o));

	if (!o) {
		/* Out of memory for a control frame: drop it; the stream's status tells. */
		grpc_byte_buffer_destroy(bb);
		return;
	}
	o->bb = bb;
	q->len++;
	if (q->tail)
		q->tail->next = o;
	else
		q->head = o;
	q->tail = o;
}

static grpc_byte_buffer *sendq_pop(struct sendq *q)
{
	struct outframe *o = q->head;
	grpc_byte_buffer *bb;

	if (!o)
		return NULL;
	q->head = o->next;
	q->len--;
	if (!q->head)
		q->tail = NULL;
	bb = o->bb;
	free(o);
	return bb;
}

static void sendq_clear(struct sendq *q)
{
	grpc_byte_buffer *bb;

	while ((bb = sendq_pop(q)))
		grpc_byte_buffer_destroy(bb);
}

/* Start a SEND_MESSAGE of the next queued frame if none is in flight; 1 if started. */
static int send_next(grpc_call *call, struct sendq *q, struct tag *t, int *pending)
{
	grpc_byte_buffer *bb;
	grpc_op op;

	if (q->busy || !(bb = sendq_pop(q)))
		return 0;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = bb;
	q->busy = 1;
	if (!start_batch(call, &op, 1, t, pending))
		q->busy = 0;
	/* gRPC holds its own reference to the message until the batch completes. */
	grpc_byte_buffer_destroy(bb);
	return q->busy;
}

/* ---- events to the owner ------------------------------------------------- */

/* With ex->lock held: queue an event (offsets copied) for fdx_exchange_poll(). */
static void ev_push_locked(struct fdx_exchange *ex, const struct fdx_exchange_event *ev,
			   const uint64_t *offsets, uint32_t n)
{
	struct evnode *e = malloc(sizeof(*e) + (size_t)n * sizeof(uint64_t));

	if (!e) {
		FDX_LOG_ERR(&ex->log, "exchange %s: out of memory: an event was lost", ex->tm_id);
		return;
	}
	e->ev = *ev;
	e->ev.n_offsets = n;
	e->ev.offsets = NULL;
	if (n)
		memcpy(e->offsets, offsets, (size_t)n * sizeof(uint64_t));
	fdx__mpsc_push(&ex->events, &e->link);
	ex->events_pushed = 1;
}

/* With ex->lock held: one eventfd write for all the events of one message. */
static void events_flush_locked(struct fdx_exchange *ex)
{
	uint64_t one = 1;

	if (!ex->events_pushed)
		return;
	ex->events_pushed = 0;
	if (write(ex->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		FDX_LOG_ERR(&ex->log, "exchange %s: eventfd: %s", ex->tm_id, fdx_strerror(-errno));
}

static void ev_channel_failed_locked(struct fdx_exchange *ex, uint32_t chan, uint32_t gate,
				     uint32_t gate_channel, int err, const char *peer,
				     const char *why)
{
	struct fdx_exchange_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = FDX_EV_CHANNEL_FAILED;
	ev.channel = chan;
	ev.gate = gate;
	ev.gate_channel = gate_channel;
	ev.error = err;
	snprintf(ev.peer, sizeof(ev.peer), "%s", peer);
	snprintf(ev.message, sizeof(ev.message), "%s", why);
	ev_push_locked(ex, &ev, NULL, 0);
}

/* ---- consumer side: gates and input channels ------------------------------ */

static struct gate *gate_find(struct fdx_exchange *ex, uint32_t id)
{
	for (struct gate *g = ex->gates; g; g = g->next)
		if (g->id == id)
			return g;
	return NULL;
}

static struct srv_chan *session_chan(const struct session *s, uint32_t id)
{
	return fdx__idmap_get(&s->ids, id);
}

static int session_chan_insert(struct session *s, struct srv_chan *c)
{
	if (fdx__idmap_reserve(&s->ids) < 0)
		return -ENOMEM;
	fdx__idmap_put(&s->ids, c->id, c);
	return 0;
}

/* Remove c from s's table and its list of channels owing credit. */
static void session_chan_remove(struct session *s, struct srv_chan *c)
{
	fdx__idmap_del(&s->ids, c->id);
	if (c->dirty) {
		struct srv_chan **pp = &s->dirty_head, *prev = NULL;

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
static void session_drop_channels(struct session *s, int err, const char *why)
{
	struct fdx_exchange *ex = s->ex;
	char msg[192];

	for (uint32_t i = 0; i < s->ids.cap; i++) {
		struct srv_chan *c = s->ids.e[i].p;
		struct gate *g;

		if (!c)
			continue;
		g = gate_find(ex, c->gate);
		if (g && c->gate_channel < g->n_channels && g->chans[c->gate_channel] == c)
			g->chans[c->gate_channel] = NULL;
		snprintf(msg, sizeof(msg), "TaskManager %s: %s", s->peer_tm, why);
		if (c->gone) /* its gate went already: nobody to tell */
			g = NULL;
		else if (g && g->hooks)
			g->hooks->failed(g->hook_ud, c->gate_channel, s->serial, err, msg);
		else
			ev_channel_failed_locked(ex, 0, c->gate, c->gate_channel, err, s->peer_tm,
						 msg);
		free(c->offs);
		free(c);
		s->ids.e[i].p = NULL;
	}
	s->ids.n = 0;
	s->dirty_head = s->dirty_tail = NULL;
}

/* ---- server side: sessions ----------------------------------------------- */

static void session_send_status(struct session *s)
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
	start_batch(s->call, &op, 1, &s->t_status, &s->pending);
	grpc_slice_unref(details);
	s->status_sent = 1;
}

/* End the stream with a status (after what is queued); the first reason wins. */
static void session_finish(struct session *s, grpc_status_code code, const char *msg)
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

static void session_send(struct session *s, const Fdx__ControlFrame *f)
{
	struct fdx_exchange *ex = s->ex;

	if (s->q.len >= SENDQ_MAX) {
		/* It asks and never reads: cut it off rather than queue without bound. */
		FDX_LOG_WARN(&ex->log,
			     "exchange %s: TaskManager %s does not read its stream; stream failed",
			     ex->tm_id, s->peer_tm);
		ex->st.bad_frames++;
		sendq_clear(&s->q);
		session_finish(s, GRPC_STATUS_RESOURCE_EXHAUSTED, "peer does not read its stream");
		grpc_call_cancel_with_status(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
					     "peer does not read its stream", NULL);
		return;
	}
	sendq_push(&s->q, pack_frame(f));
	send_next(s->call, &s->q, &s->t_send, &s->pending);
	ex->st.frames_out++;
}

/*
 * With ex->lock held: when nothing is being sent on s, send every credit and
 * returned offset that accumulated, as one CreditUpdate (at most
 * CREDIT_MSG_OFFSETS_MAX offsets; the rest go in the next one).
 */
static void session_flush_credits(struct session *s)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__CreditUpdate cu = FDX__CREDIT_UPDATE__INIT;
	uint32_t n = 0, budget = CREDIT_MSG_OFFSETS_MAX;
	Fdx__Credit *cr, **crp;
	struct srv_chan *c;

	if (s->q.busy || s->q.head || !s->dirty_head || s->finishing)
		return;
	for (c = s->dirty_head; c; c = c->next_dirty)
		n++;
	cr = calloc(n, sizeof(*cr));
	crp = calloc(n, sizeof(*crp));
	if (!cr || !crp) {
		free(cr);
		free(crp);
		return; /* tried again after the next send or credit */
	}
	n = 0;
	for (c = s->dirty_head; c && budget; c = c->next_dirty) {
		uint32_t k = c->n_offs < budget ? c->n_offs : budget;

		fdx__credit__init(&cr[n]);
		cr[n].channel = c->id;
		cr[n].added = (uint32_t)c->pending_added;
		cr[n].n_returned_offsets = k;
		cr[n].returned_offsets = c->offs;
		crp[n] = &cr[n];
		s->ex->st.credits_out += c->pending_added;
		budget -= k;
		n++;
	}
	cu.n_credits = n;
	cu.credits = crp;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_CREDIT;
	f.credit = &cu;
	sendq_push(&s->q, pack_frame(&f));
	s->ex->st.credit_msgs_out++;
	s->ex->st.frames_out++;
	/* Take what was packed off the channels; partly sent ones stay dirty, first. */
	c = s->dirty_head;
	for (uint32_t i = 0; i < n; i++) {
		struct srv_chan *next = c->next_dirty;
		uint32_t k = (uint32_t)cr[i].n_returned_offsets;

		c->pending_added = 0;
		if (k && k < c->n_offs)
			memmove(c->offs, c->offs + k, (size_t)(c->n_offs - k) * sizeof(uint64_t));
		c->n_offs -= k;
		if (c->n_offs) {
			next = c; /* budget ran out within this channel */
			break;
		}
		c->dirty = 0;
		c->next_dirty = NULL;
		c = next;
	}
	s->dirty_head = c;
	if (!c)
		s->dirty_tail = NULL;
	free(cr);
	free(crp);
	send_next(s->call, &s->q, &s->t_send, &s->pending);
}

static void session_error(struct session *s, int code, uint32_t chan, const char *msg)
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

static void session_on_open(struct session *s, const Fdx__OpenChannel *o)
{
	struct fdx_exchange *ex = s->ex;
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__OpenChannelAck ack = FDX__OPEN_CHANNEL_ACK__INIT;
	struct fdx_exchange_event ev;
	struct gate *g = gate_find(ex, o->gate);
	struct srv_chan *c;
	char msg[160];

	if (session_chan(s, o->id)) {
		snprintf(msg, sizeof(msg), "channel id %u opened twice", o->id);
		ex->st.bad_frames++;
		session_finish(s, GRPC_STATUS_INVALID_ARGUMENT, msg);
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
			free(c);
			snprintf(msg, sizeof(msg), "input channel %u of gate %u: %s",
				 o->gate_channel, o->gate, fdx_strerror(err));
			session_error(s, err, o->id, msg);
			return;
		}
	} else {
		memset(&ev, 0, sizeof(ev));
		ev.type = FDX_EV_CHANNEL_OPENED;
		ev.gate = o->gate;
		ev.gate_channel = o->gate_channel;
		ev.subpartition = o->subpartition;
		snprintf(ev.peer, sizeof(ev.peer), "%s", s->peer_tm);
		ev_push_locked(ex, &ev, NULL, 0);
		events_flush_locked(ex);
	}
	/* The initial credit travels in the answer: nobody waits for a first record. */
	ack.id = o->id;
	ack.initial_credit = g->initial_credit;
	f.frame_case = FDX__CONTROL_FRAME__FRAME_OPEN_ACK;
	f.open_ack = &ack;
	session_send(s, &f);
}

static void session_on_hello(struct session *s, const Fdx__Hello *h)
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
		session_finish(s, GRPC_STATUS_FAILED_PRECONDITION, msg);
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
		session_finish(s, GRPC_STATUS_UNAVAILABLE, "no randomness for a data-socket token");
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
 * plane's lock, which comes first (stats_answer()).
 */
static void session_on_stats(struct session *s)
{
	s->stats_wanted = 1;
	s->ex->stats_wanted = 1;
}

/* Answer s's statistics request: its own input channels and the snapshot. */
static void session_send_stats(struct session *s, const Fdx__StatsReply *snap)
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
		struct srv_chan *c = s->ids.e[i].p;

		if (!c)
			continue;
		fdx__channel_stats__init(&cs[n]);
		cs[n].channel = c->id;
		cs[n].credits = (uint32_t)c->pending_added;
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
static void stats_answer(struct fdx_exchange *ex)
{
	Fdx__StatsReply snap = FDX__STATS_REPLY__INIT;
	int err = fdx__stats_fill(ex, &snap);

	pthread_mutex_lock(&ex->lock);
	for (struct session *s = ex->sessions; s; s = s->next) {
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
static void session_unknown_channel(struct session *s, uint32_t id)
{
	struct fdx_exchange *ex = s->ex;
	char msg[64];

	snprintf(msg, sizeof(msg), "unknown channel %u", id);
	ex->st.bad_frames++;
	FDX_LOG_WARN(&ex->log, "exchange %s: TaskManager %s named %s; stream failed", ex->tm_id,
		     s->peer_tm, msg);
	session_finish(s, GRPC_STATUS_INVALID_ARGUMENT, msg);
}

/* The latest backlog of some channels; an unknown one fails the stream. */
static void session_on_backlog(struct session *s, const Fdx__Backlog *b)
{
	struct fdx_exchange *ex = s->ex;
	struct fdx_exchange_event ev;

	if (b->n_channels != b->n_backlogs) {
		ex->st.bad_frames++;
		session_finish(s, GRPC_STATUS_INVALID_ARGUMENT, "backlog lists differ in length");
		return;
	}
	for (size_t i = 0; i < b->n_channels; i++) {
		struct srv_chan *c = session_chan(s, b->channels[i]);

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
		struct srv_chan *c = session_chan(s, b->channels[i]);
		struct gate *g;

		if (!c->marked)
			continue;
		c->marked = 0;
		g = gate_find(ex, c->gate);
		if (c->gone || (g && g->hooks))
			continue;
		memset(&ev, 0, sizeof(ev));
		ev.type = FDX_EV_BACKLOG;
		ev.gate = c->gate;
		ev.gate_channel = c->gate_channel;
		ev.backlog = c->backlog;
		snprintf(ev.peer, sizeof(ev.peer), "%s", s->peer_tm);
		ev_push_locked(ex, &ev, NULL, 0);
	}
}

/* A frame after the handshake, from a producer. */
static void session_on_greeted_frame(struct session *s, const Fdx__ControlFrame *f)
{
	struct fdx_exchange *ex = s->ex;
	struct fdx_exchange_event ev;
	struct srv_chan *c;
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
		session_finish(s, GRPC_STATUS_CANCELLED, msg);
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
		session_finish(s, GRPC_STATUS_INVALID_ARGUMENT,
			       "credit flows from the consumer to the producer, not back");
		return;
	default:
		snprintf(msg, sizeof(msg), "unexpected frame (case %d) from a producer",
			 (int)f->frame_case);
		ex->st.bad_frames++;
		session_finish(s, GRPC_STATUS_INVALID_ARGUMENT, msg);
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
		free(c->offs);
		free(c);
		return;
	}
	memset(&ev, 0, sizeof(ev));
	ev.type = FDX_EV_CHANNEL_CLOSED;
	ev.gate = c->gate;
	ev.gate_channel = c->gate_channel;
	snprintf(ev.peer, sizeof(ev.peer), "%s", s->peer_tm);
	struct gate *g = gate_find(ex, c->gate);

	session_chan_remove(s, c);
	if (g && c->gate_channel < g->n_channels && g->chans[c->gate_channel] == c)
		g->chans[c->gate_channel] = NULL;
	free(c->offs);
	free(c);
	if (g && g->hooks)
		g->hooks->closed(g->hook_ud, ev.gate_channel, s->serial, data_close);
	else
		ev_push_locked(ex, &ev, NULL, 0);
}

static void session_on_frame(struct session *s, grpc_byte_buffer *bb)
{
	struct fdx_exchange *ex = s->ex;
	Fdx__ControlFrame *f = unpack_frame(bb);

	if (!f) {
		ex->st.bad_frames++;
		FDX_LOG_WARN(&ex->log, "exchange %s: a frame from %s does not parse; stream failed",
			     ex->tm_id, s->greeted ? s->peer_tm : "an unknown peer");
		session_finish(s, GRPC_STATUS_INVALID_ARGUMENT, "frame does not parse");
		return;
	}
	ex->st.frames_in++;
	if (f->frame_case == FDX__CONTROL_FRAME__FRAME_HELLO && !s->greeted)
		session_on_hello(s, f->hello);
	else if (!s->greeted)
		session_finish(s, GRPC_STATUS_FAILED_PRECONDITION,
			       "the first frame must be a hello");
	else
		session_on_greeted_frame(s, f);
	fdx__control_frame__free_unpacked(f, NULL);
}

static void session_post_recv(struct session *s)
{
	grpc_op op;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &s->recv_bb;
	start_batch(s->call, &op, 1, &s->t_recv, &s->pending);
}

static void session_start(struct fdx_exchange *ex, grpc_call *call)
{
	struct session *s = calloc(1, sizeof(*s));
	grpc_op op;

	if (!s) {
		grpc_call_cancel_with_status(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory",
					     NULL);
		grpc_call_unref(call);
		return;
	}
	s->ex = ex;
	s->call = call;
	s->t_recv = (struct tag){TAG_SESSION_RECV, s};
	s->t_send = (struct tag){TAG_SESSION_SEND, s};
	s->t_close = (struct tag){TAG_SESSION_CLOSE, s};
	s->t_status = (struct tag){TAG_SESSION_STATUS, s};
	s->next = ex->sessions;
	if (ex->sessions)
		ex->sessions->prev = s;
	ex->sessions = s;
	ex->n_sessions++;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_INITIAL_METADATA;
	s->q.busy = start_batch(call, &op, 1, &s->t_send, &s->pending);
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &s->cancelled;
	start_batch(call, &op, 1, &s->t_close, &s->pending);
	session_post_recv(s);
}

static void session_maybe_free(struct session *s)
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
	sendq_clear(&s->q);
	grpc_call_unref(s->call);
	fdx__idmap_free(&s->ids);
	free(s);
	ex->n_sessions--;
	pthread_cond_broadcast(&ex->cond);
}

static void session_event(struct session *s, enum tag_kind kind, int ok)
{
	s->pending--;
	switch (kind) {
	case TAG_SESSION_RECV:
		if (!ok || !s->recv_bb) {
			/* Half-close or a dead call: nothing more will come. */
			session_finish(s, GRPC_STATUS_OK, "");
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
	case TAG_SESSION_SEND:
		s->q.busy = 0;
		if (!ok) {
			sendq_clear(&s->q);
			session_finish(s, GRPC_STATUS_CANCELLED, "send failed");
		} else if (!send_next(s->call, &s->q, &s->t_send, &s->pending)) {
			if (s->finishing)
				session_send_status(s);
			else
				session_flush_credits(s);
		}
		break;
	case TAG_SESSION_CLOSE:
		/* The client is gone or cancelled: end our side too. */
		session_finish(s, GRPC_STATUS_CANCELLED, "peer closed the stream");
		break;
	case TAG_SESSION_STATUS:
		s->status_done = 1;
		break;
	default:
		break;
	}
	session_maybe_free(s);
}

/* ---- client side: peers ---------------------------------------------------- */

/*
 * Peers are set up by the owner and served by the cq thread: everything about
 * a peer, its operation count included, is under ex->lock (once per control
 * message, never per credit).
 */
static void peer_set_state_locked(struct peer *p, enum peer_state st, int result)
{
	struct fdx_exchange *ex = p->ex;

	if (p->state == PEER_UP && st != PEER_UP)
		ex->peers_up--;
	if (p->state != PEER_UP && st == PEER_UP)
		ex->peers_up++;
	p->state = st;
	p->result = result;
	pthread_cond_broadcast(&ex->cond);
}

static void peer_post_recv(struct peer *p)
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
	start_batch(p->call, ops, n, &p->t_recv, &p->pending);
}

/* ---- our channels by id --------------------------------------------------- */

/* With ex->lock held: the channel with that id, or NULL. */
static struct cli_chan *chan_get(const struct fdx_exchange *ex, uint32_t id)
{
	return id ? fdx__idmap_get(&ex->cchans, id) : NULL;
}

/* With ex->lock held and room reserved: the next id no channel has (never 0). */
static uint32_t chan_new_id(struct fdx_exchange *ex)
{
	do {
		if (++ex->next_id == 0)
			ex->next_id = 1;
	} while (chan_get(ex, ex->next_id));
	return ex->next_id;
}

/* The producer's channel id on p's stream, or NULL if p never opened it. */
static struct cli_chan *peer_chan(struct peer *p, uint32_t id)
{
	struct cli_chan *c = chan_get(p->ex, id);

	return c && c->p == p ? c : NULL;
}

/* With ex->lock held: queue a frame on p's stream. */
static void peer_send_locked(struct peer *p, const Fdx__ControlFrame *f)
{
	sendq_push(&p->q, pack_frame(f));
	send_next(p->call, &p->q, &p->t_send, &p->pending);
	p->ex->st.frames_out++;
}

/* The in-flight offsets of a channel: open addressing with backward-shift deletion. */
static uint32_t inflight_slot(const struct cli_chan *c, uint64_t off)
{
	/* Offsets are multiples of the segment size: mix the high bits down. */
	return (uint32_t)((off * 0x9e3779b97f4a7c15ull) >> 32) & (c->cap_inflight - 1);
}

static int inflight_add(struct cli_chan *c, uint64_t off)
{
	uint32_t i;

	if (2 * (c->n_inflight + 1) > c->cap_inflight) {
		uint32_t cap = c->cap_inflight ? 2 * c->cap_inflight : 16, oldcap = c->cap_inflight;
		uint64_t *old = c->inflight, *a = calloc(cap, sizeof(*a));

		if (!a)
			return -ENOMEM;
		c->inflight = a;
		c->cap_inflight = cap;
		c->n_inflight = 0;
		for (i = 0; i < oldcap; i++)
			if (old[i])
				inflight_add(c, old[i]);
		free(old);
	}
	for (i = inflight_slot(c, off); c->inflight[i]; i = (i + 1) & (c->cap_inflight - 1))
		if (c->inflight[i] == off)
			return -EEXIST;
	c->inflight[i] = off;
	c->n_inflight++;
	return 0;
}

static int inflight_has(const struct cli_chan *c, uint64_t off)
{
	if (!c->cap_inflight)
		return 0;
	for (uint32_t i = inflight_slot(c, off); c->inflight[i];
	     i = (i + 1) & (c->cap_inflight - 1))
		if (c->inflight[i] == off)
			return 1;
	return 0;
}

/* Remove off; 0, or -ENOENT if it was not in flight. */
static int inflight_take(struct cli_chan *c, uint64_t off)
{
	uint32_t mask = c->cap_inflight - 1, i, j;

	if (!c->cap_inflight || off == 0)
		return -ENOENT;
	for (i = inflight_slot(c, off); c->inflight[i] != off; i = (i + 1) & mask)
		if (!c->inflight[i])
			return -ENOENT;
	/* Shift the rest of the cluster back over the hole. */
	for (j = (i + 1) & mask; c->inflight[j]; j = (j + 1) & mask) {
		uint32_t home = inflight_slot(c, c->inflight[j]);

		if (((j - home) & mask) >= ((j - i) & mask)) {
			c->inflight[i] = c->inflight[j];
			i = j;
		}
	}
	c->inflight[i] = 0;
	c->n_inflight--;
	return 0;
}

/* With ex->lock held: take c off its peer's lists (it stays in ex->cchans). */
static void chan_detach_locked(struct cli_chan *c)
{
	struct peer *p = c->p;
	struct cli_chan **pp;

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
static void chan_free_locked(struct fdx_exchange *ex, struct cli_chan *c)
{
	chan_detach_locked(c);
	fdx__idmap_del(&ex->cchans, c->id);
	if (c->state == CHAN_OPEN)
		ex->open_out--;
	free(c->inflight);
	free(c);
}

/*
 * With ex->lock held: ask the consumer to close c (answered by ChannelClosed).
 * A backlog not yet sent would follow the close and name a channel the
 * consumer forgot (it fails the stream for that): it goes.
 */
static void peer_send_close_locked(struct peer *p, struct cli_chan *c, int data_close)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__CloseChannel cl = FDX__CLOSE_CHANNEL__INIT;

	if (c->bl_dirty) {
		struct cli_chan **pp = &p->bl_dirty;

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

/* With ex->lock held: send the changed backlogs together, when p's stream is idle. */
static void peer_flush_backlog(struct peer *p)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__Backlog b = FDX__BACKLOG__INIT;
	uint32_t n = 0, *ids, *bls;
	struct cli_chan *c;

	if (p->q.busy || p->q.head || !p->bl_dirty)
		return;
	for (c = p->bl_dirty; c; c = c->bl_next)
		n++;
	ids = calloc(n, sizeof(*ids));
	bls = calloc(n, sizeof(*bls));
	if (ids && bls) {
		n = 0;
		for (c = p->bl_dirty; c; c = c->bl_next) {
			ids[n] = c->id;
			bls[n++] = c->backlog;
			c->bl_dirty = 0;
		}
		p->bl_dirty = NULL;
		b.n_channels = b.n_backlogs = n;
		b.channels = ids;
		b.backlogs = bls;
		f.frame_case = FDX__CONTROL_FRAME__FRAME_BACKLOG;
		f.backlog = &b;
		peer_send_locked(p, &f);
	}
	free(ids);
	free(bls);
}

/*
 * A consumer broke the protocol: tell it why in an Error frame, then cancel
 * the stream once that is sent (a consumer that does not read is cut off all
 * the same: see TAG_PEER_SEND). The stream's status fails the channels.
 */
static void peer_fail(struct peer *p, const char *msg)
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
	sendq_clear(&p->q); /* nothing else needs to reach a peer at fault */
	if (p->q.busy) {
		/* A send is in flight and may never complete (a peer that does not read): no wait. */
		grpc_call_cancel_with_status(p->call, GRPC_STATUS_INVALID_ARGUMENT, p->fail_msg,
					     NULL);
		return;
	}
	sendq_push(&p->q, pack_frame(&f));
	if (!send_next(p->call, &p->q, &p->t_send, &p->pending))
		grpc_call_cancel_with_status(p->call, GRPC_STATUS_INVALID_ARGUMENT, p->fail_msg,
					     NULL);
}

static void peer_on_credit(struct peer *p, const Fdx__CreditUpdate *cu)
{
	struct fdx_exchange *ex = p->ex;
	struct fdx_exchange_event ev;
	char msg[160];
	size_t i;

	for (i = 0; i < cu->n_credits; i++) {
		const Fdx__Credit *cr = cu->credits[i];
		struct cli_chan *c = peer_chan(p, cr->channel);

		if (!c || c->state == CHAN_OPENING || c->state == CHAN_FAILED) {
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
		if (c->state == CHAN_ABANDONED || c->took_back)
			continue; /* its late answer is being closed again, or it was given up */
		if (cr->n_returned_offsets > UINT32_MAX) {
			peer_fail(p, "too many returned offsets");
			break;
		}
		if (c->available + cr->added > UINT32_MAX) {
			snprintf(msg, sizeof(msg),
				 "credit on channel %u would overflow: %llu available, %u more",
				 cr->channel, (unsigned long long)c->available, cr->added);
			peer_fail(p, msg);
			break;
		}
		size_t k;
		for (k = 0; k < cr->n_returned_offsets; k++)
			if (inflight_take(c, cr->returned_offsets[k]) < 0)
				break;
		if (k < cr->n_returned_offsets) {
			snprintf(msg, sizeof(msg),
				 "offset %#llx handed back on channel %u was never sent",
				 (unsigned long long)cr->returned_offsets[k], cr->channel);
			/*
			 * None of a refused credit counts: what it took is in flight
			 * again (and comes back when the stream fails). No growth, so
			 * no failure: the table held all of them a moment ago.
			 */
			while (k--)
				inflight_add(c, cr->returned_offsets[k]);
			peer_fail(p, msg);
			break;
		}
		c->available += cr->added;
		/* Credit and offsets sent before the consumer saw our close still count. */
		ex->st.credits_in += cr->added;
		if (c->hooks) {
			c->hooks->credit(c->hook_ud, cr->added, cr->returned_offsets,
					 (uint32_t)cr->n_returned_offsets);
			continue;
		}
		memset(&ev, 0, sizeof(ev));
		ev.type = FDX_EV_CREDIT;
		ev.channel = c->id;
		ev.gate = c->gate;
		ev.gate_channel = c->gate_channel;
		ev.credits = cr->added;
		snprintf(ev.peer, sizeof(ev.peer), "%s", p->remote_tm);
		ev_push_locked(ex, &ev, cr->returned_offsets, (uint32_t)cr->n_returned_offsets);
	}
	/* Unmark what this update named, up to and including where it stopped. */
	for (size_t j = 0; j <= i && j < cu->n_credits; j++) {
		struct cli_chan *c = peer_chan(p, cu->credits[j]->channel);

		if (c)
			c->marked = 0;
	}
}

static void chan_return_inflight_locked(struct cli_chan *c);

static void peer_on_frame_locked(struct peer *p, grpc_byte_buffer *bb)
{
	struct fdx_exchange *ex = p->ex;
	Fdx__ControlFrame *f = unpack_frame(bb);
	struct cli_chan *c;
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
		peer_set_state_locked(p, PEER_UP, 0);
		break;
	case FDX__CONTROL_FRAME__FRAME_OPEN_ACK:
		c = peer_chan(p, f->open_ack->id);
		if (c && c->state == CHAN_ABANDONED) {
			/* The opener gave up: close what the consumer opened meanwhile. */
			peer_send_close_locked(p, c, 0);
			c->state = CHAN_CLOSED;
			break;
		}
		if (!c || c->state != CHAN_OPENING) {
			snprintf(msg, sizeof(msg), "answer for unknown channel %u",
				 f->open_ack->id);
			peer_fail(p, msg);
			break;
		}
		c->state = CHAN_OPEN;
		ex->open_out++;
		c->initial = f->open_ack->initial_credit;
		c->available = c->initial;
		pthread_cond_broadcast(&ex->cond);
		break;
	case FDX__CONTROL_FRAME__FRAME_ERROR:
		c = peer_chan(p, f->error->channel);
		FDX_LOG_WARN(&ex->log, "exchange %s: TaskManager %s refused: %s", ex->tm_id,
			     p->remote_tm, f->error->message ? f->error->message : "");
		if (c && c->state == CHAN_OPENING) {
			c->state = CHAN_FAILED;
			c->result = f->error->code < 0 && f->error->code > -4096 ? f->error->code
										 : FDX_EREFUSED;
			chan_detach_locked(c); /* its opener frees it */
			pthread_cond_broadcast(&ex->cond);
		} else if (c && c->state == CHAN_ABANDONED) {
			chan_free_locked(ex, c);
		} else if (c && c->state == CHAN_OPEN) {
			/* The consumer dropped an open channel (its gate went): it is over. */
			snprintf(msg, sizeof(msg), "TaskManager %s: %s", p->remote_tm,
				 f->error->message ? f->error->message : "channel refused");
			c->state = CHAN_CLOSED;
			ex->open_out--;
			if (c->opening) /* answered, dropped before its opener saw it: it says so */
				c->result = FDX_EPEERGONE;
			else if (c->hooks) {
				chan_return_inflight_locked(c); /* the consumer lets them go */
				c->hooks->failed(c->hook_ud, FDX_EPEERGONE, msg);
			} else
				ev_channel_failed_locked(ex, c->id, c->gate, c->gate_channel,
							 FDX_EPEERGONE, p->remote_tm, msg);
			/* The consumer keeps it until our close; its answer frees it here. */
			peer_send_close_locked(p, c, 0);
		}
		break;
	case FDX__CONTROL_FRAME__FRAME_CLOSED:
		/* The consumer forgot a channel we closed: no frame names it any more. */
		c = peer_chan(p, f->closed->channel);
		if (!c || c->state != CHAN_CLOSED || c->confirmed) {
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
		if (!c->opening && !(c->hooks && c->n_inflight && !c->took_back))
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

static void peer_on_status_locked(struct peer *p)
{
	struct fdx_exchange *ex = p->ex;
	char *details = grpc_slice_to_c_string(p->status_details);
	int was_up = p->state == PEER_UP, err;

	err = status_to_err(p->status, was_up);
	if (was_up || !ex->stopping) {
		/*
		 * An error, unless we are stopping ourselves (info) or the peer
		 * said it is (a warning: its channels still fail, the owner hears).
		 */
		uint32_t lvl = ex->stopping					? FDX_LOG_INFO
			       : details && strcmp(details, SHUTTING_DOWN) == 0 ? FDX_LOG_WARN
										: FDX_LOG_ERR;

		FDX_LOG_AT(&ex->log, lvl,
			   "exchange %s: stream to TaskManager %s at %s ended: %s (%s)", ex->tm_id,
			   p->remote_tm[0] ? p->remote_tm : "?", p->addr,
			   details && details[0] ? details : "no details", fdx_strerror(err));
	}
	/* Every channel of the stream goes: the open ones tell the owner why. */
	while (p->chans) {
		struct cli_chan *c = p->chans;
		char msg[192];

		/* A channel still being opened is reported by its opener, not by an event. */
		if (c->state == CHAN_OPEN && !c->opening) {
			snprintf(msg, sizeof(msg), "TaskManager %s at %s went away: %s",
				 p->remote_tm[0] ? p->remote_tm : "?", p->addr,
				 details && details[0] ? details : fdx_strerror(err));
			if (c->hooks) {
				/* The consumer is gone: what it held is ours again. */
				chan_return_inflight_locked(c);
				c->hooks->failed(c->hook_ud, err, msg);
			} else {
				ev_channel_failed_locked(ex, c->id, c->gate, c->gate_channel, err,
							 p->remote_tm, msg);
			}
		}
		if (c->opening) {
			if (c->state == CHAN_OPEN) /* answered, but its opener has not seen it */
				ex->open_out--;
			c->state = CHAN_FAILED;
			c->result = err;
			chan_detach_locked(c); /* its opener frees it */
		} else {
			chan_free_locked(ex, c);
		}
	}
	gpr_free(details);
	peer_set_state_locked(p, PEER_FAILED, err);
}

static void peer_free(struct peer *p)
{
	sendq_clear(&p->q);
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
static void peer_unlink_locked(struct fdx_exchange *ex, struct peer *p)
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
static struct peer *peer_event(struct peer *p, enum tag_kind kind, int ok)
{
	struct fdx_exchange *ex = p->ex;

	p->pending--;
	switch (kind) {
	case TAG_PEER_RECV:
		if (ok && p->recv_bb) {
			peer_on_frame_locked(p, p->recv_bb);
			grpc_byte_buffer_destroy(p->recv_bb);
			p->recv_bb = NULL;
			peer_post_recv(p);
		}
		break;
	case TAG_PEER_SEND:
		p->q.busy = 0;
		if (!ok)
			sendq_clear(&p->q);
		else if (send_next(p->call, &p->q, &p->t_send, &p->pending))
			break;
		if (p->failing) /* our Error frame went (or cannot): now end it */
			grpc_call_cancel_with_status(p->call, GRPC_STATUS_INVALID_ARGUMENT,
						     p->fail_msg, NULL);
		else
			peer_flush_backlog(p);
		break;
	case TAG_PEER_STATUS:
		peer_on_status_locked(p);
		break;
	default:
		break;
	}
	if (p->pending)
		return NULL;
	/* Every operation has completed: the stream is over. Forget the peer. */
	p->over = 1;
	p->state = PEER_FAILED;
	if (p->waiters)
		return NULL; /* the last waiter frees it */
	peer_unlink_locked(ex, p);
	return p;
}

/* A peer for addr, with no channel or call yet; NULL if out of memory. */
static struct peer *peer_new(struct fdx_exchange *ex, const char *addr)
{
	struct peer *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->addr = strdup(addr);
	if (!p->addr) {
		free(p);
		return NULL;
	}
	p->ex = ex;
	p->t_recv = (struct tag){TAG_PEER_RECV, p};
	p->t_send = (struct tag){TAG_PEER_SEND, p};
	p->t_status = (struct tag){TAG_PEER_STATUS, p};
	p->status_details = grpc_empty_slice();
	grpc_metadata_array_init(&p->initial_md);
	grpc_metadata_array_init(&p->trailing_md);
	return p;
}

/* With ex->lock held: send our hello on p's new call, start receiving, list p. */
static void peer_begin_locked(struct fdx_exchange *ex, struct peer *p)
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
	ops[1].data.send_message.send_message = pack_frame(&f);
	p->q.busy = 1;
	if (!start_batch(p->call, ops, 2, &p->t_send, &p->pending))
		p->q.busy = 0;
	grpc_byte_buffer_destroy(ops[1].data.send_message.send_message);
	ex->st.frames_out++;
	peer_post_recv(p);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &p->trailing_md;
	ops[0].data.recv_status_on_client.status = &p->status;
	ops[0].data.recv_status_on_client.status_details = &p->status_details;
	start_batch(p->call, ops, 1, &p->t_status, &p->pending);

	p->state = PEER_CONNECTING;
	p->next = ex->peers;
	if (ex->peers)
		ex->peers->prev = p;
	ex->peers = p;
	ex->n_peers++;
}

/* With ex->lock held: create the stream to addr and send our hello. */
static int peer_start_locked(struct fdx_exchange *ex, const char *addr, struct peer **out)
{
	grpc_channel_credentials *creds;
	grpc_slice method;
	struct peer *p = peer_new(ex, addr);

	if (!p)
		return -ENOMEM;
	creds = grpc_insecure_credentials_create();
	p->channel = grpc_channel_create(addr, creds, NULL);
	grpc_channel_credentials_release(creds);
	method = grpc_slice_from_static_string(METHOD);
	p->call = grpc_channel_create_call(p->channel, NULL, GRPC_PROPAGATE_DEFAULTS, ex->cq,
					   method, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (!p->call) {
		peer_free(p);
		return -ENOMEM;
	}
	peer_begin_locked(ex, p);
	*out = p;
	return 0;
}

/*
 * With ex->lock held: the peer at addr once its handshake is done, started if
 * needed. On success *out is the peer (up); on failure the error.
 */
static int connect_locked(struct fdx_exchange *ex, const char *addr,
			  const struct timespec *deadline, int timeout_ms, struct peer **out)
{
	struct peer *p, *dead = NULL;
	int err = 0;

	for (p = ex->peers; p; p = p->next)
		if (p->state != PEER_FAILED && !p->over && strcmp(p->addr, addr) == 0)
			break;
	if (!p)
		err = peer_start_locked(ex, addr, &p);
	if (err)
		return err;
	p->waiters++;
	while (!err && p->state == PEER_CONNECTING) {
		if (pthread_cond_timedwait(&ex->cond, &ex->lock, deadline) == ETIMEDOUT &&
		    p->state == PEER_CONNECTING) {
			err = -ETIMEDOUT;
			grpc_call_cancel(p->call, NULL);
		}
	}
	if (!err && p->state == PEER_FAILED)
		err = p->result;
	if (--p->waiters == 0 && p->over) {
		peer_unlink_locked(ex, p);
		dead = p;
	}
	if (dead) {
		/* Freeing needs no lock, but keeps it short: the peer is unlinked. */
		pthread_mutex_unlock(&ex->lock);
		peer_free(dead);
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
	struct peer *p;
	int err;

	if (!ex || !addr)
		return -EINVAL;
	if (timeout_ms <= 0)
		timeout_ms = CONNECT_TIMEOUT_DEFAULT_MS;
	deadline_in(&deadline, timeout_ms);
	pthread_mutex_lock(&ex->lock);
	err = connect_locked(ex, addr, &deadline, timeout_ms, &p);
	pthread_mutex_unlock(&ex->lock);
	return err;
}

/*
 * With ex->lock held: open a channel on p's stream (its opener waits for the
 * answer, then calls open_end_locked()). 0 with *out set, or -ENOMEM.
 */
static int open_begin_locked(struct fdx_exchange *ex, struct peer *p, const char *partition_id,
			     uint32_t subpartition, uint32_t gate, uint32_t gate_channel,
			     struct cli_chan **out)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT;
	Fdx__OpenChannel o = FDX__OPEN_CHANNEL__INIT;
	struct cli_chan *c;
	uint32_t id;

	if (fdx__idmap_reserve(&ex->cchans) < 0)
		return -ENOMEM;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	id = chan_new_id(ex);
	c->id = id;
	fdx__idmap_put(&ex->cchans, id, c);
	c->p = p;
	c->pnext = p->chans;
	p->chans = c;
	c->opening = 1;
	c->gate = gate;
	c->gate_channel = gate_channel;
	c->subpartition = subpartition;
	c->state = CHAN_OPENING;
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
static int open_end_locked(struct fdx_exchange *ex, struct cli_chan *c, int timed_out,
			   const char *addr, uint32_t *chan, uint32_t *initial_credit)
{
	uint32_t gate = c->gate, gate_channel = c->gate_channel;
	int err = 0;

	if (timed_out && c->state == CHAN_OPENING) {
		/* Too late: a late answer is closed again (see peer_on_frame_locked). */
		c->state = CHAN_ABANDONED;
		err = -ETIMEDOUT;
	}
	c->opening = 0;
	if (c->state == CHAN_FAILED || (c->state == CHAN_CLOSED && !err))
		err = c->result ? c->result : FDX_EPEERGONE; /* closed: answered, then dropped */
	if (err) {
		/* Closed: freed here once confirmed, else when the confirmation comes. */
		if (c->state == CHAN_FAILED || (c->state == CHAN_CLOSED && c->confirmed))
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
	struct cli_chan *c;
	struct peer *p;
	int err, timed_out = 0;

	if (!ex || !addr || !partition_id || !chan)
		return -EINVAL;
	if (timeout_ms <= 0)
		timeout_ms = CONNECT_TIMEOUT_DEFAULT_MS;
	deadline_in(&deadline, timeout_ms);
	pthread_mutex_lock(&ex->lock);
	err = connect_locked(ex, addr, &deadline, timeout_ms, &p);
	if (!err)
		err = open_begin_locked(ex, p, partition_id, subpartition, gate, gate_channel, &c);
	if (!err) {
		while (c->state == CHAN_OPENING && !timed_out)
			if (pthread_cond_timedwait(&ex->cond, &ex->lock, &deadline) == ETIMEDOUT)
				timed_out = 1;
		err = open_end_locked(ex, c, timed_out, addr, chan, initial_credit);
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

/* With ex->lock held: the open channel with that id, or NULL. */
static struct cli_chan *open_chan_locked(struct fdx_exchange *ex, uint32_t id)
{
	struct cli_chan *c = chan_get(ex, id);

	return c && c->state == CHAN_OPEN ? c : NULL;
}

FDX_API int fdx_exchange_sent(struct fdx_exchange *ex, uint32_t channel, uint64_t offset)
{
	struct cli_chan *c;
	int err;

	if (!ex || offset == 0)
		return -EINVAL;
	pthread_mutex_lock(&ex->lock);
	c = open_chan_locked(ex, channel);
	if (!c) {
		err = -ENOENT;
	} else if (inflight_has(c, offset)) {
		err = -EEXIST;
	} else if (c->available == 0) {
		err = -EAGAIN;
	} else {
		err = inflight_add(c, offset);
		if (!err)
			c->available--;
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

FDX_API int fdx_exchange_backlog(struct fdx_exchange *ex, uint32_t channel, uint32_t backlog)
{
	struct cli_chan *c;
	int err = 0;

	if (!ex)
		return -EINVAL;
	pthread_mutex_lock(&ex->lock);
	c = open_chan_locked(ex, channel);
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
	struct cli_chan *c;
	int err = 0;

	if (!ex)
		return -EINVAL;
	pthread_mutex_lock(&ex->lock);
	c = open_chan_locked(ex, channel);
	if (!c) {
		err = -ENOENT;
	} else {
		peer_send_close_locked(c->p, c, data_close);
		/* Kept until the consumer confirms: credit sent before the close still arrives. */
		c->state = CHAN_CLOSED;
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

/* A gate with its hooks (NULL: a plain gate), in the list under one lock. */
static int add_gate(struct fdx_exchange *ex, uint32_t gate, uint32_t n_channels,
		    uint32_t initial_credit, const struct fdx__gate_hooks *h, void *ud)
{
	struct gate *g;
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
	if (gate_find(ex, gate)) {
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

/* With ex->lock held: queue credit and offsets for c's producer. */
static int credit_locked(struct srv_chan *c, uint32_t added, const uint64_t *offsets,
			 uint32_t n_offsets)
{
	struct session *s;

	if (c->pending_added + added > UINT32_MAX)
		return -EOVERFLOW;
	if (c->n_offs + (uint64_t)n_offsets > c->cap_offs) {
		uint64_t cap = c->cap_offs ? c->cap_offs : 16;
		uint64_t *a;

		while (cap < c->n_offs + (uint64_t)n_offsets)
			cap *= 2;
		if (cap > UINT32_MAX || !(a = realloc(c->offs, cap * sizeof(*a))))
			return -ENOMEM;
		c->offs = a;
		c->cap_offs = (uint32_t)cap;
	}
	if (n_offsets)
		memcpy(c->offs + c->n_offs, offsets, (size_t)n_offsets * sizeof(uint64_t));
	c->n_offs += n_offsets;
	c->pending_added += added;
	s = c->s;
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
	return 0;
}

FDX_API int fdx_exchange_credit(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
				uint32_t added, const uint64_t *offsets, uint32_t n_offsets)
{
	struct srv_chan *c;
	struct gate *g;
	int err;

	if (!ex || (n_offsets && !offsets))
		return -EINVAL;
	pthread_mutex_lock(&ex->lock);
	g = gate_find(ex, gate);
	c = g && gate_channel < g->n_channels ? g->chans[gate_channel] : NULL;
	err = c ? credit_locked(c, added, offsets, n_offsets) : -ENOENT;
	pthread_mutex_unlock(&ex->lock);
	return err;
}

/* ---- for the data plane (exchange_internal.h) ------------------------------ */

struct fdx__dp *fdx__exchange_dp(struct fdx_exchange *ex)
{
	return ex->dp;
}

struct fdx__log *fdx__exchange_log(struct fdx_exchange *ex)
{
	return &ex->log;
}

const char *fdx__exchange_tm_id(const struct fdx_exchange *ex)
{
	return ex->tm_id;
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
static void srv_chan_drop_locked(struct gate *g, struct srv_chan *c, int code, const char *msg)
{
	if (g->chans[c->gate_channel] == c)
		g->chans[c->gate_channel] = NULL;
	c->gone = 1;
	/*
	 * A channel its producer ended has nothing left to fail: the credit and
	 * offsets released last still go, and its close is awaited quietly.
	 */
	if (g->hooks && g->hooks->ended && g->hooks->ended(g->hook_ud, c->gate_channel))
		return;
	session_error(c->s, code, c->id, msg);
	c->n_offs = 0;
	c->pending_added = 0;
}

void fdx__exchange_drop_input(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
			      uint64_t sess, int code, const char *msg)
{
	struct srv_chan *c;
	struct gate *g;

	pthread_mutex_lock(&ex->lock);
	g = gate_find(ex, gate);
	c = g && gate_channel < g->n_channels ? g->chans[gate_channel] : NULL;
	if (c && c->s->serial == sess)
		srv_chan_drop_locked(g, c, code, msg);
	pthread_mutex_unlock(&ex->lock);
}

void fdx__exchange_remove_gate(struct fdx_exchange *ex, uint32_t gate)
{
	struct gate **pp, *g = NULL;

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
			struct srv_chan *c = g->chans[i];
			char msg[160];

			if (!c)
				continue;
			snprintf(msg, sizeof(msg), "gate %u of TaskManager %s is gone", gate,
				 ex->tm_id);
			srv_chan_drop_locked(g, c, -ENOENT, msg);
		}
		free(g->chans);
		free(g);
	}
	pthread_mutex_unlock(&ex->lock);
}

int fdx__exchange_hook_channel(struct fdx_exchange *ex, uint32_t channel,
			       const struct fdx__chan_hooks *h, void *ud, uint64_t *available)
{
	struct cli_chan *c;
	int err = 0;

	pthread_mutex_lock(&ex->lock);
	c = open_chan_locked(ex, channel);
	if (!c) {
		err = -ENOENT;
	} else {
		c->hooks = h;
		c->hook_ud = ud;
		*available = c->available;
		/* The credit so far goes through the hook too: none is lost in between. */
		while (*available) {
			uint32_t n = *available > UINT32_MAX ? UINT32_MAX : (uint32_t)*available;

			h->credit(ud, n, NULL, 0);
			*available -= n;
		}
		*available = c->available;
	}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

void fdx__exchange_unhook_channel(struct fdx_exchange *ex, uint32_t channel)
{
	struct cli_chan *c;

	pthread_mutex_lock(&ex->lock);
	c = chan_get(ex, channel);
	if (c) {
		c->hooks = NULL;
		c->hook_ud = NULL;
	}
	pthread_mutex_unlock(&ex->lock);
}

/* With ex->lock held: every offset in flight on c goes back through its hook. */
static void chan_return_inflight_locked(struct cli_chan *c)
{
	uint64_t off[64];
	uint32_t n = 0;

	if (!c->hooks || !c->cap_inflight)
		return;
	if (c->n_inflight)
		c->hooks->lost(c->hook_ud, c->n_inflight);
	for (uint32_t i = 0; i < c->cap_inflight; i++) {
		if (!c->inflight[i])
			continue;
		off[n++] = c->inflight[i];
		c->inflight[i] = 0;
		if (n == 64) {
			c->hooks->credit(c->hook_ud, 0, off, n);
			n = 0;
		}
	}
	if (n)
		c->hooks->credit(c->hook_ud, 0, off, n);
	c->n_inflight = 0;
	c->took_back = 1;
}

void fdx__exchange_fail_channel(struct fdx_exchange *ex, uint32_t channel)
{
	struct cli_chan *c;

	pthread_mutex_lock(&ex->lock);
	c = open_chan_locked(ex, channel);
	if (c) {
		chan_return_inflight_locked(c);
		peer_send_close_locked(c->p, c, 0);
		c->state = CHAN_CLOSED;
		ex->open_out--;
	}
	pthread_mutex_unlock(&ex->lock);
}

int fdx__exchange_credit_sess(struct fdx_exchange *ex, uint32_t gate, uint32_t gate_channel,
			      uint64_t sess, uint64_t opening, uint32_t added,
			      const uint64_t *offsets, uint32_t n_offsets)
{
	struct srv_chan *c;
	struct gate *g;
	int err;

	/*
	 * Only to the opening the credit is for, checked and queued under one
	 * lock: the same session may have closed the channel and opened it again.
	 */
	pthread_mutex_lock(&ex->lock);
	g = gate_find(ex, gate);
	c = g && gate_channel < g->n_channels ? g->chans[gate_channel] : NULL;
	if (c && c->s->serial == sess && c->opening == opening)
		err = credit_locked(c, added, offsets, n_offsets);
	else
		err = -ENOENT;
	pthread_mutex_unlock(&ex->lock);
	return err;
}

void fdx__exchange_sent_many(struct fdx_exchange *ex, const uint32_t *chans, const uint64_t *offs,
			     uint32_t n, uint8_t *lost)
{
	pthread_mutex_lock(&ex->lock);
	for (uint32_t i = 0; i < n; i++) {
		struct cli_chan *c = open_chan_locked(ex, chans[i]);

		lost[i] = c == NULL;
		if (!c)
			continue;
		if (offs && offs[i] && inflight_add(c, offs[i]) < 0)
			FDX_LOG_ERR(&ex->log, "exchange %s: channel %u: offset %#llx not recorded",
				    ex->tm_id, chans[i], (unsigned long long)offs[i]);
		if (c->available)
			c->available--;
		else
			FDX_LOG_ERR(&ex->log, "exchange %s: channel %u: sent without credit",
				    ex->tm_id, chans[i]);
	}
	pthread_mutex_unlock(&ex->lock);
}

int fdx__exchange_peer_data(struct fdx_exchange *ex, const char *addr, struct fdx__peer_data *pd)
{
	int err = -ENOENT;

	pthread_mutex_lock(&ex->lock);
	for (struct peer *p = ex->peers; p; p = p->next)
		if (p->state == PEER_UP && strcmp(p->addr, addr) == 0) {
			pd->link = p->link == FDX__LINK__LINK_SHM ? FDX_LINK_SHM : FDX_LINK_TCP;
			memcpy(pd->token, p->token, sizeof(pd->token));
			snprintf(pd->unix_ep, sizeof(pd->unix_ep), "%s", p->unix_ep);
			snprintf(pd->tcp_ep, sizeof(pd->tcp_ep), "%s", p->tcp_ep);
			snprintf(pd->remote_tm, sizeof(pd->remote_tm), "%s", p->remote_tm);
			err = 0;
			break;
		}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

int fdx__exchange_token_session(struct fdx_exchange *ex, const uint8_t *token, uint64_t *sess,
				char *peer, size_t n)
{
	int err = -ENOENT;

	pthread_mutex_lock(&ex->lock);
	for (struct session *s = ex->sessions; s; s = s->next)
		if (s->serial && !s->finishing && memcmp(s->token, token, sizeof(s->token)) == 0) {
			*sess = s->serial;
			snprintf(peer, n, "%s", s->peer_tm);
			err = 0;
			break;
		}
	pthread_mutex_unlock(&ex->lock);
	return err;
}

FDX_API int fdx_exchange_poll(struct fdx_exchange *ex, struct fdx_exchange_event *evs, uint32_t max)
{
	struct fdx__mpsc_node *n;
	uint32_t got = 0;

	if (!ex || !evs)
		return -EINVAL;
	/* What the last poll returned is no longer referenced. */
	while (ex->retired) {
		struct evnode *e = ex->retired;

		ex->retired = e->retired_next;
		free(e);
	}
	while (got < max && (n = fdx__mpsc_pop_wait(&ex->events))) {
		struct evnode *e = (struct evnode *)((char *)n - offsetof(struct evnode, link));

		evs[got] = e->ev;
		evs[got].offsets = e->ev.n_offsets ? e->offsets : NULL;
		e->retired_next = ex->retired;
		ex->retired = e;
		got++;
	}
	return (int)got;
}

FDX_API int fdx_exchange_event_fd(const struct fdx_exchange *ex)
{
	return ex ? ex->efd : -EINVAL;
}

/* ---- the completion-queue thread ------------------------------------------ */

static void request_next_call(struct fdx_exchange *ex)
{
	grpc_call_details_init(&ex->details);
	grpc_metadata_array_init(&ex->request_md);
	ex->new_call = NULL;
	if (grpc_server_request_call(ex->server, &ex->new_call, &ex->details, &ex->request_md,
				     ex->cq, ex->cq, &ex->t_request) != GRPC_CALL_OK)
		FDX_LOG_ERR(&ex->log, "exchange %s: cannot request calls", ex->tm_id);
}

static void on_request_call(struct fdx_exchange *ex, int ok)
{
	grpc_call *call = ex->new_call;
	int ours = ok && grpc_slice_str_cmp(ex->details.method, METHOD) == 0;

	grpc_call_details_destroy(&ex->details);
	grpc_metadata_array_destroy(&ex->request_md);
	if (!ok)
		return; /* the server is shutting down */
	if (!ours) {
		grpc_call_cancel_with_status(call, GRPC_STATUS_UNIMPLEMENTED, "unknown method",
					     NULL);
		grpc_call_unref(call);
	} else {
		session_start(ex, call);
	}
	request_next_call(ex);
}

/* One completion of the cq thread: its handler runs with ex->lock held. */
static void cq_complete(struct fdx_exchange *ex, struct tag *t, int success)
{
	struct peer *dead = NULL;
	int stats;

	pthread_mutex_lock(&ex->lock);
	switch (t->kind) {
	case TAG_REQUEST_CALL:
		on_request_call(ex, success);
		break;
	case TAG_SERVER_SHUTDOWN:
		ex->server_down = 1;
		pthread_cond_broadcast(&ex->cond);
		break;
	case TAG_SESSION_RECV:
	case TAG_SESSION_SEND:
	case TAG_SESSION_CLOSE:
	case TAG_SESSION_STATUS:
		session_event(t->obj, t->kind, success);
		break;
	case TAG_PEER_RECV:
	case TAG_PEER_SEND:
	case TAG_PEER_STATUS:
		dead = peer_event(t->obj, t->kind, success);
		break;
	}
	events_flush_locked(ex);
	stats = ex->stats_wanted;
	ex->stats_wanted = 0;
	pthread_mutex_unlock(&ex->lock);
	if (dead)
		peer_free(dead);
	if (stats)
		stats_answer(ex);
}

static void *cq_main(void *arg)
{
	struct fdx_exchange *ex = arg;

	for (;;) {
		grpc_event ev = grpc_completion_queue_next(
			ex->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		cq_complete(ex, ev.tag, ev.success);
	}
	return NULL;
}

/* ---- the Unix socket: own accept with SO_PEERCRED --------------------------- */

int fdx__exchange_uid_allowed(const struct fdx_exchange *ex, uint32_t uid)
{
	for (uint32_t i = 0; i < ex->n_allow_uids; i++)
		if (ex->allow_uids[i] == uid)
			return 1;
	return 0;
}

static void *accept_main(void *arg)
{
	struct fdx_exchange *ex = arg;

	for (;;) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		grpc_server_credentials *creds;
		int fd = accept4(ex->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Out of descriptors: back off rather than spin. */
				FDX_LOG_ERR(&ex->log, "exchange %s: accept: %s", ex->tm_id,
					    fdx_strerror(-errno));
				usleep(10000);
				continue;
			}
			break; /* shut down by fdx_exchange_destroy() */
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
		    !fdx__exchange_uid_allowed(ex, (uint32_t)cred.uid)) {
			FDX_LOG_WARN(
				&ex->log,
				"exchange %s: refused a Unix peer (pid %d, uid %d): uid not allowed",
				ex->tm_id, (int)cred.pid, (int)cred.uid);
			pthread_mutex_lock(&ex->lock);
			ex->st.peers_refused++;
			pthread_mutex_unlock(&ex->lock);
			close(fd);
			continue;
		}
		creds = grpc_insecure_server_credentials_create();
		grpc_server_add_channel_from_fd(ex->server, fd, creds); /* takes fd */
		grpc_server_credentials_release(creds);
	}
	return NULL;
}

/* The default socket directory: ours alone, created if missing. */
static int default_sock_dir(struct fdx_exchange *ex, char *dir, size_t n)
{
	const char *run = getenv("XDG_RUNTIME_DIR");
	struct stat st;

	if (run && run[0] == '/')
		snprintf(dir, n, "%s/fdx", run);
	else
		snprintf(dir, n, "/tmp/fdx-%u", (unsigned)geteuid());
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		FDX_LOG_ERR(&ex->log,
			    "exchange: socket directory %s is not a directory of ours that only we "
			    "can enter (mode %o, owner %u)",
			    dir, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
		return -EPERM;
	}
	return 0;
}

static int listen_unix(struct fdx_exchange *ex, const char *path)
{
	struct sockaddr_un sa;
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int probe;

		if (errno != EADDRINUSE)
			goto err_close;
		/* A stale file from a dead exchange may be replaced; a live one may not. */
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			close(fd);
			return -EADDRINUSE;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto err_close;
	}
	if (listen(fd, 64) < 0)
		goto err_close;
	ex->listen_fd = fd;
	return 0;

err_close:
	err = -errno;
	close(fd);
	return err;
}

/* ---- lifecycle -------------------------------------------------------------- */

/*
 * Sockets that processes killed before their exchange's destroy left in the
 * default directory (tm-PID-N...): removed once per process, so that the
 * directory stays bounded and fdx-stat finds only live TaskManagers. A file
 * whose PID lives (even another program reusing it) is left alone.
 */
static void sweep_stale_sockets(struct fdx_exchange *ex, const char *dir)
{
	static _Atomic int swept;
	struct dirent *e;
	int n = 0;
	DIR *d;

	if (atomic_exchange(&swept, 1) || !(d = opendir(dir)))
		return;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long pid;

		if (strncmp(e->d_name, "tm-", 3) != 0)
			continue;
		errno = 0;
		pid = strtol(e->d_name + 3, &end, 10);
		if (errno || end == e->d_name + 3 || *end != '-' || pid <= 0 || pid == getpid())
			continue;
		if (kill((pid_t)pid, 0) < 0 && errno == ESRCH &&
		    unlinkat(dirfd(d), e->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	if (n)
		FDX_LOG_INFO(&ex->log, "exchange: removed %d sockets of processes gone from %s", n,
			     dir);
}

static int parse_listen(struct fdx_exchange *ex, const char *listen, char **unix_path)
{
	static _Atomic unsigned serial;
	char dir[200], buf[256];
	int err;

	*unix_path = NULL;
	if (!listen) {
		err = default_sock_dir(ex, dir, sizeof(dir));
		if (err < 0)
			return err;
		sweep_stale_sockets(ex, dir);
		snprintf(buf, sizeof(buf), "%s/tm-%d-%u.sock", dir, (int)getpid(), serial++);
		*unix_path = strdup(buf);
		return *unix_path ? 0 : -ENOMEM;
	}
	if (strncmp(listen, "unix:", 5) == 0) {
		if (listen[5] == '\0')
			return -EINVAL;
		*unix_path = strdup(listen + 5);
		return *unix_path ? 0 : -ENOMEM;
	}
	/* HOST:PORT, with a port. */
	const char *colon = strrchr(listen, ':');

	if (!colon || colon == listen || colon[1] == '\0')
		return -EINVAL;
	return 0;
}

static int start_server(struct fdx_exchange *ex, const char *listen)
{
	grpc_server_credentials *creds;
	char *path = NULL, buf[300];
	int err, port;

	err = parse_listen(ex, listen, &path);
	if (err < 0)
		return err;
	ex->server = grpc_server_create(NULL, NULL);
	grpc_server_register_completion_queue(ex->server, ex->cq, NULL);
	if (!path) {
		creds = grpc_insecure_server_credentials_create();
		port = grpc_server_add_http2_port(ex->server, listen, creds);
		grpc_server_credentials_release(creds);
		if (port <= 0) {
			FDX_LOG_ERR(&ex->log, "exchange: cannot serve %s", listen);
			return -EADDRINUSE;
		}
		snprintf(buf, sizeof(buf), "%.*s:%d", (int)(strrchr(listen, ':') - listen), listen,
			 port);
		ex->address = strdup(buf);
	} else {
		err = listen_unix(ex, path);
		if (err < 0) {
			FDX_LOG_ERR(&ex->log, "exchange: cannot serve unix:%s: %s", path,
				    fdx_strerror(err));
			free(path);
			return err;
		}
		ex->sock_path = path;
		snprintf(buf, sizeof(buf), "unix:%s", path);
		ex->address = strdup(buf);
	}
	if (!ex->address)
		return -ENOMEM;
	grpc_server_start(ex->server);
	ex->server_started = 1;
	return 0;
}

static void stop_server(struct fdx_exchange *ex)
{
	struct timespec deadline;

	if (!ex->server)
		return;
	if (!ex->server_started || !ex->cq_running) {
		if (ex->server_started) {
			grpc_server_shutdown_and_notify(ex->server, ex->cq, &ex->t_shutdown);
			grpc_server_cancel_all_calls(ex->server);
			/* No cq thread: drain up to the shutdown tag here. */
			for (;;) {
				grpc_event ev = grpc_completion_queue_next(
					ex->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

				if (ev.type != GRPC_OP_COMPLETE || ev.tag == &ex->t_shutdown)
					break;
			}
		}
		grpc_server_destroy(ex->server);
		ex->server = NULL;
		return;
	}
	grpc_server_shutdown_and_notify(ex->server, ex->cq, &ex->t_shutdown);
	grpc_server_cancel_all_calls(ex->server);
	deadline_in(&deadline, DESTROY_BUDGET_MS);
	pthread_mutex_lock(&ex->lock);
	while (!ex->server_down || ex->n_sessions || ex->n_peers)
		if (pthread_cond_timedwait(&ex->cond, &ex->lock, &deadline) == ETIMEDOUT)
			break;
	if (!ex->server_down || ex->n_sessions || ex->n_peers)
		FDX_LOG_ERR(&ex->log, "exchange %s: streams still open after %d ms", ex->tm_id,
			    DESTROY_BUDGET_MS);
	pthread_mutex_unlock(&ex->lock);
	grpc_server_destroy(ex->server);
	ex->server = NULL;
}

/* The data plane's sockets: beside the control socket, or in the default directory. */
static int start_dataplane(struct fdx_exchange *ex)
{
	static _Atomic unsigned serial;
	struct fdx__dp_params prm;
	char path[300], dir[200], host[128] = "127.0.0.1";
	int err;

	if (ex->sock_path) {
		snprintf(path, sizeof(path), "%s.data", ex->sock_path);
	} else {
		err = default_sock_dir(ex, dir, sizeof(dir));
		if (err < 0)
			return err;
		snprintf(path, sizeof(path), "%s/tm-%d-%u.data", dir, (int)getpid(), serial++);
		const char *colon = strrchr(ex->address, ':');
		if (colon && (size_t)(colon - ex->address) < sizeof(host))
			snprintf(host, sizeof(host), "%.*s", (int)(colon - ex->address),
				 ex->address);
	}
	prm.unix_path = path;
	prm.tcp_host = host;
	return fdx__dp_create(ex, &prm, &ex->dp);
}

/* With ex->lock held: what a session still has to send before it may end. */
static int session_owes_frames(const struct session *s)
{
	return !s->finishing && !s->cancelled && (s->q.busy || s->q.head || s->dirty_head);
}

static int session_status_pending(const struct session *s)
{
	return s->greeted && !s->cancelled && !s->status_done;
}

/* Wait (1 ms naps, at most ms) until no session is still busy as pending says. */
static void sessions_wait(struct fdx_exchange *ex, int (*pending)(const struct session *), int ms)
{
	for (int i = 0; i < ms; i++) {
		struct timespec nap = {0, 1000000};
		int busy = 0;

		pthread_mutex_lock(&ex->lock);
		for (struct session *s = ex->sessions; s && !busy; s = s->next)
			busy = pending(s);
		pthread_mutex_unlock(&ex->lock);
		if (!busy)
			return;
		nanosleep(&nap, NULL);
	}
}

FDX_API void fdx_exchange_destroy(struct fdx_exchange *ex)
{
	if (!ex)
		return;
	/* The data plane first: its loop calls into the control plane. */
	fdx__dp_destroy(ex->dp);
	ex->dp = NULL;
	/*
	 * Credit and offsets our consumers released are still owed to their
	 * producers: let the streams send them. Then each stream ends with a
	 * status, after what it sent (a cancel could drop frames the transport
	 * has not written yet): its producer hears the end once it has taken our
	 * last credit. 100 ms at most each.
	 */
	sessions_wait(ex, session_owes_frames, 100);
	pthread_mutex_lock(&ex->lock);
	for (struct session *s = ex->sessions; s; s = s->next)
		if (!s->finishing && !s->cancelled && s->greeted)
			session_finish(s, GRPC_STATUS_UNAVAILABLE, SHUTTING_DOWN);
	pthread_mutex_unlock(&ex->lock);
	sessions_wait(ex, session_status_pending, 100);
	pthread_mutex_lock(&ex->lock);
	ex->stopping = 1;
	for (struct peer *p = ex->peers; p; p = p->next)
		grpc_call_cancel(p->call, NULL);
	pthread_mutex_unlock(&ex->lock);
	if (ex->accepting) {
		shutdown(ex->listen_fd, SHUT_RDWR);
		pthread_join(ex->accept_thread, NULL);
	}
	if (ex->listen_fd >= 0)
		close(ex->listen_fd);
	if (ex->sock_path)
		unlink(ex->sock_path);
	stop_server(ex);
	if (ex->cq) {
		grpc_completion_queue_shutdown(ex->cq);
		if (ex->cq_running)
			pthread_join(ex->cq_thread, NULL);
		else
			while (grpc_completion_queue_next(ex->cq,
							  gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
				       .type != GRPC_QUEUE_SHUTDOWN)
				;
		grpc_completion_queue_destroy(ex->cq);
	}
	if (ex->grpc_up)
		grpc_shutdown();
	for (struct fdx__mpsc_node *n; (n = fdx__mpsc_pop(&ex->events));)
		free((char *)n - offsetof(struct evnode, link));
	while (ex->retired) {
		struct evnode *e = ex->retired;

		ex->retired = e->retired_next;
		free(e);
	}
	while (ex->gates) {
		struct gate *g = ex->gates;

		ex->gates = g->next;
		free(g->chans);
		free(g);
	}
	for (uint32_t i = 0; i < ex->cchans.cap; i++) {
		struct cli_chan *c = ex->cchans.e[i].p;

		if (c) {
			free(c->inflight);
			free(c);
		}
	}
	fdx__idmap_free(&ex->cchans);
	close(ex->efd);
	pthread_cond_destroy(&ex->cond);
	pthread_mutex_destroy(&ex->lock);
	free(ex->sock_path);
	free(ex->address);
	free(ex->tm_id);
	free(ex);
}

/*
 * An exchange with its options, lock and event queue, serving nothing yet:
 * 0 with *out set, or -errno (nothing left behind).
 */
static int exchange_new(const struct fdx_exchange_opts *o, struct fdx_exchange **out)
{
	struct fdx_exchange *ex;
	pthread_condattr_t ca;
	char id[64];
	int err;

	ex = calloc(1, sizeof(*ex));
	if (!ex)
		return -ENOMEM;
	fdx__log_init(&ex->log, o->log_fn, o->log_ud, o->log_level);
	ex->listen_fd = -1;
	ex->version = o->protocol_version ? o->protocol_version : FDX_PROTOCOL_VERSION;
	ex->seg_size = o->seg_size ? o->seg_size : FDX_SEG_SIZE_DEFAULT;
	FILE *bf = fopen("/proc/sys/kernel/random/boot_id", "re");
	if (bf) {
		if (!fgets(ex->boot_id, sizeof(ex->boot_id), bf))
			ex->boot_id[0] = '\0';
		ex->boot_id[strcspn(ex->boot_id, "\n")] = '\0';
		fclose(bf);
	}
	snprintf(id, sizeof(id), "tm-%d", (int)getpid());
	ex->tm_id = strdup(o->tm_id ? o->tm_id : id);
	if (o->n_allow_uids) {
		memcpy(ex->allow_uids, o->allow_uids, o->n_allow_uids * sizeof(uint32_t));
		ex->n_allow_uids = o->n_allow_uids;
	} else {
		ex->allow_uids[0] = (uint32_t)geteuid();
		ex->n_allow_uids = 1;
	}
	fdx__mpsc_init(&ex->events);
	ex->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ex->efd < 0) {
		err = -errno;
		free(ex->tm_id);
		free(ex);
		return err;
	}
	ex->t_request = (struct tag){TAG_REQUEST_CALL, ex};
	ex->t_shutdown = (struct tag){TAG_SERVER_SHUTDOWN, ex};
	pthread_mutex_init(&ex->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ex->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (!ex->tm_id) {
		fdx_exchange_destroy(ex);
		return -ENOMEM;
	}
	*out = ex;
	return 0;
}

FDX_API int fdx_exchange_create(const struct fdx_exchange_opts *o, struct fdx_exchange **out)
{
	struct fdx_exchange *ex = NULL;
	int err;

	if (out)
		*out = NULL;
	if (!o || !out || o->size < sizeof(*o) || o->n_allow_uids > FDX_EXCHANGE_MAX_UIDS ||
	    (o->n_allow_uids && !o->allow_uids))
		return -EINVAL;
	err = exchange_new(o, &ex);
	if (err < 0)
		return err;
	grpc_init();
	ex->grpc_up = 1;
	ex->cq = grpc_completion_queue_create_for_next(NULL);
	err = start_server(ex, o->listen);
	if (err < 0)
		goto err_destroy;
	err = start_dataplane(ex);
	if (err < 0)
		goto err_destroy;
	err = -pthread_create(&ex->cq_thread, NULL, cq_main, ex);
	if (err < 0)
		goto err_destroy;
	ex->cq_running = 1;
	pthread_setname_np(ex->cq_thread, "fdx-cq");
	request_next_call(ex);
	if (ex->listen_fd >= 0) {
		err = -pthread_create(&ex->accept_thread, NULL, accept_main, ex);
		if (err < 0)
			goto err_destroy;
		ex->accepting = 1;
	}
	FDX_LOG_INFO(&ex->log, "exchange %s: serving %s (protocol version %u)", ex->tm_id,
		     ex->address, ex->version);
	*out = ex;
	return 0;

err_destroy:
	/* The destroy path undoes whatever part was set up, by the flags above. */
	fdx_exchange_destroy(ex);
	return err;
}

FDX_API const char *fdx_exchange_address(const struct fdx_exchange *ex)
{
	return ex ? ex->address : NULL;
}

FDX_API int fdx_exchange_stats(struct fdx_exchange *ex, struct fdx_exchange_stats *st)
{
	struct fdx_exchange_stats s;

	if (!ex || !st || st->size < 8)
		return -EINVAL;
	pthread_mutex_lock(&ex->lock);
	s = ex->st;
	s.peers_up = ex->peers_up;
	s.sessions = ex->n_sessions;
	for (struct session *ss = ex->sessions; ss; ss = ss->next)
		s.channels_in += ss->ids.n;
	s.channels_out = ex->open_out;
	for (uint32_t i = 0; i < ex->cchans.cap; i++) {
		struct cli_chan *c = ex->cchans.e[i].p;

		s.channels_closing += c && c->state == CHAN_CLOSED;
	}
	pthread_mutex_unlock(&ex->lock);
	fdx__stats_copy(st, &s, sizeof(s));
	return 0;
}

#ifdef FDX_FUZZING
/* ---- fuzzing entry points (transport/fuzz_entry.h; -DFDX_FUZZING only) ----- */

#include "fuzz_entry.h"

int fdx__fuzz_exchange_create(const struct fdx_exchange_opts *o, struct fdx_exchange **out)
{
	struct fdx_exchange *ex = NULL;
	int err = exchange_new(o, &ex);

	if (err < 0)
		return err;
	/* The same on every machine: whether a peer is on this host is the input's to say. */
	snprintf(ex->boot_id, sizeof(ex->boot_id), "fdx-fuzz-boot-id");
	ex->address = strdup("unix:/nonexistent/fdx-fuzz.sock");
	err = ex->address ? fdx__fuzz_dp_create(ex, &ex->dp) : -ENOMEM;
	if (err < 0) {
		fdx_exchange_destroy(ex);
		return err;
	}
	*out = ex;
	return 0;
}

void fdx__fuzz_session_start(struct fdx_exchange *ex, struct grpc_call *call)
{
	pthread_mutex_lock(&ex->lock);
	session_start(ex, call);
	pthread_mutex_unlock(&ex->lock);
}

int fdx__fuzz_peer_start(struct fdx_exchange *ex, const char *addr, struct grpc_call *call)
{
	struct peer *p = peer_new(ex, addr);

	if (!p)
		return -ENOMEM;
	p->call = call;
	pthread_mutex_lock(&ex->lock);
	peer_begin_locked(ex, p);
	pthread_mutex_unlock(&ex->lock);
	return 0;
}

int fdx__fuzz_open_begin(struct fdx_exchange *ex, const char *addr, uint32_t gate,
			 uint32_t gate_channel, uint32_t *id)
{
	struct cli_chan *c = NULL;
	struct peer *p;
	int err = -ENOENT;

	pthread_mutex_lock(&ex->lock);
	for (p = ex->peers; p; p = p->next)
		if (p->state != PEER_FAILED && !p->over && strcmp(p->addr, addr) == 0)
			break;
	if (p)
		err = open_begin_locked(ex, p, "fuzz", gate_channel, gate, gate_channel, &c);
	if (!err)
		*id = c->id;
	pthread_mutex_unlock(&ex->lock);
	return err;
}

int fdx__fuzz_open_end(struct fdx_exchange *ex, uint32_t id, int timed_out, uint32_t *initial)
{
	struct cli_chan *c;
	uint32_t chan;
	int err;

	pthread_mutex_lock(&ex->lock);
	c = chan_get(ex, id);
	if (!c || !c->opening)
		err = -EINVAL;
	else if (c->state == CHAN_OPENING && !timed_out)
		err = -EAGAIN;
	else
		err = open_end_locked(ex, c, timed_out, "fuzz", &chan, initial);
	pthread_mutex_unlock(&ex->lock);
	return err;
}

void fdx__fuzz_complete(struct fdx_exchange *ex, void *tag, int success)
{
	cq_complete(ex, tag, success);
}

int fdx__fuzz_exchange_idle(struct fdx_exchange *ex)
{
	int busy;

	pthread_mutex_lock(&ex->lock);
	busy = ex->sessions || ex->peers || ex->n_sessions || ex->n_peers || ex->open_out ||
	       ex->cchans.n;
	if (!busy) {
		ex->next_id = 0; /* the same ids for every input */
		ex->sess_serial = 0;
	}
	pthread_mutex_unlock(&ex->lock);
	return busy ? -EBUSY : 0;
}
#endif /* FDX_FUZZING */
