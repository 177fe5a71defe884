/* SPDX-License-Identifier: MIT */
/*
 * Peer crashes (issue 6): a TaskManager SIGKILLed at a random moment, many
 * rounds in a row, on shm and on tcp, from both sides.
 *
 * The test process is one long-lived TaskManager; the TaskManagers it loses
 * are this program re-executed ("child producer ..." / "child consumer ...",
 * started with posix_spawn, so no atfork handler of gRPC runs) and killed by
 * a thread of the test after a random delay. The seed is printed;
 * FDX_TEST_SEED repeats a run, FDX_TEST_CRASH_ROUNDS sets the rounds of the
 * shm scenarios (tcp runs a third of them, at least 10), FDX_TEST_CRASH_VERBOSE
 * prints every line the library logs.
 *
 * Consumer side (this process: exchange + gate of 4 channels): a producer
 * child feeds channels 0..2, a living producer child feeds channel 3 all
 * along. Each round starts a new producer (it opens channels 0..2 again) and
 * kills it once data flows on its three channels (every fifth round: at a
 * random moment of its start-up instead). Then, within one second: each
 * of its channels gives one FDX_VIEW_FAILED naming it, no channel of it
 * stays open, its stream is gone, and the living channel keeps delivering.
 * The views held across the kill are re-read byte by byte (unchanged; on shm
 * the dead producer's region is still mapped), then released; then (within
 * 5 s, bounded) its memfd is mapped no more and the descriptor count, the
 * memfd mappings and the tcp pool are back to what they were before the
 * first round.
 *
 * Producer side (this process: exchange + pool + a partition per round of
 * two subpartitions): subpartition 1 feeds a living consumer child (one
 * channel of its gate per round), subpartition 0 a consumer child that is
 * killed: while data flows, after its consumer stopped releasing and emit
 * blocked on the empty pool (backpressure), or at a random moment of its
 * start-up. The consumer restarts at the same address (shm: a fixed Unix
 * socket) with a new id. Within one second: subpartition 0 has failed with
 * nothing in flight (every segment sent to the dead consumer is
 * back), the emit that was blocked returns -EPIPE, and subpartition 1 keeps
 * flowing; the living consumer then checks it got every record of the
 * round, in order, intact. A start-up kill that left subpartition 0
 * unconnected is followed by a restarted consumer at the same address, which
 * subpartition 0 connects to and which must get all its records. After the
 * partition is finished and destroyed (within 5 s, bounded) the pool has
 * every segment back, the outgoing stream to the dead peer is gone, and the
 * descriptor count and memfd mappings are back to their start.
 *
 * "Within one second" counts from the moment the killed process is dead (a
 * thread watches it with waitid(WNOWAIT) right after the SIGKILL: the kernel
 * has closed its descriptors then; on an idle host that is a few ms after
 * the kill), and does not count time the test thread demonstrably was not
 * scheduled (gaps over 20 ms between its looks): an overloaded host must not
 * make the library look slow. Both are printed.
 *
 * tcp, views held across a kill: the same in a fixed, small setting where
 * the dead producer's views hold all but the living channel's exclusive
 * segments of the gate's pool; the living channel must use its credit
 * without ever finding no segment to receive into.
 *
 * Every child says which descriptors it inherited: none may come from the
 * library (they must all be O_CLOEXEC).
 *
 * Records are generated, never stored: record (tag, seq) has a length and
 * content derived from both, and a 16-byte header {tag, len, seq}; the tag
 * names the round and the subpartition, so a record of an earlier producer
 * is told apart.
 */
#ifdef _GNU_SOURCE
/* helpers.h defines it; a build that passes -D_GNU_SOURCE must not see two definitions. */
#undef _GNU_SOURCE
#endif
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include <fdx/fdx.h>

#define SEG (32u * 1024)
#define NBP_SEGS 256u
#define GATE_ID 9u
#define STEP_MS 20000 /* hang guard: the longest a connect, finish or a child's answer may take */
#define BUDGET_NS 1000000000ull /* the "within one second" */
/* "Gone after the last release" (descriptors, mappings, pool back to start): bounded too. */
#define SETTLE_NS \
	20000000000ull /* generous: under heavy load the loop frees a dead connection late */
#define ROUND_CAP_NS 60000000000ull /* hang guard: no wait of a round may take longer */
#define KILL_AFTER_DATA_NS 50000000ull /* flowing kills: 0 .. 50 ms after data flowed */
#define KILL_AFTER_STALL_NS 20000000ull /* stalled kills: 0 .. 20 ms after emit blocked */
#define EARLY_EVERY 5u /* every fifth round kills during start-up */
#define BUFFER_TIMEOUT_MS 2u /* every partition here flushes this often */
#define MAX_ROUNDS 60u
#define BURST 16u /* records between a writer's throttling naps */
#define NAP_US 100

/* Consumer side: the killed producer's channels, then the living producer's. */
#define DOOMED 3u
#define LIVE_CH DOOMED
#define C_CHANNELS (DOOMED + 1)
#define C_EXCL 4u
#define C_FLOAT 8u
#define HOLD_BEFORE 6u /* views kept back before the kill is armed, oldest released first */
#define HELD_MAX 128u

/* Producer side: the partition's pool, the killed consumer's and the living one's credits. */
#define P_POOL 24u
#define A_EXCL 4u
#define A_FLOAT 4u
#define B_EXCL 2u
#define B_FLOAT 8u
#define B_CHANNELS (MAX_ROUNDS + 1) /* channel 0: the warm-up; channel r + 1: round r */
#define AFTER_RECORDS 50u /* records subpartition 1 must emit after subpartition 0 failed */
#define EMIT_BLOCK_MS 20000 /* how long the emit to the doomed consumer may block */
#define CHILD_POOL 32u

#define ULL(x) ((unsigned long long)(x))
#define MS(ns) ((double)(ns) / 1e6)

/* ---- links and rounds ------------------------------------------------------ */

struct link {
	const char *name;
	uint32_t link; /* enum fdx_link */
	const char *listen; /* exchanges' listen address; NULL: a Unix socket of the default dir */
};

enum { SHM, TCP };

static const struct link links[] = {
	[SHM] = {"shm", FDX_LINK_SHM, NULL},
	[TCP] = {"tcp", FDX_LINK_TCP, "127.0.0.1:0"},
};

static const struct link *link_named(const char *s)
{
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (strcmp(s, links[i].name) == 0)
			return &links[i];
	return NULL;
}

/*
 * Rounds of the shm scenarios (tcp: a third, at least 10): 40, or 30 under
 * ASan or with CI=true; FDX_TEST_CRASH_ROUNDS sets it (at most MAX_ROUNDS).
 */
static uint32_t rounds_for(int li)
{
	const char *e = getenv("FDX_TEST_CRASH_ROUNDS");
	const char *ci = getenv("CI");
	uint32_t n = 40;

#ifdef TEST_UNDER_ASAN
	n = 30;
#endif
	if (ci && strcmp(ci, "true") == 0 && n > 30)
		n = 30;
	if (e && atoi(e) > 0)
		n = (uint32_t)atoi(e);
	if (n > MAX_ROUNDS)
		n = MAX_ROUNDS;
	if (li == TCP)
		n = n / 3 > 10 ? n / 3 : 10;
	return n;
}

/* ---- randomness ------------------------------------------------------------ */

static uint64_t g_seed;

/* Every random choice and every record byte comes from test_mix64(). */
struct rng {
	uint64_t s;
};

static uint64_t rnd_below(struct rng *r, uint64_t n)
{
	r->s += 0x632be59bd9b4e019ull;
	return n ? test_mix64(r->s) % n : 0;
}

/* ---- records --------------------------------------------------------------- */

#define HDR 16u
#define REC_MAX (SEG / 4 + 2 * SEG)
#define WORD_STEP 0x9e3779b97f4a7c15ull
#define LIVE_TAG 0xff00u
#define WARM_TAG 0xfe00u

struct rec_hdr {
	uint32_t tag;
	uint32_t len;
	uint64_t seq;
};
_Static_assert(sizeof(struct rec_hdr) == HDR, "the record header is 16 bytes");

/* The tag of subpartition sub's records in round r. */
static uint32_t rtag(uint32_t r, uint32_t sub)
{
	return (r + 1) * 16 + sub;
}

/* Mostly 16 B .. 2 KiB; one in 64 is 8 .. 72 KiB and spans buffers. */
static uint32_t rec_len(uint32_t tag, uint64_t seq)
{
	uint64_t h = test_mix64(((uint64_t)tag << 40) ^ seq ^ 0x6c656eull);

	if (h % 64 == 0)
		return SEG / 4 + (uint32_t)((h >> 8) % (2 * SEG));
	return HDR + (uint32_t)((h >> 8) % 2048);
}

static uint64_t rec_key(uint32_t tag, uint64_t seq)
{
	return test_mix64(test_mix64(seq) ^ ((uint64_t)tag << 32));
}

/* Write record (tag, seq) at d; its length. */
static uint32_t rec_fill(uint8_t *d, uint32_t tag, uint64_t seq)
{
	uint32_t len = rec_len(tag, seq), k = 0;
	struct rec_hdr h = {.tag = tag, .len = len, .seq = seq};
	uint64_t key = rec_key(tag, seq);

	memcpy(d, &h, HDR);
	for (uint32_t off = HDR; off < len; off += 8, k++) {
		uint64_t w = key + k * WORD_STEP;

		memcpy(d + off, &w, len - off < 8 ? len - off : 8);
	}
	return len;
}

/* 0 if r (len bytes) is record (tag, seq); else -1 with why. */
static int rec_check(const uint8_t *r, uint32_t len, uint32_t tag, uint64_t seq, char *why,
		     size_t n)
{
	uint64_t key = rec_key(tag, seq);
	struct rec_hdr h;
	uint32_t k = 0;

	if (len < HDR) {
		snprintf(why, n, "a record of %u bytes, shorter than its header", len);
		return -1;
	}
	memcpy(&h, r, HDR);
	if (h.tag != tag || h.seq != seq || h.len != len || len != rec_len(tag, seq)) {
		snprintf(why, n,
			 "record (tag %#x, seq %llu, %u bytes, header says %u) where (tag %#x, "
			 "seq %llu, %u bytes) was due",
			 h.tag, ULL(h.seq), len, h.len, tag, ULL(seq), rec_len(tag, seq));
		return -1;
	}
	for (uint32_t off = HDR; off < len; off += 8, k++) {
		uint64_t w = key + k * WORD_STEP, got = 0;
		uint32_t m = len - off < 8 ? len - off : 8;

		memcpy(&got, r + off, m);
		if (memcmp(&got, &w, m) != 0) {
			snprintf(why, n, "record (tag %#x, seq %llu): byte %u of %u differs", tag,
				 ULL(seq), off, len);
			return -1;
		}
	}
	return 0;
}

/* FNV-1a over 8-byte words: reads every byte of a view. */
static uint64_t bytes_hash(const void *p, uint32_t len)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	uint32_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, b + i, 8);
		h = (h ^ w) * 0x100000001b3ull;
	}
	for (; i < len; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

/* ---- a thread-safe log sink ------------------------------------------------ */

struct xlog {
	pthread_mutex_t mu;
	uint32_t count, errors;
	size_t len;
	char text[16384]; /* the latest lines */
};

static void xlog_fn(void *ud, enum fdx_log_level lvl, const char *func, int line, const char *msg)
{
	struct xlog *l = ud;
	char one[600];
	int n;

	(void)func;
	(void)line;
	n = snprintf(one, sizeof(one), "%s %s\n", lvl == FDX_LOG_ERR ? "E" : "W", msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(one))
		n = (int)sizeof(one) - 1;
	if (getenv("FDX_TEST_CRASH_VERBOSE"))
		fprintf(stderr, "[pid %d] %s", (int)getpid(), one);
	pthread_mutex_lock(&l->mu);
	l->count++;
	if (lvl == FDX_LOG_ERR)
		l->errors++;
	if (l->len + (size_t)n >= sizeof(l->text)) {
		size_t keep = sizeof(l->text) / 2;

		memmove(l->text, l->text + l->len - keep, keep);
		l->len = keep;
	}
	memcpy(l->text + l->len, one, (size_t)n);
	l->len += (size_t)n;
	l->text[l->len] = '\0';
	pthread_mutex_unlock(&l->mu);
}

static void xlog_init(struct xlog *l)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->mu, NULL);
}

static int xlog_has(struct xlog *l, const char *s)
{
	int has;

	pthread_mutex_lock(&l->mu);
	has = strstr(l->text, s) != NULL;
	pthread_mutex_unlock(&l->mu);
	return has;
}

static void xlog_dump(struct xlog *l, const char *who)
{
	pthread_mutex_lock(&l->mu);
	fprintf(stderr, "%s log (%u lines, latest last):\n%s", who, l->count, l->text);
	pthread_mutex_unlock(&l->mu);
}

/* ---- descriptors and mappings ------------------------------------------- */

/* The memfd regions mapped here: the inode of each mapping line, sorted. */
struct maps {
	uint32_t n;
	unsigned long ino[128];
};

