/* SPDX-License-Identifier: MIT */
/*
 * The data plane end to end: a partition (producer) feeding a gate (consumer)
 * over each of the three links. local: both on one exchange in this process,
 * the producer's task on a thread of its own. shm and tcp: the producer is
 * this program re-executed as "child MODE LINK N", forked before the test
 * creates its own exchange. The child reads "addr ADDRESS" on stdin, runs
 * MODE, prints "result rc=0 key=value ..." (in the timeout mode also
 * "timedout ..." once its emits have timed out), then waits for "stop" or EOF
 * and exits 0 only if everything it checked held. Every wait is bounded.
 *
 * Records are generated, never stored: record (channel, seq) of len bytes is
 * a 16-byte header {channel, checksum of the rest, seq} followed by 8-byte
 * words derived from (channel, seq, len); a record shorter than the header is
 * the header's first len bytes. The consumer regenerates what it expects and
 * compares. In the integrity run, what goes to which channel at each step
 * (record, broadcast, reserve/commit, watermark, barrier) is a function of the
 * step, and the consumer replays that plan per channel: every item it takes
 * must be the next one the plan gives that channel.
 */
#ifdef _GNU_SOURCE
/* helpers.h defines it; a build that passes -D_GNU_SOURCE must not see two definitions. */
#undef _GNU_SOURCE
#endif
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <fdx/gate.h>
#include <fdx/partition.h>

/*
 * Steps of the integrity plan (nearly every step is one record; broadcasts
 * add 15 more). FDX_TEST_RECORDS overrides it.
 */
#ifdef TEST_UNDER_ASAN
#define INTEGRITY_RECORDS 300000ull
#else
#define INTEGRITY_RECORDS 2000000ull
#endif
/* Steps of the zero-copy runs: enough for a few hundred spanning records. */
#define ZERO_COPY_RECORDS 30000ull

#define GATE 7u
#define SEG (32u * 1024) /* segment size of every pool here */
#define SEG_COUNT 256u
#define STEP_MS 10000 /* the longest any one emit, connect or next may wait */
#define FINISH_MS 20000 /* the longest finish may wait for its buffers to come back */
#define SCRATCH (5u * SEG) /* the largest record emitted from a buffer */

#define ULL(x) ((unsigned long long)(x))

/* ---- records -------------------------------------------------------------- */

#define HDR 16u
#define BCAST_CH UINT32_MAX /* the channel field of a broadcast record */

struct rec_hdr {
	uint32_t channel;
	uint32_t check; /* of the bytes after the header, folded to 32 bits */
	uint64_t seq;
};
_Static_assert(sizeof(struct rec_hdr) == HDR, "the record header is 16 bytes");

#define WORD_STEP 0x9e3779b97f4a7c15ull
#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t rec_key(uint32_t ch, uint64_t seq, uint32_t len)
{
	return test_mix64(test_mix64(seq) ^ (((uint64_t)ch << 32) | len));
}

static uint32_t fold(uint64_t h)
{
	return (uint32_t)(h ^ (h >> 32));
}

/* Write record (ch, seq) of len bytes at dst. */
static void rec_fill(void *dst, uint32_t len, uint32_t ch, uint64_t seq)
{
	struct rec_hdr hd = {.channel = ch, .seq = seq};
	uint64_t key = rec_key(ch, seq, len), h = FNV_BASIS ^ key, w = 0;
	uint8_t *d = dst;
	uint32_t off = HDR, k = 0;

	for (; off + 8 <= len; off += 8, k++) {
		w = key + k * WORD_STEP;
		memcpy(d + off, &w, 8);
		h = (h ^ w) * FNV_PRIME;
	}
	if (off < len) {
		uint64_t t = 0;

		w = key + k * WORD_STEP;
		for (uint32_t i = 0; off + i < len; i++) {
			d[off + i] = (uint8_t)(w >> (8 * i));
			t |= (uint64_t)d[off + i] << (8 * i);
		}
		h = (h ^ t) * FNV_PRIME;
	}
	hd.check = fold(h);
	memcpy(d, &hd, len < HDR ? len : HDR);
}

/*
 * 0 if rec is record (ch, seq) of len bytes; otherwise -1 with what is wrong
 * in why. The checksum is computed over the bytes received, then the bytes are
 * compared with the regenerated record.
 */
static int rec_check(const void *rec, uint32_t len, uint32_t ch, uint64_t seq, char *why, size_t n)
{
	struct rec_hdr hd, want = {.channel = ch, .seq = seq};
	uint64_t key = rec_key(ch, seq, len), h = FNV_BASIS ^ key, w;
	const uint8_t *r = rec;
	uint32_t off = HDR, k = 0, bad = UINT32_MAX;

	for (; off + 8 <= len; off += 8, k++) {
		memcpy(&w, r + off, 8);
		if (w != key + k * WORD_STEP && bad == UINT32_MAX)
			bad = off;
		h = (h ^ w) * FNV_PRIME;
	}
	if (off < len) {
		uint64_t t = 0;

		w = key + k * WORD_STEP;
		for (uint32_t i = 0; off + i < len; i++) {
			if (r[off + i] != (uint8_t)(w >> (8 * i)) && bad == UINT32_MAX)
				bad = off + i;
			t |= (uint64_t)r[off + i] << (8 * i);
		}
		h = (h ^ t) * FNV_PRIME;
	}
	if (len < HDR) {
		want.check = fold(h);
		if (memcmp(r, &want, len) == 0)
			return 0;
		snprintf(why, n, "a %u-byte record differs from the first bytes of its header",
			 len);
		return -1;
	}
	memcpy(&hd, r, HDR);
	if (hd.channel != ch || hd.seq != seq)
		snprintf(why, n, "the header names record (%u, %llu), expected (%u, %llu)",
			 hd.channel, ULL(hd.seq), ch, ULL(seq));
	else if (hd.check != fold(h))
		snprintf(why, n, "checksum %#x in the header, %#x over the %u bytes after it",
			 hd.check, fold(h), len - HDR);
	else if (bad != UINT32_MAX)
		snprintf(why, n, "byte %u of %u differs from the regenerated record", bad, len);
	else
		return 0;
	return -1;
}

/* ---- the integrity plan --------------------------------------------------- */

#define N_CH 16u
#define WM_EVERY 2048u /* a watermark every this many steps */
#define BARRIER_EVERY 50000u /* a barrier on every channel every this many steps */
#define BCAST_ONE_IN 2048u /* about one step in this many broadcasts */

enum act_kind { ACT_RECORD = 1, ACT_BROADCAST, ACT_WATERMARK, ACT_BARRIER };

/* What the producer does at one step. */
struct act {
	uint32_t kind; /* enum act_kind */
	uint32_t ch; /* the subpartition, or N_CH for all */
	uint32_t len; /* records: the length */
	uint32_t room; /* ACT_RECORD: > 0 to reserve this much, write in place, commit len */
};

/* 0 .. 100 KiB, mostly small; about one in 300 spans two or more 32 KiB buffers. */
static uint32_t rec_len(uint64_t h)
{
	uint32_t r = (uint32_t)(h % 1000);
	uint64_t x = h >> 10;

	if (r < 5) /* 0.5 %: 16 .. 100 KiB */
		return 16384 + (uint32_t)(x % (102400 - 16384 + 1));
	if (r < 100) /* 9.5 %: 2 .. 8 KiB */
		return 2048 + (uint32_t)(x % (6 * 1024));
	if (r < 120) /* 2 %: 0 .. 15 bytes, shorter than the header */
		return (uint32_t)(x % HDR);
	return HDR + (uint32_t)(x % (2048 - HDR)); /* 88 %: 16 B .. 2 KiB */
}

static void plan(uint64_t s, struct act *a)
{
	uint64_t h = test_mix64(s ^ 0x5eedull);

	memset(a, 0, sizeof(*a));
	if (s % BARRIER_EVERY == BARRIER_EVERY - 1) {
		a->kind = ACT_BARRIER;
		a->ch = N_CH;
	} else if (s % WM_EVERY == WM_EVERY - 1) {
		a->kind = ACT_WATERMARK;
		a->ch = (uint32_t)(h % (N_CH + 1));
	} else if (h % BCAST_ONE_IN == 0) {
		a->kind = ACT_BROADCAST;
		a->ch = N_CH;
		a->len = rec_len(test_mix64(h));
	} else {
		a->kind = ACT_RECORD;
		a->ch = (uint32_t)((h >> 16) % N_CH);
		a->len = rec_len(test_mix64(h));
		if (a->len <= 2048 && ((h >> 32) & 7) == 0)
			a->room = a->len + (uint32_t)((h >> 40) % 64);
	}
}

/* The checkpoint id a barrier step carries; a watermark carries its step. */
static uint64_t barrier_id(uint64_t s)
{
	return s / BARRIER_EVERY + 1;
}

static uint64_t integrity_records(void)
{
	const char *e = getenv("FDX_TEST_RECORDS");
	uint64_t n = e ? strtoull(e, NULL, 10) : 0;

	return n ? n : INTEGRITY_RECORDS;
}

/* ---- scenarios and links -------------------------------------------------- */

enum mode {
	MODE_INTEGRITY = 1,
	MODE_PRIORITY,
	MODE_BACKPRESSURE,
	MODE_TIMEOUT,
	MODE_ARGS,
	MODE_DESTROY,
	MODE_REUSE,
	MODE_COUNT,
};

/* Both sides of a mode: the gate's options and both pools. */
struct scenario {
	const char *name;
	uint32_t n_ch; /* gate channels = subpartitions */
	uint32_t exclusive; /* gate option values */
	uint32_t floating;
	uint32_t prod_pool; /* the producer's LocalBufferPool max */
	uint32_t gate_pool; /* the gate's LocalBufferPool max (tcp) */
	uint32_t inplace; /* gate option: credit of a shm or local channel */
};

/* Priority: one credit; the first buffer goes, PRIO_QUEUED wait behind it. */
#define PRIO_QUEUED 4u
#define PRIO_LAST (PRIO_QUEUED + 1) /* the record emitted after the barrier */
#define PRIO_BARRIER_ID 42u
#define PRIO_VIEWS 64

/*
 * Backpressure: 4 channels of 2 + 4 credits (tcp), 8 each on shm and local
 * (in place), 16 producer segments.
 */
#define BP_CH 4u
#define BP_EXCL 2u
#define BP_FLOAT 4u
#define BP_INPLACE 8u
#define BP_POOL 16u
#define BP_RECORDS 4800u /* about 600 buffers: 1.2 s at 2 ms each */
#define BP_SLEEP_US 2000

/* Timeout: 8 producer segments, 2 credits, never released until told. */
#define TO_POOL 8u
#define TO_SMALL 1024u
#define TO_SPAN (4u * SEG + SEG / 2) /* more than the pool can ever free at once */
#define TO_AFTER 100u
#define TO_HELD 64

/*
 * Destroy right after finish: record i of DR_RECORDS goes to channel
 * dr_channel(i), dr_len(i) bytes long (about one in 64 spans two to four
 * buffers). The second producer of those channels sends records REUSE_FIRST..
 * REUSE_FIRST + REUSE_RECORDS - 1 of the same kind.
 */
#define DR_CH 2u
#define DR_RECORDS 3000u
#define DR_MIN_SPANNING 10u /* the run must have had records spanning buffers */
#define REUSE_FIRST 1000000u
#define REUSE_RECORDS 60u

static uint32_t dr_channel(uint64_t i)
{
	return (uint32_t)(test_mix64(i ^ 0xd35ull) >> 17) & 1u;
}

static uint32_t dr_len(uint64_t i)
{
	uint64_t h = test_mix64(i ^ 0x1e4ull);

	if (h % 64 == 0) /* 33 KiB .. 97 KiB: two to four buffers */
		return SEG + 1000 + (uint32_t)((h >> 8) % (2 * SEG));
	return (uint32_t)((h >> 8) % 3000); /* 0 .. 2999 bytes, some shorter than the header */
}

