/*
 * guard.hpp — the two crossings between C++ exceptions and PostgreSQL's
 * longjmp-based errors.
 *
 *  entry_guard(f)  wraps the body of every extern "C" entry point (SQL
 *                  function, trigger, hook, worker main).  Any C++ exception
 *                  becomes ereport(ERROR) — raised only after the catch block
 *                  has closed, so the exception object is already destroyed.
 *                  A PgError (below) is re-raised unchanged with ReThrowError,
 *                  so the client sees PostgreSQL's own SQLSTATE, detail, hint,
 *                  constraint name, ...
 *
 *  pg_call(f)      runs f — PostgreSQL calls that may ereport — under
 *                  PG_TRY.  An error becomes a C++ PgError exception carrying
 *                  the ErrorData, so C++ objects alive in the frames above are
 *                  destroyed normally.  f must not itself hold C++ objects with
 *                  destructors across a PostgreSQL call (a longjmp inside f
 *                  would skip them); C++ exceptions thrown by f are carried
 *                  across the PG_TRY block and rethrown after PG_END_TRY.
 *
 * A caught PgError means the current (sub)transaction must be aborted: code
 * that swallows one instead of letting it reach the entry guard must roll the
 * transaction back itself (the worker does; nothing else should).
 */
#pragma once

#include "bridge/error.hpp"
#include "bridge/pg.hpp"

#include <exception>
#include <optional>
#include <type_traits>

namespace pg_lifecycle::bridge {

/* A PostgreSQL error travelling through C++ frames. Owns its ErrorData. */
class PgError : public std::exception {
public:
    explicit PgError(ErrorData* edata) noexcept : edata_(edata) {}
    PgError(PgError&& other) noexcept : edata_(std::exchange(other.edata_, nullptr)) {}
    PgError(const PgError&) = delete;
    PgError& operator=(const PgError&) = delete;
    ~PgError() override;

    const char* what() const noexcept override;
    int sqlerrcode() const noexcept { return edata_ ? edata_->sqlerrcode : 0; }
    const ErrorData* data() const noexcept { return edata_; }
    /* Hand the ErrorData over (to the entry guard, which re-raises it). */
    ErrorData* release() noexcept { return std::exchange(edata_, nullptr); }

private:
    ErrorData* edata_;
};

/* Plain data describing a C++ error, filled inside a catch block without
 * anything that can longjmp; raised by raise_captured() afterwards. */
struct CapturedError {
    ErrorData* pg = nullptr; /* a PostgreSQL error to re-raise as it is */
    int code = 0;
    const char* message = nullptr;
    const char* detail = nullptr;
    const char* hint = nullptr;
};

void capture(CapturedError& out, const Error& e) noexcept;
void capture(CapturedError& out, const std::exception& e) noexcept;
void capture_unknown(CapturedError& out) noexcept;
void capture_bad_alloc(CapturedError& out) noexcept;
[[noreturn]] void raise_captured(const CapturedError& err);

/* Calls fn(arg) inside PG_TRY; returns a copy of the error, or nullptr. */
ErrorData* pg_try(void (*fn)(void*), void* arg) noexcept;

template <typename F>
auto entry_guard(F&& f) -> std::invoke_result_t<F&> {
    CapturedError err;
    try {
        return f();
    } catch (PgError& e) {
        err.pg = e.release();
    } catch (const Error& e) {
        capture(err, e);
    } catch (const std::bad_alloc&) {
        capture_bad_alloc(err);
    } catch (const std::exception& e) {
        capture(err, e);
    } catch (...) {
        capture_unknown(err);
    }
    /* The catch block has closed: the exception object is gone. */
    raise_captured(err);
}

template <typename F>
auto pg_call(F&& f) -> std::invoke_result_t<F&> {
    using R = std::invoke_result_t<F&>;
    static_assert(!std::is_reference_v<R>, "pg_call returns values, not references");
    std::exception_ptr cpp_error;
    if constexpr (std::is_void_v<R>) {
        auto thunk = [&]() noexcept {
            try {
                f();
            } catch (...) {
                cpp_error = std::current_exception();
            }
        };
        ErrorData* e = pg_try([](void* p) { (*static_cast<decltype(thunk)*>(p))(); }, &thunk);
        if (e) throw PgError(e);
        if (cpp_error) std::rethrow_exception(cpp_error);
    } else {
        std::optional<R> result;
        auto thunk = [&]() noexcept {
            try {
                result.emplace(f());
            } catch (...) {
                cpp_error = std::current_exception();
            }
        };
        ErrorData* e = pg_try([](void* p) { (*static_cast<decltype(thunk)*>(p))(); }, &thunk);
        if (e) throw PgError(e);
        if (cpp_error) std::rethrow_exception(cpp_error);
        /* f returned (else one of the two above was set): result holds its value. */
        if (!result) std::terminate();
        return std::move(*result);
    }
}

/* CHECK_FOR_INTERRUPTS for C++ loops: a cancel becomes a PgError. */
inline void check_for_interrupts() {
    if (INTERRUPTS_PENDING_CONDITION()) pg_call([] { ProcessInterrupts(); });
}

}  // namespace pg_lifecycle::bridge
