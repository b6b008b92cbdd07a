// Unit tests for the pure part of exact counts (src/counts/filter.*): filter
// parsing and validation, and reading EXPLAIN's row estimate.
#include "counts/filter.hpp"

#include <gtest/gtest.h>

using namespace pg_lifecycle;
using namespace pg_lifecycle::counts;

namespace {

const std::vector<std::string> dims = {"outcome", "user_id", "n"};

Filter parse(std::string_view json) { return parse_filter(json, dims, "public.audit_log"); }

void expect_error(std::string_view json, const std::string& message_part, const std::string& hint_part = {}) {
    try {
        parse(json);
        ADD_FAILURE() << "no error for " << json;
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), sqlstate::invalid_parameter_value) << json;
        EXPECT_NE(std::string(e.what()).find(message_part), std::string::npos) << e.what();
        if (!hint_part.empty()) {
            EXPECT_NE(e.hint().find(hint_part), std::string::npos) << e.hint();
        }
    }
}

}  // namespace

TEST(CountsFilter, EmptyObjectHasNoCondition) {
    EXPECT_TRUE(parse("{}").conditions.empty());
    EXPECT_TRUE(parse("  { }  ").conditions.empty());
}

TEST(CountsFilter, OneValue) {
    Filter f = parse(R"({"outcome": "error"})");
    ASSERT_EQ(f.conditions.size(), 1u);
    EXPECT_EQ(f.conditions[0].dimension, 0u);
    EXPECT_EQ(f.conditions[0].values, std::vector<std::string>{"error"});
    EXPECT_FALSE(f.conditions[0].match_null);
}

TEST(CountsFilter, SeveralValuesAndDimensionsInDimensionOrder) {
    Filter f = parse(R"({"user_id": "u-42", "outcome": ["error", "permission_denied"]})");
    ASSERT_EQ(f.conditions.size(), 2u);
    EXPECT_EQ(f.conditions[0].dimension, 0u);
    EXPECT_EQ(f.conditions[0].values, (std::vector<std::string>{"error", "permission_denied"}));
    EXPECT_EQ(f.conditions[1].dimension, 1u);
    EXPECT_EQ(f.conditions[1].values, std::vector<std::string>{"u-42"});
}

TEST(CountsFilter, NullMatchesSqlNull) {
    Filter f = parse(R"({"user_id": null})");
    ASSERT_EQ(f.conditions.size(), 1u);
    EXPECT_TRUE(f.conditions[0].match_null);
    EXPECT_TRUE(f.conditions[0].values.empty());
    Filter g = parse(R"({"user_id": ["u-1", null]})");
    EXPECT_TRUE(g.conditions[0].match_null);
    EXPECT_EQ(g.conditions[0].values, std::vector<std::string>{"u-1"});
}

TEST(CountsFilter, NumbersAndBooleansKeepTheirText) {
    Filter f = parse(R"({"n": [1, -2.5e3, true, false]})");
    EXPECT_EQ(f.conditions[0].values, (std::vector<std::string>{"1", "-2.5e3", "true", "false"}));
}

TEST(CountsFilter, EmptyListMatchesNothing) {
    Filter f = parse(R"({"outcome": []})");
    ASSERT_EQ(f.conditions.size(), 1u);
    EXPECT_TRUE(f.conditions[0].values.empty());
    EXPECT_FALSE(f.conditions[0].match_null);
}

TEST(CountsFilter, StringEscapes) {
    Filter f = parse(R"({"outcome": "a\"b\\c\u00e9\ud83d\ude00\n"})");
    EXPECT_EQ(f.conditions[0].values[0], "a\"b\\c\xc3\xa9\xf0\x9f\x98\x80\n");
}

TEST(CountsFilter, RepeatedKeyKeepsTheLast) {
    Filter f = parse(R"({"outcome": "a", "outcome": "b"})");
    ASSERT_EQ(f.conditions.size(), 1u);
    EXPECT_EQ(f.conditions[0].values, std::vector<std::string>{"b"});
}

TEST(CountsFilter, UnknownKeyListsTheDimensions) {
    expect_error(R"({"outcom": "error"})", "\"outcom\" is not a dimension of table public.audit_log",
                 "The dimensions of public.audit_log are: outcome, user_id, n.");
    try {
        parse_filter(R"({"x": 1})", {}, "t");
        ADD_FAILURE();
    } catch (const Error& e) {
        EXPECT_NE(e.hint().find("without dimensions"), std::string::npos);
    }
}

TEST(CountsFilter, BadShapes) {
    expect_error(R"(["error"])", "must be a JSON object, not an array");
    expect_error(R"("error")", "must be a JSON object, not a string");
    expect_error("42", "must be a JSON object, not a number");
    expect_error("null", "must be a JSON object, not null");
    expect_error(R"({"outcome": {"eq": "x"}})", "not an object");
    expect_error(R"({"outcome": [["x"]]})", "not a nested array");
    expect_error(R"({"outcome": [{"a": 1}]})", "not an object");
}

TEST(CountsFilter, InvalidJson) {
    for (const char* bad : {"", "{", R"({"a" 1})", R"({"outcome": "x",})", R"({"outcome": tru})",
                            R"({"outcome": "x"} x)", R"({"outcome": "\ud800"})", R"({"outcome": 01x})"}) {
        expect_error(bad, "not valid JSON");
    }
}

TEST(CountsExplain, TopPlanRows) {
    const char* json = R"([
  {
    "Plan": {
      "Node Type": "Aggregate",
      "Startup Cost": 1.0,
      "Plan Rows": 1,
      "Plan Width": 8,
      "Plans": [
        {
          "Node Type": "Seq Scan",
          "Plan Rows": 1234,
          "Plan Width": 0
        }
      ]
    }
  }
])";
    EXPECT_EQ(explain_plan_rows(json), 1.0);
    EXPECT_EQ(explain_plan_rows(R"([{"Plan": {"Plan Rows": 2.5e6}}])"), 2.5e6);
    EXPECT_FALSE(explain_plan_rows("[]").has_value());
    EXPECT_FALSE(explain_plan_rows(R"({"Plan Rows": x})").has_value());
}
