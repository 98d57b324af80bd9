// bench/http_micro/http_micro.cc: a reader-only load target. Publishes a snapshot of N
// synthetic series (bodies shaped like ingest's series bodies, key conventions of
// ingest/ingest.h) into a private store, forks R readers running server::run_reader on
// one shared listening socket, writes the URL paths of every series to a keys file for
// bench/wrk/random_series.lua, and serves until SIGINT/SIGTERM. On exit it prints how
// the connections and requests split across the readers (Reader::counter).
//
//   http_micro --series 100000 --readers 1 --port 18080 --keys /tmp/keys.txt [--engine epoll]
//
// bench/http_micro/run.sh drives it with wrk and reports requests/s and CPU/request.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "ingest/ingest.h"
#include "server/http.h"
#include "server/reader.h"
#include "server/service.h"
#include "shm/shm.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// A body of the same shape and size (~400 bytes) as ingest's series bodies.
std::string series_body(const std::string& key, const std::string& host, const std::string& route, size_t i) {
  std::string escaped;
  for (char c : key) {
    if (c == '"' || c == '\\') escaped += '\\';
    escaped += c;
  }
  char nums[400];
  std::snprintf(nums, sizeof nums,
                R"("window_s":60,"count":30,"sum":%zu.5,"min":1.5,"max":99.25,"mean":41.15,"first":1.5,)"
                R"("last":33.25,"first_ts":1764000000000,"last_ts":1764000060000,"rate":0.5,"p50":40.5,)"
                R"("p90":88.0,"p99":98.75,"stale":false})",
                i * 7);
  return R"({"key":")" + escaped + R"(","metric":"http_requests","labels":{"host":")" + host +
         R"(","route":")" + route + R"("},)" + nums;
}

}  // namespace

// Long as one piece: the fixture read top to bottom (options, store, listener, readers, wait).
int main(int argc, char** argv) {
  size_t series = 100000;
  int readers = 1, port = 18080;
  std::string keys_path = "/tmp/http_micro_keys.txt", body_path;
  server::ReaderEngine engine = server::ReaderEngine::automatic;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--series") series = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--readers") readers = std::atoi(argv[i + 1]);
    else if (a == "--port") port = std::atoi(argv[i + 1]);
    else if (a == "--keys") keys_path = argv[i + 1];
    else if (a == "--sample-body") body_path = argv[i + 1];  // one body, for a `return 200` peer
    else if (a == "--engine" && server::parse_reader_engine(argv[i + 1])) engine = *server::parse_reader_engine(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: http_micro [--series N] [--readers R] [--port P] [--keys FILE] [--sample-body FILE] "
                           "[--engine auto|io_uring|epoll]\n");
      return 2;
    }
  }

  const std::string name = "tdhttpmicro-" + std::to_string(getpid());
  shm::StoreOptions so;
  so.name = name;
  so.reader_slots = 16;
  auto store = shm::Store::create(so);
  {
    shm::Writer writer(*store);
    shm::SnapshotBuilder b;
    std::vector<std::string> all;
    std::ofstream keys(keys_path);
    std::string metrics_body;
    for (size_t i = 0; i < series; ++i) {
      std::string host = "host-" + std::to_string(i / 50), route = "/api/v1/r" + std::to_string(i % 50);
      std::string key = "http_requests{host=\"" + host + "\",route=\"" + route + "\"}";
      std::string body = series_body(key, host, route, i);
      if (i == 0 && !body_path.empty()) std::ofstream(body_path) << body;
      b.add(ingest::series_record_key(key), body);
      all.push_back(ingest::series_record_key(key));
      keys << "/v1/series/" << server::http::percent_encode(key) << "\n";
    }
    std::sort(all.begin(), all.end());
    b.add_list(ingest::kSeriesList, all);
    b.add_list(ingest::metric_record_key("http_requests"), all);
    b.add(ingest::metric_record_key("http_requests"), R"({"metric":"http_requests","series_count":)" +
                                                          std::to_string(series) + "}");
    b.add(ingest::kMetricsRecord,
          R"({"metrics":[{"metric":"http_requests","series_count":)" + std::to_string(series) + "}]}");
    b.add(ingest::kPromRecord, "# TYPE http_requests_mean gauge\n");
    writer.publish(b);
  }

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd, 4096) != 0) {
    std::perror("bind/listen");
    shm::Store::remove(name);
    return 1;
  }

  std::vector<pid_t> pids;
  for (int r = 0; r < readers; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      auto child = shm::Store::open(name);
      server::ReaderOptions o;
      o.listen_fd = lfd;
      o.slot = static_cast<uint32_t>(r + 1);
      o.engine = engine;
      _exit(server::run_reader(*child, o));
    }
    pids.push_back(pid);
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::printf("READY port=%d pids=", port);
  for (pid_t p : pids) std::printf("%d ", p);
  std::printf("\n");
  std::fflush(stdout);
  while (!g_stop) pause();

  for (pid_t p : pids) kill(p, SIGTERM);
  for (pid_t p : pids) waitpid(p, nullptr, 0);
  for (int r = 0; r < readers; ++r)
    std::printf("reader %d: connections %llu requests %llu\n", r + 1,
                static_cast<unsigned long long>(store->reader_counter(r + 1, server::kConnectionsAccepted)),
                static_cast<unsigned long long>(store->reader_counter(r + 1, server::kReqSeries)));
  store.reset();
  shm::Store::remove(name);
  return 0;
}
