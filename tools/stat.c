/* SPDX-License-Identifier: MIT */
/*
 * fdx-stat: where is the backpressure?
 *
 * Asks running TaskManagers for their statistics over their control service
 * (the gRPC stream fdx.DataExchange/ExchangeData: a Hello, then StatsRequest
 * frames) and prints, per partition, subpartition, gate and input channel:
 * credit, backlog, buffers in flight, pool usage and backpressured time,
 * under Flink's metric names. Rates (per second) are the difference of two
 * answers over the time between them, as the answering host measured it.
 *
 *   fdx-stat                      every TaskManager in the default directory
 *   fdx-stat unix:/path/tm.sock   one (or several) by address; HOST:PORT too
 *   --json                        one snapshot as JSON (two samples an interval apart)
 *   --interval MS                 between samples (default 1000)
 *   --count N                     refresh N times, then exit (default: until ^C)
 *   --dir DIR                     where to look instead of the default directory
 *
 * The default directory is the exchange's: $XDG_RUNTIME_DIR/fdx, else
 * /tmp/fdx-UID; its control sockets are named tm-*.sock. A socket nobody
 * serves any more is skipped.
 *
 * Exit: 0; 1 if no TaskManager answered; 2 on a bad command line.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include <fdx/exchange.h> /* FDX_PROTOCOL_VERSION only: no link with fdx */

#include "exchange.pb-c.h"

#define METHOD "/fdx.DataExchange/ExchangeData"
#define MAX_TMS 64
#define TIMEOUT_MS 3000

/* One TaskManager being asked. */
struct target {
	char addr[300];
	grpc_channel *channel;
	grpc_call *call;
	grpc_completion_queue *cq;
	grpc_metadata_array md;
	Fdx__ControlFrame *prev_f, *cur_f; /* the last two answers */
	const Fdx__StatsReply *prev, *cur; /* ... their StatsReply */
	char error[256];
	int up;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static gpr_timespec deadline_ms(int ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Run one batch and wait for it: 0, or -1 with t->error set. */
static int batch(struct target *t, const grpc_op *ops, size_t n, const char *what)
{
	grpc_call_error ce = grpc_call_start_batch(t->call, ops, n, (void *)t, NULL);
	grpc_event ev;

	if (ce != GRPC_CALL_OK) {
		snprintf(t->error, sizeof(t->error), "%s: gRPC call error %d", what, (int)ce);
		return -1;
	}
	ev = grpc_completion_queue_pluck(t->cq, (void *)t, deadline_ms(TIMEOUT_MS), NULL);
	if (ev.type != GRPC_OP_COMPLETE) {
		snprintf(t->error, sizeof(t->error), "%s: no answer within %d ms", what,
			 TIMEOUT_MS);
		grpc_call_cancel(t->call, NULL);
		/* The batch still completes once cancelled: wait for it, bounded. */
		grpc_completion_queue_pluck(t->cq, (void *)t, deadline_ms(TIMEOUT_MS), NULL);
		return -1;
	}
	if (!ev.success) {
		snprintf(t->error, sizeof(t->error), "%s: the stream ended", what);
		return -1;
	}
	return 0;
}

static grpc_byte_buffer *frame_buffer(const Fdx__ControlFrame *f)
{
	size_t n = fdx__control_frame__get_packed_size(f);
	grpc_slice s = grpc_slice_malloc(n);
	grpc_byte_buffer *bb;

	fdx__control_frame__pack(f, GRPC_SLICE_START_PTR(s));
	bb = grpc_raw_byte_buffer_create(&s, 1);
	grpc_slice_unref(s);
	return bb;
}

/* Send f and receive the next frame: the frame, or NULL with t->error set. */
static Fdx__ControlFrame *exchange_frame(struct target *t, const Fdx__ControlFrame *f, int first,
					 const char *what)
{
	grpc_op ops[4];
	grpc_byte_buffer *out = frame_buffer(f), *in = NULL;
	grpc_byte_buffer_reader rd;
	Fdx__ControlFrame *got = NULL;
	grpc_slice all;
	size_t n = 0;

	memset(ops, 0, sizeof(ops));
	if (first) {
		ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
		n++;
	}
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n].data.send_message.send_message = out;
	n++;
	if (first) {
		/* The server's initial metadata comes with its first message. */
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n].data.recv_initial_metadata.recv_initial_metadata = &t->md;
		n++;
	}
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n].data.recv_message.recv_message = &in;
	n++;
	if (batch(t, ops, n, what) < 0)
		goto out;
	if (!in) {
		snprintf(t->error, sizeof(t->error), "%s: the TaskManager ended the stream", what);
		goto out;
	}
	if (!grpc_byte_buffer_reader_init(&rd, in)) {
		snprintf(t->error, sizeof(t->error), "%s: unreadable answer", what);
		goto out;
	}
	all = grpc_byte_buffer_reader_readall(&rd);
	grpc_byte_buffer_reader_destroy(&rd);
	got = fdx__control_frame__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
	grpc_slice_unref(all);
	if (!got)
		snprintf(t->error, sizeof(t->error), "%s: the answer does not parse", what);
