/*
 * error.hpp — the C++ side of pg_lifecycle's error model (pure C++, no
 * PostgreSQL header).
 *
 * Capability code reports a user-facing error by throwing pg_lifecycle::Error
 * with a SQLSTATE, a message, and optionally a detail and a hint.  The entry
 * guard (bridge/guard.hpp) turns it into ereport(ERROR) after the C++ catch has
 * closed.  SQLSTATEs are packed exactly like PostgreSQL's MAKE_SQLSTATE so the
 * two sides agree without sharing headers.
 */
#pragma once

#include <exception>
#include <string>
#include <string_view>

namespace pg_lifecycle {

/* PostgreSQL's MAKE_SQLSTATE: five characters, six bits each. */
constexpr int make_sqlstate(std::string_view s) {
    if (s.size() != 5) return -1;
    int code = 0;
    for (int i = 0; i < 5; ++i) {
        char c = s[i];
        bool ok = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z');
        if (!ok) return -1;
        code += ((c - '0') & 0x3F) << (6 * i);
    }
    return code;
}

/* The five-character text of a packed SQLSTATE. */
std::string sqlstate_text(int code);

/* The SQLSTATEs pure C++ code raises, named after PostgreSQL's ERRCODE_*
 * (lower case, without the class prefix PostgreSQL adds to some); code that
 * includes PostgreSQL's headers may use ERRCODE_* directly.  guard.cpp checks
 * each against PostgreSQL's own value. */
namespace sqlstate {
inline constexpr int invalid_parameter_value = make_sqlstate("22023");     /* ERRCODE_INVALID_PARAMETER_VALUE */
inline constexpr int null_value_not_allowed = make_sqlstate("22004");      /* ERRCODE_NULL_VALUE_NOT_ALLOWED */
inline constexpr int invalid_text_representation = make_sqlstate("22P02"); /* ERRCODE_INVALID_TEXT_REPRESENTATION */
inline constexpr int undefined_function = make_sqlstate("42883");          /* ERRCODE_UNDEFINED_FUNCTION */
/* A trigger function called other than as the trigger it is written for. */
inline constexpr int e_r_i_e_trigger_protocol_violated =
    make_sqlstate("39P01");                                           /* ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED */
inline constexpr int foreign_key_violation = make_sqlstate("23503");  /* ERRCODE_FOREIGN_KEY_VIOLATION */
inline constexpr int undefined_table = make_sqlstate("42P01");        /* ERRCODE_UNDEFINED_TABLE */
inline constexpr int undefined_column = make_sqlstate("42703");       /* ERRCODE_UNDEFINED_COLUMN */
inline constexpr int undefined_object = make_sqlstate("42704");       /* ERRCODE_UNDEFINED_OBJECT */
inline constexpr int datatype_mismatch = make_sqlstate("42804");      /* ERRCODE_DATATYPE_MISMATCH */
inline constexpr int insufficient_privilege = make_sqlstate("42501"); /* ERRCODE_INSUFFICIENT_PRIVILEGE */
inline constexpr int object_not_in_prerequisite_state =
    make_sqlstate("55000");                                          /* ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE */
inline constexpr int feature_not_supported = make_sqlstate("0A000"); /* ERRCODE_FEATURE_NOT_SUPPORTED */
inline constexpr int out_of_memory = make_sqlstate("53200");         /* ERRCODE_OUT_OF_MEMORY */
inline constexpr int internal_error = make_sqlstate("XX000");        /* ERRCODE_INTERNAL_ERROR */
}  // namespace sqlstate

/* A user-facing error raised from C++. */
class Error : public std::exception {
public:
    Error(int code, std::string message, std::string detail = {}, std::string hint = {})
        : code_(code), message_(std::move(message)), detail_(std::move(detail)), hint_(std::move(hint)) {}

    int code() const noexcept { return code_; }
    const char* what() const noexcept override { return message_.c_str(); }
    const std::string& detail() const noexcept { return detail_; }
    const std::string& hint() const noexcept { return hint_; }

private:
    int code_;
    std::string message_;
    std::string detail_;
    std::string hint_;
};

}  // namespace pg_lifecycle
