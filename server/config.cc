// server/config.cc: the settings table shared by the TOML file and the command line,
// and the checks that turn text into Options. toml++ and CLI11 do the parsing (quoting,
// escapes, arrays, `--flag=value`, help text, error messages) that a hand-written parser
// would get subtly wrong; this file only says what each setting means.
#include "server/config.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <functional>
#include <iostream>
#include <thread>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <toml++/toml.h>

#include "cluster/cluster.h"
#include "common/log.h"
#include "server/reader.h"
#include "shm/shm.h"
#include "state/state.h"

namespace server {

namespace log = common::log;

namespace {

using Values = std::vector<std::string>;
using ms = std::chrono::milliseconds;

// Longer than any sensible timeout, and far from where the supervisor's nanosecond
// arithmetic (now + d) could overflow.
constexpr ms kMaxDuration = std::chrono::hours(24);

enum class Kind { value, list, flag };

struct Setting {
  const char* name;
  Kind kind;
  const char* help;
  std::function<void(Options&, const Values&)> apply;
};

uint64_t parse_count(const std::string& name, const std::string& text, uint64_t min, uint64_t max) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if ((ec != std::errc() && ec != std::errc::result_out_of_range) || end != text.data() + text.size())
    throw std::invalid_argument(fmt::format("{}: '{}' is not a whole number", name, text));
  if (ec == std::errc::result_out_of_range || n < min || n > max)
    throw std::invalid_argument(fmt::format("{}: {} is out of range {}..{}", name, text, min, max));
  return n;
}

// The store has shm::kMaxReaders slots and the service needs workers + 1 of them
// (Options::store_slots).
constexpr uint32_t kMaxWorkers = shm::kMaxReaders - 1;

uint32_t check_workers(uint64_t n) {
  if (n < 2 || n > kMaxWorkers)
    throw std::invalid_argument(fmt::format(
        "workers: {} is out of range 2..{} (the shared memory has {} reader slots, and the service needs one "
        "per reader, a spare for rolling restarts and one for the supervisor)",
        n, kMaxWorkers, shm::kMaxReaders));
  return uint32_t(n);
}

ms parse_duration(const std::string& name, const std::string& text) {
  try {
    return ingest::parse_duration(text);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: {}", name, e.what()));
  }
}

bool parse_bool(const std::string& name, const std::string& text) {
  if (text == "true" || text == "1" || text == "yes") return true;
  if (text == "false" || text == "0" || text == "no") return false;
  throw std::invalid_argument(fmt::format("{}: '{}' is not true or false", name, text));
}

// Helpers that build the `apply` of one setting.
template <typename T>
std::function<void(Options&, const Values&)> text(T Options::*field) {
  return [field](Options& o, const Values& v) { o.*field = v.back(); };
}
std::function<void(Options&, const Values&)> duration(const char* name, ms Options::*field) {
  return [name, field](Options& o, const Values& v) { o.*field = parse_duration(name, v.back()); };
}
std::function<void(Options&, const Values&)> ingest_duration(const char* name, ms ingest::Config::*field) {
  return [name, field](Options& o, const Values& v) { o.ingest.*field = parse_duration(name, v.back()); };
}
std::function<void(Options&, const Values&)> ingest_count(const char* name, size_t ingest::Config::*field) {
  return [name, field](Options& o, const Values& v) {
    o.ingest.*field = parse_count(name, v.back(), 1, uint64_t(1) << 40);
  };
}

// Long as a table: one row per setting, the list docs/operations.md documents.
const std::vector<Setting>& settings() {
  static const std::vector<Setting> table = {
      {"listen", Kind::value, "HTTP address HOST:PORT (default 127.0.0.1:8080)", text(&Options::listen)},
      {"workers", Kind::value, "processes: 1 writer + N-1 HTTP readers (default: cores, at least 2)",
       [](Options& o, const Values& v) { o.workers = check_workers(parse_count("workers", v.back(), 0, UINT64_MAX)); }},
      {"source", Kind::list, "upstream URL: http://, file:// or synthetic:// (repeatable; default synthetic://)",
       [](Options& o, const Values& v) { o.ingest.sources = v; }},
      {"interval", Kind::value, "fetch and publish every DURATION (default 2s)",
       ingest_duration("interval", &ingest::Config::interval)},
      {"window", Kind::value, "aggregation window (default 1m)", ingest_duration("window", &ingest::Config::window)},
      {"source-timeout", Kind::value, "per-fetch timeout (default 1500ms)",
       ingest_duration("source-timeout", &ingest::Config::source_timeout)},
      {"stale-after", Kind::value, "a series is stale after DURATION without samples (default 3 intervals)",
       ingest_duration("stale-after", &ingest::Config::stale_after)},
      {"expire-after", Kind::value, "a series is dropped after DURATION without samples (default: the window)",
       ingest_duration("expire-after", &ingest::Config::expire_after)},
      {"max-body-bytes", Kind::value, "largest upstream body accepted",
       ingest_count("max-body-bytes", &ingest::Config::max_body_bytes)},
      {"fetch-memory-limit", Kind::value, "bytes all upstream fetches in flight may hold together (default 256 MiB)",
       ingest_count("fetch-memory-limit", &ingest::Config::fetch_memory_limit)},
      {"max-series", Kind::value, "series limit over all sources", ingest_count("max-series", &ingest::Config::max_series)},
      {"max-series-per-source", Kind::value, "series limit of one source",
       ingest_count("max-series-per-source", &ingest::Config::max_series_per_source)},
      {"prom-series-limit", Kind::value, "/metrics lists per-series gauges only below this many series",
       ingest_count("prom-series-limit", &ingest::Config::prom_series_limit)},
      {"writer-threads", Kind::value,
       "threads that render a snapshot's series bodies (default: cores, at most 8; same bytes whatever the count)",
       [](Options& o, const Values& v) {
         o.ingest.writer_threads = parse_count("writer-threads", v.back(), 1, ingest::kMaxWriterThreads);
       }},
      {"otlp-listen", Kind::value, "serve OTLP/HTTP metrics pushes (POST /v1/metrics) on HOST:PORT (default off)",
       text(&Options::otlp_listen)},
      {"otlp-max-body", Kind::value, "largest OTLP request body, as received and once decompressed (default 4 MiB)",
       [](Options& o, const Values& v) { o.otlp_max_body = parse_count("otlp-max-body", v.back(), 1024, 1 << 30); }},
      {"otlp-max-pending", Kind::value,
       "OTLP samples waiting for the next interval; beyond, pushes get 503 + Retry-After (default 100000)",
       [](Options& o, const Values& v) {
         o.otlp_max_pending = parse_count("otlp-max-pending", v.back(), 1, uint64_t(1) << 32);
       }},
      {"admin-socket", Kind::value, "admin socket path (default $XDG_RUNTIME_DIR/telemetryd.sock or /tmp/telemetryd.sock)",
       text(&Options::admin_socket)},
      {"shm-name", Kind::value, "POSIX shared memory name (default telemetryd)", text(&Options::shm_name)},
      {"log-file", Kind::value, "log to FILE instead of stderr (SIGUSR1 reopens it)", text(&Options::log_file)},
      {"log-level", Kind::value, "debug, info, warn or error (default info)", text(&Options::log_level)},
      {"pidfile", Kind::value, "write the supervisor's pid to FILE", text(&Options::pidfile)},
      {"daemon", Kind::flag, "detach from the terminal (returns once the service is ready)",
       [](Options& o, const Values& v) { o.daemon = parse_bool("daemon", v.back()); }},
      {"cluster", Kind::value, "join the cluster whose log is in this Redis: redis://HOST:PORT[/DB], or the master "
       "Sentinel names: redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB], or a Redis Cluster: "
       "redis-cluster://HOST:PORT[,HOST:PORT...] (default: none)",
       text(&Options::cluster)},
      {"cluster-name", Kind::value, "the cluster's Redis keys are {NAME}:... (default telemetryd)",
       text(&Options::cluster_name)},
      {"node-id", Kind::value, "this node's name in the cluster (default HOSTNAME:PORT of listen)",
       text(&Options::node_id)},
      {"advertise", Kind::value, "HOST:PORT at which the other nodes of a partitioned cluster reach this node's HTTP "
       "listener to route queries (default: listen, with HOSTNAME for a wildcard address)",
       text(&Options::advertise)},
      {"lease", Kind::value, "the cluster leader's lease, renewed every third of it (default 6s)",
       duration("lease", &Options::lease)},
      {"role", Kind::value, "auto (may lead the cluster) or follower (a read replica, never leads) (default auto)",
       text(&Options::role)},
      {"checkpoint-every", Kind::value, "a checkpoint every N log entries: the cluster leader's, and a standalone node's in its state "
       "dir (default 30)",
       [](Options& o, const Values& v) {
         o.checkpoint_every = uint32_t(parse_count("checkpoint-every", v.back(), 1, 1000000));
       }},
      {"partitions", Kind::value,
       "spread the cluster's series over N partitions, each held by replication-factor nodes; fixed when the "
       "cluster is created, a node started with another number follows the cluster's (default 1: every node "
       "holds everything)",
       [](Options& o, const Values& v) { o.partitions = uint32_t(parse_count("partitions", v.back(), 1, 4096)); }},
      {"replication-factor", Kind::value, "a partitioned cluster: the nodes that hold each partition (default 2)",
       [](Options& o, const Values& v) {
         o.replication_factor = uint32_t(parse_count("replication-factor", v.back(), 1, 16));
       }},
      {"cluster-wait-replicas", Kind::value,
       "a leader shows a tick once this many Redis replicas have its entry: auto (one, when the master has a "
       "replica) or a number, 0 never waits (default auto)",
       [](Options& o, const Values& v) {
         o.cluster_wait_replicas =
             v.back() == "auto" ? -1 : int(parse_count("cluster-wait-replicas", v.back(), 0, 16));
       }},
      {"state-dir", Kind::value,
       "keep the window's log and checkpoints in DIR, so that a restart or an upgrade continues it (default: "
       "none; a writer crash is covered all the same, from /dev/shm)",
       text(&Options::state_dir)},
      {"state-fsync", Kind::value,
       "always (the log at every entry), checkpoint (checkpoints only) or never: what a power loss can cost "
       "(default checkpoint)",
       text(&Options::state_fsync)},
      {"stuck-timeout", Kind::value, "kill a reader whose loop has not ticked for DURATION (default 5s)",
       duration("stuck-timeout", &Options::stuck_timeout)},
      {"writer-stuck-timeout", Kind::value,
       "kill the writer if its loop has not turned for DURATION (default 60s; above the longest snapshot build)",
       duration("writer-stuck-timeout", &Options::writer_stuck_timeout)},
      {"shutdown-timeout", Kind::value, "SIGKILL children still running DURATION after SIGTERM (default 10s)",
       duration("shutdown-timeout", &Options::shutdown_timeout)},
      {"restart-backoff-max", Kind::value, "longest wait before restarting a crashed child (default 30s)",
       duration("restart-backoff-max", &Options::restart_backoff_max)},
      {"crash-loop-limit", Kind::value, "restarts of one child within crash-loop-window before giving up (default 10)",
       [](Options& o, const Values& v) { o.crash_loop_limit = uint32_t(parse_count("crash-loop-limit", v.back(), 1, 1000000)); }},
      {"crash-loop-window", Kind::value, "see crash-loop-limit (default 1m)",
       duration("crash-loop-window", &Options::crash_loop_window)},
      {"idle-timeout", Kind::value, "close idle keep-alive connections after DURATION (default 1m)",
       duration("idle-timeout", &Options::idle_timeout)},
      {"request-timeout", Kind::value, "a request must arrive within DURATION (default 10s)",
       duration("request-timeout", &Options::request_timeout)},
      {"healthz-max-age", Kind::value, "/healthz fails when the snapshot is older (default 10s)",
       duration("healthz-max-age", &Options::healthz_max_age)},
      {"query-deadline", Kind::value, "a partitioned node answers without the partitions no holder gave within "
       "DURATION, saying so (default 1s)",
       duration("query-deadline", &Options::query_deadline)},
      {"max-header-bytes", Kind::value, "largest request head accepted (default 8192)",
       [](Options& o, const Values& v) { o.max_header_bytes = parse_count("max-header-bytes", v.back(), 256, 1 << 20); }},
      {"max-connections-per-reader", Kind::value,
       "open connections per reader; beyond, new ones wait for a peer (default 10000, capped by ulimit -n)",
       [](Options& o, const Values& v) {
         o.max_connections_per_reader = parse_count("max-connections-per-reader", v.back(), 1, 1 << 24);
       }},
      {"reader-engine", Kind::value,
       "the readers' connection engine: auto (io_uring when the kernel allows it), io_uring or epoll (default auto)",
       text(&Options::reader_engine)},
  };
  return table;
}

// A file may spell a setting with '_' for '-' (replication_factor), as TOML files often do.
const Setting* find_setting(std::string_view name) {
  std::string spelled(name);
  std::replace(spelled.begin(), spelled.end(), '_', '-');
  for (const Setting& s : settings())
    if (spelled == s.name) return &s;
  return nullptr;
}

// One TOML scalar as the text a flag would have carried.
std::string scalar_text(const toml::node& node, const std::string& where) {
  if (auto s = node.value_exact<std::string>()) return *s;
  if (auto b = node.value_exact<bool>()) return *b ? "true" : "false";
  if (auto i = node.value_exact<int64_t>()) return std::to_string(*i);
  if (auto d = node.value_exact<double>()) return fmt::format("{}", *d);
  throw std::invalid_argument(fmt::format("{}: expected a string, number or boolean", where));
}

// toml::parse / toml::parse_file on `origin`, with a parse error as std::invalid_argument.
template <typename Parse>
toml::table parse_toml(Parse parse, const std::string& origin) {
  try {
    return parse();
  } catch (const toml::parse_error& e) {
    throw std::invalid_argument(fmt::format("{}:{}:{}: {}", origin, e.source().begin.line, e.source().begin.column,
                                            e.description()));
  }
}

// `origin` (the file's path) prefixes every message.
void apply_table(Options& options, const toml::table& table, const std::string& origin) {
  for (const auto& [key, node] : table) {
    std::string name(key.str());
    std::string where = fmt::format("{}: {}", origin, name);
    const Setting* s = find_setting(name);
    if (!s) throw std::invalid_argument(fmt::format("{}: unknown setting (see telemetryd --help)", where));
    Values values;
    if (const toml::array* list = node.as_array()) {
      if (s->kind != Kind::list) throw std::invalid_argument(fmt::format("{}: takes one value, not a list", where));
      for (const toml::node& item : *list) values.push_back(scalar_text(item, where));
      if (values.empty()) continue;  // `source = []`: keep the default
    } else {
      values.push_back(scalar_text(node, where));
    }
    try {
      s->apply(options, values);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("{}: {}", origin, e.what()));
    }
  }
}

