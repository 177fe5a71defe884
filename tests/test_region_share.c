/* SPDX-License-Identifier: MIT */
/*
 * Handing a region to another process: fdx_region_send()/fdx_region_recv()
 * across fork(), the read-only guarantees in the receiver (faulting writes,
 * mprotect, ftruncate), and every refusal of a bad announcement or descriptor,
 * through the socket and through fdx_region_attach() directly.
 *
 * Children never return into cmocka: they report through the socket and
 * _exit(). Every receive has SO_RCVTIMEO, every child an alarm(), and every
 * wait for a child is a bounded poll.
 */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "runtime/region.h"
#include "transport/unix_fd.h"

/* The nbp of the fork tests, and the region of the direct fdx_region_create() tests. */
#define NBP_SEG_SIZE (32u * 1024)
#define NBP_SEG_COUNT 64u
#define REG_SEG_SIZE (4u * 1024)
#define REG_SEG_COUNT 32u

/* The announcement of transport/region_share.c, rebuilt here byte by byte. */
#define MSG_MAGIC 0x52584446u
#define MSG_VERSION 1u
#define MSG_SIZE 24u

#define CHILD_ALARM_S 20
#define CHILD_RCVTIMEO_MS 5000
#define PARENT_RCVTIMEO_MS 10000
#define CHILD_WAIT_MS 10000
#define REPORT_MAGIC 0x52455054 /* "REPT" */

/* ---- common helpers ------------------------------------------------------ */

