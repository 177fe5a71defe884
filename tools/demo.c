/* SPDX-License-Identifier: MIT */
/*
 * fdx-demo: the whole mechanism, live, in about 30 seconds.
 *
 * Two TaskManager processes on this host, each with its own fdx_exchange:
 *  - "demo-source" emits records into a partition of 4 subpartitions, in
 *    place in its buffers (fdx_partition_reserve + commit). Each record is
 *    [u64 sequence][u32 channel][u32 checksum][payload], the payload derived
 *    from the sequence number.
 *  - "demo-sink" reads a gate of 4 input channels and verifies every record:
 *    the channel it came on, the next sequence number of that channel, and
 *    the checksum of its payload.
 * The main process creates no fdx object: it forks the two, tells them the
 * phase through a shared page, and prints a table about once a second from
 * what they publish there (their counters, read by fdx_partition_stats(),
 * fdx_gate_stats() and friends).
 *
 * Phases: (1) full speed; (2) a slow consumer (it sleeps 2 ms per buffer):
 * the source's credits fall to zero, its buffers queue (backlog), its pool
 * fills and emit blocks, so backPressuredTimeMsPerSecond nears 1000, while
 * memory stays flat; (3) recovery at full speed. Then the source ends the
 * partition, and the summary says what was sent and verified, the bytes the
 * library copied on the data path (none on shm), and whether the region is
 * on hugepages. Exit 0 only if every record sent was verified.
 *
 * While it runs, `fdx-stat` (no arguments) finds both TaskManagers in the
 * default socket directory and shows the same from the outside.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

#define NCH 4u
#define GATE 1u
#define HDR 16u /* u64 seq, u32 channel, u32 checksum */
#define SEG_SIZE 32768u
#define POOL_MAX 128u /* the source's LocalBufferPool: outPoolUsage is in_use / 128 */
#define EXCLUSIVE 16u
#define FLOATING 32u
#define SLOW_US 2000 /* phase 2: the sink sleeps this long per buffer */
#define EMIT_WAIT_MS 200
#define SETUP_MS 15000
#define END_MS 30000
#define DEATH_GRACE_MS 400 /* after a death, the survivor ends by then or is killed */

enum phase { PH_SETUP, PH_FAST, PH_SLOW, PH_RECOVER, PH_STOP };

static const char *const phase_title[] = {
	"setup", "full speed", "slow consumer (backpressure)", "recovery", "stop",
};

/* What one side publishes, every 100 ms, for the table. */
struct side {
	_Atomic uint64_t records, bytes; /* source: emitted; sink: verified */
	_Atomic uint64_t bp_ns; /* source: emit waiting for a buffer */
	_Atomic uint64_t bytes_copied, bytes_reassembled;
	_Atomic uint32_t credit[NCH], backlog[NCH]; /* source's view of each channel */
	_Atomic uint32_t held[NCH]; /* sink: buffers held per channel */
	_Atomic uint32_t pool_in_use, pool_max; /* source: its pool; sink: held / credit quota */
};

struct shared {
	_Atomic int phase;
	_Atomic int sink_ready, source_ready;
	char addr[300]; /* the sink's exchange */
	_Atomic int source_done, sink_done;
	_Atomic int hugetlb; /* the source's region: 1 hugepages, 0 small pages */
	uint64_t sent[NCH]; /* source, before source_done */
	uint64_t verified[NCH]; /* sink, before sink_done */
	uint64_t bad;
	char source_err[256], sink_err[256];
	struct side src, snk;
};

struct config {
	double seconds;
	uint32_t link;
	uint32_t record_size;
};

static struct shared *sh;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- records -------------------------------------------------------------- */

static inline uint64_t word_of(uint64_t seq, uint64_t i)
{
	return (seq + 1) * 0x9E3779B97F4A7C15ull ^ (i + 1) * 0xBF58476D1CE4E5B9ull;
}

static inline uint64_t mix(uint64_t h, uint64_t w)
{
	return (h ^ w) * 0x100000001B3ull;
}

