/* SPDX-License-Identifier: MIT */
/*
 * fdx-soak: four TaskManagers under random load for a bounded time (issue 6).
 *
 * The main process creates no fdx object. It maps one shared page (plus room
 * for the memory samples), forks four TaskManager processes and tells them
 * the phase through it: setup, run (--seconds), stop (drain), teardown.
 *
 * Each TaskManager (TM) has its own fdx_exchange (a Unix socket in a private
 * temporary directory), one NetworkBufferPool, one input gate of 16 channels
 * and produces 16 channels: 64 channels in all. Channel c = p + 4 * k (k = 0..15)
 * goes from TM p to TM (p + 1 + k % 4) % 4, so every TM sends to every other
 * one and to itself (k % 4 == 3: the local link), into input channel
 * p * 4 + k / 4 of the consumer's gate.
 *  - Channels k = 0..3 of a TM are the subpartitions of one partition that
 *    lives for the whole run (links shm, tcp, shm, local).
 *  - Channels k = 4..15 are opened and closed at random: each "generation" is
 *    a partition of one subpartition with its own LocalBufferPool, connected
 *    over a link drawn at random (shm forced or auto, tcp; local when the
 *    consumer is the TM itself) with a random buffer timeout, which lives
 *    from nothing to a few seconds, then ends with END_OF_PARTITION (an event
 *    carrying the generation and its record count, or the one finish sends),
 *    is finished (every buffer back) and destroyed. The next generation
 *    reconnects the same input channel.
 *
 * Records have random sizes, from 0 bytes to 100 KiB (some span up to four
 * 32 KiB buffers); size and content are functions of (seed, channel,
 * generation, sequence), so the consumer knows what each one must be. A
 * record of 24 bytes or more starts with {channel, generation, sequence,
 * length, checksum of the rest}; a shorter one is a known byte pattern. Half
 * of the records that fit a buffer are written in place (reserve + commit).
 * Watermarks (in order: they must come right after the records emitted
 * before them) and priority barriers (they may overtake data, never come from
 * an earlier generation) go now and then, and flushes.
 *
 * Each consumer checks every record: the next sequence number of the
 * channel's current generation, its size, its checksum; generations in order,
 * each END_OF_PARTITION with the count of its generation. It stalls at
 * random (sleeps 1 to 40 ms, now and then 100 to 400 ms) while holding views,
 * and keeps some views across later ones, released in random order; a view
 * kept is hashed when taken and again when released: a producer that reused
 * a segment still lent to us would change it.
 *
 * Every TM samples its resident memory (/proc/self/statm, and the parts
 * /proc/self/status names) and its descriptors (/proc/self/fd) every 100 ms
 * during the run. At the end the main process checks: every TM exited 0; per
 * channel, the records and generations the producer reports equal those its
 * consumer verified; memory and descriptors of the last 10% of the samples
 * against the first 10% (see FLAT_* for what is held to what). Exit 0 only
 * if all holds; on a failure every channel's state is printed.
 *
 * Every wait is bounded; a TM that does not finish in time is killed and the
 * run fails. --seed replays the same random choices (the timing differs).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fdx/fdx.h>

#include "../helpers.h" /* test_count_fds() */

#define N_TM 4u
#define CH_PER_TM 16u
#define N_CH (N_TM * CH_PER_TM)
#define N_STATIC 4u /* k = 0..3: one partition for the whole run */
#define GATE_ID 1u
#define SEG_SIZE 32768u
#define NBP_SEGS 512u /* 16 MiB per TM: 64 + 12 * 24 producer + 80 gate segments at most */
#define EXCLUSIVE 4u
#define FLOATING 16u
#define GATE_POOL (CH_PER_TM * EXCLUSIVE + FLOATING)
#define DYN_POOL_MIN 2u
#define DYN_POOL_MAX 24u
#define STATIC_POOL_MAX 64u
#define REC_HDR 24u /* u32 channel, u32 generation, u64 sequence, u32 length, u32 checksum */
#define REC_MAX (100u * 1024u)
#define EV_LEN 16u /* event payload: u32 channel, u32 generation, u64 sequence or count */
#define MAX_HELD 16u
#define LOG_RING 24u

#define SAMPLE_MS 100u
#define EMIT_WAIT_MS 2
#define BACKOFF_MS 3u
#define CONNECT_MS 5000
#define SETUP_MS 30000u /* TMs up and every address known */
#define CLOSE_MS 20000u /* one generation's finish: every buffer back */
#define REOPEN_MS 10000u /* an input channel free again after its producer left */
#define DRAIN_MS 60000u /* after the run: every producer finished, every consumer drained */
#define TEARDOWN_MS 30000u /* destroying everything, exiting */

/*
 * Flatness between the first and last 10% of the samples (the run, from the
 * moment every TM has opened a channel of each link to each peer: data
 * sockets are made on first use and then kept).
 *  - Own memory (RssAnon + RssFile) may rise by 2 MiB or 10%, whichever is
 *    more: malloc's arenas (our two task threads and fdx's threads, ~10
 *    partitions created and freed per second with their per-segment
 *    bookkeeping) settle within a few hundred KiB of their level, while a
 *    leak of anything per generation or per buffer grows without bound
 *    (~1400 generations and ~100k buffers per 30 s). A leak of a few hundred
 *    bytes per generation needs a longer run to show (--seconds 900).
 *  - Shared memory (RssShmem) is the regions: ours, pre-faulted, and the
 *    three peers' we map read-only, whose pages count once we first read
 *    them; it rises towards their size as the pools hand out segments not
 *    used before, so it is held to that size (four regions), not to its start.
 *  - Descriptors: the averages may differ by 2 at most; none is per generation.
 * Under AddressSanitizer own memory is not checked: freed blocks wait in its
 * quarantine (256 MiB) and its allocator grows meanwhile by design (here 35 ->
 * 200-240 MiB in 30 s); LeakSanitizer checks each TM when it exits instead.
 */
#if defined(__SANITIZE_ADDRESS__)
#define FDX_SOAK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FDX_SOAK_ASAN 1
#endif
#endif
#ifdef FDX_SOAK_ASAN
#define CHECK_OWN_MEMORY 0
#else
#define CHECK_OWN_MEMORY 1
#endif
#define FLAT_OWN_KIB (2u * 1024u)
#define FLAT_OWN_PCT 10u
#define FLAT_FDS 2.0

enum phase { PH_SETUP, PH_RUN, PH_STOP, PH_TEARDOWN, PH_ABORT };

/* What one TM publishes. Counters are relaxed: read for the summary. */
struct tm_pub {
	char addr[256];
	_Atomic int pid, ready, prod_done, cons_done;
	_Atomic int failed;
	_Atomic uint64_t fail_ns; /* when (CLOCK_MONOTONIC) */
	char err[768];
	_Atomic uint64_t rec_out, bytes_out, rec_in, bytes_in;
	_Atomic uint64_t gens_opened, gens_closed, busy_retries, emit_timeouts, in_place;
	_Atomic uint64_t watermarks, barriers, flushes, eop_counted;
	_Atomic uint64_t stalls, stall_ms, long_stalls, held_kept, held_max;
	_Atomic uint64_t links[4]; /* generations per enum fdx_link */
	_Atomic uint64_t bytes_reassembled, bytes_copied_in, bytes_copied_out;
	_Atomic uint64_t lib_err, lib_warn;
	_Atomic uint32_t open_out; /* channels open or closing now */
	_Atomic uint32_t n_samples;
	_Atomic int warm; /* its first channels (every link to every peer) are open */
	_Atomic uint64_t region_bytes;
	_Atomic int hugetlb; /* its region is on hugepages (not counted in RSS) */
	_Atomic int64_t fds_before, fds_after;
};

/* Where a channel stood when its TMs stopped: printed if the run failed. */
struct chan_state {
	uint32_t set, state, gen, link, in_flight, backlog, credit, held, unannounced, open;
	int32_t error;
	uint32_t pad;
	uint64_t seq, sent, granted, received;
};

struct chan_pub {
	_Atomic int prod_final; /* set after prod_records and prod_gens */
	_Atomic uint64_t prod_records, prod_gens;
	_Atomic uint64_t cons_records, cons_gens;
	struct chan_state out, in; /* producer's and consumer's, at the end */
};

struct sample {
	uint32_t rss_kib; /* statm: everything resident */
	uint32_t anon_kib, file_kib; /* RssAnon, RssFile: this process's own */
	uint32_t shmem_kib; /* RssShmem: the regions, ours and the peers' we read */
	uint32_t fds, open_out;
};

struct shared {
	_Atomic int phase;
	_Atomic uint64_t run_t0;
	struct tm_pub tm[N_TM];
	struct chan_pub ch[N_CH];
	uint32_t max_samples;
	uint32_t pad;
	struct sample samples[]; /* N_TM * max_samples */
};

struct config {
	double seconds;
	uint64_t seed;
	int verbose;
	const char *samples; /* --samples FILE, or NULL */
};

static struct shared *sh;
static struct config cfg;
static char sock_dir[64];
static volatile sig_atomic_t interrupted; /* the main process got SIGINT or SIGTERM */

