/* SPDX-License-Identifier: MIT */
/**
 * @file common.h
 * Export and linkage macros shared by every public fdx header.
 */
#ifndef FDX_FDX_COMMON_H
#define FDX_FDX_COMMON_H

#if defined(FDX_BUILDING_LIBRARY)
#define FDX_API __attribute__((visibility("default")))
#else
#define FDX_API
#endif

#ifdef __cplusplus
#define FDX_BEGIN_DECLS extern "C" {
#define FDX_END_DECLS }
#else
#define FDX_BEGIN_DECLS
#define FDX_END_DECLS
#endif

#endif /* FDX_FDX_COMMON_H */