// The address must parse and resolve, and not be the read API's; whether it is free
// is known only when the writer binds it.
void check_otlp_listen(const Options& o) {
  std::pair<std::string, uint16_t> address;
  try {
    address = parse_listen(o.otlp_listen);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument(fmt::format("otlp-listen: '{}' is not HOST:PORT", o.otlp_listen));
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::string port = std::to_string(address.second);
  if (int rc = getaddrinfo(address.first.c_str(), port.c_str(), &hints, &found))
    throw std::invalid_argument(fmt::format("otlp-listen: '{}': {}", address.first, gai_strerror(rc)));
  freeaddrinfo(found);
  if (address.second != 0 && address == parse_listen(o.listen))
    throw std::invalid_argument(fmt::format("otlp-listen: {} is the read API's address (listen)", o.otlp_listen));
}

uint32_t default_workers() { return std::clamp(std::thread::hardware_concurrency(), 2u, kMaxWorkers); }

// What `path` will be once main() has made it absolute (from the current directory).
size_t absolute_length(const std::string& path) {
  if (path.empty() || path.front() == '/') return path.size();
  char cwd[PATH_MAX];
  return (getcwd(cwd, sizeof cwd) ? std::strlen(cwd) : PATH_MAX) + 1 + path.size();
}

bool plain_name(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == ':';
  });
}