static void set_rcvtimeo(int sock, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	(void)setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* Offset of segment i (region.h: segment i lives at (i + 1) * seg_size). */
static uint64_t seg_off(const struct fdx_region *r, uint32_t i)
{
	return (uint64_t)(i + 1) * fdx_region_seg_size(r);
}

/* The byte j of segment i for a given salt: a tag in the first 8 bytes, then a pattern. */
static uint8_t pattern_byte(uint32_t i, uint32_t j, uint8_t salt)
{
	if (j < 8) {
		uint64_t tag = 0xfd5e600000000000ull | ((uint64_t)salt << 32) | i;

		return (uint8_t)(tag >> (8 * j));
	}
	return (uint8_t)(i * 0x9du + j * 0x3bu + (j >> 8) * 0x11u + salt);
}

static void fill_segment(struct fdx_region *r, uint32_t i, uint8_t salt)
{
	uint32_t sz = fdx_region_seg_size(r);
	uint8_t *p = fdx_region_ptr(r, seg_off(r, i), sz);

	assert_non_null(p);
	for (uint32_t j = 0; j < sz; j++)
		p[j] = pattern_byte(i, j, salt);
}

/* Mismatching bytes of segment i; *checked counts the bytes compared. */
static uint64_t check_segment(const struct fdx_region *r, uint32_t i, uint8_t salt,
			      uint64_t *checked)
{
	uint32_t sz = fdx_region_seg_size(r);
	const uint8_t *p = fdx_region_ptr(r, seg_off(r, i), sz);
	uint64_t bad = 0;

	if (!p)
		return sz;
	for (uint32_t j = 0; j < sz; j++)
		bad += p[j] != pattern_byte(i, j, salt);
	*checked += sz;
	return bad;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Send nfds copies of fd (0 = no descriptor) with len bytes of buf. 0 or -errno. */
static int send_with_fds(int sock, const void *buf, size_t len, int fd, int nfds)
{
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {(void *)buf, len};
	struct msghdr msg;
	int fds[2] = {fd, fd};

	memset(&ctl, 0, sizeof(ctl));
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (nfds > 0) {
		struct cmsghdr *c;

		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	if (sendmsg(sock, &msg, MSG_NOSIGNAL) != (ssize_t)len)
		return -errno;
	return 0;
}

struct announce {
	uint32_t magic;
	uint16_t version;
	uint16_t msg_size;
	uint64_t region_size;
	uint32_t seg_size;
	uint32_t seg_count;
};

static struct announce announce_of(const struct fdx_region *r)
{
	struct announce a = {MSG_MAGIC,
			     MSG_VERSION,
			     MSG_SIZE,
			     fdx_region_size(r),
			     fdx_region_seg_size(r),
			     fdx_region_seg_count(r)};

	return a;
}

/* The same 24-byte little-endian encoding as fdx_region_send(), into m. */
static void encode_announce(uint8_t *m, const struct announce *a)
{
	put_le(m + 0, a->magic, 4);
	put_le(m + 4, a->version, 2);
	put_le(m + 6, a->msg_size, 2);
	put_le(m + 8, a->region_size, 8);
	put_le(m + 16, a->seg_size, 4);
	put_le(m + 20, a->seg_count, 4);
}

/* The announcement message of fdx_region_send(), with nfds copies of fd. */
static int send_announce(int sock, const struct announce *a, int fd, int nfds)
{
	uint8_t m[MSG_SIZE];

	encode_announce(m, a);
	return send_with_fds(sock, m, sizeof(m), fd, nfds);
}

/* A memfd holding a copy of r's bytes (same size), created with mfd_flags, given seals. */
static int memfd_copy(const struct fdx_region *r, unsigned int mfd_flags, unsigned int seals,
		      void (*corrupt)(uint8_t *bytes, size_t size))
{
	size_t size = (size_t)fdx_region_size(r);
	uint8_t *bytes = malloc(size);
	int fd;

	assert_non_null(bytes);
	assert_int_equal(pread(fdx_region_fd(r), bytes, size, 0), (ssize_t)size);
	if (corrupt)
		corrupt(bytes, size);
	fd = memfd_create("fdx-test-copy", MFD_CLOEXEC | mfd_flags);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	assert_int_equal(pwrite(fd, bytes, size, 0), (ssize_t)size);
	free(bytes);
	if (seals)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

#define ALL_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)

static void assert_log_names(const struct test_log *lg, const char *cause)
{
	assert_true(lg->count >= 1);
	assert_true(strlen(lg->last) > 0);
	if (!strstr(lg->all, cause))
		fail_msg("refusal log \"%s\" does not mention \"%s\"", lg->all, cause);
}

/* ---- fixtures ------------------------------------------------------------- */

struct share_fx {
	struct fdx_nbp *nbp; /* the owner, in the nbp fixture */
	struct fdx_region *own; /* the owner, in the region fixture */
	struct fdx_region *r; /* the region the tests send: one of the two */
	struct fdx_region *valid; /* refusal tests: a source of valid region bytes */
	int sock[2];
	pid_t child;
};

static int teardown(void **state);

static struct share_fx *fx_new(void)
{
	struct share_fx *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return NULL;
	fx->child = -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fx->sock) < 0) {
		free(fx);
		return NULL;
	}
	set_rcvtimeo(fx->sock[0], PARENT_RCVTIMEO_MS);
	set_rcvtimeo(fx->sock[1], CHILD_RCVTIMEO_MS);
	return fx;
}

static void fill_all(struct fdx_region *r)
{
	for (uint32_t i = 0; i < fdx_region_seg_count(r); i++)
		fill_segment(r, i, 1);
}

static int setup_nbp(void **state)
{
	struct fdx_nbp_opts o;
	struct share_fx *fx = fx_new();

	if (!fx)
		return -1;
	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.seg_size = NBP_SEG_SIZE;
	o.seg_count = NBP_SEG_COUNT;
	*state = fx;
	if (fdx_nbp_create(&o, &fx->nbp) != 0) {
		teardown(state);
		return -1;
	}
	fx->r = fdx_nbp_region(fx->nbp);
	fill_all(fx->r);
	return 0;
}

static struct fdx_region *create_region(uint32_t seg_size, uint32_t seg_count)
{
	struct fdx_region_opts o;
	struct fdx_region *r = NULL;

	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.seg_size = seg_size;
	o.seg_count = seg_count;
	o.hugepages = FDX_HUGEPAGE_NEVER;
	if (fdx_region_create(&o, &r) != 0)
		return NULL;
	return r;
}

static int setup_region(void **state)
{
	struct share_fx *fx = fx_new();

	if (!fx)
		return -1;
	*state = fx;
	fx->own = create_region(REG_SEG_SIZE, REG_SEG_COUNT);
	if (!fx->own) {
		teardown(state);
		return -1;
	}
	fx->r = fx->own;
	fill_all(fx->r);
	return 0;
}

/* Refusal tests: one process, a socketpair and a valid region to copy bytes from. */
static int setup_refusal(void **state)
{
	struct share_fx *fx = fx_new();

	if (!fx)
		return -1;
	set_rcvtimeo(fx->sock[1], 2000);
	*state = fx;
	fx->valid = create_region(REG_SEG_SIZE, 4);
	if (!fx->valid) {
		teardown(state);
		return -1;
	}
	fill_all(fx->valid);
	return 0;
}

static int teardown(void **state)
{
	struct share_fx *fx = *state;

	if (!fx)
		return 0;
	if (fx->child > 0) {
		/* A test failed with its child alive: do not leave it behind. */
		kill(fx->child, SIGKILL);
		waitpid(fx->child, NULL, 0);
	}
	for (int i = 0; i < 2; i++)
		if (fx->sock[i] >= 0)
			close(fx->sock[i]);
	fdx_region_destroy(fx->valid);
	fdx_region_destroy(fx->own);
	if (fdx_nbp_destroy(fx->nbp) != 0)
		return -1;
	free(fx);
	return 0;
}

/* ---- the child side -------------------------------------------------------- */

/* What a child saw, sent back to the parent whole. Only plain integers. */
struct child_report {
	int32_t magic;
	int32_t recv_err;
	int32_t readonly;
	uint32_t seg_size;
	uint32_t seg_count;
	uint32_t pad;
	uint64_t size;
	uint64_t bytes_checked;
	uint64_t bad_bytes;
	/* live update */
	int32_t live_sync;
	int32_t pad2;
	uint64_t live_bad;
	/* faulting write */
	int32_t handler_installed;
	int32_t write_completed;
	int32_t fault_seen;
	int32_t fault_signo;
	int32_t fault_code;
	int32_t byte_intact;
	uint64_t fault_addr;
	uint64_t write_addr;
	/* mprotect and mmap */
	int32_t base_aligned;
	int32_t mprot_rw_ret;
	int32_t mprot_rw_errno;
	int32_t mprot_all_rw_ret;
	int32_t mprot_ro_ret;
	int32_t mmap_rw_ok;
	int32_t mmap_rw_errno;
	/* ftruncate and write through the fd */
	int32_t ft_grow_ret;
	int32_t ft_shrink_ret;
	int32_t ft_zero_ret;
	int32_t ft_errno;
	int32_t pwrite_ret;
	int32_t pad3;
	uint64_t size_after;
};

typedef void (*child_fn)(struct fdx_region *r, int sock, struct child_report *rep);
typedef void (*parent_fn)(struct share_fx *fx);

static ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	/* Bounded: each read either makes progress, hits EOF or times out (SO_RCVTIMEO). */
	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(fd, (const char *)buf + done, len - done, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

static _Noreturn void child_main(int sock, child_fn fn)
{
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
	struct child_report rep;
	struct fdx_region *r = NULL;

	/* cmocka's handlers would run the remaining tests in this child: crash instead. */
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], SIG_DFL);
	alarm(CHILD_ALARM_S);
	memset(&rep, 0, sizeof(rep));
	rep.recv_err = fdx_region_recv(sock, NULL, NULL, &r);
	if (rep.recv_err == 0) {
		rep.readonly = fdx_region_is_readonly(r);
		rep.seg_size = fdx_region_seg_size(r);
		rep.seg_count = fdx_region_seg_count(r);
		rep.size = fdx_region_size(r);
		for (uint32_t i = 0; i < rep.seg_count; i++)
			rep.bad_bytes += check_segment(r, i, 1, &rep.bytes_checked);
		if (fn)
			fn(r, sock, &rep);
		fdx_region_destroy(r);
	}
	rep.magic = REPORT_MAGIC;
	_exit(write_full(sock, &rep, sizeof(rep)) == 0 ? 0 : 3);
}

/* Wait for the child at most CHILD_WAIT_MS, polling every millisecond; SIGKILL it after. */
static int wait_child(struct share_fx *fx)
{
	int status = 0;

	for (int i = 0; i < CHILD_WAIT_MS; i++) {
		pid_t p = waitpid(fx->child, &status, WNOHANG);

		if (p == fx->child) {
			fx->child = -1;
			return status;
		}
		assert_int_equal(p, 0);
		test_sleep_us(1000);
	}
	fail_msg("child %d did not exit within %d ms", (int)fx->child, CHILD_WAIT_MS);
	return -1;
}

/*
 * Fork a child that receives fx->r, checks its pattern and runs cfn; in the
 * parent, send the region, run pfn, collect the report and the exit status.
 */
static void run_child(struct share_fx *fx, child_fn cfn, parent_fn pfn, struct child_report *rep)
{
	int status;
	ssize_t n;

	fflush(NULL);
	fx->child = fork();
	assert_true(fx->child >= 0);
	if (fx->child == 0) {
		close(fx->sock[0]);
		child_main(fx->sock[1], cfn);
	}
	close(fx->sock[1]);
	fx->sock[1] = -1;
	assert_int_equal(fdx_region_send(fx->r, fx->sock[0]), 0);
	if (pfn)
		pfn(fx);
	memset(rep, 0, sizeof(*rep));
	n = read_full(fx->sock[0], rep, sizeof(*rep));
	status = wait_child(fx);
	if (WIFSIGNALED(status))
		fail_msg("child killed by signal %d", WTERMSIG(status));
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(n, (ssize_t)sizeof(*rep));
	assert_int_equal(rep->magic, REPORT_MAGIC);
	assert_int_equal(rep->recv_err, 0);
}

/* The checks every child makes before its own: read-only, same geometry, every byte. */
static void assert_child_saw_region(const struct share_fx *fx, const struct child_report *rep)
{
	assert_int_equal(rep->readonly, 1);
	assert_int_equal(rep->seg_size, fdx_region_seg_size(fx->r));
	assert_int_equal(rep->seg_count, fdx_region_seg_count(fx->r));
	assert_int_equal(rep->size, fdx_region_size(fx->r));
	assert_int_equal(rep->bytes_checked,
			 (uint64_t)fdx_region_seg_count(fx->r) * fdx_region_seg_size(fx->r));
	assert_int_equal(rep->bad_bytes, 0);
}

/* The owner's bytes are untouched by whatever the child tried. */
static void assert_owner_intact(const struct share_fx *fx)
{
	uint64_t checked = 0, bad = 0;

	for (uint32_t i = 0; i < fdx_region_seg_count(fx->r); i++)
		bad += check_segment(fx->r, i, 1, &checked);
	assert_int_equal(bad, 0);
	assert_false(fdx_region_is_readonly(fx->r));
}

/* ---- sending to a child ---------------------------------------------------- */

static void test_region_send_nbp_region_child_reads_every_byte(void **state)
{
	struct share_fx *fx = *state;
	struct child_report rep;

	run_child(fx, NULL, NULL, &rep);
	assert_child_saw_region(fx, &rep);
	assert_int_equal(rep.seg_size, NBP_SEG_SIZE);
	assert_int_equal(rep.seg_count, NBP_SEG_COUNT);
}

static void test_region_send_created_region_child_reads_every_byte(void **state)
{
	struct share_fx *fx = *state;
	struct child_report rep;

	run_child(fx, NULL, NULL, &rep);
	assert_child_saw_region(fx, &rep);
	assert_int_equal(rep.seg_size, REG_SEG_SIZE);
	assert_int_equal(rep.seg_count, REG_SEG_COUNT);
}

#define LIVE_SEG 5u

/* Child: tell the parent the first check is done, wait for its write, see it. */
static void child_live(struct fdx_region *r, int sock, struct child_report *rep)
{
	uint64_t checked = 0;
	char c = 'R';

	if (write_full(sock, &c, 1) != 0 || read_full(sock, &c, 1) != 1 || c != 'G')
		return;
	rep->live_sync = 1;
	rep->live_bad = check_segment(r, LIVE_SEG, 2, &checked);
}

static void parent_live(struct share_fx *fx)
{
	char c = 0;

	assert_int_equal(read_full(fx->sock[0], &c, 1), 1);
	assert_int_equal(c, 'R');
	fill_segment(fx->r, LIVE_SEG, 2);
	c = 'G';
	assert_int_equal(write_full(fx->sock[0], &c, 1), 0);
}

static void test_region_send_child_sees_later_owner_writes(void **state)
{
	struct share_fx *fx = *state;
	struct child_report rep;

	run_child(fx, child_live, parent_live, &rep);
	assert_child_saw_region(fx, &rep);
	assert_int_equal(rep.live_sync, 1);
	assert_int_equal(rep.live_bad, 0);
}

/* ---- the receiver cannot write ------------------------------------------------ */

static sigjmp_buf fault_jmp;
static volatile sig_atomic_t fault_seen;
static volatile sig_atomic_t fault_signo;
static volatile sig_atomic_t fault_code;
static void *volatile fault_addr;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	fault_seen = 1;
	fault_signo = sig;
	fault_code = si->si_code;
	fault_addr = si->si_addr;
	siglongjmp(fault_jmp, 1);
}

