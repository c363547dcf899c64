// The keystores section: its parse, its entry in the startup description and its
// reload rules.
#include "../loader.hpp"
#include "../reload_rules.hpp"
#include "sections.hpp"
#include "xks/policy/policy.hpp"

namespace xks::config::detail {

Credential Loader::parse_credential(const YAML::Node& n, const std::string& path) const {
  const Section s(*this, n, path, {"access_key_id", "secret", "not_after"});
  Credential c;
  c.access_key_id = nonempty_string(
      s, "access_key_id",
      "set the access key id you give KMS as XksProxyAuthenticationCredential.AccessKeyId");
  if (c.access_key_id.size() < 20 || c.access_key_id.size() > 30 ||
      !all_of_chars(c.access_key_id, is_akid_char)) {
    fail(s.path("access_key_id"),
         quote(c.access_key_id) + " is not 20-30 characters of A-Z and 2-7",
         "generate one, e.g. `head -c 15 /dev/urandom | base32` (the XKS spec requires this "
         "alphabet)");
  }
  if (!s.has("secret")) {
    fail(s.path("secret"), "is required but missing",
         "add `secret: { file: /etc/xks-proxy/<name>.secret }` (mode 0600) or `secret: { env: "
         "VARIABLE }`");
  }
  c.secret_source = secret_source(s.get("secret"), s.path("secret"));
  c.secret = detail::read_secret(c.secret_source, file_, s.path("secret"));
  if (c.secret_source.kind == SecretSource::Kind::File) {
    std::error_code ec;
    const auto written = fs::last_write_time(resolve(c.secret_source.ref), ec);
    if (!ec) {
      c.issued = std::chrono::time_point_cast<std::chrono::system_clock::duration>(
          std::chrono::file_clock::to_sys(written));
    }
  }
  const std::string_view sv = c.secret.view();
  const bool length_ok = sv.size() >= 43 && sv.size() <= 64;
  if (!length_ok || !all_of_chars(sv, is_secret_char)) {
    // Length and alphabet only: the value itself is never shown.
    fail(s.path("secret"),
         "the secret read from " + c.secret_source.describe() +
             (length_ok ? std::string(" has a character outside A-Z a-z 0-9 + / = (a space?)")
                        : " has " + std::to_string(sv.size()) + " characters, not 43-64"),
         "write the secret access key you give KMS (RawSecretAccessKey), 43-64 of A-Z a-z 0-9 + / "
         "=, on the first line of " +
             c.secret_source.describe() + "; `head -c 32 /dev/urandom | base64` makes one");
  }
  if (s.has("not_after")) {
    const std::string v = string_value(s.get("not_after"), s.path("not_after"));
    // YYYY-MM-DD[THH:MM:SS[.frac](Z|±HH:MM)]
    const auto num = [&](std::size_t pos, std::size_t len, int& dst) {
      if (pos + len > v.size()) return false;
      dst = 0;
      for (std::size_t i = pos; i < pos + len; ++i) {
        if (v[i] < '0' || v[i] > '9') return false;
        dst = dst * 10 + (v[i] - '0');
      }
      return true;
    };
    int y = 0, mo = 0, d = 0, hh = 0, mi = 0, ss = 0, oh = 0, om = 0;
    int sign = 0;
    bool ok = num(0, 4, y) && v.size() >= 10 && v[4] == '-' && num(5, 2, mo) && v[7] == '-' &&
              num(8, 2, d);
    std::size_t pos = 10;
    if (ok && v.size() > 10) {
      ok = (v[10] == 'T' || v[10] == 't' || v[10] == ' ') && num(11, 2, hh) && v.size() > 13 &&
           v[13] == ':' && num(14, 2, mi) && v.size() > 16 && v[16] == ':' && num(17, 2, ss);
      pos = 19;
      if (ok && pos < v.size() && v[pos] == '.') {
        ++pos;
        const std::size_t digits = pos;
        while (pos < v.size() && v[pos] >= '0' && v[pos] <= '9') ++pos;
        ok = pos > digits;
      }
      if (ok && pos < v.size() && (v[pos] == 'Z' || v[pos] == 'z')) {
        ++pos;
      } else if (ok && pos < v.size() && (v[pos] == '+' || v[pos] == '-')) {
        sign = v[pos] == '+' ? 1 : -1;
        ok = num(pos + 1, 2, oh) && pos + 3 < v.size() && v[pos + 3] == ':' && num(pos + 4, 2, om);
        pos += 6;
      } else {
        ok = false;  // a time without a zone is ambiguous
      }
      ok = ok && pos == v.size();
    }
    using namespace std::chrono;
    const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                             day{static_cast<unsigned>(d)}};
    if (!ok || !ymd.ok() || hh > 23 || mi > 59 || ss > 59 || oh > 23 || om > 59) {
      fail(s.path("not_after"), quote(v) + " is not an RFC 3339 time",
           "write it as \"2027-01-01T00:00:00Z\" (UTC) or a date \"2027-01-01\", quoted");
    }
    // The clock counts nanoseconds in 64 bits: years past 2262 do not fit (found
    // by fuzz_config); a credential's end is decades away at most.
    if (y < 1970 || y > 2200) {
      fail(s.path("not_after"), quote(v) + " is outside the years 1970 to 2200",
           "write the date the credential should be retired, e.g. \"2027-01-01\"");
    }
    c.not_after = time_point_cast<system_clock::duration>(
        sys_days{ymd} + hours{hh} + minutes{mi} + seconds{ss} - sign * (hours{oh} + minutes{om}));
  }
  return c;
}