/* Write the payload of record seq (len bytes) and return its checksum. */
static uint32_t payload_fill(uint8_t *p, uint32_t len, uint64_t seq)
{
	uint64_t h = 0xcbf29ce484222325ull, i = 0;

	for (; (i + 1) * 8 <= len; i++) {
		uint64_t w = word_of(seq, i);

		memcpy(p + i * 8, &w, 8);
		h = mix(h, w);
	}
	for (uint32_t k = (uint32_t)i * 8; k < len; k++) {
		p[k] = (uint8_t)(seq + k);
		h = mix(h, p[k]);
	}
	return (uint32_t)(h ^ (h >> 32));
}

/* The checksum of the payload as received: every byte is read. */
static uint32_t payload_sum(const uint8_t *p, uint32_t len)
{
	uint64_t h = 0xcbf29ce484222325ull, i = 0;

	for (; (i + 1) * 8 <= len; i++) {
		uint64_t w;

		memcpy(&w, p + i * 8, 8);
		h = mix(h, w);
	}
	for (uint32_t k = (uint32_t)i * 8; k < len; k++)
		h = mix(h, p[k]);
	return (uint32_t)(h ^ (h >> 32));
}

static void record_write(uint8_t *r, uint32_t size, uint32_t ch, uint64_t seq)
{
	uint32_t sum = payload_fill(r + HDR, size - HDR, seq);

	memcpy(r, &seq, 8);
	memcpy(r + 8, &ch, 4);
	memcpy(r + 12, &sum, 4);
}

/* ---- the source ------------------------------------------------------------ */

struct reporter {
	pthread_t thread;
	_Atomic int stop;
	struct fdx_partition *part;
	struct fdx_lbp *pool;
	struct fdx_gate *gate;
};

static void publish_source(struct reporter *r)
{
	struct fdx_partition_stats ps = {.size = sizeof(ps)};
	struct fdx_lbp_stats ls = {.size = sizeof(ls)};

	fdx_partition_stats(r->part, &ps);
	fdx_lbp_stats(r->pool, &ls);
	atomic_store(&sh->src.records, ps.records);
	atomic_store(&sh->src.bytes, ps.bytes);
	atomic_store(&sh->src.bp_ns, ps.backpressured_ns);
	atomic_store(&sh->src.bytes_copied, ps.bytes_copied);
	atomic_store(&sh->src.pool_in_use, ls.in_use);
	atomic_store(&sh->src.pool_max, ls.max);
	for (uint32_t i = 0; i < NCH; i++) {
		struct fdx_channel_stats cs = {.size = sizeof(cs)};

		fdx_partition_channel_stats(r->part, i, &cs);
		atomic_store(&sh->src.credit[i], cs.credit);
		atomic_store(&sh->src.backlog[i], cs.backlog);
	}
}

static void publish_sink(struct reporter *r)
{
	struct fdx_gate_stats gs = {.size = sizeof(gs)};

	fdx_gate_stats(r->gate, &gs);
	atomic_store(&sh->snk.bytes_copied, gs.bytes_copied);
	atomic_store(&sh->snk.bytes_reassembled, gs.bytes_reassembled);
	uint32_t quota = 0, floating_usable = 0;

	atomic_store(&sh->snk.pool_in_use, gs.held);
	for (uint32_t i = 0; i < NCH; i++) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		fdx_gate_channel_stats(r->gate, i, &cs);
		atomic_store(&sh->snk.held[i], cs.held);
		/* A channel reading in place (shm) has its in-place credit, not exclusive. */
		quota += cs.inplace ? cs.inplace : EXCLUSIVE;
		floating_usable |= !cs.inplace;
	}
	if (floating_usable) /* in-place channels take no floating credit */
		quota += FLOATING;
	atomic_store(&sh->snk.pool_max, quota);
}

static void *reporter_main(void *arg)
{
	struct reporter *r = arg;

	while (!atomic_load(&r->stop)) {
		if (r->part)
			publish_source(r);
		else
			publish_sink(r);
		sleep_us(100000);
	}
	return NULL;
}

static int source_fail(const char *what, int err)
{
	snprintf(sh->source_err, sizeof(sh->source_err), "%s: %s", what, fdx_strerror(err));
	return 1;
}