#define FAULT_SEG 3u
#define FAULT_BYTE 123u

static void child_fault(struct fdx_region *r, int sock, struct child_report *rep)
{
	struct sigaction sa, old, cur;
	volatile uint8_t *p = fdx_region_ptr(r, seg_off(r, FAULT_SEG) + FAULT_BYTE, 1);
	uint8_t before;

	(void)sock;
	if (!p)
		return;
	before = *p;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	/* Replaces ASan's SIGSEGV handler as well (allow_user_segv_handler). */
	if (sigaction(SIGSEGV, &sa, &old) != 0)
		return;
	if (sigaction(SIGSEGV, NULL, &cur) == 0)
		rep->handler_installed = cur.sa_sigaction == on_segv && (cur.sa_flags & SA_SIGINFO);
	rep->write_addr = (uint64_t)(uintptr_t)p;
	if (sigsetjmp(fault_jmp, 1) == 0) {
		*p = (uint8_t)~before;
		rep->write_completed = 1;
	}
	sigaction(SIGSEGV, &old, NULL);
	rep->fault_seen = fault_seen;
	rep->fault_signo = fault_signo;
	rep->fault_code = fault_code;
	rep->fault_addr = (uint64_t)(uintptr_t)fault_addr;
	rep->byte_intact = *p == before && before == pattern_byte(FAULT_SEG, FAULT_BYTE, 1);
}

