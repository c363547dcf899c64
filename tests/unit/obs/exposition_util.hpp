// Reading a Prometheus text exposition in tests.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace xks::obs::test {

// The value of one series, given exactly as exposed (name plus label set), or
// nullopt if the scrape does not contain it.
inline std::optional<std::string> sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.starts_with(series) && line[series.size()] == ' ') {
      return line.substr(series.size() + 1);
    }
  }
  return std::nullopt;
}

// Checks the grammar of format 0.0.4 as Prometheus parses it: HELP then TYPE
// before a family's samples, each family once, sample names belonging to the
// current family, well-formed and escaped label sets, no duplicate series.
inline void expect_well_formed(const std::string& text) {
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")"
      R"((?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? )"
      R"((-?[0-9][0-9.e+-]*|\+Inf|-Inf|NaN)$)");
  static const std::regex kHelp(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*$)");
  static const std::regex kType(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$)");
  std::set<std::string> families;
  std::set<std::string> series;
  std::string family;
  std::string type;
  std::string pending_help;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      pending_help = m[1];
    } else if (std::regex_match(line, m, kType)) {
      EXPECT_EQ(m[1].str(), pending_help) << "TYPE without its HELP: " << line;
      EXPECT_TRUE(families.insert(m[1]).second) << "family twice: " << line;
      family = m[1];
      type = m[2];
    } else if (std::regex_match(line, m, kSample)) {
      const std::string name = m[1];
      bool belongs = name == family;
      if (type == "histogram") {
        belongs =
            name == family + "_bucket" || name == family + "_sum" || name == family + "_count";
      }
      EXPECT_TRUE(belongs) << "sample outside its family " << family << ": " << line;
      EXPECT_TRUE(series.insert(name + m[2].str()).second) << "duplicate series: " << line;
    } else {
      ADD_FAILURE() << "not exposition format 0.0.4: " << line;
    }
  }
}

}  // namespace xks::obs::test