/* Emit one record of cfg->record_size to ch: 0, -ETIMEDOUT (try again), or an error. */
static int emit_one(struct fdx_partition *part, const struct config *cfg, uint8_t *tmp, uint32_t ch,
		    uint64_t seq)
{
	void *where;
	int err;

	if (!tmp) { /* fits a buffer: written in place, zero copy */
		err = fdx_partition_reserve(part, ch, cfg->record_size, &where, EMIT_WAIT_MS);
		if (err)
			return err;
		record_write(where, cfg->record_size, ch, seq);
		return fdx_partition_commit(part, ch, cfg->record_size);
	}
	record_write(tmp, cfg->record_size, ch, seq);
	return fdx_partition_emit(part, ch, tmp, cfg->record_size, EMIT_WAIT_MS);
}

static int source_main(const struct config *cfg)
{
	struct fdx_nbp_opts no = {.size = sizeof(no), .seg_size = SEG_SIZE, .seg_count = 192};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = 16, .max = POOL_MAX};
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "demo-source"};
	struct fdx_partition_opts po = {.size = sizeof(po),
					.n_subpartitions = NCH,
					.partition_id = "demo-source/partition-0"};
	struct reporter rep = {0};
	struct fdx_partition *part = NULL;
	struct fdx_exchange *ex = NULL;
	struct fdx_nbp *nbp = NULL;
	struct fdx_lbp *lbp = NULL;
	uint8_t *tmp = NULL;
	uint64_t seq[NCH] = {0}, t0;
	int err, rc = 1;

	if (cfg->record_size + 4 > SEG_SIZE && !(tmp = malloc(cfg->record_size)))
		return source_fail("record buffer", -ENOMEM);
	if ((err = fdx_nbp_create(&no, &nbp)) || (err = fdx_lbp_create(nbp, &lo, &lbp))) {
		rc = source_fail("buffer pools", err);
		goto out;
	}
	atomic_store(&sh->hugetlb, fdx_region_is_hugetlb(fdx_nbp_region(nbp)));
	if ((err = fdx_exchange_create(&eo, &ex)) ||
	    (err = fdx_partition_create(ex, lbp, &po, &part))) {
		rc = source_fail("exchange", err);
		goto out;
	}
	for (t0 = now_ns(); !atomic_load(&sh->sink_ready); sleep_us(1000))
		if (now_ns() - t0 > SETUP_MS * 1000000ull) {
			rc = source_fail("the sink did not start", -ETIMEDOUT);
			goto out;
		}
	for (uint32_t i = 0; i < NCH; i++)
		if ((err = fdx_partition_connect(part, i, sh->addr, GATE, i, cfg->link, 5000))) {
			rc = source_fail("connect", err);
			goto out;
		}
	rep.part = part;
	rep.pool = lbp;
	if (pthread_create(&rep.thread, NULL, reporter_main, &rep)) {
		rep.part = NULL;
		rc = source_fail("reporter thread", -EAGAIN);
		goto out;
	}
	atomic_store(&sh->source_ready, 1);
	while (atomic_load(&sh->phase) < PH_FAST)
		sleep_us(1000);
	for (uint32_t ch = 0; atomic_load_explicit(&sh->phase, memory_order_relaxed) < PH_STOP;
	     ch = (ch + 1) % NCH) {
		err = emit_one(part, cfg, tmp, ch, seq[ch]);
		if (err == -ETIMEDOUT)
			continue; /* backpressure: the same record again (the phase may end) */
		if (err) {
			rc = source_fail("emit", err);
			goto out;
		}
		seq[ch]++;
	}
	err = fdx_partition_finish(part, END_MS);
	if (err) {
		rc = source_fail("finish", err);
		goto out;
	}
	memcpy(sh->sent, seq, sizeof(seq));
	rc = 0;
out:
	if (rep.part) {
		atomic_store(&rep.stop, 1);
		pthread_join(rep.thread, NULL);
		publish_source(&rep);
	}
	fdx_partition_destroy(part);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(lbp);
	fdx_nbp_destroy(nbp);
	free(tmp);
	atomic_store(&sh->source_done, rc ? -1 : 1);
	return rc;
}

/* ---- the sink ------------------------------------------------------------- */

static int sink_fail(const char *what, int err)
{
	snprintf(sh->sink_err, sizeof(sh->sink_err), "%s: %s", what, fdx_strerror(err));
	return 1;
}

