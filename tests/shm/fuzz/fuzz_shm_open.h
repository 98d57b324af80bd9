// The input format of fuzz_shm_open, shared with the seed generator (make_seeds.cc).
//
//   byte 0       flags: bit 0 set: the control segment is exactly the control bytes given;
//                clear: they are zero-padded to the size of a real control segment, so a
//                short input (identity, current, buffer descriptors) still opens
//   bytes 1..4   L, a little-endian u32: how many of the following bytes are the control
//                segment (fewer if the input ends first)
//   L bytes      the control segment /NAME. Its uid field is XORed with the fuzzing
//                process's uid before it is written, so 0 there means "ours" whoever runs it
//   the rest     the segment of the buffer the control bytes make current, /NAME.B.SEQ
//                (B from Control::current, SEQ from that buffer's BufferDesc::seq); not
//                created when there are no such bytes or B >= kMaxBuffers
#pragma once

#include <cstddef>
#include <cstdint>

namespace fuzz_shm_open {
constexpr size_t kHeaderBytes = 5;
constexpr uint8_t kExactControl = 1;
}  // namespace fuzz_shm_open
