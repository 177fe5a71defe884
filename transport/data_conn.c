/* SPDX-License-Identifier: MIT */
/*
 * A data connection: its creation, failure and end; the send batches of a
 * producer's connection (one sendmsg in flight, the other batch filling);
 * the receives of a consumer's connection and its hello (the token, and on
 * shm the region with its memfd); accepting connections on the listening
 * data sockets (the hello timeout and cap, the pause when out of
 * descriptors); dialling a peer's data socket.
 *
 * Locking: everything here runs with dp->lock held (mostly on the loop
 * thread), except the listeners (set up by fdx__dp_create() before the loop
 * starts) and fdx__dp_get_conn(), which a task thread connecting a
 * subpartition calls without it: it dials without the lock and returns with
 * it held.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fdx/error.h>
#include <fdx/gate.h>
#include <fdx/partition.h>

#include "../runtime/clock.h"
#include "../runtime/region.h"
#include "dataplane_private.h"
#include "region_share.h"

#define IOV_BATCH 512u
/*
 * An accepted data socket must send its hello within HELLO_TIMEOUT_MS (a
 * producer sends it right after connecting); at most HELLO_PENDING_MAX wait
 * for theirs at once, more are closed at accept. Out of descriptors (EMFILE
 * and the like), accepting pauses ACCEPT_PAUSE_MS instead of spinning.
 */
#define HELLO_TIMEOUT_MS 3000u
#define HELLO_PENDING_MAX 64u
#define ACCEPT_PAUSE_MS 100u

/* ---- sending: batches ---------------------------------------------------- */

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

struct txpart *fdx__txb_part(struct txb *b)
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

int fdx__txb_hdr(struct txb *b, const struct fdx__dhdr *h)
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
	pt = fdx__txb_part(b);
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
	struct io_uring_sqe *sqe = fdx__dp_get_sqe(c->dp);
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
void fdx__conn_flush(struct fdx__conn *c)
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