static const struct scenario scenarios[MODE_COUNT] = {
	[MODE_INTEGRITY] = {"integrity", N_CH, 2, 8, 64, 48, 0},
	[MODE_PRIORITY] = {"priority", 1, 1, FDX_CREDITS_NONE, 16, 4, FDX_CREDITS_NONE},
	[MODE_BACKPRESSURE] = {"backpressure", BP_CH, BP_EXCL, BP_FLOAT, BP_POOL, 16, BP_INPLACE},
	[MODE_TIMEOUT] = {"timeout", 1, 2, FDX_CREDITS_NONE, TO_POOL, 4, FDX_CREDITS_NONE},
	[MODE_ARGS] = {"args", 2, 2, 8, 8, 16, 0},
	[MODE_DESTROY] = {"destroy", DR_CH, 2, 8, 16, 16, 0},
	[MODE_REUSE] = {"reuse", DR_CH, 2, 8, 16, 16, 0},
};

struct link {
	const char *name;
	uint32_t link; /* enum fdx_link */
	const char *listen; /* both exchanges' listen address (NULL: a Unix socket) */
};

/* Whether a channel over l reads in place with sc's credits (shm and local). */
static int reads_in_place(const struct scenario *sc, const struct link *l)
{
	uint32_t inplace = sc->inplace ? sc->inplace : FDX_INPLACE_CREDITS_DEFAULT;

	return l->link != FDX_LINK_TCP && sc->inplace != FDX_CREDITS_NONE &&
	       inplace > sc->exclusive;
}

/* The most credit one of sc's channels over l can have. */
static uint32_t credit_bound(const struct scenario *sc, const struct link *l)
{
	if (reads_in_place(sc, l))
		return sc->inplace ? sc->inplace : FDX_INPLACE_CREDITS_DEFAULT;
	return sc->exclusive + (sc->floating == FDX_CREDITS_NONE ? 0 : sc->floating);
}

enum { LOCAL, SHM, TCP };

static const struct link links[] = {
	[LOCAL] = {"local", FDX_LINK_LOCAL, NULL},
	[SHM] = {"shm", FDX_LINK_SHM, NULL},
	[TCP] = {"tcp", FDX_LINK_TCP, "127.0.0.1:0"},
};

/* ---- the producer: a child process, or a thread for local ------------------ */

struct prod {
	uint32_t mode; /* enum mode */
	const struct link *link;
	uint64_t n; /* integrity: steps of the plan */
	char addr[300]; /* the consumer's exchange */
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct fdx_exchange *ex;
	struct fdx_partition *part;
	int shared; /* local: nbp and ex are the consumer's */
	uint8_t *scratch;
	struct test_log log;
	int rc, line; /* the first failure */
	int is_child; /* say() writes to stdout; else it appends to said */
	pthread_mutex_t mu;
	char said[4096];
};

/* One line to the test: on stdout in a child, into p->said on a thread. */
static void say(struct prod *p, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	size_t n, used;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (k < 0)
		return;
	n = (size_t)k < sizeof(line) - 2 ? (size_t)k : sizeof(line) - 2;
	line[n++] = '\n';
	if (p->is_child) {
		(void)!write(1, line, n);
		return;
	}
	pthread_mutex_lock(&p->mu);
	used = strlen(p->said);
	if (used + n < sizeof(p->said)) {
		memcpy(p->said + used, line, n);
		p->said[used + n] = '\0';
	}
	pthread_mutex_unlock(&p->mu);
}

static int prod_fail(struct prod *p, int line, const char *what, int rc)
{
	if (p->rc == 0) {
		p->rc = rc ? rc : -1;
		p->line = line;
	}
	fprintf(stderr, "producer (%s over %s): line %d: %s: %d (%s)\n", scenarios[p->mode].name,
		p->link->name, line, what, rc, fdx_strerror(rc));
	if (p->log.count)
		fprintf(stderr, "producer log:\n%s", p->log.all);
	for (uint32_t sub = 0; p->part && sub < scenarios[p->mode].n_ch; sub++) {
		struct fdx_channel_stats cs = {.size = sizeof(cs)};

		if (fdx_partition_channel_stats(p->part, sub, &cs) == 0)
			fprintf(stderr,
				"  sub %u: link %u credit %u backlog %u in_flight %u sent %llu "
				"granted %llu records %llu error %d\n",
				sub, cs.link, cs.credit, cs.backlog, cs.in_flight,
				ULL(cs.buffers_sent), ULL(cs.credits_granted), ULL(cs.records),
				cs.error);
	}
	return p->rc;
}

