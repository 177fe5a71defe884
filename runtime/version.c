/* SPDX-License-Identifier: MIT */
#include <fdx/version.h>

#define FDX_STR_(x) #x
#define FDX_STR(x) FDX_STR_(x)

FDX_API unsigned fdx_version(void)
{
	return (FDX_VERSION_MAJOR << 16) | (FDX_VERSION_MINOR << 8) | FDX_VERSION_PATCH;
}

FDX_API const char *fdx_version_string(void)
{
	return FDX_STR(FDX_VERSION_MAJOR) "." FDX_STR(FDX_VERSION_MINOR) "." FDX_STR(
		FDX_VERSION_PATCH);
}