static void test_region_recv_write_through_mapping_faults_accerr(void **state)
{
	struct share_fx *fx = *state;
	struct child_report rep;

	run_child(fx, child_fault, NULL, &rep);
	assert_child_saw_region(fx, &rep);
	assert_int_equal(rep.handler_installed, 1);
	assert_int_equal(rep.write_completed, 0);
	assert_int_equal(rep.fault_seen, 1);
	assert_int_equal(rep.fault_signo, SIGSEGV);
	assert_int_equal(rep.fault_code, SEGV_ACCERR);
	assert_true(rep.write_addr != 0);
	assert_int_equal(rep.fault_addr, rep.write_addr);
	assert_int_equal(rep.byte_intact, 1);
	assert_owner_intact(fx);
}

static void child_mprotect(struct fdx_region *r, int sock, struct child_report *rep)
{
	uint8_t *base = fdx_region_ptr(r, 0, 1);
	size_t page = (size_t)fdx_region_page_size(r);
	size_t size = (size_t)fdx_region_size(r);
	void *m;

	(void)sock;
	if (!base || page == 0)
		return;
	rep->base_aligned = ((uintptr_t)base % page) == 0;
	errno = 0;
	rep->mprot_rw_ret = mprotect(base, page, PROT_READ | PROT_WRITE);
	rep->mprot_rw_errno = errno;
	rep->mprot_all_rw_ret = mprotect(base, size, PROT_READ | PROT_WRITE);
	/* The control: the same call without PROT_WRITE is fine, so the range is valid. */
	rep->mprot_ro_ret = mprotect(base, page, PROT_READ);
	errno = 0;
	m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fdx_region_fd(r), 0);
	rep->mmap_rw_ok = m != MAP_FAILED;
	rep->mmap_rw_errno = errno;
	if (m != MAP_FAILED)
		munmap(m, size);
}

static void test_region_recv_mprotect_writable_fails(void **state)
{
	struct share_fx *fx = *state;
	struct child_report rep;

	run_child(fx, child_mprotect, NULL, &rep);
	assert_child_saw_region(fx, &rep);
	assert_int_equal(rep.base_aligned, 1);
	assert_int_equal(rep.mprot_rw_ret, -1);
	assert_int_equal(rep.mprot_rw_errno, EACCES);
	assert_int_equal(rep.mprot_all_rw_ret, -1);
	assert_int_equal(rep.mprot_ro_ret, 0);
	/* Nor can the received descriptor be mapped writable anew. */
	assert_int_equal(rep.mmap_rw_ok, 0);
	assert_true(rep.mmap_rw_errno == EACCES || rep.mmap_rw_errno == EPERM);
	assert_owner_intact(fx);
}

static void child_ftruncate(struct fdx_region *r, int sock, struct child_report *rep)
{
	int fd = fdx_region_fd(r);
	off_t size = (off_t)fdx_region_size(r);
	off_t page = (off_t)fdx_region_page_size(r);
	struct stat st;
	uint8_t junk = 0xee;

	(void)sock;
	errno = 0;
	rep->ft_grow_ret = ftruncate(fd, size + page);
	rep->ft_errno = errno;
	rep->ft_shrink_ret = ftruncate(fd, size - page);
	rep->ft_zero_ret = ftruncate(fd, 0);
	rep->pwrite_ret = (int32_t)pwrite(fd, &junk, 1, (off_t)seg_off(r, 0));
	if (fstat(fd, &st) == 0)
		rep->size_after = (uint64_t)st.st_size;
}

static void test_region_recv_ftruncate_on_received_fd_fails(void **state)
{
	struct share_fx *fx = *state;
	struct child_report rep;

	run_child(fx, child_ftruncate, NULL, &rep);
	assert_child_saw_region(fx, &rep);
	assert_int_equal(rep.ft_grow_ret, -1);
	assert_true(rep.ft_errno != 0);
	assert_int_equal(rep.ft_shrink_ret, -1);
	assert_int_equal(rep.ft_zero_ret, -1);
	assert_int_equal(rep.pwrite_ret, -1);
	assert_int_equal(rep.size_after, fdx_region_size(fx->r));
	assert_owner_intact(fx);
}