/* No cmocka in the producer: it runs in a child or on a thread. */
#define P_OK(p, call)                                                  \
	do {                                                           \
		int p_rc_ = (call);                                    \
		if (p_rc_ != 0)                                        \
			return prod_fail((p), __LINE__, #call, p_rc_); \
	} while (0)
#define P_TRUE(p, cond)                                            \
	do {                                                       \
		if (!(cond))                                       \
			return prod_fail((p), __LINE__, #cond, 0); \
	} while (0)

/*
 * The producer's objects. With nbp and ex (local) it uses the consumer's;
 * otherwise it makes its own, listening as its link says.
 */
static int prod_setup(struct prod *p, struct fdx_nbp *nbp, struct fdx_exchange *ex)
{
	const struct scenario *sc = &scenarios[p->mode];
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = sc->prod_pool};
	struct fdx_partition_opts po = {
		.size = sizeof(po), .n_subpartitions = sc->n_ch, .partition_id = "dataplane"};

	p->scratch = malloc(SCRATCH);
	P_TRUE(p, p->scratch != NULL);
	if (nbp) {
		p->nbp = nbp;
		p->ex = ex;
		p->shared = 1;
	} else {
		struct fdx_nbp_opts no = {
			.size = sizeof(no), .seg_size = SEG, .seg_count = SEG_COUNT};
		struct fdx_exchange_opts eo = {.size = sizeof(eo),
					       .listen = p->link->listen,
					       .tm_id = "producer",
					       .log_fn = test_log_fn,
					       .log_ud = &p->log};

		P_OK(p, fdx_nbp_create(&no, &p->nbp));
		P_OK(p, fdx_exchange_create(&eo, &p->ex));
	}
	P_OK(p, fdx_lbp_create(p->nbp, &lo, &p->lbp));
	P_OK(p, fdx_partition_create(p->ex, p->lbp, &po, &p->part));
	for (uint32_t sub = 0; sub < sc->n_ch; sub++)
		P_OK(p, fdx_partition_connect(p->part, sub, p->addr, GATE, sub, p->link->link,
					      STEP_MS));
	return 0;
}

static void prod_teardown(struct prod *p)
{
	fdx_partition_destroy(p->part);
	fdx_lbp_destroy(p->lbp);
	if (!p->shared) {
		fdx_exchange_destroy(p->ex);
		fdx_nbp_destroy(p->nbp);
		p->ex = NULL;
		p->nbp = NULL;
	}
	free(p->scratch);
	p->part = NULL;
	p->lbp = NULL;
	p->scratch = NULL;
}

/* The plan, step by step; then END_OF_PARTITION everywhere. */
static int produce_integrity(struct prod *p)
{
	struct fdx_partition_stats ps = {.size = sizeof(ps)};
	uint64_t records = 0;
	struct act a;

	for (uint64_t s = 0; s < p->n; s++) {
		uint64_t id;
		uint32_t done;
		void *at;

		plan(s, &a);
		switch (a.kind) {
		case ACT_RECORD:
			if (a.room) {
				at = NULL;
				P_OK(p, fdx_partition_reserve(p->part, a.ch, a.room, &at, STEP_MS));
				rec_fill(at, a.len, a.ch, s);
				P_OK(p, fdx_partition_commit(p->part, a.ch, a.len));
			} else {
				rec_fill(p->scratch, a.len, a.ch, s);
				P_OK(p,
				     fdx_partition_emit(p->part, a.ch, p->scratch, a.len, STEP_MS));
			}
			break;
		case ACT_BROADCAST:
			rec_fill(p->scratch, a.len, BCAST_CH, s);
			P_OK(p,
			     fdx_partition_broadcast(p->part, p->scratch, a.len, STEP_MS, &done));
			break;
		case ACT_WATERMARK:
			P_OK(p, fdx_partition_event(p->part,
						    a.ch == N_CH ? FDX_ALL_SUBPARTITIONS : a.ch,
						    FDX_EVENT_WATERMARK, 0, &s, sizeof(s)));
			break;
		default:
			id = barrier_id(s);
			P_OK(p, fdx_partition_event(p->part, FDX_ALL_SUBPARTITIONS,
						    FDX_EVENT_BARRIER, 0, &id, sizeof(id)));
			break;
		}
	}
	P_OK(p, fdx_partition_finish(p->part, FINISH_MS));
	for (uint32_t sub = 0; sub < N_CH; sub++) {
		struct fdx_channel_stats cs = {.size = sizeof(cs)};

		P_OK(p, fdx_partition_channel_stats(p->part, sub, &cs));
		P_TRUE(p, cs.buffers_sent <= cs.credits_granted);
		P_TRUE(p, cs.in_flight == 0); /* finish waited for every buffer */
		P_TRUE(p, cs.error == 0);
		records += cs.records;
	}
	P_OK(p, fdx_partition_stats(p->part, &ps));
	say(p,
	    "result rc=0 records=%llu bytes=%llu copied=%llu buffers=%llu events=%llu "
	    "bp_ns=%llu",
	    ULL(records), ULL(ps.bytes), ULL(ps.bytes_copied), ULL(ps.buffers_sent),
	    ULL(ps.events_sent), ULL(ps.backpressured_ns));
	return 0;
}

static uint32_t prio_len(uint64_t seq)
{
	return seq == PRIO_LAST ? 100 : SEG - 4; /* one record fills one buffer */
}

/*
 * One credit: buffer 0 is sent, buffers 1..PRIO_QUEUED wait for credit (seen
 * in the channel's backlog), then the priority barrier, then one more record.
 */
static int produce_priority(struct prod *p)
{
	struct fdx_channel_stats cs = {.size = sizeof(cs)};
	uint64_t id = PRIO_BARRIER_ID, end;

	for (uint64_t seq = 0; seq <= PRIO_QUEUED; seq++) {
		rec_fill(p->scratch, prio_len(seq), 0, seq);
		P_OK(p, fdx_partition_emit(p->part, 0, p->scratch, prio_len(seq), STEP_MS));
		P_OK(p, fdx_partition_flush(p->part, 0));
	}
	/* As TEST_WAIT_UNTIL, without cmocka: poll the counters for up to 5 s. */
	end = test_now_ns() + 5000000000ull;
	do {
		P_OK(p, fdx_partition_channel_stats(p->part, 0, &cs));
		if (cs.buffers_sent >= 1 && cs.backlog >= 1)
			break;
		test_sleep_us(200);
	} while (test_now_ns() < end);
	P_TRUE(p, cs.buffers_sent >= 1 && cs.backlog >= 1);
	P_OK(p, fdx_partition_event(p->part, 0, FDX_EVENT_BARRIER, FDX_EVENT_PRIORITY, &id,
				    sizeof(id)));
	rec_fill(p->scratch, prio_len(PRIO_LAST), 0, PRIO_LAST);
	P_OK(p, fdx_partition_emit(p->part, 0, p->scratch, prio_len(PRIO_LAST), STEP_MS));
	P_OK(p, fdx_partition_finish(p->part, FINISH_MS));
	say(p, "result rc=0 backlog=%u sent=%llu", cs.backlog, ULL(cs.buffers_sent));
	return 0;
}

/* The producer side's invariants, sampled while it runs. */
struct psampler {
	struct prod *p;
	atomic_int stop;
	uint64_t samples, bad_sent, bad_in_flight, bad_pool, full, bp_rises, bp_last, starved;
	uint32_t max_in_flight, max_in_use;
	int err;
};

static void *psample(void *arg)
{
	struct psampler *s = arg;
	const struct scenario *sc = &scenarios[s->p->mode];
	uint64_t end = test_now_ns() + 120000000000ull;

	while (!atomic_load_explicit(&s->stop, memory_order_acquire) && test_now_ns() < end) {
		struct fdx_lbp_stats ls = {.size = sizeof(ls)};
		struct fdx_partition_stats ps = {.size = sizeof(ps)};

		for (uint32_t sub = 0; sub < sc->n_ch; sub++) {
			struct fdx_channel_stats cs = {.size = sizeof(cs)};

			s->err += fdx_partition_channel_stats(s->p->part, sub, &cs) != 0;
			s->bad_sent += cs.buffers_sent > cs.credits_granted;
			s->bad_in_flight += cs.in_flight > credit_bound(sc, s->p->link);
			/* Seed steps 3 and 4: no credit left, data waiting in our queue. */
			s->starved += cs.credit == 0 && cs.backlog > 0;
			if (cs.in_flight > s->max_in_flight)
				s->max_in_flight = cs.in_flight;
		}
		s->err += fdx_lbp_stats(s->p->lbp, &ls) != 0;
		s->err += fdx_partition_stats(s->p->part, &ps) != 0;
		s->bad_pool += ls.in_use > ls.max || ls.max != sc->prod_pool;
		s->full += ls.in_use == ls.max;
		if (ls.in_use > s->max_in_use)
			s->max_in_use = ls.in_use;
		if (ps.backpressured_ns > s->bp_last) {
			s->bp_rises++;
			s->bp_last = ps.backpressured_ns;
		}
		s->samples++;
		test_sleep_us(500);
	}
	return NULL;
}

static uint32_t bp_len(uint64_t seq)
{
	return 3000 + (uint32_t)(test_mix64(seq) % 2000);
}

/* Round robin over the channels, as fast as the pool lets it. */
static int produce_backpressure(struct prod *p)
{
	struct fdx_partition_stats ps = {.size = sizeof(ps)};
	struct psampler s = {.p = p};
	int rc_emit = 0, rc_finish = -1;
	pthread_t t;

	P_TRUE(p, pthread_create(&t, NULL, psample, &s) == 0);
	for (uint64_t i = 0; i < BP_RECORDS && rc_emit == 0; i++) {
		uint32_t ch = (uint32_t)(i % BP_CH);

		rec_fill(p->scratch, bp_len(i), ch, i);
		rc_emit = fdx_partition_emit(p->part, ch, p->scratch, bp_len(i), STEP_MS);
	}
	if (rc_emit == 0)
		rc_finish = fdx_partition_finish(p->part, FINISH_MS);
	atomic_store_explicit(&s.stop, 1, memory_order_release);
	pthread_join(t, NULL);
	P_OK(p, rc_emit);
	P_OK(p, rc_finish);
	P_OK(p, fdx_partition_stats(p->part, &ps));
	for (uint32_t sub = 0; sub < BP_CH; sub++) {
		struct fdx_channel_stats cs = {.size = sizeof(cs)};

		P_OK(p, fdx_partition_channel_stats(p->part, sub, &cs));
		P_TRUE(p, cs.max_in_flight <= credit_bound(&scenarios[MODE_BACKPRESSURE], p->link));
		P_TRUE(p, cs.buffers_sent <= cs.credits_granted);
	}
	say(p,
	    "result rc=0 samples=%llu bad_sent=%llu bad_in_flight=%llu bad_pool=%llu full=%llu "
	    "bp_rises=%llu bp_ns=%llu max_in_flight=%u max_in_use=%u starved=%llu err=%d",
	    ULL(s.samples), ULL(s.bad_sent), ULL(s.bad_in_flight), ULL(s.bad_pool), ULL(s.full),
	    ULL(s.bp_rises), ULL(ps.backpressured_ns), s.max_in_flight, s.max_in_use,
	    ULL(s.starved), s.err);
	return 0;
}

/*
 * The consumer releases nothing: fill the pool but one segment, then a record
 * of four and a half segments must time out midway, then small records until
 * one times out. Say so; the consumer then reads, and more records (spanning
 * ones too) must go through.
 */
static int produce_timeout(struct prod *p)
{
	struct fdx_lbp_stats ls = {.size = sizeof(ls)};
	uint64_t seq = 0, span_seq, small_seq = UINT64_MAX, span_us, small_us = 0, t0;
	int rc;

	for (uint32_t i = 0; i < 10000; i++) {
		P_OK(p, fdx_lbp_stats(p->lbp, &ls));
		if (ls.in_use + 1 >= TO_POOL)
			break;
		rec_fill(p->scratch, TO_SMALL, 0, seq);
		P_OK(p, fdx_partition_emit(p->part, 0, p->scratch, TO_SMALL, 50));
		seq++;
	}
	P_TRUE(p, ls.in_use + 1 >= TO_POOL);
	rec_fill(p->scratch, TO_SPAN, 0, seq);
	t0 = test_now_ns();
	rc = fdx_partition_emit(p->part, 0, p->scratch, TO_SPAN, 50);
	span_us = (test_now_ns() - t0) / 1000u;
	P_TRUE(p, rc == -ETIMEDOUT);
	span_seq = seq++;
	for (uint32_t i = 0; i < 1000 && small_seq == UINT64_MAX; i++, seq++) {
		rec_fill(p->scratch, TO_SMALL, 0, seq);
		t0 = test_now_ns();
		rc = fdx_partition_emit(p->part, 0, p->scratch, TO_SMALL, 50);
		if (rc == -ETIMEDOUT) {
			small_us = (test_now_ns() - t0) / 1000u;
			small_seq = seq;
		} else {
			P_OK(p, rc);
		}
	}
	P_TRUE(p, small_seq != UINT64_MAX);
	say(p, "timedout span=%llu small=%llu span_us=%llu small_us=%llu", ULL(span_seq),
	    ULL(small_seq), ULL(span_us), ULL(small_us));
	for (uint32_t i = 0; i < TO_AFTER; i++, seq++) {
		uint32_t len = i % 25 == 0 ? TO_SPAN : TO_SMALL;

		rec_fill(p->scratch, len, 0, seq);
		P_OK(p, fdx_partition_emit(p->part, 0, p->scratch, len, STEP_MS));
	}
	P_OK(p, fdx_partition_finish(p->part, FINISH_MS));
	say(p, "result rc=0 last=%llu", ULL(seq - 1));
	return 0;
}

/*
 * destroy: DR_RECORDS records over both channels, finish, then at once
 * destroy the partition (a child then its exchange too, and exits without
 * waiting for the consumer). reuse: the second producer of the same
 * channels: a few records, finish.
 */
static int produce_destroy(struct prod *p)
{
	uint64_t first = p->mode == MODE_REUSE ? REUSE_FIRST : 0;
	uint64_t n = p->mode == MODE_REUSE ? REUSE_RECORDS : DR_RECORDS;

	for (uint64_t i = first; i < first + n; i++) {
		uint32_t len = dr_len(i), ch = dr_channel(i);

		rec_fill(p->scratch, len, ch, i);
		P_OK(p, fdx_partition_emit(p->part, ch, p->scratch, len, STEP_MS));
	}
	P_OK(p, fdx_partition_finish(p->part, FINISH_MS));
	if (p->mode == MODE_DESTROY) {
		fdx_partition_destroy(p->part);
		p->part = NULL;
		if (p->is_child)
			prod_teardown(p);
	}
	say(p, "result rc=0 records=%llu", ULL(n));
	return 0;
}

/* Run the mode; the last line said is always "result rc=...". */
static void prod_run(struct prod *p)
{
	int rc = p->rc;

	if (rc == 0) {
		switch (p->mode) {
		case MODE_INTEGRITY:
			rc = produce_integrity(p);
			break;
		case MODE_PRIORITY:
			rc = produce_priority(p);
			break;
		case MODE_BACKPRESSURE:
			rc = produce_backpressure(p);
			break;
		case MODE_TIMEOUT:
			rc = produce_timeout(p);
			break;
		case MODE_DESTROY:
		case MODE_REUSE:
			rc = produce_destroy(p);
			break;
		default:
			rc = prod_fail(p, __LINE__, "unknown mode", -EINVAL);
			break;
		}
	}
	if (rc != 0)
		say(p, "result rc=%d line=%d", p->rc, p->line);
}

static void *prod_thread(void *arg)
{
	prod_run(arg);
	return NULL;
}

/* "child MODE LINK N": the producer of a shm or tcp test. */
static int child_main(int argc, char **argv)
{
	struct prod *p;
	char line[300];
	int rc;

	if (argc < 5)
		return 2;
	p = calloc(1, sizeof(*p));
	if (!p)
		return 2;
	p->is_child = 1;
	for (uint32_t m = 1; m < MODE_COUNT; m++)
		if (strcmp(argv[2], scenarios[m].name) == 0)
			p->mode = m;
	for (size_t l = 0; l < sizeof(links) / sizeof(links[0]); l++)
		if (strcmp(argv[3], links[l].name) == 0)
			p->link = &links[l];
	if (!p->mode || !p->link)
		return 2;
	p->n = strtoull(argv[4], NULL, 10);
	/* A parent that failed and forgot us cannot keep us forever. */
	alarm(300);
	if (test_read_fd_line(0, line, sizeof(line), 20000) != 0 || strncmp(line, "addr ", 5) != 0)
		return 3;
	snprintf(p->addr, sizeof(p->addr), "%s", line + 5);
	prod_setup(p, NULL, NULL);
	prod_run(p);
	/* destroy: gone at once, as a task that ended (its exchange is destroyed already). */
	if (p->mode != MODE_DESTROY)
		(void)test_read_fd_line(0, line, sizeof(line), 60000); /* "stop", or EOF */
	prod_teardown(p);
	rc = p->rc == 0 ? 0 : 1;
	free(p);
	return rc;
}

/* ---- the consumer --------------------------------------------------------- */

struct cons {
	const struct scenario *sc;
	struct fdx_nbp *nbp;
	struct fdx_lbp *pool; /* the gate's segments: tcp only */
	struct fdx_exchange *ex;
	struct fdx_gate *gate;
	struct test_log log;
};

/* Heap-allocated: after a failed test it is leaked, never freed under a live thread. */
static struct cons *cons_open(const struct link *l, uint32_t mode)
{
	const struct scenario *sc = &scenarios[mode];
	struct cons *c = calloc(1, sizeof(*c));
	struct fdx_nbp_opts no = {.size = sizeof(no), .seg_size = SEG, .seg_count = SEG_COUNT};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = sc->gate_pool};
	struct fdx_exchange_opts eo = {
		.size = sizeof(eo), .listen = l->listen, .tm_id = "consumer"};
	struct fdx_gate_opts go = {.size = sizeof(go),
				   .gate = GATE,
				   .n_channels = sc->n_ch,
				   .exclusive_credits = sc->exclusive,
				   .floating_credits = sc->floating,
				   .inplace_credits = sc->inplace};

	assert_non_null(c);
	c->sc = sc;
	eo.log_fn = test_log_fn;
	eo.log_ud = &c->log;
	assert_int_equal(fdx_nbp_create(&no, &c->nbp), 0);
	if (l->link == FDX_LINK_TCP)
		assert_int_equal(fdx_lbp_create(c->nbp, &lo, &c->pool), 0);
	assert_int_equal(fdx_exchange_create(&eo, &c->ex), 0);
	assert_int_equal(fdx_gate_create(c->ex, c->pool, &go, &c->gate), 0);
	return c;
}

