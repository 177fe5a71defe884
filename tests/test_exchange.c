/* SPDX-License-Identifier: MIT */
/*
 * The exchange's control plane between processes. A peer is this same
 * program re-executed as "child": it serves an exchange, prints its address,
 * waits for "stop" on stdin (or EOF), destroys the exchange and prints what it
 * saw. Every wait is bounded.
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

/* ---- the child ------------------------------------------------------------ */

static int run_child(int argc, char **argv)
{
	struct test_log lg = {0};
	struct fdx_exchange_opts o = {.size = sizeof(o)};
	struct fdx_exchange_stats st = {.size = sizeof(st)};
	struct fdx_exchange *ex;
	uint32_t uid;
	char line[64];
	uint64_t t0;
	int err;

	if (argc < 5)
		return 2;
	o.listen = argv[2];
	o.protocol_version = (uint32_t)atoi(argv[3]);
	if (atoi(argv[4]) >= 0) {
		uid = (uint32_t)atoi(argv[4]);
		o.allow_uids = &uid;
		o.n_allow_uids = 1;
	}
	o.tm_id = "child";
	o.log_fn = test_log_fn;
	o.log_ud = &lg;
	o.log_level = FDX_LOG_INFO;
	err = fdx_exchange_create(&o, &ex);
	if (err < 0) {
		printf("error %d\n", err);
		return 1;
	}
	printf("%s\n", fdx_exchange_address(ex));
	fflush(stdout);
	/* Until the parent says stop, closes the pipe, or 20 s pass. */
	alarm(20);
	if (!fgets(line, sizeof(line), stdin))
		line[0] = '\0';
	fdx_exchange_stats(ex, &st);
	t0 = test_now_ns();
	fdx_exchange_destroy(ex);
	printf("served=%llu refused=%llu peers_refused=%llu destroy_ms=%llu log_refused=%d "
	       "log_uid=%d bad=%llu\n",
	       (unsigned long long)st.handshakes_served, (unsigned long long)st.handshakes_refused,
	       (unsigned long long)st.peers_refused,
	       (unsigned long long)((test_now_ns() - t0) / 1000000u),
	       strstr(lg.all, "refused TaskManager") != NULL,
	       strstr(lg.all, "uid not allowed") != NULL, (unsigned long long)st.bad_frames);
	fflush(stdout);
	return 0;
}

/* ---- the parent's view of a child ----------------------------------------- */

struct child {
	pid_t pid;
	int to; /* its stdin */
	FILE *from; /* its stdout */
	char addr[256];
	unsigned long long served, refused, peers_refused, destroy_ms, bad;
	int log_refused, log_uid;
};

