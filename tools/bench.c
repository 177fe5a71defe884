/* SPDX-License-Identifier: MIT */
/*
 * fdx-bench: end-to-end throughput and latency of the data plane, next to
 * the raw limit of the machine and to what users run today.
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
 * Modes (the same workload, the same two processes, one per core, and the
 * same reading of every byte in each):
 *  shm          producer and consumer are two processes. Data goes over the
 *               shm link: the consumer maps the producer's region read-only,
 *               and the only copy is the emit into the buffer.
 *  tcp          the same two processes. Data goes over fdx's TCP loopback
 *               link into the consumer's own segments.
 *  local        one process and one exchange. A producer thread and a consumer
 *               thread; buffers are handed over in memory.
 *  shm-ceiling  no fdx at all: the physical limit for fdx's memory. Two
 *               processes do the same record writing (a memcpy of each record
 *               behind a 4-byte length, packed into slots, a record that does
 *               not fit continuing in the next slot) and the same reading (a
 *               record that spans slots is put together in a buffer of the
 *               consumer's first, as fdx's gate does) over as many slots of
 *               --segment-size bytes as fdx has segments in flight in the same
 *               configuration: channels x the in-place credit when it is
 *               above exclusive (shm reads in place), else channels x
 *               exclusive + floating credits; at most --pool. The producer posts each full slot's number on a
 *               queue in shared memory; the consumer reads the slot and hands
 *               its number back on a second queue. No credits, sockets or gRPC.
 *  shm-ring     the same, without fdx's budget or slots: a single-producer
 *               single-consumer byte ring in shared memory as large as the
 *               producer's pool (--pool x --segment-size rounded up to a power
 *               of two, at least 8 MiB), positions published every
 *               --segment-size bytes.
 *               Both ceilings (throughput only) first run a warm-up of
 *               --seconds / --reps, then --reps repetitions of that length in
 *               the same two processes, and report the median repetition
 *               (--verbose: also min..max). The producer marks each phase in
 *               the data; the consumer times the records between two marks.
 *  tcp-copy     no fdx either: a baseline for what a Netty-style stack does.
 *               The producer packs the same length-prefixed records into
 *               buffers of --segment-size bytes and write()s each full buffer
 *               with a blocking write on a TCP socket to 127.0.0.1 (handling
 *               partial writes; TCP_NODELAY, as Netty sets by default). The
 *               consumer read()s up to --segment-size bytes at a time into a
 *               buffer of its own (the copy out of the kernel) and walks the
 *               records there; the start of a record that a read cut is moved
 *               to the front of the buffer and completed by the next read, as
 *               a frame decoder's cumulation buffer does. The end is the
 *               producer's shutdown(SHUT_WR).
 *  grpc-data    no fdx either: a baseline for the original FlinkDotNet design,
 *               where the records themselves travel as gRPC messages. gRPC C
 *               core, insecure credentials, over a Unix socket in the run's
 *               temporary directory: the consumer serves, the producer opens
 *               one bidirectional streaming call (/fdx.bench.Data/Stream) and
 *               sends one message per record, a protobuf message with one
 *               bytes field (tag 0x0a, varint length, the record), serialised
 *               into one slice (its one copy, as emit's). One send is in
 *               flight: send, wait for its completion, send the next. Every
 *               message carries GRPC_WRITE_BUFFER_HINT except the one that
 *               completes about --segment-size bytes and the last one, so gRPC
 *               writes chunks about as large as fdx's buffers. The consumer
 *               takes each message out of gRPC's slices into one piece (the
 *               copy a generated parser makes of a bytes field), checks the
 *               encoding and reads the record. The end is the producer's
 *               half-close; the consumer answers with status OK.
 *  uring-unix   --latency only; no fdx: the mechanism under fdx's data
 *               plane. Each record goes as one io_uring send on a Unix stream
 *               socket (a socketpair); the consumer's io_uring recv, submitted
 *               before the record was sent, completes (liburing).
 *  eventfd      --latency only; no fdx: a wake. The producer writes the
 *               record's send time to an eventfd, the consumer's blocking read
 *               returns it; the consumer puts the record together around it
 *               and reads it as in every mode. grpc-data is the third
 *               mechanism, the one under fdx's control plane (credits).
 * The ceilings, tcp-copy, grpc-data and the mechanisms have one lane:
 * --channels does not apply to them (they report 1 channel), nor do
 * --exclusive, --floating and --pool, except that they size the ceilings.
 * For them --segment-size is the slot size (shm-ceiling), the publishing step
 * (shm-ring), the write size (tcp-copy) or the flush step of the buffer hint
 * (grpc-data).
 *
 * CPU cost. Every run reports the CPU time of both processes (getrusage
 * RUSAGE_SELF, user + system, every thread: fdx's io_uring loop and gRPC's
 * threads run in them) over the data's movement, per GB of record payload:
 * the producer's from its first record to its end (fdx: until
 * fdx_partition_finish() returned), the consumer's from the first buffer to
 * the last item. For local, the one process from the first record to the
 * end. For the ceilings, over the repetitions (not the warm-up). With
 * --latency it includes the producer's wait for each record to be read.
 *
 * Latency (--latency). The producer sends one record at a time (default
 * 64 bytes, at least 16) carrying its send time (CLOCK_MONOTONIC, the same
 * host, so the clocks agree) in its second 8 bytes, and sends it at once:
 * fdx_partition_flush() after each emit (shm, tcp, local), a write of one
 * small buffer per record (tcp-copy), one message without the buffer hint
 * (grpc-data), a slot posted per record (shm-ceiling), a publish per record
 * (shm-ring), one send (uring-unix), one write (eventfd). Then it waits until
 * the consumer has read the record before it makes the next one (and --gap
 * longer, if given): the consumer counts the records it read in a page
 * shared by every process (see struct shared), and the producer polls it
 * with a bounded spin, then yields, then short sleeps (source_wait_seen()).
 * The consumer notes now - send time for each record in an array allocated
 * and touched before the run. The first LAT_WARMUP records (connections
 * warming up, page faults) are sent and checked the same way but not
 * sampled; then --count samples (default 20000) or --seconds, whichever
 * comes first. It reports p50, p99, p99.9 and the maximum in microseconds
 * (nearest rank), and the number of samples. The checksum and the report
 * are those of a throughput run.
 *
 * Runs. --mode takes one mode or a comma-separated list; --compare runs
 * every mode and prints each one's ratio to shm and the targets, MET or NOT
 * MET (with --latency: shm's p50 and p99, and the mechanisms run too, after
 * the others, labelled as such). --sizes runs the chosen modes at
 * each record size, in increasing order. --csv prints one CSV row per run;
 * --plot FILE.png (every mode unless --mode says otherwise) prints the same
 * CSV, writes it to temporary files, one per mode, and runs gnuplot (Debian's
 * package gnuplot-nox) to draw GB/s against the record size, both axes in log
 * scale, one line per mode. Without gnuplot it says so, naming the package,
 * and exits with 2 after printing the CSV.
 *
 * Process layout. The main process never creates an fdx object and never
 * initialises gRPC, so no gRPC, io_uring or other library thread exists in it
 * and fork() is safe. For each run it forks the consumer, then the producer
 * (or a single child for local). Three pipes connect them:
 *  - the consumer sends its address (exchange, TCP port, gRPC server) to the
 *    producer;
 *  - the producer sends its report (count, bytes, checksum) to the consumer;
 *  - the consumer sends its measured result to the main process.
 * While waiting for the report, an fdx consumer keeps pumping its gate, so that
 * the credits for the last buffers can travel and fdx_partition_finish() can
 * return. The producer's thread is pinned to the first allowed CPU and the
 * consumer's to the second. Pinning is done after setup, so the library's own
 * threads (and gRPC's) keep the full CPU mask.
 *
 * Output is a table, or with --json one object with the stable shape
 * {"results": [{"mode": ..., "record_size": ..., "records_per_s": ...,
 * "gbytes_per_s": ..., more keys}, ...]} (the more keys include cpu_s,
 * cpu_s_per_GB and cpu_us_per_record; with --latency p50_us, p99_us, p999_us,
 * max_us, samples and gap_us; for the ceilings reps and rep_gbytes_per_s;
 * for fdx's modes credit_rtt, per channel the credit round trip of
 * fdx_partition_channel_stats(), read by the producer after the run), or
 * with --csv one header line and one row per run. Scripts depend on them.
 * --verbose adds to the table, under each run, the CPU time of each process,
 * the repetitions of a ceiling and the credit round trip of each channel.
 * When the invocation is planned to take more than PROGRESS_PLAN_S seconds, a
 * progress line goes to stderr: rewritten in place when stderr is a terminal,
 * else one line as each run starts. Nothing but results goes to stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include <fdx/fdx.h>
#include <fdx/partition.h>
#include <fdx/gate.h>

#define GATE 1u
#define CHECK_EVERY 64u /* records emitted between two reads of the clock */
#define EMIT_TIMEOUT_MS 10000 /* a pool empty this long means the consumer is stuck */
#define CONNECT_TIMEOUT_MS 5000
#define FINISH_TIMEOUT_MS 30000
#define IDLE_LIMIT_S 30u /* the consumer gives up after 30 s without data */
#define IDLE_LIMIT_NS (IDLE_LIMIT_S * 1000000000ull)
#define REPORT_WAIT_NS 60000000000ull /* the longest wait for the producer's report */
#define WATCHDOG_S 120u /* added to --seconds: a child killed by SIGALRM is stuck */
#define RECORD_MIN 8u /* the first 8 bytes of a record are its counter */
#define RECORD_MAX FDX_RECORD_MAX_DEFAULT
#define RECORD_DEFAULT 1024u
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
#define CEILING_MAP_ALIGN (2ull << 20) /* ceiling memory is mapped in whole huge pages */
#define REPS_DEFAULT 5u /* the ceilings: repetitions after the warm-up */
#define REPS_MAX 20u
#define MARKS_MAX (REPS_MAX + 1) /* a mark ends the warm-up and each repetition */
/* --latency */
#define LAT_COUNT_DEFAULT 20000u
#define LAT_COUNT_MAX 10000000u
#define LAT_RECORD_DEFAULT 64u
#define LAT_RECORD_MIN 16u /* the counter, then the send time */
#define LAT_WARMUP 100u /* records sent before the first sample */
#define LAT_WAIT_NS 10000000000ull /* the producer gives up on a record unseen this long */
#define LAT_SPIN_NS 5000u /* the producer's wait for the consumer: spin, */
#define LAT_YIELD_NS 50000u /* then yield, */
#define LAT_SLEEP_NS 10000L /* then sleep this long at a time */
#define LAT_GAP_MAX_US 1000000u
#define LAT_TIMER_SLACK_NS 1000ul /* the waiting producer's short sleeps stay short */
#define EVENTFD_END 1ull /* eventfd: the value that ends the run (no send time is 1 ns) */
#define URING_ENTRIES 4u
/* grpc-data */
#define GRPC_METHOD "/fdx.bench.Data/Stream"
#define GRPC_WAIT_MS 1000 /* one completion-queue wait; IDLE_LIMIT_S of them is stuck */
/* the main process */
#define SIZES_MAX 32u
#define PROGRESS_PLAN_S 3.0 /* longer planned invocations show progress on stderr */
#define PROGRESS_TICK_NS 100000000L /* the progress line on a terminal: 10 times a second */
#define RING_LINE 128 /* two cache lines: adjacent-line prefetch pulls pairs */
#define VERBOSE_CHANNELS 8u /* --verbose lists this many channels, then sums up the rest */

/* In the order they run and print; the mechanisms (grpc-data on) come last. */
enum mode {
	MODE_SHM,
	MODE_TCP,
	MODE_LOCAL,
	MODE_CEILING,
	MODE_RING,
	MODE_TCP_COPY,
	MODE_GRPC,
	MODE_URING,
	MODE_EVENTFD,
	MODE_COUNT,
};

static const char *const mode_names[MODE_COUNT] = {"shm",	  "tcp",	"local",
						   "shm-ceiling", "shm-ring",	"tcp-copy",
						   "grpc-data",	  "uring-unix", "eventfd"};

#define MODE_BIT(m) (1u << (m))
#define FDX_MODES (MODE_BIT(MODE_SHM) | MODE_BIT(MODE_TCP) | MODE_BIT(MODE_LOCAL))
/* What fdx's parts ride on, bare: gRPC (credits), io_uring on a Unix socket (data), a wake. */
#define MECH_MODES (MODE_BIT(MODE_GRPC) | MODE_BIT(MODE_URING) | MODE_BIT(MODE_EVENTFD))
#define LATENCY_ONLY_MODES (MODE_BIT(MODE_URING) | MODE_BIT(MODE_EVENTFD))

/* What every run uses; fixed once the options are parsed (record_size and ring_size per run). */
struct config {
	double seconds;
	uint32_t record_size;
	uint32_t channels;
	uint32_t seg_size;
	uint32_t exclusive; /* per channel, as given (0: none) */
	uint32_t floating; /* per gate, as given (0: none) */
	uint32_t inplace; /* per channel on shm and local links, as given (0: none) */
	uint32_t pool; /* producer pool, segments */
	uint64_t ring_size; /* shm-ring bytes, a power of two */
	uint32_t slots; /* shm-ceiling: fdx's segments in flight, each seg_size bytes */
	uint32_t reps; /* the ceilings: repetitions after the warm-up */
	int latency; /* --latency: one record at a time, timed */
	uint32_t lat_count; /* --latency: samples wanted */
	uint64_t gap_ns; /* --latency: pause between a record seen and the next */
	int cpus[2]; /* producer, consumer; -1: not pinned */
	char dir[160]; /* this run's temporary directory (Unix sockets) */
};

/* Producer -> consumer, through a pipe, once the producer is done. */
struct report {
	uint64_t records;
	uint64_t bytes;
	uint64_t sum; /* the checksum the consumer must have read */
	uint64_t cpu_start_ns; /* the producer's CPU time when its first record was made */
	uint64_t cpu_ns; /* its CPU time since then (report_cpu_done()) */
	uint32_t n_marks; /* the ceilings: phase marks written, the end included */
	uint32_t pad;
	uint64_t mark_cpu_ns[MARKS_MAX]; /* the producer's CPU time at each mark */
};

/* Consumer -> main process, through a pipe: what one run measured. */
struct result {
	uint64_t records; /* the ceilings: those of the median repetition, as bytes and ns */
	uint64_t bytes;
	uint64_t ns; /* first buffer seen to last record read */
	uint64_t samples; /* --latency: how many records were timed */
	uint64_t p50_ns;
	uint64_t p99_ns;
	uint64_t p999_ns;
	uint64_t max_ns;
	uint32_t channels; /* channels the data really used */
	uint32_t one_process; /* local: cpu_prod_ns is the one process's, cpu_cons_ns 0 */
	uint64_t cpu_prod_ns; /* the producer's process, RUSAGE_SELF, user + system */
	uint64_t cpu_cons_ns; /* the consumer's */
	uint64_t cpu_records; /* what that CPU time moved */
	uint64_t cpu_bytes;
	uint32_t reps; /* the ceilings: repetitions measured after the warm-up */
	uint32_t pad;
	uint64_t rep_records[REPS_MAX];
	uint64_t rep_bytes[REPS_MAX];
	uint64_t rep_ns[REPS_MAX];
};

/* What the consumer saw, the way it saw it. */
struct consumed {
	uint64_t records;
	uint64_t bytes;
	uint64_t sum;
	uint64_t t_first; /* 0 until the first buffer */
	uint64_t t_last;
	uint64_t *lat; /* --latency: one-way latencies (ns), allocated before the run */
	uint64_t lat_n;
	uint64_t lat_cap;
	uint64_t cpu_start_ns; /* this process's CPU time at the first buffer */
	uint64_t cpu_ns; /* from then to the last item (consumed_end()) */
	uint32_t n_marks; /* the ceilings: phase marks read, the end included */
	uint64_t mark_ns[MARKS_MAX]; /* when each was read, */
	uint64_t mark_records[MARKS_MAX]; /* what had been read by then, */
	uint64_t mark_bytes[MARKS_MAX];
	uint64_t mark_cpu_ns[MARKS_MAX]; /* and this process's CPU time */
};