static void cons_close(struct cons *c)
{
	fdx_gate_destroy(c->gate);
	fdx_exchange_destroy(c->ex);
	fdx_lbp_destroy(c->pool);
	assert_int_equal(fdx_nbp_destroy(c->nbp), 0);
	free(c);
}

/* ---- the test's view of its producer -------------------------------------- */

struct peer {
	const struct link *link;
	pid_t pid; /* shm, tcp: the child */
	int to, from; /* its stdin and stdout */
	char buf[8192]; /* what it said, not yet taken */
	size_t len;
	struct prod prod; /* local: the producer, run on thread */
	pthread_t thread;
	int running;
};

/* The peers of the running test (at most two), for reap() after a failure. */
static struct peer *g_peers[2];

/*
 * shm, tcp: fork and exec the child now, before this test creates any
 * exchange (between fork and exec the child only moves descriptors). local:
 * nothing yet; peer_go() sets the producer up once the consumer is there.
 */
static struct peer *peer_spawn(const struct link *l, uint32_t mode, uint64_t n)
{
	struct peer *pe = calloc(1, sizeof(*pe));
	char nbuf[32];

	assert_non_null(pe);
	pe->link = l;
	pe->to = pe->from = -1;
	pe->prod.mode = mode;
	pe->prod.link = l;
	pe->prod.n = n;
	pthread_mutex_init(&pe->prod.mu, NULL);
	if (!g_peers[0])
		g_peers[0] = pe;
	else
		g_peers[1] = pe;
	if (l->link == FDX_LINK_LOCAL)
		return pe;
	snprintf(nbuf, sizeof(nbuf), "%llu", ULL(n));
	{
		char *argv[] = {"test_dataplane", "child", (char *)scenarios[mode].name,
				(char *)l->name,  nbuf,	   NULL};

		pe->pid = test_spawn_self(argv, &pe->to, &pe->from);
	}
	assert_true(pe->pid > 0);
	return pe;
}

/* Give the producer the consumer's address (local: set it up and start its thread). */
static void peer_go(struct peer *pe, struct cons *c)
{
	const char *addr = fdx_exchange_address(c->ex);

	assert_non_null(addr);
	if (pe->pid > 0) {
		assert_true(dprintf(pe->to, "addr %s\n", addr) > 0);
		return;
	}
	snprintf(pe->prod.addr, sizeof(pe->prod.addr), "%s", addr);
	if (prod_setup(&pe->prod, c->nbp, c->ex) != 0)
		fail_msg("local producer: setup failed at line %d: %s", pe->prod.line,
			 fdx_strerror(pe->prod.rc));
	assert_int_equal(pthread_create(&pe->thread, NULL, prod_thread, &pe->prod), 0);
	pe->running = 1;
}

/* Take the first complete line starting with prefix (dropping others before it). */
static int take_line(struct peer *pe, const char *prefix, char *out, size_t n)
{
	if (test_take_line(pe->buf, &pe->len, prefix, out, n))
		return 1;
	if (pe->len == sizeof(pe->buf))
		pe->len = 0; /* a line too long for us: not one we wait for */
	return 0;
}

/* Gather what the producer said, waiting at most ms; -1 once a child is gone. */
static int peer_fill(struct peer *pe, int ms)
{
	size_t k;

	if (pe->pid > 0) {
		struct pollfd pf = {.fd = pe->from, .events = POLLIN};
		ssize_t r;

		if (poll(&pf, 1, ms) <= 0)
			return 0;
		r = read(pe->from, pe->buf + pe->len, sizeof(pe->buf) - pe->len);
		if (r <= 0)
			return -1;
		pe->len += (size_t)r;
		return 0;
	}
	pthread_mutex_lock(&pe->prod.mu);
	k = strlen(pe->prod.said);
	if (k > sizeof(pe->buf) - pe->len)
		k = sizeof(pe->buf) - pe->len;
	memcpy(pe->buf + pe->len, pe->prod.said, k);
	memmove(pe->prod.said, pe->prod.said + k, strlen(pe->prod.said + k) + 1);
	pthread_mutex_unlock(&pe->prod.mu);
	pe->len += k;
	if (k == 0 && ms > 0)
		test_sleep_us(200);
	return 0;
}

/* A line of the producer starting with prefix, within timeout_ms (0: only if said already). */
static int peer_line(struct peer *pe, const char *prefix, char *out, size_t n, int timeout_ms)
{
	uint64_t end = test_now_ns() + (uint64_t)timeout_ms * 1000000u;

	do {
		uint64_t now = test_now_ns();
		int ms = now < end ? (int)((end - now) / 1000000u) : 0;

		if (take_line(pe, prefix, out, n))
			return 0;
		if (peer_fill(pe, ms) < 0)
			break;
	} while (test_now_ns() < end);
	return take_line(pe, prefix, out, n) ? 0 : -1;
}

/* The value of " key=" in a result line. */
static long long kv(const char *line, const char *key)
{
	char pat[64];
	const char *at;

	snprintf(pat, sizeof(pat), " %s=", key);
	at = strstr(line, pat);
	if (!at)
		fail_msg("no %s in the producer's line \"%s\"", key, line);
	return strtoll(at + strlen(pat), NULL, 10);
}

/* What the gate's channels hold, for a failure message. */
static void cons_dump(struct cons *c)
{
	for (uint32_t ch = 0; ch < c->sc->n_ch; ch++) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		if (fdx_gate_channel_stats(c->gate, ch, &cs) == 0)
			fprintf(stderr,
				"  channel %u: link %u held %u unannounced %u floating %u backlog %u "
				"announced %llu received %llu error %d\n",
				ch, cs.link, cs.held, cs.unannounced, cs.floating, cs.backlog,
				ULL(cs.credits_announced), ULL(cs.buffers_received), cs.error);
	}
	if (c->log.count)
		fprintf(stderr, "consumer log:\n%s", c->log.all);
}

/* The producer's result line; it must say rc=0. */
static void peer_result(struct peer *pe, struct cons *c, char *line, size_t n)
{
	if (peer_line(pe, "result", line, n, FINISH_MS + 10000) != 0) {
		cons_dump(c);
		fail_msg("the %s producer gave no result within %d s", pe->link->name,
			 FINISH_MS / 1000 + 10);
	}
	if (kv(line, "rc") != 0) {
		cons_dump(c);
		fail_msg("the %s producer failed: %s", pe->link->name, line);
	}
}

