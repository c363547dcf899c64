// The daemon's configuration: built once from a YAML (or JSON) file, validated,
// then immutable and passed down. A reload builds a new
// Config and swaps it in. Documented setting by setting in docs/configuration.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "xks/core/result.hpp"
#include "xks/core/secure.hpp"
#include "xks/net/limits.hpp"

namespace xks::policy {
// The compiled secondary-authorization policy (xks/policy/policy.hpp); only the
// code that loads or evaluates one needs its definition.
class Policy;
using PolicyPtr = std::shared_ptr<const Policy>;
}  // namespace xks::policy

namespace xks::config {

using Millis = std::chrono::milliseconds;

// Where a secret comes from: a file (first line, trailing newline stripped) or an
// environment variable. Secrets are never written inline in the configuration.
struct SecretSource {
  enum class Kind { File, Env };
  Kind kind = Kind::File;
  std::string ref;  // the file path or the variable name (not secret)
  // A file readable or writable by group or others is refused unless this is
  // set, because anyone who can read it can sign requests or log in to the HSM.
  bool allow_insecure_permissions = false;
  std::string describe() const;  // "file /etc/x" or "env XKS_HSM_PIN"
};

struct Credential {
  std::string access_key_id;  // 20-30 of A-Z2-7
  SecretSource secret_source;
  SecureString secret;  // resolved at load; 43-64 of A-Za-z0-9+/=
  std::optional<std::chrono::system_clock::time_point> not_after;
  // When the secret file was last written (its mtime at load): the credential's
  // age for rotation. None for a secret from the environment.
  std::optional<std::chrono::system_clock::time_point> issued;
};

// Ciphertext layouts of other proxies that Decrypt may try when a
// ciphertextMetadata is not this proxy's (keystores[].legacy_layouts). Decrypt
// only; a legacy ciphertext belongs to version 1 of its key.
enum class LegacyLayout {
  AwsSample,       // "aws-sample": the AWS sample proxy's SHA-256-of-AAD framing
  SpecNoMetadata,  // "spec-no-metadata": the spec's framing, no ciphertextMetadata
};
std::string_view to_string(LegacyLayout layout) noexcept;  // "aws-sample", ...

// One HSM key behind an external key (keys[].versions[]). Encrypt uses the
// key's current version; Decrypt the version its ciphertextMetadata names.
struct KeyVersion {
  std::uint32_t number = 1;   // 1..4294967295, written into ciphertextMetadata
  std::string label;          // CKA_LABEL of its HSM key
  bool enabled = true;        // false: retired, its ciphertexts are refused (InvalidState)
  bool decrypt_only = false;  // decrypts, never current: marked for retirement
};

struct KeyEntry {
  std::string id;       // externalKeyId in the URI: 1-128 of A-Za-z0-9.-_
  std::string label;    // CKA_LABEL of the current version's HSM key (defaults to id)
  bool enabled = true;  // false: metadata says DISABLED, crypto is InvalidState
  // The HSM usages the key is meant to have (CKA_ENCRYPT / CKA_DECRYPT). Unset: both,
  // as a KMS key needs. Set (possibly empty) for keys restricted on purpose, e.g. to
  // exercise KMS's XksKeyInvalidConfigurationException; only xksctl reads it.
  struct Usage {
    bool encrypt = true;
    bool decrypt = true;
  };
  std::optional<Usage> expect_usage;
  // The key's versions, ascending by number, never empty once loaded: the
  // single-label form is version 1 with `label`. `current` names an enabled,
  // not decrypt_only one, whose label `label` repeats.
  std::vector<KeyVersion> versions;
  std::uint32_t current = 1;
  bool versions_listed = false;  // written as versions: (not the single-label form)
  // Copied from keystores[].legacy_layouts, in that order.
  std::vector<LegacyLayout> legacy_layouts;