/* Check one record: channel, next sequence number, checksum. */
static int verify(const uint8_t *rec, uint32_t len, uint32_t ch, uint64_t *expect,
		  const struct config *cfg)
{
	uint64_t seq;
	uint32_t c, sum;

	if (len != cfg->record_size) {
		snprintf(sh->sink_err, sizeof(sh->sink_err),
			 "channel %u: a record of %u bytes, %u expected", ch, len,
			 cfg->record_size);
		return -1;
	}
	memcpy(&seq, rec, 8);
	memcpy(&c, rec + 8, 4);
	memcpy(&sum, rec + 12, 4);
	if (c != ch || seq != *expect || payload_sum(rec + HDR, len - HDR) != sum) {
		snprintf(sh->sink_err, sizeof(sh->sink_err),
			 "channel %u: record (channel %u, sequence %llu) where sequence %llu was "
			 "due, or its checksum differs",
			 ch, c, (unsigned long long)seq, (unsigned long long)*expect);
		return -1;
	}
	(*expect)++;
	return 0;
}

static int sink_main(const struct config *cfg)
{
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .tm_id = "demo-sink"};
	struct fdx_gate_opts go = {.size = sizeof(go),
				   .gate = GATE,
				   .n_channels = NCH,
				   .exclusive_credits = EXCLUSIVE,
				   .floating_credits = FLOATING};
	uint32_t quota = NCH * EXCLUSIVE + FLOATING;
	struct fdx_nbp_opts no = {.size = sizeof(no), .seg_size = SEG_SIZE, .seg_count = quota};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = quota, .max = quota};
	struct reporter rep = {0};
	struct fdx_exchange *ex = NULL;
	struct fdx_gate *gate = NULL;
	struct fdx_nbp *nbp = NULL;
	struct fdx_lbp *lbp = NULL;
	uint64_t expect[NCH] = {0}, records = 0, bytes = 0, stop_at = 0;
	uint32_t ended = 0;
	int err, rc = 1;

	/* tcp data lands in segments of the sink's own: one per credit. */
	if (cfg->link == FDX_LINK_TCP &&
	    ((err = fdx_nbp_create(&no, &nbp)) || (err = fdx_lbp_create(nbp, &lo, &lbp)))) {
		rc = sink_fail("buffer pools", err);
		goto out;
	}
	if ((err = fdx_exchange_create(&eo, &ex)) || (err = fdx_gate_create(ex, lbp, &go, &gate))) {
		rc = sink_fail("exchange", err);
		goto out;
	}
	snprintf(sh->addr, sizeof(sh->addr), "%s", fdx_exchange_address(ex));
	rep.gate = gate;
	if (pthread_create(&rep.thread, NULL, reporter_main, &rep)) {
		rep.gate = NULL;
		rc = sink_fail("reporter thread", -EAGAIN);
		goto out;
	}
	atomic_store(&sh->sink_ready, 1);
	while (ended < NCH) {
		struct fdx_view v;
		const void *rec;
		uint32_t len;

		err = fdx_gate_next(gate, &v, 100);
		if (err == -EAGAIN) {
			if (atomic_load(&sh->phase) == PH_STOP && !stop_at)
				stop_at = now_ns();
			if (atomic_load(&sh->source_done) < 0 ||
			    (stop_at && now_ns() - stop_at > END_MS * 1000000ull)) {
				rc = sink_fail("the source's end did not come", -ETIMEDOUT);
				goto out;
			}
			continue;
		}
		if (err) {
			rc = sink_fail("next", err);
			goto out;
		}
		if (v.kind == FDX_VIEW_FAILED) {
			snprintf(sh->sink_err, sizeof(sh->sink_err), "channel %u failed: %s",
				 v.channel, v.message);
			fdx_gate_release(gate, &v);
			goto out;
		}
		if (v.kind == FDX_VIEW_EVENT) {
			ended += v.event_type == FDX_EVENT_END_OF_PARTITION;
			fdx_gate_release(gate, &v);
			continue;
		}
		while ((err = fdx_gate_next_record(gate, &v, &rec, &len)) == 1) {
			if (verify(rec, len, v.channel, &expect[v.channel], cfg)) {
				sh->bad++;
				fdx_gate_release(gate, &v);
				goto out;
			}
			records++;
			bytes += len;
		}
		atomic_store_explicit(&sh->snk.records, records, memory_order_relaxed);
		atomic_store_explicit(&sh->snk.bytes, bytes, memory_order_relaxed);
		if (err < 0) {
			rc = sink_fail("next_record", err);
			fdx_gate_release(gate, &v);
			goto out;
		}
		if (atomic_load_explicit(&sh->phase, memory_order_relaxed) == PH_SLOW)
			sleep_us(SLOW_US); /* a slow operator: the buffer stays held meanwhile */
		fdx_gate_release(gate, &v);
	}
	memcpy(sh->verified, expect, sizeof(expect));
	rc = 0;