/*
 * One page shared by the main process and every child: an anonymous
 * MAP_SHARED mapping made by the main process before the first fork, reset
 * before each run. Its counters belong to the run's consumer.
 *  - seen: records the consumer has read. Written by the consumer only
 *    (R3, release, after it read the record); read by the producer in
 *    --latency (A3, acquire) before it sends the next record.
 *  - records, bytes, t_first: written by the consumer only, read by the main
 *    process for the progress line. Relaxed on both sides: they are only
 *    displayed, nothing is read on the strength of them.
 */
struct shared {
	alignas(RING_LINE) _Atomic uint64_t seen;
	alignas(RING_LINE) _Atomic uint64_t records;
	_Atomic uint64_t bytes;
	_Atomic uint64_t t_first;
};

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "shared counters must be lock-free");
_Static_assert(offsetof(struct shared, records) == RING_LINE, "seen alone on its lines");

static struct shared *shared; /* made by main(), inherited by every child */

/*
 * fdx's modes: the credit round trip of each channel, as
 * fdx_partition_channel_stats() gives it, written by the producer after the
 * run, one entry per channel, in a MAP_SHARED array made by main() before
 * the first fork and zeroed before each run. The main process reads it after
 * waitpid() reaped the producer: the producer's exit orders its writes
 * before the read, so plain fields are enough.
 */
struct rtt_entry {
	uint64_t count;
	uint64_t p50_ns;
	uint64_t p99_ns;
	uint64_t max_ns;
	/* Its parts, p50 and p99 (fdx_channel_stats, fdx_input_channel_stats; 0 if unmeasured). */
	uint64_t one_way[2]; /* consumer: a descriptor sent -> at the gate (shm) */
	uint64_t hold[2]; /* consumer: arrived -> released */
	uint64_t wait[2]; /* consumer: released -> its credit written */
	uint64_t wire[2]; /* producer: credit written -> applied */
	uint64_t resume[2]; /* producer: credit to a starved sender -> its next buffer out */
};

static struct rtt_entry *rtts; /* c.channels entries */

static char who[64] = "fdx-bench"; /* prefix of messages; names the child */

static void die(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s (%d)\n", who, what, fdx_strerror(err), err);
	exit(1);
}