/* Read one line within 10 s; 0 or -1. */
static int read_line(struct child *c, char *buf, size_t n)
{
	struct pollfd p = {.fd = fileno(c->from), .events = POLLIN};

	if (poll(&p, 1, 10000) != 1 || !fgets(buf, (int)n, c->from))
		return -1;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static void child_start(struct child *c, const char *listen, int version, int allow_uid)
{
	char v[16], u[16];
	int in[2], out[2];

	memset(c, 0, sizeof(*c));
	snprintf(v, sizeof(v), "%d", version);
	snprintf(u, sizeof(u), "%d", allow_uid);
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0) {
		char *argv[] = {"test_exchange", "child", (char *)listen, v, u, NULL};

		dup2(in[0], 0);
		dup2(out[1], 1);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	c->to = in[1];
	c->from = fdopen(out[0], "r");
	assert_non_null(c->from);
	assert_int_equal(read_line(c, c->addr, sizeof(c->addr)), 0);
	assert_null(strstr(c->addr, "error"));
}

/* Tell the child to stop, read its report, reap it. */
static void child_stop(struct child *c)
{
	char line[512];
	int status = 0;

	assert_int_equal(write(c->to, "stop\n", 5), 5);
	assert_int_equal(read_line(c, line, sizeof(line)), 0);
	assert_int_equal(sscanf(line,
				"served=%llu refused=%llu peers_refused=%llu destroy_ms=%llu "
				"log_refused=%d log_uid=%d bad=%llu",
				&c->served, &c->refused, &c->peers_refused, &c->destroy_ms,
				&c->log_refused, &c->log_uid, &c->bad),
			 7);
	close(c->to);
	fclose(c->from);
	for (int i = 0; i < 1000 && waitpid(c->pid, &status, WNOHANG) == 0; i++)
		test_sleep_us(10000);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static struct fdx_exchange *parent_exchange(struct test_log *lg)
{
	struct fdx_exchange_opts o = {.size = sizeof(o), .tm_id = "parent"};
	struct fdx_exchange *ex;

	o.log_fn = test_log_fn;
	o.log_ud = lg;
	o.log_level = FDX_LOG_INFO;
	assert_int_equal(fdx_exchange_create(&o, &ex), 0);
	return ex;
}

/* ---- tests ---------------------------------------------------------------- */

static void handshake_with(const char *listen)
{
	struct test_log lg = {0};
	struct fdx_exchange_stats st = {.size = sizeof(st)};
	struct fdx_exchange *ex;
	struct child c;

	child_start(&c, listen, 0, -1);
	ex = parent_exchange(&lg);
	assert_int_equal(fdx_exchange_connect(ex, c.addr, 5000), 0);
	/* Connecting again reuses the stream. */
	assert_int_equal(fdx_exchange_connect(ex, c.addr, 5000), 0);
	assert_int_equal(fdx_exchange_stats(ex, &st), 0);
	assert_int_equal(st.peers_up, 1);
	assert_non_null(strstr(lg.all, "connected to TaskManager child"));
	child_stop(&c);
	assert_int_equal(c.served, 1);
	assert_int_equal(c.refused, 0);
	fdx_exchange_destroy(ex);
}

static void test_exchange_handshake_over_unix_socket(void **state)
{
	(void)state;
	handshake_with("default");
}

static void test_exchange_handshake_over_tcp_loopback(void **state)
{
	(void)state;
	handshake_with("127.0.0.1:0");
}

static void test_exchange_version_mismatch_refused_on_both_sides(void **state)
{
	struct test_log lg = {0};
	struct fdx_exchange *ex;
	struct child c;

	(void)state;
	child_start(&c, "default", 2, -1);
	ex = parent_exchange(&lg);
	assert_int_equal(fdx_exchange_connect(ex, c.addr, 5000), FDX_EVERSION);
	assert_non_null(strstr(
		lg.all, "protocol version 1 not supported: TaskManager child speaks version 2"));
	child_stop(&c);
	assert_int_equal(c.refused, 1);
	assert_int_equal(c.served, 0);
	assert_int_equal(c.log_refused, 1);
	fdx_exchange_destroy(ex);
}

static void test_exchange_refuses_unix_peer_of_another_uid(void **state)
{
	struct test_log lg = {0};
	struct fdx_exchange *ex;
	struct child c;
	int err;

	(void)state;
	/* The child accepts only a uid that is not ours. */
	child_start(&c, "default", 0, (int)geteuid() + 4242);
	ex = parent_exchange(&lg);
	err = fdx_exchange_connect(ex, c.addr, 5000);
	assert_true(err == -ECONNREFUSED || err == FDX_EPEERGONE);
	child_stop(&c);
	assert_true(c.peers_refused >= 1);
	assert_int_equal(c.log_uid, 1);
	assert_int_equal(c.served, 0);
	fdx_exchange_destroy(ex);
}

static void test_exchange_connect_to_nobody_is_refused(void **state)
{
	struct test_log lg = {0};
	struct fdx_exchange *ex = parent_exchange(&lg);
	uint64_t t0 = test_now_ns();

	(void)state;
	assert_int_equal(fdx_exchange_connect(ex, "unix:/tmp/fdx-test-nobody.sock", 5000),
			 -ECONNREFUSED);
	assert_true(test_now_ns() - t0 < 5000000000ull); /* not by the timeout */
	assert_int_equal(fdx_exchange_connect(NULL, "x", 0), -EINVAL);
	assert_int_equal(fdx_exchange_connect(ex, NULL, 0), -EINVAL);
	fdx_exchange_destroy(ex);
}

static void test_exchange_destroy_within_a_second_with_streams_open(void **state)
{
	struct test_log lg = {0};
	struct fdx_exchange *ex;
	struct child c;
	uint64_t t0;

	(void)state;
	child_start(&c, "default", 0, -1);
	ex = parent_exchange(&lg);
	assert_int_equal(fdx_exchange_connect(ex, c.addr, 5000), 0);
	/* Our side goes first, its stream to the child open... */
	t0 = test_now_ns();
	fdx_exchange_destroy(ex);
	assert_true(test_now_ns() - t0 < 1000000000ull);
	/* ...and the child's, with whatever its session still holds. */
	child_stop(&c);
	assert_true(c.destroy_ms < 1000);

	child_start(&c, "127.0.0.1:0", 0, -1);
	ex = parent_exchange(&lg);
	assert_int_equal(fdx_exchange_connect(ex, c.addr, 5000), 0);
	child_stop(&c); /* the server goes first this time */
	assert_true(c.destroy_ms < 1000);
	t0 = test_now_ns();
	fdx_exchange_destroy(ex);
	assert_true(test_now_ns() - t0 < 1000000000ull);
}

static void test_exchange_create_checks_its_options(void **state)
{
	struct fdx_exchange_opts o = {.size = sizeof(o)};
	struct fdx_exchange *ex = (void *)1, *ex2;
	uint32_t uids[FDX_EXCHANGE_MAX_UIDS + 1] = {0};
	struct stat st;
	const char *addr;

	(void)state;
	assert_int_equal(fdx_exchange_create(NULL, &ex), -EINVAL);
	assert_int_equal(fdx_exchange_create(&o, NULL), -EINVAL);
	o.listen = "unix:";
	assert_int_equal(fdx_exchange_create(&o, &ex), -EINVAL);
	o.listen = "no-port-here";
	assert_int_equal(fdx_exchange_create(&o, &ex), -EINVAL);
	o.listen = NULL;
	o.allow_uids = uids;
	o.n_allow_uids = FDX_EXCHANGE_MAX_UIDS + 1;
	assert_int_equal(fdx_exchange_create(&o, &ex), -EINVAL);
	assert_null(ex);

	/* The default: a socket in a directory only we can enter, gone after destroy. */
	o.n_allow_uids = 0;
	o.allow_uids = NULL;
	assert_int_equal(fdx_exchange_create(&o, &ex), 0);
	addr = fdx_exchange_address(ex);
	assert_int_equal(strncmp(addr, "unix:", 5), 0);
	char path[256], dir[256];
	snprintf(path, sizeof(path), "%s", addr + 5);
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	/* A second exchange on the same live socket is refused. */
	char listen[300];
	snprintf(listen, sizeof(listen), "unix:%s", path);
	o.listen = listen;
	assert_int_equal(fdx_exchange_create(&o, &ex2), -EADDRINUSE);
	fdx_exchange_destroy(ex);
	assert_int_equal(stat(path, &st), -1);
	assert_null(fdx_exchange_address(NULL));
	fdx_exchange_destroy(NULL);
}

static void test_exchange_refuses_a_socket_directory_others_can_enter(void **state)
{
	struct test_log lg = {0};
	struct fdx_exchange_opts o = {.size = sizeof(o), .log_fn = test_log_fn, .log_ud = &lg};
	char base[] = "/tmp/fdx-test-xdg-XXXXXX", sub[300];
	const char *old = getenv("XDG_RUNTIME_DIR");
	char *saved = old ? strdup(old) : NULL;
	struct fdx_exchange *ex;

	(void)state;
	assert_non_null(mkdtemp(base));
	snprintf(sub, sizeof(sub), "%s/fdx", base);
	assert_int_equal(mkdir(sub, 0755), 0);
	setenv("XDG_RUNTIME_DIR", base, 1);
	assert_int_equal(fdx_exchange_create(&o, &ex), -EPERM);
	assert_non_null(strstr(lg.last, "only we can enter"));
	if (saved)
		setenv("XDG_RUNTIME_DIR", saved, 1);
	else
		unsetenv("XDG_RUNTIME_DIR");
	free(saved);
	rmdir(sub);
	rmdir(base);
}

/*
 * A raw gRPC client on the ExchangeData method: sends one message of the
 * given bytes, half-closes, and returns the final status (details copied).
 */
static grpc_status_code raw_call(const char *addr, const void *bytes, size_t n, char *details,
				 size_t dn)
{
	grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	grpc_channel *ch = grpc_channel_create(addr, creds, NULL);
	grpc_slice method = grpc_slice_from_static_string("/fdx.DataExchange/ExchangeData");
	grpc_slice msg = grpc_slice_from_copied_buffer(bytes, n), sd;
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&msg, 1);
	grpc_metadata_array init_md, trail_md;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	gpr_timespec deadline =
		gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(10, GPR_TIMESPAN));
	grpc_call *call;
	grpc_op ops[5];
	char *d;

	grpc_channel_credentials_release(creds);
	grpc_metadata_array_init(&init_md);
	grpc_metadata_array_init(&trail_md);
	call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL,
					deadline, NULL);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = bb;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
	ops[4].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[4].data.recv_status_on_client.trailing_metadata = &trail_md;
	ops[4].data.recv_status_on_client.status = &status;
	ops[4].data.recv_status_on_client.status_details = &sd;
	assert_int_equal(grpc_call_start_batch(call, ops, 5, (void *)1, NULL), GRPC_CALL_OK);
	assert_int_equal(grpc_completion_queue_pluck(cq, (void *)1, deadline, NULL).type,
			 GRPC_OP_COMPLETE);
	d = grpc_slice_to_c_string(sd);
	snprintf(details, dn, "%s", d);
	gpr_free(d);
	grpc_slice_unref(sd);
	grpc_byte_buffer_destroy(bb);
	grpc_slice_unref(msg);
	grpc_metadata_array_destroy(&init_md);
	grpc_metadata_array_destroy(&trail_md);
	grpc_call_unref(call);
	grpc_channel_destroy(ch);
	grpc_completion_queue_shutdown(cq);
	while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
		       .type != GRPC_QUEUE_SHUTDOWN)
		;
	grpc_completion_queue_destroy(cq);
	return status;
}

