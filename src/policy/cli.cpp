#include "xks/policy/cli.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "xks/policy/policy.hpp"

namespace xks::policy {
namespace {

constexpr std::string_view kCheckUsage = "usage: xksctl policy check <policy.yaml>\n";
constexpr std::string_view kTestUsage =
    "usage: xksctl policy test <policy.yaml> <request.json> [--api Encrypt|Decrypt|"
    "GetKeyMetadata|GetHealthStatus] [--key <externalKeyId>] [--quiet]\n"
    "  request.json is an XKS request body with requestMetadata; without --api the api\n"
    "  is inferred from the body (plaintext: Encrypt, ciphertext: Decrypt, else\n"
    "  GetKeyMetadata). Exit 0 allow, 1 deny (also when enforce is false), 2 error.\n";

std::vector<std::string_view> to_args(int argc, char** argv) {
  std::vector<std::string_view> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return args;
}

PolicyPtr load_or_report(std::string_view path, std::ostream& err) {
  try {
    return load_policy(std::filesystem::path(path));
  } catch (const PolicyError& e) {
    err << "invalid policy: " << e.what() << '\n';
  }
  return nullptr;
}

std::string api_list(std::uint8_t mask) {
  if (mask == kAllApis) return "*";
  std::string s;
  for (const auto& [api, name] :
       {std::pair{Api::GetKeyMetadata, "GetKeyMetadata"}, std::pair{Api::Encrypt, "Encrypt"},
        std::pair{Api::Decrypt, "Decrypt"}}) {
    if ((mask & static_cast<std::uint8_t>(api)) == 0) continue;
    if (!s.empty()) s += ',';
    s += name;
  }
  return s;
}

// The request body's strings, owned, so RequestAttributes can view them.
struct OwnedRequest {
  std::string api;
  std::string key_id;
  std::optional<std::string> principal_arn, kms_key_arn, kms_operation, via_service, source_vpc,
      source_vpce;