static void fail(const char *msg)
{
	fprintf(stderr, "%s: %s\n", who, msg);
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

/* This process's CPU time, every thread, user + system. */
static uint64_t cpu_self_ns(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		die("getrusage", -errno);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
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

#define BACKOFF_SPINS 4096u
#define BACKOFF_YIELDS 64u

/* Wait politely: spin a while, then yield, then sleep; spins counts the calls. */
static void backoff(unsigned *spins)
{
	if (++*spins < BACKOFF_SPINS)
		cpu_relax();
	else if (*spins < BACKOFF_SPINS + BACKOFF_YIELDS)
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

/* The producer's side of the address pipe: one line, then end of file. */
static void read_addr(int fd, char *addr, size_t size)
{
	FILE *from = fdopen(fd, "r");

	if (!from)
		die("fdopen", -errno);
	if (!fgets(addr, (int)size, from))
		fail("the consumer sent no address");
	fclose(from);
	addr[strcspn(addr, "\n")] = '\0';
}

static void send_addr(int fd, const char *addr)
{
	char line[320];

	snprintf(line, sizeof(line), "%s\n", addr);
	write_full(fd, line, strlen(line), "send the address");
	close(fd);
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
 * The producer's records, the same in every mode: a fixed pattern whose
 * first 8 bytes are the record's number and, with --latency, whose next 8
 * are its send time. The sum of a record is then number (+ time) + rest,
 * since read_sum() splits the words at the same offsets either way.
 */
struct source {
	const struct config *c;
	unsigned char *rec;
	uint64_t rest; /* the sum of the fixed part */
	uint64_t end; /* when the producer stops */
	uint64_t total; /* --latency: records to send, warm-up included */
	uint32_t check_every; /* records between two reads of the clock */
	int last; /* the record made last is the run's last */
	/* Phased (source_phased()): a warm-up, then repetitions, each step ns long. */
	uint64_t step;
	uint64_t next_mark; /* when the next phase mark is due */
	uint32_t marks_left; /* phase marks still to write */
	int mark_due; /* write a phase mark after this record */
	struct report rep;
};

/* A record of the fixed pattern: what every producer sends and every eventfd consumer rebuilds. */
static unsigned char *record_make(uint32_t size)
{
	unsigned char *rec = calloc(1, size); /* not malloc: -Wmaybe-uninitialized loses the loop */

	if (!rec)
		die("calloc", -ENOMEM);
	for (uint32_t i = 0; i < size; i++)
		rec[i] = (unsigned char)(i * 131u + 7u);
	return rec;
}

static void source_init(struct source *s, const struct config *c)
{
	uint32_t fixed = c->latency ? 16 : 8;

	memset(s, 0, sizeof(*s));
	s->c = c;
	s->total = (uint64_t)LAT_WARMUP + c->lat_count;
	s->rec = record_make(c->record_size);
	s->rest = read_sum(s->rec + fixed, c->record_size - fixed);
	/* Large records: read the clock about every 64 KiB, so that the end is not overshot. */
	s->check_every = c->record_size >= 65536 ? 1 : 65536 / c->record_size;
	if (s->check_every > CHECK_EVERY)
		s->check_every = CHECK_EVERY;
	s->end = now_ns() + (uint64_t)(c->seconds * 1e9);
	s->rep.cpu_start_ns = cpu_self_ns();
}

/*
 * A warm-up, then reps repetitions, each --seconds / reps long; the producer
 * writes a phase mark (source_mark()) after each but the last, which the end
 * closes.
 */
static void source_phased(struct source *s, uint32_t reps)
{
	uint64_t start = now_ns();

	s->step = (uint64_t)(s->c->seconds * 1e9 / reps);
	s->next_mark = start + s->step;
	s->marks_left = reps;
	s->end = start + s->step * (reps + 1);
}

/* The producer's CPU time from its first record until now. */
static void report_cpu_done(struct report *rep)
{
	rep->cpu_ns = cpu_self_ns() - rep->cpu_start_ns;
}

/* The records are made; the producer's CPU time counts to here unless extended. */
static void source_fini(struct source *s, struct report *rep)
{
	*rep = s->rep;
	report_cpu_done(rep);
	free(s->rec);
	s->rec = NULL;
}

/* Phased: a phase mark, or the end, has just been written: note the CPU time. */
static void source_mark(struct source *s)
{
	if (s->rep.n_marks < MARKS_MAX)
		s->rep.mark_cpu_ns[s->rep.n_marks++] = cpu_self_ns();
	if (s->mark_due) {
		s->mark_due = 0;
		s->marks_left--;
		s->next_mark += s->step;
	}
}

/*
 * Make the next record in s->rec and count it in the report; s->last tells
 * whether it is the run's last (known before it is sent, so that grpc-data
 * never leaves it behind a buffer hint), s->mark_due whether a phase mark
 * follows it. The clock is read every s->check_every records, or for every
 * record with --latency.
 * @return 0 when the run is over.
 */
static int source_next(struct source *s)
{
	uint64_t n = s->rep.records;

	if (s->last)
		return 0;
	memcpy(s->rec, &n, sizeof(n));
	if (s->c->latency) {
		uint64_t t = now_ns();

		memcpy(s->rec + 8, &t, sizeof(t));
		s->rep.sum += t;
		s->last = n + 1 >= s->total || t >= s->end;
	} else if ((n + 1) % s->check_every == 0) {
		uint64_t t = now_ns();

		s->last = t >= s->end;
		s->mark_due = s->marks_left && t >= s->next_mark;
	}
	s->rep.sum += n + s->rest;
	s->rep.records = n + 1;
	s->rep.bytes += s->c->record_size;
	return 1;
}

/*
 * --latency: let the producer's short sleeps be short. Called by the producing
 * thread only, after setup: the timer slack is per thread and inherited, and
 * the library's threads must keep the system's.
 */
static void source_latency_prepare(const struct config *c)
{
	if (c->latency)
		prctl(PR_SET_TIMERSLACK, LAT_TIMER_SLACK_NS);
}

/*
 * --latency: wait until the consumer has read every record made so far, then
 * --gap. Spin LAT_SPIN_NS at most, then yield the CPU until LAT_YIELD_NS,
 * then sleep LAT_SLEEP_NS at a time: on two cores a producer that kept
 * spinning would take the CPU from the threads that carry its record. How
 * the producer waits is not in the figures (the clock starts at the next
 * send), but it decides whether the library's threads are still polling or
 * asleep when the next record comes: --gap shows the second case.
 */
static void source_wait_seen(const struct source *s)
{
	uint64_t start = now_ns(), t = start;

	/* A3: pairs with R3 in consumed_record(). */
	while (atomic_load_explicit(&shared->seen, memory_order_acquire) < s->rep.records) {
		if (t - start < LAT_SPIN_NS) {
			for (int i = 0; i < 16; i++)
				cpu_relax();
		} else if (t - start < LAT_YIELD_NS) {
			sched_yield();
		} else {
			if (t - start > LAT_WAIT_NS)
				die("the consumer did not read the last record for 10 s",
				    -ETIMEDOUT);
			sleep_ns(LAT_SLEEP_NS);
		}
		t = now_ns();
	}
	if (s->c->gap_ns)
		sleep_ns((long)s->c->gap_ns);
}

static void consumed_init(struct consumed *cs, const struct config *c)
{
	*cs = (struct consumed){0};
	if (!c->latency)
		return;
	cs->lat_cap = c->lat_count;
	cs->lat = malloc(cs->lat_cap * sizeof(*cs->lat));
	if (!cs->lat)
		die("malloc", -ENOMEM);
	memset(cs->lat, 0, cs->lat_cap * sizeof(*cs->lat)); /* fault it in now, not while timing */
}

/* Read one record; with --latency, time it (then call consumed_seen()). */
static void consumed_read(struct consumed *cs, const unsigned char *rec, uint32_t len)
{
	uint64_t t, sent;

	cs->sum += read_sum(rec, len);
	cs->records++;
	cs->bytes += len;
	if (!cs->lat)
		return;
	t = now_ns();
	memcpy(&sent, rec + 8, sizeof(sent));
	if (cs->records > LAT_WARMUP && cs->lat_n < cs->lat_cap)
		cs->lat[cs->lat_n++] = t > sent ? t - sent : 0;
}

/* --latency: the records read so far are read: the producer may send the next. */
static void consumed_seen(const struct consumed *cs)
{
	if (!cs->lat)
		return;
	/* R3: pairs with A3 in source_wait_seen(). */
	atomic_store_explicit(&shared->seen, cs->records, memory_order_release);
}

/* Read one record; with --latency, time it and let the producer send the next. */
static void consumed_record(struct consumed *cs, const unsigned char *rec, uint32_t len)
{
	consumed_read(cs, rec, len);
	consumed_seen(cs);
}

/* Count one buffer's worth of reading; the main process shows it as progress. */
static void consumed_tick(struct consumed *cs)
{
	cs->t_last = now_ns();
	/* Relaxed: display only (see struct shared). */
	atomic_store_explicit(&shared->records, cs->records, memory_order_relaxed);
	atomic_store_explicit(&shared->bytes, cs->bytes, memory_order_relaxed);
}

static void consumed_start(struct consumed *cs)
{
	uint64_t t = now_ns();

	cs->t_first = t;
	cs->t_last = t;
	cs->cpu_start_ns = cpu_self_ns();
	atomic_store_explicit(&shared->t_first, t, memory_order_relaxed); /* display only */
}

/* The last item is in: the consumer's CPU time since the first buffer. */
static void consumed_end(struct consumed *cs)
{
	if (cs->t_first)
		cs->cpu_ns = cpu_self_ns() - cs->cpu_start_ns;
}

/* Phased: a phase mark, or the end, was read: what had been read by now, and when. */
static void consumed_mark(struct consumed *cs)
{
	uint32_t i = cs->n_marks;

	if (i == MARKS_MAX)
		die("more phase marks than repetitions", FDX_EPROTO);
	cs->mark_ns[i] = now_ns();
	cs->mark_records[i] = cs->records;
	cs->mark_bytes[i] = cs->bytes;
	cs->mark_cpu_ns[i] = cpu_self_ns();
	cs->n_marks = i + 1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* The nearest-rank percentile of sorted v, q in thousandths. */
static uint64_t rank(const uint64_t *v, uint64_t n, uint64_t q)
{
	uint64_t k = (n * q + 999) / 1000;

	return v[k < 1 ? 0 : k - 1];
}

/* Records per ns of repetition i. */
static double rep_rate(const struct result *res, uint32_t i)
{
	return (double)res->rep_records[i] / (double)res->rep_ns[i];
}

/*
 * Phased: the repetitions between the marks (the first mark ends the
 * warm-up); res takes the median one's records, bytes and time, and the CPU
 * time of both processes over all of them. A repetition that saw no record
 * (the producer passed two marks at once) is left out.
 */
static void verify_reps(const struct consumed *cs, const struct report *rep, struct result *res)
{
	uint32_t n = cs->n_marks, k = 0, mid, order[REPS_MAX];

	if (n != rep->n_marks)
		die("the producer wrote and the consumer read different phase marks", FDX_EPROTO);
	for (uint32_t j = 1; j < n && k < REPS_MAX; j++) {
		uint64_t recs = cs->mark_records[j] - cs->mark_records[j - 1];
		uint64_t ns = cs->mark_ns[j] - cs->mark_ns[j - 1];

		if (!recs || !ns)
			continue;
		res->rep_records[k] = recs;
		res->rep_bytes[k] = cs->mark_bytes[j] - cs->mark_bytes[j - 1];
		res->rep_ns[k] = ns;
		k++;
	}
	if (!k)
		return; /* the whole run stands */
	/* Order the repetitions by rate (insertion sort: a few of them), then take the middle one. */
	for (uint32_t i = 0, j; i < k; i++) {
		for (j = i; j > 0 && rep_rate(res, order[j - 1]) > rep_rate(res, i); j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
	mid = order[(k - 1) / 2];
	res->reps = k;
	res->records = res->rep_records[mid];
	res->bytes = res->rep_bytes[mid];
	res->ns = res->rep_ns[mid];
	res->cpu_prod_ns = rep->mark_cpu_ns[n - 1] - rep->mark_cpu_ns[0];
	res->cpu_cons_ns = cs->mark_cpu_ns[n - 1] - cs->mark_cpu_ns[0];
	res->cpu_records = cs->mark_records[n - 1] - cs->mark_records[0];
	res->cpu_bytes = cs->mark_bytes[n - 1] - cs->mark_bytes[0];
}

/* The consumer's check of the producer's report, then the result it measured. */
static void verify(struct consumed *cs, const struct report *rep, uint32_t channels,
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
	if (cs->records == 0)
		fail("no record went through");
	*res = (struct result){.records = cs->records,
			       .bytes = cs->bytes,
			       .ns = cs->t_last > cs->t_first ? cs->t_last - cs->t_first : 1,
			       .channels = channels,
			       .cpu_prod_ns = rep->cpu_ns,
			       .cpu_cons_ns = cs->cpu_ns,
			       .cpu_records = cs->records,
			       .cpu_bytes = cs->bytes};
	if (cs->n_marks || rep->n_marks)
		verify_reps(cs, rep, res);
	if (!cs->lat)
		return;
	if (cs->lat_n == 0)
		fail("no latency sample: the time ran out during the warm-up records");
	qsort(cs->lat, cs->lat_n, sizeof(*cs->lat), cmp_u64);
	res->samples = cs->lat_n;
	res->p50_ns = rank(cs->lat, cs->lat_n, 500);
	res->p99_ns = rank(cs->lat, cs->lat_n, 990);
	res->p999_ns = rank(cs->lat, cs->lat_n, 999);
	res->max_ns = cs->lat[cs->lat_n - 1];
	free(cs->lat);
	cs->lat = NULL;
}

/* ---- fdx: producer ------------------------------------------------------------ */

/*
 * Emit records round-robin over the subpartitions until the time is up; with
 * --latency, flush each one and wait until the consumer has read it.
 */
static void produce(struct fdx_partition *p, const struct config *c, struct report *rep)
{
	struct source s;
	uint32_t sub = 0;
	int err;

	source_init(&s, c);
	source_latency_prepare(c);
	while (source_next(&s)) {
		err = fdx_partition_emit(p, sub, s.rec, c->record_size, EMIT_TIMEOUT_MS);
		if (err < 0)
			die("fdx_partition_emit", err);
		if (c->latency) {
			if ((err = fdx_partition_flush(p, sub)) < 0)
				die("fdx_partition_flush", err);
			source_wait_seen(&s);
		}
		sub = sub + 1 == c->channels ? 0 : sub + 1;
	}
	source_fini(&s, rep);
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
	char what[64 + 300]; /* the call, the channel and an address of up to 299 bytes */
	int err;

	for (uint32_t i = 0; i < c->channels; i++) {
		err = fdx_partition_connect(p, i, addr, GATE, i, link, CONNECT_TIMEOUT_MS);
		if (err < 0) {
			snprintf(what, sizeof(what), "fdx_partition_connect %u to %s", i, addr);
			die(what, err);
		}
	}
}

/*
 * Send END_OF_PARTITION everywhere and wait until every buffer came back;
 * then, before the partition goes, note each channel's credit round trip
 * for the main process.
 */
static void partition_end(struct fdx_partition *p, const struct config *c)
{
	int err;

	if ((err = fdx_partition_finish(p, FINISH_TIMEOUT_MS)) < 0)
		die("fdx_partition_finish", err);
	for (uint32_t i = 0; i < c->channels; i++) {
		struct fdx_channel_stats st = {.size = sizeof(st)};

		if ((err = fdx_partition_channel_stats(p, i, &st)) < 0)
			die("fdx_partition_channel_stats", err);
		/* The consumer fills its parts of the entry itself. */
		rtts[i].count = st.rtt_count;
		rtts[i].p50_ns = st.rtt_p50_ns;
		rtts[i].p99_ns = st.rtt_p99_ns;
		rtts[i].max_ns = st.rtt_max_ns;
		rtts[i].wire[0] = st.credit_wire_p50_ns;
		rtts[i].wire[1] = st.credit_wire_p99_ns;
		rtts[i].resume[0] = st.resume_p50_ns;
		rtts[i].resume[1] = st.resume_p99_ns;
	}
}

/* ---- fdx: consumer ------------------------------------------------------------ */

/* The consumer's parts of each channel's credit loop, for the main process. */
static void gate_parts(struct fdx_gate *g, const struct config *c)
{
	for (uint32_t i = 0; i < c->channels; i++) {
		struct fdx_input_channel_stats st = {.size = sizeof(st)};

		if (fdx_gate_channel_stats(g, i, &st) < 0)
			continue;
		rtts[i].one_way[0] = st.one_way_p50_ns;
		rtts[i].one_way[1] = st.one_way_p99_ns;
		rtts[i].hold[0] = st.hold_p50_ns;
		rtts[i].hold[1] = st.hold_p99_ns;
		rtts[i].wait[0] = st.credit_wait_p50_ns;
		rtts[i].wait[1] = st.credit_wait_p99_ns;
	}
}

static struct fdx_gate *gate_make(struct fdx_exchange *ex, struct fdx_lbp *pool,
				  const struct config *c)
{
	struct fdx_gate_opts o = {.size = sizeof(o),
				  .gate = GATE,
				  .n_channels = c->channels,
				  .exclusive_credits =
					  c->exclusive ? c->exclusive : FDX_CREDITS_NONE,
				  .floating_credits = c->floating ? c->floating : FDX_CREDITS_NONE,
				  .inplace_credits = c->inplace ? c->inplace : FDX_CREDITS_NONE};
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
static void consume(struct fdx_gate *g, const struct config *c, struct consumed *cs)
{
	unsigned char *ended = calloc(c->channels, 1);
	uint32_t n_ended = 0, idle_s = 0;
	struct fdx_view v;
	const void *rec;
	uint32_t len;
	int err;

	if (!ended)
		die("calloc", -ENOMEM);
	consumed_init(cs, c);
	while (n_ended < c->channels) {
		err = fdx_gate_next(g, &v, 1000);
		if (err == -EAGAIN) { /* a whole second without anything */
			if (++idle_s >= IDLE_LIMIT_S)
				die("fdx_gate_next: nothing came for 30 s", -ETIMEDOUT);
			continue;
		}
		if (err < 0)
			die("fdx_gate_next", err);
		idle_s = 0;
		switch (v.kind) {
		case FDX_VIEW_BUFFER:
			if (!cs->t_first)
				consumed_start(cs);
			while ((err = fdx_gate_next_record(g, &v, &rec, &len)) == 1)
				consumed_record(cs, rec, len);
			if (err < 0)
				die("fdx_gate_next_record", err);
			consumed_tick(cs);
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
	consumed_end(cs);
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

/* Wait for the report, check it and send the result to the main process. */
static void consumer_finish(struct fdx_gate *g, struct consumed *cs, uint32_t channels, int rep_fd,
			    int res_fd)
{
	struct report rep;
	struct result res;

	report_wait(g, rep_fd, &rep);
	verify(cs, &rep, channels, &res);
	write_full(res_fd, &res, sizeof(res), "send the result");
}

/* ---- fdx: the processes of shm and tcp ------------------------------------------ */

static int consumer_main(const struct config *c, enum mode m, int addr_fd, int rep_fd, int res_fd)
{
	struct fdx_nbp *nbp = NULL;
	struct fdx_lbp *lbp = NULL;
	struct fdx_exchange *ex;
	struct fdx_gate *g;
	struct consumed cs;
	char listen[256];
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
	send_addr(addr_fd, fdx_exchange_address(ex));

	pin_self(c->cpus[1]);
	consume(g, c, &cs);
	consumer_finish(g, &cs, c->channels, rep_fd, res_fd);
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

	gate_parts(g, c);
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
	struct fdx_partition *p;
	struct fdx_exchange *ex;
	struct fdx_nbp *nbp;
	struct fdx_lbp *lbp;
	struct report rep;
	int err;

	read_addr(addr_fd, addr, sizeof(addr));
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
	partition_end(p, c);
	report_cpu_done(&rep); /* the producer's part ends when its last buffer came back */
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
	consume(lc->g, lc->c, &cs);
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
	uint64_t cpu_start;
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
	cpu_start = cpu_self_ns();
	produce(p, c, &rep);
	partition_end(p, c);
	write_full(rep_pipe[1], &rep, sizeof(rep), "send the report");
	if ((err = pthread_join(lc.tid, NULL)) != 0)
		die("pthread_join", -err);
	/* One process: its CPU time is both sides' (the threads' own windows overlap). */
	lc.res.one_process = 1;
	lc.res.cpu_prod_ns = cpu_self_ns() - cpu_start;
	lc.res.cpu_cons_ns = 0;
	write_full(res_fd, &lc.res, sizeof(lc.res), "send the result");

	close(rep_pipe[0]);
	close(rep_pipe[1]);
	fdx_partition_destroy(p);
	gate_parts(lc.g, c);
	fdx_gate_destroy(lc.g);
	fdx_exchange_destroy(ex);
	fdx_lbp_destroy(lbp);
	if ((err = fdx_nbp_destroy(nbp)) < 0)
		die("fdx_nbp_destroy", err);
	return 0;
}

/* ---- shm-ring: a raw SPSC byte ring ------------------------------------------- */

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
 * goes on at offset 0. RING_PHASE (a length without bytes) ends the warm-up
 * and each repetition but the last; RING_END follows the last record.
 */
#define RING_SKIP 0xffffffffu
#define RING_END 0xfffffffeu
#define RING_PHASE 0xfffffffdu

_Static_assert(RECORD_MAX < RING_PHASE, "record lengths must not look like ring markers");

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
	struct source s;

	source_init(&s, c);
	if (!c->latency)
		source_phased(&s, c->reps);
	source_latency_prepare(c);
	while (source_next(&s)) {
		ring_put(&w, c->record_size, s.rec, c->record_size);
		if (c->latency) {
			ring_publish(&w);
			source_wait_seen(&s);
		} else if (s.mark_due) {
			ring_put(&w, RING_PHASE, NULL, 0);
			source_mark(&s);
		}
	}
	ring_put(&w, RING_END, NULL, 0);
	ring_publish(&w);
	if (s.step)
		source_mark(&s);
	source_fini(&s, rep);
}

static void ring_consume(struct ring_hdr *h, const unsigned char *data, const struct config *c,
			 struct consumed *cs)
{
	uint64_t size = c->ring_size, tail = 0, head = 0, released = 0, off;
	uint64_t idle_since = now_ns();
	unsigned spins = 0;
	uint32_t len;

	consumed_init(cs, c);
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
				if (spins > BACKOFF_SPINS && now_ns() - idle_since > IDLE_LIMIT_NS)
					die("the ring stayed empty for 30 s", -ETIMEDOUT);
				continue;
			}
			spins = 0;
			if (!cs->t_first)
				consumed_start(cs);
			else
				consumed_tick(cs);
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
		if (len == RING_PHASE) {
			consumed_mark(cs);
			tail += 4;
			continue;
		}
		consumed_record(cs, data + off + 4, len);
		tail += 4 + (uint64_t)len;
		if (tail - released >= c->seg_size) {
			/* R2: pairs with A2 in ring_wait_space(). */
			atomic_store_explicit(&h->tail, tail, memory_order_release);
			released = tail;
		}
	}
	atomic_store_explicit(&h->tail, tail, memory_order_release); /* R2, as above */
	consumed_tick(cs);
	if (!c->latency)
		consumed_mark(cs);
	consumed_end(cs);
}

/* ---- shm-ceiling: fdx's memory as slots, their numbers handed back ------------ */

/*
 * c->slots slots of c->seg_size bytes in one anonymous MAP_SHARED mapping,
 * and two queues of slot numbers in a second one (struct slot_hdr, then
 * sent[], then back[], each slots entries long), both made before fork().
 *
 * Who writes what:
 *  - sent[], sent_head: the producer only. Entry i (at i % slots) is a full
 *    slot: its number in the high 32 bits, the bytes written in it in the
 *    low 32. sent_head counts the entries posted.
 *  - back[], back_head: the consumer only. Entry i (at i % slots) is a slot
 *    it is done with; back_head counts them.
 * Each reader keeps its own position. Neither queue can overrun: only slots
 * numbers exist, so among the entries k - slots .. k of a queue two name the
 * same slot, which went round in between, and for that the reader had read
 * the earlier one of them, hence entry k - slots, before entry k is written.
 *
 * Barriers:
 *  R4 (producer, store sent_head, release) pairs with A4 (consumer, load
 *     sent_head, acquire): the slot's bytes and its entry are written before
 *     the consumer reads them.
 *  R5 (consumer, store back_head, release) pairs with A5 (producer, load
 *     back_head, acquire): the consumer is done with the slot, and with the
 *     sent[] entries before, before the producer writes them again.
 * Each side caches the other's head and re-reads it only when its queue
 * looks empty.
 *
 * The bytes are the byte ring's, packed slot after slot: [u32 len][len bytes]
 * records, RING_PHASE, RING_END. A record continues in the next slot when a
 * slot is full; a length never straddles two slots (a slot with fewer than 4
 * bytes left is full).
 */
struct slot_hdr {
	alignas(RING_LINE) _Atomic uint64_t sent_head; /* producer-written */
	alignas(RING_LINE) _Atomic uint64_t back_head; /* consumer-written, a guard line after */
};

_Static_assert(offsetof(struct slot_hdr, back_head) == RING_LINE, "heads on separate lines");

/* The ring as both processes see it: pointers into the mappings main() made. */
struct slot_ring {
	struct slot_hdr *h;
	uint64_t *sent;
	uint32_t *back;
	unsigned char *data;
	uint32_t n; /* slots */
	uint32_t seg; /* bytes per slot */
};

/* Where back[] starts in the queues' mapping: on a line of its own, after sent[]. */
static size_t slot_back_offset(uint32_t n)
{
	size_t sent_end = sizeof(struct slot_hdr) + (size_t)n * sizeof(uint64_t);

	return (sent_end + RING_LINE - 1) / RING_LINE * RING_LINE;
}

static size_t slot_queues_size(uint32_t n)
{
	return slot_back_offset(n) + (size_t)n * sizeof(uint32_t);
}

struct slot_prod {
	struct slot_ring r;
	unsigned char *slot; /* the slot being filled, or NULL */
	uint32_t cur; /* its number */
	uint32_t fill; /* bytes written in it */
	uint32_t fresh; /* slots 0 .. fresh - 1 were taken once; the rest never */
	uint64_t sent; /* entries posted */
	uint64_t taken; /* entries of back[] taken */
	uint64_t back_cache; /* back_head as last read */
};

/* The next slot: a fresh one, else the oldest handed back (waiting for it). */
static void slot_take(struct slot_prod *w)
{
	unsigned spins = 0;

	if (w->fresh < w->r.n) {
		w->cur = w->fresh++;
	} else {
		while (w->taken == w->back_cache) {
			/* A5: pairs with R5 in slot_consume(). */
			w->back_cache =
				atomic_load_explicit(&w->r.h->back_head, memory_order_acquire);
			if (w->taken == w->back_cache)
				backoff(&spins);
		}
		w->cur = w->r.back[w->taken % w->r.n];
		w->taken++;
	}
	w->slot = w->r.data + (uint64_t)w->cur * w->r.seg;
	w->fill = 0;
}

static void slot_post(struct slot_prod *w)
{
	w->r.sent[w->sent % w->r.n] = (uint64_t)w->cur << 32 | w->fill;
	w->sent++;
	/* R4: pairs with A4 in slot_consume(). */
	atomic_store_explicit(&w->r.h->sent_head, w->sent, memory_order_release);
	w->slot = NULL;
}

/* Write [hdr][len bytes of src], continuing in the next slots as needed. */
static void slot_put(struct slot_prod *w, uint32_t hdr, const void *src, uint32_t len)
{
	const unsigned char *p = src;

	if (!w->slot)
		slot_take(w);
	memcpy(w->slot + w->fill, &hdr, 4); /* an open slot has 4 bytes left at least */
	w->fill += 4;
	while (len > 0) {
		uint32_t k;

		if (w->fill == w->r.seg) {
			slot_post(w);
			slot_take(w);
		}
		k = w->r.seg - w->fill < len ? w->r.seg - w->fill : len;
		memcpy(w->slot + w->fill, p, k);
		w->fill += k;
		p += k;
		len -= k;
	}
	if (w->r.seg - w->fill < 4)
		slot_post(w);
}

static void slot_produce(const struct slot_ring *r, const struct config *c, struct report *rep)
{
	struct slot_prod w = {.r = *r};
	struct source s;

	source_init(&s, c);
	if (!c->latency)
		source_phased(&s, c->reps);
	source_latency_prepare(c);
	while (source_next(&s)) {
		slot_put(&w, c->record_size, s.rec, c->record_size);
		if (c->latency) {
			if (w.slot)
				slot_post(&w);
			source_wait_seen(&s);
		} else if (s.mark_due) {
			slot_put(&w, RING_PHASE, NULL, 0);
			source_mark(&s);
		}
	}
	slot_put(&w, RING_END, NULL, 0);
	if (w.slot)
		slot_post(&w);
	if (s.step)
		source_mark(&s);
	source_fini(&s, rep);
}

/* The consumer's reading across slots: a record may begin in one and end in a later one. */
struct slot_reader {
	unsigned char *whole; /* a record that spans slots, put together (record_size bytes) */
	uint32_t max; /* the longest record the producer makes */
	uint32_t len; /* the spanning record's length */
	uint32_t have; /* bytes of it so far */
	int spanning;
};

/* Read the fill bytes of one slot. @return 1 once RING_END is read. */
static int slot_read(struct slot_reader *rd, const unsigned char *p, uint32_t fill,
		     struct consumed *cs)
{
	uint32_t off = 0, len, k;

	if (rd->spanning) {
		k = rd->len - rd->have < fill ? rd->len - rd->have : fill;
		memcpy(rd->whole + rd->have, p, k);
		rd->have += k;
		off = k;
		if (rd->have < rd->len)
			return 0;
		consumed_record(cs, rd->whole, rd->len);
		rd->spanning = 0;
	}
	while (fill - off >= 4) {
		memcpy(&len, p + off, 4);
		off += 4;
		if (len == RING_END)
			return 1;
		if (len == RING_PHASE) {
			consumed_mark(cs);
			continue;
		}
		if (len > rd->max)
			die("a record longer than the producer makes", FDX_EPROTO);
		if (fill - off >= len) {
			consumed_record(cs, p + off, len);
			off += len;
			continue;
		}
		/* It goes on in the next slot: put it together, as fdx's gate does. */
		k = fill - off;
		memcpy(rd->whole, p + off, k);
		rd->len = len;
		rd->have = k;
		rd->spanning = 1;
		return 0;
	}
	return 0;
}

/* Read each slot as it comes, then hand its number back at once. */
static void slot_consume(const struct slot_ring *r, const struct config *c, struct consumed *cs)
{
	struct slot_reader rd = {.whole = malloc(c->record_size), .max = c->record_size};
	uint64_t next = 0, head = 0, back = 0, entry;
	uint64_t idle_since = now_ns();
	unsigned spins = 0;
	int end = 0;

	if (!rd.whole)
		die("malloc", -ENOMEM);
	consumed_init(cs, c);
	while (!end) {
		uint32_t slot, fill;

		if (next == head) {
			/* A4: pairs with R4 in slot_post(). */
			head = atomic_load_explicit(&r->h->sent_head, memory_order_acquire);
			if (next == head) {
				backoff(&spins);
				if (spins > BACKOFF_SPINS && now_ns() - idle_since > IDLE_LIMIT_NS)
					die("no slot came for 30 s", -ETIMEDOUT);
				continue;
			}
			spins = 0;
		}
		entry = r->sent[next % r->n];
		next++;
		slot = (uint32_t)(entry >> 32);
		fill = (uint32_t)entry;
		if (slot >= r->n || fill > r->seg)
			die("a slot entry out of range", FDX_EPROTO);
		if (!cs->t_first)
			consumed_start(cs);
		end = slot_read(&rd, r->data + (uint64_t)slot * r->seg, fill, cs);
		consumed_tick(cs);
		idle_since = cs->t_last;
		r->back[back % r->n] = slot;
		back++;
		/* R5: pairs with A5 in slot_take(). */
		atomic_store_explicit(&r->h->back_head, back, memory_order_release);
	}
	if (rd.spanning)
		die("the data ended inside a record", FDX_EPROTO);
	if (!c->latency)
		consumed_mark(cs);
	consumed_end(cs);
	free(rd.whole);
}

static int huge_pages[MODE_COUNT]; /* main process: the ceiling's memory was hugetlb-backed */

/* ---- uring-unix: io_uring send and recv on a Unix stream socket ----------------- */

/* One ring per process (liburing, as fdx's data plane), one operation in flight at a time. */
struct uring {
	struct io_uring ring;
};

static void uring_init(struct uring *u)
{
	int err = io_uring_queue_init(URING_ENTRIES, &u->ring, 0);

	if (err < 0)
		die("io_uring_queue_init", err);
}

static void uring_exit(struct uring *u)
{
	io_uring_queue_exit(&u->ring);
}

/* Queue one send or receive of len bytes at buf on fd and submit it; uring_wait() completes it. */
static void uring_submit(struct uring *u, uint8_t opcode, int fd, void *buf, uint32_t len)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	int n;

	if (!sqe)
		die("io_uring_get_sqe", -EBUSY);
	if (opcode == IORING_OP_SEND)
		io_uring_prep_send(sqe, fd, buf, len, 0);
	else
		io_uring_prep_recv(sqe, fd, buf, len, 0);
	do
		n = io_uring_submit(&u->ring);
	while (n == -EINTR);
	if (n != 1)
		die("io_uring_submit", n < 0 ? n : -EIO);
}

/* Wait for the operation in flight to complete. @return its result (bytes, or -errno). */
static int uring_wait(struct uring *u)
{
	struct io_uring_cqe *cqe;
	int err, res;

	do
		err = io_uring_wait_cqe(&u->ring, &cqe);
	while (err == -EINTR);
	if (err < 0)
		die("io_uring_wait_cqe", err);
	res = cqe->res;
	io_uring_cqe_seen(&u->ring, cqe);
	return res;
}

/* Each record as io_uring sends (one in flight), then the end: shutdown(SHUT_WR). */
static void uring_produce(int fd, const struct config *c, struct report *rep)
{
	struct uring u;
	struct source s;
	int res = 0;

	uring_init(&u);
	source_init(&s, c);
	source_latency_prepare(c);
	while (source_next(&s)) {
		for (uint32_t off = 0; off < c->record_size; off += (uint32_t)res) {
			uring_submit(&u, IORING_OP_SEND, fd, s.rec + off, c->record_size - off);
			if ((res = uring_wait(&u)) <= 0)
				die("io_uring send", res < 0 ? res : -EPIPE);
		}
		source_wait_seen(&s);
	}
	source_fini(&s, rep);
	if (shutdown(fd, SHUT_WR) < 0)
		die("shutdown", -errno);
	uring_exit(&u);
}

/*
 * A receive is always in flight, as fdx's loop keeps one: the next one is
 * submitted (into the other buffer) before the producer may send the next
 * record, and after the record that completed was timed.
 */
static void uring_consume(int fd, const struct config *c, struct consumed *cs)
{
	uint32_t len = c->record_size, got = 0;
	unsigned char *buf[2] = {malloc(len), malloc(len)};
	struct uring u;
	int cur = 0, res;

	if (!buf[0] || !buf[1])
		die("malloc", -ENOMEM);
	uring_init(&u);
	consumed_init(cs, c);
	uring_submit(&u, IORING_OP_RECV, fd, buf[cur], len);
	for (;;) {
		if ((res = uring_wait(&u)) < 0)
			die("io_uring recv", res);
		if (res == 0)
			break;
		if (!cs->t_first)
			consumed_start(cs);
		got += (uint32_t)res;
		if (got < len) {
			uring_submit(&u, IORING_OP_RECV, fd, buf[cur] + got, len - got);
			continue;
		}
		consumed_read(cs, buf[cur], len);
		uring_submit(&u, IORING_OP_RECV, fd, buf[!cur], len);
		consumed_seen(cs);
		consumed_tick(cs);
		cur = !cur;
		got = 0;
	}
	if (got)
		die("the stream ended inside a record", FDX_EPROTO);
	consumed_end(cs);
	uring_exit(&u);
	free(buf[0]);
	free(buf[1]);
}

/* ---- eventfd: a wake carrying the send time -------------------------------------- */

/* Write each record's send time to the eventfd; the consumer has read one before the next. */
static void eventfd_produce(int efd, const struct config *c, struct report *rep)
{
	struct source s;
	uint64_t v;

	source_init(&s, c);
	source_latency_prepare(c);
	while (source_next(&s)) {
		memcpy(&v, s.rec + 8, sizeof(v)); /* the send time source_next() wrote */
		write_full(efd, &v, sizeof(v), "write the eventfd");
		source_wait_seen(&s);
	}
	source_fini(&s, rep);
	v = EVENTFD_END;
	write_full(efd, &v, sizeof(v), "write the eventfd");
}

/* A blocking read returns each send time; the record is put together around it and read. */
static void eventfd_consume(int efd, const struct config *c, struct consumed *cs)
{
	unsigned char *rec = record_make(c->record_size);
	uint64_t v, n;

	consumed_init(cs, c);
	for (;;) {
		if (read_full(efd, &v, sizeof(v), "read the eventfd") != sizeof(v))
			die("read the eventfd: end of file", -EIO);
		if (v == EVENTFD_END)
			break;
		if (!cs->t_first)
			consumed_start(cs);
		n = cs->records;
		memcpy(rec, &n, sizeof(n));
		memcpy(rec + 8, &v, sizeof(v));
		consumed_record(cs, rec, c->record_size);
		consumed_tick(cs);
	}
	consumed_end(cs);
	free(rec);
}

/* ---- tcp-copy: plain blocking TCP loopback, as a Netty-style stack ------------- */

/* Append n bytes to the buffer; write it out whenever it is full. @return the new fill. */
static size_t copy_put(int fd, unsigned char *buf, size_t cap, size_t fill, const void *src,
		       size_t n)
{
	const unsigned char *p = src;

	while (n > 0) {
		size_t k = cap - fill < n ? cap - fill : n;

		memcpy(buf + fill, p, k);
		fill += k;
		p += k;
		n -= k;
		if (fill == cap) {
			write_full(fd, buf, cap, "write to the socket");
			fill = 0;
		}
	}
	return fill;
}

/*
 * Pack [u32 len][record] back to back into --segment-size buffers (records
 * and lengths may straddle two buffers: TCP is a byte stream) and write each
 * full one. With --latency, one small buffer per record, written at once.
 */
static void copy_produce(int fd, const struct config *c, struct report *rep)
{
	uint32_t len = c->record_size;
	size_t cap = c->latency ? 4 + (size_t)len : c->seg_size, fill = 0;
	unsigned char *buf = malloc(cap);
	struct source s;

	if (!buf)
		die("malloc", -ENOMEM);
	source_init(&s, c);
	source_latency_prepare(c);
	while (source_next(&s)) {
		fill = copy_put(fd, buf, cap, fill, &len, 4);
		fill = copy_put(fd, buf, cap, fill, s.rec, len);
		if (c->latency)
			source_wait_seen(&s);
	}
	if (fill)
		write_full(fd, buf, fill, "write to the socket");
	source_fini(&s, rep);
	free(buf);
}

/*
 * Read up to --segment-size bytes at a time into our own buffer and walk the
 * records there. The start of a record cut by a read moves to the front and
 * the next read completes it, so the buffer holds one read plus one record.
 */
static void copy_consume(int fd, const struct config *c, struct consumed *cs)
{
	size_t cap = (size_t)c->seg_size + c->record_size + 4, have = 0, pos;
	unsigned char *buf = malloc(cap);
	uint32_t len;

	if (!buf)
		die("malloc", -ENOMEM);
	consumed_init(cs, c);
	for (;;) {
		ssize_t n = read(fd, buf + have, c->seg_size);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			die("read: nothing came for 30 s", -ETIMEDOUT);
		if (n < 0)
			die("read from the socket", -errno);
		if (n == 0)
			break;
		if (!cs->t_first)
			consumed_start(cs);
		have += (size_t)n;
		for (pos = 0; have - pos >= 4; pos += 4 + (size_t)len) {
			memcpy(&len, buf + pos, 4);
			if (len > c->record_size)
				die("a record longer than the producer makes", FDX_EPROTO);
			if (have - pos - 4 < len)
				break;
			consumed_record(cs, buf + pos + 4, len);
		}
		consumed_tick(cs);
		have -= pos;
		if (have)
			memmove(buf, buf + pos, have);
	}
	if (have)
		die("the stream ended inside a record", FDX_EPROTO);
	consumed_end(cs);
	free(buf);
}

static int copy_consumer_main(const struct config *c, int addr_fd, int rep_fd, int res_fd)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval idle = {.tv_sec = IDLE_LIMIT_S};
	socklen_t sa_len = sizeof(sa);
	struct pollfd pfd;
	struct consumed cs;
	char addr[64];
	int lfd, fd, n;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket", -errno);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sa_len) < 0)
		die("listen on 127.0.0.1", -errno);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
	send_addr(addr_fd, addr);

	pfd = (struct pollfd){.fd = lfd, .events = POLLIN};
	do
		n = poll(&pfd, 1, CONNECT_TIMEOUT_MS);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		die("wait for the producer's connection", n < 0 ? -errno : -ETIMEDOUT);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		die("accept", -errno);
	close(lfd);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle)) < 0)
		die("setsockopt SO_RCVTIMEO", -errno);

	pin_self(c->cpus[1]);
	copy_consume(fd, c, &cs);
	close(fd);
	consumer_finish(NULL, &cs, 1, rep_fd, res_fd);
	return 0;
}

static int copy_producer_main(const struct config *c, int addr_fd, int rep_fd)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	char addr[64], *colon, *end;
	struct report rep;
	unsigned long port;
	int fd, one = 1;

	read_addr(addr_fd, addr, sizeof(addr));
	colon = strrchr(addr, ':');
	port = colon ? strtoul(colon + 1, &end, 10) : 0;
	if (!colon || *end || port == 0 || port > 65535)
		fail("the consumer sent a bad address");
	sa.sin_port = htons((uint16_t)port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket", -errno);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect to the consumer", -errno);
	/* As Netty does by default: a small write (--latency) leaves at once. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		die("setsockopt TCP_NODELAY", -errno);

	pin_self(c->cpus[0]);
	copy_produce(fd, c, &rep);
	if (shutdown(fd, SHUT_WR) < 0) /* the consumer's end of file: the end of the data */
		die("shutdown", -errno);
	write_full(rep_fd, &rep, sizeof(rep), "send the report");
	close(fd);
	return 0;
}

/* ---- grpc-data: the records as gRPC messages ------------------------------------ */

/* Completion-queue tags: one batch kind each. */
enum {
	TAG_START = 1, /* client: initial metadata */
	TAG_SEND, /* client: one message */
	TAG_END, /* client: half-close, the status */
	TAG_NEW, /* server: the call came */
	TAG_META, /* server: initial metadata */
	TAG_RECV, /* server: one message (NULL: the half-close) */
	TAG_CLOSE, /* server: the call is closed */
	TAG_STATUS, /* server: the status went */
	TAG_SHUTDOWN, /* server: shut down */
};

static void *tag_of(int tag)
{
	return (void *)(uintptr_t)tag;
}

static int tag_to(void *tag)
{
	return (int)(uintptr_t)tag;
}

/* The next completion, waiting GRPC_WAIT_MS at a time; IDLE_LIMIT_S without one is stuck. */
static grpc_event cq_wait(grpc_completion_queue *cq, const char *what)
{
	for (unsigned waits = 0;; waits++) {
		gpr_timespec deadline =
			gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
				     gpr_time_from_millis(GRPC_WAIT_MS, GPR_TIMESPAN));
		grpc_event ev = grpc_completion_queue_next(cq, deadline, NULL);

		if (ev.type != GRPC_QUEUE_TIMEOUT)
			return ev;
		if (waits + 1 >= IDLE_LIMIT_S)
			die(what, -ETIMEDOUT);
	}
}

/* Wait for the one batch in flight, tagged tag: it must succeed. */
static void cq_expect(grpc_completion_queue *cq, int tag, const char *what)
{
	grpc_event ev = cq_wait(cq, what);

	if (ev.type != GRPC_OP_COMPLETE || tag_to(ev.tag) != tag || !ev.success) {
		fprintf(stderr, "%s: %s: failed (completion type %d, tag %d, success %d)\n", who,
			what, (int)ev.type, tag_to(ev.tag), ev.success);
		exit(1);
	}
}

static void call_start(grpc_call *call, const grpc_op *ops, size_t n, int tag, const char *what)
{
	grpc_call_error e = grpc_call_start_batch(call, ops, n, tag_of(tag), NULL);

	if (e != GRPC_CALL_OK) {
		fprintf(stderr, "%s: %s: grpc_call_start_batch: %s\n", who, what,
			grpc_call_error_to_string(e));
		exit(1);
	}
}

/* Shut the queue down and take what is left in it, then free it. */
static void cq_end(grpc_completion_queue *cq)
{
	grpc_completion_queue_shutdown(cq);
	while (cq_wait(cq, "drain the completion queue").type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
}

/* A protobuf message of one field 1 of type bytes: tag 0x0a, varint length. @return its size. */
static size_t pb_header(unsigned char h[6], uint32_t len)
{
	size_t n = 0;

	h[n++] = 0x0a;
	do {
		unsigned char b = len & 0x7f;

		len >>= 7;
		h[n++] = (unsigned char)(b | (len ? 0x80 : 0));
	} while (len);
	return n;
}

/*
 * Parse a message of pb_header()'s form: its payload must be exactly the rest.
 * @return the payload's offset with *len set, or 0 if it is no such message.
 */
static size_t pb_parse(const unsigned char *p, size_t n, uint32_t *len)
{
	uint64_t v = 0;

	if (n < 2 || p[0] != 0x0a)
		return 0;
	for (size_t i = 1; i < n && i <= 5; i++) {
		v |= (uint64_t)(p[i] & 0x7f) << (7 * (i - 1));
		if (p[i] & 0x80)
			continue;
		if (v != n - i - 1 || v > UINT32_MAX)
			return 0;
		*len = (uint32_t)v;
		return i + 1;
	}
	return 0;
}

/*
 * One message per record, one send in flight. The buffer hint lets gRPC
 * gather messages until about --segment-size bytes wait; the message that
 * reaches that, the run's last and every --latency message go without it, so
 * that none is left waiting for a next one.
 */
static void grpc_produce(grpc_call *call, grpc_completion_queue *cq, const struct config *c,
			 struct report *rep)
{
	uint32_t len = c->record_size;
	unsigned char h[6];
	size_t hn = pb_header(h, len), burst = 0;
	struct source s;

	source_init(&s, c);
	source_latency_prepare(c);
	while (source_next(&s)) {
		grpc_slice slice = grpc_slice_malloc(hn + len);
		grpc_byte_buffer *bb;
		grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
		int flush;

		/* The serialisation: the record's one copy, as emit's in fdx. */
		memcpy(GRPC_SLICE_START_PTR(slice), h, hn);
		memcpy(GRPC_SLICE_START_PTR(slice) + hn, s.rec, len);
		bb = grpc_raw_byte_buffer_create(&slice, 1);
		grpc_slice_unref(slice);
		burst += hn + len;
		flush = c->latency || s.last || burst >= c->seg_size;
		op.flags = flush ? 0 : GRPC_WRITE_BUFFER_HINT;
		op.data.send_message.send_message = bb;
		call_start(call, &op, 1, TAG_SEND, "send a message");
		cq_expect(cq, TAG_SEND, "send a message");
		grpc_byte_buffer_destroy(bb);
		if (flush)
			burst = 0;
		if (c->latency)
			source_wait_seen(&s);
	}
	source_fini(&s, rep);
}

static int grpc_producer_main(const struct config *c, int addr_fd, int rep_fd)
{
	grpc_arg arg = {.type = GRPC_ARG_INTEGER,
			.key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
			.value.integer = -1};
	grpc_channel_args args = {.num_args = 1, .args = &arg};
	grpc_metadata_array initial_md, trailing_md;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	const char *error_string = NULL;
	grpc_channel_credentials *creds;
	grpc_completion_queue *cq;
	grpc_channel *channel;
	grpc_op ops[3];
	grpc_call *call;
	struct report rep;
	char target[300];

	read_addr(addr_fd, target, sizeof(target));
	grpc_init();
	cq = grpc_completion_queue_create_for_next(NULL);
	creds = grpc_insecure_credentials_create();
	channel = grpc_channel_create(target, creds, &args);
	grpc_channel_credentials_release(creds);
	call = grpc_channel_create_call(channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
					grpc_slice_from_static_string(GRPC_METHOD), NULL,
					gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (!call)
		fail("grpc_channel_create_call failed");
	grpc_metadata_array_init(&initial_md);
	grpc_metadata_array_init(&trailing_md);

	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
	call_start(call, ops, 1, TAG_START, "start the call");
	cq_expect(cq, TAG_START, "start the call");

	pin_self(c->cpus[0]);
	grpc_produce(call, cq, c, &rep);

	/* The end: half-close, and the consumer's answer. */
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[1].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
	ops[2].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[2].data.recv_status_on_client.trailing_metadata = &trailing_md;
	ops[2].data.recv_status_on_client.status = &status;
	ops[2].data.recv_status_on_client.status_details = &details;
	ops[2].data.recv_status_on_client.error_string = &error_string;
	call_start(call, ops, 3, TAG_END, "end the call");
	cq_expect(cq, TAG_END, "end the call");
	if (status != GRPC_STATUS_OK) {
		char *msg = grpc_slice_to_c_string(details);

		fprintf(stderr, "%s: the call ended with status %d: %s%s%s\n", who, (int)status,
			msg, error_string ? ": " : "", error_string ? error_string : "");
		gpr_free(msg);
		exit(1);
	}
	report_cpu_done(&rep); /* the producer's part ends with the call */
	write_full(rep_fd, &rep, sizeof(rep), "send the report");

	/* Teardown in gRPC's order: calls, channel, queue, library. */
	gpr_free((void *)error_string);
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&initial_md);
	grpc_metadata_array_destroy(&trailing_md);
	grpc_call_unref(call);
	grpc_channel_destroy(channel);
	cq_end(cq);
	grpc_shutdown_blocking();
	return 0;
}

/* The server call's batches that are still in flight. */
struct grpc_srv_call {
	grpc_call *call;
	int meta, close, status; /* in flight */
	int cancelled; /* RECV_CLOSE_ON_SERVER's answer */
};

/* A completion of a batch other than a receive. */
static void grpc_srv_note(struct grpc_srv_call *sc, const grpc_event *ev)
{
	if (ev->type != GRPC_OP_COMPLETE)
		fail("the completion queue shut down during the call");
	switch (tag_to(ev->tag)) {
	case TAG_META:
		sc->meta = 0;
		break;
	case TAG_CLOSE:
		sc->close = 0;
		break;
	case TAG_STATUS:
		sc->status = 0;
		break;
	default:
		fail("an unexpected completion");
	}
	if (!ev->success)
		fail("a batch of the call failed");
}

/* Read the messages until the producer's half-close, one receive in flight. */
static void grpc_consume(struct grpc_srv_call *sc, grpc_completion_queue *cq,
			 const struct config *c, struct consumed *cs)
{
	grpc_byte_buffer *bb = NULL;
	grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};

	consumed_init(cs, c);
	op.data.recv_message.recv_message = &bb;
	call_start(sc->call, &op, 1, TAG_RECV, "receive a message");
	for (;;) {
		grpc_event ev = cq_wait(cq, "wait for a message: nothing came for 30 s");
		grpc_byte_buffer_reader reader;
		grpc_slice slice;
		size_t off;
		uint32_t len;

		if (ev.type != GRPC_OP_COMPLETE || tag_to(ev.tag) != TAG_RECV) {
			grpc_srv_note(sc, &ev);
			continue;
		}
		if (!ev.success)
			fail("receiving a message failed: the producer's call broke");
		if (!bb) {
			consumed_end(cs); /* the half-close */
			break;
		}
		if (!cs->t_first)
			consumed_start(cs);
		/* Out of gRPC's slices into one piece, as a parser takes a bytes field. */
		if (!grpc_byte_buffer_reader_init(&reader, bb))
			fail("grpc_byte_buffer_reader_init failed");
		slice = grpc_byte_buffer_reader_readall(&reader);
		grpc_byte_buffer_reader_destroy(&reader);
		grpc_byte_buffer_destroy(bb);
		bb = NULL;
		off = pb_parse(GRPC_SLICE_START_PTR(slice), GRPC_SLICE_LENGTH(slice), &len);
		if (!off)
			die("a message that is not one bytes field", FDX_EPROTO);
		consumed_record(cs, GRPC_SLICE_START_PTR(slice) + off, len);
		grpc_slice_unref(slice);
		consumed_tick(cs);
		call_start(sc->call, &op, 1, TAG_RECV, "receive a message");
	}
}

static int grpc_consumer_main(const struct config *c, int addr_fd, int rep_fd, int res_fd)
{
	grpc_arg arg = {.type = GRPC_ARG_INTEGER,
			.key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
			.value.integer = -1};
	grpc_channel_args args = {.num_args = 1, .args = &arg};
	struct grpc_srv_call sc = {0};
	grpc_server_credentials *creds;
	grpc_metadata_array request_md;
	grpc_completion_queue *cq;
	grpc_call_details details;
	grpc_server *server;
	struct consumed cs;
	grpc_call_error e;
	grpc_op ops[1];
	char addr[256];

	snprintf(addr, sizeof(addr), "unix:%s/grpc.sock", c->dir);
	grpc_init();
	cq = grpc_completion_queue_create_for_next(NULL);
	server = grpc_server_create(&args, NULL);
	grpc_server_register_completion_queue(server, cq, NULL);
	creds = grpc_insecure_server_credentials_create();
	if (grpc_server_add_http2_port(server, addr, creds) == 0)
		fail("grpc_server_add_http2_port failed");
	grpc_server_credentials_release(creds);
	grpc_server_start(server);
	grpc_call_details_init(&details);
	grpc_metadata_array_init(&request_md);
	e = grpc_server_request_call(server, &sc.call, &details, &request_md, cq, cq,
				     tag_of(TAG_NEW));
	if (e != GRPC_CALL_OK)
		fail("grpc_server_request_call failed");
	send_addr(addr_fd, addr);

	cq_expect(cq, TAG_NEW, "wait for the producer's call");
	if (grpc_slice_str_cmp(details.method, GRPC_METHOD) != 0)
		fail("the producer called an unknown method");
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	call_start(sc.call, ops, 1, TAG_META, "send the initial metadata");
	sc.meta = 1;
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[0].data.recv_close_on_server.cancelled = &sc.cancelled;
	call_start(sc.call, ops, 1, TAG_CLOSE, "wait for the close");
	sc.close = 1;

	pin_self(c->cpus[1]);
	grpc_consume(&sc, cq, c, &cs);

	/* The answer to the half-close; then the call is over. */
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[0].data.send_status_from_server.status = GRPC_STATUS_OK;
	call_start(sc.call, ops, 1, TAG_STATUS, "send the status");
	sc.status = 1;
	while (sc.meta || sc.close || sc.status) {
		grpc_event ev = cq_wait(cq, "end the call");

		grpc_srv_note(&sc, &ev);
	}
	if (sc.cancelled)
		fail("the producer's call was cancelled");
	grpc_call_unref(sc.call);
	consumer_finish(NULL, &cs, 1, rep_fd, res_fd);

	/* Teardown in gRPC's order: calls, server, queue, library. */
	grpc_metadata_array_destroy(&request_md);
	grpc_call_details_destroy(&details);
	grpc_server_shutdown_and_notify(server, cq, tag_of(TAG_SHUTDOWN));
	for (;;) {
		grpc_event ev = cq_wait(cq, "shut the server down");

		if (ev.type == GRPC_OP_COMPLETE && tag_to(ev.tag) == TAG_SHUTDOWN)
			break;
	}
	grpc_server_destroy(server);
	cq_end(cq);
	grpc_shutdown_blocking();
	return 0;
}

/* ---- the main process: one run --------------------------------------------------- */

/* The ceilings run --reps repetitions after a warm-up of one repetition's length. */
static int phased(const struct config *c, enum mode m)
{
	return !c->latency && (m == MODE_CEILING || m == MODE_RING);
}

/* How long mode m's producer produces (--latency: at most). */
static double run_seconds(const struct config *c, enum mode m)
{
	return phased(c, m) ? c->seconds * (c->reps + 1) / c->reps : c->seconds;
}

/* What the main process shows on stderr while runs go. */
struct progress {
	int on; /* the invocation is long enough to want it */
	int tty; /* stderr is a terminal: one line, rewritten */
	int shown; /* a line is on the terminal now */
	int i, n; /* this run, of n */
	enum mode m;
	const struct config *c;
	uint64_t t_start;
};

static struct progress progress;

static void progress_clear(void)
{
	if (progress.tty && progress.shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	progress.shown = 0;
}

static void progress_line(void)
{
	const struct config *c = progress.c;
	uint64_t t_first = atomic_load_explicit(&shared->t_first, memory_order_relaxed);
	uint64_t records = atomic_load_explicit(&shared->records, memory_order_relaxed);
	uint64_t bytes = atomic_load_explicit(&shared->bytes, memory_order_relaxed);
	uint64_t t = now_ns();

	fprintf(stderr, "\r[%d/%d] %s%s, %u B records: ", progress.i, progress.n,
		mode_names[progress.m], c->latency ? " latency" : "", c->record_size);
	if (!t_first)
		fprintf(stderr, "setting up (%.1f s)", (double)(t - progress.t_start) / 1e9);
	else if (c->latency)
		fprintf(stderr, "%llu of %llu records", (unsigned long long)records,
			(unsigned long long)LAT_WARMUP + c->lat_count);
	else if ((double)(t - t_first) / 1e9 <= run_seconds(c, progress.m))
		fprintf(stderr, "%.1f of %.1f s, %.3f GB/s", (double)(t - t_first) / 1e9,
			run_seconds(c, progress.m),
			t > t_first ? (double)bytes / (double)(t - t_first) : 0.0);
	else
		fprintf(stderr, "%.1f s, finishing", (double)(t - t_first) / 1e9);
	fputs("\033[K", stderr);
	fflush(stderr);
	progress.shown = 1;
}

/* Before a run: no child of it exists yet, so relaxed is enough (fork() orders the rest). */
static void shared_reset(void)
{
	atomic_store_explicit(&shared->seen, 0, memory_order_relaxed);
	atomic_store_explicit(&shared->records, 0, memory_order_relaxed);
	atomic_store_explicit(&shared->bytes, 0, memory_order_relaxed);
	atomic_store_explicit(&shared->t_first, 0, memory_order_relaxed);
}

static void progress_start(int i, int n, enum mode m, const struct config *c)
{
	if (!progress.on)
		return;
	progress.i = i;
	progress.n = n;
	progress.m = m;
	progress.c = c;
	progress.t_start = now_ns();
	if (progress.tty)
		progress_line();
	else if (c->latency)
		fprintf(stderr, "[%d/%d] %s latency, %u B records, up to %u samples or %g s\n", i,
			n, mode_names[m], c->record_size, c->lat_count, c->seconds);
	else
		fprintf(stderr, "[%d/%d] %s, %u B records, %g s\n", i, n, mode_names[m],
			c->record_size, run_seconds(c, m));
}

/* Called first in every child. */
static void child_setup(const struct config *c, pid_t parent, const char *role, enum mode m)
{
	/* On a terminal, a child's message first clears the progress line it would follow. */
	snprintf(who, sizeof(who), "%sfdx-bench: %s %s",
		 progress.on && progress.tty ? "\r\033[K" : "", mode_names[m], role);
	signal(SIGPIPE, SIG_IGN); /* a dead peer shows as EPIPE on the write */
	/* Die with the main process; and never outlive a stuck run by much. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	alarm((unsigned)run_seconds(c, m) + WATCHDOG_S);
	progress.on = 0; /* the main process's */
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

/* The run's own directory: whatever sockets are left in it (a child that died leaves some). */
static void dir_cleanup(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512];

	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
	if (d)
		closedir(d);
	if (rmdir(dir) != 0)
		fprintf(stderr, "fdx-bench: cannot remove %s: %s\n", dir, strerror(errno));
}

/*
 * Wait for the children; if one fails, kill the others (by pid) and fail.
 * With a progress line on a terminal, refresh it while waiting.
 */
static int reap(enum mode m, const pid_t *pids, const char *const *roles, int n)
{
	int alive = n, failed = 0, status, tick = progress.on && progress.tty;
	pid_t done[2] = {0, 0};

	while (alive > 0) {
		pid_t pid = waitpid(-1, &status, tick ? WNOHANG : 0);
		int k;

		if (pid == 0) {
			progress_line();
			sleep_ns(PROGRESS_TICK_NS);
			continue;
		}
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
		progress_clear();
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

/*
 * What the main process makes for a run of a mode without fdx, before
 * fork(): the ceilings' shared memory, the mechanisms' descriptors.
 */
struct lane {
	struct ring_hdr *hdr; /* shm-ring */
	unsigned char *data; /* shm-ring: the ring's bytes; shm-ceiling: the slots */
	uint64_t data_len; /* as mapped */
	struct slot_ring slots; /* shm-ceiling */
	size_t queues_len; /* shm-ceiling: the mapping of slots.h */
	int fd[2]; /* uring-unix, eventfd: the consumer's and the producer's */
};

/* The ceilings' data: hugetlb pages if the system has some free, else small pages. */
static void *ring_map(uint64_t size, int *huge)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB,
		       -1, 0);

	*huge = p != MAP_FAILED;
	if (p == MAP_FAILED)
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap the ceiling's memory", -errno);
	/* Fault every page in now, once for both processes, as the fdx region is. */
	memset(p, 0, size);
	return p;
}

static void *shared_map(size_t len, const char *what)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die(what, -errno);
	return p;
}

static void lane_open(const struct config *c, enum mode m, struct lane *l)
{
	unsigned char *q;

	*l = (struct lane){.fd = {-1, -1}};
	switch (m) {
	case MODE_RING:
		l->hdr = shared_map(sizeof(*l->hdr), "mmap the ring header");
		atomic_init(&l->hdr->head, 0);
		atomic_init(&l->hdr->tail, 0);
		l->data_len = c->ring_size;
		l->data = ring_map(l->data_len, &huge_pages[m]);
		break;
	case MODE_CEILING:
		l->queues_len = slot_queues_size(c->slots);
		q = shared_map(l->queues_len, "mmap the slot queues");
		l->slots = (struct slot_ring){
			.h = (struct slot_hdr *)(void *)q,
			.sent = (uint64_t *)(void *)(q + sizeof(struct slot_hdr)),
			.back = (uint32_t *)(void *)(q + slot_back_offset(c->slots)),
			.n = c->slots,
			.seg = c->seg_size};
		atomic_init(&l->slots.h->sent_head, 0);
		atomic_init(&l->slots.h->back_head, 0);
		l->data_len = ((uint64_t)c->slots * c->seg_size + CEILING_MAP_ALIGN - 1) /
			      CEILING_MAP_ALIGN * CEILING_MAP_ALIGN;
		l->data = ring_map(l->data_len, &huge_pages[m]);
		l->slots.data = l->data;
		break;
	case MODE_URING:
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, l->fd) < 0)
			die("socketpair", -errno);
		break;
	case MODE_EVENTFD:
		/* One eventfd; each side closes the other's descriptor, as with the socket pair. */
		if ((l->fd[0] = eventfd(0, EFD_CLOEXEC)) < 0)
			die("eventfd", -errno);
		if ((l->fd[1] = fcntl(l->fd[0], F_DUPFD_CLOEXEC, 0)) < 0)
			die("dup the eventfd", -errno);
		break;
	default:
		break;
	}
}

