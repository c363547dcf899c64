// Buffers for secrets and plaintext: wiped with OPENSSL_cleanse when freed, so
// they do not linger in freed heap memory (or in a core dump).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace xks {

void secure_wipe(void* data, std::size_t size) noexcept;  // OPENSSL_cleanse

template <class T>
struct WipingAllocator {
  using value_type = T;
  WipingAllocator() noexcept = default;
  template <class U>
  WipingAllocator(const WipingAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  T* allocate(std::size_t n) { return std::allocator<T>{}.allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept {
    secure_wipe(p, n * sizeof(T));
    std::allocator<T>{}.deallocate(p, n);
  }
  template <class U>
  bool operator==(const WipingAllocator<U>&) const noexcept {
    return true;
  }
};

// Plaintext, key material, decoded secrets.
using SecureBytes = std::vector<std::uint8_t, WipingAllocator<std::uint8_t>>;
// PINs and SigV4 secret access keys. Never log one. A vector, not a
// basic_string, because the small-string buffer of a string is never wiped.
class SecureString {
 public:
  SecureString() = default;
  explicit SecureString(std::string_view s) : data_(s.begin(), s.end()) {}
  std::string_view view() const noexcept { return {data_.data(), data_.size()}; }
  std::size_t size() const noexcept { return data_.size(); }
  bool empty() const noexcept { return data_.empty(); }
  bool operator==(const SecureString& o) const noexcept { return data_ == o.data_; }

 private:
  std::vector<char, WipingAllocator<char>> data_;
};

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

inline ByteView as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};  // NOLINT
}
inline std::string_view as_chars(ByteView b) noexcept {
  return {reinterpret_cast<const char*>(b.data()), b.size()};  // NOLINT
}

}  // namespace xks
