// xksctl call: one signed XKS request, its response and where the time went.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "xks/config/config.hpp"
#include "xks/crypto/base64.hpp"
#include "xks/tools/cli.hpp"
#include "xks/tools/util.hpp"
#include "xks/tools/xks_client.hpp"

namespace xks::tools {

namespace {

constexpr const char* kCallHelp =
    "usage: xksctl call health|metadata|encrypt|decrypt --config FILE [options]\n"
    "\n"
    "Sends one XKS API request signed with SigV4, prints the response JSON on standard\n"
    "output and, on standard error, the HTTP status and the time taken by DNS, TCP connect,\n"
    "TLS handshake and request->response against KMS's 250 ms budget.\n"
    "  --keystore URI_PATH     key store (default: the first); signs with its first credential\n"
    "  --access-key-id ID      sign with this credential of the key store instead\n"
    "  --key K                 externalKeyId (default: the key store's first key)\n"
    "  --plaintext TEXT | --plaintext-b64 B64      encrypt: what to encrypt\n"
    "  --aad TEXT              encrypt/decrypt: additional authenticated data\n"
    "  --cdiv                  encrypt: ask for ciphertextDataIntegrityValue (SHA_256)\n"
    "  --ciphertext-json F|-   decrypt: the output of `call encrypt` (key id and AAD included)\n"
    "  --endpoint URL          https://host[:port] (default: server.listen, 0.0.0.0 -> 127.0.0.1)\n"
    "  --cacert PEM            CA bundle to verify the proxy with (default: system CAs, plus\n"
    "                          tls.certificate for the proxy this --config describes)\n"
    "  --region R              SigV4 region (default us-east-1)\n"
    "  --timeout-ms N          per-step timeout (default 10000)\n"
    "Exit status: 0 on HTTP 200, 1 otherwise.\n";

Api parse_api(std::string_view s) {
  if (s == "health") return Api::Health;
  if (s == "metadata") return Api::Metadata;
  if (s == "encrypt") return Api::Encrypt;
  if (s == "decrypt") return Api::Decrypt;
  throw UsageError("unknown API '" + std::string(s) +
                   "'; use health, metadata, encrypt or decrypt");
}

std::string b64_of_text(const std::string& text) { return crypto::base64_encode(as_bytes(text)); }

void require_b64(const std::string& what, const std::string& value) {
  if (!crypto::base64_decode(value)) throw UsageError(what + " is not standard padded Base64");
}

}  // namespace

int call_main(int argc, char** argv) {
  if (argc < 3 || std::string_view(argv[2]) == "--help" || std::string_view(argv[2]) == "-h") {
    std::fputs(kCallHelp, stdout);
    return argc < 3 ? 2 : 0;
  }
  const Api api = parse_api(argv[2]);
  const Args args(
      argc, argv, 3,
      {"--config", "--keystore", "--access-key-id", "--key", "--plaintext", "--plaintext-b64",
       "--aad", "--ciphertext-json", "--endpoint", "--cacert", "--region", "--timeout-ms"},
      {"--cdiv"}, std::string("call ") + argv[2]);
  if (args.help()) return std::fputs(kCallHelp, stdout), 0;
  if (!args.positional().empty())
    throw UsageError("unexpected argument '" + args.positional()[0] + "'");

  const config::Config cfg =
      config::load_config(args.require("--config", "the proxy's configuration file"));
  const config::KeyStore& ks = pick_keystore(cfg, args.get_or("--keystore", ""));
  const config::Credential* cred = &ks.credentials.front();
  if (const auto id = args.get("--access-key-id")) {
    cred = nullptr;
    for (const auto& c : ks.credentials) {
      if (c.access_key_id == *id) cred = &c;
    }
    if (cred == nullptr)
      throw UsageError("--access-key-id " + *id + " is not a credential of " + ks.uri_path);
  }
  Signer signer{cred->access_key_id, cred->secret, args.get_or("--region", "us-east-1")};
  const Endpoint ep =
      args.get("--endpoint") ? parse_endpoint(*args.get("--endpoint")) : default_endpoint(cfg);
  const auto timeout =
      std::chrono::milliseconds(args.number("--timeout-ms", 1, 600000).value_or(10000));

  nlohmann::json body = {{"requestMetadata", request_metadata(api, signer.region)}};
  std::string key = args.get_or("--key", "");
  std::string aad_b64 = args.get("--aad") ? b64_of_text(*args.get("--aad")) : std::string{};
  if (api == Api::Encrypt) {
    if (args.get("--plaintext") && args.get("--plaintext-b64")) {
      throw UsageError("give either --plaintext or --plaintext-b64, not both");
    }
    if (const auto p = args.get("--plaintext")) {
      body["plaintext"] = b64_of_text(*p);
    } else if (const auto pb = args.get("--plaintext-b64")) {
      require_b64("--plaintext-b64", *pb);
      body["plaintext"] = *pb;
    } else {
      throw UsageError("call encrypt needs --plaintext TEXT or --plaintext-b64 B64");
    }
    body["encryptionAlgorithm"] = "AES_GCM";
    if (!aad_b64.empty()) body["additionalAuthenticatedData"] = aad_b64;
    if (args.flag("--cdiv")) body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256";
  } else if (api == Api::Decrypt) {
    const auto file = args.get("--ciphertext-json");
    if (!file)
      throw UsageError(
          "call decrypt needs --ciphertext-json FILE (the output of call encrypt, or - for stdin)");
    nlohmann::json in;
    try {
      in = nlohmann::json::parse(read_file_or_stdin(*file));
    } catch (const nlohmann::json::exception&) {
      throw UsageError("--ciphertext-json " + *file +
                       " is not JSON; give it the output of xksctl call encrypt");
    }
    for (const char* field : {"ciphertext", "initializationVector", "authenticationTag"}) {
      if (!in.contains(field) || !in[field].is_string()) {
        throw UsageError("--ciphertext-json " + *file + " has no \"" + field + "\"");
      }
      body[field] = in[field];
    }
    if (in.contains("ciphertextMetadata") && in["ciphertextMetadata"].is_string()) {
      body["ciphertextMetadata"] = in["ciphertextMetadata"];
    }
    if (aad_b64.empty() && in.contains("additionalAuthenticatedData") &&
        in["additionalAuthenticatedData"].is_string()) {
      aad_b64 = in["additionalAuthenticatedData"].get<std::string>();
    }
    if (!aad_b64.empty()) body["additionalAuthenticatedData"] = aad_b64;
    body["encryptionAlgorithm"] = "AES_GCM";
    if (key.empty() && in.contains("keyId") && in["keyId"].is_string())
      key = in["keyId"].get<std::string>();
  }
  if (api != Api::Health && key.empty()) key = ks.keys.front().id;

  const ClientTlsOptions tls_options = client_trust(cfg, ep, args.get_or("--cacert", ""));
  const auto tls = ep.tls ? make_client_tls_context(tls_options) : nullptr;
  const std::string target = api_target(ks.uri_path, api, key);
  std::string payload = body.dump();
  body.clear();  // may hold plaintext: keep one copy only

  Timing timing;
  Reply reply;
  try {
    reply = run_sync([&]() -> boost::asio::awaitable<Reply> {
      Connection conn(ep, tls, timeout);
      const auto t0 = std::chrono::steady_clock::now();
      co_await conn.connect(timing);
      auto req =
          signed_post(ep, target, std::move(payload), signer, std::chrono::system_clock::now());
      Reply r = co_await conn.send(req, timing);
      secure_wipe(req.body().data(), req.body().size());
      timing.total_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      co_return r;
    }());
  } catch (const TransportError& e) {
    std::fprintf(stderr, "xksctl: POST %s%s: %s\n", ep.url().c_str(), target.c_str(), e.what());
    return 1;
  }

  nlohmann::json out = nlohmann::json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded()) {
    std::fwrite(reply.body.data(), 1, reply.body.size(), stdout);
    std::fputs("\n", stdout);
    std::fprintf(stderr, "HTTP %u (body is not JSON) POST %s%s\n", reply.status, ep.url().c_str(),
                 target.c_str());
  } else {
    if (reply.status == 200 && api == Api::Encrypt && out.is_object()) {
      // Makes the output a complete --ciphertext-json for `call decrypt`.
      out["keyId"] = key;
      if (!aad_b64.empty()) out["additionalAuthenticatedData"] = aad_b64;
    }
    const std::string text = out.dump(2);
    std::printf("%s\n", text.c_str());
    std::string status = "HTTP ";
    status += std::to_string(reply.status);
    if (out.is_object() && out.contains("errorName") && out["errorName"].is_string()) {
      status += ' ';
      status += out["errorName"].get<std::string>();
    }
    std::fprintf(stderr, "%s POST %s%s\n", status.c_str(), ep.url().c_str(), target.c_str());
  }
  std::fprintf(stderr, "timing: %s\n", timing.line().c_str());
  return reply.status == 200 ? 0 : 1;
}

}  // namespace xks::tools