/* The main process's part: the descriptors once both children have them, the rest after. */
static void lane_close_fds(struct lane *l)
{
	close_all(l->fd, 2);
	l->fd[0] = l->fd[1] = -1;
}

static void lane_close(struct lane *l)
{
	lane_close_fds(l);
	if (l->data)
		munmap(l->data, l->data_len);
	if (l->hdr)
		munmap(l->hdr, sizeof(*l->hdr));
	if (l->slots.h)
		munmap(l->slots.h, l->queues_len);
}

/* The consumer's process: every mode but local. */
_Noreturn static void consumer_child(const struct config *c, enum mode m, int addr_fd, int rep_fd,
				     int res_fd, const struct lane *l)
{
	struct consumed cs;

	switch (m) {
	case MODE_CEILING:
	case MODE_RING:
	case MODE_URING:
	case MODE_EVENTFD:
		if (l->fd[1] >= 0)
			close(l->fd[1]);
		pin_self(c->cpus[1]);
		if (m == MODE_CEILING)
			slot_consume(&l->slots, c, &cs);
		else if (m == MODE_RING)
			ring_consume(l->hdr, l->data, c, &cs);
		else if (m == MODE_URING)
			uring_consume(l->fd[0], c, &cs);
		else
			eventfd_consume(l->fd[0], c, &cs);
		consumer_finish(NULL, &cs, 1, rep_fd, res_fd);
		exit(0);
	case MODE_TCP_COPY:
		exit(copy_consumer_main(c, addr_fd, rep_fd, res_fd));
	case MODE_GRPC:
		exit(grpc_consumer_main(c, addr_fd, rep_fd, res_fd));
	default:
		exit(consumer_main(c, m, addr_fd, rep_fd, res_fd));
	}
}

