/* SPDX-License-Identifier: MIT */
/**
 * @file version.h
 * Library version. The same major version means ABI-compatible.
 */
#ifndef FDX_FDX_VERSION_H
#define FDX_FDX_VERSION_H

#include <fdx/common.h>

#define FDX_VERSION_MAJOR 0
#define FDX_VERSION_MINOR 1
#define FDX_VERSION_PATCH 0

FDX_BEGIN_DECLS

/**
 * The version of the library actually linked, as
 * (major << 16) | (minor << 8) | patch.
 *
 * @return the packed version; never fails. Thread-safe.
 */
FDX_API unsigned fdx_version(void);

/**
 * The same version as a string "MAJOR.MINOR.PATCH".
 *
 * @return a static string (the caller must not free it); never NULL.
 *   Thread-safe.
 */
FDX_API const char *fdx_version_string(void);

FDX_END_DECLS

#endif /* FDX_FDX_VERSION_H */