/* Let the producer go: a child must exit 0, a thread is joined and torn down. */
static void peer_stop(struct peer *pe)
{
	if (pe->pid > 0) {
		pid_t r = 0;
		int status = 0;

		(void)!write(pe->to, "stop\n", 5);
		for (int i = 0; i < 2000 && (r = waitpid(pe->pid, &status, WNOHANG)) == 0; i++)
			test_sleep_us(5000);
		if (r != pe->pid) {
			kill(pe->pid, SIGKILL);
			waitpid(pe->pid, &status, 0);
			pe->pid = 0;
			fail_msg("the %s producer did not exit within 10 s", pe->link->name);
		}
		pe->pid = 0;
		close(pe->to);
		close(pe->from);
		if (!WIFEXITED(status))
			fail_msg("the %s producer was killed by signal %d", pe->link->name,
				 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		assert_int_equal(WEXITSTATUS(status), 0);
	} else if (pe->running) {
		assert_int_equal(pthread_join(pe->thread, NULL), 0);
		pe->running = 0;
		prod_teardown(&pe->prod);
		assert_int_equal(pe->prod.rc, 0);
	}
	for (int i = 0; i < 2; i++)
		if (g_peers[i] == pe)
			g_peers[i] = NULL;
	pthread_mutex_destroy(&pe->prod.mu);
	free(pe);
}

/*
 * Teardown of every test: a failed test leaves its peer behind. A child is
 * killed (it is ours, by its pid); a thread may still use the exchange and
 * its peer, so both are leaked rather than freed under it.
 */
static int reap(void **state)
{
	(void)state;
	for (int i = 0; i < 2; i++) {
		struct peer *pe = g_peers[i];

		g_peers[i] = NULL;
		if (!pe)
			continue;
		if (pe->pid > 0) {
			kill(pe->pid, SIGKILL);
			waitpid(pe->pid, NULL, 0);
			close(pe->to);
			close(pe->from);
		}
		if (pe->running) {
			pthread_detach(pe->thread);
			continue;
		}
		free(pe);
	}
	return 0;
}

/* ---- 1. integrity (and 4. what is copied) --------------------------------- */

/* Per channel: where the consumer is in the plan. */
struct cursor {
	uint64_t step; /* the next step to look at */
	uint64_t items; /* views taken */
	uint64_t records;
	int ended;
};

/* The next step of the plan that gives channel ch an item; 0 if none is left. */
static int plan_next(uint32_t ch, struct cursor *k, uint64_t n, struct act *a, uint64_t *step)
{
	while (k->step < n) {
		uint64_t s = k->step++;

		plan(s, a);
		if (a->ch == ch || a->ch == N_CH) {
			*step = s;
			return 1;
		}
	}
	return 0;
}

static void integrity_buffer(struct fdx_gate *g, struct fdx_view *v, struct cursor *k, uint64_t n,
			     uint64_t *bytes)
{
	const void *rec;
	uint32_t len;
	uint64_t s = 0; /* fail_msg() is not known not to return */
	struct act a;
	char why[160];
	int r;

	while ((r = fdx_gate_next_record(g, v, &rec, &len)) == 1) {
		if (!plan_next(v->channel, k, n, &a, &s))
			fail_msg("channel %u: a record of %u bytes after the last step", v->channel,
				 len);
		if (a.kind != ACT_RECORD && a.kind != ACT_BROADCAST)
			fail_msg("channel %u: a record of %u bytes where the event of step %llu "
				 "belongs",
				 v->channel, len, ULL(s));
		if (len != a.len)
			fail_msg("channel %u, step %llu: %u bytes, expected %u", v->channel, ULL(s),
				 len, a.len);
		if (rec_check(rec, len, a.kind == ACT_BROADCAST ? BCAST_CH : v->channel, s, why,
			      sizeof(why)) != 0)
			fail_msg("channel %u, step %llu: %s", v->channel, ULL(s), why);
		k->records++;
		*bytes += len;
	}
	if (r != 0)
		fail_msg("channel %u: next_record: %s", v->channel, fdx_strerror(r));
}

static void integrity_event(const struct fdx_view *v, struct cursor *k, uint64_t n)
{
	uint64_t s, got, want;
	uint32_t type;
	struct act a;

	if (v->event_type == FDX_EVENT_END_OF_PARTITION) {
		if (plan_next(v->channel, k, n, &a, &s))
			fail_msg("channel %u: END_OF_PARTITION before step %llu", v->channel,
				 ULL(s));
		k->ended = 1;
		return;
	}
	if (!plan_next(v->channel, k, n, &a, &s))
		fail_msg("channel %u: event %u after the last step", v->channel, v->event_type);
	if (a.kind == ACT_WATERMARK) {
		type = FDX_EVENT_WATERMARK;
		want = s;
	} else if (a.kind == ACT_BARRIER) {
		type = FDX_EVENT_BARRIER;
		want = barrier_id(s);
	} else {
		fail_msg("channel %u: event %u where the record of step %llu belongs", v->channel,
			 v->event_type, ULL(s));
		return;
	}
	if (v->event_type != type || v->event_flags != 0 || v->len != sizeof(got))
		fail_msg("channel %u, step %llu: event %u (flags %#x, %u bytes), expected %u",
			 v->channel, ULL(s), v->event_type, v->event_flags, v->len, type);
	memcpy(&got, v->data, sizeof(got));
	if (got != want)
		fail_msg("channel %u, step %llu: event %u says %llu, expected %llu", v->channel,
			 ULL(s), type, ULL(got), ULL(want));
}

struct integrity {
	uint64_t records, bytes, items;
};

/* Take every view until each channel has ended; each item must be its channel's next. */
static void consume_integrity(struct cons *c, uint64_t n, struct integrity *res)
{
	struct cursor *cur = calloc(N_CH, sizeof(*cur));
	uint64_t end = test_now_ns() + 240000000000ull, max_items = 4 * n + 1000;
	struct fdx_view v;
	uint32_t ended = 0;
	int rc;

	assert_non_null(cur);
	memset(res, 0, sizeof(*res));
	while (ended < N_CH) {
		struct cursor *k;

		rc = fdx_gate_next(c->gate, &v, STEP_MS);
		if (rc != 0)
			fail_msg("gate next: %s, with %u of %u channels ended", fdx_strerror(rc),
				 ended, N_CH);
		if (v.channel >= N_CH)
			fail_msg("a view of channel %u", v.channel);
		k = &cur[v.channel];
		if (k->ended)
			fail_msg("channel %u: an item after END_OF_PARTITION", v.channel);
		if (v.seq != k->items)
			fail_msg("channel %u: item seq %llu, expected %llu", v.channel, ULL(v.seq),
				 ULL(k->items));
		k->items++;
		if (v.kind == FDX_VIEW_BUFFER) {
			integrity_buffer(c->gate, &v, k, n, &res->bytes);
		} else if (v.kind == FDX_VIEW_EVENT) {
			integrity_event(&v, k, n);
			ended += (uint32_t)k->ended;
		} else {
			fail_msg("channel %u failed: %s: %s", v.channel, fdx_strerror(v.error),
				 v.message ? v.message : "");
		}
		assert_int_equal(fdx_gate_release(c->gate, &v), 0);
		if (++res->items > max_items || test_now_ns() > end)
			fail_msg("%llu items: more, or longer, than the plan can give",
				 ULL(res->items));
	}
	/* END_OF_PARTITION was the last item of every channel. */
	assert_int_equal(fdx_gate_next(c->gate, &v, 20), -EAGAIN);
	for (uint32_t ch = 0; ch < N_CH; ch++)
		res->records += cur[ch].records;
	free(cur);
}

/* A whole run of the plan over link li; the producer's result line in line. */
static void integrity_run(int li, uint64_t n, struct integrity *res, struct fdx_gate_stats *gs,
			  char *line, size_t ln)
{
	struct peer *pe = peer_spawn(&links[li], MODE_INTEGRITY, n);
	struct cons *c = cons_open(&links[li], MODE_INTEGRITY);
	uint64_t t0 = test_now_ns();

	peer_go(pe, c);
	consume_integrity(c, n, res);
	peer_result(pe, c, line, ln);
	assert_int_equal(kv(line, "records"), res->records);
	memset(gs, 0, sizeof(*gs));
	gs->size = sizeof(*gs);
	assert_int_equal(fdx_gate_stats(c->gate, gs), 0);
	assert_int_equal(gs->records, res->records);
	assert_int_equal(gs->held, 0);
	print_message("%s: %llu records, %llu bytes in %llu ms; %llu bytes copied by the consumer, "
		      "%llu reassembled\n",
		      links[li].name, ULL(res->records), ULL(res->bytes),
		      ULL((test_now_ns() - t0) / 1000000u), ULL(gs->bytes_copied),
		      ULL(gs->bytes_reassembled));
	peer_stop(pe);
	cons_close(c);
}

static void records_arrive_once_in_order_intact(int li)
{
	struct fdx_gate_stats gs;
	struct integrity res;
	char line[1024];

	integrity_run(li, integrity_records(), &res, &gs, line, sizeof(line));
	assert_true(res.records >= integrity_records() / 2);
}

/* The tests of one scenario, one per link: test_local_NAME, test_shm_NAME, test_tcp_NAME. */
#define PER_LINK(name, fn)                          \
	static void test_local_##name(void **state) \
	{                                           \
		(void)state;                        \
		fn(LOCAL);                          \
	}                                           \
	static void test_shm_##name(void **state)   \
	{                                           \
		(void)state;                        \
		fn(SHM);                            \
	}                                           \
	static void test_tcp_##name(void **state)   \
	{                                           \
		(void)state;                        \
		fn(TCP);                            \
	}

PER_LINK(records_arrive_once_in_order_intact, records_arrive_once_in_order_intact)

/* Neither side copies a payload byte between emit and read (reassembly apart). */
static void nothing_copied_between_emit_and_read(int li)
{
	struct fdx_gate_stats gs;
	struct integrity res;
	char line[1024];

	integrity_run(li, ZERO_COPY_RECORDS, &res, &gs, line, sizeof(line));
	assert_true(res.bytes > 0);
	assert_int_equal(kv(line, "copied"), 0);
	assert_int_equal(gs.bytes_copied, 0);
}

static void test_local_nothing_copied_between_emit_and_read(void **state)
{
	(void)state;
	nothing_copied_between_emit_and_read(LOCAL);
}

static void test_shm_nothing_copied_between_emit_and_read(void **state)
{
	(void)state;
	nothing_copied_between_emit_and_read(SHM);
}

/* On tcp every byte crosses the socket: both counters see at least the record bytes. */
static void test_tcp_copies_are_counted(void **state)
{
	struct fdx_gate_stats gs;
	struct integrity res;
	char line[1024];

	(void)state;
	integrity_run(TCP, ZERO_COPY_RECORDS, &res, &gs, line, sizeof(line));
	assert_true(res.bytes > 0);
	assert_true((uint64_t)kv(line, "copied") >= res.bytes);
	assert_true(gs.bytes_copied >= res.bytes);
}

/* ---- 2. a priority event overtakes queued data ---------------------------- */

static void priority_barrier_overtakes_queued_buffers(int li)
{
	struct peer *pe = peer_spawn(&links[li], MODE_PRIORITY, 0);
	struct cons *c = cons_open(&links[li], MODE_PRIORITY);
	struct fdx_view *vs = calloc(PRIO_VIEWS, sizeof(*vs));
	int n = 0, barrier_at = -1, before = 0, ended = 0;
	uint64_t want = 0;
	char line[1024];

	assert_non_null(vs);
	peer_go(pe, c);
	while (!ended) {
		struct fdx_view *v = &vs[n];
		int rc;

		if (n == PRIO_VIEWS)
			fail_msg("more than %d views", PRIO_VIEWS);
		rc = fdx_gate_next(c->gate, v, 5000);
		if (rc != 0)
			fail_msg(
				"gate next: %s after %d views, the barrier %s (the first buffer is "
				"held: only a priority event can come)",
				fdx_strerror(rc), n, barrier_at < 0 ? "not seen" : "seen");
		n++;
		assert_int_equal(v->channel, 0);
		if (v->kind == FDX_VIEW_BUFFER) {
			const void *rec;
			uint32_t len;
			char why[160];
			int r;

			while ((r = fdx_gate_next_record(c->gate, v, &rec, &len)) == 1) {
				if (want > PRIO_LAST || len != prio_len(want))
					fail_msg("record %llu: %u bytes", ULL(want), len);
				if (rec_check(rec, len, 0, want, why, sizeof(why)) != 0)
					fail_msg("record %llu: %s", ULL(want), why);
				if (barrier_at < 0 && want > 0)
					fail_msg("record %llu, queued for credit when the priority "
						 "barrier was sent, came before it",
						 ULL(want));
				want++;
			}
			assert_int_equal(r, 0);
			if (barrier_at < 0) {
				before++; /* held: no credit goes back before the barrier */
				continue;
			}
		} else if (v->kind == FDX_VIEW_EVENT && v->event_type == FDX_EVENT_BARRIER) {
			uint64_t id;

			assert_true(barrier_at < 0);
			assert_true(v->event_flags & FDX_EVENT_PRIORITY);
			assert_int_equal(v->len, sizeof(id));
			memcpy(&id, v->data, sizeof(id));
			assert_int_equal(id, PRIO_BARRIER_ID);
			barrier_at = n - 1;
			for (int i = 0; i < barrier_at; i++)
				assert_int_equal(fdx_gate_release(c->gate, &vs[i]), 0);
		} else if (v->kind == FDX_VIEW_EVENT &&
			   v->event_type == FDX_EVENT_END_OF_PARTITION) {
			ended = 1;
		} else {
			fail_msg("view %d: kind %u, event %u, error %s", n - 1, v->kind,
				 v->event_type, fdx_strerror(v->error));
		}
		assert_int_equal(fdx_gate_release(c->gate, v), 0);
	}
	assert_true(barrier_at >= 0);
	assert_true(before <= 1); /* one credit: only the first buffer could be ahead */
	assert_int_equal(want, PRIO_LAST + 1);
	peer_result(pe, c, line, sizeof(line));
	/* The barrier had buffers to overtake: the producer saw them queued. */
	assert_true(kv(line, "backlog") >= 1);
	assert_true(kv(line, "sent") >= 1);
	print_message("%s: barrier was view %d; %lld buffers were queued behind the credit\n",
		      links[li].name, barrier_at, kv(line, "backlog"));
	peer_stop(pe);
	cons_close(c);
	free(vs);
}

PER_LINK(priority_barrier_overtakes_queued_buffers, priority_barrier_overtakes_queued_buffers)

/* ---- 3. backpressure with bounded credit and memory ----------------------- */

/* The consumer side's invariants, sampled while it runs. */
struct csampler {
	struct cons *c;
	const struct link *l;
	atomic_int stop;
	uint64_t samples, bad_channel, bad_gate, bad_pool, in_place;
	uint32_t max_held;
	int err;
};

static void *csample(void *arg)
{
	struct csampler *s = arg;
	uint64_t end = test_now_ns() + 120000000000ull;

	while (!atomic_load_explicit(&s->stop, memory_order_acquire) && test_now_ns() < end) {
		struct fdx_gate_stats gs = {.size = sizeof(gs)};

		for (uint32_t ch = 0; ch < BP_CH; ch++) {
			struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

			s->err += fdx_gate_channel_stats(s->c->gate, ch, &cs) != 0;
			/* In place: its in-place credit and no floating; else exclusive + floating. */
			s->bad_channel +=
				cs.held > (cs.inplace ? cs.inplace : cs.exclusive + cs.floating) ||
				cs.exclusive != BP_EXCL || cs.floating > BP_FLOAT ||
				(cs.inplace && (cs.floating || cs.inplace != BP_INPLACE));
			s->in_place += cs.inplace != 0;
		}
		s->err += fdx_gate_stats(s->c->gate, &gs) != 0;
		s->bad_gate +=
			gs.held > BP_CH * credit_bound(&scenarios[MODE_BACKPRESSURE], s->l) ||
			gs.floating_free > BP_FLOAT;
		if (gs.held > s->max_held)
			s->max_held = gs.held;
		if (s->c->pool) {
			struct fdx_lbp_stats ls = {.size = sizeof(ls)};

			s->err += fdx_lbp_stats(s->c->pool, &ls) != 0;
			s->bad_pool += ls.in_use > ls.max;
		}
		s->samples++;
		test_sleep_us(500);
	}
	return NULL;
}

static void slow_consumer_backpressures_producer(int li)
{
	struct peer *pe = peer_spawn(&links[li], MODE_BACKPRESSURE, 0);
	struct cons *c = cons_open(&links[li], MODE_BACKPRESSURE);
	struct csampler *s = calloc(1, sizeof(*s));
	uint64_t want[BP_CH], t0;
	uint32_t ended = 0, views = 0;
	char line[1024];
	pthread_t t;

	assert_non_null(s);
	s->l = &links[li];
	for (uint32_t ch = 0; ch < BP_CH; ch++)
		want[ch] = ch;
	s->c = c;
	peer_go(pe, c);
	assert_int_equal(pthread_create(&t, NULL, csample, s), 0);
	t0 = test_now_ns();
	while (ended < BP_CH) {
		struct fdx_view v;
		int rc = fdx_gate_next(c->gate, &v, STEP_MS);

		if (rc != 0)
			fail_msg("gate next: %s with %u channels ended", fdx_strerror(rc), ended);
		assert_true(v.channel < BP_CH);
		if (++views > 4 * BP_RECORDS || test_now_ns() - t0 > 120000000000ull)
			fail_msg("%u views: more, or longer, than the records can fill", views);
		if (v.kind == FDX_VIEW_BUFFER) {
			const void *rec;
			uint32_t len;
			char why[160];
			int r;

			while ((r = fdx_gate_next_record(c->gate, &v, &rec, &len)) == 1) {
				uint64_t seq = want[v.channel];

				if (seq >= BP_RECORDS || len != bp_len(seq))
					fail_msg("channel %u: record %llu of %u bytes", v.channel,
						 ULL(seq), len);
				if (rec_check(rec, len, v.channel, seq, why, sizeof(why)) != 0)
					fail_msg("channel %u, record %llu: %s", v.channel, ULL(seq),
						 why);
				want[v.channel] += BP_CH;
			}
			assert_int_equal(r, 0);
			test_sleep_us(BP_SLEEP_US); /* a slow task: 2 ms per buffer */
		} else if (v.kind == FDX_VIEW_EVENT && v.event_type == FDX_EVENT_END_OF_PARTITION) {
			if (want[v.channel] < BP_RECORDS)
				fail_msg("channel %u ended before record %llu", v.channel,
					 ULL(want[v.channel]));
			ended++;
		} else {
			fail_msg("channel %u: view kind %u, event %u, error %s", v.channel, v.kind,
				 v.event_type, fdx_strerror(v.error));
		}
		assert_int_equal(fdx_gate_release(c->gate, &v), 0);
	}
	atomic_store_explicit(&s->stop, 1, memory_order_release);
	assert_int_equal(pthread_join(t, NULL), 0);
	peer_result(pe, c, line, sizeof(line));
	print_message("%s: %u views in %llu ms; producer: %s\n", links[li].name, views,
		      ULL((test_now_ns() - t0) / 1000000u), line);
	print_message("%s: consumer: %llu samples, most held %u\n", links[li].name, ULL(s->samples),
		      s->max_held);
	/* The consumer never held more than its credits, per channel and per gate. */
	assert_int_equal(s->err, 0);
	assert_true(s->samples >= 10);
	/* The consumer's buffers filled up to its credit (step 1). */
	assert_true(s->max_held >= 2);
	assert_int_equal(s->bad_channel, 0);
	assert_int_equal(s->bad_gate, 0);
	assert_int_equal(s->bad_pool, 0);
	/* shm and local channels read in place: their credit was the in-place one. */
	if (reads_in_place(&scenarios[MODE_BACKPRESSURE], &links[li]))
		assert_true(s->in_place > 0);
	else
		assert_int_equal(s->in_place, 0);
	/* The producer never sent beyond credit, nor held more than its pool... */
	assert_int_equal(kv(line, "err"), 0);
	assert_true(kv(line, "samples") >= 10);
	assert_int_equal(kv(line, "bad_sent"), 0);
	assert_int_equal(kv(line, "bad_in_flight"), 0);
	assert_int_equal(kv(line, "bad_pool"), 0);
	assert_true(kv(line, "max_in_use") <= BP_POOL);
	/* ...and was held back: its pool ran full and it waited in emit, more and more. */
	assert_true(kv(line, "full") >= 1);
	/* Its credit ran out while buffers waited in its queue (the seed's steps 3 and 4). */
	assert_true(kv(line, "starved") >= 1);
	assert_true(kv(line, "bp_rises") >= 2);
	assert_true(kv(line, "bp_ns") >= 200000000ll);
	peer_stop(pe);
	cons_close(c);
	free(s);
}

PER_LINK(slow_consumer_backpressures_producer_within_bounds, slow_consumer_backpressures_producer)

/* ---- 5. a timed-out emit loses nothing, and leaks nothing ----------------- */

/* Records by their header's seq: strictly increasing, the gaps noted. */
struct seqs {
	int64_t last;
	uint64_t gaps[4];
	uint32_t n_gaps;
	uint64_t records;
};

static void timeout_records(struct fdx_gate *g, struct fdx_view *v, struct seqs *q)
{
	const void *rec;
	uint32_t len;
	char why[160];
	int r;

	while ((r = fdx_gate_next_record(g, v, &rec, &len)) == 1) {
		struct rec_hdr hd;

		if (len != TO_SMALL && len != TO_SPAN)
			fail_msg("a record of %u bytes after record %lld", len, (long long)q->last);
		memcpy(&hd, rec, HDR);
		if ((int64_t)hd.seq <= q->last)
			fail_msg("record %llu after record %lld: out of order, or twice",
				 ULL(hd.seq), (long long)q->last);
		for (int64_t s = q->last + 1; s < (int64_t)hd.seq; s++) {
			if (q->n_gaps == 4)
				fail_msg("records missing before record %llu", ULL(hd.seq));
			q->gaps[q->n_gaps++] = (uint64_t)s;
		}
		if (rec_check(rec, len, 0, hd.seq, why, sizeof(why)) != 0)
			fail_msg("record %llu: %s", ULL(hd.seq), why);
		q->last = (int64_t)hd.seq;
		q->records++;
	}
	assert_int_equal(r, 0);
}

static void timed_out_emit_loses_nothing(int li)
{
	struct peer *pe = peer_spawn(&links[li], MODE_TIMEOUT, 0);
	struct cons *c = cons_open(&links[li], MODE_TIMEOUT);
	struct fdx_view *held = calloc(TO_HELD, sizeof(*held));
	struct seqs q = {.last = -1};
	uint64_t end = test_now_ns() + 30000000000ull;
	long long span, small, last;
	char line[1024];
	int nh = 0, ended = 0;

	assert_non_null(held);
	peer_go(pe, c);
	/* Until the producer's emits have timed out: take what comes, release nothing. */
	while (peer_line(pe, "timedout", line, sizeof(line), 0) != 0) {
		int rc;

		if (test_now_ns() > end)
			fail_msg("the producer's emits did not time out within 30 s");
		if (nh == TO_HELD)
			fail_msg("%d views and none released: credit does not hold the producer",
				 TO_HELD);
		rc = fdx_gate_next(c->gate, &held[nh], 10);
		if (rc == -EAGAIN)
			continue;
		assert_int_equal(rc, 0);
		if (held[nh].kind != FDX_VIEW_BUFFER)
			fail_msg("view kind %u (event %u) before the timeout", held[nh].kind,
				 held[nh].event_type);
		timeout_records(c->gate, &held[nh], &q);
		nh++;
	}
	span = kv(line, "span");
	small = kv(line, "small");
	print_message("%s: timed out after %lld us (spanning) and %lld us (small), %d views "
		      "held\n",
		      links[li].name, kv(line, "span_us"), kv(line, "small_us"), nh);
	assert_true(kv(line, "span_us") >= 40000 && kv(line, "span_us") < 5000000);
	assert_true(kv(line, "small_us") >= 40000 && kv(line, "small_us") < 5000000);
	/* Now read everything. */
	end = test_now_ns() + 60000000000ull;
	for (int i = 0; i < nh; i++)
		assert_int_equal(fdx_gate_release(c->gate, &held[i]), 0);
	for (uint32_t views = 0; !ended; views++) {
		struct fdx_view v;
		int rc = fdx_gate_next(c->gate, &v, STEP_MS);

		if (rc != 0)
			fail_msg("gate next: %s after record %lld", fdx_strerror(rc),
				 (long long)q.last);
		if (views > 100000 || test_now_ns() > end)
			fail_msg("%u views: more, or longer, than the records can fill", views);
		if (v.kind == FDX_VIEW_BUFFER)
			timeout_records(c->gate, &v, &q);
		else if (v.kind == FDX_VIEW_EVENT && v.event_type == FDX_EVENT_END_OF_PARTITION)
			ended = 1;
		else
			fail_msg("view kind %u, event %u, error %s", v.kind, v.event_type,
				 fdx_strerror(v.error));
		assert_int_equal(fdx_gate_release(c->gate, &v), 0);
	}
	peer_result(pe, c, line, sizeof(line));
	last = kv(line, "last");
	/* Everything arrived but the two records whose emit timed out. */
	assert_int_equal(q.last, last);
	assert_int_equal(q.n_gaps, 2);
	assert_int_equal(q.gaps[0], span);
	assert_int_equal(q.gaps[1], small);
	assert_int_equal(q.records, (uint64_t)last + 1 - 2);
	peer_stop(pe);
	cons_close(c);
	free(held);
}

PER_LINK(timed_out_emit_loses_nothing, timed_out_emit_loses_nothing)

/* ---- 6. bad arguments ----------------------------------------------------- */

static void partition_rejects_bad_arguments(struct cons *c, struct fdx_lbp *lbp,
					    struct fdx_partition **out)
{
	struct fdx_partition_opts po = {
		.size = sizeof(po), .n_subpartitions = 2, .max_record = 1000};
	struct fdx_channel_stats cs = {.size = sizeof(cs)};
	struct fdx_partition_stats ps = {.size = sizeof(ps)};
	struct fdx_partition *p = (void *)1;
	uint8_t rec[1001];
	uint32_t done = 99;
	void *at = NULL;

	assert_int_equal(fdx_partition_create(NULL, lbp, &po, &p), -EINVAL);
	assert_null(p);
	assert_int_equal(fdx_partition_create(c->ex, NULL, &po, &p), -EINVAL);
	assert_int_equal(fdx_partition_create(c->ex, lbp, NULL, &p), -EINVAL);
	assert_int_equal(fdx_partition_create(c->ex, lbp, &po, NULL), -EINVAL);
	po.size = 4;
	assert_int_equal(fdx_partition_create(c->ex, lbp, &po, &p), -EINVAL);
	po.size = sizeof(po);
	po.n_subpartitions = 0;
	assert_int_equal(fdx_partition_create(c->ex, lbp, &po, &p), -EINVAL);
	po.n_subpartitions = 65537;
	assert_int_equal(fdx_partition_create(c->ex, lbp, &po, &p), -EINVAL);
	po.n_subpartitions = 2;
	po.max_record = FDX_RECORD_MAX_LIMIT + 1;
	assert_int_equal(fdx_partition_create(c->ex, lbp, &po, &p), -EINVAL);
	po.max_record = 1000;
	assert_null(p);
	assert_int_equal(fdx_partition_create(c->ex, lbp, &po, &p), 0);
	*out = p;

	/* Emit: NULLs, sub out of range, above max_record; before connect, records wait. */
	rec_fill(rec, 1000, 0, 0);
	assert_int_equal(fdx_partition_emit(NULL, 0, rec, 10, 0), -EINVAL);
	assert_int_equal(fdx_partition_emit(p, 2, rec, 10, 0), -EINVAL);
	assert_int_equal(fdx_partition_emit(p, 0, NULL, 10, 0), -EINVAL);
	assert_int_equal(fdx_partition_emit(p, 0, rec, 1001, 0), -EMSGSIZE);
	assert_int_equal(fdx_partition_emit(p, 0, rec, 1000, STEP_MS), 0);
	assert_int_equal(fdx_partition_emit(p, 0, NULL, 0, STEP_MS), 0);
	assert_int_equal(fdx_partition_broadcast(NULL, rec, 10, 0, &done), -EINVAL);
	assert_int_equal(fdx_partition_broadcast(p, NULL, 10, 0, NULL), -EINVAL);
	assert_int_equal(fdx_partition_broadcast(p, rec, 1001, 0, &done), -EMSGSIZE);
	assert_int_equal(done, 0);

	/* Reserve and commit. */
	assert_int_equal(fdx_partition_reserve(NULL, 0, 10, &at, 0), -EINVAL);
	assert_int_equal(fdx_partition_reserve(p, 2, 10, &at, 0), -EINVAL);
	assert_int_equal(fdx_partition_reserve(p, 0, 10, NULL, 0), -EINVAL);
	assert_int_equal(fdx_partition_reserve(p, 0, 1001, &at, 0), -EMSGSIZE);
	assert_int_equal(fdx_partition_commit(NULL, 0, 0), -EINVAL);
	assert_int_equal(fdx_partition_commit(p, 0, 0), -EINVAL); /* nothing reserved */
	assert_int_equal(fdx_partition_commit(p, 2, 0), -EINVAL);
	assert_int_equal(fdx_partition_reserve(p, 1, 100, &at, STEP_MS), 0);
	assert_non_null(at);
	rec_fill(at, 100, 1, 0);
	assert_int_equal(fdx_partition_commit(p, 1, 101), -EINVAL); /* above the reservation */
	assert_int_equal(fdx_partition_commit(p, 0, 100), -EINVAL); /* sub 0 reserved nothing */
	assert_int_equal(fdx_partition_commit(p, 1, 100), 0);
	assert_int_equal(fdx_partition_commit(p, 1, 100), -EINVAL); /* once */

	/* Flush, finish, counters. */
	assert_int_equal(fdx_partition_flush(NULL, 0), -EINVAL);
	assert_int_equal(fdx_partition_flush(p, 2), -EINVAL);
	assert_int_equal(fdx_partition_finish(NULL, 0), -EINVAL);
	assert_int_equal(fdx_partition_channel_stats(NULL, 0, &cs), -EINVAL);
	assert_int_equal(fdx_partition_channel_stats(p, 0, NULL), -EINVAL);
	assert_int_equal(fdx_partition_channel_stats(p, 2, &cs), -EINVAL);
	cs.size = 4;
	assert_int_equal(fdx_partition_channel_stats(p, 0, &cs), -EINVAL);
	cs.size = sizeof(cs);
	assert_int_equal(fdx_partition_channel_stats(p, 0, &cs), 0);
	assert_int_equal(cs.link, 0); /* not connected yet */
	assert_int_equal(fdx_partition_stats(NULL, &ps), -EINVAL);
	assert_int_equal(fdx_partition_stats(p, NULL), -EINVAL);
	ps.size = 4;
	assert_int_equal(fdx_partition_stats(p, &ps), -EINVAL);
}

static void partition_connect_rejects_bad_arguments(struct cons *c, struct fdx_partition *p)
{
	struct fdx_exchange_opts eo = {.size = sizeof(eo), .listen = "127.0.0.1:0", .tm_id = "x"};
	struct fdx_gate_opts go = {.size = sizeof(go), .gate = GATE, .n_channels = 2};
	const char *addr = fdx_exchange_address(c->ex);
	struct fdx_exchange *ex2;
	struct fdx_gate *g2;

	assert_int_equal(fdx_partition_connect(NULL, 0, addr, GATE, 0, FDX_LINK_LOCAL, STEP_MS),
			 -EINVAL);
	assert_int_equal(fdx_partition_connect(p, 0, NULL, GATE, 0, FDX_LINK_LOCAL, STEP_MS),
			 -EINVAL);
	assert_int_equal(fdx_partition_connect(p, 2, addr, GATE, 0, FDX_LINK_LOCAL, STEP_MS),
			 -EINVAL);
	assert_int_equal(fdx_partition_connect(p, 0, addr, GATE, 0, 99, STEP_MS), -EINVAL);
	assert_int_equal(fdx_partition_connect(p, 0, addr, 99, 0, FDX_LINK_LOCAL, STEP_MS),
			 -ENOENT);
	assert_int_equal(fdx_partition_connect(p, 0, addr, GATE, 0, FDX_LINK_LOCAL, STEP_MS), 0);
	assert_int_equal(fdx_partition_connect(p, 0, addr, GATE, 0, FDX_LINK_LOCAL, STEP_MS),
			 -EISCONN);
	/* local to another exchange cannot be. */
	assert_int_equal(fdx_exchange_create(&eo, &ex2), 0);
	assert_int_equal(fdx_gate_create(ex2, NULL, &go, &g2), 0);
	assert_int_equal(fdx_partition_connect(p, 1, fdx_exchange_address(ex2), GATE, 1,
					       FDX_LINK_LOCAL, STEP_MS),
			 -EOPNOTSUPP);
	fdx_gate_destroy(g2);
	fdx_exchange_destroy(ex2);
	assert_int_equal(fdx_partition_connect(p, 1, addr, GATE, 1, FDX_LINK_LOCAL, STEP_MS), 0);
}

static void event_rejects_bad_arguments(struct fdx_partition *p, uint8_t *payload)
{
	uint64_t ts = 1;

	assert_int_equal(fdx_partition_event(NULL, 0, FDX_EVENT_WATERMARK, 0, &ts, 8), -EINVAL);
	assert_int_equal(fdx_partition_event(p, 2, FDX_EVENT_WATERMARK, 0, &ts, 8), -EINVAL);
	assert_int_equal(fdx_partition_event(p, 0, 0, 0, &ts, 8), -EINVAL);
	assert_int_equal(fdx_partition_event(p, 0, 99, 0, &ts, 8), -EINVAL);
	assert_int_equal(fdx_partition_event(p, 0, FDX_EVENT_WATERMARK, 0x80, &ts, 8), -EINVAL);
	assert_int_equal(fdx_partition_event(p, 0, FDX_EVENT_WATERMARK, 0, NULL, 8), -EINVAL);
	assert_int_equal(
		fdx_partition_event(p, 0, FDX_EVENT_USER, 0, payload, FDX_EVENT_PAYLOAD_MAX + 1),
		-EMSGSIZE);
	assert_int_equal(
		fdx_partition_event(p, FDX_ALL_SUBPARTITIONS, FDX_EVENT_WATERMARK, 0, &ts, 8), 0);
	assert_int_equal(
		fdx_partition_event(p, 0, FDX_EVENT_USER, 0, payload, FDX_EVENT_PAYLOAD_MAX), 0);
	assert_int_equal(fdx_partition_flush(p, FDX_ALL_SUBPARTITIONS), 0);
}

static void gate_rejects_bad_arguments(struct cons *c, struct fdx_gate **out)
{
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 2};
	struct fdx_gate_opts go = {.size = sizeof(go), .gate = 9, .n_channels = 1};
	struct fdx_input_channel_stats ics = {.size = sizeof(ics)};
	struct fdx_gate_stats gs = {.size = sizeof(gs)};
	struct fdx_gate *g = (void *)1, *g9;
	struct fdx_lbp *small;
	struct fdx_view v, zero;
	const void *rec;
	uint32_t len;
	uint64_t t0;

	assert_int_equal(fdx_gate_create(NULL, NULL, &go, &g), -EINVAL);
	assert_null(g);
	assert_int_equal(fdx_gate_create(c->ex, NULL, NULL, &g), -EINVAL);
	assert_int_equal(fdx_gate_create(c->ex, NULL, &go, NULL), -EINVAL);
	go.size = 4;
	assert_int_equal(fdx_gate_create(c->ex, NULL, &go, &g), -EINVAL);
	go.size = sizeof(go);
	go.n_channels = 0;
	assert_int_equal(fdx_gate_create(c->ex, NULL, &go, &g), -EINVAL);
	go.n_channels = 65537;
	assert_int_equal(fdx_gate_create(c->ex, NULL, &go, &g), -EINVAL);
	go.n_channels = 1;
	go.exclusive_credits = FDX_CREDITS_NONE;
	go.floating_credits = FDX_CREDITS_NONE;
	assert_int_equal(fdx_gate_create(c->ex, NULL, &go, &g), -EINVAL);
	/* 4 channels of 2 exclusive + 8 floating need 16 segments, not 2. */
	go.n_channels = 4;
	go.exclusive_credits = 0;
	go.floating_credits = 0;
	assert_int_equal(fdx_lbp_create(c->nbp, &lo, &small), 0);
	assert_int_equal(fdx_gate_create(c->ex, small, &go, &g), -EINVAL);
	assert_null(g);
	/* The same id twice. */
	go.gate = GATE;
	go.n_channels = 1;
	assert_int_equal(fdx_gate_create(c->ex, NULL, &go, &g), -EEXIST);
	assert_null(g);
	go.gate = 9;
	assert_int_equal(fdx_gate_create(c->ex, NULL, &go, &g9), 0);
	*out = g9;
	fdx_lbp_destroy(small);

	/* Nothing to take: -EAGAIN at once with 0, after the wait otherwise. */
	assert_int_equal(fdx_gate_next(NULL, &v, 0), -EINVAL);
	assert_int_equal(fdx_gate_next(g9, NULL, 0), -EINVAL);
	assert_int_equal(fdx_gate_next(g9, &v, 0), -EAGAIN);
	t0 = test_now_ns();
	assert_int_equal(fdx_gate_next(g9, &v, 30), -EAGAIN);
	assert_true(test_now_ns() - t0 >= 25000000ull);
	memset(&zero, 0, sizeof(zero));
	assert_int_equal(fdx_gate_next_record(NULL, &zero, &rec, &len), -EINVAL);
	assert_int_equal(fdx_gate_next_record(g9, NULL, &rec, &len), -EINVAL);
	assert_int_equal(fdx_gate_next_record(g9, &zero, &rec, &len), -EINVAL);
	assert_int_equal(fdx_gate_release(NULL, &zero), -EINVAL);
	assert_int_equal(fdx_gate_release(g9, NULL), -EINVAL);
	assert_int_equal(fdx_gate_release(g9, &zero), -EINVAL);
	assert_int_equal(fdx_gate_event_fd(NULL), -EINVAL);
	assert_true(fdx_gate_event_fd(g9) >= 0);
	assert_int_equal(fdx_gate_stats(NULL, &gs), -EINVAL);
	assert_int_equal(fdx_gate_stats(g9, NULL), -EINVAL);
	gs.size = 4;
	assert_int_equal(fdx_gate_stats(g9, &gs), -EINVAL);
	assert_int_equal(fdx_gate_channel_stats(NULL, 0, &ics), -EINVAL);
	assert_int_equal(fdx_gate_channel_stats(g9, 0, NULL), -EINVAL);
	assert_int_equal(fdx_gate_channel_stats(g9, 1, &ics), -EINVAL);
	ics.size = 4;
	assert_int_equal(fdx_gate_channel_stats(g9, 0, &ics), -EINVAL);
}

