/*
 * module.cpp — _PG_init: GUCs, hooks and background-worker registration, and
 * nothing else.
 */
#include "bridge/guard.hpp"

extern "C" {
PG_MODULE_MAGIC;
void _PG_init(void);
}

static void init_cpp() {
    using pg_lifecycle::bridge::pg_call;
    pg_call([] { MarkGUCPrefixReserved("lifecycle"); });
}

extern "C" void _PG_init(void) {
    pg_lifecycle::bridge::entry_guard(init_cpp);
}