void check_state(Options& o) {
  if (!state::parse_fsync(o.state_fsync))
    throw std::invalid_argument(fmt::format("state-fsync: '{}' is not always, checkpoint or never", o.state_fsync));
  if (o.state_dir.empty()) return;
  if (o.state_dir.front() != '/') {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
      throw std::invalid_argument(fmt::format("state-dir: '{}' is relative and the current directory is unknown",
                                              o.state_dir));
    o.state_dir = std::string(cwd) + "/" + o.state_dir;
  }
  while (o.state_dir.size() > 1 && o.state_dir.back() == '/') o.state_dir.pop_back();
  struct stat st {};
  if (::stat(o.state_dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw std::invalid_argument(fmt::format("state-dir: {} is not a directory", o.state_dir));
    return;
  }
  std::string parent = o.state_dir.substr(0, std::max<size_t>(1, o.state_dir.rfind('/')));
  if (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw std::invalid_argument(
        fmt::format("state-dir: {} does not exist, nor does its parent directory {}", o.state_dir, parent));
}

void check_cluster(Options& o) {
  if (o.role != "auto" && o.role != "follower")
    throw std::invalid_argument(fmt::format("role: '{}' is not auto or follower", o.role));
  if (o.cluster_name.empty() || o.cluster_name.size() > 64 || !plain_name(o.cluster_name))
    throw std::invalid_argument(fmt::format(
        "cluster-name: '{}' must be 1-64 letters, digits or '-', '_', '.', ':'", o.cluster_name));
  if (o.lease < ms(300) || o.lease > std::chrono::hours(1))
    throw std::invalid_argument("lease: must be from 300ms to 1h");
  if (o.cluster.empty()) {
    if (o.partitions > 1) throw std::invalid_argument("partitions: a partitioned node needs a cluster (--cluster)");
    return;
  }
  try {
    cluster::parse_address(o.cluster);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("cluster: {}", e.what()));
  }
  if (o.node_id.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
    o.node_id = fmt::format("{}:{}", host, parse_listen(o.listen).second);
  }
  if (o.node_id.size() > 128 || !plain_name(o.node_id))
    throw std::invalid_argument(fmt::format(
        "node-id: '{}' must be 1-128 letters, digits or '-', '_', '.', ':'", o.node_id));
  if (o.advertise.empty()) {
    auto [host, port] = parse_listen(o.listen);
    if (host.empty() || host == "0.0.0.0" || host == "::") {
      char name[256] = {};
      if (gethostname(name, sizeof name - 1) != 0) std::strcpy(name, "localhost");
      host = name;
    }
    o.advertise = host.find(':') == std::string::npos ? fmt::format("{}:{}", host, port) : fmt::format("[{}]:{}", host, port);
  }
  bool advertise_ok = o.advertise.size() <= 128 && o.advertise.find_first_of(" ,\t\r\n") == std::string::npos;
  try {
    advertise_ok = advertise_ok && parse_listen(o.advertise).second != 0;
  } catch (const std::invalid_argument&) {
    advertise_ok = false;
  }
  if (!advertise_ok) throw std::invalid_argument(fmt::format("advertise: '{}' is not HOST:PORT", o.advertise));
}

}  // namespace

