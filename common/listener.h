// common/listener.h: a listening TCP socket, the one way telemetryd binds one (the
// readers' shared socket in server/process.cc, the OTLP/HTTP receiver in ingest/source/).
#pragma once

#include <cstdint>
#include <string>

namespace common {

// A non-blocking, close-on-exec socket with SO_REUSEADDR, bound to host:port (the first
// of getaddrinfo's addresses that binds; an empty host: every address) and listening
// with `backlog`. -1 on failure, *error then saying why (getaddrinfo's or the last
// call's reason).
int listen_tcp(const std::string& host, uint16_t port, int backlog, std::string* error);

}  // namespace common