static int ul_cmp(const void *a, const void *b)
{
	unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;

	return x < y ? -1 : x > y;
}

static void maps_read(struct maps *m)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[4096];

	m->n = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long ino;

		if (!strstr(line, "memfd:fdx-region"))
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %lu", &ino) == 1 &&
		    m->n < sizeof(m->ino) / sizeof(m->ino[0]))
			m->ino[m->n++] = ino;
	}
	fclose(f);
	qsort(m->ino, m->n, sizeof(m->ino[0]), ul_cmp);
}

static int maps_equal(const struct maps *a, const struct maps *b)
{
	return a->n == b->n && memcmp(a->ino, b->ino, a->n * sizeof(a->ino[0])) == 0;
}

/* Mapping lines of now whose memfd base does not have. */
static uint32_t maps_foreign(const struct maps *now, const struct maps *base)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < now->n; i++) {
		int known = 0;

		for (uint32_t j = 0; j < base->n && !known; j++)
			known = base->ino[j] == now->ino[i];
		n += !known;
	}
	return n;
}

/* Print this process's descriptors and memfd mappings, for a failure message. */
static void fds_dump(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	struct maps m;

	fprintf(stderr, "  descriptors:");
	while (d && (e = readdir(d))) {
		char path[300], target[128];
		ssize_t r;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		r = readlink(path, target, sizeof(target) - 1);
		target[r > 0 ? r : 0] = '\0';
		fprintf(stderr, " %s=%s", e->d_name, target);
	}
	if (d)
		closedir(d);
	maps_read(&m);
	fprintf(stderr, "\n  memfd mappings (inodes):");
	for (uint32_t i = 0; i < m.n; i++)
		fprintf(stderr, " %lu", m.ino[i]);
	fprintf(stderr, "\n");
}

/* ---- children -------------------------------------------------------------- */

extern char **environ;

struct child {
	pid_t pid;
	int to, from; /* its stdin and stdout */
	int eof;
	size_t len;
	char buf[8192]; /* what it said, not yet taken */
	char name[48];
};

/* The children alive, for the teardown after a failure. */
static struct child *g_kids[4];

/* Start this program again with argv, its stdin and stdout piped to us. */
static void kid_spawn(struct child *k, const char *name, char *const argv[])
{
	posix_spawn_file_actions_t fa;
	int in[2], out[2], rc;

	memset(k, 0, sizeof(*k));
	k->to = k->from = -1;
	snprintf(k->name, sizeof(k->name), "%s", name);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
	assert_int_equal(posix_spawn_file_actions_adddup2(&fa, in[0], 0), 0);
	assert_int_equal(posix_spawn_file_actions_adddup2(&fa, out[1], 1), 0);
	rc = posix_spawn(&k->pid, "/proc/self/exe", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(in[0]);
	close(out[1]);
	if (rc != 0) {
		close(in[1]);
		close(out[0]);
		fail_msg("posix_spawn of %s: %s", name, strerror(rc));
	}
	k->to = in[1];
	k->from = out[0];
	for (size_t i = 0; i < sizeof(g_kids) / sizeof(g_kids[0]); i++)
		if (!g_kids[i]) {
			g_kids[i] = k;
			break;
		}
}

/* A line of k starting with prefix within ms (0: only what can be read now); 0 or -1. */
static int kid_line(struct child *k, const char *prefix, char *out, size_t n, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	for (;;) {
		struct pollfd pf = {.fd = k->from, .events = POLLIN};
		uint64_t now = test_now_ns();
		ssize_t r;

		if (test_take_line(k->buf, &k->len, prefix, out, n))
			return 0;
		if (k->len == sizeof(k->buf))
			k->len = 0; /* a line too long for us: not one we wait for */
		if (k->eof)
			return -1;
		if (poll(&pf, 1, now < end ? (int)((end - now) / 1000000u) + 1 : 0) <= 0) {
			if (test_now_ns() >= end)
				return -1;
			continue;
		}
		r = read(k->from, k->buf + k->len, sizeof(k->buf) - k->len);
		if (r <= 0)
			k->eof = 1;
		else
			k->len += (size_t)r;
	}
}

static void kid_say(struct child *k, const char *line)
{
	(void)!write(k->to, line, strlen(line));
}

/* Reap k within ms; its wait status, or -1 if it did not end. */
static int kid_wait(struct child *k, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;
	int status = 0;

	while (k->pid > 0) {
		pid_t r = waitpid(k->pid, &status, WNOHANG);

		if (r == k->pid) {
			k->pid = 0;
			return status;
		}
		if (test_now_ns() >= end)
			return -1;
		test_sleep_us(500);
	}
	return -1;
}

/* Close what we have of k; it must have been reaped. */
static void kid_close(struct child *k)
{
	if (k->to >= 0)
		close(k->to);
	if (k->from >= 0)
		close(k->from);
	k->to = k->from = -1;
	for (size_t i = 0; i < sizeof(g_kids) / sizeof(g_kids[0]); i++)
		if (g_kids[i] == k)
			g_kids[i] = NULL;
}

static const char *status_str(int st, char *buf, size_t n)
{
	if (st == -1)
		snprintf(buf, n, "still running");
	else if (WIFEXITED(st))
		snprintf(buf, n, "exit %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, n, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, n, "status %#x", st);
	return buf;
}

/* A killed child must have died of our SIGKILL, not of anything before it (SIGBUS, ...). */
static void kid_reap_killed(struct child *k)
{
	int st = kid_wait(k, 5000);
	char b[64];

	if (st == -1 || !WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
		fail_msg("%s: %s, expected death by our SIGKILL", k->name,
			 status_str(st, b, sizeof(b)));
	kid_close(k);
}

/* A living child told to stop must exit 0 (it checked everything it got). */
static void kid_reap_clean(struct child *k)
{
	int st = kid_wait(k, 20000);
	char b[64];

	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("%s: %s, expected exit 0", k->name, status_str(st, b, sizeof(b)));
	kid_close(k);
}

/* Every child started must say how many descriptors it inherited: none but 0, 1, 2. */
static void kid_check_inherited(struct child *k, int ms)
{
	char line[512];

	if (kid_line(k, "inherited ", line, sizeof(line), ms) != 0)
		return; /* killed before it could say: nothing to check */
	if (strncmp(line, "inherited 0", 11) != 0)
		fail_msg("%s inherited descriptors of this process (they lack O_CLOEXEC): %s",
			 k->name, line);
}

static void rm_dir(const char *dir);
struct killer;
static void killer_join(struct killer *k);

/* A killer thread not joined yet (after a failure): joined before its child is reaped. */
static struct killer *g_killer;

/* The producer side's socket directory, removed by reap() after a failure. */
static char g_dir[64];

/* Teardown: whatever a failed test left alive is killed (ours, by pid). */
static int reap(void **state)
{
	(void)state;
	if (g_killer)
		killer_join(g_killer); /* it kills a child of ours, not a reused pid */
	for (size_t i = 0; i < sizeof(g_kids) / sizeof(g_kids[0]); i++) {
		struct child *k = g_kids[i];

		g_kids[i] = NULL;
		if (!k)
			continue;
		if (k->pid > 0) {
			kill(k->pid, SIGKILL);
			waitpid(k->pid, NULL, 0);
			k->pid = 0;
		}
		if (k->to >= 0)
			close(k->to);
		if (k->from >= 0)
			close(k->from);
		k->to = k->from = -1;
	}
	if (g_dir[0]) {
		rm_dir(g_dir);
		g_dir[0] = '\0';
	}
	return 0;
}

/* ---- the killer ------------------------------------------------------------ */

struct killer {
	pthread_t th;
	int started;
	pid_t pid;
	uint64_t at_ns;
	void (*before)(void *ud); /* run just before the kill (samples), or NULL */
	void *ud;
	_Atomic uint64_t kill_ns; /* stored just before kill(): nothing can fail earlier */
	_Atomic uint64_t dead_ns; /* when the kernel had ended it (its descriptors closed) */
};

/*
 * When pid has died (exited or killed; not reaped: WNOWAIT), looking every
 * 100 us for up to 30 s; 0 if it did not. By then the kernel has closed its
 * descriptors: the library can notice. How long the kernel takes to end a
 * killed process is not the library's: its time limits count from here.
 */
static uint64_t await_death(pid_t pid)
{
	uint64_t end = test_now_ns() + 30000000000ull;

	while (test_now_ns() < end) {
		siginfo_t si;

		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 ||
		    si.si_pid == pid)
			return test_now_ns();
		test_sleep_us(100);
	}
	return 0;
}

static void *killer_main(void *arg)
{
	struct killer *k = arg;
	struct timespec ts = {(time_t)(k->at_ns / 1000000000ull), (long)(k->at_ns % 1000000000ull)};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
	if (k->before)
		k->before(k->ud);
	atomic_store_explicit(&k->kill_ns, test_now_ns(), memory_order_release);
	kill(k->pid, SIGKILL);
	atomic_store_explicit(&k->dead_ns, await_death(k->pid), memory_order_release);
	return NULL;
}

static void killer_start(struct killer *k, pid_t pid, uint64_t at_ns, void (*before)(void *),
			 void *ud)
{
	assert_false(k->started);
	k->pid = pid;
	k->at_ns = at_ns;
	k->before = before;
	k->ud = ud;
	atomic_store_explicit(&k->kill_ns, 0, memory_order_relaxed);
	atomic_store_explicit(&k->dead_ns, 0, memory_order_relaxed);
	assert_int_equal(pthread_create(&k->th, NULL, killer_main, k), 0);
	k->started = 1;
	g_killer = k;
}

static uint64_t killer_done(struct killer *k)
{
	return atomic_load_explicit(&k->kill_ns, memory_order_acquire);
}

/* When the killed child was seen dead; 0 until then (or if it did not die in 30 s). */
static uint64_t killer_dead(struct killer *k)
{
	return atomic_load_explicit(&k->dead_ns, memory_order_acquire);
}

static void killer_join(struct killer *k)
{
	if (k->started)
		pthread_join(k->th, NULL);
	k->started = 0;
	g_killer = NULL;
}

/* A new round: no kill yet. */
static void killer_reset(struct killer *k)
{
	assert_false(k->started);
	atomic_store_explicit(&k->kill_ns, 0, memory_order_relaxed);
	atomic_store_explicit(&k->dead_ns, 0, memory_order_relaxed);
}

/* ---- starvation meter ------------------------------------------------------ */

/*
 * The longest this thread went between two looks at what it waits for, in
 * the current bounded wait: a failed time limit says whether the test itself
 * was starved (the host overloaded) rather than the library slow.
 */
#define STARVED_NS 20000000ull /* a gap longer than this between two looks: not scheduled */
#define STARVED_MAX_NS 10000000000ull /* the most starvation forgiven in one wait */

static uint64_t g_gap_last, g_gap_max, g_starved, g_starved_max;

static void gap_start(void)
{
	g_gap_last = test_now_ns();
	g_gap_max = 0;
	g_starved = 0;
}

static void gap_tick(void)
{
	uint64_t now = test_now_ns(), gap = now - g_gap_last;

	if (gap > g_gap_max)
		g_gap_max = gap;
	if (gap > STARVED_NS)
		g_starved += gap - STARVED_NS;
	if (g_starved > g_starved_max)
		g_starved_max = g_starved;
	g_gap_last = now;
}

/*
 * The one-second limit of the current wait. Time this thread demonstrably
 * did not run (each gap between its looks beyond 20 ms; the host is
 * overloaded) is not counted against the library: on an idle host it is 0.
 */
static uint64_t budget_ns(void)
{
	return BUDGET_NS + (g_starved < STARVED_MAX_NS ? g_starved : STARVED_MAX_NS);
}

static uint64_t settle_budget_ns(void)
{
	return SETTLE_NS + (g_starved < STARVED_MAX_NS ? g_starved : STARVED_MAX_NS);
}

/* a - b, or 0 if b came later (times read on different threads). */
static uint64_t ns_after(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

static const char *gap_note(char *buf, size_t n)
{
	char la[64] = "?";
	FILE *f = fopen("/proc/loadavg", "re");

	if (f) {
		if (fgets(la, sizeof(la), f))
			la[strcspn(la, "\n")] = '\0';
		fclose(f);
	}
	snprintf(buf, n,
		 "[in this wait the test thread went up to %.1f ms between looks (%.1f ms not "
		 "scheduled, not counted); load %s]",
		 MS(g_gap_max), MS(g_starved), la);
	return buf;
}

/* ---- the children's programs ---------------------------------------------- */

/* One line to the parent. */
static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(1, line, (size_t)n);
}

/*
 * The descriptors the test process itself had when it started (from its own
 * parent: a shell, ctest), passed to the children as FDX_CRASH_OWN_FDS: they
 * are not the library's.
 */
static void note_own_fds(void)
{
	char list[512] = ",";
	size_t used = 1;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	while (d && (e = readdir(d))) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] != '.' && fd > 2 && fd != dirfd(d) && used < sizeof(list) - 16)
			used += (size_t)snprintf(list + used, sizeof(list) - used, "%d,", fd);
	}
	if (d)
		closedir(d);
	setenv("FDX_CRASH_OWN_FDS", list, 1);
}

