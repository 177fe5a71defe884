/* SPDX-License-Identifier: MIT */
/*
 * The data plane's io_uring loop and the data plane itself: one thread per
 * exchange owns the ring (single issuer), reaps its completions, and each
 * round applies local credit, ticks the partitions' buffer timeouts, pumps
 * the subpartitions that asked, reports what was sent to the exchange,
 * resumes accepting, times out hellos, flushes and frees connections. Also
 * here: creating and destroying the data plane, partitions and gates coming
 * and going, connecting a subpartition, and the port (runtime/port.h) that
 * runtime/ reaches all of it through.
 *
 * Locking: dp->lock is held by the loop while it works (not while it sleeps)
 * and by whoever adds or removes partitions, gates and connections. Order:
 * dp->lock, then the exchange's lock. The task threads and the consumer
 * threads never take it: they meet the loop through queues and atomics
 * (fdx__dp_ready(), fdx__dp_kick(), fdx__local_credit_push()). Sends are
 * batched: one sendmsg per connection per loop round. Credit is spent in each
 * subpartition's ledger (runtime/credit_ledger.h), without the exchange's lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <fdx/error.h>
#include <fdx/gate.h>
#include <fdx/partition.h>

#include "../runtime/clock.h"
#include "dataplane_private.h"

#define RING_ENTRIES 256u
#define TICK_DEFAULT_MS 100u

/* Test seam (dataplane_private.h): NULL in the library. */
struct io_uring_sqe *(*fdx__seam_get_sqe)(void);

/* ---- small things -------------------------------------------------------- */

void fdx__dp_ready(struct fdx__dp *dp, struct fdx__sub *s)
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

void fdx__dp_kick(struct fdx__dp *dp)
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
struct fdx_gate *fdx__dp_gate_find(struct fdx__dp *dp, uint32_t id)
{
	for (struct fdx_gate *g = dp->gates; g; g = g->next)
		if (g->id == id)
			return g;
	return NULL;
}

/* ---- the loop ------------------------------------------------------------ */

static void post_wake(struct fdx__dp *dp)
{
	struct io_uring_sqe *sqe = fdx__dp_get_sqe(dp);

	if (!sqe)
		return;
	io_uring_prep_read(sqe, dp->efd, &dp->efd_buf, sizeof(dp->efd_buf), 0);
	io_uring_sqe_set_data(sqe, &dp->op_wake);
}

void fdx__dp_handle_cqe(struct fdx__dp *dp, struct io_uring_cqe *cqe)
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
		fdx__dp_on_accept(dp, op, cqe->res);
		return;
	default:
		break;
	}
	c = op->c;
	c->pending--;
	if (op->kind == OP_SEND)
		fdx__conn_on_send_done(c, cqe->res);
	else if (c->dead)
		return;
	else if (op->kind == OP_HELLO)
		fdx__conn_on_hello(c, cqe->res);
	else
		fdx__conn_on_recv(c, cqe->res);
}

static void end_sub_locked(struct fdx__dp *dp, struct fdx__sub *s);
static int drain_partitions_locked(struct fdx__dp *dp);

