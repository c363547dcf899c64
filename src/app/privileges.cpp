#include "xks/app/privileges.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace xks::app {
namespace {

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& setting,
                       const std::string& problem, const std::string& fix) {
  std::string msg = file.empty() ? std::string() : file.string() + ": ";
  throw std::runtime_error(msg + setting + ": " + problem + "; fix: " + fix);
}

std::optional<unsigned long> numeric_id(const std::string& s) {
  unsigned long v = 0;
  const char* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ptr != end || ec != std::errc{}) return std::nullopt;
  return v;
}

std::string errno_text(int err) { return err == 0 ? "no such entry" : std::strerror(err); }

struct Account {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;  // empty for a numeric uid without a passwd entry
};

// getpwnam_r/getpwuid_r with a buffer that grows on ERANGE.
Account lookup_user(const std::string& user, const std::filesystem::path& file) {
  std::vector<char> buf(1024);
  passwd pw{};
  passwd* found = nullptr;
  const auto number = numeric_id(user);
  for (;;) {
    const int rc =
        number ? ::getpwuid_r(static_cast<uid_t>(*number), &pw, buf.data(), buf.size(), &found)
               : ::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (1U << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (found == nullptr) {
      fail(file, "server.user", "no user \"" + user + "\" on this host (" + errno_text(rc) + ")",
           "create it (e.g. `useradd --system --no-create-home --shell /usr/sbin/nologin " +
               (number ? std::string("xks-proxy") : user) +
               "`) or set server.user to an existing account");
    }
    return Account{pw.pw_uid, pw.pw_gid, pw.pw_name};
  }
}

gid_t lookup_group(const std::string& group, const std::filesystem::path& file) {
  std::vector<char> buf(1024);
  struct group gr {};
  struct group* found = nullptr;
  const auto number = numeric_id(group);
  for (;;) {
    const int rc =
        number ? ::getgrgid_r(static_cast<gid_t>(*number), &gr, buf.data(), buf.size(), &found)
               : ::getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (1U << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (found == nullptr) {
      if (number) return static_cast<gid_t>(*number);  // a bare gid needs no entry
      fail(file, "server.group", "no group \"" + group + "\" on this host (" + errno_text(rc) + ")",
           "create it (`groupadd --system " + group +
               "`), or delete server.group to use the "
               "user's primary group");
    }
    return gr.gr_gid;
  }
}

}  // namespace

void check_root_policy(const config::ServerConfig& server, const std::filesystem::path& file) {
  if (::geteuid() != 0 || !server.user.empty() || server.allow_root) return;
  fail(file, "server.user",
       "refusing to run as root: a flaw in TLS, HTTP or JSON parsing would then hand over the "
       "whole host, not just the proxy",
       "set server.user (e.g. xks-proxy) so the proxy drops to it after binding the port, or "
       "start it as an unprivileged user with CAP_NET_BIND_SERVICE (systemd: User= and "
       "AmbientCapabilities=CAP_NET_BIND_SERVICE), or set server.allow_root: true to accept the "
       "risk");
}

void drop_privileges(const config::ServerConfig& server, const std::filesystem::path& file) {
  if (server.user.empty()) return;
  const Account acct = lookup_user(server.user, file);
  const gid_t gid = server.group.empty() ? acct.gid : lookup_group(server.group, file);
  if (acct.uid == 0) {
    fail(file, "server.user", "\"" + server.user + "\" has uid 0, which is no privilege drop",
         "name an unprivileged account such as xks-proxy");
  }

  const uid_t euid = ::geteuid();
  if (euid != 0) {
    // Started unprivileged (e.g. systemd User=): fine if it is already the
    // configured identity, an error otherwise (only root can switch).
    if (euid == acct.uid && ::getuid() == acct.uid && ::getegid() == gid) return;
    fail(file, "server.user",
         "the proxy runs as uid " + std::to_string(euid) + " and cannot switch to \"" +
             server.user + "\" (uid " + std::to_string(acct.uid) + ", gid " + std::to_string(gid) +
             "); only root can change users",
         "start it as root (it drops to server.user after binding the port), or start it as "
         "that user and group directly");
  }

  // Groups first: once the uid is no longer 0, they cannot be changed.
  const int groups_rc =
      acct.name.empty() ? ::setgroups(1, &gid) : ::initgroups(acct.name.c_str(), gid);
  if (groups_rc != 0) {
    const int err = errno;
    fail(file, "server.group",
         std::string("cannot set the supplementary groups: ") + std::strerror(err),
         "check the group database (getent group)");
  }
  if (::setresgid(gid, gid, gid) != 0) {
    const int err = errno;
    fail(file, "server.group",
         "cannot switch to gid " + std::to_string(gid) + ": " + std::strerror(err),
         "check that the group exists and the proxy starts as root");
  }
  if (::setresuid(acct.uid, acct.uid, acct.uid) != 0) {
    const int err = errno;
    fail(file, "server.user",
         "cannot switch to uid " + std::to_string(acct.uid) + ": " + std::strerror(err),
         "check that the user exists and the proxy starts as root (in a container: that "
         "CAP_SETUID and CAP_SETGID are not dropped)");
  }

  // Verify: every id is the target, and root cannot be regained.
  uid_t ru = 0, eu = 0, su = 0;
  gid_t rg = 0, eg = 0, sg = 0;
  const bool ids_ok = ::getresuid(&ru, &eu, &su) == 0 && ::getresgid(&rg, &eg, &sg) == 0 &&
                      ru == acct.uid && eu == acct.uid && su == acct.uid && rg == gid &&
                      eg == gid && sg == gid;
  if (!ids_ok) {
    fail(file, "server.user",
         "the switch to uid " + std::to_string(acct.uid) + " did not take on every id",
         "report this: the process refuses to serve with mixed privileges");
  }
  if (::setuid(0) == 0 || ::seteuid(0) == 0 || ::setgid(0) == 0) {
    fail(file, "server.user", "root could be regained after dropping privileges",
         "run without CAP_SETUID/CAP_SETGID ambient capabilities (check the service unit)");
  }
}

}  // namespace xks::app
