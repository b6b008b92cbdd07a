/*
 * expiry.hpp — row expiry and sessions (SPEC.md §3): their tasks.
 */
#pragma once

#include "bridge/pg.hpp"

namespace pg_lifecycle::expiry {

void init(); /* its settings (settings.cpp), from _PG_init */
void register_expire_task();
void register_session_tasks();

}  // namespace pg_lifecycle::expiry

namespace pg_lifecycle::worker {
void register_history_task();
}