static void test_exchange_garbage_fails_that_stream_only(void **state)
{
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02};
	/* A well-formed ControlFrame, but a credit update before any hello. */
	static const uint8_t credit_first[] = {0x2a, 0x00};
	struct test_log lg = {0};
	struct fdx_exchange *ex;
	struct child c;
	char details[256];

	(void)state;
	child_start(&c, "default", 0, -1);
	grpc_init();
	assert_int_equal(raw_call(c.addr, junk, sizeof(junk), details, sizeof(details)),
			 GRPC_STATUS_INVALID_ARGUMENT);
	assert_string_equal(details, "frame does not parse");
	assert_int_equal(
		raw_call(c.addr, credit_first, sizeof(credit_first), details, sizeof(details)),
		GRPC_STATUS_FAILED_PRECONDITION);
	assert_string_equal(details, "the first frame must be a hello");
	grpc_shutdown();
	/* The service goes on serving good streams. */
	ex = parent_exchange(&lg);
	assert_int_equal(fdx_exchange_connect(ex, c.addr, 5000), 0);
	child_stop(&c);
	assert_int_equal(c.bad, 1);
	assert_int_equal(c.served, 1);
	fdx_exchange_destroy(ex);
}

static uint32_t peers_up(struct fdx_exchange *ex)
{
	struct fdx_exchange_stats st = {.size = sizeof(st)};

	assert_int_equal(fdx_exchange_stats(ex, &st), 0);
	return st.peers_up;
}