static void test_region_owner_ftruncate_fails_sealed(void **state)
{
	struct share_fx *fx = *state;
	int fd = fdx_region_fd(fx->r);
	off_t size = (off_t)fdx_region_size(fx->r);
	off_t page = (off_t)fdx_region_page_size(fx->r);
	struct stat st;
	int seals;

	assert_true(fd >= 0);
	seals = fcntl(fd, F_GET_SEALS);
	assert_int_equal(seals & ALL_SEALS, ALL_SEALS);
	/* The owner's descriptor is read-write: only the seals stop it. */
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	errno = 0;
	assert_int_equal(ftruncate(fd, size + page), -1);
	assert_int_equal(errno, EPERM);
	errno = 0;
	assert_int_equal(ftruncate(fd, size - page), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(ftruncate(fd, 0), -1);
	/* F_SEAL_SEAL: no seal can be added or removed any more. */
	errno = 0;
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal((uint64_t)st.st_size, fdx_region_size(fx->r));
	assert_owner_intact(fx);
}

/* ---- refusals ------------------------------------------------------------------ */

/* Announce a over the socket with fd (nfds copies), expect fdx_region_recv() to refuse. */
static void expect_recv_refusal(struct share_fx *fx, const struct announce *a, int fd, int nfds,
				int expect, const char *cause)
{
	struct fdx_region *r = (struct fdx_region *)&r;
	struct test_log lg;
	char c;
	int before, after, err;

	memset(&lg, 0, sizeof(lg));
	assert_int_equal(send_announce(fx->sock[0], a, fd, nfds), 0);
	before = test_count_fds();
	err = fdx_region_recv(fx->sock[1], test_log_fn, &lg, &r);
	after = test_count_fds();
	if (err != expect)
		fail_msg("fdx_region_recv: %d (%s), want %d (%s); log: %s", err, fdx_strerror(err),
			 expect, fdx_strerror(expect), lg.all);
	assert_null(r);
	/* Every descriptor that arrived was closed. */
	assert_true(before > 0);
	assert_int_equal(after, before);
	assert_log_names(&lg, cause);
	/* The whole message was consumed: nothing is left for the next one. */
	assert_int_equal(recv(fx->sock[1], &c, 1, MSG_DONTWAIT | MSG_PEEK), -1);
	assert_int_equal(errno, EAGAIN);
}

/* fdx_region_attach() directly on fd: the same refusal, no descriptor opened or closed. */
static void expect_attach_refusal(int fd, uint64_t size, int expect, const char *cause)
{
	struct fdx_region *r = (struct fdx_region *)&r;
	struct test_log lg;
	int before, after, err;

	memset(&lg, 0, sizeof(lg));
	before = test_count_fds();
	err = fdx_region_attach(fd, size, test_log_fn, &lg, &r);
	after = test_count_fds();
	if (err != expect)
		fail_msg("fdx_region_attach: %d (%s), want %d (%s); log: %s", err,
			 fdx_strerror(err), expect, fdx_strerror(expect), lg.all);
	assert_null(r);
	assert_int_equal(after, before);
	assert_log_names(&lg, cause);
	/* The caller's descriptor is still open and its own. */
	assert_true(fcntl(fd, F_GETFD) >= 0);
}

static void expect_recv_and_attach_refusal(struct share_fx *fx, int fd, int expect,
					   const char *cause)
{
	struct announce a = announce_of(fx->valid);

	expect_recv_refusal(fx, &a, fd, 1, expect, cause);
	expect_attach_refusal(fd, a.region_size, expect, cause);
}

/* The control: a fully sealed copy of a valid region is accepted both ways. */
static void test_region_recv_accepts_sealed_memfd_copy(void **state)
{
	struct share_fx *fx = *state;
	struct announce a = announce_of(fx->valid);
	struct fdx_region *r = NULL;
	uint64_t checked = 0;
	int fd = memfd_copy(fx->valid, MFD_ALLOW_SEALING, ALL_SEALS, NULL);
	int before;

	assert_int_equal(send_announce(fx->sock[0], &a, fd, 1), 0);
	before = test_count_fds();
	assert_int_equal(fdx_region_recv(fx->sock[1], NULL, NULL, &r), 0);
	assert_non_null(r);
	/* The received descriptor was closed; the region keeps exactly one of its own. */
	assert_int_equal(test_count_fds(), before + 1);
	assert_int_equal(fdx_region_is_readonly(r), 1);
	assert_int_equal(check_segment(r, 2, 1, &checked), 0);
	fdx_region_destroy(r);
	assert_int_equal(test_count_fds(), before);

	assert_int_equal(fdx_region_attach(fd, a.region_size, NULL, NULL, &r), 0);
	assert_int_equal(fdx_region_seg_count(r), 4);
	fdx_region_destroy(r);
	close(fd);
}

static void test_region_recv_refuses_unsealed_memfd(void **state)
{
	struct share_fx *fx = *state;
	struct test_log lg;
	struct fdx_region *r = NULL;
	int fd;

	/* Sealable, no seal at all. */
	fd = memfd_copy(fx->valid, MFD_ALLOW_SEALING, 0, NULL);
	expect_recv_and_attach_refusal(fx, fd, FDX_EUNSEALED, "F_SEAL_SHRINK");
	close(fd);

	/* Shrink and grow sealed, but the seals could still be changed. */
	fd = memfd_copy(fx->valid, MFD_ALLOW_SEALING, F_SEAL_SHRINK | F_SEAL_GROW, NULL);
	expect_recv_and_attach_refusal(fx, fd, FDX_EUNSEALED, "F_SEAL_SEAL");
	memset(&lg, 0, sizeof(lg));
	assert_int_equal(fdx_region_attach(fd, fdx_region_size(fx->valid), test_log_fn, &lg, &r),
			 FDX_EUNSEALED);
	assert_null(strstr(lg.all, "F_SEAL_SHRINK"));
	assert_null(strstr(lg.all, "F_SEAL_GROW"));
	close(fd);

	/* Not sealable: the kernel sets F_SEAL_SEAL alone, so shrink and grow stay open. */
	fd = memfd_copy(fx->valid, 0, 0, NULL);
	assert_int_equal(fcntl(fd, F_GET_SEALS), F_SEAL_SEAL);
	expect_recv_and_attach_refusal(fx, fd, FDX_EUNSEALED, "F_SEAL_GROW");
	close(fd);
}

static void test_region_recv_refuses_size_mismatch(void **state)
{
	struct share_fx *fx = *state;
	struct announce a = announce_of(fx->valid);
	uint64_t real = a.region_size;
	int fd = fdx_region_fd(fx->valid);

	/* The owner's own, valid, sealed region: only the announced size is wrong. */
	a.region_size = real + 4096;
	expect_recv_refusal(fx, &a, fd, 1, FDX_ESIZE, "announced");
	expect_attach_refusal(fd, real + 4096, FDX_ESIZE, "announced");
	a.region_size = real - 4096;
	expect_recv_refusal(fx, &a, fd, 1, FDX_ESIZE, "announced");
	expect_attach_refusal(fd, real - 4096, FDX_ESIZE, "announced");
	a.region_size = real * 2;
	expect_recv_refusal(fx, &a, fd, 1, FDX_ESIZE, "announced");
}

static void test_region_recv_refuses_regular_file(void **state)
{
	struct share_fx *fx = *state;
	size_t size = (size_t)fdx_region_size(fx->valid);
	uint8_t *bytes = malloc(size);
	char tmpl[] = "/tmp/fdx-test-XXXXXX";
	int fd;

	assert_non_null(bytes);
	fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		fd = mkostemp(tmpl, O_CLOEXEC);
		assert_true(fd >= 0);
		unlink(tmpl);
	}
	/* A regular file with valid region bytes in it: only its kind is wrong. */
	assert_int_equal(pread(fdx_region_fd(fx->valid), bytes, size, 0), (ssize_t)size);
	assert_int_equal(pwrite(fd, bytes, size, 0), (ssize_t)size);
	free(bytes);
	expect_recv_and_attach_refusal(fx, fd, FDX_ENOTMEMFD, "memfd");
	close(fd);
}

