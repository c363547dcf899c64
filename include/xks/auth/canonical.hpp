// The pure building blocks of a SigV4 canonical request, as AWS defines them for
// every service but S3 ("Create a canonical request", AWS General Reference;
// XKS spec Appendix A, Task 1). Plain functions on strings, shared by the
// verifier and the signer so that the two cannot drift apart.
#pragma once

#include <string>
#include <string_view>

namespace xks::auth {

// AWS URI encoding: A-Z a-z 0-9 - _ . ~ are kept, every other byte becomes %XX
// (upper-case hex); '/' is kept only when keep_slash is set.
void uri_encode_append(std::string& out, std::string_view text, bool keep_slash);

// The CanonicalURI of a request path as received on the wire (no query): dot
// segments removed and runs of '/' collapsed, then URI-encoded once more with '/'
// kept. Encoding the already-encoded wire form again is deliberate: it is the
// "double encoding" every AWS SDK applies for non-S3 services, so "%20" in the
// request becomes "%2520" here. An empty path is "/".
std::string canonical_uri(std::string_view path);
// The same, appended to out (the verifier builds its canonical request in one
// reused buffer).
void canonical_uri_append(std::string& out, std::string_view path);

// The CanonicalQueryString of a raw query (the part after '?'): each name and
// value percent-decoded, re-encoded with uri_encode_append, and the pairs sorted
// by name then value. A name without '=' has an empty value. Malformed %-escapes
// are taken literally (and so re-encoded as %25..), which keeps this total.
std::string canonical_query(std::string_view query);

// A header value as it enters the canonical headers: leading and trailing
// spaces and tabs removed, inner runs of them collapsed to one space.
void canonical_header_value_append(std::string& out, std::string_view value);

// Lower-case hex SHA-256 of data; empty only if OpenSSL fails.
std::string hex_sha256(std::string_view data);

}  // namespace xks::auth