KeyEntry Loader::parse_key(const YAML::Node& n, const std::string& path) const {
  const Section s(*this, n, path,
                  {"id", "label", "enabled", "expect_usage", "versions", "current"});
  KeyEntry k;
  k.id = nonempty_string(s, "id", "set the external key id you give KMS, e.g. demo-aes-key");
  if (k.id.size() > kMaxKeyIdChars || !all_of_chars(k.id, is_key_id_char)) {
    fail(s.path("id"), quote(k.id) + " is not 1-128 characters of A-Z a-z 0-9 . - _",
         "use only those characters (the XKS spec's externalKeyId alphabet)");
  }
  k.label = k.id;
  if (s.has("label")) {
    k.label = string_value(s.get("label"), s.path("label"));
    if (k.label.empty()) {
      fail(s.path("label"), "is empty",
           "set the CKA_LABEL of the AES-256 key in the HSM, or delete the line to use the id");
    }
  }
  if (s.has("enabled")) k.enabled = bool_value(s.get("enabled"), s.path("enabled"));
  if (s.has("expect_usage")) {
    // An empty list is meaningful here (a key with no usage), so sequence() is not used.
    const std::string up = s.path("expect_usage");
    const YAML::Node list = s.get("expect_usage");
    require_value(list, up);
    if (!list.IsSequence()) {
      fail(up, std::string("must be a list, but it is ") + kind_of(list),
           "write [ENCRYPT], [DECRYPT], [ENCRYPT, DECRYPT] or [] (no usage)");
    }
    KeyEntry::Usage u{false, false};
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string p = at(up, i);
      const std::string v = string_value(list[i], p);
      bool& flag = v == "ENCRYPT" ? u.encrypt : u.decrypt;
      if (v != "ENCRYPT" && v != "DECRYPT") {
        fail(p, quote(v) + " is not a key usage", "write ENCRYPT or DECRYPT (upper case)");
      }
      if (flag) fail(p, quote(v) + " is listed twice", "keep one");
      flag = true;
    }
    k.expect_usage = u;
  }
  parse_key_versions(s, k);
  return k;
}

