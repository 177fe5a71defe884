/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the test programs: log capture, fd counting, bounded waits. */
#ifndef FDX_TESTS_HELPERS_H
#define FDX_TESTS_HELPERS_H

#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fdx/fdx.h>

/* Captures every message of an fdx log sink; the last one is kept whole. */
struct test_log {
	int count;
	int errors;
	int warnings;
	char last[512];
	char all[4096];
};

static inline void test_log_fn(void *ud, enum fdx_log_level lvl, const char *func, int line,
			       const char *msg)
{
	struct test_log *l = ud;
	size_t used = strlen(l->all);

	(void)func;
	(void)line;
	l->count++;
	if (lvl == FDX_LOG_ERR)
		l->errors++;
	if (lvl == FDX_LOG_WARN)
		l->warnings++;
	snprintf(l->last, sizeof(l->last), "%s", msg);
	snprintf(l->all + used, sizeof(l->all) - used, "%s\n", msg);
}

/* Open descriptors of this process, by /proc/self/fd. */
static inline int test_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

static inline uint64_t test_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void test_sleep_us(long us)
{
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};

	nanosleep(&ts, NULL);
}

/* Free hugepages of the default size, from /proc/meminfo. */
static inline long test_hugepages_free(void)
{
	char line[128];
	long n = 0;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "HugePages_Free: %ld", &n) == 1)
			break;
	fclose(f);
	return n;
}

/* Set by the test script's hugepage pass: hugetlb must then really be used. */
static inline int test_expect_hugepages(void)
{
	const char *e = getenv("FDX_TEST_EXPECT_HUGEPAGES");

	return e && strcmp(e, "1") == 0;
}

/*
 * Poll cond every 200 us until it holds or 5 s pass: for waiting on another
 * thread's state change that the test itself caused, never for timing.
 */
#define TEST_WAIT_UNTIL(cond)                                            \
	do {                                                             \
		uint64_t test_deadline_ = test_now_ns() + 5000000000ull; \
		while (!(cond) && test_now_ns() < test_deadline_)        \
			test_sleep_us(200);                              \
		assert_true(cond);                                       \
	} while (0)

#endif /* FDX_TESTS_HELPERS_H */
