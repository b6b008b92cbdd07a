/*
 * filter.cpp — filter parsing and EXPLAIN output reading for exact counts
 * (see filter.hpp).  Pure C++: a small JSON reader, enough for the text that
 * jsonb_out and EXPLAIN (FORMAT JSON) produce (and strict about anything else).
 */
#include "counts/filter.hpp"

#include <algorithm>
#include <cstdint>

namespace pg_lifecycle::counts {

namespace {

Error bad_filter(std::string message, std::string hint = {}) {
    return Error(sqlstate::invalid_parameter_value, std::move(message), {}, std::move(hint));
}

constexpr const char* shape_hint =
    "Write {\"dimension\": value} or {\"dimension\": [value, ...]}; a value is a string, number, boolean or null.";

/* One JSON value, as much as a filter needs. */
struct Value {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    std::string text;                                   /* Bool, Number, String */
    std::vector<Value> items;                           /* Array */
    std::vector<std::pair<std::string, Value>> members; /* Object */
};

const char* kind_name(Value::Kind k) {
    switch (k) {
        case Value::Null: return "null";
        case Value::Bool: return "a boolean";
        case Value::Number: return "a number";
        case Value::String: return "a string";
        case Value::Array: return "an array";
        case Value::Object: return "an object";
    }
    return "a value";
}

class Reader {
public:
    explicit Reader(std::string_view s) : s_(s) {}

    Value document() {
        Value v = value(0);
        skip_space();
        if (pos_ != s_.size()) fail();
        return v;
    }

private:
    [[noreturn]] void fail() const { throw bad_filter("filter is not valid JSON", shape_hint); }

    void skip_space() {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
            ++pos_;
        }
    }
    bool eat(char c) {
        skip_space();
        if (pos_ < s_.size() && s_[pos_] == c) {
            ++pos_;
            return true;
        }
        return false;
    }
    bool literal(std::string_view word) {
        if (s_.substr(pos_, word.size()) == word) {
            pos_ += word.size();
            return true;
        }
        return false;
    }

    Value value(int depth) {
        if (depth > 64) fail();
        skip_space();
        if (pos_ >= s_.size()) fail();
        Value v;
        char c = s_[pos_];
        if (c == '{') {
            ++pos_;
            v.kind = Value::Object;
            if (eat('}')) return v;
            do {
                skip_space();
                if (pos_ >= s_.size() || s_[pos_] != '"') fail();
                std::string key = string();
                if (!eat(':')) fail();
                v.members.emplace_back(std::move(key), value(depth + 1));
            } while (eat(','));
            if (!eat('}')) fail();
        } else if (c == '[') {
            ++pos_;
            v.kind = Value::Array;
            if (eat(']')) return v;
            do {
                v.items.push_back(value(depth + 1));
            } while (eat(','));
            if (!eat(']')) fail();
        } else if (c == '"') {
            v.kind = Value::String;
            v.text = string();
        } else if (literal("true")) {
            v.kind = Value::Bool;
            v.text = "true";
        } else if (literal("false")) {
            v.kind = Value::Bool;
            v.text = "false";
        } else if (literal("null")) {
            v.kind = Value::Null;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            v.kind = Value::Number;
            v.text = number();
        } else {
            fail();
        }
        return v;
    }

    std::string number() {
        std::size_t start = pos_;
        if (s_[pos_] == '-') ++pos_;
        auto digits = [&] {
            std::size_t d = pos_;
            while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
            if (pos_ == d) fail();
        };
        digits();
        if (pos_ < s_.size() && s_[pos_] == '.') {
            ++pos_;
            digits();
        }
        if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
            ++pos_;
            if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
            digits();
        }
        return std::string(s_.substr(start, pos_ - start));
    }

    static void append_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    uint32_t hex4() {
        if (pos_ + 4 > s_.size()) fail();
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i) {
            char c = s_[pos_++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
            else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
            else fail();
        }
        return v;
    }