/* The producer's process: every mode but local. */
_Noreturn static void producer_child(const struct config *c, enum mode m, int addr_fd, int rep_fd,
				     const struct lane *l)
{
	struct report r;

	switch (m) {
	case MODE_CEILING:
	case MODE_RING:
	case MODE_URING:
	case MODE_EVENTFD:
		if (l->fd[0] >= 0)
			close(l->fd[0]);
		pin_self(c->cpus[0]);
		if (m == MODE_CEILING)
			slot_produce(&l->slots, c, &r);
		else if (m == MODE_RING)
			ring_produce(l->hdr, l->data, c, &r);
		else if (m == MODE_URING)
			uring_produce(l->fd[1], c, &r);
		else
			eventfd_produce(l->fd[1], c, &r);
		write_full(rep_fd, &r, sizeof(r), "send the report");
		exit(0);
	case MODE_TCP_COPY:
		exit(copy_producer_main(c, addr_fd, rep_fd));
	case MODE_GRPC:
		exit(grpc_producer_main(c, addr_fd, rep_fd));
	default:
		exit(producer_main(c, m, addr_fd, rep_fd));
	}
}

/* Run mode m once; fill res. @return 0, or -1 if the run failed (said on stderr). */
static int run(struct config *c, enum mode m, struct result *res)
{
	static const char *const roles[] = {"consumer", "producer"};
	int addr[2] = {-1, -1}, rep[2] = {-1, -1}, out[2] = {-1, -1};
	pid_t pids[2], parent = getpid();
	const char *tmp = getenv("TMPDIR");
	int n = 0, failed;
	struct lane l;

	if (!tmp || !*tmp || strlen(tmp) > 64)
		tmp = "/tmp";
	snprintf(c->dir, sizeof(c->dir), "%s/fdx-bench-XXXXXX", tmp);
	if (!mkdtemp(c->dir))
		die("mkdtemp", -errno);
	make_pipe(out);
	lane_open(c, m, &l);
	memset(rtts, 0, (size_t)c->channels * sizeof(*rtts));
	if (m != MODE_LOCAL)
		make_pipe(rep);
	if (m == MODE_SHM || m == MODE_TCP || m == MODE_TCP_COPY || m == MODE_GRPC)
		make_pipe(addr);

	/* The consumer (or the one local process). */
	if ((pids[n++] = spawn()) == 0) {
		child_setup(c, parent, m == MODE_LOCAL ? "process" : "consumer", m);
		close(out[0]);
		if (m == MODE_LOCAL)
			exit(local_main(c, out[1]));
		close(rep[1]);
		if (addr[0] >= 0)
			close(addr[0]);
		consumer_child(c, m, addr[1], rep[0], out[1], &l);
	}
	/* The producer. */
	if (m != MODE_LOCAL && (pids[n++] = spawn()) == 0) {
		child_setup(c, parent, "producer", m);
		close(out[0]);
		close(out[1]);
		close(rep[0]);
		if (addr[1] >= 0)
			close(addr[1]);
		producer_child(c, m, addr[0], rep[1], &l);
	}
	/* Only the children may hold the write ends: end of file must mean they are gone. */
	close(out[1]);
	out[1] = -1;
	close_all(rep, 2);
	close_all(addr, 2);
	lane_close_fds(&l);

	failed = reap(m, pids, m == MODE_LOCAL ? (const char *const[]){"process"} : roles, n);
	if (!failed && read_full(out[0], res, sizeof(*res), "read the result") != sizeof(*res)) {
		progress_clear();
		fprintf(stderr, "fdx-bench: %s: the consumer sent no result\n", mode_names[m]);
		failed = -1;
	}
	close(out[0]);
	lane_close(&l);
	dir_cleanup(c->dir);
	return failed;
}

