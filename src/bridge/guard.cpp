/*
 * guard.cpp — the non-template half of the error crossings (see guard.hpp).
 */
#include "bridge/guard.hpp"

namespace pg_lifecycle::bridge {

namespace {

/* Where a PostgreSQL error caught by pg_call is kept while it travels: the
 * top transaction's context outlives every SPI connection and subtransaction
 * it can pass through, and goes away with the abort that follows. */
MemoryContext error_holding_context() noexcept {
    return TopTransactionContext != nullptr ? TopTransactionContext : TopMemoryContext;
}

/* strdup into the current memory context without any chance of longjmp. */
const char* copy_text(const char* s) noexcept {
    if (s == nullptr) return nullptr;
    size_t len = std::strlen(s);
    if (len >= MaxAllocSize) len = MaxAllocSize - 1;
    auto* out = static_cast<char*>(palloc_extended(len + 1, MCXT_ALLOC_NO_OOM));
    if (out == nullptr) return nullptr;
    std::memcpy(out, s, len);
    out[len] = '\0';
    return out;
}

const char* copy_nonempty(const std::string& s) noexcept { return s.empty() ? nullptr : copy_text(s.c_str()); }

}  // namespace

PgError::~PgError() {
    if (edata_ != nullptr) FreeErrorData(edata_);
}

const char* PgError::what() const noexcept {
    return (edata_ != nullptr && edata_->message != nullptr) ? edata_->message : "PostgreSQL error";
}

void capture(CapturedError& out, const Error& e) noexcept {
    out.code = e.code();
    out.message = copy_text(e.what());
    out.detail = copy_nonempty(e.detail());
    out.hint = copy_nonempty(e.hint());
}

void capture(CapturedError& out, const std::exception& e) noexcept {
    out.code = ERRCODE_INTERNAL_ERROR;
    out.message = copy_text(e.what());
    out.detail = "raised as a C++ exception inside pg_lifecycle";
}

void capture_unknown(CapturedError& out) noexcept {
    out.code = ERRCODE_INTERNAL_ERROR;
    out.message = "unknown C++ exception inside pg_lifecycle";
}

void capture_bad_alloc(CapturedError& out) noexcept {
    out.code = ERRCODE_OUT_OF_MEMORY;
    out.message = "out of memory";
    out.detail = "a C++ allocation inside pg_lifecycle failed";
}

void raise_captured(const CapturedError& err) {
    if (err.pg != nullptr) ReThrowError(err.pg);
    ereport(ERROR, (errcode(err.code != 0 ? err.code : ERRCODE_INTERNAL_ERROR),
                    errmsg_internal("%s", err.message != nullptr ? err.message : "pg_lifecycle error"),
                    err.detail != nullptr ? errdetail_internal("%s", err.detail) : 0,
                    err.hint != nullptr ? errhint("%s", err.hint) : 0));
    pg_unreachable();
}

ErrorData* pg_try(void (*fn)(void*), void* arg) noexcept {
    MemoryContext caller_cxt = CurrentMemoryContext;
    ErrorData* volatile edata = nullptr;
    PG_TRY();
    { fn(arg); }
    PG_CATCH();
    {
        MemoryContextSwitchTo(error_holding_context());
        edata = CopyErrorData();
        MemoryContextSwitchTo(caller_cxt);
        FlushErrorState();
    }
    PG_END_TRY();
    return edata;
}

/* error.hpp's names are PostgreSQL's codes. */
static_assert(sqlstate::invalid_parameter_value == ERRCODE_INVALID_PARAMETER_VALUE);
static_assert(sqlstate::null_value_not_allowed == ERRCODE_NULL_VALUE_NOT_ALLOWED);
static_assert(sqlstate::invalid_text_representation == ERRCODE_INVALID_TEXT_REPRESENTATION);
static_assert(sqlstate::undefined_function == ERRCODE_UNDEFINED_FUNCTION);
static_assert(sqlstate::e_r_i_e_trigger_protocol_violated == ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED);
static_assert(sqlstate::foreign_key_violation == ERRCODE_FOREIGN_KEY_VIOLATION);
static_assert(sqlstate::undefined_table == ERRCODE_UNDEFINED_TABLE);
static_assert(sqlstate::undefined_column == ERRCODE_UNDEFINED_COLUMN);
static_assert(sqlstate::undefined_object == ERRCODE_UNDEFINED_OBJECT);
static_assert(sqlstate::datatype_mismatch == ERRCODE_DATATYPE_MISMATCH);
static_assert(sqlstate::insufficient_privilege == ERRCODE_INSUFFICIENT_PRIVILEGE);
static_assert(sqlstate::object_not_in_prerequisite_state == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
static_assert(sqlstate::feature_not_supported == ERRCODE_FEATURE_NOT_SUPPORTED);
static_assert(sqlstate::out_of_memory == ERRCODE_OUT_OF_MEMORY);
static_assert(sqlstate::internal_error == ERRCODE_INTERNAL_ERROR);

}  // namespace pg_lifecycle::bridge
