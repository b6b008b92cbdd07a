/* error.cpp — pure helpers of the C++ error model (no PostgreSQL header). */
#include "bridge/error.hpp"

namespace pg_lifecycle {

std::string sqlstate_text(int code) {
    std::string s(5, '0');
    for (int i = 0; i < 5; ++i) {
        s[i] = static_cast<char>(((code >> (6 * i)) & 0x3F) + '0');
    }
    return s;
}

}  // namespace pg_lifecycle
