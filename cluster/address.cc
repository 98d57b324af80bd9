// cluster/address.cc: the cluster's Redis address (cluster.h): redis://HOST:PORT[/DB],
// redis-sentinel://H1:P1[,H2:P2...]/MASTERNAME[/DB] or redis-cluster://H1:P1[,H2:P2...],
// parsed with a message that says what is wrong.
#include <charconv>
#include <stdexcept>

#include "cluster/cluster.h"

namespace cluster {

namespace {

constexpr std::string_view kRedis = "redis://";
constexpr std::string_view kSentinel = "redis-sentinel://";
constexpr std::string_view kCluster = "redis-cluster://";

std::invalid_argument bad(std::string_view url, const std::string& why) {
  return std::invalid_argument("cluster address '" + std::string(url) + "': " + why +
                               " (expected redis://HOST:PORT[/DB], "
                               "redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB] or "
                               "redis-cluster://HOST:PORT[,HOST:PORT...])");
}

bool parse_int(std::string_view text, int lo, int hi, int& out) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && ec == std::errc() && p == text.data() + text.size() && out >= lo && out <= hi;
}

HostPort parse_host_port(std::string_view url, std::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) throw bad(url, "no port in '" + std::string(text) + "'");
  HostPort hp;
  hp.host = std::string(text.substr(0, colon));
  if (hp.host.empty()) throw bad(url, "no host in '" + std::string(text) + "'");
  if (!parse_int(text.substr(colon + 1), 1, 65535, hp.port))
    throw bad(url, "the port in '" + std::string(text) + "' is not a number from 1 to 65535");
  return hp;
}

int parse_db(std::string_view url, std::string_view text) {
  int db = 0;
  if (!parse_int(text, 0, 15, db)) throw bad(url, "the database is not a number from 0 to 15");
  return db;
}

std::vector<HostPort> parse_hosts(std::string_view url, std::string_view hosts, const char* what) {
  if (hosts.empty()) throw bad(url, std::string("no ") + what);
  std::vector<HostPort> out;
  for (size_t start = 0;;) {
    size_t comma = hosts.find(',', start);
    out.push_back(parse_host_port(url, hosts.substr(start, comma - start)));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

}  // namespace

std::string HostPort::text() const { return host + ":" + std::to_string(port); }

std::string Address::text() const {
  if (via_cluster()) {
    std::string url(kCluster);
    for (size_t i = 0; i < cluster_seeds.size(); ++i) {
      if (i) url += ',';
      url += cluster_seeds[i].text();
    }
    return url;
  }
  if (!via_sentinel()) return std::string(kRedis) + server.text() + "/" + std::to_string(db);
  std::string url(kSentinel);
  for (size_t i = 0; i < sentinels.size(); ++i) {
    if (i) url += ',';
    url += sentinels[i].text();
  }
  url += '/';
  url += master;
  url += '/';
  url += std::to_string(db);
  return url;
}

Address parse_address(std::string_view url) {
  Address a;
  if (url.substr(0, kRedis.size()) == kRedis) {
    std::string_view rest = url.substr(kRedis.size());
    size_t slash = rest.find('/');
    if (slash != std::string_view::npos) a.db = parse_db(url, rest.substr(slash + 1));
    a.server = parse_host_port(url, rest.substr(0, slash));
    return a;
  }
  if (url.substr(0, kCluster.size()) == kCluster) {
    std::string_view hosts = url.substr(kCluster.size());
    if (hosts.find('/') != std::string_view::npos)
      throw bad(url, "a Redis Cluster has only database 0: no /DB after the nodes");
    a.cluster_seeds = parse_hosts(url, hosts, "seed node");
    return a;
  }
  if (url.substr(0, kSentinel.size()) != kSentinel)
    throw bad(url, "neither redis://, redis-sentinel:// nor redis-cluster://");
  std::string_view rest = url.substr(kSentinel.size());
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos) throw bad(url, "no master name");
  std::string_view hosts = rest.substr(0, slash);
  std::string_view path = rest.substr(slash + 1);
  size_t db_slash = path.find('/');
  if (db_slash != std::string_view::npos) a.db = parse_db(url, path.substr(db_slash + 1));
  a.master = std::string(path.substr(0, db_slash));
  if (a.master.empty()) throw bad(url, "no master name");
  for (char c : a.master)
    if (c <= ' ' || c == 0x7f) throw bad(url, "the master name contains a space or a control character");
  a.sentinels = parse_hosts(url, hosts, "sentinel");
  return a;
}

}  // namespace cluster
