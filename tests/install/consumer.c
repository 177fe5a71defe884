/* SPDX-License-Identifier: MIT */
/*
 * A downstream program built against an installed fdx (see check.sh): it uses
 * only the public API and exits 0 only if every call behaves as documented.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <fdx/fdx.h>

static int failures;

static void expect_rc(const char *what, int got, int want)
{
	if (got == want)
		return;
	fprintf(stderr, "consumer: %s returned %d (%s), expected %d (%s)\n", what, got,
		fdx_strerror(got), want, fdx_strerror(want));
	failures++;
}

int main(void)
{
	struct fdx_nbp_opts no = {
		.size = sizeof(no), .seg_count = 16, .hugepages = FDX_HUGEPAGE_NEVER};
	struct fdx_lbp_opts lo = {.size = sizeof(lo), .min = 2, .max = 4};
	unsigned want_version =
		(FDX_VERSION_MAJOR << 16) | (FDX_VERSION_MINOR << 8) | FDX_VERSION_PATCH;
	struct fdx_nbp *nbp = NULL;
	struct fdx_lbp *lbp = NULL;
	struct fdx_buf b;
	uint8_t *p;

	printf("consumer: fdx %s\n", fdx_version_string());
	if (fdx_version() != want_version) {
		fprintf(stderr, "consumer: library version %#x, headers %#x\n", fdx_version(),
			want_version);
		return 1;
	}
	expect_rc("fdx_nbp_create", fdx_nbp_create(&no, &nbp), 0);
	if (!nbp)
		return 1;
	if (fdx_region_is_hugetlb(fdx_nbp_region(nbp)) != 0) {
		fprintf(stderr, "consumer: hugetlb region despite FDX_HUGEPAGE_NEVER\n");
		failures++;
	}
	expect_rc("fdx_lbp_create", fdx_lbp_create(nbp, &lo, &lbp), 0);
	if (!lbp)
		return 1;
	expect_rc("fdx_lbp_try_request", fdx_lbp_try_request(lbp, &b), 0);
	p = fdx_lbp_ptr(lbp, b.offset);
	if (!p || b.capacity == 0) {
		fprintf(stderr, "consumer: no pointer for buffer at offset %llu\n",
			(unsigned long long)b.offset);
		return 1;
	}
	memset(p, 0xa5, b.capacity);
	if (p[0] != 0xa5 || p[b.capacity - 1] != 0xa5) {
		fprintf(stderr, "consumer: buffer did not keep what was written\n");
		failures++;
	}
	expect_rc("fdx_lbp_recycle", fdx_lbp_recycle(lbp, b.offset), 0);
	expect_rc("second fdx_lbp_recycle", fdx_lbp_recycle(lbp, b.offset), FDX_EALREADYFREE);
	fdx_lbp_destroy(lbp);
	expect_rc("fdx_nbp_destroy", fdx_nbp_destroy(nbp), 0);
	if (failures)
		return 1;
	printf("consumer: OK (one %u-byte buffer requested, written, recycled; double recycle "
	       "refused)\n",
	       b.capacity);
	return 0;
}