out:
	if (rep.gate) {
		atomic_store(&rep.stop, 1);
		pthread_join(rep.thread, NULL);
		publish_sink(&rep);
	}
	/* The source's finish waits for our last credits: keep serving until it is done. */
	for (uint64_t t0 = now_ns();
	     gate && !atomic_load(&sh->source_done) && now_ns() - t0 < END_MS * 1000000ull;)
		sleep_us(1000);
	fdx_gate_destroy(gate);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(lbp);
	fdx_nbp_destroy(nbp);
	atomic_store(&sh->sink_done, rc ? -1 : 1);
	return rc;
}

/* ---- the main process: phases, table, summary ------------------------------ */

static double rss_mib(pid_t pid)
{
	char path[64];
	unsigned long size, res;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &res) != 2)
		res = 0;
	fclose(f);
	return (double)res * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

struct sample {
	uint64_t t, src_rec, src_bytes, snk_rec, snk_bytes, bp_ns;
};

static struct sample take_sample(void)
{
	struct sample s = {
		.t = now_ns(),
		.src_rec = atomic_load(&sh->src.records),
		.src_bytes = atomic_load(&sh->src.bytes),
		.snk_rec = atomic_load(&sh->snk.records),
		.snk_bytes = atomic_load(&sh->snk.bytes),
		.bp_ns = atomic_load(&sh->src.bp_ns),
	};
	return s;
}

/* What the slow phase showed, for the summary. */
struct seen {
	int credit_zero, pool_full;
	double bp_max, in_pool_max;
	double rss_src[2], rss_snk[2]; /* at the slow phase's first and last row */
};

static void print_header(void)
{
	printf("  %5s | %-13s | %-13s | %-11s | %-11s | %-13s | %-9s | %s\n", "time", "source",
	       "sink", "credit", "backlog", "outPool inPool", "backPress.", "RSS MiB");
	printf("  %5s | %6s %6s | %6s %6s | %-11s | %-11s | %-13s | %-9s | %s\n", "s", "Mrec/s",
	       "GB/s", "Mrec/s", "GB/s", "ch0 1  2  3", "ch0 1  2  3", " Usage  Usage", "TimeMs/s",
	       "src  sink");
}

static void print_row(double t, const struct sample *a, const struct sample *b, pid_t src,
		      pid_t snk, enum phase ph, struct seen *seen)
{
	double dt = (double)(b->t - a->t) / 1e9;
	double bp = (double)(b->bp_ns - a->bp_ns) / 1e6 / dt;
	uint32_t in_use = atomic_load(&sh->src.pool_in_use), max = atomic_load(&sh->src.pool_max);
	uint32_t held = atomic_load(&sh->snk.pool_in_use), quota = atomic_load(&sh->snk.pool_max);
	double out_pool = max ? 100.0 * in_use / max : 0,
	       in_pool = quota ? 100.0 * held / quota : 0;
	double rs = rss_mib(src), rk = rss_mib(snk);
	int zero = 0;

	if (bp > 1000)
		bp = 1000;
	printf("  %5.1f | %6.2f %6.2f | %6.2f %6.2f |", t,
	       (double)(b->src_rec - a->src_rec) / dt / 1e6,
	       (double)(b->src_bytes - a->src_bytes) / dt / 1e9,
	       (double)(b->snk_rec - a->snk_rec) / dt / 1e6,
	       (double)(b->snk_bytes - a->snk_bytes) / dt / 1e9);
	for (uint32_t i = 0; i < NCH; i++) {
		uint32_t c = atomic_load(&sh->src.credit[i]);

		zero += c == 0;
		printf("%s%2u", i ? " " : " ", c);
	}
	printf(" |");
	for (uint32_t i = 0; i < NCH; i++)
		printf(" %2u", atomic_load(&sh->src.backlog[i]));
	printf(" | %5.0f%% %5.0f%% | %9.0f | %4.0f %4.0f\n", out_pool, in_pool, bp, rs, rk);
	fflush(stdout);
	if (ph == PH_SLOW) {
		seen->credit_zero |= zero == (int)NCH;
		seen->pool_full |= max && in_use == max;
		if (bp > seen->bp_max)
			seen->bp_max = bp;
		if (in_pool > seen->in_pool_max)
			seen->in_pool_max = in_pool;
		if (!seen->rss_src[0]) {
			seen->rss_src[0] = rs;
			seen->rss_snk[0] = rk;
		}
		seen->rss_src[1] = rs;
		seen->rss_snk[1] = rk;
	}
}