/* A view is released once: a buffer view and an event view, each twice. */
static void release_twice_is_refused(struct cons *c)
{
	int buffers = 0, user = 0;
	char why[160];

	for (int i = 0; i < 32 && !user; i++) {
		struct fdx_view v;
		const void *rec;
		uint32_t len;

		assert_int_equal(fdx_gate_next(c->gate, &v, STEP_MS), 0);
		if (v.kind == FDX_VIEW_BUFFER && v.channel == 0 && buffers++ == 0) {
			/* The records emitted before connect: 1000 bytes, then 0. */
			assert_int_equal(fdx_gate_next_record(c->gate, &v, &rec, &len), 1);
			assert_int_equal(len, 1000);
			if (rec_check(rec, len, 0, 0, why, sizeof(why)) != 0)
				fail_msg("%s", why);
			assert_int_equal(fdx_gate_release(c->gate, &v), 0);
			assert_int_equal(fdx_gate_release(c->gate, &v), -EINVAL);
			continue;
		}
		if (v.kind == FDX_VIEW_EVENT && v.event_type == FDX_EVENT_USER) {
			assert_int_equal(v.len, FDX_EVENT_PAYLOAD_MAX);
			assert_int_equal(fdx_gate_release(c->gate, &v), 0);
			assert_int_equal(fdx_gate_release(c->gate, &v), -EINVAL);
			user = 1;
			continue;
		}
		assert_true(v.kind == FDX_VIEW_BUFFER || v.kind == FDX_VIEW_EVENT);
		assert_int_equal(fdx_gate_release(c->gate, &v), 0);
	}
	assert_int_equal(buffers >= 1, 1);
	assert_int_equal(user, 1);
}

