/* SPDX-License-Identifier: MIT */
/*
 * The data plane's io_uring loop: one thread per exchange owns every data
 * socket, sends what the partitions queued as their credit allows, and hands
 * what arrives to the gates.
 *
 * Wire (data_wire.h): every frame starts with a 40-byte little-endian
 * header. A data socket opens with HELLO + the token the control stream gave
 * (+ on shm, the region's announcement, its memfd attached). Then:
 * - shm: BUFFER frames are descriptors {offset, len} of a slice of the
 *   sender's region, mapped read-only here; nothing else moves.
 * - tcp: BUFFER frames carry the payload, received straight into one of the
 *   gate's own segments.
 * EVENT frames carry their payload on both. Every frame is checked before use
 * (known channel of this peer, next sequence number, slice inside one
 * segment of the region); a bad one fails the connection.
 *
 * Locking: dp->lock is held by the loop while it works (not while it sleeps)
 * and by whoever adds or removes partitions, gates and connections. Order:
 * dp->lock, then the exchange's lock. The task threads and the consumer
 * threads never take it: they meet the loop through queues and atomics.
 * Sends are batched: one sendmsg per connection per loop round. Credit is
 * spent in each subpartition's ledger (runtime/credit_ledger.h), without a lock
 * of the exchange.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <fdx/error.h>
#include <fdx/gate.h>
#include <fdx/partition.h>

#include "../runtime/clock.h"
#include "../runtime/input_gate.h"
#include "../runtime/local_buffer_pool.h"
#include "../runtime/region.h"
#include "../runtime/result_partition.h"
#include "data_wire.h"
#include "exchange_internal.h"
#include "region_share.h"

#define RING_ENTRIES 256u
#define RX_CAP (256u * 1024u)
#define HDR_LEN ((uint32_t)sizeof(struct fdx__dhdr))
#define HELLO_LEN (HDR_LEN + FDX__TOKEN_LEN)
#define IOV_BATCH 512u
#define TICK_DEFAULT_MS 100u
#define CONNECT_TIMEOUT_DEFAULT_MS 5000
#define GONE_GATES 16u /* gates removed lately: their late frames are dropped, not fatal */
/*
 * An accepted data socket must send its hello within HELLO_TIMEOUT_MS (a
 * producer sends it right after connecting); at most HELLO_PENDING_MAX wait
 * for theirs at once, more are closed at accept. Out of descriptors (EMFILE
 * and the like), accepting pauses ACCEPT_PAUSE_MS instead of spinning.
 */
#define HELLO_TIMEOUT_MS 3000u
#define HELLO_PENDING_MAX 64u
#define ACCEPT_PAUSE_MS 100u

enum op_kind { OP_WAKE = 1, OP_ACCEPT_UNIX, OP_ACCEPT_TCP, OP_SEND, OP_RECV, OP_HELLO };

struct op {
	enum op_kind kind;
	struct fdx__conn *c;
};

/* One iovec's worth of a send batch: a header (hdr > 0: index + 1) or bytes. */
struct txpart {
	uint32_t hdr;
	uint32_t len;
	const void *ptr;
	struct fdx_partition *p; /* tcp slice: its reference goes when sent */
	struct fdx__sub *s;
	int64_t seg;
	struct fdx__pitem *freeme; /* an event whose payload this is */
};

struct txb {
	struct fdx__dhdr *hdrs;
	uint32_t nh, caph;
	struct txpart *parts;
	uint32_t np, capp;
	struct iovec *iov; /* built when sent */
	uint32_t niov, capiov, iov_at;
};

enum conn_role { ROLE_OUT = 1, ROLE_IN };
enum rx_state { RX_HELLO, RX_REGION, RX_SHM, RX_HDR, RX_PAYLOAD };

struct fdx__conn {
	struct fdx__dp *dp;
	int fd;
	enum conn_role role;
	uint32_t link;
	int dead;
	int pending; /* operations in flight */
	char name[200]; /* the peer, for messages */
	/* Producer side. */
	char addr[128];
	uint8_t token[FDX__TOKEN_LEN]; /* the session it belongs to */
	int need_probe; /* its hang-up receive is to be posted by the loop */
	const struct fdx_region *region;
	struct txb b[2];
	int fill; /* the batch being filled; the other may be in flight */
	int sending;
	struct msghdr smh;
	uint8_t probe[16];
	/* Consumer side. */
	uint64_t sess;
	enum rx_state st;
	uint8_t *rx;
	uint32_t rx_len, need;
	struct msghdr rmh;
	struct iovec riov;
	struct { /* not a union with a struct cmsghdr: that has a flexible array member */
		alignas(struct cmsghdr) char buf[CMSG_SPACE(sizeof(int) * 8)];
	} cbuf;
	int hello_fd;
	uint64_t hello_by; /* accepted: its hello must be in by then (0: it is) */
	uint32_t via_tcp; /* accepted on the tcp data socket (else the Unix one) */
	struct fdx__rmap *map;
	struct fdx__dhdr hdr; /* tcp: the frame being received */
	struct fdx__gitem *it;
	struct fdx_gate *it_gate; /* tcp: the gate whose segment it is received into */
	struct op op_send, op_recv;
	struct fdx__conn *next;
};

/* Local credit, from a consumer thread to the loop. */
struct lcredit {
	struct fdx__mpsc_node link;
	struct fdx_partition *p;
	struct fdx__sub *s;
	uint32_t added, n;
	uint64_t offs[];
};

struct fdx__dp {
	struct fdx_exchange *ex;
	struct fdx__log *log;
	struct io_uring ring;
	int ring_up;
	pthread_t thread;
	int running;
	_Atomic uint32_t stop, sleeping, work;
	int efd;
	uint64_t efd_buf;
	struct op op_wake, op_acc_unix, op_acc_tcp;
	int ufd, tfd;
	char *unix_path;
	char unix_ep[160], tcp_ep[160];
	pthread_mutex_t lock;
	pthread_cond_t ready; /* the loop has its ring (or failed to) */
	int ring_result; /* 0 until known, then 1 or -errno */
	struct fdx_partition *parts;
	struct fdx_gate *gates;
	struct fdx__conn *conns;
	uint64_t next_tick;
	uint64_t accept_again[2]; /* unix, tcp: when to accept again after EMFILE (0: accepting) */
	uint64_t accept_logged; /* when the last pause was logged */
	uint64_t gone_gates[GONE_GATES]; /* id + 1 of gates removed lately, 0 = none */
	uint32_t gone_at;
	/* Local credit from consumer threads, applied by the loop (the partition may be gone). */
	struct fdx__mpsc lcredit;
	struct fdx__mpsc readyq; /* subpartitions to pump (dp_ready) */
};

/* ---- small things ------------------------------------------------------- */

static void dp_ready(struct fdx__dp *dp, struct fdx__sub *s)
{
	if (!atomic_load_explicit(&s->ready, memory_order_relaxed) &&
	    !atomic_exchange_explicit(&s->ready, 1, memory_order_acq_rel))
		fdx__mpsc_push(&dp->readyq, &s->ready_node);
}

static struct fdx__sub *ready_pop(struct fdx__dp *dp)
{
	struct fdx__mpsc_node *n = fdx__mpsc_pop_wait(&dp->readyq);

	return n ? (struct fdx__sub *)((char *)n - offsetof(struct fdx__sub, ready_node)) : NULL;
}

static void dp_kick(struct fdx__dp *dp)
{
	uint64_t one = 1;

	atomic_store_explicit(&dp->work, 1, memory_order_relaxed);
	/* K1: the work, then the flag; pairs with K2 in the loop. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&dp->sleeping, memory_order_relaxed) &&
	    atomic_exchange_explicit(&dp->sleeping, 0, memory_order_relaxed))
		if (write(dp->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			FDX_LOG_ERR(dp->log, "data plane: eventfd: %s", fdx_strerror(-errno));
}

#ifdef FDX_FUZZING
static struct io_uring_sqe *fuzz_get_sqe(void);
#endif

static struct io_uring_sqe *get_sqe(struct fdx__dp *dp)
{
	struct io_uring_sqe *sqe;

#ifdef FDX_FUZZING
	if (!dp->ring_up)
		return fuzz_get_sqe(); /* tests/fuzz: no ring, the fuzzer plays the kernel */
#endif
	sqe = io_uring_get_sqe(&dp->ring);

	if (!sqe) {
		io_uring_submit(&dp->ring);
		sqe = io_uring_get_sqe(&dp->ring);
	}
	return sqe;
}

static struct fdx_gate *gate_find(struct fdx__dp *dp, uint32_t id)
{
	for (struct fdx_gate *g = dp->gates; g; g = g->next)
		if (g->id == id)
			return g;
	return NULL;
}

/* ---- gate hooks: the cq thread, with the exchange's lock held ------------- */

static int gate_opened(void *ud, uint32_t ch, uint64_t sess, const char *peer, uint64_t *opening)
{
	(void)peer;
	return fdx__ichan_open(ud, ch, sess, 0, NULL, NULL, opening);
}

/*
 * The producer's close on the control stream may overtake its last frames on
 * the data socket: then (data_close) the channel ends with the CLOSE frame
 * there, in order, or with the session. A producer that never had a data
 * socket closes it here.
 */
static void gate_closed(void *ud, uint32_t ch, uint64_t sess, int data_close)
{
	if (!data_close)
		fdx__ichan_close(ud, ch, sess);
}

static void gate_failed(void *ud, uint32_t ch, uint64_t sess, int err, const char *msg)
{
	fdx__ichan_fail(ud, ch, sess, err, msg);
}

static int gate_busy(void *ud, uint32_t ch)
{
	return fdx__ichan_busy(ud, ch);
}

static int gate_ended(void *ud, uint32_t ch)
{
	return fdx__ichan_ended(ud, ch);
}

static struct fdx__credit_outbox *gate_outbox(void *ud, uint32_t ch)
{
	struct fdx_gate *g = ud;

	return &g->ch[ch].outbox;
}

static const struct fdx__gate_hooks gate_hooks = {gate_opened, gate_closed, gate_failed,
						  gate_busy,   gate_ended,  gate_outbox};