static void test_exchange_notices_a_killed_peer_within_a_second(void **state)
{
	struct test_log lg = {0};
	struct fdx_exchange *ex;
	struct child c, again;
	char listen[300];
	uint64_t t0, waited;
	int status;

	(void)state;
	child_start(&c, "default", 0, -1);
	ex = parent_exchange(&lg);
	assert_int_equal(fdx_exchange_connect(ex, c.addr, 5000), 0);
	assert_int_equal(peers_up(ex), 1);
	t0 = test_now_ns();
	assert_int_equal(kill(c.pid, SIGKILL), 0);
	/* Polled for up to 5 s; the requirement is under one second. */
	while (peers_up(ex) != 0 && test_now_ns() - t0 < 5000000000ull)
		test_sleep_us(1000);
	waited = test_now_ns() - t0;
	assert_int_equal(peers_up(ex), 0);
	assert_true(waited < 1000000000ull);
	assert_non_null(strstr(lg.all, "stream to TaskManager child at"));
	assert_int_equal(waitpid(c.pid, &status, 0), c.pid);
	close(c.to);
	fclose(c.from);

	/* A peer restarted on the same socket can be reached again. */
	snprintf(listen, sizeof(listen), "%s", c.addr);
	child_start(&again, listen, 0, -1);
	assert_string_equal(again.addr, c.addr);
	assert_int_equal(fdx_exchange_connect(ex, again.addr, 5000), 0);
	assert_int_equal(peers_up(ex), 1);
	child_stop(&again);
	fdx_exchange_destroy(ex);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exchange_create_checks_its_options),
		cmocka_unit_test(test_exchange_refuses_a_socket_directory_others_can_enter),
		cmocka_unit_test(test_exchange_handshake_over_unix_socket),
		cmocka_unit_test(test_exchange_handshake_over_tcp_loopback),
		cmocka_unit_test(test_exchange_version_mismatch_refused_on_both_sides),
		cmocka_unit_test(test_exchange_refuses_unix_peer_of_another_uid),
		cmocka_unit_test(test_exchange_connect_to_nobody_is_refused),
		cmocka_unit_test(test_exchange_destroy_within_a_second_with_streams_open),
		cmocka_unit_test(test_exchange_garbage_fails_that_stream_only),
		cmocka_unit_test(test_exchange_notices_a_killed_peer_within_a_second),
	};

	if (argc > 1 && strcmp(argv[1], "child") == 0) {
		/* "default" stands for the default listen address. */
		if (argc > 2 && strcmp(argv[2], "default") == 0)
			argv[2] = NULL;
		return run_child(argc, argv);
	}
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("exchange", tests, NULL, NULL);
}