/* ---- small things --------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t ms_ns(uint64_t ms)
{
	return ms * 1000000ull;
}

static void sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static uint64_t rnd64(uint64_t *s)
{
	*s += 0x9E3779B97F4A7C15ull;
	return mix64(*s);
}

/* A number in [0, n). */
static uint32_t rnd(uint64_t *s, uint32_t n)
{
	return n ? (uint32_t)(rnd64(s) % n) : 0;
}

static int phase(void)
{
	return atomic_load(&sh->phase);
}

static void add(_Atomic uint64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static void raise_max(_Atomic uint64_t *c, uint64_t v)
{
	uint64_t was = atomic_load_explicit(c, memory_order_relaxed);

	while (was < v && !atomic_compare_exchange_weak_explicit(c, &was, v, memory_order_relaxed,
								 memory_order_relaxed))
		;
}

/* Resident memory: statm's total, and the parts /proc/self/status names. */
static void read_mem(struct sample *s)
{
	unsigned long size = 0, res = 0;
	char line[256];
	FILE *f;

	f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%lu %lu", &size, &res) == 2)
			s->rss_kib = (uint32_t)(res * (unsigned long)sysconf(_SC_PAGESIZE) / 1024);
		fclose(f);
	}
	f = fopen("/proc/self/status", "r");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "RssAnon: %lu", &size) == 1)
				s->anon_kib = (uint32_t)size;
			else if (sscanf(line, "RssFile: %lu", &size) == 1)
				s->file_kib = (uint32_t)size;
			else if (sscanf(line, "RssShmem: %lu", &size) == 1)
				s->shmem_kib = (uint32_t)size;
		fclose(f);
	}
}

/* ---- the topology ---------------------------------------------------------- */

/* Channel c = p + 4k: produced by TM p, consumed by TM (p + 1 + k % 4) % 4. */
static uint32_t ch_prod(uint32_t c)
{
	return c % N_TM;
}

static uint32_t ch_k(uint32_t c)
{
	return c / N_TM;
}

static uint32_t ch_cons(uint32_t c)
{
	return (ch_prod(c) + 1 + ch_k(c) % 4) % N_TM;
}

static uint32_t ch_gate_channel(uint32_t c)
{
	return ch_prod(c) * 4 + ch_k(c) / 4;
}

/* ---- records --------------------------------------------------------------- */

static uint64_t rec_key(uint32_t c, uint32_t gen, uint64_t seq)
{
	return mix64(cfg.seed ^ mix64(((uint64_t)c << 32 | gen) ^ mix64(seq + 0x5EED)));
}

/* 2% empty, 6% shorter than a header, 62% up to 1 KiB, 25% up to 17 KiB, 5% up to 100 KiB. */
static uint32_t rec_size(uint64_t key)
{
	uint32_t r = (uint32_t)(key >> 40) % 1000, x = (uint32_t)key;

	if (r < 20)
		return 0;
	if (r < 80)
		return 1 + x % (REC_HDR - 1);
	if (r < 700)
		return REC_HDR + x % 1000;
	if (r < 950)
		return 1024 + x % (16u * 1024u);
	return 17u * 1024u + x % (REC_MAX - 17u * 1024u + 1);
}

static uint64_t hash_bytes(const uint8_t *p, uint32_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;
	uint32_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0x100000001B3ull;
	}
	for (; i < len; i++)
		h = (h ^ p[i]) * 0x100000001B3ull;
	return h;
}

static uint32_t sum32(const uint8_t *p, uint32_t len)
{
	uint64_t h = hash_bytes(p, len);

	return (uint32_t)(h ^ (h >> 32));
}

static uint8_t short_byte(uint64_t key, uint32_t i)
{
	return (uint8_t)((key >> (8 * (i % 8))) ^ (i * 0x3Bu));
}

/* Write record (c, gen, seq) of len bytes at r. */
static void rec_fill(uint8_t *r, uint32_t len, uint32_t c, uint32_t gen, uint64_t seq, uint64_t key)
{
	uint32_t i, sum;

	if (len < REC_HDR) {
		for (i = 0; i < len; i++)
			r[i] = short_byte(key, i);
		return;
	}
	for (i = REC_HDR; i + 8 <= len; i += 8) {
		uint64_t w = key ^ (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;

		memcpy(r + i, &w, 8);
	}
	for (; i < len; i++)
		r[i] = short_byte(key, i);
	sum = sum32(r + REC_HDR, len - REC_HDR);
	memcpy(r, &c, 4);
	memcpy(r + 4, &gen, 4);
	memcpy(r + 8, &seq, 8);
	memcpy(r + 16, &len, 4);
	memcpy(r + 20, &sum, 4);
}

struct evp {
	uint32_t c, gen;
	uint64_t seq;
};

_Static_assert(sizeof(struct evp) == EV_LEN, "event payload layout");

/* ---- a TaskManager ---------------------------------------------------------- */

enum out_state { OUT_IDLE, OUT_OPEN, OUT_CLOSING };

struct out_ch {
	uint32_t c, k, cons, gch;
	int is_static;
	enum out_state state;
	uint32_t gen;
	uint64_t seq; /* records of this generation so far */
	uint64_t records; /* of all generations */
	uint64_t gens_closed;
	struct fdx_partition *part;
	struct fdx_lbp *lbp;
	uint32_t sub, link;
	uint64_t t_next; /* IDLE: reopen; OPEN: close; CLOSING: give up */
	uint64_t free_since; /* IDLE: when the last generation left (for -EBUSY) */
	uint64_t backoff_until;
};

struct in_ch {
	uint32_t c; /* the global channel */
	int in_gen; /* a record of generation gen came */
	uint32_t gen; /* the generation in progress or due next */
	uint64_t expect; /* its next sequence number */
	uint64_t records, gens;
};

struct held {
	struct fdx_view v;
	uint64_t hash;
	uint32_t c, gen;
};

struct tmgr {
	uint32_t id;
	struct tm_pub *pub;
	struct fdx_exchange *ex;
	struct fdx_nbp *nbp;
	struct fdx_lbp *gate_pool, *static_pool;
	struct fdx_gate *gate;
	struct fdx_partition *static_part;
	struct out_ch out[CH_PER_TM];
	struct in_ch in[CH_PER_TM];
	uint64_t rng_prod, rng_cons;
	uint8_t *tmp;
	struct held held[MAX_HELD];
	uint32_t n_held;
	/* fdx's last messages, printed if this TM fails (all of them with --verbose). */
	pthread_mutex_t log_lock;
	char log_ring[LOG_RING][320];
	uint32_t log_n;
};

/* fdx's last message (why a channel failed, usually). */
static void log_last(struct tmgr *t, char *buf, size_t n)
{
	pthread_mutex_lock(&t->log_lock);
	snprintf(buf, n, "%s", t->log_n ? t->log_ring[(t->log_n - 1) % LOG_RING] : "none");
	pthread_mutex_unlock(&t->log_lock);
}

static void log_dump(struct tmgr *t)
{
	uint32_t n;

	if (cfg.verbose)
		return; /* printed as they came */
	pthread_mutex_lock(&t->log_lock);
	n = t->log_n < LOG_RING ? t->log_n : LOG_RING;
	if (n)
		fprintf(stderr, "fdx-soak: tm%u: fdx's last %u of %u messages:\n", t->id, n,
			t->log_n);
	for (uint32_t i = t->log_n - n; i < t->log_n; i++)
		fprintf(stderr, "fdx-soak: tm%u:   %s\n", t->id, t->log_ring[i % LOG_RING]);
	pthread_mutex_unlock(&t->log_lock);
}

static void tm_fail(struct tmgr *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tm_fail(struct tmgr *t, const char *fmt, ...)
{
	int zero = 0;
	va_list ap;
	char msg[sizeof(t->pub->err)];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "fdx-soak: tm%u: %s\n", t->id, msg);
	if (atomic_compare_exchange_strong(&t->pub->failed, &zero, 1)) {
		snprintf(t->pub->err, sizeof(t->pub->err), "%s", msg);
		atomic_store(&t->pub->fail_ns, now_ns());
		log_dump(t);
	}
}

static int tm_failed(struct tmgr *t)
{
	return atomic_load(&t->pub->failed) || phase() == PH_ABORT;
}

static void log_sink(void *ud, enum fdx_log_level lvl, const char *func, int line, const char *msg)
{
	struct tmgr *t = ud;
	const char *name = lvl <= FDX_LOG_ERR ? "error" : lvl == FDX_LOG_WARN ? "warning" : "info";

	if (lvl <= FDX_LOG_ERR)
		add(&t->pub->lib_err, 1);
	else if (lvl == FDX_LOG_WARN)
		add(&t->pub->lib_warn, 1);
	if (cfg.verbose)
		fprintf(stderr, "fdx-soak: tm%u: fdx %s: %s (%s:%d)\n", t->id, name, msg, func,
			line);
	pthread_mutex_lock(&t->log_lock);
	snprintf(t->log_ring[t->log_n++ % LOG_RING], sizeof(t->log_ring[0]), "fdx %s: %s (%s:%d)",
		 name, msg, func, line);
	pthread_mutex_unlock(&t->log_lock);
}

/* ---- the producer ------------------------------------------------------------ */

static uint32_t pick_timeout(uint64_t *rng)
{
	static const uint32_t ms[] = {0, 1, 5, 20, 100, 100};

	return ms[rnd(rng, sizeof(ms) / sizeof(ms[0]))];
}

/* Open the next generation of a dynamic channel. 0, or -1 on failure. */
static int out_open(struct tmgr *t, struct out_ch *o, uint64_t now)
{
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = DYN_POOL_MIN, .max = DYN_POOL_MAX};
	struct fdx_partition_opts po = {.size = sizeof(po),
					.n_subpartitions = 1,
					.flags = FDX_PARTITION_BUFFER_TIMEOUT,
					.buffer_timeout_ms = pick_timeout(&t->rng_prod)};
	uint32_t r = rnd(&t->rng_prod, 100), link;
	char id[64];
	int err;

	if (o->cons == t->id)
		link = FDX_LINK_AUTO; /* our own address: local */
	else if (o->gen == 0) /* a peer's three channels: one of each at first */
		link = o->k / 4 == 1 ? FDX_LINK_TCP : o->k / 4 == 2 ? FDX_LINK_SHM : FDX_LINK_AUTO;
	else
		link = r < 25 ? FDX_LINK_TCP : r < 50 ? FDX_LINK_AUTO : FDX_LINK_SHM;
	snprintf(id, sizeof(id), "soak-tm%u/ch%u/gen%u", t->id, o->c, o->gen);
	po.partition_id = id;
	err = fdx_lbp_create(t->nbp, &lo, &o->lbp);
	if (err) {
		tm_fail(t, "channel %u generation %u: fdx_lbp_create: %s", o->c, o->gen,
			fdx_strerror(err));
		return -1;
	}
	err = fdx_partition_create(t->ex, o->lbp, &po, &o->part);
	if (err) {
		tm_fail(t, "channel %u generation %u: fdx_partition_create: %s", o->c, o->gen,
			fdx_strerror(err));
		return -1;
	}
	err = fdx_partition_connect(o->part, 0, sh->tm[o->cons].addr, GATE_ID, o->gch, link,
				    CONNECT_MS);
	if (err == -EBUSY) {
		/* Our last generation's close has not reached the consumer's exchange yet. */
		fdx_partition_destroy(o->part);
		fdx_lbp_destroy(o->lbp);
		o->part = NULL;
		o->lbp = NULL;
		add(&t->pub->busy_retries, 1);
		if (now - o->free_since > ms_ns(REOPEN_MS)) {
			tm_fail(t,
				"channel %u generation %u: input channel %u of tm%u still busy %u ms "
				"after generation %u finished",
				o->c, o->gen, o->gch, o->cons, REOPEN_MS, o->gen - 1);
			return -1;
		}
		o->t_next = now + ms_ns(2 + rnd(&t->rng_prod, 8));
		return 0;
	}
	if (err) {
		tm_fail(t, "channel %u generation %u: fdx_partition_connect to tm%u: %s", o->c,
			o->gen, o->cons, fdx_strerror(err));
		return -1;
	}
	{
		struct fdx_channel_stats cs = {.size = sizeof(cs)};

		if (fdx_partition_channel_stats(o->part, 0, &cs) == 0 && cs.link < 4)
			add(&t->pub->links[cs.link], 1);
	}
	o->state = OUT_OPEN;
	o->seq = 0;
	o->backoff_until = 0;
	r = rnd(&t->rng_prod, 100);
	o->t_next = now + ms_ns(r < 5	 ? 0
				: r < 50 ? 50 + rnd(&t->rng_prod, 450)
					 : 500 + rnd(&t->rng_prod, 2500));
	add(&t->pub->gens_opened, 1);
	atomic_fetch_add(&t->pub->open_out, 1);
	return 0;
}

