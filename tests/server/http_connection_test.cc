// tests/server/http_connection_test.cc: the reader's HTTP server (server/reader.h,
// server/http.h) over its connections: pipelining, HTTP/1.0 and HEAD, errors that close
// only their connection, timeouts of idle and slow clients, the shutdown drain, and
// run_reader in forked children sharing one listening socket. Fixture: http_fixture.h.
#include <catch2/catch.hpp>

#include "http_fixture.h"

using namespace http_fixture;
using namespace std::chrono_literals;

TEST_CASE("pipelined requests are answered in order on one connection", "[server]") {
  Fixture f({}, true, 3000);
  int fd = connect_to(f.port);
  std::string reqs;
  const std::vector<std::string> targets = {"/v1/series/mem", "/v1/snapshot", "/v1/series/" + server::http::percent_encode(kCpuUs),
                                            "/nope", "/v1/metrics/cpu"};
  for (const auto& t : targets) reqs += "GET " + t + " HTTP/1.1\r\nHost: t\r\n\r\n";
  for (int i = 0; i < 100; ++i) reqs += "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n";
  send_all(fd, reqs);
  std::string buf;
  auto a = read_response(fd, buf), b = read_response(fd, buf), c = read_response(fd, buf), d = read_response(fd, buf),
       e = read_response(fd, buf);
  REQUIRE((a && b && c && d && e));
  CHECK(a->body == series_body(kMem));
  CHECK(json_series_count(b->body) == 3004);
  CHECK(c->body == series_body(kCpuUs));
  CHECK(d->status == 404);
  CHECK(e->body == R"({"metric":"cpu","series_count":2})");
  for (int i = 0; i < 100; ++i) {
    auto r = read_response(fd, buf);
    REQUIRE(r);
    CHECK(r->body == series_body(kMem));
  }
  close(fd);
}

