/* SPDX-License-Identifier: MIT */
/*
 * fdx-bench-credit: how fast credits travel on the control plane.
 *
 * A consumer TaskManager (this program re-executed as a child process) and a
 * producer TaskManager (this process) open CHANNELS channels over one
 * ExchangeData stream. Then:
 *  - throughput: the consumer announces COUNT credits, 1 at a time, spread
 *    over the channels, as fast as it can; the exchange coalesces them. The
 *    producer counts them as they arrive: credits per second, one way.
 *  - round trip: the producer announces a backlog on one channel, the
 *    consumer answers with 1 credit, the producer sees it: p50 and p99 of
 *    ROUNDS round trips. Both owners poll (bounded spin) rather than sleep.
 * Each over a Unix socket and over TCP loopback.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fdx/fdx.h>

#define GATE 1u
#define SPIN_NS 0ull /* spinning owners starve the cq threads on 2 cores: block at once */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "fdx-bench-credit: %s: %s (%d)\n", what, fdx_strerror(err), err);
	exit(1);
}

/* Wait up to timeout_ms for events: spin first, then block on the event fd. */
static int wait_events(struct fdx_exchange *ex, struct fdx_exchange_event *evs, uint32_t max,
		       int timeout_ms)
{
	uint64_t spin_end = now_ns() + SPIN_NS;
	int n;

	while ((n = fdx_exchange_poll(ex, evs, max)) == 0 && now_ns() < spin_end)
		;
	if (n == 0) {
		struct pollfd p = {.fd = fdx_exchange_event_fd(ex), .events = POLLIN};
		uint64_t v;

		if (poll(&p, 1, timeout_ms) == 1)
			(void)!read(p.fd, &v, sizeof(v));
		n = fdx_exchange_poll(ex, evs, max);
	}
	return n;
}

/* ---- the consumer (child) ---------------------------------------------------- */

static int consumer(const char *listen, uint32_t channels)
{
	struct fdx_exchange_opts o = {.size = sizeof(o), .tm_id = "bench-consumer"};
	struct fdx_exchange_event evs[256];
	struct fdx_exchange *ex;
	uint32_t opened = 0, *open_gc;
	char line[64];
	int err;

	/* Commands are polled on fd 0: stdio must not read ahead of them. */
	setvbuf(stdin, NULL, _IONBF, 0);
	o.listen = strcmp(listen, "default") ? listen : NULL;
	err = fdx_exchange_create(&o, &ex);
	if (err < 0)
		die("create consumer", err);
	if ((err = fdx_exchange_add_gate(ex, GATE, channels, 2)) < 0)
		die("add gate", err);
	open_gc = calloc(channels, sizeof(*open_gc));
	printf("%s\n", fdx_exchange_address(ex));
	fflush(stdout);
	alarm(300);
	for (;;) {
		struct pollfd p = {.fd = 0, .events = POLLIN};
		int n = wait_events(ex, evs, 256, 1);

		for (int i = 0; i < n; i++) {
			if (evs[i].type == FDX_EV_CHANNEL_OPENED && opened < channels)
				open_gc[opened++] = evs[i].gate_channel;
			/* Every backlog is answered with one credit: the round trip. */
			if (evs[i].type == FDX_EV_BACKLOG)
				fdx_exchange_credit(ex, GATE, evs[i].gate_channel, 1, NULL, 0);
		}
		if (poll(&p, 1, 0) != 1)
			continue;
		if (!fgets(line, sizeof(line), stdin) || strncmp(line, "stop", 4) == 0)
			break;
		if (strncmp(line, "burst ", 6) == 0) {
			uint64_t count = strtoull(line + 6, NULL, 10),
				 end = now_ns() + 10000000000ull;

			/* Every channel open first: the producer opened them before asking. */
			while (opened < channels && now_ns() < end) {
				n = wait_events(ex, evs, 256, 100);
				for (int i = 0; i < n; i++)
					if (evs[i].type == FDX_EV_CHANNEL_OPENED)
						open_gc[opened++] = evs[i].gate_channel;
			}
			if (opened < channels)
				die("channels did not open", -ETIMEDOUT);

			for (uint64_t k = 0; k < count; k++) {
				err = fdx_exchange_credit(ex, GATE, open_gc[k % opened], 1, NULL,
							  0);
				if (err < 0)
					die("credit", err);
			}
		}
	}
	fdx_exchange_destroy(ex);
	free(open_gc);
	return 0;
}

/* ---- the producer (parent) --------------------------------------------------- */