/* End the channel's generation: END_OF_PARTITION, with its count or by finish. */
static int out_end(struct tmgr *t, struct out_ch *o, uint64_t now)
{
	struct evp e = {.c = o->c, .gen = o->gen, .seq = o->seq};
	int err;

	if (o->is_static || rnd(&t->rng_prod, 10) < 7) {
		err = fdx_partition_event(o->part, o->sub, FDX_EVENT_END_OF_PARTITION, 0, &e,
					  sizeof(e));
		add(&t->pub->eop_counted, 1);
	} else {
		err = fdx_partition_finish(o->part, 0); /* its own END_OF_PARTITION, no payload */
		if (err == -ETIMEDOUT)
			err = 0;
	}
	if (err) {
		tm_fail(t, "channel %u generation %u: end of partition: %s", o->c, o->gen,
			fdx_strerror(err));
		return -1;
	}
	o->state = OUT_CLOSING;
	o->t_next = now + ms_ns(CLOSE_MS);
	return 0;
}

/* A closing dynamic channel: finished yet? Then free the generation. */
static int out_poll_close(struct tmgr *t, struct out_ch *o, uint64_t now)
{
	int err = fdx_partition_finish(o->part, 0);

	if (err == -ETIMEDOUT) {
		if (now > o->t_next) {
			struct fdx_channel_stats cs = {.size = sizeof(cs)};

			fdx_partition_channel_stats(o->part, o->sub, &cs);
			tm_fail(t,
				"channel %u generation %u: finish not done %u ms after its end "
				"(link %u, in flight %u, backlog %u, credit %u, sent %" PRIu64
				" buffers, error %d)",
				o->c, o->gen, CLOSE_MS, cs.link, cs.in_flight, cs.backlog,
				cs.credit, cs.buffers_sent, cs.error);
			return -1;
		}
		return 0;
	}
	if (err) {
		tm_fail(t, "channel %u generation %u: finish: %s", o->c, o->gen, fdx_strerror(err));
		return -1;
	}
	o->records += o->seq;
	o->gens_closed++;
	add(&t->pub->gens_closed, 1);
	atomic_fetch_sub(&t->pub->open_out, 1);
	if (o->is_static) {
		o->state = OUT_IDLE;
		return 0;
	}
	{
		struct fdx_partition_stats ps = {.size = sizeof(ps)};

		if (fdx_partition_stats(o->part, &ps) == 0)
			add(&t->pub->bytes_copied_out, ps.bytes_copied);
	}
	fdx_partition_destroy(o->part);
	fdx_lbp_destroy(o->lbp);
	o->part = NULL;
	o->lbp = NULL;
	o->gen++;
	o->seq = 0;
	o->state = OUT_IDLE;
	o->free_since = now;
	o->t_next = now + ms_ns(rnd(&t->rng_prod, 100));
	return 0;
}

/* Emit the channel's next record: 0, -ETIMEDOUT (backpressure), or -1 on failure. */
static int out_emit(struct tmgr *t, struct out_ch *o)
{
	uint64_t key = rec_key(o->c, o->gen, o->seq);
	uint32_t len = rec_size(key);
	void *where;
	int err;

	if (len + 4 <= SEG_SIZE && rnd(&t->rng_prod, 2)) {
		err = fdx_partition_reserve(o->part, o->sub, len, &where, EMIT_WAIT_MS);
		if (err == 0) {
			rec_fill(where, len, o->c, o->gen, o->seq, key);
			err = fdx_partition_commit(o->part, o->sub, len);
			add(&t->pub->in_place, 1);
		}
	} else {
		rec_fill(t->tmp, len, o->c, o->gen, o->seq, key);
		err = fdx_partition_emit(o->part, o->sub, t->tmp, len, EMIT_WAIT_MS);
	}
	if (err == -ETIMEDOUT) {
		add(&t->pub->emit_timeouts, 1);
		return -ETIMEDOUT;
	}
	if (err) {
		char why[sizeof(t->log_ring[0])];

		log_last(t, why, sizeof(why));
		tm_fail(t,
			"channel %u generation %u: emit of record %" PRIu64
			" (%u bytes): %s (fdx's last message: %s)",
			o->c, o->gen, o->seq, len, fdx_strerror(err), why);
		return -1;
	}
	o->seq++;
	add(&t->pub->rec_out, 1);
	add(&t->pub->bytes_out, len);
	return 0;
}

/* Now and then: a watermark (in order), a priority barrier, or a flush. */
static int out_extra(struct tmgr *t, struct out_ch *o)
{
	uint32_t r = rnd(&t->rng_prod, 1024);
	struct evp e = {.c = o->c, .gen = o->gen, .seq = o->seq};
	int err = 0;

	if (r < 4) {
		err = fdx_partition_event(o->part, o->sub, FDX_EVENT_WATERMARK, 0, &e, sizeof(e));
		add(&t->pub->watermarks, 1);
	} else if (r < 6) {
		err = fdx_partition_event(o->part, o->sub, FDX_EVENT_BARRIER, FDX_EVENT_PRIORITY,
					  &e, sizeof(e));
		add(&t->pub->barriers, 1);
	} else if (r < 10) {
		err = fdx_partition_flush(o->part, o->sub);
		add(&t->pub->flushes, 1);
	}
	if (err) {
		tm_fail(t, "channel %u generation %u: event or flush: %s", o->c, o->gen,
			fdx_strerror(err));
		return -1;
	}
	return 0;
}