void check_options(Options& o) {
  parse_listen(o.listen);
  o.workers = check_workers(o.workers == 0 ? default_workers() : o.workers);
  if (o.admin_socket.empty()) o.admin_socket = default_admin_socket();
  constexpr size_t max_socket_path = sizeof(sockaddr_un::sun_path) - 1;
  if (size_t n = absolute_length(o.admin_socket); n > max_socket_path)
    throw std::invalid_argument(
        fmt::format("admin-socket: path too long ({} bytes as an absolute path, at most {})", n, max_socket_path));
  if (o.shm_name.empty() || o.shm_name.size() > 80 || o.shm_name.find('/') != std::string::npos)
    throw std::invalid_argument(fmt::format("shm-name: '{}' must be 1-80 characters without '/'", o.shm_name));
  if (!parse_reader_engine(o.reader_engine))
    throw std::invalid_argument(fmt::format("reader-engine: '{}' is not auto, io_uring or epoll", o.reader_engine));
  if (!log::parse_level(o.log_level))
    throw std::invalid_argument(fmt::format("log-level: '{}' is not debug, info, warn or error", o.log_level));
  if (!o.otlp_listen.empty()) check_otlp_listen(o);
  if (o.ingest.sources.size() + !o.otlp_listen.empty() > shm::kMaxSources)
    throw std::invalid_argument(fmt::format("source: at most {} sources ({} with otlp-listen)", shm::kMaxSources,
                                            shm::kMaxSources - 1));
  if (o.stuck_timeout < ms(100)) throw std::invalid_argument("stuck-timeout: must be at least 100ms");
  if (o.writer_stuck_timeout < ms(500)) throw std::invalid_argument("writer-stuck-timeout: must be at least 500ms");
  if (o.query_deadline < ms(10)) throw std::invalid_argument("query-deadline: must be at least 10ms");
  const std::pair<const char*, ms Options::*> durations[] = {
      {"stuck-timeout", &Options::stuck_timeout},         {"writer-stuck-timeout", &Options::writer_stuck_timeout},
      {"shutdown-timeout", &Options::shutdown_timeout},
      {"restart-backoff-max", &Options::restart_backoff_max}, {"crash-loop-window", &Options::crash_loop_window},
      {"idle-timeout", &Options::idle_timeout},           {"request-timeout", &Options::request_timeout},
      {"healthz-max-age", &Options::healthz_max_age},     {"query-deadline", &Options::query_deadline},
  };
  for (const auto& [name, field] : durations)
    if (o.*field > kMaxDuration) throw std::invalid_argument(fmt::format("{}: must be at most 24h", name));
  check_cluster(o);
  check_state(o);
  o.ingest = o.ingest.resolved();  // throws std::invalid_argument naming the setting
  ingest::check_sources(o.ingest);  // and this one naming the URL: a reload that the
                                    // supervisor accepts is one the writer can apply
}

