/* SPDX-License-Identifier: MIT */
/*
 * fdx-bench: end-to-end throughput of the data plane.
 *
 * What it measures. A producer emits records of --record-size bytes,
 * round-robin over --channels subpartitions, for --seconds. A consumer takes
 * every buffer, walks its records and reads every byte of each one: it sums
 * them 8 bytes at a time into a checksum that the producer predicts, so the
 * compiler cannot skip the read and corrupted data is caught. The rates are
 * the consumer's: records, and record payload bytes (without length
 * prefixes), divided by the time from the first buffer it saw to the end of
 * the last record. When the producer is done it sends its record count, byte
 * count and expected checksum. Any mismatch fails the run (exit 1).
 *
 * Modes:
 *  shm          producer and consumer are two processes. Data goes over the
 *               shm link: the consumer maps the producer's region read-only,
 *               and the only copy is the emit into the buffer.
 *  tcp          the same two processes. Data goes over TCP loopback into the
 *               consumer's own segments.
 *  local        one process and one exchange. A producer thread and a consumer
 *               thread; buffers are handed over in memory.
 *  shm-ceiling  no fdx at all. Two processes do the same record writing (a
 *               memcpy of each record behind a 4-byte length) and the same
 *               reading over a raw single-producer single-consumer byte ring in
 *               shared memory. There are no credits, sockets or gRPC. This is
 *               the physical limit of this machine for the workload, the limit
 *               shm should approach. The ring is as large as the producer's
 *               pool (--pool x --segment-size, rounded up to a power of two,
 *               8 MiB by default), which is the memory fdx may have in flight.
 *               Positions are published every --segment-size bytes, the same
 *               granularity as fdx buffers. The ring has one lane, so
 *               --channels does not apply to it (it reports 1 channel).
 *
 * Process layout. The main process never creates an fdx object, so no gRPC,
 * io_uring or other library thread exists in it and fork() is safe. For each
 * run it forks the consumer, then the producer (or a single child for local).
 * Three pipes connect them:
 *  - the consumer sends its exchange address to the producer;
 *  - the producer sends its report (count, bytes, checksum) to the consumer;
 *  - the consumer sends its measured result to the main process.
 * While waiting for the report, the consumer keeps pumping its gate, so that
 * the credits for the last buffers can travel and fdx_partition_finish() can
 * return. The producer's thread is pinned to the first allowed CPU and the
 * consumer's to the second. Pinning is done after setup, so the library's own
 * threads keep the full CPU mask.
 *
 * Output is a table, or with --json one object with the stable shape
 * {"results": [{"mode": ..., "record_size": ..., "records_per_s": ...,
 * "gbytes_per_s": ..., more keys}, ...]}. Scripts depend on it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fdx/fdx.h>
#include <fdx/partition.h>
#include <fdx/gate.h>

#define GATE 1u
#define CHECK_EVERY 64u /* records emitted between two reads of the clock */
#define EMIT_TIMEOUT_MS 10000 /* a pool empty this long means the consumer is stuck */
#define CONNECT_TIMEOUT_MS 5000
#define FINISH_TIMEOUT_MS 30000
#define IDLE_LIMIT_NS 30000000000ull /* the consumer gives up after 30 s without data */
#define REPORT_WAIT_NS 60000000000ull /* the longest wait for the producer's report */
#define WATCHDOG_S 120u /* added to --seconds: a child killed by SIGALRM is stuck */
#define RECORD_MIN 8u /* the first 8 bytes of a record are its counter */
#define RECORD_MAX FDX_RECORD_MAX_DEFAULT
/*
 * Credit defaults for a shared-memory run: a credit costs the consumer no
 * memory on shm, and the credit loop (release -> gRPC -> producer) takes a
 * few hundred microseconds under load, so about 8 MiB must be in flight to
 * keep a channel busy. Exclusive credits shrink as channels grow.
 */
#define POOL_DEFAULT 256u
#define EXCLUSIVE_TOTAL 128u /* exclusive credits of the gate, spread over its channels */
#define EXCLUSIVE_MIN 4u
#define FLOATING_DEFAULT 128u
#define POOL_SLACK 32u /* segments beyond the credits: the ones being filled, the queue */
#define TCP_POOL_MARGIN FDX_NBP_BATCH_DEFAULT
#define CEILING_RING_MIN (8ull << 20)

enum mode {
	MODE_SHM,
	MODE_TCP,
	MODE_LOCAL,
	MODE_CEILING,
	MODE_COUNT,
};

static const char *const mode_names[MODE_COUNT] = {"shm", "tcp", "local", "shm-ceiling"};

/* What every run uses; fixed once the options are parsed. */
struct config {
	double seconds;
	uint32_t record_size;
	uint32_t channels;
	uint32_t seg_size;
	uint32_t exclusive; /* per channel, as given (0: none) */
	uint32_t floating; /* per gate, as given (0: none) */
	uint32_t pool; /* producer pool, segments */
	uint64_t ring_size; /* shm-ceiling ring bytes, a power of two */
	int cpus[2]; /* producer, consumer; -1: not pinned */
	char dir[160]; /* this run's temporary directory (Unix sockets) */
};

/* Producer -> consumer, through a pipe, once the producer is done. */
struct report {
	uint64_t records;
	uint64_t bytes;
	uint64_t sum; /* the checksum the consumer must have read */
};

/* Consumer -> main process, through a pipe: what one run measured. */
struct result {
	uint64_t records;
	uint64_t bytes;
	uint64_t ns; /* first buffer seen to last record read */
	uint32_t channels; /* channels the data really used */
	uint32_t pad;
};

/* What the consumer saw, the way it saw it. */
struct consumed {
	uint64_t records;
	uint64_t bytes;
	uint64_t sum;
	uint64_t t_first; /* 0 until the first buffer */
	uint64_t t_last;
	uint64_t progress_at; /* next progress line, 0: none */
	uint64_t progress_records;
	uint64_t progress_bytes;
	uint64_t progress_t;
};

static char who[64] = "fdx-bench"; /* prefix of messages; names the child */

static void die(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s (%d)\n", who, what, fdx_strerror(err), err);
	exit(1);
}

