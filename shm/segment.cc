// shm/segment.cc: the store's segments with Boost.Interprocess: a shared_memory_object
// per name, a mapped_region over all of it (see segment.h).
#include "shm/segment.h"

#include <dirent.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>

#include "shm/layout.h"

namespace shm {

namespace bip = boost::interprocess;

namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

// (index, seq) if `file` (an entry of /dev/shm) is exactly buffer_name(name, index, seq)
// for some index < kMaxBuffers: another store's segments, such as those of a store
// named "NAME.1" ("/NAME.1", "/NAME.1.0.5"), never match.
std::optional<std::pair<uint32_t, uint64_t>> buffer_of(std::string_view file, const std::string& name) {
  if (!file.starts_with(name) || file.size() <= name.size() + 1 || file[name.size()] != '.') return std::nullopt;
  const char* end = file.data() + file.size();
  uint32_t index = 0;
  uint64_t seq = 0;
  auto [dot, e1] = std::from_chars(file.data() + name.size() + 1, end, index);
  if (e1 != std::errc{} || dot == end || *dot != '.') return std::nullopt;
  auto [tail, e2] = std::from_chars(dot + 1, end, seq);
  if (e2 != std::errc{} || tail != end || index >= kMaxBuffers) return std::nullopt;
  if (buffer_name(name, index, seq).substr(1) != file) return std::nullopt;  // e.g. "x.01.5": not a name we make
  return std::pair{index, seq};
}

// Every failure of a system call: the segment, the call and the OS's reason.
Error os_error(const std::string& path, const char* call, int err = errno) {
  return Error(fmt::format("shm {}: {}: {}", path, call, std::strerror(err)));
}

// Every interprocess_exception becomes an shm::Error here, at the store's boundary, with
// the same words a failed system call gives (the segment, the call, the OS's reason), so
// nothing of Boost's escapes to a reader.
Error os_error(const std::string& path, const char* call, const bip::interprocess_exception& e) {
  int err = e.get_native_error();
  return err != 0 ? os_error(path, call, err) : Error(fmt::format("shm {}: {}: {}", path, call, e.what()));
}

// The segment named path, opened (not mapped); nullopt when it does not exist and
// missing_ok.
std::optional<bip::shared_memory_object> open_object(const std::string& path, bool writable, bool missing_ok) {
  try {
    return bip::shared_memory_object(bip::open_only, path.c_str(), writable ? bip::read_write : bip::read_only);
  } catch (const bip::interprocess_exception& e) {
    if (missing_ok && e.get_error_code() == bip::not_found_error) return std::nullopt;
    throw os_error(path, "shm_open", e);
  }
}

}  // namespace

std::string control_name(const std::string& name) { return "/" + name; }
std::string buffer_name(const std::string& name, uint32_t index, uint64_t seq) {
  return fmt::format("/{}.{}.{}", name, index, seq);
}

void check_name(const std::string& name) {
  if (name.empty() || name.size() > 100 || name.find('/') != std::string::npos)
    throw Error(fmt::format("invalid shm name '{}': 1-100 characters, no '/'", name));
  // "x.1.2" would be the name of buffer 1, incarnation 2, of store "x": removing "x"
  // would remove it.
  size_t last = name.rfind('.');
  size_t prev = last == std::string::npos || last == 0 ? std::string::npos : name.rfind('.', last - 1);
  if (prev != std::string::npos && all_digits(std::string_view(name).substr(prev + 1, last - prev - 1)) &&
      all_digits(std::string_view(name).substr(last + 1)))
    throw Error(fmt::format("invalid shm name '{}': it must not end in .DIGITS.DIGITS, the form of a buffer's name",
                            name));
}

// The buffer segments of store `name` in /dev/shm (where glibc keeps POSIX shared
// memory), whatever the control segment says: a crashed writer may have left one it
// no longer names.
std::vector<std::pair<uint32_t, uint64_t>> list_buffers(const std::string& name) {
  std::vector<std::pair<uint32_t, uint64_t>> found;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d))
      if (auto id = buffer_of(e->d_name, name)) found.push_back(*id);
    closedir(d);
  }
  return found;
}
size_t page_round(size_t n) {
  size_t page = size_t(sysconf(_SC_PAGESIZE));
  return (n + page - 1) / page * page;
}

// Maps all of the object's segment (size from fstat), refusing one owned by another uid.
Segment Segment::map(const bip::shared_memory_object& object, const std::string& path, bool writable) {
  struct stat st;
  if (fstat(object.get_mapping_handle().handle, &st) != 0) throw os_error(path, "fstat");
  if (st.st_uid != geteuid())
    throw Error(fmt::format("shm {} is owned by uid {}, not by this process's uid {}: refusing it", path,
                            st.st_uid, geteuid()));
  if (size_t(st.st_size) < sizeof(SnapshotHeader))
    throw Error(fmt::format("shm {} is too small ({} bytes)", path, st.st_size));
  Segment s;
  try {
    s.region_ = bip::mapped_region(object, writable ? bip::read_write : bip::read_only, 0, size_t(st.st_size));
  } catch (const bip::interprocess_exception& e) {
    throw os_error(path, "mmap", e);
  }
  s.inode_ = st.st_ino;
  return s;
}

// A new segment of `bytes` bytes, mode 0600, mapped read-write.
Segment create_segment(const std::string& path, size_t bytes) {
  auto create = [&] {
    return bip::shared_memory_object(bip::create_only, path.c_str(), bip::read_write, bip::permissions(0600));
  };
  std::optional<bip::shared_memory_object> object;
  try {
    try {
      object.emplace(create());
    } catch (const bip::interprocess_exception& e) {
      if (e.get_error_code() != bip::already_exists_error) throw;
      // A leftover of a writer killed between creating this name and recording it in a
      // BufferDesc (or of a stale store): no process maps a name nothing records.
      bip::shared_memory_object::remove(path.c_str());
      object.emplace(create());
    }
  } catch (const bip::interprocess_exception& e) {
    throw os_error(path, "shm_open", e);
  }
  try {
    int fd = object->get_mapping_handle().handle;
    // The mode is filtered by the umask at creation; set it explicitly so it is 0600 exactly.
    if (fchmod(fd, 0600) != 0) throw os_error(path, "fchmod");
    // Allocated now, through the object's native handle (Boost's truncate() would only
    // set the size), so that a full /dev/shm is an error here and not a SIGBUS at the
    // first write into a page that tmpfs cannot provide.
    if (int err = posix_fallocate(fd, 0, off_t(bytes)); err != 0) throw os_error(path, "posix_fallocate", err);
    return Segment::map(*object, path, true);
  } catch (...) {
    bip::shared_memory_object::remove(path.c_str());
    throw;
  }
}

// Maps an existing segment. With missing_ok, a segment that does not exist gives an
// empty Segment instead of an error.
Segment open_segment(const std::string& path, bool writable, bool missing_ok) {
  std::optional<bip::shared_memory_object> object = open_object(path, writable, missing_ok);
  if (!object) return Segment{};
  return Segment::map(*object, path, writable);
}

// Whether path still leads to the segment seg maps: an operator (or systemd-logind's
// RemoveIPC) may have unlinked it under a running service.
bool still_named(const Segment& seg, const std::string& path) {
  try {
    bip::shared_memory_object object(bip::open_only, path.c_str(), bip::read_only);
    struct stat st;
    return fstat(object.get_mapping_handle().handle, &st) == 0 && st.st_ino == seg.inode();
  } catch (const bip::interprocess_exception&) {
    return false;
  }
}

void remove_segment(const std::string& path) { bip::shared_memory_object::remove(path.c_str()); }

}  // namespace shm
