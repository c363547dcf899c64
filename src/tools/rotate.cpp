// xksctl keys rotate: a new version of an external key. Creates its HSM key
// with the safe template, then prints (or, with --write, makes) the one
// configuration change that adds the version and makes it current. The change
// is made on the file's text, so comments and layout elsewhere are kept, and
// it is checked by loading the result before anything is written.
#include "xks/tools/rotate.hpp"

#include <openssl/rand.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "xks/config/config.hpp"
#include "xks/tools/cli.hpp"
#include "xks/tools/token.hpp"
#include "xks/tools/util.hpp"

namespace xks::tools {

namespace {

namespace fs = std::filesystem;

bool is_plain_safe(std::string_view s) {
  if (s.empty() || s.front() == '-' || s.front() == '.') return false;
  for (const char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '/';
    if (!ok) return false;
  }
  return true;
}

class TextEdit {
 public:
  TextEdit(std::string text, bool json) : text_(std::move(text)), json_(json) {}

  std::string scalar(std::string_view v) const {
    return json_ || !is_plain_safe(v) ? json_quote(v) : std::string(v);
  }
  std::string name(std::string_view n) const {
    return json_ ? "\"" + std::string(n) + "\"" : std::string(n);
  }
  std::string version_item(std::uint32_t number, std::string_view label) const {
    return "{ " + name("version") + ": " + std::to_string(number) + ", " + name("label") + ": " +
           scalar(label) + " }";
  }

  // End (exclusive) of the scalar token starting at pos.
  std::size_t scalar_end(std::size_t pos) const {
    const std::size_t n = text_.size();
    if (pos < n && text_[pos] == '"') {
      for (std::size_t i = pos + 1; i < n; ++i) {
        if (text_[i] == '\\') {
          ++i;
        } else if (text_[i] == '"') {
          return i + 1;
        }
      }
      return n;
    }
    if (pos < n && text_[pos] == '\'') {
      for (std::size_t i = pos + 1; i < n; ++i) {
        if (text_[i] == '\'') {
          if (i + 1 < n && text_[i + 1] == '\'') {
            ++i;
          } else {
            return i + 1;
          }
        }
      }
      return n;
    }
    std::size_t i = pos;
    while (i < n && text_[i] != '\n' && text_[i] != ',' && text_[i] != '}' && text_[i] != ']' &&
           !(text_[i] == '#' && i > pos && (text_[i - 1] == ' ' || text_[i - 1] == '\t'))) {
      ++i;
    }
    while (i > pos && (text_[i - 1] == ' ' || text_[i - 1] == '\t')) --i;
    return i;
  }

  // The position of the bracket that closes the one at pos.
  std::size_t matching(std::size_t pos) const {
    int depth = 0;
    for (std::size_t i = pos; i < text_.size(); ++i) {
      const char c = text_[i];
      if (c == '"' || c == '\'') {
        i = scalar_end(i) - 1;
      } else if (c == '[' || c == '{') {
        ++depth;
      } else if (c == ']' || c == '}') {
        if (--depth == 0) return i;
      }
    }
    throw std::runtime_error("unbalanced brackets");
  }

  std::size_t line_end(std::size_t pos) const {
    const auto e = text_.find('\n', pos);
    return e == std::string::npos ? text_.size() : e;
  }
  std::size_t line_start(std::size_t pos) const {
    const auto s = text_.rfind('\n', pos == 0 ? 0 : pos - 1);
    return pos == 0 || s == std::string::npos ? 0 : s + 1;
  }

  std::string& text() { return text_; }