/* Warnings of the library (such as a fallback to small pages) go to stderr. */
static void log_stderr(void *ud, enum fdx_log_level lvl, const char *func, int line,
		       const char *msg)
{
	(void)ud, (void)lvl, (void)func, (void)line;
	fprintf(stderr, "%s: fdx: %s\n", who, msg);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		die("clock_gettime", -errno);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(long ns)
{
	struct timespec ts = {.tv_sec = ns / 1000000000L, .tv_nsec = ns % 1000000000L};

	nanosleep(&ts, NULL);
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Wait politely: spin a while, then yield, then sleep; spins counts the calls. */
static void backoff(unsigned *spins)
{
	if (++*spins < 4096)
		cpu_relax();
	else if (*spins < 4096 + 64)
		sched_yield();
	else
		sleep_ns(20000);
}

/* Pin the calling thread (only it: sched_setaffinity(0) is per thread). Best effort. */
static void pin_self(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		fprintf(stderr, "%s: cannot pin to CPU %d: %s (the run goes on unpinned)\n", who,
			cpu, strerror(errno));
}

static void write_full(int fd, const void *buf, size_t len, const char *what)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die(what, -errno);
		p += n;
		len -= (size_t)n;
	}
}

/* @return the bytes read: less than len only at end of file. */
static size_t read_full(int fd, void *buf, size_t len, const char *what)
{
	char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die(what, -errno);
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return got;
}

/* ---- records: writing and reading them the same way in every mode ---------- */

/*
 * Read every byte of a record: the sum of its 8-byte words (native order,
 * from the record's start), then of its tail bytes. Four sums keep the loop
 * from being bound by the latency of one add chain.
 */
static uint64_t read_sum(const unsigned char *p, uint32_t len)
{
	uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, w0, w1, w2, w3;
	uint32_t i = 0;

	for (; i + 32 <= len; i += 32) {
		memcpy(&w0, p + i, 8);
		memcpy(&w1, p + i + 8, 8);
		memcpy(&w2, p + i + 16, 8);
		memcpy(&w3, p + i + 24, 8);
		s0 += w0;
		s1 += w1;
		s2 += w2;
		s3 += w3;
	}
	for (; i + 8 <= len; i += 8) {
		memcpy(&w0, p + i, 8);
		s0 += w0;
	}
	for (; i < len; i++)
		s1 += p[i];
	return s0 + s1 + s2 + s3;
}

/*
 * The record the producer sends: a fixed pattern, and its first 8 bytes the
 * record's number (set before each emit). The sum of a record numbered n is
 * n + *rest, since read_sum() splits the words at the same offsets.
 */
static unsigned char *record_make(uint32_t len, uint64_t *rest)
{
	unsigned char *rec = malloc(len);

	if (!rec)
		die("malloc", -ENOMEM);
	for (uint32_t i = 0; i < len; i++)
		rec[i] = (unsigned char)(i * 131u + 7u);
	*rest = read_sum(rec + 8, len - 8);
	return rec;
}

/* Count one buffer's worth of reading, and print progress on long runs. */
static void consumed_tick(struct consumed *cs, const char *mode)
{
	uint64_t t = now_ns();

	cs->t_last = t;
	if (!cs->progress_at || t < cs->progress_at)
		return;
	if (cs->progress_t) {
		double dt = (double)(t - cs->progress_t);

		fprintf(stderr, "%s: %s: %.0f s: %.2f M records/s, %.3f GB/s\n", who, mode,
			(double)(t - cs->t_first) / 1e9,
			(double)(cs->records - cs->progress_records) * 1e3 / dt,
			(double)(cs->bytes - cs->progress_bytes) / dt);
	}
	cs->progress_records = cs->records;
	cs->progress_bytes = cs->bytes;
	cs->progress_t = t;
	cs->progress_at = t + 1000000000ull;
}

static void consumed_start(struct consumed *cs, const struct config *c)
{
	uint64_t t = now_ns();

	cs->t_first = t;
	cs->t_last = t;
	/* A progress line every second, only on runs long enough to want one. */
	cs->progress_at = c->seconds > 3.0 ? t : 0;
}

/* The consumer's check of the producer's report, then the result it measured. */
static void verify(const struct consumed *cs, const struct report *rep, uint32_t channels,
		   struct result *res)
{
	if (cs->records != rep->records || cs->bytes != rep->bytes || cs->sum != rep->sum) {
		fprintf(stderr,
			"%s: mismatch: the consumer read %llu records, %llu bytes, checksum "
			"%016llx; the producer emitted %llu records, %llu bytes, checksum "
			"%016llx\n",
			who, (unsigned long long)cs->records, (unsigned long long)cs->bytes,
			(unsigned long long)cs->sum, (unsigned long long)rep->records,
			(unsigned long long)rep->bytes, (unsigned long long)rep->sum);
		exit(1);
	}
	if (cs->records == 0) {
		fprintf(stderr, "%s: no record went through\n", who);
		exit(1);
	}
	*res = (struct result){.records = cs->records,
			       .bytes = cs->bytes,
			       .ns = cs->t_last > cs->t_first ? cs->t_last - cs->t_first : 1,
			       .channels = channels};
}

/* ---- fdx: producer ------------------------------------------------------------ */

/* Emit records round-robin over the subpartitions until the time is up. */
static void produce(struct fdx_partition *p, const struct config *c, struct report *rep)
{
	uint64_t rest, end, n;
	unsigned char *rec = record_make(c->record_size, &rest);
	uint32_t sub = 0;
	int err;

	*rep = (struct report){0};
	end = now_ns() + (uint64_t)(c->seconds * 1e9);
	for (n = 0; n % CHECK_EVERY || now_ns() < end; n++) {
		memcpy(rec, &n, sizeof(n));
		err = fdx_partition_emit(p, sub, rec, c->record_size, EMIT_TIMEOUT_MS);
		if (err < 0)
			die("fdx_partition_emit", err);
		sub = sub + 1 == c->channels ? 0 : sub + 1;
		rep->sum += n + rest;
	}
	rep->records = n;
	rep->bytes = n * c->record_size;
	free(rec);
}

/* The producer's pools: min = max, so that no segment is borrowed during the run. */
static void producer_pools(const struct config *c, struct fdx_nbp **nbp, struct fdx_lbp **lbp)
{
	struct fdx_nbp_opts no = {.size = sizeof(no),
				  .seg_size = c->seg_size,
				  .seg_count = c->pool,
				  .log_level = FDX_LOG_WARN,
				  .log_fn = log_stderr};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = c->pool, .max = c->pool};
	int err;

	if ((err = fdx_nbp_create(&no, nbp)) < 0)
		die("fdx_nbp_create (producer)", err);
	if ((err = fdx_lbp_create(*nbp, &lo, lbp)) < 0)
		die("fdx_lbp_create (producer)", err);
}