static int chan_credit(void *ud, uint32_t added, const uint64_t *offs, uint32_t n, uint32_t *bad)
{
	return fdx__sub_credit(ud, added, offs, n, bad);
}

static void chan_take_back(void *ud)
{
	fdx__sub_take_back(ud);
}

static uint32_t chan_in_flight(void *ud)
{
	struct fdx__sub *s = ud;

	return fdx__ledger_in_flight(&s->ledger);
}

static void chan_failed(void *ud, int err, const char *msg)
{
	fdx__sub_fail(ud, err, msg, 0);
}

static const struct fdx__chan_hooks chan_hooks = {chan_credit, chan_take_back, chan_in_flight,
						  chan_failed};

/* ---- connections -------------------------------------------------------- */

static void txb_reset(struct txb *b)
{
	for (uint32_t i = 0; i < b->np; i++)
		free(b->parts[i].freeme);
	b->nh = b->np = b->niov = b->iov_at = 0;
}

static void txb_free(struct txb *b)
{
	txb_reset(b);
	free(b->hdrs);
	free(b->parts);
	free(b->iov);
}

static struct txpart *txb_part(struct txb *b)
{
	if (b->np == b->capp) {
		uint32_t cap = b->capp ? 2 * b->capp : 64;
		struct txpart *a = realloc(b->parts, cap * sizeof(*a));

		if (!a)
			return NULL;
		b->parts = a;
		b->capp = cap;
	}
	memset(&b->parts[b->np], 0, sizeof(b->parts[0]));
	b->parts[b->np].seg = -1;
	return &b->parts[b->np++];
}

static int txb_hdr(struct txb *b, const struct fdx__dhdr *h)
{
	struct txpart *pt;

	if (b->nh == b->caph) {
		uint32_t cap = b->caph ? 2 * b->caph : 64;
		struct fdx__dhdr *a = realloc(b->hdrs, cap * sizeof(*a));

		if (!a)
			return -ENOMEM;
		b->hdrs = a;
		b->caph = cap;
	}
	pt = txb_part(b);
	if (!pt)
		return -ENOMEM;
	b->hdrs[b->nh] = *h;
	pt->hdr = ++b->nh;
	pt->len = HDR_LEN;
	return 0;
}

/* Build the iovecs: runs of headers are one iovec each. */
static int txb_build(struct txb *b)
{
	if (b->capiov < b->np) {
		struct iovec *a = realloc(b->iov, b->np * sizeof(*a));

		if (!a)
			return -ENOMEM;
		b->iov = a;
		b->capiov = b->np;
	}
	b->niov = 0;
	for (uint32_t i = 0; i < b->np; i++) {
		struct txpart *pt = &b->parts[i];
		const void *base = pt->hdr ? (const void *)&b->hdrs[pt->hdr - 1] : pt->ptr;

		if (pt->hdr && b->niov && i > 0 && b->parts[i - 1].hdr &&
		    b->parts[i - 1].hdr + 1 == pt->hdr) {
			b->iov[b->niov - 1].iov_len += HDR_LEN;
			continue;
		}
		b->iov[b->niov].iov_base = (void *)base;
		b->iov[b->niov].iov_len = pt->len;
		b->niov++;
	}
	b->iov_at = 0;
	return 0;
}

static void conn_submit_send(struct fdx__conn *c)
{
	struct txb *b = &c->b[!c->fill];
	struct io_uring_sqe *sqe = get_sqe(c->dp);
	uint32_t n = b->niov - b->iov_at;

	if (!sqe) {
		FDX_LOG_ERR(c->dp->log, "data plane: no submission entry for %s", c->name);
		return;
	}
	memset(&c->smh, 0, sizeof(c->smh));
	c->smh.msg_iov = b->iov + b->iov_at;
	c->smh.msg_iovlen = n > IOV_BATCH ? IOV_BATCH : n;
	io_uring_prep_sendmsg(sqe, c->fd, &c->smh, MSG_NOSIGNAL);
	io_uring_sqe_set_data(sqe, &c->op_send);
	c->pending++;
	c->sending = 1;
}

/* Start sending what was batched, if nothing is in flight. */
static void conn_flush(struct fdx__conn *c)
{
	if (c->sending || c->dead || c->b[c->fill].np == 0)
		return;
	c->fill = !c->fill;
	if (txb_build(&c->b[!c->fill]) < 0) {
		FDX_LOG_ERR(c->dp->log, "data plane: out of memory sending to %s", c->name);
		c->fill = !c->fill;
		return;
	}
	conn_submit_send(c);
}

static void post_recv(struct fdx__conn *c, void *buf, uint32_t len)
{
	struct io_uring_sqe *sqe = get_sqe(c->dp);

	if (!sqe)
		return;
	io_uring_prep_recv(sqe, c->fd, buf, len, 0);
	io_uring_sqe_set_data(sqe, &c->op_recv);
	c->pending++;
}