static void test_region_recv_refuses_pipe(void **state)
{
	struct share_fx *fx = *state;
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	expect_recv_and_attach_refusal(fx, p[0], FDX_ENOTMEMFD, "memfd");
	expect_recv_and_attach_refusal(fx, p[1], FDX_ENOTMEMFD, "memfd");
	close(p[0]);
	close(p[1]);
}

static void test_region_recv_refuses_message_without_fd(void **state)
{
	struct share_fx *fx = *state;
	struct announce a = announce_of(fx->valid);

	expect_recv_refusal(fx, &a, -1, 0, FDX_EPROTO, "malformed");
}

static void test_region_recv_refuses_two_fds(void **state)
{
	struct share_fx *fx = *state;
	struct announce a = announce_of(fx->valid);

	/* Both copies that arrive must be closed, not only the refused one. */
	expect_recv_refusal(fx, &a, fdx_region_fd(fx->valid), 2, FDX_EPROTO, "malformed");
}

static void test_region_recv_refuses_wrong_magic(void **state)
{
	struct share_fx *fx = *state;
	struct announce a = announce_of(fx->valid);
	int fd = fdx_region_fd(fx->valid);
	struct fdx_region *r = NULL;

	a.magic = 0xdeadbeef;
	expect_recv_refusal(fx, &a, fd, 1, FDX_EPROTO, "0xdeadbeef");
	a = announce_of(fx->valid);
	a.version = 2;
	expect_recv_refusal(fx, &a, fd, 1, FDX_EPROTO, "announcement");
	a = announce_of(fx->valid);
	a.msg_size = 32;
	expect_recv_refusal(fx, &a, fd, 1, FDX_EPROTO, "announcement");
	/* The descriptor itself was fine: attached directly, it is accepted. */
	assert_int_equal(fdx_region_attach(fd, fdx_region_size(fx->valid), NULL, NULL, &r), 0);
	fdx_region_destroy(r);
}

static void garble_header(uint8_t *bytes, size_t size)
{
	(void)size;
	for (size_t i = 0; i < sizeof(struct fdx__region_hdr); i++)
		bytes[i] = (uint8_t)(0xa5 ^ (i * 29));
}

static void header_seg_count_huge(uint8_t *bytes, size_t size)
{
	uint32_t v = 0x7fffffff;

	(void)size;
	memcpy(bytes + offsetof(struct fdx__region_hdr, seg_count), &v, sizeof(v));
}

static void header_seg_count_plus_one(uint8_t *bytes, size_t size)
{
	uint32_t v;

	(void)size;
	memcpy(&v, bytes + offsetof(struct fdx__region_hdr, seg_count), sizeof(v));
	v++;
	memcpy(bytes + offsetof(struct fdx__region_hdr, seg_count), &v, sizeof(v));
}

