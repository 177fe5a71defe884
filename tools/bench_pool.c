/* SPDX-License-Identifier: MIT */
/*
 * fdx-bench-pool: request+recycle pairs per second on LocalBufferPools in each
 * case of cases[] below, run RUNS times for --seconds; the best run counts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <fdx/fdx.h>

#define RUNS 3
#define CHECK_EVERY 1024 /* pairs between two reads of the clock */
#define THREADS_MAX 2
#define WINDOW_MAX 8
#define SEG_COUNT 256
#define LBP_MIN 16 /* >= THREADS_MAX * WINDOW_MAX: no case ever needs to borrow */
#define LBP_MAX 64
#define TARGET_MPAIRS 20.0

struct bench_case {
	const char *name;
	int threads;
	int shared_lbp; /* every thread on one lbp, else one lbp each */
	int window; /* buffers held across pairs; 0 recycles each one at once */
};

static const struct bench_case cases[] = {
	{"1 thread, 1 lbp", 1, 0, 0},
	{"1 thread, 1 lbp, window 8", 1, 0, WINDOW_MAX},
	{"2 threads, 1 lbp each, 1 nbp", 2, 0, 0},
	{"2 threads, 1 shared lbp (contended)", 2, 1, 0},
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

struct worker {
	pthread_t tid;
	struct fdx_lbp *lbp;
	int window;
	int cpu; /* -1: not pinned */
	double seconds;
	pthread_barrier_t *start;
	uint64_t pairs, ns; /* results */
	int pin_failed;
};

static int pin_failed; /* written by the main thread only, after the joins */

static void die(const char *what, int err)
{
	fprintf(stderr, "fdx-bench-pool: %s: %s (%d)\n", what, fdx_strerror(err), err);
	exit(1);
}

/* Region and pool warnings (such as a fallback to small pages) go to stderr. */
static void log_stderr(void *ud, enum fdx_log_level lvl, const char *func, int line,
		       const char *msg)
{
	(void)ud, (void)lvl, (void)func, (void)line;
	fprintf(stderr, "fdx-bench-pool: fdx: %s\n", msg);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		die("clock_gettime", -errno);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *run_worker(void *arg)
{
	struct worker *w = arg;
	struct fdx_buf ring[WINDOW_MAX], b;
	uint64_t start, deadline, t, pairs = 0;
	int slot = 0, err;

	if (w->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		/* Best effort: an unpinned run is still a valid, noisier run. */
		if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
			w->pin_failed = 1;
	}
	for (int i = 0; i < w->window; i++)
		if ((err = fdx_lbp_try_request(w->lbp, &ring[i])) < 0)
			die("fdx_lbp_try_request", err);
	err = pthread_barrier_wait(w->start);
	if (err != 0 && err != PTHREAD_BARRIER_SERIAL_THREAD)
		die("pthread_barrier_wait", -err);
	start = now_ns();
	deadline = start + (uint64_t)(w->seconds * 1e9);
	do {
		for (int i = 0; i < CHECK_EVERY; i++) {
			if ((err = fdx_lbp_try_request(w->lbp, &b)) < 0)
				die("fdx_lbp_try_request", err);
			if (w->window) { /* keep the new buffer, give back the oldest held one */
				struct fdx_buf old = ring[slot];

				ring[slot] = b;
				b = old;
				slot = slot + 1 == w->window ? 0 : slot + 1;
			}
			if ((err = fdx_lbp_recycle(w->lbp, b.offset)) < 0)
				die("fdx_lbp_recycle", err);
		}
		pairs += CHECK_EVERY;
		t = now_ns();
	} while (t < deadline);
	w->pairs = pairs;
	w->ns = t - start;
	for (int i = 0; i < w->window; i++)
		if ((err = fdx_lbp_recycle(w->lbp, ring[i].offset)) < 0)
			die("fdx_lbp_recycle", err);
	return NULL;
}

/* Run case c RUNS times; keep the best rate of all threads together, in Mpairs/s. */
static void run_case(struct fdx_nbp *nbp, const struct bench_case *c, double seconds,
		     const int *cpus, double *mpairs)
{
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = LBP_MIN, .max = LBP_MAX};
	struct fdx_lbp *lbps[THREADS_MAX] = {NULL};
	struct worker w[THREADS_MAX];
	pthread_barrier_t start;
	int nlbp = c->shared_lbp ? 1 : c->threads, err;

	for (int i = 0; i < nlbp; i++)
		if ((err = fdx_lbp_create(nbp, &lo, &lbps[i])) < 0)
			die("fdx_lbp_create", err);
	for (int run = 0; run < RUNS; run++) {
		uint64_t pairs = 0, ns_max = 0;

		if ((err = pthread_barrier_init(&start, NULL, (unsigned)c->threads)) != 0)
			die("pthread_barrier_init", -err);
		for (int i = 0; i < c->threads; i++) {
			w[i] = (struct worker){.lbp = lbps[c->shared_lbp ? 0 : i],
					       .window = c->window,
					       .cpu = cpus[i],
					       .seconds = seconds,
					       .start = &start};
			if ((err = pthread_create(&w[i].tid, NULL, run_worker, &w[i])) != 0)
				die("pthread_create", -err);
		}
		for (int i = 0; i < c->threads; i++) {
			if ((err = pthread_join(w[i].tid, NULL)) != 0)
				die("pthread_join", -err);
			pairs += w[i].pairs;
			pin_failed |= w[i].pin_failed;
			ns_max = w[i].ns > ns_max ? w[i].ns : ns_max;
		}
		pthread_barrier_destroy(&start);
		if (run == 0 || (double)pairs * 1e3 / (double)ns_max > *mpairs)
			*mpairs = (double)pairs * 1e3 / (double)ns_max;
	}
	for (int i = 0; i < nlbp; i++)
		fdx_lbp_destroy(lbps[i]);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fdx-bench-pool [--seconds S] [--seg-size BYTES[K|M]] [--json] [--help]\n"
		"  --seconds S      time per run of each case (default 1; best of %d runs)\n"
		"  --seg-size N     segment size, a power of two in [4K, 1M] (default 32K)\n"
		"  --json           print one JSON object on stdout instead of a table\n",
		RUNS);
}