struct result {
	double credits_per_s;
	uint64_t msgs;
	double rtt_p50_us, rtt_p99_us;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void run(const char *self, const char *listen, uint32_t channels, uint64_t count,
		uint32_t rounds, struct result *res)
{
	struct fdx_exchange_opts o = {.size = sizeof(o), .tm_id = "bench-producer"};
	struct fdx_exchange_event evs[256];
	struct fdx_exchange *ex;
	char addr[256], chs[16];
	uint32_t *chan = calloc(channels, sizeof(*chan));
	uint64_t *rtt = calloc(rounds, sizeof(*rtt)), got = 0, t0;
	int in[2], out[2], err, status;
	FILE *from, *to;
	pid_t pid;

	if (!chan || !rtt || pipe(in) < 0 || pipe(out) < 0)
		die("setup", -ENOMEM);
	snprintf(chs, sizeof(chs), "%u", channels);
	pid = fork();
	if (pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		execl(self, self, "--consumer", listen, chs, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	to = fdopen(in[1], "w");
	from = fdopen(out[0], "r");
	if (!from || !to || !fgets(addr, sizeof(addr), from))
		die("start the consumer", -EIO);
	addr[strcspn(addr, "\n")] = '\0';

	if ((err = fdx_exchange_create(&o, &ex)) < 0)
		die("create producer", err);
	for (uint32_t gc = 0; gc < channels; gc++)
		if ((err = fdx_exchange_open_channel(ex, addr, "bench", gc, GATE, gc, 5000,
						     &chan[gc], NULL)) < 0)
			die("open channel", err);

	/* Throughput, one way. */
	fprintf(to, "burst %llu\n", (unsigned long long)count);
	fflush(to);
	t0 = now_ns();
	for (uint64_t end = t0 + 60000000000ull; got < count;) {
		int n = wait_events(ex, evs, 256, 100);

		if (now_ns() > end)
			die("credits stopped coming", -ETIMEDOUT);
		for (int i = 0; i < n; i++) {
			if (evs[i].type == FDX_EV_CHANNEL_FAILED)
				die(evs[i].message, evs[i].error);
			got += evs[i].type == FDX_EV_CREDIT ? evs[i].credits : 0;
		}
	}
	res->credits_per_s = (double)count / ((double)(now_ns() - t0) / 1e9);

	/* Round trips of one small frame each way. */
	for (uint32_t r = 0; r < rounds; r++) {
		int seen = 0;

		t0 = now_ns();
		if ((err = fdx_exchange_backlog(ex, chan[0], r + 1)) < 0)
			die("backlog", err);
		for (uint64_t end = t0 + 5000000000ull; !seen;) {
			int n = wait_events(ex, evs, 256, 100);

			if (now_ns() > end)
				die("no answer", -ETIMEDOUT);
			for (int i = 0; i < n; i++) {
				if (evs[i].type == FDX_EV_CHANNEL_FAILED)
					die(evs[i].message, evs[i].error);
				seen |= evs[i].type == FDX_EV_CREDIT;
			}
		}
		rtt[r] = now_ns() - t0;
	}
	qsort(rtt, rounds, sizeof(*rtt), cmp_u64);
	res->rtt_p50_us = (double)rtt[rounds / 2] / 1000.0;
	res->rtt_p99_us = (double)rtt[(uint64_t)rounds * 99 / 100] / 1000.0;

	struct fdx_exchange_stats st = {.size = sizeof(st)};
	fdx_exchange_stats(ex, &st);
	res->msgs = st.frames_in;
	fprintf(to, "stop\n");
	fflush(to);
	fclose(to);
	fclose(from);
	waitpid(pid, &status, 0);
	fdx_exchange_destroy(ex);
	free(chan);
	free(rtt);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: fdx-bench-credit [--channels N] [--count N] [--rounds N]\n"
		   "  --channels N  channels on the stream (default 256)\n"
		   "  --count N     credits announced one way (default 2000000)\n"
		   "  --rounds N    round trips measured (default 20000)\n");
}

int main(int argc, char **argv)
{
	static const char *const listens[] = {"default", "127.0.0.1:0"};
	static const char *const names[] = {"unix", "tcp"};
	uint32_t channels = 256, rounds = 20000;
	uint64_t count = 2000000;
	struct result res[2];
	int met = 1;

	if (argc == 4 && strcmp(argv[1], "--consumer") == 0)
		return consumer(argv[2], (uint32_t)atoi(argv[3]));
	for (int i = 1; i < argc; i += 2) { /* each option takes a value */
		char *end = NULL;
		unsigned long long v = i + 1 < argc ? strtoull(argv[i + 1], &end, 10) : 0;

		if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (i + 1 >= argc || !end || *end || v == 0) {
			fprintf(stderr, "fdx-bench-credit: bad option or value: %s\n", argv[i]);
			usage(stderr);
			return 2;
		}
		if (strcmp(argv[i], "--channels") == 0 && v <= 65536)
			channels = (uint32_t)v;
		else if (strcmp(argv[i], "--count") == 0)
			count = v;
		else if (strcmp(argv[i], "--rounds") == 0 && v <= 10000000)
			rounds = (uint32_t)v;
		else {
			fprintf(stderr, "fdx-bench-credit: bad option or value: %s\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	printf("fdx-bench-credit, fdx %s: %u channels, %llu credits of 1 one way, %u round trips\n",
	       fdx_version_string(), channels, (unsigned long long)count, rounds);
	printf("credit settings: initial credit 2 per channel; coalescing: one message in "
	       "flight per stream, at most 8192 offsets per message\n\n");
	printf("%-6s %14s %12s %12s %12s\n", "link", "credits/s", "msgs in", "rtt p50 us",
	       "rtt p99 us");
	for (int l = 0; l < 2; l++) {
		run("/proc/self/exe", listens[l], channels, count, rounds, &res[l]);
		printf("%-6s %14.0f %12llu %12.1f %12.1f\n", names[l], res[l].credits_per_s,
		       (unsigned long long)res[l].msgs, res[l].rtt_p50_us, res[l].rtt_p99_us);
		met &= res[l].credits_per_s >= 1e6;
	}
	printf("\ntarget: >= 1 000 000 credits/s coalesced: %s\n", met ? "MET" : "NOT MET");
	return 0;
}