  // The version numbered n, or null. An entry built without versions (tests)
  // has none.
  const KeyVersion* version(std::uint32_t n) const noexcept;
};

struct KeyStore {
  std::string uri_path;  // full XksProxyUriPath, "[/<prefix>]/kms/xks/v1"
  std::vector<Credential> credentials;
  std::vector<KeyEntry> keys;
  // Optional per-key-store request quota (token bucket); over it -> 429.
  // rate 0 = no quota. Spec: a proxy MAY throttle each path prefix.
  double quota_rate = 0;              // requests per second
  double quota_burst = 0;             // bucket size; defaults to one second of rate
  std::filesystem::path policy_file;  // empty: no secondary authorization
  policy::PolicyPtr policy;           // compiled at load (and at every reload)
  // The AWS region of the KMS key store this path serves. When set, the SigV4
  // credential scope, the mTLS client certificate CN and requestMetadata's
  // kmsKeyArn must all name it.
  std::optional<std::string> region;
  // false: Encrypt, Decrypt and GetKeyMetadata answer InvalidStateException
  // (health still answers); applied by a reload.
  bool enabled = true;
  // Layouts of other proxies Decrypt tries, in order, when a ciphertextMetadata
  // is not this proxy's (opt-in; empty: such a ciphertext is refused).
  std::vector<LegacyLayout> legacy_layouts;
};

// How the 12-byte AES-GCM IV of an Encrypt comes to be, named by what the
// HSM does. Every mode yields a fresh IV per call; an HSM that hands back an IV
// it did not generate (the buffer unchanged, nothing appended) fails the call.
enum class IvMode {
  CallerRandom,       // the proxy draws the IV from the HSM's RNG (C_GenerateRandom) and passes it
  HsmIntoZeroBuffer,  // the proxy passes 12 zero bytes; the HSM writes its IV into them (CloudHSM)
  HsmAppended,        // pIv NULL; the HSM appends its IV (12 or 16 bytes) after the tag (Luna)
};

// HSM families whose documented PKCS#11 behaviour sets the defaults of the
// settings below (docs/configuration.md, "HSM vendors", gives each fact's source).
enum class HsmVendor { Generic, SoftHsm2, Nss, CloudHsm, Luna, NShield, Vault, Utimaco };

// How hsm.pin is handed to C_Login.
enum class PinFormat {
  Plain,         // the PIN as read
  UserPassword,  // "user:password", both parts non-empty (AWS CloudHSM's crypto user)
};

struct HsmConfig {
  std::string name;              // for logs and health; defaults to "hsm<N>"
  std::filesystem::path module;  // PKCS#11 library
  // Exactly one selects the token: its label, its serial number, or its slot id.
  std::optional<std::string> token_label;
  std::optional<std::string> token_serial;
  std::optional<std::uint64_t> slot_id;
  SecretSource pin_source;
  SecureString pin;        // resolved at load
  unsigned sessions = 8;   // logged-in sessions = worker threads
  std::string health_key;  // label of a dedicated test key
  HsmVendor vendor = HsmVendor::Generic;
  IvMode iv = IvMode::CallerRandom;  // the vendor's default unless set
  PinFormat pin_format = PinFormat::Plain;
  // CKR codes with which C_Decrypt says "the tag does not verify" after a
  // successful C_DecryptInit: InvalidCiphertextException, never a device error.
  // CKR_ENCRYPTED_DATA_INVALID and CKR_ENCRYPTED_DATA_LEN_RANGE unless the
  // vendor adds more (apply_vendor_defaults) or the file says otherwise.
  std::vector<unsigned long> auth_failure_codes = {0x40, 0x41};
  // C_Initialize: pReserved (a module-specific string, e.g. NSS softoken's
  // configdir) and whether CKF_OS_LOCKING_OK is set.
  std::optional<std::string> init_args;
  bool init_os_locking = true;
  // Set in the process environment before the module is loaded (e.g.
  // SOFTHSM2_CONF), in file order.
  std::vector<std::pair<std::string, std::string>> environment;
};

struct TlsConfig {
  bool enabled = true;
  std::filesystem::path certificate;  // PEM chain, leaf first
  std::filesystem::path private_key;  // any key format OpenSSL reads
  std::filesystem::path client_ca;    // empty: no mTLS
  // Accepted client certificate names. Defaults, when client_ca is set, to
  // cks.kms.<region>.amazonaws.com for every keystores[].region.
  std::vector<std::string> client_names;
  bool client_names_defaulted = false;  // filled from keystores[].region
  enum class NameMatch { Cn, CnOrDnsSan };
  NameMatch client_names_match = NameMatch::Cn;  // what of the certificate is matched
  // TLS session resumption (tickets, TLS 1.2 and 1.3). The ticket keys are
  // replaced every ticket_key_rotation; resumption is off when false.
  bool session_tickets = true;
  std::chrono::hours ticket_key_rotation{12};
};

// server.limits: what a connection may cost (applied by net::Server, which
// takes the net::Limits part) and the HSM work queue.
struct Limits : net::Limits {
  // HSM jobs waiting for a worker; beyond it requests get 429 at once.
  unsigned hsm_queue_capacity = 1024;
  bool operator==(const Limits&) const = default;
};

struct ServerConfig {
  std::string listen_host = "0.0.0.0";
  std::uint16_t listen_port = 443;
  unsigned threads = 0;     // 0 = number of cores
  unsigned fleet_size = 1;  // xksProxyFleetSize
  std::string ping_path = "/ping";
  Millis request_deadline{200};  // answer (even with an error) within this
  // After SIGTERM and before the drain: /ping answers 503 and every response
  // closes its connection, while the listener still accepts, so that a load
  // balancer marks the proxy down and clients move before anything is closed.
  Millis shutdown_delay{0};
  Limits limits;
  // Least privilege (app/privileges.hpp): after binding the listener, a process
  // started as root switches to `user` (a name or a numeric uid) and `group`
  // (default: the user's primary group). Running as root without `user` is
  // refused unless `allow_root` says so explicitly.
  std::string user;   // empty: keep the starting user
  std::string group;  // empty: the user's primary group; needs `user`
  bool allow_root = false;
  // Core dumps can hold plaintext, PINs and SigV4 secrets; off unless allowed.
  bool allow_core_dumps = false;
};

struct HealthConfig {
  Millis interval{10000};       // background deep check period
  Millis degraded_latency{50};  // slower probe -> DEGRADED
  Millis max_age{60000};        // older cached result -> UNAVAILABLE
};

// Prometheus /metrics on its own listener; loopback by default because the
// proxy's metrics name key stores and access key ids.
struct MetricsConfig {
  bool enabled = false;  // true when the metrics section is present
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 9464;
};

// Where log lines go: stdout (journald, container runtimes) unless `file` is
// set, then to that file with size- or time-based rotation.
struct LogFileConfig {
  enum class Rotate { Size, Daily };
  std::filesystem::path path;  // absolute (relative ones are taken from the config's folder)
  Rotate rotate = Rotate::Size;
  std::uint64_t max_size_mb = 100;  // rotate: size — a new file once this size is reached
  int daily_hour = 0;               // rotate: daily — at this local time (daily_at "HH:MM")
  int daily_minute = 0;
  std::uint32_t max_files = 10;  // rotated files kept besides the current one
  bool operator==(const LogFileConfig&) const = default;
};

struct LoggingConfig {
  enum class Format { Json, Text };
  std::string level = "info";  // trace|debug|info|warn|error|critical|off
  Format format = Format::Json;
  std::optional<LogFileConfig> file;  // absent: stdout
  // 0: every line is written at once (nothing lost in a crash). Otherwise lines
  // are buffered for at most this long (fewer write(2)s under load); warnings
  // and errors are always written at once.
  Millis flush_interval{0};
};

// reload.watch: the daemon reloads by itself, as on SIGHUP, when a file the
// configuration reads changes (app/config_watch.hpp), once no further change
// came for `debounce`.
struct ReloadConfig {
  bool watch = false;
  Millis debounce{500};
};

struct Config {
  std::filesystem::path source;  // the file it was loaded from
  ServerConfig server;
  TlsConfig tls;
  std::vector<HsmConfig> hsms;      // at least one
  std::vector<KeyStore> keystores;  // at least one
  HealthConfig health;
  MetricsConfig metrics;
  LoggingConfig logging;
  ReloadConfig reload;