out:
	grpc_byte_buffer_destroy(out);
	if (in)
		grpc_byte_buffer_destroy(in);
	return got;
}

/* Why the stream ended, appended to t->error. */
static void take_status(struct target *t)
{
	grpc_op ops[2];
	grpc_metadata_array trailing;
	grpc_status_code code = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	size_t len;

	grpc_metadata_array_init(&trailing);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].data.recv_status_on_client.trailing_metadata = &trailing;
	ops[0].data.recv_status_on_client.status = &code;
	ops[0].data.recv_status_on_client.status_details = &details;
	if (batch(t, ops, 1, "status") == 0 && code != GRPC_STATUS_OK) {
		len = strlen(t->error);
		snprintf(t->error + len, sizeof(t->error) - len, " (status %d: %.*s)", (int)code,
			 (int)GRPC_SLICE_LENGTH(details),
			 (const char *)GRPC_SLICE_START_PTR(details));
	}
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&trailing);
}

static int tm_open(struct target *t)
{
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT, *got;
	Fdx__Hello h = FDX__HELLO__INIT;
	char id[64];

	t->cq = grpc_completion_queue_create_for_pluck(NULL);
	t->channel = grpc_channel_create(t->addr, creds, NULL);
	grpc_channel_credentials_release(creds);
	grpc_metadata_array_init(&t->md);
	t->call = grpc_channel_create_call(t->channel, NULL, GRPC_PROPAGATE_DEFAULTS, t->cq,
					   grpc_slice_from_static_string(METHOD), NULL,
					   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	snprintf(id, sizeof(id), "fdx-stat-%d", (int)getpid());
	h.protocol_version = FDX_PROTOCOL_VERSION;
	h.taskmanager_id = id;
	h.uid = (uint32_t)geteuid();
	h.pid = (uint32_t)getpid();
	f.frame_case = FDX__CONTROL_FRAME__FRAME_HELLO;
	f.hello = &h;
	got = exchange_frame(t, &f, 1, "hello");
	if (!got) {
		take_status(t);
		return -1;
	}
	if (got->frame_case != FDX__CONTROL_FRAME__FRAME_HELLO_ACK) {
		snprintf(t->error, sizeof(t->error), "hello: answered with frame %d",
			 (int)got->frame_case);
		fdx__control_frame__free_unpacked(got, NULL);
		return -1;
	}
	fdx__control_frame__free_unpacked(got, NULL);
	t->up = 1;
	return 0;
}

/* Ask once: t->cur becomes the new answer, t->prev the one before. */
static int tm_ask(struct target *t)
{
	Fdx__ControlFrame f = FDX__CONTROL_FRAME__INIT, *got;
	Fdx__StatsRequest sr = FDX__STATS_REQUEST__INIT;

	f.frame_case = FDX__CONTROL_FRAME__FRAME_STATS_REQUEST;
	f.stats_request = &sr;
	got = exchange_frame(t, &f, 0, "statistics");
	if (!got) {
		take_status(t);
		t->up = 0;
		return -1;
	}
	if (got->frame_case != FDX__CONTROL_FRAME__FRAME_STATS_REPLY) {
		snprintf(t->error, sizeof(t->error), "statistics: answered with frame %d",
			 (int)got->frame_case);
		fdx__control_frame__free_unpacked(got, NULL);
		t->up = 0;
		return -1;
	}
	if (t->prev_f)
		fdx__control_frame__free_unpacked(t->prev_f, NULL);
	t->prev_f = t->cur_f;
	t->prev = t->cur;
	t->cur_f = got;
	t->cur = got->stats_reply;
	return 0;
}

static void tm_close(struct target *t)
{
	if (t->call) {
		if (t->up) {
			grpc_op op;

			memset(&op, 0, sizeof(op));
			op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
			batch(t, &op, 1, "close");
		}
		grpc_call_cancel(t->call, NULL);
		grpc_call_unref(t->call);
	}
	if (t->channel)
		grpc_channel_destroy(t->channel);
	if (t->cq) {
		grpc_completion_queue_shutdown(t->cq);
		while (grpc_completion_queue_pluck(t->cq, NULL, deadline_ms(TIMEOUT_MS), NULL)
			       .type != GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(t->cq);
	}
	grpc_metadata_array_destroy(&t->md);
	if (t->prev_f)
		fdx__control_frame__free_unpacked(t->prev_f, NULL);
	if (t->cur_f)
		fdx__control_frame__free_unpacked(t->cur_f, NULL);
}

/* ---- figures ------------------------------------------------------------ */

static const char *link_name(Fdx__Link l)
{
	switch (l) {
	case FDX__LINK__LINK_LOCAL:
		return "local";
	case FDX__LINK__LINK_SHM:
		return "shm";
	case FDX__LINK__LINK_TCP:
		return "tcp";
	default:
		return "-";
	}
}

static const Fdx__PartitionStats *prev_part(const Fdx__StatsReply *prev, const char *id)
{
	for (size_t i = 0; prev && i < prev->n_partitions; i++)
		if (strcmp(prev->partitions[i]->id, id) == 0)
			return prev->partitions[i];
	return NULL;
}

static const Fdx__GateStats *prev_gate(const Fdx__StatsReply *prev, uint32_t gate)
{
	for (size_t i = 0; prev && i < prev->n_gates; i++)
		if (prev->gates[i]->gate == gate)
			return prev->gates[i];
	return NULL;
}

/* Per second between the two answers; 0 without an earlier one. */
static double rate(uint64_t now, uint64_t before, int have_before, double secs)
{
	return have_before && secs > 0 && now >= before ? (double)(now - before) / secs : 0.0;
}

struct part_fig {
	double rec_s, bytes_s, bp_ms_s, out_pool;
};

struct gate_fig {
	double rec_s, bytes_s, in_pool, excl_use, float_use;
	uint32_t quota;
};

static double secs_between(const struct target *t)
{
	return t->prev && t->cur->time_ns > t->prev->time_ns
		       ? (double)(t->cur->time_ns - t->prev->time_ns) / 1e9
		       : 0.0;
}

static struct part_fig part_figures(const struct target *t, const Fdx__PartitionStats *p)
{
	const Fdx__PartitionStats *q = prev_part(t->prev, p->id);
	double secs = secs_between(t);
	struct part_fig f;

	f.rec_s = rate(p->records, q ? q->records : 0, q != NULL, secs);
	f.bytes_s = rate(p->bytes, q ? q->bytes : 0, q != NULL, secs);
	f.bp_ms_s = rate(p->backpressured_ns, q ? q->backpressured_ns : 0, q != NULL, secs) / 1e6;
	if (f.bp_ms_s > 1000.0)
		f.bp_ms_s = 1000.0; /* several blocked threads: still at most all the time */
	f.out_pool = p->pool_max ? (double)p->pool_in_use / p->pool_max : 0.0;
	return f;
}

static struct gate_fig gate_figures(const struct target *t, const Fdx__GateStats *g)
{
	const Fdx__GateStats *q = prev_gate(t->prev, g->gate);
	double secs = secs_between(t);
	uint64_t excl_held = 0;
	int floating_usable = 0;
	struct gate_fig f;

	f.rec_s = rate(g->records, q ? q->records : 0, q != NULL, secs);
	f.bytes_s = rate(g->bytes, q ? q->bytes : 0, q != NULL, secs);
	/*
	 * Flink's input pool: every exclusive credit of its channels plus the
	 * floating ones; a channel reading in place (shm, local) counts its
	 * in-place credit instead of its exclusive one and takes no floating
	 * credit: the floating ones count while some channel can take them.
	 */
	f.quota = 0;
	for (size_t i = 0; i < g->n_channels; i++) {
		f.quota += g->channels[i]->inplace ? g->channels[i]->inplace : g->exclusive;
		if (!g->channels[i]->inplace)
			floating_usable = 1;
	}
	if (floating_usable || !g->n_channels)
		f.quota += g->floating;
	f.in_pool = f.quota ? (double)g->held / f.quota : 0.0;
	if (f.in_pool > 1.0)
		f.in_pool = 1.0;
	for (size_t i = 0; i < g->n_channels; i++)
		excl_held +=
			g->channels[i]->held < g->exclusive ? g->channels[i]->held : g->exclusive;
	f.excl_use = g->exclusive && g->n_channels
			     ? (double)excl_held / ((double)g->exclusive * g->n_channels)
			     : 0.0;
	f.float_use = g->floating ? (double)(g->floating - g->floating_free) / g->floating : 0.0;
	return f;
}

static void print_table(const struct target *t)
{
	const Fdx__StatsReply *r = t->cur;

	printf("TaskManager %s (pid %u) at %s\n", r->taskmanager_id, r->pid, t->addr);
	if (!r->n_partitions && !r->n_gates)
		printf("  no partition or gate\n");
	for (size_t i = 0; i < r->n_partitions; i++) {
		const Fdx__PartitionStats *p = r->partitions[i];
		struct part_fig f = part_figures(t, p);

		printf("  partition %s: numRecordsOutPerSecond %.0f  numBytesOutPerSecond %.3g GB  "
		       "outPoolUsage %.0f%% (%u/%u)  backPressuredTimeMsPerSecond %.0f  "
		       "buffersInFlight %u\n",
		       p->id, f.rec_s, f.bytes_s / 1e9, f.out_pool * 100, p->pool_in_use,
		       p->pool_max, f.bp_ms_s, p->in_flight);
		printf("    %-4s %-5s %7s %8s %16s %14s %16s %23s %s\n", "sub", "link", "credit",
		       "backlog", "buffersInFlight", "numBuffersOut", "numRecordsOut",
		       "creditRoundTrip p50/p99", "error");
		for (size_t k = 0; k < p->n_subpartitions; k++) {
			const Fdx__SubpartitionStats *s = p->subpartitions[k];
			char rtt[32] = "-";

			if (s->rtt_count)
				snprintf(rtt, sizeof(rtt), "%.0f/%.0f us",
					 (double)s->rtt_p50_ns / 1e3, (double)s->rtt_p99_ns / 1e3);
			printf("    %-4u %-5s %7u %8u %16u %14llu %16llu %23s %d\n", s->index,
			       link_name(s->link), s->credit, s->backlog, s->in_flight,
			       (unsigned long long)s->buffers, (unsigned long long)s->records, rtt,
			       s->error);
		}
	}
	for (size_t i = 0; i < r->n_gates; i++) {
		const Fdx__GateStats *g = r->gates[i];
		struct gate_fig f = gate_figures(t, g);

		printf("  gate %u: numRecordsInPerSecond %.0f  numBytesInPerSecond %.3g GB  "
		       "inPoolUsage %.0f%% (%u/%u)  inputExclusiveBuffersUsage %.0f%%  "
		       "inputFloatingBuffersUsage %.0f%%  channels open %u\n",
		       g->gate, f.rec_s, f.bytes_s / 1e9, f.in_pool * 100, g->held, f.quota,
		       f.excl_use * 100, f.float_use * 100, g->channels_open);
		printf("    %-4s %-5s %9s %8s %7s %8s %5s %11s %13s %s\n", "ch", "link",
		       "exclusive", "floating", "inplace", "backlog", "held", "unannounced",
		       "numBuffersIn", "error");
		for (size_t k = 0; k < g->n_channels; k++) {
			const Fdx__InputChannelStats *c = g->channels[k];

			printf("    %-4u %-5s %9u %8u %7u %8u %5u %11u %13llu %d\n", c->index,
			       link_name(c->link), c->exclusive, c->floating, c->inplace,
			       c->backlog, c->held, c->unannounced, (unsigned long long)c->buffers,
			       c->error);
		}
	}
}

/* A JSON string: ids come from peers, so everything but plain ASCII is escaped. */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void print_json(struct target *tms, int n)
{
	int first_tm = 1;

	printf("{\"taskmanagers\": [");
	for (int i = 0; i < n; i++) {
		const struct target *t = &tms[i];
		const Fdx__StatsReply *r = t->cur;

		if (!r)
			continue;
		printf("%s\n {\"address\": ", first_tm ? "" : ",");
		first_tm = 0;
		json_str(t->addr);
		printf(", \"taskmanager_id\": ");
		json_str(r->taskmanager_id);
		printf(", \"pid\": %u, \"interval_ms\": %.0f,\n  \"partitions\": [", r->pid,
		       secs_between(t) * 1000);
		for (size_t k = 0; k < r->n_partitions; k++) {
			const Fdx__PartitionStats *p = r->partitions[k];
			struct part_fig f = part_figures(t, p);

			printf("%s\n   {\"id\": ", k ? "," : "");
			json_str(p->id);
			printf(", \"numRecordsOut\": %llu, \"numRecordsOutPerSecond\": %.1f, "
			       "\"numBytesOut\": %llu, \"numBytesOutPerSecond\": %.1f, "
			       "\"numBuffersOut\": %llu, \"outPoolUsage\": %.4f, "
			       "\"outPoolUsed\": %u, \"outPoolMax\": %u, "
			       "\"backPressuredTimeMsPerSecond\": %.1f, "
			       "\"backPressuredTimeMsTotal\": %.1f, \"buffersInFlight\": %u, "
			       "\"bytesCopied\": %llu, \"subpartitions\": [",
			       (unsigned long long)p->records, f.rec_s,
			       (unsigned long long)p->bytes, f.bytes_s,
			       (unsigned long long)p->buffers, f.out_pool, p->pool_in_use,
			       p->pool_max, f.bp_ms_s, (double)p->backpressured_ns / 1e6,
			       p->in_flight, (unsigned long long)p->bytes_copied);
			for (size_t j = 0; j < p->n_subpartitions; j++) {
				const Fdx__SubpartitionStats *s = p->subpartitions[j];

				printf("%s\n    {\"index\": %u, \"link\": \"%s\", \"credit\": %u, "
				       "\"backlog\": %u, \"buffersInFlight\": %u, "
				       "\"numBuffersOut\": %llu, \"numBytesOut\": %llu, "
				       "\"numRecordsOut\": %llu, \"creditRoundTrips\": %llu, "
				       "\"creditRoundTripP50Ns\": %llu, "
				       "\"creditRoundTripP99Ns\": %llu, "
				       "\"creditRoundTripMaxNs\": %llu, "
				       "\"creditWireP50Ns\": %llu, \"creditWireP99Ns\": %llu, "
				       "\"resumeP50Ns\": %llu, \"resumeP99Ns\": %llu, \"error\": %d}",
				       j ? "," : "", s->index, link_name(s->link), s->credit,
				       s->backlog, s->in_flight, (unsigned long long)s->buffers,
				       (unsigned long long)s->bytes, (unsigned long long)s->records,
				       (unsigned long long)s->rtt_count,
				       (unsigned long long)s->rtt_p50_ns,
				       (unsigned long long)s->rtt_p99_ns,
				       (unsigned long long)s->rtt_max_ns,
				       (unsigned long long)s->credit_wire_p50_ns,
				       (unsigned long long)s->credit_wire_p99_ns,
				       (unsigned long long)s->resume_p50_ns,
				       (unsigned long long)s->resume_p99_ns, s->error);
			}
			printf("]}");
		}
		printf("],\n  \"gates\": [");
		for (size_t k = 0; k < r->n_gates; k++) {
			const Fdx__GateStats *g = r->gates[k];
			struct gate_fig f = gate_figures(t, g);

			printf("%s\n   {\"gate\": %u, \"numRecordsIn\": %llu, "
			       "\"numRecordsInPerSecond\": %.1f, \"numBytesIn\": %llu, "
			       "\"numBytesInPerSecond\": %.1f, \"numBuffersIn\": %llu, "
			       "\"inPoolUsage\": %.4f, \"inPoolUsed\": %u, \"inPoolMax\": %u, "
			       "\"inputExclusiveBuffersUsage\": %.4f, "
			       "\"inputFloatingBuffersUsage\": %.4f, \"channelsOpen\": %u, "
			       "\"bytesCopied\": %llu, \"channels\": [",
			       k ? "," : "", g->gate, (unsigned long long)g->records, f.rec_s,
			       (unsigned long long)g->bytes, f.bytes_s,
			       (unsigned long long)g->buffers, f.in_pool, g->held, f.quota,
			       f.excl_use, f.float_use, g->channels_open,
			       (unsigned long long)g->bytes_copied);
			for (size_t j = 0; j < g->n_channels; j++) {
				const Fdx__InputChannelStats *c = g->channels[j];

				printf("%s\n    {\"index\": %u, \"link\": \"%s\", \"exclusive\": %u, "
				       "\"inplace\": %u, \"floating\": %u, \"backlog\": %u, \"held\": %u, "
				       "\"unannounced\": %u, \"numBuffersIn\": %llu, "
				       "\"numBytesIn\": %llu, \"holdP50Ns\": %llu, "
				       "\"holdP99Ns\": %llu, \"creditWaitP50Ns\": %llu, "
				       "\"creditWaitP99Ns\": %llu, \"oneWayP50Ns\": %llu, "
				       "\"oneWayP99Ns\": %llu, \"error\": %d}",
				       j ? "," : "", c->index, link_name(c->link), c->exclusive,
				       c->inplace, c->floating, c->backlog, c->held, c->unannounced,
				       (unsigned long long)c->buffers, (unsigned long long)c->bytes,
				       (unsigned long long)c->hold_p50_ns,
				       (unsigned long long)c->hold_p99_ns,
				       (unsigned long long)c->credit_wait_p50_ns,
				       (unsigned long long)c->credit_wait_p99_ns,
				       (unsigned long long)c->one_way_p50_ns,
				       (unsigned long long)c->one_way_p99_ns, c->error);
			}
			printf("]}");
		}
		printf("]}");
	}
	printf("\n]}\n");
}

/* ---- finding TaskManagers ----------------------------------------------- */

static void default_dir(char *dir, size_t n)
{
	const char *run = getenv("XDG_RUNTIME_DIR");

	if (run && run[0] == '/')
		snprintf(dir, n, "%s/fdx", run);
	else
		snprintf(dir, n, "/tmp/fdx-%u", (unsigned)geteuid());
}

/* Whether something accepts connections on the Unix socket at path. */
static int alive(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, ok;

	if (strlen(path) >= sizeof(sa.sun_path))
		return 0;
	memcpy(sa.sun_path, path, strlen(path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

/*
 * The live control sockets in dir (tm-*.sock), as addresses: how many, or
 * -errno. Files nobody listens on any more (a process killed before its
 * exchange was destroyed) are skipped and counted in *dead.
 */
static int discover(const char *dir, struct target *tms, int max, int *dead)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	*dead = 0;
	if (!d)
		return -errno;
	while ((e = readdir(d)) != NULL && n < max) {
		size_t len = strlen(e->d_name);
		char path[sizeof(tms->addr) - 5]; /* fits in addr after "unix:" */

		if (strncmp(e->d_name, "tm-", 3) != 0 || len < 8 ||
		    strcmp(e->d_name + len - 5, ".sock") != 0)
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
			continue;
		if (!alive(path)) {
			(*dead)++;
			continue;
		}
		snprintf(tms[n].addr, sizeof(tms[n].addr), "unix:%s", path);
		n++;
	}
	closedir(d);
	return n;
}

static void usage(FILE *f)
{
	fputs("usage: fdx-stat [--json] [--interval MS] [--count N] [--dir DIR] [ADDRESS...]\n"
	      "  ADDRESS   a TaskManager's control service: unix:PATH or HOST:PORT\n"
	      "            (default: every tm-*.sock in $XDG_RUNTIME_DIR/fdx or /tmp/fdx-UID)\n"
	      "  --json    print one snapshot as JSON (rates over one interval) and exit\n"
	      "  --interval MS  time between samples, 100..60000 (default 1000)\n"
	      "  --count N      refresh N times, then exit (default: until interrupted)\n",
	      f);
}

static long parse_long(const char *opt, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "fdx-stat: %s wants a whole number from %ld to %ld, not '%s'\n",
			opt, min, max, s);
		usage(stderr);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"json", no_argument, NULL, 'j'},	 {"interval", required_argument, NULL, 'i'},
		{"count", required_argument, NULL, 'c'}, {"dir", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},	 {NULL, 0, NULL, 0},
	};
	static struct target tms[MAX_TMS];
	char dir[256] = "";
	long interval = 1000, count = -1;
	int json = 0, n = 0, up = 0, dead = 0, opt, tty = isatty(STDOUT_FILENO);

	while ((opt = getopt_long(argc, argv, "ji:c:d:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = 1;
			break;
		case 'i':
			interval = parse_long("--interval", optarg, 100, 60000);
			break;
		case 'c':
			count = parse_long("--count", optarg, 1, 1000000);
			break;
		case 'd':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	for (int i = optind; i < argc; i++) {
		if (n == MAX_TMS) {
			fprintf(stderr, "fdx-stat: at most %d addresses\n", MAX_TMS);
			return 2;
		}
		if (strlen(argv[i]) >= sizeof(tms[n].addr) || !argv[i][0]) {
			fprintf(stderr, "fdx-stat: address '%s' is empty or too long\n", argv[i]);
			return 2;
		}
		snprintf(tms[n++].addr, sizeof(tms[0].addr), "%s", argv[i]);
	}
	if (n == 0) {
		if (!dir[0])
			default_dir(dir, sizeof(dir));
		n = discover(dir, tms, MAX_TMS, &dead);
		/* Sockets left by TaskManagers that died (their next exchange sweeps them). */
		if (dead)
			fprintf(stderr,
				"fdx-stat: skipped %d socket%s of TaskManagers no longer running "
				"in %s\n",
				dead, dead == 1 ? "" : "s", dir);
		if (n <= 0) {
			fprintf(stderr, "fdx-stat: no TaskManager found in %s%s%s\n", dir,
				n < 0 ? ": " : "", n < 0 ? strerror(-n) : "");
			return 1;
		}
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	grpc_init();
	for (int i = 0; i < n; i++) {
		if (tm_open(&tms[i]) == 0 && tm_ask(&tms[i]) == 0)
			up++;
		else if (argc > optind) /* named ones are reported; stale discovered ones skipped */
			fprintf(stderr, "fdx-stat: %s: %s\n", tms[i].addr, tms[i].error);
	}
	for (long round = 0; up && !stop && (json ? round < 1 : count < 0 || round < count);
	     round++) {
		struct timespec ts = {interval / 1000, (interval % 1000) * 1000000L};

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !stop)
			;
		up = 0;
		for (int i = 0; i < n; i++) {
			if (!tms[i].up)
				continue;
			if (tm_ask(&tms[i]) == 0)
				up++;
			else
				fprintf(stderr, "fdx-stat: %s: %s\n", tms[i].addr, tms[i].error);
		}
		if (json || !up)
			continue;
		if (tty)
			fputs("\033[H\033[2J", stdout);
		for (int i = 0; i < n; i++)
			if (tms[i].up)
				print_table(&tms[i]);
		putchar('\n');
		fflush(stdout);
	}
	if (json)
		print_json(tms, n);
	up = 0;
	for (int i = 0; i < n; i++) {
		up += tms[i].cur != NULL;
		tm_close(&tms[i]);
	}
	grpc_shutdown_blocking();
	if (!up) {
		fprintf(stderr, "fdx-stat: no TaskManager answered\n");
		return 1;
	}
	return 0;
}