static int fd_was_open(int fd)
{
	const char *own = getenv("FDX_CRASH_OWN_FDS");
	char pat[16];

	snprintf(pat, sizeof(pat), ",%d,", fd);
	return own && strstr(own, pat) != NULL;
}

/* Report the descriptors inherited from the test (anything but 0, 1, 2 and its own). */
static void say_inherited(void)
{
	char list[256] = "";
	size_t used = 0;
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	while (d && (e = readdir(d))) {
		int fd = atoi(e->d_name);
		char path[64], target[128];
		ssize_t r;

		if (e->d_name[0] == '.' || fd <= 2 || fd == dirfd(d) || fd_was_open(fd))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		r = readlink(path, target, sizeof(target) - 1);
		target[r > 0 ? r : 0] = '\0';
		n++;
		if (used < sizeof(list) - 1)
			used += (size_t)snprintf(list + used, sizeof(list) - used, " %d=%s", fd,
						 target);
	}
	if (d)
		closedir(d);
	say("inherited %d%s", n, list);
}

/* A command from the parent, if one came; -1 on EOF (the parent is gone or done). */
static int read_cmd(char *buf, size_t *len, char *cmd, size_t n, int ms)
{
	struct pollfd pf = {.fd = 0, .events = POLLIN};
	ssize_t r;

	if (test_take_line(buf, len, "", cmd, n))
		return 1;
	if (poll(&pf, 1, ms) <= 0)
		return 0;
	r = read(0, buf + *len, 1024 - *len);
	if (r <= 0)
		return -1;
	*len += (size_t)r;
	return test_take_line(buf, len, "", cmd, n);
}

static int exchange_create(const struct link *l, const char *listen, const char *tm,
			   struct xlog *log, struct fdx_exchange **ex)
{
	struct fdx_exchange_opts eo = {.size = sizeof(eo),
				       .listen = listen ? listen : l->listen,
				       .tm_id = tm,
				       .log_fn = xlog_fn,
				       .log_ud = log};

	return fdx_exchange_create(&eo, ex);
}

static int nbp_create(struct fdx_nbp **nbp)
{
	struct fdx_nbp_opts no = {.size = sizeof(no), .seg_size = SEG, .seg_count = NBP_SEGS};

	return fdx_nbp_create(&no, nbp);
}

/*
 * "child producer LINK TM ADDR FIRST N TAGBASE LIVE": a partition of N
 * subpartitions feeding channels FIRST.. of gate GATE_ID at ADDR, emitting
 * until it is killed. A living one (LIVE 1) also takes "pause" (stop
 * emitting, flush, say "paused records=N"), "resume", and "stop" (finish,
 * say "result rc=R records=N", exit).
 */
static int child_producer(char **argv)
{
	const struct link *l = link_named(argv[3]);
	const char *tm = argv[4], *addr = argv[5];
	uint32_t first = (uint32_t)atoi(argv[6]), n = (uint32_t)atoi(argv[7]);
	uint32_t tagbase = (uint32_t)atoi(argv[8]);
	int live = atoi(argv[9]), paused = 0, rc;
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = CHILD_POOL};
	struct fdx_partition_opts po = {.size = sizeof(po),
					.n_subpartitions = n,
					.partition_id = tm,
					.flags = FDX_PARTITION_BUFFER_TIMEOUT,
					.buffer_timeout_ms = BUFFER_TIMEOUT_MS};
	static struct xlog log;
	struct fdx_nbp *nbp = NULL;
	struct fdx_lbp *lbp = NULL;
	struct fdx_exchange *ex = NULL;
	struct fdx_partition *p = NULL;
	uint64_t seq[DOOMED + 1] = {0};
	uint8_t *buf = malloc(REC_MAX);
	char in[1024], cmd[128];
	size_t in_len = 0;

	xlog_init(&log);
	if (!l || !buf || n == 0 || n > DOOMED + 1)
		return 2;
	if ((rc = nbp_create(&nbp)) || (rc = fdx_lbp_create(nbp, &lo, &lbp)) ||
	    (rc = exchange_create(l, NULL, tm, &log, &ex)) ||
	    (rc = fdx_partition_create(ex, lbp, &po, &p))) {
		say("error setup %d", rc);
		return 1;
	}
	for (uint32_t i = 0; i < n; i++) {
		rc = fdx_partition_connect(p, i, addr, GATE_ID, first + i, l->link, STEP_MS);
		if (rc) {
			say("error connect %u: %d %s", i, rc, fdx_strerror(rc));
			xlog_dump(&log, tm);
			return 1;
		}
	}
	say("ready");
	for (;;) {
		int c = read_cmd(in, &in_len, cmd, sizeof(cmd), paused ? 5 : 0);

		if (c < 0 || (c > 0 && strcmp(cmd, "stop") == 0))
			break;
		if (c > 0 && strcmp(cmd, "pause") == 0) {
			paused = 1;
			fdx_partition_flush(p, FDX_ALL_SUBPARTITIONS);
			say("paused records=%llu", ULL(seq[0]));
		} else if (c > 0 && strcmp(cmd, "resume") == 0) {
			paused = 0;
		}
		for (uint32_t b = 0; !paused && b < BURST; b++) {
			uint32_t i = b % n, len = rec_fill(buf, tagbase + i, seq[i]);

			rc = fdx_partition_emit(p, i, buf, len, 1000);
			if (rc == 0) {
				seq[i]++;
			} else if (rc != -ETIMEDOUT) {
				say("error emit %u: %d %s", i, rc, fdx_strerror(rc));
				xlog_dump(&log, tm);
				return 1;
			}
		}
		if (!paused)
			test_sleep_us(NAP_US);
	}
	if (live) {
		rc = fdx_partition_finish(p, 10000);
		say("result rc=%d records=%llu", rc, ULL(seq[0]));
	}
	fdx_partition_destroy(p);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(lbp);
	fdx_nbp_destroy(nbp);
	free(buf);
	return 0;
}

/* What a consumer child knows of one of its channels. */
struct cchan {
	uint32_t tag; /* of the first record; every later one must have it */
	uint64_t seq; /* the next record due */
	uint32_t bad, failed, ended;
};

/*
 * "child consumer LINK TM LISTEN N MODE STALL_AFTER": a gate of N channels,
 * serving at LISTEN ("-": the link's default). It says "addr ADDRESS" and
 * checks every record it gets (each channel carries one tag, sequence
 * numbers from 0). MODE live releases every view and answers "check CH N"
 * with "ok CH records=N" once CH ended with exactly N intact records (else
 * "bad ..."); flow releases every view; stall releases the first
 * STALL_AFTER buffers and holds every later one. "stop" or EOF ends it.
 */
static int child_consumer(char **argv)
{
	const struct link *l = link_named(argv[3]);
	const char *tm = argv[4], *listen = strcmp(argv[5], "-") == 0 ? NULL : argv[5];
	uint32_t n = (uint32_t)atoi(argv[6]), stall_after = (uint32_t)atoi(argv[8]);
	int live = strcmp(argv[7], "live") == 0, stall = strcmp(argv[7], "stall") == 0;
	uint32_t excl = live ? B_EXCL : A_EXCL, flt = live ? B_FLOAT : A_FLOAT;
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = n * excl + flt, .max = n * excl + flt};
	struct fdx_gate_opts go = {.size = sizeof(go),
				   .gate = GATE_ID,
				   .n_channels = n,
				   .exclusive_credits = excl,
				   .floating_credits = flt};
	static struct xlog log;
	static struct fdx_view held[HELD_MAX];
	struct fdx_nbp *nbp = NULL;
	struct fdx_lbp *pool = NULL;
	struct fdx_exchange *ex = NULL;
	struct fdx_gate *g = NULL;
	struct cchan *cs = calloc(n ? n : 1, sizeof(*cs));
	uint32_t n_held = 0, buffers = 0, check_ch = UINT32_MAX, bad = 0;
	uint64_t check_n = 0, check_end = 0;
	char in[1024], cmd[128], why[256];
	size_t in_len = 0;
	int rc;

	xlog_init(&log);
	if (!l || !cs || n == 0)
		return 2;
	if ((rc = nbp_create(&nbp)) ||
	    (l->link == FDX_LINK_TCP && (rc = fdx_lbp_create(nbp, &lo, &pool))) ||
	    (rc = exchange_create(l, listen, tm, &log, &ex)) ||
	    (rc = fdx_gate_create(ex, pool, &go, &g))) {
		say("error setup %d %s", rc, fdx_strerror(rc));
		xlog_dump(&log, tm);
		return 1;
	}
	say("addr %s", fdx_exchange_address(ex));
	for (;;) {
		struct fdx_view v;
		int c = read_cmd(in, &in_len, cmd, sizeof(cmd), 0);
		unsigned ch;
		unsigned long long want;

		if (c < 0 || (c > 0 && strcmp(cmd, "stop") == 0))
			break;
		if (c > 0 && sscanf(cmd, "check %u %llu", &ch, &want) == 2 && ch < n) {
			check_ch = ch;
			check_n = want;
			check_end = test_now_ns() + (uint64_t)STEP_MS * 1000000u;
		}
		rc = fdx_gate_next(g, &v, 5);
		if (rc == 0 && v.kind == FDX_VIEW_BUFFER) {
			struct cchan *k = &cs[v.channel];
			const void *rec;
			uint32_t len;

			while ((rc = fdx_gate_next_record(g, &v, &rec, &len)) == 1) {
				struct rec_hdr h;

				memcpy(&h, rec, len < HDR ? len : HDR);
				if (k->seq == 0 && len >= HDR)
					k->tag = h.tag;
				if (rec_check(rec, len, k->tag, k->seq, why, sizeof(why)) != 0) {
					if (!k->bad++)
						fprintf(stderr, "%s: channel %u: %s\n", tm,
							v.channel, why);
					bad++;
				}
				k->seq++;
			}
			if (rc < 0) {
				fprintf(stderr, "%s: next_record: %d\n", tm, rc);
				k->bad++;
				bad++;
			}
			buffers++;
			if (stall && buffers > stall_after && n_held < HELD_MAX)
				held[n_held++] = v;
			else
				fdx_gate_release(g, &v);
		} else if (rc == 0) {
			if (v.kind == FDX_VIEW_EVENT && v.event_type == FDX_EVENT_END_OF_PARTITION)
				cs[v.channel].ended = 1;
			if (v.kind == FDX_VIEW_FAILED) {
				cs[v.channel].failed++;
				fprintf(stderr, "%s: channel %u failed: %d %s\n", tm, v.channel,
					v.error, v.message ? v.message : "");
			}
			fdx_gate_release(g, &v);
		}
		if (check_ch != UINT32_MAX) {
			struct cchan *k = &cs[check_ch];

			if (k->ended || test_now_ns() > check_end) {
				if (k->ended && k->seq == check_n && !k->bad && !k->failed)
					say("ok %u records=%llu", check_ch, ULL(k->seq));
				else
					say("bad %u records=%llu want=%llu bad=%u failed=%u ended=%u",
					    check_ch, ULL(k->seq), ULL(check_n), k->bad, k->failed,
					    k->ended);
				check_ch = UINT32_MAX;
			}
		}
	}
	for (uint32_t i = 0; i < n_held; i++)
		fdx_gate_release(g, &held[i]);
	fdx_gate_destroy(g);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(pool);
	fdx_nbp_destroy(nbp);
	free(cs);
	return bad ? 1 : 0;
}

static int child_main(int argc, char **argv)
{
	/* Killed with us, and never older than five minutes, whatever the parent does. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(300);
	signal(SIGPIPE, SIG_IGN);
	say_inherited();
	if (argc >= 10 && strcmp(argv[2], "producer") == 0)
		return child_producer(argv);
	if (argc >= 9 && strcmp(argv[2], "consumer") == 0)
		return child_consumer(argv);
	return 2;
}

/* ---- consumer side: this process is the gate's TaskManager ---------------- */

struct held {
	struct fdx_view v;
	uint64_t hash;
};

struct ctm {
	const struct link *l;
	struct xlog log;
	struct rng rng;
	struct fdx_nbp *nbp;
	struct fdx_lbp *pool; /* tcp: the gate's segments */
	struct fdx_exchange *ex;
	struct fdx_gate *g;
	struct child live, doomed;
	struct killer k;
	char addr[300];
	/* the round */
	uint32_t round;
	char tm[32];
	int early, hold, hold_all;
	uint64_t seq[DOOMED];
	uint32_t got[DOOMED], failed[DOOMED];
	uint64_t failed_ns[DOOMED];
	int failed_err[DOOMED];
	struct held held[HELD_MAX];
	uint32_t n_held;
	uint64_t live_seq, live_after_kill;
	int live_ended;
	uint8_t early_round[MAX_ROUNDS];
	/* what must come back after every round */
	int fds0;
	struct maps maps0;
	uint32_t in_use0, sessions0;
	/* over the rounds */
	uint32_t rounds, early_rounds, late_failed;
	uint64_t max_fail_ns, max_back_ns, max_death_ns, startup_ns, views_verified, bytes_verified;
};

static void c_dump(struct ctm *t)
{
	struct fdx_exchange_stats es = {.size = sizeof(es)};
	struct fdx_gate_stats gs = {.size = sizeof(gs)};

	fdx_exchange_stats(t->ex, &es);
	fdx_gate_stats(t->g, &gs);
	fprintf(stderr,
		"consumer/%s round %u (%s): sessions %u (start %u) channels_in %u; gate open %u "
		"held %u; views held by the test %u\n",
		t->l->name, t->round, t->tm, es.sessions, t->sessions0, es.channels_in,
		gs.channels_open, gs.held, t->n_held);
	fds_dump();
	for (uint32_t ch = 0; ch < C_CHANNELS; ch++) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		if (fdx_gate_channel_stats(t->g, ch, &cs) == 0)
			fprintf(stderr,
				"  channel %u: link %u held %u received %llu error %d; test: got %u "
				"failed %u\n",
				ch, cs.link, cs.held, ULL(cs.buffers_received), cs.error,
				ch < DOOMED ? t->got[ch] : 0, ch < DOOMED ? t->failed[ch] : 0);
	}
	xlog_dump(&t->log, "consumer (this process)");
}