static struct fdx_exchange *exchange_make(const struct config *c, const char *listen,
					  const char *tm_id)
{
	struct fdx_exchange_opts o = {.size = sizeof(o),
				      .listen = listen,
				      .tm_id = tm_id,
				      .log_level = FDX_LOG_WARN,
				      .log_fn = log_stderr,
				      .seg_size = c->seg_size};
	struct fdx_exchange *ex;
	int err;

	if ((err = fdx_exchange_create(&o, &ex)) < 0)
		die("fdx_exchange_create", err);
	return ex;
}

static struct fdx_partition *partition_make(struct fdx_exchange *ex, struct fdx_lbp *lbp,
					    const struct config *c)
{
	struct fdx_partition_opts o = {
		.size = sizeof(o), .n_subpartitions = c->channels, .partition_id = "fdx-bench"};
	struct fdx_partition *p;
	int err;

	if ((err = fdx_partition_create(ex, lbp, &o, &p)) < 0)
		die("fdx_partition_create", err);
	return p;
}

static void partition_connect_all(struct fdx_partition *p, const struct config *c, const char *addr,
				  uint32_t link)
{
	char what[96];
	int err;

	for (uint32_t i = 0; i < c->channels; i++) {
		err = fdx_partition_connect(p, i, addr, GATE, i, link, CONNECT_TIMEOUT_MS);
		if (err < 0) {
			snprintf(what, sizeof(what), "fdx_partition_connect %u to %s", i, addr);
			die(what, err);
		}
	}
}

/* Send END_OF_PARTITION everywhere and wait until every buffer came back. */
static void partition_end(struct fdx_partition *p)
{
	int err;

	if ((err = fdx_partition_finish(p, FINISH_TIMEOUT_MS)) < 0)
		die("fdx_partition_finish", err);
}

/* ---- fdx: consumer ------------------------------------------------------------ */

static struct fdx_gate *gate_make(struct fdx_exchange *ex, struct fdx_lbp *pool,
				  const struct config *c)
{
	struct fdx_gate_opts o = {.size = sizeof(o),
				  .gate = GATE,
				  .n_channels = c->channels,
				  .exclusive_credits =
					  c->exclusive ? c->exclusive : FDX_CREDITS_NONE,
				  .floating_credits = c->floating ? c->floating : FDX_CREDITS_NONE};
	struct fdx_gate *g;
	int err;

	if ((err = fdx_gate_create(ex, pool, &o, &g)) < 0)
		die("fdx_gate_create", err);
	return g;
}

static void view_failed(const struct fdx_view *v)
{
	fprintf(stderr, "%s: channel %u failed: %s (%d): %s\n", who, v->channel,
		fdx_strerror(v->error), v->error, v->message ? v->message : "");
	exit(1);
}

/* Take every view until END_OF_PARTITION came on every channel, reading every record. */
static void consume(struct fdx_gate *g, const struct config *c, const char *mode,
		    struct consumed *cs)
{
	unsigned char *ended = calloc(c->channels, 1);
	uint32_t n_ended = 0, idle_s = 0;
	struct fdx_view v;
	const void *rec;
	uint32_t len;
	int err;

	if (!ended)
		die("calloc", -ENOMEM);
	*cs = (struct consumed){0};
	while (n_ended < c->channels) {
		err = fdx_gate_next(g, &v, 1000);
		if (err == -EAGAIN) { /* a whole second without anything */
			if (++idle_s >= IDLE_LIMIT_NS / 1000000000ull)
				die("fdx_gate_next: nothing came for 30 s", -ETIMEDOUT);
			continue;
		}
		if (err < 0)
			die("fdx_gate_next", err);
		idle_s = 0;
		switch (v.kind) {
		case FDX_VIEW_BUFFER:
			if (!cs->t_first)
				consumed_start(cs, c);
			while ((err = fdx_gate_next_record(g, &v, &rec, &len)) == 1) {
				cs->sum += read_sum(rec, len);
				cs->records++;
				cs->bytes += len;
			}
			if (err < 0)
				die("fdx_gate_next_record", err);
			consumed_tick(cs, mode);
			break;
		case FDX_VIEW_EVENT:
			if (v.event_type != FDX_EVENT_END_OF_PARTITION)
				break;
			if (v.channel >= c->channels || ended[v.channel])
				die("END_OF_PARTITION twice or on an unknown channel", FDX_EPROTO);
			ended[v.channel] = 1;
			n_ended++;
			break;
		case FDX_VIEW_FAILED:
			view_failed(&v);
			break;
		default:
			die("fdx_gate_next: unknown view kind", FDX_EPROTO);
		}
		/* Every view is released, events included: the gate lent it. */
		if ((err = fdx_gate_release(g, &v)) < 0)
			die("fdx_gate_release", err);
	}
	free(ended);
}

/*
 * Read the producer's report. With a gate, keep taking views while waiting:
 * the producer's fdx_partition_finish() waits for its last buffers to come
 * back, and the credits that carry them must not depend on the consumer being
 * idle. After END_OF_PARTITION everywhere, only a failure may still come (the
 * producer tearing down); data would be a bug.
 */
static void report_wait(struct fdx_gate *g, int fd, struct report *rep)
{
	uint64_t deadline = now_ns() + REPORT_WAIT_NS;
	struct fdx_view v;
	int n, err;

	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};

		n = poll(&pfd, 1, g ? 0 : 1000);
		if (n < 0 && errno != EINTR)
			die("poll", -errno);
		if (n > 0)
			break;
		if (now_ns() > deadline)
			die("no report from the producer", -ETIMEDOUT);
		if (!g)
			continue;
		err = fdx_gate_next(g, &v, 10);
		if (err == -EAGAIN)
			continue;
		if (err < 0)
			die("fdx_gate_next", err);
		if (v.kind != FDX_VIEW_FAILED)
			die("an item came after END_OF_PARTITION", FDX_EPROTO);
		if ((err = fdx_gate_release(g, &v)) < 0)
			die("fdx_gate_release", err);
	}
	if (read_full(fd, rep, sizeof(*rep), "read the report") != sizeof(*rep))
		die("the producer ended without a report", FDX_EPEERGONE);
}