TEST_CASE("HTTP/1.0 with and without keep-alive, and HEAD", "[server]") {
  Fixture f;
  int fd = connect_to(f.port);
  std::string buf;
  Response r = exchange(fd, buf, "GET /v1/series/mem HTTP/1.0\r\n\r\n");
  CHECK(r.status == 200);
  CHECK(r.header("connection") == "close");
  CHECK(closed_by_server(fd));
  close(fd);

  fd = connect_to(f.port);
  buf.clear();
  for (int i = 0; i < 2; ++i) {
    r = exchange(fd, buf, "GET /v1/series/mem HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(r.header("connection") == "keep-alive");
    CHECK(r.body == series_body(kMem));
  }
  r = exchange(fd, buf, "HEAD /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n", /*head_request=*/true);
  CHECK(r.status == 200);
  CHECK(r.header("content-length") == std::to_string(series_body(kMem).size()));
  r = exchange(fd, buf, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");  // HEAD sent no body
  CHECK(r.body == series_body(kMem));
  close(fd);
}

TEST_CASE("errors: 404 keeps the connection, 405 400 431 413 close only theirs", "[server]") {
  Fixture f;
  int bystander = connect_to(f.port);
  std::string bystander_buf;
  auto bystander_ok = [&] {
    send_all(bystander, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    auto r = read_response(bystander, bystander_buf);
    return r && r->status == 200;
  };
  REQUIRE(bystander_ok());

  {
    int fd = connect_to(f.port);
    std::string buf;
    Response r = exchange(fd, buf, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(r.status == 404);
    CHECK(r.header("content-type") == "application/json");
    auto next = read_response(fd, buf);
    REQUIRE(next);
    CHECK(next->status == 200);
    close(fd);
  }
  {
    int fd = connect_to(f.port);
    std::string buf;
    Response r = exchange(fd, buf, "DELETE /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(r.status == 405);
    CHECK(r.header("allow") == "GET, HEAD");
    close(fd);
  }
  struct Case {
    std::string request;
    int status;
  };
  const std::vector<Case> cases = {
      {"BLAH\r\n\r\n", 400},
      {"GET /v1/series/mem HTTP/1.1\r\n\r\n", 400},  // no Host
      {"GET /v1/series/mem HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(10000, 'a') + "\r\n\r\n", 431},
      {"GET /v1/series/mem HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 413},
      {"GET /v1/series/mem HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 413},
      {"POST /v1/series/mem HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 413},
  };
  for (const auto& c : cases) {
    INFO(c.request.substr(0, 60));
    int fd = connect_to(f.port);
    std::string buf;
    Response r = exchange(fd, buf, c.request);
    CHECK(r.status == c.status);
    CHECK(r.header("connection") == "close");
    CHECK(r.body.starts_with("{\"error\":"));
    CHECK(closed_by_server(fd));
    close(fd);
    CHECK(bystander_ok());
  }
  close(bystander);
}

TEST_CASE("idle and slow clients time out", "[server]") {
  server::ReaderOptions o;
  o.idle_timeout = 200ms;
  o.request_timeout = 300ms;
  o.heartbeat_every = 20ms;
  Fixture f(o);

  int idle = connect_to(f.port);
  std::string buf;
  exchange(idle, buf, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(closed_by_server(idle));  // within the 10 s receive timeout
  close(idle);

  int silent = connect_to(f.port);  // never sends a byte
  CHECK(closed_by_server(silent));
  close(silent);

  int slow = connect_to(f.port);
  send_all(slow, "GET /v1/series/mem HTTP/1.1\r\nHo");  // and then nothing
  buf.clear();
  auto r = read_response(slow, buf);
  REQUIRE(r);
  CHECK(r->status == 408);
  CHECK(closed_by_server(slow));
  close(slow);
}

TEST_CASE("a client that never reads does not stall the others", "[server]") {
  server::ReaderOptions o;
  o.idle_timeout = 2000ms;
  o.heartbeat_every = 20ms;
  Fixture f(o, true, 20000);

  int hog = connect_to(f.port);
  int small = 4096;
  setsockopt(hog, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  std::string reqs;
  for (int i = 0; i < 20; ++i) reqs += "GET /v1/snapshot HTTP/1.1\r\nHost: t\r\n\r\n";
  send_all(hog, reqs);  // ~100 MB of answers that nobody reads

  for (int i = 0; i < 50; ++i) {
    Response r = get(f.port, "/v1/series/mem");
    REQUIRE(r.status == 200);
  }
  Response whole = get(f.port, "/v1/snapshot");
  CHECK(json_series_count(whole.body) == 20004);
  // The stalled one is dropped after idle_timeout (reset: recv fails or sees EOF).
  for (int i = 0; i < 500 && f.counter(server::kConnectionsOpen) > 0; ++i) std::this_thread::sleep_for(20ms);
  CHECK(f.counter(server::kConnectionsOpen) == 0);
  close(hog);
}

TEST_CASE("a snapshot stream cut by a new generation ends in a truncated transfer", "[server]") {
  Fixture f({}, true, 60000);  // ~16 MB: more than the socket buffers hold
  int fd = connect_to(f.port);
  int small = 65536;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  send_all(fd, "GET /v1/snapshot HTTP/1.1\r\nHost: t\r\n\r\n");
  std::string buf;
  REQUIRE(fill(fd, buf));  // the stream has started
  f.writer->publish(build_snapshot(0, 2));
  f.writer->publish(build_snapshot(0, 3));
  auto r = read_response(fd, buf);
  CHECK_FALSE(r);  // no terminating chunk: the client knows it is incomplete
  close(fd);
  CHECK(get(f.port, "/v1/series/mem").body == series_body(kMem, 3));
}

TEST_CASE("shutdown drains: open connections get their next answer with Connection: close", "[server]") {
  server::ReaderOptions o;
  o.shutdown_grace = 20s;  // long: the loop must end because every connection closed
  Fixture f(o);
  int a = connect_to(f.port), b = connect_to(f.port);
  std::string abuf, bbuf;
  for (int fd : {a, b}) send_all(fd, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
  REQUIRE(read_response(a, abuf));
  REQUIRE(read_response(b, bbuf));
  f.server->request_shutdown();  // no join

  // Idle when the drain began, `a` stays open: its next request is answered (not
  // reset) and says Connection: close. Until the server thread sees the stop, the
  // answers are keep-alive ones, hence the bounded loop.
  bool told_to_close = false;
  for (int i = 0; i < 1000 && !told_to_close; ++i) {
    Response r = exchange(a, abuf, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(r.status == 200);
    told_to_close = r.header("connection") == "close";
    if (!told_to_close) std::this_thread::sleep_for(1ms);
  }
  CHECK(told_to_close);
  CHECK(closed_by_server(a));

  // Requests already pipelined are all answered; only the last one closes.
  send_all(b, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
  auto first = read_response(b, bbuf);
  auto second = read_response(b, bbuf);
  REQUIRE(first);
  REQUIRE(second);
  CHECK(first->header("connection").empty());
  CHECK(second->header("connection") == "close");
  CHECK(closed_by_server(b));
  f.stop();  // joins: the loop ended with the last connection, well before the grace
  close(a);
  close(b);
}

TEST_CASE("shutdown: a connection idle for the whole grace is closed, the loop ends", "[server]") {
  server::ReaderOptions o;
  o.shutdown_grace = 300ms;
  Fixture f(o);
  int fd = connect_to(f.port);
  std::string buf;
  exchange(fd, buf, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
  f.stop();  // joins the server thread: the grace timer must end the loop
  CHECK(closed_by_server(fd));
  close(fd);
}

TEST_CASE("run_reader in a forked child: serves, then exits 0 on SIGTERM", "[server]") {
  StoreSite site(unique_name());
  site.writer->publish(build_snapshot());
  server::ReaderOptions o;
  o.listen_fd = site.listen_fd;
  o.slot = 2;
  pid_t pid = fork_reader(site.name, o);
  Response r = get(site.port, "/v1/series/mem");
  CHECK(r.status == 200);
  CHECK(site.store->reader_counter(2, server::kReqSeries) == 1);
  CHECK(site.store->reader_counter(2, server::kReaderStartedAtNs) > 0);
  kill(pid, SIGTERM);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("wait status " << status);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == server::kExitOk);
}

TEST_CASE("two readers on one listening socket share the connections", "[server]") {
  Fixture f;  // reader in slot 1
  server::ReaderOptions o = f.options;
  o.slot = 2;
  int stop2[2];
  REQUIRE(pipe(stop2) == 0);
  std::atomic<bool> ready2{false};
  std::thread second([&] {
    shm::Reader reader(*f.store, o.slot);
    event_base* base = event_base_new();
    {
      server::HttpServer server(base, reader, *f.store, test_server::with_engine(o));
      event* stop_ev = event_new(
          base, stop2[0], EV_READ, [](evutil_socket_t, short, void* s) { static_cast<server::HttpServer*>(s)->shutdown(); },
          &server);
      event_add(stop_ev, nullptr);
      ready2 = true;
      server.run();
      event_free(stop_ev);
    }
    event_base_free(base);
  });
  while (!ready2.load()) std::this_thread::sleep_for(1ms);

  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    int fd = connect_to(f.port);
    send_all(fd, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    std::string buf;
    REQUIRE(read_response(fd, buf));  // accepted and answered before the next connects
    fds.push_back(fd);
  }
  const uint64_t one = f.store->reader_counter(1, server::kConnectionsAccepted);
  const uint64_t two = f.store->reader_counter(2, server::kConnectionsAccepted);
  CHECK(one + two == 20);
  CHECK(one >= 8);
  CHECK(two >= 8);
  for (int fd : fds) close(fd);
  char b = 1;
  (void)!write(stop2[1], &b, 1);
  second.join();
  close(stop2[0]);
  close(stop2[1]);
}

TEST_CASE("a client pipelining far beyond the input buffer without reading gets every answer, in order", "[server]") {
  Fixture f;
  int fd = connect_to(f.port);
  // 5,000 requests: ~10x the reader's input buffer (max-header-bytes + 16 KB) sent at
  // once, ~1.5 MB of answers: both directions fill up, and the reader must stop reading
  // and resume rather than buffer without bound or drop anything.
  constexpr int kRequests = 5000;
  std::string reqs;
  for (int i = 0; i < kRequests; ++i)
    reqs += (i % 2 ? "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n" : "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
  std::atomic<bool> sent_all{false};
  std::thread sender([&] {  // blocking sends, no Catch assertions off the main thread
    std::string_view rest = reqs;
    while (!rest.empty()) {
      ssize_t n = send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      rest.remove_prefix(static_cast<size_t>(n));
    }
    sent_all = true;
  });
  std::this_thread::sleep_for(200ms);  // let both directions fill before reading
  std::string buf;
  int answered = 0, in_order = 0;
  for (; answered < kRequests; ++answered) {
    auto r = read_response(fd, buf);
    if (!r) break;
    in_order += r->status == (answered % 2 ? 200 : 404);
  }
  sender.join();
  CHECK(sent_all);
  CHECK(answered == kRequests);
  CHECK(in_order == kRequests);
  CHECK(f.counter(server::kConnectionsOpen) == 1);  // and the connection is still open
  close(fd);
}

TEST_CASE("the reader engine: epoll when asked, io_uring when asked or auto where the kernel allows it", "[server]") {
  uint16_t port = 0;
  int lfd = test_server::listen_loopback(&port);
  const std::string name = unique_name();
  {
    shm::StoreOptions so;
    so.name = name;
    so.reader_slots = 2;
    auto store = shm::Store::create(so);
    std::thread([] { server::io_uring_unavailable_reason(); }).join();  // off the main thread: server_thread.h
    const bool uring = server::io_uring_unavailable_reason().empty();
    INFO("io_uring unavailable: " << server::io_uring_unavailable_reason());
    const auto fallback = uring ? server::ReaderEngine::io_uring : server::ReaderEngine::epoll;
    for (auto [asked, want] : {std::pair{server::ReaderEngine::epoll, server::ReaderEngine::epoll},
                               {server::ReaderEngine::io_uring, fallback},
                               {server::ReaderEngine::automatic, fallback}}) {
      server::ReaderEngine got = server::ReaderEngine::automatic;
      uint64_t counter = 0;
      std::thread([&, asked = asked] {  // a ring's thread gets its task work: not the main one
        shm::Reader reader(*store, 1);
        event_base* base = event_base_new();
        {
          server::ReaderOptions o;
          o.listen_fd = lfd;
          o.slot = 1;
          o.engine = asked;
          server::HttpServer server(base, reader, *store, o);
          got = server.engine();
          counter = reader.counter(server::kReaderEngine).load();
        }
        event_base_free(base);
      }).join();
      CHECK(got == want);
      CHECK(counter == (want == server::ReaderEngine::io_uring ? 2u : 1u));
    }
  }
  CHECK(server::parse_reader_engine("io_uring") == server::ReaderEngine::io_uring);
  CHECK(server::parse_reader_engine("epoll") == server::ReaderEngine::epoll);
  CHECK(server::parse_reader_engine("auto") == server::ReaderEngine::automatic);
  CHECK(!server::parse_reader_engine("uring"));
  close(lfd);
  shm::Store::remove(name);
}

TEST_CASE("a server driven by the caller's own event_base_dispatch serves and drains too", "[server]") {
  Fixture f;  // its reader (slot 1) runs HttpServer::run(); this one is on slot 2
  uint16_t port = 0;
  int lfd = test_server::listen_loopback(&port);
  server::ReaderOptions o = f.options;
  o.listen_fd = lfd;
  o.slot = 2;
  test_server::ServerThread own(*f.store, o, /*caller_loop=*/true);
  int fd = connect_to(port);
  std::string buf;
  for (int i = 0; i < 3; ++i) {  // keep-alive: the same connection each time
    Response r = exchange(fd, buf, "GET /v1/series/mem HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(r.body == series_body(kMem));
  }
  own.request_shutdown();  // the drain: the next answer closes
  for (int i = 0; i < 1000 && f.store->reader_counter(2, server::kAccepting) != 0; ++i) std::this_thread::sleep_for(5ms);
  REQUIRE(f.store->reader_counter(2, server::kAccepting) == 0);  // draining now
  Response r = exchange(fd, buf, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(r.header("connection") == "close");
  CHECK(closed_by_server(fd));
  own.stop();
  close(fd);
  close(lfd);
}