KeyVersion Loader::parse_key_version(const YAML::Node& n, const std::string& path) const {
  const Section s(*this, n, path, {"version", "label", "enabled", "decrypt_only"});
  KeyVersion v;
  if (!s.has("version")) {
    fail(s.path("version"), "is required but missing",
         "number each version, e.g. { version: 2, label: payments-v2 }");
  }
  v.number =
      static_cast<std::uint32_t>(uint_value(s.get("version"), s.path("version"), 1, 4294967295U,
                                            "the number Encrypt writes into ciphertextMetadata"));
  v.label =
      nonempty_string(s, "label", "set the CKA_LABEL of this version's AES-256 key in the HSM");
  if (s.has("enabled")) v.enabled = bool_value(s.get("enabled"), s.path("enabled"));
  if (s.has("decrypt_only")) {
    v.decrypt_only = bool_value(s.get("decrypt_only"), s.path("decrypt_only"));
  }
  return v;
}

void Loader::parse_key_versions(const Section& s, KeyEntry& k) const {
  if (!s.has("versions")) {
    if (s.has("current")) {
      fail(s.path("current"), "is set but the key lists no versions",
           "list the key's HSM keys under versions: [{ version: 1, label: ... }, ...], or delete "
           "the line (a key with one label is version 1)");
    }
    k.versions.push_back(KeyVersion{1, k.label, true, false});
    k.current = 1;
    return;
  }
  if (s.has("label")) {
    fail(s.path("label"), "is set together with versions",
         "move the label into versions (the single-label form means { version: 1, label: ... })");
  }
  const std::string vp = s.path("versions");
  const YAML::Node list = sequence(s.get("versions"), vp, "version");
  std::set<std::uint32_t> numbers;
  std::set<std::string> labels;
  for (std::size_t i = 0; i < list.size(); ++i) {
    KeyVersion v = parse_key_version(list[i], at(vp, i));
    if (!numbers.insert(v.number).second) {
      fail(at(vp, i) + ".version",
           std::to_string(v.number) + " is listed twice for key " + quote(k.id),
           "give each version its own number");
    }
    if (!labels.insert(v.label).second) {
      fail(at(vp, i) + ".label", quote(v.label) + " is used by two versions of key " + quote(k.id),
           "each version is its own HSM key: give it its own label");
    }
    k.versions.push_back(std::move(v));
  }
  std::sort(k.versions.begin(), k.versions.end(),
            [](const KeyVersion& a, const KeyVersion& b) { return a.number < b.number; });
  k.versions_listed = true;
  if (s.has("current")) {
    k.current = static_cast<std::uint32_t>(uint_value(s.get("current"), s.path("current"), 1,
                                                      4294967295U, "the version Encrypt uses"));
  } else if (k.versions.size() == 1) {
    k.current = k.versions.front().number;
  } else {
    fail(s.path("current"), "is required when a key lists more than one version",
         "set current: <the version Encrypt should use>, e.g. current: " +
             std::to_string(k.versions.back().number));
  }
  const KeyVersion* cur = k.version(k.current);
  if (cur == nullptr) {
    fail(s.path("current"), std::to_string(k.current) + " is not one of the listed versions",
         "set it to a version listed under versions, or add that version");
  }
  if (!cur->enabled) {
    fail(s.path("current"),
         "names version " + std::to_string(k.current) + ", which is retired (enabled: false)",
         "make an enabled version current; Encrypt must not use a retired key");
  }
  if (cur->decrypt_only) {
    fail(s.path("current"),
         "names version " + std::to_string(k.current) + ", which is decrypt_only",
         "make another version current, or drop decrypt_only from this one");
  }
  k.label = cur->label;
}

std::vector<LegacyLayout> Loader::parse_legacy_layouts(const YAML::Node& n,
                                                       const std::string& path) const {
  const YAML::Node list = sequence(n, path, "layout");
  std::vector<LegacyLayout> out;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string p = at(path, i);
    const std::string v = string_value(list[i], p);
    LegacyLayout l{};
    if (v == "aws-sample") {
      l = LegacyLayout::AwsSample;
    } else if (v == "spec-no-metadata") {
      l = LegacyLayout::SpecNoMetadata;
    } else {
      fail(p, quote(v) + " is not a legacy layout",
           "write aws-sample (the AWS sample proxy) or spec-no-metadata (the spec's AAD framing "
           "without ciphertextMetadata)");
    }
    if (std::find(out.begin(), out.end(), l) != out.end()) {
      fail(p, quote(v) + " is listed twice", "keep one");
    }
    out.push_back(l);
  }
  return out;
}