static void bad_option(const char *what, const char *arg)
{
	fprintf(stderr, "fdx-bench-pool: %s '%s'\n", what, arg);
	usage(stderr);
	exit(2);
}

static uint32_t parse_seg_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (*end == 'K' || *end == 'k')
		v *= 1024, end++;
	else if (*end == 'M' || *end == 'm')
		v *= 1024 * 1024, end++;
	if (end == s || *end || s[0] == '-' || v < FDX_SEG_SIZE_MIN || v > FDX_SEG_SIZE_MAX ||
	    (v & (v - 1)))
		bad_option("--seg-size must be a power of two in [4K, 1M], not", s);
	return (uint32_t)v;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {{"seconds", required_argument, NULL, 's'},
						 {"seg-size", required_argument, NULL, 'z'},
						 {"json", no_argument, NULL, 'j'},
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	struct fdx_nbp_opts no = {.size = sizeof(no),
				  .seg_size = FDX_SEG_SIZE_DEFAULT,
				  .seg_count = SEG_COUNT,
				  .log_level = FDX_LOG_WARN,
				  .log_fn = log_stderr};
	double mpairs[NCASES];
	struct fdx_region *region;
	struct fdx_nbp *nbp;
	int cpus[THREADS_MAX] = {-1, -1}, ncpu = 0, json = 0, met = 1, opt, err;
	double seconds = 1.0;
	cpu_set_t set;
	char *end;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			seconds = strtod(optarg, &end);
			if (end == optarg || *end || !isfinite(seconds) || seconds <= 0 ||
			    seconds > 3600)
				bad_option("--seconds must be a number in (0, 3600], not", optarg);
			break;
		case 'z':
			no.seg_size = parse_seg_size(optarg);
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

	/* Distinct CPUs for the threads when the affinity mask allows two. */
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) >= 2)
		for (int c = 0; c < CPU_SETSIZE && ncpu < THREADS_MAX; c++)
			if (CPU_ISSET(c, &set))
				cpus[ncpu++] = c;

	if ((err = fdx_nbp_create(&no, &nbp)) < 0)
		die("fdx_nbp_create", err);
	region = fdx_nbp_region(nbp);
	for (size_t i = 0; i < NCASES; i++) {
		run_case(nbp, &cases[i], seconds, cpus, &mpairs[i]);
		if (cases[i].threads == 1 && mpairs[i] < TARGET_MPAIRS)
			met = 0;
	}

	/* One argument list, two formats: a table or one JSON object. */
	printf(json ? "{\"fdx_version\":\"%s\",\"seg_size\":%u,\"seg_count\":%u,\"batch\":%u,"
		      "\"lbp_min\":%u,\"lbp_max\":%u,\"hugetlb\":%s,\"page_size\":%llu,"
		      "\"seconds\":%g,\"runs\":%d,\"pinned\":%s,\"cases\":["
		    : "fdx-bench-pool, fdx %s\n"
		      "pool: seg_size %u B, seg_count %u, batch %u, lbp min %u max %u, "
		      "hugetlb %s, page size %llu B\n"
		      "%g s per run, best of %d runs, threads pinned to distinct CPUs: %s\n"
		      "ns/pair is the mean time a thread spends on one pair\n\n",
	       fdx_version_string(), fdx_region_seg_size(region), fdx_region_seg_count(region),
	       FDX_NBP_BATCH_DEFAULT, LBP_MIN, LBP_MAX,
	       fdx_region_is_hugetlb(region) ? "true" : "false",
	       (unsigned long long)fdx_region_page_size(region), seconds, RUNS,
	       cpus[0] >= 0 && !pin_failed ? "true" : "false");
	if (!json)
		printf("%-38s %7s %9s %9s\n", "case", "threads", "Mpairs/s", "ns/pair");
	for (size_t i = 0; i < NCASES; i++)
		printf(json ? "%s{\"name\":\"%s\",\"threads\":%d,\"mpairs_per_s\":%.2f,"
			      "\"ns_per_pair\":%.2f}"
			    : "%s%-38s %7d %9.2f %9.2f\n",
		       i && json ? "," : "", cases[i].name, cases[i].threads, mpairs[i],
		       cases[i].threads * 1e3 / mpairs[i]);
	printf(json ? "],\"target_mpairs_per_s\":%.0f,\"target_met\":%s}\n"
		    : "\ntarget: >= %.0f M pairs/s single-threaded: %s\n",
	       TARGET_MPAIRS, met ? (json ? "true" : "MET") : (json ? "false" : "NOT MET"));
	if ((err = fdx_nbp_destroy(nbp)) < 0)
		die("fdx_nbp_destroy", err);
	return 0;
}
