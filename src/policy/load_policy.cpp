// Policy YAML -> compiled Policy. Strict on purpose: an authorization file with a
// misspelled key would otherwise silently allow or deny, so every unknown key,
// value or shape is a PolicyError naming the place and the fix.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "xks/policy/policy.hpp"

namespace xks::policy {
namespace {

constexpr std::string_view kTopKeys = "version, enforce, description, statements";
constexpr std::string_view kStatementKeys =
    "sid, effect, description, apis, keys, principals, accounts, key_accounts, regions, "
    "kms_operations, via_services, source_vpcs, source_vpces, key_arns";
constexpr std::size_t kMaxSidChars = 128;

std::optional<std::size_t> line_of(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return std::nullopt;
  return static_cast<std::size_t>(m.line) + 1;
}

std::optional<Field> parse_field(std::string_view key) noexcept {
  for (std::size_t i = 0; i < kFieldCount; ++i) {
    const auto f = static_cast<Field>(i);
    if (field_name(f) == key) return f;
  }
  return std::nullopt;
}

bool is_alnum(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool is_wild(char c) noexcept { return c == '*' || c == '?' || c == '\\'; }

// Per field, the bytes a value may contain besides wildcards; catching an ARN in
// `accounts` or a typo'd key id at load is cheaper than a mysterious deny later.
struct FieldRule {
  bool (*ok)(char) noexcept;
  std::string_view expected;
};

FieldRule rule_for(Field f) {
  switch (f) {
    case Field::Key:
      return {[](char c) noexcept {
                return is_alnum(c) || c == '.' || c == '-' || c == '_' || is_wild(c);
              },
              "an externalKeyId is 1-128 of A-Z a-z 0-9 . - _"};
    case Field::Account:
    case Field::KeyAccount:
      return {[](char c) noexcept { return (c >= '0' && c <= '9') || is_wild(c); },
              "an account is 12 digits, e.g. 111122223333 (not an ARN)"};
    case Field::Region:
      return {[](char c) noexcept {
                return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || is_wild(c);
              },
              "a region is lower-case letters, digits and '-', e.g. eu-west-1"};
    default:
      return {[](char c) noexcept { return c >= 0x20 && c <= 0x7e; }, "values are printable ASCII"};
  }
}

int cost(Field f) noexcept {
  switch (f) {
    case Field::Key: return 0;
    case Field::Account: return 1;
    case Field::ViaService: return 2;
    case Field::SourceVpce: return 3;
    case Field::SourceVpc: return 4;
    case Field::KmsOperation: return 5;
    case Field::KeyAccount: return 6;
    case Field::Region: return 7;
    case Field::Principal: return 8;
    case Field::KeyArn: return 9;
  }
  return 10;
}

class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

  PolicyPtr load(std::string_view text) {
    YAML::Node root;
    try {
      root = YAML::Load(std::string(text));
    } catch (const YAML::Exception& e) {
      std::optional<std::size_t> line;
      if (e.mark.line >= 0) line = static_cast<std::size_t>(e.mark.line) + 1;
      throw PolicyError(source_, line, std::nullopt, "", "", "YAML syntax error: " + e.msg,
                        "fix the YAML at that line");
    }
    if (!root.IsMap()) {
      fail(root, "", root.IsNull() ? "the policy is empty" : "the policy is not a mapping",
           "write `enforce: true` and a `statements:` list (see docs/authorization.md)");
    }
    bool enforce = true;
    bool have_statements = false;
    std::vector<Statement> statements;
    for (const auto& kv : root) {
      const std::string key = scalar_key(kv.first);
      const YAML::Node& value = kv.second;
      if (key == "version") {
        if (!value.IsScalar() || value.Scalar() != "1") {
          fail(value, key, "unsupported version", "use `version: 1` or leave it out");
        }
      } else if (key == "enforce") {
        enforce = boolean(value, key);
      } else if (key == "description") {
        if (!value.IsScalar()) fail(value, key, "not a string", "write one line of text");
      } else if (key == "statements") {
        have_statements = true;
        if (value.IsNull()) continue;  // "statements:" with nothing = deny everything
        if (!value.IsSequence()) {
          fail(value, key, "not a list", "write `statements:` followed by `- sid: ...` items");
        }
        for (std::size_t i = 0; i < value.size(); ++i) statements.push_back(statement(value[i], i));
      } else {
        fail(kv.first, key, "unknown key \"" + key + "\"", "use one of " + std::string(kTopKeys));
      }
    }
    if (!have_statements) {
      fail(root, "statements", "missing",
           "add a `statements:` list; an empty list denies every request");
    }
    return std::make_shared<const Policy>(source_, enforce, std::move(statements));
  }

 private:
  [[noreturn]] void fail(const YAML::Node& at, std::string field, std::string problem,
                         std::string fix) const {
    throw PolicyError(source_, line_of(at), index_, sid_, std::move(field), std::move(problem),
                      std::move(fix));
  }

  std::string scalar_key(const YAML::Node& k) const {
    if (!k.IsScalar()) fail(k, "", "a key that is not a string", "use plain keys");
    return k.Scalar();
  }

  bool boolean(const YAML::Node& v, const std::string& field) const {
    if (v.IsScalar()) {
      const std::string& s = v.Scalar();
      if (s == "true") return true;
      if (s == "false") return false;
    }
    fail(v, field, "not true or false", "write `" + field + ": true` or `" + field + ": false`");
  }

  Statement statement(const YAML::Node& node, std::size_t index) {
    index_ = index;
    sid_.clear();
    if (!node.IsMap()) {
      fail(node, "", "a statement is not a mapping",
           "write each statement as `- sid: ...` with `effect:` and conditions");
    }
    // The sid first, so every later error can name it.
    if (const YAML::Node sid = node["sid"]; sid) {
      if (!sid.IsScalar()) fail(sid, "sid", "not a string", "give the statement a short name");
      sid_ = sid.Scalar();
      check_sid(sid);
    }

    Statement s;
    s.index = index;
    s.sid = sid_;
    bool have_effect = false;
    bool have_apis = false;
    std::set<Field> seen;
    for (const auto& kv : node) {
      const std::string key = scalar_key(kv.first);
      const YAML::Node& value = kv.second;
      if (key == "sid" || key == "description") {
        if (!value.IsScalar()) fail(value, key, "not a string", "write one line of text");
      } else if (key == "effect") {
        have_effect = true;
        const std::string e = value.IsScalar() ? value.Scalar() : std::string();
        if (e == "allow") {
          s.effect = Effect::Allow;
        } else if (e == "deny") {
          s.effect = Effect::Deny;
        } else {
          fail(value, key, "unknown effect \"" + e + "\"", "use allow or deny");
        }
      } else if (key == "apis") {
        have_apis = true;
        s.api_mask = apis(value);
      } else if (const auto field = parse_field(key); field) {
        s.conditions.push_back(condition(*field, value));
        seen.insert(*field);
      } else {
        std::string fix = "use one of " + std::string(kStatementKeys);
        if (parse_field(key + "s") || key == "api") fix = "did you mean \"" + key + "s\"? " + fix;
        fail(kv.first, key, "unknown key \"" + key + "\"", std::move(fix));
      }
    }
    // Cheapest and most selective first: a key id or an account is a short compare
    // that rejects most statements; ARNs are long. The verdict does not depend on
    // the order (AND), only the condition named in a near-miss explanation does.
    std::stable_sort(
        s.conditions.begin(), s.conditions.end(),
        [](const Condition& a, const Condition& b) { return cost(a.field) < cost(b.field); });
    if (sid_.empty()) {
      fail(node, "sid", "missing", "add `sid: <name>`; deny logs name the statement by its sid");
    }
    if (!have_effect) fail(node, "effect", "missing", "add `effect: allow` or `effect: deny`");
    if (!have_apis && s.conditions.empty()) {
      fail(node, "", "empty statement: no apis and no conditions",
           "list at least one condition; to match every request write `keys: [\"*\"]`");
    }
    for (const std::string& other : sids_) {
      if (other == sid_) {
        fail(node["sid"], "sid", "duplicate sid \"" + sid_ + "\"",
             "give every statement its own sid");
      }
    }
    sids_.push_back(sid_);
    return s;
  }

  void check_sid(const YAML::Node& at) const {
    if (sid_.empty() || sid_.size() > kMaxSidChars) {
      fail(at, "sid", "empty or longer than 128 characters", "use a short name");
    }
    for (const char c : sid_) {
      if (!is_alnum(c) && c != '-' && c != '_' && c != '.' && c != ':') {
        fail(at, "sid", "character '" + std::string(1, c) + "' in the sid",
             "use A-Z a-z 0-9 - _ . : (sids appear in log lines)");
      }
    }
    if (sid_ == kDefaultDenySid || sid_ == kHealthExemptSid) {
      fail(at, "sid", "\"" + sid_ + "\" is reserved", "choose another name");
    }
  }

  std::vector<std::string> values(const YAML::Node& v, const std::string& field) const {
    std::vector<std::string> out;
    if (v.IsScalar()) {
      out.push_back(v.Scalar());
    } else if (v.IsSequence()) {
      for (const auto& item : v) {
        if (!item.IsScalar()) fail(item, field, "a list item is not a string", "quote the value");
        out.push_back(item.Scalar());
      }
    } else {
      fail(v, field, v.IsNull() ? "no values" : "not a list of strings",
           "write `" + field + ": [\"value\", ...]` or remove the field");
    }
    if (out.empty()) {
      fail(v, field, "empty list (it would never match)",
           "list at least one value, or remove the field");
    }
    return out;
  }

  std::uint8_t apis(const YAML::Node& v) const {
    std::uint8_t mask = 0;
    for (const std::string& name : values(v, "apis")) {
      if (name == "*") {
        mask = kAllApis;
      } else if (const auto api = parse_api(name); api) {
        mask = static_cast<std::uint8_t>(mask | static_cast<std::uint8_t>(*api));
      } else if (name == "GetHealthStatus") {
        fail(v, "apis", "GetHealthStatus is never subject to the policy (spec)",
             "remove it; health checks are always allowed");
      } else {
        fail(v, "apis", "unknown api \"" + name + "\"",
             "use Encrypt, Decrypt, GetKeyMetadata or \"*\" (names are case-sensitive)");
      }
    }
    return mask;
  }

  Condition condition(Field field, const YAML::Node& v) const {
    const std::string name(field_name(field));
    Condition c;
    c.field = field;
    const FieldRule rule = rule_for(field);
    for (const std::string& value : values(v, name)) {
      if (value == kAbsent) {
        if (field == Field::Key) {
          fail(v, name, "\"<absent>\" in keys", "every request has a key id; remove it");
        }
        c.matches_absent = true;
        continue;
      }
      for (const char ch : value) {
        if (!rule.ok(ch)) {
          fail(v, name, "value \"" + value + "\" has the character '" + std::string(1, ch) + "'",
               std::string(rule.expected));
        }
      }
      std::string problem;
      auto glob = Glob::compile(value, &problem);
      if (!glob) {
        fail(v, name, "bad wildcard in \"" + value + "\": " + problem,
             "'*' matches any run, '?' one character, write \\* \\? \\\\ for literals");
      }
      c.patterns.push_back(std::move(*glob));
    }
    return c;
  }

  std::string source_;
  std::optional<std::size_t> index_;
  std::string sid_;
  std::vector<std::string> sids_;
};

}  // namespace

PolicyError::PolicyError(std::string file, std::optional<std::size_t> line,
                         std::optional<std::size_t> statement, std::string sid, std::string field,
                         std::string problem, std::string fix)
    : std::runtime_error([&] {
        // Appends only: GCC 12 reports a false -Wrestrict on "literal" + string at -O2.
        std::string m = file;
        if (line) m.append(":").append(std::to_string(*line));
        m += ": ";
        if (statement) {
          m.append("statements[").append(std::to_string(*statement)).append("]");
          if (!sid.empty()) m.append(" (sid \"").append(sid).append("\")");
          m += ": ";
        }
        if (!field.empty()) m.append("field '").append(field).append("': ");
        m += problem;
        m += "; fix: ";
        m += fix;
        return m;
      }()),
      file_(std::move(file)),
      statement_(statement),
      sid_(std::move(sid)),
      field_(std::move(field)),
      problem_(std::move(problem)) {}

PolicyPtr parse_policy(std::string_view yaml, std::string source) {
  return Loader(std::move(source)).load(yaml);
}

PolicyPtr load_policy(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw PolicyError(file.string(), std::nullopt, std::nullopt, "", "",
                      "cannot open the policy file", "check the path and its permissions");
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_policy(text.str(), file.string());
}

}  // namespace xks::policy