static int static_open(struct tmgr *t)
{
	static const uint32_t links[N_STATIC] = {FDX_LINK_SHM, FDX_LINK_TCP, FDX_LINK_AUTO,
						 FDX_LINK_AUTO};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = 8, .max = STATIC_POOL_MAX};
	struct fdx_partition_opts po = {.size = sizeof(po), .n_subpartitions = N_STATIC};
	char id[64];
	int err;

	snprintf(id, sizeof(id), "soak-tm%u/static", t->id);
	po.partition_id = id;
	err = fdx_lbp_create(t->nbp, &lo, &t->static_pool);
	if (!err)
		err = fdx_partition_create(t->ex, t->static_pool, &po, &t->static_part);
	if (err) {
		tm_fail(t, "the long-lived partition: %s", fdx_strerror(err));
		return -1;
	}
	for (uint32_t k = 0; k < N_STATIC; k++) {
		struct out_ch *o = &t->out[k];

		err = fdx_partition_connect(t->static_part, k, sh->tm[o->cons].addr, GATE_ID,
					    o->gch, links[k], CONNECT_MS);
		if (err) {
			tm_fail(t, "channel %u (long-lived) to tm%u: connect: %s", o->c, o->cons,
				fdx_strerror(err));
			return -1;
		}
		o->part = t->static_part;
		o->sub = k;
		o->state = OUT_OPEN;
		o->t_next = UINT64_MAX;
		add(&t->pub->gens_opened, 1);
		atomic_fetch_add(&t->pub->open_out, 1);
		{
			struct fdx_channel_stats cs = {.size = sizeof(cs)};

			if (fdx_partition_channel_stats(t->static_part, k, &cs) == 0 && cs.link < 4)
				add(&t->pub->links[cs.link], 1);
		}
	}
	return 0;
}

/* The task thread of the TM: open, emit, close, at random, until the run ends. */
static int producer_run(struct tmgr *t)
{
	while (phase() == PH_RUN && !tm_failed(t)) {
		uint64_t now = now_ns();
		uint32_t start = rnd(&t->rng_prod, CH_PER_TM), burst;
		struct out_ch *o = NULL;

		for (uint32_t i = N_STATIC; i < CH_PER_TM; i++) {
			struct out_ch *x = &t->out[i];

			if ((x->state == OUT_IDLE && now >= x->t_next && out_open(t, x, now)) ||
			    (x->state == OUT_OPEN && now >= x->t_next && out_end(t, x, now)) ||
			    (x->state == OUT_CLOSING && out_poll_close(t, x, now)))
				return -1;
		}
		atomic_store(&t->pub->warm, 1); /* every first generation opened */
		for (uint32_t i = 0; i < CH_PER_TM; i++) {
			struct out_ch *x = &t->out[(start + i) % CH_PER_TM];

			if (x->state == OUT_OPEN && now >= x->backoff_until) {
				o = x;
				break;
			}
		}
		if (!o) {
			sleep_us(1000);
			continue;
		}
		burst = 1 + rnd(&t->rng_prod, 16);
		for (uint32_t i = 0; i < burst; i++) {
			int err = out_emit(t, o);

			if (err == -ETIMEDOUT) {
				o->backoff_until = now_ns() + ms_ns(BACKOFF_MS);
				break;
			}
			if (err || out_extra(t, o))
				return -1;
		}
	}
	return tm_failed(t) ? -1 : 0;
}

/* After the run: end every open channel, wait until all are finished. */
static int producer_stop(struct tmgr *t)
{
	uint64_t deadline = now_ns() + ms_ns(DRAIN_MS);

	for (uint32_t i = 0; i < CH_PER_TM; i++) {
		struct out_ch *o = &t->out[i];

		if (o->state == OUT_OPEN && out_end(t, o, now_ns()))
			return -1;
	}
	for (;;) {
		uint32_t busy = 0;

		for (uint32_t i = 0; i < CH_PER_TM && !tm_failed(t); i++) {
			struct out_ch *o = &t->out[i];

			if (o->state == OUT_CLOSING && out_poll_close(t, o, now_ns()))
				return -1;
			busy += o->state != OUT_IDLE;
		}
		if (tm_failed(t))
			return -1;
		if (!busy)
			break;
		if (now_ns() > deadline) {
			tm_fail(t, "%u channels not finished %u ms after the run", busy, DRAIN_MS);
			return -1;
		}
		sleep_us(500);
	}
	for (uint32_t i = 0; i < CH_PER_TM; i++) {
		struct out_ch *o = &t->out[i];
		struct chan_pub *cp = &sh->ch[o->c];

		atomic_store(&cp->prod_records, o->records);
		atomic_store(&cp->prod_gens, o->gens_closed);
		atomic_store(&cp->prod_final, 1);
	}
	return 0;
}

/* ---- the consumer --------------------------------------------------------------- */

static int check_record(struct tmgr *t, struct in_ch *in, const uint8_t *r, uint32_t len)
{
	uint64_t key = rec_key(in->c, in->gen, in->expect);
	uint32_t want = rec_size(key);

	if (len >= REC_HDR) {
		uint32_t hc, hg, hl, hs;
		uint64_t hq;

		memcpy(&hc, r, 4);
		memcpy(&hg, r + 4, 4);
		memcpy(&hq, r + 8, 8);
		memcpy(&hl, r + 16, 4);
		memcpy(&hs, r + 20, 4);
		if (hc != in->c || hg != in->gen || hq != in->expect) {
			const char *what = hc != in->c	     ? "from another channel"
					   : hg < in->gen    ? "of an ended generation"
					   : hg > in->gen    ? "of a later generation"
					   : hq < in->expect ? "duplicated"
							     : "after a gap (lost)";

			tm_fail(t,
				"channel %u: record (channel %u, generation %u, sequence %" PRIu64
				", %u bytes) where generation %u sequence %" PRIu64 " was due: %s",
				in->c, hc, hg, hq, len, in->gen, in->expect, what);
			return -1;
		}
		if (hl != len || len != want || sum32(r + REC_HDR, len - REC_HDR) != hs) {
			tm_fail(t,
				"channel %u generation %u sequence %" PRIu64
				": %u bytes (header says %u, %u due) or checksum differs",
				in->c, in->gen, in->expect, len, hl, want);
			return -1;
		}
	} else {
		int ok = len == want;

		for (uint32_t i = 0; ok && i < len; i++)
			ok = r[i] == short_byte(key, i);
		if (!ok) {
			tm_fail(t,
				"channel %u generation %u sequence %" PRIu64
				": a record of %u bytes where %u were due, or its bytes differ",
				in->c, in->gen, in->expect, len, want);
			return -1;
		}
	}
	in->in_gen = 1;
	in->expect++;
	in->records++;
	return 0;
}

static int check_event(struct tmgr *t, struct in_ch *in, const struct fdx_view *v)
{
	struct evp e = {0};

	if (v->len == EV_LEN)
		memcpy(&e, v->data, EV_LEN);
	switch (v->event_type) {
	case FDX_EVENT_END_OF_PARTITION:
		if (v->len == EV_LEN && (e.c != in->c || e.gen != in->gen || e.seq != in->expect)) {
			tm_fail(t,
				"channel %u: end of generation %u (channel %u) after %" PRIu64
				" records where generation %u ended after %" PRIu64 " records",
				in->c, e.gen, e.c, e.seq, in->gen, in->expect);
			return -1;
		}
		if (v->len != EV_LEN && v->len != 0) {
			tm_fail(t, "channel %u: end of partition with a %u-byte payload", in->c,
				v->len);
			return -1;
		}
		in->gens++;
		in->gen++;
		in->in_gen = 0;
		in->expect = 0;
		atomic_store_explicit(&sh->ch[in->c].cons_gens, in->gens, memory_order_relaxed);
		return 0;
	case FDX_EVENT_WATERMARK:
		if (v->len != EV_LEN || e.c != in->c || e.gen != in->gen || e.seq != in->expect ||
		    v->event_flags) {
			tm_fail(t,
				"channel %u: watermark (channel %u, generation %u, after %" PRIu64
				" records) where generation %u had %" PRIu64 " records",
				in->c, e.c, e.gen, e.seq, in->gen, in->expect);
			return -1;
		}
		return 0;
	case FDX_EVENT_BARRIER:
		/* A priority event overtakes data, never what came before its generation. */
		if (v->len != EV_LEN || e.c != in->c || e.gen < in->gen ||
		    (e.gen == in->gen && e.seq < in->expect)) {
			tm_fail(t,
				"channel %u: priority barrier (channel %u, generation %u, after %" PRIu64
				" records) where generation %u had %" PRIu64 " records",
				in->c, e.c, e.gen, e.seq, in->gen, in->expect);
			return -1;
		}
		return 0;
	default:
		tm_fail(t, "channel %u: an event of type %u", in->c, v->event_type);
		return -1;
	}
}

static int release_held(struct tmgr *t, uint32_t i)
{
	struct held *h = &t->held[i];
	uint64_t hash = hash_bytes(h->v.data, h->v.len);
	int err;

	if (hash != h->hash) {
		tm_fail(t,
			"channel %u generation %u: a buffer view (%u bytes) changed while we held "
			"it: its segment was reused before we released it",
			h->c, h->gen, h->v.len);
		return -1;
	}
	err = fdx_gate_release(t->gate, &h->v);
	if (err) {
		tm_fail(t, "release of a kept view: %s", fdx_strerror(err));
		return -1;
	}
	t->held[i] = t->held[--t->n_held];
	return 0;
}

static int release_all(struct tmgr *t)
{
	while (t->n_held)
		if (release_held(t, rnd(&t->rng_cons, t->n_held)))
			return -1;
	return 0;
}