int fdx__conn_control(struct fdx__sub *s, uint32_t kind, struct fdx__pitem *ev, uint32_t seq,
		      uint32_t backlog)
{
	static const uint8_t types[] = {[FDX__SEND_EVENT] = FDX__DH_EVENT,
					[FDX__SEND_ABORT] = FDX__DH_ABORT,
					[FDX__SEND_BACKLOG] = FDX__DH_BACKLOG,
					[FDX__SEND_CLOSE] = FDX__DH_CLOSE};
	struct txb *b = &s->conn->b[s->conn->fill];
	struct fdx__dhdr h;

	fdx__dhdr_init(&h, s, types[kind]);
	if (kind != FDX__SEND_BACKLOG)
		h.seq = htole32(seq);
	h.backlog = htole32(backlog);
	if (ev) {
		h.len = htole32(ev->len);
		h.event_type = htole32(ev->event_type);
		h.flags = htole16((ev->flags & FDX_EVENT_PRIORITY) ? FDX__DH_PRIORITY : 0);
	}
	if (fdx__txb_hdr(b, &h) < 0) {
		free(ev);
		return -ENOMEM;
	}
	if (ev) {
		struct txpart *pt = ev->len ? fdx__txb_part(b) : NULL;

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

void fdx__conn_on_send_done(struct fdx__conn *c, int res)
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
		fdx__conn_kill(c, FDX_EPEERGONE, fdx_strerror(res));
}

/* ---- a connection -------------------------------------------------------- */

/* A connection on fd; ROLE_IN receives into rx (RX_CAP bytes, freed with c), or its own if NULL. */
struct fdx__conn *fdx__conn_new(struct fdx__dp *dp, int fd, enum conn_role role, uint8_t *rx)
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
void fdx__conn_kill(struct fdx__conn *c, int err, const char *why)
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

void fdx__conn_free(struct fdx__conn *c)
{
	close(c->fd);
	if (c->hello_fd >= 0)
		close(c->hello_fd);
	txb_free(&c->b[0]);
	txb_free(&c->b[1]);
	fdx__tcp_item_drop(c);
	fdx__rmap_put(c->map);
	free(c->rx);
	free(c);
}

/* ---- receiving ----------------------------------------------------------- */

void fdx__conn_post_recv(struct fdx__conn *c, void *buf, uint32_t len)
{
	struct io_uring_sqe *sqe = fdx__dp_get_sqe(c->dp);

	if (!sqe)
		return;
	io_uring_prep_recv(sqe, c->fd, buf, len, 0);
	io_uring_sqe_set_data(sqe, &c->op_recv);
	c->pending++;
}

void fdx__conn_post_hello_recv(struct fdx__conn *c)
{
	struct io_uring_sqe *sqe = fdx__dp_get_sqe(c->dp);

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

/* The data socket's first message: the token, and on shm the region with its memfd. */
void fdx__conn_on_hello(struct fdx__conn *c, int res)
{
	struct fdx__dp *dp = c->dp;
	struct cmsghdr *cm;
	struct fdx__dhdr h;
	char peer[64];
	int extra = 0;

	if (res <= 0) {
		fdx__conn_kill(c, res ? res : 0,
			       res ? fdx_strerror(res) : "closed before its hello");
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
		fdx__conn_kill(c, FDX_EPROTO, "more than one descriptor in its hello");
		return;
	}
	if (c->rmh.msg_flags & MSG_CTRUNC) {
		fdx__conn_kill(c, FDX_EPROTO, "truncated control data in its hello");
		return;
	}
	c->rx_len += (uint32_t)res;
	if (c->rx_len < c->need) {
		fdx__conn_post_hello_recv(c);
		return;
	}
	if (c->st == RX_HELLO) {
		fdx__dhdr_decode(&h, c->rx);
		if (h.magic != FDX__DH_MAGIC || h.version != FDX__DH_VERSION ||
		    h.type != FDX__DH_HELLO ||
		    (h.event_type != FDX_LINK_SHM && h.event_type != FDX_LINK_TCP)) {
			fdx__conn_kill(c, FDX_EPROTO, "its first frame is not a hello");
			return;
		}
		if (fdx__exchange_token_take(dp->ex, c->rx + HDR_LEN, &c->sess, peer,
					     sizeof(peer)) < 0) {
			fdx__conn_kill(c, FDX_EREFUSED,
				       "it presented a token no control stream handed out, or one "
				       "used already");
			return;
		}
		snprintf(c->name, sizeof(c->name), "TaskManager %s", peer);
		c->link = h.event_type;
		if (c->link == FDX_LINK_SHM) {
			if (c->hello_fd < 0) {
				fdx__conn_kill(c, FDX_EPROTO,
					       "its shm hello came without the region's memfd");
				return;
			}
			c->st = RX_REGION;
			c->need = HELLO_LEN + FDX__REGION_MSG_LEN;
			fdx__conn_post_hello_recv(c);
			return;
		}
		if (c->hello_fd >= 0) {
			fdx__conn_kill(c, FDX_EPROTO, "a descriptor came with its tcp hello");
			return;
		}
		c->st = RX_HDR;
		c->hello_by = 0;
		c->rx_len = 0;
		c->need = HDR_LEN;
		c->op_recv.kind = OP_RECV;
		fdx__conn_post_recv(c, c->rx, HDR_LEN);
		return;
	}
	/* RX_REGION */
	fdx__shm_map_region(c);
}

void fdx__conn_on_recv(struct fdx__conn *c, int res)
{
	if (c->dead)
		return;
	if (res <= 0) {
		/* A producer's data socket closing is the end of its channels' data. */
		fdx__conn_kill(c, res < 0 ? res : 0,
			       res < 0 ? fdx_strerror(res) : "peer closed it");
		return;
	}
	if (c->role == ROLE_OUT) {
		fdx__conn_kill(c, FDX_EPROTO, "the consumer sent bytes on a data socket");
		return;
	}
	c->rx_len += (uint32_t)res;
	switch (c->st) {
	case RX_SHM:
		fdx__shm_parse(c);
		break;
	case RX_HDR:
		if (c->rx_len < HDR_LEN)
			fdx__conn_post_recv(c, c->rx + c->rx_len, HDR_LEN - c->rx_len);
		else
			fdx__tcp_header(c);
		break;
	case RX_PAYLOAD:
		if (c->rx_len < c->need)
			fdx__conn_post_recv(c, (uint8_t *)c->it->data + c->rx_len,
					    c->need - c->rx_len);
		else
			fdx__tcp_payload_done(c);
		break;
	default:
		break;
	}
}

/* ---- listening and accepting --------------------------------------------- */

int fdx__dp_listen_unix(struct fdx__dp *dp, const char *path)
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
	fdx__unix_path_bound(path);
	dp->unix_path = strdup(path);
	snprintf(dp->unix_ep, sizeof(dp->unix_ep), "unix:%s", path);
	return dp->unix_path ? 0 : -ENOMEM;
}

int fdx__dp_listen_tcp(struct fdx__dp *dp, const char *host)
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

/* 0, or -EBUSY if the ring had no room (the caller retries next round). */
int fdx__dp_post_accept(struct fdx__dp *dp, int fd, struct op *op)
{
	struct io_uring_sqe *sqe = fdx__dp_get_sqe(dp);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, op);
	return 0;
}

void fdx__dp_on_accept(struct fdx__dp *dp, struct op *op, int res)
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
	if (fdx__dp_post_accept(dp, k ? dp->tfd : dp->ufd, op) < 0)
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
	c = fdx__conn_new(dp, res, ROLE_IN, NULL);
	if (!c) {
		close(res);
		return;
	}
	snprintf(c->name, sizeof(c->name), "an unidentified peer");
	c->st = RX_HELLO;
	c->need = HELLO_LEN;
	c->hello_by = now + (uint64_t)HELLO_TIMEOUT_MS * 1000000ull;
	c->via_tcp = k;
	fdx__conn_post_hello_recv(c);
}

/* ---- dialling ------------------------------------------------------------ */

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
int fdx__dp_get_conn(struct fdx__dp *dp, const char *addr, uint32_t link,
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
	/* The channel's one-time token; the stream's own admits one socket too. */
	memcpy(hello + HDR_LEN, pd->has_sock_token ? pd->sock_token : pd->token, FDX__TOKEN_LEN);
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
	c = fdx__conn_new(dp, fd, ROLE_OUT, NULL);
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
