// xksctl keys rotate (docs/xksctl.md) and the configuration text edit it makes,
// exposed for tests.
#pragma once

#include <cstdint>
#include <string>

#include "xks/config/config.hpp"
#include "xks/tools/cli.hpp"

namespace xks::tools {

// `text` with key `key_index` of key store `keystore_index` given version
// `new_version` (label `new_label`) as its current version: the single-label
// form becomes versions [1, new]; a versions list gets the new item and
// `current` is set. Only those lines change. Throws std::runtime_error when the
// layout is not one it can edit.
std::string rotate_config_text(const std::string& text, std::size_t keystore_index,
                               std::size_t key_index, const config::KeyEntry& key,
                               std::uint32_t new_version, const std::string& new_label);

// One unified-diff hunk from `before` to `after`.
std::string unified_change(const std::string& file, const std::string& before,
                           const std::string& after);

// The label of version `version`: version 1's label with "-v<N>" in place of
// its "-v<digits>" suffix, or appended.
std::string next_label(const config::KeyEntry& key, std::uint32_t version);

int keys_rotate(const Args& args);

}  // namespace xks::tools