 private:
  std::string text_;
  bool json_;
};

// The key node of `key` in `map` (and its value), or nullopt. A default YAML::Node
// is a valid null node, not "absent", hence the optional.
std::optional<YAML::Node> child_key(const YAML::Node& map, std::string_view key,
                                    YAML::Node* value) {
  for (const auto& kv : map) {
    if (kv.first.IsScalar() && kv.first.Scalar() == key) {
      *value = kv.second;
      return kv.first;
    }
  }
  return std::nullopt;
}

std::string utc_stamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

std::string rotate_config_text(const std::string& text, std::size_t keystore_index,
                               std::size_t key_index, const config::KeyEntry& key,
                               std::uint32_t new_version, const std::string& new_label) {
  const YAML::Node root = YAML::Load(text);
  const bool json = root.Style() == YAML::EmitterStyle::Flow;
  const YAML::Node entry = root["keystores"][keystore_index]["keys"][key_index];
  if (!entry.IsMap()) throw std::runtime_error("the key entry is not a map");
  TextEdit ed(text, json);
  std::string& t = ed.text();
  const bool flow = entry.Style() == YAML::EmitterStyle::Flow;
  const std::size_t entry_pos = static_cast<std::size_t>(entry.Mark().pos);
  const std::string current = ed.name("current") + ": " + std::to_string(new_version);

  if (!key.versions_listed) {
    const std::string v1 = ed.version_item(1, key.versions.front().label);
    const std::string v2 = ed.version_item(new_version, new_label);
    YAML::Node label_value;
    const auto label_key = child_key(entry, "label", &label_value);
    if (flow) {
      if (t[entry_pos] != '{') throw std::runtime_error("unexpected flow map");
      const std::size_t close = ed.matching(entry_pos);
      std::string tail = ", " + current + ", " + ed.name("versions") + ": [" + v1 + ", " + v2 + "]";
      // Insert before the closing brace first (later in the text), then drop the label pair.
      std::size_t insert_at = close;
      while (insert_at > entry_pos + 1 && (t[insert_at - 1] == ' ' || t[insert_at - 1] == '\n'))
        --insert_at;
      t.insert(insert_at, tail);
      if (label_key) {
        std::size_t from = static_cast<std::size_t>(label_key->Mark().pos);
        std::size_t to = ed.scalar_end(static_cast<std::size_t>(label_value.Mark().pos));
        // Take the comma before the pair (the label is never the first: id is).
        std::size_t before = from;
        while (before > entry_pos && (t[before - 1] == ' ' || t[before - 1] == '\n')) --before;
        if (before > entry_pos && t[before - 1] == ',') from = before - 1;
        t.erase(from, to - from);
      }
      return t;
    }
    // Block map: the label line becomes current + versions at its indentation.
    YAML::Node id_value;
    const auto id_key = child_key(entry, "id", &id_value);
    if (!id_key) throw std::runtime_error("the key entry has no id");
    const YAML::Node& anchor = label_key ? *label_key : *id_key;
    const auto column = static_cast<std::size_t>(anchor.Mark().column);
    const std::string ind(column, ' ');
    const std::string block = current + "\n" + ind + ed.name("versions") + ":\n" + ind + "  - " +
                              v1 + "\n" + ind + "  - " + v2;
    if (label_key) {
      const std::size_t from = static_cast<std::size_t>(label_key->Mark().pos);
      const std::size_t to = ed.scalar_end(static_cast<std::size_t>(label_value.Mark().pos));
      t.replace(from, to - from, block);
    } else {
      const std::size_t eol = ed.line_end(static_cast<std::size_t>(id_value.Mark().pos));
      t.insert(eol, "\n" + ind + block);
    }
    return t;
  }

  // Already versioned: append the version, then set current (later edits first).
  YAML::Node versions;
  const auto versions_key = child_key(entry, "versions", &versions);
  YAML::Node current_value;
  const auto current_key = child_key(entry, "current", &current_value);
  if (!versions_key || !versions.IsSequence()) throw std::runtime_error("versions is not a list");
  const std::string item = ed.version_item(new_version, new_label);
  struct Edit {
    std::size_t pos, len;
    std::string with;
  };
  std::vector<Edit> edits;
  if (versions.Style() == YAML::EmitterStyle::Flow) {
    const std::size_t open = static_cast<std::size_t>(versions.Mark().pos);
    const std::size_t close = ed.matching(open);
    std::size_t at = close;
    while (at > open + 1 && (t[at - 1] == ' ' || t[at - 1] == '\n')) --at;
    edits.push_back({at, 0, ", " + item});
  } else {
    // The first item's dash sets the indentation; the list ends at the first
    // later line indented no deeper than it.
    const std::size_t first = static_cast<std::size_t>(versions[0].Mark().pos);
    const std::size_t ls = ed.line_start(first);
    const std::size_t dash = t.find('-', ls);
    if (dash == std::string::npos || dash > first)
      throw std::runtime_error("unexpected list layout");
    const std::size_t dash_col = dash - ls;
    std::size_t pos =
        ed.line_end(static_cast<std::size_t>(versions[versions.size() - 1].Mark().pos));
    std::size_t insert_at = t.size();
    while (pos < t.size()) {
      const std::size_t start = pos + 1;
      if (start >= t.size()) break;
      const std::size_t eol = ed.line_end(start);
      const std::string line = t.substr(start, eol - start);
      const auto nonblank = line.find_first_not_of(" \t\r");
      if (nonblank != std::string::npos && line[nonblank] != '#' && nonblank <= dash_col) {
        insert_at = start;
        break;
      }
      pos = eol;
    }
    std::string add = std::string(dash_col, ' ') + "- " + item + "\n";
    if (insert_at == t.size() && !t.empty() && t.back() != '\n') add = "\n" + add;
    edits.push_back({insert_at, 0, add});
  }
  if (current_key) {
    const std::size_t from = static_cast<std::size_t>(current_value.Mark().pos);
    edits.push_back({from, ed.scalar_end(from) - from, std::to_string(new_version)});
  } else {
    const std::size_t at = static_cast<std::size_t>(versions_key->Mark().pos);
    if (flow) {
      edits.push_back({at, 0, current + ", "});
    } else {
      edits.push_back(
          {at, 0,
           current + "\n" +
               std::string(static_cast<std::size_t>(versions_key->Mark().column), ' ')});
    }
  }
  std::sort(edits.begin(), edits.end(), [](const Edit& a, const Edit& b) { return a.pos > b.pos; });
  for (const auto& e : edits) t.replace(e.pos, e.len, e.with);
  return t;
}

std::string unified_change(const std::string& file, const std::string& before,
                           const std::string& after) {
  auto lines = [](const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  };
  const auto a = lines(before), b = lines(after);
  std::size_t head = 0;
  while (head < a.size() && head < b.size() && a[head] == b[head]) ++head;
  std::size_t tail = 0;
  while (tail < a.size() - head && tail < b.size() - head &&
         a[a.size() - 1 - tail] == b[b.size() - 1 - tail]) {
    ++tail;
  }
  std::string out = "--- " + file + "\n+++ " + file + "\n@@ -" + std::to_string(head + 1) + "," +
                    std::to_string(a.size() - head - tail) + " +" + std::to_string(head + 1) + "," +
                    std::to_string(b.size() - head - tail) + " @@\n";
  for (std::size_t i = head; i < a.size() - tail; ++i) out += "-" + a[i] + "\n";
  for (std::size_t i = head; i < b.size() - tail; ++i) out += "+" + b[i] + "\n";
  return out;
}

std::string next_label(const config::KeyEntry& key, std::uint32_t version) {
  // From version 1's label, so that a custom label of a later version does not
  // change the names of the ones after it.
  const std::string& base = key.versions.empty() ? key.label : key.versions.front().label;
  const auto v = base.rfind("-v");
  if (v != std::string::npos && v + 2 < base.size() &&
      base.find_first_not_of("0123456789", v + 2) == std::string::npos) {
    return base.substr(0, v) + "-v" + std::to_string(version);
  }
  return base + "-v" + std::to_string(version);
}

int keys_rotate(const Args& args) {
  const std::string file = args.require("--config", "the proxy's configuration file");
  const std::string key_id = args.require("--key", "the external key id to rotate");
  const config::Config cfg = config::load_config(file);
  const auto ks_filter = args.get("--keystore");
  std::size_t ks_index = 0, key_index = 0;
  const config::KeyEntry* key = nullptr;
  for (std::size_t i = 0; i < cfg.keystores.size(); ++i) {
    if (ks_filter && cfg.keystores[i].uri_path != *ks_filter) continue;
    for (std::size_t j = 0; j < cfg.keystores[i].keys.size(); ++j) {
      if (cfg.keystores[i].keys[j].id != key_id) continue;
      if (key != nullptr) {
        throw UsageError("key '" + key_id +
                         "' is in more than one key store; name one with --keystore URI_PATH");
      }
      key = &cfg.keystores[i].keys[j];
      ks_index = i;
      key_index = j;
    }
  }
  if (key == nullptr) {
    throw UsageError("no key '" + key_id + "' in " + file +
                     (ks_filter ? " key store " + *ks_filter : std::string()) +
                     "; add it first ({ id: " + key_id + ", label: ... })");
  }
  const std::uint32_t version = key->versions.back().number + 1;
  if (key->versions.back().number == 4294967295U)
    throw std::runtime_error("no version number left");
  const std::string label = args.get_or("--label", next_label(*key, version));
  for (const auto& v : key->versions) {
    if (v.label == label)
      throw UsageError("--label " + label + " is already version " + std::to_string(v.number));
  }

  std::ifstream in(file, std::ios::binary);
  const std::string before((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string after;
  try {
    after = rotate_config_text(before, ks_index, key_index, *key, version, label);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("cannot edit ") + file + " (" + e.what() +
                             "); nothing was created. Add by hand: "
                             "keys[].versions: { version: " +
                             std::to_string(version) + ", label: " + label +
                             " } and current: " + std::to_string(version));
  }
  // Check the edited text by loading it next to the original (relative paths
  // resolve the same way) before the HSM key is made.
  const fs::path path(file);
  const fs::path candidate = path.parent_path() / ("." + path.filename().string() + ".rotate-" +
                                                   std::to_string(::getpid()));
  struct Remove {
    fs::path p;
    ~Remove() {
      std::error_code ec;
      fs::remove(p, ec);
    }
  } remove_candidate{candidate};
  write_private_file(candidate, after, /*exclusive=*/true);
  config::Config next;
  try {
    next = config::load_config(candidate);
  } catch (const config::ConfigError& e) {
    throw std::runtime_error(std::string("the edited configuration would not load: ") + e.what() +
                             "; nothing was created or written");
  }
  const config::KeyEntry& edited = next.keystores.at(ks_index).keys.at(key_index);
  if (edited.id != key_id || edited.current != version || edited.label != label) {
    throw std::runtime_error("the edited configuration does not make version " +
                             std::to_string(version) + " current; nothing was created or written");
  }
  if (auto ok = config::check_version_continuity(cfg, next); !ok)
    throw std::runtime_error(ok.error().message);

  const config::HsmConfig& hsm = [&]() -> const config::HsmConfig& {
    const auto name = args.get("--hsm");
    if (!name) return cfg.hsms.front();
    for (const auto& h : cfg.hsms) {
      if (h.name == *name) return h;
    }
    throw UsageError("--hsm " + *name + " is not a configured HSM");
  }();
  // The backup is written before the HSM key is made, so that a backup that
  // cannot be written stops the rotation while nothing has changed yet.
  std::string backup;
  if (args.flag("--write")) {
    const std::string stamp = utc_stamp();
    for (int n = 0;; ++n) {
      backup = file + "." + stamp + (n == 0 ? std::string() : "-" + std::to_string(n)) + ".bak";
      std::error_code ec;
      if (!fs::exists(backup, ec)) break;
      if (n == 100) throw std::runtime_error("cannot find a free backup name next to " + file);
    }
    write_private_file(backup, before, /*exclusive=*/true);
  }
  std::vector<std::uint8_t> id(16);
  if (RAND_bytes(id.data(), static_cast<int>(id.size())) != 1)
    throw std::runtime_error("RAND_bytes failed");
  create_key(hsm, label, id, /*encrypt=*/true, /*decrypt=*/true);
  if (cfg.hsms.size() > 1) {
    std::printf(
        "WARN  the configuration lists %zu HSMs: version %u's key must exist on each "
        "(replicate it with the HSM's own tools) before the reload\n",
        cfg.hsms.size(), version);
  }
  const std::string change = unified_change(file, before, after);
  if (!args.flag("--write")) {
    std::printf(
        "configuration change for key %s (version %u current), not written (--write writes "
        "it):\n%s",
        key_id.c_str(), version, change.c_str());
  } else {
    struct stat st {};
    const ::mode_t mode = ::stat(file.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0600;
    ::chmod(backup.c_str(), mode);
    ::chmod(candidate.c_str(), mode);
    if (::stat(file.c_str(), &st) == 0) {
      // Keep the owner (the daemon's user must still read it); fails harmlessly when not root.
      (void)::chown(candidate.c_str(), st.st_uid, st.st_gid);
    }
    fs::rename(candidate, path);
    remove_candidate.p.clear();
    std::printf("wrote %s (backup %s):\n%s", file.c_str(), backup.c_str(), change.c_str());
  }
  std::printf(
      "next: reload the proxy (systemctl reload xks-proxy, or kill -HUP its pid); new ciphertexts "
      "then name version %u, older ones keep decrypting with their version\n",
      version);
  return 0;
}

}  // namespace xks::tools