static void post_hello_recv(struct fdx__conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(c->dp);

	if (!sqe)
		return;
	memset(&c->rmh, 0, sizeof(c->rmh));
	c->riov.iov_base = c->rx + c->rx_len;
	c->riov.iov_len = c->need - c->rx_len;
	c->rmh.msg_iov = &c->riov;
	c->rmh.msg_iovlen = 1;
	c->rmh.msg_control = c->cbuf.buf;
	c->rmh.msg_controllen = sizeof(c->cbuf.buf);
	io_uring_prep_recvmsg(sqe, c->fd, &c->rmh, MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data(sqe, &c->op_recv);
	c->op_recv.kind = OP_HELLO;
	c->pending++;
}

/* A connection on fd; ROLE_IN receives into rx (RX_CAP bytes, freed with c), or its own if NULL. */
static struct fdx__conn *conn_new(struct fdx__dp *dp, int fd, enum conn_role role, uint8_t *rx)
{
	struct fdx__conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->dp = dp;
	c->fd = fd;
	c->role = role;
	c->hello_fd = -1;
	c->op_send = (struct op){OP_SEND, c};
	c->op_recv = (struct op){OP_RECV, c};
	if (role == ROLE_IN) {
		c->rx = rx ? rx : malloc(RX_CAP);
		if (!c->rx) {
			free(c);
			return NULL;
		}
	}
	c->next = dp->conns;
	dp->conns = c;
	return c;
}

/* The channels this connection fed on the consumer side fail. */
static void conn_fail_inputs(struct fdx__conn *c, int err, const char *why)
{
	char msg[192];

	snprintf(msg, sizeof(msg), "%.90s: %.90s", c->name, why);
	for (struct fdx_gate *g = c->dp->gates; g && c->sess; g = g->next)
		for (uint32_t i = 0; i < g->n; i++) {
			if (atomic_load_explicit(&g->ch[i].sess, memory_order_relaxed) != c->sess)
				continue;
			fdx__ichan_fail(g, i, c->sess, err, msg);
			/* Free for another producer; this one is told on its control stream. */
			fdx__exchange_drop_input(c->dp->ex, g->id, i, c->sess, err, msg);
		}
}

/* The subpartitions this connection carried fail. */
static void conn_fail_outputs(struct fdx__conn *c, int err, const char *why)
{
	char msg[300];

	snprintf(msg, sizeof(msg), "data socket to %s: %s", c->name, why);
	for (struct fdx_partition *p = c->dp->parts; p; p = p->next)
		for (uint32_t i = 0; i < p->n; i++)
			if (p->subs[i].conn == c) {
				/*
				 * After its end, the control stream says what became of
				 * it: its last credit may still be on the way there.
				 */
				if (atomic_load(&p->subs[i].end_sent))
					continue;
				fdx__sub_fail(&p->subs[i], err, msg, 0);
				/* What the consumer held comes back; the channel is closed. */
				fdx__exchange_fail_channel(c->dp->ex, p->subs[i].chan);
			}
}

/* Close c (its operations complete with errors; freed after the last). */
static void conn_kill(struct fdx__conn *c, int err, const char *why)
{
	if (c->dead)
		return;
	c->dead = 1;
	if (err)
		FDX_LOG_ERR(c->dp->log, "exchange %s: data socket of %s failed: %s",
			    fdx__exchange_tm_id(c->dp->ex), c->name, why);
	if (c->role == ROLE_IN)
		conn_fail_inputs(c, err ? err : FDX_EPEERGONE, why);
	else
		conn_fail_outputs(c, err ? err : FDX_EPEERGONE, why);
	shutdown(c->fd, SHUT_RDWR);
}

/* The tcp item being received goes nowhere: its segment back to its gate's pool. */
static void tcp_item_drop(struct fdx__conn *c)
{
	if (c->it && c->it->kind == FDX__GI_BUFFER && c->it_gate && c->it_gate->pool)
		fdx_lbp_recycle(c->it_gate->pool, c->it->offset);
	free(c->it);
	c->it = NULL;
	c->it_gate = NULL;
}

static void conn_free(struct fdx__conn *c)
{
	close(c->fd);
	if (c->hello_fd >= 0)
		close(c->hello_fd);
	txb_free(&c->b[0]);
	txb_free(&c->b[1]);
	tcp_item_drop(c);
	fdx__rmap_put(c->map);
	free(c->rx);
	free(c);
}

/* ---- producer: pumping subpartitions ------------------------------------ */

static void hdr_init(struct fdx__dhdr *h, const struct fdx__sub *s, uint32_t type)
{
	memset(h, 0, sizeof(*h));
	h->magic = htole32(FDX__DH_MAGIC);
	h->version = FDX__DH_VERSION;
	h->type = (uint8_t)type;
	h->gate = htole32(s->gate);
	h->gate_channel = htole32(s->gate_channel);
}

/* ---- the links' sending halves (runtime/port.h: struct fdx__link_ops) ------ */

/* local: the slice goes to the gate of this process as an item; nothing is copied. */
static int local_buffer(struct fdx__sub *s, uint32_t seg, uint64_t off, uint32_t len, uint32_t seq,
			uint32_t backlog)
{
	struct fdx__gitem *it = fdx__gitem_new(FDX__GI_BUFFER, s->gate_channel, 0);

	(void)seg;
	if (!it)
		return -ENOMEM;
	it->link_type = FDX_LINK_LOCAL;
	it->seq = seq;
	it->len = len;
	it->backlog = backlog;
	it->data = s->part->region->base + off;
	it->offset = off;
	it->lpart = s->part;
	it->lsub = s;
	it->sess = FDX__SESS_LOCAL;
	fdx__gate_push(s->lgate, it);
	return 0;
}

static int local_control(struct fdx__sub *s, uint32_t kind, struct fdx__pitem *ev, uint32_t seq,
			 uint32_t backlog)
{
	uint32_t gk = kind == FDX__SEND_EVENT	? FDX__GI_EVENT
		      : kind == FDX__SEND_ABORT ? FDX__GI_ABORT
						: FDX__GI_BACKLOG;
	struct fdx__gitem *gi;

	if (kind == FDX__SEND_CLOSE)
		return 0; /* a local channel closes when its partition goes */
	gi = fdx__gitem_new(gk, s->gate_channel, ev ? ev->len : 0);
	if (!gi) {
		free(ev);
		return -ENOMEM;
	}
	gi->link_type = FDX_LINK_LOCAL;
	gi->sess = FDX__SESS_LOCAL;
	gi->backlog = backlog;
	gi->seq = seq;
	if (ev) {
		gi->event_type = ev->event_type;
		if (ev->event_type == FDX_EVENT_END_OF_PARTITION)
			atomic_store_explicit(&s->lgate->ch[s->gate_channel].eop, 1,
					      memory_order_release);
		gi->flags = ev->flags & FDX_EVENT_PRIORITY;
		gi->len = ev->len;
		memcpy(gi->payload, ev->payload, ev->len);
		gi->data = gi->payload;
		free(ev);
	}
	fdx__gate_push(s->lgate, gi);
	return 0;
}

/* shm and tcp: a header (and on tcp the bytes) batched on the data connection. */
static int conn_buffer(struct fdx__sub *s, uint32_t seg, uint64_t off, uint32_t len, uint32_t seq,
		       uint32_t backlog)
{
	struct fdx__conn *c = s->conn;
	struct txb *b = &c->b[c->fill];
	struct fdx__dhdr h;

	hdr_init(&h, s, FDX__DH_BUFFER);
	h.seq = htole32(seq);
	h.len = htole32(len);
	h.backlog = htole32(backlog);
	if (s->link == FDX_LINK_SHM)
		h.offset = htole64(off);
	if (txb_hdr(b, &h) < 0)
		return -ENOMEM;
	if (s->link == FDX_LINK_TCP) {
		struct txpart *pt = txb_part(b);

		if (!pt) {
			b->np--; /* the header goes too */
			b->nh--;
			return -ENOMEM;
		}
		pt->ptr = s->part->region->base + off;
		pt->len = len;
		pt->p = s->part;
		pt->s = s;
		pt->seg = seg;
		atomic_fetch_add_explicit(&s->part->bytes_copied, len, memory_order_relaxed);
	}
	return 0;
}

static int conn_control(struct fdx__sub *s, uint32_t kind, struct fdx__pitem *ev, uint32_t seq,
			uint32_t backlog)
{
	static const uint8_t types[] = {[FDX__SEND_EVENT] = FDX__DH_EVENT,
					[FDX__SEND_ABORT] = FDX__DH_ABORT,
					[FDX__SEND_BACKLOG] = FDX__DH_BACKLOG,
					[FDX__SEND_CLOSE] = FDX__DH_CLOSE};
	struct txb *b = &s->conn->b[s->conn->fill];
	struct fdx__dhdr h;

	hdr_init(&h, s, types[kind]);
	if (kind != FDX__SEND_BACKLOG)
		h.seq = htole32(seq);
	h.backlog = htole32(backlog);
	if (ev) {
		h.len = htole32(ev->len);
		h.event_type = htole32(ev->event_type);
		h.flags = htole16((ev->flags & FDX_EVENT_PRIORITY) ? FDX__DH_PRIORITY : 0);
	}
	if (txb_hdr(b, &h) < 0) {
		free(ev);
		return -ENOMEM;
	}
	if (ev) {
		struct txpart *pt = ev->len ? txb_part(b) : NULL;

		if (pt) {
			pt->ptr = ev->payload;
			pt->len = ev->len;
			pt->freeme = ev;
		} else if (ev->len) {
			free(ev);
			b->np--;
			b->nh--;
			return -ENOMEM;
		} else {
			free(ev);
		}
	}
	return 0;
}

static const struct fdx__link_ops local_link = {FDX_LINK_LOCAL, 1, local_buffer, local_control};
static const struct fdx__link_ops shm_link = {FDX_LINK_SHM, 1, conn_buffer, conn_control};
static const struct fdx__link_ops tcp_link = {FDX_LINK_TCP, 0, conn_buffer, conn_control};

static void on_send_done(struct fdx__conn *c, int res)
{
	struct txb *b = &c->b[!c->fill];
	size_t left = (size_t)res;

	c->sending = 0;
	if (res < 0)
		b->iov_at = b->niov; /* nothing more goes; the slices are let go below */

	while (left && b->iov_at < b->niov) {
		struct iovec *v = &b->iov[b->iov_at];

		if (left >= v->iov_len) {
			left -= v->iov_len;
			b->iov_at++;
		} else {
			v->iov_base = (char *)v->iov_base + left;
			v->iov_len -= left;
			left = 0;
		}
	}
	if (res >= 0 && b->iov_at < b->niov) {
		conn_submit_send(c); /* a short send: the rest */
		return;
	}
	for (uint32_t i = 0; i < b->np; i++) {
		struct txpart *pt = &b->parts[i];

		if (pt->p) /* tcp: the bytes are in the socket; the slice's segment may go. */
			fdx__sub_written(pt->s, (uint32_t)pt->seg);
	}
	txb_reset(b);
	if (res < 0)
		conn_kill(c, FDX_EPEERGONE, fdx_strerror(res));
}

/* ---- consumer: frames in ------------------------------------------------ */

static void hdr_decode(struct fdx__dhdr *h, const void *raw)
{
	memcpy(h, raw, sizeof(*h));
	h->magic = le32toh(h->magic);
	h->flags = le16toh(h->flags);
	h->gate = le32toh(h->gate);
	h->gate_channel = le32toh(h->gate_channel);
	h->seq = le32toh(h->seq);
	h->len = le32toh(h->len);
	h->offset = le64toh(h->offset);
	h->backlog = le32toh(h->backlog);
	h->event_type = le32toh(h->event_type);
}

/*
 * Check a frame header before anything is used: the wire here (magic,
 * lengths, the slice inside the region), the protocol in fdx__ichan_accept().
 * 1 if it is fine (*gp and *opening set), 0 if it is to be dropped (for a
 * channel closed or a gate removed meanwhile: its length was checked all the
 * same; or a CLOSE frame, done), -1 with why set if it is bad.
 */
static uint32_t gi_kind(uint32_t type)
{
	return type == FDX__DH_BUFFER  ? FDX__GI_BUFFER
	       : type == FDX__DH_EVENT ? FDX__GI_EVENT
	       : type == FDX__DH_ABORT ? FDX__GI_ABORT
	       : type == FDX__DH_CLOSE ? FDX__GI_CLOSED
				       : FDX__GI_BACKLOG;
}

static int check_hdr(struct fdx__conn *c, const struct fdx__dhdr *h, struct fdx_gate **gp,
		     uint64_t *opening, char *why, size_t n)
{
	struct fdx_gate *g;
	int ok;

	if (h->magic != FDX__DH_MAGIC || h->version != FDX__DH_VERSION) {
		snprintf(why, n, "not a data frame (magic %#x, version %u)", h->magic, h->version);
		return -1;
	}
	if (h->type < FDX__DH_BUFFER || h->type > FDX__DH_CLOSE) {
		snprintf(why, n, "unknown frame type %u", h->type);
		return -1;
	}
	/* Lengths first: even a frame that will be dropped is read no further than this. */
	if (h->type == FDX__DH_EVENT &&
	    (h->len > FDX_EVENT_PAYLOAD_MAX || h->event_type < FDX_EVENT_WATERMARK ||
	     h->event_type > FDX_EVENT_USER)) {
		snprintf(why, n, "bad event (type %u, %u bytes)", h->event_type, h->len);
		return -1;
	}
	if (h->type != FDX__DH_BUFFER && h->type != FDX__DH_EVENT && h->len) {
		snprintf(why, n, "frame type %u with %u bytes of payload", h->type, h->len);
		return -1;
	}
	if (h->type == FDX__DH_BUFFER && c->link == FDX_LINK_SHM) {
		const struct fdx_region *r = c->map->region;
		uint64_t off = h->offset;
		uint64_t end = r->data_offset + ((uint64_t)r->seg_count << r->seg_shift);

		if (h->len == 0 || off < r->data_offset || off >= end ||
		    (off & (r->seg_size - 1)) + h->len > r->seg_size) {
			snprintf(why, n,
				 "buffer [%#llx, +%u) is not inside one segment of the region",
				 (unsigned long long)off, h->len);
			return -1;
		}
	}
	if (h->type == FDX__DH_BUFFER && c->link == FDX_LINK_TCP &&
	    (h->len == 0 || h->len > FDX_SEG_SIZE_MAX)) {
		snprintf(why, n, "buffer of %u bytes", h->len);
		return -1;
	}
	g = gate_find(c->dp, h->gate);
	if (!g) {
		for (uint32_t i = 0; i < GONE_GATES; i++)
			if (c->dp->gone_gates[i] == (uint64_t)h->gate + 1)
				return 0; /* removed meanwhile */
	}
	if (!g || h->gate_channel >= g->n) {
		snprintf(why, n, "unknown channel %u of gate %u", h->gate_channel, h->gate);
		return -1;
	}
	if (h->type == FDX__DH_BUFFER && c->link == FDX_LINK_TCP &&
	    (!g->pool || h->len > g->pool->region->seg_size)) {
		snprintf(why, n, "buffer of %u bytes does not fit a segment of gate %u", h->len,
			 g->id);
		return -1;
	}
	ok = fdx__ichan_accept(g, h->gate_channel, c->sess, c->link, gi_kind(h->type), h->seq,
			       h->type == FDX__DH_EVENT &&
				       h->event_type == FDX_EVENT_END_OF_PARTITION,
			       opening, why, n);
	if (ok > 0 && h->type != FDX__DH_CLOSE)
		*gp = g;
	return ok > 0 && h->type == FDX__DH_CLOSE ? 0 : ok;
}

/* A checked frame becomes an item (payload: the event's bytes, or NULL). */
static int frame_item(struct fdx__conn *c, struct fdx_gate *g, const struct fdx__dhdr *h,
		      uint64_t opening, struct fdx__gitem **out)
{
	uint32_t kind = gi_kind(h->type);
	struct fdx__gitem *it =
		fdx__gitem_new(kind, h->gate_channel, h->type == FDX__DH_EVENT ? h->len : 0);

	if (!it)
		return -ENOMEM;
	it->link_type = (uint8_t)c->link;
	it->sess = c->sess;
	it->opening = opening;
	it->seq = h->seq;
	it->len = h->len;
	it->backlog = h->backlog;
	it->event_type = h->event_type;
	it->flags = (h->flags & FDX__DH_PRIORITY) ? FDX_EVENT_PRIORITY : 0;
	if (kind == FDX__GI_EVENT)
		it->data = it->payload;
	if (kind == FDX__GI_BUFFER && c->link == FDX_LINK_SHM) {
		it->data = c->map->region->base + h->offset;
		it->offset = h->offset;
		it->map = c->map;
		atomic_fetch_add_explicit(&c->map->refs, 1, memory_order_relaxed);
	} else if (kind == FDX__GI_BUFFER) {
		struct fdx_buf b;

		if (fdx_lbp_try_request(g->pool, &b) < 0) {
			free(it);
			return -ENOBUFS;
		}
		it->offset = b.offset;
		it->data = g->pool->region->base + b.offset;
	}
	*out = it;
	return 0;
}

/* shm: every whole frame in rx. */
static void shm_parse(struct fdx__conn *c)
{
	uint32_t pos = 0;
	char why[200];

	while (!c->dead && c->rx_len - pos >= HDR_LEN) {
		struct fdx__dhdr h;
		struct fdx_gate *g = NULL;
		struct fdx__gitem *it;
		uint64_t opening = 0;
		uint32_t need;
		int ok;

		hdr_decode(&h, c->rx + pos);
		need = HDR_LEN +
		       (h.type == FDX__DH_EVENT && h.len <= FDX_EVENT_PAYLOAD_MAX ? h.len : 0);
		if (c->rx_len - pos < need)
			break;
		ok = check_hdr(c, &h, &g, &opening, why, sizeof(why));
		if (ok < 0) {
			conn_kill(c, FDX_EPROTO, why);
			return;
		}
		if (ok > 0) {
			if (frame_item(c, g, &h, opening, &it) < 0) {
				conn_kill(c, -ENOMEM, "out of memory");
				return;
			}
			if (h.type == FDX__DH_EVENT)
				memcpy(it->payload, c->rx + pos + HDR_LEN, h.len);
			fdx__gate_push(g, it);
		}
		pos += need;
	}
	memmove(c->rx, c->rx + pos, c->rx_len - pos);
	c->rx_len -= pos;
	if (!c->dead)
		post_recv(c, c->rx + c->rx_len, RX_CAP - c->rx_len);
}

/* tcp: a whole header came; take its payload straight into its place. */
static void tcp_header(struct fdx__conn *c)
{
	struct fdx_gate *g = NULL;
	uint64_t opening = 0;
	char why[200];
	int ok, err;

	hdr_decode(&c->hdr, c->rx);
	ok = check_hdr(c, &c->hdr, &g, &opening, why, sizeof(why));
	if (ok < 0) {
		conn_kill(c, FDX_EPROTO, why);
		return;
	}
	c->it = NULL;
	if (ok > 0) {
		err = frame_item(c, g, &c->hdr, opening, &c->it);
		if (err == -ENOBUFS) {
			snprintf(
				why, sizeof(why),
				"gate %u has no segment free to receive into (sent beyond credit?)",
				g->id);
			conn_kill(c, FDX_EPROTO, why);
			return;
		}
		if (err < 0) {
			conn_kill(c, err, "out of memory");
			return;
		}
	}
	c->it_gate = c->it ? g : NULL;
	if ((c->hdr.type == FDX__DH_BUFFER || c->hdr.type == FDX__DH_EVENT) && c->hdr.len) {
		c->st = RX_PAYLOAD;
		c->rx_len = 0;
		c->need = c->hdr.len;
		if (!c->it) { /* a closed channel's frame (bounded by check_hdr): read and drop */
			c->it = fdx__gitem_new(FDX__GI_ABORT, 0, c->hdr.len);
			if (!c->it) {
				conn_kill(c, -ENOMEM, "out of memory");
				return;
			}
			c->it->data = c->it->payload;
			c->it->sess = 0;
		}
		post_recv(c, (uint8_t *)c->it->data, c->need);
		return;
	}
	if (c->it)
		fdx__gate_push(g, c->it);
	c->it = NULL;
	c->it_gate = NULL;
	c->rx_len = 0;
	c->need = HDR_LEN;
	post_recv(c, c->rx, HDR_LEN);
}

static void tcp_payload_done(struct fdx__conn *c)
{
	struct fdx_gate *g = c->it_gate;

	if (c->it->sess == 0 || !g) {
		tcp_item_drop(c);
	} else {
		fdx__gate_push(g, c->it);
		c->it = NULL;
		c->it_gate = NULL;
	}
	c->st = RX_HDR;
	c->rx_len = 0;
	c->need = HDR_LEN;
	post_recv(c, c->rx, HDR_LEN);
}

/* The data socket's first message: the token, and on shm the region with its memfd. */
static void on_hello(struct fdx__conn *c, int res)
{
	struct fdx__dp *dp = c->dp;
	struct cmsghdr *cm;
	struct fdx__dhdr h;
	char peer[64];
	int err, extra = 0;

	if (res <= 0) {
		conn_kill(c, res ? res : 0, res ? fdx_strerror(res) : "closed before its hello");
		return;
	}
	for (cm = CMSG_FIRSTHDR(&c->rmh); cm; cm = CMSG_NXTHDR(&c->rmh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		int *fds = (int *)CMSG_DATA(cm);
		size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

		for (size_t i = 0; i < nfd; i++) {
			if (c->hello_fd < 0 && c->st == RX_HELLO && c->rx_len == 0 && i == 0)
				c->hello_fd = fds[i];
			else
				extra = 1;
		}
		/* Every descriptor but the region's is closed, whatever happens next. */
		for (size_t i = 0; i < nfd; i++)
			if (fds[i] != c->hello_fd)
				close(fds[i]);
	}
	if (extra) {
		conn_kill(c, FDX_EPROTO, "more than one descriptor in its hello");
		return;
	}
	if (c->rmh.msg_flags & MSG_CTRUNC) {
		conn_kill(c, FDX_EPROTO, "truncated control data in its hello");
		return;
	}
	c->rx_len += (uint32_t)res;
	if (c->rx_len < c->need) {
		post_hello_recv(c);
		return;
	}
	if (c->st == RX_HELLO) {
		hdr_decode(&h, c->rx);
		if (h.magic != FDX__DH_MAGIC || h.version != FDX__DH_VERSION ||
		    h.type != FDX__DH_HELLO ||
		    (h.event_type != FDX_LINK_SHM && h.event_type != FDX_LINK_TCP)) {
			conn_kill(c, FDX_EPROTO, "its first frame is not a hello");
			return;
		}
		if (fdx__exchange_token_session(dp->ex, c->rx + HDR_LEN, &c->sess, peer,
						sizeof(peer)) < 0) {
			conn_kill(c, FDX_EREFUSED,
				  "it presented a token no control stream handed out");
			return;
		}
		snprintf(c->name, sizeof(c->name), "TaskManager %s", peer);
		c->link = h.event_type;
		if (c->link == FDX_LINK_SHM) {
			if (c->hello_fd < 0) {
				conn_kill(c, FDX_EPROTO,
					  "its shm hello came without the region's memfd");
				return;
			}
			c->st = RX_REGION;
			c->need = HELLO_LEN + FDX__REGION_MSG_LEN;
			post_hello_recv(c);
			return;
		}
		if (c->hello_fd >= 0) {
			conn_kill(c, FDX_EPROTO, "a descriptor came with its tcp hello");
			return;
		}
		c->st = RX_HDR;
		c->hello_by = 0;
		c->rx_len = 0;
		c->need = HDR_LEN;
		c->op_recv.kind = OP_RECV;
		post_recv(c, c->rx, HDR_LEN);
		return;
	}
	/* RX_REGION */
	struct fdx__rmap *m = calloc(1, sizeof(*m));

	if (!m) {
		conn_kill(c, -ENOMEM, "out of memory");
		return;
	}
	err = fdx__region_attach_announced(c->hello_fd, c->rx + HELLO_LEN, dp->log, &m->region);
	close(c->hello_fd);
	c->hello_fd = -1;
	if (err < 0) {
		free(m);
		conn_kill(c, err, "its region was refused");
		return;
	}
	atomic_init(&m->refs, 1);
	c->map = m;
	c->st = RX_SHM;
	c->hello_by = 0;
	c->rx_len = 0;
	c->op_recv.kind = OP_RECV;
	FDX_LOG_INFO(dp->log, "exchange %s: %s: shm data socket up, region of %llu bytes mapped",
		     fdx__exchange_tm_id(dp->ex), c->name,
		     (unsigned long long)fdx_region_size(m->region));
	post_recv(c, c->rx, RX_CAP);
}

static void on_recv(struct fdx__conn *c, int res)
{
	if (c->dead)
		return;
	if (res <= 0) {
		/* A producer's data socket closing is the end of its channels' data. */
		conn_kill(c, res < 0 ? res : 0, res < 0 ? fdx_strerror(res) : "peer closed it");
		return;
	}
	if (c->role == ROLE_OUT) {
		conn_kill(c, FDX_EPROTO, "the consumer sent bytes on a data socket");
		return;
	}
	c->rx_len += (uint32_t)res;
	switch (c->st) {
	case RX_SHM:
		shm_parse(c);
		break;
	case RX_HDR:
		if (c->rx_len < HDR_LEN)
			post_recv(c, c->rx + c->rx_len, HDR_LEN - c->rx_len);
		else
			tcp_header(c);
		break;
	case RX_PAYLOAD:
		if (c->rx_len < c->need)
			post_recv(c, (uint8_t *)c->it->data + c->rx_len, c->need - c->rx_len);
		else
			tcp_payload_done(c);
		break;
	default:
		break;
	}
}

/* 0, or -EBUSY if the ring had no room (the caller retries next round). */
static int post_accept(struct fdx__dp *dp, int fd, struct op *op)
{
	struct io_uring_sqe *sqe = get_sqe(dp);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

static void on_accept(struct fdx__dp *dp, struct op *op, int res)
{
	uint32_t waiting = 0, k = op->kind == OP_ACCEPT_UNIX ? 0 : 1;
	uint64_t now = fdx__now_ns();
	struct fdx__conn *c;
	int one = 1;

	if (atomic_load(&dp->stop))
		return;
	if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
		/* The connection waits in the backlog; accepting now would fail again at once. */
		dp->accept_again[k] = now + (uint64_t)ACCEPT_PAUSE_MS * 1000000ull;
		if (!dp->accept_logged || now - dp->accept_logged >= 1000000000ull) {
			dp->accept_logged = now;
			FDX_LOG_WARN(dp->log, "data plane: accept: %s; accepting again in %u ms",
				     fdx_strerror(res), ACCEPT_PAUSE_MS);
		}
		return;
	}
	if (post_accept(dp, k ? dp->tfd : dp->ufd, op) < 0)
		dp->accept_again[k] = now; /* no room in the ring: next round */
	if (res < 0) {
		if (res != -EINTR && res != -ECONNABORTED)
			FDX_LOG_WARN(dp->log, "data plane: accept: %s", fdx_strerror(res));
		return;
	}
	/* Per listener: a tcp flood must not keep same-host (Unix socket) producers out. */
	for (struct fdx__conn *w = dp->conns; w; w = w->next)
		waiting += w->hello_by && !w->dead && w->via_tcp == k;
	if (waiting >= HELLO_PENDING_MAX) {
		FDX_LOG_WARN(dp->log,
			     "data plane: refused a %s data socket: %u others are still to send "
			     "their hello",
			     k ? "tcp" : "unix", waiting);
		close(res);
		return;
	}
	if (op->kind == OP_ACCEPT_UNIX) {
		struct ucred cred;
		socklen_t len = sizeof(cred);

		if (getsockopt(res, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
		    !fdx__exchange_uid_allowed(dp->ex, (uint32_t)cred.uid)) {
			FDX_LOG_WARN(dp->log, "data plane: refused a data socket from uid %d",
				     len == sizeof(cred) ? (int)cred.uid : -1);
			close(res);
			return;
		}
	} else {
		setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	c = conn_new(dp, res, ROLE_IN, NULL);
	if (!c) {
		close(res);
		return;
	}
	snprintf(c->name, sizeof(c->name), "an unidentified peer");
	c->st = RX_HELLO;
	c->need = HELLO_LEN;
	c->hello_by = now + (uint64_t)HELLO_TIMEOUT_MS * 1000000ull;
	c->via_tcp = k;
	post_hello_recv(c);
}

/* ---- the loop ----------------------------------------------------------- */

static void post_wake(struct fdx__dp *dp)
{
	struct io_uring_sqe *sqe = get_sqe(dp);

	if (!sqe)
		return;
	io_uring_prep_read(sqe, dp->efd, &dp->efd_buf, sizeof(dp->efd_buf), 0);
	io_uring_sqe_set_data(sqe, &dp->op_wake);
}

static void handle_cqe(struct fdx__dp *dp, struct io_uring_cqe *cqe)
{
	struct op *op = io_uring_cqe_get_data(cqe);
	struct fdx__conn *c;

	/* No user data, or liburing's own timeout on kernels without EXT_ARG. */
	if (!op || cqe->user_data == LIBURING_UDATA_TIMEOUT)
		return;
	switch (op->kind) {
	case OP_WAKE:
		if (!atomic_load(&dp->stop))
			post_wake(dp);
		return;
	case OP_ACCEPT_UNIX:
	case OP_ACCEPT_TCP:
		on_accept(dp, op, cqe->res);
		return;
	default:
		break;
	}
	c = op->c;
	c->pending--;
	if (op->kind == OP_SEND)
		on_send_done(c, cqe->res);
	else if (c->dead)
		return;
	else if (op->kind == OP_HELLO)
		on_hello(c, cqe->res);
	else
		on_recv(c, cqe->res);
}

/* Local credit: applied only to a partition that still exists. */
static int apply_local_credit(struct fdx__dp *dp)
{
	struct fdx__mpsc_node *n;
	int did = 0;

	while ((n = fdx__mpsc_pop_wait(&dp->lcredit))) {
		struct lcredit *lc = (struct lcredit *)n;

		for (struct fdx_partition *p = dp->parts; p; p = p->next)
			if (p == lc->p) {
				uint32_t bad = 0;

				if (fdx__sub_credit(lc->s, lc->added, lc->offs, lc->n, &bad) < 0)
					FDX_LOG_ERR(
						dp->log,
						"partition %s: local credit refused (offset %u)",
						p->id, bad);
				break;
			}
		free(lc);
		did = 1;
	}
	return did;
}

static int dp_local_credit(struct fdx__dp *dp, struct fdx_partition *p, struct fdx__sub *s,
			   uint32_t added, const uint64_t *offs, uint32_t n)
{
	struct lcredit *lc = malloc(sizeof(*lc) + (size_t)n * sizeof(uint64_t));

	if (!lc)
		return -ENOMEM;
	lc->p = p;
	lc->s = s;
	lc->added = added;
	lc->n = n;
	if (n)
		memcpy(lc->offs, offs, (size_t)n * sizeof(uint64_t));
	fdx__mpsc_push(&dp->lcredit, &lc->link);
	dp_kick(dp);
	return 0;
}

static int round_work(struct fdx__dp *dp, uint64_t now)
{
	int did = apply_local_credit(dp);

	/* Each partition's buffer timeout; next_tick: when the loop must wake next for one. */
	dp->next_tick = now + (uint64_t)TICK_DEFAULT_MS * 1000000ull;
	for (struct fdx_partition *p = dp->parts; p; p = p->next) {
		uint64_t next = fdx__part_tick(p, now);

		if (next < dp->next_tick)
			dp->next_tick = next;
	}
	/*
	 * The subpartitions that asked (items, flush, credit, failure, the buffer
	 * timeout). Each is out of the queue before it is pumped: what comes
	 * meanwhile queues it again.
	 */
	for (struct fdx__sub *s; (s = ready_pop(dp));) {
		atomic_store_explicit(&s->ready, 0, memory_order_seq_cst);
		did |= fdx__sub_pump(s);
	}
	for (uint32_t k = 0; k < 2; k++) {
		if (!dp->accept_again[k])
			continue;
		if (now >= dp->accept_again[k]) {
			if (post_accept(dp, k ? dp->tfd : dp->ufd,
					k ? &dp->op_acc_tcp : &dp->op_acc_unix) == 0)
				dp->accept_again[k] = 0;
			did = 1;
		} else if (dp->accept_again[k] < dp->next_tick) {
			dp->next_tick = dp->accept_again[k];
		}
	}
	for (struct fdx__conn **cp = &dp->conns; *cp;) {
		struct fdx__conn *c = *cp;

		if (c->hello_by && !c->dead) {
			if (now >= c->hello_by) {
				conn_kill(c, -ETIMEDOUT, "no hello within the time allowed");
				did = 1;
			} else if (c->hello_by < dp->next_tick) {
				dp->next_tick = c->hello_by;
			}
		}
		if (c->role == ROLE_OUT && c->need_probe && !c->dead) {
			/* Nothing comes back on it: a receive that completes means it closed. */
			c->need_probe = 0;
			post_recv(c, c->probe, sizeof(c->probe));
		}
		if (c->role == ROLE_OUT)
			conn_flush(c);
		if (c->dead && c->pending == 0) {
			*cp = c->next;
			/* No subpartition may keep pointing at it (destroy reads it). */
			for (struct fdx_partition *p = dp->parts; p; p = p->next)
				for (uint32_t i = 0; i < p->n; i++)
					if (p->subs[i].conn == c)
						p->subs[i].conn = NULL;
			conn_free(c);
			continue;
		}
		cp = &c->next;
	}
	return did;
}

/*
 * The ring: completions run only when the loop asks (DEFER_TASKRUN), so no
 * interrupt of the task threads; older kernels get a plain ring.
 */
static int ring_init(struct fdx__dp *dp)
{
	struct io_uring_params prm;
	int err;

	memset(&prm, 0, sizeof(prm));
	prm.flags =
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN;
	err = io_uring_queue_init_params(RING_ENTRIES, &dp->ring, &prm);
	if (err == -EINVAL) {
		memset(&prm, 0, sizeof(prm));
		err = io_uring_queue_init_params(RING_ENTRIES, &dp->ring, &prm);
	}
	return err;
}

static void *loop_main(void *arg)
{
	struct fdx__dp *dp = arg;
	struct io_uring_cqe *cqe;
	int err = ring_init(dp);

	pthread_mutex_lock(&dp->lock);
	dp->ring_up = err == 0;
	dp->ring_result = err < 0 ? err : 1;
	pthread_cond_broadcast(&dp->ready);
	if (err < 0) {
		pthread_mutex_unlock(&dp->lock);
		return NULL;
	}
	post_wake(dp);
	post_accept(dp, dp->ufd, &dp->op_acc_unix);
	post_accept(dp, dp->tfd, &dp->op_acc_tcp);
	while (!atomic_load(&dp->stop)) {
		unsigned head, n = 0;
		uint64_t now = fdx__now_ns();
		int did;

		/* seq_cst: a kick after this is seen below or by K2 (no lost wake-up). */
		atomic_exchange_explicit(&dp->work, 0, memory_order_seq_cst);
		io_uring_for_each_cqe(&dp->ring, head, cqe)
		{
			handle_cqe(dp, cqe);
			n++;
		}
		io_uring_cq_advance(&dp->ring, n);
		did = round_work(dp, now);
		if (did || n) {
			/* One enter: submit what this round queued, reap what completed. */
			io_uring_submit_and_get_events(&dp->ring);
			continue;
		}
		/* Nothing to do: sleep until a completion, a kick or the next tick. */
		pthread_mutex_unlock(&dp->lock);
		atomic_store_explicit(&dp->sleeping, 1, memory_order_relaxed);
		/* K2: the flag, then the work; pairs with K1 in dp_kick(). */
		atomic_thread_fence(memory_order_seq_cst);
		if (!atomic_load_explicit(&dp->work, memory_order_relaxed)) {
			uint64_t wait = dp->next_tick > now ? dp->next_tick - now : 0;
			struct __kernel_timespec ts = {(long long)(wait / 1000000000ull),
						       (long long)(wait % 1000000000ull)};

			io_uring_submit_and_wait_timeout(&dp->ring, &cqe, 1, &ts, NULL);
		} else {
			io_uring_submit_and_get_events(&dp->ring);
		}
		atomic_store_explicit(&dp->sleeping, 0, memory_order_relaxed);
		pthread_mutex_lock(&dp->lock);
	}
	pthread_mutex_unlock(&dp->lock);
	return NULL;
}

/* ---- listeners and setup -------------------------------------------------- */

static int listen_data_unix(struct fdx__dp *dp, const char *path)
{
	struct sockaddr_un sa;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, path);
	unlink(path); /* ours: the control socket beside it is live and ours */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	dp->ufd = fd;
	dp->unix_path = strdup(path);
	snprintf(dp->unix_ep, sizeof(dp->unix_ep), "unix:%s", path);
	return dp->unix_path ? 0 : -ENOMEM;
}

static int listen_data_tcp(struct fdx__dp *dp, const char *host)
{
	struct addrinfo hints, *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char h[128], port[16];
	int fd, one = 1, err;

	snprintf(h, sizeof(h), "%s", host);
	if (h[0] == '[') { /* [v6] */
		memmove(h, h + 1, strlen(h));
		h[strcspn(h, "]")] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if (getaddrinfo(h, "0", &hints, &ai) != 0 || !ai)
		return -EADDRNOTAVAIL;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		freeaddrinfo(ai);
		return err;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		err = -errno;
		close(fd);
		freeaddrinfo(ai);
		return err;
	}
	freeaddrinfo(ai);
	getnameinfo((struct sockaddr *)&ss, len, NULL, 0, port, sizeof(port), NI_NUMERICSERV);
	dp->tfd = fd;
	if (ss.ss_family == AF_INET6)
		snprintf(dp->tcp_ep, sizeof(dp->tcp_ep), "[%s]:%s", h, port);
	else
		snprintf(dp->tcp_ep, sizeof(dp->tcp_ep), "%s:%s", h, port);
	return 0;
}

/* What every data plane starts with: no sockets yet, its lock and queues ready. */
static const struct fdx__port_ops port_ops;

static void dp_init(struct fdx__dp *dp, struct fdx_exchange *ex)
{
	struct fdx__port *pt = fdx__port_of(ex);

	/* The exchange's port: how runtime/ reaches this data plane. */
	pt->ops = &port_ops;
	pt->ctx = dp;
	pt->log = fdx__exchange_log(ex);
	dp->ex = ex;
	dp->log = fdx__exchange_log(ex);
	dp->ufd = dp->tfd = dp->efd = -1;
	dp->op_wake.kind = OP_WAKE;
	dp->op_acc_unix.kind = OP_ACCEPT_UNIX;
	dp->op_acc_tcp.kind = OP_ACCEPT_TCP;
	pthread_mutex_init(&dp->lock, NULL);
	pthread_cond_init(&dp->ready, NULL);
	fdx__mpsc_init(&dp->lcredit);
	fdx__mpsc_init(&dp->readyq);
}

int fdx__dp_create(struct fdx_exchange *ex, const struct fdx__dp_params *prm, struct fdx__dp **out)
{
	struct fdx__dp *dp = calloc(1, sizeof(*dp));
	int err;

	if (!dp)
		return -ENOMEM;
	dp_init(dp, ex);
	dp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (dp->efd < 0) {
		err = -errno;
		goto fail;
	}
	err = listen_data_unix(dp, prm->unix_path);
	if (err < 0) {
		FDX_LOG_ERR(dp->log, "data plane: cannot serve unix:%s: %s", prm->unix_path,
			    fdx_strerror(err));
		goto fail;
	}
	err = listen_data_tcp(dp, prm->tcp_host);
	if (err < 0) {
		FDX_LOG_ERR(dp->log, "data plane: cannot serve tcp on %s: %s", prm->tcp_host,
			    fdx_strerror(err));
		goto fail;
	}
	err = -pthread_create(&dp->thread, NULL, loop_main, dp);
	if (err < 0)
		goto fail;
	dp->running = 1;
	/* The loop thread sets its ring up itself: the ring is single-issuer. */
	pthread_mutex_lock(&dp->lock);
	while (!dp->ring_result)
		pthread_cond_wait(&dp->ready, &dp->lock);
	pthread_mutex_unlock(&dp->lock);
	if (dp->ring_result < 0) {
		err = dp->ring_result;
		FDX_LOG_ERR(dp->log, "data plane: io_uring: %s", fdx_strerror(err));
		goto fail;
	}
	pthread_setname_np(dp->thread, "fdx-io");
	*out = dp;
	return 0;
fail:
	fdx__dp_destroy(dp);
	return err;
}

void fdx__dp_destroy(struct fdx__dp *dp)
{
	if (!dp)
		return;
	if (dp->running) {
		/*
		 * What is batched for peers (the last frames, CLOSE among them) goes
		 * before the sockets close, for at most 100 ms.
		 */
		for (int i = 0; i < 100; i++) {
			struct timespec ms = {0, 1000000};
			int busy = 0;

			pthread_mutex_lock(&dp->lock);
			for (struct fdx__conn *c = dp->conns; c; c = c->next)
				if (c->role == ROLE_OUT && !c->dead &&
				    (c->sending || c->b[c->fill].np))
					busy = 1;
			pthread_mutex_unlock(&dp->lock);
			if (!busy)
				break;
			dp_kick(dp);
			nanosleep(&ms, NULL);
		}
		atomic_store(&dp->stop, 1);
		atomic_store(&dp->sleeping, 1);
		dp_kick(dp);
		pthread_join(dp->thread, NULL);
	}
	while (dp->conns) {
		struct fdx__conn *c = dp->conns;

		dp->conns = c->next;
		conn_free(c);
	}
	/* Local credit nobody applied: its partitions are gone with the exchange. */
	for (struct fdx__mpsc_node *n; (n = fdx__mpsc_pop_wait(&dp->lcredit));)
		free(n);
	if (dp->ring_up)
		io_uring_queue_exit(&dp->ring);
	if (dp->ufd >= 0)
		close(dp->ufd);
	if (dp->tfd >= 0)
		close(dp->tfd);
	if (dp->unix_path)
		unlink(dp->unix_path);
	if (dp->efd >= 0)
		close(dp->efd);
	pthread_mutex_destroy(&dp->lock);
	pthread_cond_destroy(&dp->ready);
	free(dp->unix_path);
	free(dp);
}

const char *fdx__dp_unix_endpoint(const struct fdx__dp *dp)
{
	return dp->unix_ep;
}

const char *fdx__dp_tcp_endpoint(const struct fdx__dp *dp)
{
	return dp->tcp_ep;
}

/* ---- partitions and gates come and go -------------------------------------- */

static int dp_add_partition(struct fdx__dp *dp, struct fdx_partition *p)
{
	pthread_mutex_lock(&dp->lock);
	p->next = dp->parts;
	dp->parts = p;
	pthread_mutex_unlock(&dp->lock);
	dp_kick(dp); /* its buffer timeout may be the shortest */
	return 0;
}

static void dp_remove_partition(struct fdx__dp *dp, struct fdx_partition *p)
{
	pthread_mutex_lock(&dp->lock);
	for (struct fdx_partition **pp = &dp->parts; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	for (uint32_t i = 0; i < p->n; i++) {
		struct fdx__sub *s = &p->subs[i];

		if (!atomic_load(&s->connected))
			continue;
		if (s->link == FDX_LINK_LOCAL) {
			if (s->lgate)
				fdx__ichan_close(s->lgate, s->gate_channel, FDX__SESS_LOCAL);
		} else {
			/* In order after its data (the control stream's close may overtake it). */
			int data_close = s->conn && !s->conn->dead && !atomic_load(&s->error);

			if (data_close)
				fdx__sub_close(s);
			fdx__exchange_unhook_channel(dp->ex, s->chan);
			if (data_close)
				fdx__exchange_close_channel_data(dp->ex, s->chan);
			else
				fdx_exchange_close_channel(dp->ex, s->chan);
		}
	}
	/* p's subpartitions leave the ready queue (we are its consumer while the loop waits). */
	{
		struct fdx__sub *keep = NULL, *s;

		while ((s = ready_pop(dp))) {
			if (s->part == p)
				continue;
			s->ready_node.next = (struct fdx__mpsc_node *)keep;
			keep = s;
		}
		while (keep) {
			s = keep;
			keep = (struct fdx__sub *)s->ready_node.next;
			fdx__mpsc_push(&dp->readyq, &s->ready_node);
		}
	}
	/* What the connections still hold of p is p's no more. */
	for (struct fdx__conn *c = dp->conns; c; c = c->next)
		for (int k = 0; k < 2; k++)
			for (uint32_t i = 0; i < c->b[k].np; i++)
				if (c->b[k].parts[i].p == p)
					c->b[k].parts[i].p = NULL;
	pthread_mutex_unlock(&dp->lock);
	dp_kick(dp); /* the CLOSE frames go now */
}

void fdx__dp_visit(struct fdx__dp *dp, void (*on_part)(void *ud, struct fdx_partition *p),
		   void (*on_gate)(void *ud, struct fdx_gate *g), void *ud)
{
	pthread_mutex_lock(&dp->lock);
	for (struct fdx_partition *p = dp->parts; p; p = p->next)
		on_part(ud, p);
	for (struct fdx_gate *g = dp->gates; g; g = g->next)
		on_gate(ud, g);
	pthread_mutex_unlock(&dp->lock);
}

static int dp_add_gate(struct fdx__dp *dp, struct fdx_gate *g)
{
	int err;

	pthread_mutex_lock(&dp->lock);
	for (uint32_t i = 0; i < GONE_GATES; i++)
		if (dp->gone_gates[i] == (uint64_t)g->id + 1)
			dp->gone_gates[i] = 0;
	if (gate_find(dp, g->id)) {
		err = -EEXIST;
	} else {
		err = fdx__exchange_add_gate_hooked(dp->ex, g->id, g->n, g->exclusive, &gate_hooks,
						    g);
		if (!err) {
			g->next = dp->gates;
			dp->gates = g;
		}
	}
	pthread_mutex_unlock(&dp->lock);
	return err;
}

static void dp_remove_gate(struct fdx__dp *dp, struct fdx_gate *g)
{
	fdx__exchange_remove_gate(dp->ex, g->id); /* no hook runs after this */
	pthread_mutex_lock(&dp->lock);
	dp->gone_gates[dp->gone_at++ % GONE_GATES] = (uint64_t)g->id + 1;
	/* A tcp payload being received into g's pool: that connection ends. */
	for (struct fdx__conn *c = dp->conns; c; c = c->next)
		if (c->it_gate == g) {
			c->it_gate = NULL; /* the segment goes back with the pool */
			conn_kill(c, FDX_EPEERGONE, "its gate was destroyed");
		}
	for (struct fdx_gate **gp = &dp->gates; *gp; gp = &(*gp)->next)
		if (*gp == g) {
			*gp = g->next;
			break;
		}
	for (struct fdx_partition *p = dp->parts; p; p = p->next)
		for (uint32_t i = 0; i < p->n; i++)
			if (p->subs[i].lgate == g) {
				/* After its end, the gate going is no failure. */
				if (!fdx__ichan_ended(g, p->subs[i].gate_channel))
					fdx__sub_fail(&p->subs[i], FDX_EPEERGONE,
						      "its local gate is gone", 0);
				atomic_store(&p->subs[i].connected, 0);
				fdx__sub_discard(&p->subs[i]);
				p->subs[i].lgate = NULL;
			}
	pthread_mutex_unlock(&dp->lock);
}

/* ---- connecting a subpartition -------------------------------------------- */

static int dial(const char *ep, uint32_t link, int *out)
{
	int fd = -1, err, one = 1;

	if (link == FDX_LINK_SHM) {
		struct sockaddr_un sa;

		if (strncmp(ep, "unix:", 5) != 0 || strlen(ep + 5) >= sizeof(sa.sun_path))
			return -EINVAL;
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		memset(&sa, 0, sizeof(sa));
		sa.sun_family = AF_UNIX;
		strcpy(sa.sun_path, ep + 5);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			err = -errno;
			close(fd);
			return err;
		}
	} else {
		struct addrinfo hints, *ai = NULL;
		char host[128];
		const char *colon = strrchr(ep, ':');

		if (!colon || (size_t)(colon - ep) >= sizeof(host))
			return -EINVAL;
		snprintf(host, sizeof(host), "%.*s", (int)(colon - ep), ep);
		if (host[0] == '[') {
			memmove(host, host + 1, strlen(host));
			host[strcspn(host, "]")] = '\0';
		}
		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
			return -EHOSTUNREACH;
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err = -errno;
			freeaddrinfo(ai);
			return err;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			err = -errno;
			close(fd);
			freeaddrinfo(ai);
			return err;
		}
		freeaddrinfo(ai);
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	*out = fd;
	return 0;
}

static struct fdx__conn *conn_find(struct fdx__dp *dp, const char *addr, uint32_t link,
				   const uint8_t *token, const struct fdx_region *region)
{
	for (struct fdx__conn *c = dp->conns; c; c = c->next)
		if (c->role == ROLE_OUT && !c->dead && c->link == link &&
		    memcmp(c->token, token, FDX__TOKEN_LEN) == 0 && strcmp(c->addr, addr) == 0 &&
		    (link != FDX_LINK_SHM || c->region == region))
			return c;
	return NULL;
}

/*
 * The data socket to the peer at addr for link, of the session whose token pd
 * carries (and on shm, for region). Called without dp->lock: a new socket is
 * dialled without it (the loop goes on meanwhile). Returns with dp->lock held.
 */
static int get_conn(struct fdx__dp *dp, const char *addr, uint32_t link,
		    const struct fdx__peer_data *pd, const struct fdx_region *region,
		    struct fdx__conn **out)
{
	struct fdx__conn *c;
	struct fdx__dhdr h;
	uint8_t hello[HELLO_LEN];
	int fd = -1, err;

	pthread_mutex_lock(&dp->lock);
	*out = conn_find(dp, addr, link, pd->token, region);
	if (*out)
		return 0;
	pthread_mutex_unlock(&dp->lock);
	err = dial(link == FDX_LINK_SHM ? pd->unix_ep : pd->tcp_ep, link, &fd);
	if (err < 0) {
		FDX_LOG_ERR(dp->log,
			    "exchange %s: cannot reach the data socket of TaskManager %s at %s: %s",
			    fdx__exchange_tm_id(dp->ex), pd->remote_tm,
			    link == FDX_LINK_SHM ? pd->unix_ep : pd->tcp_ep, fdx_strerror(err));
		pthread_mutex_lock(&dp->lock);
		return err;
	}
	memset(&h, 0, sizeof(h));
	h.magic = htole32(FDX__DH_MAGIC);
	h.version = FDX__DH_VERSION;
	h.type = FDX__DH_HELLO;
	h.event_type = htole32(link);
	memcpy(hello, &h, HDR_LEN);
	memcpy(hello + HDR_LEN, pd->token, FDX__TOKEN_LEN);
	if (link == FDX_LINK_SHM) {
		err = fdx__region_send_with(region, fd, hello, sizeof(hello));
	} else {
		ssize_t n = send(fd, hello, sizeof(hello), MSG_NOSIGNAL);

		err = n == (ssize_t)sizeof(hello) ? 0 : n < 0 ? -errno : -EPIPE;
	}
	pthread_mutex_lock(&dp->lock);
	if (err < 0) {
		close(fd);
		return err;
	}
	/* Another thread may have dialled the same peer meanwhile: both sockets serve. */
	c = conn_new(dp, fd, ROLE_OUT, NULL);
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->link = link;
	c->region = region;
	snprintf(c->addr, sizeof(c->addr), "%s", addr);
	snprintf(c->name, sizeof(c->name), "TaskManager %s at %s", pd->remote_tm, addr);
	memcpy(c->token, pd->token, sizeof(c->token));
	c->need_probe = 1; /* the ring is the loop's: it posts that receive */
	*out = c;
	return 0;
}

/* fdx_partition_connect() below the protocol (runtime/port.h). */
static int dp_connect(struct fdx__port *pt, struct fdx_partition *p, uint32_t sub, const char *addr,
		      uint32_t gate, uint32_t gate_channel, uint32_t link, int timeout_ms)
{
	struct fdx__dp *dp = pt->ctx;
	struct fdx__sub *s = &p->subs[sub];
	struct fdx__peer_data pd;
	struct fdx__conn *c = NULL;
	uint32_t chan = 0, initial = 0, chosen;
	uint64_t avail;
	int local, err;

	local = strcmp(addr, fdx_exchange_address(p->ex)) == 0;
	if (link == FDX_LINK_LOCAL && !local)
		return -EOPNOTSUPP;
	if (local && (link == FDX_LINK_AUTO || link == FDX_LINK_LOCAL)) {
		struct fdx_gate *g;
		uint64_t opening;

		pthread_mutex_lock(&dp->lock);
		g = gate_find(dp, gate);
		err = !g || gate_channel >= g->n ? -ENOENT : 0;
		if (!err) {
			/* Its fields first: the consumer's credit reaches s through them. */
			s->lgate = g;
			s->gate = gate;
			s->gate_channel = gate_channel;
			err = fdx__ichan_open(g, gate_channel, FDX__SESS_LOCAL, FDX_LINK_LOCAL, p,
					      s, &opening);
		}
		if (!err)
			fdx__sub_attach(s, &local_link, g->exclusive);
		else
			s->lgate = NULL;
		pthread_mutex_unlock(&dp->lock);
		if (err)
			return err;
		dp_ready(dp, s); /* what was emitted before may go now */
		dp_kick(dp);
		return 0;
	}
	err = fdx_exchange_open_channel(p->ex, addr, p->id, sub, gate, gate_channel, timeout_ms,
					&chan, &initial);
	if (err < 0)
		return err;
	err = fdx__exchange_peer_data(p->ex, addr, &pd);
	if (err < 0)
		goto fail_close;
	chosen = link == FDX_LINK_AUTO ? pd.link : link;
	if (chosen == FDX_LINK_SHM && pd.link != FDX_LINK_SHM) {
		FDX_LOG_ERR(p->log, "partition %s: shm to TaskManager %s at %s: not on this host",
			    p->id, pd.remote_tm, addr);
		err = -EOPNOTSUPP;
		goto fail_close;
	}
	err = get_conn(dp, addr, chosen, &pd, p->region, &c); /* returns with dp->lock */
	if (!err) {
		s->chan = chan;
		s->conn = c;
		s->gate = gate;
		s->gate_channel = gate_channel;
		/* Its credit so far comes through the hook, into the ledger. */
		err = fdx__exchange_hook_channel(p->ex, chan, &chan_hooks, s, &avail);
	}
	if (!err)
		fdx__sub_attach(s, chosen == FDX_LINK_SHM ? &shm_link : &tcp_link, 0);
	else
		s->conn = NULL;
	pthread_mutex_unlock(&dp->lock);
	if (err < 0)
		goto fail_close;
	dp_ready(dp, s); /* what was emitted before may go now */
	dp_kick(dp);
	return 0;
fail_close:
	fdx_exchange_close_channel(p->ex, chan);
	return err;
}

/* ---- the port: runtime/port.h, filled in --------------------------------- */

static int port_partition_attach(struct fdx__port *pt, struct fdx_partition *p)
{
	return dp_add_partition(pt->ctx, p);
}

static void port_partition_detach(struct fdx__port *pt, struct fdx_partition *p)
{
	dp_remove_partition(pt->ctx, p);
}

static void port_ready(struct fdx__port *pt, struct fdx__sub *s)
{
	dp_ready(pt->ctx, s);
}

static void port_kick(struct fdx__port *pt)
{
	dp_kick(pt->ctx);
}

static int port_gate_attach(struct fdx__port *pt, struct fdx_gate *g)
{
	return dp_add_gate(pt->ctx, g);
}

static void port_gate_detach(struct fdx__port *pt, struct fdx_gate *g)
{
	dp_remove_gate(pt->ctx, g);
}

static int port_announce(struct fdx__port *pt, struct fdx_gate *g, uint32_t ch, uint64_t sess,
			 uint64_t opening)
{
	struct fdx__dp *dp = pt->ctx;

	return fdx__exchange_credit_sess(dp->ex, g->id, ch, sess, opening);
}

static int port_local_credit(struct fdx__port *pt, struct fdx_partition *p, struct fdx__sub *s,
			     uint32_t added, const uint64_t *offs, uint32_t n)
{
	return dp_local_credit(pt->ctx, p, s, added, offs, n);
}

static void port_drop_input(struct fdx__port *pt, struct fdx_gate *g, uint32_t ch, uint64_t sess,
			    int code, const char *msg)
{
	struct fdx__dp *dp = pt->ctx;

	fdx__exchange_drop_input(dp->ex, g->id, ch, sess, code, msg);
}

static const struct fdx__port_ops port_ops = {
	.partition_attach = port_partition_attach,
	.partition_detach = port_partition_detach,
	.connect = dp_connect,
	.ready = port_ready,
	.kick = port_kick,
	.gate_attach = port_gate_attach,
	.gate_detach = port_gate_detach,
	.announce = port_announce,
	.local_credit = port_local_credit,
	.drop_input = port_drop_input,
};

#ifdef FDX_FUZZING
/* ---- fuzzing entry points (transport/fuzz_entry.h; -DFDX_FUZZING only) ----- */

#include "fuzz_entry.h"

/*
 * A data plane without a ring: get_sqe() hands out these entries instead, and
 * fdx__fuzz_conn_recv() completes them as the kernel would. One process, one
 * fuzzer thread: file-static is enough.
 */
#define FUZZ_SQES 4u
static struct io_uring_sqe fuzz_sqes[FUZZ_SQES];
static uint32_t fuzz_nsqe;
/* The connections' receive buffer, kept: 256 KiB allocated per input costs 40 us under ASan. */
static uint8_t *fuzz_rx;

static struct io_uring_sqe *fuzz_get_sqe(void)
{
	struct io_uring_sqe *sqe;

	if (fuzz_nsqe == FUZZ_SQES)
		return NULL;
	sqe = &fuzz_sqes[fuzz_nsqe++];
	memset(sqe, 0, sizeof(*sqe));
	return sqe;
}

int fdx__fuzz_dp_create(struct fdx_exchange *ex, struct fdx__dp **out)
{
	struct fdx__dp *dp = calloc(1, sizeof(*dp));

	if (!dp)
		return -ENOMEM;
	dp_init(dp, ex);
	snprintf(dp->unix_ep, sizeof(dp->unix_ep), "unix:/nonexistent/fdx-fuzz.data");
	snprintf(dp->tcp_ep, sizeof(dp->tcp_ep), "127.0.0.1:1");
	*out = dp;
	return 0;
}

struct fdx__conn *fdx__fuzz_conn_open(struct fdx__dp *dp, uint32_t link, uint64_t sess,
				      struct fdx__rmap *map)
{
	struct fdx__conn *c;

	if (!fuzz_rx && !(fuzz_rx = malloc(RX_CAP)))
		return NULL;
	pthread_mutex_lock(&dp->lock);
	for (c = dp->conns; c; c = c->next)
		if (c->rx == fuzz_rx) { /* one connection at a time: they share fuzz_rx */
			pthread_mutex_unlock(&dp->lock);
			return NULL;
		}
	c = conn_new(dp, -1, ROLE_IN, fuzz_rx);
	if (c && !link) { /* as on_accept() leaves it */
		snprintf(c->name, sizeof(c->name), "an unidentified peer");
		c->st = RX_HELLO;
		c->need = HELLO_LEN;
		post_hello_recv(c);
	} else if (c) { /* as on_hello() leaves it */
		snprintf(c->name, sizeof(c->name), "TaskManager fuzz");
		c->sess = sess;
		c->link = link;
		c->op_recv.kind = OP_RECV;
		c->rx_len = 0;
		if (link == FDX_LINK_SHM) {
			atomic_fetch_add_explicit(&map->refs, 1, memory_order_relaxed);
			c->map = map;
			c->st = RX_SHM;
			post_recv(c, c->rx, RX_CAP);
		} else {
			c->st = RX_HDR;
			c->need = HDR_LEN;
			post_recv(c, c->rx, HDR_LEN);
		}
	}
	pthread_mutex_unlock(&dp->lock);
	return c;
}

/* recvmsg() into mh: bytes into its iovecs, descriptors as SCM_RIGHTS if they fit. */
static uint32_t fuzz_recvmsg(struct msghdr *mh, const uint8_t *data, uint32_t n, const int *fds,
			     uint32_t nfd)
{
	uint32_t done = 0;

	for (size_t i = 0; i < mh->msg_iovlen && done < n; i++) {
		uint32_t k = n - done;

		if (k > mh->msg_iov[i].iov_len)
			k = (uint32_t)mh->msg_iov[i].iov_len;
		memcpy(mh->msg_iov[i].iov_base, data + done, k);
		done += k;
	}
	mh->msg_flags = 0;
	if (nfd && mh->msg_control && mh->msg_controllen >= CMSG_SPACE(nfd * sizeof(int))) {
		struct cmsghdr *cm = CMSG_FIRSTHDR(mh);

		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfd * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfd * sizeof(int));
		mh->msg_controllen = CMSG_SPACE(nfd * sizeof(int));
	} else {
		/* The kernel closes what it could not pass. */
		for (uint32_t i = 0; i < nfd; i++)
			close(fds[i]);
		if (nfd)
			mh->msg_flags |= MSG_CTRUNC;
		mh->msg_controllen = 0;
	}
	return done;
}

int fdx__fuzz_conn_recv(struct fdx__conn *c, const void *data, uint32_t n, const int *fds,
			uint32_t nfd)
{
	struct io_uring_sqe sqe;
	struct io_uring_cqe cqe;
	uint32_t got = 0;

	if (fuzz_nsqe == 0) {
		for (uint32_t i = 0; i < nfd; i++)
			close(fds[i]);
		return -ENOENT;
	}
	if (fuzz_nsqe > 1 || (void *)(uintptr_t)fuzz_sqes[0].user_data != &c->op_recv)
		return -EPROTO; /* two receives in flight, or one that is not c's */
	sqe = fuzz_sqes[0];
	fuzz_nsqe = 0;
	if (n && sqe.opcode == IORING_OP_RECVMSG) {
		got = fuzz_recvmsg((struct msghdr *)(uintptr_t)sqe.addr, data, n, fds, nfd);
	} else {
		for (uint32_t i = 0; i < nfd; i++)
			close(fds[i]);
		if (n && sqe.opcode != IORING_OP_RECV)
			return -EPROTO;
		got = n < sqe.len ? n : sqe.len;
		if (got)
			memcpy((void *)(uintptr_t)sqe.addr, data, got);
	}
	memset(&cqe, 0, sizeof(cqe));
	cqe.user_data = sqe.user_data;
	cqe.res = (int32_t)got;
	pthread_mutex_lock(&c->dp->lock);
	handle_cqe(c->dp, &cqe);
	pthread_mutex_unlock(&c->dp->lock);
	return (int)got;
}

int fdx__fuzz_conn_receiving_into(const struct fdx__conn *c, const struct fdx_gate *g)
{
	return c->st == RX_PAYLOAD && c->it && c->it_gate == g && c->it->kind == FDX__GI_BUFFER;
}

int fdx__fuzz_conn_close(struct fdx__conn *c)
{
	struct fdx__dp *dp = c->dp;
	int left = 0;

	while (fuzz_nsqe && fdx__fuzz_conn_recv(c, NULL, 0, NULL, 0) >= 0)
		;
	fuzz_nsqe = 0;
	pthread_mutex_lock(&dp->lock);
	if (!c->dead)
		conn_kill(c, 0, "closed by the fuzzer");
	c->rx = NULL; /* fuzz_rx stays */
	round_work(dp, fdx__now_ns());
	for (struct fdx__conn *o = dp->conns; o; o = o->next)
		left |= o == c;
	pthread_mutex_unlock(&dp->lock);
	return left ? -EBUSY : 0;
}

void fdx__fuzz_dp_gone_gates(struct fdx__dp *dp, const uint32_t *ids, uint32_t n)
{
	pthread_mutex_lock(&dp->lock);
	memset(dp->gone_gates, 0, sizeof(dp->gone_gates));
	for (dp->gone_at = 0; dp->gone_at < n && dp->gone_at < GONE_GATES; dp->gone_at++)
		dp->gone_gates[dp->gone_at] = (uint64_t)ids[dp->gone_at] + 1;
	pthread_mutex_unlock(&dp->lock);
}

void fdx__fuzz_gate_hook(struct fdx_gate *g, int what, uint32_t ch, uint64_t sess)
{
	uint64_t opening;

	if (what == FDX__FUZZ_OPENED)
		gate_hooks.opened(g, ch, sess, "fuzz", &opening);
	else if (what == FDX__FUZZ_CLOSED)
		gate_hooks.closed(g, ch, sess, 0);
	else
		gate_hooks.failed(g, ch, sess, FDX_EPEERGONE, "fuzz: its control stream failed");
}
#endif /* FDX_FUZZING */