    std::string string() {
        ++pos_; /* opening quote */
        std::string out;
        while (true) {
            if (pos_ >= s_.size()) fail();
            char c = s_[pos_++];
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) fail();
            if (c != '\\') {
                out += c;
                continue;
            }
            if (pos_ >= s_.size()) fail();
            char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = hex4();
                    if (cp >= 0xD800 && cp < 0xDC00) {
                        if (!literal("\\u")) fail();
                        uint32_t lo = hex4();
                        if (lo < 0xDC00 || lo >= 0xE000) fail();
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else if (cp >= 0xDC00 && cp < 0xE000) {
                        fail();
                    }
                    append_utf8(out, cp);
                    break;
                }
                default: fail();
            }
        }
    }

    std::string_view s_;
    std::size_t pos_ = 0;
};

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string fmt_value_error(const std::string& key, Value::Kind kind) {
    return "filter value for " + quoted(key) +
           " must be a string, number, boolean or null (or an array of them), not " +
           (kind == Value::Array ? std::string("a nested array") : std::string(kind_name(kind)));
}

void add_value(DimensionFilter& f, const Value& v, const std::string& key) {
    switch (v.kind) {
        case Value::Null: f.match_null = true; return;
        case Value::Bool:
        case Value::Number:
        case Value::String: f.values.push_back(v.text); return;
        default: throw bad_filter(fmt_value_error(key, v.kind), shape_hint);
    }
}

}  // namespace

std::string join_names(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) {
        if (!out.empty()) out += ", ";
        out += n;
    }
    return out;
}

Filter parse_filter(std::string_view json, const std::vector<std::string>& dimensions, std::string_view table) {
    Value doc = Reader(json).document();
    if (doc.kind != Value::Object) {
        throw bad_filter(std::string("filter must be a JSON object, not ") + kind_name(doc.kind), shape_hint);
    }
    Filter out;
    for (const auto& [key, v] : doc.members) {
        auto it = std::find(dimensions.begin(), dimensions.end(), key);
        if (it == dimensions.end()) {
            std::string hint =
                dimensions.empty()
                    ? "Table " + std::string(table) + " is counted without dimensions: only {} is accepted."
                    : "The dimensions of " + std::string(table) + " are: " + join_names(dimensions) + ".";
            throw bad_filter(quoted(key) + " is not a dimension of table " + std::string(table), hint);
        }
        std::size_t index = static_cast<std::size_t>(it - dimensions.begin());
        /* jsonb keeps one of duplicate keys; a text filter could repeat one. */
        auto same = std::find_if(out.conditions.begin(), out.conditions.end(),
                                 [index](const DimensionFilter& f) { return f.dimension == index; });
        if (same != out.conditions.end()) out.conditions.erase(same);
        DimensionFilter f;
        f.dimension = index;
        if (v.kind == Value::Array) {
            for (const auto& item : v.items) add_value(f, item, key);
        } else {
            add_value(f, v, key);
        }
        out.conditions.push_back(std::move(f));
    }
    std::sort(out.conditions.begin(), out.conditions.end(),
              [](const DimensionFilter& a, const DimensionFilter& b) { return a.dimension < b.dimension; });
    return out;
}

std::optional<double> explain_plan_rows(std::string_view explain_json) {
    /* EXPLAIN (FORMAT JSON) prints the top node first: its "Plan Rows" is the
     * first one in the text ("Plan Rows" never occurs inside a string there,
     * as object keys and values are printed escaped). */
    constexpr std::string_view key = "\"Plan Rows\":";
    std::size_t at = explain_json.find(key);
    if (at == std::string_view::npos) return std::nullopt;
    std::size_t pos = at + key.size();
    while (pos < explain_json.size() && explain_json[pos] == ' ') ++pos;
    std::size_t end = pos;
    while (end < explain_json.size() &&
           ((explain_json[end] >= '0' && explain_json[end] <= '9') || explain_json[end] == '.' ||
            explain_json[end] == 'e' || explain_json[end] == 'E' || explain_json[end] == '+' ||
            explain_json[end] == '-')) {
        ++end;
    }
    if (end == pos) return std::nullopt;
    try {
        return std::stod(std::string(explain_json.substr(pos, end - pos)));
    } catch (...) {
        return std::nullopt;
    }
}

}  // namespace pg_lifecycle::counts
