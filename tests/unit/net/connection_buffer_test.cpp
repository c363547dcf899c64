// The connection read buffer keeps no copy of a request once it is served.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <string_view>

#include "xks/net/server.hpp"

namespace xks::net {
namespace {

// Every byte of the buffer's storage, readable or not.
std::string storage(ConnectionBuffer& b) {
  const std::string pending(static_cast<const char*>(b.data().data()), b.size());
  const auto spare = b.prepare(b.capacity() - b.size());
  // prepare() leaves the readable bytes where they are when they fit, so the
  // storage is [readable][spare] once the readable bytes start the block.
  std::string all = pending;
  all.append(static_cast<const char*>(spare.data()), spare.size());
  return all;
}

void put(ConnectionBuffer& b, std::string_view s) {
  std::memcpy(b.prepare(s.size()).data(), s.data(), s.size());
  b.commit(s.size());
}

constexpr std::string_view kPlaintext = "SGVsbG8sIHBsYWludGV4dCBvZiBhbiBFbmNyeXB0IHJlcXVlc3Q=";

TEST(ConnectionBuffer, ConsumedRequestIsWiped) {
  ConnectionBuffer b;
  const std::string request = "POST /kms/xks/v1/keys/k/encrypt HTTP/1.1\r\n\r\n{\"plaintext\":\"" +
                              std::string(kPlaintext) + "\"}";
  put(b, request);
  b.consume(b.size());  // what the parser does
  ASSERT_NE(storage(b).find(kPlaintext), std::string::npos) << "the test must see the copy";
  wipe_consumed(b);
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(storage(b).find(kPlaintext), std::string::npos);
  EXPECT_EQ(storage(b).find("encrypt"), std::string::npos);
}

TEST(ConnectionBuffer, PipelinedBytesAreKept) {
  ConnectionBuffer b;
  const std::string first = "{\"plaintext\":\"" + std::string(kPlaintext) + "\"}";
  const std::string next = "POST /next HTTP/1.1\r\n";
  put(b, first + next);
  b.consume(first.size());
  wipe_consumed(b);
  ASSERT_EQ(b.size(), next.size());
  EXPECT_EQ(std::string_view(static_cast<const char*>(b.data().data()), b.size()), next);
  EXPECT_EQ(storage(b).find(kPlaintext), std::string::npos);
}

TEST(ConnectionBuffer, LargePipelinedTail) {
  ConnectionBuffer b;
  const std::string tail(10000, 'x');
  put(b, std::string(kPlaintext) + tail);
  b.consume(kPlaintext.size());
  wipe_consumed(b);
  ASSERT_EQ(b.size(), tail.size());
  EXPECT_EQ(std::string(static_cast<const char*>(b.data().data()), b.size()), tail);
  EXPECT_EQ(storage(b).find(kPlaintext), std::string::npos);
}

}  // namespace
}  // namespace xks::net
