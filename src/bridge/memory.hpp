/*
 * memory.hpp — C++ memory that lives in PostgreSQL memory contexts.
 *
 *  PallocAllocator<T>  a Boost.Container / std allocator over palloc.  It never
 *                      longjmps: allocation uses MCXT_ALLOC_NO_OOM and throws
 *                      std::bad_alloc on failure (the entry guard reports it
 *                      as SQLSTATE 53200).
 *  make_owned<T>(cxt)  constructs a long-lived C++ object inside a memory
 *                      context and registers a reset callback that runs its
 *                      destructor when the context goes away.
 *
 * The containers below take their allocator (and so their memory context)
 * explicitly: an element that is itself a container (a pstring in a pvector)
 * is constructed with the allocator of the container it goes into
 * (to_pstring), never with a default one — a default PallocAllocator is bound
 * to whatever context is current, which SPI and the executor switch.  The
 * backend-lifetime caches built on them are in cache.hpp.
 */
#pragma once

#include "bridge/pg.hpp" /* Boost.Container's headers come first, there */

#include <functional>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pg_lifecycle::bridge {

template <typename T>
class PallocAllocator {
public:
    using value_type = T;

    PallocAllocator() noexcept : cxt_(CurrentMemoryContext) {}
    explicit PallocAllocator(MemoryContext cxt) noexcept : cxt_(cxt) {}
    template <typename U>
    PallocAllocator(const PallocAllocator<U>& other) noexcept : cxt_(other.context()) {}

    T* allocate(std::size_t n) {
        if (n > MaxAllocHugeSize / sizeof(T)) throw std::bad_alloc();
        void* p = MemoryContextAllocExtended(cxt_, n * sizeof(T), MCXT_ALLOC_NO_OOM | MCXT_ALLOC_HUGE);
        if (p == nullptr) throw std::bad_alloc();
        return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t) noexcept { pfree(p); }

    MemoryContext context() const noexcept { return cxt_; }
    template <typename U>
    bool operator==(const PallocAllocator<U>& o) const noexcept {
        return cxt_ == o.context();
    }
    template <typename U>
    bool operator!=(const PallocAllocator<U>& o) const noexcept {
        return cxt_ != o.context();
    }

private:
    MemoryContext cxt_;
};

template <typename T>
using pvector = boost::container::vector<T, PallocAllocator<T>>;
using pstring = boost::container::basic_string<char, std::char_traits<char>, PallocAllocator<char>>;
/* Sorted vectors: small, contiguous, no node per entry; an insertion moves
 * the entries after it (pointers to entries do not survive one). */
template <typename K, typename V>
using pflat_map = boost::container::flat_map<K, V, std::less<K>, PallocAllocator<std::pair<K, V>>>;
/* A tree: pointers to its entries survive insertions of other keys. */
template <typename K, typename V>
using pmap = boost::container::map<K, V, std::less<K>, PallocAllocator<std::pair<const K, V>>>;

/* s as a pstring in cxt, and back. */
inline pstring to_pstring(std::string_view s, MemoryContext cxt) {
    return pstring(s.data(), s.size(), PallocAllocator<char>(cxt));
}
inline std::string to_string(const pstring& s) { return std::string(s.data(), s.size()); }
/* Strings as a pvector of pstrings in cxt, and back. */
template <typename Strings>
pvector<pstring> to_pstrings(const Strings& strings, MemoryContext cxt) {
    pvector<pstring> out{PallocAllocator<pstring>(cxt)};
    out.reserve(strings.size());
    for (const auto& s : strings) out.push_back(to_pstring(s, cxt));
    return out;
}
inline std::vector<std::string> to_strings(const pvector<pstring>& strings) {
    std::vector<std::string> out;
    out.reserve(strings.size());
    for (const pstring& s : strings) out.push_back(to_string(s));
    return out;
}

/* Construct a T inside cxt; its destructor runs when cxt is reset or deleted. */
template <typename T, typename... Args>
T* make_owned(MemoryContext cxt, Args&&... args) {
    struct Holder {
        MemoryContextCallback cb;
        alignas(T) unsigned char storage[sizeof(T)];
    };
    auto* h = static_cast<Holder*>(MemoryContextAllocExtended(cxt, sizeof(Holder), MCXT_ALLOC_NO_OOM));
    if (h == nullptr) throw std::bad_alloc();
    T* obj;
    try {
        obj = new (h->storage) T(std::forward<Args>(args)...);
    } catch (...) {
        pfree(h);
        throw;
    }
    h->cb.func = [](void* p) { static_cast<T*>(p)->~T(); };
    h->cb.arg = obj;
    MemoryContextRegisterResetCallback(cxt, &h->cb); /* cannot fail */
    return obj;
}

}  // namespace pg_lifecycle::bridge
