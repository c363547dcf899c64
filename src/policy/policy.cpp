#include "xks/policy/policy.hpp"
#include "xks/core/ascii.hpp"

#include <utility>

#include "xks/policy/arn.hpp"

namespace xks::policy {
namespace {

constexpr std::array<std::string_view, kFieldCount> kFieldNames = {
    "keys",           "principals",   "accounts",    "key_accounts", "regions",
    "kms_operations", "via_services", "source_vpcs", "source_vpces", "key_arns",
};

// The attribute names used in explanations (singular, as the request carries one).
constexpr std::array<std::string_view, kFieldCount> kAttributeNames = {
    "key",           "principal",   "account",    "key_account", "region",
    "kms_operation", "via_service", "source_vpc", "source_vpce", "key_arn",
};

constexpr std::size_t field_index(Field f) noexcept { return static_cast<std::size_t>(f); }

using FieldValues = std::array<std::optional<std::string_view>, kFieldCount>;

// Derives every field once per evaluation, so statements share the ARN parsing.
FieldValues field_values(const RequestAttributes& r) noexcept {
  FieldValues v{};
  v[field_index(Field::Key)] = r.key_id;
  v[field_index(Field::Principal)] = r.principal_arn;
  if (r.principal_arn) v[field_index(Field::Account)] = arn_account(*r.principal_arn);
  if (r.kms_key_arn) {
    if (const auto parts = parse_arn(*r.kms_key_arn); parts) {
      v[field_index(Field::KeyAccount)] = account_of(*parts);
      if (!parts->region.empty()) v[field_index(Field::Region)] = parts->region;
    }
  }
  v[field_index(Field::KmsOperation)] = r.kms_operation;
  v[field_index(Field::ViaService)] = r.via_service;
  v[field_index(Field::SourceVpc)] = r.source_vpc;
  v[field_index(Field::SourceVpce)] = r.source_vpce;
  v[field_index(Field::KeyArn)] = r.kms_key_arn;
  return v;
}

bool condition_matches(const Condition& c, const FieldValues& values) noexcept {
  const auto& v = values[field_index(c.field)];
  if (!v) return c.matches_absent;
  for (const Glob& g : c.patterns) {
    if (g.matches(*v)) return true;
  }
  return false;
}

// The first condition of `s` that fails, or nullptr when the statement matches.
const Condition* first_failing(const Statement& s, const FieldValues& values) noexcept {
  for (const Condition& c : s.conditions) {
    if (!condition_matches(c, values)) return &c;
  }
  return nullptr;
}

int api_bit(Api api) noexcept {
  switch (api) {
    case Api::GetKeyMetadata: return 0;
    case Api::Encrypt: return 1;
    case Api::Decrypt: return 2;
  }
  return 0;
}

// Request values are attacker-influenced text going into a log line: quote them
// and escape anything that is not printable ASCII.
void append_quoted(std::string& out, std::string_view v) { core::append_quoted(out, v); }

void append_request(std::string& out, const RequestAttributes& r, const FieldValues& values) {
  out += "request: api=";
  append_quoted(out, r.api);
  for (std::size_t i = 0; i < kFieldCount; ++i) {
    out.push_back(' ');
    out += kAttributeNames[i];
    out.push_back('=');
    if (values[i]) {
      append_quoted(out, *values[i]);
    } else {
      out += kAbsent;
    }
  }
}

void append_statement(std::string& out, const Statement& s) {
  out += "statement \"";
  out += s.sid;
  out += "\" (#";
  out += std::to_string(s.index);
  out += ", ";
  out += to_string(s.effect);
  out += ')';
}

// Why no allow statement applied: the first failing condition of each allow
// statement about this API, bounded so one log line stays readable.
void append_near_misses(std::string& out, const std::vector<Statement>& statements,
                        const std::vector<std::uint32_t>& allows, const FieldValues& values) {
  constexpr std::size_t kMaxListed = 8;
  if (allows.empty()) {
    out += "; no allow statement covers this api";
    return;
  }
  out += "; allow statements not matching:";
  std::size_t listed = 0;
  for (const std::uint32_t i : allows) {
    if (listed == kMaxListed) {
      out += " ... and " + std::to_string(allows.size() - listed) + " more";
      break;
    }
    const Statement& s = statements[i];
    const Condition* c = first_failing(s, values);
    if (c == nullptr) continue;
    out += listed == 0 ? " " : ", ";
    out += '"';
    out += s.sid;
    out += "\" on ";
    out += field_name(c->field);
    ++listed;
  }
}

}  // namespace

std::string_view to_string(Effect effect) noexcept {
  return effect == Effect::Allow ? "allow" : "deny";
}

std::string_view field_name(Field field) noexcept { return kFieldNames[field_index(field)]; }

std::optional<Api> parse_api(std::string_view name) noexcept {
  if (name == "Encrypt") return Api::Encrypt;
  if (name == "Decrypt") return Api::Decrypt;
  if (name == "GetKeyMetadata") return Api::GetKeyMetadata;
  return std::nullopt;
}

Policy::Policy(std::string source, bool enforce, std::vector<Statement> statements)
    : source_(std::move(source)), enforce_(enforce), statements_(std::move(statements)) {
  for (std::size_t i = 0; i < statements_.size(); ++i) {
    const Statement& s = statements_[i];
    auto& lists = s.effect == Effect::Deny ? denies_ : allows_;
    for (std::size_t bit = 0; bit < lists.size(); ++bit) {
      if ((s.api_mask & (1U << bit)) != 0) lists[bit].push_back(static_cast<std::uint32_t>(i));
    }
  }
}

Decision Policy::evaluate(const RequestAttributes& request, EvalOptions options) const {
  Decision d;
  d.enforced = enforce_;
  // Spec: GetHealthStatus is never subject to secondary authorization.
  if (request.api == "GetHealthStatus") {
    d.allowed = d.policy_allowed = true;
    d.deciding_sid = kHealthExemptSid;
    if (options.explain) d.explanation = "allowed: GetHealthStatus is exempt from the policy";
    return d;
  }

  const FieldValues values = field_values(request);
  const auto api = parse_api(request.api);
  const Statement* decider = nullptr;
  if (api) {
    const auto bit = static_cast<std::size_t>(api_bit(*api));
    for (const std::uint32_t i : denies_[bit]) {
      if (first_failing(statements_[i], values) == nullptr) {
        decider = &statements_[i];
        break;
      }
    }
    if (decider == nullptr) {
      for (const std::uint32_t i : allows_[bit]) {
        if (first_failing(statements_[i], values) == nullptr) {
          decider = &statements_[i];
          break;
        }
      }
    }
  }

  d.policy_allowed = decider != nullptr && decider->effect == Effect::Allow;
  d.allowed = d.policy_allowed || !enforce_;
  d.deciding_sid = decider != nullptr ? std::string_view(decider->sid) : kDefaultDenySid;
  if (d.policy_allowed && !options.explain) return d;

  std::string& e = d.explanation;
  e.reserve(1024);  // request ARNs alone are often 300+ bytes
  if (!enforce_ && !d.policy_allowed) e += "dry-run (enforce: false), would deny: ";
  if (d.policy_allowed) {
    e += "allowed by ";
    append_statement(e, *decider);
  } else if (decider != nullptr) {
    e += "denied by ";
    append_statement(e, *decider);
  } else if (!api) {
    e += "denied by default-deny: the api is not Encrypt, Decrypt or GetKeyMetadata";
  } else {
    e += "denied by default-deny";
    append_near_misses(e, statements_, allows_[static_cast<std::size_t>(api_bit(*api))], values);
  }
  e += "; policy ";
  e += source_;
  e += "; ";
  append_request(e, request, values);
  return d;
}

Error to_error(const Decision& decision) {
  return make_error(
      ErrorName::AccessDeniedException,
      "The request was denied by the proxy's authorization policy",
      decision.explanation.empty() ? std::string(decision.deciding_sid) : decision.explanation);
}

}  // namespace xks::policy