/* ---- fdx: the processes of shm and tcp ------------------------------------------ */

static int consumer_main(const struct config *c, enum mode m, int addr_fd, int rep_fd, int res_fd)
{
	char listen[256], line[300];
	struct fdx_nbp *nbp = NULL;
	struct fdx_lbp *lbp = NULL;
	struct fdx_exchange *ex;
	struct fdx_gate *g;
	struct consumed cs;
	struct report rep;
	struct result res;
	int err;

	if (m == MODE_TCP) {
		/* Each credit is one segment of this pool: what the gate can have given out. */
		uint32_t need = c->channels * c->exclusive + c->floating + TCP_POOL_MARGIN;
		struct fdx_nbp_opts no = {.size = sizeof(no),
					  .seg_size = c->seg_size,
					  .seg_count = need,
					  .log_level = FDX_LOG_WARN,
					  .log_fn = log_stderr};
		struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = need, .max = need};

		if ((err = fdx_nbp_create(&no, &nbp)) < 0)
			die("fdx_nbp_create (consumer)", err);
		if ((err = fdx_lbp_create(nbp, &lo, &lbp)) < 0)
			die("fdx_lbp_create (consumer)", err);
		snprintf(listen, sizeof(listen), "127.0.0.1:0");
	} else {
		snprintf(listen, sizeof(listen), "unix:%s/consumer.sock", c->dir);
	}
	ex = exchange_make(c, listen, "bench-consumer");
	g = gate_make(ex, lbp, c);
	snprintf(line, sizeof(line), "%s\n", fdx_exchange_address(ex));
	write_full(addr_fd, line, strlen(line), "send the address");
	close(addr_fd);

	pin_self(c->cpus[1]);
	consume(g, c, mode_names[m], &cs);
	report_wait(g, rep_fd, &rep);
	verify(&cs, &rep, c->channels, &res);
	write_full(res_fd, &res, sizeof(res), "send the result");
	if (getenv("FDX_BENCH_VERBOSE")) {
		struct fdx_exchange_stats es = {.size = sizeof(es)};
		struct fdx_gate_stats gs = {.size = sizeof(gs)};

		fdx_exchange_stats(ex, &es);
		fdx_gate_stats(g, &gs);
		fprintf(stderr,
			"%s: consumer: %llu buffers, %llu credit messages (%.1f buffers each)\n",
			who, (unsigned long long)gs.buffers_received,
			(unsigned long long)es.credit_msgs_out,
			es.credit_msgs_out
				? (double)gs.buffers_received / (double)es.credit_msgs_out
				: 0.0);
	}

	fdx_gate_destroy(g);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(lbp);
	if ((err = fdx_nbp_destroy(nbp)) < 0)
		die("fdx_nbp_destroy", err);
	return 0;
}

static int producer_main(const struct config *c, enum mode m, int addr_fd, int rep_fd)
{
	char listen[256], addr[300];
	FILE *from = fdopen(addr_fd, "r");
	struct fdx_partition *p;
	struct fdx_exchange *ex;
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct report rep;
	int err;

	if (!from)
		die("fdopen", -errno);
	if (!fgets(addr, sizeof(addr), from)) {
		fprintf(stderr, "%s: the consumer sent no address\n", who);
		exit(1);
	}
	fclose(from);
	addr[strcspn(addr, "\n")] = '\0';

	producer_pools(c, &nbp, &lbp);
	snprintf(listen, sizeof(listen), "unix:%s/producer.sock", c->dir);
	ex = exchange_make(c, listen, "bench-producer");
	p = partition_make(ex, lbp, c);
	partition_connect_all(p, c, addr, m == MODE_TCP ? FDX_LINK_TCP : FDX_LINK_SHM);

	pin_self(c->cpus[0]);
	produce(p, c, &rep);
	if (getenv("FDX_BENCH_VERBOSE")) {
		struct fdx_partition_stats ps = {.size = sizeof(ps)};
		struct fdx_channel_stats cs = {.size = sizeof(cs)};

		fdx_partition_stats(p, &ps);
		fdx_partition_channel_stats(p, 0, &cs);
		fprintf(stderr,
			"%s: producer: %llu buffers, backpressured %.0f ms, channel 0: max in flight "
			"%u, credit %u, backlog %u\n",
			who, (unsigned long long)ps.buffers_sent, (double)ps.backpressured_ns / 1e6,
			cs.max_in_flight, cs.credit, cs.backlog);
	}
	partition_end(p);
	write_full(rep_fd, &rep, sizeof(rep), "send the report");

	fdx_partition_destroy(p);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(lbp);
	if ((err = fdx_nbp_destroy(nbp)) < 0)
		die("fdx_nbp_destroy", err);
	return 0;
}

/* ---- fdx: local, one process ---------------------------------------------------- */

struct local_consumer {
	pthread_t tid;
	struct fdx_gate *g;
	const struct config *c;
	int rep_fd;
	struct result res;
};

static void *local_consumer_main(void *arg)
{
	struct local_consumer *lc = arg;
	struct consumed cs;
	struct report rep;

	pin_self(lc->c->cpus[1]);
	consume(lc->g, lc->c, mode_names[MODE_LOCAL], &cs);
	report_wait(lc->g, lc->rep_fd, &rep);
	verify(&cs, &rep, lc->c->channels, &lc->res);
	return NULL;
}

/*
 * The consumer thread starts first and is already waiting in fdx_gate_next()
 * when the producer (this thread) connects, in case the connection needs it.
 */