/* ---- options and output ---------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fdx-bench [--mode M[,M...] | --compare] [--latency [--count N] [--gap US]]\n"
		"                 [--seconds S] [--reps N] [--record-size N | --sizes LIST]\n"
		"                 [--channels N] [--segment-size N] [--defaults | [--exclusive N]\n"
		"                 [--floating N] [--inplace N] [--pool N]] [--json | --csv]\n"
		"                 [--verbose] [--plot FILE.png] [--help]\n"
		"  --mode M[,M...]   what carries the data (default shm), one or more of:\n"
		"                      shm, tcp, local: fdx's links\n"
		"                      shm-ceiling: the machine's limit with fdx's memory: as many\n"
		"                        slots of --segment-size as fdx has segments in flight,\n"
		"                        their numbers handed back through shared memory\n"
		"                      shm-ring: a raw shared-memory byte ring of the pool's size,\n"
		"                        no budget, no slots\n"
		"                      tcp-copy: blocking TCP loopback read/write of the same\n"
		"                        buffers, as a Netty-style stack does\n"
		"                      grpc-data: the records as gRPC messages on one\n"
		"                        bidirectional stream, as the original FlinkDotNet does\n"
		"                      uring-unix (--latency only): io_uring send -> io_uring recv\n"
		"                        on a Unix stream socket, the mechanism under fdx's data\n"
		"                      eventfd (--latency only): an eventfd write -> the other\n"
		"                        process's blocking read returns: a wake\n"
		"                    the ceilings, tcp-copy, grpc-data and the mechanisms have one\n"
		"                    lane: --channels does not apply (they report 1 channel)\n"
		"  --compare         run every mode on the same workload, print each one's ratio\n"
		"                    to shm and the targets (MET / NOT MET); with --latency the\n"
		"                    mechanisms (grpc-data, uring-unix, eventfd) come last\n"
		"  --latency         one-way latency instead of throughput: one record at a time,\n"
		"                    sent at once (flushed), the next once the consumer read it;\n"
		"                    prints p50, p99, p99.9 and max in microseconds\n"
		"  --count N         --latency: samples per mode, 1..%u (default %u; after %u\n"
		"                    warm-up records), or --seconds, whichever comes first\n"
		"  --gap US          --latency: pause this long after a record was read before\n"
		"                    sending the next, 0..%u (default 0: at once)\n"
		"  --seconds S       how long the producer emits, per run (default 3)\n"
		"  --reps N          shm-ceiling and shm-ring: after a warm-up of S/N seconds, N\n"
		"                    repetitions of S/N seconds, 1..%u (default %u); the median\n"
		"                    is reported (--verbose: min..max too)\n"
		"  --record-size N   bytes per record, %u..%u, K/M suffix ok (default %u;\n"
		"                    %u with --latency, which needs at least %u)\n"
		"  --sizes LIST      run at each of these record sizes, e.g. 64,256,1024,4096\n"
		"  --channels N      subpartitions = input channels, 1..65536 (default 1)\n"
		"  --segment-size N  buffer size, a power of two in [4K, 1M] (default 32K); also\n"
		"                    shm-ceiling's slot, tcp-copy's write size and grpc-data's\n"
		"                    flush step\n"
		"  --exclusive N     exclusive credits per channel (default max(%u, %u / channels); 0 = none)\n"
		"  --floating N      floating credits per gate (default %u; 0 = none)\n"
		"  --inplace N       credits per channel on shm and local links, which read the\n"
		"                    producer's segments in place (default the library's, %u,\n"
		"                    when above --exclusive; 0 = none: as tcp)\n"
		"  --pool N          producer pool, segments (default max(%u, credits + %u))\n"
		"  --defaults        the library's credit defaults and Flink's budget: exclusive\n"
		"                    %u, floating %u, inplace %u, a producer pool of %u segments\n"
		"                    per channel\n"
		"  --json            print {\"results\": [...]} instead of a table\n"
		"  --csv             print CSV (a header, then one row per run) instead of a table\n"
		"  --verbose         under each run in the table: each process's CPU time, a\n"
		"                    ceiling's repetitions, each fdx channel's credit round trip\n"
		"  --plot FILE.png   print the CSV and draw GB/s against record size with gnuplot\n"
		"                    (Debian package gnuplot-nox), one line per mode; without\n"
		"                    --mode it runs every throughput mode\n"
		"Every run also reports the CPU time of both processes (getrusage: user + system,\n"
		"every thread) per GB of record payload: cpu_s_per_GB.\n"
		"The producer runs on the first allowed CPU, the consumer on the second.\n"
		"Invocations planned longer than %g s show progress on stderr.\n",
		LAT_COUNT_MAX, LAT_COUNT_DEFAULT, LAT_WARMUP, LAT_GAP_MAX_US, REPS_MAX,
		REPS_DEFAULT, RECORD_MIN, RECORD_MAX, RECORD_DEFAULT, LAT_RECORD_DEFAULT,
		LAT_RECORD_MIN, EXCLUSIVE_MIN, EXCLUSIVE_TOTAL, FLOATING_DEFAULT,
		FDX_INPLACE_CREDITS_DEFAULT, POOL_DEFAULT, POOL_SLACK,
		FDX_EXCLUSIVE_CREDITS_DEFAULT, FDX_FLOATING_CREDITS_DEFAULT,
		FDX_INPLACE_CREDITS_DEFAULT, FDX_INPLACE_CREDITS_DEFAULT, PROGRESS_PLAN_S);
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

/* A comma-separated list of mode names; sets mask bits. */
static void parse_modes(const char *arg, unsigned *mask)
{
	char buf[256], *save = NULL, *tok;

	if (strlen(arg) >= sizeof(buf) || !*arg)
		bad_option("--mode wants a comma-separated list of modes, not", arg);
	strcpy(buf, arg);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int m;

		for (m = 0; m < MODE_COUNT && strcmp(tok, mode_names[m]); m++)
			;
		if (m == MODE_COUNT)
			bad_option("--mode: each mode must be shm, tcp, local, shm-ceiling, "
				   "shm-ring, tcp-copy, grpc-data, uring-unix or eventfd, not",
				   tok);
		*mask |= 1u << m;
	}
	if (!*mask)
		bad_option("--mode wants a comma-separated list of modes, not", arg);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* --sizes: record sizes, sorted, without repeats. @return how many. */
static uint32_t parse_sizes(const char *arg, uint32_t *sizes)
{
	char buf[512], *save = NULL, *tok;
	uint32_t n = 0, k = 0;

	if (strlen(arg) >= sizeof(buf) || !*arg || arg[0] == ',' || arg[strlen(arg) - 1] == ',' ||
	    strstr(arg, ",,"))
		bad_option("--sizes wants record sizes separated by commas, such as 64,1024,16K, "
			   "not",
			   arg);
	strcpy(buf, arg);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (n == SIZES_MAX)
			bad_option("--sizes: too many sizes (at most 32):", arg);
		sizes[n++] = (uint32_t)parse_num("--sizes", tok, RECORD_MIN, RECORD_MAX, 1);
	}
	qsort(sizes, n, sizeof(*sizes), cmp_u32);
	for (uint32_t i = 0; i < n; i++)
		if (k == 0 || sizes[k - 1] != sizes[i])
			sizes[k++] = sizes[i];
	return k;
}