#define C_FAIL(t, ...)                                                                    \
	do {                                                                              \
		char c_why_[512], c_gap_[256];                                            \
		snprintf(c_why_, sizeof(c_why_), __VA_ARGS__);                            \
		c_dump(t);                                                                \
		fail_msg("consumer/%s round %u: %s %s", (t)->l->name, (t)->round, c_why_, \
			 gap_note(c_gap_, sizeof(c_gap_)));                               \
	} while (0)

/* Check every record of buffer view v: tag, then the sequence from *seq. */
static void c_records(struct ctm *t, struct fdx_view *v, uint32_t tag, uint64_t *seq)
{
	const void *rec;
	uint32_t len;
	char why[256];
	int rc;

	while ((rc = fdx_gate_next_record(t->g, v, &rec, &len)) == 1) {
		if (rec_check(rec, len, tag, *seq, why, sizeof(why)) != 0)
			C_FAIL(t, "channel %u: %s", v->channel, why);
		(*seq)++;
	}
	if (rc != 0)
		C_FAIL(t, "channel %u: fdx_gate_next_record: %d (%s)", v->channel, rc,
		       fdx_strerror(rc));
}

static void c_release(struct ctm *t, struct fdx_view *v)
{
	int rc = fdx_gate_release(t->g, v);

	if (rc != 0)
		C_FAIL(t, "fdx_gate_release: %d (%s)", rc, fdx_strerror(rc));
}

/* The round named in a failure message ("... crash-prod-NNN ..."), or -1. */
static int named_round(const char *msg)
{
	const char *at = msg ? strstr(msg, "crash-prod-") : NULL;

	return at ? atoi(at + strlen("crash-prod-")) : -1;
}

static void c_view(struct ctm *t, struct fdx_view *v)
{
	uint32_t ch = v->channel;

	switch (v->kind) {
	case FDX_VIEW_BUFFER:
		if (ch == LIVE_CH) {
			c_records(t, v, LIVE_TAG, &t->live_seq);
			if (killer_done(&t->k))
				t->live_after_kill++;
			c_release(t, v);
			return;
		}
		if (ch >= DOOMED)
			C_FAIL(t, "a buffer on channel %u", ch);
		c_records(t, v, rtag(t->round, ch), &t->seq[ch]);
		t->got[ch]++;
		if (!t->hold) {
			c_release(t, v);
			return;
		}
		if (!t->hold_all && t->n_held >= HOLD_BEFORE) {
			c_release(t, &t->held[0].v);
			memmove(&t->held[0], &t->held[1], (t->n_held - 1) * sizeof(t->held[0]));
			t->n_held--;
		}
		if (t->n_held == HELD_MAX)
			C_FAIL(t, "more than %u views held: credit is not bounding them", HELD_MAX);
		t->held[t->n_held].v = *v;
		t->held[t->n_held].hash = bytes_hash(v->data, v->len);
		t->n_held++;
		return;
	case FDX_VIEW_EVENT:
		if (ch == LIVE_CH && v->event_type == FDX_EVENT_END_OF_PARTITION)
			t->live_ended = 1;
		else
			C_FAIL(t, "an event of type %u on channel %u", v->event_type, ch);
		c_release(t, v);
		return;
	case FDX_VIEW_FAILED: {
		int nr = named_round(v->message);

		if (ch >= DOOMED) {
			char msg[256];
			int err = v->error;

			snprintf(msg, sizeof(msg), "%s", v->message ? v->message : "(no message)");
			fdx_gate_release(t->g, v); /* a failure leaks nothing of the library's */
			C_FAIL(t, "the living producer's channel %u failed: %d %s", ch, err, msg);
		}
		if (v->error >= 0)
			C_FAIL(t, "channel %u: a failed view with error %d", ch, v->error);
		if (nr == (int)t->round) {
			if (!killer_done(&t->k)) {
				char said[160] = "(nothing)";

				(void)kid_line(&t->doomed, "error", said, sizeof(said), 100);
				C_FAIL(t,
				       "channel %u failed before its producer was killed: %s (the "
				       "producer said: %s)",
				       ch, v->message, said);
			}
			if (t->failed[ch]++)
				C_FAIL(t, "channel %u failed twice for one opening", ch);
			t->failed_ns[ch] = test_now_ns();
			t->failed_err[ch] = v->error;
		} else if (nr >= 0 && nr < (int)t->round && t->early_round[nr]) {
			/* A producer killed during its start-up, its channel opened late. */
			t->late_failed++;
		} else {
			C_FAIL(t, "channel %u: failure that does not name %s: %d \"%s\"", ch, t->tm,
			       v->error, v->message ? v->message : "(none)");
		}
		t->seq[ch] = 0;
		c_release(t, v);
		return;
	}
	default:
		C_FAIL(t, "a view of kind %u", v->kind);
	}
}

/* Take views for up to ms (at least one look). */
static void c_pump(struct ctm *t, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;

	do {
		struct fdx_view v;
		int rc = fdx_gate_next(t->g, &v, 1);

		if (rc == 0)
			c_view(t, &v);
		else if (rc != -EAGAIN)
			C_FAIL(t, "fdx_gate_next: %d (%s)", rc, fdx_strerror(rc));
	} while (test_now_ns() < end);
}

static uint32_t c_in_use(struct ctm *t)
{
	struct fdx_lbp_stats ls = {.size = sizeof(ls)};

	if (!t->pool)
		return 0;
	assert_int_equal(fdx_lbp_stats(t->pool, &ls), 0);
	return ls.in_use;
}

/*
 * Stop the living producer and take everything it sent: then nothing but
 * the long-lived state is held and the counts can be compared exactly.
 */
static void c_quiesce(struct ctm *t)
{
	uint64_t end = test_now_ns() + (uint64_t)STEP_MS * 1000000u;
	char line[128];
	uint64_t n;

	kid_say(&t->live, "pause\n");
	while (kid_line(&t->live, "paused ", line, sizeof(line), 0) != 0) {
		if (test_now_ns() > end || t->live.eof) {
			/* Why: its channel's failed view, if it comes, says it best. */
			c_pump(t, 200);
			if (kid_line(&t->live, "error", line, sizeof(line), 0) != 0)
				snprintf(line, sizeof(line), "(it said nothing)");
			C_FAIL(t, "the living producer did not pause (%s): %s",
			       t->live.eof ? "it ended" : "no answer", line);
		}
		c_pump(t, 1);
	}
	n = strtoull(strstr(line, "records=") + 8, NULL, 10);
	for (;;) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		assert_int_equal(fdx_gate_channel_stats(t->g, LIVE_CH, &cs), 0);
		if (t->live_seq == n && cs.held == 0)
			break;
		if (test_now_ns() > end)
			C_FAIL(t, "the living producer's %llu records did not all come (%llu did)",
			       ULL(n), ULL(t->live_seq));
		c_pump(t, 1);
	}
}

static void c_resume(struct ctm *t)
{
	kid_say(&t->live, "resume\n");
}

/* Gate and exchange have forgotten the dead producer: only the living one is open. */
static int c_forgotten(struct ctm *t)
{
	struct fdx_exchange_stats es = {.size = sizeof(es)};
	struct fdx_gate_stats gs = {.size = sizeof(gs)};

	assert_int_equal(fdx_exchange_stats(t->ex, &es), 0);
	assert_int_equal(fdx_gate_stats(t->g, &gs), 0);
	return es.sessions == t->sessions0 && es.channels_in == 1 && gs.channels_open == 1;
}

static void c_round(struct ctm *t, uint32_t r)
{
	char addr_arg[300], tag_arg[16], tm_line[64];
	uint64_t spawn_ns, armed_ns = 0, kill_ns = 0, delay_ns = 0, fail_ns = 0, rel_ns, back_ns;
	uint64_t look_ns = 0, dead_ns = 0;
	uint32_t held_at_kill = 0, foreign = 0, n_failed = 0;
	struct maps m;
	int fds = -1, armed = 0;

	t->round = r;
	killer_reset(&t->k);
	t->early = r % EARLY_EVERY == EARLY_EVERY - 1;
	t->early_round[r] = (uint8_t)t->early;
	t->hold = !t->early && rnd_below(&t->rng, 4) != 0;
	t->hold_all = 0;
	t->n_held = 0;
	t->live_after_kill = 0;
	memset(t->seq, 0, sizeof(t->seq));
	memset(t->got, 0, sizeof(t->got));
	memset(t->failed, 0, sizeof(t->failed));
	snprintf(t->tm, sizeof(t->tm), "crash-prod-%03u", r);
	snprintf(addr_arg, sizeof(addr_arg), "%s", t->addr);
	snprintf(tag_arg, sizeof(tag_arg), "%u", rtag(r, 0));
	{
		char *argv[] = {"test_crash", "child",	"producer", (char *)t->l->name,
				t->tm,	      addr_arg, "0",	    "3",
				tag_arg,      "0",	NULL};

		kid_spawn(&t->doomed, t->tm, argv);
	}
	spawn_ns = test_now_ns();
	if (t->early) {
		delay_ns = rnd_below(&t->rng, t->startup_ns + t->startup_ns / 4 + 1);
		killer_start(&t->k, t->doomed.pid, spawn_ns + delay_ns, NULL, NULL);
	}
	for (;;) {
		uint64_t now;

		c_pump(t, 1);
		now = test_now_ns();
		if (!t->early && !armed && now - look_ns > 50000000u) {
			int st;

			/* No kill is on its way: a producer that ended failed by itself. */
			look_ns = now;
			if (waitpid(t->doomed.pid, &st, WNOHANG) == t->doomed.pid) {
				char b[64];

				t->doomed.pid = 0;
				if (kid_line(&t->doomed, "error", tm_line, sizeof(tm_line), 100) !=
				    0)
					snprintf(tm_line, sizeof(tm_line), "(it said nothing)");
				C_FAIL(t, "the producer child ended (%s) before any kill: %s",
				       status_str(st, b, sizeof(b)), tm_line);
			}
		}
		if (!t->early && !armed && t->got[0] && t->got[1] && t->got[2]) {
			armed = 1;
			armed_ns = now;
			if (!t->startup_ns)
				t->startup_ns = now - spawn_ns;
			t->hold_all = t->hold; /* from now on nothing of it is released */
			delay_ns = rnd_below(&t->rng, KILL_AFTER_DATA_NS);
			killer_start(&t->k, t->doomed.pid, now + delay_ns, NULL, NULL);
		}
		gap_tick();
		if (!kill_ns && (kill_ns = killer_done(&t->k)) != 0)
			held_at_kill = t->n_held;
		if (kill_ns && !dead_ns && (dead_ns = killer_dead(&t->k)) != 0)
			gap_start();
		now = test_now_ns(); /* not before the times just read */
		if (kill_ns) {
			int all = 1;

			for (uint32_t ch = 0; ch < DOOMED && !t->early; ch++)
				all = all && t->failed[ch];
			if (all && t->live_after_kill && c_forgotten(t))
				break;
			if (!dead_ns && now - kill_ns > ROUND_CAP_NS)
				C_FAIL(t, "the producer did not die after SIGKILL");
			if (dead_ns && now - dead_ns > budget_ns())
				C_FAIL(t,
				       "1 s after the producer died (%.1f ms after the kill): failed "
				       "views %u/%u/%u, living channel +%llu records, forgotten %d",
				       MS(dead_ns - kill_ns), t->failed[0], t->failed[1],
				       t->failed[2], ULL(t->live_after_kill), c_forgotten(t));
		} else if (now - spawn_ns > ROUND_CAP_NS) {
			C_FAIL(t, "no data on all of channels 0..2 within %llu s (got %u/%u/%u)",
			       ULL(ROUND_CAP_NS / 1000000000ull), t->got[0], t->got[1], t->got[2]);
		}
	}
	killer_join(&t->k);
	/* The library may have told before this thread saw the death: the killer has seen it now. */
	dead_ns = killer_dead(&t->k);
	if (!dead_ns)
		C_FAIL(t, "the producer did not die within 30 s of SIGKILL");
	if (dead_ns - kill_ns > t->max_death_ns)
		t->max_death_ns = dead_ns - kill_ns;
	for (uint32_t ch = 0; ch < DOOMED; ch++)
		if (t->failed[ch]) {
			n_failed++;
			if (ns_after(t->failed_ns[ch], kill_ns) > fail_ns)
				fail_ns = ns_after(t->failed_ns[ch], kill_ns);
		}
	/* The views held across the kill: still there, unchanged, every byte readable. */
	maps_read(&m);
	foreign = maps_foreign(&m, &t->maps0);
	if (t->l->link == FDX_LINK_SHM && t->n_held && foreign == 0)
		C_FAIL(t, "%u views held, but the dead producer's region is no longer mapped",
		       t->n_held);
	for (uint32_t i = 0; i < t->n_held; i++) {
		if (bytes_hash(t->held[i].v.data, t->held[i].v.len) != t->held[i].hash)
			C_FAIL(t, "a view held across the kill changed (%u bytes of channel %u)",
			       t->held[i].v.len, t->held[i].v.channel);
		t->views_verified++;
		t->bytes_verified += t->held[i].v.len;
	}
	for (uint32_t i = 0; i < t->n_held; i++)
		c_release(t, &t->held[i].v);
	t->n_held = 0;
	t->hold = t->hold_all = 0;
	rel_ns = test_now_ns();
	for (uint32_t ch = 0; ch < DOOMED; ch++) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		assert_int_equal(fdx_gate_channel_stats(t->g, ch, &cs), 0);
		if (cs.held != 0)
			C_FAIL(t, "channel %u still holds %u buffers after every view went", ch,
			       cs.held);
	}
	kid_check_inherited(&t->doomed, 0);
	if (kid_line(&t->doomed, "error", tm_line, sizeof(tm_line), 0) == 0)
		C_FAIL(t, "the producer failed before it was killed: %s", tm_line);
	kid_reap_killed(&t->doomed);
	/* Then everything of it goes: its mapping, its descriptors, the tcp segments. */
	c_quiesce(t);
	gap_start();
	for (;;) {
		gap_tick();
		fds = test_count_fds();
		maps_read(&m);
		if (fds == t->fds0 && maps_equal(&m, &t->maps0) && c_in_use(t) == t->in_use0)
			break;
		if (test_now_ns() - rel_ns > settle_budget_ns())
			C_FAIL(t,
			       "20 s after the last release: %d descriptors (start %d), %u memfd "
			       "mappings (start %u), %u tcp segments in use (start %u)",
			       fds, t->fds0, m.n, t->maps0.n, c_in_use(t), t->in_use0);
		test_sleep_us(200);
	}
	back_ns = test_now_ns() - rel_ns;
	c_resume(t);
	if (fail_ns > t->max_fail_ns)
		t->max_fail_ns = fail_ns;
	if (back_ns > t->max_back_ns)
		t->max_back_ns = back_ns;
	t->rounds++;
	t->early_rounds += (uint32_t)t->early;
	if (t->early)
		printf("consumer/%s round %2u: killed %5.1f ms after spawn (start-up); %u channels "
		       "had opened, failed within %.1f ms; fds %d, maps %u, pool %u back in "
		       "%.1f ms\n",
		       t->l->name, r, MS(delay_ns), n_failed, MS(fail_ns), fds, m.n, t->in_use0,
		       MS(back_ns));
	else
		printf("consumer/%s round %2u: killed %4.1f ms after data flowed (dead %.1f ms "
		       "later); failed views 3/3 within %.1f ms (err %s), %u views held across the kill re-read intact "
		       "(%u foreign mappings then); living channel +%llu records; fds %d, maps "
		       "%u, pool %u back %.1f ms after the last release\n",
		       t->l->name, r, MS(kill_ns - armed_ns), MS(dead_ns - kill_ns), MS(fail_ns),
		       fdx_strerror(t->failed_err[0]), held_at_kill, foreign,
		       ULL(t->live_after_kill), fds, m.n, t->in_use0, MS(back_ns));
	fflush(stdout);
}