int fdx__dp_round_work(struct fdx__dp *dp, uint64_t now)
{
	int did = fdx__local_credit_apply(dp);

	/* Each partition's buffer timeout; next_tick: when the loop must wake next for one. */
	dp->next_tick = now + (uint64_t)TICK_DEFAULT_MS * 1000000ull;
	for (struct fdx_partition *p = dp->parts; p; p = p->next) {
		uint64_t next;

		if (atomic_load_explicit(&p->closing, memory_order_relaxed))
			continue; /* being destroyed: sends nothing more */
		next = fdx__part_tick(p, now);
		if (next < dp->next_tick)
			dp->next_tick = next;
	}
	did |= drain_partitions_locked(dp);
	/*
	 * The subpartitions that asked (items, flush, credit, failure, the buffer
	 * timeout). Each is out of the queue before it is pumped: what comes
	 * meanwhile queues it again.
	 */
	for (struct fdx__sub *s; (s = ready_pop(dp));) {
		atomic_store_explicit(&s->ready, 0, memory_order_seq_cst);
		/* Made ready by credit that raced its partition's destroy: it sends nothing more. */
		if (atomic_load_explicit(&s->part->closing, memory_order_acquire))
			continue;
		did |= fdx__sub_pump(s);
	}
	for (uint32_t k = 0; k < 2; k++) {
		if (!dp->accept_again[k])
			continue;
		if (now >= dp->accept_again[k]) {
			if (fdx__dp_post_accept(dp, k ? dp->tfd : dp->ufd,
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
				fdx__conn_kill(c, -ETIMEDOUT, "no hello within the time allowed");
				did = 1;
			} else if (c->hello_by < dp->next_tick) {
				dp->next_tick = c->hello_by;
			}
		}
		if (c->role == ROLE_OUT && c->need_probe && !c->dead) {
			/* Nothing comes back on it: a receive that completes means it closed. */
			c->need_probe = 0;
			fdx__conn_post_recv(c, c->probe, sizeof(c->probe));
		}
		if (c->role == ROLE_OUT)
			fdx__conn_flush(c);
		if (c->dead && c->pending == 0) {
			*cp = c->next;
			/* No subpartition may keep pointing at it (destroy reads it). */
			for (struct fdx_partition *p = dp->parts; p; p = p->next)
				for (uint32_t i = 0; i < p->n; i++)
					if (p->subs[i].conn == c) {
						p->subs[i].conn = NULL;
						fdx__sub_link_gone(&p->subs[i]);
					}
			fdx__conn_free(c);
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
	fdx__dp_post_accept(dp, dp->ufd, &dp->op_acc_unix);
	fdx__dp_post_accept(dp, dp->tfd, &dp->op_acc_tcp);
	while (!atomic_load(&dp->stop)) {
		unsigned head, n = 0;
		uint64_t now = fdx__now_ns();
		int did;

		/* seq_cst: a kick after this is seen below or by K2 (no lost wake-up). */
		atomic_exchange_explicit(&dp->work, 0, memory_order_seq_cst);
		io_uring_for_each_cqe(&dp->ring, head, cqe)
		{
			fdx__dp_handle_cqe(dp, cqe);
			n++;
		}
		io_uring_cq_advance(&dp->ring, n);
		did = fdx__dp_round_work(dp, now);
		if (did || n) {
			/* One enter: submit what this round queued, reap what completed. */
			io_uring_submit_and_get_events(&dp->ring);
			continue;
		}
		/* Nothing to do: sleep until a completion, a kick or the next tick. */
		pthread_mutex_unlock(&dp->lock);
		atomic_store_explicit(&dp->sleeping, 1, memory_order_relaxed);
		/* K2: the flag, then the work; pairs with K1 in fdx__dp_kick(). */
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

/* ---- setup --------------------------------------------------------------- */

/* What every data plane starts with: no sockets yet, its lock and queues ready. */
static const struct fdx__port_ops port_ops;

void fdx__dp_init(struct fdx__dp *dp, struct fdx_exchange *ex)
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
	fdx__dp_init(dp, ex);
	dp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (dp->efd < 0) {
		err = -errno;
		goto fail;
	}
	err = fdx__dp_listen_unix(dp, prm->unix_path);
	if (err < 0) {
		FDX_LOG_ERR(dp->log, "data plane: cannot serve unix:%s: %s", prm->unix_path,
			    fdx_strerror(err));
		goto fail;
	}
	err = fdx__dp_listen_tcp(dp, prm->tcp_host);
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

uint32_t fdx__dp_users(struct fdx__dp *dp, uint32_t *parts, uint32_t *gates)
{
	*parts = *gates = 0;
	pthread_mutex_lock(&dp->lock);
	for (struct fdx_partition *p = dp->parts; p; p = p->next)
		if (!atomic_load(&p->closing))
			(*parts)++; /* a destroyed one, draining, goes with the data plane */
	for (struct fdx_gate *g = dp->gates; g; g = g->next)
		(*gates)++;
	pthread_mutex_unlock(&dp->lock);
	return *parts + *gates;
}

void fdx__dp_destroy(struct fdx__dp *dp)
{
	if (!dp)
		return;
	/*
	 * Destroyed partitions whose consumers still hold buffers: we hang up
	 * on those consumers, their channels end now (the CLOSE frames below).
	 */
	pthread_mutex_lock(&dp->lock);
	for (struct fdx_partition *p = dp->parts; p; p = p->next)
		for (uint32_t i = 0; i < p->n; i++)
			if (p->subs[i].draining)
				end_sub_locked(dp, &p->subs[i]);
	pthread_mutex_unlock(&dp->lock);
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
			fdx__dp_kick(dp);
			nanosleep(&ms, NULL);
		}
		atomic_store(&dp->stop, 1);
		atomic_store(&dp->sleeping, 1);
		fdx__dp_kick(dp);
		pthread_join(dp->thread, NULL);
	}
	while (dp->conns) {
		struct fdx__conn *c = dp->conns;

		dp->conns = c->next;
		fdx__conn_free(c);
	}
	/* Then they go, and what they had in flight goes back to the nbp. */
	while (dp->parts) {
		struct fdx_partition *p = dp->parts;

		dp->parts = p->next;
		fdx__part_release(p);
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
		fdx__unix_path_unlink(dp->unix_path);
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

/* ---- partitions and gates come and go ------------------------------------ */

static int dp_add_partition(struct fdx__dp *dp, struct fdx_partition *p)
{
	pthread_mutex_lock(&dp->lock);
	p->next = dp->parts;
	dp->parts = p;
	pthread_mutex_unlock(&dp->lock);
	fdx__dp_kick(dp); /* its buffer timeout may be the shortest */
	return 0;
}

/* With dp->lock held: the channel of s ends (its partition is being destroyed). */
static void end_sub_locked(struct fdx__dp *dp, struct fdx__sub *s)
{
	s->draining = 0;
	if (!atomic_load(&s->connected))
		return;
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

/* With dp->lock held: p's subpartitions leave the ready queue. */
static void unready_partition_locked(struct fdx__dp *dp, struct fdx_partition *p)
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

/* With dp->lock held: p leaves the list; what the connections still hold of p is p's no more. */
static void forget_partition_locked(struct fdx__dp *dp, struct fdx_partition *p)
{
	for (struct fdx_partition **pp = &dp->parts; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	unready_partition_locked(dp, p); /* once more: no hook of p runs any more */
	for (struct fdx__conn *c = dp->conns; c; c = c->next)
		for (int k = 0; k < 2; k++)
			for (uint32_t i = 0; i < c->b[k].np; i++)
				if (c->b[k].parts[i].p == p)
					c->b[k].parts[i].p = NULL;
}

/*
 * fdx_partition_destroy(): the channels with nothing in flight end now; the
 * others stay open until their consumers hand back what they hold (or
 * fail), and p with them: 1 if p is kept (see runtime/port.h).
 */
static int dp_remove_partition(struct fdx__dp *dp, struct fdx_partition *p)
{
	int keep = 0;

	pthread_mutex_lock(&dp->lock);
	for (uint32_t i = 0; i < p->n; i++) {
		struct fdx__sub *s = &p->subs[i];

		if (!atomic_load(&s->connected))
			continue;
		if (fdx__sub_drained(s)) {
			end_sub_locked(dp, s);
		} else {
			s->draining = 1;
			keep = 1;
		}
	}
	/* p's subpartitions leave the ready queue (we are its consumer while the loop waits). */
	unready_partition_locked(dp, p);
	if (!keep)
		forget_partition_locked(dp, p);
	pthread_mutex_unlock(&dp->lock);
	fdx__dp_kick(dp); /* the CLOSE frames go now */
	return keep;
}

/*
 * With dp->lock held, each round: the channels of destroyed partitions end
 * as they drain; a partition abandoned by fdx_partition_destroy() whose
 * channels all ended is freed. 1 if anything ended.
 */
static int drain_partitions_locked(struct fdx__dp *dp)
{
	int did = 0;

	for (struct fdx_partition **pp = &dp->parts; *pp;) {
		struct fdx_partition *p = *pp;
		int draining = 0;

		if (!atomic_load_explicit(&p->closing, memory_order_acquire)) {
			pp = &p->next;
			continue;
		}
		for (uint32_t i = 0; i < p->n; i++) {
			struct fdx__sub *s = &p->subs[i];

			if (s->draining && fdx__sub_drained(s)) {
				end_sub_locked(dp, s);
				did = 1;
			}
			draining |= s->draining;
		}
		if (draining || !atomic_load_explicit(&p->abandoned, memory_order_acquire)) {
			pp = &p->next;
			continue;
		}
		forget_partition_locked(dp, p); /* *pp is p->next now */
		fdx__part_release(p);
		did = 1;
	}
	return did;
}

void fdx__dp_visit(struct fdx__dp *dp, void (*on_part)(void *ud, struct fdx_partition *p),
		   void (*on_gate)(void *ud, struct fdx_gate *g), void *ud)
{
	pthread_mutex_lock(&dp->lock);
	for (struct fdx_partition *p = dp->parts; p; p = p->next)
		if (!atomic_load(&p->closing)) /* a destroyed one's pool may be gone */
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
	if (fdx__dp_gate_find(dp, g->id)) {
		err = -EEXIST;
	} else {
		err = fdx__exchange_add_gate_hooked(dp->ex, g->id, g->n, g->exclusive,
						    &fdx__dp_gate_hooks, g);
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
			fdx__conn_kill(c, FDX_EPEERGONE, "its gate was destroyed");
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
				/* A partition being destroyed empties its queues itself. */
				if (!atomic_load(&p->closing))
					fdx__sub_discard(&p->subs[i]);
				p->subs[i].lgate = NULL;
			}
	pthread_mutex_unlock(&dp->lock);
}

/* ---- connecting a subpartition ------------------------------------------- */

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
	if (local && (link == FDX_LINK_AUTO || link == FDX_LINK_LOCAL))
		return fdx__local_connect(dp, p, s, gate, gate_channel);
	err = fdx_exchange_open_channel(p->ex, addr, p->id, sub, gate, gate_channel, timeout_ms,
					&chan, &initial);
	if (err < 0)
		return err;
	err = fdx__exchange_peer_data(p->ex, addr, chan, &pd);
	if (err < 0)
		goto fail_close;
	chosen = link == FDX_LINK_AUTO ? pd.link : link;
	if (chosen == FDX_LINK_SHM && pd.link != FDX_LINK_SHM) {
		FDX_LOG_ERR(p->log, "partition %s: shm to TaskManager %s at %s: not on this host",
			    p->id, pd.remote_tm, addr);
		err = -EOPNOTSUPP;
		goto fail_close;
	}
	err = fdx__dp_get_conn(dp, addr, chosen, &pd, p->region, &c); /* returns with dp->lock */
	if (!err) {
		s->chan = chan;
		s->conn = c;
		s->gate = gate;
		s->gate_channel = gate_channel;
		fdx__sub_prepare(s, chosen == FDX_LINK_SHM ? &fdx__shm_link : &fdx__tcp_link);
		/* Its credit so far comes through the hook, into the ledger. */
		err = fdx__exchange_hook_channel(p->ex, chan, &fdx__dp_chan_hooks, s, &avail);
	}
	if (!err)
		fdx__sub_attach(s, chosen == FDX_LINK_SHM ? &fdx__shm_link : &fdx__tcp_link, 0);
	else
		s->conn = NULL;
	pthread_mutex_unlock(&dp->lock);
	if (err < 0)
		goto fail_close;
	fdx__dp_ready(dp, s); /* what was emitted before may go now */
	fdx__dp_kick(dp);
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

static int port_partition_detach(struct fdx__port *pt, struct fdx_partition *p)
{
	return dp_remove_partition(pt->ctx, p);
}

static void port_ready(struct fdx__port *pt, struct fdx__sub *s)
{
	fdx__dp_ready(pt->ctx, s);
}

static void port_kick(struct fdx__port *pt)
{
	fdx__dp_kick(pt->ctx);
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

static int port_local_credit(struct fdx__port *pt, struct fdx_partition *p, uint64_t serial,
			     struct fdx__sub *s, uint32_t added, const uint64_t *offs, uint32_t n)
{
	return fdx__local_credit_push(pt->ctx, p, serial, s, added, offs, n);
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