static uint64_t pow2_at_least(uint64_t v)
{
	uint64_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

/* shm-ring's ring for c's pool and record size. */
static void config_ring(struct config *c)
{
	c->ring_size = pow2_at_least((uint64_t)c->pool * c->seg_size);
	if (c->ring_size < CEILING_RING_MIN)
		c->ring_size = CEILING_RING_MIN;
	if (c->ring_size < 2 * ((uint64_t)c->record_size + 4))
		c->ring_size = pow2_at_least(2 * ((uint64_t)c->record_size + 4));
}

static double records_per_s(const struct result *r)
{
	return (double)r->records * 1e9 / (double)r->ns;
}

static double gbytes_per_s(const struct result *r)
{
	return (double)r->bytes / (double)r->ns; /* bytes per ns = GB/s */
}

static double us(uint64_t ns)
{
	return (double)ns / 1e3;
}

/* Both processes' CPU seconds. */
static double cpu_s(const struct result *r)
{
	return (double)(r->cpu_prod_ns + r->cpu_cons_ns) / 1e9;
}

/* Both processes' CPU seconds per GB of record payload moved. */
static double cpu_s_per_gb(const struct result *r)
{
	return r->cpu_bytes ? cpu_s(r) * 1e9 / (double)r->cpu_bytes : 0.0;
}

static double cpu_us_per_record(const struct result *r)
{
	return r->cpu_records ? cpu_s(r) * 1e6 / (double)r->cpu_records : 0.0;
}

/* One run's outcome, as the main process keeps it. */
struct outcome {
	enum mode m;
	uint32_t record_size;
	struct result r;
	struct rtt_entry *rtt; /* fdx's modes: one entry per channel; else NULL */
};

static void print_target(const char *what, double value, int at_most, double target, int *all)
{
	int met = at_most ? value <= target : value >= target;

	printf("  %-44s %10.2f  (%s %.2f) %s\n", what, value, at_most ? "<=" : ">=", target,
	       met ? "MET" : "NOT MET");
	*all &= met;
}

/* A comparison without a target. */
static void print_info(const char *what, double value)
{
	printf("  %-44s %10.2f  (no target)\n", what, value);
}

/* --latency: the mechanisms that ran, one line each: what fdx's parts cost at least. */
static void print_mechanisms(const struct result *res, const int *ran)
{
	static const struct {
		enum mode m;
		const char *what;
	} mech[] = {
		{MODE_GRPC, "gRPC one-way (grpc-data): credits ride on it"},
		{MODE_URING, "io_uring Unix-socket one-way (uring-unix): data"},
		{MODE_EVENTFD, "eventfd wake (eventfd): each thread hand-off"},
	};
	int header = 0;

	for (size_t i = 0; i < sizeof(mech) / sizeof(mech[0]); i++) {
		const struct result *r = &res[mech[i].m];

		if (!ran[mech[i].m])
			continue;
		if (!header)
			printf("\nmechanisms fdx's parts ride on (bare, no fdx; no target):\n");
		header = 1;
		printf("  %-48s p50 %7.1f us, p99 %7.1f us\n", mech[i].what, us(r->p50_ns),
		       us(r->p99_ns));
	}
}

/* The targets that the runs of one record size can be checked against. */
static void print_targets(const struct config *c, uint32_t size, int several,
			  const struct result *res, const int *ran)
{
	int all = 1;

	if (!ran[MODE_SHM])
		return;
	if (several)
		printf("\ntargets, %u B records:\n", size);
	else
		printf("\ntargets:\n");
	if (c->latency) {
		print_target("shm p50 (us)", us(res[MODE_SHM].p50_ns), 1, 10.0, &all);
		if (ran[MODE_TCP_COPY])
			print_target("shm p99 (us), at most tcp-copy's p99",
				     us(res[MODE_SHM].p99_ns), 1, us(res[MODE_TCP_COPY].p99_ns),
				     &all);
		print_mechanisms(res, ran);
		return;
	}
	if (ran[MODE_CEILING])
		print_target("shm / shm-ceiling (same memory)",
			     records_per_s(&res[MODE_SHM]) / records_per_s(&res[MODE_CEILING]), 0,
			     size >= 32768 ? 0.85 : 0.80, &all);
	if (ran[MODE_RING])
		print_info("shm / shm-ring (unbounded ring)",
			   records_per_s(&res[MODE_SHM]) / records_per_s(&res[MODE_RING]));
	if (ran[MODE_TCP])
		print_target("shm / tcp (records/s)",
			     records_per_s(&res[MODE_SHM]) / records_per_s(&res[MODE_TCP]), 0, 3.0,
			     &all);
	if (ran[MODE_TCP_COPY])
		print_target("shm / tcp-copy (records/s)",
			     records_per_s(&res[MODE_SHM]) / records_per_s(&res[MODE_TCP_COPY]), 0,
			     3.0, &all);
	if (ran[MODE_GRPC])
		print_target("shm / grpc-data (records/s)",
			     records_per_s(&res[MODE_SHM]) / records_per_s(&res[MODE_GRPC]), 0,
			     10.0, &all);
	if (ran[MODE_TCP_COPY])
		print_target("shm cpu s/GB, at most tcp-copy's", cpu_s_per_gb(&res[MODE_SHM]), 1,
			     cpu_s_per_gb(&res[MODE_TCP_COPY]), &all);
	if (size == 64)
		print_target("shm, 64-byte records (M records/s)",
			     records_per_s(&res[MODE_SHM]) / 1e6, 0, 25.0, &all);
	printf("  (256 channels vs 1: run --channels 1 and --channels 256; target <= 15%% "
	       "loss)\n");
}

static void csv_header(FILE *f, int latency)
{
	fprintf(f,
		"mode,record_size,channels,records_per_s,gbytes_per_s,segment_size,seconds,"
		"records%s,cpu_s_per_GB,cpu_us_per_record\n",
		latency ? ",p50_us,p99_us,p999_us,max_us,samples,gap_us" : "");
}

static void csv_row(FILE *f, const struct config *c, const struct outcome *o)
{
	fprintf(f, "%s,%u,%u,%.0f,%.4f,%u,%.6f,%llu", mode_names[o->m], o->record_size,
		o->r.channels, records_per_s(&o->r), gbytes_per_s(&o->r), c->seg_size,
		(double)o->r.ns / 1e9, (unsigned long long)o->r.records);
	if (c->latency)
		fprintf(f, ",%.3f,%.3f,%.3f,%.3f,%llu,%.0f", us(o->r.p50_ns), us(o->r.p99_ns),
			us(o->r.p999_ns), us(o->r.max_ns), (unsigned long long)o->r.samples,
			us(c->gap_ns));
	fprintf(f, ",%.4f,%.4f\n", cpu_s_per_gb(&o->r), cpu_us_per_record(&o->r));
}

/* The CPU keys of one result: both processes' seconds, and each one's when there are two. */
static void json_cpu(const struct result *r)
{
	printf(", \"cpu_s\": %.6f, \"cpu_s_per_GB\": %.4f, \"cpu_us_per_record\": %.4f", cpu_s(r),
	       cpu_s_per_gb(r), cpu_us_per_record(r));
	if (!r->one_process)
		printf(", \"cpu_producer_s\": %.6f, \"cpu_consumer_s\": %.6f",
		       (double)r->cpu_prod_ns / 1e9, (double)r->cpu_cons_ns / 1e9);
}

static void json_print(const struct config *c, const struct outcome *outs, int n)
{
	printf("{\"results\": [");
	for (int i = 0; i < n; i++) {
		const struct outcome *o = &outs[i];

		printf("%s{\"mode\": \"%s\", \"record_size\": %u, \"records_per_s\": %.0f, "
		       "\"gbytes_per_s\": %.4f, \"channels\": %u, \"segment_size\": %u, "
		       "\"exclusive_credits\": %u, \"floating_credits\": %u, "
		       "\"inplace_credits\": %u, \"pool\": %u, "
		       "\"seconds\": %.6f, \"records\": %llu",
		       i ? ", " : "", mode_names[o->m], o->record_size, records_per_s(&o->r),
		       gbytes_per_s(&o->r), o->r.channels, c->seg_size, c->exclusive, c->floating,
		       c->inplace, c->pool, (double)o->r.ns / 1e9,
		       (unsigned long long)o->r.records);
		if (c->latency)
			printf(", \"latency\": true, \"p50_us\": %.3f, \"p99_us\": %.3f, "
			       "\"p999_us\": %.3f, \"max_us\": %.3f, \"samples\": %llu, \"gap_us\": %.0f",
			       us(o->r.p50_ns), us(o->r.p99_ns), us(o->r.p999_ns), us(o->r.max_ns),
			       (unsigned long long)o->r.samples, us(c->gap_ns));
		json_cpu(&o->r);
		if (o->m == MODE_CEILING)
			printf(", \"slots\": %u, \"memory_bytes\": %llu", c->slots,
			       (unsigned long long)c->slots * c->seg_size);
		if (o->m == MODE_RING)
			printf(", \"memory_bytes\": %llu", (unsigned long long)c->ring_size);
		if (o->r.reps) {
			printf(", \"reps\": %u, \"warmup_s\": %.3f, \"rep_gbytes_per_s\": [",
			       o->r.reps, c->seconds / c->reps);
			for (uint32_t j = 0; j < o->r.reps; j++)
				printf("%s%.4f", j ? ", " : "",
				       (double)o->r.rep_bytes[j] / (double)o->r.rep_ns[j]);
			printf("]");
		}
		if (o->rtt) {
			printf(", \"credit_rtt\": [");
			for (uint32_t j = 0; j < c->channels; j++)
				printf("%s{\"channel\": %u, \"rtt_count\": %llu, \"rtt_p50_ns\": %llu, "
				       "\"rtt_p99_ns\": %llu, \"rtt_max_ns\": %llu, "
				       "\"one_way_ns\": [%llu, %llu], \"hold_ns\": [%llu, %llu], "
				       "\"credit_wait_ns\": [%llu, %llu], "
				       "\"credit_wire_ns\": [%llu, %llu], \"resume_ns\": [%llu, %llu]}",
				       j ? ", " : "", j, (unsigned long long)o->rtt[j].count,
				       (unsigned long long)o->rtt[j].p50_ns,
				       (unsigned long long)o->rtt[j].p99_ns,
				       (unsigned long long)o->rtt[j].max_ns,
				       (unsigned long long)o->rtt[j].one_way[0],
				       (unsigned long long)o->rtt[j].one_way[1],
				       (unsigned long long)o->rtt[j].hold[0],
				       (unsigned long long)o->rtt[j].hold[1],
				       (unsigned long long)o->rtt[j].wait[0],
				       (unsigned long long)o->rtt[j].wait[1],
				       (unsigned long long)o->rtt[j].wire[0],
				       (unsigned long long)o->rtt[j].wire[1],
				       (unsigned long long)o->rtt[j].resume[0],
				       (unsigned long long)o->rtt[j].resume[1]);
			printf("]");
		}
		printf("}");
	}
	printf("]}\n");
}

/* Is name an executable in $PATH? */
static int have_program(const char *name)
{
	const char *path = getenv("PATH");
	char dir[4096];

	while (path && *path) {
		size_t n = strcspn(path, ":");

		if (n > 0 && n < sizeof(dir) - strlen(name) - 2) {
			memcpy(dir, path, n);
			snprintf(dir + n, sizeof(dir) - n, "/%s", name);
			if (access(dir, X_OK) == 0)
				return 1;
		}
		path += n + (path[n] == ':');
	}
	return 0;
}

/* A gnuplot string: single quotes, a quote inside doubled. */
static void gp_string(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputc('\'', f);
		fputc(*s, f);
	}
	fputc('\'', f);
}

/*
 * Draw GB/s against record size, one line per mode that ran: the CSV (one
 * file per mode, so that each line joins only its own points) and a gnuplot
 * script in a temporary directory, then gnuplot.
 * @return 0, 1 if gnuplot failed or drew nothing, 2 if gnuplot is missing.
 */
static int plot(const char *png, const struct config *c, const struct outcome *outs, int n,
		unsigned modes)
{
	const char *tmp = getenv("TMPDIR");
	char dir[160], csv[MODE_COUNT][200], gp[200];
	double lo = outs[0].record_size, hi = lo;
	int status, rc = 1, first = 1;
	struct stat st;
	FILE *f;
	pid_t pid;

	if (!have_program("gnuplot")) {
		fprintf(stderr,
			"fdx-bench: cannot draw %s: gnuplot is not installed; install Debian's "
			"package gnuplot-nox (apt-get install gnuplot-nox). The CSV is above.\n",
			png);
		return 2;
	}
	if (!tmp || !*tmp || strlen(tmp) > 64)
		tmp = "/tmp";
	snprintf(dir, sizeof(dir), "%s/fdx-plot-XXXXXX", tmp);
	if (!mkdtemp(dir))
		die("mkdtemp", -errno);
	for (int m = 0; m < MODE_COUNT; m++) {
		snprintf(csv[m], sizeof(csv[m]), "%s/%s.csv", dir, mode_names[m]);
		if (!(modes & (1u << m)))
			continue;
		if (!(f = fopen(csv[m], "w")))
			die("write the CSV for gnuplot", -errno);
		csv_header(f, 0);
		for (int i = 0; i < n; i++) {
			if (outs[i].m != (enum mode)m)
				continue;
			csv_row(f, c, &outs[i]);
			lo = fmin(lo, outs[i].record_size);
			hi = fmax(hi, outs[i].record_size);
		}
		if (fclose(f) != 0)
			die("write the CSV for gnuplot", -errno);
	}

	snprintf(gp, sizeof(gp), "%s/plot.gp", dir);
	if (!(f = fopen(gp, "w")))
		die("write the gnuplot script", -errno);
	fprintf(f, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
		   "  set terminal pngcairo size 1024,640 noenhanced\n"
		   "} else {\n"
		   "  set terminal png size 1024,640 noenhanced\n"
		   "}\n"
		   "set output ");
	gp_string(f, png);
	fprintf(f,
		"\nset datafile separator ','\n"
		"set title 'fdx-bench: throughput by record size (%g s per run, %u B segments, "
		"%u channel%s)'\n"
		"set xlabel 'record size (bytes)'\n"
		"set ylabel 'GB/s of record payload (log scale)'\n"
		"set logscale x 2\n"
		"set logscale y 10\n"
		"set grid\n"
		"set key outside right top\n"
		"set xrange [%g:%g]\n"
		"set xtics (",
		c->seconds, c->seg_size, c->channels, c->channels == 1 ? "" : "s", lo / 1.5,
		hi * 1.5);
	/* A tic at each size measured (outs holds them in increasing order, per size). */
	for (int i = 0; i < n; i++)
		if (i == 0 || outs[i].record_size != outs[i - 1].record_size)
			fprintf(f, "%s%u", i ? ", " : "", outs[i].record_size);
	fprintf(f, ")\nplot ");
	for (int m = 0; m < MODE_COUNT; m++) {
		if (!(modes & (1u << m)))
			continue;
		fprintf(f, "%s", first ? "" : ", \\\n     ");
		gp_string(f, csv[m]);
		fprintf(f, " skip 1 using 2:5 with linespoints lw 2 title '%s'", mode_names[m]);
		first = 0;
	}
	fprintf(f, "\n");
	if (fclose(f) != 0)
		die("write the gnuplot script", -errno);

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		die("fork", -errno);
	if (pid == 0) {
		dup2(STDERR_FILENO, STDOUT_FILENO); /* stdout is the CSV's */
		execlp("gnuplot", "gnuplot", gp, (char *)NULL);
		fprintf(stderr, "fdx-bench: cannot run gnuplot: %s\n", strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid", -errno);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fprintf(stderr, "fdx-bench: gnuplot failed (status %d); its script: %s\n",
			WIFEXITED(status) ? WEXITSTATUS(status) : -1, gp);
	else if (stat(png, &st) != 0 || st.st_size == 0)
		fprintf(stderr, "fdx-bench: gnuplot wrote no image to %s; its script: %s\n", png,
			gp);
	else
		rc = 0;
	if (rc != 0)
		return rc; /* the script and data stay, to look into */
	for (int m = 0; m < MODE_COUNT; m++)
		if (modes & (1u << m))
			unlink(csv[m]);
	unlink(gp);
	rmdir(dir);
	fprintf(stderr, "fdx-bench: plot written to %s (%lld bytes)\n", png, (long long)st.st_size);
	return 0;
}

/* Early, before the runs: can the plot be written where asked? */
static void plot_check_path(const char *png)
{
	char dir[4096];
	const char *slash = strrchr(png, '/');

	if (!*png)
		bad_option("--plot wants a file name", NULL);
	if (strlen(png) >= sizeof(dir))
		bad_option("--plot: the file name is too long:", png);
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == png)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - png), png);
	if (access(dir, W_OK) != 0)
		bad_option("--plot: cannot write in the directory of", png);
	if (slash && !slash[1])
		bad_option("--plot wants a file name, not a directory:", png);
}