static int exchange_skip(int rc)
{
	/* No io_uring here (seccomp, old kernel, io_uring_disabled): a skip, not a failure. */
	return rc == -ENOSYS || rc == -EPERM;
}

static void consumer_survives_producer_kills(int li)
{
	struct ctm *t = calloc(1, sizeof(*t)); /* leaked after a failure: threads may use it */
	struct fdx_lbp_opts lo = {.size = sizeof(lo),
				  .min = C_CHANNELS * C_EXCL + C_FLOAT,
				  .max = C_CHANNELS * C_EXCL + C_FLOAT};
	struct fdx_gate_opts go = {.size = sizeof(go),
				   .gate = GATE_ID,
				   .n_channels = C_CHANNELS,
				   .exclusive_credits = C_EXCL,
				   .floating_credits = C_FLOAT};
	struct fdx_exchange_stats es = {.size = sizeof(es)};
	uint32_t rounds = rounds_for(li);
	uint64_t t0 = test_now_ns();
	char line[256], tag_arg[16];
	int rc;

	assert_non_null(t);
	t->l = &links[li];
	t->rng.s = g_seed ^ (0xc0 + (uint64_t)li);
	xlog_init(&t->log);
	assert_int_equal(nbp_create(&t->nbp), 0);
	if (t->l->link == FDX_LINK_TCP)
		assert_int_equal(fdx_lbp_create(t->nbp, &lo, &t->pool), 0);
	rc = exchange_create(t->l, NULL, "crash-consumer", &t->log, &t->ex);
	if (exchange_skip(rc)) {
		fdx_lbp_destroy(t->pool);
		fdx_nbp_destroy(t->nbp);
		skip();
	}
	assert_int_equal(rc, 0);
	assert_int_equal(fdx_gate_create(t->ex, t->pool, &go, &t->g), 0);
	snprintf(t->addr, sizeof(t->addr), "%s", fdx_exchange_address(t->ex));
	snprintf(tag_arg, sizeof(tag_arg), "%u", LIVE_TAG);
	{
		char ch_arg[8];
		char *argv[] = {"test_crash",
				"child",
				"producer",
				(char *)t->l->name,
				"crash-live-producer",
				t->addr,
				ch_arg,
				"1",
				tag_arg,
				"1",
				NULL};

		snprintf(ch_arg, sizeof(ch_arg), "%u", LIVE_CH);
		kid_spawn(&t->live, "the living producer", argv);
	}
	kid_check_inherited(&t->live, STEP_MS);
	if (kid_line(&t->live, "ready", line, sizeof(line), 2 * STEP_MS) != 0)
		C_FAIL(t, "the living producer did not connect");
	/* The start: the living producer connected and quiet, nothing else. */
	c_quiesce(t);
	t->fds0 = test_count_fds();
	maps_read(&t->maps0);
	t->in_use0 = c_in_use(t);
	assert_int_equal(fdx_exchange_stats(t->ex, &es), 0);
	t->sessions0 = es.sessions;
	c_resume(t);
	printf("consumer/%s: seed %llu (FDX_TEST_SEED=%llu repeats it), %u rounds; start: %d "
	       "descriptors, %u memfd mappings, %u tcp segments in use, %u session\n",
	       t->l->name, ULL(g_seed), ULL(g_seed), rounds, t->fds0, t->maps0.n, t->in_use0,
	       t->sessions0);
	fflush(stdout);
	for (uint32_t r = 0; r < rounds; r++)
		c_round(t, r);
	/* The living producer's channel never faltered: every record, in order, then its end. */
	kid_say(&t->live, "stop\n");
	{
		uint64_t end = test_now_ns() + 15000000000ull;

		while (!t->live_ended && test_now_ns() < end)
			c_pump(t, 5);
	}
	if (!t->live_ended)
		C_FAIL(t, "the living producer's end did not come");
	if (kid_line(&t->live, "result ", line, sizeof(line), STEP_MS) != 0)
		C_FAIL(t, "the living producer gave no result");
	if (strncmp(line, "result rc=0 ", 12) != 0 ||
	    strtoull(strstr(line, "records=") + 8, NULL, 10) != t->live_seq)
		C_FAIL(t, "the living producer says \"%s\", the gate got %llu records", line,
		       ULL(t->live_seq));
	kid_reap_clean(&t->live);
	printf("SUMMARY consumer/%s: %u/%u rounds survived (%u killed during start-up, %u while "
	       "flowing), failure reported within max %.1f ms of the kill (limit 1000; the kernel "
	       "took up to %.1f ms to end the killed process), "
	       "%llu views (%llu bytes) held across kills re-read intact, descriptors (%d), memfd "
	       "mappings (%u) and tcp pool back to start every round within max %.1f ms of the "
	       "last release, living channel %llu records intact (%u late failures of channels "
	       "opened by start-up-killed producers), %.1f s\n",
	       t->l->name, t->rounds, rounds, t->early_rounds, t->rounds - t->early_rounds,
	       MS(t->max_fail_ns), MS(t->max_death_ns), ULL(t->views_verified),
	       ULL(t->bytes_verified), t->fds0, t->maps0.n, MS(t->max_back_ns), ULL(t->live_seq),
	       t->late_failed, (double)(test_now_ns() - t0) / 1e9);
	fflush(stdout);
	fdx_gate_destroy(t->g);
	fdx_exchange_destroy(t->ex);
	fdx_lbp_destroy(t->pool);
	assert_int_equal(fdx_nbp_destroy(t->nbp), 0);
	free(t);
}

/* ---- producer side: this process is the partition's TaskManager ----------- */

struct emitter {
	pthread_t th;
	struct fdx_partition *p;
	uint32_t tag0, tag1;
	int sub0_on; /* subpartition 0 is connected */
	uint8_t *buf;
	_Atomic int stop;
	_Atomic int err0, err1; /* the first error of each (err0: why subpartition 0 stopped) */
	_Atomic uint64_t n0, n1, n1_at_err0, err0_ns;
	_Atomic int in_emit0; /* inside the emit to subpartition 0 */
};

/*
 * The task thread: records to subpartition 0 (waiting up to 20 s for a
 * buffer: the only place it blocks) and to subpartition 1 (never waiting
 * while 0 is alive, so it is not the one blocked; a record refused with
 * -EAGAIN is tried again).
 */
static void *emitter_main(void *arg)
{
	struct emitter *e = arg;

	while (!atomic_load_explicit(&e->stop, memory_order_acquire)) {
		for (uint32_t b = 0; b < BURST; b++) {
			int alive0 =
				e->sub0_on && !atomic_load_explicit(&e->err0, memory_order_relaxed);
			uint64_t n;
			uint32_t len;
			int rc;

			if (alive0) {
				n = atomic_load_explicit(&e->n0, memory_order_relaxed);
				len = rec_fill(e->buf, e->tag0, n);
				atomic_store_explicit(&e->in_emit0, 1, memory_order_relaxed);
				rc = fdx_partition_emit(e->p, 0, e->buf, len, EMIT_BLOCK_MS);
				atomic_store_explicit(&e->in_emit0, 0, memory_order_relaxed);
				if (rc == 0) {
					atomic_store_explicit(&e->n0, n + 1, memory_order_relaxed);
				} else {
					atomic_store_explicit(&e->err0_ns, test_now_ns(),
							      memory_order_relaxed);
					atomic_store_explicit(
						&e->n1_at_err0,
						atomic_load_explicit(&e->n1, memory_order_relaxed),
						memory_order_relaxed);
					atomic_store_explicit(&e->err0, rc, memory_order_release);
					alive0 = 0;
				}
			}
			n = atomic_load_explicit(&e->n1, memory_order_relaxed);
			len = rec_fill(e->buf, e->tag1, n);
			rc = fdx_partition_emit(e->p, 1, e->buf, len, alive0 ? 0 : 2000);
			if (rc == 0) {
				atomic_store_explicit(&e->n1, n + 1, memory_order_release);
			} else if (rc != -EAGAIN) {
				atomic_store_explicit(&e->err1, rc, memory_order_release);
				return NULL;
			}
		}
		test_sleep_us(NAP_US);
	}
	return NULL;
}

struct ptm {
	const struct link *l;
	struct xlog log;
	struct rng rng;
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct fdx_exchange *ex;
	struct fdx_partition *p;
	struct child live, doomed;
	struct killer k;
	struct emitter em;
	char dir[64];
	char b_addr[400];
	char a_listen[300];
	uint32_t round;
	char tm[32];
	/* sampled just before the kill */
	uint32_t waiting_at_kill, in_flight_at_kill, in_emit_at_kill;
	/* what must come back after every round */
	int fds0;
	struct maps maps0;
	uint32_t in_use0, peers0;
	/* over the rounds */
	uint32_t rounds, early_rounds, restarts, stall_rounds, flow_rounds, blocked_kills;
	uint64_t max_back_ns, max_emit_ns, max_gone_ns, max_death_ns, startup_ns, live_records;
};

