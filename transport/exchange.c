/* SPDX-License-Identifier: MIT */
/*
 * The exchange's control plane on gRPC C core: its lifecycle (create,
 * destroy, the server started and stopped), the completion-queue thread and
 * the events it passes to the owner. The consumer side is in
 * consumer_session.c, the producer side in producer_peer.c, the Unix socket
 * in unix_listener.c, the frames in control_codec.c.
 *
 * Threads and ownership:
 * - The completion-queue thread (cq_main) reacts to every completion, with
 *   ex->lock held (once per control message, never per credit), and frees a
 *   session or a peer once none of its operations is outstanding.
 * - The owner thread calls the public functions, which take ex->lock too:
 *   open streams and channels, queue credits. Events travel the other way,
 *   from the cq thread to the owner, through a lock-free queue and an
 *   eventfd: fdx_exchange_poll() takes no lock.
 * - For a Unix socket, an accept thread (unix_listener.c) accepts
 *   connections, checks SO_PEERCRED against the allowed uids, and only then
 *   hands the socket to gRPC.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include <fdx/error.h>
#include <fdx/exchange.h>
#include <fdx/region.h>

#include "../runtime/abi.h"
#include "../runtime/clock.h"
#include "../runtime/idmap.h"
#include "../runtime/opts.h"
#include "../runtime/log.h"
#include "../runtime/mpsc_queue.h"
#include "exchange_private.h"

#define DESTROY_BUDGET_MS 900

/* An event on its way to the owner, with its offsets. */
struct fdx__evnode {
	struct fdx__mpsc_node link;
	struct fdx__evnode *retired_next;
	struct fdx_exchange_event ev;
	uint64_t offsets[];
};

/* ---- events to the owner ------------------------------------------------- */