KeyStore Loader::parse_keystore(const YAML::Node& n, const std::string& path) const {
  const Section s(*this, n, path,
                  {"uri_path", "credentials", "keys", "policy", "quota", "region", "enabled",
                   "legacy_layouts"});
  KeyStore ks;
  if (s.has("enabled")) ks.enabled = bool_value(s.get("enabled"), s.path("enabled"));
  if (s.has("region")) {
    const std::string r = string_value(s.get("region"), s.path("region"));
    if (!is_aws_region(r)) {
      fail(s.path("region"), quote(r) + " is not an AWS region name",
           "write the region of the KMS key store, e.g. eu-west-1, or delete the line");
    }
    ks.region = r;
  }
  const std::string ex = "e.g. /demo/kms/xks/v1";
  const std::string fix_kms = "set it to the XksProxyUriPath configured in KMS, " + ex;
  ks.uri_path = nonempty_string(s, "uri_path", fix_kms);
  const std::string& u = ks.uri_path;
  const std::string up = s.path("uri_path");
  if (u.size() > kMaxUriPathChars) {
    fail(up, quote(u) + " is longer than 128 characters", "shorten the prefix; " + fix_kms);
  }
  if (!all_of_chars(u, is_uri_path_char)) {
    fail(up, quote(u) + " has characters other than A-Z a-z 0-9 / - _",
         "use only those characters; " + fix_kms);
  }
  if (u.front() != '/') fail(up, quote(u) + " does not start with /", fix_kms);
  if (u.size() < kUriSuffix.size() ||
      u.compare(u.size() - kUriSuffix.size(), kUriSuffix.size(), kUriSuffix) != 0) {
    fail(up, quote(u) + " must end with /kms/xks/v1", fix_kms);
  }
  if (u.find("//") != std::string::npos) fail(up, quote(u) + " has an empty segment (//)", fix_kms);

  if (!s.has("credentials")) {
    fail(s.path("credentials"), "is required but missing",
         "add at least one credential: { access_key_id: ..., secret: { file: ... } }");
  }
  const YAML::Node creds = sequence(s.get("credentials"), s.path("credentials"), "credential");
  std::set<std::string> akids;
  for (std::size_t i = 0; i < creds.size(); ++i) {
    Credential c = parse_credential(creds[i], at(s.path("credentials"), i));
    if (!akids.insert(c.access_key_id).second) {
      fail(at(s.path("credentials"), i) + ".access_key_id",
           quote(c.access_key_id) + " appears twice in this key store",
           "give each credential its own access key id (rotation: add the new one, update KMS, "
           "then remove the old one)");
    }
    ks.credentials.push_back(std::move(c));
  }
  if (!s.has("keys")) {
    fail(s.path("keys"), "is required but missing",
         "add at least one key: { id: <externalKeyId>, label: <CKA_LABEL in the HSM> }");
  }
  if (s.has("legacy_layouts")) {
    ks.legacy_layouts = parse_legacy_layouts(s.get("legacy_layouts"), s.path("legacy_layouts"));
  }
  const YAML::Node keys = sequence(s.get("keys"), s.path("keys"), "key");
  std::set<std::string> ids;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    KeyEntry k = parse_key(keys[i], at(s.path("keys"), i));
    if (!ids.insert(k.id).second) {
      fail(at(s.path("keys"), i) + ".id", quote(k.id) + " appears twice in this key store",
           "give each key its own id");
    }
    k.legacy_layouts = ks.legacy_layouts;
    ks.keys.push_back(std::move(k));
  }
  if (s.has("quota")) {
    const Section q(*this, s.get("quota"), s.path("quota"), {"rate", "burst"});
    unsigned rate = 0;
    unsigned burst = 0;
    opt_uint(q, "rate", rate, 1, 1'000'000,
             "requests per second for this key store (KMS's default quota is 1800)");
    opt_uint(q, "burst", burst, 1, 10'000'000, "how many requests may arrive at once");
    if (!q.has("rate")) {
      fail(q.path("rate"), "is required in a quota", "set rate: <requests per second>, e.g. 1800");
    }
    ks.quota_rate = rate;
    ks.quota_burst = burst == 0 ? rate : burst;
  }
  if (s.has("policy")) {
    const std::string p =
        nonempty_string(s, "policy", "give the path of a policy file (see docs/authorization.md)");
    ks.policy_file = resolve(p);
    try {
      ks.policy = policy::load_policy(ks.policy_file);
    } catch (const policy::PolicyError& e) {
      // The policy's own message names its file, statement and field.
      fail(s.path("policy"), std::string("the policy does not load: ") + e.what(),
           "correct the policy file (check it with: xksctl policy check " +
               ks.policy_file.string() + ")");
    }
  }
  return ks;
}