/* The two TaskManagers, as the main process watches them. */
struct child {
	const char *name;
	pid_t pid;
	int ended, status; /* reaped: its waitpid() status */
};

static struct child kids[2]; /* demo-source, demo-sink */

/* Why a child ended, in words. */
static void child_why(const struct child *k, char *buf, size_t n)
{
	if (WIFSIGNALED(k->status))
		snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(k->status),
			 strsignal(WTERMSIG(k->status)));
	else if (WIFEXITED(k->status))
		snprintf(buf, n, "exited with status %d", WEXITSTATUS(k->status));
	else
		snprintf(buf, n, "ended (status %#x)", (unsigned)k->status);
}

/*
 * Reap whichever child has ended, without waiting. Before the demo told them
 * to stop, an ending is a death: the survivor is told at once (it stops
 * waiting for its peer). When both ended since the last look, the one killed
 * by a signal is the death; the other most likely ended because of it (a
 * source whose sink died fails its emit). The child that died, or NULL.
 */
static struct child *watch_children(void)
{
	struct child *dead = NULL;

	for (int i = 0; i < 2; i++) {
		struct child *k = &kids[i];

		if (k->ended || k->pid <= 0 || waitpid(k->pid, &k->status, WNOHANG) != k->pid)
			continue;
		k->ended = 1;
		if (atomic_load(&sh->phase) == PH_STOP)
			continue;
		if (!dead || (WIFSIGNALED(k->status) && !WIFSIGNALED(dead->status)))
			dead = k;
	}
	if (!dead)
		return NULL;
	/* A killed side never says it is done: say it for it. */
	if (dead == &kids[0] && !atomic_load(&sh->source_done))
		atomic_store(&sh->source_done, -1);
	if (dead == &kids[1] && !atomic_load(&sh->sink_done))
		atomic_store(&sh->sink_done, -1);
	return dead;
}

/* Wait for a child, up to ms; kill it after that. Its exit code, or -1. */
static int reap(struct child *k, int ms)
{
	for (int i = 0; i < ms && !k->ended; i++) {
		pid_t r = waitpid(k->pid, &k->status, WNOHANG);

		if (r == k->pid)
			k->ended = 1;
		else if (r < 0)
			return -1;
		else
			sleep_us(1000);
	}
	if (!k->ended) {
		kill(k->pid, SIGKILL);
		waitpid(k->pid, &k->status, 0);
		k->ended = 1;
		return -1;
	}
	return WIFEXITED(k->status) ? WEXITSTATUS(k->status) : -1;
}

static pid_t spawn(int (*fn)(const struct config *), const struct config *cfg)
{
	pid_t pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the demo */
		_exit(fn(cfg));
	}
	return pid;
}

static void usage(FILE *f)
{
	fputs("usage: fdx-demo [--seconds S] [--link shm|tcp] [--record-size BYTES]\n"
	      "  --seconds S         total run time, 6..3600 (default 30): 40% full speed,\n"
	      "                      30% slow consumer, 30% recovery\n"
	      "  --link shm|tcp      the data link between the two TaskManagers (default shm)\n"
	      "  --record-size BYTES 16..16777216 (default 1024)\n",
	      f);
}