static void p_dump(struct ptm *t)
{
	struct fdx_exchange_stats es = {.size = sizeof(es)};
	struct fdx_lbp_stats ls = {.size = sizeof(ls)};

	fdx_exchange_stats(t->ex, &es);
	fdx_lbp_stats(t->lbp, &ls);
	fprintf(stderr,
		"producer/%s round %u (%s): peers_up %u (start %u) channels_out %u; pool in_use "
		"%u waiting %u; emitter n0 %llu n1 %llu err0 %d err1 %d in_emit0 %d\n",
		t->l->name, t->round, t->tm, es.peers_up, t->peers0, es.channels_out, ls.in_use,
		ls.waiting, ULL(t->em.n0), ULL(t->em.n1), t->em.err0, t->em.err1, t->em.in_emit0);
	fds_dump();
	for (uint32_t sub = 0; t->p && sub < 2; sub++) {
		struct fdx_channel_stats cs = {.size = sizeof(cs)};

		if (fdx_partition_channel_stats(t->p, sub, &cs) == 0)
			fprintf(stderr,
				"  sub %u: link %u credit %u backlog %u in_flight %u sent %llu "
				"error %d\n",
				sub, cs.link, cs.credit, cs.backlog, cs.in_flight,
				ULL(cs.buffers_sent), cs.error);
	}
	xlog_dump(&t->log, "producer (this process)");
}

#define P_FAIL(t, ...)                                                                    \
	do {                                                                              \
		char p_why_[512], p_gap_[256];                                            \
		snprintf(p_why_, sizeof(p_why_), __VA_ARGS__);                            \
		p_dump(t);                                                                \
		fail_msg("producer/%s round %u: %s %s", (t)->l->name, (t)->round, p_why_, \
			 gap_note(p_gap_, sizeof(p_gap_)));                               \
	} while (0)

static struct fdx_lbp_stats p_pool(struct ptm *t)
{
	struct fdx_lbp_stats ls = {.size = sizeof(ls)};

	assert_int_equal(fdx_lbp_stats(t->lbp, &ls), 0);
	return ls;
}

static struct fdx_channel_stats p_sub(struct ptm *t, uint32_t sub)
{
	struct fdx_channel_stats cs = {.size = sizeof(cs)};

	assert_int_equal(fdx_partition_channel_stats(t->p, sub, &cs), 0);
	return cs;
}

static uint32_t p_peers(struct ptm *t)
{
	struct fdx_exchange_stats es = {.size = sizeof(es)};

	assert_int_equal(fdx_exchange_stats(t->ex, &es), 0);
	return es.peers_up;
}

/* On the killer thread, just before the kill (flowing and stalled rounds only): no cmocka here. */
static void p_sample(void *ud)
{
	struct ptm *t = ud;
	struct fdx_lbp_stats ls = {.size = sizeof(ls)};
	struct fdx_channel_stats cs = {.size = sizeof(cs)};

	t->waiting_at_kill = fdx_lbp_stats(t->lbp, &ls) == 0 ? ls.waiting : 0;
	t->in_flight_at_kill = fdx_partition_channel_stats(t->p, 0, &cs) == 0 ? cs.in_flight : 0;
	t->in_emit_at_kill = (uint32_t)atomic_load(&t->em.in_emit0);
}

/* A partition of n subpartitions; subpartition n - 1 feeds the living consumer's channel bch. */
static void p_partition(struct ptm *t, uint32_t n, uint32_t bch, const char *id)
{
	struct fdx_partition_opts po = {.size = sizeof(po),
					.n_subpartitions = n,
					.partition_id = id,
					.flags = FDX_PARTITION_BUFFER_TIMEOUT,
					.buffer_timeout_ms = BUFFER_TIMEOUT_MS};
	int rc;

	assert_int_equal(fdx_partition_create(t->ex, t->lbp, &po, &t->p), 0);
	rc = fdx_partition_connect(t->p, n - 1, t->b_addr, GATE_ID, bch, t->l->link, STEP_MS);
	if (rc != 0)
		P_FAIL(t, "connect to the living consumer's channel %u: %d (%s)", bch, rc,
		       fdx_strerror(rc));
}

/* Consumer child k (in mode live) got exactly n intact records on ch, then the end. */
static void p_check_live(struct ptm *t, struct child *k, uint32_t ch, uint64_t n)
{
	char cmd[64], line[256], want[48];

	snprintf(cmd, sizeof(cmd), "check %u %llu\n", ch, ULL(n));
	snprintf(want, sizeof(want), "ok %u records=%llu", ch, ULL(n));
	kid_say(k, cmd);
	if (kid_line(k, "", line, sizeof(line), 2 * STEP_MS) != 0)
		P_FAIL(t, "%s did not answer \"check %u\"", k->name, ch);
	if (strcmp(line, want) != 0)
		P_FAIL(t, "%s says \"%s\", expected \"%s\"", k->name, line, want);
}

/* Start the consumer child of round r (at the same address every round) and take its address. */
static int p_spawn_consumer(struct ptm *t, const char *mode, const char *stall_after, int ms,
			    char *addr, size_t n)
{
	char *argv[] = {"test_crash", "child", "consumer",   (char *)t->l->name,  t->tm,
			t->a_listen,  "1",     (char *)mode, (char *)stall_after, NULL};

	addr[0] = '\0';
	kid_spawn(&t->doomed, t->tm, argv);
	kid_check_inherited(&t->doomed, ms);
	return kid_line(&t->doomed, "", addr, n, ms) == 0 && strncmp(addr, "addr ", 5) == 0 ? 0
											    : -1;
}

static void p_emitter_start(struct ptm *t, uint32_t r, int sub0_on)
{
	memset(&t->em, 0, sizeof(t->em));
	t->em.p = t->p;
	t->em.tag0 = rtag(r, 0);
	t->em.tag1 = rtag(r, 1);
	t->em.sub0_on = sub0_on;
	t->em.buf = malloc(REC_MAX);
	assert_non_null(t->em.buf);
	assert_int_equal(pthread_create(&t->em.th, NULL, emitter_main, &t->em), 0);
}

static void p_emitter_stop(struct ptm *t)
{
	atomic_store_explicit(&t->em.stop, 1, memory_order_release);
	assert_int_equal(pthread_join(t->em.th, NULL), 0);
	free(t->em.buf);
	t->em.buf = NULL;
	if (atomic_load(&t->em.err1))
		P_FAIL(t, "emit to the living consumer: %d (%s)", atomic_load(&t->em.err1),
		       fdx_strerror(atomic_load(&t->em.err1)));
}

/*
 * One round: FLOW kills the consumer of subpartition 0 while data flows to
 * it, STALL once it stopped releasing and emit blocks on the empty pool,
 * EARLY at a random moment of its start-up (if that left subpartition 0
 * unconnected, the consumer restarts at the same address and subpartition 0
 * connects to it: it must then take the whole round's data).
 */