/* With ex->lock held: queue an event (offsets copied) for fdx_exchange_poll(). */
void fdx__exchange_ev_push_locked(struct fdx_exchange *ex, const struct fdx_exchange_event *ev,
				  const uint64_t *offsets, uint32_t n)
{
	struct fdx__evnode *e = malloc(sizeof(*e) + (size_t)n * sizeof(uint64_t));

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
void fdx__exchange_events_flush_locked(struct fdx_exchange *ex)
{
	uint64_t one = 1;

	if (!ex->events_pushed)
		return;
	ex->events_pushed = 0;
	if (write(ex->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		FDX_LOG_ERR(&ex->log, "exchange %s: eventfd: %s", ex->tm_id, fdx_strerror(-errno));
}

void fdx__exchange_ev_channel_failed_locked(struct fdx_exchange *ex, uint32_t chan, uint32_t gate,
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
	fdx__exchange_ev_push_locked(ex, &ev, NULL, 0);
}

FDX_API int fdx_exchange_poll(struct fdx_exchange *ex, struct fdx_exchange_event *evs, uint32_t max)
{
	struct fdx__mpsc_node *n;
	uint32_t got = 0;

	if (!ex || !evs)
		return -EINVAL;
	/* What the last poll returned is no longer referenced. */
	while (ex->retired) {
		struct fdx__evnode *e = ex->retired;

		ex->retired = e->retired_next;
		free(e);
	}
	while (got < max && (n = fdx__mpsc_pop_wait(&ex->events))) {
		struct fdx__evnode *e =
			(struct fdx__evnode *)((char *)n - offsetof(struct fdx__evnode, link));

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
	int ours = ok && grpc_slice_str_cmp(ex->details.method, FDX__CTL_METHOD) == 0;

	grpc_call_details_destroy(&ex->details);
	grpc_metadata_array_destroy(&ex->request_md);
	if (!ok)
		return; /* the server is shutting down */
	if (!ours) {
		grpc_call_cancel_with_status(call, GRPC_STATUS_UNIMPLEMENTED, "unknown method",
					     NULL);
		grpc_call_unref(call);
	} else {
		fdx__session_start(ex, call);
	}
	request_next_call(ex);
}

/* One completion of the cq thread: its handler runs with ex->lock held. */
void fdx__exchange_cq_complete(struct fdx_exchange *ex, struct fdx__ctl_tag *t, int success)
{
	struct fdx__peer *dead = NULL;
	int stats;

	pthread_mutex_lock(&ex->lock);
	switch (t->kind) {
	case FDX__CTL_TAG_REQUEST_CALL:
		on_request_call(ex, success);
		break;
	case FDX__CTL_TAG_SERVER_SHUTDOWN:
		ex->server_down = 1;
		pthread_cond_broadcast(&ex->cond);
		break;
	case FDX__CTL_TAG_SESSION_RECV:
	case FDX__CTL_TAG_SESSION_SEND:
	case FDX__CTL_TAG_SESSION_CLOSE:
	case FDX__CTL_TAG_SESSION_STATUS:
		fdx__session_event(t->obj, t->kind, success);
		break;
	case FDX__CTL_TAG_PEER_RECV:
	case FDX__CTL_TAG_PEER_SEND:
	case FDX__CTL_TAG_PEER_STATUS:
		dead = fdx__peer_event(t->obj, t->kind, success);
		break;
	}
	fdx__exchange_events_flush_locked(ex);
	stats = ex->stats_wanted;
	ex->stats_wanted = 0;
	pthread_mutex_unlock(&ex->lock);
	if (dead)
		fdx__peer_free(dead);
	if (stats)
		fdx__session_stats_answer(ex);
}

/*
 * Memory streams held and gRPC freed (an oversized message, a flood of
 * streams: as much as the resource quota let them take) goes back to the
 * system: malloc keeps freed memory otherwise, and a TaskManager would stay
 * as large as an attack made it. The cq thread checks each second; only when more than
 * TRIM_FREE_MIN bytes lie free.
 */
#define TRIM_FREE_MIN (4u << 20)

static void trim_freed_memory(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
	struct mallinfo2 mi = mallinfo2();

	if (mi.fordblks > TRIM_FREE_MIN)
		malloc_trim(0);
#endif
}

static void *cq_main(void *arg)
{
	struct fdx_exchange *ex = arg;

	for (;;) {
		/* Woken at least each second: streams that never said hello are ended. */
		grpc_event ev = grpc_completion_queue_next(
			ex->cq,
			gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
				     gpr_time_from_millis(1000, GPR_TIMESPAN)),
			NULL);

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		fdx__sessions_end_silent(ex);
		trim_freed_memory();
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		fdx__exchange_cq_complete(ex, ev.tag, ev.success);
	}
	return NULL;
}

/*
 * The channel arguments of the exchange's gRPC server (server 1) or client
 * channels: a resource quota bounds what the control streams hold, the
 * largest message is the largest legal frame, and idle or silent
 * connections are closed. Fills a (room for 10); how many.
 */
static void arg_int(grpc_arg *a, size_t *k, const char *key, uint32_t value)
{
	a[*k].type = GRPC_ARG_INTEGER;
	a[*k].key = (char *)key;
	a[(*k)++].value.integer = (int)value;
}

size_t fdx__exchange_grpc_args(struct fdx_exchange *ex, grpc_arg *a, int server)
{
	size_t k = 0;

	if (ex->quota) {
		a[k].type = GRPC_ARG_POINTER;
		a[k].key = (char *)GRPC_ARG_RESOURCE_QUOTA;
		a[k].value.pointer.p = ex->quota;
		a[k++].value.pointer.vtable = grpc_resource_quota_arg_vtable();
	}
	arg_int(a, &k, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, FDX_CTL_FRAME_MAX);
	if (server) {
		/* A peer that stopped answering is found by our pings. */
		arg_int(a, &k, GRPC_ARG_KEEPALIVE_TIME_MS, ex->idle_ms);
		arg_int(a, &k, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ex->idle_ms);
		arg_int(a, &k, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
		/* A connection that never finishes its HTTP/2 preface goes as a silent stream does. */
		arg_int(a, &k, GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, ex->hello_ms);
		arg_int(a, &k, GRPC_ARG_MAX_CONCURRENT_STREAMS, ex->streams_max);
		arg_int(a, &k, GRPC_ARG_MAX_CONNECTION_IDLE_MS, ex->idle_ms);
	}
	return k;
}

/* ---- lifecycle -------------------------------------------------------------- */

static int parse_listen(struct fdx_exchange *ex, const char *listen, char **unix_path)
{
	static _Atomic unsigned serial;
	char dir[200], buf[256];
	int err;

	*unix_path = NULL;
	if (!listen) {
		err = fdx__unix_sock_dir(ex, dir, sizeof(dir));
		if (err < 0)
			return err;
		fdx__unix_sweep_stale(ex, dir);
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
	{
		grpc_arg a[10];
		grpc_channel_args ca = {fdx__exchange_grpc_args(ex, a, 1), a};

		ex->server = grpc_server_create(&ca, NULL);
	}
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
		err = fdx__unix_listen(ex, path);
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
	fdx__deadline_in(&deadline, DESTROY_BUDGET_MS);
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
		err = fdx__unix_sock_dir(ex, dir, sizeof(dir));
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
static int session_owes_frames(const struct fdx__session *s)
{
	return !s->finishing && !s->cancelled && (s->q.busy || s->q.head || s->dirty_head);
}

static int session_status_pending(const struct fdx__session *s)
{
	return s->greeted && !s->cancelled && !s->status_done;
}

/* Wait (1 ms naps, at most ms) until no session is still busy as pending says. */
static void sessions_wait(struct fdx_exchange *ex, int (*pending)(const struct fdx__session *),
			  int ms)
{
	for (int i = 0; i < ms; i++) {
		struct timespec nap = {0, 1000000};
		int busy = 0;

		pthread_mutex_lock(&ex->lock);
		for (struct fdx__session *s = ex->sessions; s && !busy; s = s->next)
			busy = pending(s);
		pthread_mutex_unlock(&ex->lock);
		if (!busy)
			return;
		nanosleep(&nap, NULL);
	}
}

FDX_API int fdx_exchange_destroy(struct fdx_exchange *ex)
{
	uint32_t parts = 0, gates = 0;

	if (!ex)
		return 0;
	/* Its partitions and gates would point at freed state: they go first. */
	if (ex->dp && fdx__dp_users(ex->dp, &parts, &gates)) {
		FDX_LOG_ERR(&ex->log,
			    "exchange %s: not destroyed: %u partition%s and %u gate%s still use it "
			    "(destroy them first)",
			    ex->tm_id, parts, parts == 1 ? "" : "s", gates, gates == 1 ? "" : "s");
		return -EBUSY;
	}
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
	for (struct fdx__session *s = ex->sessions; s; s = s->next)
		if (!s->finishing && !s->cancelled && s->greeted)
			fdx__session_finish(s, GRPC_STATUS_UNAVAILABLE,
					    FDX__EXCHANGE_SHUTTING_DOWN);
	pthread_mutex_unlock(&ex->lock);
	sessions_wait(ex, session_status_pending, 100);
	pthread_mutex_lock(&ex->lock);
	ex->stopping = 1;
	for (struct fdx__peer *p = ex->peers; p; p = p->next)
		grpc_call_cancel(p->call, NULL);
	pthread_mutex_unlock(&ex->lock);
	if (ex->accepting) {
		shutdown(ex->listen_fd, SHUT_RDWR);
		pthread_join(ex->accept_thread, NULL);
	}
	if (ex->listen_fd >= 0)
		close(ex->listen_fd);
	if (ex->sock_path)
		fdx__unix_path_unlink(ex->sock_path);
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
	if (ex->quota)
		grpc_resource_quota_unref(ex->quota);
	if (ex->grpc_up)
		grpc_shutdown();
	for (struct fdx__mpsc_node *n; (n = fdx__mpsc_pop(&ex->events));)
		free((char *)n - offsetof(struct fdx__evnode, link));
	while (ex->retired) {
		struct fdx__evnode *e = ex->retired;

		ex->retired = e->retired_next;
		free(e);
	}
	while (ex->gates) {
		struct fdx__ctl_gate *g = ex->gates;

		ex->gates = g->next;
		free(g->chans);
		free(g);
	}
	for (uint32_t i = 0; i < ex->cchans.cap; i++) {
		struct fdx__out_chan *c = ex->cchans.e[i].p;

		if (c) {
			fdx__ledger_fini(&c->own);
			free(c);
		}
	}
	fdx__idmap_free(&ex->cchans);
	free(ex->credit_scratch);
	close(ex->efd);
	pthread_cond_destroy(&ex->cond);
	pthread_mutex_destroy(&ex->lock);
	free(ex->sock_path);
	free(ex->address);
	free(ex->tm_id);
	free(ex);
	return 0;
}

/*
 * An exchange with its options, lock and event queue, serving nothing yet:
 * 0 with *out set, or -errno (nothing left behind).
 */
int fdx__exchange_new(const struct fdx_exchange_opts *o, struct fdx_exchange **out)
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
	ex->streams_max = o->ctl_streams_max ? o->ctl_streams_max : FDX_CTL_STREAMS_DEFAULT;
	ex->hello_ms = o->hello_timeout_ms ? o->hello_timeout_ms : FDX_CTL_HELLO_TIMEOUT_MS_DEFAULT;
	ex->idle_ms = o->idle_timeout_ms ? o->idle_timeout_ms : FDX_CTL_IDLE_TIMEOUT_MS_DEFAULT;
	ex->memory_mib = o->ctl_memory_mib ? o->ctl_memory_mib : FDX_CTL_MEMORY_MIB_DEFAULT;
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
	ex->t_request = (struct fdx__ctl_tag){FDX__CTL_TAG_REQUEST_CALL, ex};
	ex->t_shutdown = (struct fdx__ctl_tag){FDX__CTL_TAG_SERVER_SHUTDOWN, ex};
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
	struct fdx_exchange_opts oo = {0};
	struct fdx_exchange *ex = NULL;
	int err;

	if (out)
		*out = NULL;
	if (!out || fdx__opts_in(&oo, sizeof(oo), o, FDX_EXCHANGE_OPTS_SIZE_V1) < 0)
		return -EINVAL;
	o = &oo;
	if (o->n_allow_uids > FDX_EXCHANGE_MAX_UIDS || (o->n_allow_uids && !o->allow_uids))
		return -EINVAL;
	if (o->ctl_memory_mib > INT32_MAX / 2048 || o->ctl_streams_max > INT32_MAX ||
	    o->hello_timeout_ms > INT32_MAX || o->idle_timeout_ms > INT32_MAX)
		return -EINVAL;
	err = fdx__exchange_new(o, &ex);
	if (err < 0)
		return err;
	grpc_init();
	ex->grpc_up = 1;
	ex->quota = grpc_resource_quota_create("fdx-control");
	grpc_resource_quota_resize(ex->quota, (size_t)ex->memory_mib << 20);
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
		err = -pthread_create(&ex->accept_thread, NULL, fdx__unix_accept_main, ex);
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
	for (struct fdx__session *ss = ex->sessions; ss; ss = ss->next)
		s.channels_in += ss->ids.n;
	s.channels_out = ex->open_out;
	for (uint32_t i = 0; i < ex->cchans.cap; i++) {
		struct fdx__out_chan *c = ex->cchans.e[i].p;

		s.channels_closing += c && c->state == FDX__OUT_CLOSED;
	}
	pthread_mutex_unlock(&ex->lock);
	fdx__stats_copy(st, &s, sizeof(s));
	return 0;
}