  const KeyStore* find_keystore(std::string_view uri_path) const noexcept;
  // Every key store's uri_path, in configuration order.
  std::vector<std::string> uri_paths() const;
};

// A configuration that cannot be used. what() is one line naming the file, the
// setting, what is wrong and how to fix it.
class ConfigError : public std::runtime_error {
 public:
  ConfigError(const std::filesystem::path& file, const std::string& setting,
              const std::string& problem, const std::string& fix);
  const std::string& setting() const noexcept { return setting_; }

 private:
  std::string setting_;
};

// Loads, validates and resolves secrets. YAML or JSON (same schema), by content.
// Throws ConfigError.
Config load_config(const std::filesystem::path& file);

// A reload from `before` to `after` must not orphan ciphertexts. For every key
// (same key store uri_path, same id) in both: the version that was current is
// still listed and enabled; every version that was enabled is still listed
// (retire it with enabled: false in one reload, remove it in a later one); and
// no version's label changes. A ValidationException whose message names the
// file, the key, the version, the setting and the fix otherwise.
Result<void> check_version_continuity(const Config& before, const Config& after);

// The subject CN of the client certificate KMS presents from `region`
// (spec, "Authentication"): cks.kms.<region>.amazonaws.com.
inline std::string kms_client_name(std::string_view region) {
  return "cks.kms." + std::string(region) + ".amazonaws.com";
}

// The effective configuration as JSON text with every secret redacted, for the
// startup log line.
std::string describe_redacted(const Config& config);

// Non-fatal notes about a valid configuration (TLS off, a deadline close to
// KMS's 250 ms, fewer HSM sessions than I/O threads, credentials about to
// expire), one line each, for the startup log at warn level. `now` is a
// parameter so that tests can pin it.
std::vector<std::string> config_warnings(const Config& config,
                                         std::chrono::system_clock::time_point now);
std::vector<std::string> config_warnings(const Config& config);  // now = system_clock::now()

// The names as written in the file: "caller_random", "softhsm2", "user_password", ...
std::string_view to_string(IvMode mode) noexcept;
std::string_view to_string(HsmVendor vendor) noexcept;
std::string_view to_string(PinFormat format) noexcept;

}  // namespace xks::config