static int local_main(const struct config *c, int res_fd)
{
	struct local_consumer lc = {.c = c};
	struct fdx_partition *p;
	struct fdx_exchange *ex;
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct report rep;
	char listen[256];
	int rep_pipe[2], err;

	producer_pools(c, &nbp, &lbp);
	snprintf(listen, sizeof(listen), "unix:%s/local.sock", c->dir);
	ex = exchange_make(c, listen, "bench-local");
	lc.g = gate_make(ex, NULL, c);
	p = partition_make(ex, lbp, c);
	if (pipe2(rep_pipe, O_CLOEXEC) < 0)
		die("pipe2", -errno);
	lc.rep_fd = rep_pipe[0];
	if ((err = pthread_create(&lc.tid, NULL, local_consumer_main, &lc)) != 0)
		die("pthread_create", -err);
	partition_connect_all(p, c, fdx_exchange_address(ex), FDX_LINK_LOCAL);

	pin_self(c->cpus[0]);
	produce(p, c, &rep);
	partition_end(p);
	write_full(rep_pipe[1], &rep, sizeof(rep), "send the report");
	if ((err = pthread_join(lc.tid, NULL)) != 0)
		die("pthread_join", -err);
	write_full(res_fd, &lc.res, sizeof(lc.res), "send the result");

	close(rep_pipe[0]);
	close(rep_pipe[1]);
	fdx_partition_destroy(p);
	fdx_gate_destroy(lc.g);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(lbp);
	if ((err = fdx_nbp_destroy(nbp)) < 0)
		die("fdx_nbp_destroy", err);
	return 0;
}

/* ---- shm-ceiling: a raw SPSC byte ring ---------------------------------------- */

/*
 * The ring lives in an anonymous MAP_SHARED mapping made before fork().
 *
 * Who writes what:
 *  - head: the producer only: bytes written and published (a record
 *    boundary, never inside one).
 *  - tail: the consumer only: bytes it is done with (their space may be
 *    written again).
 * Both grow forever; position & mask is the offset in the data.
 *
 * Barriers:
 *  R1 (producer, store head, release) pairs with A1 (consumer, load head,
 *     acquire): the bytes before head are written before the consumer reads them.
 *  R2 (consumer, store tail, release) pairs with A2 (producer, load tail,
 *     acquire): the consumer is done reading the bytes before tail before the
 *     producer overwrites them.
 * Each side caches the other's counter and re-reads it only when the cache
 * says full (producer) or empty (consumer).
 *
 * Records are [u32 len][len bytes], as in fdx buffers, and contiguous. When a
 * record does not fit before the end of the data, the producer writes
 * RING_SKIP there (if 4 bytes are left; otherwise the gap is implicit) and
 * goes on at offset 0. RING_END follows the last record.
 */
#define RING_LINE 128 /* two cache lines: adjacent-line prefetch pulls pairs */
#define RING_SKIP 0xffffffffu
#define RING_END 0xfffffffeu

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "the ring's counters must be lock-free");
_Static_assert(RECORD_MAX < RING_END, "record lengths must not look like ring markers");

struct ring_hdr {
	alignas(RING_LINE) _Atomic uint64_t head; /* producer-written */
	alignas(RING_LINE) _Atomic uint64_t tail; /* consumer-written, a guard line after head */
};

_Static_assert(offsetof(struct ring_hdr, tail) == RING_LINE, "head and tail on separate lines");

struct ring_prod {
	struct ring_hdr *h;
	unsigned char *data;
	uint64_t size;
	uint64_t head; /* written, published or not */
	uint64_t published;
	uint64_t tail_cache;
	uint64_t chunk; /* publish every this many bytes */
};

static void ring_publish(struct ring_prod *w)
{
	/* R1: pairs with A1 in ring_consume(). */
	atomic_store_explicit(&w->h->head, w->head, memory_order_release);
	w->published = w->head;
}

static void ring_wait_space(struct ring_prod *w, uint64_t need)
{
	unsigned spins = 0;

	if (w->size - (w->head - w->tail_cache) >= need)
		return;
	ring_publish(w); /* the consumer can only make room once it sees data */
	for (;;) {
		/* A2: pairs with R2 in ring_consume(). */
		w->tail_cache = atomic_load_explicit(&w->h->tail, memory_order_acquire);
		if (w->size - (w->head - w->tail_cache) >= need)
			return;
		backoff(&spins);
	}
}

/* Write [hdr][len bytes of src] contiguously, after a skip if needed. */
static void ring_put(struct ring_prod *w, uint32_t hdr, const void *src, uint32_t len)
{
	uint64_t off = w->head & (w->size - 1), need = 4 + (uint64_t)len;

	if (w->size - off < need) {
		uint64_t skip = w->size - off;
		uint32_t marker = RING_SKIP;

		ring_wait_space(w, skip);
		if (skip >= 4)
			memcpy(w->data + off, &marker, 4);
		w->head += skip;
		off = 0;
	}
	ring_wait_space(w, need);
	memcpy(w->data + off, &hdr, 4);
	if (len)
		memcpy(w->data + off + 4, src, len);
	w->head += need;
	if (w->head - w->published >= w->chunk)
		ring_publish(w);
}

static void ring_produce(struct ring_hdr *h, unsigned char *data, const struct config *c,
			 struct report *rep)
{
	struct ring_prod w = {.h = h, .data = data, .size = c->ring_size, .chunk = c->seg_size};
	uint64_t rest, end, n;
	unsigned char *rec = record_make(c->record_size, &rest);

	*rep = (struct report){0};
	end = now_ns() + (uint64_t)(c->seconds * 1e9);
	for (n = 0; n % CHECK_EVERY || now_ns() < end; n++) {
		memcpy(rec, &n, sizeof(n));
		ring_put(&w, c->record_size, rec, c->record_size);
		rep->sum += n + rest;
	}
	ring_put(&w, RING_END, NULL, 0);
	ring_publish(&w);
	rep->records = n;
	rep->bytes = n * c->record_size;
	free(rec);
}

static void ring_consume(struct ring_hdr *h, const unsigned char *data, const struct config *c,
			 struct consumed *cs)
{
	uint64_t size = c->ring_size, tail = 0, head = 0, released = 0, off;
	uint64_t idle_since = now_ns();
	unsigned spins = 0;
	uint32_t len;