static void p_round(struct ptm *t, uint32_t r)
{
	enum { FLOW, STALL, EARLY } mode;
	static const char *const mode_names[] = {"flow", "stall", "early"};
	char line[400], tm_line[128], stall_arg[16], fail_line[64] = "", early_line[160] = "";
	uint64_t spawn_ns, armed_ns = 0, kill_ns = 0, dead_ns = 0, back_ns = 0, emit_ns = 0,
			   gone_ns, delay_ns = 0;
	uint64_t connect_ns = 0, n1_after = 0, deadline;
	struct fdx_lbp_stats ls;
	struct maps m;
	int rc0 = -1, have_addr, rc, fds, restarted = 0;

	t->round = r;
	killer_reset(&t->k);
	t->waiting_at_kill = t->in_flight_at_kill = t->in_emit_at_kill = 0;
	mode = r % EARLY_EVERY == EARLY_EVERY - 1 ? EARLY : r % 2 ? STALL : FLOW;
	snprintf(t->tm, sizeof(t->tm), "crash-cons-%03u", r);
	snprintf(stall_arg, sizeof(stall_arg), "%u", (unsigned)rnd_below(&t->rng, 7));
	if (mode == EARLY) {
		char *argv[] = {"test_crash", "child",	   "consumer", (char *)t->l->name,
				t->tm,	      t->a_listen, "1",	       "flow",
				"0",	      NULL};

		kid_spawn(&t->doomed, t->tm, argv);
		spawn_ns = test_now_ns();
		delay_ns = rnd_below(&t->rng, t->startup_ns + t->startup_ns / 4 + 1);
		killer_start(&t->k, t->doomed.pid, spawn_ns + delay_ns, NULL, NULL);
		kid_check_inherited(&t->doomed, 2 * STEP_MS);
		have_addr = kid_line(&t->doomed, "addr ", line, sizeof(line), 2 * STEP_MS) == 0;
	} else {
		spawn_ns = test_now_ns();
		have_addr = p_spawn_consumer(t, mode == STALL ? "stall" : "flow", stall_arg,
					     2 * STEP_MS, line, sizeof(line)) == 0;
		if (!have_addr)
			P_FAIL(t, "the consumer child gave no address; it said \"%s\"", line);
	}
	p_partition(t, 2, r + 1, t->tm);
	if (have_addr) {
		uint64_t c0 = test_now_ns();

		rc0 = fdx_partition_connect(t->p, 0, line + 5, GATE_ID, 0, t->l->link, STEP_MS);
		connect_ns = test_now_ns() - c0;
		if (rc0 != 0 && mode != EARLY)
			P_FAIL(t, "connect to the restarted consumer at %s: %d (%s)", line + 5, rc0,
			       fdx_strerror(rc0));
		if (connect_ns > (uint64_t)STEP_MS * 1000000u + BUDGET_NS)
			P_FAIL(t, "connect took %.0f ms (its timeout is %d ms)", MS(connect_ns),
			       STEP_MS);
	}
	if (!have_addr)
		snprintf(early_line, sizeof(early_line), "before it said its address");
	else
		snprintf(early_line, sizeof(early_line), "connect %s (%d%s%s) in %.1f ms",
			 rc0 == 0 ? "ok" : "failed", rc0, rc0 ? " " : "",
			 rc0 ? fdx_strerror(rc0) : "", MS(connect_ns));
	if (mode == EARLY && rc0 != 0) {
		/* Killed before its channel opened: it restarts where it was, and we connect again. */
		killer_join(&t->k);
		kid_reap_killed(&t->doomed);
		snprintf(t->tm, sizeof(t->tm), "crash-rcon-%03u", r);
		if (p_spawn_consumer(t, "live", "0", 2 * STEP_MS, line, sizeof(line)) != 0)
			P_FAIL(t, "the restarted consumer gave no address; it said \"%s\"", line);
		rc0 = fdx_partition_connect(t->p, 0, line + 5, GATE_ID, 0, t->l->link, STEP_MS);
		if (rc0 != 0)
			P_FAIL(t,
			       "connect to the consumer restarted at %s after a failed one: %d (%s)",
			       line + 5, rc0, fdx_strerror(rc0));
		restarted = 1;
	}
	p_emitter_start(t, r, rc0 == 0);
	deadline = test_now_ns() + ROUND_CAP_NS;
	if (restarted) {
		/* No kill this time: both subpartitions flow, then end; both consumers check. */
		while (atomic_load(&t->em.n0) < 4 * AFTER_RECORDS ||
		       atomic_load(&t->em.n1) < 4 * AFTER_RECORDS)
			if (test_now_ns() > deadline || atomic_load(&t->em.err0) ||
			    atomic_load(&t->em.err1))
				P_FAIL(t, "the restarted consumer's round did not flow");
			else
				test_sleep_us(200);
		p_emitter_stop(t);
		rc = fdx_partition_finish(t->p, STEP_MS);
		if (rc != 0)
			P_FAIL(t, "finish with both consumers alive: %d (%s)", rc,
			       fdx_strerror(rc));
		p_check_live(t, &t->doomed, 0, atomic_load(&t->em.n0));
		p_check_live(t, &t->live, r + 1, atomic_load(&t->em.n1));
		t->live_records += atomic_load(&t->em.n1);
		fdx_partition_destroy(t->p);
		t->p = NULL;
		kid_say(&t->doomed, "stop\n");
		kid_reap_clean(&t->doomed);
		goto settle;
	}
	if (mode == FLOW) {
		/* Data flows to the consumer: kill it 0..50 ms later. */
		while (p_sub(t, 0).buffers_sent < 4)
			if (test_now_ns() > deadline)
				P_FAIL(t, "nothing went to the consumer child");
			else
				test_sleep_us(200);
		armed_ns = test_now_ns();
		if (!t->startup_ns)
			t->startup_ns = armed_ns - spawn_ns;
		delay_ns = rnd_below(&t->rng, KILL_AFTER_DATA_NS);
		killer_start(&t->k, t->doomed.pid, armed_ns + delay_ns, p_sample, t);
	} else if (mode == STALL) {
		/* The consumer stopped releasing, the pool ran dry, emit blocks: kill it then. */
		while (!(p_pool(t).waiting >= 1 && atomic_load(&t->em.in_emit0)))
			if (test_now_ns() > deadline)
				P_FAIL(t, "emit never blocked on the stalled consumer");
			else
				test_sleep_us(200);
		armed_ns = test_now_ns();
		delay_ns = rnd_below(&t->rng, KILL_AFTER_STALL_NS);
		killer_start(&t->k, t->doomed.pid, armed_ns + delay_ns, p_sample, t);
	}
	killer_join(&t->k);
	kill_ns = killer_done(&t->k);
	dead_ns = killer_dead(&t->k);
	if (!dead_ns)
		P_FAIL(t, "the consumer child did not die within 30 s of SIGKILL");
	if (dead_ns - kill_ns > t->max_death_ns)
		t->max_death_ns = dead_ns - kill_ns;
	if (t->em.sub0_on) {
		/* Within a second: subpartition 0 failed, and all it had in flight is back. */
		gap_start();
		for (;;) {
			struct fdx_channel_stats cs = p_sub(t, 0);
			uint64_t now = test_now_ns();

			gap_tick();
			if (cs.error != 0 && cs.in_flight == 0) {
				back_ns = now - kill_ns;
				break;
			}
			if (now - dead_ns > budget_ns())
				P_FAIL(t,
				       "1 s after the consumer died (%.1f ms after the kill), "
				       "subpartition 0 has error %d and %u buffers in flight (%u were "
				       "at the kill)",
				       MS(dead_ns - kill_ns), cs.error, cs.in_flight,
				       t->in_flight_at_kill);
			test_sleep_us(200);
		}
		/* ... and the emit to it (blocked, in a stalled round) returned an error. */
		for (;;) {
			int err = atomic_load_explicit(&t->em.err0, memory_order_acquire);
			uint64_t now = test_now_ns();

			gap_tick();
			if (err) {
				emit_ns = ns_after(atomic_load(&t->em.err0_ns), kill_ns);
				if (err != -EPIPE)
					P_FAIL(t,
					       "emit to the dead consumer returned %d (%s), not -EPIPE",
					       err, fdx_strerror(err));
				break;
			}
			if (now - dead_ns > budget_ns())
				P_FAIL(t,
				       "1 s after the consumer died the emit to it has not returned "
				       "(blocked in it: %d)",
				       atomic_load(&t->em.in_emit0));
			test_sleep_us(200);
		}
		n1_after = atomic_load(&t->em.n1_at_err0);
		if (xlog_has(&t->log, t->tm))
			snprintf(fail_line, sizeof(fail_line), "; the log names %s", t->tm);
	} else {
		n1_after = atomic_load(&t->em.n1);
	}
	/* The other subpartition keeps flowing. */
	gap_start();
	for (;;) {
		uint64_t now = test_now_ns(),
			 base = t->em.sub0_on ? atomic_load(&t->em.err0_ns) : dead_ns;
		int err1 = atomic_load(&t->em.err1);

		gap_tick();
		if (err1)
			P_FAIL(t, "emit to the living consumer: %d (%s)", err1, fdx_strerror(err1));
		if (atomic_load(&t->em.n1) >= n1_after + AFTER_RECORDS)
			break;
		if (ns_after(now, base) > budget_ns())
			P_FAIL(t, "subpartition 1 got %llu records in the second after the failure",
			       ULL(atomic_load(&t->em.n1) - n1_after));
		test_sleep_us(200);
	}
	p_emitter_stop(t);
	rc = fdx_partition_finish(t->p, STEP_MS);
	if (rc != -EPIPE)
		P_FAIL(t, "finish after subpartition 0 failed: %d (%s), expected -EPIPE", rc,
		       fdx_strerror(rc));
	p_check_live(t, &t->live, r + 1, atomic_load(&t->em.n1));
	t->live_records += atomic_load(&t->em.n1);
	fdx_partition_destroy(t->p);
	t->p = NULL;
	if (kid_line(&t->doomed, "error", tm_line, sizeof(tm_line), 0) == 0)
		P_FAIL(t, "the consumer child failed before it was killed: %s", tm_line);
	kid_reap_killed(&t->doomed);
settle:
	/* Then everything is back: the pool's segments, the descriptors, the stream to it. */
	gone_ns = test_now_ns();
	gap_start();
	for (;;) {
		gap_tick();
		ls = p_pool(t);
		fds = test_count_fds();
		maps_read(&m);
		if (ls.in_use == t->in_use0 && ls.waiting == 0 && fds == t->fds0 &&
		    maps_equal(&m, &t->maps0) && p_peers(t) == t->peers0)
			break;
		if (test_now_ns() - gone_ns > settle_budget_ns())
			P_FAIL(t,
			       "5 s after the partition went: pool in_use %u (start %u), %d "
			       "descriptors (start %d), %u memfd mappings (start %u), %u peers up "
			       "(start %u)",
			       ls.in_use, t->in_use0, fds, t->fds0, m.n, t->maps0.n, p_peers(t),
			       t->peers0);
		test_sleep_us(200);
	}
	gone_ns = test_now_ns() - gone_ns;
	if (back_ns > t->max_back_ns)
		t->max_back_ns = back_ns;
	if (emit_ns > t->max_emit_ns)
		t->max_emit_ns = emit_ns;
	if (gone_ns > t->max_gone_ns)
		t->max_gone_ns = gone_ns;
	t->rounds++;
	t->early_rounds += mode == EARLY;
	t->restarts += (uint32_t)restarted;
	t->stall_rounds += mode == STALL;
	t->flow_rounds += mode == FLOW;
	t->blocked_kills += t->em.sub0_on && t->in_emit_at_kill && t->waiting_at_kill;
	if (mode == EARLY)
		printf("producer/%s round %2u (early): killed %5.1f ms after spawn, %s; %s; pool "
		       "%u/%u, fds %d, maps %u back %.1f ms after the partition went\n",
		       t->l->name, r, MS(delay_ns), early_line,
		       restarted ? "restarted at the same address, connected again, both "
				   "subpartitions' records all arrived"
		       : back_ns ? "subpartition 0 failed, all in flight back, emit -EPIPE, "
				   "subpartition 1 kept flowing"
				 : "?",
		       ls.in_use, P_POOL, fds, m.n, MS(gone_ns));
	else
		printf("producer/%s round %2u (%s): killed %4.1f ms after %s (dead %.1f ms later); "
		       "%u in flight back in "
		       "%.1f ms; emit %sreturned -EPIPE %.1f ms after the kill; sub 1 +%llu "
		       "records after%s; pool %u/%u, fds %d, maps %u back %.1f ms after the "
		       "partition went\n",
		       t->l->name, r, mode_names[mode], MS(kill_ns - armed_ns),
		       mode == STALL ? "emit blocked" : "data flowed", MS(dead_ns - kill_ns),
		       t->in_flight_at_kill, MS(back_ns),
		       t->in_emit_at_kill && t->waiting_at_kill ? "blocked at the kill " : "",
		       MS(emit_ns), ULL(atomic_load(&t->em.n1) - n1_after), fail_line, ls.in_use,
		       P_POOL, fds, m.n, MS(gone_ns));
	fflush(stdout);
}

static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[400];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

static void producer_survives_consumer_kills(int li)
{
	struct ptm *t = calloc(1, sizeof(*t)); /* leaked after a failure: threads may use it */
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .max = P_POOL};
	uint32_t rounds = rounds_for(li);
	uint64_t t0 = test_now_ns();
	char line[400], nch[16];
	uint8_t *buf = malloc(REC_MAX);
	int rc;

	assert_non_null(t);
	assert_non_null(buf);
	t->l = &links[li];
	t->rng.s = g_seed ^ (0x90 + (uint64_t)li);
	xlog_init(&t->log);
	snprintf(t->dir, sizeof(t->dir), "/tmp/fdx-crash-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(g_dir, sizeof(g_dir), "%s", t->dir);
	/* The consumer restarts where it was (shm: the same Unix socket); tcp: any port. */
	if (t->l->link == FDX_LINK_SHM)
		snprintf(t->a_listen, sizeof(t->a_listen), "unix:%s/consumer.sock", t->dir);
	else
		snprintf(t->a_listen, sizeof(t->a_listen), "%s", t->l->listen);
	assert_int_equal(nbp_create(&t->nbp), 0);
	assert_int_equal(fdx_lbp_create(t->nbp, &lo, &t->lbp), 0);
	rc = exchange_create(t->l, NULL, "crash-producer", &t->log, &t->ex);
	if (exchange_skip(rc)) {
		fdx_lbp_destroy(t->lbp);
		fdx_nbp_destroy(t->nbp);
		rm_dir(t->dir);
		skip();
	}
	assert_int_equal(rc, 0);
	snprintf(nch, sizeof(nch), "%u", B_CHANNELS);
	{
		char *argv[] = {"test_crash",
				"child",
				"consumer",
				(char *)t->l->name,
				"crash-live-consumer",
				"-",
				nch,
				"live",
				"0",
				NULL};

		kid_spawn(&t->live, "the living consumer", argv);
	}
	kid_check_inherited(&t->live, STEP_MS);
	if (kid_line(&t->live, "addr ", line, sizeof(line), 2 * STEP_MS) != 0)
		P_FAIL(t, "the living consumer gave no address");
	snprintf(t->b_addr, sizeof(t->b_addr), "%s", line + 5);
	/* Warm-up: a partition to the living consumer's channel 0, finished and gone. */
	p_partition(t, 1, 0, "crash-warm-up");
	for (uint64_t s = 0; s < 200; s++)
		assert_int_equal(
			fdx_partition_emit(t->p, 0, buf, rec_fill(buf, WARM_TAG, s), STEP_MS), 0);
	assert_int_equal(fdx_partition_finish(t->p, STEP_MS), 0);
	p_check_live(t, &t->live, 0, 200);
	fdx_partition_destroy(t->p);
	t->p = NULL;
	/* The start: the stream to the living consumer up, the pool idle. */
	t->fds0 = test_count_fds();
	maps_read(&t->maps0);
	t->in_use0 = p_pool(t).in_use;
	t->peers0 = p_peers(t);
	printf("producer/%s: seed %llu (FDX_TEST_SEED=%llu repeats it), %u rounds; start: %d "
	       "descriptors, %u memfd mappings, pool %u/%u in use, %u peer up\n",
	       t->l->name, ULL(g_seed), ULL(g_seed), rounds, t->fds0, t->maps0.n, t->in_use0,
	       P_POOL, t->peers0);
	fflush(stdout);
	for (uint32_t r = 0; r < rounds; r++)
		p_round(t, r);
	kid_say(&t->live, "stop\n");
	kid_reap_clean(&t->live);
	printf("SUMMARY producer/%s: %u/%u rounds survived (%u killed while flowing, %u after "
	       "it stalled, %u of them with emit blocked on backpressure at that instant, %u during "
	       "start-up of which %u reconnected to the restarted consumer), in-flight segments back "
	       "within max %.1f ms of the kill and the emit returned -EPIPE within max %.1f ms "
	       "(limit 1000; the kernel took up to %.1f ms to end the killed process), "
	       "subpartition 1 kept flowing every round (%llu records verified by "
	       "the living consumer), pool (%u/%u), descriptors (%d) and memfd mappings (%u) back "
	       "to start every round within max %.1f ms, %.1f s\n",
	       t->l->name, t->rounds, rounds, t->flow_rounds, t->stall_rounds, t->blocked_kills,
	       t->early_rounds, t->restarts, MS(t->max_back_ns), MS(t->max_emit_ns),
	       MS(t->max_death_ns), ULL(t->live_records), t->in_use0, P_POOL, t->fds0, t->maps0.n,
	       MS(t->max_gone_ns), (double)(test_now_ns() - t0) / 1e9);
	fflush(stdout);
	fdx_exchange_destroy(t->ex);
	fdx_lbp_destroy(t->lbp);
	assert_int_equal(fdx_nbp_destroy(t->nbp), 0);
	rm_dir(t->dir);
	g_dir[0] = '\0';
	free(buf);
	free(t);
}

/* ---- tcp: views held across a kill keep their segments ------------------ */

/*
 * A tcp gate's credit is its pool's segments. Views of a killed producer
 * that the consumer still holds keep theirs until released, so their credit
 * must not go to another channel meanwhile: a gate of 2 channels (2
 * exclusive credits each, 8 floating, a pool of exactly 12 segments) whose
 * channel 0 holds all its 10 credits as views when its producer dies; the
 * producer of channel 1 then gets credit, and must never send a frame the
 * gate has no segment for (which would fail the living channel).
 */
#define H_EXCL 2u
#define H_FLOAT 8u
#define H_POOL (2 * H_EXCL + H_FLOAT)
#define H_RECORDS 2000u

struct hstate {
	const struct link *l;
	struct xlog log;
	struct fdx_nbp *nbp;
	struct fdx_lbp *pool;
	struct fdx_exchange *ex;
	struct fdx_gate *g;
	struct child doomed, live;
	struct held held[H_POOL + 4];
	uint32_t n_held;
	struct fdx_view live_held[H_POOL + 4];
	uint32_t n_live_held;
	uint64_t seq0, live_seq;
	int failed0, live_ended;
	uint64_t kill_ns;
};