// ---------------------------------------------------------------- describe

namespace {

// One keystores[].keys[] entry.
nlohmann::json describe_key(const KeyEntry& k) {
  nlohmann::json e = {{"id", k.id}, {"label", k.label}, {"enabled", k.enabled}};
  if (k.expect_usage) {
    nlohmann::json usage = nlohmann::json::array();
    if (k.expect_usage->encrypt) usage.push_back("ENCRYPT");
    if (k.expect_usage->decrypt) usage.push_back("DECRYPT");
    e["expect_usage"] = std::move(usage);
  }
  if (k.versions_listed) {
    nlohmann::json versions = nlohmann::json::array();
    for (const auto& v : k.versions) {
      versions.push_back({{"version", v.number},
                          {"label", v.label},
                          {"enabled", v.enabled},
                          {"decrypt_only", v.decrypt_only}});
    }
    e["current"] = k.current;
    e["versions"] = std::move(versions);
  }
  return e;
}

}  // namespace

nlohmann::json describe_keystores(const std::vector<KeyStore>& all) {
  using nlohmann::json;
  json stores = json::array();
  for (const auto& ks : all) {
    json creds = json::array();
    for (const auto& cr : ks.credentials) {
      json e = {{"access_key_id", cr.access_key_id}, {"secret", redacted(cr.secret_source)}};
      if (cr.not_after) e["not_after"] = rfc3339(*cr.not_after);
      creds.push_back(std::move(e));
    }
    json keys = json::array();
    for (const auto& k : ks.keys) keys.push_back(describe_key(k));
    nlohmann::json store = {
        {"uri_path", ks.uri_path}, {"credentials", std::move(creds)}, {"keys", std::move(keys)}};
    store["enabled"] = ks.enabled;
    if (!ks.legacy_layouts.empty()) {
      json layouts = json::array();
      for (const auto l : ks.legacy_layouts) layouts.push_back(to_string(l));
      store["legacy_layouts"] = std::move(layouts);
    }
    if (ks.region) store["region"] = *ks.region;
    if (ks.quota_rate > 0) store["quota"] = {{"rate", ks.quota_rate}, {"burst", ks.quota_burst}};
    if (ks.policy) {
      store["policy"] = {{"file", ks.policy_file.string()},
                         {"enforce", ks.policy->enforce()},
                         {"statements", ks.policy->statements().size()}};
    }
    stores.push_back(std::move(store));
  }
  return stores;
}

// ------------------------------------------------------------ reload rules