	*cs = (struct consumed){0};
	for (;;) {
		if (tail == head) {
			if (tail != released) {
				/* R2: pairs with A2 in ring_wait_space(). */
				atomic_store_explicit(&h->tail, tail, memory_order_release);
				released = tail;
			}
			/* A1: pairs with R1 in ring_publish(). */
			head = atomic_load_explicit(&h->head, memory_order_acquire);
			if (head == tail) {
				backoff(&spins);
				if (spins > 4096 && now_ns() - idle_since > IDLE_LIMIT_NS)
					die("the ring stayed empty for 30 s", -ETIMEDOUT);
				continue;
			}
			spins = 0;
			if (!cs->t_first)
				consumed_start(cs, c);
			else
				consumed_tick(cs, mode_names[MODE_CEILING]);
			idle_since = cs->t_last;
		}
		off = tail & (size - 1);
		if (size - off < 4) {
			tail += size - off;
			continue;
		}
		memcpy(&len, data + off, 4);
		if (len == RING_SKIP) {
			tail += size - off;
			continue;
		}
		if (len == RING_END) {
			tail += 4;
			break;
		}
		cs->sum += read_sum(data + off + 4, len);
		cs->records++;
		cs->bytes += len;
		tail += 4 + (uint64_t)len;
		if (tail - released >= c->seg_size) {
			/* R2: pairs with A2 in ring_wait_space(). */
			atomic_store_explicit(&h->tail, tail, memory_order_release);
			released = tail;
		}
	}
	atomic_store_explicit(&h->tail, tail, memory_order_release); /* R2, as above */
	cs->t_last = now_ns();
}

static int ceiling_huge; /* main process: the last ring was hugetlb-backed */

/* The ring's data: hugetlb pages if the system has some free, else small pages. */
static void *ring_map(uint64_t size, int *huge)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB,
		       -1, 0);

	*huge = p != MAP_FAILED;
	if (p == MAP_FAILED)
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap the ring", -errno);
	/* Fault every page in now, once for both processes, as the fdx region is. */
	memset(p, 0, size);
	return p;
}

/* ---- the main process: one run --------------------------------------------------- */

/* Called first in every child. */
static void child_setup(const struct config *c, pid_t parent, const char *role, enum mode m)
{
	snprintf(who, sizeof(who), "fdx-bench: %s %s", mode_names[m], role);
	signal(SIGPIPE, SIG_IGN); /* a dead peer shows as EPIPE on the write */
	/* Die with the main process; and never outlive a stuck run by much. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	alarm((unsigned)c->seconds + WATCHDOG_S);
}

static void make_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		die("pipe2", -errno);
}

static pid_t spawn(void)
{
	pid_t pid;

	fflush(NULL); /* nothing buffered may be printed twice */
	pid = fork();
	if (pid < 0)
		die("fork", -errno);
	return pid;
}