  RequestAttributes view() const {
    auto opt = [](const std::optional<std::string>& s) -> std::optional<std::string_view> {
      if (!s) return std::nullopt;
      return std::string_view(*s);
    };
    return RequestAttributes{api,
                             key_id,
                             opt(principal_arn),
                             opt(kms_key_arn),
                             opt(kms_operation),
                             opt(via_service),
                             opt(source_vpc),
                             opt(source_vpce)};
  }
};

// nullopt (after saying why on err) when the file is not an XKS request body.
std::optional<OwnedRequest> read_request(std::string_view path, std::ostream& err) {
  std::ifstream in{std::filesystem::path(path)};
  if (!in) {
    err << "cannot open request file " << path << '\n';
    return std::nullopt;
  }
  nlohmann::json body;
  try {
    body = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    err << path << ": not JSON: " << e.what() << '\n';
    return std::nullopt;
  }
  if (!body.is_object() || !body.contains("requestMetadata") ||
      !body["requestMetadata"].is_object()) {
    err << path << ": no requestMetadata object (expected an XKS request body)\n";
    return std::nullopt;
  }
  const nlohmann::json& md = body["requestMetadata"];
  OwnedRequest r;
  bool ok = true;
  auto take = [&](const char* name, std::optional<std::string>& into) {
    const auto it = md.find(name);
    if (it == md.end() || it->is_null()) return;
    if (!it->is_string()) {
      err << path << ": requestMetadata." << name << " is not a string\n";
      ok = false;
      return;
    }
    into = it->get<std::string>();
  };
  take("awsPrincipalArn", r.principal_arn);
  take("kmsKeyArn", r.kms_key_arn);
  take("kmsOperation", r.kms_operation);
  take("kmsViaService", r.via_service);
  take("awsSourceVpc", r.source_vpc);
  take("awsSourceVpce", r.source_vpce);
  if (!ok) return std::nullopt;
  if (body.contains("plaintext")) {
    r.api = "Encrypt";
  } else if (body.contains("ciphertext")) {
    r.api = "Decrypt";
  } else {
    r.api = "GetKeyMetadata";
  }
  return r;
}

}  // namespace

int policy_check(std::span<const std::string_view> args, std::ostream& out, std::ostream& err) {
  if (args.size() != 1 || args[0].starts_with("-")) {
    err << kCheckUsage;
    return kExitUsage;
  }
  const PolicyPtr policy = load_or_report(args[0], err);
  if (!policy) return kExitUsage;
  std::size_t allows = 0;
  for (const Statement& s : policy->statements()) allows += s.effect == Effect::Allow ? 1U : 0U;
  out << policy->source() << ": OK, " << policy->statements().size() << " statement(s): " << allows
      << " allow, " << policy->statements().size() - allows
      << " deny; enforce: " << (policy->enforce() ? "true" : "false (dry-run)") << '\n';
  for (const Statement& s : policy->statements()) {
    out << "  #" << s.index << ' ' << to_string(s.effect) << " \"" << s.sid
        << "\" apis=" << api_list(s.api_mask);
    for (const Condition& c : s.conditions) out << ' ' << field_name(c.field);
    out << '\n';
  }
  if (policy->statements().empty()) out << "  (no statements: every request is denied)\n";
  return kExitAllow;
}

int policy_test(std::span<const std::string_view> args, std::ostream& out, std::ostream& err) {
  std::vector<std::string_view> positional;
  std::optional<std::string_view> api;
  std::optional<std::string_view> key;
  bool quiet = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view a = args[i];
    auto value = [&](std::optional<std::string_view>& into, std::string_view flag) {
      if (a.size() > flag.size() && a.starts_with(flag) && a[flag.size()] == '=') {
        into = a.substr(flag.size() + 1);
        return true;
      }
      if (a != flag) return false;
      if (i + 1 == args.size()) {
        into = std::nullopt;
        return false;
      }
      into = args[++i];
      return true;
    };
    if (a.starts_with("--api")) {
      if (!value(api, "--api")) {
        err << "--api needs a value\n" << kTestUsage;
        return kExitUsage;
      }
    } else if (a.starts_with("--key")) {
      if (!value(key, "--key")) {
        err << "--key needs a value\n" << kTestUsage;
        return kExitUsage;
      }
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a.starts_with("-")) {
      err << "unknown option " << a << '\n' << kTestUsage;
      return kExitUsage;
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) {
    err << kTestUsage;
    return kExitUsage;
  }
  if (api && !parse_api(*api) && *api != "GetHealthStatus") {
    err << "unknown --api " << *api << " (Encrypt, Decrypt, GetKeyMetadata, GetHealthStatus)\n";
    return kExitUsage;
  }
  const PolicyPtr policy = load_or_report(positional[0], err);
  if (!policy) return kExitUsage;
  auto request = read_request(positional[1], err);
  if (!request) return kExitUsage;
  if (api) request->api = std::string(*api);
  if (key) {
    request->key_id = std::string(*key);
  } else if (request->api != "GetHealthStatus") {
    err << "note: no --key given; the request's key id is empty\n";
  }

  const Decision d = policy->evaluate(request->view(), EvalOptions{.explain = true});
  out << "decision: " << (d.policy_allowed ? "ALLOW" : "DENY");
  if (d.dry_run_denied()) out << " (dry-run: enforce is false, the proxy lets it through)";
  out << '\n';
  out << "statement: " << d.deciding_sid;
  for (const Statement& s : policy->statements()) {
    if (d.deciding_sid.data() == s.sid.data()) {
      out << " (#" << s.index << ", " << to_string(s.effect) << ')';
    }
  }
  out << '\n';
  if (!quiet) out << "explanation: " << d.explanation << '\n';
  return d.policy_allowed ? kExitAllow : kExitDeny;
}

int policy_check_main(int argc, char** argv) {
  const auto args = to_args(argc, argv);
  return policy_check(args, std::cout, std::cerr);
}

int policy_test_main(int argc, char** argv) {
  const auto args = to_args(argc, argv);
  return policy_test(args, std::cout, std::cerr);
}

}  // namespace xks::policy
