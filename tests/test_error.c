/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <fdx/fdx.h>

static void test_strerror_names_every_fdx_code(void **state)
{
	static const int codes[] = {
		FDX_ENOTMEMFD,	 FDX_EUNSEALED, FDX_ESIZE,	  FDX_EBADREGION, FDX_ENOHUGEPAGES,
		FDX_ENOSEGMENTS, FDX_ENOTOWNED, FDX_EALREADYFREE, FDX_ECLOSED,	  FDX_EPROTO};
	(void)state;
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = fdx_strerror(codes[i]);

		assert_non_null(s);
		assert_string_not_equal(s, "unknown error");
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(s, fdx_strerror(codes[j]));
	}
}

static void test_strerror_maps_errno_and_unknown(void **state)
{
	(void)state;
	assert_string_equal(fdx_strerror(0), "success");
	assert_string_equal(fdx_strerror(-EINVAL), "Invalid argument");
	assert_string_equal(fdx_strerror(-EAGAIN), "Resource temporarily unavailable");
	assert_string_equal(fdx_strerror(-999999), "unknown error");
	assert_string_equal(fdx_strerror(12345), "unknown error");
}

static void test_version_matches_header(void **state)
{
	(void)state;
	assert_int_equal(fdx_version(),
			 (FDX_VERSION_MAJOR << 16) | (FDX_VERSION_MINOR << 8) | FDX_VERSION_PATCH);
	assert_non_null(strchr(fdx_version_string(), '.'));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strerror_names_every_fdx_code),
		cmocka_unit_test(test_strerror_maps_errno_and_unknown),
		cmocka_unit_test(test_version_matches_header),
	};
	return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
