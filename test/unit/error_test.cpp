// Unit tests for the pure part of the error model (src/bridge/error.*).
#include "bridge/error.hpp"

#include <gtest/gtest.h>

using namespace pg_lifecycle;

TEST(Sqlstate, PacksLikePostgres) {
    // MAKE_SQLSTATE('2','2','0','2','3') in PostgreSQL's elog.h.
    EXPECT_EQ(make_sqlstate("22023"), 2 + (2 << 6) + (0 << 12) + (2 << 18) + (3 << 24));
    // ERRCODE_INTERNAL_ERROR 'X','X','0','0','0'
    EXPECT_EQ(make_sqlstate("XX000"), ('X' - '0') + (('X' - '0') << 6));
}

TEST(Sqlstate, RoundTrips) {
    for (const char* s : {"22023", "42P01", "42703", "42501", "55000", "23503", "XX000", "0A000"}) {
        EXPECT_EQ(sqlstate_text(make_sqlstate(s)), s);
    }
}

TEST(Sqlstate, RejectsMalformed) {
    EXPECT_EQ(make_sqlstate("2202"), -1);
    EXPECT_EQ(make_sqlstate("220233"), -1);
    EXPECT_EQ(make_sqlstate("22a23"), -1);
}

TEST(Error, CarriesAllParts) {
    Error e(sqlstate::invalid_parameter_value, "bad", "the detail", "the hint");
    EXPECT_EQ(e.code(), make_sqlstate("22023"));
    EXPECT_STREQ(e.what(), "bad");
    EXPECT_EQ(e.detail(), "the detail");
    EXPECT_EQ(e.hint(), "the hint");
    try {
        throw e;
    } catch (const std::exception& caught) {
        EXPECT_STREQ(caught.what(), "bad");
    }
}
