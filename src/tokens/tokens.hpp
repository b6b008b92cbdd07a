/*
 * tokens.hpp — refresh-token families (SPEC.md §2): settings and the
 * retention task.
 */
#pragma once

#include "bridge/pg.hpp"

namespace pg_lifecycle::tokens {

/* Defines lifecycle.token_reuse_grace and lifecycle.token_retention and
 * registers the key file's callbacks.  Called from _PG_init before the
 * lifecycle.* prefix is reserved (MarkGUCPrefixReserved drops placeholders
 * of settings that are not yet defined, which would lose a value set in
 * postgresql.conf). */
void init();
/* The token_purge maintenance task (from _PG_init, in pass order). */
void register_purge_task();

/* lifecycle.token_reuse_grace, parsed (>= 0). */
const Interval* reuse_grace();
/* lifecycle.token_retention, parsed (> 0). */
const Interval* retention();

}  // namespace pg_lifecycle::tokens
