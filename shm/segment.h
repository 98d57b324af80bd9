// shm/segment.h: the store's POSIX shared-memory segments, opened and mapped with
// Boost.Interprocess, and their names (internal to shm/, not part of shm.h). Every
// failure is an shm::Error: no interprocess_exception leaves segment.cc.
#pragma once

#include <sys/types.h>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shm/shm.h"

namespace shm {

// "/NAME", the control segment, and "/NAME.I.SEQ", incarnation SEQ of buffer I.
std::string control_name(const std::string& name);
std::string buffer_name(const std::string& name, uint32_t index, uint64_t seq);
// Throws shm::Error for a name that is not a store's: empty, too long, with a '/', or
// of a buffer's form.
void check_name(const std::string& name);
// The buffer segments of store `name` in /dev/shm, whatever the control segment says.
std::vector<std::pair<uint32_t, uint64_t>> list_buffers(const std::string& name);
// n rounded up to whole pages.
size_t page_round(size_t n);

// One mapped segment (a Boost.Interprocess mapped_region of a shared_memory_object),
// unmapped when it goes. seq is the buffer incarnation it maps; inode lets the writer
// check that the name still leads to this mapping.
class Segment {
 public:
  uint64_t seq = 0;

  Segment() = default;
  Segment(Segment&& o) noexcept { *this = std::move(o); }
  Segment& operator=(Segment&& o) noexcept {
    if (this != &o) {
      seq = o.seq;
      inode_ = o.inode_;
      region_ = std::move(o.region_);
    }
    return *this;
  }

  // Maps all of the object's segment (size from fstat), refusing one owned by another uid.
  static Segment map(const boost::interprocess::shared_memory_object& object, const std::string& path,
                     bool writable);

  std::byte* data() const { return static_cast<std::byte*>(region_.get_address()); }
  size_t size() const { return region_.get_size(); }
  ino_t inode() const { return inode_; }

 private:
  boost::interprocess::mapped_region region_;
  ino_t inode_ = 0;
};

// A new segment of `bytes` bytes, mode 0600, its memory allocated, mapped read-write.
Segment create_segment(const std::string& path, size_t bytes);
// Maps an existing segment. With missing_ok, a segment that does not exist gives an
// empty Segment instead of an error.
Segment open_segment(const std::string& path, bool writable, bool missing_ok = false);
// Whether path still leads to the segment seg maps: an operator (or systemd-logind's
// RemoveIPC) may have unlinked it under a running service.
bool still_named(const Segment& seg, const std::string& path);
// Unlinks the segment's name (nothing if it is gone already).
void remove_segment(const std::string& path);

}  // namespace shm