static struct in_ch *in_of(struct tmgr *t, const struct fdx_view *v)
{
	if (v->channel >= CH_PER_TM) {
		tm_fail(t, "a view of input channel %u of a gate of %u", v->channel, CH_PER_TM);
		return NULL;
	}
	return &t->in[v->channel];
}

/* One view: check it, then release it or keep it. */
static int consume_view(struct tmgr *t, struct fdx_view *v)
{
	struct in_ch *in = in_of(t, v);
	const void *rec;
	uint32_t len;
	int err;

	if (!in) {
		fdx_gate_release(t->gate, v);
		return -1;
	}
	if (v->kind == FDX_VIEW_FAILED) {
		tm_fail(t, "channel %u (generation %u) failed: %s: %s", in->c, in->gen,
			fdx_strerror(v->error), v->message ? v->message : "");
		fdx_gate_release(t->gate, v);
		return -1;
	}
	if (v->kind == FDX_VIEW_EVENT) {
		err = check_event(t, in, v);
		fdx_gate_release(t->gate, v);
		return err;
	}
	while ((err = fdx_gate_next_record(t->gate, v, &rec, &len)) == 1) {
		if (check_record(t, in, rec, len)) {
			fdx_gate_release(t->gate, v);
			return -1;
		}
		add(&t->pub->rec_in, 1);
		add(&t->pub->bytes_in, len);
	}
	atomic_store_explicit(&sh->ch[in->c].cons_records, in->records, memory_order_relaxed);
	if (err < 0) {
		tm_fail(t, "channel %u generation %u: next_record: %s", in->c, in->gen,
			fdx_strerror(err));
		fdx_gate_release(t->gate, v);
		return -1;
	}
	if (rnd(&t->rng_cons, 4) == 0) { /* keep it a while */
		if (t->n_held == MAX_HELD && release_held(t, rnd(&t->rng_cons, MAX_HELD))) {
			fdx_gate_release(t->gate, v);
			return -1;
		}
		t->held[t->n_held].v = *v;
		t->held[t->n_held].hash = hash_bytes(v->data, v->len);
		t->held[t->n_held].c = in->c;
		t->held[t->n_held].gen = in->gen;
		t->n_held++;
		add(&t->pub->held_kept, 1);
		raise_max(&t->pub->held_max, t->n_held);
		return 0;
	}
	err = fdx_gate_release(t->gate, v);
	if (err) {
		tm_fail(t, "release: %s", fdx_strerror(err));
		return -1;
	}
	return 0;
}

/* Every input channel ended its producer's last generation. */
static int inputs_done(struct tmgr *t)
{
	for (uint32_t i = 0; i < CH_PER_TM; i++) {
		struct in_ch *in = &t->in[i];
		struct chan_pub *cp = &sh->ch[in->c];

		if (!atomic_load(&cp->prod_final) || in->in_gen ||
		    in->gens != atomic_load(&cp->prod_gens))
			return 0;
	}
	return 1;
}

static void dump_inputs(struct tmgr *t)
{
	for (uint32_t i = 0; i < CH_PER_TM; i++) {
		struct in_ch *in = &t->in[i];
		struct chan_pub *cp = &sh->ch[in->c];
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		fdx_gate_channel_stats(t->gate, i, &cs);
		fprintf(stderr,
			"fdx-soak: tm%u: input %2u = channel %2u from tm%u: generation %u%s, "
			"%" PRIu64 " records, %" PRIu64 " generations ended; producer %s %" PRIu64
			" generations; link %u held %u backlog %u unannounced %u error %d\n",
			t->id, i, in->c, ch_prod(in->c), in->gen, in->in_gen ? " (open)" : "",
			in->records, in->gens, atomic_load(&cp->prod_final) ? "ended after" : "at",
			atomic_load(&cp->prod_final) ? atomic_load(&cp->prod_gens) : 0, cs.link,
			cs.held, cs.backlog, cs.unannounced, cs.error);
	}
}

static void *consumer_main(void *arg)
{
	struct tmgr *t = arg;
	uint64_t next_stall = now_ns() + ms_ns(50 + rnd(&t->rng_cons, 250)), stop_at = 0;

	while (!tm_failed(t)) {
		uint64_t now = now_ns();
		struct fdx_view v;
		int err;

		if (phase() >= PH_STOP) {
			if (!stop_at)
				stop_at = now;
			if (inputs_done(t))
				break;
			if (now - stop_at > ms_ns(DRAIN_MS)) {
				dump_inputs(t);
				tm_fail(t, "inputs not ended %u ms after the run", DRAIN_MS);
				break;
			}
		}
		if (now >= next_stall) {
			/* A slow operator: sleep with the views we hold. */
			uint32_t ms = rnd(&t->rng_cons, 10) ? 1 + rnd(&t->rng_cons, 40)
							    : 100 + rnd(&t->rng_cons, 300);

			add(&t->pub->stalls, 1);
			add(&t->pub->stall_ms, ms);
			if (ms >= 100)
				add(&t->pub->long_stalls, 1);
			sleep_us((long)ms * 1000);
			if (release_all(t))
				break;
			next_stall = now_ns() + ms_ns(20 + rnd(&t->rng_cons, 400));
			continue;
		}
		err = fdx_gate_next(t->gate, &v, 10);
		if (err == -EAGAIN) {
			if (release_all(t))
				break;
			continue;
		}
		if (err) {
			tm_fail(t, "fdx_gate_next: %s", fdx_strerror(err));
			break;
		}
		if (consume_view(t, &v))
			break;
	}
	release_all(t);
	atomic_store(&t->pub->cons_done, 1);
	return NULL;
}

/* ---- sampling ----------------------------------------------------------------- */

static void *sampler_main(void *arg)
{
	struct tmgr *t = arg;
	struct sample *s = &sh->samples[(size_t)t->id * sh->max_samples];
	uint64_t next;

	/*
	 * Data sockets are made on first use, one per peer and link, and then
	 * kept: samples start once every TM has opened a channel of each link to
	 * each peer, so that the first 10% are not a ramp of sockets being made.
	 */
	for (;;) {
		int warm = 1;

		for (uint32_t i = 0; i < N_TM; i++)
			warm &= atomic_load(&sh->tm[i].warm);
		if (warm || phase() != PH_RUN || tm_failed(t))
			break;
		sleep_us(1000);
	}
	next = now_ns();
	while (phase() == PH_RUN && !tm_failed(t)) {
		uint32_t n = atomic_load(&t->pub->n_samples);

		if (n < sh->max_samples) {
			int fds = test_count_fds();

			read_mem(&s[n]);
			s[n].fds = fds < 0 ? 0 : (uint32_t)fds;
			s[n].open_out = atomic_load(&t->pub->open_out);
			atomic_store(&t->pub->n_samples, n + 1);
		}
		next += ms_ns(SAMPLE_MS);
		while (now_ns() < next && phase() == PH_RUN)
			sleep_us(5000);
	}
	return NULL;
}

/* ---- the TM's life --------------------------------------------------------------- */

static void tm_stats(struct tmgr *t)
{
	struct fdx_gate_stats gs = {.size = sizeof(gs)};

	if (t->gate && fdx_gate_stats(t->gate, &gs) == 0) {
		atomic_store(&t->pub->bytes_reassembled, gs.bytes_reassembled);
		atomic_store(&t->pub->bytes_copied_in, gs.bytes_copied);
	}
	if (t->static_part) {
		struct fdx_partition_stats ps = {.size = sizeof(ps)};

		if (fdx_partition_stats(t->static_part, &ps) == 0)
			add(&t->pub->bytes_copied_out, ps.bytes_copied);
	}
}

/* Publish where every channel of ours stands (our threads are done with them). */
static void tm_states(struct tmgr *t)
{
	for (uint32_t i = 0; i < CH_PER_TM; i++) {
		struct out_ch *o = &t->out[i];
		struct in_ch *in = &t->in[i];
		struct chan_state *so = &sh->ch[o->c].out, *si = &sh->ch[in->c].in;
		struct fdx_channel_stats cs = {.size = sizeof(cs)};
		struct fdx_input_channel_stats is = {.size = sizeof(is)};
		struct fdx_gate_stats gs = {.size = sizeof(gs)};

		so->state = o->state;
		so->gen = o->gen;
		so->seq = o->seq;
		if (o->part && fdx_partition_channel_stats(o->part, o->sub, &cs) == 0) {
			so->link = cs.link;
			so->in_flight = cs.in_flight;
			so->backlog = cs.backlog;
			so->credit = cs.credit;
			so->sent = cs.buffers_sent;
			so->granted = cs.credits_granted;
			so->error = cs.error;
		}
		so->set = 1;
		si->gen = in->gen;
		si->seq = in->expect;
		si->state = (uint32_t)in->in_gen;
		if (t->gate && fdx_gate_channel_stats(t->gate, i, &is) == 0) {
			si->link = is.link;
			si->backlog = is.backlog;
			si->held = is.held;
			si->unannounced = is.unannounced;
			si->granted = is.credits_announced;
			si->received = is.buffers_received;
			si->error = is.error;
		}
		if (t->gate && fdx_gate_stats(t->gate, &gs) == 0)
			si->open = gs.channels_open;
		si->set = 1;
	}
}

