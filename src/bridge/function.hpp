/*
 * function.hpp — declaring SQL-callable functions as thin extern "C"
 * trampolines.
 *
 *   LIFECYCLE_FUNCTION(lifecycle_session_touch)
 *   {
 *       ... C++ body using fcinfo; throw pg_lifecycle::Error on bad input ...
 *   }
 *
 * expands to PG_FUNCTION_INFO_V1, an extern "C" function with no locals that
 * calls the body inside entry_guard, and the body as a static C++ function.
 */
#pragma once

#include "bridge/spi.hpp"

#define LIFECYCLE_FUNCTION(name)                                                             \
    extern "C" {                                                                             \
    PG_FUNCTION_INFO_V1(name);                                                               \
    }                                                                                        \
    static Datum name##_cpp(FunctionCallInfo fcinfo);                                        \
    extern "C" Datum name(PG_FUNCTION_ARGS) {                                                \
        return ::pg_lifecycle::bridge::entry_guard([fcinfo] { return name##_cpp(fcinfo); }); \
    }                                                                                        \
    static Datum name##_cpp(FunctionCallInfo fcinfo)

namespace pg_lifecycle::bridge {

/* Argument n must not be NULL (for functions that are not STRICT). */
inline void require_arg(FunctionCallInfo fcinfo, int n, const char* name) {
    if (PG_ARGISNULL(n)) {
        throw Error(sqlstate::null_value_not_allowed, fmt::format("{} must not be NULL", name));
    }
}

inline std::string text_arg(FunctionCallInfo fcinfo, int n) {
    text* t = pg_call([&] { return PG_GETARG_TEXT_PP(n); });
    return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

}  // namespace pg_lifecycle::bridge