std::pair<std::string, uint16_t> parse_listen(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw std::invalid_argument(fmt::format("listen: '{}' is not HOST:PORT", text));
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  uint16_t port = uint16_t(parse_count("listen", text.substr(colon + 1), 0, 65535));
  return {host, port};
}

CommandLine parse_command_line(int argc, char** argv) {
  CommandLine out;
  CLI::App app{"telemetryd: telemetry aggregation service (supervisor, ingest writer, HTTP readers)", "telemetryd"};
  app.set_version_flag("--version", std::string("telemetryd ") + std::string(kVersion));
  app.add_option("--config", out.config_file, "TOML file; its keys are the long flag names below")
      ->check(CLI::ExistingFile);
  app.add_flag("--check-config", out.check_config, "validate the configuration and exit");
  for (const Setting& s : settings()) {
    std::string flag = std::string("--") + s.name;
    std::string name = s.name;
    auto remember = [&out, name](Values v) { out.overrides.push_back({name, std::move(v)}); };
    switch (s.kind) {
      case Kind::value:
        app.add_option_function<std::string>(flag, [remember](const std::string& v) { remember({v}); }, s.help)
            ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
        break;
      case Kind::list:
        app.add_option_function<Values>(flag, [remember](const Values& v) { remember(v); }, s.help);
        break;
      case Kind::flag:
        app.add_flag_function(flag, [remember](int64_t) { remember({"true"}); }, s.help);
        break;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    out.exit_now = true;
  } catch (const CLI::CallForVersion&) {
    std::cout << "telemetryd " << kVersion << "\n";
    out.exit_now = true;
  } catch (const CLI::ParseError& e) {
    throw std::invalid_argument(e.what());
  }
  return out;
}

namespace {

// The file or text (when `read`), then the overrides, then the check. Every reason is
// made one line (control characters from the input as \xNN), since it ends up as one
// log line or one line on stderr.
template <typename ParseToml>
Options load(bool read, const std::string& origin, ParseToml parse, const std::vector<Override>& overrides) {
  try {
    Options o;
    if (read) apply_table(o, parse_toml(parse, origin), origin);
    for (const Override& v : overrides) {
      const Setting* s = find_setting(v.name);
      if (!s) throw std::invalid_argument(fmt::format("{}: unknown setting", v.name));
      s->apply(o, v.values);
    }
    check_options(o);
    return o;
  } catch (const std::invalid_argument& e) {
    std::string why;
    for (unsigned char c : std::string_view(e.what())) {
      if (c < 0x20 || c == 0x7f) why += fmt::format("\\x{:02x}", c);
      else why += char(c);
    }
    throw std::invalid_argument(why);
  }
}

}  // namespace

Options load_options(const CommandLine& command_line) {
  const std::string& file = command_line.config_file;
  Options o = load(!file.empty(), file, [&] { return toml::parse_file(file); }, command_line.overrides);
  o.config_file = file;
  return o;
}

Options load_options_from_text(std::string_view toml_text, const std::string& origin,
                               const std::vector<Override>& overrides) {
  return load(true, origin, [&] { return toml::parse(toml_text, origin); }, overrides);
}

std::vector<std::string> restart_only_changes(const Options& a, const Options& b) {
  std::vector<std::string> changed;
  if (a.listen != b.listen) changed.push_back("listen");
  if (a.workers != b.workers) changed.push_back("workers");
  if (a.admin_socket != b.admin_socket) changed.push_back("admin-socket");
  if (a.shm_name != b.shm_name) changed.push_back("shm-name");
  if (a.pidfile != b.pidfile) changed.push_back("pidfile");
  if (a.otlp_listen != b.otlp_listen || a.otlp_max_body != b.otlp_max_body ||
      a.otlp_max_pending != b.otlp_max_pending)
    changed.push_back("otlp-listen/otlp-max-body/otlp-max-pending");
  if (a.cluster != b.cluster || a.cluster_name != b.cluster_name || a.node_id != b.node_id || a.advertise != b.advertise || a.lease != b.lease ||
      a.role != b.role || a.checkpoint_every != b.checkpoint_every || a.cluster_wait_replicas != b.cluster_wait_replicas ||
      a.partitions != b.partitions || a.replication_factor != b.replication_factor)
    changed.push_back("cluster settings");
  if (a.state_dir != b.state_dir || a.state_fsync != b.state_fsync) changed.push_back("state-dir/state-fsync");
  if (a.idle_timeout != b.idle_timeout || a.request_timeout != b.request_timeout ||
      a.healthz_max_age != b.healthz_max_age || a.query_deadline != b.query_deadline ||
      a.max_header_bytes != b.max_header_bytes ||
      a.max_connections_per_reader != b.max_connections_per_reader || a.reader_engine != b.reader_engine)
    changed.push_back("reader timeouts/limits");
  return changed;
}

}  // namespace server