static void print_header(const struct config *c, const uint32_t *sizes, uint32_t n_sizes,
			 unsigned modes)
{
	char list[SIZES_MAX * 12] = "", gap[48] = "";
	size_t off = 0;

	if (c->gap_ns)
		snprintf(gap, sizeof(gap), " and %.0f us more (--gap)", us(c->gap_ns));
	for (uint32_t i = 0; i < n_sizes; i++)
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%u", i ? ", " : "",
					sizes[i]);
	if (c->latency)
		printf("fdx-bench --latency, fdx %s: per mode %u samples (after %u warm-up "
		       "records) or %g s, whichever comes first; %s B records, %u channel%s, %u B "
		       "segments\n"
		       "one record at a time: sent at once (flushed), the next one once the consumer "
		       "has read it%s; one-way, send to read, in microseconds\n",
		       fdx_version_string(), c->lat_count, LAT_WARMUP, c->seconds, list,
		       c->channels, c->channels == 1 ? "" : "s", c->seg_size, gap);
	else
		printf("fdx-bench, fdx %s: %g s per run, %s B records, %u channel%s, %u B "
		       "segments\n",
		       fdx_version_string(), c->seconds, list, c->channels,
		       c->channels == 1 ? "" : "s", c->seg_size);
	printf("credit settings: exclusive %u per channel, floating %u per gate, in place (shm, "
	       "local) %u per channel%s; producer pool %u segments (%.1f MiB)\n",
	       c->exclusive, c->floating, c->inplace,
	       c->inplace > c->exclusive ? "" : " (not above exclusive: unused)", c->pool,
	       (double)c->pool * c->seg_size / (1024.0 * 1024.0));
	if (modes & (MODE_BIT(MODE_CEILING) | MODE_BIT(MODE_RING))) {
		printf("ceilings: shm-ceiling %u slots of %u B = %.1f MiB (fdx's segments in "
		       "flight), shm-ring %.1f MiB",
		       c->slots, c->seg_size, (double)c->slots * c->seg_size / (1024.0 * 1024.0),
		       (double)c->ring_size / (1024.0 * 1024.0));
		if (!c->latency)
			printf("; a warm-up of %g s, then the median of %u repetitions of %g s",
			       c->seconds / c->reps, c->reps, c->seconds / c->reps);
		printf("\n");
	}
	if (c->cpus[0] >= 0)
		printf("producer on CPU %d, consumer on CPU %d\n\n", c->cpus[0], c->cpus[1]);
	else
		printf("fewer than 2 CPUs allowed: producer and consumer not pinned\n\n");
	if (c->latency)
		printf("%-12s %11s %8s %9s %9s %9s %9s %9s %10s\n", "mode", "record_size",
		       "samples", "p50 us", "p99 us", "p99.9 us", "max us", "cpu s/GB",
		       "cpu us/rec");
	else
		printf("%-12s %11s %8s %14s %9s %7s %9s\n", "mode", "record_size", "channels",
		       "records/s", "GB/s", "vs shm", "cpu s/GB");
}

static void print_row(const struct config *c, const struct outcome *o, const struct result *shm)
{
	if (c->latency) {
		printf("%-12s %11u %8llu %9.1f %9.1f %9.1f %9.1f %9.2f %10.2f\n", mode_names[o->m],
		       o->record_size, (unsigned long long)o->r.samples, us(o->r.p50_ns),
		       us(o->r.p99_ns), us(o->r.p999_ns), us(o->r.max_ns), cpu_s_per_gb(&o->r),
		       cpu_us_per_record(&o->r));
		return;
	}
	printf("%-12s %11u %8u %14.0f %9.3f", mode_names[o->m], o->record_size, o->r.channels,
	       records_per_s(&o->r), gbytes_per_s(&o->r));
	if (shm)
		printf(" %7.2f", records_per_s(&o->r) / records_per_s(shm));
	else
		printf(" %7s", "-");
	printf(" %9.3f\n", cpu_s_per_gb(&o->r));
}

/* --verbose: under a row, the CPU time of each process, the repetitions, the round trips. */
static void print_verbose(const struct config *c, const struct outcome *o)
{
	const struct result *r = &o->r;
	uint32_t shown = c->channels < VERBOSE_CHANNELS ? c->channels : VERBOSE_CHANNELS;

	if (r->one_process)
		printf("    cpu: the one process %.3f s", cpu_s(r));
	else
		printf("    cpu: producer %.3f s + consumer %.3f s", (double)r->cpu_prod_ns / 1e9,
		       (double)r->cpu_cons_ns / 1e9);
	if (r->cpu_bytes >= 100000000)
		printf(" for %.3f GB", (double)r->cpu_bytes / 1e9);
	else
		printf(" for %.3f MB", (double)r->cpu_bytes / 1e6);
	printf(", %llu records\n", (unsigned long long)r->cpu_records);
	if (r->reps) {
		double lo = INFINITY, hi = 0;

		for (uint32_t j = 0; j < r->reps; j++) {
			double g = (double)r->rep_bytes[j] / (double)r->rep_ns[j];

			lo = fmin(lo, g);
			hi = fmax(hi, g);
		}
		printf("    %u repetitions of %.2f s after a %.2f s warm-up: median %.3f GB/s, "
		       "min..max %.3f..%.3f GB/s\n",
		       r->reps, c->seconds / c->reps, c->seconds / c->reps, gbytes_per_s(r), lo,
		       hi);
	}
	if (!o->rtt)
		return;
	for (uint32_t j = 0; j < shown; j++) {
		const struct rtt_entry *e = &o->rtt[j];

		printf("    channel %u: credit rtt p50/p99/max %.1f/%.1f/%.1f us, %llu round trips\n",
		       j, us(e->p50_ns), us(e->p99_ns), us(e->max_ns),
		       (unsigned long long)e->count);
		printf("      parts p50/p99 us: descriptor one-way %.1f/%.1f, held by the consumer "
		       "%.1f/%.1f, credit waiting %.1f/%.1f, credit on the wire %.1f/%.1f; "
		       "sender resumes %.1f/%.1f\n",
		       us(e->one_way[0]), us(e->one_way[1]), us(e->hold[0]), us(e->hold[1]),
		       us(e->wait[0]), us(e->wait[1]), us(e->wire[0]), us(e->wire[1]),
		       us(e->resume[0]), us(e->resume[1]));
	}
	if (c->channels > shown) {
		uint64_t n = 0, p99 = 0, max = 0;

		for (uint32_t j = shown; j < c->channels; j++) {
			n += o->rtt[j].count;
			p99 = o->rtt[j].p99_ns > p99 ? o->rtt[j].p99_ns : p99;
			max = o->rtt[j].max_ns > max ? o->rtt[j].max_ns : max;
		}
		printf("    channels %u..%u: credit rtt p99 at most %.1f us, max %.1f us, %llu round "
		       "trips (--json lists each)\n",
		       shown, c->channels - 1, us(p99), us(max), (unsigned long long)n);
	}
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
						 {"inplace", required_argument, NULL, 'I'},
						 {"defaults", no_argument, NULL, 'D'},
						 {"pool", required_argument, NULL, 'p'},
						 {"compare", no_argument, NULL, 'C'},
						 {"json", no_argument, NULL, 'j'},
						 {"latency", no_argument, NULL, 'L'},
						 {"count", required_argument, NULL, 'n'},
						 {"gap", required_argument, NULL, 'g'},
						 {"sizes", required_argument, NULL, 'S'},
						 {"csv", no_argument, NULL, 'v'},
						 {"plot", required_argument, NULL, 'P'},
						 {"reps", required_argument, NULL, 'R'},
						 {"verbose", no_argument, NULL, 'V'},
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	struct config c = {.seconds = 3.0,
			   .record_size = 0, /* not given */
			   .channels = 1,
			   .seg_size = FDX_SEG_SIZE_DEFAULT,
			   .exclusive = UINT32_MAX, /* not given */
			   .floating = FLOATING_DEFAULT,
			   .inplace = FDX_INPLACE_CREDITS_DEFAULT,
			   .lat_count = 0, /* not given */
			   .reps = REPS_DEFAULT,
			   .cpus = {-1, -1}};
	uint32_t sizes[SIZES_MAX], n_sizes = 0;
	unsigned modes = 0;
	int compare = 0, json = 0, csv = 0, verbose = 0, ncpu = 0, opt, n_runs, k = 0, rc = 0;
	int defaults = 0, credit_given = 0;
	double plan = 0;
	const char *plot_file = NULL;
	int64_t gap_us = -1; /* not given */
	/* Static: forked children exit with it still allocated, and LeakSanitizer sees it held. */
	static struct outcome *outs;
	uint64_t pool = 0, tcp_need, credits;
	cpu_set_t set;
	char *end;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			parse_modes(optarg, &modes);
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
			credit_given = 1;
			c.exclusive = (uint32_t)parse_num("--exclusive", optarg, 0, 65536, 0);
			break;
		case 'f':
			credit_given = 1;
			c.floating = (uint32_t)parse_num("--floating", optarg, 0, 1u << 20, 0);
			break;
		case 'I':
			credit_given = 1;
			c.inplace = (uint32_t)parse_num("--inplace", optarg, 0,
							FDX_INPLACE_CREDITS_MAX, 0);
			break;
		case 'D':
			defaults = 1;
			break;
		case 'p':
			credit_given = 1;
			pool = parse_num("--pool", optarg, 2, FDX_SEG_COUNT_MAX, 0);
			break;
		case 'C':
			compare = 1;
			break;
		case 'j':
			json = 1;
			break;
		case 'L':
			c.latency = 1;
			break;
		case 'n':
			c.lat_count = (uint32_t)parse_num("--count", optarg, 1, LAT_COUNT_MAX, 1);
			break;
		case 'g':
			gap_us = (int64_t)parse_num("--gap", optarg, 0, LAT_GAP_MAX_US, 0);
			break;
		case 'S':
			n_sizes = parse_sizes(optarg, sizes);
			break;
		case 'v':
			csv = 1;
			break;
		case 'P':
			plot_file = optarg;
			break;
		case 'R':
			c.reps = (uint32_t)parse_num("--reps", optarg, 1, REPS_MAX, 0);
			break;
		case 'V':
			verbose = 1;
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
	if (compare && modes)
		bad_option("--mode and --compare exclude each other", NULL);
	if (json && csv)
		bad_option("--json and --csv exclude each other", NULL);
	if (plot_file && json)
		bad_option("--plot prints the CSV: it excludes --json", NULL);
	if (plot_file && c.latency)
		bad_option("--plot draws throughput: it excludes --latency", NULL);
	if (c.lat_count && !c.latency)
		bad_option("--count applies to --latency only", NULL);
	if (gap_us >= 0 && !c.latency)
		bad_option("--gap applies to --latency only", NULL);
	if ((modes & LATENCY_ONLY_MODES) && !c.latency)
		bad_option("uring-unix and eventfd measure latency only: add --latency", NULL);
	c.gap_ns = gap_us > 0 ? (uint64_t)gap_us * 1000 : 0;
	if (n_sizes && c.record_size)
		bad_option("--record-size and --sizes exclude each other", NULL);
	if (plot_file)
		plot_check_path(plot_file);
	if (!c.lat_count)
		c.lat_count = LAT_COUNT_DEFAULT;
	if (!n_sizes)
		sizes[n_sizes++] = c.record_size ? c.record_size
				   : c.latency	 ? LAT_RECORD_DEFAULT
						 : RECORD_DEFAULT;
	if (c.latency && sizes[0] < LAT_RECORD_MIN) {
		char what[96], size[16];

		snprintf(what, sizeof(what), "--latency needs records of at least %u bytes, not",
			 LAT_RECORD_MIN);
		snprintf(size, sizeof(size), "%u", sizes[0]);
		bad_option(what, size);
	}
	if (defaults && credit_given)
		bad_option("--defaults sets the credits and the pool: give none of --exclusive, "
			   "--floating, --inplace, --pool with it",
			   NULL);
	if (defaults) {
		c.exclusive = FDX_EXCLUSIVE_CREDITS_DEFAULT;
		c.floating = FDX_FLOATING_CREDITS_DEFAULT;
		c.inplace = FDX_INPLACE_CREDITS_DEFAULT;
		pool = (uint64_t)c.channels * FDX_INPLACE_CREDITS_DEFAULT;
	}
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
	/*
	 * shm-ceiling: what fdx's shm may have in flight, the credits, as far as
	 * the pool allows; a channel reading in place has its in-place credit
	 * and no floating.
	 */
	credits = c.inplace > c.exclusive ? (uint64_t)c.channels * c.inplace
					  : (uint64_t)c.channels * c.exclusive + c.floating;
	c.slots = (uint32_t)(credits < pool ? credits : pool);
	if (plot_file)
		csv = 1; /* the plot's data goes to stdout too */
	if (compare || (plot_file && !modes))
		modes = (MODE_BIT(MODE_COUNT) - 1) & ~(c.latency ? 0u : LATENCY_ONLY_MODES);
	if (!modes)
		modes = MODE_BIT(MODE_SHM);
	n_runs = (int)n_sizes * __builtin_popcount(modes);
	outs = calloc((size_t)n_runs, sizeof(*outs));
	if (!outs)
		die("calloc", -ENOMEM);
	for (int m = 0; m < MODE_COUNT; m++)
		if (modes & MODE_BIT(m))
			plan += n_sizes * run_seconds(&c, (enum mode)m);

	/* Distinct CPUs for producer and consumer when the affinity mask allows two. */
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) >= 2)
		for (int cpu = 0; cpu < CPU_SETSIZE && ncpu < 2; cpu++)
			if (CPU_ISSET(cpu, &set))
				c.cpus[ncpu++] = cpu;

	shared = shared_map(sizeof(*shared), "mmap the shared page");
	rtts = shared_map((size_t)c.channels * sizeof(*rtts), "mmap the round trips");
	progress.on = plan > PROGRESS_PLAN_S;
	progress.tty = isatty(STDERR_FILENO);
	if (plot_file && !have_program("gnuplot"))
		fprintf(stderr, "fdx-bench: gnuplot is not installed (Debian package gnuplot-nox): "
				"the runs go on and print the CSV, but no plot can be drawn\n");

	c.record_size = sizes[0];
	config_ring(&c);
	if (csv)
		csv_header(stdout, c.latency);
	else if (!json)
		print_header(&c, sizes, n_sizes, modes);
	fflush(stdout);
	for (uint32_t si = 0; si < n_sizes; si++) {
		const struct result *shm = NULL;
		int labelled = 0;

		c.record_size = sizes[si];
		config_ring(&c);
		for (int m = 0; m < MODE_COUNT; m++) {
			struct outcome *o = &outs[k];

			if (!(modes & MODE_BIT(m)))
				continue;
			shared_reset();
			progress_start(k + 1, n_runs, (enum mode)m, &c);
			if (run(&c, (enum mode)m, &o->r) < 0) {
				progress_clear();
				return 1;
			}
			o->m = (enum mode)m;
			o->record_size = c.record_size;
			if (FDX_MODES & MODE_BIT(m)) {
				o->rtt = malloc((size_t)c.channels * sizeof(*o->rtt));
				if (!o->rtt)
					die("malloc", -ENOMEM);
				memcpy(o->rtt, rtts, (size_t)c.channels * sizeof(*o->rtt));
			}
			k++;
			if (m == MODE_SHM)
				shm = &o->r;
			progress_clear();
			if (!csv && !json && c.latency && (MECH_MODES & MODE_BIT(m)) && !labelled) {
				printf("-- mechanisms fdx's parts ride on (bare, no fdx) --\n");
				labelled = 1;
			}
			if (csv)
				csv_row(stdout, &c, o);
			else if (!json)
				print_row(&c, o, shm);
			if (verbose && !csv && !json)
				print_verbose(&c, o);
			fflush(stdout);
		}
	}
	if (json)
		json_print(&c, outs, n_runs);
	if (!json && !csv) {
		for (int m = MODE_CEILING, first = 1; m <= MODE_RING; m++) {
			if (!(modes & MODE_BIT(m)))
				continue;
			printf("%s%s memory: %s pages", first ? "\n" : "; ", mode_names[m],
			       huge_pages[m] ? "hugetlb" : "small");
			first = 0;
		}
		if (modes & (MODE_BIT(MODE_CEILING) | MODE_BIT(MODE_RING)))
			printf("\n");
		for (int i = 0; i < n_runs;) {
			struct result res[MODE_COUNT];
			int ran[MODE_COUNT] = {0}, j;

			for (j = i; j < n_runs && outs[j].record_size == outs[i].record_size; j++) {
				res[outs[j].m] = outs[j].r;
				ran[outs[j].m] = 1;
			}
			c.record_size = outs[i].record_size;
			print_targets(&c, outs[i].record_size, n_sizes > 1, res, ran);
			i = j;
		}
	}
	fflush(stdout);
	if (plot_file)
		rc = plot(plot_file, &c, outs, n_runs, modes);
	for (int i = 0; i < n_runs; i++)
		free(outs[i].rtt);
	free(outs);
	munmap(rtts, (size_t)c.channels * sizeof(*rtts));
	munmap(shared, sizeof(*shared));
	return rc;
}