static void test_region_recv_refuses_garbage_header(void **state)
{
	struct share_fx *fx = *state;
	struct announce a;
	struct fdx_region *r = NULL;
	int fd;

	/* Sealed, right size, header garbage. */
	fd = memfd_copy(fx->valid, MFD_ALLOW_SEALING, ALL_SEALS, garble_header);
	expect_recv_and_attach_refusal(fx, fd, FDX_EBADREGION, "header");
	close(fd);

	/* Magic and version right, geometry impossible. */
	fd = memfd_copy(fx->valid, MFD_ALLOW_SEALING, ALL_SEALS, header_seg_count_huge);
	expect_recv_and_attach_refusal(fx, fd, FDX_EBADREGION, "geometry");
	close(fd);

	/* One segment more than the memfd can hold. */
	fd = memfd_copy(fx->valid, MFD_ALLOW_SEALING, ALL_SEALS, header_seg_count_plus_one);
	expect_recv_and_attach_refusal(fx, fd, FDX_EBADREGION, "do not fit");
	close(fd);

	/* A valid region whose geometry differs from the announcement: only recv can tell. */
	fd = memfd_copy(fx->valid, MFD_ALLOW_SEALING, ALL_SEALS, NULL);
	a = announce_of(fx->valid);
	a.seg_count = 3;
	expect_recv_refusal(fx, &a, fd, 1, FDX_EBADREGION, "announced");
	assert_int_equal(fdx_region_attach(fd, a.region_size, NULL, NULL, &r), 0);
	fdx_region_destroy(r);
	close(fd);
}

static void test_region_recv_returns_econnreset_when_peer_closes(void **state)
{
	struct share_fx *fx = *state;
	struct fdx_region *r = (struct fdx_region *)&r;
	struct test_log lg;
	int before;

	memset(&lg, 0, sizeof(lg));
	close(fx->sock[0]);
	fx->sock[0] = -1;
	before = test_count_fds();
	assert_int_equal(fdx_region_recv(fx->sock[1], test_log_fn, &lg, &r), -ECONNRESET);
	assert_null(r);
	assert_int_equal(test_count_fds(), before);
	assert_true(lg.count >= 1 && strlen(lg.last) > 0);
}

static void test_region_recv_returns_econnreset_after_partial_message(void **state)
{
	struct share_fx *fx = *state;
	struct fdx_region *r = (struct fdx_region *)&r;
	uint8_t half[10];
	int before;

	/* Ten bytes and a descriptor, then the peer is gone: the descriptor must not leak. */
	memset(half, 0, sizeof(half));
	put_le(half, MSG_MAGIC, 4);
	assert_int_equal(
		send_with_fds(fx->sock[0], half, sizeof(half), fdx_region_fd(fx->valid), 1), 0);
	close(fx->sock[0]);
	fx->sock[0] = -1;
	before = test_count_fds();
	assert_int_equal(fdx_region_recv(fx->sock[1], NULL, NULL, &r), -ECONNRESET);
	assert_null(r);
	assert_int_equal(test_count_fds(), before);
}

static void test_region_recv_refuses_partial_message_then_silence(void **state)
{
	struct share_fx *fx = *state;
	struct fdx_region *r = (struct fdx_region *)&r;
	struct test_log lg = {0};
	uint8_t half[10];
	int before;

	/* Ten bytes and a descriptor, then nothing: the stream is out of step, not "try again". */
	memset(half, 0, sizeof(half));
	put_le(half, MSG_MAGIC, 4);
	assert_int_equal(
		send_with_fds(fx->sock[0], half, sizeof(half), fdx_region_fd(fx->valid), 1), 0);
	set_rcvtimeo(fx->sock[1], 100);
	before = test_count_fds();
	assert_int_equal(fdx_region_recv(fx->sock[1], test_log_fn, &lg, &r), FDX_EPROTO);
	assert_null(r);
	assert_non_null(strstr(lg.all, "cut short"));
	assert_int_equal(test_count_fds(), before);
}

