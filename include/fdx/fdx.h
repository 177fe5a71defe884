/* SPDX-License-Identifier: MIT */
/**
 * @file fdx.h
 * fdx: a shared-memory, zero-copy data exchange with credit-based flow
 * control for stream-processing TaskManagers. This umbrella header includes
 * the whole public API.
 *
 * Conventions, for C and for foreign-function callers alike: objects are
 * opaque handles made by a create (or attach) function and freed by their
 * destroy; arguments are integers and pointers, never structs by value. Functions
 * that can fail return 0 (or a count) or a negative code (see error.h).
 * Pointer arguments are borrowed for the call unless a doc says otherwise.
 * Options and statistics structs start with uint32_t size, set by the
 * caller to the sizeof it was compiled with: a create function refuses
 * options smaller than its own struct (-EINVAL); a stats function accepts
 * any size >= 8 and writes only that many bytes.
 */
#ifndef FDX_FDX_FDX_H
#define FDX_FDX_FDX_H

#include <fdx/common.h>
#include <fdx/version.h>
#include <fdx/error.h>
#include <fdx/log.h>
#include <fdx/region.h>
#include <fdx/network_buffer_pool.h>
#include <fdx/local_buffer_pool.h>
#include <fdx/exchange.h>
#include <fdx/partition.h>
#include <fdx/gate.h>

#endif /* FDX_FDX_FDX_H */
