#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "odmoe/core/error.h"
#include "odmoe/weights/safetensors.h"
#include "test_util.h"

namespace odmoe {
namespace {

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

std::string make_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

void expect_header_error(const std::string& header, uint64_t data_bytes, const std::string& words) {
  try {
    parse_safetensors_header(header, data_bytes);
    FAIL() << "accepted: " << header;
  } catch (const Error& e) {
    EXPECT_EQ(e.subsystem(), Subsystem::kSafetensors);
    EXPECT_NE(e.message().find(words), std::string::npos) << e.message();
  }
}

TEST(SafetensorsHeader, ParsesValidHeader) {
  const auto m = parse_safetensors_header(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})",
      32);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m.at("a").shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(m.at("b").dtype, "BF16");
  EXPECT_EQ(m.at("b").begin, 24u);
}

TEST(SafetensorsHeader, RejectsBadHeaders) {
  expect_header_error("{not json", 0, "not valid JSON");
  expect_header_error("[1,2]", 0, "not a JSON object");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4, "outside the data section");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "need");
  expect_header_error(R"({"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", 8, "unknown dtype");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "shape");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2]}})", 8, "data_offsets");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "outside");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
                      "impossibly large");
  expect_header_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      12, "overlap");
}

TEST(SafetensorsFile, ReadsAndConvertsToF32) {
  test::TempDir dir;
  const float f[2] = {1.5f, -2.25f};
  const uint16_t bf[2] = {0x3fc0, 0xc010};  // 1.5, -2.25
  const uint16_t h[2] = {0x3e00, 0xc080};   // 1.5, -2.25
  std::string data(reinterpret_cast<const char*>(f), 8);
  data += std::string(reinterpret_cast<const char*>(bf), 4) + std::string(reinterpret_cast<const char*>(h), 4);
  const std::string header = R"({"f":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},)"
                             R"("h":{"dtype":"F16","shape":[1,2],"data_offsets":[12,16]}})";
  test::write_file(dir.str("x.safetensors"), make_file(header, data));
  SafetensorsFile file(dir.str("x.safetensors"));
  for (const char* name : {"f", "b", "h"}) {
    float out[2] = {0, 0};
    file.read_f32(file.entries().at(name), 0, 2, out);
    EXPECT_EQ(out[0], 1.5f) << name;
    EXPECT_EQ(out[1], -2.25f) << name;
  }
}

TEST(SafetensorsFile, RejectsTruncatedAndLyingFiles) {
  test::TempDir dir;
  const std::string header = R"({"f":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  const std::string good = make_file(header, std::string(16, '\0'));
  struct Case {
    const char* name;
    std::string bytes;
    const char* words;
  } cases[] = {
      {"empty", "", "too short"},
      {"short", "abc", "too short"},
      {"truncated-data", good.substr(0, good.size() - 4), "outside the data section"},
      {"lying-length", le64(1ull << 40) + header, "larger than the file"},
      {"length-past-end", le64(header.size() + 100) + header, "larger than the file"},
      {"garbage-header", le64(5) + "\xff\xfe{{{", "not valid JSON"},
  };
  for (const auto& c : cases) {
    const std::string p = dir.str(std::string(c.name) + ".safetensors");
    test::write_file(p, c.bytes);
    try {
      SafetensorsFile f(p);
      ADD_FAILURE() << c.name << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(e.message().find(c.words), std::string::npos) << c.name << ": " << e.message();
      EXPECT_NE(e.message().find(p), std::string::npos) << "the message names the file: " << e.message();
    }
  }
}

}  // namespace
}  // namespace odmoe
