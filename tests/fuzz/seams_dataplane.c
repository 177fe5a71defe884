/* SPDX-License-Identifier: MIT */
/*
 * Test-only: the data plane's entry points of transport/fuzz_entry.h,
 * compiled into the fuzz targets alone (tests/fuzz/CMakeLists.txt); the
 * library has none of them. They reach the data plane's files through
 * transport/dataplane_private.h and its seam fdx__seam_get_sqe. Everything
 * here runs on the fuzzer's one thread, taking dp->lock where the loop would
 * hold it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fdx/error.h>
#include <fdx/gate.h>

#include "../../runtime/clock.h"
#include "../../transport/dataplane_private.h"
#include "../../transport/fuzz_entry.h"

/*
 * A data plane without a ring: fdx__dp_get_sqe() hands out these entries
 * instead (through fdx__seam_get_sqe), and fdx__fuzz_conn_recv() completes
 * them as the kernel would. One process, one fuzzer thread: file-static is
 * enough.
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
	fdx__dp_init(dp, ex);
	snprintf(dp->unix_ep, sizeof(dp->unix_ep), "unix:/nonexistent/fdx-fuzz.data");
	snprintf(dp->tcp_ep, sizeof(dp->tcp_ep), "127.0.0.1:1");
	fdx__seam_get_sqe = fuzz_get_sqe; /* it has no ring: its entries come from here */
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
	c = fdx__conn_new(dp, -1, ROLE_IN, fuzz_rx);
	if (c && !link) { /* as fdx__dp_on_accept() leaves it */
		snprintf(c->name, sizeof(c->name), "an unidentified peer");
		c->st = RX_HELLO;
		c->need = HELLO_LEN;
		fdx__conn_post_hello_recv(c);
	} else if (c) { /* as fdx__conn_on_hello() leaves it */
		snprintf(c->name, sizeof(c->name), "TaskManager fuzz");
		c->sess = sess;
		c->link = link;
		c->op_recv.kind = OP_RECV;
		c->rx_len = 0;
		if (link == FDX_LINK_SHM) {
			atomic_fetch_add_explicit(&map->refs, 1, memory_order_relaxed);
			c->map = map;
			c->st = RX_SHM;
			fdx__conn_post_recv(c, c->rx, RX_CAP);
		} else {
			c->st = RX_HDR;
			c->need = HDR_LEN;
			fdx__conn_post_recv(c, c->rx, HDR_LEN);
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
	fdx__dp_handle_cqe(c->dp, &cqe);
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
		fdx__conn_kill(c, 0, "closed by the fuzzer");
	c->rx = NULL; /* fuzz_rx stays */
	fdx__dp_round_work(dp, fdx__now_ns());
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
		fdx__dp_gate_hooks.opened(g, ch, sess, "fuzz", &opening);
	else if (what == FDX__FUZZ_CLOSED)
		fdx__dp_gate_hooks.closed(g, ch, sess, 0);
	else
		fdx__dp_gate_hooks.failed(g, ch, sess, FDX_EPEERGONE,
					  "fuzz: its control stream failed");
}