static int wait_phase(struct tmgr *t, int want, uint32_t ms)
{
	uint64_t deadline = now_ns() + ms_ns(ms);

	while (phase() < want) {
		if (phase() == PH_ABORT)
			return -1;
		if (now_ns() > deadline) {
			tm_fail(t, "phase %d did not come within %u ms", want, ms);
			return -1;
		}
		sleep_us(2000);
	}
	return phase() == PH_ABORT ? -1 : 0;
}

static int tm_main(uint32_t id)
{
	struct tmgr *t = calloc(1, sizeof(*t));
	struct fdx_nbp_opts no = {.size = sizeof(no), .seg_size = SEG_SIZE, .seg_count = NBP_SEGS};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = GATE_POOL, .max = GATE_POOL};
	struct fdx_exchange_opts eo = {.size = sizeof(eo)};
	struct fdx_gate_opts go = {.size = sizeof(go),
				   .gate = GATE_ID,
				   .n_channels = CH_PER_TM,
				   .exclusive_credits = EXCLUSIVE,
				   .floating_credits = FLOATING};
	pthread_t cons_thr, samp_thr;
	int cons_up = 0, samp_up = 0, err;
	char listen[128], tm_id[32];

	if (!t)
		return 1;
	t->id = id;
	t->pub = &sh->tm[id];
	pthread_mutex_init(&t->log_lock, NULL);
	t->rng_prod = mix64(cfg.seed ^ (0x1000 + id));
	t->rng_cons = mix64(cfg.seed ^ (0x2000 + id));
	atomic_store(&t->pub->pid, (int)getpid());
	atomic_store(&t->pub->fds_before, test_count_fds());
	for (uint32_t c = 0; c < N_CH; c++) {
		if (ch_prod(c) == id) {
			struct out_ch *o = &t->out[ch_k(c)];

			o->c = c;
			o->k = ch_k(c);
			o->cons = ch_cons(c);
			o->gch = ch_gate_channel(c);
			o->is_static = o->k < N_STATIC;
		}
		if (ch_cons(c) == id)
			t->in[ch_gate_channel(c)].c = c;
	}
	t->tmp = malloc(REC_MAX);
	if (!t->tmp) {
		tm_fail(t, "out of memory");
		goto out;
	}
	no.log_fn = log_sink;
	no.log_ud = t;
	snprintf(listen, sizeof(listen), "unix:%s/tm-%u.sock", sock_dir, id);
	snprintf(tm_id, sizeof(tm_id), "soak-tm%u", id);
	eo.listen = listen;
	eo.tm_id = tm_id;
	eo.log_fn = log_sink;
	eo.log_ud = t;
	err = fdx_nbp_create(&no, &t->nbp);
	if (!err)
		err = fdx_lbp_create(t->nbp, &lo, &t->gate_pool);
	if (err) {
		tm_fail(t, "buffer pools: %s", fdx_strerror(err));
		goto out;
	}
	atomic_store(&t->pub->region_bytes, fdx_region_size(fdx_nbp_region(t->nbp)));
	atomic_store(&t->pub->hugetlb, fdx_region_is_hugetlb(fdx_nbp_region(t->nbp)));
	err = fdx_exchange_create(&eo, &t->ex);
	if (err) {
		tm_fail(t, "fdx_exchange_create(%s): %s", listen, fdx_strerror(err));
		goto out;
	}
	err = fdx_gate_create(t->ex, t->gate_pool, &go, &t->gate);
	if (err) {
		tm_fail(t, "fdx_gate_create: %s", fdx_strerror(err));
		goto out;
	}
	snprintf(t->pub->addr, sizeof(t->pub->addr), "%s", fdx_exchange_address(t->ex));
	atomic_store(&t->pub->ready, 1);
	if (wait_phase(t, PH_RUN, SETUP_MS))
		goto out;
	if (pthread_create(&cons_thr, NULL, consumer_main, t)) {
		tm_fail(t, "consumer thread: cannot start");
		goto out;
	}
	cons_up = 1;
	if (pthread_create(&samp_thr, NULL, sampler_main, t)) {
		tm_fail(t, "sampler thread: cannot start");
		goto out;
	}
	samp_up = 1;
	if (static_open(t) || producer_run(t) || producer_stop(t))
		goto out;
	atomic_store(&t->pub->prod_done, 1);
out:
	if (cons_up)
		pthread_join(cons_thr, NULL);
	if (samp_up)
		pthread_join(samp_thr, NULL);
	tm_stats(t);
	tm_states(t);
	/* Peers may still wait for our credit: keep everything up until all are done. */
	if (!tm_failed(t))
		wait_phase(t, PH_TEARDOWN, DRAIN_MS + TEARDOWN_MS);
	for (uint32_t i = 0; i < CH_PER_TM; i++) {
		struct out_ch *o = &t->out[i];

		if (!o->is_static) {
			fdx_partition_destroy(o->part);
			fdx_lbp_destroy(o->lbp);
		}
	}
	fdx_partition_destroy(t->static_part);
	fdx_gate_destroy(t->gate);
	fdx_exchange_destroy(t->ex);
	fdx_lbp_destroy(t->static_pool);
	fdx_lbp_destroy(t->gate_pool);
	if (fdx_nbp_destroy(t->nbp))
		tm_fail(t, "fdx_nbp_destroy: LocalBufferPools still alive");
	free(t->tmp);
	atomic_store(&t->pub->fds_after, test_count_fds());
	err = atomic_load(&t->pub->failed) ? 1 : 0;
	pthread_mutex_destroy(&t->log_lock);
	free(t);
	return err;
}

/* ---- the main process ---------------------------------------------------------------- */

struct flat {
	/* Averages of the first [0] and last [1] 10% of the samples, KiB or descriptors. */
	double rss[2], priv[2], shmem[2], fds[2];
	double shmem_max, shmem_bound;
	uint32_t n, w;
	int ok;
};

static struct flat flatness(uint32_t id)
{
	const struct sample *s = &sh->samples[(size_t)id * sh->max_samples];
	struct flat f = {.n = atomic_load(&sh->tm[id].n_samples)};
	double slack;

	f.w = f.n / 10 ? f.n / 10 : 1;
	f.ok = 1;
	if (f.n < 2)
		return f; /* reported as "no memory samples" */
	for (int part = 0; part < 2; part++) {
		uint32_t from = part ? f.n - f.w : 0;

		for (uint32_t i = from; i < from + f.w; i++) {
			f.rss[part] += s[i].rss_kib;
			f.priv[part] += s[i].anon_kib + s[i].file_kib;
			f.shmem[part] += s[i].shmem_kib;
			f.fds[part] += s[i].fds;
		}
		f.rss[part] /= f.w;
		f.priv[part] /= f.w;
		f.shmem[part] /= f.w;
		f.fds[part] /= f.w;
	}
	for (uint32_t i = 0; i < f.n; i++)
		if (s[i].shmem_kib > f.shmem_max)
			f.shmem_max = s[i].shmem_kib;
	/* Our region and the three peers' we map read-only: nothing else is shared. */
	for (uint32_t i = 0; i < N_TM; i++)
		f.shmem_bound += (double)atomic_load(&sh->tm[i].region_bytes) / 1024;
	slack = f.priv[0] * FLAT_OWN_PCT / 100.0;
	if (slack < FLAT_OWN_KIB)
		slack = FLAT_OWN_KIB;
	f.ok = (!CHECK_OWN_MEMORY || f.priv[1] <= f.priv[0] + slack) &&
	       f.shmem_max <= f.shmem_bound && f.fds[1] <= f.fds[0] + FLAT_FDS;
	return f;
}

static void print_states(void)
{
	static const char *const st[] = {"idle", "open", "closing"};

	printf("  channel states when the TMs stopped (producer | consumer):\n");
	for (uint32_t c = 0; c < N_CH; c++) {
		const struct chan_state *o = &sh->ch[c].out, *in = &sh->ch[c].in;

		printf("    ch%-2u tm%u->tm%u in%-2u | %-7s gen %-3u seq %-6" PRIu64
		       " link %u credit %-2u backlog %-3u in flight %-2u sent %-5" PRIu64
		       " granted %-5" PRIu64 " error %d | gen %-3u%s seq %-6" PRIu64
		       " link %u held %-2u backlog %-3u unannounced %-2u announced %-5" PRIu64
		       " received %-5" PRIu64 " error %d\n",
		       c, ch_prod(c), ch_cons(c), ch_gate_channel(c),
		       o->set ? st[o->state % 3] : "?", o->gen, o->seq, o->link, o->credit,
		       o->backlog, o->in_flight, o->sent, o->granted, o->error, in->gen,
		       in->state ? "+" : " ", in->seq, in->link, in->held, in->backlog,
		       in->unannounced, in->granted, in->received, in->error);
	}
}

static void write_samples(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		fprintf(stderr, "fdx-soak: %s: %s\n", path, strerror(errno));
		return;
	}
	fprintf(f, "tm,s,rss_kib,anon_kib,file_kib,shmem_kib,fds,open\n");
	for (uint32_t i = 0; i < N_TM; i++) {
		const struct sample *s = &sh->samples[(size_t)i * sh->max_samples];

		for (uint32_t k = 0; k < atomic_load(&sh->tm[i].n_samples); k++)
			fprintf(f, "%u,%.1f,%u,%u,%u,%u,%u,%u\n", i, k * SAMPLE_MS / 1000.0,
				s[k].rss_kib, s[k].anon_kib, s[k].file_kib, s[k].shmem_kib,
				s[k].fds, s[k].open_out);
	}
	fclose(f);
}