static int bad_arg(const char *what, const char *arg)
{
	fprintf(stderr, "fdx-demo: %s: '%s'\n", what, arg);
	usage(stderr);
	return 2;
}

static int parse_args(int argc, char **argv, struct config *cfg)
{
	static const struct option lo[] = {
		{"seconds", required_argument, NULL, 's'},
		{"link", required_argument, NULL, 'l'},
		{"record-size", required_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char *end;
	int opt;

	cfg->seconds = 30;
	cfg->link = FDX_LINK_SHM;
	cfg->record_size = 1024;
	while ((opt = getopt_long(argc, argv, "s:l:r:h", lo, NULL)) != -1) {
		switch (opt) {
		case 's':
			errno = 0;
			cfg->seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(cfg->seconds >= 6) ||
			    cfg->seconds > 3600)
				return bad_arg("--seconds wants a number from 6 to 3600", optarg);
			break;
		case 'l':
			if (strcmp(optarg, "shm") == 0)
				cfg->link = FDX_LINK_SHM;
			else if (strcmp(optarg, "tcp") == 0)
				cfg->link = FDX_LINK_TCP;
			else
				return bad_arg("--link wants shm or tcp", optarg);
			break;
		case 'r': {
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-' || v < HDR ||
			    v > 16u << 20)
				return bad_arg("--record-size wants a whole number from 16 to "
					       "16777216",
					       optarg);
			cfg->record_size = (uint32_t)v;
			break;
		}
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		return bad_arg("unexpected argument", argv[optind]);
	return 0;
}

int main(int argc, char **argv)
{
	struct config cfg;
	struct seen seen = {0};
	struct sample a, b;
	pid_t src, snk;
	uint64_t t0, sent = 0, verified = 0, deadline;
	double len[PH_STOP];
	int rc, src_rc, snk_rc, ok;
	struct child *dead = NULL;

	rc = parse_args(argc, argv, &cfg);
	if (rc)
		return rc;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("fdx-demo: mmap");
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	snk = spawn(sink_main, &cfg);
	src = spawn(source_main, &cfg);
	if (snk < 0 || src < 0) {
		perror("fdx-demo: fork");
		return 1;
	}
	kids[0] = (struct child){.name = "demo-source", .pid = src};
	kids[1] = (struct child){.name = "demo-sink", .pid = snk};
	printf("fdx-demo: two TaskManagers on this host: demo-source (pid %d) -> demo-sink "
	       "(pid %d)\n",
	       (int)src, (int)snk);
	printf("  link %s; records of %u bytes over 4 channels, each checked (channel, "
	       "sequence, checksum)\n",
	       cfg.link == FDX_LINK_SHM ? "shm" : "tcp", cfg.record_size);
	printf("  buffers of %u KiB; source pool %u segments; credits:\n", SEG_SIZE / 1024,
	       POOL_MAX);
	if (cfg.link == FDX_LINK_SHM)
		printf("    %u per channel, read in place (the library's default for shm)\n",
		       FDX_INPLACE_CREDITS_DEFAULT);
	else
		printf("    %u exclusive per channel + %u floating (segments of the sink's pool)\n",
		       EXCLUSIVE, FLOATING);
	for (deadline = now_ns() + SETUP_MS * 1000000ull;
	     !atomic_load(&sh->source_ready) && now_ns() < deadline;) {
		if (atomic_load(&sh->source_done) || atomic_load(&sh->sink_done) ||
		    (dead = watch_children()))
			break;
		sleep_us(1000);
	}
	len[PH_FAST] = cfg.seconds * 0.4;
	len[PH_SLOW] = cfg.seconds * 0.3;
	len[PH_RECOVER] = cfg.seconds - len[PH_FAST] - len[PH_SLOW];
	ok = atomic_load(&sh->source_ready);
	printf("  region on %s; try `fdx-stat` in another shell while this runs\n",
	       !ok			   ? "?"
	       : atomic_load(&sh->hugetlb) ? "hugepages"
					   : "small pages (no hugepages "
					     "reserved: the fallback)");
	t0 = now_ns();
	for (int ph = PH_FAST; ok && ph < PH_STOP; ph++) {
		uint64_t end = now_ns() + (uint64_t)(len[ph] * 1e9);

		atomic_store(&sh->phase, ph);
		printf("\n== phase %d/3: %s (%.0f s) ==\n", ph, phase_title[ph], len[ph]);
		print_header();
		a = take_sample();
		while (now_ns() < end) {
			uint64_t next = a.t + 1000000000ull;

			if (next > end)
				next = end;
			while (now_ns() < next && !dead && !(dead = watch_children()))
				sleep_us(20000);
			if (dead) {
				ok = 0;
				break;
			}
			b = take_sample();
			print_row((double)(b.t - t0) / 1e9, &a, &b, src, snk, ph, &seen);
			a = b;
			if (atomic_load(&sh->source_done) || atomic_load(&sh->sink_done)) {
				ok = 0;
				break;
			}
		}
	}
	if (!dead)
		dead = watch_children();
	atomic_store(&sh->phase, PH_STOP);
	if (dead) {
		char why[128];

		child_why(dead, why, sizeof(why));
		/* Within a second of the death: the survivor has half of it to end cleanly. */
		printf("\nfdx-demo: %s (pid %d) died: %s; stopping %s\n", dead->name,
		       (int)dead->pid, why, dead == &kids[0] ? kids[1].name : kids[0].name);
		src_rc = reap(&kids[0], DEATH_GRACE_MS);
		snk_rc = reap(&kids[1], DEATH_GRACE_MS);
	} else {
		src_rc = reap(&kids[0], END_MS + 10000);
		snk_rc = reap(&kids[1], END_MS + 10000);
	}
	for (uint32_t i = 0; i < NCH; i++) {
		sent += sh->sent[i];
		verified += sh->verified[i];
	}
	printf("\n== summary ==\n");
	printf("  records sent %llu, verified %llu (channel, sequence and checksum), bad %llu\n",
	       (unsigned long long)sent, (unsigned long long)verified, (unsigned long long)sh->bad);
	for (uint32_t i = 0; i < NCH; i++)
		printf("    channel %u: sent %llu, verified %llu\n", i,
		       (unsigned long long)sh->sent[i], (unsigned long long)sh->verified[i]);
	printf("  bytes copied on the data path: %llu by the source after emit, %llu by the "
	       "sink before reading%s\n",
	       (unsigned long long)atomic_load(&sh->src.bytes_copied),
	       (unsigned long long)atomic_load(&sh->snk.bytes_copied),
	       cfg.link == FDX_LINK_SHM ? " (shm: the sink reads the source's buffers in place)"
					: " (tcp: through the socket)");
	if (atomic_load(&sh->snk.bytes_reassembled))
		printf("  records spanning buffers reassembled: %llu bytes\n",
		       (unsigned long long)atomic_load(&sh->snk.bytes_reassembled));
	printf("  slow phase: credits all at zero %s, source pool full %s, "
	       "backPressuredTimeMsPerSecond up to %.0f, sink inPoolUsage up to %.0f%%\n",
	       seen.credit_zero ? "seen" : "not seen", seen.pool_full ? "seen" : "not seen",
	       seen.bp_max, seen.in_pool_max);
	printf("  memory during the slow phase: source RSS %.1f -> %.1f MiB, sink %.1f -> %.1f "
	       "MiB\n",
	       seen.rss_src[0], seen.rss_src[1], seen.rss_snk[0], seen.rss_snk[1]);
	printf("  region: %s\n", atomic_load(&sh->hugetlb) ? "hugepages"
							   : "small pages (no hugepages: the "
							     "fallback)");
	if (sh->source_err[0])
		printf("  source: %s\n", sh->source_err);
	if (sh->sink_err[0])
		printf("  sink: %s\n", sh->sink_err);
	ok = ok && src_rc == 0 && snk_rc == 0 && sh->bad == 0 && sent == verified && sent > 0;
	for (uint32_t i = 0; i < NCH; i++)
		ok = ok && sh->sent[i] == sh->verified[i];
	if (dead) {
		char why[128];

		child_why(dead, why, sizeof(why));
		printf("fdx-demo: FAILED: %s (pid %d) died: %s\n", dead->name, (int)dead->pid, why);
		return 1;
	}
	printf("fdx-demo: %s\n", ok ? "OK, every record verified" : "FAILED");
	return ok ? 0 : 1;
}