static void test_dataplane_rejects_bad_arguments(void **state)
{
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = 8};
	struct fdx_partition_opts bo = {.size = sizeof(bo), .n_subpartitions = 1};
	struct cons *c = cons_open(&links[LOCAL], MODE_ARGS);
	uint8_t *payload = calloc(1, FDX_EVENT_PAYLOAD_MAX + 1);
	struct fdx_partition *p, *big;
	struct fdx_lbp *lbp, *lbp2;
	struct fdx_gate *g9;
	uint64_t ts = 2;
	void *at = NULL;

	(void)state;
	assert_non_null(payload);
	assert_int_equal(fdx_lbp_create(c->nbp, &lo, &lbp), 0);
	assert_int_equal(fdx_lbp_create(c->nbp, &lo, &lbp2), 0);
	partition_rejects_bad_arguments(c, lbp, &p);
	partition_connect_rejects_bad_arguments(c, p);
	event_rejects_bad_arguments(p, payload);

	/* A reservation is at most a segment with its length prefix. */
	assert_int_equal(fdx_partition_create(c->ex, lbp2, &bo, &big), 0);
	assert_int_equal(fdx_partition_reserve(big, 0, SEG - 3, &at, 0), -EMSGSIZE);
	assert_int_equal(fdx_partition_reserve(big, 0, SEG - 4, &at, STEP_MS), 0);
	assert_int_equal(fdx_partition_commit(big, 0, 0), 0);

	gate_rejects_bad_arguments(c, &g9);
	release_twice_is_refused(c);

	/* Nothing after END_OF_PARTITION. */
	assert_int_equal(fdx_partition_event(p, 0, FDX_EVENT_END_OF_PARTITION, 0, NULL, 0), 0);
	assert_int_equal(fdx_partition_event(p, 0, FDX_EVENT_WATERMARK, 0, &ts, 8), FDX_ECLOSED);

	fdx_partition_destroy(big);
	fdx_partition_destroy(p);
	fdx_partition_destroy(NULL);
	fdx_gate_destroy(g9);
	fdx_gate_destroy(NULL);
	fdx_lbp_destroy(lbp2);
	fdx_lbp_destroy(lbp);
	cons_close(c);
	free(payload);
}