static void test_region_recv_refuses_oversized_datagram(void **state)
{
	struct share_fx *fx = *state;
	struct fdx_region *r = (struct fdx_region *)&r;
	struct announce a = announce_of(fx->valid);
	struct test_log lg = {0};
	uint8_t m[MSG_SIZE + 16];
	int sv[2], before;

	/* A datagram that starts as a valid announcement but is longer: not ours. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
	memset(m, 0xab, sizeof(m));
	encode_announce(m, &a);
	assert_int_equal(send_with_fds(sv[0], m, sizeof(m), fdx_region_fd(fx->valid), 1), 0);
	before = test_count_fds();
	assert_int_equal(fdx_region_recv(sv[1], test_log_fn, &lg, &r), FDX_EPROTO);
	assert_null(r);
	assert_non_null(strstr(lg.all, "longer than"));
	assert_int_equal(test_count_fds(), before);
	close(sv[0]);
	close(sv[1]);
}

static void test_region_recv_returns_eagain_on_timeout(void **state)
{
	struct share_fx *fx = *state;
	struct fdx_region *r = (struct fdx_region *)&r;
	uint64_t t0, elapsed;

	set_rcvtimeo(fx->sock[1], 100);
	t0 = test_now_ns();
	assert_int_equal(fdx_region_recv(fx->sock[1], NULL, NULL, &r), -EAGAIN);
	elapsed = test_now_ns() - t0;
	assert_null(r);
	/* It did wait for the timeout, and no longer than a generous bound. */
	assert_true(elapsed >= 80000000ull);
	assert_true(elapsed < 5000000000ull);

	/* A non-blocking socket with nothing to read: at once. */
	assert_int_equal(fcntl(fx->sock[1], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(fdx_region_recv(fx->sock[1], NULL, NULL, &r), -EAGAIN);
}

static void test_region_send_recv_reject_bad_arguments(void **state)
{
	struct share_fx *fx = *state;
	struct fdx_region *r = (struct fdx_region *)&r;
	int p[2];

	assert_int_equal(fdx_region_send(NULL, fx->sock[0]), -EINVAL);
	assert_int_equal(fdx_region_send(fx->valid, -1), -EINVAL);
	assert_int_equal(fdx_region_recv(-1, NULL, NULL, &r), -EINVAL);
	assert_null(r);
	assert_int_equal(fdx_region_recv(fx->sock[1], NULL, NULL, NULL), -EINVAL);
	assert_int_equal(fdx_region_attach(-1, 4096, NULL, NULL, &r), -EINVAL);
	assert_int_equal(fdx_region_attach(fdx_region_fd(fx->valid), 0, NULL, NULL, &r), -EINVAL);
	/* Not a socket. */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(fdx_region_send(fx->valid, p[1]), -ENOTSOCK);
	close(p[0]);
	close(p[1]);
}

static void test_region_send_returns_epipe_when_peer_gone(void **state)
{
	struct share_fx *fx = *state;

	close(fx->sock[1]);
	fx->sock[1] = -1;
	/* MSG_NOSIGNAL: an error, not a SIGPIPE that would kill the test. */
	assert_int_equal(fdx_region_send(fx->valid, fx->sock[0]), -EPIPE);
}

/* Drains the other end of a socket pair slowly: a few bytes at a time, with pauses. */
struct drain {
	int sock;
	size_t want, got;
	int fd;
	uint8_t *buf;
};

static void *drain_main(void *arg)
{
	struct drain *d = arg;
	int fd = -1;

	/* The first chunk carries the descriptor: the receive path of the library. */
	if (fdx__unix_recv_fd(d->sock, d->buf, 1, &fd, NULL) != 0)
		return NULL;
	d->fd = fd;
	d->got = 1;
	while (d->got < d->want) {
		ssize_t n;

		test_sleep_us(200);
		n = recv(d->sock, d->buf + d->got,
			 d->want - d->got < 4096 ? d->want - d->got : 4096, 0);
		if (n <= 0)
			break;
		d->got += (size_t)n;
	}
	return NULL;
}

/*
 * A non-blocking socket fills after part of a message and its descriptor
 * went: the send waits for room and finishes (a caller that retried the whole
 * would corrupt the stream), and the peer gets every byte and one descriptor.
 */
static void test_send_fd_finishes_a_message_on_a_full_nonblocking_socket(void **state)
{
	enum { LEN = 1 << 20 };
	struct drain d = {.want = LEN, .fd = -1};
	uint8_t *msg = malloc(LEN);
	int sv[2], small = 4096, memfd;
	pthread_t th;
	struct stat st;

	(void)state;
	assert_non_null(msg);
	d.buf = calloc(1, LEN);
	assert_non_null(d.buf);
	for (size_t i = 0; i < LEN; i++)
		msg[i] = (uint8_t)(i * 131u + 7u);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	memfd = memfd_create("fdx-send-fd", MFD_CLOEXEC);
	assert_true(memfd >= 0);
	d.sock = sv[1];
	assert_int_equal(pthread_create(&th, NULL, drain_main, &d), 0);
	assert_int_equal(fdx__unix_send_fd(sv[0], memfd, msg, LEN), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(d.got, LEN);
	assert_memory_equal(d.buf, msg, LEN);
	assert_true(d.fd >= 0);
	assert_int_equal(fstat(d.fd, &st), 0); /* a live descriptor of the memfd */
	close(d.fd);
	close(memfd);
	close(sv[0]);
	close(sv[1]);
	free(d.buf);
	free(msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_region_send_nbp_region_child_reads_every_byte,
						setup_nbp, teardown),
		cmocka_unit_test_setup_teardown(
			test_region_send_created_region_child_reads_every_byte, setup_region,
			teardown),
		cmocka_unit_test_setup_teardown(test_region_send_child_sees_later_owner_writes,
						setup_nbp, teardown),
		cmocka_unit_test_setup_teardown(
			test_region_recv_write_through_mapping_faults_accerr, setup_nbp, teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_mprotect_writable_fails, setup_nbp,
						teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_ftruncate_on_received_fd_fails,
						setup_region, teardown),
		cmocka_unit_test_setup_teardown(test_region_owner_ftruncate_fails_sealed,
						setup_region, teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_accepts_sealed_memfd_copy,
						setup_refusal, teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_refuses_unsealed_memfd,
						setup_refusal, teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_refuses_size_mismatch,
						setup_refusal, teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_refuses_regular_file,
						setup_refusal, teardown),
		cmocka_unit_test_setup_teardown(
			test_region_recv_refuses_partial_message_then_silence, setup_refusal,
			teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_refuses_oversized_datagram,
						setup_refusal, teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_refuses_pipe, setup_refusal,
						teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_refuses_message_without_fd,
						setup_refusal, teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_refuses_two_fds, setup_refusal,
						teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_refuses_wrong_magic, setup_refusal,
						teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_refuses_garbage_header,
						setup_refusal, teardown),
		cmocka_unit_test_setup_teardown(
			test_region_recv_returns_econnreset_when_peer_closes, setup_refusal,
			teardown),
		cmocka_unit_test_setup_teardown(
			test_region_recv_returns_econnreset_after_partial_message, setup_refusal,
			teardown),
		cmocka_unit_test_setup_teardown(test_region_recv_returns_eagain_on_timeout,
						setup_refusal, teardown),
		cmocka_unit_test_setup_teardown(test_region_send_recv_reject_bad_arguments,
						setup_refusal, teardown),
		cmocka_unit_test_setup_teardown(test_region_send_returns_epipe_when_peer_gone,
						setup_refusal, teardown),
		cmocka_unit_test(test_send_fd_finishes_a_message_on_a_full_nonblocking_socket),
	};

	return cmocka_run_group_tests_name("region_share", tests, NULL, NULL);
}