static void h_dump(struct hstate *h)
{
	struct fdx_lbp_stats ls = {.size = sizeof(ls)};

	for (uint32_t ch = 0; ch < 2; ch++) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		if (fdx_gate_channel_stats(h->g, ch, &cs) == 0)
			fprintf(stderr,
				"  channel %u: exclusive %u floating %u backlog %u unannounced %u "
				"held %u announced %llu received %llu error %d\n",
				ch, cs.exclusive, cs.floating, cs.backlog, cs.unannounced, cs.held,
				ULL(cs.credits_announced), ULL(cs.buffers_received), cs.error);
	}
	fdx_lbp_stats(h->pool, &ls);
	fprintf(stderr, "  pool in use %u of %u; views held: channel 0 %u, channel 1 %u\n",
		ls.in_use, H_POOL, h->n_held, h->n_live_held);
	xlog_dump(&h->log, "consumer (this process)");
}

#define H_FAIL(h, ...)                                                                       \
	do {                                                                                 \
		char h_why_[512], h_gap_[256];                                               \
		snprintf(h_why_, sizeof(h_why_), __VA_ARGS__);                               \
		h_dump(h);                                                                   \
		fail_msg("tcp held views: %s %s", h_why_, gap_note(h_gap_, sizeof(h_gap_))); \
	} while (0)

static uint32_t h_in_use(struct hstate *h)
{
	struct fdx_lbp_stats ls = {.size = sizeof(ls)};

	assert_int_equal(fdx_lbp_stats(h->pool, &ls), 0);
	return ls.in_use;
}

static void h_records(struct hstate *h, struct fdx_view *v, uint32_t tag, uint64_t *seq)
{
	const void *rec;
	uint32_t len;
	char why[256];
	int rc;

	while ((rc = fdx_gate_next_record(h->g, v, &rec, &len)) == 1) {
		if (rec_check(rec, len, tag, *seq, why, sizeof(why)) != 0)
			H_FAIL(h, "channel %u: %s", v->channel, why);
		(*seq)++;
	}
	if (rc != 0)
		H_FAIL(h, "channel %u: fdx_gate_next_record: %d (%s)", v->channel, rc,
		       fdx_strerror(rc));
}

/* Take one view if there is one: channel 0's and (hold_live) channel 1's are kept. */
static void h_take(struct hstate *h, int hold_live)
{
	struct fdx_view v;
	int rc = fdx_gate_next(h->g, &v, 1);

	if (rc == -EAGAIN)
		return;
	if (rc != 0)
		H_FAIL(h, "fdx_gate_next: %d (%s)", rc, fdx_strerror(rc));
	if (v.kind == FDX_VIEW_FAILED) {
		if (v.channel != 0) {
			char msg[256];

			snprintf(msg, sizeof(msg), "%s", v.message ? v.message : "");
			fdx_gate_release(h->g, &v); /* a failure leaks nothing of the library's */
			H_FAIL(h, "the living channel %u failed: %d %s", v.channel, v.error, msg);
		}
		if (!h->kill_ns || !v.message || !strstr(v.message, "crash-held-producer"))
			H_FAIL(h,
			       "channel 0 failed before the kill, or not naming its producer: %s",
			       v.message ? v.message : "(none)");
		h->failed0 = 1;
		assert_int_equal(fdx_gate_release(h->g, &v), 0);
		return;
	}
	if (v.kind == FDX_VIEW_EVENT) {
		if (v.channel != 1 || v.event_type != FDX_EVENT_END_OF_PARTITION)
			H_FAIL(h, "an event of type %u on channel %u", v.event_type, v.channel);
		h->live_ended = 1;
		assert_int_equal(fdx_gate_release(h->g, &v), 0);
		return;
	}
	if (v.channel == 0) {
		h_records(h, &v, rtag(0, 0), &h->seq0);
		if (h->n_held == H_POOL + 4)
			H_FAIL(h, "channel 0 got more views than it has credit");
		h->held[h->n_held].v = v;
		h->held[h->n_held++].hash = bytes_hash(v.data, v.len);
		return;
	}
	h_records(h, &v, LIVE_TAG, &h->live_seq);
	if (hold_live && h->n_live_held < H_POOL + 4)
		h->live_held[h->n_live_held++] = v;
	else
		assert_int_equal(fdx_gate_release(h->g, &v), 0);
}

static void test_crash_tcp_views_held_across_a_kill_keep_their_segments(void **state)
{
	struct hstate *h = calloc(1, sizeof(*h)); /* leaked after a failure: threads may use it */
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = H_POOL, .max = H_POOL};
	struct fdx_gate_opts go = {.size = sizeof(go),
				   .gate = GATE_ID,
				   .n_channels = 2,
				   .exclusive_credits = H_EXCL,
				   .floating_credits = H_FLOAT};
	char addr[300], tag0[16], tagl[16], line[256];
	uint64_t end, dead_ns;
	int fds0, rc;

	(void)state;
	assert_non_null(h);
	h->l = &links[TCP];
	xlog_init(&h->log);
	assert_int_equal(nbp_create(&h->nbp), 0);
	assert_int_equal(fdx_lbp_create(h->nbp, &lo, &h->pool), 0);
	rc = exchange_create(h->l, NULL, "crash-held-consumer", &h->log, &h->ex);
	if (exchange_skip(rc)) {
		fdx_lbp_destroy(h->pool);
		fdx_nbp_destroy(h->nbp);
		skip();
	}
	assert_int_equal(rc, 0);
	assert_int_equal(fdx_gate_create(h->ex, h->pool, &go, &h->g), 0);
	fds0 = test_count_fds();
	snprintf(addr, sizeof(addr), "%s", fdx_exchange_address(h->ex));
	snprintf(tag0, sizeof(tag0), "%u", rtag(0, 0));
	snprintf(tagl, sizeof(tagl), "%u", LIVE_TAG);
	{
		char *argv[] = {"test_crash", "child", "producer", "tcp", "crash-held-producer",
				addr,	      "0",     "1",	   tag0,  "0",
				NULL};

		kid_spawn(&h->doomed, "the producer of channel 0", argv);
	}
	/* Channel 0 holds every credit it can get (exclusive and floating) as views. */
	end = test_now_ns() + ROUND_CAP_NS;
	while (h->n_held < H_EXCL + H_FLOAT) {
		if (test_now_ns() > end)
			H_FAIL(h, "channel 0 got %u views, not %u", h->n_held, H_EXCL + H_FLOAT);
		h_take(h, 0);
	}
	if (h_in_use(h) != H_EXCL + H_FLOAT)
		H_FAIL(h, "%u segments in use for %u views", h_in_use(h), h->n_held);
	h->kill_ns = test_now_ns();
	kill(h->doomed.pid, SIGKILL);
	dead_ns = await_death(h->doomed.pid);
	if (!dead_ns)
		H_FAIL(h, "the producer did not die within 30 s of SIGKILL");
	gap_start();
	while (!h->failed0) {
		gap_tick();
		if (test_now_ns() - dead_ns > budget_ns())
			H_FAIL(h, "no failed view on channel 0 within 1 s of its producer's death");
		h_take(h, 0);
	}
	kid_reap_killed(&h->doomed);
	printf("tcp held views: %u views of channel 0 held across its producer's kill, failed "
	       "after %.1f ms; %u of %u segments in use\n",
	       h->n_held, MS(test_now_ns() - h->kill_ns), h_in_use(h), H_POOL);
	/*
	 * Channel 1's producer now sends: it has its exclusive credit (the 2 free
	 * segments). Hold its views too, until it has used all the credit it was
	 * given and has more queued: no frame may have found no segment.
	 */
	{
		char *argv[] = {"test_crash", "child", "producer", "tcp", "crash-live-producer",
				addr,	      "1",     "1",	   tagl,  "1",
				NULL};

		kid_spawn(&h->live, "the producer of channel 1", argv);
	}
	end = test_now_ns() + ROUND_CAP_NS;
	for (;;) {
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		h_take(h, 1);
		assert_int_equal(fdx_gate_channel_stats(h->g, 1, &cs), 0);
		if (h->n_live_held >= H_EXCL && cs.backlog >= 1 && cs.unannounced == 0 &&
		    cs.buffers_received >= cs.credits_announced && h->n_live_held == cs.held)
			break;
		if (test_now_ns() > end)
			H_FAIL(h, "channel 1 did not use its credit");
	}
	{
		struct fdx_input_channel_stats cs = {.size = sizeof(cs)};

		assert_int_equal(fdx_gate_channel_stats(h->g, 1, &cs), 0);
		printf("tcp held views: channel 1 used its %llu credits (%u floating), backlog %u, "
		       "without failing; %u of %u segments in use\n",
		       ULL(cs.credits_announced), cs.floating, cs.backlog, h_in_use(h), H_POOL);
	}
	/* The dead producer's views: unchanged; then they go, and channel 1 flows. */
	for (uint32_t i = 0; i < h->n_held; i++) {
		if (bytes_hash(h->held[i].v.data, h->held[i].v.len) != h->held[i].hash)
			H_FAIL(h, "a view held across the kill changed");
		assert_int_equal(fdx_gate_release(h->g, &h->held[i].v), 0);
	}
	h->n_held = 0;
	for (uint32_t i = 0; i < h->n_live_held; i++)
		assert_int_equal(fdx_gate_release(h->g, &h->live_held[i]), 0);
	h->n_live_held = 0;
	end = test_now_ns() + ROUND_CAP_NS;
	while (h->live_seq < H_RECORDS) {
		if (test_now_ns() > end)
			H_FAIL(h, "channel 1 delivered %llu records, not %u", ULL(h->live_seq),
			       H_RECORDS);
		h_take(h, 0);
	}
	kid_say(&h->live, "stop\n");
	end = test_now_ns() + ROUND_CAP_NS;
	while (!h->live_ended) {
		if (test_now_ns() > end)
			H_FAIL(h, "channel 1 did not end");
		h_take(h, 0);
	}
	if (kid_line(&h->live, "result ", line, sizeof(line), STEP_MS) != 0 ||
	    strncmp(line, "result rc=0 ", 12) != 0 ||
	    strtoull(strstr(line, "records=") + 8, NULL, 10) != h->live_seq)
		H_FAIL(h, "channel 1's producer says \"%s\", the gate got %llu records", line,
		       ULL(h->live_seq));
	kid_reap_clean(&h->live);
	end = test_now_ns();
	gap_start();
	while (h_in_use(h) != 0 || test_count_fds() != fds0) {
		gap_tick();
		if (test_now_ns() - end > settle_budget_ns())
			H_FAIL(h,
			       "5 s after the end: %u segments in use, %d descriptors (start %d)",
			       h_in_use(h), test_count_fds(), fds0);
		test_sleep_us(200);
	}
	printf("SUMMARY tcp held views: %u views held across a kill stayed intact while the "
	       "living channel used its credit without failing; then %llu records intact, pool "
	       "and descriptors back\n",
	       H_EXCL + H_FLOAT, ULL(h->live_seq));
	fflush(stdout);
	fdx_gate_destroy(h->g);
	fdx_exchange_destroy(h->ex);
	fdx_lbp_destroy(h->pool);
	assert_int_equal(fdx_nbp_destroy(h->nbp), 0);
	free(h);
}

static void test_crash_consumer_survives_producer_kills_shm(void **state)
{
	(void)state;
	consumer_survives_producer_kills(SHM);
}

static void test_crash_consumer_survives_producer_kills_tcp(void **state)
{
	(void)state;
	consumer_survives_producer_kills(TCP);
}

static void test_crash_producer_survives_consumer_kills_shm(void **state)
{
	(void)state;
	producer_survives_consumer_kills(SHM);
}

static void test_crash_producer_survives_consumer_kills_tcp(void **state)
{
	(void)state;
	producer_survives_consumer_kills(TCP);
}

int main(int argc, char **argv)
{
#define T(fn) cmocka_unit_test_teardown(fn, reap)
	const struct CMUnitTest tests[] = {
		T(test_crash_consumer_survives_producer_kills_shm),
		T(test_crash_producer_survives_consumer_kills_shm),
		T(test_crash_consumer_survives_producer_kills_tcp),
		T(test_crash_producer_survives_consumer_kills_tcp),
		T(test_crash_tcp_views_held_across_a_kill_keep_their_segments),
	};
#undef T
	const char *seed = getenv("FDX_TEST_SEED");

	if (argc > 1 && strcmp(argv[1], "child") == 0)
		return child_main(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	note_own_fds();
	g_seed = seed && *seed ? strtoull(seed, NULL, 10)
			       : test_mix64(test_now_ns() ^ ((uint64_t)getpid() << 32));
	printf("crash: seed %llu (FDX_TEST_SEED=%llu repeats the run)\n", ULL(g_seed), ULL(g_seed));
	fflush(stdout);
	if (getenv("FDX_TEST_FILTER"))
		cmocka_set_test_filter(getenv("FDX_TEST_FILTER"));
	return cmocka_run_group_tests_name("crash", tests, NULL, NULL);
}