namespace {
const Rule kRules[] = {
    {"keystores", kLive,
     [](const Config& a, const Config& b, Details& d) {
       for (const auto& ks : b.keystores) {
         if (a.find_keystore(ks.uri_path) == nullptr) d.push_back("keystore added: " + ks.uri_path);
       }
       for (const auto& ks : a.keystores) {
         if (b.find_keystore(ks.uri_path) == nullptr) {
           d.push_back("keystore removed: " + ks.uri_path);
         }
       }
     },
     nullptr},
    {"keystores.enabled", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         if (x.enabled != y.enabled) {
           d.push_back(y.uri_path + (y.enabled ? ": keystore enabled" : ": keystore disabled"));
         }
       });
     },
     nullptr},
    {"keystores.region", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         if (x.region != y.region) d.push_back(y.uri_path + ": region " + text(y.region));
       });
     },
     nullptr},
    {"keystores.credentials", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         for (const auto& cred : y.credentials) {
           const auto old = std::find_if(
               x.credentials.begin(), x.credentials.end(),
               [&](const Credential& o) { return o.access_key_id == cred.access_key_id; });
           if (old == x.credentials.end()) {
             d.push_back(y.uri_path + ": credential added: " + cred.access_key_id);
           } else if (!same_credential(*old, cred)) {
             d.push_back(y.uri_path + ": credential changed: " + cred.access_key_id);
           }
         }
         for (const auto& o : x.credentials) {
           const bool kept =
               std::any_of(y.credentials.begin(), y.credentials.end(),
                           [&](const Credential& c) { return c.access_key_id == o.access_key_id; });
           if (!kept) d.push_back(y.uri_path + ": credential removed: " + o.access_key_id);
         }
       });
     },
     nullptr},
    {"keystores.keys", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         for (const auto& key : y.keys) {
           const auto prev = std::find_if(x.keys.begin(), x.keys.end(),
                                          [&](const KeyEntry& o) { return o.id == key.id; });
           if (prev == x.keys.end()) {
             d.push_back(y.uri_path + ": key added: " + key.id);
             continue;
           }
           if (prev->enabled != key.enabled) {
             d.push_back(y.uri_path + ": key " + key.id + (key.enabled ? " enabled" : " disabled"));
           }
           if ((prev->current == key.current && prev->label != key.label) ||
               !same_usage(prev->expect_usage, key.expect_usage)) {
             d.push_back(y.uri_path + ": key changed: " + key.id);
           }
           const std::string key_path = y.uri_path + ": key " + key.id;
           if (prev->current != key.current) {
             d.push_back(key_path + " current version " + std::to_string(prev->current) + " -> " +
                         std::to_string(key.current));
           }
           for (const auto& v : key.versions) {
             const auto* was = prev->version(v.number);
             const std::string what = key_path + " version " + std::to_string(v.number);
             if (was == nullptr) {
               d.push_back(what + " added");
             } else if (was->enabled != v.enabled || was->decrypt_only != v.decrypt_only) {
               d.push_back(what + (v.enabled ? (v.decrypt_only ? " decrypt_only" : " enabled")
                                             : " retired"));
             }
           }
           for (const auto& v : prev->versions) {
             if (key.version(v.number) == nullptr) {
               d.push_back(key_path + " version " + std::to_string(v.number) + " removed");
             }
           }
         }
         for (const auto& o : x.keys) {
           const bool kept = std::any_of(y.keys.begin(), y.keys.end(),
                                         [&](const KeyEntry& k) { return k.id == o.id; });
           if (!kept) d.push_back(y.uri_path + ": key removed: " + o.id);
         }
       });
     },
     nullptr},
    {"keystores.legacy_layouts", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         if (x.legacy_layouts != y.legacy_layouts) {
           std::string list;
           for (const auto l : y.legacy_layouts)
             list += (list.empty() ? "" : ", ") + std::string(to_string(l));
           d.push_back(y.uri_path + ": legacy layouts [" + list + "]");
         }
       });
     },
     nullptr},
    {"keystores.quota", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         if (x.quota_rate != y.quota_rate || x.quota_burst != y.quota_burst) {
           d.push_back(y.uri_path + (y.quota_rate > 0 ? ": quota rate " + whole(y.quota_rate) +
                                                            " burst " + whole(y.quota_burst)
                                                      : ": quota off"));
         }
       });
     },
     nullptr},
    {"keystores.policy", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         if (x.policy_file != y.policy_file) {
           d.push_back(y.uri_path + ": policy " +
                       (y.policy_file.empty() ? std::string("off") : y.policy_file.string()));
         }
       });
     },
     nullptr},
};
}  // namespace

std::span<const Rule> keystores_rules() { return kRules; }

}  // namespace xks::config::detail