static void close_all(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static void dir_cleanup(const char *dir)
{
	static const char *const names[] = {"consumer.sock", "producer.sock", "local.sock"};
	char path[256];

	/* The exchanges remove their sockets; a child that died may have left one. */
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	if (rmdir(dir) != 0)
		fprintf(stderr, "fdx-bench: cannot remove %s: %s\n", dir, strerror(errno));
}

/* Wait for the children; if one fails, kill the others (by pid) and fail. */
static int reap(enum mode m, const pid_t *pids, const char *const *roles, int n)
{
	int alive = n, failed = 0, status;
	pid_t done[2] = {0, 0};

	while (alive > 0) {
		pid_t pid = waitpid(-1, &status, 0);
		int k;

		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0)
			die("waitpid", -errno);
		for (k = 0; k < n && pids[k] != pid; k++)
			;
		if (k == n)
			continue;
		done[k] = 1;
		alive--;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			continue;
		if (failed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
			continue; /* killed below: the first failure was said already */
		if (WIFEXITED(status))
			fprintf(stderr, "fdx-bench: %s: the %s exited with status %d\n",
				mode_names[m], roles[k], WEXITSTATUS(status));
		else
			fprintf(stderr, "fdx-bench: %s: the %s was killed by signal %d%s\n",
				mode_names[m], roles[k], WTERMSIG(status),
				WTERMSIG(status) == SIGALRM ? " (stuck: watchdog)" : "");
		if (!failed)
			for (int j = 0; j < n; j++)
				if (!done[j])
					kill(pids[j], SIGKILL);
		failed = 1;
	}
	return failed ? -1 : 0;
}

/* Run mode m once; fill res. @return 0, or -1 if the run failed (said on stderr). */
static int run(struct config *c, enum mode m, struct result *res)
{
	static const char *const roles[] = {"consumer", "producer"};
	int addr[2] = {-1, -1}, rep[2] = {-1, -1}, out[2] = {-1, -1};
	pid_t pids[2], parent = getpid();
	struct ring_hdr *hdr = NULL;
	unsigned char *data = NULL;
	const char *tmp = getenv("TMPDIR");
	int n = 0, failed;

	if (!tmp || !*tmp || strlen(tmp) > 64)
		tmp = "/tmp";
	snprintf(c->dir, sizeof(c->dir), "%s/fdx-bench-XXXXXX", tmp);
	if (!mkdtemp(c->dir))
		die("mkdtemp", -errno);
	make_pipe(out);
	if (m == MODE_CEILING) {
		int huge;

		hdr = mmap(NULL, sizeof(*hdr), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			   -1, 0);
		if (hdr == MAP_FAILED)
			die("mmap the ring header", -errno);
		atomic_init(&hdr->head, 0);
		atomic_init(&hdr->tail, 0);
		data = ring_map(c->ring_size, &huge);
		ceiling_huge = huge;
	}
	if (m != MODE_LOCAL)
		make_pipe(rep);
	if (m == MODE_SHM || m == MODE_TCP)
		make_pipe(addr);

	/* The consumer (or the one local process). */
	if ((pids[n++] = spawn()) == 0) {
		child_setup(c, parent, m == MODE_LOCAL ? "process" : "consumer", m);
		close(out[0]);
		if (m == MODE_LOCAL)
			exit(local_main(c, out[1]));
		close(rep[1]);
		if (m == MODE_CEILING) {
			struct consumed cs;
			struct report r;

			pin_self(c->cpus[1]);
			ring_consume(hdr, data, c, &cs);
			report_wait(NULL, rep[0], &r);
			verify(&cs, &r, 1, res);
			write_full(out[1], res, sizeof(*res), "send the result");
			exit(0);
		}
		close(addr[0]);
		exit(consumer_main(c, m, addr[1], rep[0], out[1]));
	}
	/* The producer. */
	if (m != MODE_LOCAL && (pids[n++] = spawn()) == 0) {
		child_setup(c, parent, "producer", m);
		close(out[0]);
		close(out[1]);
		close(rep[0]);
		if (m == MODE_CEILING) {
			struct report r;

			pin_self(c->cpus[0]);
			ring_produce(hdr, data, c, &r);
			write_full(rep[1], &r, sizeof(r), "send the report");
			exit(0);
		}
		close(addr[1]);
		exit(producer_main(c, m, addr[0], rep[1]));
	}
	/* Only the children may hold the write ends: end of file must mean they are gone. */
	close(out[1]);
	out[1] = -1;
	close_all(rep, 2);
	close_all(addr, 2);

	failed = reap(m, pids, m == MODE_LOCAL ? (const char *const[]){"process"} : roles, n);
	if (!failed && read_full(out[0], res, sizeof(*res), "read the result") != sizeof(*res)) {
		fprintf(stderr, "fdx-bench: %s: the consumer sent no result\n", mode_names[m]);
		failed = -1;
	}
	close(out[0]);
	if (hdr) {
		munmap(data, c->ring_size);
		munmap(hdr, sizeof(*hdr));
	}
	dir_cleanup(c->dir);
	return failed;
}

/* ---- options and output ---------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fdx-bench [--mode shm|tcp|local|shm-ceiling | --compare] [--seconds S]\n"
		"                 [--record-size N] [--channels N] [--segment-size N]\n"
		"                 [--exclusive N] [--floating N] [--pool N] [--json] [--help]\n"
		"  --mode M          what carries the data (default shm); shm-ceiling is a raw\n"
		"                    shared-memory ring with no flow control: the machine's limit\n"
		"  --compare         run shm, tcp, local and shm-ceiling on the same workload\n"
		"  --seconds S       how long the producer emits, per mode (default 3)\n"
		"  --record-size N   bytes per record, %u..%u, K/M suffix ok (default 1024)\n"
		"  --channels N      subpartitions = input channels, 1..65536 (default 1)\n"
		"  --segment-size N  buffer size, a power of two in [4K, 1M] (default 32K)\n"
		"  --exclusive N     exclusive credits per channel (default max(%u, %u / channels); 0 = none)\n"
		"  --floating N      floating credits per gate (default %u; 0 = none)\n"
		"  --pool N          producer pool, segments (default max(%u, credits + %u))\n"
		"  --json            print {\"results\": [...]} instead of a table\n"
		"The producer runs on the first allowed CPU, the consumer on the second.\n",
		RECORD_MIN, RECORD_MAX, EXCLUSIVE_MIN, EXCLUSIVE_TOTAL, FLOATING_DEFAULT,
		POOL_DEFAULT, POOL_SLACK);
}

static void bad_option(const char *what, const char *arg)
{
	fprintf(stderr, "fdx-bench: %s%s%s%s\n", what, arg ? " '" : "", arg ? arg : "",
		arg ? "'" : "");
	usage(stderr);
	exit(2);
}

/* An integer in [min, max], with an optional K or M suffix if suffix is set. */
static uint64_t parse_num(const char *opt, const char *s, uint64_t min, uint64_t max, int suffix)
{
	char *end, what[96];
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (suffix && (*end == 'K' || *end == 'k') && v <= UINT64_MAX / 1024)
		v *= 1024, end++;
	else if (suffix && (*end == 'M' || *end == 'm') && v <= UINT64_MAX / (1024 * 1024))
		v *= 1024 * 1024, end++;
	if (end == s || *end || s[0] == '-' || errno || v < min || v > max) {
		snprintf(what, sizeof(what), "%s must be an integer in [%llu, %llu], not", opt,
			 (unsigned long long)min, (unsigned long long)max);
		bad_option(what, s);
	}
	return v;
}

static uint64_t pow2_at_least(uint64_t v)
{
	uint64_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

static double records_per_s(const struct result *r)
{
	return (double)r->records * 1e9 / (double)r->ns;
}

static double gbytes_per_s(const struct result *r)
{
	return (double)r->bytes / (double)r->ns; /* bytes per ns = GB/s */
}

static void print_target(const char *what, double value, double target, int *all)
{
	int met = value >= target;

	printf("  %-44s %10.2f  (>= %.2f) %s\n", what, value, target, met ? "MET" : "NOT MET");
	*all &= met;
}

/* The targets that the runs made can be checked against. */
static void print_targets(const struct config *c, const struct result *res, const int *ran)
{
	int all = 1;

	if (!ran[MODE_SHM])
		return;
	printf("\ntargets:\n");
	if (ran[MODE_CEILING])
		print_target("shm / shm-ceiling (records/s)",
			     records_per_s(&res[MODE_SHM]) / records_per_s(&res[MODE_CEILING]),
			     c->record_size >= 32768 ? 0.85 : 0.80, &all);
	if (ran[MODE_TCP])
		print_target("shm / tcp (records/s)",
			     records_per_s(&res[MODE_SHM]) / records_per_s(&res[MODE_TCP]), 3.0,
			     &all);
	if (c->record_size == 64)
		print_target("shm, 64-byte records (M records/s)",
			     records_per_s(&res[MODE_SHM]) / 1e6, 25.0, &all);
	printf("  (256 channels vs 1: run --channels 1 and --channels 256; target <= 15%% "
	       "loss)\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {{"mode", required_argument, NULL, 'm'},
						 {"seconds", required_argument, NULL, 's'},
						 {"record-size", required_argument, NULL, 'r'},
						 {"channels", required_argument, NULL, 'c'},
						 {"segment-size", required_argument, NULL, 'z'},
						 {"exclusive", required_argument, NULL, 'e'},
						 {"floating", required_argument, NULL, 'f'},
						 {"pool", required_argument, NULL, 'p'},
						 {"compare", no_argument, NULL, 'C'},
						 {"json", no_argument, NULL, 'j'},
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	struct config c = {.seconds = 3.0,
			   .record_size = 1024,
			   .channels = 1,
			   .seg_size = FDX_SEG_SIZE_DEFAULT,
			   .exclusive = UINT32_MAX, /* not given */
			   .floating = FLOATING_DEFAULT,
			   .cpus = {-1, -1}};
	struct result res[MODE_COUNT];
	int ran[MODE_COUNT] = {0}, order[MODE_COUNT], n_runs = 0;
	int mode = -1, compare = 0, json = 0, ncpu = 0, opt;
	uint64_t pool = 0, tcp_need;
	cpu_set_t set;
	char *end;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			for (mode = 0; mode < MODE_COUNT && strcmp(optarg, mode_names[mode]);
			     mode++)
				;
			if (mode == MODE_COUNT)
				bad_option("--mode must be shm, tcp, local or shm-ceiling, not",
					   optarg);
			break;
		case 's':
			c.seconds = strtod(optarg, &end);
			if (end == optarg || *end || !isfinite(c.seconds) || c.seconds <= 0 ||
			    c.seconds > 3600)
				bad_option("--seconds must be a number in (0, 3600], not", optarg);
			break;
		case 'r':
			c.record_size = (uint32_t)parse_num("--record-size", optarg, RECORD_MIN,
							    RECORD_MAX, 1);
			break;
		case 'c':
			c.channels = (uint32_t)parse_num("--channels", optarg, 1, 65536, 0);
			break;
		case 'z':
			c.seg_size = (uint32_t)parse_num("--segment-size", optarg, FDX_SEG_SIZE_MIN,
							 FDX_SEG_SIZE_MAX, 1);
			if (c.seg_size & (c.seg_size - 1))
				bad_option("--segment-size must be a power of two, not", optarg);
			break;
		case 'e':
			c.exclusive = (uint32_t)parse_num("--exclusive", optarg, 0, 65536, 0);
			break;
		case 'f':
			c.floating = (uint32_t)parse_num("--floating", optarg, 0, 1u << 20, 0);
			break;
		case 'p':
			pool = parse_num("--pool", optarg, 2, FDX_SEG_COUNT_MAX, 0);
			break;
		case 'C':
			compare = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			bad_option("bad option or missing argument:",
				   argv[optind > 1 ? optind - 1 : 1]);
		}
	}
	if (optind < argc)
		bad_option("unexpected argument", argv[optind]);
	if (compare && mode >= 0)
		bad_option("--mode and --compare exclude each other", NULL);
	if (c.exclusive == UINT32_MAX)
		c.exclusive = EXCLUSIVE_TOTAL / c.channels > EXCLUSIVE_MIN
				      ? EXCLUSIVE_TOTAL / c.channels
				      : EXCLUSIVE_MIN;
	if (c.exclusive == 0 && c.floating == 0)
		bad_option("--exclusive and --floating cannot both be 0", NULL);
	tcp_need = (uint64_t)c.channels * c.exclusive + c.floating + TCP_POOL_MARGIN;
	if (tcp_need > FDX_SEG_COUNT_MAX)
		bad_option("channels x exclusive + floating is too many segments", NULL);
	if (!pool)
		pool = tcp_need - TCP_POOL_MARGIN + POOL_SLACK > POOL_DEFAULT
			       ? tcp_need - TCP_POOL_MARGIN + POOL_SLACK
			       : POOL_DEFAULT;
	/* Each subpartition holds the buffer it fills: one more is needed to send any. */
	if (pool < (uint64_t)c.channels + 1)
		bad_option("--pool must be at least channels + 1", NULL);
	c.pool = (uint32_t)pool;
	c.ring_size = pow2_at_least((uint64_t)c.pool * c.seg_size);
	if (c.ring_size < CEILING_RING_MIN)
		c.ring_size = CEILING_RING_MIN;
	if (c.ring_size < 2 * ((uint64_t)c.record_size + 4))
		c.ring_size = pow2_at_least(2 * ((uint64_t)c.record_size + 4));

	if (compare)
		for (int i = 0; i < MODE_COUNT; i++)
			order[n_runs++] = i;
	else
		order[n_runs++] = mode >= 0 ? mode : MODE_SHM;

	/* Distinct CPUs for producer and consumer when the affinity mask allows two. */
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) >= 2)
		for (int cpu = 0; cpu < CPU_SETSIZE && ncpu < 2; cpu++)
			if (CPU_ISSET(cpu, &set))
				c.cpus[ncpu++] = cpu;

	if (!json) {
		printf("fdx-bench, fdx %s: %g s per mode, %u B records, %u channel%s, %u B "
		       "segments\n",
		       fdx_version_string(), c.seconds, c.record_size, c.channels,
		       c.channels == 1 ? "" : "s", c.seg_size);
		printf("credit settings: exclusive %u per channel, floating %u per gate; producer "
		       "pool %u segments (%.1f MiB); shm-ceiling ring %.1f MiB\n",
		       c.exclusive, c.floating, c.pool,
		       (double)c.pool * c.seg_size / (1024.0 * 1024.0),
		       (double)c.ring_size / (1024.0 * 1024.0));
		if (c.cpus[0] >= 0)
			printf("producer on CPU %d, consumer on CPU %d\n\n", c.cpus[0], c.cpus[1]);
		else
			printf("fewer than 2 CPUs allowed: producer and consumer not pinned\n\n");
		printf("%-12s %11s %8s %14s %9s %7s\n", "mode", "record_size", "channels",
		       "records/s", "GB/s", "vs shm");
	}
	for (int i = 0; i < n_runs; i++) {
		enum mode m = (enum mode)order[i];

		if (run(&c, m, &res[m]) < 0)
			return 1;
		ran[m] = 1;
		if (json)
			continue;
		printf("%-12s %11u %8u %14.0f %9.3f", mode_names[m], c.record_size, res[m].channels,
		       records_per_s(&res[m]), gbytes_per_s(&res[m]));
		if (ran[MODE_SHM])
			printf(" %7.2f\n", records_per_s(&res[m]) / records_per_s(&res[MODE_SHM]));
		else
			printf(" %7s\n", "-");
		fflush(stdout);
	}
	if (json) {
		printf("{\"results\": [");
		for (int i = 0; i < n_runs; i++) {
			enum mode m = (enum mode)order[i];

			printf("%s{\"mode\": \"%s\", \"record_size\": %u, \"records_per_s\": %.0f, "
			       "\"gbytes_per_s\": %.4f, \"channels\": %u, \"segment_size\": %u, "
			       "\"exclusive_credits\": %u, \"floating_credits\": %u, \"pool\": %u, "
			       "\"seconds\": %.6f, \"records\": %llu}",
			       i ? ", " : "", mode_names[m], c.record_size, records_per_s(&res[m]),
			       gbytes_per_s(&res[m]), res[m].channels, c.seg_size, c.exclusive,
			       c.floating, c.pool, (double)res[m].ns / 1e9,
			       (unsigned long long)res[m].records);
		}
		printf("]}\n");
		return 0;
	}
	if (ran[MODE_CEILING])
		printf("\nshm-ceiling ring: %s pages\n", ceiling_huge ? "hugetlb" : "small");
	print_targets(&c, res, ran);
	return 0;
}
