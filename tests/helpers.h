/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the test programs: log capture, fd counting, bounded waits. */
#ifndef FDX_TESTS_HELPERS_H
#define FDX_TESTS_HELPERS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fdx/fdx.h>

#if defined(__SANITIZE_ADDRESS__)
#define TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_UNDER_ASAN 1
#endif
#endif

/* splitmix64's finalizer: the tests' plans and record keys come from it. */
static inline uint64_t test_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

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

/*
 * Fork and exec this program (/proc/self/exe) with argv, its stdin and stdout
 * piped to *to and *from. Do it before the test creates any exchange: gRPC's
 * threads must not be forked. Returns the child's pid, or -1.
 */
static inline pid_t test_spawn_self(char *const argv[], int *to, int *from)
{
	int in[2], out[2];
	pid_t pid;

	if (pipe2(in, O_CLOEXEC) < 0)
		return -1;
	if (pipe2(out, O_CLOEXEC) < 0) {
		close(in[0]);
		close(in[1]);
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	if (pid < 0) {
		close(in[1]);
		close(out[0]);
		return -1;
	}
	*to = in[1];
	*from = out[0];
	return pid;
}

static inline uint64_t test_now_ns(void);

/* One line from fd (without its newline) within ms, a byte at a time; -1 on EOF or timeout. */
static inline int test_read_fd_line(int fd, char *buf, size_t n, int ms)
{
	uint64_t end = test_now_ns() + (uint64_t)ms * 1000000u;
	size_t k = 0;

	while (k + 1 < n) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		uint64_t now = test_now_ns();
		char c;

		if (now >= end)
			return -1;
		if (poll(&pf, 1, (int)((end - now) / 1000000u) + 1) <= 0)
			continue;
		if (read(fd, &c, 1) != 1)
			return -1;
		if (c == '\n')
			break;
		buf[k++] = c;
	}
	buf[k] = '\0';
	return 0;
}

/*
 * From the *len bytes at buf (what a child said so far), take the first
 * complete line starting with prefix into out, dropping the lines before it.
 * 1 if there was one.
 */
static inline int test_take_line(char *buf, size_t *len, const char *prefix, char *out, size_t n)
{
	size_t pl = strlen(prefix);
	char *nl;

	while ((nl = memchr(buf, '\n', *len))) {
		size_t k = (size_t)(nl - buf);
		int match = k >= pl && strncmp(buf, prefix, pl) == 0;

		if (match)
			snprintf(out, n, "%.*s", (int)k, buf);
		memmove(buf, nl + 1, *len - k - 1);
		*len -= k + 1;
		if (match)
			return 1;
	}
	return 0;
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