static pid_t tm_pid[N_TM];
static int tm_status[N_TM], tm_reaped[N_TM];

static void on_signal(int sig)
{
	interrupted = sig;
}

/* A TM that exited before it was told to (a crash), or we were interrupted. */
static int early_exit(char *why, size_t n)
{
	if (interrupted) {
		snprintf(why, n, "interrupted by signal %d", (int)interrupted);
		return 1;
	}
	for (uint32_t i = 0; i < N_TM; i++) {
		if (!tm_reaped[i] && waitpid(tm_pid[i], &tm_status[i], WNOHANG) == tm_pid[i])
			tm_reaped[i] = 1;
		if (tm_reaped[i] && !atomic_load(&sh->tm[i].failed)) {
			if (WIFSIGNALED(tm_status[i]))
				snprintf(why, n, "tm%u died of signal %d (%s)", i,
					 WTERMSIG(tm_status[i]), strsignal(WTERMSIG(tm_status[i])));
			else
				snprintf(why, n, "tm%u exited early (status %d)", i,
					 WEXITSTATUS(tm_status[i]));
			return 1;
		}
	}
	return 0;
}

/* Wait for TM i until deadline; kill it after that. Its exit code, or -1. */
static int reap(uint32_t i, uint64_t deadline, int *killed)
{
	while (!tm_reaped[i]) {
		pid_t r = waitpid(tm_pid[i], &tm_status[i], WNOHANG);

		if (r == tm_pid[i]) {
			tm_reaped[i] = 1;
			break;
		}
		if (r < 0)
			return -1;
		if (now_ns() > deadline) {
			kill(tm_pid[i], SIGKILL);
			waitpid(tm_pid[i], &tm_status[i], 0);
			tm_reaped[i] = 1;
			*killed = 1;
			return -1;
		}
		sleep_us(5000);
	}
	return WIFEXITED(tm_status[i]) ? WEXITSTATUS(tm_status[i]) : -1;
}

static int any_failed(void)
{
	for (uint32_t i = 0; i < N_TM; i++)
		if (atomic_load(&sh->tm[i].failed))
			return 1;
	return 0;
}

/* Every TM's failure, first first: "tmN: what; tmM: what". */
static void failures(char *why, size_t n)
{
	int done[N_TM] = {0};
	size_t used = 0;

	why[0] = 0;
	for (uint32_t k = 0; k < N_TM; k++) {
		int first = -1;

		for (uint32_t i = 0; i < N_TM; i++)
			if (!done[i] && atomic_load(&sh->tm[i].failed) &&
			    (first < 0 ||
			     atomic_load(&sh->tm[i].fail_ns) < atomic_load(&sh->tm[first].fail_ns)))
				first = (int)i;
		if (first < 0)
			break;
		done[first] = 1;
		if (used < n)
			used += (size_t)snprintf(why + used, n - used, "%stm%d: %s",
						 used ? "; " : "", first, sh->tm[first].err);
	}
}

static void progress(uint64_t t0)
{
	printf("  %5.1f s |", (double)(now_ns() - t0) / 1e9);
	for (uint32_t i = 0; i < N_TM; i++) {
		struct tm_pub *p = &sh->tm[i];
		uint32_t n = atomic_load(&p->n_samples);
		const struct sample *s =
			n ? &sh->samples[(size_t)i * sh->max_samples + n - 1] : NULL;

		printf(" tm%u %7.2f Mrec %5" PRIu64 " gen %2u open %5.1f MiB %3u fd |", i,
		       (double)atomic_load(&p->rec_in) / 1e6, atomic_load(&p->gens_closed),
		       atomic_load(&p->open_out), s ? s->rss_kib / 1024.0 : 0.0, s ? s->fds : 0);
	}
	printf("\n");
}

static void usage(FILE *f)
{
	fputs("usage: fdx-soak [--seconds S] [--seed N] [--verbose] [--samples FILE]\n"
	      "  --seconds S  how long the load runs, 1..86400 (default 30); draining and\n"
	      "               teardown come after\n"
	      "  --seed N     the random choices (default: from the clock; always printed)\n"
	      "  --verbose    a progress line every second (else every 5 s) and fdx's messages\n"
	      "  --samples FILE  write every memory sample as CSV (tm, s, KiB: rss, anon, file,\n"
	      "               shmem; fds, channels open)\n",
	      f);
}

static int bad_arg(const char *what, const char *arg)
{
	fprintf(stderr, "fdx-soak: %s: '%s'\n", what, arg);
	usage(stderr);
	return 2;
}

static int parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{"seconds", required_argument, NULL, 's'},
		{"seed", required_argument, NULL, 'r'},
		{"verbose", no_argument, NULL, 'v'},
		{"samples", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char *end;
	int opt;

	cfg.seconds = 30;
	cfg.seed = mix64((uint64_t)time(NULL) ^ now_ns() ^ (uint64_t)getpid() << 32);
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":s:r:vm:h", lo, NULL)) != -1) {
		switch (opt) {
		case 's':
			errno = 0;
			cfg.seconds = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(cfg.seconds >= 1) ||
			    cfg.seconds > 86400)
				return bad_arg("--seconds wants a number from 1 to 86400", optarg);
			break;
		case 'r':
			errno = 0;
			cfg.seed = strtoull(optarg, &end, 0);
			if (errno || end == optarg || *end || optarg[0] == '-')
				return bad_arg("--seed wants a whole number from 0 to 2^64 - 1",
					       optarg);
			break;
		case 'v':
			cfg.verbose = 1;
			break;
		case 'm':
			cfg.samples = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			fprintf(stderr, "fdx-soak: option '%s' needs a value\n", argv[optind - 1]);
			usage(stderr);
			return 2;
		default:
			fprintf(stderr, "fdx-soak: unknown option '%s'\n", argv[optind - 1]);
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		return bad_arg("unexpected argument", argv[optind]);
	return 0;
}

static void cleanup_dir(void)
{
	char path[128];

	for (uint32_t i = 0; i < N_TM; i++) {
		snprintf(path, sizeof(path), "%s/tm-%u.sock", sock_dir, i);
		unlink(path);
		snprintf(path, sizeof(path), "%s/tm-%u.sock.data", sock_dir, i);
		unlink(path);
	}
	if (rmdir(sock_dir) < 0 && errno != ENOENT)
		fprintf(stderr, "fdx-soak: cannot remove %s: %s\n", sock_dir, strerror(errno));
}

