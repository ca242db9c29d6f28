// Reading tokenizer.json fields with errors that say where in the document the problem is.
// `where` is a path such as "pre_tokenizer.pretokenizers[1]".
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "odmoe/core/error.h"
#include "regex.h"
#include "unicode.h"

namespace odmoe::tokenizer_detail {

using nlohmann::json;

inline const char* json_type_name(const json& v) {
  return v.type_name();
}

// The field, or nullptr when it is missing or null (Option fields of the library).
inline const json* find_field(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

inline const json& require_field(const json& obj, const char* key, const std::string& where) {
  const json* v = find_field(obj, key);
  ODMOE_CHECK(v != nullptr, kTokenizer, "missing-field", where << " has no '" << key << "'",
              "the tokenizer.json is malformed or from an unsupported version of tokenizers");
  return *v;
}

inline std::string get_string(const json& obj, const char* key, const std::string& where) {
  const json& v = require_field(obj, key, where);
  ODMOE_CHECK(v.is_string(), kTokenizer, "field-type",
              where << "." << key << " must be a string, not " << json_type_name(v), "");
  return v.get<std::string>();
}

inline std::optional<std::string> get_opt_string(const json& obj, const char* key, const std::string& where) {
  const json* v = find_field(obj, key);
  if (!v) return std::nullopt;
  ODMOE_CHECK(v->is_string(), kTokenizer, "field-type",
              where << "." << key << " must be a string or null, not " << json_type_name(*v), "");
  return v->get<std::string>();
}

// A bool field; `def` is used when it is missing or null (no default: the field is required).
inline bool get_bool(const json& obj, const char* key, const std::string& where, std::optional<bool> def) {
  const json* v = find_field(obj, key);
  if (!v) {
    ODMOE_CHECK(def.has_value(), kTokenizer, "missing-field", where << " has no '" << key << "'", "");
    return *def;
  }
  ODMOE_CHECK(v->is_boolean(), kTokenizer, "field-type",
              where << "." << key << " must be true or false, not " << json_type_name(*v), "");
  return v->get<bool>();
}

// A non-negative integer no larger than `max`.
inline uint64_t get_uint(const json& v, const std::string& what, uint64_t max) {
  ODMOE_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0), kTokenizer,
              "field-type", what << " must be a non-negative integer, not " << v.dump(), "");
  const auto x = v.get<uint64_t>();
  ODMOE_CHECK(x <= max, kTokenizer, "field-range", what << " is " << x << ", more than " << max, "");
  return x;
}

// A string field holding exactly one character (Rust `char`), as a code point.
inline uint32_t get_char(const json& obj, const char* key, const std::string& where) {
  const std::string s = get_string(obj, key, where);
  size_t len = 0;
  ODMOE_CHECK(!s.empty() && (utf8_decode(s, 0, &len), len == s.size()), kTokenizer, "field-type",
              where << "." << key << " must be a single character, not '" << s << "'", "");
  return utf8_decode(s, 0, &len);
}

// A Split/Replace pattern: {"String": "..."} or {"Regex": "..."}. An empty literal is
// refused (the library would match it at every position).
inline Pattern get_pattern(const json& obj, const std::string& where) {
  const json& p = require_field(obj, "pattern", where);
  ODMOE_CHECK(p.is_object() && p.size() == 1, kTokenizer, "field-type",
              where << ".pattern must be {\"String\": ...} or {\"Regex\": ...}, not " << p.dump(), "");
  if (const json* s = find_field(p, "String")) {
    ODMOE_CHECK(s->is_string(), kTokenizer, "field-type", where << ".pattern.String must be a string", "");
    ODMOE_CHECK(!s->get<std::string>().empty(), kTokenizer, "unsupported",
                where << ".pattern is the empty string, which odmoe does not support", "");
    return Pattern::literal(s->get<std::string>());
  }
  if (const json* r = find_field(p, "Regex")) {
    ODMOE_CHECK(r->is_string(), kTokenizer, "field-type", where << ".pattern.Regex must be a string", "");
    return Pattern::regex(r->get<std::string>());
  }
  ODMOE_THROW(kTokenizer, "field-type",
              where << ".pattern must be {\"String\": ...} or {\"Regex\": ...}, not " << p.dump(), "");
}

enum class PrependScheme { kAlways, kFirst, kNever };

// Metaspace's prepend_scheme (default "always"), with the older add_prefix_space spelling.
inline PrependScheme get_prepend_scheme(const json& d, const std::string& where) {
  const std::string scheme = get_opt_string(d, "prepend_scheme", where).value_or("always");
  PrependScheme s = PrependScheme::kAlways;
  if (scheme == "first")
    s = PrependScheme::kFirst;
  else if (scheme == "never")
    s = PrependScheme::kNever;
  else
    ODMOE_CHECK(scheme == "always", kTokenizer, "field-value",
                where << ".prepend_scheme is '" << scheme << "', not always, first or never", "");
  if (const json* a = find_field(d, "add_prefix_space")) {
    ODMOE_CHECK(a->is_boolean(), kTokenizer, "field-type", where << ".add_prefix_space must be true or false",
                "");
    if (!a->get<bool>()) {
      ODMOE_CHECK(s == PrependScheme::kNever, kTokenizer, "field-value",
                  where << ": add_prefix_space false does not match prepend_scheme '" << scheme << "'", "");
    }
  }
  return s;
}

}  // namespace odmoe::tokenizer_detail
