/*
 * gucs.cpp — helpers of the lifecycle.* settings' check hooks (see gucs.hpp;
 * each capability defines its settings in its own init()).
 */
#include "gucs.hpp"

#include "bridge/spi.hpp"

namespace pg_lifecycle::gucs {

bool preloaded = false;

Interval* interval_value(const char* text) {
    return bridge::pg_call([text] {
        return DatumGetIntervalP(
            DirectFunctionCall3(interval_in, CStringGetDatum(text), ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
    });
}

bool check_interval_setting(char** newval, void** extra, bool allow_zero, const char* example) {
    Interval parsed;
    try {
        parsed = *interval_value(*newval);
    } catch (const bridge::PgError& e) {
        /* interval_in has no side effects: reporting its message is all there is to do. */
        GUC_check_errdetail("%s", e.what());
        return false;
    }
    int sign = bridge::interval_sign(&parsed);
    if (sign < 0 || (sign == 0 && !allow_zero)) {
        GUC_check_errdetail("The value must be %s interval, such as '%s'.",
                            allow_zero ? "zero or a positive" : "a positive", example);
        return false;
    }
    /* Freed by guc.c: free() on 15, guc_free() from 16 on (compat.hpp). */
    auto* out = static_cast<Interval*>(guc_malloc(LOG, sizeof(Interval)));
    if (out == nullptr) {
        GUC_check_errdetail("out of memory");
        return false;
    }
    *out = parsed;
    *extra = out;
    return true;
}

bool check_positive_interval(char** newval, void** extra, GucSource source) {
    (void)source;
    return bridge::entry_guard([=] { return check_interval_setting(newval, extra, false, "7 days"); });
}

}  // namespace pg_lifecycle::gucs