int main(int argc, char **argv)
{
	pid_t *pid = tm_pid;
	int rc[N_TM], killed[N_TM] = {0};
	uint64_t t0, end, deadline, last_progress;
	size_t map_len;
	uint32_t max_samples;
	int ok = 1, all_ready;
	char why[4096] = "";
	uint64_t rec_tot = 0, bytes_tot = 0, gens_tot = 0;

	rc[0] = parse_args(argc, argv);
	if (rc[0])
		return rc[0];
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Interrupted: stop the TMs and remove our directory, as after a failure. */
	{
		struct sigaction sa = {.sa_handler = on_signal};

		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
	}
	max_samples = (uint32_t)(cfg.seconds * (1000.0 / SAMPLE_MS)) + 64;
	map_len = sizeof(*sh) + (size_t)N_TM * max_samples * sizeof(struct sample);
	sh = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("fdx-soak: mmap");
		return 1;
	}
	sh->max_samples = max_samples;
	snprintf(sock_dir, sizeof(sock_dir), "/tmp/fdx-soak-XXXXXX");
	if (!mkdtemp(sock_dir)) {
		perror("fdx-soak: mkdtemp");
		return 1;
	}
	printf("fdx-soak: seed %" PRIu64 " (replay: fdx-soak --seconds %g --seed %" PRIu64 ")\n",
	       cfg.seed, cfg.seconds, cfg.seed);
	printf("  %u TaskManagers, %u channels (%u long-lived, %u opened and closed at random), "
	       "links local/shm/tcp; records 0..%u bytes; buffers %u KiB; credits %u exclusive "
	       "+ %u floating; %g s\n",
	       N_TM, N_CH, N_TM * N_STATIC, N_TM * (CH_PER_TM - N_STATIC), REC_MAX, SEG_SIZE / 1024,
	       EXCLUSIVE, FLOATING, cfg.seconds);
	fflush(stdout);
	fflush(stderr);
	for (uint32_t i = 0; i < N_TM; i++) {
		pid[i] = fork();
		if (pid[i] == 0) {
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
			exit(tm_main(i)); /* exit, not _exit: LeakSanitizer checks at exit */
		}
		if (pid[i] < 0) {
			perror("fdx-soak: fork");
			atomic_store(&sh->phase, PH_ABORT);
			for (uint32_t j = 0; j < i; j++)
				reap(j, now_ns() + ms_ns(TEARDOWN_MS), &killed[j]);
			cleanup_dir();
			return 1;
		}
	}
	/* Setup: every TM serving and its gate registered. */
	deadline = now_ns() + ms_ns(SETUP_MS);
	do {
		all_ready = 1;
		for (uint32_t i = 0; i < N_TM; i++)
			all_ready &= atomic_load(&sh->tm[i].ready);
		if (all_ready || any_failed() || early_exit(why, sizeof(why)))
			break;
		sleep_us(2000);
	} while (now_ns() < deadline);
	if (!all_ready) {
		if (any_failed())
			failures(why, sizeof(why));
		else if (!why[0])
			snprintf(why, sizeof(why), "the TaskManagers did not start within %u ms",
				 SETUP_MS);
		ok = 0;
	}
	/* The run. */
	t0 = now_ns();
	end = t0 + (uint64_t)(cfg.seconds * 1e9);
	atomic_store(&sh->run_t0, t0);
	last_progress = t0;
	if (ok) {
		atomic_store(&sh->phase, PH_RUN);
		while (now_ns() < end && !any_failed() && !early_exit(why, sizeof(why))) {
			sleep_us(20000);
			if (now_ns() - last_progress >= ms_ns(cfg.verbose ? 1000 : 5000)) {
				last_progress += ms_ns(cfg.verbose ? 1000 : 5000);
				progress(t0);
			}
		}
		if (any_failed())
			failures(why, sizeof(why));
		ok = !why[0];
	}
	/* Drain: producers end their channels, consumers take everything. */
	if (ok) {
		int done = 0;

		atomic_store(&sh->phase, PH_STOP);
		deadline = now_ns() + ms_ns(DRAIN_MS + 5000);
		while (!done && !any_failed() && !early_exit(why, sizeof(why)) &&
		       now_ns() < deadline) {
			done = 1;
			for (uint32_t i = 0; i < N_TM; i++)
				done &= atomic_load(&sh->tm[i].prod_done) &&
					atomic_load(&sh->tm[i].cons_done);
			if (!done)
				sleep_us(5000);
		}
		if (!done) {
			if (any_failed())
				failures(why, sizeof(why));
			else if (!why[0])
				snprintf(why, sizeof(why), "draining did not end within %u ms",
					 DRAIN_MS + 5000);
			ok = 0;
		} else {
			printf("  drained %.1f s after the run\n", (double)(now_ns() - end) / 1e9);
		}
	}
	atomic_store(&sh->phase, ok ? PH_TEARDOWN : PH_ABORT);
	deadline = now_ns() + ms_ns(TEARDOWN_MS);
	for (uint32_t i = 0; i < N_TM; i++) {
		rc[i] = reap(i, deadline, &killed[i]);
		if (rc[i] != 0 && ok) {
			snprintf(why, sizeof(why), "tm%u %s (exit %d)", i,
				 killed[i] ? "did not exit in time and was killed" : "failed",
				 rc[i]);
			ok = 0;
		}
	}
	for (uint32_t i = 0; i < N_TM; i++) {
		size_t used = strlen(why);
		char tag[32];

		/* A crash is the news, whatever its peers reported first. */
		snprintf(tag, sizeof(tag), "tm%u died", i);
		if (!killed[i] && WIFSIGNALED(tm_status[i]) && !strstr(why, tag) &&
		    used < sizeof(why))
			snprintf(why + used, sizeof(why) - used, "%stm%u died of signal %d (%s)",
				 used ? "; " : "", i, WTERMSIG(tm_status[i]),
				 strsignal(WTERMSIG(tm_status[i])));
	}
	cleanup_dir();
	if (cfg.samples)
		write_samples(cfg.samples);

	/* The summary. */
	printf("\n== summary (seed %" PRIu64 ", %g s) ==\n", cfg.seed, cfg.seconds);
	for (uint32_t i = 0; i < N_TM; i++) {
		struct tm_pub *p = &sh->tm[i];
		struct flat f = flatness(i);

		printf("  tm%u (pid %d): verified %" PRIu64 " records (%.1f MiB) in, sent %" PRIu64
		       " (%.1f MiB)\n",
		       i, atomic_load(&p->pid), atomic_load(&p->rec_in),
		       (double)atomic_load(&p->bytes_in) / (1 << 20), atomic_load(&p->rec_out),
		       (double)atomic_load(&p->bytes_out) / (1 << 20));
		printf("    channels: %" PRIu64 " generations opened, %" PRIu64
		       " closed (local %" PRIu64 ", shm %" PRIu64 ", tcp %" PRIu64 "), %" PRIu64
		       " ended with their count, %" PRIu64 " reopens retried (busy)\n",
		       atomic_load(&p->gens_opened), atomic_load(&p->gens_closed),
		       atomic_load(&p->links[FDX_LINK_LOCAL]), atomic_load(&p->links[FDX_LINK_SHM]),
		       atomic_load(&p->links[FDX_LINK_TCP]), atomic_load(&p->eop_counted),
		       atomic_load(&p->busy_retries));
		printf("    consumer: %" PRIu64 " stalls (%" PRIu64 " long, %.1f s), %" PRIu64
		       " views kept (up to %" PRIu64 " at once), %.1f MiB reassembled\n",
		       atomic_load(&p->stalls), atomic_load(&p->long_stalls),
		       (double)atomic_load(&p->stall_ms) / 1e3, atomic_load(&p->held_kept),
		       atomic_load(&p->held_max),
		       (double)atomic_load(&p->bytes_reassembled) / (1 << 20));
		printf("    producer: %" PRIu64 " emits timed out (backpressure), %" PRIu64
		       " records in place, %" PRIu64 " watermarks, %" PRIu64 " barriers, %" PRIu64
		       " flushes\n",
		       atomic_load(&p->emit_timeouts), atomic_load(&p->in_place),
		       atomic_load(&p->watermarks), atomic_load(&p->barriers),
		       atomic_load(&p->flushes));
		printf("    tcp copies %.1f MiB out, %.1f MiB in; fdx log: %" PRIu64
		       " errors, %" PRIu64 " warnings\n",
		       (double)atomic_load(&p->bytes_copied_out) / (1 << 20),
		       (double)atomic_load(&p->bytes_copied_in) / (1 << 20),
		       atomic_load(&p->lib_err), atomic_load(&p->lib_warn));
		if (f.n >= 2) {
			printf("    memory (first -> last 10%%, %u of %u samples): RSS %.1f -> %.1f "
			       "MiB = own %.1f -> %.1f MiB%s + regions%s %.1f -> %.1f MiB (at most "
			       "%.1f of %.1f MiB mapped); fds %.1f -> %.1f: %s\n",
			       f.w, f.n, f.rss[0] / 1024, f.rss[1] / 1024, f.priv[0] / 1024,
			       f.priv[1] / 1024, CHECK_OWN_MEMORY ? "" : " (ASan: not checked)",
			       atomic_load(&p->hugetlb) ? " (hugepages: not in RSS)" : "",
			       f.shmem[0] / 1024, f.shmem[1] / 1024, f.shmem_max / 1024,
			       f.shmem_bound / 1024, f.fds[0], f.fds[1], f.ok ? "flat" : "GREW");
			printf("    fds: %" PRId64 " before the exchange, %" PRId64
			       " after teardown (gRPC keeps its process-wide poller)\n",
			       atomic_load(&p->fds_before), atomic_load(&p->fds_after));
		}
		if (p->err[0])
			printf("    error: %s\n", p->err);
		if (ok && !f.ok) {
			snprintf(why, sizeof(why),
				 "tm%u: memory or descriptors grew (own memory %.1f -> %.1f MiB, "
				 "regions at most %.1f of %.1f MiB, fds %.1f -> %.1f)",
				 i, f.priv[0] / 1024, f.priv[1] / 1024, f.shmem_max / 1024,
				 f.shmem_bound / 1024, f.fds[0], f.fds[1]);
			ok = 0;
		}
		if (ok && f.n < 2) {
			snprintf(why, sizeof(why), "tm%u: no memory samples", i);
			ok = 0;
		}
		rec_tot += atomic_load(&p->rec_in);
		bytes_tot += atomic_load(&p->bytes_in);
		gens_tot += atomic_load(&p->gens_closed);
	}
	for (uint32_t c = 0; c < N_CH && ok; c++) {
		struct chan_pub *cp = &sh->ch[c];
		uint64_t pr = atomic_load(&cp->prod_records), cr = atomic_load(&cp->cons_records);
		uint64_t pg = atomic_load(&cp->prod_gens), cg = atomic_load(&cp->cons_gens);

		if (!atomic_load(&cp->prod_final) || pr != cr || pg != cg || pg == 0) {
			snprintf(why, sizeof(why),
				 "channel %u (tm%u -> tm%u): producer sent %" PRIu64
				 " records in %" PRIu64 " generations, consumer verified %" PRIu64
				 " in %" PRIu64,
				 c, ch_prod(c), ch_cons(c), pr, pg, cr, cg);
			ok = 0;
		}
	}
	printf("  total: %" PRIu64 " records, %.2f GiB verified over %u channels, %" PRIu64
	       " generations\n",
	       rec_tot, (double)bytes_tot / (1 << 30), N_CH, gens_tot);
	if (!ok)
		print_states();
	if (ok)
		printf("fdx-soak: OK\n");
	else
		printf("fdx-soak: FAILED: %s (replay: --seconds %g --seed %" PRIu64 ")\n", why,
		       cfg.seconds, cfg.seed);
	return ok ? 0 : 1;
}
