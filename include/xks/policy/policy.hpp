// Secondary authorization (spec: "Authorization" — the proxy may apply
// its own rules on requestMetadata on top of AWS's; GetHealthStatus is exempt).
//
// A policy is a YAML file of ordered statements, compiled once at load into an
// immutable Policy shared as std::shared_ptr<const Policy>, so a configuration
// reload builds a new one and swaps the pointer while requests in flight finish
// on the old one. Evaluation is a pure function of the policy and the request:
// no I/O, no locks, no allocation unless it denies or an explanation is asked for.
// Semantics, fields and examples: docs/authorization.md.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "xks/core/error.hpp"
#include "xks/policy/glob.hpp"

namespace xks::policy {

// The request as the policy sees it: plain views, so this module does not depend
// on the HTTP or DTO modules. Every optional is nullopt when requestMetadata does
// not carry the field. Views must outlive the evaluate() call only.
struct RequestAttributes {
  std::string_view api;     // "Encrypt" | "Decrypt" | "GetKeyMetadata" | "GetHealthStatus"
  std::string_view key_id;  // externalKeyId from the URI
  std::optional<std::string_view> principal_arn;  // awsPrincipalArn
  std::optional<std::string_view> kms_key_arn;    // kmsKeyArn
  std::optional<std::string_view> kms_operation;  // kmsOperation
  std::optional<std::string_view> via_service;    // kmsViaService
  std::optional<std::string_view> source_vpc;     // awsSourceVpc
  std::optional<std::string_view> source_vpce;    // awsSourceVpce
};

// deciding_sid values that are not statement sids (sids may not use them).
inline constexpr std::string_view kDefaultDenySid = "default-deny";
inline constexpr std::string_view kHealthExemptSid = "health-exempt";

// The special condition value that matches a field the request does not carry.
inline constexpr std::string_view kAbsent = "<absent>";

struct Decision {
  bool allowed = false;         // what the proxy must do: false -> 403 AccessDeniedException
  bool enforced = true;         // the policy's `enforce`; false = dry-run
  bool policy_allowed = false;  // what the statements say; differs from `allowed` only in dry-run
  // The deciding statement's sid, kDefaultDenySid or kHealthExemptSid. Points into
  // the Policy (or static storage): valid while the caller holds the Policy.
  std::string_view deciding_sid;
  // One line for the log: the verdict, the deciding statement and the request
  // attributes looked at. Built only when policy_allowed is false (including a
  // dry-run would-deny) or when EvalOptions::explain is set; empty otherwise.
  std::string explanation;

  // A deny that dry-run let through: log it and count it.
  bool dry_run_denied() const noexcept { return !enforced && !policy_allowed; }
};

struct EvalOptions {
  bool explain = false;  // build Decision::explanation even when allowed
};

enum class Effect : std::uint8_t { Allow, Deny };
std::string_view to_string(Effect effect) noexcept;

// The request fields a condition can look at. Account/KeyAccount/Region are
// derived from the ARNs (see docs/authorization.md, "Accounts and regions").
enum class Field : std::uint8_t {
  Key,           // keys:           externalKeyId
  Principal,     // principals:     awsPrincipalArn
  Account,       // accounts:       account of awsPrincipalArn (the caller)
  KeyAccount,    // key_accounts:   account of kmsKeyArn (the KMS key's owner)
  Region,        // regions:        region of kmsKeyArn
  KmsOperation,  // kms_operations: kmsOperation
  ViaService,    // via_services:   kmsViaService
  SourceVpc,     // source_vpcs:    awsSourceVpc
  SourceVpce,    // source_vpces:   awsSourceVpce
  KeyArn,        // key_arns:       kmsKeyArn
};
inline constexpr std::size_t kFieldCount = 10;
std::string_view field_name(Field field) noexcept;  // the YAML key, e.g. "source_vpces"

// One condition: the field matches any of the patterns (OR), or is absent and
// `matches_absent` (the value "<absent>" was listed).
struct Condition {
  Field field = Field::Key;
  bool matches_absent = false;
  std::vector<Glob> patterns;
};

// Bit per API in Statement::api_mask.
enum class Api : std::uint8_t { GetKeyMetadata = 1, Encrypt = 2, Decrypt = 4 };
inline constexpr std::uint8_t kAllApis = 7;
// The Api for "Encrypt", "Decrypt", "GetKeyMetadata"; nullopt for anything else,
// GetHealthStatus included (it is never subject to a policy).
std::optional<Api> parse_api(std::string_view name) noexcept;

struct Statement {
  std::string sid;
  Effect effect = Effect::Deny;
  std::size_t index = 0;              // position in `statements`, from 0
  std::uint8_t api_mask = kAllApis;   // `apis`; all three when not listed
  std::vector<Condition> conditions;  // AND; cheapest first, not as written
};

class Policy {
 public:
  // Use load_policy / parse_policy; public for make_shared.
  Policy(std::string source, bool enforce, std::vector<Statement> statements);

  // Health requests return allowed with kHealthExemptSid; an api the policy does
  // not know is denied with kDefaultDenySid. Otherwise: any matching deny statement
  // decides (the first one, in file order), else the first matching allow, else
  // kDefaultDenySid. With enforce: false, `allowed` is true whatever the verdict.
  Decision evaluate(const RequestAttributes& request, EvalOptions options = {}) const;

  bool enforce() const noexcept { return enforce_; }
  const std::string& source() const noexcept { return source_; }  // file name, for logs
  const std::vector<Statement>& statements() const noexcept { return statements_; }

 private:
  std::string source_;
  bool enforce_;
  std::vector<Statement> statements_;
  // Statement indices per API bit (0: GetKeyMetadata, 1: Encrypt, 2: Decrypt),
  // so an evaluation skips statements about other APIs without looking at them.
  std::array<std::vector<std::uint32_t>, 3> denies_;
  std::array<std::vector<std::uint32_t>, 3> allows_;
};

using PolicyPtr = std::shared_ptr<const Policy>;

// A policy that cannot be used. what() is one line: file (and line), statement
// index and sid, field, what is wrong and how to fix it.
class PolicyError : public std::runtime_error {
 public:
  PolicyError(std::string file, std::optional<std::size_t> line,
              std::optional<std::size_t> statement, std::string sid, std::string field,
              std::string problem, std::string fix);
  const std::string& file() const noexcept { return file_; }
  std::optional<std::size_t> statement() const noexcept { return statement_; }
  const std::string& sid() const noexcept { return sid_; }
  const std::string& field() const noexcept { return field_; }
  const std::string& problem() const noexcept { return problem_; }

 private:
  std::string file_;
  std::optional<std::size_t> statement_;
  std::string sid_;
  std::string field_;
  std::string problem_;
};

// Reads and compiles a policy file. Throws PolicyError (startup/reload only).
PolicyPtr load_policy(const std::filesystem::path& file);
// Compiles YAML text; `source` names it in errors and logs. Throws PolicyError.
PolicyPtr parse_policy(std::string_view yaml, std::string source = "<policy>");

// The 403 of a denial (spec: AccessDeniedException for secondary authorization).
// The client message is generic — statement names are the operator's business —
// and the detail (log only) is the decision's explanation.
Error to_error(const Decision& decision);

}  // namespace xks::policy