/* ---- 7. destroy right after finish loses nothing; the channels can be reused ---- */

/* The next record of the generator for channel ch, from *k on; 0 if none is left before end. */
static int dr_next(uint32_t ch, uint64_t *k, uint64_t end)
{
	while (*k < end && dr_channel(*k) != ch)
		(*k)++;
	return *k < end;
}

static const char *kind_name(uint32_t kind)
{
	return kind == FDX_VIEW_BUFFER ? "buffer" : kind == FDX_VIEW_EVENT ? "event" : "failure";
}

/*
 * Records first .. first + n - 1, each on its channel in order and intact,
 * then END_OF_PARTITION on both channels; no failure, nothing after the end.
 */
static void consume_generated(struct cons *c, uint64_t first, uint64_t n, uint32_t *spanning)
{
	uint64_t next[DR_CH], items[DR_CH] = {0}, end = first + n;
	uint64_t deadline = test_now_ns() + 60000000000ull;
	uint32_t n_ended = 0, views = 0;
	int ended[DR_CH] = {0};

	for (uint32_t ch = 0; ch < DR_CH; ch++)
		next[ch] = first;
	*spanning = 0;
	while (n_ended < DR_CH) {
		struct fdx_view v;
		uint32_t ch;
		int rc = fdx_gate_next(c->gate, &v, STEP_MS);

		if (rc != 0) {
			cons_dump(c);
			fail_msg(
				"gate next: %s, with %u of %u channels ended (next records: %llu on "
				"channel 0, %llu on channel 1, of %llu .. %llu)",
				fdx_strerror(rc), n_ended, DR_CH, ULL(next[0]), ULL(next[1]),
				ULL(first), ULL(end - 1));
		}
		ch = v.channel;
		if (ch >= DR_CH)
			fail_msg("a view of channel %u", ch);
		if (ended[ch]) {
			cons_dump(c);
			fail_msg("channel %u: a %s view (event %u, error %s: %s) after "
				 "END_OF_PARTITION",
				 ch, kind_name(v.kind), v.event_type, fdx_strerror(v.error),
				 v.message ? v.message : "");
		}
		if (v.kind != FDX_VIEW_FAILED && v.seq != items[ch])
			fail_msg("channel %u: item seq %llu, expected %llu", ch, ULL(v.seq),
				 ULL(items[ch]));
		items[ch]++;
		if (v.kind == FDX_VIEW_BUFFER) {
			const void *rec;
			uint32_t len;
			char why[160];
			int r;

			while ((r = fdx_gate_next_record(c->gate, &v, &rec, &len)) == 1) {
				if (!dr_next(ch, &next[ch], end))
					fail_msg(
						"channel %u: a record of %u bytes after its last one",
						ch, len);
				if (len != dr_len(next[ch]))
					fail_msg("channel %u, record %llu: %u bytes, expected %u",
						 ch, ULL(next[ch]), len, dr_len(next[ch]));
				if (rec_check(rec, len, ch, next[ch], why, sizeof(why)) != 0)
					fail_msg("channel %u, record %llu: %s", ch, ULL(next[ch]),
						 why);
				*spanning += len > SEG;
				next[ch]++;
			}
			if (r != 0) {
				cons_dump(c);
				fail_msg("channel %u: next_record: %s after record %llu", ch,
					 fdx_strerror(r), ULL(next[ch]));
			}
		} else if (v.kind == FDX_VIEW_EVENT && v.event_type == FDX_EVENT_END_OF_PARTITION) {
			if (dr_next(ch, &next[ch], end))
				fail_msg(
					"channel %u: END_OF_PARTITION before record %llu (the tail "
					"was lost)",
					ch, ULL(next[ch]));
			ended[ch] = 1;
			n_ended++;
		} else if (v.kind == FDX_VIEW_FAILED) {
			cons_dump(c);
			fail_msg("channel %u failed before its END_OF_PARTITION, record %llu "
				 "next: %s: %s",
				 ch, ULL(next[ch]), fdx_strerror(v.error),
				 v.message ? v.message : "");
		} else {
			fail_msg("channel %u: view kind %u, event %u", ch, v.kind, v.event_type);
		}
		assert_int_equal(fdx_gate_release(c->gate, &v), 0);
		if (++views > 100000 || test_now_ns() > deadline)
			fail_msg("%u views: more, or longer, than %llu records can fill", views,
				 ULL(n));
	}
}

/*
 * After END_OF_PARTITION on both channels nothing more comes, and both
 * channels close (the producer closed them): they may be opened again.
 */
static void await_channels_closed(struct cons *c)
{
	uint64_t end = test_now_ns() + 5000000000ull;
	struct fdx_gate_stats gs;

	for (;;) {
		struct fdx_view v;
		int rc = fdx_gate_next(c->gate, &v, 20);

		if (rc == 0) {
			cons_dump(c);
			fail_msg("channel %u: a %s view (event %u, error %s: %s) after "
				 "END_OF_PARTITION",
				 v.channel, kind_name(v.kind), v.event_type, fdx_strerror(v.error),
				 v.message ? v.message : "");
		}
		assert_int_equal(rc, -EAGAIN);
		memset(&gs, 0, sizeof(gs));
		gs.size = sizeof(gs);
		assert_int_equal(fdx_gate_stats(c->gate, &gs), 0);
		if (gs.channels_open == 0)
			break;
		if (test_now_ns() > end) {
			cons_dump(c);
			fail_msg("%u channel(s) still open 5 s after the producer ended them and "
				 "was destroyed",
				 gs.channels_open);
		}
	}
	assert_int_equal(gs.held, 0);
	for (uint32_t ch = 0; ch < DR_CH; ch++) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		assert_int_equal(fdx_gate_channel_stats(c->gate, ch, &cs), 0);
		assert_int_equal(cs.error, 0);
		assert_int_equal(cs.held, 0);
	}
}

static void destroy_right_after_finish_loses_nothing(int li)
{
	/* Both producers now: no process is forked once this one has an exchange. */
	struct peer *pe = peer_spawn(&links[li], MODE_DESTROY, 0);
	struct peer *pe2 = peer_spawn(&links[li], MODE_REUSE, 0);
	struct cons *c = cons_open(&links[li], MODE_DESTROY);
	uint32_t spanning = 0, spanning2 = 0;
	char line[1024];

	peer_go(pe, c);
	consume_generated(c, 0, DR_RECORDS, &spanning);
	/* rc=0: its finish returned 0 before it destroyed the partition. */
	peer_result(pe, c, line, sizeof(line));
	assert_int_equal(kv(line, "records"), DR_RECORDS);
	print_message("%s: %u records (%u spanning buffers) arrived whole though the producer "
		      "was destroyed right after finish\n",
		      links[li].name, DR_RECORDS, spanning);
	assert_true(spanning >= DR_MIN_SPANNING);
	peer_stop(pe);
	await_channels_closed(c);

	/* Channel reuse after a clean close: a second producer opens both channels again. */
	peer_go(pe2, c);
	consume_generated(c, REUSE_FIRST, REUSE_RECORDS, &spanning2);
	peer_result(pe2, c, line, sizeof(line));
	assert_int_equal(kv(line, "records"), REUSE_RECORDS);
	peer_stop(pe2);
	cons_close(c);
}

PER_LINK(destroy_right_after_finish_loses_nothing, destroy_right_after_finish_loses_nothing)

int main(int argc, char **argv)
{
#define T(fn) cmocka_unit_test_teardown(fn, reap)
	const struct CMUnitTest tests[] = {
		T(test_local_records_arrive_once_in_order_intact),
		T(test_shm_records_arrive_once_in_order_intact),
		T(test_tcp_records_arrive_once_in_order_intact),
		T(test_local_nothing_copied_between_emit_and_read),
		T(test_shm_nothing_copied_between_emit_and_read),
		T(test_tcp_copies_are_counted),
		T(test_local_priority_barrier_overtakes_queued_buffers),
		T(test_shm_priority_barrier_overtakes_queued_buffers),
		T(test_tcp_priority_barrier_overtakes_queued_buffers),
		T(test_local_slow_consumer_backpressures_producer_within_bounds),
		T(test_shm_slow_consumer_backpressures_producer_within_bounds),
		T(test_tcp_slow_consumer_backpressures_producer_within_bounds),
		T(test_local_timed_out_emit_loses_nothing),
		T(test_shm_timed_out_emit_loses_nothing),
		T(test_tcp_timed_out_emit_loses_nothing),
		T(test_local_destroy_right_after_finish_loses_nothing),
		T(test_shm_destroy_right_after_finish_loses_nothing),
		T(test_tcp_destroy_right_after_finish_loses_nothing),
		/* Last: a sanitizer abort in argument checking must not hide the other results. */
		T(test_dataplane_rejects_bad_arguments),
	};
#undef T

	if (argc > 1 && strcmp(argv[1], "child") == 0)
		return child_main(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	/* FDX_TEST_FILTER=pattern runs only the matching tests (for chasing one). */
	if (getenv("FDX_TEST_FILTER"))
		cmocka_set_test_filter(getenv("FDX_TEST_FILTER"));
	return cmocka_run_group_tests_name("dataplane", tests, NULL, NULL);
}
